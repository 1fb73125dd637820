//! `EntityDefinitions`: table, attribute and key metadata.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::odata::{self};

use super::http::{Ctx, DvResponse, bad, not_found_segment, param};
use super::key::split_resource;
use super::schema::{ColType, Column, TableDef, opp_state_of_status};
use super::store::DvState;

/// The logical name of a column's attribute (`_x_value` is attribute `x`).
pub(super) fn attribute_name(c: &Column) -> &str {
    c.name.trim_start_matches('_').trim_end_matches("_value")
}

/// The metadata `AttributeType` of a column: state and status columns of a
/// table are `State` and `Status`, other choices `Picklist`.
pub(super) fn attribute_type(c: &Column) -> &'static str {
    match (c.ty, c.name.as_str()) {
        (ColType::Choice(_), "statecode") => "State",
        (ColType::Choice(_), "statuscode") => "Status",
        (ty, _) => ty.attribute_type(),
    }
}

pub(super) fn attribute_metadata(c: &Column) -> Value {
    json!({
        "LogicalName": attribute_name(c),
        "AttributeType": attribute_type(c),
        "IsValidForCreate": !c.system, "IsValidForUpdate": !c.system,
        "MaxLength": match c.ty { ColType::Text(n) => json!(n), _ => Value::Null },
    })
}

/// `Attributes(LogicalName='x')` and its casts to
/// `Microsoft.Dynamics.CRM.{Picklist,State,Status}AttributeMetadata`, whose
/// `OptionSet` lists the choice's options.
pub(super) fn attribute_response(d: &TableDef, tail: &str) -> DvResponse {
    let (_, key, cast) = match split_resource(tail) {
        Ok(x) => x,
        Err(m) => return bad("0x80060888", m),
    };
    let name = key
        .as_deref()
        .map(|k| {
            k.trim()
                .strip_prefix("LogicalName=")
                .unwrap_or(k)
                .trim_matches('\'')
        })
        .unwrap_or_default();
    let Some(c) = d
        .columns
        .iter()
        .find(|c| c.name != "_customerid_type" && attribute_name(c) == name)
    else {
        return DvResponse::err(
            StatusCode::NOT_FOUND,
            "0x80040217",
            format!(
                "Could not find attribute with name '{name}' on entity '{}'.",
                d.logical
            ),
        );
    };
    let mut v = attribute_metadata(c);
    if cast.is_empty() {
        return DvResponse::json(StatusCode::OK, v);
    }
    let wanted = format!(
        "Microsoft.Dynamics.CRM.{}AttributeMetadata",
        attribute_type(c)
    );
    let ColType::Choice(options) = c.ty else {
        return not_found_segment(&cast);
    };
    if cast != wanted {
        return not_found_segment(&cast);
    }
    let status = attribute_type(c) == "Status";
    let options: Vec<Value> = options
        .iter()
        .map(|(value, label)| {
            let mut o = json!({
                "Value": value,
                "Label": {"UserLocalizedLabel": {"Label": label, "LanguageCode": 1033},
                          "LocalizedLabels": [{"Label": label, "LanguageCode": 1033}]},
            });
            if status && d.logical == "opportunity" {
                o["State"] = json!(opp_state_of_status(*value));
            }
            o
        })
        .collect();
    v["OptionSet"] = json!({"Options": options});
    DvResponse::json(StatusCode::OK, v)
}

impl DvState {
    pub(super) fn metadata(
        &self,
        ctx: &Ctx,
        key: Option<&str>,
        tail: &str,
        params: &[(String, String)],
    ) -> DvResponse {
        let defs: Vec<&TableDef> = self.tables.iter().map(|t| &t.def).collect();
        let describe = |d: &TableDef, keys: bool| {
            let mut v = json!({
                "LogicalName": d.logical, "EntitySetName": d.set, "PrimaryIdAttribute": d.pk,
                "PrimaryNameAttribute": d.primary_name, "ChangeTrackingEnabled": d.change_tracking,
                "MetadataId": format!("{:08x}-0000-4000-8000-{:012x}", d.logical.len(), d.logical.bytes().fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b))) & 0xffff_ffff_ffff),
            });
            if keys {
                v["Keys"] = json!(d.keys.iter().map(|(n, c)| json!({"LogicalName": n, "KeyAttributes": [c], "EntityKeyIndexStatus": "Active"})).collect::<Vec<_>>());
            }
            v
        };
        let expand_keys = param(params, "$expand").is_some_and(|e| e.contains("Keys"));
        match key {
            None => {
                let mut items: Vec<Value> = defs.iter().map(|d| describe(d, expand_keys)).collect();
                if let Some(f) = param(params, "$filter") {
                    match odata::parse_filter(f) {
                        Ok(e) => items.retain(|v| odata::eval(&e, &odata::JsonResolver(v))),
                        Err(e) => return bad("0x80060888", e.0),
                    }
                }
                DvResponse::json(
                    StatusCode::OK,
                    json!({"@odata.context": format!("{}/$metadata#EntityDefinitions", ctx.service_root), "value": items}),
                )
            }
            Some(k) => {
                let name = k
                    .trim()
                    .strip_prefix("LogicalName=")
                    .unwrap_or(k)
                    .trim_matches('\'');
                let Some(d) = defs.iter().find(|d| d.logical == name) else {
                    return DvResponse::err(
                        StatusCode::NOT_FOUND,
                        "0x80040217",
                        format!("Could not find entity with name '{name}'."),
                    );
                };
                match tail {
                    "" => DvResponse::json(StatusCode::OK, describe(d, expand_keys)),
                    "Attributes" => DvResponse::json(
                        StatusCode::OK,
                        json!({"value": d.columns.iter().filter(|c| c.name != "_customerid_type").map(attribute_metadata).collect::<Vec<_>>()}),
                    ),
                    t if t.starts_with("Attributes(") => attribute_response(d, t),
                    "Keys" => DvResponse::json(
                        StatusCode::OK,
                        json!({"value": describe(d, true)["Keys"].clone()}),
                    ),
                    other => not_found_segment(other),
                }
            }
        }
    }
}
