//! Pulling changes and deciding what to do about them. Decisions for a page
//! are committed together with the cursor move, before anything is sent.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::effects::{Effect, PARTNER_CENTER, PC_UPDATE, StageAction, crm_record_key};
use super::{
    CrmSide, Cycle, Engine, PC_CURSOR, Paused, Side, SideError, SideErrorKind, SyncError,
    beginning_of_time, crm_cursor,
};
use crate::crm::{
    CloseOutcome, CloseRequest, CrmChange, CrmFields, CrmRecord, CustomerRef, RecordKey,
    RecordWrite,
};
use crate::domain::deadline::acceptance_beats_deadline;
use crate::domain::deal::describe_problems;
use crate::domain::{Problem, Referral, Stage};
use crate::mapping::{Mapping, StageReading};
use crate::partner_center::{ListFilter, PartnerCenter, ReferralPager};
use crate::store::{
    CrmKind, FailureState, HeldEdit, Link, NewFailure, ReferralSnapshot, Repo, StoreError, ts,
};

/// Everything decided for one page, committed in one transaction.
#[derive(Default)]
pub(crate) struct Plan {
    pub snapshots: Vec<ReferralSnapshot>,
    pub links: Vec<Link>,
    pub effects: Vec<Effect>,
    pub events: Vec<PlannedEvent>,
    pub failures: Vec<NewFailure>,
    pub resolved: Vec<(String, String)>,
    pub cursors: Vec<(String, String)>,
    pub expire: Vec<String>,
    pub clear_expiry: Vec<String>,
    /// Key-value settings to record with the page (e.g. [`PC_FRESH_AS_OF`]).
    pub kv: Vec<(String, String)>,
    /// (CRM, referral id, modified at) of CRM records read changed, for
    /// conflicts with Partner Center changes later in the cycle.
    pub crm_changes: Vec<(CrmKind, String, Option<DateTime<Utc>>)>,
    /// Queued Partner Center updates a conflict resolution decided afresh.
    pub overruled_pc_updates: Vec<OverruledUpdate>,
    /// A complete Partner Center listing that began then has matched the
    /// CRM changes noted up to then (but those whose Partner Center update
    /// still waits).
    pub forget_crm_changes: Option<DateTime<Utc>>,
}

/// What a conflict resolution overruled of the Partner Center update queued
/// for a referral (see [`Effect::overruled`]).
pub(crate) struct OverruledUpdate {
    pub referral_id: String,
    /// The CRM record the resolution read.
    pub crm: CrmKind,
    pub crm_id: String,
    /// Where Partner Center's value was kept (JSON Pointers).
    pub paths: Vec<String>,
    /// The resolution sends no lifecycle action.
    pub no_action: bool,
}

/// The stored rows a page's decisions need, read in one go before deciding
/// (nothing is written until the page's plan commits, so deciding from them
/// sees exactly what reading each row on demand would).
#[derive(Default)]
pub(crate) struct PageRows {
    snapshots: HashMap<String, ReferralSnapshot>,
    /// Each link once, by CRM record; a page reads most links by both keys.
    links: HashMap<(CrmKind, String), Link>,
    /// (CRM, referral id) → the CRM record id of its link (one per referral
    /// and CRM: the store's unique key).
    link_of_referral: HashMap<(CrmKind, String), String>,
    /// (target, record) of effects already queued.
    pending: HashSet<(String, String)>,
    /// kv rows the page's decisions read (Microsoft's answers and the
    /// engagements' owners); a key absent here was looked up and not found.
    kv: HashMap<String, String>,
    /// (CRM, referral id) of linked records this cycle read changed in the
    /// CRM, with when they were modified (conflicts).
    crm_changes: HashMap<(CrmKind, String), Option<DateTime<Utc>>>,
    /// Referral id → the patch of its Partner Center update queued and not
    /// sent yet (see [`with_queued`]).
    queued_ops: HashMap<String, Vec<crate::domain::PatchOp>>,
}

impl PageRows {
    fn add_referral(&mut self, r: &Repo<'_>, id: &str) -> Result<(), StoreError> {
        if !self.snapshots.contains_key(id)
            && let Some(snap) = r.get_referral(id)?
        {
            self.snapshots.insert(id.to_owned(), snap);
        }
        Ok(())
    }

    pub(crate) fn add_link_by_referral(
        &mut self,
        r: &Repo<'_>,
        crm: CrmKind,
        referral_id: &str,
    ) -> Result<(), StoreError> {
        if !self
            .link_of_referral
            .contains_key(&(crm, referral_id.to_owned()))
            && let Some(link) = r.link_by_referral(crm, referral_id)?
        {
            self.keep_link(link);
        }
        Ok(())
    }

    fn keep_link(&mut self, link: Link) {
        if let Some(referral_id) = &link.referral_id {
            self.link_of_referral
                .insert((link.crm, referral_id.clone()), link.crm_id.clone());
        }
        self.links.insert((link.crm, link.crm_id.clone()), link);
    }

    fn add_link_by_crm_id(
        &mut self,
        r: &Repo<'_>,
        crm: CrmKind,
        crm_id: &str,
    ) -> Result<(), StoreError> {
        if !self.links.contains_key(&(crm, crm_id.to_owned()))
            && let Some(link) = r.link_by_crm_id(crm, crm_id)?
        {
            self.keep_link(link);
        }
        Ok(())
    }

    fn add_pending(&mut self, r: &Repo<'_>, target: &str, record: &str) -> Result<(), StoreError> {
        let key = (target.to_owned(), record.to_owned());
        if !self.pending.contains(&key) && r.has_pending_effect(target, record)? {
            self.pending.insert(key);
        }
        Ok(())
    }

    fn add_queued_update(&mut self, r: &Repo<'_>, referral_id: &str) -> Result<(), StoreError> {
        if self.queued_ops.contains_key(referral_id) {
            return Ok(());
        }
        if let Some(entry) = r.pending_effect(PARTNER_CENTER, PC_UPDATE, referral_id)?
            && let Ok(Effect::PcUpdate { ops, .. }) =
                serde_json::from_str::<Effect>(entry.payload.text())
            && !ops.is_empty()
        {
            self.queued_ops.insert(referral_id.to_owned(), ops);
        }
        Ok(())
    }

    fn queued_ops(&self, referral_id: &str) -> &[crate::domain::PatchOp] {
        self.queued_ops
            .get(referral_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub(crate) fn add_kv(&mut self, r: &Repo<'_>, key: String) -> Result<(), StoreError> {
        if !self.kv.contains_key(&key)
            && let Some(value) = r.kv_get(&key)?
        {
            self.kv.insert(key, value);
        }
        Ok(())
    }

    pub(crate) fn kv(&self, key: &str) -> Option<&str> {
        self.kv.get(key).map(String::as_str)
    }

    fn has_pending(&self, target: &str, record: &str) -> bool {
        self.pending
            .contains(&(target.to_owned(), record.to_owned()))
    }

    fn add_crm_change(
        &mut self,
        r: &Repo<'_>,
        crm: CrmKind,
        referral_id: &str,
    ) -> Result<(), StoreError> {
        if let Some(modified_at) = r.pending_crm_change(crm, referral_id)? {
            self.crm_changes
                .insert((crm, referral_id.to_owned()), modified_at);
        }
        Ok(())
    }

    /// `Some` (with when it was modified) if this cycle read the CRM record
    /// of `referral_id` changed.
    fn crm_change(&self, crm: CrmKind, referral_id: &str) -> Option<Option<DateTime<Utc>>> {
        self.crm_changes
            .get(&(crm, referral_id.to_owned()))
            .copied()
    }

    fn snapshot(&self, id: &str) -> Option<&ReferralSnapshot> {
        self.snapshots.get(id)
    }

    pub(crate) fn link_by_referral(&self, crm: CrmKind, referral_id: &str) -> Option<&Link> {
        let crm_id = self.link_of_referral.get(&(crm, referral_id.to_owned()))?;
        self.links.get(&(crm, crm_id.clone()))
    }

    fn link_by_crm_id(&self, crm: CrmKind, crm_id: &str) -> Option<&Link> {
        self.links.get(&(crm, crm_id.to_owned()))
    }
}

/// A CRM page's record as its rows are read: CRM id, the referral id it
/// holds with its projection hash, and whether it was upserted (not deleted).
type CrmPageKey = (String, Option<(String, String)>, bool);

/// The referral id a CRM record holds, from the mapped field or the adapter.
fn referral_id_of(m: &Mapping, record: &CrmRecord) -> Option<String> {
    m.referral_id(&record.fields)
        .map(str::to_owned)
        .or_else(|| record.referral_id.clone().filter(|s| !s.trim().is_empty()))
}

/// When the last complete Partner Center listing began: every change made
/// before then has been read. The local expiry acts only on referrals whose
/// deadline is at or before it (fresh data), never on a stale snapshot.
pub(crate) const PC_FRESH_AS_OF: &str = "partner_center.fresh_as_of";

pub(crate) struct PlannedEvent {
    pub referral_id: String,
    pub side: String,
    pub kind: String,
    pub message: String,
    pub detail: Option<Value>,
}

impl Plan {
    pub fn event(&mut self, referral_id: &str, side: &str, kind: &str, message: impl Into<String>) {
        self.events.push(PlannedEvent {
            referral_id: referral_id.to_owned(),
            side: side.to_owned(),
            kind: kind.to_owned(),
            message: message.into(),
            detail: None,
        });
    }
}

/// The referral JSON as the CRM should see it: a referral expired here is
/// shown as Closed/Expired even while Partner Center still says New.
pub(crate) fn effective_json(snapshot: &ReferralSnapshot) -> (Value, Option<Stage>) {
    effective(snapshot.raw.value(), snapshot)
}

/// [`effective_json`] of `json`, the snapshot's referral as a tree.
fn effective(mut json: Value, snapshot: &ReferralSnapshot) -> (Value, Option<Stage>) {
    if snapshot.locally_expired
        && snapshot.stage != Some(Stage::Accepted)
        && !snapshot.stage.is_some_and(Stage::is_archived)
    {
        let (status, substatus) = Stage::Expired.api();
        json["status"] = json!(status.as_str());
        json["substatus"] = json!(substatus.as_str());
        if json
            .get("statusReason")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            json["statusReason"] = json!(EXPIRED_REASON);
        }
        return (json, Some(Stage::Expired));
    }
    super::seller::add_answer_by(&mut json, snapshot, snapshot.stage);
    (json, snapshot.stage)
}

/// Notes the CRM records a page read changed, for conflicts later in the cycle.
fn note_crm_changes(
    r: &Repo<'_>,
    changes: &[(CrmKind, String, Option<DateTime<Utc>>)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for (crm, referral_id, modified_at) in changes {
        r.note_crm_change(*crm, referral_id, *modified_at, now)?;
    }
    Ok(())
}

pub(crate) const EXPIRED_REASON: &str = "Expired: not answered within the 14-day window";

fn fields_of(v: &Option<Value>) -> CrmFields {
    match v {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

/// The stage fields (and reason) of a closed stage, to close an opportunity.
pub(crate) fn close_fields(mapping: &Mapping, referral: &Value, stage: Stage) -> CrmFields {
    let full = mapping.to_crm(referral, stage);
    let mut keep: Vec<&str> = mapping.stages.fields();
    if let Some(r) = &mapping.stages.reason_field {
        keep.push(r);
    }
    keep.extend(archived_fields(mapping));
    let mut fields: CrmFields = full
        .into_iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .collect();
    // A closed deal has nothing left to fix: a refusal shown on it goes
    // (before the row closes, where a closed row is read-only).
    if let Some(f) = &mapping.error_field {
        fields.insert(f.clone(), Value::Null);
    }
    fields
}

/// What is still written to a closed opportunity: the answer-by date
/// (cleared) and the fields only Partner Center fills (`to_crm`: the MSX
/// id, the deal registration status…).
fn archived_fields(mapping: &Mapping) -> Vec<&str> {
    let mut out: Vec<&str> = mapping.status.answer_by.as_deref().into_iter().collect();
    out.extend(
        mapping
            .fields
            .iter()
            .filter(|r| r.direction == crate::mapping::FieldDirection::ToCrm)
            .filter_map(|r| r.crm.as_deref()),
    );
    out
}

pub(crate) fn close_outcome(stage: Stage) -> CloseOutcome {
    if stage == Stage::Won {
        CloseOutcome::Won
    } else {
        CloseOutcome::Lost
    }
}

/// The customer of a referral, for finding or creating the CRM account.
pub(crate) fn customer_ref(r: &Referral) -> Option<CustomerRef> {
    let c = r.customer_profile.as_ref()?;
    let name = c.name.clone().filter(|n| !n.trim().is_empty())?;
    let a = c.address.clone().unwrap_or_default();
    Some(CustomerRef {
        name,
        duns: c.duns(),
        address_line1: a.address_line1,
        city: a.city,
        state: a.state,
        postal_code: a.postal_code,
        country: a.country,
        contact: c
            .team
            .as_ref()
            .and_then(|t| t.first())
            .map(|m| crate::crm::ContactRef {
                first_name: m.first_name.clone(),
                last_name: m.last_name.clone().unwrap_or_default(),
                email: m.email.clone(),
                phone: m.phone_number.clone(),
            }),
    })
}

/// Whether an effect is the one an operator's quarantine still holds.
fn quarantined(r: &Repo<'_>, effect: &Effect) -> Result<bool, StoreError> {
    let Some(f) = r.failure_for(&effect.record_key(), effect.target())? else {
        return Ok(false);
    };
    if !matches!(f.state, FailureState::Open | FailureState::Ignored) {
        return Ok(false);
    }
    let held = f
        .raw
        .as_deref()
        .and_then(|raw| serde_json::from_str::<Value>(raw).ok())
        .and_then(|v| v.get("effect").cloned());
    Ok(held.is_some() && held == serde_json::to_value(effect).ok())
}

/// What a CRM record asks of Partner Center, decided against the referral.
pub(crate) struct CrmDecision {
    pub action: Option<StageAction>,
    pub ops: Vec<crate::domain::PatchOp>,
    pub upgrade_to_co_sell: bool,
    /// With `upgrade_to_co_sell`: the Microsoft-targeted referral's draft.
    pub invitation: Option<Value>,
    /// Problems to show on the CRM record (error field) and in `failures`.
    pub problems: Vec<Problem>,
    /// Things to note in the referral's history.
    pub notes: Vec<(String, String)>,
    /// The record asks to decline the referral (sent, or refused for want of
    /// a reason): only notes may go, and only with the decline.
    pub declining: bool,
    /// CRM fields whose change is still to be sent: the notes of a decline
    /// that waits for its reason. They are not taken as seen, so the change
    /// still counts once the decline can go.
    pub held: Vec<String>,
}

/// Sets the value at a JSON Pointer, making the objects on the way (an index
/// into an existing array stays in it); a path that cannot be set is left.
fn set_pointer(doc: &mut Value, pointer: &str, value: Value) {
    let Some(rest) = pointer.strip_prefix('/') else {
        if pointer.is_empty() {
            *doc = value;
        }
        return;
    };
    let parts: Vec<String> = rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut at = doc;
    for part in parents {
        at = match at {
            Value::Array(items) => {
                match part.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    Some(item) => item,
                    None => return,
                }
            }
            other => {
                if !other.is_object() {
                    *other = Value::Object(Map::new());
                }
                let Value::Object(map) = other else { return };
                map.entry(part.clone()).or_insert(Value::Null)
            }
        };
    }
    match at {
        Value::Array(items) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *slot = value;
            } else if last == "-" {
                items.push(value);
            }
        }
        other => {
            if !other.is_object() {
                *other = Value::Object(Map::new());
            }
            if let Value::Object(map) = other {
                map.insert(last.clone(), value);
            }
        }
    }
}

/// The referral as Partner Center will hold it once its queued update lands
/// (`queued`: that update's patch). Decisions about the referral are made
/// against it, as they would have been had the update gone out at once: a
/// CRM value edited back to what Partner Center still holds is sent again
/// (the queued value must not reach Partner Center), and the CRM is not
/// written the values it is about to send. An operation on a path Partner
/// Center changed since `before` (the referral's last stored copy) is not
/// applied: Partner Center's newer value stands for the conflict it makes.
fn with_queued(
    mut json: Value,
    queued: &[crate::domain::PatchOp],
    before: Option<&Value>,
) -> Value {
    for op in queued {
        if before.is_some_and(|b| b.pointer(&op.path) != json.pointer(&op.path)) {
            continue;
        }
        set_pointer(&mut json, &op.path, op.value.clone());
    }
    json
}

/// Where Partner Center keeps a referral's notes (JSON Pointer).
const NOTES_POINTER: &str = "/details/notes";

/// Whether a patch operation sets the referral's notes.
pub(crate) fn sets_notes(op: &crate::domain::PatchOp) -> bool {
    op.path == NOTES_POINTER || op.path.starts_with(&format!("{NOTES_POINTER}/"))
}

/// The CRM fields that feed the referral's notes.
fn notes_fields(mapping: &Mapping) -> Vec<String> {
    let mut out = Vec::new();
    for rule in mapping
        .fields
        .iter()
        .filter(|r| r.direction.writes_partner_center() && !r.create_only)
        .filter(|r| pointer_prefix(&r.path) == NOTES_POINTER)
    {
        match (&rule.crm, rule.template()) {
            (Some(f), _) => out.push(f.clone()),
            (None, Some(t)) => out.extend(t.fields().map(str::to_owned)),
            (None, None) => {}
        }
    }
    out
}

/// The CRM fields of the fields both sides hold (`direction = "both"`, not
/// create-only): the name, the value, the close date, the notes…
fn both_way_fields(mapping: &Mapping) -> Vec<String> {
    let mut out = Vec::new();
    for rule in mapping
        .fields
        .iter()
        .filter(|r| r.direction == crate::mapping::FieldDirection::Both && !r.create_only)
    {
        match (&rule.crm, rule.template()) {
            (Some(f), _) => out.push(f.clone()),
            (None, Some(t)) => out.extend(t.fields().map(str::to_owned)),
            (None, None) => {}
        }
    }
    out
}

/// JSON Pointer prefix of a mapping path (up to its first `[*]`).
fn pointer_prefix(path: &crate::mapping::FieldPath) -> String {
    let concrete: Vec<crate::mapping::Segment> = path
        .segments()
        .iter()
        .take_while(|s| !matches!(s, crate::mapping::Segment::All))
        .cloned()
        .collect();
    crate::mapping::path::pointer(&concrete)
}

fn same_value(a: Option<&Value>, b: Option<&Value>) -> bool {
    let empty = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_str() == Some(""));
    (empty(a) && empty(b)) || a == b
}

/// The referral paths a CRM edit did not ask for: those of fields whose CRM
/// value is unchanged since the record was last seen (`previous`), so a value
/// Partner Center changed meanwhile is not overwritten by the CRM's older copy.
fn unchanged_paths(
    mapping: &Mapping,
    current: &CrmFields,
    previous: Option<&CrmFields>,
    referral: &Value,
) -> Vec<String> {
    let mut stale: Vec<String> = Vec::new();
    if let Some(prev) = previous {
        for rule in mapping
            .fields
            .iter()
            .filter(|r| r.direction.writes_partner_center())
        {
            let unchanged = match (&rule.crm, rule.template()) {
                (Some(f), _) => same_value(current.get(f), prev.get(f)),
                (None, Some(t)) => t.fields().all(|f| same_value(current.get(f), prev.get(f))),
                (None, None) => true,
            };
            if unchanged {
                stale.push(pointer_prefix(&rule.path));
            }
        }
    }
    // The CRM id in Partner Center belongs to the CRM that first set it: two
    // CRMs must not take turns overwriting it.
    let has_reference = referral
        .get("externalReferenceId")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty());
    if has_reference {
        stale.push("/externalReferenceId".into());
    }
    stale
}

/// Keeps only patch operations a CRM edit asked for: none under `stale`
/// (see [`unchanged_paths`]).
fn only_changed_fields(
    ops: Vec<crate::domain::PatchOp>,
    stale: &[String],
) -> Vec<crate::domain::PatchOp> {
    let under = |path: &str, p: &str| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    ops.into_iter()
        .filter(|op| !stale.iter().any(|p| !p.is_empty() && under(&op.path, p)))
        .collect()
}

/// Decides from a CRM record: lifecycle action, field patch, co-sell upgrade.
/// `previous` is the record as last seen: only fields changed since then are
/// sent (all of them when it is unknown).
#[allow(clippy::too_many_arguments)]
pub(crate) fn decide_from_crm(
    mapping: &Mapping,
    crm_fields: &CrmFields,
    previous: Option<&CrmFields>,
    referral: &Value,
    stage: Stage,
    locally_expired: bool,
    deadline: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> CrmDecision {
    let mut proposal = mapping.proposed_changes(crm_fields, referral, stage);
    // An upgrade sends all it needs, also what the CRM held unchanged (the
    // notes for Microsoft, the share-with-sellers consent).
    let upgrade_ops: Vec<crate::domain::PatchOp> = if proposal.kind_change.is_some() {
        let (upgrade, rest) = std::mem::take(&mut proposal.patch)
            .into_iter()
            .partition(|op| crate::mapping::is_upgrade_path(&op.path));
        proposal.patch = rest;
        upgrade
    } else {
        Vec::new()
    };
    let stale = unchanged_paths(mapping, crm_fields, previous, referral);
    let mut ops = only_changed_fields(proposal.patch, &stale);
    ops.extend(upgrade_ops);
    proposal.withheld = only_changed_fields(std::mem::take(&mut proposal.withheld), &stale);
    let mut d = CrmDecision {
        action: None,
        // An empty CRM field never erases a Partner Center value.
        ops: ops.into_iter().filter(|op| !op.value.is_null()).collect(),
        upgrade_to_co_sell: proposal.kind_change.is_some(),
        invitation: proposal.invitation.as_ref().map(Referral::to_json),
        problems: proposal.problems,
        notes: Vec::new(),
        declining: false,
        held: Vec::new(),
    };
    let reason_field = mapping
        .stages
        .reason_field
        .as_deref()
        .unwrap_or("the reason field");
    match proposal.stage {
        StageReading::Unchanged => {}
        StageReading::Accept => {
            let late = locally_expired || deadline.is_some_and(|dl| now >= dl);
            if late {
                d.ops.clear();
                d.upgrade_to_co_sell = false;
                d.problems.push(Problem {
                    path: "status".into(),
                    reason: "the referral expired before it was accepted (no answer within 14 days); it cannot be accepted any more".into(),
                });
                d.notes.push((
                    "refused".into(),
                    "late acceptance from the CRM refused: the referral had expired".into(),
                ));
            } else {
                d.action = Some(StageAction::Accept);
            }
        }
        StageReading::Decline { reason } => {
            // A decline archives the referral: the notes typed with it go in
            // the same PATCH, every other edit is withheld (and said so).
            d.declining = true;
            d.upgrade_to_co_sell = false;
            let (notes, others): (Vec<_>, Vec<_>) = std::mem::take(&mut d.ops)
                .into_iter()
                .chain(std::mem::take(&mut proposal.withheld))
                .partition(sets_notes);
            proposal.withheld = others;
            match reason.filter(|r| !r.trim().is_empty()) {
                Some(reason) => {
                    d.action = Some(StageAction::Decline { reason });
                    d.ops = notes.into_iter().filter(|op| !op.value.is_null()).collect();
                }
                None => {
                    d.problems.push(Problem {
                        path: "statusReason".into(),
                        reason: format!(
                            "declining a referral requires a reason: fill in {reason_field}"
                        ),
                    });
                    if !notes.is_empty() {
                        d.held = notes_fields(mapping);
                    }
                }
            }
        }
        StageReading::Win => d.action = Some(StageAction::Win),
        StageReading::Lose { reason } => d.action = Some(StageAction::Lose { reason }),
        StageReading::NotAllowed { from, to } => {
            let reason = if from == Stage::Received {
                format!(
                    "the referral must be accepted before it can be {to}: move the opportunity out of the on-hold stage first"
                )
            } else {
                format!("a deal that is {from} cannot move to {to} in Partner Center")
            };
            d.problems.push(Problem {
                path: "status".into(),
                reason,
            });
        }
        StageReading::Unknown(values) => d.notes.push((
            "stage".into(),
            format!(
                "the CRM stage values {} match no mapped stage; nothing sent",
                Value::Object(values)
            ),
        )),
    }
    if d.declining && !proposal.withheld.is_empty() {
        d.notes.push((
            "withheld".into(),
            format!(
                "CRM edits made with the decline are not sent to Partner Center (only notes go with a decline): {}",
                proposal
                    .withheld
                    .iter()
                    .map(|o| o.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if stage.is_archived() && !proposal.withheld.is_empty() {
        d.notes.push((
            "withheld".into(),
            format!(
                "CRM edits to an archived ({stage}) deal are not sent to Partner Center: {}",
                proposal
                    .withheld
                    .iter()
                    .map(|o| o.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    d
}

/// What an accepted referral still lacks of its CRM record: the fields the
/// mapping sends only to Partner Center (`to_partner_center`: the CRM id,
/// the partner contact…) whose CRM values differ from the referral's. While
/// the referral was received they were held (edits on hold are not sent),
/// and the acceptance is the lifecycle patch alone, so that no field value
/// can make it fail; these follow it, as a patch of their own. A CRM id
/// another CRM already set is left alone, as for any edit, and so is the
/// co-sell request (`inviteContext`: Microsoft's, on a received referral).
pub(crate) fn held_until_accepted(
    mapping: &Mapping,
    crm_fields: &CrmFields,
    referral: &Value,
) -> Vec<crate::domain::PatchOp> {
    let mut only = mapping.clone();
    only.fields
        .retain(|r| r.direction == crate::mapping::FieldDirection::ToPartnerCenter);
    let proposal = only.proposed_changes(crm_fields, referral, Stage::Accepted);
    let stale = unchanged_paths(&only, crm_fields, None, referral);
    only_changed_fields(proposal.patch, &stale)
        .into_iter()
        .filter(|op| !op.value.is_null() && !crate::mapping::is_upgrade_path(&op.path))
        .collect()
}

impl Engine {
    // ---- committing ------------------------------------------------------------

    /// Commits a page's plan in one transaction, on the blocking pool (the
    /// commit waits for the disk).
    pub(crate) async fn commit(&self, plan: Plan, cycle: &mut Cycle) -> Result<(), SyncError> {
        self.beat(0);
        if cycle.dry_run {
            for e in &plan.effects {
                cycle.summary.planned.push(e.describe());
            }
            // Conflicts are found in a dry run too (in its TEMP copy: nothing
            // persists, and no write lock on the store is taken).
            if !plan.crm_changes.is_empty() {
                let (changes, now) = (plan.crm_changes, cycle.now);
                self.read_db(move |r| note_crm_changes(r, &changes, now))
                    .await?;
            }
            return Ok(());
        }
        let now = cycle.now;
        self.hit("plan.before_commit")?;
        self.write_db(move |r| {
            for id in &plan.clear_expiry {
                r.clear_local_expiry(id)?;
            }
            for s in &plan.snapshots {
                r.upsert_referral(s)?;
            }
            for id in &plan.expire {
                r.mark_locally_expired(id)?;
            }
            for l in &plan.links {
                upsert_link(r, l)?;
            }
            for o in &plan.overruled_pc_updates {
                overrule_queued_update(r, o, now)?;
            }
            for e in &plan.effects {
                if quarantined(r, e)? {
                    continue;
                }
                queue_effect(r, e, now)?;
            }
            for ev in &plan.events {
                r.append_event(
                    &ev.referral_id,
                    now,
                    &ev.side,
                    &ev.kind,
                    &ev.message,
                    ev.detail.as_ref(),
                )?;
            }
            for f in &plan.failures {
                r.record_failure(f, now)?;
            }
            for (record, side) in &plan.resolved {
                r.resolve_failure(record, side)?;
            }
            for (source, position) in &plan.cursors {
                r.set_cursor(source, position, now)?;
            }
            for (key, value) in &plan.kv {
                r.kv_set(key, value, now)?;
            }
            if let Some(listed_from) = plan.forget_crm_changes {
                // A change whose update still waits stays an edit on this
                // side until the update is done (see `exec_pc_update`).
                r.forget_crm_changes(listed_from, PARTNER_CENTER, PC_UPDATE)?;
            }
            note_crm_changes(r, &plan.crm_changes, now)
        })
        .await?;
        Ok(())
    }

    // ---- CRM -------------------------------------------------------------------

    pub(crate) async fn pull_crm(
        &self,
        side: &CrmSide,
        full: bool,
        cycle: &mut Cycle,
    ) -> Result<(), SyncError> {
        let key = crm_cursor(side.kind);
        let cursor = {
            let key = key.clone();
            self.read_db(move |r| r.cursor(&key)).await?
        };
        let overlap = chrono::Duration::from_std(self.settings.overlap).unwrap_or_default();
        let (since, mut continuation) = match cursor.as_deref() {
            _ if full => (None, None),
            Some(c) if c.starts_with("delta:") => (None, Some(c["delta:".len()..].to_owned())),
            Some(c) => (
                DateTime::parse_from_rfc3339(c)
                    .ok()
                    .map(|t| t.with_timezone(&Utc) - overlap),
                None,
            ),
            None => (None, None),
        };
        let mut high_water = cursor
            .as_deref()
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .map(|t| t.with_timezone(&Utc));
        loop {
            let page = match side.crm.read_changes(since, continuation.as_deref()).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(side = side.kind.as_str(), error = %e, "reading CRM changes failed");
                    cycle.summary.errors.push(SideError::crm(side.kind, &e));
                    if let crate::crm::CrmError::Paused { until, .. } = &e {
                        cycle
                            .summary
                            .paused
                            .push(Paused::throttled(Side::Crm(side.kind), Some(*until)));
                    }
                    return Ok(());
                }
            };
            self.beat(page.changes.len() as u64);
            // The keys of the page's records: (CRM id, referral id held and
            // projection hash, upserted).
            let keys: Vec<CrmPageKey> = page
                .changes
                .iter()
                .map(|change| match change {
                    CrmChange::Upserted(record) => (
                        record.crm_id.clone(),
                        referral_id_of(&side.mapping, record)
                            .map(|rid| (rid, side.mapping.crm_projection_hash(&record.fields))),
                        true,
                    ),
                    CrmChange::Deleted { crm_id } => (crm_id.clone(), None, false),
                })
                .collect();
            let kind = side.kind;
            let rows = self
                .read_db(move |r| {
                    let mut rows = PageRows::default();
                    for (crm_id, rid, upserted) in &keys {
                        rows.add_link_by_crm_id(r, kind, crm_id)?;
                        if !upserted {
                            continue;
                        }
                        if let Some((rid, crm_hash)) = rid {
                            rows.add_link_by_referral(r, kind, rid)?;
                            // A record read back exactly as last seen (the
                            // echo of our own write) is skipped before its
                            // referral is needed (see plan_crm_record): its
                            // snapshot is not loaded.
                            let as_seen = rows
                                .link_by_crm_id(kind, crm_id)
                                .or(rows.link_by_referral(kind, rid))
                                .is_some_and(|l| l.crm_hash.as_deref() == Some(crm_hash.as_str()));
                            if !as_seen {
                                rows.add_referral(r, rid)?;
                                rows.add_queued_update(r, rid)?;
                            }
                        } else if let Some(linked) = rows
                            .link_by_crm_id(kind, crm_id)
                            .and_then(|l| l.referral_id.clone())
                        {
                            // Created, its referral id not yet written back.
                            rows.add_pending(r, kind.as_str(), &linked)?;
                        } else {
                            // A candidate new deal.
                            rows.add_pending(r, PARTNER_CENTER, &crm_record_key(kind, crm_id))?;
                        }
                    }
                    Ok((rows, keys))
                })
                .await?;
            let (rows, keys) = rows;
            let mut plan = Plan::default();
            for (change, (_, held, _)) in page.changes.iter().zip(&keys) {
                cycle.summary.crm(side.kind).read += 1;
                match change {
                    CrmChange::Upserted(record) => {
                        if let Some(m) = record.modified_at {
                            high_water = Some(high_water.map_or(m, |h| h.max(m)));
                        }
                        let span = tracing::debug_span!("record", crm = side.kind.as_str(), crm_id = %record.crm_id);
                        let _g = span.enter();
                        let crm_hash = held.as_ref().map(|(_, hash)| hash.as_str());
                        self.plan_crm_record(side, record, crm_hash, &rows, cycle, &mut plan)?;
                    }
                    CrmChange::Deleted { crm_id } => {
                        if let Some(link) = rows.link_by_crm_id(side.kind, crm_id)
                            && let Some(rid) = &link.referral_id
                        {
                            plan.event(rid, side.kind.as_str(), "deleted", format!("the {} opportunity {crm_id} was deleted; the referral is kept in Partner Center", side.kind));
                        }
                    }
                }
            }
            if let Some(h) = page.high_water {
                high_water = Some(high_water.map_or(h, |x| x.max(h)));
            }
            match (&page.continuation, &page.delta_token) {
                (None, Some(token)) => plan.cursors.push((key.clone(), format!("delta:{token}"))),
                _ => {
                    if let Some(h) = high_water {
                        plan.cursors.push((key.clone(), ts(h)));
                    }
                }
            }
            let delta = page.delta_token.is_some();
            self.commit(plan, cycle).await?;
            match page.continuation {
                Some(c) => continuation = Some(c),
                None => {
                    if !delta {
                        self.cursor_to_cycle_start(&key, high_water, cycle).await?;
                    }
                    break;
                }
            }
        }
        Ok(())
    }

    /// `crm_hash`: the record's projection hash, when the page's keys hold it.
    fn plan_crm_record(
        &self,
        side: &CrmSide,
        record: &CrmRecord,
        crm_hash: Option<&str>,
        rows: &PageRows,
        cycle: &mut Cycle,
        plan: &mut Plan,
    ) -> Result<(), SyncError> {
        let m = &side.mapping;
        let kind = side.kind;
        let fields = &record.fields;
        let Some(rid) = referral_id_of(m, record) else {
            return self.plan_new_deal(side, record, rows, cycle, plan);
        };
        let mut link = match rows
            .link_by_crm_id(kind, &record.crm_id)
            .or(rows.link_by_referral(kind, &rid))
        {
            Some(l) => l.clone(),
            None => Link::new(kind, &record.crm_id, Some(&rid), cycle.now),
        };
        // Read back exactly as last seen (our own write, a re-read through the
        // overlap): nothing to do, and no need to load the referral.
        let crm_hash = crm_hash.map_or_else(|| m.crm_projection_hash(fields), str::to_owned);
        if link.crm_hash.as_deref() == Some(crm_hash.as_str()) {
            cycle.summary.crm(kind).skipped += 1;
            return Ok(());
        }
        let Some(snapshot) = rows.snapshot(&rid) else {
            cycle.summary.crm(kind).failed += 1;
            plan.failures.push(NewFailure {
                record: crm_record_key(kind, &record.crm_id),
                side: kind.as_str().to_owned(),
                kind: "unknown_referral".into(),
                message: format!("the opportunity holds referral id {rid:?}, which Partner Center has not shown us"),
                hint: "check the referral id on the opportunity; the signed-in account must be able to see the referral (Referrals Admin)".into(),
                raw: None,
            });
            return Ok(());
        };
        plan.crm_changes
            .push((kind, rid.clone(), record.modified_at));
        let (json, stage) = effective_json(snapshot);
        let json = with_queued(json, rows.queued_ops(&rid), None);
        let Some(stage) = stage else {
            plan.event(&rid, kind.as_str(), "stage", format!("Partner Center status {}/{} is not one cosell-sync knows; CRM changes are not sent", snapshot.status, snapshot.substatus));
            cycle.summary.crm(kind).skipped += 1;
            return Ok(());
        };
        let previous = match &link.crm_fields {
            Some(Value::Object(p)) => Some(p.clone()),
            _ => None,
        };
        let d = decide_from_crm(
            m,
            fields,
            previous.as_ref(),
            &json,
            stage,
            snapshot.locally_expired,
            snapshot.deadline,
            cycle.now,
        );
        let mut seen = fields.clone();
        for f in &d.held {
            match previous.as_ref().and_then(|p| p.get(f)) {
                Some(v) => seen.insert(f.clone(), v.clone()),
                None => seen.remove(f),
            };
        }
        link.held_edit = None;
        if stage == Stage::Received && d.action.is_none() && !d.declining {
            // On hold: an edit of a field both sides hold is not sent, and
            // not taken as seen either. The last seen value stays the base,
            // so the move out of on-hold sends the edit, and Partner Center's
            // unchanged value is never written back over it. The edited
            // values are kept beside it: a Partner Center change of the same
            // field read later is a conflict the owner rule settles.
            let mut held = Map::new();
            for f in both_way_fields(m) {
                if let Some(v) = previous.as_ref().and_then(|p| p.get(&f)) {
                    if let Some(read) = fields
                        .get(&f)
                        .filter(|read| !same_value(Some(read), Some(v)))
                    {
                        held.insert(f.clone(), read.clone());
                    }
                    seen.insert(f, v.clone());
                }
            }
            if !held.is_empty() {
                link.held_edit = Some(HeldEdit {
                    fields: held,
                    modified_at: record.modified_at,
                });
            }
        }
        self.plan_decision(side, record, &rid, d, plan, cycle);
        link.crm_id = record.crm_id.clone();
        link.referral_id = Some(rid);
        link.crm_fields = Some(Value::Object(seen));
        link.crm_hash = Some(crm_hash);
        link.crm_version = record.version.clone();
        link.updated_at = cycle.now;
        plan.links.push(link);
        Ok(())
    }

    /// Turns a decision into effects, events and error-field writes.
    pub(crate) fn plan_decision(
        &self,
        side: &CrmSide,
        record: &CrmRecord,
        rid: &str,
        d: CrmDecision,
        plan: &mut Plan,
        cycle: &mut Cycle,
    ) {
        let kind = side.kind;
        for (k, msg) in &d.notes {
            plan.event(rid, kind.as_str(), k, msg.clone());
        }
        if d.action.is_some() || !d.ops.is_empty() || d.upgrade_to_co_sell {
            plan.effects.push(Effect::PcUpdate {
                referral_id: rid.to_owned(),
                crm: kind,
                crm_id: record.crm_id.clone(),
                action: d.action.clone(),
                ops: d.ops.clone(),
                upgrade_to_co_sell: d.upgrade_to_co_sell,
                invitation: d.invitation.clone().filter(|_| d.upgrade_to_co_sell),
                crm_fields: record.fields.clone(),
                after_acceptance: false,
            });
        }
        self.plan_error_field(side, record, Some(rid), &d.problems, plan, cycle);
    }

    /// Shows problems on the CRM record (or clears an old message), and keeps
    /// them in `failures`. Writes only when the field would change.
    fn plan_error_field(
        &self,
        side: &CrmSide,
        record: &CrmRecord,
        rid: Option<&str>,
        problems: &[Problem],
        plan: &mut Plan,
        cycle: &mut Cycle,
    ) {
        let kind = side.kind;
        let record_key = rid
            .map(str::to_owned)
            .unwrap_or_else(|| crm_record_key(kind, &record.crm_id));
        if problems.is_empty() {
            plan.resolved
                .push((record_key.clone(), kind.as_str().to_owned()));
        } else {
            cycle.summary.crm(kind).failed += 1;
            let text = describe_problems(problems);
            plan.failures.push(NewFailure {
                record: record_key.clone(),
                side: kind.as_str().to_owned(),
                kind: "invalid".into(),
                message: text.clone(),
                hint: if kind.creates_closed() {
                    format!(
                        "fix the opportunity {} in {kind}; it is synced again once it changes",
                        record.crm_id
                    )
                } else {
                    format!(
                        "fix the opportunity {} in {kind} (a closed one: reopen it, fix it, close it again); it is synced again once it changes",
                        record.crm_id
                    )
                },
                raw: None,
            });
            if let Some(r) = rid {
                plan.event(r, kind.as_str(), "invalid", text);
            }
        }
        // A closed Dataverse row takes no edit (and the adapter never
        // reopens one): the refusal stays in `failures`, with its hint.
        let m = &side.mapping;
        if !kind.creates_closed()
            && [Stage::Won, Stage::Lost, Stage::Declined, Stage::Expired]
                .into_iter()
                .any(|s| m.stages.shows(&record.fields, s))
        {
            return;
        }
        let Some(update) = m.error_update(problems) else {
            return;
        };
        let differs = update.iter().any(|(f, v)| {
            let current = record.fields.get(f).cloned().unwrap_or(Value::Null);
            let empty = |v: &Value| v.is_null() || v.as_str().is_some_and(str::is_empty);
            !(current == *v || (empty(&current) && empty(v)))
        });
        if differs {
            plan.effects.push(Effect::CrmUpsert {
                crm: kind,
                write: RecordWrite {
                    key: RecordKey::CrmId(record.crm_id.clone()),
                    fields: update,
                    if_match: None,
                    customer: None,
                },
                referral_id: None,
                pc_hash: None,
            });
        }
    }

    fn plan_new_deal(
        &self,
        side: &CrmSide,
        record: &CrmRecord,
        rows: &PageRows,
        cycle: &mut Cycle,
        plan: &mut Plan,
    ) -> Result<(), SyncError> {
        let kind = side.kind;
        let m = &side.mapping;
        // Created already, the referral id not yet written back: make sure it will be.
        if let Some(link) = rows.link_by_crm_id(kind, &record.crm_id)
            && let Some(rid) = &link.referral_id
        {
            if !rows.has_pending(kind.as_str(), rid) {
                let mut fields = CrmFields::new();
                fields.insert(m.external_id.clone(), Value::String(rid.clone()));
                plan.effects.push(Effect::CrmUpsert {
                    crm: kind,
                    write: RecordWrite {
                        key: RecordKey::CrmId(record.crm_id.clone()),
                        fields,
                        if_match: None,
                        customer: None,
                    },
                    referral_id: Some(rid.clone()),
                    pc_hash: None,
                });
            }
            return Ok(());
        }
        if !m.wants_new_deal(&record.fields) {
            cycle.summary.crm(kind).skipped += 1;
            return Ok(());
        }
        let record_key = crm_record_key(kind, &record.crm_id);
        if rows.has_pending(PARTNER_CENTER, &record_key) {
            cycle.summary.crm(kind).skipped += 1;
            return Ok(());
        }
        let mut new = m.new_deal(&record.fields);
        if new
            .referral
            .external_reference_id
            .as_deref()
            .is_none_or(str::is_empty)
        {
            // The look-up that makes creates crash-safe matches on it.
            new.referral.external_reference_id = Some(record.crm_id.clone());
        }
        if new.problems.is_empty() {
            plan.effects.push(Effect::PcCreate {
                crm: kind,
                crm_id: record.crm_id.clone(),
                draft: new.referral.to_json(),
                intent_at: cycle.now,
                crm_fields: record.fields.clone(),
            });
        }
        self.plan_error_field(side, record, None, &new.problems, plan, cycle);
        Ok(())
    }

    // ---- Partner Center ----------------------------------------------------------

    pub(crate) async fn pull_partner_center(
        &self,
        pc: &dyn PartnerCenter,
        full: bool,
        since_override: Option<DateTime<Utc>>,
        cycle: &mut Cycle,
    ) -> Result<(), SyncError> {
        self.hit("partner_center.before_listing")?;
        if pc.paused_for_login() {
            cycle
                .summary
                .paused
                .push(Paused::operator(Side::PartnerCenter));
            cycle.summary.errors.push(SideError::new(
                Side::PartnerCenter,
                SideErrorKind::Operator,
                format!(
                    "sign-in needed: run `{}`",
                    crate::partner_center::LOGIN_COMMAND
                ),
                "",
            ));
            return Ok(());
        }
        let cursor = self.read_db(|r| r.cursor(PC_CURSOR)).await?;
        let cursor_time = cursor
            .as_deref()
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .map(|t| t.with_timezone(&Utc));
        let overlap = chrono::Duration::from_std(self.settings.overlap).unwrap_or_default();
        let since = match (since_override, cursor_time) {
            (Some(s), _) => s,
            _ if full => beginning_of_time(),
            (None, Some(t)) => t - overlap,
            (None, None) => beginning_of_time(),
        };
        // Whether this listing, complete, leaves no change unread before it
        // began (a `resync --since` later than the cursor leaves a gap).
        let no_gap = cursor_time.is_none_or(|t| since <= t - overlap);
        let mut high_water = cursor_time;
        let mut pager = ReferralPager::new(pc, since, ListFilter::default());
        let mut complete = false;
        loop {
            let page = match pager.next_page().await {
                Ok(Some(p)) => p,
                Ok(None) => {
                    complete = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listing Partner Center changes failed");
                    if e.is_login_required() {
                        cycle
                            .summary
                            .paused
                            .push(Paused::operator(Side::PartnerCenter));
                    }
                    cycle.summary.errors.push(SideError::partner_center(&e));
                    break;
                }
            };
            self.beat((page.referrals.len() + page.failures.len()) as u64);
            let ids: Vec<String> = page.referrals.iter().map(|r| r.id.clone()).collect();
            let kinds: Vec<CrmKind> = self.crms.iter().map(|s| s.kind).collect();
            let engagement_reads = super::seller::EngagementReads::of_page(&page.referrals);
            let rows = self
                .read_db(move |repo| {
                    let mut rows = PageRows::default();
                    for id in &ids {
                        rows.add_referral(repo, id)?;
                        let mut linked = false;
                        for kind in &kinds {
                            rows.add_link_by_referral(repo, *kind, id)?;
                            if rows.link_by_referral(*kind, id).is_some() {
                                rows.add_crm_change(repo, *kind, id)?;
                                linked = true;
                            }
                        }
                        if linked {
                            rows.add_queued_update(repo, id)?;
                        }
                    }
                    engagement_reads.load(repo, &kinds, &mut rows)?;
                    Ok(rows)
                })
                .await?;
            let mut plan = Plan::default();
            for f in &page.failures {
                cycle.summary.partner_center.failed += 1;
                plan.failures.push(NewFailure {
                    record: f.id.clone().unwrap_or_else(|| "(referral without id)".into()),
                    side: PARTNER_CENTER.into(),
                    kind: "unparseable".into(),
                    message: f.reason.clone(),
                    hint: "Partner Center sent a referral cosell-sync cannot read; the raw JSON is kept here: report it".into(),
                    raw: Some(f.raw.clone()),
                });
            }
            for r in &page.referrals {
                cycle.summary.partner_center.read += 1;
                // Only a stored copy the expiry check could pick up needs
                // to be remembered (so that the set stays small): one read
                // now is planned from this fresh copy, and a received one
                // past its deadline is expired by that plan already.
                if rows.snapshot(&r.id).is_some_and(|old| {
                    !old.locally_expired
                        && old.stage == Some(Stage::Received)
                        && old.deadline.is_some_and(|d| d <= cycle.now)
                }) {
                    cycle.pc_read.insert(r.id.clone());
                }
                if let Some(u) = r.updated_date_time {
                    high_water = Some(high_water.map_or(u, |h| h.max(u)));
                }
                let span = tracing::debug_span!("record", referral_id = %r.id);
                let _g = span.enter();
                self.plan_referral(r, &rows, cycle, &mut plan)?;
            }
            if let Some(h) = high_water {
                plan.cursors.push((PC_CURSOR.into(), ts(h)));
            }
            self.commit(plan, cycle).await?;
            // The page is planned and committed: it is not held while sending.
            drop((page, rows));
            self.send_full_crm_batches(cycle).await?;
        }
        if complete {
            // The cursor moves to the cycle's start (see cursor_to_cycle_start)
            // and, in the same transaction, the listing's start is recorded
            // as the time Partner Center's data is fresh as of: it began
            // after `cycle.now` and read every change up to then.
            let mut plan = Plan::default();
            let position = high_water.filter(|h| *h >= cycle.now).unwrap_or(cycle.now);
            plan.cursors.push((PC_CURSOR.into(), ts(position)));
            plan.forget_crm_changes = Some(cycle.now);
            if no_gap {
                plan.kv.push((PC_FRESH_AS_OF.into(), ts(cycle.now)));
                cycle.pc_fresh_as_of = Some(cycle.now);
            }
            self.commit(plan, cycle).await?;
        }
        Ok(())
    }

    /// After a complete listing, the cursor moves to the cycle's start even
    /// when the newest change is older: the next listing then starts one
    /// overlap before now, not one overlap before the last change, so quiet
    /// records are not read again every cycle.
    async fn cursor_to_cycle_start(
        &self,
        key: &str,
        high_water: Option<DateTime<Utc>>,
        cycle: &mut Cycle,
    ) -> Result<(), SyncError> {
        if high_water.is_some_and(|h| h >= cycle.now) {
            return Ok(());
        }
        let mut plan = Plan::default();
        plan.cursors.push((key.to_owned(), ts(cycle.now)));
        self.commit(plan, cycle).await
    }

    fn plan_referral(
        &self,
        r: &Referral,
        rows: &PageRows,
        cycle: &mut Cycle,
        plan: &mut Plan,
    ) -> Result<(), SyncError> {
        let old = rows.snapshot(&r.id);
        let mut snap = ReferralSnapshot::from_referral(r, self.settings.expiry_days, cycle.now);
        let mut unchanged = false;
        if let Some(old) = old {
            snap.first_seen = old.first_seen;
            snap.locally_expired = old.locally_expired;
            if old.etag.is_some() && old.etag == snap.etag && old.raw == snap.raw {
                // Re-read through the poll overlap or a full reconcile: nothing
                // new to store; each CRM's own hash says whether it is in step.
                cycle.summary.partner_center.skipped += 1;
                unchanged = true;
            }
            if old.locally_expired && snap.stage == Some(Stage::Accepted) {
                if acceptance_beats_deadline(r.accepted_date_time, old.deadline) {
                    snap.locally_expired = false;
                    plan.clear_expiry.push(r.id.clone());
                    plan.event(&r.id, PARTNER_CENTER, "stage", "Partner Center shows the referral accepted before its deadline: Partner Center's state wins over the local expiry");
                } else {
                    plan.event(&r.id, PARTNER_CENTER, "refused", "Partner Center shows an acceptance after the local deadline; the referral stays expired here");
                }
            }
        }
        // This listing began after the referral's deadline and still shows
        // it unanswered: fresh data for this record, so it expires now (a
        // referral first seen past its deadline never lands on hold).
        let expires_now = !snap.locally_expired
            && snap.stage == Some(Stage::Received)
            && snap.deadline.is_some_and(|d| d <= cycle.now);
        if old.is_none() {
            plan.event(
                &r.id,
                PARTNER_CENTER,
                "read",
                format!(
                    "{} referral {:?} seen ({}/{})",
                    r.direction
                        .as_ref()
                        .map(|d| d.as_str())
                        .unwrap_or("unknown"),
                    r.name.as_deref().unwrap_or(""),
                    snap.status,
                    snap.substatus
                ),
            );
        }
        let reason = expires_now.then(|| self.expiry_reason(snap.deadline));
        if let Some(reason) = &reason {
            cycle.summary.expired += 1;
            snap.locally_expired = true;
            plan.expire.push(r.id.clone());
            plan.event(&r.id, PARTNER_CENTER, "expired", reason.clone());
        }
        // The referral made a tree once (the snapshot keeps only its text).
        let (mut json, stage) = effective(r.to_json(), &snap);
        if let Some(reason) = reason {
            json["statusReason"] = Value::String(reason);
        }
        self.add_engagement_of(r, &mut json, rows, plan);
        let Some(stage) = stage else {
            cycle.summary.partner_center.skipped += 1;
            plan.event(
                &r.id,
                PARTNER_CENTER,
                "stage",
                format!(
                    "status {}/{} is not one cosell-sync knows; the CRM is not changed",
                    snap.status, snap.substatus
                ),
            );
            if !unchanged {
                plan.snapshots.push(snap);
            }
            return Ok(());
        };
        // The referral that invites Microsoft into a co-sell engagement is the
        // other half of the partner's own deal, not an opportunity of its own.
        if r.is_outbound() && r.target.iter().flatten().any(|t| t.is_microsoft()) {
            cycle.summary.partner_center.skipped += 1;
            if !unchanged {
                plan.snapshots.push(snap);
            }
            return self.plan_microsoft_half(r, Some(stage), rows, plan);
        }
        let queued = rows.queued_ops(&r.id);
        if !queued.is_empty() {
            let before = old.map(|o| effective_json(o).0);
            json = with_queued(json, queued, before.as_ref());
        }
        for side in &self.crms {
            let link = rows.link_by_referral(side.kind, &r.id).cloned();
            let crm_change = rows.crm_change(side.kind, &r.id);
            self.plan_referral_for(side, r, link, crm_change, &json, stage, &snap, cycle, plan)?;
        }
        if !unchanged {
            plan.snapshots.push(snap);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_referral_for(
        &self,
        side: &CrmSide,
        r: &Referral,
        link: Option<Link>,
        crm_change: Option<Option<DateTime<Utc>>>,
        json: &Value,
        stage: Stage,
        snap: &ReferralSnapshot,
        cycle: &mut Cycle,
        plan: &mut Plan,
    ) -> Result<(), SyncError> {
        let kind = side.kind;
        let m = &side.mapping;
        let Some(mut link) = link else {
            // Archived deals are not brought into the CRM (unless asked:
            // `resync --include-archived`), except one expired here that
            // Partner Center still shows unanswered: its opportunity is
            // created closed as expired.
            let expired_here = snap.locally_expired && snap.stage == Some(Stage::Received);
            if stage.is_archived() && !expired_here && !cycle.include_archived {
                cycle.summary.crm(kind).skipped += 1;
                return Ok(());
            }
            plan.effects
                .push(new_opportunity(side, &r.id, json, stage, customer_ref(r)));
            return Ok(());
        };
        let pc_hash = m.pc_projection_hash(json);
        if link.pc_hash.as_deref() == Some(pc_hash.as_str()) {
            cycle.summary.crm(kind).skipped += 1;
            return Ok(());
        }
        let current = fields_of(&link.crm_fields);

        if stage.is_archived() {
            // Archived deals take no edit: only make the CRM show the closed stage.
            if m.stages.shows(&current, stage) {
                // Closed already: what Partner Center still says of it (the
                // answer-by date gone, a deal registration…) where the CRM
                // lets a closed record be edited (Dataverse does not).
                let keep = archived_fields(m);
                let fields: CrmFields = if kind.creates_closed() {
                    m.crm_update(json, stage, &current)
                        .record
                        .into_iter()
                        .filter(|(k, _)| keep.contains(&k.as_str()))
                        .collect()
                } else {
                    Map::new()
                };
                if !fields.is_empty() {
                    plan.effects.push(Effect::CrmUpsert {
                        crm: kind,
                        write: RecordWrite {
                            key: RecordKey::CrmId(link.crm_id.clone()),
                            fields,
                            if_match: None,
                            customer: None,
                        },
                        referral_id: Some(r.id.clone()),
                        pc_hash: Some(pc_hash),
                    });
                    return Ok(());
                }
                link.pc_hash = Some(pc_hash);
                link.updated_at = cycle.now;
                plan.links.push(link);
            } else {
                let reason = json
                    .get("statusReason")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                plan.effects.push(Effect::CrmClose {
                    crm: kind,
                    close: CloseRequest {
                        key: RecordKey::CrmId(link.crm_id.clone()),
                        outcome: close_outcome(stage),
                        fields: close_fields(m, json, stage),
                        reason,
                    },
                    referral_id: r.id.clone(),
                    pc_hash: Some(pc_hash),
                });
            }
            return Ok(());
        }

        if let Some(crm_modified) = crm_change {
            // Edited on both sides since the last cycle: the mapping's owners decide.
            let res = m.resolve_conflict(json, stage, &current, r.updated_date_time, crm_modified);
            for d in &res.decisions {
                let (kept, overruled) = match d.winner {
                    crate::mapping::Side::PartnerCenter => ("Partner Center", "CRM"),
                    crate::mapping::Side::Crm => ("CRM", "Partner Center"),
                };
                plan.event(&r.id, kind.as_str(), "conflict", format!(
                    "{} / {} edited on both sides: the {kept} value is kept, the {overruled} value overruled",
                    d.path, d.crm_field
                ));
            }
            let mut d = decide_from_crm(
                m,
                &current,
                None,
                json,
                stage,
                snap.locally_expired,
                snap.deadline,
                cycle.now,
            );
            d.ops = res
                .patch
                .into_iter()
                .filter(|op| !op.value.is_null())
                .collect();
            if d.declining {
                // Only notes go with a decline, and only with it.
                let sending = d.action.is_some();
                d.ops.retain(|op| sending && sets_notes(op));
            }
            let record = CrmRecord {
                crm_id: link.crm_id.clone(),
                referral_id: Some(r.id.clone()),
                fields: current.clone(),
                version: link.crm_version.clone(),
                modified_at: crm_modified,
            };
            // The queued update (the CRM's change read earlier in the cycle,
            // with any earlier edit still waiting) loses what the resolution
            // kept of Partner Center, or the CRM's overruled values would
            // still reach it; this decision is then merged into what is left.
            plan.overruled_pc_updates.push(OverruledUpdate {
                referral_id: r.id.clone(),
                crm: kind,
                crm_id: link.crm_id.clone(),
                paths: res
                    .decisions
                    .iter()
                    .filter(|d| d.winner == crate::mapping::Side::PartnerCenter)
                    .filter_map(|d| crate::mapping::FieldPath::parse(&d.path).ok())
                    .map(|p| pointer_prefix(&p))
                    .collect(),
                no_action: d.action.is_none(),
            });
            self.plan_decision(side, &record, &r.id, d, plan, cycle);
            if !res.crm_updates.is_empty() {
                plan.effects.push(Effect::CrmUpsert {
                    crm: kind,
                    write: RecordWrite {
                        key: RecordKey::CrmId(link.crm_id.clone()),
                        fields: res.crm_updates,
                        if_match: None,
                        customer: None,
                    },
                    referral_id: Some(r.id.clone()),
                    pc_hash: Some(pc_hash),
                });
            } else {
                link.pc_hash = Some(pc_hash);
                link.updated_at = cycle.now;
                plan.links.push(link);
            }
            return Ok(());
        }

        let mut write = m.crm_update(json, stage, &current);
        for p in &write.problems {
            plan.event(&r.id, kind.as_str(), "invalid", p.to_string());
        }
        // The opportunity holds an edit made on hold, not sent yet (the
        // record as read differs from the last seen values), and Partner
        // Center changed a field both sides hold: the owner rule settles the
        // fields the edit changed, and says so. A link from before the held
        // values were kept knows only that the record differs: Partner
        // Center's value is written, as the newer edit.
        let holds_edit = stage == Stage::Received
            && m.stages.shows(&current, Stage::Received)
            && link
                .crm_hash
                .as_deref()
                .is_some_and(|h| h != m.crm_projection_hash(&current));
        if holds_edit {
            let held = link.held_edit.as_ref();
            for rule in m
                .fields
                .iter()
                .filter(|r| r.direction == crate::mapping::FieldDirection::Both && !r.create_only)
            {
                let Some(f) = rule
                    .crm
                    .as_deref()
                    .filter(|f| write.record.contains_key(*f))
                else {
                    continue;
                };
                // Not edited on hold, or edited to the value Partner Center
                // now has: not a conflict.
                if held.is_some_and(|h| {
                    h.fields
                        .get(f)
                        .is_none_or(|v| same_value(Some(v), write.record.get(f)))
                }) {
                    continue;
                }
                let crm_wins = held.is_some_and(|h| {
                    rule.owner_side(r.updated_date_time, h.modified_at) == crate::mapping::Side::Crm
                });
                let (kept, overruled) = if crm_wins {
                    write.record.remove(f);
                    ("CRM", "Partner Center")
                } else {
                    ("Partner Center", "CRM")
                };
                plan.event(&r.id, kind.as_str(), "conflict", format!(
                    "{} / {f} changed in Partner Center while the opportunity holds an edit made on hold: the {kept} value is kept, the {overruled} value overruled",
                    rule.path.as_str()
                ));
            }
        }
        if write.record.is_empty() {
            link.pc_hash = Some(pc_hash);
            link.updated_at = cycle.now;
            plan.links.push(link);
            cycle.summary.crm(kind).skipped += 1;
        } else {
            plan.effects.push(Effect::CrmUpsert {
                crm: kind,
                write: RecordWrite {
                    key: RecordKey::CrmId(link.crm_id.clone()),
                    fields: write.record,
                    if_match: None,
                    customer: None,
                },
                referral_id: Some(r.id.clone()),
                pc_hash: Some(pc_hash),
            });
        }
        Ok(())
    }

    // ---- the 14-day rule -----------------------------------------------------------

    /// Why a referral expired here, as shown on its opportunity.
    fn expiry_reason(&self, deadline: Option<DateTime<Utc>>) -> String {
        format!(
            "Expired: not answered within {} days (deadline {})",
            self.settings.expiry_days,
            deadline
                .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default()
        )
    }

    /// Expires received inbound referrals past their deadline here, and
    /// closes their opportunities as expired — on fresh data only: the
    /// deadline must be at or before the start of the last complete Partner
    /// Center listing, which still showed the referral unanswered. While
    /// Partner Center cannot be read nothing is closed (a late acceptance
    /// from the CRM is still refused, see `decide_from_crm`).
    pub(crate) async fn expire_overdue(&self, cycle: &mut Cycle) -> Result<(), SyncError> {
        // This cycle's listing when it completed (a dry run does not record
        // it), else the last complete one.
        let fresh_as_of = match cycle.pc_fresh_as_of {
            Some(t) => Some(t),
            None => self
                .read_db(|r| r.kv_get(PC_FRESH_AS_OF))
                .await?
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc)),
        };
        let Some(fresh_as_of) = fresh_as_of else {
            return Ok(());
        };
        let fresh_as_of = fresh_as_of.min(cycle.now);
        let due = self
            .read_db(move |r| r.referrals_past_deadline(fresh_as_of))
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        let mut plan = Plan::default();
        for mut snap in due {
            // Read in this cycle: decided from that fresh copy already (the
            // store may not hold it yet in a dry run).
            if cycle.pc_read.contains(&snap.id) {
                continue;
            }
            // Its last version could not be read: its state is not known.
            let id = snap.id.clone();
            let (unreadable, links) = self
                .read_db(move |r| {
                    let unreadable = r
                        .failure_for(&id, PARTNER_CENTER)?
                        .is_some_and(|f| f.kind == "unparseable" && f.state == FailureState::Open);
                    Ok((unreadable, r.links_of_referral(&id)?))
                })
                .await?;
            if unreadable {
                continue;
            }
            cycle.summary.expired += 1;
            plan.expire.push(snap.id.clone());
            let reason = self.expiry_reason(snap.deadline);
            plan.event(&snap.id, PARTNER_CENTER, "expired", reason.clone());
            snap.locally_expired = true;
            let (mut json, _) = effective_json(&snap);
            json["statusReason"] = Value::String(reason.clone());
            for side in &self.crms {
                if links.iter().any(|l| l.crm == side.kind) {
                    continue;
                }
                // No opportunity yet (its create still queued, or never
                // made): it is created closed as expired, never on hold.
                let customer = snap.referral().ok().as_ref().and_then(customer_ref);
                plan.effects.push(new_opportunity(
                    side,
                    &snap.id,
                    &json,
                    Stage::Expired,
                    customer,
                ));
            }
            for link in links {
                let Some(side) = self.side(link.crm) else {
                    continue;
                };
                plan.effects.push(Effect::CrmClose {
                    crm: link.crm,
                    close: CloseRequest {
                        key: RecordKey::CrmId(link.crm_id.clone()),
                        outcome: CloseOutcome::Lost,
                        fields: close_fields(&side.mapping, &json, Stage::Expired),
                        reason: Some(reason.clone()),
                    },
                    referral_id: snap.id.clone(),
                    pc_hash: Some(side.mapping.pc_projection_hash(&json)),
                });
            }
        }
        self.commit(plan, cycle).await
    }
}

/// An opportunity for a referral no CRM record holds yet, upserted by the
/// referral id in the stage the referral is in. A closed stage a CRM cannot
/// create directly (Dataverse) is closed right after (see `crm_success`).
/// `pc_hash`: the referral's projection hash when the caller has it already.
fn new_opportunity(
    side: &CrmSide,
    referral_id: &str,
    json: &Value,
    stage: Stage,
    mut customer: Option<CustomerRef>,
) -> Effect {
    let m = &side.mapping;
    if m.status.customer_contact != crate::mapping::ContactMode::Record
        && let Some(c) = &mut customer
    {
        c.contact = None;
    }
    let (fields, pc_hash) = m.to_crm_with_pc_hash(json, stage);
    Effect::CrmUpsert {
        crm: side.kind,
        write: RecordWrite {
            key: RecordKey::Referral(referral_id.to_owned()),
            fields,
            if_match: None,
            customer,
        },
        referral_id: Some(referral_id.to_owned()),
        pc_hash: Some(pc_hash),
    }
}

/// Queues a decided effect in the page's transaction. A pending effect of the
/// same target, operation and record that is not done yet is merged with it
/// ([`Effect::merged_after`]), never replaced: read and written in this one
/// transaction, so a crash leaves either both decisions or the earlier one
/// with the page's cursor unmoved. The merged row keeps its attempts and its
/// next attempt time: the back-off of a side that refuses writes, or of a
/// value it rejects, still holds (a new edit does not make the record retried
/// at once), and a record that keeps failing is still quarantined in time.
pub(crate) fn queue_effect(r: &Repo<'_>, e: &Effect, now: DateTime<Utc>) -> Result<(), StoreError> {
    if !matches!(e, Effect::PcUpdate { .. } | Effect::CrmUpsert { .. }) {
        r.upsert_effect(&e.to_new(), now)?;
        return Ok(());
    }
    let row = e.to_new();
    let Some(pending) = r.pending_effect(&row.target, &row.operation, &row.record_key)? else {
        if !e.sends_nothing() {
            r.enqueue(&row, now)?;
        }
        return Ok(());
    };
    let merged = match serde_json::from_str::<Effect>(pending.payload.text()) {
        Ok(queued) => e.clone().merged_after(queued),
        Err(err) => {
            tracing::warn!(outbox_id = pending.id, error = %err, "a queued effect cannot be read; the new decision replaces it");
            e.clone()
        }
    };
    if merged.sends_nothing() {
        r.withdraw_effect(&row.target, &row.operation, &row.record_key)?;
    } else {
        r.upsert_effect(&merged.to_new(), now)?;
    }
    Ok(())
}

/// Withdraws from a referral's queued Partner Center update what a conflict
/// resolution overruled (see [`Effect::overruled`]); the whole row when
/// nothing is left to send.
fn overrule_queued_update(
    r: &Repo<'_>,
    o: &OverruledUpdate,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let Some(pending) = r.pending_effect(PARTNER_CENTER, PC_UPDATE, &o.referral_id)? else {
        return Ok(());
    };
    let Ok(queued) = serde_json::from_str::<Effect>(pending.payload.text()) else {
        // Unreadable: withdrawn, as before updates were merged.
        r.withdraw_effect(PARTNER_CENTER, PC_UPDATE, &o.referral_id)?;
        return Ok(());
    };
    let same_record = matches!(&queued, Effect::PcUpdate { crm, crm_id, .. } if *crm == o.crm && *crm_id == o.crm_id);
    let left = queued.overruled(&o.paths, o.no_action && same_record);
    if left.sends_nothing() {
        r.withdraw_effect(PARTNER_CENTER, PC_UPDATE, &o.referral_id)?;
    } else {
        r.upsert_effect(&left.to_new(), now)?;
    }
    Ok(())
}

/// Inserts or updates a link.
pub(crate) fn upsert_link(r: &Repo<'_>, l: &Link) -> Result<(), StoreError> {
    if r.link_by_crm_id(l.crm, &l.crm_id)?.is_some() {
        return r.update_link(l);
    }
    if let Some(rid) = &l.referral_id
        && let Some(mut other) = r.link_by_referral(l.crm, rid)?
    {
        // The referral moved to another CRM record: keep one link.
        other.referral_id = None;
        r.update_link(&other)?;
    }
    r.insert_link(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PatchOp, PatchOpKind};

    fn received() -> Value {
        serde_json::from_str(include_str!(
            "../../fixtures/partner_center/referral_new_pending.json"
        ))
        .unwrap()
    }

    /// The Salesforce mapping, the referral, and its opportunity as last seen.
    fn synced() -> (Mapping, Value, CrmFields) {
        let m = Mapping::default_salesforce().unwrap();
        let r = received();
        let crm = m.to_crm(&r, Stage::Received);
        (m, r, crm)
    }

    fn decide(m: &Mapping, crm: &CrmFields, previous: &CrmFields, r: &Value) -> CrmDecision {
        let now = Utc::now();
        decide_from_crm(m, crm, Some(previous), r, Stage::Received, false, None, now)
    }

    fn declined(crm: &CrmFields, edits: Value) -> CrmFields {
        let mut out = crm.clone();
        out.insert("StageName".into(), json!("Closed Lost"));
        if let Value::Object(e) = edits {
            out.extend(e);
        }
        out
    }

    #[test]
    fn a_decline_takes_the_notes_typed_with_it_and_withholds_the_rest() {
        let (m, r, seen) = synced();
        let now = declined(
            &seen,
            json!({"Loss_Reason__c": "No budget", "Description": "Revisit next year", "Amount": 4242}),
        );
        let d = decide(&m, &now, &seen, &r);
        assert_eq!(
            d.action,
            Some(StageAction::Decline {
                reason: "No budget".into()
            })
        );
        assert_eq!(
            d.ops,
            vec![PatchOp {
                op: PatchOpKind::Replace,
                path: "/details/notes".into(),
                value: json!("Revisit next year"),
            }]
        );
        assert!(d.declining && d.held.is_empty() && d.problems.is_empty());
        assert!(!d.upgrade_to_co_sell);
        assert!(
            d.notes.iter().any(|(k, m)| k == "withheld"
                && m.contains("/details/dealValue")
                && !m.contains("/details/notes")),
            "{:?}",
            d.notes
        );
    }

    #[test]
    fn a_decline_without_reason_sends_nothing_and_holds_its_notes() {
        let (m, r, seen) = synced();
        let now = declined(&seen, json!({"Description": "Revisit next year"}));
        let d = decide(&m, &now, &seen, &r);
        assert_eq!(d.action, None);
        assert!(d.ops.is_empty(), "{:?}", d.ops);
        assert!(
            d.problems.iter().any(|p| p.path == "statusReason"),
            "{:?}",
            d.problems
        );
        assert_eq!(d.held, vec!["Description".to_owned()]);

        // Without a change to the notes there is nothing to hold.
        let d = decide(&m, &declined(&seen, json!({})), &seen, &r);
        assert!(d.held.is_empty() && d.ops.is_empty() && d.action.is_none());
    }

    #[test]
    fn notes_not_changed_in_the_crm_are_not_sent_with_a_decline() {
        let (m, r, mut seen) = synced();
        // The CRM holds other notes than Partner Center, but the seller did
        // not touch them: Partner Center's notes are not overwritten.
        seen.insert("Description".into(), json!("Older notes"));
        let now = declined(&seen, json!({"Loss_Reason__c": "No budget"}));
        let d = decide(&m, &now, &seen, &r);
        assert!(matches!(d.action, Some(StageAction::Decline { .. })));
        assert!(d.ops.is_empty(), "{:?}", d.ops);
    }

    #[test]
    fn emptied_notes_never_erase_the_referral_s_notes() {
        let (m, r, seen) = synced();
        let now = declined(
            &seen,
            json!({"Loss_Reason__c": "No budget", "Description": null}),
        );
        let d = decide(&m, &now, &seen, &r);
        assert!(matches!(d.action, Some(StageAction::Decline { .. })));
        assert!(d.ops.is_empty(), "{:?}", d.ops);
    }

    #[test]
    fn what_follows_an_acceptance_is_only_what_the_crm_alone_sends_and_partner_center_lacks() {
        let (m, mut r, mut crm) = synced();
        r["status"] = json!("Active");
        r["substatus"] = json!("Accepted");
        crm.insert("StageName".into(), json!("Qualification"));
        crm.insert("Id".into(), json!("006A"));
        crm.insert("Partner_Contact_First_Name__c".into(), json!("Ada"));
        crm.insert("Partner_Contact_Email__c".into(), Value::Null);
        crm.insert(
            "How_can_Microsoft_help__c".into(),
            json!("Proof of concept or demo"),
        );
        // A value both sides hold, edited on hold: not this update's business.
        crm.insert("Amount".into(), json!(4242));
        assert_eq!(
            held_until_accepted(&m, &crm, &r),
            vec![
                PatchOp::replace("/externalReferenceId", "006A"),
                PatchOp::replace("/team/0/firstName", "Ada"),
            ]
        );
        // Another CRM's id stays; in step, nothing follows.
        r["externalReferenceId"] = json!("other-crm-id");
        r["team"][0]["firstName"] = json!("Ada");
        assert!(held_until_accepted(&m, &crm, &r).is_empty());
    }

    #[test]
    fn an_accepted_deal_s_edits_are_not_limited_to_notes() {
        let (m, r, seen) = synced();
        let mut now = seen.clone();
        now.insert("StageName".into(), json!("Qualification"));
        now.insert("Amount".into(), json!(4242));
        let d = decide(&m, &now, &seen, &r);
        assert_eq!(d.action, Some(StageAction::Accept));
        assert!(!d.declining);
        assert!(
            d.ops.iter().any(|o| o.path == "/details/dealValue"),
            "{:?}",
            d.ops
        );
    }
}
