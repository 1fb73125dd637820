//! Delegated (app + user) sign-in for the Referrals API: the refresh-token
//! grant with rotation, the device authorization grant used by
//! `cosell-sync login partner-center`, and the login pause after `invalid_grant`.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::PartnerCenterOptions;
use super::error::{PartnerCenterError, TokenStoreError};
use crate::http::{
    FetchedToken, Retryable, TokenError, TokenResponse, TokenSource, post_form, post_token_form,
};
use crate::metrics::ENTRA_ID;

/// Where the Partner Center refresh token lives between runs (the state store).
pub trait RefreshTokenStore: Send + Sync {
    fn load(&self) -> Result<Option<SecretString>, TokenStoreError>;
    fn save(&self, token: &SecretString) -> Result<(), TokenStoreError>;
}

/// Runs token store work (a state store transaction) on the blocking pool,
/// off the async workers. A panic in `f` is raised again here.
async fn off_worker<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TokenStoreError> + Send + 'static,
) -> Result<T, TokenStoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Box::new(e)),
    }
}

/// A refresh token store in memory, for tests and one-shot commands.
#[derive(Default)]
pub struct MemoryRefreshTokenStore {
    token: Mutex<Option<SecretString>>,
    saves: std::sync::atomic::AtomicU32,
}

impl MemoryRefreshTokenStore {
    pub fn new(token: Option<&str>) -> Self {
        MemoryRefreshTokenStore {
            token: Mutex::new(token.map(SecretString::from)),
            saves: Default::default(),
        }
    }

    /// The token currently held (tests compare it).
    pub fn current(&self) -> Option<String> {
        self.lock().as_ref().map(|s| s.expose_secret().to_owned())
    }

    /// How many times `save` was called.
    pub fn saves(&self) -> u32 {
        self.saves.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SecretString>> {
        // A poisoned lock still holds a valid token.
        self.token.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for MemoryRefreshTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRefreshTokenStore")
            .field("token", &self.lock().as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl RefreshTokenStore for MemoryRefreshTokenStore {
    fn load(&self) -> Result<Option<SecretString>, TokenStoreError> {
        Ok(self.lock().clone())
    }

    fn save(&self, token: &SecretString) -> Result<(), TokenStoreError> {
        *self.lock() = Some(token.clone());
        self.saves.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// Access tokens from the stored refresh token. After `invalid_grant` (or
/// another "sign in again" answer) it stops calling the token endpoint until
/// the store holds a different refresh token.
pub(crate) struct RefreshTokenSource {
    http: reqwest::Client,
    token_url: url::Url,
    client_id: String,
    scope: String,
    store: Arc<dyn RefreshTokenStore>,
    /// Keyed hash of the refresh token that was refused, while paused.
    refused: Mutex<Option<u64>>,
    hasher: std::hash::RandomState,
}

impl RefreshTokenSource {
    pub(crate) fn new(
        http: reqwest::Client,
        options: &PartnerCenterOptions,
        store: Arc<dyn RefreshTokenStore>,
    ) -> Self {
        RefreshTokenSource {
            http,
            token_url: options.token_url.clone(),
            client_id: options.client_id.clone(),
            scope: options.scope.clone(),
            store,
            refused: Mutex::new(None),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn fingerprint(&self, token: &SecretString) -> u64 {
        self.hasher.hash_one(token.expose_secret())
    }

    fn refused(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether Partner Center work is paused until someone signs in again.
    pub(crate) fn paused(&self) -> bool {
        let Some(refused) = *self.refused() else {
            return false;
        };
        // A new token saved by `login partner-center` lifts the pause.
        match self.store.load() {
            Ok(Some(t)) => self.fingerprint(&t) == refused,
            _ => true,
        }
    }
}

impl TokenSource for RefreshTokenSource {
    type Error = PartnerCenterError;

    async fn fetch_token(&self) -> Result<FetchedToken, PartnerCenterError> {
        let store = self.store.clone();
        let refresh_token = off_worker(move || store.load())
            .await
            .map_err(PartnerCenterError::Store)?
            .ok_or_else(|| PartnerCenterError::LoginRequired {
                reason: "no refresh token is stored".into(),
            })?;
        let fingerprint = self.fingerprint(&refresh_token);
        if *self.refused() == Some(fingerprint) {
            return Err(PartnerCenterError::LoginRequired {
                reason: "the stored sign-in was refused by Entra ID".into(),
            });
        }
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.as_str()),
            ("refresh_token", refresh_token.expose_secret()),
            ("scope", self.scope.as_str()),
        ];
        let response = match post_token_form(&self.http, ENTRA_ID, &self.token_url, &form).await {
            Ok(r) => r,
            Err(TokenError::Rejected { error, .. }) if error.needs_new_login() => {
                *self.refused() = Some(fingerprint);
                tracing::error!(
                    oauth_error = %error.error,
                    "Partner Center sign-in refused; pausing Partner Center work until `cosell-sync login partner-center` is run"
                );
                return Err(PartnerCenterError::LoginRequired {
                    reason: error.to_string(),
                });
            }
            Err(e) => return Err(PartnerCenterError::Token(e)),
        };
        *self.refused() = None;
        if let Some(rotated) = &response.refresh_token
            && rotated.expose_secret() != refresh_token.expose_secret()
        {
            let (store, rotated) = (self.store.clone(), rotated.clone());
            off_worker(move || store.save(&rotated))
                .await
                .map_err(PartnerCenterError::Store)?;
            tracing::info!("Partner Center refresh token rotated and saved");
        }
        Ok(response.into_fetched())
    }
}

/// What the operator needs to finish signing in on another device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCodePrompt {
    pub verification_uri: String,
    pub user_code: String,
    /// Entra ID's ready-made instruction, when it sends one.
    pub message: Option<String>,
    pub expires_in: Duration,
}

#[derive(Deserialize)]
struct DeviceCodeResponse {
    device_code: String,
    user_code: String,
    /// `verification_url` on the older Entra ID endpoint.
    #[serde(alias = "verification_url")]
    verification_uri: String,
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    interval: Option<Value>,
    #[serde(default)]
    message: Option<String>,
}

fn seconds(v: &Option<Value>) -> Option<u64> {
    match v {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The OAuth 2.0 device authorization grant (RFC 8628): asks for a code,
/// shows it through `prompt`, then polls the token endpoint, honouring
/// `interval`, `authorization_pending`, `slow_down`, `expired_token` and
/// `access_denied`. Returns the refresh token for the caller to store.
pub async fn device_code_login(
    options: &PartnerCenterOptions,
    prompt: impl FnOnce(&DeviceCodePrompt),
) -> Result<SecretString, PartnerCenterError> {
    let http =
        crate::http::build_client(&crate::http::ClientSettings::with_timeout(options.timeout))?;
    device_code_login_with(&http, options, prompt).await
}

/// [`device_code_login`] with a caller-supplied HTTP client.
pub async fn device_code_login_with(
    http: &reqwest::Client,
    options: &PartnerCenterOptions,
    prompt: impl FnOnce(&DeviceCodePrompt),
) -> Result<SecretString, PartnerCenterError> {
    if options.client_id.trim().is_empty() {
        return Err(PartnerCenterError::Config(
            "partner_center.client_id is empty".into(),
        ));
    }
    let body = post_form(
        http,
        ENTRA_ID,
        &options.device_code_url,
        &[
            ("client_id", options.client_id.as_str()),
            ("scope", options.scope.as_str()),
        ],
    )
    .await?;
    let code: DeviceCodeResponse =
        serde_json::from_slice(&body).map_err(|e| PartnerCenterError::UnexpectedResponse {
            what: "the device code endpoint".into(),
            reason: e.to_string(),
        })?;
    let device_code = SecretString::from(code.device_code);
    let expires_in = Duration::from_secs(seconds(&code.expires_in).unwrap_or(900));
    let mut interval = Duration::from_secs(seconds(&code.interval).unwrap_or(5).max(1));
    prompt(&DeviceCodePrompt {
        verification_uri: code.verification_uri,
        user_code: code.user_code,
        message: code.message,
        expires_in,
    });

    let deadline = Instant::now() + expires_in;
    loop {
        tokio::time::sleep(interval).await;
        if Instant::now() >= deadline {
            return Err(PartnerCenterError::DeviceCodeExpired);
        }
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", options.client_id.as_str()),
            ("device_code", device_code.expose_secret()),
        ];
        let error = match post_token_form(http, ENTRA_ID, &options.token_url, &form).await {
            Ok(response) => return refresh_token_of(response),
            Err(e) => e,
        };
        match error.oauth_error().map(|e| e.error.as_str()) {
            Some("authorization_pending") => {
                tracing::debug!("waiting for the operator to finish signing in");
            }
            Some("slow_down") => {
                interval += Duration::from_secs(5);
                tracing::debug!(
                    interval_s = interval.as_secs(),
                    "token endpoint asked to slow down"
                );
            }
            Some("expired_token" | "code_expired") => {
                return Err(PartnerCenterError::DeviceCodeExpired);
            }
            Some(code @ ("access_denied" | "authorization_declined")) => {
                return Err(PartnerCenterError::LoginDeclined(code.to_owned()));
            }
            // A network hiccup or throttle: keep polling until the code expires.
            _ if error.retry_in_place() => {
                tracing::warn!(error = %error, "polling the token endpoint failed; polling again");
            }
            _ => return Err(PartnerCenterError::Token(error)),
        }
    }
}

fn refresh_token_of(response: TokenResponse) -> Result<SecretString, PartnerCenterError> {
    response
        .refresh_token
        .ok_or_else(|| PartnerCenterError::UnexpectedResponse {
            what: "the token endpoint".into(),
            reason: "no refresh_token in the answer; add `offline_access` to partner_center.scope"
                .into(),
        })
}
