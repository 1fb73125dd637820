//! The `Crm` trait: what the sync engine asks of a CRM, implemented by the
//! Dynamics 365 (Dataverse Web API) and Salesforce (REST API) adapters.
//!
//! Adapters carry out requests; they never decide business rules. Every write
//! is an upsert keyed by the referral id (Salesforce External ID field,
//! Dataverse alternate key), so replaying one is harmless.

pub mod accounts;
pub(crate) mod body;
pub mod contacts;
pub mod dynamics;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::CrmKind;
use crate::http::{HttpError, RetryDirective, Retryable};

pub mod salesforce;

/// CRM field API name → value, case kept exactly.
pub type CrmFields = Map<String, Value>;

/// What an adapter needs to know of the mapping for its object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CrmObjectSpec {
    /// Salesforce sObject (`Opportunity`) or Dataverse table logical name (`opportunity`).
    pub object: String,
    /// The field holding the Partner Center referral id (External ID / alternate key column).
    pub external_id_field: String,
    /// `true` on an opportunity with no referral yet → create an outbound deal.
    pub sync_flag_field: Option<String>,
    /// Where validation problems are written back for the seller.
    pub error_field: Option<String>,
    /// Every field to read ($select / SOQL SELECT), besides the ones above.
    pub fields: Vec<String>,
    /// Every (field, value) the stage mapping uses, for metadata checks
    /// (StageName picklist values; statecode/statuscode option values).
    pub stage_values: Vec<(String, Value)>,
}

impl CrmObjectSpec {
    /// Whether a record is (or asks to be) a deal of ours: no referral id
    /// yet, or the sync flag set (a deal that may be upgraded to co-sell).
    pub fn outbound(&self, record: &CrmRecord) -> bool {
        record.referral_id.is_none()
            || self
                .sync_flag_field
                .as_ref()
                .is_some_and(|f| record.fields.get(f) == Some(&Value::Bool(true)))
    }

    /// Every field to read, without duplicates, in a stable order.
    pub fn select_fields(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |f: &str| {
            if !f.is_empty() && !out.iter().any(|o| o == f) {
                out.push(f.to_owned());
            }
        };
        push(&self.external_id_field);
        if let Some(f) = &self.sync_flag_field {
            push(f);
        }
        if let Some(f) = &self.error_field {
            push(f);
        }
        for f in &self.fields {
            push(f);
        }
        for (f, _) in &self.stage_values {
            push(f);
        }
        out
    }

    /// Whether `field` is among [`select_fields`](Self::select_fields),
    /// without building the list.
    pub fn selects(&self, field: &str) -> bool {
        !field.is_empty()
            && (self.external_id_field == field
                || self.sync_flag_field.as_deref() == Some(field)
                || self.error_field.as_deref() == Some(field)
                || self.fields.iter().any(|f| f == field)
                || self.stage_values.iter().any(|(f, _)| f == field))
    }
}

/// An opportunity as read from the CRM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrmRecord {
    /// The CRM's own id (Salesforce 18-char Id, Dataverse `opportunityid`).
    pub crm_id: String,
    /// The referral id in the external id field, when linked.
    pub referral_id: Option<String>,
    /// The requested fields, by API name.
    pub fields: CrmFields,
    /// Optimistic-concurrency version (`@odata.etag`, or `SystemModstamp`).
    pub version: Option<String>,
    /// `modifiedon` / `SystemModstamp`.
    pub modified_at: Option<DateTime<Utc>>,
}

/// One change seen while reading incrementally.
#[derive(Debug, Clone, PartialEq)]
pub enum CrmChange {
    Upserted(CrmRecord),
    /// Only reported in change-tracking mode (`$deletedEntity`).
    Deleted {
        crm_id: String,
    },
}

/// One page of changes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChangePage {
    pub changes: Vec<CrmChange>,
    /// Pass back to `read_changes` for the next page; `None` on the last one.
    pub continuation: Option<String>,
    /// Change-tracking mode: the delta token to store as the cursor once the
    /// last page is read.
    pub delta_token: Option<String>,
    /// The newest modification time seen on this page (watermark mode).
    pub high_water: Option<DateTime<Utc>>,
}

/// Which record a write is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "id")]
pub enum RecordKey {
    /// Upsert by the external id field / alternate key (creates when missing).
    Referral(String),
    /// Update a known record by its CRM id (e.g. to write a new referral id
    /// back onto the opportunity that asked for it).
    CrmId(String),
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordKey::Referral(id) => write!(f, "referral {id}"),
            RecordKey::CrmId(id) => write!(f, "record {id}"),
        }
    }
}

/// The customer of a deal, to find or create the account it belongs to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CustomerRef {
    pub name: String,
    pub duns: Option<String>,
    pub address_line1: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166 two-letter code.
    pub country: Option<String>,
    /// `customer_contact = "record"`: the contact to find by email under the
    /// account (or create) and link to the opportunity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<ContactRef>,
}

/// A customer contact (Partner Center `customerProfile.team[]`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContactRef {
    pub first_name: Option<String>,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

impl ContactRef {
    /// The email it is matched by (trimmed, lower case); `None` when it has
    /// no email or no last name: such a contact is neither looked up nor
    /// created, as it could not be found again on a retry.
    pub fn match_email(&self) -> Option<String> {
        if self.last_name.trim().is_empty() {
            return None;
        }
        accounts::folded(self.email.as_deref())
    }
}

/// An idempotent write of mapped fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordWrite {
    pub key: RecordKey,
    /// Mapped fields (stage fields included); the adapter adds the external id.
    pub fields: CrmFields,
    /// Only write if the record is still at this version (412 → `Conflict`).
    pub if_match: Option<String>,
    /// Resolve (find or create) the account and bind the opportunity to it.
    pub customer: Option<CustomerRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseOutcome {
    Won,
    /// Lost, declined and expired all close the opportunity as lost.
    Lost,
}

/// Closing an opportunity (Dataverse Win/LoseOpportunity; Salesforce StageName).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloseRequest {
    pub key: RecordKey,
    pub outcome: CloseOutcome,
    /// The mapped stage fields of the closed stage (StageName; statecode and
    /// statuscode) plus the reason field when the mapping has one.
    pub fields: CrmFields,
    /// Why, for the close activity's subject / the reason field.
    pub reason: Option<String>,
}

/// A successful write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteOk {
    pub crm_id: String,
    pub created: bool,
    pub version: Option<String>,
}

/// The outcome of one record of a batched call: one failure fails only itself.
#[derive(Debug)]
pub struct WriteResult {
    pub key: RecordKey,
    pub outcome: Result<WriteOk, CrmError>,
}

/// How much a [`MetadataProblem`] matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The org lacks something many orgs lack (a Data.com field, the currency
    /// field of a single-currency org): the sync works without it.
    Note,
    /// The mapping or the org must be fixed.
    Error,
}

/// A mapping item the CRM does not have, found by `check_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetadataProblem {
    /// The field, key or value concerned, e.g. `Opportunity.Referral_Identifier__c`.
    pub item: String,
    pub message: String,
    pub severity: Severity,
}

impl MetadataProblem {
    /// Something the mapping or the org must fix.
    pub fn error(item: impl Into<String>, message: impl Into<String>) -> MetadataProblem {
        MetadataProblem {
            item: item.into(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// Something the org lacks that the sync does without.
    pub fn note(item: impl Into<String>, message: impl Into<String>) -> MetadataProblem {
        MetadataProblem {
            item: item.into(),
            message: message.into(),
            severity: Severity::Note,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl std::fmt::Display for MetadataProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.item, self.message)
    }
}

/// Cloneable: a call that fails as a whole gives each of its records a copy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CrmError {
    /// Transport or HTTP status failure of a whole call.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Getting a token failed.
    #[error("{crm} sign-in failed: {message}")]
    Auth {
        crm: CrmKind,
        message: String,
        /// Retrying will not help (bad credentials, app not authorized).
        needs_operator: bool,
    },
    /// The record changed since it was read (HTTP 412).
    #[error("{key} was modified concurrently in the CRM")]
    Conflict { key: RecordKey },
    /// One record of a batch was refused.
    #[error("{key}: {code}: {message}")]
    Record {
        key: RecordKey,
        code: String,
        message: String,
        /// Fields the CRM named, if any.
        fields: Vec<String>,
        directive: RetryDirective,
    },
    /// An external id matched several records (Salesforce HTTP 300).
    #[error("{key} matches several records: {}", ids.join(", "))]
    MultipleMatches { key: RecordKey, ids: Vec<String> },
    /// The CRM told us to stop for a while (API limit, service protection).
    #[error("{crm} paused until {until}: {reason}")]
    Paused {
        crm: CrmKind,
        until: DateTime<Utc>,
        reason: String,
    },
    /// The response did not have the documented shape.
    #[error("{crm} sent an unexpected response: {message}")]
    Protocol { crm: CrmKind, message: String },
    /// A request that cannot be made as asked (e.g. a field missing from the mapping).
    #[error("{0}")]
    Invalid(String),
}

impl Retryable for CrmError {
    /// How the engine should treat this failure.
    fn directive(&self) -> RetryDirective {
        match self {
            CrmError::Http(e) => e.directive(),
            CrmError::Auth { needs_operator, .. } => {
                if *needs_operator {
                    RetryDirective::Operator
                } else {
                    RetryDirective::Backoff
                }
            }
            CrmError::Conflict { .. } => RetryDirective::Backoff,
            CrmError::Record { directive, .. } => *directive,
            CrmError::MultipleMatches { .. } => RetryDirective::Operator,
            CrmError::Paused { until, .. } => {
                let wait = (*until - Utc::now()).to_std().unwrap_or_default();
                RetryDirective::After(wait)
            }
            CrmError::Protocol { .. } => RetryDirective::Backoff,
            CrmError::Invalid(_) => RetryDirective::Permanent,
        }
    }

    /// A conflict needs a fresh read first; a pause is the engine's to honour.
    fn retry_in_place(&self) -> bool {
        match self {
            CrmError::Conflict { .. } | CrmError::Paused { .. } => false,
            other => other.directive().is_retriable(),
        }
    }
}

impl CrmError {
    /// What an operator can do about it.
    pub fn hint(&self) -> String {
        match self {
            CrmError::Http(e) => e.hint(),
            CrmError::Auth { crm, .. } => format!(
                "check the {crm} client id and secret (or certificate) and that the application user is enabled"
            ),
            CrmError::Conflict { .. } => "none: the record is re-read and decided again".into(),
            CrmError::Record { fields, .. } if !fields.is_empty() => format!(
                "fix the value of {} on the CRM record, or the mapping",
                fields.join(", ")
            ),
            CrmError::Record { .. } => {
                "fix the CRM record or the mapping, then `cosell-sync failures retry`".into()
            }
            CrmError::MultipleMatches { ids, .. } => format!(
                "several CRM records hold the same referral id ({}): clear it on all but one",
                ids.join(", ")
            ),
            CrmError::Paused { .. } => {
                "none: work resumes by itself; consider a larger API allocation".into()
            }
            CrmError::Protocol { .. } => {
                "report this response to the cosell-sync maintainers".into()
            }
            CrmError::Invalid(_) => "fix the mapping (`cosell-sync config validate`)".into(),
        }
    }
}

/// A CRM the engine can sync with.
#[async_trait]
pub trait Crm: Send + Sync {
    fn kind(&self) -> CrmKind;

    /// One page of opportunities changed at or after `since` that are linked
    /// to a referral or flagged to sync. `continuation` comes from the
    /// previous page. With `since = None` every such opportunity is read.
    async fn read_changes(
        &self,
        since: Option<DateTime<Utc>>,
        continuation: Option<&str>,
    ) -> Result<ChangePage, CrmError>;

    /// One opportunity, by referral id or CRM id.
    async fn fetch(&self, key: &RecordKey) -> Result<Option<CrmRecord>, CrmError>;

    /// Upserts many records in as few calls as the API allows, one result per
    /// input in the same order. `Err` only when no record could be attempted.
    /// The writes are borrowed: the engine keeps their fields as the link's base.
    async fn upsert(&self, writes: &[RecordWrite]) -> Result<Vec<WriteResult>, CrmError>;

    /// Closes opportunities as won or lost, one result per input in order.
    async fn close(&self, closes: Vec<CloseRequest>) -> Result<Vec<WriteResult>, CrmError>;

    /// Checks that every mapped field, the external id and every stage value
    /// exist in the org (`config validate --online`).
    async fn check_metadata(&self) -> Result<Vec<MetadataProblem>, CrmError>;

    /// Turns the fields of a write that succeeded into what a read of the
    /// record will show: its id field filled in, fields the org lacks left
    /// out, values in the CRM's own spelling. The engine keeps this as the
    /// record last seen, so the echo of its own write is known as such.
    /// Returns the fields it added (the id field, when it is read).
    fn as_read_back(&self, _crm_id: &str, _written: &mut CrmFields) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_fields_are_unique_and_start_with_the_external_id() {
        let spec = CrmObjectSpec {
            object: "Opportunity".into(),
            external_id_field: "Referral_Identifier__c".into(),
            sync_flag_field: Some("Sync_with_Partner_Center__c".into()),
            error_field: None,
            fields: vec!["Name".into(), "Amount".into(), "Name".into()],
            stage_values: vec![
                ("StageName".into(), Value::from("Prospecting")),
                ("StageName".into(), Value::from("Closed Won")),
            ],
        };
        assert_eq!(
            spec.select_fields(),
            vec![
                "Referral_Identifier__c",
                "Sync_with_Partner_Center__c",
                "Name",
                "Amount",
                "StageName"
            ]
        );
    }

    #[test]
    fn record_keys_serialize_tagged() {
        let k = RecordKey::Referral("r1".into());
        assert_eq!(
            serde_json::to_value(&k).unwrap(),
            serde_json::json!({"by": "referral", "id": "r1"})
        );
    }
}
