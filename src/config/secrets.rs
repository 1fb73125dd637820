//! Secrets: read from the environment (`COSELL_SYNC__<SECTION>__<KEY>`) or
//! from `$CREDENTIALS_DIRECTORY/<section>_<key>` (systemd `LoadCredential=`),
//! the environment first; never from a config file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::SecretString;

use super::{ConfigError, ENV_PREFIX, SECRET_KEYS};

/// Whether `section.key` is one of the [`SECRET_KEYS`].
pub(super) fn is_secret(section: &str, key: &str) -> bool {
    SECRET_KEYS.iter().any(|(s, k)| *s == section && *k == key)
}

/// The environment variable that sets `section.key`.
pub(super) fn env_name(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}__{}__{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// The refusal of a secret written in a config file at `origin`.
pub(super) fn written_in_file(section: &str, key: &str, origin: String) -> ConfigError {
    ConfigError::SecretInFile {
        key: format!("{section}.{key}"),
        origin,
        env: env_name(section, key),
        credential: format!("{section}_{key}"),
    }
}

/// Where the secrets are looked up.
#[derive(Debug, Default)]
pub(super) struct Secrets {
    /// Secret values from the environment, by `section.key`.
    pub(super) env: BTreeMap<String, String>,
    /// `$CREDENTIALS_DIRECTORY`.
    pub(super) credentials_dir: Option<PathBuf>,
}

impl Secrets {
    /// A secret, or `None` when it is set nowhere (or blank).
    pub(super) fn get(
        &self,
        section: &str,
        key: &str,
    ) -> Result<Option<SecretString>, ConfigError> {
        let full = format!("{section}.{key}");
        if let Some(v) = self.env.get(&full).filter(|v| !v.trim().is_empty()) {
            return Ok(Some(SecretString::from(v.trim().to_owned())));
        }
        if let Some(dir) = &self.credentials_dir {
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
    }
}
