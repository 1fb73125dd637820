//! `customer_contact = "record"`: the customer contact as a row of
//! `contacts` under the deal's account (`parentcustomerid_account`), found
//! by `emailaddress1` (one query per batch of contacts) or created (one
//! POST, or one `$batch` for several), then bound to the opportunity with
//! `parentcontactid@odata.bind`. Everything is looked up before it is
//! created, so a retry or a restart after a crash never makes a second
//! contact.
//!
//! Outbound: the `parentcontactid` of a flagged opportunity is read into
//! the record under [`CONTACT_KEY`](crate::mapping::CONTACT_KEY) for the mapping to fall back on.

use std::collections::{HashMap, HashSet};

use reqwest::Method;
use serde_json::{Map, Value};

use super::batch::BatchOperation;
use super::client::Call;
use super::customer::ACCOUNT_SET;
use super::{DynamicsCrm, odata, protocol};
use crate::config::AccountMatch;
use crate::crm::accounts::AccountResults;
use crate::crm::contacts::{
    AccountIds, ContactResults, Resolution, attach_contacts, contact_entry, contact_fields, oldest,
    wanted,
};
use crate::crm::{ContactRef, CrmChange, CrmError, MetadataProblem, RecordWrite};
use crate::http::HttpError;

/// The contact table's entity set (a standard table).
pub const CONTACT_SET: &str = "contacts";
/// Contacts (or opportunities) named in one lookup `$filter`: with the rest
/// of the URL it stays under 8 KB.
pub const CONTACTS_PER_QUERY: usize = 25;
/// Dataverse GUIDs compare in any case.
pub(super) const IDS: AccountIds = AccountIds::AnyCase;
/// A contact's first name, last name, email and phone columns.
const CONTACT_COLUMNS: [&str; 4] = ["firstname", "lastname", "emailaddress1", "telephone1"];

impl DynamicsCrm {
    /// `customer_contact = "record"`: the customer contact becomes a contact
    /// under the account, bound as the opportunity's `parentcontactid`; a
    /// flagged opportunity's contact is read for outbound deals.
    pub fn with_contact_records(mut self, on: bool) -> Self {
        self.contact_records = on;
        self
    }

    /// The contact of every write whose customer carries one and whose
    /// account is known: found by email under the account (the oldest), or
    /// created there. A failure concerns only the contacts it names.
    pub(super) async fn resolve_contacts(
        &self,
        writes: &[RecordWrite],
        accounts: &AccountResults,
    ) -> ContactResults {
        if !self.contact_records {
            return ContactResults::new();
        }
        let wanted = wanted(writes, accounts, IDS);
        let mut resolution = Resolution::default();
        for chunk in wanted.chunks(CONTACTS_PER_QUERY) {
            let filter = chunk
                .iter()
                .filter_map(|w| {
                    let account = odata::guid_segment(&w.account_id)?;
                    let email = w.email()?;
                    Some(format!(
                        "(_parentcustomerid_value eq {account} and emailaddress1 eq {})",
                        odata::string_literal(email)
                    ))
                })
                .collect::<Vec<_>>()
                .join(" or ");
            let found = self
                .rows(
                    CONTACT_SET,
                    &[
                        (
                            "$select",
                            "contactid,emailaddress1,_parentcustomerid_value,createdon".into(),
                        ),
                        ("$filter", filter),
                        ("$orderby", "createdon asc".into()),
                    ],
                )
                .await;
            let columns = ["contactid", "_parentcustomerid_value", "emailaddress1"];
            resolution.looked_up(chunk, found.map(|rows| oldest(&rows, columns, IDS)));
        }
        let bodies: Vec<Value> = resolution
            .missing()
            .iter()
            .map(|w| contact_body(&w.account_id, w.contact))
            .collect();
        let created = self.create_contacts(&bodies).await;
        resolution.created(created)
    }

    /// Creates the contacts, one result per body in order: one POST for a
    /// single contact, else `$batch` calls of `batch_size` creates (each in
    /// its own change set).
    async fn create_contacts(&self, bodies: &[Value]) -> Vec<Result<String, CrmError>> {
        let path = format!("{}{CONTACT_SET}?$select=contactid", self.api_root.path());
        if let [one] = bodies {
            let created = async {
                let url = self.url(CONTACT_SET, &[("$select", "contactid".into())])?;
                let call =
                    Call::json(Method::POST, url, one, false).prefer("return=representation");
                let answer = self.api.call(&call).await?;
                created_contact_id(&answer.body, answer.header("odata-entityid"))
            };
            return vec![created.await];
        }
        let mut results = Vec::with_capacity(bodies.len());
        for chunk in bodies.chunks(self.batch_size.max(1)) {
            let ops: Vec<BatchOperation> = chunk
                .iter()
                .map(|b| BatchOperation {
                    method: Method::POST,
                    path_and_query: path.clone(),
                    headers: vec![("Prefer", "return=representation".to_owned())],
                    body: Some(b.to_string().into_bytes()),
                })
                .collect();
            // A create is not idempotent: an unknown outcome is not resent.
            match self.batch_call(&ops, false).await {
                Ok(responses) => {
                    for response in responses
                        .into_iter()
                        .chain(std::iter::repeat(None))
                        .take(chunk.len())
                    {
                        results.push(match response {
                            Some(r) if (200..300).contains(&r.status) => {
                                let entity_id = r
                                    .headers
                                    .get("odata-entityid")
                                    .and_then(|v| v.to_str().ok());
                                created_contact_id(&r.body, entity_id)
                            }
                            Some(r) => Err(CrmError::Http(HttpError::from_parts(
                                "POST",
                                &path,
                                r.status,
                                &r.headers,
                                &r.body,
                                std::time::SystemTime::now(),
                            ))),
                            None => Err(protocol(
                                "the $batch answer has no response for a contact create",
                            )),
                        });
                    }
                }
                Err(e) => results.extend(chunk.iter().map(|_| Err(e.clone()))),
            }
        }
        results
    }

    /// `config validate --online` with `customer_contact = "record"`: the
    /// contact columns it writes exist, and accounts are matched.
    pub(super) async fn contact_metadata_problems(&self) -> Result<Vec<MetadataProblem>, CrmError> {
        let mut out = Vec::new();
        if !self.contact_records {
            return Ok(out);
        }
        if self.account_match == AccountMatch::None {
            out.push(MetadataProblem::error(
                "dynamics.account_match",
                "customer_contact = \"record\" puts the contact under the deal's account: set account_match to \"name_postal_code\" or \"duns_then_name_postal_code\"",
            ));
        }
        let call = Call::get(self.url(
            &format!("{}/Attributes", self.metadata_path("contact")),
            &[("$select", "LogicalName".into())],
        )?);
        let attributes = match self.api.call(&call).await {
            Ok(answer) => answer.json(&call)?,
            Err(CrmError::Http(e)) if matches!(e.status(), Some(403 | 404)) => {
                out.push(MetadataProblem::error(
                    "contact",
                    format!("customer_contact = \"record\" needs the contact table, readable and creatable by the application user: {e}"),
                ));
                return Ok(out);
            }
            Err(e) => return Err(e),
        };
        let names: HashSet<&str> = attributes
            .get("value")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("LogicalName").and_then(Value::as_str))
            .collect();
        for column in [
            "firstname",
            "lastname",
            "emailaddress1",
            "telephone1",
            "parentcustomerid",
        ] {
            if !names.contains(column) {
                out.push(MetadataProblem::error(
                    format!("contact.{column}"),
                    format!("no column `{column}` in the Dataverse table `contact`"),
                ));
            }
        }
        Ok(out)
    }

    /// Outbound: every opportunity of the page flagged for Partner Center (or
    /// still without a referral id)
    /// gets its `parentcontactid` contact (if any) under [`CONTACT_KEY`](crate::mapping::CONTACT_KEY).
    pub(super) async fn attach_contacts(
        &self,
        set_name: &str,
        primary_key: &str,
        changes: &mut [CrmChange],
    ) -> Result<(), CrmError> {
        if !self.contact_records {
            return Ok(());
        }
        let wanted: Vec<String> = changes
            .iter()
            .filter_map(|c| match c {
                CrmChange::Upserted(r) if self.spec.outbound(r) => odata::guid_segment(&r.crm_id),
                _ => None,
            })
            .collect();
        let mut linked: HashMap<String, String> = HashMap::new();
        for chunk in wanted.chunks(CONTACTS_PER_QUERY) {
            let filter = chunk
                .iter()
                .map(|id| format!("{primary_key} eq {id}"))
                .collect::<Vec<_>>()
                .join(" or ");
            for row in self
                .rows(
                    set_name,
                    &[
                        ("$select", format!("{primary_key},_parentcontactid_value")),
                        ("$filter", filter),
                    ],
                )
                .await?
            {
                if let (Some(o), Some(c)) = (
                    row.get(primary_key).and_then(Value::as_str),
                    row.get("_parentcontactid_value").and_then(Value::as_str),
                ) {
                    linked.insert(o.to_ascii_lowercase(), c.to_ascii_lowercase());
                }
            }
        }
        let mut ids: Vec<String> = linked.values().cloned().collect();
        ids.sort();
        ids.dedup();
        let mut contacts: HashMap<String, Value> = HashMap::new();
        for chunk in ids.chunks(CONTACTS_PER_QUERY) {
            let filter = chunk
                .iter()
                .filter_map(|id| odata::guid_segment(id))
                .map(|id| format!("contactid eq {id}"))
                .collect::<Vec<_>>()
                .join(" or ");
            for row in self
                .rows(
                    CONTACT_SET,
                    &[
                        (
                            "$select",
                            "contactid,firstname,lastname,emailaddress1,telephone1".into(),
                        ),
                        ("$filter", filter),
                    ],
                )
                .await?
            {
                let Some(id) = row.get("contactid").and_then(Value::as_str) else {
                    continue;
                };
                let entry = contact_entry(&row, CONTACT_COLUMNS);
                contacts.insert(id.to_ascii_lowercase(), entry);
            }
        }
        attach_contacts(changes, |crm_id| {
            linked
                .get(&crm_id.to_ascii_lowercase())
                .and_then(|c| contacts.get(c))
        });
        Ok(())
    }

    /// Every row of `set` that `filter` matches, following `@odata.nextLink`.
    async fn rows(
        &self,
        set: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<Map<String, Value>>, CrmError> {
        let mut url = self.url(set, query)?;
        let mut out = Vec::new();
        loop {
            let call = Call::get(url);
            let v = self.api.call(&call).await?.json(&call)?;
            let rows = v
                .get("value")
                .and_then(Value::as_array)
                .ok_or_else(|| protocol("a listing has no `value` array"))?;
            out.extend(rows.iter().filter_map(|r| r.as_object().cloned()));
            match v.get("@odata.nextLink").and_then(Value::as_str) {
                Some(next) => url = self.follow_link(next)?,
                None => break,
            }
        }
        Ok(out)
    }
}

/// The contact to create under `account_id`.
fn contact_body(account_id: &str, c: &ContactRef) -> Value {
    let mut body = contact_fields(c, CONTACT_COLUMNS);
    body.insert(
        "parentcustomerid_account@odata.bind".into(),
        Value::String(format!("/{ACCOUNT_SET}({account_id})")),
    );
    Value::Object(body)
}

/// The id of a created contact: from the body (`return=representation`),
/// else from the `OData-EntityId` header.
fn created_contact_id(body: &[u8], entity_id: Option<&str>) -> Result<String, CrmError> {
    let id = odata::created_id(body, "contactid", entity_id)
        .ok_or_else(|| protocol("a contact was created but its id was not returned"))?;
    tracing::info!(crm = "dynamics", contact_id = %id, "customer contact created");
    Ok(id)
}
