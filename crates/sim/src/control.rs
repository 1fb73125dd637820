//! The control API under `/_sim/`: act as a person would in each product,
//! inject faults, move the clock, and read counters and the request log.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Api, FaultRule, SimError, SimState, json_response};

type S = State<Arc<SimState>>;

fn ok(v: Value) -> Response {
    json_response(StatusCode::OK, &v)
}

fn result(r: Result<Value, SimError>) -> Response {
    match r {
        Ok(v) => ok(v),
        Err(e) => e.into_response(),
    }
}

pub(crate) fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/", get(summary))
        .route("/config", get(config))
        .route("/counters", get(counters))
        .route("/counters/reset", post(reset_counters))
        .route("/requests", get(requests).delete(clear_requests))
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance))
        .route("/faults", get(faults).post(add_fault).delete(clear_faults))
        .route("/faults/{id}", delete(remove_fault))
        .route("/tokens/expire", post(expire_tokens))
        .route("/entra/approve", post(approve))
        .route("/entra/devicelogin", get(devicelogin))
        .route("/entra/pending", get(pending))
        .route("/partner-center/referrals", post(insert_referrals))
        .route("/partner-center/referrals/{id}", get(referral))
        .route(
            "/partner-center/referrals/{id}/{action}",
            post(referral_action),
        )
        .route("/salesforce/opportunities", post(sf_create))
        .route("/salesforce/opportunities/{id}", get(sf_get))
        .route("/salesforce/opportunities/{id}/stage", post(sf_stage))
        .route("/salesforce/opportunities/{id}/edit", post(sf_edit))
        .route("/salesforce/daily-limit", post(sf_limit))
        .route(
            "/salesforce/sobjects/{object}/fields/{field}",
            delete(sf_remove_field),
        )
        .route("/dynamics/opportunities", post(dv_create))
        .route("/dynamics/opportunities/{id}", get(dv_get))
        .route("/dynamics/opportunities/{id}/{action}", post(dv_action))
}

async fn summary(State(s): S) -> Response {
    let (used, max) = s.salesforce_api_usage();
    ok(json!({
        "urls": {"base": s.urls.base, "partner_center": s.urls.partner_center, "dynamics": s.urls.dynamics,
                 "salesforce": s.urls.salesforce, "token": s.urls.token_url("organizations")},
        "now": s.clock.now(),
        "referrals": s.referral_count(),
        "dynamics_opportunities": s.dynamics_opportunity_ids().len(),
        "salesforce_opportunities": s.salesforce_opportunity_ids().len(),
        "salesforce_api_usage": {"used": used, "max": max},
    }))
}

async fn config(State(s): S) -> Response {
    let mut r = s.daemon_config().into_response();
    *r.status_mut() = StatusCode::OK;
    r
}

async fn counters(State(s): S) -> Response {
    ok(serde_json::to_value(s.counters()).unwrap_or(Value::Null))
}

async fn reset_counters(State(s): S) -> Response {
    s.reset_counters();
    ok(json!({"reset": true}))
}

#[derive(Deserialize)]
struct LogQuery {
    api: Option<String>,
    limit: Option<usize>,
}

async fn requests(State(s): S, Query(q): Query<LogQuery>) -> Response {
    let api = q.api.as_deref().and_then(Api::parse);
    let mut log: Vec<_> = s
        .request_log()
        .into_iter()
        .filter(|r| api.is_none_or(|a| r.api == a))
        .collect();
    if let Some(n) = q.limit {
        let skip = log.len().saturating_sub(n);
        log.drain(..skip);
    }
    ok(serde_json::to_value(log).unwrap_or(Value::Null))
}

async fn clear_requests(State(s): S) -> Response {
    s.clear_request_log();
    ok(json!({"cleared": true}))
}

async fn clock(State(s): S) -> Response {
    ok(json!({"now": s.clock.now(), "start": s.clock.start_time()}))
}

#[derive(Deserialize)]
struct Advance {
    seconds: Option<f64>,
    /// humantime, e.g. `15d` or `2h 30m`.
    duration: Option<String>,
}

async fn advance(State(s): S, Json(a): Json<Advance>) -> Response {
    let by = match (a.seconds, a.duration) {
        (Some(secs), _) if secs >= 0.0 && secs.is_finite() => Duration::from_secs_f64(secs),
        (_, Some(d)) => match humantime::parse_duration(&d) {
            Ok(d) => d,
            Err(e) => return SimError::Invalid(format!("bad duration {d:?}: {e}")).into_response(),
        },
        _ => return SimError::Invalid("give seconds (>= 0) or duration".into()).into_response(),
    };
    s.clock.advance(by);
    ok(json!({"now": s.clock.now()}))
}

async fn faults(State(s): S) -> Response {
    ok(serde_json::to_value(s.faults()).unwrap_or(Value::Null))
}

async fn add_fault(State(s): S, Json(rule): Json<FaultRule>) -> Response {
    ok(json!({"id": s.add_fault(rule)}))
}

async fn clear_faults(State(s): S) -> Response {
    s.clear_faults();
    ok(json!({"cleared": true}))
}

async fn remove_fault(State(s): S, Path(id): Path<u64>) -> Response {
    if s.remove_fault(id) {
        ok(json!({"removed": id}))
    } else {
        SimError::NotFound(format!("fault {id}")).into_response()
    }
}

#[derive(Deserialize, Default)]
struct ApiBody {
    api: Option<String>,
}

async fn expire_tokens(State(s): S, body: Option<Json<ApiBody>>) -> Response {
    let api = body.and_then(|b| b.0.api);
    let parsed = match api.as_deref() {
        None => None,
        Some(a) => match Api::parse(a) {
            Some(x) => Some(x),
            None => return SimError::Invalid(format!("unknown api {a:?}")).into_response(),
        },
    };
    s.expire_tokens(parsed);
    ok(json!({"expired": api.unwrap_or_else(|| "all".into())}))
}

#[derive(Deserialize)]
struct Approve {
    user_code: String,
    #[serde(default = "yes")]
    approve: bool,
}

fn yes() -> bool {
    true
}

async fn approve(State(s): S, Json(a): Json<Approve>) -> Response {
    if s.approve_device_code(&a.user_code, a.approve) {
        ok(json!({"user_code": a.user_code, "approved": a.approve}))
    } else {
        SimError::NotFound(format!("pending device code {}", a.user_code)).into_response()
    }
}

#[derive(Deserialize)]
struct UserCode {
    user_code: Option<String>,
}

async fn devicelogin(State(s): S, Query(q): Query<UserCode>) -> Response {
    match q.user_code {
        Some(c) if s.approve_device_code(&c, true) => format!("Signed in: device code {c} approved. You can close this page.").into_response(),
        Some(c) => (StatusCode::NOT_FOUND, format!("No pending sign-in with code {c}.")).into_response(),
        None => "Simulated Microsoft sign-in: open this page with ?user_code=CODE to approve a device-code sign-in.".into_response(),
    }
}

async fn pending(State(s): S) -> Response {
    ok(json!(s.pending_device_codes()))
}

#[derive(Deserialize)]
struct Count {
    count: usize,
}

async fn insert_referrals(State(s): S, Json(c): Json<Count>) -> Response {
    ok(json!(s.insert_referrals(c.count)))
}

async fn referral(State(s): S, Path(id): Path<String>) -> Response {
    match s.referral(&id) {
        Some(v) => ok(v),
        None => SimError::NotFound(format!("referral {id}")).into_response(),
    }
}

#[derive(Deserialize, Default)]
struct Reason {
    reason: Option<String>,
}

async fn referral_action(
    State(s): S,
    Path((id, action)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let body = body.map(|b| b.0).unwrap_or(Value::Null);
    let reason: Reason = serde_json::from_value(body.clone()).unwrap_or_default();
    let r = match action.as_str() {
        "accept" => s.accept_referral(&id),
        "decline" => match reason.reason.as_deref() {
            Some(r) if !r.trim().is_empty() => s.decline_referral(&id, r),
            _ => Err(SimError::Invalid("declining needs a reason".into())),
        },
        "win" => s.win_referral(&id),
        "lose" => s.lose_referral(&id, reason.reason.as_deref()),
        "microsoft-accept" => s.microsoft_respond(&id, true),
        "microsoft-decline" => s.microsoft_respond(&id, false),
        "edit" => match serde_json::from_value::<Vec<crate::PatchOp>>(body) {
            Ok(ops) => s.edit_referral(&id, &ops),
            Err(e) => Err(SimError::Invalid(format!(
                "edit takes a JSON Patch array of replace/add operations: {e}"
            ))),
        },
        other => Err(SimError::NotFound(format!("action {other}"))),
    };
    result(r)
}

async fn sf_create(State(s): S, Json(v): Json<Value>) -> Response {
    result(s.create_salesforce_opportunity(v))
}

async fn sf_get(State(s): S, Path(id): Path<String>) -> Response {
    match s.salesforce_opportunity(&id) {
        Some(v) => ok(v),
        None => SimError::NotFound(format!("Opportunity {id}")).into_response(),
    }
}

#[derive(Deserialize)]
struct Stage {
    stage: String,
}

async fn sf_stage(State(s): S, Path(id): Path<String>, Json(st): Json<Stage>) -> Response {
    result(s.set_sf_stage(&id, &st.stage))
}

async fn sf_edit(State(s): S, Path(id): Path<String>, Json(v): Json<Value>) -> Response {
    result(s.edit_salesforce(&id, v))
}

#[derive(Deserialize)]
struct Limit {
    max: Option<u64>,
    #[serde(default)]
    exhaust: bool,
}

async fn sf_limit(State(s): S, Json(l): Json<Limit>) -> Response {
    if let Some(m) = l.max {
        s.set_salesforce_daily_limit(m);
    }
    if l.exhaust {
        s.exhaust_salesforce_daily_limit();
    }
    let (used, max) = s.salesforce_api_usage();
    ok(json!({"used": used, "max": max}))
}

async fn sf_remove_field(State(s): S, Path((object, field)): Path<(String, String)>) -> Response {
    result(
        s.remove_salesforce_field(&object, &field)
            .map(|()| json!({"removed": format!("{object}.{field}")})),
    )
}

async fn dv_create(State(s): S, Json(v): Json<Value>) -> Response {
    result(s.create_dynamics_opportunity(v))
}

async fn dv_get(State(s): S, Path(id): Path<String>) -> Response {
    match s.dynamics_opportunity(&id) {
        Some(v) => ok(v),
        None => SimError::NotFound(format!("opportunity {id}")).into_response(),
    }
}

async fn dv_action(
    State(s): S,
    Path((id, action)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let body = body.map(|b| b.0).unwrap_or(Value::Null);
    let r = match action.as_str() {
        "win" => s.win_dynamics(&id).map(|_| json!({"won": id})),
        "lose" => {
            let reason: Reason = serde_json::from_value(body).unwrap_or_default();
            s.lose_dynamics(&id, reason.reason.as_deref())
                .map(|_| json!({"lost": id}))
        }
        "edit" => s.edit_dynamics(&id, body),
        other => Err(SimError::NotFound(format!("action {other}"))),
    };
    result(r)
}
