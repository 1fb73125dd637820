//! Writes: create, update and alternate-key upsert with the conditional
//! headers (`If-Match`, `If-None-Match`), type checks of every column and
//! `@odata.bind` references.

use axum::http::{StatusCode, header};
use chrono::{NaiveDate, SubsecRound};
use serde_json::{Map, Value, json};

use super::http::{Ctx, DvResponse, bad};
use super::key::{KeySpec, parse_key, split_resource};
use super::query::select_list;
use super::schema::{ColType, Column, TableDef, opp_state_of_status};
use super::store::{DvState, Row, Undo, etag_of, fmt_dt};

/// Reads and checks one value for a column; Err is (code, message).
pub(super) fn coerce(
    def: &TableDef,
    c: &Column,
    v: &Value,
) -> Result<Value, (&'static str, String)> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let conv = |edm: &str| {
        (
            "0x80048d19",
            format!(
                "Error identified in Payload provided by the user for Entity :'{}'. InnerException : Microsoft.OData.ODataException: Cannot convert the literal '{}' to the expected type '{edm}'.",
                def.set,
                match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            ),
        )
    };
    let range = |n: &dyn std::fmt::Display| {
        (
            "0x80044331",
            format!(
                "A validation error occurred. The value {n} of '{}' on record of type '{}' is outside the valid range.",
                c.name, def.logical
            ),
        )
    };
    match c.ty {
        ColType::Guid => match v.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()) {
            Some(u) => Ok(json!(u.to_string())),
            None => Err(conv("Edm.Guid")),
        },
        ColType::Text(max) => match v.as_str() {
            Some(s) if s.chars().count() > max => Err((
                "0x80044331",
                format!(
                    "A validation error occurred. The length of the '{}' attribute of the '{}' entity exceeded the maximum allowed length of '{max}'.",
                    c.name, def.logical
                ),
            )),
            Some(s) => Ok(json!(s)),
            None => Err(conv("Edm.String")),
        },
        ColType::Money => match v.as_f64() {
            Some(n) if n.abs() <= 922_337_203_685_477.0 => Ok(json!(n)),
            Some(n) => Err(range(&n)),
            None => Err(conv("Edm.Decimal")),
        },
        ColType::Int { min, max } => match v.as_i64() {
            Some(n) if n >= min && n <= max => Ok(json!(n)),
            Some(n) => Err(range(&n)),
            None => Err(conv("Edm.Int32")),
        },
        ColType::Bool => v
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| conv("Edm.Boolean")),
        ColType::DateTime => match v.as_str().and_then(crate::datetime::parse) {
            Some(t) => Ok(json!(fmt_dt(t.trunc_subsecs(0)))),
            None => Err(conv("Edm.DateTimeOffset")),
        },
        ColType::DateOnly => match v.as_str() {
            Some(s) => match NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d") {
                Ok(d) => Ok(json!(d.format("%Y-%m-%d").to_string())),
                Err(_) => Err(conv("Edm.Date")),
            },
            None => Err(conv("Edm.Date")),
        },
        ColType::Choice(opts) => match v.as_i64() {
            Some(n) if opts.iter().any(|(k, _)| *k == n) => Ok(json!(n)),
            Some(n) => Err(range(&n)),
            None => Err(conv("Edm.Int32")),
        },
        ColType::Lookup => Err((
            "0x80048d19",
            format!("The property '{}' is read-only.", c.name),
        )),
    }
}

impl DvState {
    /// Reads a request body into column values, resolving `@odata.bind`.
    pub(super) fn read_body(
        &self,
        t: usize,
        body: &[u8],
        creating: bool,
    ) -> Result<Map<String, Value>, DvResponse> {
        let def = &self.tables[t].def;
        let obj: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(bad(
                    "0x80048d19",
                    format!(
                        "Error identified in Payload provided by the user for Entity :'{}'. The payload must be a JSON object.",
                        def.set
                    ),
                ));
            }
            Err(e) => {
                return Err(bad(
                    "0x80048d19",
                    format!(
                        "Error identified in Payload provided by the user for Entity :'{}'. InnerException : {e}",
                        def.set
                    ),
                ));
            }
        };
        let mut out = Map::new();
        for (k, v) in obj {
            if k == "@odata.type" || k == "@odata.etag" || k == "@odata.context" {
                continue;
            }
            if let Some(nav) = k.strip_suffix("@odata.bind") {
                let Some(np) = def.nav.iter().find(|n| n.name == nav) else {
                    return Err(bad(
                        "0x80048d19",
                        format!(
                            "Error identified in Payload provided by the user for Entity :'{}'. An undeclared property '{nav}' which only has property annotations in the payload but no property value was found in the payload.",
                            def.set
                        ),
                    ));
                };
                if v.is_null() {
                    out.insert(np.column.to_owned(), Value::Null);
                    continue;
                }
                let Some(reference) = v.as_str() else {
                    return Err(bad(
                        "0x80048d19",
                        format!("The value of '{k}' must be an entity URL."),
                    ));
                };
                let target_id = self.resolve_reference(np.target_set, reference)?;
                out.insert(np.column.to_owned(), json!(target_id));
                if np.column == "_customerid_value" {
                    out.insert("_customerid_type".into(), json!(np.target_logical));
                }
                continue;
            }
            let Some(c) = def.column(&k) else {
                return Err(bad(
                    "0x80048d19",
                    format!(
                        "Error identified in Payload provided by the user for Entity :'{}', For more information on this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : Microsoft.OData.ODataException: Does not support untyped value in non-open type. Property: '{k}'.",
                        def.set
                    ),
                ));
            };
            if c.system {
                if matches!(c.ty, ColType::Lookup) {
                    return Err(bad(
                        "0x80048d19",
                        format!(
                            "The property '{k}' cannot be set: use the navigation property with @odata.bind."
                        ),
                    ));
                }
                continue;
            }
            if c.name == def.pk && !creating {
                continue;
            }
            let val = coerce(def, c, &v).map_err(|(code, m)| bad(code, m))?;
            out.insert(k, val);
        }
        Ok(out)
    }

    pub(super) fn resolve_reference(
        &self,
        target_set: &str,
        reference: &str,
    ) -> Result<String, DvResponse> {
        let r = reference.trim();
        let r = r
            .rsplit_once("/api/data/")
            .map(|(_, x)| x.split_once('/').map_or(x, |(_, y)| y))
            .unwrap_or(r);
        let r = r.trim_start_matches('/');
        let bad_ref = || {
            bad(
                "0x80060888",
                format!("The URL '{reference}' in the @odata.bind annotation is not valid."),
            )
        };
        let (set, key, _) = split_resource(r).map_err(|_| bad_ref())?;
        if set != target_set {
            return Err(bad_ref());
        }
        let t = self.table_index(&set).ok_or_else(bad_ref)?;
        let key = parse_key(&self.tables[t].def, &key.ok_or_else(bad_ref)?)
            .map_err(|m| bad("0x80060888", m))?;
        self.resolve(t, &key).ok_or_else(|| {
            let def = &self.tables[t].def;
            let shown = match &key {
                KeySpec::Id(id) => id.clone(),
                KeySpec::Alt(c, v) => format!("{c}='{v}'"),
            };
            DvResponse::err(
                StatusCode::NOT_FOUND,
                "0x80040217",
                format!("{} With Id = {shown} Does Not Exist", def.logical),
            )
        })
    }

    pub(super) fn check_state(
        &self,
        t: usize,
        values: &Map<String, Value>,
        existing: Option<&Row>,
    ) -> Result<(), DvResponse> {
        let def = &self.tables[t].def;
        if def.logical != "opportunity" {
            return Ok(());
        }
        let cur_state = existing
            .and_then(|r| r.values.get("statecode"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let new_state = values.get("statecode").and_then(Value::as_i64);
        let new_status = values.get("statuscode").and_then(Value::as_i64);
        if let Some(s) = new_state
            && s != 0
        {
            return Err(bad(
                "0x80040203",
                "An opportunity is closed with the WinOpportunity or LoseOpportunity action, not by setting statecode.",
            ));
        }
        if cur_state != 0 && new_state != Some(0) {
            return Err(bad(
                "0x80040203",
                "The opportunity is closed (won or lost) and cannot be updated. Reopen it first by setting statecode to 0.",
            ));
        }
        if let Some(st) = new_status
            && opp_state_of_status(st) != Some(0)
        {
            return Err(bad(
                "0x80044331",
                format!(
                    "A validation error occurred. The value {st} of 'statuscode' on record of type 'opportunity' is outside the valid range for an open opportunity."
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn key_conflict(
        &self,
        t: usize,
        values: &Map<String, Value>,
        own_id: Option<&str>,
    ) -> Option<DvResponse> {
        let table = &self.tables[t];
        for (_, colname) in &table.def.keys {
            if let Some(Value::String(k)) = values.get(colname)
                && let Some(other) = table.find_by_key(colname, k)
                && Some(other.as_str()) != own_id
            {
                return Some(DvResponse::err(
                    StatusCode::PRECONDITION_FAILED,
                    "0x80040237",
                    format!(
                        "A record that has the attribute values {colname}='{k}' already exists. The entity key requires that this set of attributes contains unique values."
                    ),
                ));
            }
        }
        None
    }

    pub(super) fn entity_url(&self, ctx: &Ctx, set: &str, id: &str) -> String {
        format!("{}/{set}({id})", ctx.service_root)
    }

    pub(super) fn written(
        &self,
        ctx: &Ctx,
        t: usize,
        id: &str,
        created: bool,
        params: &[(String, String)],
        entity_url: String,
    ) -> DvResponse {
        let def = &self.tables[t].def;
        let Some(row) = self.tables[t].get(id) else {
            return DvResponse::err(StatusCode::INTERNAL_SERVER_ERROR, "", "row vanished");
        };
        let etag = etag_of(row.version);
        if ctx.prefer.representation {
            let select = match select_list(def, params) {
                Ok(s) => s,
                Err(r) => return r,
            };
            let mut v = self.render(t, row, &select, ctx.prefer.annotations.is_some());
            if let Some(m) = v.as_object_mut() {
                let cols = select
                    .as_ref()
                    .map(|s| format!("({})", s.join(",")))
                    .unwrap_or_default();
                m.insert(
                    "@odata.context".into(),
                    json!(format!(
                        "{}/$metadata#{}{cols}/$entity",
                        ctx.service_root, def.set
                    )),
                );
            }
            DvResponse::json(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                v,
            )
            .header("ETag", etag)
            .header("Preference-Applied", "return=representation")
        } else {
            DvResponse::empty(StatusCode::NO_CONTENT)
                .header("OData-EntityId", entity_url)
                .header("ETag", etag)
        }
    }

    pub(super) fn create(
        &mut self,
        ctx: &Ctx,
        t: usize,
        params: &[(String, String)],
        body: &[u8],
        undo: Option<&mut Undo>,
    ) -> DvResponse {
        if self.tables[t].def.logical == "transactioncurrency" {
            return DvResponse::err(
                StatusCode::FORBIDDEN,
                "0x80040220",
                "The simulator's currencies are read-only.",
            );
        }
        let mut values = match self.read_body(t, body, true) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if let Err(r) = self.check_state(t, &values, None) {
            return r;
        }
        let pk = self.tables[t].def.pk;
        let id = match values
            .remove(pk)
            .and_then(|v| v.as_str().map(str::to_owned))
        {
            Some(id) if self.tables[t].rows.contains_key(&id) => {
                return DvResponse::err(
                    StatusCode::PRECONDITION_FAILED,
                    "0x80040237",
                    "Cannot insert duplicate key.",
                );
            }
            Some(id) => id,
            None => self.new_guid(),
        };
        if let Some(r) = self.key_conflict(t, &values, None) {
            return r;
        }
        self.apply_defaults(t, &mut values);
        self.store(t, &id, values, ctx.now, undo);
        let set = self.tables[t].def.set;
        let url = self.entity_url(ctx, set, &id);
        self.written(ctx, t, &id, true, params, url)
    }

    pub(super) fn apply_defaults(&self, t: usize, values: &mut Map<String, Value>) {
        let def = &self.tables[t].def;
        let defaults: &[(&str, Value)] = match def.logical {
            "opportunity" => &[
                ("statecode", json!(0)),
                ("statuscode", json!(1)),
                ("salesstage", json!(0)),
                ("closeprobability", json!(10)),
            ],
            "account" | "contact" => &[("statecode", json!(0)), ("statuscode", json!(1))],
            _ => &[],
        };
        for (k, v) in defaults {
            if values.get(*k).is_none_or(Value::is_null) {
                values.insert((*k).to_owned(), v.clone());
            }
        }
        if def.columns.iter().any(|c| c.name == "_ownerid_value")
            && !values.contains_key("_ownerid_value")
        {
            values.insert("_ownerid_value".into(), json!(self.user_id));
        }
    }

    pub(super) fn upsert(
        &mut self,
        ctx: &Ctx,
        t: usize,
        k: &KeySpec,
        params: &[(String, String)],
        body: &[u8],
        undo: Option<&mut Undo>,
    ) -> DvResponse {
        let header = |n: header::HeaderName| {
            ctx.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.eq_ignore_ascii_case("null"))
        };
        let if_match = header(header::IF_MATCH);
        let if_none_match = header(header::IF_NONE_MATCH);
        let existing = self.resolve(t, k);
        if let Some(m) = if_match {
            let Some(id) = &existing else {
                return self.missing(t, k);
            };
            if m != "*" {
                let cur = self.tables[t]
                    .get(id)
                    .map(|r| etag_of(r.version))
                    .unwrap_or_default();
                if !m.split(',').any(|x| x.trim() == cur) {
                    return DvResponse::err(
                        StatusCode::PRECONDITION_FAILED,
                        "0x80060882",
                        "The version of the existing record doesn't match the RowVersion property provided.",
                    );
                }
            }
        }
        if if_none_match == Some("*") && existing.is_some() {
            return DvResponse::err(
                StatusCode::PRECONDITION_FAILED,
                "0x80060892",
                "A record with matching key values already exists.",
            );
        }
        if self.tables[t].def.logical == "transactioncurrency" {
            return DvResponse::err(
                StatusCode::FORBIDDEN,
                "0x80040220",
                "The simulator's currencies are read-only.",
            );
        }
        let mut values = match self.read_body(t, body, existing.is_none()) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let set = self.tables[t].def.set;
        let url = match k {
            KeySpec::Id(id) => self.entity_url(ctx, set, id),
            KeySpec::Alt(c, v) => format!(
                "{}/{set}({c}='{}')",
                ctx.service_root,
                v.replace('\'', "''")
            ),
        };
        match existing {
            Some(id) => {
                let Some(row) = self.tables[t].get(&id).cloned() else {
                    return self.missing(t, k);
                };
                if let Err(r) = self.check_state(t, &values, Some(&row)) {
                    return r;
                }
                if let KeySpec::Alt(c, _) = k {
                    values.remove(c);
                }
                if let Some(r) = self.key_conflict(t, &values, Some(&id)) {
                    return r;
                }
                let mut merged = row.values.clone();
                for (key, v) in values {
                    merged.insert(key, v);
                }
                self.store(t, &id, merged, ctx.now, undo);
                self.written(ctx, t, &id, false, params, url)
            }
            None => {
                if let Err(r) = self.check_state(t, &values, None) {
                    return r;
                }
                let id = match k {
                    KeySpec::Id(id) => id.clone(),
                    KeySpec::Alt(c, v) => {
                        values.entry(c.clone()).or_insert_with(|| json!(v));
                        match values
                            .remove(self.tables[t].def.pk)
                            .and_then(|v| v.as_str().map(str::to_owned))
                        {
                            Some(id) => id,
                            None => self.new_guid(),
                        }
                    }
                };
                if let Some(r) = self.key_conflict(t, &values, None) {
                    return r;
                }
                self.apply_defaults(t, &mut values);
                self.store(t, &id, values, ctx.now, undo);
                self.written(ctx, t, &id, true, params, url)
            }
        }
    }
}
