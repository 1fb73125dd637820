//! Getting Salesforce access tokens: OAuth 2.0 client credentials (My Domain
//! token endpoint) or the JWT bearer flow (RS256 assertion signed with the
//! connected app's private key). Neither issues a refresh token; a new token
//! is simply requested again. The response's `instance_url` is where every
//! later call goes.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::{SalesforceAuth, SalesforceSettings};
use crate::crm::CrmError;
use crate::domain::CrmKind;
use crate::http::{
    FetchedToken, RetryDirective, Retryable, TokenError, TokenSource, post_token_form,
};
use crate::metrics::SALESFORCE;

/// `grant_type` of the JWT bearer flow.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long a JWT assertion is valid (Salesforce accepts up to ~3 minutes).
pub const ASSERTION_LIFETIME_SECS: i64 = 180;

/// The claims of the JWT bearer assertion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwtClaims {
    /// The connected app's consumer key.
    pub iss: String,
    /// The integration user's username.
    pub sub: String,
    /// The login URL (`https://login.salesforce.com`, `https://test.salesforce.com`).
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

enum Credentials {
    ClientSecret(SecretString),
    /// The signing key and the assertion's subject.
    Jwt {
        key: EncodingKey,
        username: String,
    },
}

/// Fetches Salesforce tokens for the token cache.
pub struct SalesforceTokenSource {
    http: reqwest::Client,
    token_url: Url,
    /// `aud` of the JWT assertion: the login URL without a trailing slash.
    audience: String,
    client_id: String,
    credentials: Credentials,
}

impl std::fmt::Debug for SalesforceTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceTokenSource")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> CrmError {
    CrmError::Auth {
        crm: CrmKind::Salesforce,
        message: message.into(),
        needs_operator: true,
    }
}

/// A PEM from an environment variable may have its newlines written as `\n`.
fn normalize_pem(pem: &str) -> String {
    let pem = pem.trim();
    if !pem.contains('\n') && pem.contains("\\n") {
        pem.replace("\\n", "\n")
    } else {
        pem.to_owned()
    }
}

impl SalesforceTokenSource {
    /// Checks the settings the chosen flow needs and reads the private key.
    pub fn new(
        http: reqwest::Client,
        settings: &SalesforceSettings,
    ) -> Result<SalesforceTokenSource, CrmError> {
        // Keep any path prefix of the login URL (a proxy, the simulator).
        let token_url = Url::parse(&format!(
            "{}/services/oauth2/token",
            settings.login_url.as_str().trim_end_matches('/')
        ))
        .map_err(|e| CrmError::Invalid(format!("salesforce.login_url: {e}")))?;
        if settings.client_id.trim().is_empty() {
            return Err(invalid(
                "salesforce.client_id is empty: set the connected app's consumer key",
            ));
        }
        let credentials = match settings.auth {
            SalesforceAuth::ClientCredentials => {
                let host = settings.login_url.host_str().unwrap_or_default();
                if host.eq_ignore_ascii_case("login.salesforce.com")
                    || host.eq_ignore_ascii_case("test.salesforce.com")
                {
                    return Err(invalid(format!(
                        "the client credentials flow needs your org's My Domain URL in salesforce.login_url (e.g. https://contoso.my.salesforce.com), not {host}"
                    )));
                }
                let secret = settings.client_secret.clone().ok_or_else(|| {
                    invalid("salesforce.client_secret is not set (COSELL_SYNC__SALESFORCE__CLIENT_SECRET or the credential salesforce_client_secret)")
                })?;
                Credentials::ClientSecret(secret)
            }
            SalesforceAuth::JwtBearer => {
                if settings.username.trim().is_empty() {
                    return Err(invalid(
                        "salesforce.username is empty: jwt_bearer signs in as this user",
                    ));
                }
                let pem = settings.private_key.as_ref().ok_or_else(|| {
                    invalid("salesforce.private_key is not set (COSELL_SYNC__SALESFORCE__PRIVATE_KEY or the credential salesforce_private_key)")
                })?;
                // The key's bytes never reach an error message.
                let key = EncodingKey::from_rsa_pem(normalize_pem(pem.expose_secret()).as_bytes())
                    .map_err(|_| {
                        invalid("salesforce.private_key is not a PEM-encoded RSA private key")
                    })?;
                Credentials::Jwt {
                    key,
                    username: settings.username.trim().to_owned(),
                }
            }
        };
        Ok(SalesforceTokenSource {
            http,
            token_url,
            audience: settings.login_url.as_str().trim_end_matches('/').to_owned(),
            client_id: settings.client_id.trim().to_owned(),
            credentials,
        })
    }

    /// The signed assertion of the JWT bearer flow, valid for
    /// [`ASSERTION_LIFETIME_SECS`] from `now`.
    pub fn assertion(&self, now: chrono::DateTime<chrono::Utc>) -> Result<String, CrmError> {
        let Credentials::Jwt { key, username } = &self.credentials else {
            return Err(CrmError::Invalid(
                "a JWT assertion needs salesforce.auth = \"jwt_bearer\"".into(),
            ));
        };
        let claims = JwtClaims {
            iss: self.client_id.clone(),
            sub: username.clone(),
            aud: self.audience.clone(),
            exp: now.timestamp() + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key)
            .map_err(|e| invalid(format!("signing the JWT assertion failed: {e}")))
    }

    async fn request(&self) -> Result<FetchedToken, TokenError> {
        let response = match &self.credentials {
            Credentials::ClientSecret(secret) => {
                post_token_form(
                    &self.http,
                    SALESFORCE,
                    &self.token_url,
                    &[
                        ("grant_type", "client_credentials"),
                        ("client_id", &self.client_id),
                        ("client_secret", secret.expose_secret()),
                    ],
                )
                .await?
            }
            Credentials::Jwt { .. } => {
                let assertion = self
                    .assertion(chrono::Utc::now())
                    .map_err(|e| TokenError::Malformed(e.to_string()))?;
                post_token_form(
                    &self.http,
                    SALESFORCE,
                    &self.token_url,
                    &[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)],
                )
                .await?
            }
        };
        Ok(response.into_fetched())
    }
}

/// The operator's view of a failed sign-in, without any secret.
fn auth_error(e: TokenError) -> CrmError {
    let directive = e.directive();
    let detail = match e.oauth_error() {
        Some(o)
            if o.error_description
                .as_deref()
                .is_some_and(|d| d.contains("hasn't approved")) =>
        {
            format!(
                "{o} (pre-authorize the integration user's profile or permission set on the connected app)"
            )
        }
        Some(o) if o.is("invalid_client_id") || o.is("invalid_client") => {
            format!("{o} (check salesforce.client_id and the client secret or certificate)")
        }
        _ => format!("{e} ({})", e.hint()),
    };
    CrmError::Auth {
        crm: CrmKind::Salesforce,
        message: detail,
        needs_operator: !matches!(
            directive,
            RetryDirective::Backoff | RetryDirective::After(_)
        ),
    }
}

impl TokenSource for SalesforceTokenSource {
    type Error = CrmError;

    async fn fetch_token(&self) -> Result<FetchedToken, CrmError> {
        let fetched = self.request().await.map_err(auth_error)?;
        let instance = fetched
            .extras
            .get("instance_url")
            .and_then(|v| v.as_str())
            .and_then(|s| Url::parse(s).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        if instance.is_none() {
            return Err(CrmError::Protocol {
                crm: CrmKind::Salesforce,
                message: "the token response has no usable instance_url".into(),
            });
        }
        tracing::debug!(
            flow = match self.credentials {
                Credentials::ClientSecret(_) => "client_credentials",
                Credentials::Jwt { .. } => "jwt_bearer",
            },
            "signed in to Salesforce"
        );
        Ok(fetched)
    }
}
