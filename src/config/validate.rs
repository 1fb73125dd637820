//! What the `config` crate deserializes ([`Raw`]), and how each value is
//! typed and checked into [`Settings`]. An error names the key and where its
//! value came from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::secrets::Secrets;
use super::{
    AccountMatch, ConfigError, ConflictPolicy, DynamicsSettings, LogFormat, LogSettings,
    PartnerCenterSettings, SalesforceAuth, SalesforceSettings, ServerSettings, Settings,
    StateSettings, SyncSettings,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
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
pub(super) struct RawState {
    path: String,
    lock_wait: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
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
pub(super) struct RawLog {
    level: String,
    format: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    enabled: bool,
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPartnerCenter {
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
pub(super) struct RawDynamics {
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
pub(super) struct RawSalesforce {
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

/// Types and checks the merged values; `origins` names where each value that
/// is not a built-in default came from.
pub(super) fn typed(
    raw: Raw,
    origins: BTreeMap<String, String>,
    secrets: &Secrets,
    config_dir: Option<PathBuf>,
) -> Result<Settings, ConfigError> {
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
            refresh_token: secrets.get("partner_center", "refresh_token")?,
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
            client_secret: secrets.get("dynamics", "client_secret")?,
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
            client_secret: secrets.get("salesforce", "client_secret")?,
            private_key: secrets.get("salesforce", "private_key")?,
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
        config_dir,
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
