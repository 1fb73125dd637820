//! `config show`: the effective settings as TOML, secrets redacted.

use std::time::Duration;

use secrecy::SecretString;

use super::Settings;

impl Settings {
    /// The effective settings as TOML, secrets redacted (`config show`).
    pub fn render(&self) -> String {
        use std::fmt::Write;
        fn secret(s: &Option<SecretString>) -> &'static str {
            if s.is_some() {
                "set (redacted)"
            } else {
                "not set"
            }
        }
        fn dur(d: Duration) -> String {
            humantime::format_duration(d).to_string()
        }
        fn q(s: &str) -> String {
            toml::Value::String(s.to_owned()).to_string()
        }
        let mut o = String::new();
        let s = self;
        let _ = writeln!(
            o,
            "[state]\npath = {}\nlock_wait = {}\n",
            q(&s.state.path.to_string_lossy()),
            q(&dur(s.state.lock_wait))
        );
        let _ = writeln!(
            o,
            "[sync]\ninterval = {}\noverlap = {}\nfull_reconcile_every = {}\nexpiry_days = {}\nmicrosoft_decision_days = {}\nmax_attempts = {}\nconflict = {}\n",
            q(&dur(s.sync.interval)),
            q(&dur(s.sync.overlap)),
            q(&dur(s.sync.full_reconcile_every)),
            s.sync.expiry_days,
            s.sync.microsoft_decision_days,
            s.sync.max_attempts,
            q(s.sync.conflict.as_str())
        );
        let _ = writeln!(
            o,
            "[log]\nlevel = {}\nformat = {}\n",
            q(&s.log.level),
            q(s.log.format.as_str())
        );
        let _ = writeln!(
            o,
            "[server]\nenabled = {}\nlisten = {}\n",
            s.server.enabled,
            q(&s.server.listen.to_string())
        );
        let pc = &s.partner_center;
        let _ = writeln!(
            o,
            "[partner_center]\nbase_url = {}\ntoken_url = {}\ndevice_code_url = {}\nclient_id = {}\nscope = {}\n# refresh_token: {}\npage_size = {}\ntimeout = {}\n",
            q(pc.base_url.as_str()),
            q(pc.token_url.as_str()),
            q(pc.device_code_url.as_str()),
            q(&pc.client_id),
            q(&pc.scope),
            secret(&pc.refresh_token),
            pc.page_size,
            q(&dur(pc.timeout))
        );
        let d = &s.dynamics;
        let _ = writeln!(
            o,
            "[dynamics]\nenabled = {}\nbase_url = {}\napi_version = {}\ntoken_url = {}\nclient_id = {}\n# client_secret: {}\nscope = {}\nmapping = {}\nbatch_size = {}\ntimeout = {}\nchange_tracking = {}\naccount_match = {}\nduns_column = {}\npage_size = {}\n",
            d.enabled,
            q(d.base_url.as_str()),
            q(&d.api_version),
            q(d.token_url.as_str()),
            q(&d.client_id),
            secret(&d.client_secret),
            q(&d.scope),
            q(&d.mapping.to_string_lossy()),
            d.batch_size,
            q(&dur(d.timeout)),
            d.change_tracking,
            q(d.account_match.as_str()),
            q(&d.duns_column),
            d.page_size
        );
        let sf = &s.salesforce;
        let _ = write!(
            o,
            "[salesforce]\nenabled = {}\nlogin_url = {}\napi_version = {}\nauth = {}\nclient_id = {}\nusername = {}\n# client_secret: {}\n# private_key: {}\nmapping = {}\nbatch_size = {}\ntimeout = {}\nlimit_pause = {}\nlimit_warn_percent = {}\naccount_match = {}\nduns_field = {}\n",
            sf.enabled,
            q(sf.login_url.as_str()),
            q(&sf.api_version),
            q(sf.auth.as_str()),
            q(&sf.client_id),
            q(&sf.username),
            secret(&sf.client_secret),
            secret(&sf.private_key),
            q(&sf.mapping.to_string_lossy()),
            sf.batch_size,
            q(&dur(sf.timeout)),
            q(&dur(sf.limit_pause)),
            sf.limit_warn_percent,
            q(sf.account_match.as_str()),
            q(&sf.duns_field)
        );
        o
    }
}
