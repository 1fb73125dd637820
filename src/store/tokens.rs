//! The Partner Center refresh token, kept in the state store so that the
//! rotated token survives a restart.
//!
//! A token given in the configuration (environment or credential file) seeds
//! the store; once Entra ID rotates it, the stored one is used. When the
//! operator configures a different token later, it wins again.

use std::sync::Arc;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

const TOKEN_KEY: &str = "partner_center.refresh_token";
const SEED_KEY: &str = "partner_center.refresh_token_seed";

/// The refresh token in the state store. The store knows nothing of the
/// client that uses it: the engine setup adapts this to the Partner Center
/// client's token-store trait.
pub struct StoredRefreshToken {
    store: Arc<Store>,
    configured: Option<SecretString>,
}

impl StoredRefreshToken {
    pub fn new(store: Arc<Store>, configured: Option<SecretString>) -> Self {
        StoredRefreshToken { store, configured }
    }

    /// Whether a token is available at all (stored or configured).
    pub fn is_present(&self) -> bool {
        matches!(self.load(), Ok(Some(_)))
    }

    /// The token to use: the configured one when it is new (or nothing is
    /// stored yet), else the stored, rotated one.
    pub fn load(&self) -> Result<Option<SecretString>, StoreError> {
        let (stored, seed) = self
            .store
            .read(|r| Ok((r.kv_get(TOKEN_KEY)?, r.kv_get(SEED_KEY)?)))?;
        if let Some(configured) = &self.configured {
            let newly_configured = seed.as_deref() != Some(fingerprint(configured).as_str());
            if stored.is_none() || newly_configured {
                return Ok(Some(configured.clone()));
            }
        }
        Ok(stored.map(SecretString::from))
    }

    /// Keeps a (rotated) token, remembering which configured token it
    /// replaced.
    pub fn save(&self, token: &SecretString) -> Result<(), StoreError> {
        let seed = self.configured.as_ref().map(fingerprint);
        self.store.write(|r| {
            let now = Utc::now();
            r.kv_set(TOKEN_KEY, token.expose_secret(), now)?;
            if let Some(seed) = &seed {
                r.kv_set(SEED_KEY, seed, now)?;
            }
            Ok(())
        })
    }
}

fn fingerprint(token: &SecretString) -> String {
    let digest = Sha256::digest(token.expose_secret().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("t.db")).unwrap());
        (dir, store)
    }

    fn current(t: &StoredRefreshToken) -> Option<String> {
        t.load().unwrap().map(|s| s.expose_secret().to_owned())
    }

    #[test]
    fn the_configured_token_seeds_and_the_rotated_one_wins_after() {
        let (_dir, store) = store();
        let tokens = StoredRefreshToken::new(store.clone(), Some(SecretString::from("seed-1")));
        assert_eq!(current(&tokens).as_deref(), Some("seed-1"));
        tokens.save(&SecretString::from("rotated-2")).unwrap();
        assert_eq!(current(&tokens).as_deref(), Some("rotated-2"));

        // A restart with the same configured token keeps the rotated one.
        let again = StoredRefreshToken::new(store.clone(), Some(SecretString::from("seed-1")));
        assert_eq!(current(&again).as_deref(), Some("rotated-2"));

        // An operator configuring a new token takes over.
        let fresh = StoredRefreshToken::new(store.clone(), Some(SecretString::from("seed-3")));
        assert_eq!(current(&fresh).as_deref(), Some("seed-3"));
    }

    #[test]
    fn a_login_without_configured_token_is_kept_in_the_store() {
        let (_dir, store) = store();
        let tokens = StoredRefreshToken::new(store.clone(), None);
        assert!(!tokens.is_present());
        tokens
            .save(&SecretString::from("from-device-code"))
            .unwrap();
        let restarted = StoredRefreshToken::new(store, None);
        assert_eq!(current(&restarted).as_deref(), Some("from-device-code"));
    }
}
