//! Writes: create (`POST`), JSON Patch (`PATCH`, `replace`/`add` only) and
//! full update (`PUT`, If-Match required), partner-center-api §1 and §4.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::TimeDelta;
use serde_json::{Value, json};

use super::country::is_alpha2;
use super::http::{auth, error, with_common_headers};
use super::model::{FIXED_AT_CREATE, KNOWN_FIELDS, READ_ONLY, check_shape, missing_on_create};
use super::patch::{RawOp, apply_op};
use super::store::{
    PARTNER_MPN_ID, PARTNER_ORG_ID, PARTNER_ORG_NAME, TICK_NANOS, etag_inner, fmt_time, str_of,
};
use crate::clock::truncate;
use crate::{SimState, json_response, lock};

/// `POST /v1.0/engagements/referrals`
pub(crate) async fn create(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = auth(&state, &headers) {
        return r;
    }
    let bad = |m: String| {
        with_common_headers(
            error(StatusCode::BAD_REQUEST, "invalidRequest", &m),
            &headers,
            None,
        )
    };
    let mut v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad("The request body must be a Referral object.".into()),
        Err(e) => return bad(format!("The request body is not valid JSON: {e}")),
    };
    let missing = missing_on_create(&v);
    if !missing.is_empty() {
        return bad(format!(
            "Required properties are missing: {}.",
            missing.join(", ")
        ));
    }
    if let Some(Value::Object(m)) = Some(&v)
        && let Some(k) = m
            .keys()
            .find(|k| !KNOWN_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k)))
    {
        return bad(format!(
            "Could not find a property named '{k}' on type 'Referral'."
        ));
    }
    if let Some(c) = v
        .pointer("/customerProfile/address/country")
        .and_then(Value::as_str)
        && !is_alpha2(c)
    {
        return bad(format!(
            "customerProfile.address.country '{c}' is not an ISO 3166 two-letter country code."
        ));
    }
    if let Err(m) = check_shape(&v) {
        return bad(m);
    }
    let for_microsoft = v.get("target").and_then(Value::as_array).is_some_and(|t| {
        t.iter().any(|x| {
            x.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case("msft"))
        })
    });
    let now = state.clock.now();
    let t = truncate(now, TICK_NANOS);
    let mut pc = lock(&state.pc);
    pc.sweep(now);
    let given_engagement = v
        .get("engagementId")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .filter(|s| !s.is_empty());
    let engagement_id = match given_engagement {
        Some(e) if pc.by_engagement.get(&e).is_some_and(|ids| !ids.is_empty()) => e,
        Some(e) => return bad(format!("Engagement '{e}' does not exist.")),
        None if for_microsoft => {
            return bad(
                "A referral for Microsoft needs the engagementId of your own referral.".into(),
            );
        }
        None => pc.new_guid(),
    };
    let id = pc.new_guid();
    let obj = v.as_object_mut();
    if let Some(m) = obj {
        for f in READ_ONLY
            .iter()
            .chain(["status", "substatus", "statusReason"].iter())
        {
            m.remove(*f);
        }
    }
    v["id"] = json!(id);
    v["engagementId"] = json!(engagement_id);
    v["organizationId"] = json!(PARTNER_ORG_ID);
    v["organizationName"] = json!(PARTNER_ORG_NAME);
    v["mpnId"] = json!(PARTNER_MPN_ID);
    v["direction"] = json!("Outgoing");
    v["createdDateTime"] = json!(fmt_time(t));
    v["updatedDateTime"] = json!(fmt_time(t));
    v["closedDateTime"] = Value::Null;
    if for_microsoft {
        // Microsoft sellers decide within the window: New/Pending until then.
        v["status"] = json!("New");
        v["substatus"] = json!("Pending");
        v["statusReason"] = Value::Null;
        v["acceptedDateTime"] = Value::Null;
        v["expirationDateTime"] = json!(fmt_time(t + TimeDelta::days(i64::from(pc.expiry_days))));
    } else {
        v["status"] = json!("Active");
        v["substatus"] = json!("Accepted");
        v["statusReason"] = Value::Null;
        v["acceptedDateTime"] = json!(fmt_time(t));
        v["expirationDateTime"] = Value::Null;
    }
    if v.get("favorite").is_none() {
        v["favorite"] = json!(false);
    }
    v["eTag"] = json!(pc.new_etag(t));
    v["links"] = pc.links(&id, &engagement_id);
    let etag = str_of(&v, "eTag").to_owned();
    pc.put(v.clone());
    let mut r = with_common_headers(
        json_response(StatusCode::CREATED, &v),
        &headers,
        Some(&etag),
    );
    if let Ok(loc) =
        HeaderValue::from_str(&format!("{}/v1.0/engagements/referrals/{id}", pc.base_url))
    {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    r
}

/// The path of a patch operation with its top-level member spelled as the
/// resource spells it; an error for an unknown member or one a client cannot
/// write (read-only, or fixed at create like `target`).
fn writable_path(path: &str) -> Result<String, String> {
    let rest = path.trim_start_matches('/');
    let first = rest.split('/').next().unwrap_or("");
    let Some(canonical) = KNOWN_FIELDS.iter().find(|k| k.eq_ignore_ascii_case(first)) else {
        return Err(format!(
            "Could not find a property named '{first}' on type 'Referral'."
        ));
    };
    if READ_ONLY.contains(canonical) || FIXED_AT_CREATE.contains(canonical) {
        return Err(format!("The property '{canonical}' is read-only."));
    }
    Ok(format!("/{canonical}{}", &rest[first.len()..]))
}

fn if_match_fails(headers: &HeaderMap, etag: &str) -> Option<bool> {
    let v = headers.get(header::IF_MATCH)?.to_str().ok()?;
    let want = etag_inner(etag);
    Some(
        !v.split(',')
            .any(|x| x.trim() == "*" || etag_inner(x) == want),
    )
}

fn wants_representation(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("return=representation"))
        })
}

fn update(state: &SimState, headers: &HeaderMap, id: &str, body: &[u8], put: bool) -> Response {
    let bad = |m: String| {
        with_common_headers(
            error(StatusCode::BAD_REQUEST, "invalidRequest", &m),
            headers,
            None,
        )
    };
    let now = state.clock.now();
    let mut pc = lock(&state.pc);
    pc.sweep(now);
    let Some(stored) = pc.by_id.get(id) else {
        return with_common_headers(
            error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                &format!("Referral '{id}' was not found."),
            ),
            headers,
            None,
        );
    };
    match if_match_fails(headers, &stored.etag) {
        Some(true) => {
            return with_common_headers(
                error(
                    StatusCode::PRECONDITION_FAILED,
                    "preconditionFailed",
                    "The referral was changed since you read it: the If-Match eTag does not match. Get the latest version and retry.",
                ),
                headers,
                Some(&stored.etag),
            );
        }
        None if put => return bad("The If-Match header is required for PUT.".into()),
        _ => {}
    }
    let old = stored.value();
    let new = if put {
        let mut v: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return bad("The request body must be a Referral object.".into()),
            Err(e) => return bad(format!("The request body is not valid JSON: {e}")),
        };
        if let Some(m) = v.as_object()
            && let Some(k) = m
                .keys()
                .find(|k| !KNOWN_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k)))
        {
            return bad(format!(
                "Could not find a property named '{k}' on type 'Referral'."
            ));
        }
        for f in READ_ONLY {
            v[*f] = old.get(*f).cloned().unwrap_or(Value::Null);
        }
        v
    } else {
        let ops: Vec<RawOp> = match serde_json::from_slice(body) {
            Ok(ops) => ops,
            Err(e) => {
                return bad(format!(
                    "The request body must be a JSON Patch document (an array of operations): {e}"
                ));
            }
        };
        if ops.is_empty() {
            return bad("The JSON Patch document has no operations.".into());
        }
        let mut doc = old.clone();
        for op in ops {
            let add = match op.op.as_str() {
                "replace" => false,
                "add" => true,
                other => {
                    return bad(format!(
                        "The operation '{other}' is not supported: only 'replace' and 'add' are."
                    ));
                }
            };
            let path = match writable_path(&op.path) {
                Ok(p) => p,
                Err(m) => return bad(m),
            };
            let Some(value) = op.value else {
                return bad(format!(
                    "The '{}' operation on '{}' needs a value.",
                    op.op, op.path
                ));
            };
            if let Err(m) = apply_op(&mut doc, &path, value, add) {
                return bad(m);
            }
        }
        doc
    };
    match pc.commit_change(&old, new, now) {
        Err((status, code, msg)) => with_common_headers(error(status, code, &msg), headers, None),
        Ok(v) => {
            let etag = str_of(&v, "eTag").to_owned();
            if wants_representation(headers) || put {
                let mut r =
                    with_common_headers(json_response(StatusCode::OK, &v), headers, Some(&etag));
                r.headers_mut().insert(
                    "preference-applied",
                    HeaderValue::from_static("return=representation"),
                );
                r
            } else {
                let mut r = Response::new(axum::body::Body::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                with_common_headers(r, headers, Some(&etag))
            }
        }
    }
}

/// `PATCH /v1.0/engagements/referrals/{id}`
pub(crate) async fn patch(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = auth(&state, &headers) {
        return r;
    }
    update(&state, &headers, &id, &body, false)
}

/// `PUT /v1.0/engagements/referrals/{id}`
pub(crate) async fn put(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = auth(&state, &headers) {
        return r;
    }
    update(&state, &headers, &id, &body, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_is_read_only_after_create() {
        for p in ["/target", "/target/-", "/target/0/id", "/Target", "target"] {
            assert_eq!(
                writable_path(p),
                Err("The property 'target' is read-only.".to_owned()),
                "{p}"
            );
        }
    }

    #[test]
    fn read_only_and_unknown_members_are_refused_others_are_canonical() {
        for p in [
            "/id",
            "/eTag",
            "/createdDateTime",
            "/direction",
            "/links/self",
        ] {
            assert!(writable_path(p).unwrap_err().contains("read-only"), "{p}");
        }
        assert!(
            writable_path("/bogusField")
                .unwrap_err()
                .contains("bogusField")
        );
        assert_eq!(writable_path("/Substatus").as_deref(), Ok("/substatus"));
        assert_eq!(
            writable_path("/details/dealValue").as_deref(),
            Ok("/details/dealValue")
        );
        assert_eq!(
            writable_path("/EXTERNALREFERENCEID").as_deref(),
            Ok("/externalReferenceId")
        );
    }
}
