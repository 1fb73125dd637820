//! What a person does in Dynamics 365, without HTTP: the in-process
//! helpers tests, the demo and the control API use.

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::{SimError, SimState, lock};

use super::http::{Ctx, DvResponse, Prefer};

/// What a person does in Dynamics 365, without HTTP.
impl SimState {
    fn dv_ctx_root(&self) -> String {
        format!("{}/api/data/v9.2", self.urls.dynamics)
    }

    fn dv_apply(&self, method: Method, path: &str, body: Value) -> Result<DvResponse, SimError> {
        let root = self.dv_ctx_root();
        let headers = HeaderMap::new();
        let ctx = Ctx {
            service_root: &root,
            now: self.clock.now(),
            prefer: Prefer {
                representation: true,
                ..Prefer::default()
            },
            headers: &headers,
        };
        let r = lock(&self.dv).execute(&ctx, &method, path, "", body.to_string().as_bytes(), None);
        if r.is_success() {
            Ok(r)
        } else {
            let msg = r
                .body
                .as_ref()
                .and_then(|b| b.pointer("/error/message"))
                .and_then(Value::as_str)
                .unwrap_or("failed")
                .to_owned();
            Err(match r.status {
                StatusCode::NOT_FOUND => SimError::NotFound(msg),
                StatusCode::PRECONDITION_FAILED => SimError::Conflict(msg),
                _ => SimError::Invalid(msg),
            })
        }
    }

    /// An opportunity row as the Web API returns it.
    pub fn dynamics_opportunity(&self, id: &str) -> Option<Value> {
        let dv = lock(&self.dv);
        let t = dv.table_index("opportunities")?;
        let row = dv.tables[t].get(id)?;
        Some(dv.render(t, row, &None, false))
    }

    /// The opportunity carrying a referral id in the alternate-key column.
    pub fn dynamics_opportunity_by_referral(&self, referral_id: &str) -> Option<Value> {
        let dv = lock(&self.dv);
        let t = dv.table_index("opportunities")?;
        let id = dv.tables[t].find_by_key(&self.opts.dynamics_referral_key, referral_id)?;
        let row = dv.tables[t].get(&id)?;
        Some(dv.render(t, row, &None, false))
    }

    /// Every row of an entity set (e.g. `contacts`), as the Web API returns
    /// it; empty for an unknown set.
    pub fn dynamics_rows(&self, set: &str) -> Vec<Value> {
        let dv = lock(&self.dv);
        let Some(t) = dv.table_index(set) else {
            return Vec::new();
        };
        dv.tables[t]
            .rows
            .values()
            .map(|row| dv.render(t, row, &None, false))
            .collect()
    }

    /// Every opportunity id.
    pub fn dynamics_opportunity_ids(&self) -> Vec<String> {
        let dv = lock(&self.dv);
        dv.table("opportunities")
            .map(|t| t.rows.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Marks an opportunity won, as a seller would (WinOpportunity, status 3).
    pub fn win_dynamics(&self, id: &str) -> Result<(), SimError> {
        self.dv_apply(Method::POST, "WinOpportunity", json!({"Status": 3, "OpportunityClose": {"subject": "Won", "opportunityid@odata.bind": format!("/opportunities({id})")}}))
            .map(|_| ())
    }

    /// Marks an opportunity lost (LoseOpportunity, status 4 Canceled).
    pub fn lose_dynamics(&self, id: &str, reason: Option<&str>) -> Result<(), SimError> {
        let mut close =
            json!({"subject": "Lost", "opportunityid@odata.bind": format!("/opportunities({id})")});
        if let Some(r) = reason {
            close["description"] = json!(r);
        }
        self.dv_apply(
            Method::POST,
            "LoseOpportunity",
            json!({"Status": 4, "OpportunityClose": close}),
        )
        .map(|_| ())
    }

    /// Edits opportunity columns (the same checks as the Web API).
    pub fn edit_dynamics(&self, id: &str, values: Value) -> Result<Value, SimError> {
        let r = self.dv_apply(Method::PATCH, &format!("opportunities({id})"), values)?;
        r.body.ok_or_else(|| SimError::Invalid("no body".into()))
    }

    /// Creates a row of any entity set (e.g. `contacts`), as a user would.
    pub fn create_dynamics_row(&self, set: &str, values: Value) -> Result<Value, SimError> {
        let r = self.dv_apply(Method::POST, set, values)?;
        r.body.ok_or_else(|| SimError::Invalid("no body".into()))
    }

    /// Creates an opportunity (e.g. flagged with `new_syncwithpartnercenter`).
    pub fn create_dynamics_opportunity(&self, values: Value) -> Result<Value, SimError> {
        let r = self.dv_apply(Method::POST, "opportunities", values)?;
        r.body.ok_or_else(|| SimError::Invalid("no body".into()))
    }
}
