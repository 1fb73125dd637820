//! OAuth 2.0 access tokens: where they come from (`TokenSource`), a cache that
//! refreshes shortly before expiry with one refresh in flight at a time, and
//! the token endpoint's request/response format.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use super::error::{
    HttpError, OAuthError, RetryDirective, Retryable, classify_status, read_response,
};

/// A token as the token endpoint returned it.
pub struct FetchedToken {
    pub access_token: SecretString,
    /// `expires_in`; `None` when the endpoint did not say.
    pub expires_in: Option<Duration>,
    /// Other, non-secret response fields (Salesforce's `instance_url`, …).
    pub extras: Map<String, Value>,
}

impl std::fmt::Debug for FetchedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedToken")
            .field("access_token", &"[REDACTED]")
            .field("expires_in", &self.expires_in)
            .field("extras", &self.extras)
            .finish()
    }
}

/// Where access tokens come from: a refresh-token grant, client credentials,
/// a JWT bearer assertion…
pub trait TokenSource: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    fn fetch_token(&self) -> impl Future<Output = Result<FetchedToken, Self::Error>> + Send;
}

/// A cached access token. Cloning is cheap; `Debug` never shows the secret.
#[derive(Clone)]
pub struct AccessToken {
    secret: SecretString,
    extras: Arc<Map<String, Value>>,
    generation: u64,
}

impl AccessToken {
    /// The bearer value, for the `Authorization` header only.
    pub fn secret(&self) -> &str {
        self.secret.expose_secret()
    }

    /// A non-secret extra from the token response (e.g. `instance_url`).
    pub fn extra(&self, key: &str) -> Option<&Value> {
        self.extras.get(key)
    }

    pub fn extras(&self) -> &Map<String, Value> {
        &self.extras
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"[REDACTED]")
            .field("generation", &self.generation)
            .finish()
    }
}

struct Cached {
    token: AccessToken,
    refresh_at: Instant,
}

/// Lifetime assumed when the endpoint gives no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// How long before expiry a token is refreshed, at most.
const REFRESH_MARGIN: Duration = Duration::from_secs(120);

/// Caches one access token and refreshes it shortly before it expires. The
/// refresh is single-flight: concurrent callers wait for the one in progress
/// and share its result.
pub struct TokenCache<S: TokenSource> {
    source: S,
    slot: Mutex<(Option<Cached>, u64)>,
}

impl<S: TokenSource> TokenCache<S> {
    pub fn new(source: S) -> Self {
        TokenCache {
            source,
            slot: Mutex::new((None, 0)),
        }
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    /// A valid access token, fetched only when the cached one is missing or
    /// about to expire.
    pub async fn token(&self) -> Result<AccessToken, S::Error> {
        let mut slot = self.slot.lock().await;
        if let Some(cached) = &slot.0
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        slot.0 = None;
        let fetched = self.source.fetch_token().await?;
        let lifetime = fetched.expires_in.unwrap_or(DEFAULT_LIFETIME);
        // Refresh REFRESH_MARGIN early, or halfway through a short-lived token.
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        slot.1 += 1;
        let token = AccessToken {
            secret: fetched.access_token,
            extras: Arc::new(fetched.extras),
            generation: slot.1,
        };
        slot.0 = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime - margin,
        });
        tracing::debug!(
            generation = slot.1,
            expires_in_s = lifetime.as_secs(),
            "access token obtained"
        );
        Ok(token)
    }

    /// Forgets `rejected` (after a 401) so the next `token()` fetches a new
    /// one. A token already replaced by another caller is left alone, so
    /// concurrent 401s cause one refresh, not many.
    pub async fn invalidate(&self, rejected: &AccessToken) {
        let mut slot = self.slot.lock().await;
        if slot
            .0
            .as_ref()
            .is_some_and(|c| c.token.generation == rejected.generation)
        {
            slot.0 = None;
        }
    }

    /// Drops any cached token.
    pub async fn clear(&self) {
        self.slot.lock().await.0 = None;
    }
}

/// A token endpoint's failure. A variant's message includes its cause, so the
/// cause is not also given as `source()` (a chain printer would say it twice).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("the token endpoint refused the request (HTTP {status}): {error}")]
    Rejected {
        status: u16,
        error: OAuthError,
        retry_after: Option<Duration>,
    },
    #[error("token endpoint: {0}")]
    Http(HttpError),
    #[error("the token endpoint's response could not be read: {0}")]
    Malformed(String),
}

impl From<HttpError> for TokenError {
    fn from(e: HttpError) -> Self {
        TokenError::Http(e)
    }
}

impl TokenError {
    /// The OAuth error code, when the endpoint sent one.
    pub fn oauth_error(&self) -> Option<&OAuthError> {
        match self {
            TokenError::Rejected { error, .. } => Some(error),
            _ => None,
        }
    }

    pub fn hint(&self) -> String {
        match self {
            TokenError::Rejected { error, .. } if error.needs_new_login() => {
                "the sign-in is no longer valid; sign in again".into()
            }
            TokenError::Rejected { error, .. }
                if error.is("invalid_client") || error.is("unauthorized_client") =>
            {
                "the app registration rejected the client credentials; check client id and secret"
                    .into()
            }
            TokenError::Rejected { error, .. } if error.is("invalid_scope") => {
                "the configured scope is not valid for this app registration".into()
            }
            TokenError::Rejected { .. } => "check the app registration and the token URL".into(),
            TokenError::Http(e) => e.hint(),
            TokenError::Malformed(_) => "check the configured token URL".into(),
        }
    }
}

impl Retryable for TokenError {
    fn directive(&self) -> RetryDirective {
        match self {
            TokenError::Rejected {
                status,
                error,
                retry_after,
            } => {
                if error.is("temporarily_unavailable") || error.is("server_error") {
                    retry_after.map_or(RetryDirective::Backoff, RetryDirective::After)
                } else if *status == 429 || *status >= 500 {
                    classify_status(*status, *retry_after)
                } else {
                    RetryDirective::Operator
                }
            }
            TokenError::Http(e) => match e.directive() {
                // Failing to get a token is never one record's fault.
                RetryDirective::Permanent => RetryDirective::Operator,
                d => d,
            },
            TokenError::Malformed(_) => RetryDirective::Operator,
        }
    }
}

/// A successful token endpoint response. Secrets are pulled out of the JSON;
/// `extras` holds only the rest (minus `id_token`).
pub struct TokenResponse {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<Duration>,
    pub extras: Map<String, Value>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[REDACTED]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

impl TokenResponse {
    pub fn parse(body: &[u8]) -> Result<TokenResponse, TokenError> {
        let mut map: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| TokenError::Malformed(format!("not a JSON object: {e}")))?;
        let access_token = match map.remove("access_token") {
            Some(Value::String(s)) if !s.is_empty() => SecretString::from(s),
            _ => return Err(TokenError::Malformed("no access_token".into())),
        };
        let refresh_token = match map.remove("refresh_token") {
            Some(Value::String(s)) if !s.is_empty() => Some(SecretString::from(s)),
            _ => None,
        };
        map.remove("id_token");
        // Entra's v1 endpoint sends numbers as strings ("3600").
        let expires_in = match map.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
        .map(Duration::from_secs);
        Ok(TokenResponse {
            access_token,
            refresh_token,
            expires_in,
            extras: map,
        })
    }

    pub fn into_fetched(self) -> FetchedToken {
        FetchedToken {
            access_token: self.access_token,
            expires_in: self.expires_in,
            extras: self.extras,
        }
    }
}

/// POSTs a form to a token endpoint and reads the JSON answer. The form may
/// hold secrets: it is never logged. `api` is the caller's metrics label for
/// the endpoint (e.g. [`crate::metrics::ENTRA_ID`], [`crate::metrics::SALESFORCE`]).
pub async fn post_token_form(
    http: &reqwest::Client,
    api: &str,
    url: &Url,
    form: &[(&str, &str)],
) -> Result<TokenResponse, TokenError> {
    let body = post_form(http, api, url, form).await?;
    TokenResponse::parse(&body)
}

/// POSTs a form to an OAuth endpoint; returns the body of a 2xx answer, or
/// the OAuth error. Used for token and device-code endpoints alike. The
/// request is counted under the caller's `api` label.
pub async fn post_form(
    http: &reqwest::Client,
    api: &str,
    url: &Url,
    form: &[(&str, &str)],
) -> Result<Vec<u8>, TokenError> {
    let path = url.path().to_owned();
    let response = http
        .post(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .form(form)
        .send()
        .await
        .map_err(|e| HttpError::from_reqwest("POST", &path, e))?;
    crate::metrics::record_api_request(api, response.status().as_u16());
    let (status, headers, body) = read_response("POST", &path, response).await?;
    tracing::debug!(method = "POST", path = %path, status, "OAuth endpoint answered");
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let http_error = HttpError::from_parts(
        "POST",
        &path,
        status,
        &headers,
        &body,
        std::time::SystemTime::now(),
    );
    match OAuthError::parse(&body) {
        Some(error) => Err(TokenError::Rejected {
            status,
            error,
            retry_after: match &http_error {
                HttpError::Status { retry_after, .. } => *retry_after,
                _ => None,
            },
        }),
        None => Err(TokenError::Http(http_error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Counting {
        calls: Arc<AtomicU32>,
        lifetime: Duration,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl TokenSource for Counting {
        type Error = Never;

        async fn fetch_token(&self) -> Result<FetchedToken, Never> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            // Take a while, so concurrent callers overlap.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut extras = Map::new();
            extras.insert(
                "instance_url".into(),
                Value::String("https://x.example".into()),
            );
            Ok(FetchedToken {
                access_token: SecretString::from(format!("token-{n}")),
                expires_in: Some(self.lifetime),
                extras,
            })
        }
    }

    fn cache(lifetime: Duration) -> (Arc<TokenCache<Counting>>, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let c = TokenCache::new(Counting {
            calls: calls.clone(),
            lifetime,
        });
        (Arc::new(c), calls)
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_reused_until_shortly_before_expiry() {
        let (cache, calls) = cache(Duration::from_secs(3600));
        let t = cache.token().await.unwrap();
        assert_eq!(t.secret(), "token-1");
        assert_eq!(
            t.extra("instance_url").and_then(Value::as_str),
            Some("https://x.example")
        );
        tokio::time::advance(Duration::from_secs(3600 - 121)).await;
        assert_eq!(cache.token().await.unwrap().secret(), "token-1");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.token().await.unwrap().secret(), "token-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn short_lived_tokens_refresh_halfway() {
        let (cache, calls) = cache(Duration::from_secs(60));
        cache.token().await.unwrap();
        tokio::time::advance(Duration::from_secs(29)).await;
        cache.token().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.token().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_refresh() {
        let (cache, calls) = cache(Duration::from_secs(3600));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let c = cache.clone();
            tasks.push(tokio::spawn(async move {
                c.token().await.unwrap().secret().to_owned()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), "token-1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidating_a_stale_token_does_not_drop_its_replacement() {
        let (cache, calls) = cache(Duration::from_secs(3600));
        let first = cache.token().await.unwrap();
        cache.invalidate(&first).await;
        let second = cache.token().await.unwrap();
        assert_eq!(second.secret(), "token-2");
        // A late 401 on the first token must not force a third fetch.
        cache.invalidate(&first).await;
        assert_eq!(cache.token().await.unwrap().secret(), "token-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(!format!("{second:?}").contains("token-2"));
    }

    #[test]
    fn token_responses_keep_secrets_out_of_extras() {
        let r = TokenResponse::parse(
            br#"{"token_type":"Bearer","expires_in":"3600","access_token":"AT","refresh_token":"RT","id_token":"IT","scope":"s"}"#,
        )
        .unwrap();
        assert_eq!(r.access_token.expose_secret(), "AT");
        assert_eq!(
            r.refresh_token.as_ref().map(|s| s.expose_secret()),
            Some("RT")
        );
        assert_eq!(r.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(
            r.extras
                .keys()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>(),
            ["token_type", "expires_in", "scope"].into()
        );
        assert!(!format!("{r:?}").contains("RT"));
        assert!(TokenResponse::parse(br#"{"token_type":"Bearer"}"#).is_err());
    }

    /// A server that answers `status` with the start of `body`, then hangs
    /// up before the announced length.
    async fn breaking_off(status: &'static str, body: &'static str) -> Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 8192];
            let _ = socket.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/html\r\ncontent-length: 100000\r\n\r\n"
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
            let _ = socket.flush().await;
            let _ = socket.shutdown().await;
        });
        Url::parse(&format!("http://{addr}/oauth2/v2.0/token")).unwrap()
    }

    #[tokio::test]
    async fn an_error_status_survives_a_body_that_breaks_off() {
        let http = reqwest::Client::new();
        let url = breaking_off("502 Bad Gateway", "<html><title>502 Bad Gateway</title>").await;
        let err = post_form(&http, "entra_id", &url, &[("grant_type", "x")])
            .await
            .unwrap_err();
        let TokenError::Http(e) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(e.status(), Some(502), "{err}");
        assert_eq!(err.directive(), RetryDirective::Backoff);
        let text = err.to_string();
        assert!(
            text.contains("HTTP 502: <html><title>502 Bad Gateway</title>"),
            "{text}"
        );
        assert!(
            text.contains("the rest of the body could not be read"),
            "{text}"
        );

        // A success whose body breaks off is a transport failure, as before.
        let url = breaking_off("200 OK", "{\"access_token\":").await;
        let err = post_form(&http, "entra_id", &url, &[("grant_type", "x")])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TokenError::Http(HttpError::Transport { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn a_chain_printer_names_the_http_failure_once() {
        let e = TokenError::from(HttpError::Request("no scheme".into()));
        assert_eq!(
            e.to_string(),
            "token endpoint: request could not be built: no scheme"
        );
        let chain = format!("{:#}", anyhow::Error::new(e));
        assert_eq!(chain.matches("no scheme").count(), 1, "{chain}");
    }

    #[test]
    fn token_errors_are_classified() {
        let rejected = |status, code: &str| TokenError::Rejected {
            status,
            error: OAuthError {
                error: code.into(),
                error_description: None,
                error_codes: vec![],
            },
            retry_after: None,
        };
        assert_eq!(
            rejected(400, "invalid_grant").directive(),
            RetryDirective::Operator
        );
        assert_eq!(
            rejected(401, "invalid_client").directive(),
            RetryDirective::Operator
        );
        assert_eq!(
            rejected(503, "temporarily_unavailable").directive(),
            RetryDirective::Backoff
        );
        assert_eq!(
            rejected(500, "whatever").directive(),
            RetryDirective::Backoff
        );
    }
}
