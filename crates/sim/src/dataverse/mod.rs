//! Dataverse Web API (Dynamics 365) for opportunities, accounts and contacts:
//! OData queries with `modifiedon` filters and `odata.maxpagesize` paging,
//! create, update and alternate-key upsert with the conditional headers,
//! Win/LoseOpportunity, change tracking (delta links), metadata, and `$batch`.
//!
//! Layers, each using only those below it: `control`, `batch` → `execute` →
//! `actions`, `metadata` → `write` → `query` → `http` → `store` → `key` →
//! `schema`.

mod actions;
mod batch;
mod control;
mod execute;
mod http;
mod key;
mod metadata;
mod query;
mod schema;
mod store;
mod write;

pub(crate) use http::error;
pub(crate) use store::DvState;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;

use crate::{SimState, lock};

use http::{Ctx, DvResponse, auth, not_found_segment, parse_prefer, to_http};

/// `ANY /dynamics/api/data/{version}/{*rest}`
pub(crate) async fn dispatch(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Path((version, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if !version.starts_with("v9.") {
        return to_http(not_found_segment(&version));
    }
    if let Err(r) = auth(&state, &headers) {
        return to_http(r);
    }
    // The URL as sent: this origin, then the path and query as they travelled.
    let url_len = state.urls.base.trim_end_matches('/').len()
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    if let Some(r) = http::url_too_long(url_len, http::MAX_URL_CHARS) {
        return to_http(r);
    }
    let service_root = format!("{}/api/data/{version}", state.urls.dynamics);
    let ctx = Ctx {
        service_root: &service_root,
        now: state.clock.now(),
        prefer: parse_prefer(&headers),
        headers: &headers,
    };
    if rest == "$batch" {
        if method != Method::POST {
            return to_http(DvResponse::err(
                StatusCode::METHOD_NOT_ALLOWED,
                "0x80060888",
                "$batch accepts POST only.",
            ));
        }
        return batch::handle(&state, &ctx, &version, &headers, &body);
    }
    let r = lock(&state.dv).execute(
        &ctx,
        &method,
        &rest,
        query.as_deref().unwrap_or(""),
        &body,
        None,
    );
    to_http(r)
}
