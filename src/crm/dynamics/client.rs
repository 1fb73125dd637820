//! Sending one Web API request: the OData headers, a bearer token (one
//! refresh on 401), the service-protection limiter, and bounded retries.

use std::time::{Duration, SystemTime};

use chrono::Utc;
use reqwest::Method;
use reqwest::header::HeaderMap;
use url::Url;

use super::auth::EntraClientCredentials;
use super::limiter::{Admission, Limiter};
use crate::crm::CrmError;
use crate::domain::CrmKind;
use crate::http::{
    HttpError, RetryDirective, RetryPolicy, Retryable, TokenCache, TokenError, read_response,
};
use crate::metrics;

/// One request to the Web API.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub url: Url,
    /// `Prefer` values, sent comma-separated in one header.
    pub prefer: Vec<String>,
    pub headers: Vec<(&'static str, String)>,
    /// Content type and bytes.
    pub body: Option<(String, Vec<u8>)>,
    /// Whether resending after an unknown outcome is harmless.
    pub idempotent: bool,
}

impl Call {
    pub fn get(url: Url) -> Call {
        Call {
            method: Method::GET,
            url,
            prefer: Vec::new(),
            headers: Vec::new(),
            body: None,
            idempotent: true,
        }
    }

    pub fn json(method: Method, url: Url, body: &serde_json::Value, idempotent: bool) -> Call {
        Call {
            method,
            url,
            prefer: Vec::new(),
            headers: Vec::new(),
            body: Some(("application/json".into(), body.to_string().into_bytes())),
            idempotent,
        }
    }

    pub fn prefer(mut self, p: impl Into<String>) -> Call {
        self.prefer.push(p.into());
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Call {
        self.headers.push((name, value.into()));
        self
    }
}

/// A successful (2xx) answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self, call: &Call) -> Result<serde_json::Value, CrmError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CrmError::Http(HttpError::Decode {
                method: call.method.to_string(),
                path: call.url.path().to_owned(),
                reason: format!("not JSON: {e}"),
            })
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub struct Api {
    pub http: reqwest::Client,
    pub tokens: TokenCache<EntraClientCredentials>,
    pub limiter: Limiter,
    pub retry: RetryPolicy,
}

pub fn auth_error(e: TokenError) -> CrmError {
    CrmError::Auth {
        crm: CrmKind::Dynamics,
        needs_operator: e.directive() == RetryDirective::Operator,
        message: format!("{e} ({})", e.hint()),
    }
}

impl Api {
    /// Sends `call`, retrying within the policy's bounds. A 429 pauses every
    /// request of this client for its `Retry-After`; a pause longer than the
    /// retry budget comes back as `CrmError::Paused`.
    pub async fn call(&self, call: &Call) -> Result<Answer, CrmError> {
        let idempotent = call.idempotent;
        let result = self
            .retry
            .run_if(
                |_| self.attempt(call),
                |e: &CrmError| match e {
                    CrmError::Http(h) if idempotent => h.retry_in_place(),
                    CrmError::Http(h) => h.request_not_processed() && h.directive().is_retriable(),
                    // No token: the request was never sent.
                    CrmError::Auth { needs_operator, .. } => !needs_operator,
                    _ => false,
                },
            )
            .await;
        match result {
            Err(CrmError::Http(e)) if e.status() == Some(429) => {
                let remaining = match self.limiter.pause_remaining().await {
                    Some(d) => d,
                    None => match &e {
                        HttpError::Status {
                            retry_after: Some(d),
                            ..
                        } => *d,
                        _ => return Err(CrmError::Http(e)),
                    },
                };
                let reason = e
                    .service_error()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "service protection limit (HTTP 429)".into());
                Err(paused(remaining, reason))
            }
            other => other,
        }
    }

    async fn attempt(&self, call: &Call) -> Result<Answer, CrmError> {
        let method = call.method.as_str();
        let path = call.url.path();
        let _permit = match self.limiter.admit(self.retry.settings().max_total).await {
            Admission::Go(permit) => permit,
            Admission::Paused { remaining } => {
                return Err(paused(
                    remaining,
                    "service protection limit: waiting for Retry-After".into(),
                ));
            }
        };
        let mut refreshed = false;
        loop {
            let token = self.tokens.token().await.map_err(auth_error)?;
            let mut req = self
                .http
                .request(call.method.clone(), call.url.clone())
                .bearer_auth(token.secret())
                .header("Accept", "application/json")
                .header("OData-MaxVersion", "4.0")
                .header("OData-Version", "4.0");
            if call.method == Method::GET {
                req = req.header("If-None-Match", "null");
            }
            if !call.prefer.is_empty() {
                req = req.header("Prefer", call.prefer.join(", "));
            }
            for (name, value) in &call.headers {
                req = req.header(*name, value.as_str());
            }
            if let Some((content_type, bytes)) = &call.body {
                req = req
                    .header("Content-Type", content_type.as_str())
                    .body(bytes.clone());
            }
            let started = tokio::time::Instant::now();
            let sent = req.send().await;
            metrics::record_api_duration(metrics::DYNAMICS, started.elapsed());
            if sent.is_err() {
                metrics::record_api_request(metrics::DYNAMICS, "error");
            }
            let response = sent.map_err(|e| HttpError::from_reqwest(method, path, e))?;
            metrics::record_api_request(metrics::DYNAMICS, response.status().as_u16());
            let (status, headers, body) = read_response(method, path, response).await?;
            tracing::debug!(
                crm = "dynamics",
                method,
                path,
                status,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "dataverse answered"
            );
            if (200..300).contains(&status) {
                return Ok(Answer { headers, body });
            }
            if status == 401 && !refreshed {
                refreshed = true;
                tracing::info!(
                    crm = "dynamics",
                    "access token rejected; fetching a new one"
                );
                self.tokens.invalidate(&token).await;
                continue;
            }
            let error =
                HttpError::from_parts(method, path, status, &headers, &body, SystemTime::now());
            if status == 429
                && let HttpError::Status {
                    retry_after: Some(d),
                    ..
                } = &error
            {
                tracing::warn!(
                    crm = "dynamics",
                    retry_after_s = d.as_secs(),
                    error = %error,
                    "service protection limit hit; pausing all Dataverse requests"
                );
                self.limiter.pause_for(*d).await;
            }
            return Err(CrmError::Http(error));
        }
    }
}

fn paused(remaining: Duration, reason: String) -> CrmError {
    let until = Utc::now()
        + chrono::Duration::from_std(remaining).unwrap_or_else(|_| chrono::Duration::days(1));
    CrmError::Paused {
        crm: CrmKind::Dynamics,
        until,
        reason,
    }
}
