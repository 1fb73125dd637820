//! In-memory Partner Center and CRM for the engine's unit tests: they keep
//! records, record every call, and can be told to fail a call.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::crm::{
    ChangePage, CloseRequest, Crm, CrmChange, CrmError, CrmRecord, MetadataProblem, RecordKey,
    RecordWrite, WriteOk, WriteResult,
};
use crate::domain::patch::lifecycle_patch;
use crate::domain::referral::ReferralTarget;
use crate::domain::{LifecycleAction, PatchOp, Referral, ReferralStatus, ReferralSubstatus, Stage};
use crate::partner_center::{
    ListFilter, PartnerCenter, PartnerCenterError, PriorDeal, ReferralPage,
};
use crate::store::CrmKind;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets the value at a JSON Pointer, creating objects on the way (an index
/// into an existing array, e.g. `/team/0/email`, stays in the array).
fn set_pointer(doc: &mut Value, pointer: &str, value: Value) {
    let mut at = doc;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let index = part
            .parse::<usize>()
            .ok()
            .filter(|n| at.as_array().is_some_and(|a| *n < a.len()));
        if let Some(index) = index {
            if i + 1 == parts.len() {
                at[index] = value;
                return;
            }
            at = &mut at[index];
            continue;
        }
        if !at.is_object() {
            *at = Value::Object(Default::default());
        }
        let Value::Object(map) = at else { return };
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), value);
            return;
        }
        at = map.entry((*part).to_owned()).or_insert(Value::Null);
    }
}

/// A call made to the fake Partner Center.
#[derive(Debug, Clone, PartialEq)]
pub enum PcCall {
    List,
    Get(String),
    CreateOwn {
        external_reference_id: Option<String>,
    },
    InviteMicrosoft {
        engagement_id: String,
    },
    FindMicrosoft {
        engagement_id: String,
    },
    FindOutgoing(Vec<String>),
    Patch {
        id: String,
        ops: Vec<PatchOp>,
    },
    /// A lifecycle PATCH: every operation sent, the status ones included.
    ChangeStage {
        id: String,
        ops: Vec<PatchOp>,
    },
}

#[derive(Default)]
struct PcState {
    referrals: Vec<Referral>,
    calls: Vec<PcCall>,
    failures: HashMap<&'static str, VecDeque<PartnerCenterError>>,
    seq: u64,
    now: Option<DateTime<Utc>>,
}

impl PcState {
    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn fail(&mut self, op: &'static str) -> Result<(), PartnerCenterError> {
        match self.failures.get_mut(op).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn stamp(&mut self, json: &mut Value) {
        let n = self.next();
        json["eTag"] = Value::String(format!("\"etag-{n}\""));
        if let Some(now) = self.now {
            json["updatedDateTime"] = Value::String(now.to_rfc3339());
        }
    }

    fn apply(
        &mut self,
        id: &str,
        etag: &str,
        ops: &[PatchOp],
    ) -> Result<Referral, PartnerCenterError> {
        let Some(pos) = self.referrals.iter().position(|r| r.id == id) else {
            return Err(PartnerCenterError::InvalidPatch {
                id: id.to_owned(),
                reason: "no such referral in the fake".into(),
            });
        };
        if self.referrals[pos].e_tag.as_deref() != Some(etag) {
            return Err(PartnerCenterError::ModifiedConcurrently { id: id.to_owned() });
        }
        let mut json = self.referrals[pos].to_json();
        for op in ops {
            set_pointer(&mut json, &op.path, op.value.clone());
        }
        self.stamp(&mut json);
        let updated =
            Referral::from_json(json).map_err(|e| PartnerCenterError::Unreadable(Box::new(e)))?;
        self.referrals[pos] = updated.clone();
        Ok(updated)
    }

    fn insert(&mut self, mut json: Value) -> Referral {
        self.stamp(&mut json);
        if let Some(now) = self.now {
            json["createdDateTime"] = Value::String(now.to_rfc3339());
        }
        let r = Referral::from_json(json).unwrap_or_else(|e| panic!("fake referral: {e}"));
        self.referrals.push(r.clone());
        r
    }
}

/// Partner Center in memory.
#[derive(Clone, Default)]
pub struct FakePartnerCenter {
    state: Arc<Mutex<PcState>>,
    login_paused: Arc<AtomicBool>,
    /// Referrals per listed page.
    page_size: usize,
}

impl FakePartnerCenter {
    pub fn new() -> Self {
        FakePartnerCenter {
            page_size: 2,
            ..Default::default()
        }
    }

    /// The time stamped on what the fake changes (`updatedDateTime`).
    pub fn set_now(&self, now: DateTime<Utc>) {
        lock(&self.state).now = Some(now);
    }

    pub fn add(&self, referral: Referral) {
        lock(&self.state).referrals.push(referral);
    }

    pub fn referral(&self, id: &str) -> Option<Referral> {
        lock(&self.state)
            .referrals
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    pub fn referrals(&self) -> Vec<Referral> {
        lock(&self.state).referrals.clone()
    }

    /// Changes a referral as someone else would (a new eTag), without
    /// changing its `updatedDateTime` unless `edit` does.
    pub fn edit(&self, id: &str, edit: impl FnOnce(&mut Value)) {
        let mut s = lock(&self.state);
        let n = s.next();
        if let Some(r) = s.referrals.iter_mut().find(|r| r.id == id) {
            let mut json = r.to_json();
            edit(&mut json);
            json["eTag"] = Value::String(format!("\"other-{n}\""));
            *r = Referral::from_json(json).unwrap_or_else(|e| panic!("fake referral: {e}"));
        }
    }

    /// The next call of `op` (`list`, `get`, `create`, `invite`,
    /// `find_microsoft`, `find_outgoing`, `patch`, `change_stage`) fails with `error`.
    pub fn fail_next(&self, op: &'static str, error: PartnerCenterError) {
        lock(&self.state)
            .failures
            .entry(op)
            .or_default()
            .push_back(error);
    }

    pub fn set_paused_for_login(&self, paused: bool) {
        self.login_paused.store(paused, Ordering::SeqCst);
    }

    pub fn calls(&self) -> Vec<PcCall> {
        lock(&self.state).calls.clone()
    }

    /// The calls other than listing and reading.
    pub fn writes(&self) -> Vec<PcCall> {
        self.calls()
            .into_iter()
            .filter(|c| !matches!(c, PcCall::List | PcCall::Get(_)))
            .collect()
    }

    pub fn clear_calls(&self) {
        lock(&self.state).calls.clear();
    }
}

#[async_trait]
impl PartnerCenter for FakePartnerCenter {
    fn with_correlation_id(&self, _id: Uuid) -> Arc<dyn PartnerCenter> {
        Arc::new(self.clone())
    }

    fn paused_for_login(&self) -> bool {
        self.login_paused.load(Ordering::SeqCst)
    }

    async fn list_page(
        &self,
        since: DateTime<Utc>,
        filter: &ListFilter,
        next: Option<&str>,
    ) -> Result<ReferralPage, PartnerCenterError> {
        let mut s = lock(&self.state);
        s.calls.push(PcCall::List);
        s.fail("list")?;
        let mut matching: Vec<Referral> = s
            .referrals
            .iter()
            .filter(|r| r.updated_date_time.is_none_or(|u| u >= since))
            .filter(|r| filter.direction.is_none() || r.direction == filter.direction)
            .cloned()
            .collect();
        matching.sort_by_key(|r| r.updated_date_time);
        let start: usize = next.and_then(|n| n.parse().ok()).unwrap_or(0);
        let end = (start + self.page_size.max(1)).min(matching.len());
        let next = (end < matching.len()).then(|| end.to_string());
        Ok(ReferralPage {
            referrals: matching.get(start..end).unwrap_or_default().to_vec(),
            failures: Vec::new(),
            has_more: next.is_some(),
            next,
        })
    }

    async fn get(&self, id: &str) -> Result<Referral, PartnerCenterError> {
        let mut s = lock(&self.state);
        s.calls.push(PcCall::Get(id.to_owned()));
        s.fail("get")?;
        s.referrals
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or_else(|| PartnerCenterError::InvalidPatch {
                id: id.to_owned(),
                reason: "no such referral in the fake".into(),
            })
    }

    async fn create_own_referral(&self, draft: &Referral) -> Result<Referral, PartnerCenterError> {
        let mut s = lock(&self.state);
        s.calls.push(PcCall::CreateOwn {
            external_reference_id: draft.external_reference_id.clone(),
        });
        s.fail("create")?;
        let n = s.next();
        let mut json = draft.to_json();
        json["id"] = Value::String(format!("created-{n}"));
        json["engagementId"] = Value::String(format!("engagement-{n}"));
        json["direction"] = Value::String("Outgoing".into());
        json["status"] = Value::String("Active".into());
        json["substatus"] = Value::String("Accepted".into());
        let shared = draft.assistance_requested().is_some();
        json["type"] = Value::String(if shared { "Shared" } else { "Independent" }.into());
        Ok(s.insert(json))
    }

    async fn invite_microsoft(
        &self,
        draft: &Referral,
        engagement_id: &str,
    ) -> Result<Referral, PartnerCenterError> {
        let mut s = lock(&self.state);
        s.calls.push(PcCall::InviteMicrosoft {
            engagement_id: engagement_id.to_owned(),
        });
        s.fail("invite")?;
        let n = s.next();
        let mut json = draft.to_json();
        json["id"] = Value::String(format!("microsoft-{n}"));
        json["engagementId"] = Value::String(engagement_id.to_owned());
        json["direction"] = Value::String("Outgoing".into());
        json["status"] = Value::String("New".into());
        json["substatus"] = Value::String("Pending".into());
        json["target"] = serde_json::json!([ReferralTarget::microsoft()]);
        Ok(s.insert(json))
    }

    async fn find_microsoft_referral(
        &self,
        engagement_id: &str,
    ) -> Result<Option<Referral>, PartnerCenterError> {
        let mut s = lock(&self.state);
        s.calls.push(PcCall::FindMicrosoft {
            engagement_id: engagement_id.to_owned(),
        });
        s.fail("find_microsoft")?;
        Ok(s.referrals
            .iter()
            .find(|r| {
                r.engagement_id.as_deref() == Some(engagement_id)
                    && r.target.iter().flatten().any(ReferralTarget::is_microsoft)
            })
            .cloned())
    }

    async fn find_outgoing_by_external_references(
        &self,
        external_reference_ids: &[&str],
        _created_since: DateTime<Utc>,
    ) -> Result<HashMap<String, PriorDeal>, PartnerCenterError> {
        let mut s = lock(&self.state);
        s.calls.push(PcCall::FindOutgoing(
            external_reference_ids
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        ));
        s.fail("find_outgoing")?;
        let mut found = HashMap::new();
        for r in &s.referrals {
            let microsoft = r.target.iter().flatten().any(ReferralTarget::is_microsoft);
            if let Some(id) = r.external_reference_id.as_deref()
                && external_reference_ids.contains(&id)
                && !microsoft
            {
                found
                    .entry(id.to_owned())
                    .or_insert_with(|| PriorDeal::Found(Box::new(r.clone())));
            }
        }
        Ok(found)
    }

    async fn patch(
        &self,
        id: &str,
        etag: &str,
        ops: &[PatchOp],
    ) -> Result<Option<Referral>, PartnerCenterError> {
        let mut s = lock(&self.state);
        s.calls.push(PcCall::Patch {
            id: id.to_owned(),
            ops: ops.to_vec(),
        });
        s.fail("patch")?;
        s.apply(id, etag, ops).map(Some)
    }

    async fn change_stage_with(
        &self,
        referral: &Referral,
        action: &LifecycleAction,
        extra: &[PatchOp],
    ) -> Result<Option<Referral>, PartnerCenterError> {
        let stage = match (&referral.status, &referral.substatus) {
            (Some(s), Some(sub)) => Stage::from_api(s, sub),
            (Some(s @ ReferralStatus::New), None) => Stage::from_api(s, &ReferralSubstatus::None),
            _ => None,
        }
        .ok_or_else(|| PartnerCenterError::UnknownStage {
            id: referral.id.clone(),
            status: String::new(),
            substatus: String::new(),
        })?;
        let mut ops = lifecycle_patch(stage, action)?;
        ops.extend(extra.iter().cloned());
        let mut s = lock(&self.state);
        s.calls.push(PcCall::ChangeStage {
            id: referral.id.clone(),
            ops: ops.clone(),
        });
        s.fail("change_stage")?;
        s.apply(
            &referral.id,
            referral.e_tag.as_deref().unwrap_or_default(),
            &ops,
        )
        .map(Some)
    }
}

#[derive(Default)]
struct CrmState {
    records: BTreeMap<String, CrmRecord>,
    /// Records `read_changes` returns next.
    changed: Vec<String>,
    upserts: Vec<RecordWrite>,
    closes: Vec<CloseRequest>,
    seq: u64,
    /// Upsert calls made, the refused ones included.
    upsert_calls: usize,
    /// What the next upsert call fails with, as a whole.
    fail_next_upsert: Option<CrmError>,
}

/// A CRM in memory: upserts by referral id or CRM id, records every write.
pub struct FakeCrm {
    kind: CrmKind,
    external_id_field: String,
    state: Mutex<CrmState>,
}

impl FakeCrm {
    pub fn new(kind: CrmKind, external_id_field: &str) -> Self {
        FakeCrm {
            kind,
            external_id_field: external_id_field.to_owned(),
            state: Mutex::new(CrmState::default()),
        }
    }

    pub fn upserts(&self) -> Vec<RecordWrite> {
        lock(&self.state).upserts.clone()
    }

    /// Upsert calls made, the refused ones included.
    pub fn upsert_calls(&self) -> usize {
        lock(&self.state).upsert_calls
    }

    /// The next upsert call fails as a whole with `error`.
    pub fn fail_next_upsert(&self, error: CrmError) {
        lock(&self.state).fail_next_upsert = Some(error);
    }

    pub fn closes(&self) -> Vec<CloseRequest> {
        lock(&self.state).closes.clone()
    }

    pub fn clear_calls(&self) {
        let mut s = lock(&self.state);
        s.upserts.clear();
        s.closes.clear();
    }

    pub fn record_of(&self, referral_id: &str) -> Option<CrmRecord> {
        lock(&self.state)
            .records
            .values()
            .find(|r| r.referral_id.as_deref() == Some(referral_id))
            .cloned()
    }

    /// A seller's edit: the record is returned by the next `read_changes`.
    pub fn edit(&self, crm_id: &str, fields: &[(&str, Value)]) {
        self.edit_with_time(crm_id, fields, None);
    }

    /// [`FakeCrm::edit`], last modified at `at`.
    pub fn edit_at(&self, crm_id: &str, fields: &[(&str, Value)], at: DateTime<Utc>) {
        self.edit_with_time(crm_id, fields, Some(at));
    }

    fn edit_with_time(&self, crm_id: &str, fields: &[(&str, Value)], at: Option<DateTime<Utc>>) {
        let mut s = lock(&self.state);
        s.seq += 1;
        let version = format!("v{}", s.seq);
        if let Some(r) = s.records.get_mut(crm_id) {
            for (f, v) in fields {
                r.fields.insert((*f).to_owned(), v.clone());
            }
            r.version = Some(version);
            if at.is_some() {
                r.modified_at = at;
            }
        }
        s.changed.push(crm_id.to_owned());
    }

    /// A new opportunity made by a seller.
    pub fn create(&self, crm_id: &str, fields: serde_json::Map<String, Value>) {
        let mut s = lock(&self.state);
        s.records.insert(
            crm_id.to_owned(),
            CrmRecord {
                crm_id: crm_id.to_owned(),
                referral_id: None,
                fields,
                version: Some("v0".into()),
                modified_at: None,
            },
        );
        s.changed.push(crm_id.to_owned());
    }

    /// Every record is read again unchanged (a re-read through the overlap).
    pub fn reread_all(&self) {
        let mut s = lock(&self.state);
        s.changed = s.records.keys().cloned().collect();
    }

    fn write(
        &self,
        s: &mut CrmState,
        key: &RecordKey,
        fields: &crate::crm::CrmFields,
    ) -> Result<WriteOk, CrmError> {
        let found = match key {
            RecordKey::CrmId(id) => s.records.contains_key(id).then(|| id.clone()),
            RecordKey::Referral(rid) => s
                .records
                .values()
                .find(|r| r.referral_id.as_deref() == Some(rid))
                .map(|r| r.crm_id.clone()),
        };
        s.seq += 1;
        let version = Some(format!("v{}", s.seq));
        let (crm_id, created) = match found {
            Some(id) => (id, false),
            None => match key {
                RecordKey::Referral(rid) => {
                    let id = format!("{}-{}", self.kind, s.seq);
                    let mut fields = crate::crm::CrmFields::new();
                    fields.insert(self.external_id_field.clone(), Value::String(rid.clone()));
                    s.records.insert(
                        id.clone(),
                        CrmRecord {
                            crm_id: id.clone(),
                            referral_id: Some(rid.clone()),
                            fields,
                            version: None,
                            modified_at: None,
                        },
                    );
                    (id, true)
                }
                RecordKey::CrmId(_) => {
                    return Err(CrmError::Invalid(format!("{key} does not exist")));
                }
            },
        };
        if let Some(r) = s.records.get_mut(&crm_id) {
            for (f, v) in fields {
                r.fields.insert(f.clone(), v.clone());
            }
            if let Some(Value::String(rid)) = r.fields.get(&self.external_id_field) {
                r.referral_id = Some(rid.clone());
            }
            r.version = version.clone();
        }
        Ok(WriteOk {
            crm_id,
            created,
            version,
        })
    }
}

#[async_trait]
impl Crm for FakeCrm {
    fn kind(&self) -> CrmKind {
        self.kind
    }

    async fn read_changes(
        &self,
        _since: Option<DateTime<Utc>>,
        _continuation: Option<&str>,
    ) -> Result<ChangePage, CrmError> {
        let mut s = lock(&self.state);
        let ids = std::mem::take(&mut s.changed);
        let changes = ids
            .iter()
            .filter_map(|id| s.records.get(id).cloned())
            .map(CrmChange::Upserted)
            .collect();
        Ok(ChangePage {
            changes,
            ..Default::default()
        })
    }

    async fn fetch(&self, key: &RecordKey) -> Result<Option<CrmRecord>, CrmError> {
        let s = lock(&self.state);
        Ok(match key {
            RecordKey::CrmId(id) => s.records.get(id).cloned(),
            RecordKey::Referral(rid) => s
                .records
                .values()
                .find(|r| r.referral_id.as_deref() == Some(rid))
                .cloned(),
        })
    }

    async fn upsert(&self, writes: &[RecordWrite]) -> Result<Vec<WriteResult>, CrmError> {
        let mut s = lock(&self.state);
        s.upsert_calls += 1;
        if let Some(e) = s.fail_next_upsert.take() {
            return Err(e);
        }
        let mut out = Vec::new();
        for w in writes {
            s.upserts.push(w.clone());
            let outcome = self.write(&mut s, &w.key, &w.fields);
            out.push(WriteResult {
                key: w.key.clone(),
                outcome,
            });
        }
        Ok(out)
    }

    async fn close(&self, closes: Vec<CloseRequest>) -> Result<Vec<WriteResult>, CrmError> {
        let mut s = lock(&self.state);
        let mut out = Vec::new();
        for c in closes {
            s.closes.push(c.clone());
            let outcome = self.write(&mut s, &c.key, &c.fields);
            out.push(WriteResult {
                key: c.key,
                outcome,
            });
        }
        Ok(out)
    }

    async fn check_metadata(&self) -> Result<Vec<MetadataProblem>, CrmError> {
        Ok(Vec::new())
    }
}
