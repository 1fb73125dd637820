//! Typed settings, layered with the `config` crate: the built-in
//! `config/default.toml` ← the file given with `--config` ← environment
//! variables `COSELL_SYNC__<SECTION>__<KEY>`. Secrets come only from the
//! environment or from `$CREDENTIALS_DIRECTORY/<section>_<key>`.
//!
//! [`load`] layers the sources (each value carries its origin: the file and
//! line, or the environment variable), [`secrets`] reads the secrets,
//! `validate` types and checks every value, `show` renders the effective
//! settings for `config show`.

mod load;
mod secrets;
mod show;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

pub use load::load;

/// Every key with its default and a comment; built into the binary.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
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
    /// Where each effective value that is not a built-in default came from,
    /// by `section.key` (`path:line` or `environment variable …`), as the
    /// `config` crate's merge recorded it.
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
        crm: crate::domain::CrmKind,
    ) -> Result<(String, String), ConfigError> {
        let (relative, key, builtin) = match crm {
            crate::domain::CrmKind::Dynamics => (
                &self.dynamics.mapping,
                "dynamics.mapping",
                crate::mapping::DEFAULT_DYNAMICS,
            ),
            crate::domain::CrmKind::Salesforce => (
                &self.salesforce.mapping,
                "salesforce.mapping",
                crate::mapping::DEFAULT_SALESFORCE,
            ),
        };
        // A path other than the shipped default must exist; the default
        // path falls back to the built-in mapping when there is no file.
        let default_path = match crm {
            crate::domain::CrmKind::Dynamics => "mappings/dynamics.toml",
            crate::domain::CrmKind::Salesforce => "mappings/salesforce.toml",
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
}

#[cfg(test)]
mod tests;
