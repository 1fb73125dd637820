//! What every Salesforce answer shares: the error list body
//! (`[{errorCode, message, fields}]`), JSON answers and API versions.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

/// One Salesforce error: (errorCode, message, fields).
#[derive(Debug, Clone)]
pub(crate) struct SfErr {
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) fields: Vec<String>,
}

impl SfErr {
    pub(super) fn new(code: &'static str, message: impl Into<String>) -> Self {
        SfErr {
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }
    pub(super) fn on(mut self, field: &str) -> Self {
        self.fields.push(field.to_owned());
        self
    }
    pub(super) fn top(&self) -> Value {
        let mut v = json!({"message": self.message, "errorCode": self.code});
        if !self.fields.is_empty() {
            v["fields"] = json!(self.fields);
        }
        v
    }
    pub(super) fn item(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }
}

/// A Salesforce error body (a JSON array) as a response.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    sf_json(status, &json!([{"message": message, "errorCode": code}]))
}

pub(super) fn sf_json(status: StatusCode, body: &Value) -> Response {
    let mut r = Response::new(axum::body::Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r
}

pub(super) fn err_response(status: StatusCode, e: &SfErr) -> Response {
    sf_json(status, &json!([e.top()]))
}

pub(super) fn no_content() -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

pub(super) fn supported_version(v: &str) -> bool {
    v.strip_prefix('v')
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(|n| (20.0..=64.0).contains(&n))
}
