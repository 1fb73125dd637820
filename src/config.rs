//! Typed settings, layered with the `config` crate: the built-in
//! `config/default.toml` ← the file given with `--config` ← environment
//! variables `COSELL_SYNC__<SECTION>__<KEY>`. Secrets come only from the
//! environment or from `$CREDENTIALS_DIRECTORY/<section>_<key>`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

/// Every key with its default and a comment; built into the binary.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "COSELL_SYNC";

/// The secrets, as `(section, key)`. Never read from a config file.
pub const SECRET_KEYS: &[(&str, &str)] = &[
    ("partner_center", "refresh_token"),
    ("dynamics", "client_secret"),
    ("salesforce", "client_secret"),
    ("salesforce", "private_key"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown key `{key}` in {origin}{hint}")]
    UnknownKey {
        key: String,
        origin: String,
        hint: String,
    },
    #[error(
        "secret `{key}` must not be written in {origin}: set the environment variable {env} or the credential file `{credential}` in $CREDENTIALS_DIRECTORY"
    )]
    SecretInFile {
        key: String,
        origin: String,
        env: String,
        credential: String,
    },
    #[error("`{key}` (from {origin}): {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
    #[error("cannot read credential {path}: {source}")]
    Credential {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::SecretInFile { key, .. }
            | ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// What the effective settings are built from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The file given with `--config`.
    pub file: Option<PathBuf>,
    /// The `COSELL_SYNC__…` environment variables (a snapshot, so tests need
    /// not touch the process environment).
    pub env: BTreeMap<String, String>,
    /// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
    pub credentials_dir: Option<PathBuf>,
}

impl Sources {
    /// The file given on the command line plus this process's environment.
    pub fn from_process(file: Option<PathBuf>) -> Sources {
        let env = std::env::vars()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        Sources {
            file,
            env,
            credentials_dir,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pretty" => Some(LogFormat::Pretty),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        }
    }
}

/// Who wins when both sides changed the same field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// Each field's `owner` in the mapping decides.
    Mapping,
    PartnerCenter,
    Crm,
    Newest,
}

impl ConflictPolicy {
    pub fn parse(s: &str) -> Option<ConflictPolicy> {
        match s.trim() {
            "mapping" => Some(ConflictPolicy::Mapping),
            "partner_center" => Some(ConflictPolicy::PartnerCenter),
            "crm" => Some(ConflictPolicy::Crm),
            "newest" => Some(ConflictPolicy::Newest),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::Mapping => "mapping",
            ConflictPolicy::PartnerCenter => "partner_center",
            ConflictPolicy::Crm => "crm",
            ConflictPolicy::Newest => "newest",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SalesforceAuth {
    ClientCredentials,
    JwtBearer,
}

impl SalesforceAuth {
    pub fn parse(s: &str) -> Option<SalesforceAuth> {
        match s.trim() {
            "client_credentials" => Some(SalesforceAuth::ClientCredentials),
            "jwt_bearer" => Some(SalesforceAuth::JwtBearer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SalesforceAuth::ClientCredentials => "client_credentials",
            SalesforceAuth::JwtBearer => "jwt_bearer",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub state: StateSettings,
    pub sync: SyncSettings,
    pub log: LogSettings,
    pub server: ServerSettings,
    pub partner_center: PartnerCenterSettings,
    pub dynamics: DynamicsSettings,
    pub salesforce: SalesforceSettings,
    /// Directory of the `--config` file; mapping paths are relative to it.
    pub config_dir: Option<PathBuf>,
    /// Where each effective value came from, by `section.key`.
    pub origins: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct StateSettings {
    pub path: PathBuf,
    /// How long a command that writes waits for another writer to release
    /// the store before it exits 75 (zero: it does not wait).
    pub lock_wait: Duration,
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub interval: Duration,
    pub overlap: Duration,
    pub full_reconcile_every: Duration,
    pub expiry_days: u32,
    pub microsoft_decision_days: u32,
    pub max_attempts: u32,
    pub conflict: ConflictPolicy,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub enabled: bool,
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct PartnerCenterSettings {
    pub base_url: Url,
    pub token_url: Url,
    pub device_code_url: Url,
    pub client_id: String,
    pub scope: String,
    pub refresh_token: Option<SecretString>,
    pub page_size: u32,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct DynamicsSettings {
    pub enabled: bool,
    pub base_url: Url,
    pub api_version: String,
    pub token_url: Url,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    /// Empty means `<base_url>/.default`.
    pub scope: String,
    pub mapping: PathBuf,
    pub batch_size: u32,
    pub timeout: Duration,
    /// Read changes with Dataverse change tracking (delta links) instead of
    /// the `modifiedon` watermark.
    pub change_tracking: bool,
    /// How the customer account of a deal is found before one is created.
    pub account_match: AccountMatch,
    /// The Account column holding the D-U-N-S number.
    pub duns_column: String,
    /// Rows per listing page (`Prefer: odata.maxpagesize`).
    pub page_size: u32,
}

/// How a deal's customer account is found (Dynamics and Salesforce).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountMatch {
    /// By DUNS number first, then by name + postal code.
    DunsThenNamePostalCode,
    /// By name + postal code only.
    NamePostalCode,
    /// Accounts are not looked up or created: the customer is left to the CRM.
    None,
}

impl AccountMatch {
    pub fn parse(s: &str) -> Option<AccountMatch> {
        match s.trim() {
            "duns_then_name_postal_code" => Some(AccountMatch::DunsThenNamePostalCode),
            "name_postal_code" => Some(AccountMatch::NamePostalCode),
            "none" => Some(AccountMatch::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountMatch::DunsThenNamePostalCode => "duns_then_name_postal_code",
            AccountMatch::NamePostalCode => "name_postal_code",
            AccountMatch::None => "none",
        }
    }
}

impl DynamicsSettings {
    /// The token scope: configured, or derived from the organization URL.
    pub fn effective_scope(&self) -> String {
        if self.scope.trim().is_empty() {
            format!("{}/.default", self.base_url.as_str().trim_end_matches('/'))
        } else {
            self.scope.clone()
        }
    }
}

#[derive(Debug, Clone)]
pub struct SalesforceSettings {
    pub enabled: bool,
    pub login_url: Url,
    pub api_version: String,
    pub auth: SalesforceAuth,
    pub client_id: String,
    pub username: String,
    pub client_secret: Option<SecretString>,
    pub private_key: Option<SecretString>,
    pub mapping: PathBuf,
    pub batch_size: u32,
    pub timeout: Duration,
    /// How long Salesforce work pauses after `REQUEST_LIMIT_EXCEEDED`.
    pub limit_pause: Duration,
    /// API usage (percent of the daily allocation) above which a warning is logged.
    pub limit_warn_percent: u32,
    /// How the customer's Account is found before one is created.
    pub account_match: AccountMatch,
    /// The Account field holding the D-U-N-S number; empty: never match by DUNS.
    pub duns_field: String,
}

/// A setting that keeps the daemon from working, found by [`Settings::readiness_problems`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessProblem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ReadinessProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl Settings {
    /// Loads the built-in defaults only (no file, no environment).
    pub fn defaults() -> Result<Settings, ConfigError> {
        load(&Sources::default())
    }

    /// Where a setting came from: an environment variable, the config file,
    /// or the built-in defaults.
    pub fn origin(&self, key: &str) -> &str {
        self.origins
            .get(key)
            .map(String::as_str)
            .unwrap_or("built-in defaults")
    }

    /// The mapping file for a CRM, resolved against the config file's
    /// directory. `None` means "use the built-in default mapping" (no config
    /// file was given and the path was not overridden).
    pub fn mapping_path(&self, relative: &Path) -> Option<PathBuf> {
        if relative.is_absolute() {
            return Some(relative.to_path_buf());
        }
        self.config_dir.as_ref().map(|dir| dir.join(relative))
    }

    /// The text of a CRM's mapping file and the name to show in messages:
    /// the file next to the config file, or the built-in default when no
    /// config file was given (or the file does not exist there).
    pub fn mapping_source(
        &self,
        crm: crate::store::CrmKind,
    ) -> Result<(String, String), ConfigError> {
        let (relative, key, builtin) = match crm {
            crate::store::CrmKind::Dynamics => (
                &self.dynamics.mapping,
                "dynamics.mapping",
                crate::mapping::DEFAULT_DYNAMICS,
            ),
            crate::store::CrmKind::Salesforce => (
                &self.salesforce.mapping,
                "salesforce.mapping",
                crate::mapping::DEFAULT_SALESFORCE,
            ),
        };
        // A path other than the shipped default must exist; the default
        // path falls back to the built-in mapping when there is no file.
        let default_path = match crm {
            crate::store::CrmKind::Dynamics => "mappings/dynamics.toml",
            crate::store::CrmKind::Salesforce => "mappings/salesforce.toml",
        };
        let explicit =
            self.origins.contains_key(key) && relative.as_path() != Path::new(default_path);
        match self.mapping_path(relative) {
            Some(path) if path.exists() || explicit => {
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
                    key: key.to_owned(),
                    origin: self.origin(key).to_owned(),
                    message: format!("cannot read mapping file {}: {e}", path.display()),
                })?;
                Ok((text, path.display().to_string()))
            }
            _ => Ok((
                builtin.to_owned(),
                format!("built-in {}", relative.display()),
            )),
        }
    }

    /// Settings that are well-formed but keep a sync from running: missing
    /// client ids and secrets for the systems that are enabled.
    pub fn readiness_problems(&self) -> Vec<ReadinessProblem> {
        let mut out = Vec::new();
        let mut need = |cond: bool, key: &str, message: &str| {
            if cond {
                out.push(ReadinessProblem {
                    key: key.to_owned(),
                    message: message.to_owned(),
                });
            }
        };
        need(
            self.partner_center.client_id.trim().is_empty(),
            "partner_center.client_id",
            "set the application (client) id of your Entra ID app registration",
        );
        if self.dynamics.enabled {
            need(
                self.dynamics.client_id.trim().is_empty(),
                "dynamics.client_id",
                "set the application (client) id of the Dataverse application user",
            );
            need(
                self.dynamics.client_secret.is_none(),
                "dynamics.client_secret",
                "set COSELL_SYNC__DYNAMICS__CLIENT_SECRET or the credential dynamics_client_secret",
            );
        }
        if self.salesforce.enabled {
            need(
                self.salesforce.client_id.trim().is_empty(),
                "salesforce.client_id",
                "set the consumer key of the Salesforce connected app",
            );
            match self.salesforce.auth {
                SalesforceAuth::ClientCredentials => need(
                    self.salesforce.client_secret.is_none(),
                    "salesforce.client_secret",
                    "set COSELL_SYNC__SALESFORCE__CLIENT_SECRET or the credential salesforce_client_secret",
                ),
                SalesforceAuth::JwtBearer => {
                    need(
                        self.salesforce.username.trim().is_empty(),
                        "salesforce.username",
                        "jwt_bearer needs the run-as user's username",
                    );
                    need(
                        self.salesforce.private_key.is_none(),
                        "salesforce.private_key",
                        "set COSELL_SYNC__SALESFORCE__PRIVATE_KEY or the credential salesforce_private_key (PEM)",
                    );
                }
            }
        }
        out
    }

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

// ---- raw layer: what the `config` crate deserializes -----------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    state: RawState,
    sync: RawSync,
    log: RawLog,
    server: RawServer,
    partner_center: RawPartnerCenter,
    dynamics: RawDynamics,
    salesforce: RawSalesforce,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    path: String,
    lock_wait: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    interval: String,
    overlap: String,
    full_reconcile_every: String,
    expiry_days: i64,
    microsoft_decision_days: i64,
    max_attempts: i64,
    conflict: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: String,
    format: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    enabled: bool,
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartnerCenter {
    base_url: String,
    token_url: String,
    device_code_url: String,
    client_id: String,
    scope: String,
    page_size: i64,
    timeout: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDynamics {
    enabled: bool,
    base_url: String,
    api_version: String,
    token_url: String,
    client_id: String,
    scope: String,
    mapping: String,
    batch_size: i64,
    timeout: String,
    change_tracking: bool,
    account_match: String,
    duns_column: String,
    page_size: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSalesforce {
    enabled: bool,
    login_url: String,
    api_version: String,
    auth: String,
    client_id: String,
    username: String,
    mapping: String,
    batch_size: i64,
    timeout: String,
    limit_pause: String,
    limit_warn_percent: i64,
    account_match: String,
    duns_field: String,
}

fn env_name(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}__{}__{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

fn is_secret(section: &str, key: &str) -> bool {
    SECRET_KEYS.iter().any(|(s, k)| *s == section && *k == key)
}

/// 1-based line of `key` inside `[section]` of a TOML text, for messages.
fn line_of(text: &str, section: Option<&str>, key: &str) -> Option<usize> {
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix('[') {
            let name = rest.trim_end_matches(']').trim().to_owned();
            if section.is_none() && name == key {
                return Some(i + 1);
            }
            current = Some(name);
            continue;
        }
        let in_section = match section {
            Some(s) => current.as_deref() == Some(s),
            None => current.is_none(),
        };
        if in_section {
            let k = t.split('=').next().unwrap_or("").trim().trim_matches('"');
            if k == key {
                return Some(i + 1);
            }
        }
    }
    None
}

fn suggest<'a>(unknown: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&String> = known.collect();
    let close = known
        .iter()
        .find(|k| strsim_close(unknown, k))
        .map(|k| format!("; did you mean `{k}`?"));
    close.unwrap_or_else(|| {
        format!(
            "; expected one of {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// A small edit distance check (≤ 2) for "did you mean".
fn strsim_close(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > 2 {
        return false;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}

/// Loads, checks and types the settings.
pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
    let defaults: toml::Table = toml::from_str(DEFAULT_TOML).map_err(|e| ConfigError::Syntax {
        path: PathBuf::from("built-in defaults"),
        message: e.to_string(),
    })?;
    let mut origins = BTreeMap::new();

    // The file: syntax, unknown keys and secrets first, with line numbers.
    let mut file_text = None;
    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let shown = path.display().to_string();
        for (section, value) in &table {
            let at = |line: Option<usize>| match line {
                Some(l) => format!("{shown}:{l}"),
                None => shown.clone(),
            };
            let Some(default_section) = defaults.get(section).and_then(|v| v.as_table()) else {
                return Err(ConfigError::UnknownKey {
                    key: section.clone(),
                    origin: at(line_of(&text, None, section)),
                    hint: suggest(section, defaults.keys()),
                });
            };
            let Some(keys) = value.as_table() else {
                return Err(ConfigError::Invalid {
                    key: section.clone(),
                    origin: shown.clone(),
                    message: "expected a [section] table".into(),
                });
            };
            for key in keys.keys() {
                let line = line_of(&text, Some(section), key);
                if is_secret(section, key) {
                    return Err(ConfigError::SecretInFile {
                        key: format!("{section}.{key}"),
                        origin: at(line),
                        env: env_name(section, key),
                        credential: format!("{section}_{key}"),
                    });
                }
                if !default_section.contains_key(key) {
                    return Err(ConfigError::UnknownKey {
                        key: format!("{section}.{key}"),
                        origin: at(line),
                        hint: suggest(key, default_section.keys()),
                    });
                }
                origins.insert(format!("{section}.{key}"), at(line));
            }
        }
        file_text = Some(text);
    }

    // The environment: every COSELL_SYNC__ variable must name a known key.
    let mut env_settings = std::collections::HashMap::new();
    let mut env_secrets = BTreeMap::new();
    for (name, value) in &sources.env {
        let Some(rest) = name.strip_prefix(&format!("{ENV_PREFIX}__")) else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let origin = format!("environment variable {name}");
        let [section, key] = parts.as_slice() else {
            return Err(ConfigError::UnknownKey {
                key: parts.join("."),
                origin,
                hint: "; expected COSELL_SYNC__<SECTION>__<KEY>".into(),
            });
        };
        if is_secret(section, key) {
            env_secrets.insert(format!("{section}.{key}"), value.clone());
            continue;
        }
        let known = defaults
            .get(section.as_str())
            .and_then(|v| v.as_table())
            .is_some_and(|t| t.contains_key(key.as_str()));
        if !known {
            let hint = match defaults.get(section.as_str()).and_then(|v| v.as_table()) {
                Some(t) => suggest(key, t.keys()),
                None => suggest(section, defaults.keys()),
            };
            return Err(ConfigError::UnknownKey {
                key: format!("{section}.{key}"),
                origin,
                hint,
            });
        }
        env_settings.insert(format!("{section}.{key}"), value.clone());
        origins.insert(format!("{section}.{key}"), origin);
    }

    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULT_TOML,
        config::FileFormat::Toml,
    ));
    if let Some(text) = &file_text {
        builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
    }
    for (key, value) in &env_settings {
        builder = builder
            .set_override(key.as_str(), value.as_str())
            .map_err(|e| ConfigError::Invalid {
                key: key.clone(),
                origin: origins.get(key).cloned().unwrap_or_default(),
                message: e.to_string(),
            })?;
    }
    let merged = builder.build().map_err(|e| ConfigError::Invalid {
        key: String::new(),
        origin: "configuration".into(),
        message: e.to_string(),
    })?;
    let raw: Raw = merged.try_deserialize().map_err(|e| {
        let key = match &e {
            config::ConfigError::Type { key: Some(k), .. } => k.clone(),
            _ => String::new(),
        };
        let origin = origins
            .get(&key)
            .cloned()
            .unwrap_or_else(|| "built-in defaults".into());
        let message = match e {
            config::ConfigError::Type {
                unexpected,
                expected,
                ..
            } => format!("expected {expected}, found {unexpected}"),
            other => other.to_string(),
        };
        ConfigError::Invalid {
            key,
            origin,
            message,
        }
    })?;

    let secret = |section: &str, key: &str| -> Result<Option<SecretString>, ConfigError> {
        let full = format!("{section}.{key}");
        if let Some(v) = env_secrets.get(&full).filter(|v| !v.trim().is_empty()) {
            return Ok(Some(SecretString::from(v.trim().to_owned())));
        }
        if let Some(dir) = &sources.credentials_dir {
            let path = dir.join(format!("{section}_{key}"));
            match std::fs::read_to_string(&path) {
                Ok(v) if !v.trim().is_empty() => {
                    return Ok(Some(SecretString::from(v.trim().to_owned())));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ConfigError::Credential { path, source }),
            }
        }
        Ok(None)
    };

    let v = Validator { origins: &origins };
    let settings = Settings {
        state: StateSettings {
            path: v.path("state.path", &raw.state.path)?,
            lock_wait: v.duration("state.lock_wait", &raw.state.lock_wait)?,
        },
        sync: SyncSettings {
            interval: v.positive_duration("sync.interval", &raw.sync.interval)?,
            overlap: v.duration("sync.overlap", &raw.sync.overlap)?,
            full_reconcile_every: v
                .positive_duration("sync.full_reconcile_every", &raw.sync.full_reconcile_every)?,
            expiry_days: v.range("sync.expiry_days", raw.sync.expiry_days, 1, 365)?,
            microsoft_decision_days: v.range(
                "sync.microsoft_decision_days",
                raw.sync.microsoft_decision_days,
                1,
                365,
            )?,
            max_attempts: v.range("sync.max_attempts", raw.sync.max_attempts, 1, 1000)?,
            conflict: ConflictPolicy::parse(&raw.sync.conflict).ok_or_else(|| {
                v.invalid(
                    "sync.conflict",
                    format!(
                        "{:?} is not one of \"mapping\", \"partner_center\", \"crm\", \"newest\"",
                        raw.sync.conflict
                    ),
                )
            })?,
        },
        log: LogSettings {
            level: v.log_level("log.level", &raw.log.level)?,
            format: LogFormat::parse(&raw.log.format).ok_or_else(|| {
                v.invalid(
                    "log.format",
                    format!("{:?} is not \"pretty\" or \"json\"", raw.log.format),
                )
            })?,
        },
        server: ServerSettings {
            enabled: raw.server.enabled,
            listen: raw.server.listen.trim().parse().map_err(|_| {
                v.invalid(
                    "server.listen",
                    format!(
                        "{:?} is not an address with a port, such as \"127.0.0.1:9464\"",
                        raw.server.listen
                    ),
                )
            })?,
        },
        partner_center: PartnerCenterSettings {
            base_url: v.url("partner_center.base_url", &raw.partner_center.base_url)?,
            token_url: v.url("partner_center.token_url", &raw.partner_center.token_url)?,
            device_code_url: v.url(
                "partner_center.device_code_url",
                &raw.partner_center.device_code_url,
            )?,
            client_id: raw.partner_center.client_id.trim().to_owned(),
            scope: v.non_empty("partner_center.scope", &raw.partner_center.scope)?,
            refresh_token: secret("partner_center", "refresh_token")?,
            page_size: v.range(
                "partner_center.page_size",
                raw.partner_center.page_size,
                1,
                100,
            )?,
            timeout: v.positive_duration("partner_center.timeout", &raw.partner_center.timeout)?,
        },
        dynamics: DynamicsSettings {
            enabled: raw.dynamics.enabled,
            base_url: v.url("dynamics.base_url", &raw.dynamics.base_url)?,
            api_version: v.api_version("dynamics.api_version", &raw.dynamics.api_version)?,
            token_url: v.url_allowing_placeholder(
                "dynamics.token_url",
                &raw.dynamics.token_url,
                raw.dynamics.enabled,
            )?,
            client_id: raw.dynamics.client_id.trim().to_owned(),
            client_secret: secret("dynamics", "client_secret")?,
            scope: raw.dynamics.scope.trim().to_owned(),
            mapping: v.path("dynamics.mapping", &raw.dynamics.mapping)?,
            batch_size: v.range("dynamics.batch_size", raw.dynamics.batch_size, 1, 1000)?,
            timeout: v.positive_duration("dynamics.timeout", &raw.dynamics.timeout)?,
            change_tracking: raw.dynamics.change_tracking,
            account_match: AccountMatch::parse(&raw.dynamics.account_match).ok_or_else(|| {
                v.invalid(
                    "dynamics.account_match",
                    format!(
                        "{:?} is not one of \"duns_then_name_postal_code\", \"name_postal_code\", \"none\"",
                        raw.dynamics.account_match
                    ),
                )
            })?,
            duns_column: v.non_empty("dynamics.duns_column", &raw.dynamics.duns_column)?,
            page_size: v.range("dynamics.page_size", raw.dynamics.page_size, 1, 5000)?,
        },
        salesforce: SalesforceSettings {
            enabled: raw.salesforce.enabled,
            login_url: v.url("salesforce.login_url", &raw.salesforce.login_url)?,
            api_version: v.api_version("salesforce.api_version", &raw.salesforce.api_version)?,
            auth: SalesforceAuth::parse(&raw.salesforce.auth).ok_or_else(|| {
                v.invalid(
                    "salesforce.auth",
                    format!(
                        "{:?} is not \"client_credentials\" or \"jwt_bearer\"",
                        raw.salesforce.auth
                    ),
                )
            })?,
            client_id: raw.salesforce.client_id.trim().to_owned(),
            username: raw.salesforce.username.trim().to_owned(),
            client_secret: secret("salesforce", "client_secret")?,
            private_key: secret("salesforce", "private_key")?,
            mapping: v.path("salesforce.mapping", &raw.salesforce.mapping)?,
            batch_size: v.range("salesforce.batch_size", raw.salesforce.batch_size, 1, 200)?,
            timeout: v.positive_duration("salesforce.timeout", &raw.salesforce.timeout)?,
            limit_pause: v
                .positive_duration("salesforce.limit_pause", &raw.salesforce.limit_pause)?,
            limit_warn_percent: v.range(
                "salesforce.limit_warn_percent",
                raw.salesforce.limit_warn_percent,
                1,
                100,
            )?,
            account_match: AccountMatch::parse(&raw.salesforce.account_match).ok_or_else(|| {
                v.invalid(
                    "salesforce.account_match",
                    format!(
                        "{:?} is not \"duns_then_name_postal_code\", \"name_postal_code\" or \"none\"",
                        raw.salesforce.account_match
                    ),
                )
            })?,
            duns_field: v.api_name("salesforce.duns_field", &raw.salesforce.duns_field)?,
        },
        config_dir: sources.file.as_ref().map(|f| {
            f.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        }),
        origins,
    };
    Ok(settings)
}

struct Validator<'a> {
    origins: &'a BTreeMap<String, String>,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            origin: self
                .origins
                .get(key)
                .cloned()
                .unwrap_or_else(|| "built-in defaults".into()),
            message: message.into(),
        }
    }

    fn duration(&self, key: &str, s: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(s.trim()).map_err(|e| {
            self.invalid(
                key,
                format!("{s:?} is not a duration such as \"60s\" or \"10m\" ({e})"),
            )
        })
    }

    fn positive_duration(&self, key: &str, s: &str) -> Result<Duration, ConfigError> {
        let d = self.duration(key, s)?;
        if d.is_zero() {
            return Err(self.invalid(key, "must be greater than zero"));
        }
        Ok(d)
    }

    fn range(&self, key: &str, n: i64, min: i64, max: i64) -> Result<u32, ConfigError> {
        if n < min || n > max {
            return Err(self.invalid(key, format!("{n} is outside {min}..={max}")));
        }
        u32::try_from(n).map_err(|_| self.invalid(key, format!("{n} is out of range")))
    }

    fn url(&self, key: &str, s: &str) -> Result<Url, ConfigError> {
        let url = Url::parse(s.trim())
            .map_err(|e| self.invalid(key, format!("{s:?} is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(self.invalid(key, format!("{s:?} is not an http(s) URL with a host")));
        }
        Ok(url)
    }

    /// The shipped default token URL has a `<tenant>` placeholder; that is
    /// only an error once the CRM is enabled.
    fn url_allowing_placeholder(
        &self,
        key: &str,
        s: &str,
        enabled: bool,
    ) -> Result<Url, ConfigError> {
        if s.contains("<tenant>") {
            if enabled {
                return Err(self.invalid(
                    key,
                    "replace <tenant> with your Entra ID tenant id or domain",
                ));
            }
            return self.url(key, &s.replace("<tenant>", "tenant"));
        }
        self.url(key, s)
    }

    fn path(&self, key: &str, s: &str) -> Result<PathBuf, ConfigError> {
        if s.trim().is_empty() {
            return Err(self.invalid(key, "must not be empty"));
        }
        Ok(PathBuf::from(s.trim()))
    }

    fn non_empty(&self, key: &str, s: &str) -> Result<String, ConfigError> {
        if s.trim().is_empty() {
            return Err(self.invalid(key, "must not be empty"));
        }
        Ok(s.trim().to_owned())
    }

    fn api_version(&self, key: &str, s: &str) -> Result<String, ConfigError> {
        let t = s.trim();
        let ok = t.strip_prefix('v').is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        });
        if !ok {
            return Err(self.invalid(key, format!("{s:?} is not a version such as \"v9.2\"")));
        }
        Ok(t.to_owned())
    }

    /// A Salesforce field API name (letters, digits, underscores), or empty.
    fn api_name(&self, key: &str, s: &str) -> Result<String, ConfigError> {
        let t = s.trim();
        let ok = t.is_empty()
            || (t.starts_with(|c: char| c.is_ascii_alphabetic())
                && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if !ok {
            return Err(self.invalid(key, format!("{s:?} is not a field API name")));
        }
        Ok(t.to_owned())
    }

    fn log_level(&self, key: &str, s: &str) -> Result<String, ConfigError> {
        tracing_subscriber::EnvFilter::try_new(s.trim())
            .map_err(|e| self.invalid(key, format!("{s:?} is not a log level or filter ({e})")))?;
        Ok(s.trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn with_file(text: &str) -> (tempfile::TempDir, Sources) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cosell-sync.toml");
        std::fs::write(&path, text).unwrap();
        (
            dir,
            Sources {
                file: Some(path),
                ..Default::default()
            },
        )
    }

    #[test]
    fn built_in_defaults_match_the_design() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.state.path, PathBuf::from("cosell-sync.db"));
        assert_eq!(s.state.lock_wait, Duration::from_secs(10));
        assert_eq!(s.sync.interval, Duration::from_secs(60));
        assert_eq!(s.sync.overlap, Duration::from_secs(600));
        assert_eq!(s.sync.full_reconcile_every, Duration::from_secs(6 * 3600));
        assert_eq!(s.sync.expiry_days, 14);
        assert_eq!(s.sync.microsoft_decision_days, 14);
        assert_eq!(s.sync.max_attempts, 5);
        assert_eq!(s.sync.conflict, ConflictPolicy::Mapping);
        assert_eq!(s.server.listen, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(
            s.partner_center.base_url.as_str(),
            "https://api.partner.microsoft.com/"
        );
        assert_eq!(s.partner_center.page_size, 100);
        assert_eq!(s.dynamics.api_version, "v9.2");
        assert_eq!(s.dynamics.batch_size, 100);
        assert_eq!(s.salesforce.api_version, "v62.0");
        assert_eq!(s.salesforce.batch_size, 200);
        assert_eq!(s.salesforce.auth, SalesforceAuth::ClientCredentials);
        assert!(!s.dynamics.enabled && !s.salesforce.enabled);
        assert_eq!(s.config_dir, None);
        assert_eq!(s.mapping_path(&s.dynamics.mapping), None);
    }

    #[test]
    fn every_default_key_is_commented() {
        // Each key line in default.toml is preceded by a comment line or is
        // self-explanatory in its section; at least the file documents secrets.
        for (section, key) in SECRET_KEYS {
            assert!(
                DEFAULT_TOML.contains(&format!("{section}.{key}")),
                "{section}.{key}"
            );
        }
        assert!(
            DEFAULT_TOML
                .lines()
                .filter(|l| l.trim_start().starts_with('#'))
                .count()
                > 30
        );
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let (_dir, mut sources) = with_file("[sync]\ninterval = \"5m\"\nmax_attempts = 3\n");
        sources
            .env
            .insert("COSELL_SYNC__SYNC__INTERVAL".into(), "30s".into());
        sources
            .env
            .insert("COSELL_SYNC__DYNAMICS__ENABLED".into(), "true".into());
        sources.env.insert(
            "COSELL_SYNC__DYNAMICS__TOKEN_URL".into(),
            "https://login.example.test/t/oauth2/v2.0/token".into(),
        );
        sources
            .env
            .insert("COSELL_SYNC__PARTNER_CENTER__PAGE_SIZE".into(), "50".into());
        let s = load(&sources).unwrap();
        assert_eq!(s.sync.interval, Duration::from_secs(30));
        assert_eq!(s.sync.max_attempts, 3);
        assert!(s.dynamics.enabled);
        assert_eq!(s.partner_center.page_size, 50);
        assert_eq!(
            s.origin("sync.interval"),
            "environment variable COSELL_SYNC__SYNC__INTERVAL"
        );
        assert!(
            s.origin("sync.max_attempts")
                .ends_with("cosell-sync.toml:3")
        );
        assert_eq!(s.origin("sync.overlap"), "built-in defaults");
    }

    #[test]
    fn the_store_lock_wait_is_a_duration_that_may_be_zero() {
        let (_dir, mut sources) = with_file("[state]\nlock_wait = \"0s\"\n");
        assert_eq!(load(&sources).unwrap().state.lock_wait, Duration::ZERO);
        sources
            .env
            .insert("COSELL_SYNC__STATE__LOCK_WAIT".into(), "1m 30s".into());
        let s = load(&sources).unwrap();
        assert_eq!(s.state.lock_wait, Duration::from_secs(90));
        assert!(
            s.render().contains("lock_wait = \"1m 30s\""),
            "{}",
            s.render()
        );
        sources
            .env
            .insert("COSELL_SYNC__STATE__LOCK_WAIT".into(), "a while".into());
        let err = load(&sources).unwrap_err();
        assert_eq!(err.key(), Some("state.lock_wait"));
        let msg = err.to_string();
        assert!(msg.contains("COSELL_SYNC__STATE__LOCK_WAIT"), "{msg}");
        assert!(msg.contains("is not a duration"), "{msg}");
    }

    #[test]
    fn a_misspelled_key_is_named_with_its_line() {
        let (_dir, sources) = with_file("[sync]\n\nintervall = \"5m\"\n");
        let err = load(&sources).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.key(), Some("sync.intervall"));
        assert!(msg.contains("unknown key `sync.intervall`"), "{msg}");
        assert!(msg.contains("cosell-sync.toml:3"), "{msg}");
        assert!(msg.contains("did you mean `interval`"), "{msg}");
    }

    #[test]
    fn an_unknown_section_and_env_key_are_errors() {
        let (_dir, sources) = with_file("[synk]\ninterval = \"5m\"\n");
        let err = load(&sources).unwrap_err();
        assert_eq!(err.key(), Some("synk"));

        let mut sources = Sources::default();
        sources
            .env
            .insert("COSELL_SYNC__SYNC__INTERVALL".into(), "5m".into());
        let err = load(&sources).unwrap_err();
        assert!(
            err.to_string()
                .contains("environment variable COSELL_SYNC__SYNC__INTERVALL")
        );
        assert_eq!(err.key(), Some("sync.intervall"));
    }

    #[test]
    fn invalid_values_name_the_key_and_the_source() {
        let cases = [
            ("[sync]\ninterval = \"-5s\"\n", "sync.interval"),
            ("[sync]\ninterval = \"0s\"\n", "sync.interval"),
            ("[sync]\nmax_attempts = 0\n", "sync.max_attempts"),
            ("[sync]\nmax_attempts = \"many\"\n", "sync.max_attempts"),
            (
                "[partner_center]\nbase_url = \"not a url\"\n",
                "partner_center.base_url",
            ),
            (
                "[partner_center]\npage_size = 1000\n",
                "partner_center.page_size",
            ),
            ("[server]\nlisten = \"localhost\"\n", "server.listen"),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[sync]\nconflict = \"mine\"\n", "sync.conflict"),
            ("[salesforce]\nauth = \"password\"\n", "salesforce.auth"),
            (
                "[dynamics]\napi_version = \"9.2\"\n",
                "dynamics.api_version",
            ),
        ];
        for (text, key) in cases {
            let (_dir, sources) = with_file(text);
            let err = load(&sources).unwrap_err();
            assert_eq!(err.key(), Some(key), "{text}: {err}");
            assert!(
                err.to_string().contains("cosell-sync.toml"),
                "{text}: {err}"
            );
        }
        // A default that only becomes wrong once a CRM is enabled names its origin too.
        let (_dir, sources) = with_file("[dynamics]\nenabled = true\n");
        let err = load(&sources).unwrap_err();
        assert_eq!(err.key(), Some("dynamics.token_url"));
        assert!(err.to_string().contains("from built-in defaults"), "{err}");
        assert!(err.to_string().contains("<tenant>"), "{err}");
    }

    #[test]
    fn secrets_come_from_env_or_credentials_and_never_from_the_file() {
        let (_dir, sources) = with_file("[dynamics]\nclient_secret = \"hunter2\"\n");
        let err = load(&sources).unwrap_err();
        assert!(matches!(err, ConfigError::SecretInFile { .. }));
        assert!(!err.to_string().contains("hunter2"));
        assert!(
            err.to_string()
                .contains("COSELL_SYNC__DYNAMICS__CLIENT_SECRET")
        );

        let creds = tempfile::tempdir().unwrap();
        std::fs::write(creds.path().join("salesforce_client_secret"), "sf-secret\n").unwrap();
        std::fs::write(creds.path().join("dynamics_client_secret"), "from-file").unwrap();
        let mut sources = Sources {
            credentials_dir: Some(creds.path().to_path_buf()),
            ..Default::default()
        };
        sources.env.insert(
            "COSELL_SYNC__DYNAMICS__CLIENT_SECRET".into(),
            "from-env".into(),
        );
        let s = load(&sources).unwrap();
        assert_eq!(
            s.salesforce.client_secret.as_ref().unwrap().expose_secret(),
            "sf-secret"
        );
        assert_eq!(
            s.dynamics.client_secret.as_ref().unwrap().expose_secret(),
            "from-env"
        );
        assert!(s.partner_center.refresh_token.is_none());

        let shown = format!("{s:?}\n{}", s.render());
        assert!(
            !shown.contains("sf-secret") && !shown.contains("from-env"),
            "{shown}"
        );
        assert!(s.render().contains("# client_secret: set (redacted)"));
    }

    #[test]
    fn rendered_settings_load_back_to_the_same_values() {
        let mut sources = Sources::default();
        sources
            .env
            .insert("COSELL_SYNC__SYNC__OVERLAP".into(), "15m".into());
        let s = load(&sources).unwrap();
        let (_dir, again) = with_file(&s.render());
        let t = load(&again).unwrap();
        assert_eq!(t.render(), s.render());
        assert_eq!(t.sync.overlap, Duration::from_secs(900));
    }

    #[test]
    fn readiness_names_missing_credentials_for_enabled_systems() {
        let mut sources = Sources::default();
        for (k, v) in [
            ("COSELL_SYNC__SALESFORCE__ENABLED", "true"),
            ("COSELL_SYNC__SALESFORCE__AUTH", "jwt_bearer"),
            ("COSELL_SYNC__PARTNER_CENTER__CLIENT_ID", "abc"),
        ] {
            sources.env.insert(k.into(), v.into());
        }
        let s = load(&sources).unwrap();
        let keys: Vec<_> = s.readiness_problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![
                "salesforce.client_id",
                "salesforce.username",
                "salesforce.private_key"
            ]
        );
    }

    #[test]
    fn salesforce_limit_and_account_settings_are_validated() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.salesforce.limit_pause, Duration::from_secs(15 * 60));
        assert_eq!(s.salesforce.limit_warn_percent, 80);
        assert_eq!(
            s.salesforce.account_match,
            AccountMatch::DunsThenNamePostalCode
        );
        assert_eq!(s.salesforce.duns_field, "DunsNumber");

        let (_dir, sources) = with_file(
            "[salesforce]\nlimit_pause = \"1h\"\nlimit_warn_percent = 95\naccount_match = \"none\"\nduns_field = \"\"\n",
        );
        let s = load(&sources).unwrap();
        assert_eq!(s.salesforce.limit_pause, Duration::from_secs(3600));
        assert_eq!(s.salesforce.limit_warn_percent, 95);
        assert_eq!(s.salesforce.account_match, AccountMatch::None);
        assert_eq!(s.salesforce.duns_field, "");

        for (text, key) in [
            (
                "[salesforce]\nlimit_pause = \"0s\"\n",
                "salesforce.limit_pause",
            ),
            (
                "[salesforce]\nlimit_warn_percent = 0\n",
                "salesforce.limit_warn_percent",
            ),
            (
                "[salesforce]\nlimit_warn_percent = 101\n",
                "salesforce.limit_warn_percent",
            ),
            (
                "[salesforce]\naccount_match = \"fuzzy\"\n",
                "salesforce.account_match",
            ),
            (
                "[salesforce]\nduns_field = \"Duns' OR\"\n",
                "salesforce.duns_field",
            ),
        ] {
            let (_dir, sources) = with_file(text);
            let err = load(&sources).unwrap_err();
            assert_eq!(err.key(), Some(key), "{text}: {err}");
        }
    }

    #[test]
    fn dynamics_scope_is_derived_from_the_organization_url() {
        let s = Settings::defaults().unwrap();
        assert_eq!(
            s.dynamics.effective_scope(),
            "https://contoso.crm.dynamics.com/.default"
        );
    }

    #[test]
    fn dynamics_read_and_account_settings_are_typed_and_checked() {
        let s = Settings::defaults().unwrap();
        assert!(!s.dynamics.change_tracking);
        assert_eq!(
            s.dynamics.account_match,
            AccountMatch::DunsThenNamePostalCode
        );
        assert_eq!(s.dynamics.page_size, 500);

        let (_dir, sources) = with_file(
            "[dynamics]\nchange_tracking = true\naccount_match = \"name_postal_code\"\npage_size = 5000\n",
        );
        let s = load(&sources).unwrap();
        assert!(s.dynamics.change_tracking);
        assert_eq!(s.dynamics.account_match, AccountMatch::NamePostalCode);
        assert_eq!(s.dynamics.page_size, 5000);
        assert!(s.render().contains("account_match = \"name_postal_code\""));

        for (text, key) in [
            (
                "[dynamics]\naccount_match = \"duns\"\n",
                "dynamics.account_match",
            ),
            ("[dynamics]\npage_size = 0\n", "dynamics.page_size"),
            ("[dynamics]\npage_size = 5001\n", "dynamics.page_size"),
        ] {
            let (_dir, sources) = with_file(text);
            let err = load(&sources).unwrap_err();
            assert_eq!(err.key(), Some(key), "{text}: {err}");
        }
    }

    #[test]
    fn mapping_paths_are_relative_to_the_config_file() {
        let (dir, sources) = with_file("");
        let s = load(&sources).unwrap();
        assert_eq!(
            s.mapping_path(&s.salesforce.mapping),
            Some(dir.path().join("mappings/salesforce.toml"))
        );
    }
}
