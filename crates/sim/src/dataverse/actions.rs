//! The `WinOpportunity` and `LoseOpportunity` actions: close an
//! opportunity with an `opportunityclose` activity.

use axum::http::StatusCode;
use chrono::NaiveDate;
use serde_json::{Value, json};

use super::http::{Ctx, DvResponse, bad, not_found_segment};
use super::schema::opp_state_of_status;
use super::store::{DvState, Undo};

impl DvState {
    pub(super) fn close_opportunity(
        &mut self,
        ctx: &Ctx,
        win: bool,
        body: &[u8],
        undo: Option<&mut Undo>,
    ) -> DvResponse {
        let action = if win {
            "WinOpportunity"
        } else {
            "LoseOpportunity"
        };
        let v: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return bad(
                    "0x80048d19",
                    format!(
                        "The {action} request body must be a JSON object with Status and OpportunityClose."
                    ),
                );
            }
        };
        let Some(status) = v.get("Status").and_then(Value::as_i64) else {
            return bad(
                "0x80048d19",
                format!("{action}: the parameter 'Status' is required and must be an integer."),
            );
        };
        let want_state = if win { 1 } else { 2 };
        if opp_state_of_status(status) != Some(want_state) {
            return bad(
                "0x80044331",
                format!(
                    "A validation error occurred. The value {status} of 'statuscode' is not valid for a {} opportunity.",
                    if win { "won" } else { "lost" }
                ),
            );
        }
        let Some(close) = v.get("OpportunityClose").and_then(Value::as_object) else {
            return bad(
                "0x80048d19",
                format!("{action}: the parameter 'OpportunityClose' is required."),
            );
        };
        let Some(reference) = close
            .get("opportunityid@odata.bind")
            .and_then(Value::as_str)
        else {
            return bad(
                "0x80048d19",
                format!(
                    "{action}: OpportunityClose must bind opportunityid (\"opportunityid@odata.bind\": \"/opportunities(<id>)\")."
                ),
            );
        };
        let id = match self.resolve_reference("opportunities", reference) {
            Ok(id) => id,
            Err(r) => return r,
        };
        let Some(t) = self.table_index("opportunities") else {
            return not_found_segment("opportunities");
        };
        let Some(row) = self.tables[t].get(&id).cloned() else {
            return DvResponse::err(
                StatusCode::NOT_FOUND,
                "0x80040217",
                format!("opportunity With Id = {id} Does Not Exist"),
            );
        };
        if row
            .values
            .get("statecode")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            != 0
        {
            return bad(
                "0x80040203",
                "The opportunity is already closed. Reopen it before closing it again.",
            );
        }
        let mut values = row.values.clone();
        values.insert("statecode".into(), json!(want_state));
        values.insert("statuscode".into(), json!(status));
        let end = close
            .get("actualend")
            .and_then(Value::as_str)
            .and_then(|s| NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d").ok())
            .unwrap_or(ctx.now.date_naive());
        values.insert(
            "actualclosedate".into(),
            json!(end.format("%Y-%m-%d").to_string()),
        );
        let revenue = close
            .get("actualrevenue")
            .and_then(Value::as_f64)
            .or_else(|| {
                if win {
                    values.get("estimatedvalue").and_then(Value::as_f64)
                } else {
                    Some(0.0)
                }
            });
        values.insert(
            "actualvalue".into(),
            revenue.map_or(Value::Null, |r| json!(r)),
        );
        values.insert("closeprobability".into(), json!(if win { 100 } else { 0 }));
        if !win && let Some(d) = close.get("description").and_then(Value::as_str) {
            values.entry("new_closereason").or_insert_with(|| json!(d));
        }
        self.store(t, &id, values, ctx.now, undo);
        DvResponse::empty(StatusCode::NO_CONTENT)
    }
}
