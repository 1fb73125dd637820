//! One Web API request routed to its handler; `$batch` runs its parts
//! through here too.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::http::{Ctx, DvResponse, bad, not_found_segment, query_params};
use super::key::{parse_key, split_resource};
use super::store::{DvState, Undo};

impl DvState {
    /// Executes one Dataverse request. `path` is relative to the service root
    /// (`opportunities(…)`, `$batch` excluded); `undo` is set inside a change set.
    pub(crate) fn execute(
        &mut self,
        ctx: &Ctx,
        method: &Method,
        path: &str,
        query: &str,
        body: &[u8],
        undo: Option<&mut Undo>,
    ) -> DvResponse {
        let path = path.trim_start_matches('/');
        let (head, key, tail) = match split_resource(path) {
            Ok(x) => x,
            Err(m) => return bad("0x80060888", m),
        };
        let head = percent_encoding::percent_decode_str(&head)
            .decode_utf8_lossy()
            .into_owned();
        let params = query_params(query);
        match head.as_str() {
            "WhoAmI" if method == Method::GET => {
                return DvResponse::json(
                    StatusCode::OK,
                    json!({
                        "@odata.context": format!("{}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse", ctx.service_root),
                        "BusinessUnitId": self.bu_id, "UserId": self.user_id, "OrganizationId": self.org_id,
                    }),
                );
            }
            "WinOpportunity" | "LoseOpportunity" => {
                if method != Method::POST {
                    return DvResponse::err(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "0x80060888",
                        "The requested HTTP method is not supported.",
                    );
                }
                return self.close_opportunity(ctx, head == "WinOpportunity", body, undo);
            }
            "EntityDefinitions" => return self.metadata(ctx, key.as_deref(), &tail, &params),
            _ => {}
        }
        let Some(t) = self.table_index(&head) else {
            return not_found_segment(&head);
        };
        if !tail.is_empty() {
            return not_found_segment(&tail);
        }
        let key = match key {
            None => None,
            Some(k) => match parse_key(&self.tables[t].def, &k) {
                Ok(k) => Some(k),
                Err(m) => return bad("0x80060888", m),
            },
        };
        match (method.clone(), key) {
            (Method::GET, None) => self.query(ctx, t, &head, &params),
            (Method::GET, Some(k)) => self.get_one(ctx, t, &k, &params),
            (Method::POST, None) => self.create(ctx, t, &params, body, undo),
            (Method::PATCH, Some(k)) => self.upsert(ctx, t, &k, &params, body, undo),
            (Method::DELETE, Some(k)) => match self.resolve(t, &k) {
                Some(id) => {
                    self.delete(t, &id, undo);
                    DvResponse::empty(StatusCode::NO_CONTENT)
                }
                None => self.missing(t, &k),
            },
            (Method::PATCH, None) => DvResponse::err(
                StatusCode::METHOD_NOT_ALLOWED,
                "0x80060888",
                "PATCH on an entity set is not supported; address one record.",
            ),
            _ => DvResponse::err(
                StatusCode::METHOD_NOT_ALLOWED,
                "0x80060888",
                "The requested HTTP method is not supported on this resource.",
            ),
        }
    }
}
