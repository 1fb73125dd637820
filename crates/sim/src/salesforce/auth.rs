//! The OAuth token endpoint (client credentials and JWT bearer) and the
//! sessions it hands out.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{SimState, creds, lock};

use super::http::sf_json;
use super::store::SfState;

#[derive(Deserialize)]
pub(super) struct JwtClaims {
    pub(super) iss: Option<String>,
    pub(super) sub: Option<String>,
    pub(super) aud: Option<Value>,
    pub(super) exp: Option<i64>,
}

pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    sf_json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// `POST /services/oauth2/token` (at the root or under `/salesforce`).
/// The `instance_url` is the origin plus the prefix the token was asked at,
/// so clients that build host-rooted paths (as on Salesforce) work too.
pub(crate) async fn token(
    State(state): State<Arc<SimState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let login = if uri.path().starts_with("/salesforce/") {
        state.urls.salesforce.clone()
    } else {
        state.urls.base.clone()
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let now = state.clock.now();
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    match grant {
        "client_credentials" => {
            let id = form
                .get("client_id")
                .cloned()
                .or_else(|| basic.as_ref().map(|b| b.0.clone()));
            let secret = form
                .get("client_secret")
                .cloned()
                .or_else(|| basic.as_ref().map(|b| b.1.clone()));
            if id.as_deref() != Some(creds::SALESFORCE_CLIENT_ID) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client_id",
                    "client identifier invalid",
                );
            }
            if secret.as_deref() != Some(creds::SALESFORCE_CLIENT_SECRET) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    "invalid client credentials",
                );
            }
        }
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            let Some(assertion) = form.get("assertion") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "assertion is required",
                );
            };
            let key = lock(&state.sf).jwt_key.clone();
            let claims: Result<JwtClaims, String> = match key {
                Some(pem) => match jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()) {
                    Ok(k) => {
                        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                        v.validate_exp = false;
                        v.validate_aud = false;
                        v.required_spec_claims.clear();
                        jsonwebtoken::decode::<JwtClaims>(assertion, &k, &v)
                            .map(|d| d.claims)
                            .map_err(|_| "invalid assertion".to_owned())
                    }
                    Err(_) => Err("the simulator's JWT public key is not a valid PEM".to_owned()),
                },
                None => jsonwebtoken::dangerous::insecure_decode_claims::<JwtClaims>(assertion)
                    .map_err(|_| "invalid assertion".to_owned()),
            };
            let claims = match claims {
                Ok(c) => c,
                Err(m) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &m),
            };
            if claims.iss.as_deref() != Some(creds::SALESFORCE_CLIENT_ID) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client_id",
                    "client identifier invalid",
                );
            }
            if claims.sub.as_deref() != Some(creds::SALESFORCE_USERNAME) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "user hasn't approved this consumer",
                );
            }
            let aud_ok = |a: &str| {
                let a = a.trim_end_matches('/');
                a == "https://login.salesforce.com"
                    || a == "https://test.salesforce.com"
                    || a == state.urls.salesforce
                    || a == state.urls.base
            };
            let aud_matches = match &claims.aud {
                Some(Value::String(a)) => aud_ok(a),
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(aud_ok),
                _ => false,
            };
            if !aud_matches {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "audience is invalid",
                );
            }
            let wall = Utc::now().timestamp();
            match claims.exp {
                Some(exp) if exp > now.timestamp() || exp > wall => {}
                _ => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "expired authorization code",
                    );
                }
            }
        }
        "" => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant type is required",
            );
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant type not supported",
            );
        }
    }
    let mut sf = lock(&state.sf);
    let token = sf.new_session(now);
    let instance = login;
    let body = json!({
        "access_token": token,
        "signature": base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes()),
        "scope": "api",
        "instance_url": instance,
        "id": format!("{instance}/id/{}/{}", sf.org_id, sf.user_id),
        "token_type": "Bearer",
        "issued_at": now.timestamp_millis().to_string(),
    });
    sf_json(StatusCode::OK, &body)
}

impl SfState {
    pub(crate) fn new_session(&mut self, now: DateTime<Utc>) -> String {
        let raw: Vec<u8> = (0..36).map(|_| self.rng.random()).collect();
        let token = format!(
            "{}!{}",
            &self.org_id[..15],
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(raw)
                .replace('/', ".")
        );
        self.sessions.insert(token.clone(), now);
        token
    }

    pub(crate) fn expire_sessions(&mut self) {
        self.sessions.clear();
    }

    pub(super) fn session_ok(&self, token: Option<&str>, now: DateTime<Utc>) -> bool {
        token
            .and_then(|t| self.sessions.get(t))
            .is_some_and(|issued| now - *issued < self.session_lifetime)
    }
}
