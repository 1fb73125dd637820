//! `customer_contact = "record"`: the customer contact as a `Contact` under
//! the deal's Account, found by email (one query per batch of contacts) or
//! created (one sObject Collections call), then linked to the opportunity
//! as its primary `OpportunityContactRole`. Everything is looked up before
//! it is created, so a retry or a restart after a crash never makes a
//! second contact or role.
//!
//! Outbound: the primary contact role of a flagged opportunity is read into
//! the record under [`CONTACT_KEY`](crate::mapping::CONTACT_KEY) for the mapping to fall back on.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::soql::quote;
use super::{SalesforceCrm, protocol};
use crate::config::AccountMatch;
use crate::crm::accounts::AccountResults;
use crate::crm::contacts::{
    AccountIds, ContactResults, Resolution, contact_entry, contact_fields, oldest, wanted,
};
use crate::crm::{ContactRef, CrmChange, CrmError, MetadataProblem, RecordWrite};

/// Contacts (or opportunities) named in one lookup query: the URL stays
/// well under 8 KB.
pub const CONTACTS_PER_QUERY: usize = 50;
/// Most records created in one sObject Collections call.
const CREATES_PER_CALL: usize = 200;
/// Salesforce ids are case-sensitive.
pub(super) const IDS: AccountIds = AccountIds::Exact;

/// Ids as a SOQL `IN (…)` list.
fn in_list(ids: &[String]) -> String {
    ids.iter()
        .map(|id| quote(id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each value once, in the order first seen (a stable query text).
fn unique(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

impl SalesforceCrm {
    /// The Contact of every write whose customer carries a contact and whose
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
            let accounts = unique(chunk.iter().map(|w| quote(&w.account_id)));
            let emails = unique(chunk.iter().filter_map(|w| w.email().map(quote)));
            let soql = format!(
                "SELECT Id, AccountId, Email, CreatedDate FROM Contact WHERE AccountId IN ({}) AND Email IN ({}) ORDER BY CreatedDate ASC",
                accounts.join(", "),
                emails.join(", ")
            );
            let found = self.query_all(&soql).await;
            resolution.looked_up(
                chunk,
                found.map(|rows| oldest(&rows, ["Id", "AccountId", "Email"], IDS)),
            );
        }
        let mut created = Vec::new();
        for chunk in resolution.missing().chunks(CREATES_PER_CALL) {
            let records = chunk
                .iter()
                .map(|w| contact_body(&w.account_id, w.contact))
                .collect::<Vec<_>>();
            for r in self.create_records("Contact", records, |_| None).await {
                if let Ok(id) = &r {
                    tracing::info!(crm = "salesforce", contact = %id, "created a Salesforce contact for the customer");
                }
                created.push(r);
            }
        }
        resolution.created(created)
    }

    /// Links each `(opportunity, contact)` as the opportunity's primary
    /// contact role unless a role for that contact is there already. One
    /// result per pair, in order.
    pub(super) async fn link_contacts(
        &self,
        links: &[(String, String)],
    ) -> Vec<Result<(), CrmError>> {
        let mut out: Vec<Option<Result<(), CrmError>>> = vec![None; links.len()];
        let mut create = Vec::new();
        for (start, chunk) in links
            .chunks(CONTACTS_PER_QUERY)
            .enumerate()
            .map(|(i, c)| (i * CONTACTS_PER_QUERY, c))
        {
            let opportunities = unique(chunk.iter().map(|l| quote(&l.0)));
            let soql = format!(
                "SELECT Id, OpportunityId, ContactId FROM OpportunityContactRole WHERE OpportunityId IN ({})",
                opportunities.join(", ")
            );
            match self.query_all(&soql).await {
                Ok(rows) => {
                    let roles: HashSet<(String, String)> = rows
                        .iter()
                        .filter_map(|r| {
                            Some((
                                r.get("OpportunityId")?.as_str()?.to_owned(),
                                r.get("ContactId")?.as_str()?.to_owned(),
                            ))
                        })
                        .collect();
                    for (i, l) in chunk.iter().enumerate() {
                        if roles.contains(l) {
                            out[start + i] = Some(Ok(()));
                        } else {
                            create.push(start + i);
                        }
                    }
                }
                Err(e) => {
                    for i in 0..chunk.len() {
                        out[start + i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        // The same pair twice in one call gets one role.
        let mut unique: Vec<usize> = Vec::new();
        for i in create {
            match unique.iter().find(|u| links[**u] == links[i]) {
                Some(_) => out[i] = Some(Ok(())),
                None => unique.push(i),
            }
        }
        for chunk in unique.chunks(CREATES_PER_CALL) {
            let records = chunk
                .iter()
                .map(|i| {
                    json!({
                        "attributes": { "type": "OpportunityContactRole" },
                        "OpportunityId": links[*i].0,
                        "ContactId": links[*i].1,
                        "IsPrimary": true,
                    })
                })
                .collect();
            let results = self
                .create_records("OpportunityContactRole", records, |_| None)
                .await;
            for (i, r) in chunk.iter().zip(results) {
                out[*i] = Some(r.map(|_| ()));
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(protocol("a contact role was not linked".into()))))
            .collect()
    }

    /// Outbound: every opportunity of the page flagged for Partner Center (or
    /// still without a referral id)
    /// gets its primary contact (if any) under [`CONTACT_KEY`](crate::mapping::CONTACT_KEY).
    pub(super) async fn attach_contacts(&self, changes: &mut [CrmChange]) -> Result<(), CrmError> {
        if !self.contact_records {
            return Ok(());
        }
        let wanted: Vec<String> = changes
            .iter()
            .filter_map(|c| match c {
                CrmChange::Upserted(r) if self.spec.outbound(r) => Some(r.crm_id.clone()),
                _ => None,
            })
            .collect();
        let mut primary: HashMap<String, String> = HashMap::new();
        for chunk in wanted.chunks(CONTACTS_PER_QUERY) {
            let soql = format!(
                "SELECT OpportunityId, ContactId FROM OpportunityContactRole WHERE IsPrimary = true AND OpportunityId IN ({})",
                in_list(chunk)
            );
            for r in self.query_all(&soql).await? {
                if let (Some(o), Some(c)) = (
                    r.get("OpportunityId").and_then(Value::as_str),
                    r.get("ContactId").and_then(Value::as_str),
                ) {
                    primary.insert(o.to_owned(), c.to_owned());
                }
            }
        }
        let mut ids: Vec<String> = primary.values().cloned().collect();
        ids.sort();
        ids.dedup();
        let mut contacts: HashMap<String, Value> = HashMap::new();
        for chunk in ids.chunks(CONTACTS_PER_QUERY) {
            let soql = format!(
                "SELECT Id, FirstName, LastName, Email, Phone FROM Contact WHERE Id IN ({})",
                in_list(chunk)
            );
            for r in self.query_all(&soql).await? {
                let Some(id) = r.get("Id").and_then(Value::as_str) else {
                    continue;
                };
                let entry = contact_entry(&r, CONTACT_FIELDS);
                contacts.insert(id.to_owned(), entry);
            }
        }
        crate::crm::contacts::attach_contacts(changes, |crm_id| {
            primary.get(crm_id).and_then(|c| contacts.get(c))
        });
        Ok(())
    }

    /// `config validate --online` with `customer_contact = "record"`: the
    /// integration user can create Contacts and OpportunityContactRoles with
    /// the fields they are written with, and accounts are matched.
    pub(super) async fn contact_metadata_problems(&self) -> Vec<MetadataProblem> {
        let mut out = Vec::new();
        if !self.contact_records {
            return out;
        }
        if self.account_match == AccountMatch::None {
            out.push(MetadataProblem::error(
                "salesforce.account_match",
                "customer_contact = \"record\" puts the contact under the deal's account: set account_match to \"name_postal_code\" or \"duns_then_name_postal_code\"",
            ));
        }
        for (object, fields) in [
            (
                "Contact",
                &["AccountId", "FirstName", "LastName", "Email", "Phone"][..],
            ),
            (
                "OpportunityContactRole",
                &["OpportunityId", "ContactId", "IsPrimary"][..],
            ),
        ] {
            match self.describe(object).await {
                Ok(described) => {
                    for name in fields {
                        match described.iter().find(|f| f.name.eq_ignore_ascii_case(name)) {
                            Some(f) if f.createable => {}
                            Some(_) => out.push(MetadataProblem::error(
                                format!("{object}.{name}"),
                                "the integration user cannot set this field on create (field-level security)",
                            )),
                            None => out.push(MetadataProblem::error(
                                format!("{object}.{name}"),
                                "no such field (check the integration user's field-level security)",
                            )),
                        }
                    }
                }
                Err(e) => out.push(MetadataProblem::error(
                    object,
                    format!("customer_contact = \"record\" needs Read and Create on {object} for the integration user: {e}"),
                )),
            }
        }
        out
    }
}

/// The Contact to create under `account_id`.
fn contact_body(account_id: &str, c: &ContactRef) -> Value {
    let mut body = Map::new();
    body.insert("attributes".into(), json!({ "type": "Contact" }));
    body.insert("AccountId".into(), Value::String(account_id.to_owned()));
    body.extend(contact_fields(c, CONTACT_FIELDS));
    Value::Object(body)
}

/// A Contact's first name, last name, email and phone fields.
pub(super) const CONTACT_FIELDS: [&str; 4] = ["FirstName", "LastName", "Email", "Phone"];
