//! Reads: the list with `$filter`, `$orderby`, `$top`, `$select` and
//! `@odata.nextLink` paging (partner-center-api §1, §1.1), and get by id.
//! Pages are keyset `$skiptoken`s, so a referral that changes between
//! pages is seen again rather than skipped.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::http::{auth, error, with_common_headers};
use super::model::{DATE_FIELDS, KNOWN_FIELDS};
use super::store::{PcState, StoredReferral, fmt_time};
use crate::datetime;
use crate::odata::{self, CmpOp, Expr, Literal, Resolver};
use crate::{SimState, json_response, lock};

/// "If there are more than 100 items in a collection, use `@odata.nextLink`" (§1).
const MAX_PAGE: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SkipToken {
    /// Filter text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<String>,
    /// Order field: `c` created, `u` updated.
    o: char,
    d: bool,
    t: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
    /// Last key returned: nanoseconds since the epoch and id.
    k: (i64, String),
}

fn encode_token(t: &SkipToken) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(t).unwrap_or_default())
}

fn decode_token(s: &str) -> Option<SkipToken> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim())
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

/// Resolves filter paths on a stored referral, reading its body only when a
/// path is not one of the indexed fields.
struct StoredResolver<'a> {
    r: &'a StoredReferral,
    parsed: OnceCell<Value>,
}

impl StoredResolver<'_> {
    fn doc(&self) -> &Value {
        self.parsed.get_or_init(|| self.r.value())
    }
}

impl Resolver for StoredResolver<'_> {
    fn value(&self, path: &[String]) -> Value {
        if path.len() == 1 {
            let f = path[0].as_str();
            if f.eq_ignore_ascii_case("status") {
                return json!(self.r.status.as_str());
            }
            if f.eq_ignore_ascii_case("substatus") {
                return json!(self.r.substatus.as_str());
            }
            if f.eq_ignore_ascii_case("engagementId") {
                return json!(self.r.engagement_id);
            }
            if f.eq_ignore_ascii_case("updatedDateTime") {
                return json!(fmt_time(self.r.updated));
            }
            if f.eq_ignore_ascii_case("createdDateTime") {
                return json!(fmt_time(self.r.created));
            }
        }
        odata::JsonResolver(self.doc()).value(path)
    }
    fn elements(&self, path: &[String]) -> Vec<Value> {
        odata::JsonResolver(self.doc()).elements(path)
    }
}

/// Validates filter paths and literal types; quoted date-times are read as date-times.
fn check_filter(e: &mut Expr) -> Result<(), String> {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            check_filter(a)?;
            check_filter(b)
        }
        Expr::Not(a) => check_filter(a),
        Expr::Cmp { path, value, .. } => {
            check_path(path)?;
            let f = path[0].as_str();
            if DATE_FIELDS.iter().any(|d| d.eq_ignore_ascii_case(f)) && path.len() == 1 {
                match value {
                    Literal::DateTime(_) | Literal::Null => {}
                    Literal::String(s) => match datetime::parse(s) {
                        Some(dt) => *value = Literal::DateTime(dt),
                        None => {
                            return Err(format!(
                                "'{s}' is not a valid Edm.DateTimeOffset for {f}."
                            ));
                        }
                    },
                    Literal::Date(d) => {
                        *value =
                            Literal::DateTime(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
                    }
                    other => {
                        return Err(format!(
                            "A binary operator with incompatible types was detected: Edm.DateTimeOffset and {}.",
                            other.type_name()
                        ));
                    }
                }
            }
            Ok(())
        }
        Expr::Func { path, .. } => check_path(path),
        Expr::Any { collection, .. } => check_path(collection),
    }
}

fn check_path(path: &[String]) -> Result<(), String> {
    let first = path.first().map(String::as_str).unwrap_or("");
    if KNOWN_FIELDS.iter().any(|k| k.eq_ignore_ascii_case(first))
        || first.eq_ignore_ascii_case("email")
    {
        Ok(())
    } else {
        Err(format!(
            "Could not find a property named '{first}' on type 'Referral'."
        ))
    }
}

struct ListQuery {
    filter_text: Option<String>,
    filter: Option<Expr>,
    order_updated: bool,
    desc: bool,
    top: usize,
    skip: usize,
    select: Option<Vec<String>>,
    count: bool,
    after: Option<(DateTime<Utc>, String)>,
}

fn parse_query(raw: Option<&str>) -> Result<ListQuery, String> {
    let params: HashMap<String, String> = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    if let Some(tok) = params.get("$skiptoken") {
        let t = decode_token(tok).ok_or_else(|| "The $skiptoken is not valid.".to_owned())?;
        let mut filter = match &t.f {
            Some(f) => Some(odata::parse_filter(f).map_err(|e| e.0)?),
            None => None,
        };
        if let Some(f) = filter.as_mut() {
            check_filter(f)?;
        }
        let after = DateTime::from_timestamp_nanos(t.k.0);
        return Ok(ListQuery {
            filter_text: t.f,
            filter,
            order_updated: t.o == 'u',
            desc: t.d,
            top: t.t,
            skip: 0,
            select: t
                .s
                .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect()),
            count: false,
            after: Some((after, t.k.1)),
        });
    }
    let filter_text = params
        .get("$filter")
        .cloned()
        .filter(|s| !s.trim().is_empty());
    let mut filter = match &filter_text {
        Some(f) => Some(odata::parse_filter(f).map_err(|e| format!("Invalid $filter: {}", e.0))?),
        None => None,
    };
    if let Some(f) = filter.as_mut() {
        check_filter(f)?;
    }
    let (mut order_updated, mut desc) = (false, false);
    if let Some(o) = params.get("$orderby") {
        let items = odata::parse_orderby(o).map_err(|e| e.0)?;
        if items.len() != 1 {
            return Err("Only one $orderby field is supported.".into());
        }
        let f = items[0].field.as_str();
        if f.eq_ignore_ascii_case("updatedDateTime") {
            order_updated = true;
        } else if !f.eq_ignore_ascii_case("createdDateTime") {
            return Err(format!(
                "Ordering by '{f}' is not supported: use createdDateTime or updatedDateTime."
            ));
        }
        desc = items[0].desc;
    }
    let top = match params.get("$top") {
        None => MAX_PAGE,
        Some(t) => match t.trim().parse::<usize>() {
            Ok(0) | Err(_) => return Err(format!("'{t}' is not a valid $top.")),
            Ok(n) => n.min(MAX_PAGE),
        },
    };
    let skip = match params.get("$skip") {
        None => 0,
        Some(s) => s
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("'{s}' is not a valid $skip."))?,
    };
    let select = params.get("$select").map(|s| {
        s.split(',')
            .map(|x| x.trim().to_owned())
            .collect::<Vec<_>>()
    });
    if let Some(sel) = &select {
        for f in sel {
            check_path(std::slice::from_ref(f))?;
        }
    }
    let count = params
        .get("$count")
        .is_some_and(|c| c.eq_ignore_ascii_case("true"));
    Ok(ListQuery {
        filter_text,
        filter,
        order_updated,
        desc,
        top,
        skip,
        select,
        count,
        after: None,
    })
}

fn bounds_from(filter: Option<&Expr>, field: &str) -> (Bound<DateTime<Utc>>, Bound<DateTime<Utc>>) {
    let mut lo = Bound::Unbounded;
    let mut hi = Bound::Unbounded;
    if let Some(f) = filter {
        for (op, lit) in f.conjunct_bounds(field) {
            if let Literal::DateTime(t) = lit {
                match op {
                    CmpOp::Ge | CmpOp::Gt | CmpOp::Eq if matches!(lo, Bound::Unbounded) => {
                        lo = Bound::Included(*t)
                    }
                    CmpOp::Le | CmpOp::Lt | CmpOp::Eq if matches!(hi, Bound::Unbounded) => {
                        hi = Bound::Included(*t)
                    }
                    _ => {}
                }
            }
        }
    }
    (lo, hi)
}

fn project(v: Value, select: &Option<Vec<String>>) -> Value {
    match (select, v) {
        (Some(sel), Value::Object(m)) => {
            let mut out = Map::new();
            for (k, val) in m {
                if k == "id" || sel.iter().any(|s| s.eq_ignore_ascii_case(&k)) {
                    out.insert(k, val);
                }
            }
            Value::Object(out)
        }
        (_, v) => v,
    }
}

impl PcState {
    /// The index keys a listing reads, in its order: the range of the
    /// `updatedDateTime` (or `createdDateTime`) index its filter's bounds on
    /// that field and its `$skiptoken` allow, never the whole store.
    fn keys<'a>(
        &'a self,
        q: &ListQuery,
    ) -> Box<dyn Iterator<Item = &'a (DateTime<Utc>, String)> + 'a> {
        let field = if q.order_updated {
            "updatedDateTime"
        } else {
            "createdDateTime"
        };
        let index = if q.order_updated {
            &self.by_updated
        } else {
            &self.by_created
        };
        let (lo, hi) = bounds_from(q.filter.as_ref(), field);
        let key = |b: Bound<DateTime<Utc>>, low: bool| -> Bound<(DateTime<Utc>, String)> {
            match b {
                Bound::Included(t) if low => Bound::Included((t, String::new())),
                Bound::Included(t) => Bound::Included((t, "\u{10FFFF}".to_owned())),
                _ => Bound::Unbounded,
            }
        };
        let (mut lo_k, mut hi_k) = (key(lo, true), key(hi, false));
        if let Some(after) = &q.after {
            if q.desc {
                hi_k = Bound::Excluded(after.clone());
            } else {
                lo_k = Bound::Excluded(after.clone());
            }
        }
        if matches!((&lo_k, &hi_k), (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) if a > b)
        {
            return Box::new(std::iter::empty());
        }
        let range = index.range((lo_k, hi_k));
        if q.desc {
            Box::new(range.rev())
        } else {
            Box::new(range)
        }
    }

    fn list(&self, q: &ListQuery) -> (Vec<Value>, Option<String>, Option<usize>) {
        let iter = self.keys(q);
        let matches = |id: &String| -> Option<&StoredReferral> {
            let r = self.by_id.get(id)?;
            match &q.filter {
                None => Some(r),
                Some(f) => odata::eval(
                    f,
                    &StoredResolver {
                        r,
                        parsed: OnceCell::new(),
                    },
                )
                .then_some(r),
            }
        };
        let mut out = Vec::new();
        let mut last: Option<(DateTime<Utc>, String)> = None;
        let mut more = false;
        let mut skipped = 0;
        let mut total = 0usize;
        for (t, id) in iter {
            let Some(r) = matches(id) else { continue };
            if skipped < q.skip {
                skipped += 1;
                continue;
            }
            total += 1;
            if out.len() < q.top {
                out.push(project(r.value(), &q.select));
                last = Some((*t, id.clone()));
            } else {
                more = true;
                if !q.count {
                    break;
                }
            }
        }
        let next = match (more, last) {
            (true, Some((t, id))) => Some(encode_token(&SkipToken {
                f: q.filter_text.clone(),
                o: if q.order_updated { 'u' } else { 'c' },
                d: q.desc,
                t: q.top,
                s: q.select.as_ref().map(|s| s.join(",")),
                k: (t.timestamp_nanos_opt().unwrap_or(0), id),
            })),
            _ => None,
        };
        (out, next, q.count.then_some(total))
    }
}

/// `GET /v1.0/engagements/referrals`
pub(crate) async fn list(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(r) = auth(&state, &headers) {
        return r;
    }
    let q = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(m) => {
            return with_common_headers(
                error(StatusCode::BAD_REQUEST, "invalidRequest", &m),
                &headers,
                None,
            );
        }
    };
    let now = state.clock.now();
    let mut pc = lock(&state.pc);
    pc.sweep(now);
    let (items, next, count) = pc.list(&q);
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{}/v1.0/$metadata#Referrals", pc.base_url)),
    );
    if let Some(c) = count {
        body.insert("@odata.count".into(), json!(c));
    }
    body.insert("value".into(), Value::Array(items));
    if let Some(tok) = next {
        body.insert(
            "@odata.nextLink".into(),
            json!(format!(
                "{}/v1.0/engagements/referrals?$skiptoken={tok}",
                pc.base_url
            )),
        );
    }
    with_common_headers(
        json_response(StatusCode::OK, &Value::Object(body)),
        &headers,
        None,
    )
}

/// `GET /v1.0/engagements/referrals/{id}`
pub(crate) async fn get_one(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = auth(&state, &headers) {
        return r;
    }
    let now = state.clock.now();
    let mut pc = lock(&state.pc);
    pc.sweep(now);
    match pc.by_id.get(&id) {
        Some(r) => with_common_headers(
            json_response(StatusCode::OK, &r.value()),
            &headers,
            Some(&r.etag),
        ),
        None => with_common_headers(
            error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                &format!("Referral '{id}' was not found."),
            ),
            &headers,
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partner_center::store::str_of;
    use chrono::{TimeDelta, TimeZone};

    fn state_with(values: Vec<Value>) -> PcState {
        let mut pc = PcState::new(1, 14);
        pc.base_url = "http://sim/partner-center".into();
        for v in values {
            pc.put(v);
        }
        pc
    }

    fn referral(id: &str, status: &str, sub: &str, created: DateTime<Utc>) -> Value {
        json!({"id": id, "engagementId": format!("e-{id}"), "status": status, "substatus": sub,
               "direction": "Incoming", "type": "Shared", "name": id,
               "createdDateTime": fmt_time(created), "updatedDateTime": fmt_time(created),
               "expirationDateTime": null, "eTag": "\"1\""})
    }

    #[test]
    fn paging_is_stable_under_updates() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let pc_values: Vec<Value> = (0..5)
            .map(|i| {
                referral(
                    &format!("r{i}"),
                    "Active",
                    "Accepted",
                    t0 + TimeDelta::minutes(i),
                )
            })
            .collect();
        let mut pc = state_with(pc_values);
        let mut q = parse_query(Some("$top=2&$orderby=updatedDateTime asc")).unwrap();
        let (page, next, _) = pc.list(&q);
        assert_eq!(
            page.iter()
                .map(|v| str_of(v, "id").to_owned())
                .collect::<Vec<_>>(),
            ["r0", "r1"]
        );
        // r0 changes between pages: it moves to the end and is seen again, nothing is skipped.
        let mut r0 = pc.get("r0").unwrap();
        r0["updatedDateTime"] = json!(fmt_time(t0 + TimeDelta::hours(1)));
        pc.put(r0);
        let raw = format!("$skiptoken={}", next.unwrap());
        q = parse_query(Some(&raw)).unwrap();
        let (page, next, _) = pc.list(&q);
        assert_eq!(
            page.iter()
                .map(|v| str_of(v, "id").to_owned())
                .collect::<Vec<_>>(),
            ["r2", "r3"]
        );
        let raw = format!("$skiptoken={}", next.unwrap());
        let (page, next, _) = pc.list(&parse_query(Some(&raw)).unwrap());
        assert_eq!(
            page.iter()
                .map(|v| str_of(v, "id").to_owned())
                .collect::<Vec<_>>(),
            ["r4", "r0"]
        );
        assert!(next.is_none());
    }

    /// Pages through a change listing (`updatedDateTime ge`, ascending, two
    /// per page) while referrals change under it. The reference says only
    /// that the next page is at `@odata.nextLink`, which is opaque; it
    /// promises no snapshot. What a keyset continuation does, and what the
    /// engine relies on: a referral present throughout is never skipped; one
    /// changed before the listing reached it is returned once, changed; one
    /// changed after it was returned is returned again at the end, changed
    /// (the only repeat); a new one is returned at the end.
    #[test]
    fn a_change_listing_loses_nothing_while_referrals_change() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let mut pc = state_with(
            (0..6)
                .map(|i| {
                    referral(
                        &format!("r{i}"),
                        "Active",
                        "Accepted",
                        t0 + TimeDelta::minutes(i),
                    )
                })
                .collect(),
        );
        let ids = |page: &[Value]| -> Vec<(String, String)> {
            page.iter()
                .map(|v| (str_of(v, "id").to_owned(), str_of(v, "name").to_owned()))
                .collect()
        };
        let first = format!(
            "$filter=updatedDateTime ge {}&$orderby=updatedDateTime asc&$top=2",
            fmt_time(t0)
        );
        let (page, mut next, _) = pc.list(&parse_query(Some(&first)).unwrap());
        let mut seen = ids(&page);
        let later = t0 + TimeDelta::hours(1);
        let change = |pc: &mut PcState, id: &str, at: DateTime<Utc>| {
            let mut v = pc.get(id).unwrap();
            v["name"] = json!(format!("{id} changed"));
            v["updatedDateTime"] = json!(fmt_time(at));
            pc.put(v);
        };
        // r3 changes before the listing reaches it, r1 after it was returned.
        change(&mut pc, "r3", later);
        change(&mut pc, "r1", later + TimeDelta::seconds(1));
        let mut pages = 1;
        while let Some(tok) = next.take() {
            let (page, n, _) = pc.list(&parse_query(Some(&format!("$skiptoken={tok}"))).unwrap());
            seen.extend(ids(&page));
            next = n;
            pages += 1;
            if pages == 2 {
                // A referral created mid-listing comes at the end.
                let mut r6 = referral("r6", "New", "Pending", later + TimeDelta::seconds(2));
                r6["name"] = json!("r6 new");
                pc.put(r6);
            }
        }
        let names: Vec<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "r0",
                "r1",
                "r2",
                "r4",
                "r5",
                "r3 changed",
                "r1 changed",
                "r6 new"
            ]
        );
        // Every referral's last appearance is its latest version.
        for (id, _) in &seen {
            let last = seen.iter().rev().find(|(i, _)| i == id).unwrap();
            assert_eq!(last.1, str_of(&pc.get(id).unwrap(), "name"), "{id}");
        }
    }

    #[test]
    fn a_listing_reads_only_its_range_of_the_index() {
        // 20,000 referrals older than the listing's `ge` bound and two newer:
        // the listing reads the two from the index, not the 20,002 stored,
        // and its token resumes after the last one returned.
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let mut pc = state_with(
            (0..20_000)
                .map(|i| referral(&format!("old{i}"), "Active", "Accepted", t0))
                .collect(),
        );
        let t1 = t0 + TimeDelta::days(1);
        for id in ["new1", "new2"] {
            pc.put(referral(id, "Active", "Accepted", t1));
        }
        let raw = format!(
            "$filter=updatedDateTime ge {}&$orderby=updatedDateTime asc&$top=1",
            fmt_time(t1)
        );
        let q = parse_query(Some(&raw)).unwrap();
        assert_eq!(pc.keys(&q).count(), 2);
        let (page, next, _) = pc.list(&q);
        assert_eq!(str_of(&page[0], "id"), "new1");
        let tok = decode_token(&next.unwrap()).unwrap();
        assert_eq!(
            tok.k,
            (t1.timestamp_nanos_opt().unwrap(), "new1".to_owned())
        );
        let q = parse_query(Some(&format!("$skiptoken={}", encode_token(&tok)))).unwrap();
        assert_eq!(pc.keys(&q).count(), 1);
        let (page, next, _) = pc.list(&q);
        assert_eq!(str_of(&page[0], "id"), "new2");
        assert!(next.is_none());
    }

    #[test]
    fn unanswered_referrals_expire_when_read() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let mut pc = state_with(vec![
            referral("old", "New", "Pending", t0),
            referral("new", "New", "Pending", t0 + TimeDelta::days(10)),
        ]);
        pc.sweep(t0 + TimeDelta::days(14));
        assert_eq!(str_of(&pc.get("old").unwrap(), "substatus"), "Expired");
        assert_eq!(str_of(&pc.get("new").unwrap(), "substatus"), "Pending");
        let q = parse_query(Some("$filter=status eq 'New'")).unwrap();
        assert_eq!(pc.list(&q).0.len(), 1);
    }
}
