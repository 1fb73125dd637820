//! The deal's customers: their Accounts found (by DUNS, or by name + postal
//! code, as `salesforce.account_match` says) in as few queries as the URL
//! length allows, the missing ones created in one sObject Collections call;
//! contacts likewise by email on the account. The DUNS field is used only
//! where the org has it (Data.com's `DunsNumber`, or a custom field).

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::{ApiError, CollectionItem, SaveResult, classify_code};
use super::contacts::CONTACT_FIELDS;
use super::schema::{ObjectFields, names_missing_field, org_dependent};
use super::soql::quote;
use super::{SalesforceCrm, decode, protocol, query_refused};
use crate::config::AccountMatch;
use crate::crm::accounts::{AccountResults, Identity, MissingPostal, folded, plan_creations};
use crate::crm::contacts::contact_fields;
use crate::crm::{CrmError, CustomerRef, RecordKey, RecordWrite};
use crate::http::RetryDirective;

/// Most customers looked up in one query, and most Accounts created in one
/// call (the sObject Collections limit).
pub const ACCOUNTS_PER_CALL: usize = 200;
/// Longest form-encoded SOQL text of one lookup: the URL stays under 8 KB.
pub const LOOKUP_QUERY_BYTES: usize = 7 * 1024;
/// Most account ids named in an ambiguity error.
const AMBIGUOUS_IDS_SHOWN: usize = 10;

pub use crate::crm::ContactRef;

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn customer_error(code: &str, message: String, directive: RetryDirective) -> CrmError {
    CrmError::Record {
        key: RecordKey::Referral(String::new()),
        code: code.into(),
        message,
        fields: Vec::new(),
        directive,
    }
}

/// The length of `text` once form-encoded into a query string.
fn encoded_len(text: &str) -> usize {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .map(str::len)
        .sum()
}

/// An Account a lookup returned.
struct Found {
    id: String,
    who: Identity,
}

/// What the org's Account has of the DUNS field.
#[derive(Clone)]
struct Duns {
    /// The Account describe, when a DUNS field is configured.
    account: Option<Arc<ObjectFields>>,
    /// The org has the configured DUNS field.
    present: bool,
    /// ... and DUNS matching is on.
    matching: bool,
}

impl SalesforceCrm {
    /// Whether the configured DUNS field is there to match on and to write.
    /// Only with a DUNS field configured is the Account described (once a run);
    /// a missing field is said once in the log.
    async fn duns(&self) -> Result<Duns, CrmError> {
        if self.duns_field.is_empty() {
            return Ok(Duns {
                account: None,
                present: false,
                matching: false,
            });
        }
        let account = self.org_fields("Account").await?;
        Ok(self.duns_in(account))
    }

    fn duns_in(&self, account: Arc<ObjectFields>) -> Duns {
        let present = account.has(&self.duns_field);
        let wanted = self.account_match == AccountMatch::DunsThenNamePostalCode;
        if !present {
            let first = self
                .reported_missing
                .lock()
                .map(|mut seen| {
                    seen.insert(format!("account.{}", self.duns_field.to_ascii_lowercase()))
                })
                .unwrap_or(false);
            if first {
                let why = org_dependent("Account", &self.duns_field).unwrap_or(
                    "check the API name and the integration user's field-level security",
                );
                if wanted {
                    tracing::info!(
                        crm = "salesforce",
                        field = %self.duns_field,
                        reason = why,
                        "the Salesforce org has no Account DUNS field; customers are matched by name and postal code (set salesforce.duns_field to your DUNS field, or to \"\" to silence this)"
                    );
                } else {
                    tracing::debug!(
                        crm = "salesforce",
                        field = %self.duns_field,
                        "the Salesforce org has no Account DUNS field; accounts are created without it"
                    );
                }
            }
        }
        Duns {
            account: Some(account),
            present,
            matching: present && wanted,
        }
    }

    /// The Account Id of each customer, by [`cache_key`](crate::crm::accounts::cache_key): remembered from an
    /// earlier call, found (DUNS first, then name + postal code; several
    /// matches are an `AMBIGUOUS_ACCOUNT` for that customer), or created.
    /// A failure concerns only the customers it names. A field Salesforce
    /// refuses meanwhile has the Account described again and the call sent
    /// once more without it.
    pub(super) async fn resolve_accounts(&self, writes: &[RecordWrite]) -> AccountResults {
        let (mut out, pending) = self.accounts.partition(
            writes,
            "the customer has no name to find or create its Salesforce account",
        );
        if pending.is_empty() {
            return out;
        }
        let mut duns = match self.duns().await {
            Ok(d) => d,
            Err(e) => {
                for (key, _) in pending {
                    out.insert(key, Err(e.clone()));
                }
                return out;
            }
        };
        let mut described_again = false;

        let mut found: Vec<Option<Result<String, CrmError>>> = vec![None; pending.len()];
        let mut start = 0;
        while start < pending.len() {
            let (count, soql) = self.lookup_soql(&pending[start..], duns.matching);
            let end = start + count;
            match self.find_accounts(&soql, duns.matching).await {
                Err(e) if names_missing_field(&e) && !described_again => {
                    described_again = true;
                    if let Some(stale) = &duns.account
                        && let Ok(fresh) = self.describe_again(stale).await
                    {
                        duns = self.duns_in(fresh);
                        if self.lookup_soql(&pending[start..], duns.matching).1 != soql {
                            // The same customers again, without the refused field.
                            continue;
                        }
                    }
                    let e = query_refused(e);
                    for slot in &mut found[start..end] {
                        *slot = Some(Err(e.clone()));
                    }
                }
                Err(e) => {
                    let e = query_refused(e);
                    for slot in &mut found[start..end] {
                        *slot = Some(Err(e.clone()));
                    }
                }
                Ok(rows) => {
                    for (slot, (_, c)) in found[start..end].iter_mut().zip(&pending[start..end]) {
                        *slot = pick_account(&rows, c, duns.matching);
                    }
                }
            }
            start = end;
        }

        let missing: Vec<usize> = (0..pending.len()).filter(|i| found[*i].is_none()).collect();
        let identities: Vec<Identity> = missing
            .iter()
            .map(|i| Identity::of(&pending[*i].1, duns.matching))
            .collect();
        let plan = plan_creations(&identities, MissingPostal::MatchesAny);
        let creating: Vec<usize> = (0..missing.len()).filter(|m| plan[*m] == *m).collect();
        for chunk in creating.chunks(ACCOUNTS_PER_CALL) {
            let customers: Vec<&CustomerRef> =
                chunk.iter().map(|m| &pending[missing[*m]].1).collect();
            let mut results = self.create_accounts(&customers, duns.present).await;
            // Creations refused for a field the org no longer has: described
            // again, then sent once more without it.
            let refused: Vec<usize> = (0..results.len())
                .filter(|i| results[*i].as_ref().is_err_and(names_missing_field))
                .collect();
            if !refused.is_empty()
                && !described_again
                && duns.present
                && let Some(stale) = &duns.account
                && let Ok(fresh) = self.describe_again(stale).await
            {
                described_again = true;
                duns = self.duns_in(fresh);
                if !duns.present {
                    let again: Vec<&CustomerRef> = refused.iter().map(|i| customers[*i]).collect();
                    let retried = self.create_accounts(&again, duns.present).await;
                    for (i, r) in refused.iter().zip(retried) {
                        results[*i] = r;
                    }
                }
            }
            for (m, result) in chunk.iter().zip(results) {
                found[missing[*m]] = Some(result);
            }
        }
        for (m, shared) in plan.iter().enumerate() {
            if *shared != m {
                found[missing[m]] = found[missing[*shared]].clone();
            }
        }

        for ((key, _), result) in pending.into_iter().zip(found) {
            let result = result.unwrap_or_else(|| Err(protocol("no account was resolved".into())));
            if let Ok(id) = &result {
                self.accounts.insert(key.clone(), id.clone());
            }
            out.insert(key, result);
        }
        out
    }

    /// The query finding the first customers of `customers` that fit in one
    /// URL, and how many they are (at least one).
    fn lookup_soql(&self, customers: &[(String, CustomerRef)], use_duns: bool) -> (usize, String) {
        let mut fields = String::from("Id, Name, BillingPostalCode");
        if use_duns {
            fields.push_str(", ");
            fields.push_str(&self.duns_field);
        }
        fields.push_str(", CreatedDate");
        let build = |duns: &[String], names: &[String]| {
            let mut conditions = Vec::new();
            if !duns.is_empty() {
                conditions.push(format!("{} IN ({})", self.duns_field, duns.join(", ")));
            }
            conditions.push(format!("Name IN ({})", names.join(", ")));
            format!(
                "SELECT {fields} FROM Account WHERE {} ORDER BY CreatedDate ASC",
                conditions.join(" OR ")
            )
        };
        let separator = encoded_len(", ");
        let mut len = encoded_len(&build(&[String::new()], &[String::new()]));
        let (mut duns, mut names) = (Vec::new(), Vec::new());
        let mut count = 0;
        for (_, c) in customers.iter().take(ACCOUNTS_PER_CALL) {
            let mut added = 0;
            let new_duns = non_empty(&c.duns)
                .filter(|_| use_duns)
                .map(quote)
                .filter(|q| !duns.contains(q));
            let new_name = Some(quote(c.name.trim())).filter(|q| !names.contains(q));
            for q in new_duns.iter().chain(new_name.iter()) {
                added += encoded_len(q) + separator;
            }
            if count > 0 && len + added > LOOKUP_QUERY_BYTES {
                break;
            }
            len += added;
            count += 1;
            duns.extend(new_duns);
            names.extend(new_name);
        }
        (count, build(&duns, &names))
    }

    /// Every Account the query returns, oldest first (Salesforce's refusal
    /// as it came).
    async fn find_accounts(&self, soql: &str, use_duns: bool) -> Result<Vec<Found>, CrmError> {
        Ok(self
            .query_all_raw(soql)
            .await?
            .iter()
            .filter_map(|r| {
                let text = |field: &str| folded(r.get(field).and_then(Value::as_str));
                Some(Found {
                    id: r.get("Id").and_then(Value::as_str)?.to_owned(),
                    who: Identity {
                        duns: if use_duns {
                            text(&self.duns_field)
                        } else {
                            None
                        },
                        name: text("Name"),
                        postal: text("BillingPostalCode"),
                    },
                })
            })
            .collect())
    }

    /// The Account to create; the DUNS only when the org has the field.
    fn account_body(&self, c: &CustomerRef, with_duns: bool) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("attributes".into(), json!({ "type": "Account" }));
        body.insert("Name".into(), Value::String(c.name.trim().to_owned()));
        for (field, value) in [
            ("BillingStreet", &c.address_line1),
            ("BillingCity", &c.city),
            ("BillingState", &c.state),
            ("BillingPostalCode", &c.postal_code),
            ("BillingCountry", &c.country),
        ] {
            if let Some(v) = non_empty(value) {
                body.insert(field.into(), Value::String(v.to_owned()));
            }
        }
        if let (Some(duns), true) = (non_empty(&c.duns), with_duns) {
            body.insert(self.duns_field.clone(), Value::String(duns.to_owned()));
        }
        body
    }

    /// Creates one Account per customer in one `POST composite/sobjects`
    /// (`allOrNone: false`); one result per customer, in order.
    async fn create_accounts(
        &self,
        customers: &[&CustomerRef],
        with_duns: bool,
    ) -> Vec<Result<String, CrmError>> {
        let records: Vec<Value> = customers
            .iter()
            .map(|c| Value::Object(self.account_body(c, with_duns)))
            .collect();
        let results = self
            .create_records("Account", records, |i| {
                customers.get(i).map(|c| c.name.trim().to_owned())
            })
            .await;
        for id in results.iter().flatten() {
            tracing::info!(account = %id, "created a Salesforce account for the customer");
        }
        results
    }

    /// Creates records in one `POST composite/sobjects` (`allOrNone:
    /// false`); one result per record, in order. `name` names the record of
    /// an index in its error, if it has a name.
    pub(super) async fn create_records(
        &self,
        object: &str,
        records: Vec<Value>,
        name: impl Fn(usize) -> Option<String>,
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
                return all(customer_error(
                    &first.code,
                    format!("creating the {object} failed: {}", first.message),
                    classify_code(&first.code),
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
            .map(|i| match items.next() {
                Some(CollectionItem {
                    success: true,
                    id: Some(id),
                    ..
                }) => Ok(id),
                Some(item) if item.success => {
                    Err(protocol(format!("creating the {object} returned no id")))
                }
                Some(item) => {
                    let first = item.errors.first().cloned().unwrap_or_default();
                    let named = name(i).map(|n| format!(" {n:?}")).unwrap_or_default();
                    Err(customer_error(
                        &first.code,
                        format!(
                            "creating the {object}{named} failed: {}",
                            item.errors
                                .iter()
                                .map(|e| e.message.as_str())
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                        classify_code(&first.code),
                    ))
                }
                None => Err(protocol(format!(
                    "the {object} creation returned fewer results than records"
                ))),
            })
            .collect()
    }

    /// Finds the contact by email on the account, or creates it; returns its Id.
    pub async fn ensure_contact(
        &self,
        account_id: &str,
        contact: &ContactRef,
    ) -> Result<String, CrmError> {
        if contact.last_name.trim().is_empty() {
            return Err(CrmError::Invalid(
                "a Salesforce contact needs a last name".into(),
            ));
        }
        if let Some(email) = non_empty(&contact.email) {
            let soql = format!(
                "SELECT Id FROM Contact WHERE AccountId = {} AND Email = {} ORDER BY CreatedDate ASC LIMIT 1",
                quote(account_id),
                quote(email)
            );
            if let Some(id) = self
                .query_all(&soql)
                .await?
                .first()
                .and_then(|r| r.get("Id").and_then(Value::as_str))
            {
                return Ok(id.to_owned());
            }
        }
        let mut body = Map::new();
        body.insert("AccountId".into(), Value::String(account_id.to_owned()));
        body.extend(contact_fields(contact, CONTACT_FIELDS));
        self.create("Contact", body).await
    }

    /// `POST sobjects/<type>` → the new record's Id.
    async fn create(&self, object: &str, body: Map<String, Value>) -> Result<String, CrmError> {
        let path = self.path(&format!("sobjects/{object}"));
        let reply = match self
            .send(Method::POST, &path, &[], Some(&Value::Object(body)))
            .await
        {
            Ok(r) => r,
            Err(CrmError::Http(crate::http::HttpError::Status { status, body, .. }))
                if (400..500).contains(&status) =>
            {
                let errors = ApiError::parse_body(body.as_bytes()).unwrap_or_default();
                let first = errors.first().cloned().unwrap_or_default();
                return Err(customer_error(
                    &first.code,
                    format!("creating the {object} failed: {}", first.message),
                    super::api::classify_code(&first.code),
                ));
            }
            Err(e) => return Err(e),
        };
        let saved: SaveResult = decode(&reply.body, object)?;
        saved
            .id
            .filter(|_| saved.success != Some(false))
            .ok_or_else(|| protocol(format!("creating the {object} returned no id")))
    }
}

/// The customer's Account among `rows` (oldest first): the one with its
/// DUNS number, else the one with its name and postal code; `None` when
/// none matches; several are ambiguous.
fn pick_account(
    rows: &[Found],
    c: &CustomerRef,
    use_duns: bool,
) -> Option<Result<String, CrmError>> {
    let who = Identity::of(c, use_duns);
    let mut matched: Vec<&Found> = rows.iter().filter(|r| who.duns_matches(&r.who)).collect();
    if matched.is_empty() {
        matched = rows
            .iter()
            .filter(|r| who.name_matches(&r.who, MissingPostal::MatchesAny))
            .collect();
    }
    match matched.as_slice() {
        [] => None,
        [one] => Some(Ok(one.id.clone())),
        many => {
            let mut ids: Vec<&str> = many.iter().map(|r| r.id.as_str()).collect();
            let more = ids.len().saturating_sub(AMBIGUOUS_IDS_SHOWN);
            ids.truncate(AMBIGUOUS_IDS_SHOWN);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            Some(Err(customer_error(
                "AMBIGUOUS_ACCOUNT",
                format!(
                    "several Salesforce accounts match the customer {:?}: {}{more}; merge them or give the customer a DUNS number",
                    c.name.trim(),
                    ids.join(", ")
                ),
                RetryDirective::Operator,
            )))
        }
    }
}
