//! Reads: OData `$filter`/`$select`/`$orderby`/`$top`, `odata.maxpagesize`
//! paging with `@odata.nextLink` cookies, get by key, and change tracking
//! (delta links). A `$filter` that is an `or` of equality look-ups on
//! indexed columns (an account look-up) reads only the rows the index names.

use std::collections::BTreeSet;

use axum::http::{StatusCode, header};
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::odata::{self, CmpOp, Expr, Literal, Resolver};

use super::http::{Ctx, DvResponse, bad, param};
use super::key::KeySpec;
use super::schema::{ColType, Column, TableDef};
use super::store::{DvState, Row, Table, etag_of};

pub(super) const MAX_PAGE: usize = 5000;

pub(super) const DELTA_TOKEN_DAYS: i64 = 7;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PageCookie {
    /// Last key: (modifiedon seconds or 0, id) for keyset, or offset.
    #[serde(default)]
    pub(super) m: Option<i64>,
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) off: Option<usize>,
    /// Change tracking: version the snapshot was taken at.
    #[serde(default)]
    pub(super) tv: Option<u64>,
    /// Delta paging: the version to continue after and the target version.
    #[serde(default)]
    pub(super) dv: Option<(u64, u64)>,
    pub(super) page: u32,
}

pub(super) fn encode_cookie(c: &PageCookie) -> String {
    let inner = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(c).unwrap_or_default());
    format!(
        "<cookie pagenumber=\"{}\" pagingcookie=\"{inner}\" istracking=\"{}\" />",
        c.page,
        if c.tv.is_some() { "True" } else { "False" }
    )
}

pub(super) fn decode_cookie(s: &str) -> Option<PageCookie> {
    let start = s.find("pagingcookie=\"")? + "pagingcookie=\"".len();
    let end = s[start..].find('"')? + start;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&s[start..end])
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

pub(super) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Rebuilds a query string, replacing `$skiptoken`.
pub(super) fn with_skiptoken(params: &[(String, String)], token: &str) -> String {
    let mut parts: Vec<String> = params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("$skiptoken"))
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    parts.push(format!("$skiptoken={}", enc(token)));
    parts.join("&")
}

pub(super) struct RowResolver<'a>(&'a Map<String, Value>);

impl Resolver for RowResolver<'_> {
    fn value(&self, path: &[String]) -> Value {
        if path.len() == 1 {
            self.0.get(path[0].as_str()).cloned().unwrap_or(Value::Null)
        } else {
            Value::Null
        }
    }
    fn elements(&self, _: &[String]) -> Vec<Value> {
        Vec::new()
    }
}

pub(super) fn check_filter(def: &TableDef, e: &mut Expr) -> Result<(), String> {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            check_filter(def, a)?;
            check_filter(def, b)
        }
        Expr::Not(a) => check_filter(def, a),
        Expr::Any { .. } => Err("Lambda operators are not supported on this resource.".into()),
        Expr::Func { path, .. } => {
            let c = path_column(def, path)?;
            match c.ty {
                ColType::Text(_) => Ok(()),
                _ => Err(format!(
                    "The function is not valid for the property '{}'.",
                    c.name
                )),
            }
        }
        Expr::Cmp { path, value, .. } => {
            let c = path_column(def, path)?;
            let ok = match (c.ty, &*value) {
                (_, Literal::Null) => true,
                (ColType::Guid | ColType::Lookup, Literal::Guid(_)) => true,
                (ColType::Guid | ColType::Lookup, Literal::String(s))
                    if uuid::Uuid::parse_str(s).is_ok() =>
                {
                    true
                }
                (ColType::Text(_), Literal::String(_)) => true,
                (ColType::Money | ColType::Int { .. } | ColType::Choice(_), Literal::Number(_)) => {
                    true
                }
                (ColType::Bool, Literal::Bool(_)) => true,
                (ColType::DateTime, Literal::DateTime(_)) => true,
                (ColType::DateTime, Literal::Date(d)) => {
                    *value =
                        Literal::DateTime(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
                    true
                }
                (ColType::DateOnly, Literal::Date(_)) => true,
                (ColType::DateOnly, Literal::DateTime(t)) => {
                    *value = Literal::Date(t.date_naive());
                    true
                }
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "A binary operator with incompatible types was detected. Found operand types 'Edm.{}' and '{}' for operator kind 'Equal'.",
                    c.ty.attribute_type(),
                    value.type_name()
                ))
            }
        }
    }
}

/// The rows `f` can match, from the table's text index: `Some` when `f` is
/// an `or` of terms each of which `and`s (at least) an `eq` of an indexed
/// column with a string, as an account look-up is; `None` when only a scan
/// can tell. A superset of the matches, in id order (the order of a scan):
/// the filter still decides each row.
pub(super) fn indexed_candidates<'a>(table: &'a Table, f: &Expr) -> Option<BTreeSet<&'a String>> {
    let mut out = BTreeSet::new();
    let mut terms = vec![f];
    while let Some(term) = terms.pop() {
        match term {
            Expr::Or(a, b) => terms.extend([&**a, &**b]),
            _ => out.extend(term_hits(table, term)?),
        }
    }
    Some(out)
}

/// The smallest set of ids an indexed `eq` among the `and`-ed parts of
/// `e` allows.
fn term_hits<'a>(table: &'a Table, e: &Expr) -> Option<&'a BTreeSet<String>> {
    match e {
        Expr::And(a, b) => match (term_hits(table, a), term_hits(table, b)) {
            (Some(x), Some(y)) => Some(if x.len() <= y.len() { x } else { y }),
            (x, y) => x.or(y),
        },
        Expr::Cmp {
            path,
            op: CmpOp::Eq,
            value: Literal::String(v),
        } if path.len() == 1 => table.text_hits(&path[0], v),
        _ => None,
    }
}

pub(super) fn path_column<'a>(def: &'a TableDef, path: &[String]) -> Result<&'a Column, String> {
    let name = path.join("/");
    match def.column(&name) {
        Some(c) if path.len() == 1 => Ok(c),
        _ => Err(format!(
            "Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{}'.",
            def.logical
        )),
    }
}

pub(super) fn select_list(
    def: &TableDef,
    params: &[(String, String)],
) -> Result<Option<Vec<String>>, DvResponse> {
    let Some(s) = param(params, "$select") else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for f in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if def.column(f).is_none() {
            return Err(bad(
                "0x80060888",
                format!(
                    "Could not find a property named '{f}' on type 'Microsoft.Dynamics.CRM.{}'.",
                    def.logical
                ),
            ));
        }
        out.push(f.to_owned());
    }
    Ok(Some(out))
}

pub(super) fn cmp_values(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

impl DvState {
    pub(super) fn missing(&self, t: usize, k: &KeySpec) -> DvResponse {
        let def = &self.tables[t].def;
        match k {
            KeySpec::Id(id) => DvResponse::err(
                StatusCode::NOT_FOUND,
                "0x80040217",
                format!("{} With Id = {id} Does Not Exist", def.logical),
            ),
            KeySpec::Alt(..) => DvResponse::err(
                StatusCode::NOT_FOUND,
                "0x80040217",
                format!(
                    "A record with the specified key values does not exist in {} entity",
                    def.logical
                ),
            ),
        }
    }

    pub(super) fn get_one(
        &self,
        ctx: &Ctx,
        t: usize,
        k: &KeySpec,
        params: &[(String, String)],
    ) -> DvResponse {
        let def = &self.tables[t].def;
        let select = match select_list(def, params) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let Some(id) = self.resolve(t, k) else {
            return self.missing(t, k);
        };
        let Some(row) = self.tables[t].get(&id) else {
            return self.missing(t, k);
        };
        let etag = etag_of(row.version);
        if let Some(inm) = ctx
            .headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            && inm.trim() == etag
        {
            return DvResponse::empty(StatusCode::NOT_MODIFIED).header("ETag", etag);
        }
        let mut v = self.render(t, row, &select, ctx.prefer.annotations.is_some());
        if let Some(m) = v.as_object_mut() {
            m.insert(
                "@odata.context".into(),
                json!(format!(
                    "{}/$metadata#{}/$entity",
                    ctx.service_root, def.set
                )),
            );
        }
        DvResponse::json(StatusCode::OK, v).header("ETag", etag)
    }

    pub(super) fn query(
        &self,
        ctx: &Ctx,
        t: usize,
        set: &str,
        params: &[(String, String)],
    ) -> DvResponse {
        let table = &self.tables[t];
        let def = &table.def;
        let select = match select_list(def, params) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let cookie = param(params, "$skiptoken").map(|s| decode_cookie(s).ok_or(()));
        let cookie = match cookie {
            Some(Err(())) => return bad("0x80060888", "The $skiptoken is not valid."),
            Some(Ok(c)) => Some(c),
            None => None,
        };
        let page_size = ctx
            .prefer
            .maxpagesize
            .unwrap_or(MAX_PAGE)
            .clamp(1, MAX_PAGE);
        let annotations = ctx.prefer.annotations.is_some();
        let ctx_url = |suffix: &str| {
            let cols = select
                .as_ref()
                .map(|s| format!("({})", s.join(",")))
                .unwrap_or_default();
            format!("{}/$metadata#{set}{cols}{suffix}", ctx.service_root)
        };
        if let Some(dtok) = param(params, "$deltatoken") {
            return self.delta(
                ctx,
                t,
                set,
                params,
                dtok,
                cookie,
                page_size,
                &select,
                annotations,
            );
        }
        let tracking = ctx.prefer.track_changes || cookie.as_ref().is_some_and(|c| c.tv.is_some());
        if tracking {
            if !def.change_tracking {
                return bad(
                    "0x80072491",
                    format!(
                        "Change tracking is not enabled for the {} table.",
                        def.logical
                    ),
                );
            }
            for p in ["$filter", "$orderby", "$top", "$expand"] {
                if param(params, p).is_some() {
                    return bad(
                        "0x80060888",
                        format!(
                            "The \"{p}\" query parameter isn't supported when Change Tracking is enabled."
                        ),
                    );
                }
            }
            let tv = cookie.as_ref().and_then(|c| c.tv).unwrap_or(self.version);
            let after = cookie.as_ref().and_then(|c| c.id.clone());
            let range = match &after {
                Some(a) => table
                    .rows
                    .range::<String, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
                None => table.rows.range::<String, _>(..),
            };
            let mut rows: Vec<(&String, &Row)> = range.take(page_size + 1).collect();
            let more = rows.len() > page_size;
            rows.truncate(page_size);
            let mut body = Map::new();
            body.insert("@odata.context".into(), json!(ctx_url("")));
            body.insert(
                "value".into(),
                Value::Array(
                    rows.iter()
                        .map(|(_, r)| self.render(t, r, &select, annotations))
                        .collect(),
                ),
            );
            let page = cookie.as_ref().map_or(1, |c| c.page);
            if more {
                let last = rows.last().map(|(id, _)| (*id).clone());
                let c = PageCookie {
                    m: None,
                    id: last,
                    off: None,
                    tv: Some(tv),
                    dv: None,
                    page: page + 1,
                };
                body.insert(
                    "@odata.nextLink".into(),
                    json!(format!(
                        "{}/{set}?{}",
                        ctx.service_root,
                        with_skiptoken(params, &encode_cookie(&c))
                    )),
                );
            } else {
                body.insert(
                    "@odata.deltaLink".into(),
                    json!(self.delta_link(ctx, set, params, tv)),
                );
            }
            return DvResponse::json(StatusCode::OK, Value::Object(body)).header(
                "Preference-Applied",
                format!("odata.track-changes,odata.maxpagesize={page_size}"),
            );
        }
        let mut filter = match param(params, "$filter") {
            Some(f) => match odata::parse_filter(f) {
                Ok(e) => Some(e),
                Err(e) => return bad("0x80060888", format!("Invalid $filter: {}", e.0)),
            },
            None => None,
        };
        if let Some(f) = filter.as_mut()
            && let Err(m) = check_filter(def, f)
        {
            return bad("0x80060888", m);
        }
        // Rows an indexed look-up names; otherwise every row is read.
        let hits = filter.as_ref().and_then(|f| indexed_candidates(table, f));
        let scan = || -> Box<dyn Iterator<Item = (&String, &Row)> + '_> {
            match &hits {
                Some(h) => Box::new(h.iter().filter_map(|id| table.rows.get_key_value(*id))),
                None => Box::new(table.rows.iter()),
            }
        };
        let order = match param(params, "$orderby") {
            Some(o) => match odata::parse_orderby(o) {
                Ok(items) => {
                    for i in &items {
                        if def.column(&i.field).is_none() {
                            return bad(
                                "0x80060888",
                                format!(
                                    "Could not find a property named '{}' on type 'Microsoft.Dynamics.CRM.{}'.",
                                    i.field, def.logical
                                ),
                            );
                        }
                    }
                    items
                }
                Err(e) => return bad("0x80060888", e.0),
            },
            None => Vec::new(),
        };
        if param(params, "$expand").is_some() {
            return bad(
                "0x80060888",
                "The simulator does not support $expand; select the _x_value lookup columns instead.",
            );
        }
        let top = match param(params, "$top").map(|t| t.parse::<usize>()) {
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return bad(
                    "0x80060888",
                    "The $top query option is not a valid integer.",
                );
            }
            None => None,
        };
        // $top limits the total and is ignored with odata.maxpagesize.
        let (page_size, total_cap) = match (ctx.prefer.maxpagesize, top) {
            (None, Some(n)) => (n.clamp(0, MAX_PAGE), Some(n)),
            _ => (page_size, None),
        };
        let keep = |r: &Row| {
            filter
                .as_ref()
                .is_none_or(|f| odata::eval(f, &RowResolver(&r.values)))
        };
        let page = cookie.as_ref().map_or(1, |c| c.page);
        let mut picked: Vec<(&String, &Row)> = Vec::new();
        let mut more = false;
        let by_modified = order.len() == 1 && order[0].field == "modifiedon";
        if order.is_empty() || by_modified {
            let want = page_size + 1;
            if by_modified {
                let desc = order[0].desc;
                let after = cookie
                    .as_ref()
                    .and_then(|c| Some((DateTime::from_timestamp(c.m?, 0)?, c.id.clone()?)));
                let bounds = filter
                    .as_ref()
                    .map(|f| f.conjunct_bounds("modifiedon"))
                    .unwrap_or_default();
                let mut lo = std::ops::Bound::Unbounded;
                for (op, lit) in bounds {
                    if let (
                        odata::CmpOp::Ge | odata::CmpOp::Gt | odata::CmpOp::Eq,
                        Literal::DateTime(t),
                    ) = (op, lit)
                    {
                        lo = std::ops::Bound::Included((*t, String::new()));
                    }
                }
                let narrowed: BTreeSet<(DateTime<Utc>, String)>;
                let by_modified = match &hits {
                    Some(_) => {
                        narrowed = scan().map(|(id, r)| (r.modified, id.clone())).collect();
                        &narrowed
                    }
                    None => &table.by_modified,
                };
                let iter: Box<dyn Iterator<Item = &(DateTime<Utc>, String)>> = match (desc, after) {
                    (false, Some(a)) => Box::new(
                        by_modified
                            .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
                    ),
                    (false, None) => Box::new(by_modified.range((lo, std::ops::Bound::Unbounded))),
                    (true, Some(a)) => Box::new(
                        by_modified
                            .range((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(a)))
                            .rev(),
                    ),
                    (true, None) => Box::new(by_modified.iter().rev()),
                };
                for (_, id) in iter {
                    if let Some((id, r)) = table.rows.get_key_value(id)
                        && keep(r)
                    {
                        picked.push((id, r));
                        if picked.len() >= want {
                            break;
                        }
                    }
                }
            } else {
                let after = cookie.as_ref().and_then(|c| c.id.clone());
                let range: Box<dyn Iterator<Item = (&String, &Row)>> = match (&hits, &after) {
                    (Some(_), Some(a)) => Box::new(scan().filter(move |(id, _)| *id > a)),
                    (Some(_), None) => scan(),
                    (None, Some(a)) => Box::new(table.rows.range::<String, _>((
                        std::ops::Bound::Excluded(a),
                        std::ops::Bound::Unbounded,
                    ))),
                    (None, None) => Box::new(table.rows.range::<String, _>(..)),
                };
                for (id, r) in range {
                    if keep(r) {
                        picked.push((id, r));
                        if picked.len() >= want {
                            break;
                        }
                    }
                }
            }
            if picked.len() > page_size {
                more = true;
                picked.truncate(page_size);
            }
        } else {
            let mut all: Vec<(&String, &Row)> = scan().filter(|(_, r)| keep(r)).collect();
            all.sort_by(|a, b| {
                for o in &order {
                    let va = a.1.values.get(&o.field).unwrap_or(&Value::Null);
                    let vb = b.1.values.get(&o.field).unwrap_or(&Value::Null);
                    let ord = cmp_values(va, vb);
                    let ord = if o.desc { ord.reverse() } else { ord };
                    if ord != std::cmp::Ordering::Equal {
                        return ord;
                    }
                }
                a.0.cmp(b.0)
            });
            let off = cookie.as_ref().and_then(|c| c.off).unwrap_or(0);
            let rest: Vec<_> = all.into_iter().skip(off).collect();
            more = rest.len() > page_size;
            picked = rest.into_iter().take(page_size).collect();
        }
        if let Some(cap) = total_cap {
            picked.truncate(cap);
            more = false;
        }
        let mut body = Map::new();
        body.insert("@odata.context".into(), json!(ctx_url("")));
        if param(params, "$count").is_some_and(|c| c.eq_ignore_ascii_case("true")) {
            let n = scan().filter(|(_, r)| keep(r)).count().min(5000);
            body.insert("@odata.count".into(), json!(n));
        }
        body.insert(
            "value".into(),
            Value::Array(
                picked
                    .iter()
                    .map(|(_, r)| self.render(t, r, &select, annotations))
                    .collect(),
            ),
        );
        if more && let Some((id, r)) = picked.last() {
            let c = if order.is_empty() {
                PageCookie {
                    m: None,
                    id: Some((*id).clone()),
                    off: None,
                    tv: None,
                    dv: None,
                    page: page + 1,
                }
            } else if by_modified {
                PageCookie {
                    m: Some(r.modified.timestamp()),
                    id: Some((*id).clone()),
                    off: None,
                    tv: None,
                    dv: None,
                    page: page + 1,
                }
            } else {
                let off = cookie.as_ref().and_then(|c| c.off).unwrap_or(0) + picked.len();
                PageCookie {
                    m: None,
                    id: None,
                    off: Some(off),
                    tv: None,
                    dv: None,
                    page: page + 1,
                }
            };
            body.insert(
                "@odata.nextLink".into(),
                json!(format!(
                    "{}/{set}?{}",
                    ctx.service_root,
                    with_skiptoken(params, &encode_cookie(&c))
                )),
            );
        }
        let mut resp = DvResponse::json(StatusCode::OK, Value::Object(body));
        let mut applied = Vec::new();
        if let Some(n) = ctx.prefer.maxpagesize {
            applied.push(format!("odata.maxpagesize={}", n.clamp(1, MAX_PAGE)));
        }
        if let Some(a) = &ctx.prefer.annotations {
            applied.push(format!("odata.include-annotations=\"{a}\""));
        }
        if !applied.is_empty() {
            resp = resp.header("Preference-Applied", applied.join(","));
        }
        resp
    }

    pub(super) fn delta_link(
        &self,
        ctx: &Ctx,
        set: &str,
        params: &[(String, String)],
        version: u64,
    ) -> String {
        let stamp = ctx.now.format("%m/%d/%Y %H:%M:%S");
        let token = format!("{version}!{stamp}");
        let mut parts: Vec<String> = params
            .iter()
            .filter(|(k, _)| {
                !k.eq_ignore_ascii_case("$skiptoken") && !k.eq_ignore_ascii_case("$deltatoken")
            })
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        parts.push(format!("$deltatoken={}", enc(&token)));
        format!("{}/{set}?{}", ctx.service_root, parts.join("&"))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn delta(
        &self,
        ctx: &Ctx,
        t: usize,
        set: &str,
        params: &[(String, String)],
        token: &str,
        cookie: Option<PageCookie>,
        page_size: usize,
        select: &Option<Vec<String>>,
        annotations: bool,
    ) -> DvResponse {
        let table = &self.tables[t];
        let invalid = || {
            bad(
                "0x80044352",
                "The delta token is not valid or has expired. Start a new change tracking session.",
            )
        };
        let Some((ver, stamp)) = token.split_once('!') else {
            return invalid();
        };
        let Ok(since) = ver.parse::<u64>() else {
            return invalid();
        };
        let Ok(issued) = chrono::NaiveDateTime::parse_from_str(stamp, "%m/%d/%Y %H:%M:%S") else {
            return invalid();
        };
        if ctx.now - issued.and_utc() > TimeDelta::days(DELTA_TOKEN_DAYS) {
            return invalid();
        }
        let (from, upto) = cookie.and_then(|c| c.dv).unwrap_or((since, self.version));
        let mut items: Vec<(u64, Value)> = Vec::new();
        for (v, id) in table.by_version.range(from + 1..=upto) {
            if let Some(r) = table.rows.get(id) {
                items.push((*v, self.render(t, r, select, annotations)));
            }
        }
        let deleted_from = table.deleted.partition_point(|(v, _)| *v <= from);
        for (v, id) in table.deleted[deleted_from..]
            .iter()
            .take_while(|(v, _)| *v <= upto)
        {
            items.push((
                *v,
                json!({"@odata.context": format!("{}/$metadata#{set}/$deletedEntity", ctx.service_root), "id": id, "reason": "deleted"}),
            ));
        }
        let more = items.len() > page_size;
        items.truncate(page_size);
        let mut body = Map::new();
        body.insert(
            "@odata.context".into(),
            json!(format!("{}/$metadata#{set}/$delta", ctx.service_root)),
        );
        if more {
            let last = items.last().map(|(v, _)| *v).unwrap_or(upto);
            let c = PageCookie {
                m: None,
                id: None,
                off: None,
                tv: None,
                dv: Some((last, upto)),
                page: 2,
            };
            let mut p: Vec<(String, String)> = params.to_vec();
            p.retain(|(k, _)| !k.eq_ignore_ascii_case("$skiptoken"));
            body.insert(
                "@odata.nextLink".into(),
                json!(format!(
                    "{}/{set}?{}",
                    ctx.service_root,
                    with_skiptoken(&p, &encode_cookie(&c))
                )),
            );
        } else {
            body.insert(
                "@odata.deltaLink".into(),
                json!(self.delta_link(ctx, set, params, upto)),
            );
        }
        body.insert(
            "value".into(),
            Value::Array(items.into_iter().map(|(_, v)| v).collect()),
        );
        DvResponse::json(StatusCode::OK, Value::Object(body))
            .header("Preference-Applied", "odata.track-changes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimOptions;
    use crate::dataverse::http::Prefer;
    use crate::dataverse::store::Undo;
    use axum::http::{HeaderMap, Method};
    use std::collections::{BTreeMap, HashMap};

    const ROOT: &str = "http://sim/api/data/v9.2";

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + minute * 60, 0).unwrap()
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        dv: &mut DvState,
        now: DateTime<Utc>,
        method: Method,
        path: &str,
        query: &str,
        body: Value,
        page: Option<usize>,
        undo: Option<&mut Undo>,
    ) -> DvResponse {
        let headers = HeaderMap::new();
        let ctx = Ctx {
            service_root: ROOT,
            now,
            prefer: Prefer {
                maxpagesize: page,
                ..Prefer::default()
            },
            headers: &headers,
        };
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let r = dv.execute(&ctx, &method, path, query, &body, undo);
        assert!(r.is_success(), "{method} {path}?{query}: {:?}", r.body);
        r
    }

    /// Every row a query returns, following `@odata.nextLink`, and its
    /// `@odata.count`.
    fn read_all(dv: &mut DvState, query: &str, page: Option<usize>) -> (Vec<Value>, Value) {
        let mut q = query.to_owned();
        let mut rows = Vec::new();
        let mut count = Value::Null;
        for _ in 0..100 {
            let r = call(
                dv,
                at(1000),
                Method::GET,
                "accounts",
                &q,
                Value::Null,
                page,
                None,
            );
            let body = r.body.unwrap();
            if count.is_null() {
                count = body.get("@odata.count").cloned().unwrap_or(Value::Null);
            }
            rows.extend(body["value"].as_array().unwrap().iter().cloned());
            match body.get("@odata.nextLink").and_then(Value::as_str) {
                Some(next) => {
                    q = next
                        .strip_prefix(&format!("{ROOT}/accounts?"))
                        .unwrap()
                        .to_owned()
                }
                None => return (rows, count),
            }
        }
        panic!("paging did not end: {query}");
    }

    fn enc_q(filter: &str, rest: &str) -> String {
        format!("$filter={}{rest}", enc(filter))
    }

    fn table(dv: &DvState) -> &Table {
        dv.table("accounts").unwrap()
    }

    /// The text index rebuilt from the rows must equal the maintained one.
    fn assert_index_fresh(dv: &DvState) {
        let table = dv.table("accounts").unwrap();
        let mut rebuilt: HashMap<&str, HashMap<String, BTreeSet<String>>> = HashMap::new();
        for col in &table.def.indexed {
            let idx = rebuilt.entry(*col).or_default();
            for (id, row) in &table.rows {
                if let Some(Value::String(v)) = row.values.get(*col) {
                    idx.entry(v.to_ascii_lowercase())
                        .or_default()
                        .insert(id.clone());
                }
            }
        }
        assert_eq!(rebuilt, table.by_text);
    }

    #[test]
    fn indexed_account_lookups_answer_as_the_scan_does() {
        let mut dv = DvState::new(&SimOptions::default());
        let mut minute = 0;
        let mut put = |dv: &mut DvState, key: &str, body: Value, undo: Option<&mut Undo>| {
            minute += 1;
            // Two writes a minute: createdon and modifiedon ties.
            let path = format!("accounts(accountnumber='{key}')");
            call(
                dv,
                at(minute / 2),
                Method::PATCH,
                &path,
                "",
                body,
                None,
                undo,
            );
        };
        let accounts = [
            (
                "A1",
                json!({"name": "Contoso", "address1_postalcode": "98052", "new_dunsnumber": "111"}),
            ),
            (
                "A2",
                json!({"name": "CONTOSO", "address1_postalcode": "98052"}),
            ),
            (
                "A3",
                json!({"name": "contoso", "address1_postalcode": "10115", "new_dunsnumber": "111"}),
            ),
            ("A4", json!({"name": "Fabrikam", "new_dunsnumber": "222"})),
            (
                "A5",
                json!({"name": "fabrikam", "address1_postalcode": "98052"}),
            ),
            ("A6", json!({"name": "Old Name", "new_dunsnumber": "333"})),
            ("A7", json!({"name": "Deleted Co", "new_dunsnumber": "444"})),
            (
                "A8",
                json!({"name": "Contoso", "address1_postalcode": "98052", "statecode": 1}),
            ),
            ("A9", json!({"name": "Kept Name", "new_dunsnumber": "555"})),
        ];
        for (key, body) in accounts {
            put(&mut dv, key, body, None);
        }
        // A plain POST creates too.
        call(
            &mut dv,
            at(3),
            Method::POST,
            "accounts",
            "",
            json!({"name": "Contoso", "address1_postalcode": "98052", "accountnumber": "P1"}),
            None,
            None,
        );
        // Updates change the indexed columns; a delete removes a row.
        put(
            &mut dv,
            "A6",
            json!({"name": "Renamed Ltd", "new_dunsnumber": "666"}),
            None,
        );
        put(&mut dv, "A4", json!({"new_dunsnumber": null}), None);
        put(&mut dv, "A5", json!({"name": "FABRIKAM"}), None);
        call(
            &mut dv,
            at(9),
            Method::DELETE,
            "accounts(accountnumber='A7')",
            "",
            Value::Null,
            None,
            None,
        );
        // A failed change set: its create, rename and delete are undone.
        let mut undo = Undo::default();
        put(
            &mut dv,
            "U1",
            json!({"name": "Contoso", "address1_postalcode": "98052"}),
            Some(&mut undo),
        );
        put(
            &mut dv,
            "A9",
            json!({"name": "Renamed In Vain"}),
            Some(&mut undo),
        );
        call(
            &mut dv,
            at(9),
            Method::DELETE,
            "accounts(accountnumber='A1')",
            "",
            Value::Null,
            None,
            Some(&mut undo),
        );
        dv.rollback(undo);
        assert_index_fresh(&dv);

        // (filter, the account numbers it matches)
        let lookups: &[(&str, &[&str])] = &[
            (
                "new_dunsnumber eq '111' or (name eq 'contoso' and address1_postalcode eq '98052') \
                 or (name eq 'Fabrikam' and address1_postalcode eq null)",
                &["A1", "A2", "A3", "A4", "A8", "P1"],
            ),
            ("name eq 'CONTOSO'", &["A1", "A2", "A3", "A8", "P1"]),
            (
                "name eq 'fabrikam' and address1_postalcode eq null",
                &["A4"],
            ),
            ("name eq 'Renamed Ltd' or name eq 'Old Name'", &["A6"]),
            (
                "new_dunsnumber eq '333' or new_dunsnumber eq '666'",
                &["A6"],
            ),
            ("new_dunsnumber eq '222'", &[]),
            ("name eq 'Deleted Co' or new_dunsnumber eq '444'", &[]),
            ("name eq 'Kept Name' or name eq 'Renamed In Vain'", &["A9"]),
            (
                "(name eq 'Contoso' and statecode eq 0) or name eq 'kept name'",
                &["A1", "A2", "A3", "A9", "P1"],
            ),
            ("name eq 'nobody'", &[]),
        ];
        let mut shapes = vec![
            ("&$select=accountid,name,address1_postalcode,new_dunsnumber,createdon,accountnumber&$orderby=createdon asc".to_owned(), None),
            ("&$select=accountnumber&$orderby=createdon asc".to_owned(), Some(2)),
            ("&$select=name,accountnumber".to_owned(), None),
            ("&$select=accountnumber".to_owned(), Some(1)),
            ("&$orderby=modifiedon desc&$count=true".to_owned(), Some(2)),
            ("&$select=accountnumber&$orderby=modifiedon".to_owned(), Some(1)),
            ("&$select=accountnumber&$orderby=name desc,createdon&$top=3".to_owned(), None),
            ("&$select=accountnumber&$top=2".to_owned(), None),
        ];
        shapes.push(("&$count=true".to_owned(), None));
        for (filter, want) in lookups {
            let parsed = odata::parse_filter(filter).unwrap();
            assert!(
                indexed_candidates(table(&dv), &parsed).is_some(),
                "{filter}"
            );
            // The same filter wrapped in `not (not …)`: the general evaluation.
            let scanned = format!("not (not ({filter}))");
            let parsed = odata::parse_filter(&scanned).unwrap();
            assert!(
                indexed_candidates(table(&dv), &parsed).is_none(),
                "{scanned}"
            );
            let mut matched: BTreeMap<String, ()> = BTreeMap::new();
            for (rest, page) in &shapes {
                let (index_rows, index_count) = read_all(&mut dv, &enc_q(filter, rest), *page);
                let (scan_rows, scan_count) = read_all(&mut dv, &enc_q(&scanned, rest), *page);
                assert_eq!(index_rows, scan_rows, "{filter} {rest} {page:?}");
                assert_eq!(index_count, scan_count, "{filter} {rest}");
                if !rest.contains("$top") {
                    for r in &index_rows {
                        matched.insert(r["accountnumber"].as_str().unwrap_or("").to_owned(), ());
                    }
                    if let Some(n) = index_count.as_u64() {
                        assert_eq!(n as usize, want.len(), "{filter}");
                    }
                }
            }
            let matched: Vec<&str> = matched.keys().map(String::as_str).collect();
            assert_eq!(&matched, want, "{filter}");
        }
        // Not an `or` of indexed equalities: answered by the scan.
        for filter in [
            "name eq 'Contoso' or address1_city eq 'Paris'",
            "contains(name,'onto')",
            "name ne 'Contoso'",
            "name eq null",
        ] {
            let parsed = odata::parse_filter(filter).unwrap();
            assert!(
                indexed_candidates(table(&dv), &parsed).is_none(),
                "{filter}"
            );
        }
    }

    #[test]
    fn cookies_round_trip() {
        let c = PageCookie {
            m: Some(5),
            id: Some("x".into()),
            off: None,
            tv: None,
            dv: None,
            page: 2,
        };
        let s = encode_cookie(&c);
        assert!(s.starts_with("<cookie pagenumber=\"2\""));
        let back = decode_cookie(&s).unwrap();
        assert_eq!(back.m, Some(5));
        assert_eq!(back.id.as_deref(), Some("x"));
    }
}
