//! Microsoft Entra ID v2.0 token endpoint: client credentials, refresh token
//! (a fresh one on every use; the redeemed one is not revoked, as Entra
//! documents) and device code, with Entra's error bodies.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{SimState, creds, json_response, lock};

/// The resource (audience) of Partner Center's Referrals API.
pub const PARTNER_CENTER_RESOURCE: &str = "https://api.partner.microsoft.com";

/// Claims of the access tokens the simulator issues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub tid: String,
    pub appid: String,
    /// `app` for client credentials, `user` for delegated tokens.
    pub idtyp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    pub oid: String,
    /// Issue order, so that "expire every token" can cut off older ones.
    pub sim_serial: u64,
}

#[derive(Clone)]
struct RefreshGrant {
    client_id: String,
    resource: String,
    upn: String,
}

struct DeviceFlow {
    user_code: String,
    client_id: String,
    scope: String,
    expires_at: DateTime<Utc>,
    decision: Option<bool>,
}

pub(crate) struct EntraState {
    rng: StdRng,
    encoding: EncodingKey,
    decoding: DecodingKey,
    next_serial: u64,
    /// Per audience: tokens with a lower serial are no longer accepted.
    min_serial: HashMap<String, u64>,
    global_min_serial: u64,
    refresh_tokens: HashMap<String, RefreshGrant>,
    device_codes: HashMap<String, DeviceFlow>,
    user_codes: HashMap<String, String>,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    Missing,
    Invalid,
    Expired,
    WrongAudience(String),
    AppOnly,
}

impl TokenProblem {
    pub(crate) fn message(&self) -> String {
        match self {
            TokenProblem::Missing => "Bearer token is missing.".into(),
            TokenProblem::Invalid => "The access token is invalid.".into(),
            TokenProblem::Expired => "The access token has expired.".into(),
            TokenProblem::WrongAudience(a) => {
                format!("The access token's audience '{a}' is not valid for this resource.")
            }
            TokenProblem::AppOnly => {
                "This API supports only user (app+user) access; app-only tokens are refused.".into()
            }
        }
    }
}

impl EntraState {
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0e27_a1d0);
        let secret: [u8; 32] = rng.random();
        EntraState {
            rng,
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            next_serial: 1,
            min_serial: HashMap::new(),
            global_min_serial: 0,
            refresh_tokens: HashMap::new(),
            device_codes: HashMap::new(),
            user_codes: HashMap::new(),
        }
    }

    fn random_token(&mut self, prefix: &str, bytes: usize) -> String {
        let raw: Vec<u8> = (0..bytes).map(|_| self.rng.random()).collect();
        format!(
            "{prefix}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )
    }

    /// Adds a refresh token the simulator accepts until the simulator stops.
    pub(crate) fn add_refresh_token(&mut self, token: &str, client_id: &str, resource: &str) {
        self.refresh_tokens.insert(
            token.to_owned(),
            RefreshGrant {
                client_id: client_id.to_owned(),
                resource: resource.to_owned(),
                upn: creds::PARTNER_CENTER_USER.to_owned(),
            },
        );
    }

    pub(crate) fn new_refresh_token(&mut self, client_id: &str, resource: &str) -> String {
        let t = self.random_token("0.AXsim.", 48);
        self.add_refresh_token(&t, client_id, resource);
        t
    }

    pub(crate) fn issue_for_tests(
        &mut self,
        now: DateTime<Utc>,
        lifetime: TimeDelta,
        aud: &str,
        client_id: &str,
        user: Option<&str>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.issue(now, lifetime, aud, client_id, user)
    }

    fn issue(
        &mut self,
        now: DateTime<Utc>,
        lifetime: TimeDelta,
        aud: &str,
        client_id: &str,
        user: Option<&str>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let serial = self.next_serial;
        self.next_serial += 1;
        let claims = AccessClaims {
            aud: aud.to_owned(),
            iss: format!("https://sts.windows.net/{}/", creds::TENANT_ID),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: (now + lifetime).timestamp(),
            tid: creds::TENANT_ID.to_owned(),
            appid: client_id.to_owned(),
            idtyp: if user.is_some() { "user" } else { "app" }.to_owned(),
            scp: user.map(|_| "user_impersonation".to_owned()),
            upn: user.map(str::to_owned),
            oid: format!("00000000-0000-4000-8000-{:012x}", serial),
            sim_serial: serial,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Checks a bearer token for one of `audiences` at simulated time `now`.
    pub(crate) fn check(
        &self,
        token: Option<&str>,
        audiences: &[&str],
        now: DateTime<Utc>,
        user_only: bool,
    ) -> Result<AccessClaims, TokenProblem> {
        let token = token.ok_or(TokenProblem::Missing)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &v)
            .map_err(|_| TokenProblem::Invalid)?;
        let c = data.claims;
        let aud = c.aud.trim_end_matches('/');
        if !audiences
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(aud))
        {
            return Err(TokenProblem::WrongAudience(c.aud));
        }
        let cut = self
            .min_serial
            .get(&aud.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
            .max(self.global_min_serial);
        if now.timestamp() >= c.exp || c.sim_serial < cut {
            return Err(TokenProblem::Expired);
        }
        if user_only && c.idtyp != "user" {
            return Err(TokenProblem::AppOnly);
        }
        Ok(c)
    }

    /// Makes every access token issued so far for `audience` (every
    /// audience when None) expire.
    pub(crate) fn expire_tokens(&mut self, audience: Option<&str>) {
        let cut = self.next_serial;
        match audience {
            Some(a) => {
                self.min_serial
                    .insert(a.trim_end_matches('/').to_ascii_lowercase(), cut);
            }
            None => self.global_min_serial = cut,
        }
    }

    /// Approves (or declines) a pending device-code sign-in by its user code.
    pub(crate) fn decide_device_code(&mut self, user_code: &str, approve: bool) -> bool {
        let key = user_code.trim().to_ascii_uppercase();
        match self
            .user_codes
            .get(&key)
            .and_then(|dc| self.device_codes.get_mut(dc))
        {
            Some(flow) => {
                flow.decision = Some(approve);
                true
            }
            None => false,
        }
    }

    /// User codes waiting for a decision.
    pub(crate) fn pending_user_codes(&self) -> Vec<String> {
        self.device_codes
            .values()
            .filter(|f| f.decision.is_none())
            .map(|f| f.user_code.clone())
            .collect()
    }
}

fn entra_error(
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
    now: DateTime<Utc>,
) -> Response {
    let trace = uuid::Uuid::new_v4();
    let corr = uuid::Uuid::new_v4();
    let ts = now.format("%Y-%m-%d %H:%M:%SZ");
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"),
            "error_codes": [code],
            "timestamp": ts.to_string(),
            "trace_id": trace.to_string(),
            "correlation_id": corr.to_string(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

fn parse_form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Client id and secret from `client_secret_basic`, if sent.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (id, secret) = s.split_once(':')?;
    let dec = |x: &str| {
        percent_encoding::percent_decode_str(x)
            .decode_utf8()
            .map(|c| c.into_owned())
            .unwrap_or_else(|_| x.to_owned())
    };
    Some((dec(id), dec(secret)))
}

const META_SCOPES: [&str; 4] = ["offline_access", "openid", "profile", "email"];

/// The single resource a scope string names, and whether it is `/.default`.
fn scope_resource(scope: &str) -> Result<Option<(String, bool)>, (u32, String)> {
    let mut found: Option<(String, bool)> = None;
    for s in scope.split_whitespace() {
        if META_SCOPES.iter().any(|m| m.eq_ignore_ascii_case(s)) {
            continue;
        }
        let (res, perm) = match s.rsplit_once('/') {
            Some((r, p)) if r.contains("://") => (r.to_owned(), p),
            _ => {
                return Err((
                    70011,
                    format!(
                        "The provided value for the input parameter 'scope' is not valid. The scope {s} is not valid."
                    ),
                ));
            }
        };
        let is_default = perm == ".default";
        match &found {
            Some((r, _)) if !r.eq_ignore_ascii_case(&res) => {
                return Err((
                    28000,
                    "Provided value for the input parameter scope is not valid because it contains more than one resource.".into(),
                ));
            }
            _ => found = Some((res, is_default)),
        }
    }
    Ok(found)
}

fn known_resource(state: &SimState, resource: &str) -> Option<String> {
    let r = resource.trim_end_matches('/');
    [
        PARTNER_CENTER_RESOURCE.to_owned(),
        state.dynamics_resource(),
    ]
    .into_iter()
    .find(|k| k.trim_end_matches('/').eq_ignore_ascii_case(r))
}

fn token_success(
    state: &SimState,
    es: &mut EntraState,
    resource: &str,
    client_id: &str,
    user: Option<&str>,
    refresh: bool,
) -> Response {
    let now = state.clock.now();
    let lifetime =
        TimeDelta::from_std(state.opts.access_token_lifetime).unwrap_or(TimeDelta::hours(1));
    let token = match es.issue(now, lifetime, resource, client_id, user) {
        Ok(t) => t,
        Err(_) => {
            return entra_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                50000,
                "Token signing failed.",
                now,
            );
        }
    };
    let mut body = json!({
        "token_type": "Bearer",
        "scope": if user.is_some() { format!("{resource}/user_impersonation") } else { format!("{resource}/.default") },
        "expires_in": lifetime.num_seconds(),
        "ext_expires_in": lifetime.num_seconds(),
        "access_token": token,
    });
    if refresh {
        let rt = es.new_refresh_token(client_id, resource);
        body["refresh_token"] = json!(rt);
    }
    json_response(StatusCode::OK, &body)
}

/// `POST /entra/{tenant}/oauth2/v2.0/token`
pub(crate) async fn token(
    State(state): State<Arc<SimState>>,
    Path(_tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.clock.now();
    let form = parse_form(&body);
    let basic = basic_credentials(&headers);
    let client_id = form
        .get("client_id")
        .cloned()
        .or_else(|| basic.as_ref().map(|b| b.0.clone()));
    let client_secret = form
        .get("client_secret")
        .cloned()
        .or_else(|| basic.as_ref().map(|b| b.1.clone()));
    let Some(grant) = form.get("grant_type") else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
            now,
        );
    };
    let Some(client_id) = client_id else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
            now,
        );
    };
    let app = creds::app(&client_id);
    let Some(app) = app else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                creds::TENANT_ID
            ),
            now,
        );
    };
    if let Some(secret) = &client_secret
        && app.secret != Some(secret.as_str())
    {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            now,
        );
    }
    let mut es = lock(&state.entra);
    match grant.as_str() {
        "client_credentials" => {
            if client_secret.is_none() {
                return entra_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                    now,
                );
            }
            let Some(scope) = form.get("scope") else {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'scope'.",
                    now,
                );
            };
            match scope_resource(scope) {
                Err((code, msg)) => {
                    entra_error(StatusCode::BAD_REQUEST, "invalid_scope", code, &msg, now)
                }
                Ok(None) => entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    70011,
                    "The provided value for the input parameter 'scope' is not valid.",
                    now,
                ),
                Ok(Some((_, false))) => entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    1002012,
                    &format!(
                        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                    ),
                    now,
                ),
                Ok(Some((resource, true))) => match known_resource(&state, &resource) {
                    None => entra_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_resource",
                        500011,
                        &format!(
                            "The resource principal named {resource} was not found in the tenant named {}.",
                            creds::TENANT_ID
                        ),
                        now,
                    ),
                    Some(resource) => {
                        token_success(&state, &mut es, &resource, &client_id, None, false)
                    }
                },
            }
        }
        "refresh_token" => {
            let Some(rt) = form.get("refresh_token") else {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'refresh_token'.",
                    now,
                );
            };
            let Some(grant) = es.refresh_tokens.get(rt).cloned() else {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    70000,
                    "The provided value for the 'refresh_token' is not valid: it was already redeemed, revoked or never issued. Sign in again.",
                    now,
                );
            };
            if !grant.client_id.eq_ignore_ascii_case(&client_id) {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    70000,
                    "The refresh token was issued to a different client.",
                    now,
                );
            }
            let resource = match form.get("scope").map(|s| scope_resource(s)) {
                Some(Err((code, msg))) => {
                    return entra_error(StatusCode::BAD_REQUEST, "invalid_scope", code, &msg, now);
                }
                Some(Ok(Some((r, _)))) => match known_resource(&state, &r) {
                    Some(r) => r,
                    None => {
                        return entra_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_resource",
                            500011,
                            &format!(
                                "The resource principal named {r} was not found in the tenant."
                            ),
                            now,
                        );
                    }
                },
                _ => grant.resource.clone(),
            };
            token_success(
                &state,
                &mut es,
                &resource,
                &client_id,
                Some(&grant.upn),
                true,
            )
        }
        "urn:ietf:params:oauth:grant-type:device_code" => {
            let Some(code) = form.get("device_code") else {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'device_code'.",
                    now,
                );
            };
            let Some(flow) = es.device_codes.get(code) else {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "bad_verification_code",
                    70019,
                    "Verification code was not recognized.",
                    now,
                );
            };
            if !flow.client_id.eq_ignore_ascii_case(&client_id) {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    70000,
                    "The device code was issued to a different client.",
                    now,
                );
            }
            if now >= flow.expires_at {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "expired_token",
                    70020,
                    "The provided authorization code or refresh token has expired.",
                    now,
                );
            }
            match flow.decision {
                None => entra_error(
                    StatusCode::BAD_REQUEST,
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                    now,
                ),
                Some(false) => {
                    let user_code = flow.user_code.clone();
                    es.device_codes.remove(code);
                    es.user_codes.remove(&user_code);
                    entra_error(
                        StatusCode::BAD_REQUEST,
                        "authorization_declined",
                        70000,
                        "The end user declined the authorization request.",
                        now,
                    )
                }
                Some(true) => {
                    let scope = flow.scope.clone();
                    let user_code = flow.user_code.clone();
                    es.device_codes.remove(code);
                    es.user_codes.remove(&user_code);
                    let resource = match scope_resource(&scope) {
                        Ok(Some((r, _))) => known_resource(&state, &r).unwrap_or(r),
                        _ => PARTNER_CENTER_RESOURCE.to_owned(),
                    };
                    let offline = scope
                        .split_whitespace()
                        .any(|s| s.eq_ignore_ascii_case("offline_access"));
                    token_success(
                        &state,
                        &mut es,
                        &resource,
                        &client_id,
                        Some(creds::PARTNER_CENTER_USER),
                        offline,
                    )
                }
            }
        }
        other => entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
            now,
        ),
    }
}

/// `POST /entra/{tenant}/oauth2/v2.0/devicecode`
pub(crate) async fn devicecode(
    State(state): State<Arc<SimState>>,
    Path(_tenant): Path<String>,
    body: Bytes,
) -> Response {
    let now = state.clock.now();
    let form = parse_form(&body);
    let Some(client_id) = form.get("client_id") else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
            now,
        );
    };
    if creds::app(client_id).is_none() {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory."),
            now,
        );
    }
    let Some(scope) = form.get("scope") else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
            now,
        );
    };
    match scope_resource(scope) {
        Err((code, msg)) => {
            return entra_error(StatusCode::BAD_REQUEST, "invalid_scope", code, &msg, now);
        }
        Ok(Some((r, _))) if known_resource(&state, &r).is_none() => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_resource",
                500011,
                &format!("The resource principal named {r} was not found in the tenant."),
                now,
            );
        }
        _ => {}
    }
    let mut es = lock(&state.entra);
    let device_code = es.random_token("DAQABsim", 32);
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let user_code: String = (0..9)
        .map(|_| ALPHABET[es.rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    let expires_in = 900;
    es.device_codes.insert(
        device_code.clone(),
        DeviceFlow {
            user_code: user_code.clone(),
            client_id: client_id.clone(),
            scope: scope.clone(),
            expires_at: now + TimeDelta::seconds(expires_in),
            decision: if state.opts.auto_approve_device_codes {
                Some(true)
            } else {
                None
            },
        },
    );
    es.user_codes.insert(user_code.clone(), device_code.clone());
    let uri = format!("{}/_sim/entra/devicelogin", state.urls.base);
    json_response(
        StatusCode::OK,
        &json!({
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": uri,
            "expires_in": expires_in,
            "interval": 5,
            "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."),
        }),
    )
}
