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

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::{ApiError, CollectionItem, classify_code};
use super::soql::quote;
use super::{SalesforceCrm, decode, protocol};
use crate::config::AccountMatch;
use crate::crm::accounts::{AccountResults, cache_key, contact_entry, folded};
use crate::crm::{ContactRef, CrmChange, CrmError, MetadataProblem, RecordKey, RecordWrite};

/// Contacts (or opportunities) named in one lookup query: the URL stays
/// well under 8 KB.
pub const CONTACTS_PER_QUERY: usize = 50;
/// Most records created in one sObject Collections call.
const CREATES_PER_CALL: usize = 200;

/// The contact id (or the error) per [`contact_key`].
pub type ContactResults = HashMap<String, Result<String, CrmError>>;

/// Identifies a contact under an account: the account id and folded email.
pub fn contact_key(account_id: &str, email: &str) -> String {
    format!("{account_id}\u{0}{email}")
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

fn text(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn contact_error(code: &str, message: String) -> CrmError {
    CrmError::Record {
        key: RecordKey::Referral(String::new()),
        code: code.into(),
        message,
        fields: Vec::new(),
        directive: classify_code(code),
    }
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
        let mut out = ContactResults::new();
        if !self.contact_records {
            return out;
        }
        let mut seen = HashSet::new();
        let mut pending: Vec<(String, String, String, &ContactRef)> = Vec::new();
        for c in writes.iter().filter_map(|w| w.customer.as_ref()) {
            let (Some(contact), Some(Ok(account))) = (&c.contact, accounts.get(&cache_key(c)))
            else {
                continue;
            };
            let Some(email) = contact.match_email() else {
                continue;
            };
            let key = contact_key(account, &email);
            if seen.insert(key.clone()) {
                pending.push((key, account.clone(), email, contact));
            }
        }
        let mut missing = Vec::new();
        for chunk in pending.chunks(CONTACTS_PER_QUERY) {
            let accounts = unique(chunk.iter().map(|p| quote(&p.1)));
            let emails = unique(chunk.iter().filter_map(|p| text(&p.3.email).map(quote)));
            let soql = format!(
                "SELECT Id, AccountId, Email, CreatedDate FROM Contact WHERE AccountId IN ({}) AND Email IN ({}) ORDER BY CreatedDate ASC",
                accounts.join(", "),
                emails.join(", ")
            );
            match self.query_all(&soql).await {
                Ok(rows) => {
                    let mut found: HashMap<String, String> = HashMap::new();
                    for r in rows {
                        let (Some(id), Some(account), Some(email)) = (
                            r.get("Id").and_then(Value::as_str),
                            r.get("AccountId").and_then(Value::as_str),
                            folded(r.get("Email").and_then(Value::as_str)),
                        ) else {
                            continue;
                        };
                        found
                            .entry(contact_key(account, &email))
                            .or_insert_with(|| id.to_owned());
                    }
                    for p in chunk {
                        match found.get(&p.0) {
                            Some(id) => {
                                out.insert(p.0.clone(), Ok(id.clone()));
                            }
                            None => missing.push(p),
                        }
                    }
                }
                Err(e) => {
                    for p in chunk {
                        out.insert(p.0.clone(), Err(e.clone()));
                    }
                }
            }
        }
        for chunk in missing.chunks(CREATES_PER_CALL) {
            let records = chunk
                .iter()
                .map(|p| contact_body(&p.1, p.3))
                .collect::<Vec<_>>();
            let results = self.create_records("Contact", records).await;
            for (p, r) in chunk.iter().zip(results) {
                if let Ok(id) = &r {
                    tracing::info!(crm = "salesforce", contact = %id, "created a Salesforce contact for the customer");
                }
                out.insert(p.0.clone(), r);
            }
        }
        out
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
            let results = self.create_records("OpportunityContactRole", records).await;
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
                chunk
                    .iter()
                    .map(|id| quote(id))
                    .collect::<Vec<_>>()
                    .join(", ")
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
                chunk
                    .iter()
                    .map(|id| quote(id))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for r in self.query_all(&soql).await? {
                let Some(id) = r.get("Id").and_then(Value::as_str) else {
                    continue;
                };
                let entry = contact_entry(&r, ["FirstName", "LastName", "Email", "Phone"]);
                contacts.insert(id.to_owned(), entry);
            }
        }
        crate::crm::accounts::attach_contacts(changes, |crm_id| {
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

    /// Creates records in one `POST composite/sobjects` (`allOrNone:
    /// false`); one result per record, in order.
    async fn create_records(
        &self,
        object: &str,
        records: Vec<Value>,
    ) -> Vec<Result<String, CrmError>> {
        let count = records.len();
        let all = |e: CrmError| (0..count).map(|_| Err(e.clone())).collect::<Vec<_>>();
        let body = json!({ "allOrNone": false, "records": records });
        let path = self.path("composite/sobjects");
        let reply = match self.send(Method::POST, &path, &[], Some(&body)).await {
            Ok(r) => r,
            Err(CrmError::Http(crate::http::HttpError::Status { status, body, .. }))
                if (400..500).contains(&status) =>
            {
                let errors = ApiError::parse_body(body.as_bytes()).unwrap_or_default();
                let first = errors.first().cloned().unwrap_or_default();
                return all(contact_error(
                    &first.code,
                    format!("creating the {object} failed: {}", first.message),
                ));
            }
            Err(e) => return all(e),
        };
        let items: Vec<CollectionItem> = match decode(&reply.body, "sObject Collections") {
            Ok(items) => items,
            Err(e) => return all(e),
        };
        let mut items = items.into_iter();
        (0..count)
            .map(|_| match items.next() {
                Some(CollectionItem {
                    success: true,
                    id: Some(id),
                    ..
                }) => Ok(id),
                Some(item) if item.success => {
                    Err(protocol(format!("creating a {object} returned no id")))
                }
                Some(item) => {
                    let first = item.errors.first().cloned().unwrap_or_default();
                    Err(contact_error(
                        &first.code,
                        format!(
                            "creating the {object} failed: {}",
                            item.errors
                                .iter()
                                .map(|e| e.message.as_str())
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    ))
                }
                None => Err(protocol(format!(
                    "the {object} creation returned fewer results than records"
                ))),
            })
            .collect()
    }
}

/// The Contact to create under `account_id`.
fn contact_body(account_id: &str, c: &ContactRef) -> Value {
    let mut body = Map::new();
    body.insert("attributes".into(), json!({ "type": "Contact" }));
    body.insert("AccountId".into(), Value::String(account_id.to_owned()));
    body.insert(
        "LastName".into(),
        Value::String(c.last_name.trim().to_owned()),
    );
    for (field, value) in [
        ("FirstName", &c.first_name),
        ("Email", &c.email),
        ("Phone", &c.phone),
    ] {
        if let Some(v) = text(value) {
            body.insert(field.into(), Value::String(v.to_owned()));
        }
    }
    Value::Object(body)
}
