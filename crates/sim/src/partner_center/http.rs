//! What every Partner Center answer shares: the error body (§4), the
//! response headers (§4 Headers) and the check of the bearer token (§5).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use crate::entra::{PARTNER_CENTER_RESOURCE, TokenProblem};
use crate::{SimState, bearer, json_response, lock};

/// A Partner Center error body.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message, "target": "referral"}}),
    )
}

#[allow(clippy::result_large_err)] // the error is the finished HTTP answer
pub(super) fn auth(state: &SimState, headers: &HeaderMap) -> Result<(), Response> {
    let now = state.clock.now();
    match lock(&state.entra).check(bearer(headers), &[PARTNER_CENTER_RESOURCE], now, true) {
        Ok(_) => Ok(()),
        Err(TokenProblem::AppOnly) => Err(error(
            StatusCode::FORBIDDEN,
            "accessDenied",
            &TokenProblem::AppOnly.message(),
        )),
        Err(p) => {
            let mut r = error(StatusCode::UNAUTHORIZED, "unauthenticated", &p.message());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\""),
            );
            Err(r)
        }
    }
}

pub(super) fn with_common_headers(
    mut r: Response,
    req: &HeaderMap,
    etag: Option<&str>,
) -> Response {
    let h = r.headers_mut();
    for name in ["client-request-id", "ms-correlationid"] {
        if let Some(v) = req.get(name) {
            h.insert(name, v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("request-id", v);
    }
    if let Some(e) = etag
        && let Ok(v) = HeaderValue::from_str(e)
    {
        h.insert(header::ETAG, v);
    }
    r
}
