//! The SOQL subset: evaluation, ordering, and `nextRecordsUrl` paging.

use axum::http::{HeaderMap, StatusCode};
use chrono::{NaiveDate, SubsecRound};
use serde_json::{Map, Value, json};

use crate::soql::{self, Cond, Op, SoqlValue};

use super::http::SfErr;
use super::schema::{FType, parse_sf_datetime};
use super::store::{Cursor, SObject, SfState};

pub(super) const DEFAULT_BATCH: usize = 2000;

pub(super) const CURSOR_LIMIT: usize = 2000;

/// Checks that every compared value has the field's type.
pub(super) fn bind(obj: &SObject, cond: &Cond) -> Result<(), SfErr> {
    for (field, values) in cond.leaves() {
        let Some(fl) = obj.field(field) else {
            return Err(SfErr::new(
                "INVALID_FIELD",
                format!(
                    "No such column '{field}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.",
                    obj.name
                ),
            ));
        };
        for v in values {
            let ok = matches!(
                (&fl.ty, v),
                (_, SoqlValue::Null)
                    | (FType::DateTime, SoqlValue::DateTime(_))
                    | (FType::Date, SoqlValue::Date(_))
                    | (
                        FType::Currency | FType::Percent | FType::Int,
                        SoqlValue::Number(_)
                    )
                    | (FType::Bool, SoqlValue::Bool(_))
                    | (
                        FType::Str(_)
                            | FType::TextArea(_)
                            | FType::Email
                            | FType::Phone
                            | FType::Url
                            | FType::Picklist { .. }
                            | FType::Id
                            | FType::Reference(_),
                        SoqlValue::String(_)
                    )
            );
            if !ok {
                let ty = fl.ty.soap_type().0;
                let hint = match fl.ty {
                    FType::DateTime
                    | FType::Date
                    | FType::Bool
                    | FType::Currency
                    | FType::Percent
                    | FType::Int => " and should not be enclosed in quotes",
                    _ => " and should be enclosed in quotes",
                };
                return Err(SfErr::new(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    format!(
                        "value of filter criterion for field '{}' must be of type {ty}{hint}",
                        fl.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn cmp_sf(actual: &Value, lit: &SoqlValue) -> Option<std::cmp::Ordering> {
    match (actual, lit) {
        (Value::Null, SoqlValue::Null) => Some(std::cmp::Ordering::Equal),
        (Value::Null, _) | (_, SoqlValue::Null) => None,
        (Value::String(s), SoqlValue::String(l)) => Some(s.to_lowercase().cmp(&l.to_lowercase())),
        (Value::String(s), SoqlValue::DateTime(t)) => parse_sf_datetime(s).map(|a| a.cmp(t)),
        (Value::String(s), SoqlValue::Date(d)) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .map(|a| a.cmp(d)),
        (Value::Number(n), SoqlValue::Number(l)) => n.as_f64().and_then(|a| a.partial_cmp(l)),
        (Value::Bool(b), SoqlValue::Bool(l)) => Some(b.cmp(l)),
        _ => None,
    }
}

pub(super) fn eval(rec: &Map<String, Value>, obj: &SObject, c: &Cond) -> bool {
    let get = |f: &str| {
        obj.field(f)
            .and_then(|fl| rec.get(&fl.name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    match c {
        Cond::And(a, b) => eval(rec, obj, a) && eval(rec, obj, b),
        Cond::Or(a, b) => eval(rec, obj, a) || eval(rec, obj, b),
        Cond::Not(a) => !eval(rec, obj, a),
        Cond::Cmp { field, op, value } => {
            let actual = get(field);
            if matches!(value, SoqlValue::Null) {
                return match op {
                    Op::Eq => actual.is_null(),
                    Op::Ne => !actual.is_null(),
                    _ => false,
                };
            }
            match cmp_sf(&actual, value) {
                None => *op == Op::Ne && !actual.is_null(),
                Some(o) => match op {
                    Op::Eq => o.is_eq(),
                    Op::Ne => o.is_ne(),
                    Op::Lt => o.is_lt(),
                    Op::Le => o.is_le(),
                    Op::Gt => o.is_gt(),
                    Op::Ge => o.is_ge(),
                },
            }
        }
        Cond::In {
            field,
            values,
            negated,
        } => {
            let actual = get(field);
            let hit = values.iter().any(|v| {
                cmp_sf(&actual, v).is_some_and(|o| o.is_eq())
                    || (v == &SoqlValue::Null && actual.is_null())
            });
            hit != *negated
        }
        Cond::Like { field, pattern } => {
            get(field).as_str().is_some_and(|s| soql::like(s, pattern))
        }
    }
}

pub(super) fn order_cmp(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    obj: &SObject,
    order: &[soql::OrderItem],
) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for o in order {
        let name = obj
            .field(&o.field)
            .map(|f| f.name.as_str())
            .unwrap_or(&o.field);
        let (x, y) = (
            a.get(name).unwrap_or(&Value::Null),
            b.get(name).unwrap_or(&Value::Null),
        );
        let ord = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if o.nulls_last {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, true) => {
                if o.nulls_last {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            _ => {
                let base = match (x, y) {
                    (Value::Number(p), Value::Number(q)) => p
                        .as_f64()
                        .partial_cmp(&q.as_f64())
                        .unwrap_or(Ordering::Equal),
                    (Value::String(p), Value::String(q)) => {
                        match (parse_sf_datetime(p), parse_sf_datetime(q)) {
                            (Some(s), Some(t)) if p.contains('T') => s.cmp(&t),
                            _ => p.to_lowercase().cmp(&q.to_lowercase()),
                        }
                    }
                    (Value::Bool(p), Value::Bool(q)) => p.cmp(q),
                    _ => Ordering::Equal,
                };
                if o.desc { base.reverse() } else { base }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    let ia = a.get("Id").and_then(Value::as_str).unwrap_or("");
    let ib = b.get("Id").and_then(Value::as_str).unwrap_or("");
    ia.cmp(ib)
}

pub(super) fn batch_size(headers: &HeaderMap) -> usize {
    headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',').find_map(|p| {
                p.trim()
                    .strip_prefix("batchSize=")
                    .and_then(|n| n.trim().parse::<usize>().ok())
            })
        })
        .map(|n| n.clamp(200, DEFAULT_BATCH))
        .unwrap_or(DEFAULT_BATCH)
}

impl SfState {
    pub(super) fn query(
        &mut self,
        q: &str,
        version: &str,
        batch: usize,
    ) -> Result<Value, (StatusCode, SfErr)> {
        let bad = |e: SfErr| (StatusCode::BAD_REQUEST, e);
        let parsed = soql::parse(q).map_err(|e| bad(SfErr::new("MALFORMED_QUERY", e.0)))?;
        let o = self.obj_index(&parsed.object).ok_or_else(|| {
            bad(SfErr::new(
                "INVALID_TYPE",
                format!("sObject type '{}' is not supported.", parsed.object),
            ))
        })?;
        let obj = &self.objects[o];
        let mut fields = Vec::new();
        for fname in &parsed.fields {
            let fl = obj.field(fname).ok_or_else(|| {
                bad(SfErr::new(
                    "INVALID_FIELD",
                    format!("No such column '{fname}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.", obj.name),
                ))
            })?;
            fields.push(fl.name.clone());
        }
        for o in &parsed.order {
            if obj.field(&o.field).is_none() {
                return Err(bad(SfErr::new(
                    "INVALID_FIELD",
                    format!("No such column '{}' on entity '{}'.", o.field, obj.name),
                )));
            }
        }
        if let Some(c) = &parsed.filter {
            bind(obj, c).map_err(bad)?;
        }
        let lower = parsed
            .filter
            .as_ref()
            .and_then(|c| c.lower_bound("SystemModstamp"));
        let mut ids: Vec<&String> = match lower {
            Some(t) => obj
                .by_modstamp
                .range((
                    std::ops::Bound::Included((t.trunc_subsecs(3), String::new())),
                    std::ops::Bound::Unbounded,
                ))
                .map(|(_, id)| id)
                .filter(|id| {
                    obj.records
                        .get(*id)
                        .is_some_and(|r| parsed.filter.as_ref().is_none_or(|c| eval(r, obj, c)))
                })
                .collect(),
            None => obj
                .records
                .iter()
                .filter(|(_, r)| parsed.filter.as_ref().is_none_or(|c| eval(r, obj, c)))
                .map(|(id, _)| id)
                .collect(),
        };
        if !parsed.order.is_empty() {
            let modstamp_only = parsed.order.len() == 1
                && parsed.order[0].field.eq_ignore_ascii_case("SystemModstamp")
                && !parsed.order[0].desc
                && lower.is_some();
            if !modstamp_only {
                ids.sort_by(|a, b| {
                    order_cmp(&obj.records[*a], &obj.records[*b], obj, &parsed.order)
                });
            }
        }
        let offset = parsed.offset.unwrap_or(0);
        let ids: Vec<String> = ids
            .into_iter()
            .skip(offset)
            .take(parsed.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        let total = ids.len();
        let first: Vec<Value> = ids
            .iter()
            .take(batch)
            .filter_map(|id| self.render(o, id, &fields, version))
            .collect();
        let mut body = json!({"totalSize": total, "done": total <= batch, "records": first});
        if total > batch {
            let loc = format!("01gSIM{:010}", self.next_cursor);
            self.next_cursor += 1;
            self.cursors.insert(
                loc.clone(),
                Cursor {
                    object: self.objects[o].name,
                    fields,
                    ids,
                    batch,
                },
            );
            self.cursor_order.push_back(loc.clone());
            while self.cursor_order.len() > CURSOR_LIMIT {
                if let Some(old) = self.cursor_order.pop_front() {
                    self.cursors.remove(&old);
                }
            }
            body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{loc}-{batch}"));
        }
        Ok(body)
    }

    pub(super) fn query_more(
        &self,
        locator: &str,
        version: &str,
    ) -> Result<Value, (StatusCode, SfErr)> {
        let invalid = || {
            (
                StatusCode::BAD_REQUEST,
                SfErr::new("INVALID_QUERY_LOCATOR", "invalid query locator"),
            )
        };
        let (loc, off) = locator.rsplit_once('-').ok_or_else(invalid)?;
        let off: usize = off.parse().map_err(|_| invalid())?;
        let c = self.cursors.get(loc).ok_or_else(invalid)?;
        let o = self.obj_index(c.object).ok_or_else(invalid)?;
        if off > c.ids.len() {
            return Err(invalid());
        }
        let end = (off + c.batch).min(c.ids.len());
        let records: Vec<Value> = c.ids[off..end]
            .iter()
            .filter_map(|id| self.render(o, id, &c.fields, version))
            .collect();
        let mut body =
            json!({"totalSize": c.ids.len(), "done": end >= c.ids.len(), "records": records});
        if end < c.ids.len() {
            body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{loc}-{end}"));
        }
        Ok(body)
    }
}
