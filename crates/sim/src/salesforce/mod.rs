//! Salesforce REST API: OAuth token endpoint (client credentials and JWT
//! bearer) returning `instance_url`, the SOQL subset with `nextRecordsUrl`
//! paging, sObject rows and upsert by External ID, sObject Collections
//! (≤ 200 records), describe, OpportunityStage, limits and `Sforce-Limit-Info`.
//!
//! Layers, each using only those below it: `control`, `sobject`,
//! `collections`, `describe`, `query`, `auth` → `limits` → `store` → `http` →
//! `schema`.

mod auth;
mod collections;
mod control;
mod describe;
mod http;
mod limits;
mod query;
mod schema;
mod sobject;
mod store;

pub(crate) use auth::token;
pub(crate) use http::error;
pub(crate) use limits::counts_toward_usage;
pub use schema::SfStage;
pub(crate) use store::SfState;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::{SimState, bearer, lock};

use http::{SfErr, err_response, sf_json, supported_version};
use query::batch_size;
use sobject::sobject_op;

/// `GET /services/data`
pub(crate) async fn versions(State(state): State<Arc<SimState>>) -> Response {
    let _ = &state;
    let list: Vec<Value> = (58..=64)
        .map(|n| json!({"label": format!("API {n}.0"), "url": format!("/services/data/v{n}.0"), "version": format!("{n}.0")}))
        .collect();
    sf_json(StatusCode::OK, &Value::Array(list))
}

/// `ANY /services/data/{version}/{*rest}`
pub(crate) async fn dispatch(
    State(state): State<Arc<SimState>>,
    method: Method,
    headers: HeaderMap,
    Path((version, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let now = state.clock.now();
    if !supported_version(&version) {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    }
    let mut sf = lock(&state.sf);
    if !sf.session_ok(bearer(&headers), now) {
        return error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        );
    }
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let segs: Vec<String> = rest
        .trim_end_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let json_body = || {
        serde_json::from_slice::<Value>(&body).map_err(|e| {
            SfErr::new(
                "JSON_PARSER_ERROR",
                format!("The request body is not valid JSON: {e}"),
            )
        })
    };
    let result: Result<Response, (StatusCode, SfErr)> = (|| match (method.clone(), segs.as_slice())
    {
        (Method::GET, ["query" | "queryAll"]) => {
            let q = params.get("q").ok_or((
                StatusCode::BAD_REQUEST,
                SfErr::new("MALFORMED_QUERY", "A query string (q) is required."),
            ))?;
            sf.query(q, &version, batch_size(&headers))
                .map(|b| sf_json(StatusCode::OK, &b))
        }
        (Method::GET, ["query" | "queryAll", loc]) => sf
            .query_more(loc, &version)
            .map(|b| sf_json(StatusCode::OK, &b)),
        (Method::GET, ["limits"]) => {
            let (used, max) = sf.api_usage(now);
            Ok(sf_json(
                StatusCode::OK,
                &json!({"DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(used)}}),
            ))
        }
        (Method::GET, ["sobjects"]) => {
            let list: Vec<Value> = sf
                .objects
                .iter()
                .map(|o| json!({"name": o.name, "label": o.label, "keyPrefix": o.prefix, "queryable": true, "createable": o.writable,
                    "urls": {"sobject": format!("/services/data/{version}/sobjects/{}", o.name)}}))
                .collect();
            Ok(sf_json(
                StatusCode::OK,
                &json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": list}),
            ))
        }
        (Method::GET, ["sobjects", obj, "describe"]) => {
            let o = sf.obj_index(obj).ok_or((
                StatusCode::NOT_FOUND,
                SfErr::new("NOT_FOUND", "The requested resource does not exist"),
            ))?;
            Ok(sf_json(StatusCode::OK, &sf.describe(o, &version)))
        }
        (m, ["sobjects", obj, rest @ ..]) => {
            let o = sf.obj_index(obj).ok_or((
                StatusCode::NOT_FOUND,
                SfErr::new("NOT_FOUND", "The requested resource does not exist"),
            ))?;
            sobject_op(&mut sf, o, &m, rest, &params, &version, json_body, now)
        }
        (Method::PATCH, ["composite", "sobjects", obj, ext]) => {
            let o = sf.obj_index(obj).ok_or((
                StatusCode::NOT_FOUND,
                SfErr::new("NOT_FOUND", "The requested resource does not exist"),
            ))?;
            let b = json_body().map_err(|e| (StatusCode::BAD_REQUEST, e))?;
            sf.collection_upsert(o, ext, &b, now)
                .map(|v| sf_json(StatusCode::OK, &v))
        }
        (Method::POST | Method::PATCH, ["composite", "sobjects"]) => {
            let b = json_body().map_err(|e| (StatusCode::BAD_REQUEST, e))?;
            sf.collection_write(&b, method == Method::POST, now)
                .map(|v| sf_json(StatusCode::OK, &v))
        }
        _ => Err((
            StatusCode::NOT_FOUND,
            SfErr::new("NOT_FOUND", "The requested resource does not exist"),
        )),
    })();
    match result {
        Ok(r) => r,
        Err((status, e)) => err_response(status, &e),
    }
}
