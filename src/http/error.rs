//! HTTP failures, the error bodies services send, and how each failure is
//! classified into a retry directive with an operator hint.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::Value;

use super::retry_after::parse_retry_after;

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDirective {
    /// Transient: retry with exponential backoff and jitter.
    Backoff,
    /// The server said when: retry after this long.
    After(Duration),
    /// Retrying will not help until an operator acts (login, role, config).
    Operator,
    /// This record will never succeed as it is; quarantine it.
    Permanent,
}

impl RetryDirective {
    /// Whether an automatic retry can help.
    pub fn is_retriable(self) -> bool {
        matches!(self, RetryDirective::Backoff | RetryDirective::After(_))
    }

    /// Stable lower-case name for logs, metrics and the failures table.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryDirective::Backoff => "backoff",
            RetryDirective::After(_) => "retry_after",
            RetryDirective::Operator => "operator",
            RetryDirective::Permanent => "permanent",
        }
    }
}

impl fmt::Display for RetryDirective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryDirective::After(d) => write!(f, "retry after {}s", d.as_secs()),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Anything that knows how it should be retried.
pub trait Retryable {
    fn directive(&self) -> RetryDirective;

    /// Whether the retry loop may repeat the same request right away. Errors
    /// that need a fresh read first (a 412, for instance) say no here even
    /// though their directive is retriable.
    fn retry_in_place(&self) -> bool {
        self.directive().is_retriable()
    }
}

/// Which part of the exchange failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The connection could not be made: the request was never sent.
    Connect,
    Timeout,
    /// Reset, broken pipe, truncated body and the like.
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "connection",
            TransportKind::Timeout => "timeout",
            TransportKind::Other => "transport",
        })
    }
}

/// The OData error body used by Partner Center and Dataverse:
/// `{"error":{"code","message","target","innerError"}}`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ServiceError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    /// May nest recursively (`innerError.innerError…`); kept as JSON.
    #[serde(default, rename = "innerError", alias = "innererror")]
    pub inner_error: Option<Value>,
}

impl ServiceError {
    /// Reads `{"error":{…}}`; `None` for any other body.
    pub fn parse(body: &[u8]) -> Option<ServiceError> {
        #[derive(Deserialize)]
        struct Envelope {
            error: ServiceError,
        }
        let envelope: Envelope = serde_json::from_slice(body).ok()?;
        let e = envelope.error;
        (!e.code.is_empty() || e.message.is_some()).then_some(e)
    }

    /// Every code from the outermost to the innermost `innerError`.
    pub fn codes(&self) -> Vec<String> {
        let mut out = vec![self.code.clone()];
        let mut inner = self.inner_error.as_ref();
        while let Some(v) = inner {
            if let Some(code) = v.get("code").and_then(Value::as_str) {
                out.push(code.to_owned());
            }
            inner = v.get("innerError").or_else(|| v.get("innererror"));
        }
        out
    }

    /// Whether this or any inner error has the code (case-insensitive).
    pub fn has_code(&self, code: &str) -> bool {
        self.codes().iter().any(|c| c.eq_ignore_ascii_case(code))
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)?;
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        if let Some(t) = &self.target {
            write!(f, " (target {t})")?;
        }
        Ok(())
    }
}

/// Longest body excerpt kept on an error.
const BODY_EXCERPT: usize = 2048;

/// A failed HTTP exchange, without secrets: no headers, no token, no query.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    #[error("{method} {path}: {kind} error: {message}")]
    Transport {
        method: String,
        path: String,
        kind: TransportKind,
        message: String,
    },
    #[error("{method} {path} returned HTTP {status}{}", describe_status_detail(.error.as_deref(), .body))]
    Status {
        method: String,
        path: String,
        status: u16,
        /// From `Retry-After`, relative to when the response arrived.
        retry_after: Option<Duration>,
        /// The OData error body, when the service sent one.
        error: Option<Box<ServiceError>>,
        /// The start of the body, for the failures table.
        body: String,
    },
    #[error("{method} {path}: unreadable response: {reason}")]
    Decode {
        method: String,
        path: String,
        reason: String,
    },
    #[error("request could not be built: {0}")]
    Request(String),
}

/// Reads a response: its status, headers and body. A body that breaks off
/// (connection reset, truncated transfer) fails a successful response as a
/// transport error, but never hides an error status: a response of 400 or
/// more keeps its status and the part of the body that arrived, followed by a
/// note saying the rest could not be read.
pub async fn read_response(
    method: &str,
    path: &str,
    mut response: reqwest::Response,
) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), HttpError> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // Sized once from Content-Length (bounded: the header is the server's
    // word), not grown by doubling through a page of records.
    const PRESIZE_LIMIT: u64 = 16 << 20;
    let mut body =
        Vec::with_capacity(response.content_length().unwrap_or(0).min(PRESIZE_LIMIT) as usize);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                let error = HttpError::from_reqwest(method, path, e);
                if status < 400 {
                    return Err(error);
                }
                let reason = match &error {
                    HttpError::Transport { message, .. } => message.as_str(),
                    HttpError::Request(message) => message.as_str(),
                    _ => "",
                };
                if !body.is_empty() {
                    body.push(b' ');
                }
                body.extend_from_slice(
                    format!("[the rest of the body could not be read: {reason}]").as_bytes(),
                );
                break;
            }
        }
    }
    Ok((status, headers, body))
}

fn describe_status_detail(error: Option<&ServiceError>, body: &str) -> String {
    match error {
        Some(e) => format!(": {e}"),
        None if body.trim().is_empty() => String::new(),
        None => format!(": {}", body.trim()),
    }
}

impl HttpError {
    /// Wraps a reqwest failure (the URL is dropped from the message).
    pub fn from_reqwest(method: &str, path: &str, err: reqwest::Error) -> HttpError {
        let kind = if err.is_timeout() {
            TransportKind::Timeout
        } else if err.is_connect() {
            TransportKind::Connect
        } else {
            TransportKind::Other
        };
        if err.is_builder() {
            return HttpError::Request(err.without_url().to_string());
        }
        let err = err.without_url();
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        HttpError::Transport {
            method: method.to_owned(),
            path: path.to_owned(),
            kind,
            message,
        }
    }

    /// Builds the error for a non-success response from its parts.
    /// `now` is when the response arrived (for an HTTP-date `Retry-After`).
    pub fn from_parts(
        method: &str,
        path: &str,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> HttpError {
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now));
        let full_body = body;
        let text = String::from_utf8_lossy(body);
        let body = if text.len() > BODY_EXCERPT {
            let mut end = BODY_EXCERPT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &text[..end])
        } else {
            text.into_owned()
        };
        HttpError::Status {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            retry_after,
            // The whole body: a long error body must not lose its code to the excerpt.
            error: ServiceError::parse(full_body).map(Box::new),
            body,
        }
    }

    /// Reads a non-success response into an error.
    pub async fn from_response(method: &str, path: &str, response: reqwest::Response) -> HttpError {
        match read_response(method, path, response).await {
            Ok((status, headers, body)) => {
                HttpError::from_parts(method, path, status, &headers, &body, SystemTime::now())
            }
            Err(e) => e,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn service_error(&self) -> Option<&ServiceError> {
        match self {
            HttpError::Status { error, .. } => error.as_deref(),
            _ => None,
        }
    }

    /// True when the server cannot have acted on the request: it was never
    /// sent (connect failure) or explicitly refused before processing (429).
    /// Only such failures may be retried for a non-idempotent request.
    pub fn request_not_processed(&self) -> bool {
        match self {
            HttpError::Transport { kind, .. } => *kind == TransportKind::Connect,
            HttpError::Status { status, .. } => *status == 429,
            HttpError::Request(_) => true,
            HttpError::Decode { .. } => false,
        }
    }

    /// Operator-facing advice for this failure.
    pub fn hint(&self) -> String {
        match self {
            HttpError::Transport { kind: TransportKind::Connect, .. } => {
                "the service could not be reached; check the network, DNS and the configured base URL".into()
            }
            HttpError::Transport { kind: TransportKind::Timeout, .. } => {
                "the service did not answer in time; it is retried with backoff (raise the timeout if this persists)"
                    .into()
            }
            HttpError::Transport { .. } => "the connection failed mid-request; it is retried with backoff".into(),
            HttpError::Decode { .. } => "the service sent a response this version cannot read; report it".into(),
            HttpError::Request(_) => "check the configured URLs".into(),
            HttpError::Status { status, retry_after, .. } => match status {
                401 => "the credentials were rejected even after a token refresh; check the app registration and the account's access".into(),
                403 => "the account lacks permission for this record or operation; check its roles".into(),
                404 => "the record does not exist (or is not visible to this account)".into(),
                408 => "the service timed out the request; it is retried with backoff".into(),
                412 => "the record changed since it was read; it is re-read and decided again".into(),
                429 | 503 => match retry_after {
                    Some(d) => format!("the service is throttling or unavailable; retrying after {}s", d.as_secs()),
                    None => "the service is throttling or unavailable; retrying with backoff".into(),
                },
                400 | 409 | 422 => "the service refused the data in this record; fix it at the source, then retry".into(),
                s if *s >= 500 => "the service failed; it is retried with backoff".into(),
                _ => "the service refused the request; see the error and fix the record or configuration".into(),
            },
        }
    }
}

impl Retryable for HttpError {
    fn directive(&self) -> RetryDirective {
        match self {
            HttpError::Transport { .. } => RetryDirective::Backoff,
            HttpError::Decode { .. } => RetryDirective::Backoff,
            HttpError::Request(_) => RetryDirective::Operator,
            HttpError::Status {
                status,
                retry_after,
                ..
            } => classify_status(*status, *retry_after),
        }
    }

    fn retry_in_place(&self) -> bool {
        self.directive().is_retriable() && self.status() != Some(412)
    }
}

/// The directive for an HTTP status (after any token refresh has been tried).
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> RetryDirective {
    match status {
        429 | 503 => retry_after.map_or(RetryDirective::Backoff, RetryDirective::After),
        401 => RetryDirective::Operator,
        408 | 412 => RetryDirective::Backoff,
        501 | 505 => RetryDirective::Permanent,
        500..=599 => RetryDirective::Backoff,
        _ => RetryDirective::Permanent,
    }
}

/// An OAuth 2.0 error response: `{"error":"invalid_grant","error_description":…}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OAuthError {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
    /// Entra ID's AADSTS numbers.
    #[serde(default)]
    pub error_codes: Vec<i64>,
}

impl OAuthError {
    /// Reads an OAuth error body; `None` for any other body.
    pub fn parse(body: &[u8]) -> Option<OAuthError> {
        let v: Value = serde_json::from_slice(body).ok()?;
        // The OData envelope also has an `error` key, but as an object.
        v.get("error")?.as_str()?;
        serde_json::from_value(v).ok()
    }

    pub fn is(&self, code: &str) -> bool {
        self.error.eq_ignore_ascii_case(code)
    }

    /// The grant or sign-in is no longer valid: only a new interactive login helps.
    pub fn needs_new_login(&self) -> bool {
        [
            "invalid_grant",
            "interaction_required",
            "consent_required",
            "login_required",
        ]
        .iter()
        .any(|c| self.is(c))
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error)?;
        if let Some(d) = &self.error_description {
            // Entra descriptions span lines (trace and correlation ids).
            let first = d.lines().next().unwrap_or_default();
            write!(f, ": {first}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    fn status_error(status: u16, retry_after: Option<&str>, body: &str) -> HttpError {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        }
        HttpError::from_parts(
            "GET",
            "/x",
            status,
            &headers,
            body.as_bytes(),
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn the_documented_error_body_is_parsed_with_nested_inner_errors() {
        let body = r#"{"error":{"code":"unAuthorized","message":"Caller is not authorized to access the resource.",
            "target":"referral","innerError":{"code":"innerErrorCode","message":"Unauthorized referral access",
            "innerError":{"code":"deepest"}}}}"#;
        let e = ServiceError::parse(body.as_bytes()).unwrap();
        assert_eq!(e.code, "unAuthorized");
        assert_eq!(e.target.as_deref(), Some("referral"));
        assert_eq!(e.codes(), vec!["unAuthorized", "innerErrorCode", "deepest"]);
        assert!(e.has_code("INNERERRORCODE"));
        assert_eq!(
            e.to_string(),
            "unAuthorized: Caller is not authorized to access the resource. (target referral)"
        );
        assert_eq!(
            ServiceError::parse(br#"{"statusCode":429,"message":"x"}"#),
            None
        );
        assert_eq!(ServiceError::parse(b"<html>"), None);
        assert_eq!(ServiceError::parse(br#"{"error":"invalid_grant"}"#), None);
    }

    #[test]
    fn statuses_map_to_directives() {
        assert_eq!(
            status_error(429, Some("57"), "").directive(),
            RetryDirective::After(Duration::from_secs(57))
        );
        assert_eq!(
            status_error(503, Some("2"), "").directive(),
            RetryDirective::After(Duration::from_secs(2))
        );
        assert_eq!(
            status_error(429, None, "").directive(),
            RetryDirective::Backoff
        );
        for s in [500, 502, 504, 507, 509, 408] {
            assert_eq!(
                status_error(s, None, "").directive(),
                RetryDirective::Backoff,
                "{s}"
            );
        }
        for s in [400, 403, 404, 405, 409, 410, 413, 415, 422, 501] {
            assert_eq!(
                status_error(s, None, "").directive(),
                RetryDirective::Permanent,
                "{s}"
            );
        }
        assert_eq!(
            status_error(401, None, "").directive(),
            RetryDirective::Operator
        );
        let precondition = status_error(412, None, "");
        assert_eq!(precondition.directive(), RetryDirective::Backoff);
        assert!(
            !precondition.retry_in_place(),
            "a 412 needs a re-read, not a resend"
        );
    }

    #[test]
    fn only_unsent_or_refused_requests_count_as_not_processed() {
        assert!(status_error(429, None, "").request_not_processed());
        assert!(!status_error(503, None, "").request_not_processed());
        assert!(!status_error(500, None, "").request_not_processed());
        let connect = HttpError::Transport {
            method: "POST".into(),
            path: "/".into(),
            kind: TransportKind::Connect,
            message: "refused".into(),
        };
        assert!(connect.request_not_processed());
        let timeout = HttpError::Transport {
            method: "POST".into(),
            path: "/".into(),
            kind: TransportKind::Timeout,
            message: "timed out".into(),
        };
        assert!(!timeout.request_not_processed());
    }

    #[test]
    fn status_errors_describe_themselves_and_give_hints() {
        let e = status_error(
            404,
            None,
            r#"{"error":{"code":"itemNotFound","message":"No referral"}}"#,
        );
        assert_eq!(
            e.to_string(),
            "GET /x returned HTTP 404: itemNotFound: No referral"
        );
        assert!(e.hint().contains("does not exist"));
        let e = status_error(
            429,
            Some("7"),
            r#"{"statusCode":429,"message":"Rate limit is exceeded."}"#,
        );
        assert!(e.to_string().contains("Rate limit is exceeded"));
        assert!(e.hint().contains("7s"));
        let long = "x".repeat(5000);
        let HttpError::Status { body, .. } = status_error(500, None, &long) else {
            panic!()
        };
        assert!(body.len() < 2100);
    }

    #[test]
    fn a_non_json_502_keeps_its_status_and_a_snippet_of_the_body() {
        let html = format!(
            "<html><head><title>502 Bad Gateway</title></head><body>{}</body></html>",
            "upstream unreachable ".repeat(200)
        );
        let e = status_error(502, None, &html);
        assert_eq!(e.status(), Some(502));
        assert_eq!(e.directive(), RetryDirective::Backoff);
        let text = e.to_string();
        assert!(
            text.starts_with("GET /x returned HTTP 502: <html><head><title>502 Bad Gateway"),
            "{text}"
        );
        assert!(text.len() < 2200, "a snippet, not the whole page");
    }

    #[test]
    fn a_long_error_body_keeps_its_code() {
        let body = format!(
            r#"{{"error":{{"code":"badRequest","message":"{}"}}}}"#,
            "the referral is invalid; ".repeat(200)
        );
        let e = status_error(400, None, &body);
        assert_eq!(
            e.service_error().map(|s| s.code.as_str()),
            Some("badRequest")
        );
        assert!(
            e.to_string()
                .starts_with("GET /x returned HTTP 400: badRequest: ")
        );
    }

    #[test]
    fn oauth_errors_are_told_apart_from_odata_errors() {
        let e = OAuthError::parse(
            br#"{"error":"invalid_grant","error_description":"AADSTS70043: The refresh token has expired.\r\nTrace ID: 1","error_codes":[70043]}"#,
        )
        .unwrap();
        assert!(e.is("invalid_grant"));
        assert!(e.needs_new_login());
        assert_eq!(e.error_codes, vec![70043]);
        assert_eq!(
            e.to_string(),
            "invalid_grant: AADSTS70043: The refresh token has expired."
        );
        assert_eq!(OAuthError::parse(br#"{"error":{"code":"x"}}"#), None);
        assert!(
            !OAuthError::parse(br#"{"error":"authorization_pending"}"#)
                .unwrap()
                .needs_new_login()
        );
    }
}
