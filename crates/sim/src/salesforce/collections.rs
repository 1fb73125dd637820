//! sObject Collections: create, update and upsert of up to 200 records,
//! all-or-none or each on its own.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::http::SfErr;
use super::schema::normalize_id;
use super::store::{Record, SfState};

pub(super) const MAX_COLLECTION: usize = 200;

pub(super) fn check_type(m: &Map<String, Value>, want: &str) -> Result<(), SfErr> {
    match m
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
    {
        None => Err(SfErr::new(
            "INVALID_TYPE",
            "Must send a concrete entity type.",
        )),
        Some(t) if !t.eq_ignore_ascii_case(want) => Err(SfErr::new(
            "INVALID_TYPE",
            format!("Record type {t} does not match the sObject type {want} of the request URI."),
        )),
        Some(_) => Ok(()),
    }
}

pub(super) fn collection_body(body: &Value) -> Result<(bool, &Vec<Value>), SfErr> {
    let records = body
        .get("records")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            SfErr::new(
                "JSON_PARSER_ERROR",
                "The request body must be an object with a records array.",
            )
        })?;
    if records.len() > MAX_COLLECTION {
        return Err(SfErr::new(
            "EXCEEDED_ID_LIMIT",
            format!(
                "record limit reached. cannot submit more than {MAX_COLLECTION} records into this call"
            ),
        ));
    }
    if records.is_empty() {
        return Err(SfErr::new("INVALID_INPUT", "The records array is empty."));
    }
    let all_or_none = body
        .get("allOrNone")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((all_or_none, records))
}

impl SfState {
    /// sObject Collections upsert by External ID.
    pub(super) fn collection_upsert(
        &mut self,
        o: usize,
        ext: &str,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value, (StatusCode, SfErr)> {
        let bad = |e: SfErr| (StatusCode::BAD_REQUEST, e);
        let obj = &self.objects[o];
        let Some(ext_field) = obj
            .field(ext)
            .filter(|f| f.external_id)
            .map(|f| f.name.clone())
        else {
            return Err(bad(SfErr::new(
                "INVALID_FIELD",
                format!("Provided external ID field does not exist or is not accessible: {ext}"),
            )));
        };
        let (all_or_none, records) = collection_body(body).map_err(bad)?;
        let mut results: Vec<Result<(String, bool), SfErr>> = Vec::new();
        let mut undo: Vec<(String, Option<Map<String, Value>>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for rec in records {
            let r = (|| -> Result<(String, bool), SfErr> {
                let m = rec.as_object().ok_or_else(|| {
                    SfErr::new("JSON_PARSER_ERROR", "each record must be a JSON object")
                })?;
                check_type(m, self.objects[o].name)?;
                let key = m
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&ext_field))
                    .and_then(|(_, v)| {
                        v.as_str()
                            .map(str::to_owned)
                            .or_else(|| v.as_i64().map(|n| n.to_string()))
                    })
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        SfErr::new("MISSING_ARGUMENT", format!("{ext_field} not specified"))
                    })?;
                if !seen.insert(key.to_ascii_lowercase()) {
                    return Err(SfErr::new(
                        "DUPLICATE_EXTERNAL_ID",
                        format!("Duplicate external id specified: {key}"),
                    )
                    .on(&ext_field));
                }
                if m.keys().any(|k| k.eq_ignore_ascii_case("Id")) {
                    return Err(SfErr::new(
                        "INVALID_FIELD",
                        "Id is not allowed in an upsert by external ID",
                    )
                    .on("Id"));
                }
                let existing = self.objects[o].find_ext(&ext_field, &key);
                let values = self.check_fields(o, m, existing.is_none(), &[])?;
                let before = existing
                    .as_ref()
                    .and_then(|id| self.objects[o].records.get(id).cloned());
                let (id, created) = self.write(o, existing.as_deref(), values, now)?;
                undo.push((id.clone(), before));
                Ok((id, created))
            })();
            results.push(r);
        }
        let any_failed = results.iter().any(Result::is_err);
        if all_or_none && any_failed {
            for (id, before) in undo.into_iter().rev() {
                self.objects[o].unindex(&id);
                if let Some(b) = before {
                    self.objects[o].index(id, b);
                }
            }
            return Ok(Value::Array(
                results
                    .into_iter()
                    .map(|r| match r {
                        Ok(_) => json!({"success": false, "created": false, "errors": [SfErr::new("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all records were valid and the request was using AllOrNone header").item()]}),
                        Err(e) => json!({"success": false, "created": false, "errors": [e.item()]}),
                    })
                    .collect(),
            ));
        }
        Ok(Value::Array(
            results
                .into_iter()
                .map(|r| match r {
                    Ok((id, created)) => {
                        json!({"id": id, "success": true, "errors": [], "created": created})
                    }
                    Err(e) => json!({"success": false, "created": false, "errors": [e.item()]}),
                })
                .collect(),
        ))
    }

    /// sObject Collections create (POST) or update by Id (PATCH).
    pub(super) fn collection_write(
        &mut self,
        body: &Value,
        creating: bool,
        now: DateTime<Utc>,
    ) -> Result<Value, (StatusCode, SfErr)> {
        let bad = |e: SfErr| (StatusCode::BAD_REQUEST, e);
        let (all_or_none, records) = collection_body(body).map_err(bad)?;
        let mut results = Vec::new();
        let mut undo: Vec<(usize, String, Option<Record>)> = Vec::new();
        for rec in records {
            let r = (|| -> Result<String, SfErr> {
                let m = rec.as_object().ok_or_else(|| {
                    SfErr::new("JSON_PARSER_ERROR", "each record must be a JSON object")
                })?;
                let ty = m
                    .get("attributes")
                    .and_then(|a| a.get("type"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        SfErr::new("INVALID_TYPE", "Must send a concrete entity type.")
                    })?;
                let o = self.obj_index(ty).ok_or_else(|| {
                    SfErr::new(
                        "INVALID_TYPE",
                        format!("sObject type '{ty}' is not supported."),
                    )
                })?;
                let id = if creating {
                    if m.keys().any(|k| k.eq_ignore_ascii_case("Id")) {
                        return Err(SfErr::new(
                            "INVALID_FIELD",
                            "Records in a create request must not have an Id",
                        )
                        .on("Id"));
                    }
                    None
                } else {
                    let raw = m
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("Id"))
                        .and_then(|(_, v)| v.as_str())
                        .ok_or_else(|| {
                            SfErr::new("MISSING_ARGUMENT", "Id not specified in an update call")
                        })?;
                    let id = normalize_id(raw).ok_or_else(|| {
                        SfErr::new(
                            "MALFORMED_ID",
                            format!("{ty} ID: id value of incorrect type: {raw}"),
                        )
                        .on("Id")
                    })?;
                    if !self.objects[o].records.contains_key(&id) {
                        return Err(SfErr::new("ENTITY_IS_DELETED", "entity is deleted").on("Id"));
                    }
                    Some(id)
                };
                let values = self.check_fields(o, m, creating, &["Id"])?;
                let before = id
                    .as_ref()
                    .and_then(|i| self.objects[o].records.get(i).cloned());
                let (id, _) = self.write(o, id.as_deref(), values, now)?;
                undo.push((o, id.clone(), before));
                Ok(id)
            })();
            results.push(r);
        }
        let any_failed = results.iter().any(Result::is_err);
        if all_or_none && any_failed {
            for (o, id, before) in undo.into_iter().rev() {
                self.objects[o].unindex(&id);
                if let Some(b) = before {
                    self.objects[o].index(id, b);
                }
            }
        }
        let rolled = all_or_none && any_failed;
        Ok(Value::Array(
            results
                .into_iter()
                .map(|r| match r {
                    Ok(_) if rolled => json!({"success": false, "errors": [SfErr::new("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all records were valid and the request was using AllOrNone header").item()]}),
                    Ok(id) => json!({"id": id, "success": true, "errors": []}),
                    Err(e) => json!({"success": false, "errors": [e.item()]}),
                })
                .collect(),
        ))
    }
}
