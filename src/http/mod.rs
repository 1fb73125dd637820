//! HTTP plumbing shared by every client: the reqwest client, error
//! classification into retry directives, `Retry-After`, the retry policy and
//! the OAuth token cache. Nothing here knows a particular service.

pub mod error;
pub mod retry;
pub mod retry_after;
pub mod token;

use std::time::Duration;

pub use error::{
    HttpError, OAuthError, RetryDirective, Retryable, ServiceError, TransportKind, classify_status,
    read_response,
};
pub use retry::{RetryPolicy, RetrySettings};
pub use retry_after::parse_retry_after;
pub use token::{
    AccessToken, FetchedToken, TokenCache, TokenError, TokenResponse, TokenSource, post_form,
    post_token_form,
};

/// `cosell-sync/<version>`, sent as the User-Agent on every request.
pub const USER_AGENT: &str = concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));

/// Timeouts of the shared client. `None` means no limit (tests on tokio's
/// paused clock need that: a pending timer would fire while I/O is in flight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    pub connect_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Option<Duration>,
}

impl ClientSettings {
    /// Connect within `min(timeout, 10s)`, finish within `timeout`.
    pub fn with_timeout(timeout: Duration) -> Self {
        ClientSettings {
            connect_timeout: Some(timeout.min(Duration::from_secs(10))),
            request_timeout: Some(timeout),
            pool_idle_timeout: Some(Duration::from_secs(90)),
        }
    }

    /// No timers at all: for tests on tokio's paused clock.
    pub fn without_timeouts() -> Self {
        ClientSettings {
            connect_timeout: None,
            request_timeout: None,
            pool_idle_timeout: None,
        }
    }
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings::with_timeout(Duration::from_secs(30))
    }
}

/// The reqwest client every adapter uses: rustls, our User-Agent, timeouts,
/// and no redirects (an API answering with a redirect is reported, and a
/// bearer token is never carried elsewhere).
pub fn build_client(settings: &ClientSettings) -> Result<reqwest::Client, HttpError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(settings.pool_idle_timeout);
    if let Some(t) = settings.connect_timeout {
        builder = builder.connect_timeout(t);
    }
    if let Some(t) = settings.request_timeout {
        builder = builder.timeout(t);
    }
    builder
        .build()
        .map_err(|e| HttpError::Request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_names_the_crate_and_version() {
        assert_eq!(
            USER_AGENT,
            format!("cosell-sync/{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(build_client(&ClientSettings::default()).is_ok());
    }
}
