//! One record by id or External ID: get, create, update, upsert, delete.

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::http::{SfErr, no_content, sf_json};
use super::schema::normalize_id;
use super::store::SfState;

#[allow(clippy::too_many_arguments)]
pub(super) fn sobject_op(
    sf: &mut SfState,
    o: usize,
    method: &Method,
    rest: &[&str],
    params: &HashMap<String, String>,
    version: &str,
    json_body: impl Fn() -> Result<Value, SfErr>,
    now: DateTime<Utc>,
) -> Result<Response, (StatusCode, SfErr)> {
    let bad = |e: SfErr| (StatusCode::BAD_REQUEST, e);
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            SfErr::new("NOT_FOUND", "The requested resource does not exist"),
        )
    };
    let as_obj = |v: Value| -> Result<Map<String, Value>, (StatusCode, SfErr)> {
        match v {
            Value::Object(m) => Ok(m),
            _ => Err(bad(SfErr::new(
                "JSON_PARSER_ERROR",
                "The request body must be a JSON object.",
            ))),
        }
    };
    let fields_param = |sf: &SfState| -> Result<Vec<String>, (StatusCode, SfErr)> {
        match params.get("fields") {
            None => Ok(sf.all_fields(o)),
            Some(list) => list
                .split(',')
                .map(|f| {
                    sf.objects[o]
                        .field(f.trim())
                        .map(|x| x.name.clone())
                        .ok_or_else(|| {
                            bad(SfErr::new(
                                "INVALID_FIELD",
                                format!(
                                    "No such column '{}' on sobject of type {}",
                                    f.trim(),
                                    sf.objects[o].name
                                ),
                            ))
                        })
                })
                .collect(),
        }
    };
    match (method.clone(), rest) {
        (Method::GET, []) => Ok(sf_json(
            StatusCode::OK,
            &json!({"objectDescribe": {"name": sf.objects[o].name, "keyPrefix": sf.objects[o].prefix}, "recentItems": []}),
        )),
        (Method::POST, []) => {
            let m = as_obj(json_body().map_err(bad)?)?;
            if m.keys().any(|k| k.eq_ignore_ascii_case("Id")) {
                return Err(bad(SfErr::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    "Unable to create/update fields: Id.",
                )
                .on("Id")));
            }
            let values = sf.check_fields(o, &m, true, &[]).map_err(bad)?;
            let (id, _) = sf.write(o, None, values, now).map_err(bad)?;
            Ok(sf_json(
                StatusCode::CREATED,
                &json!({"id": id, "success": true, "errors": []}),
            ))
        }
        (m, [raw_id]) => {
            let id = normalize_id(raw_id)
                .filter(|id| sf.objects[o].records.contains_key(id))
                .ok_or_else(not_found)?;
            match m {
                Method::GET => {
                    let fields = fields_param(sf)?;
                    sf.render(o, &id, &fields, version)
                        .map(|v| sf_json(StatusCode::OK, &v))
                        .ok_or_else(not_found)
                }
                Method::PATCH => {
                    let body = as_obj(json_body().map_err(bad)?)?;
                    let values = sf.check_fields(o, &body, false, &[]).map_err(bad)?;
                    sf.write(o, Some(&id), values, now).map_err(bad)?;
                    Ok(no_content())
                }
                Method::DELETE => {
                    if !sf.objects[o].writable {
                        return Err(bad(SfErr::new(
                            "INVALID_TYPE_FOR_OPERATION",
                            "entity type does not support delete",
                        )));
                    }
                    sf.objects[o].unindex(&id);
                    Ok(no_content())
                }
                _ => Err((
                    StatusCode::METHOD_NOT_ALLOWED,
                    SfErr::new(
                        "METHOD_NOT_ALLOWED",
                        format!("HTTP Method '{m}' not allowed. Allowed are GET,PATCH,DELETE"),
                    ),
                )),
            }
        }
        (m, [ext, value]) => {
            let Some(ext_field) = sf.objects[o]
                .field(ext)
                .filter(|f| f.external_id || f.name == "Id")
                .map(|f| f.name.clone())
            else {
                return Err(not_found());
            };
            let existing = if ext_field == "Id" {
                normalize_id(value).filter(|id| sf.objects[o].records.contains_key(id))
            } else {
                sf.objects[o].find_ext(&ext_field, value)
            };
            match m {
                Method::GET => {
                    let id = existing.ok_or_else(not_found)?;
                    let fields = fields_param(sf)?;
                    sf.render(o, &id, &fields, version)
                        .map(|v| sf_json(StatusCode::OK, &v))
                        .ok_or_else(not_found)
                }
                Method::PATCH => {
                    let body = as_obj(json_body().map_err(bad)?)?;
                    if let Some((_, v)) = body
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(&ext_field))
                        && v.as_str() != Some(value)
                    {
                        return Err(bad(SfErr::new("INVALID_FIELD", format!("The external ID field {ext_field} in the body does not match the value in the URL")).on(&ext_field)));
                    }
                    if params.get("updateOnly").is_some_and(|v| v == "true") && existing.is_none() {
                        return Err(not_found());
                    }
                    let mut values = sf
                        .check_fields(o, &body, existing.is_none(), &[])
                        .map_err(bad)?;
                    if existing.is_none() && ext_field != "Id" {
                        values.insert(ext_field.clone(), json!(value));
                    }
                    let (id, created) =
                        sf.write(o, existing.as_deref(), values, now).map_err(bad)?;
                    let status = if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    Ok(sf_json(
                        status,
                        &json!({"id": id, "success": true, "errors": [], "created": created}),
                    ))
                }
                _ => Err((
                    StatusCode::METHOD_NOT_ALLOWED,
                    SfErr::new(
                        "METHOD_NOT_ALLOWED",
                        format!("HTTP Method '{m}' not allowed. Allowed are GET,PATCH"),
                    ),
                )),
            }
        }
        _ => Err(not_found()),
    }
}
