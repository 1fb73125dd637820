//! The customer account of a deal: found by DUNS number or by name + postal
//! code (as configured), created when missing, then bound to the opportunity
//! with `customerid_account@odata.bind`.

use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::{Map, Value};

use super::client::Call;
use super::{DynamicsCrm, odata, protocol};
use crate::config::AccountMatch;
use crate::crm::{CrmError, CustomerRef};

/// The account table's entity set (a standard table).
pub const ACCOUNT_SET: &str = "accounts";

/// Identifies a customer within one upsert call, so each is resolved once.
pub fn cache_key(c: &CustomerRef) -> String {
    serde_json::to_string(&(
        c.duns.as_deref().map(str::trim),
        c.name.trim(),
        c.postal_code.as_deref().map(str::trim),
    ))
    .unwrap_or_default()
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl DynamicsCrm {
    /// The `accountid` of the customer's account, created if none matches.
    pub(super) async fn resolve_account(&self, c: &CustomerRef) -> Result<String, CrmError> {
        let name = c.name.trim();
        if name.is_empty() {
            return Err(CrmError::Invalid(
                "the customer has no name to find or create its account by".into(),
            ));
        }
        let duns = non_empty(&c.duns);
        if self.account_match == AccountMatch::DunsThenNamePostalCode
            && self.duns_usable.load(Ordering::Relaxed)
            && let Some(duns) = duns
        {
            {
                let filter = format!("{} eq {}", self.duns_column, odata::string_literal(duns));
                match self.find_account(filter).await {
                    Ok(Some(id)) => return Ok(id),
                    Ok(None) => {}
                    Err(CrmError::Http(e))
                        if e.status() == Some(400) && e.to_string().contains(&self.duns_column) =>
                    {
                        tracing::warn!(
                            crm = "dynamics",
                            column = %self.duns_column,
                            "the account DUNS column does not exist; matching by name and postal code"
                        );
                        self.duns_usable.store(false, Ordering::Relaxed);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let postal = match non_empty(&c.postal_code) {
            Some(p) => format!("address1_postalcode eq {}", odata::string_literal(p)),
            None => "address1_postalcode eq null".into(),
        };
        let filter = format!("name eq {} and {postal}", odata::string_literal(name));
        if let Some(id) = self.find_account(filter).await? {
            return Ok(id);
        }
        self.create_account(c).await
    }

    async fn find_account(&self, filter: String) -> Result<Option<String>, CrmError> {
        let url = self.url(
            ACCOUNT_SET,
            &[
                ("$select", "accountid".into()),
                ("$filter", filter),
                ("$orderby", "createdon asc".into()),
                ("$top", "1".into()),
            ],
        )?;
        let call = Call::get(url);
        let v = self.api.call(&call).await?.json(&call)?;
        Ok(v.get("value")
            .and_then(Value::as_array)
            .and_then(|rows| rows.first())
            .and_then(|row| row.get("accountid"))
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    async fn create_account(&self, c: &CustomerRef) -> Result<String, CrmError> {
        let mut body = Map::new();
        body.insert("name".into(), Value::String(c.name.trim().to_owned()));
        for (column, value) in [
            ("address1_line1", &c.address_line1),
            ("address1_city", &c.city),
            ("address1_stateorprovince", &c.state),
            ("address1_postalcode", &c.postal_code),
            ("address1_country", &c.country),
        ] {
            if let Some(v) = non_empty(value) {
                body.insert(column.into(), Value::String(v.to_owned()));
            }
        }
        if self.account_match == AccountMatch::DunsThenNamePostalCode
            && self.duns_usable.load(Ordering::Relaxed)
            && let Some(duns) = non_empty(&c.duns)
        {
            body.insert(self.duns_column.clone(), Value::String(duns.to_owned()));
        }
        let url = self.url(ACCOUNT_SET, &[("$select", "accountid".into())])?;
        let call = Call::json(Method::POST, url, &Value::Object(body), false)
            .prefer("return=representation");
        let answer = self.api.call(&call).await?;
        let from_body = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|v| {
                v.get("accountid")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        let id = from_body
            .or_else(|| {
                answer
                    .header("odata-entityid")
                    .and_then(odata::guid_from_entity_id)
            })
            .ok_or_else(|| protocol("an account was created but its id was not returned"))?;
        tracing::info!(crm = "dynamics", account_id = %id, "customer account created");
        Ok(id)
    }
}
