//! What every Dataverse answer shares: the response type, the error body,
//! `Prefer` headers, the request context and the bearer-token check.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::entra::TokenProblem;
use crate::{SimState, bearer, lock};

/// A Dataverse response before it becomes HTTP (also used inside `$batch`).
#[derive(Debug, Clone)]
pub(crate) struct DvResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<Value>,
}

impl DvResponse {
    pub(super) fn json(status: StatusCode, body: Value) -> Self {
        DvResponse {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }
    pub(super) fn empty(status: StatusCode) -> Self {
        DvResponse {
            status,
            headers: Vec::new(),
            body: None,
        }
    }
    pub(super) fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_owned(), v.into()));
        self
    }
    pub(crate) fn err(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        DvResponse::json(
            status,
            json!({"error": {"code": code, "message": message.into()}}),
        )
    }
    pub(crate) fn is_success(&self) -> bool {
        self.status.is_success()
    }
}

/// The longest URL the Web API accepts (32 KB); inside a `$batch` body an
/// operation's URL may be twice as long (Microsoft, "Compose HTTP requests
/// and handle errors": Maximum URL length).
pub(crate) const MAX_URL_CHARS: usize = 32_768;
pub(crate) const MAX_BATCH_URL_CHARS: usize = 65_536;

/// 414 for a URL of `len` characters over `max`.
pub(crate) fn url_too_long(len: usize, max: usize) -> Option<DvResponse> {
    (len > max).then(|| {
        DvResponse::err(
            StatusCode::URI_TOO_LONG,
            "0x80060888",
            format!("The URL is {len} characters long; the maximum is {max}."),
        )
    })
}

/// A Dataverse error as an HTTP response.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    to_http(DvResponse::err(status, code, message))
}

pub(crate) fn to_http(r: DvResponse) -> Response {
    let mut resp = match &r.body {
        Some(b) => {
            let mut x = Response::new(axum::body::Body::from(b.to_string()));
            x.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; odata.metadata=minimal"),
            );
            x
        }
        None => Response::new(axum::body::Body::empty()),
    };
    *resp.status_mut() = r.status;
    resp.headers_mut()
        .insert("odata-version", HeaderValue::from_static("4.0"));
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::try_from(k),
            HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

/// The parsed `Prefer` header.
#[derive(Debug, Default, Clone)]
pub(crate) struct Prefer {
    pub(crate) representation: bool,
    pub(crate) maxpagesize: Option<usize>,
    pub(crate) track_changes: bool,
    pub(crate) annotations: Option<String>,
    pub(crate) continue_on_error: bool,
}

pub(crate) fn parse_prefer(headers: &HeaderMap) -> Prefer {
    let mut p = Prefer::default();
    for v in headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for item in v.split(',') {
            let item = item.trim();
            let (k, val) = item
                .split_once('=')
                .map(|(a, b)| (a.trim(), b.trim().trim_matches('"')))
                .unwrap_or((item, ""));
            match k.to_ascii_lowercase().as_str() {
                "return" if val.eq_ignore_ascii_case("representation") => p.representation = true,
                "odata.maxpagesize" => p.maxpagesize = val.parse().ok(),
                "odata.track-changes" => p.track_changes = true,
                "odata.include-annotations" => p.annotations = Some(val.to_owned()),
                "odata.continue-on-error" => p.continue_on_error = true,
                _ => {}
            }
        }
    }
    p
}

/// Context of one Dataverse request.
pub(crate) struct Ctx<'a> {
    /// `<dynamics base>/api/data/v9.2`
    pub(crate) service_root: &'a str,
    pub(crate) now: DateTime<Utc>,
    pub(crate) prefer: Prefer,
    pub(crate) headers: &'a HeaderMap,
}

pub(super) fn bad(code: &str, msg: impl Into<String>) -> DvResponse {
    DvResponse::err(StatusCode::BAD_REQUEST, code, msg)
}

pub(super) fn not_found_segment(seg: &str) -> DvResponse {
    DvResponse::err(
        StatusCode::NOT_FOUND,
        "0x80060888",
        format!("Resource not found for the segment '{seg}'."),
    )
}

pub(super) fn query_params(raw: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub(super) fn auth(state: &SimState, headers: &HeaderMap) -> Result<(), DvResponse> {
    let resource = state.dynamics_resource();
    match lock(&state.entra).check(bearer(headers), &[&resource], state.clock.now(), false) {
        Ok(_) => Ok(()),
        Err(p) => {
            let code = match p {
                TokenProblem::Expired => "0x80072543",
                _ => "0x80072560",
            };
            Err(DvResponse::err(StatusCode::UNAUTHORIZED, code, p.message()).header(
                "WWW-Authenticate",
                format!(
                    "Bearer error=invalid_token, error_description={:?}, authorization_uri=https://login.microsoftonline.com/{}/oauth2/authorize, resource_id={resource}",
                    p.message(),
                    crate::creds::TENANT_ID
                ),
            ))
        }
    }
}
