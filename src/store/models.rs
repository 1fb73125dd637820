//! Rows of the state store.

use chrono::{DateTime, Utc};
use serde::Serialize;

use serde_json::Value;

use crate::domain::deadline::expiry_deadline;
use crate::domain::{Referral, Stage};

/// JSON as stored: its text, made into a tree only when something reads it
/// (a re-read that changed nothing compares texts; the reader owns the tree).
#[derive(Debug, Clone)]
pub struct RawJson {
    text: String,
}

impl RawJson {
    /// The JSON text of `value`, serialised straight to text (no tree).
    pub fn of<T: Serialize>(value: &T) -> RawJson {
        RawJson {
            // Plain data with string keys serialises without error.
            text: serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned()),
        }
    }

    /// Stored text, checked to be JSON without building its tree (so that
    /// reading it later cannot fail).
    pub fn from_text(text: String) -> Result<RawJson, serde_json::Error> {
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(RawJson { text })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The JSON as a tree (the text was checked to be JSON when this was made).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &RawJson) -> bool {
        self.text == other.text
    }
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(s)
    }
}

/// What we last saw of a Partner Center referral.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferralSnapshot {
    pub id: String,
    pub etag: Option<String>,
    pub status: String,
    pub substatus: String,
    /// `None` when the status/substatus pair is outside the documented table.
    pub stage: Option<Stage>,
    pub direction: Option<String>,
    pub referral_type: Option<String>,
    pub name: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// When a received inbound referral expires.
    pub deadline: Option<DateTime<Utc>>,
    /// Hash of the mapped fields, for echo suppression.
    pub projection_hash: Option<String>,
    /// The referral exactly as last read, unknown fields included.
    pub raw: RawJson,
    pub favorite: bool,
    /// Expired here by the 14-day rule before Partner Center said so.
    pub locally_expired: bool,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl ReferralSnapshot {
    /// A snapshot of a referral as read at `now`.
    pub fn from_referral(r: &Referral, expiry_days: u32, now: DateTime<Utc>) -> ReferralSnapshot {
        let status = r
            .status
            .clone()
            .unwrap_or(crate::domain::ReferralStatus::None);
        let substatus = r
            .substatus
            .clone()
            .unwrap_or(crate::domain::ReferralSubstatus::None);
        let stage = Stage::from_api(&status, &substatus);
        ReferralSnapshot {
            id: r.id.clone(),
            etag: r.e_tag.clone(),
            status: status.as_str().to_owned(),
            substatus: substatus.as_str().to_owned(),
            stage,
            direction: r.direction.as_ref().map(|d| d.as_str().to_owned()),
            referral_type: r.referral_type.as_ref().map(|t| t.as_str().to_owned()),
            name: r.name.clone(),
            created_at: r.created_date_time,
            updated_at: r.updated_date_time,
            deadline: expiry_deadline(r, stage, expiry_days),
            projection_hash: None,
            raw: RawJson::of(r),
            favorite: r.is_favorite(),
            locally_expired: false,
            first_seen: now,
            last_seen: now,
        }
    }

    /// The referral this snapshot holds.
    pub fn referral(&self) -> Result<Referral, crate::domain::ReferralParseError> {
        Referral::from_json_text(self.raw.text())
    }

    /// The tab Partner Center shows it under.
    pub fn tab(&self) -> Tab {
        match self.direction.as_deref() {
            Some("Incoming") => Tab::Inbound,
            Some("Outgoing") => Tab::Outbound,
            _ => Tab::Other,
        }
    }
}

/// Partner Center's tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tab {
    Inbound,
    Outbound,
    Other,
}

/// Which referrals `referrals list` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferralFilter {
    pub inbound: bool,
    pub outbound: bool,
    pub favorites: bool,
    pub stage: Option<Stage>,
    pub limit: Option<usize>,
}

pub use crate::domain::CrmKind;

/// A referral ↔ CRM opportunity pairing, with what we last wrote to each side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    pub crm: CrmKind,
    pub crm_id: String,
    /// `None` while an outbound deal is being created in Partner Center.
    pub referral_id: Option<String>,
    /// Projection hash of what we last wrote to the CRM record.
    pub crm_hash: Option<String>,
    /// The CRM record's version (ETag / SystemModstamp) after our write.
    pub crm_version: Option<String>,
    /// Projection hash of what we last wrote to Partner Center.
    pub pc_hash: Option<String>,
    /// The referral's eTag after our write.
    pub pc_version: Option<String>,
    /// The mapped CRM fields as last read or written (JSON object).
    pub crm_fields: Option<Value>,
    /// When the deal asked Microsoft for help (start of the 14-day window).
    pub help_requested_at: Option<DateTime<Utc>>,
    /// The both-way fields the CRM record held edited while its deal was on
    /// hold: not taken as seen, and not sent until the acceptance.
    pub held_edit: Option<HeldEdit>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// CRM values of both-way fields edited while the deal was on hold, with
/// when the record was modified (the owner rule `newest`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct HeldEdit {
    pub fields: serde_json::Map<String, Value>,
    pub modified_at: Option<DateTime<Utc>>,
}

impl Link {
    /// A new link for a CRM record, nothing written yet.
    pub fn new(crm: CrmKind, crm_id: &str, referral_id: Option<&str>, now: DateTime<Utc>) -> Link {
        Link {
            crm,
            crm_id: crm_id.to_owned(),
            referral_id: referral_id.map(str::to_owned),
            crm_hash: None,
            crm_version: None,
            pc_hash: None,
            pc_version: None,
            crm_fields: None,
            help_requested_at: None,
            held_edit: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A remote effect decided and committed, not yet confirmed done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxEntry {
    pub id: i64,
    /// `partner_center`, `dynamics` or `salesforce`.
    pub target: String,
    /// What to do, e.g. `upsert`, `patch`, `create_deal`, `close`.
    pub operation: String,
    /// The record it is about (referral id or CRM id).
    pub record_key: String,
    /// The effect as JSON text, read into an effect straight from the text.
    pub payload: RawJson,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When an attempt that may reach the service was first started
    /// (creates only; see `Repo::mark_sent`).
    pub sent_at: Option<DateTime<Utc>>,
}

/// A new outbox entry.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEffect {
    pub target: String,
    pub operation: String,
    pub record_key: String,
    /// The effect as JSON text (serialised straight from the typed effect).
    pub payload: RawJson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureState {
    /// Quarantined or failing; needs attention.
    Open,
    /// An operator asked for another try.
    Retrying,
    /// An operator chose to ignore it.
    Ignored,
    /// It worked later.
    Resolved,
}

impl FailureState {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureState::Open => "open",
            FailureState::Retrying => "retrying",
            FailureState::Ignored => "ignored",
            FailureState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<FailureState> {
        [
            FailureState::Open,
            FailureState::Retrying,
            FailureState::Ignored,
            FailureState::Resolved,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// A record that could not be synced, with what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub id: i64,
    /// The referral id, CRM id or key of the record.
    pub record: String,
    /// `partner_center`, `dynamics` or `salesforce`.
    pub side: String,
    /// `retry`, `retry_after`, `operator`, `permanent`, `unparseable`, `invalid`…
    pub kind: String,
    pub message: String,
    pub hint: String,
    /// The raw record, for unparseable input.
    pub raw: Option<String>,
    pub attempts: u32,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub state: FailureState,
}

/// A new or repeated failure.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFailure {
    pub record: String,
    pub side: String,
    pub kind: String,
    pub message: String,
    pub hint: String,
    pub raw: Option<String>,
}

/// One sync cycle in the run history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `clean`, `degraded` or `failed`; `None` while running (or if it crashed).
    pub outcome: Option<String>,
    pub summary: Option<Value>,
}

/// An entry of a referral's sync history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub referral_id: String,
    pub at: DateTime<Utc>,
    pub side: String,
    pub kind: String,
    pub message: String,
    pub detail: Option<Value>,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct StatusReport {
    pub schema_version: i64,
    pub referrals_total: u64,
    pub inbound: u64,
    pub outbound: u64,
    pub favorites: u64,
    /// Referrals per stage (every stage listed, zeros included), plus
    /// `unknown` for pairs outside the documented table.
    pub by_stage: Vec<(String, u64)>,
    pub links_by_crm: Vec<(String, u64)>,
    pub cursors: Vec<(String, String)>,
    pub pending_effects: u64,
    pub open_failures: u64,
    pub last_runs: Vec<Run>,
}
