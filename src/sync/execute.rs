//! Draining the outbox: Partner Center first (its results may queue CRM
//! write-backs), then each CRM in batches. Every success is committed with
//! its bookkeeping in one transaction; every failure is classified.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::effects::{Effect, PARTNER_CENTER, PC_UPDATE, StageAction};
use super::plan::{decide_from_crm, effective_json, held_until_accepted, queue_effect};
use super::{CrmSide, Cycle, Engine, Paused, Side, SideError, SideErrorKind, SyncError};
use crate::crm::{CrmError, CrmFields, RecordKey, RecordWrite, WriteOk};
use crate::domain::{DealKind, Referral, Stage};
use crate::http::{RetryDirective, Retryable};
use crate::mapping::Mapping;
use crate::partner_center::{PartnerCenter, PartnerCenterError, PriorDeal};
use crate::store::{
    CrmKind, Failure, FailureState, Link, NewEffect, NewFailure, OutboxEntry, RawJson,
    ReferralSnapshot, Repo, StoreError,
};

/// How long a look-up for a deal we may already have created reaches back
/// before the recorded intent (clock skew between us and Partner Center).
const CREATE_LOOKBACK: chrono::Duration = chrono::Duration::minutes(15);

/// Whether to go on with a side after a failure.
/// What is known, before sending a Partner Center create, of an earlier attempt.
enum PriorCreate {
    /// Never sent: nothing to look for.
    NotSent,
    /// Maybe sent before; this is what the listing found.
    Looked(Option<PriorDeal>),
    /// Maybe sent before, and the listing failed: not sent again blind.
    LookupFailed {
        directive: RetryDirective,
        message: String,
        hint: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// The referral whose CRM changes an effect carries to Partner Center: they
/// are forgotten in the transaction that takes the effect out of the outbox
/// (see `Repo::forget_crm_changes`), not before.
fn carries_crm_changes(entry: &OutboxEntry) -> Option<String> {
    (entry.target == PARTNER_CENTER && entry.operation == PC_UPDATE)
        .then(|| entry.record_key.clone())
}

/// What `failures retry` did with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// Its effect is back in the outbox.
    Queued,
    /// A quarantined Partner Center update decided again had nothing left
    /// to send (Partner Center holds the CRM's values, or a conflict settled
    /// meanwhile kept Partner Center's): the failure is resolved.
    NothingLeft,
    /// No effect to put back (a record that failed validation): marked for
    /// another look.
    Marked,
}

/// `failures retry ID`. A quarantined Partner Center update is decided
/// again, as after a 412, before it goes back in the outbox: from the CRM
/// record as last read or written (the link's fields) against Partner
/// Center as last read, and only about what it asked for; merged with any
/// update of the referral decided since. Sending its values as stored would
/// write a stale edit over one made since on either side (a Partner Center
/// edit the owner rule kept, and wrote to the CRM, while it was
/// quarantined). Any other quarantined effect goes back as it was.
/// `mappings`: the mapping of each enabled CRM.
pub fn retry_failure(
    r: &Repo<'_>,
    id: i64,
    now: DateTime<Utc>,
    mappings: &[(CrmKind, &Mapping)],
) -> Result<(Failure, Retried), StoreError> {
    let f = r.failure(id)?.ok_or(StoreError::NotFound {
        what: "failure",
        key: id.to_string(),
    })?;
    let Some(v) = f
        .raw
        .as_deref()
        .and_then(|raw| serde_json::from_str::<Value>(raw).ok())
        .filter(|v| v.get("effect").is_some())
    else {
        r.set_failure_state(id, FailureState::Retrying)?;
        return Ok((f, Retried::Marked));
    };
    let target = v["target"].as_str().unwrap_or(&f.side).to_owned();
    let operation = v["operation"].as_str().unwrap_or("retry").to_owned();
    let update = (target == PARTNER_CENTER && operation == PC_UPDATE)
        .then(|| serde_json::from_value::<Effect>(v["effect"].clone()).ok())
        .flatten();
    let Some(update) = update else {
        r.upsert_effect(
            &NewEffect {
                target,
                operation,
                record_key: f.record.clone(),
                payload: RawJson::of(&v["effect"]),
            },
            now,
        )?;
        r.set_failure_state(id, FailureState::Retrying)?;
        return Ok((f, Retried::Queued));
    };
    let update = decided_again(r, update, now, mappings)?;
    if update.sends_nothing() {
        // The CRM's change is not on its way anymore.
        r.forget_crm_changes_of(&f.record)?;
        r.set_failure_state(id, FailureState::Retrying)?;
        r.resolve_failure(&f.record, &f.side)?;
        return Ok((f, Retried::NothingLeft));
    }
    queue_effect(r, &update, now)?;
    r.set_failure_state(id, FailureState::Retrying)?;
    Ok((f, Retried::Queued))
}

/// A quarantined Partner Center update decided again (see
/// [`retry_failure`]); as it was when its CRM is not enabled or the
/// referral is not known.
fn decided_again(
    r: &Repo<'_>,
    update: Effect,
    now: DateTime<Utc>,
    mappings: &[(CrmKind, &Mapping)],
) -> Result<Effect, StoreError> {
    let Effect::PcUpdate {
        referral_id,
        crm,
        after_acceptance: false,
        ..
    } = &update
    else {
        return Ok(update);
    };
    let mapping = mappings.iter().find(|(k, _)| k == crm).map(|(_, m)| *m);
    let snap = r.get_referral(referral_id)?;
    let (Some(mapping), Some(snap)) = (mapping, snap) else {
        return Ok(update);
    };
    let Effect::PcUpdate {
        referral_id,
        crm,
        crm_id,
        ops,
        upgrade_to_co_sell,
        invitation,
        crm_fields,
        ..
    } = update
    else {
        return Ok(update);
    };
    let (json, stage) = effective_json(&snap);
    let current = match r.link_by_crm_id(crm, &crm_id)?.and_then(|l| l.crm_fields) {
        Some(Value::Object(m)) => m,
        _ => crm_fields,
    };
    let Some(stage) = stage else {
        return Ok(Effect::PcUpdate {
            referral_id,
            crm,
            crm_id,
            action: None,
            ops: Vec::new(),
            upgrade_to_co_sell: false,
            invitation: None,
            crm_fields: current,
            after_acceptance: false,
        });
    };
    let mut d = decide_from_crm(
        mapping,
        &current,
        None,
        &json,
        stage,
        snap.locally_expired,
        snap.deadline,
        now,
    );
    // Decide again only about what the CRM asked for.
    d.ops.retain(|op| ops.iter().any(|o| o.path == op.path));
    let upgrade = d.upgrade_to_co_sell || (upgrade_to_co_sell && !stage.is_archived());
    Ok(Effect::PcUpdate {
        referral_id,
        crm,
        crm_id,
        action: d.action,
        ops: d.ops,
        upgrade_to_co_sell: upgrade,
        invitation: d.invitation.or(invitation).filter(|_| upgrade),
        crm_fields: current,
        after_acceptance: false,
    })
}

/// `failures ignore ID`: the failure is no longer reported. A quarantined
/// update's CRM changes are then no longer on their way to Partner Center:
/// the next complete listing forgets them (see `Repo::forget_crm_changes`).
pub fn ignore_failure(r: &Repo<'_>, id: i64) -> Result<Failure, StoreError> {
    let f = r.failure(id)?.ok_or(StoreError::NotFound {
        what: "failure",
        key: id.to_string(),
    })?;
    r.set_failure_state(id, FailureState::Ignored)?;
    Ok(f)
}

fn merge_fields(base: &Option<Value>, written: &CrmFields) -> CrmFields {
    let mut out = match base {
        Some(Value::Object(m)) => m.clone(),
        _ => CrmFields::new(),
    };
    for (k, v) in written {
        out.insert(k.clone(), v.clone());
    }
    out
}

impl Engine {
    pub(crate) async fn execute(
        &self,
        pc: &dyn PartnerCenter,
        cycle: &mut Cycle,
    ) -> Result<(), SyncError> {
        self.hit("execute.before")?;
        self.execute_partner_center(pc, cycle).await?;
        for side in self.crms.clone() {
            self.execute_crm(&side, cycle).await?;
        }
        Ok(())
    }

    // ---- failure handling -----------------------------------------------------------

    /// Classifies a failed effect: retry later, pause the side, or quarantine.
    /// [`fail_effect`](Self::fail_effect) with a Partner Center error's
    /// directive, text and hint.
    async fn fail_pc(
        &self,
        entry: &OutboxEntry,
        e: &PartnerCenterError,
        cycle: &mut Cycle,
    ) -> Result<Flow, SyncError> {
        self.fail_effect(entry, e.directive(), &e.to_string(), &e.hint(), cycle)
            .await
    }

    async fn fail_effect(
        &self,
        entry: &OutboxEntry,
        directive: RetryDirective,
        message: &str,
        hint: &str,
        cycle: &mut Cycle,
    ) -> Result<Flow, SyncError> {
        let now = cycle.now;
        let side = entry.target.clone();
        let (referral_id, crm, crm_id) = super::effects::record_log_fields(&entry.record_key);
        tracing::warn!(side = %side, referral_id, crm, crm_id, operation = %entry.operation, outcome = "failed", directive = directive.as_str(), error = %message, "effect failed");
        match directive {
            RetryDirective::Backoff => {
                if entry.attempts + 1 >= self.settings.max_attempts {
                    self.quarantine(entry, "retry", message, hint, cycle)
                        .await?;
                } else {
                    let wait = chrono::Duration::from_std(self.backoff(entry.attempts + 1))
                        .unwrap_or_default();
                    let (id, message) = (entry.id, message.to_owned());
                    self.write_db(move |r| r.retry_effect_later(id, &message, now + wait))
                        .await?;
                    self.count_failed(&side, cycle);
                }
                Ok(Flow::Continue)
            }
            RetryDirective::After(d) => {
                let until = now
                    + chrono::Duration::from_std(d.max(Duration::from_secs(1))).unwrap_or_default();
                {
                    let side = side.clone();
                    self.write_db(move |r| r.postpone_target(&side, until))
                        .await?;
                }
                cycle.stopped.insert(side.clone());
                if let Some(side) = Side::parse(&side) {
                    cycle
                        .summary
                        .paused
                        .push(Paused::throttled(side, Some(until)));
                }
                Ok(Flow::Stop)
            }
            RetryDirective::Operator => {
                let until =
                    now + chrono::Duration::from_std(self.settings.interval).unwrap_or_default();
                let failure = NewFailure {
                    record: format!("{side} (whole side)"),
                    side: side.clone(),
                    kind: "operator".into(),
                    message: message.to_owned(),
                    hint: hint.to_owned(),
                    raw: None,
                };
                self.write_db(move |r| {
                    r.postpone_target(&failure.side, until)?;
                    r.record_failure(&failure, now)?;
                    Ok(())
                })
                .await?;
                cycle.stopped.insert(side.clone());
                if let Some(side) = Side::parse(&side) {
                    cycle.summary.paused.push(Paused::operator(side));
                    cycle.summary.errors.push(SideError::new(
                        side,
                        SideErrorKind::Operator,
                        message,
                        hint,
                    ));
                }
                Ok(Flow::Stop)
            }
            RetryDirective::Permanent => {
                self.quarantine(entry, "permanent", message, hint, cycle)
                    .await?;
                Ok(Flow::Continue)
            }
        }
    }

    fn count_failed(&self, side: &str, cycle: &mut Cycle) {
        if side == PARTNER_CENTER {
            cycle.summary.partner_center.failed += 1;
        } else if let Some(kind) = crate::store::CrmKind::parse(side) {
            cycle.summary.crm(kind).failed += 1;
        }
    }

    /// Takes an effect out of the outbox and keeps it with the failure, so
    /// that `failures retry` can put it back.
    async fn quarantine(
        &self,
        entry: &OutboxEntry,
        kind: &str,
        message: &str,
        hint: &str,
        cycle: &mut Cycle,
    ) -> Result<(), SyncError> {
        let now = cycle.now;
        self.count_failed(&entry.target, cycle);
        cycle.summary.quarantined += 1;
        let raw = json!({
            "effect": entry.payload,
            "target": entry.target,
            "operation": entry.operation,
            "attempts": entry.attempts + 1,
        });
        let failure = NewFailure {
            record: entry.record_key.clone(),
            side: entry.target.clone(),
            kind: kind.to_owned(),
            message: message.to_owned(),
            hint: hint.to_owned(),
            raw: Some(raw.to_string()),
        };
        let event = format!(
            "{} {} quarantined after {} attempt(s): {message}",
            entry.target,
            entry.operation,
            entry.attempts + 1
        );
        // A quarantined update still carries its CRM changes: they stay
        // noted while the failure is open (see `Repo::forget_crm_changes`),
        // so that a Partner Center edit read meanwhile is a conflict the
        // owner rule settles, not an edit written over the CRM's.
        let id = entry.id;
        self.write_db(move |r| {
            r.complete_effect(id)?;
            r.record_failure(&failure, now)?;
            if r.get_referral(&failure.record)?.is_some() {
                r.append_event(
                    &failure.record,
                    now,
                    &failure.side,
                    "quarantined",
                    &event,
                    None,
                )?;
            }
            Ok(())
        })
        .await?;
        let (referral_id, crm, crm_id) = super::effects::record_log_fields(&entry.record_key);
        tracing::error!(side = %entry.target, referral_id, crm, crm_id, operation = %entry.operation, outcome = "quarantined", %message, %hint, "record quarantined");
        Ok(())
    }

    // ---- Partner Center ------------------------------------------------------------------

    async fn execute_partner_center(
        &self,
        pc: &dyn PartnerCenter,
        cycle: &mut Cycle,
    ) -> Result<(), SyncError> {
        loop {
            let now = cycle.now;
            let due = self
                .read_db(move |r| r.due_effects_for(PARTNER_CENTER, now, 50))
                .await?;
            if due.is_empty() {
                return Ok(());
            }
            if pc.paused_for_login() {
                cycle
                    .summary
                    .paused
                    .push(Paused::operator(Side::PartnerCenter));
                return Ok(());
            }
            let due: Vec<(OutboxEntry, Result<Effect, serde_json::Error>)> = due
                .into_iter()
                .map(|entry| {
                    let effect = serde_json::from_str::<Effect>(entry.payload.text());
                    (entry, effect)
                })
                .collect();
            let mut prior = self.look_up_prior_creates(pc, &due, cycle).await?;
            for (entry, effect) in due {
                let effect = match effect {
                    Ok(e) => e,
                    Err(e) => {
                        self.quarantine(
                            &entry,
                            "permanent",
                            &format!("unreadable outbox entry: {e}"),
                            "report this to the cosell-sync maintainers",
                            cycle,
                        )
                        .await?;
                        continue;
                    }
                };
                let (referral_id, crm, crm_id) =
                    super::effects::record_log_fields(&entry.record_key);
                let span = tracing::info_span!("effect", side = "partner_center", referral_id, crm, crm_id, operation = %entry.operation);
                let flow = match effect {
                    Effect::PcUpdate {
                        referral_id,
                        crm,
                        crm_id,
                        action,
                        ops,
                        upgrade_to_co_sell,
                        invitation,
                        crm_fields,
                        after_acceptance,
                    } => {
                        use tracing::Instrument;
                        let decided = Decided {
                            action,
                            ops,
                            upgrade: upgrade_to_co_sell,
                            invitation,
                            after_acceptance,
                        };
                        self.exec_pc_update(
                            pc,
                            &entry,
                            &referral_id,
                            crm,
                            &crm_id,
                            decided,
                            &crm_fields,
                            cycle,
                        )
                        .instrument(span)
                        .await?
                    }
                    Effect::PcInviteMicrosoft {
                        referral_id,
                        engagement_id,
                        crm,
                        crm_id,
                        draft,
                        look_first,
                    } => {
                        use tracing::Instrument;
                        let invite = Invitation {
                            referral_id,
                            engagement_id,
                            crm,
                            crm_id,
                            draft,
                            look_first,
                        };
                        self.exec_pc_invite(pc, &entry, invite, cycle)
                            .instrument(span)
                            .await?
                    }
                    Effect::PcCreate {
                        crm,
                        crm_id,
                        draft,
                        crm_fields,
                        ..
                    } => {
                        use tracing::Instrument;
                        let prior = prior.remove(&entry.id).unwrap_or(PriorCreate::NotSent);
                        self.exec_pc_create(
                            pc,
                            &entry,
                            crm,
                            &crm_id,
                            &draft,
                            prior,
                            &crm_fields,
                            cycle,
                        )
                        .instrument(span)
                        .await?
                    }
                    _ => {
                        self.quarantine(
                            &entry,
                            "permanent",
                            "a CRM effect was queued for Partner Center",
                            "report this to the cosell-sync maintainers",
                            cycle,
                        )
                        .await?;
                        Flow::Continue
                    }
                };
                if flow == Flow::Stop {
                    return Ok(());
                }
            }
        }
    }

    /// Marks the creates of `due` that were never sent as sent (one
    /// transaction, before any goes out), and looks up the others — which
    /// may have been made before an interruption — in one listing.
    async fn look_up_prior_creates(
        &self,
        pc: &dyn PartnerCenter,
        due: &[(OutboxEntry, Result<Effect, serde_json::Error>)],
        cycle: &Cycle,
    ) -> Result<HashMap<i64, PriorCreate>, SyncError> {
        let mut first_sends = Vec::new();
        let mut resends: Vec<(i64, String, chrono::DateTime<Utc>)> = Vec::new();
        for (entry, effect) in due {
            if let Ok(Effect::PcCreate {
                crm_id, intent_at, ..
            }) = effect
            {
                if entry.sent_at.is_none() && entry.attempts == 0 {
                    first_sends.push(entry.id);
                } else {
                    resends.push((entry.id, crm_id.clone(), *intent_at));
                }
            }
        }
        let mut prior = HashMap::new();
        if !first_sends.is_empty() {
            let now = cycle.now;
            self.write_db(move |r| r.mark_sent(&first_sends, now))
                .await?;
        }
        let Some(since) = resends.iter().map(|(_, _, at)| *at).min() else {
            return Ok(prior);
        };
        let ids: Vec<&str> = resends.iter().map(|(_, id, _)| id.as_str()).collect();
        match pc
            .find_outgoing_by_external_references(&ids, since - CREATE_LOOKBACK)
            .await
        {
            Ok(mut found) => {
                for (entry_id, crm_id, _) in &resends {
                    prior.insert(*entry_id, PriorCreate::Looked(found.remove(crm_id.trim())));
                }
            }
            Err(e) => {
                for (entry_id, _, _) in &resends {
                    prior.insert(
                        *entry_id,
                        PriorCreate::LookupFailed {
                            directive: e.directive(),
                            message: e.to_string(),
                            hint: e.hint(),
                        },
                    );
                }
            }
        }
        Ok(prior)
    }

    async fn current_referral(
        &self,
        pc: &dyn PartnerCenter,
        id: &str,
    ) -> Result<Referral, PartnerCenterError> {
        let owned = id.to_owned();
        if let Ok(Some(snap)) = self.read_db(move |r| r.get_referral(&owned)).await
            && let Ok(r) = snap.referral()
        {
            return Ok(r);
        }
        pc.get(id).await
    }

    /// Applies a decision to a referral; safe to replay (an action already
    /// done is skipped, a stale eTag comes back as `ModifiedConcurrently`).
    async fn apply_update(
        &self,
        pc: &dyn PartnerCenter,
        referral: &Referral,
        action: &Option<StageAction>,
        ops: &[crate::domain::PatchOp],
    ) -> Result<Referral, PartnerCenterError> {
        let id = referral.id.clone();
        let mut current = referral.clone();
        let stage_now = |r: &Referral| match (&r.status, &r.substatus) {
            (Some(s), Some(sub)) => Stage::from_api(s, sub),
            _ => None,
        };
        let refresh = |maybe: Option<Referral>| async {
            match maybe {
                Some(r) => Ok(r),
                None => pc.get(&id).await,
            }
        };
        let target = action.as_ref().map(|a| match a {
            StageAction::Accept => Stage::Accepted,
            StageAction::Decline { .. } => Stage::Declined,
            StageAction::Win => Stage::Won,
            StageAction::Lose { .. } => Stage::Lost,
        });
        let action_pending = target.is_some() && stage_now(&current) != target;
        let patch = |current: Referral| async move {
            if ops.is_empty() {
                return Ok(current);
            }
            let etag = current.e_tag.clone().unwrap_or_default();
            let updated = pc.patch(&current.id, &etag, ops).await?;
            refresh(updated).await
        };
        match action {
            Some(StageAction::Accept) => {
                if action_pending {
                    current = refresh(
                        pc.change_stage(&current, &StageAction::Accept.to_lifecycle())
                            .await?,
                    )
                    .await?;
                }
                current = patch(current).await?;
            }
            Some(a @ StageAction::Decline { .. }) => {
                // Archived by the decline: its notes go in the same PATCH.
                if action_pending {
                    current = refresh(
                        pc.change_stage_with(&current, &a.to_lifecycle(), ops)
                            .await?,
                    )
                    .await?;
                }
            }
            Some(a) => {
                current = patch(current).await?;
                if action_pending {
                    current = refresh(pc.change_stage(&current, &a.to_lifecycle()).await?).await?;
                }
            }
            None => current = patch(current).await?,
        }
        Ok(current)
    }

    #[allow(clippy::too_many_arguments)]
    async fn exec_pc_update(
        &self,
        pc: &dyn PartnerCenter,
        entry: &OutboxEntry,
        referral_id: &str,
        crm: crate::store::CrmKind,
        crm_id: &str,
        decided: Decided,
        crm_fields: &CrmFields,
        cycle: &mut Cycle,
    ) -> Result<Flow, SyncError> {
        let mut referral = match self.current_referral(pc, referral_id).await {
            Ok(r) => r,
            Err(e) => {
                return self.fail_pc(entry, &e, cycle).await;
            }
        };
        let Decided {
            mut action,
            mut ops,
            mut upgrade,
            mut invitation,
            after_acceptance,
        } = decided;
        // Once accepted, the fields held while the referral was received
        // follow (see `held_until_accepted`), also when the acceptance was
        // found done already (sent before an interruption).
        let accepting = action == Some(StageAction::Accept);
        let mut decided_again = false;
        let updated = loop {
            match self.apply_update(pc, &referral, &action, &ops).await {
                Ok(r) => break r,
                Err(PartnerCenterError::ModifiedConcurrently { .. }) if !decided_again => {
                    decided_again = true;
                    referral = match pc.get(referral_id).await {
                        Ok(r) => r,
                        Err(e) => {
                            return self.fail_pc(entry, &e, cycle).await;
                        }
                    };
                    let owned = referral_id.to_owned();
                    let old = self.read_db(move |r| r.get_referral(&owned)).await?;
                    let mut snap = ReferralSnapshot::from_referral(
                        &referral,
                        self.settings.expiry_days,
                        cycle.now,
                    );
                    if let Some(old) = &old {
                        snap.first_seen = old.first_seen;
                        snap.locally_expired = old.locally_expired;
                    }
                    let (json, stage) = effective_json(&snap);
                    {
                        let (snap, now) = (snap.clone(), cycle.now);
                        self.write_db(move |r| {
                            r.upsert_referral(&snap)?;
                            r.append_event(&snap.id, now, PARTNER_CENTER, "conflict", "the referral changed in Partner Center meanwhile (412): read again and decided again", None)
                        })
                        .await?;
                    }
                    let (Some(side), Some(stage)) = (self.side(crm), stage) else {
                        let (id, carried) = (entry.id, carries_crm_changes(entry));
                        self.write_db(move |r| {
                            r.complete_effect(id)?;
                            match &carried {
                                Some(referral_id) => r.forget_crm_changes_of(referral_id),
                                None => Ok(()),
                            }
                        })
                        .await?;
                        return Ok(Flow::Continue);
                    };
                    let mut d = decide_from_crm(
                        &side.mapping,
                        crm_fields,
                        None,
                        &json,
                        stage,
                        snap.locally_expired,
                        snap.deadline,
                        cycle.now,
                    );
                    // Decide again only about what the CRM asked for.
                    d.ops.retain(|op| ops.iter().any(|o| o.path == op.path));
                    if after_acceptance {
                        d.action = None;
                        d.upgrade_to_co_sell = false;
                    }
                    // An upgrade whose patch already landed (our own earlier
                    // attempt) reads as co-sell now: Microsoft is still to be
                    // invited (looked up first).
                    let still_upgrading = d.upgrade_to_co_sell || (upgrade && !stage.is_archived());
                    if d.action.is_none() && d.ops.is_empty() && !still_upgrading {
                        let follow_up = (accepting && stage == Stage::Accepted)
                            .then(|| {
                                update_after_acceptance(
                                    side,
                                    referral_id,
                                    crm_id,
                                    crm_fields,
                                    &json,
                                )
                            })
                            .flatten();
                        let (id, now) = (entry.id, cycle.now);
                        let carried = carries_crm_changes(entry);
                        self.write_db(move |r| {
                            r.complete_effect(id)?;
                            if let Some(referral_id) = &carried {
                                r.forget_crm_changes_of(referral_id)?;
                            }
                            if let Some(f) = &follow_up {
                                r.upsert_effect(f, now)?;
                            }
                            Ok(())
                        })
                        .await?;
                        return Ok(Flow::Continue);
                    }
                    action = d.action;
                    ops = d.ops;
                    upgrade = still_upgrading;
                    invitation = d.invitation.or(invitation);
                }
                Err(e) => {
                    let flow = self.fail_pc(entry, &e, cycle).await?;
                    return Ok(flow);
                }
            }
        };
        let now = cycle.now;
        let side = self.side(crm).cloned();
        let owned = referral_id.to_owned();
        let old = self.read_db(move |r| r.get_referral(&owned)).await?;
        let mut snap = ReferralSnapshot::from_referral(&updated, self.settings.expiry_days, now);
        if let Some(old) = &old {
            snap.first_seen = old.first_seen;
            snap.locally_expired = old.locally_expired;
        }
        let follow_up = if accepting && snap.stage == Some(Stage::Accepted) {
            let json = updated.to_json();
            side.as_ref().and_then(|side| {
                update_after_acceptance(side, referral_id, crm_id, crm_fields, &json)
            })
        } else {
            None
        };
        let mut message = Vec::new();
        if after_acceptance {
            message.push("after the acceptance".to_owned());
        }
        if let Some(a) = &action {
            message.push(format!(
                "{}ed in Partner Center",
                a.describe().trim_end_matches('e')
            ));
        }
        if !ops.is_empty() {
            message.push(format!(
                "sent {}",
                ops.iter()
                    .map(|o| o.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if upgrade {
            message.push("upgraded to co-sell: Microsoft is invited next".into());
        }
        let invite = if upgrade {
            let draft = invitation.unwrap_or_else(|| updated.to_json());
            Some(
                Effect::PcInviteMicrosoft {
                    referral_id: referral_id.to_owned(),
                    engagement_id: updated.engagement_id.clone().unwrap_or_default(),
                    crm,
                    crm_id: crm_id.to_owned(),
                    draft,
                    look_first: true,
                }
                .to_new(),
            )
        } else {
            None
        };
        self.hit("pc_update.before_commit")?;
        let (entry_id, referral_id, crm_id) = (entry.id, referral_id.to_owned(), crm_id.to_owned());
        let (has_side, e_tag) = (side.is_some(), updated.e_tag.clone());
        let event = format!("from {crm}: {}", message.join("; "));
        let carried = carries_crm_changes(entry);
        self.write_db(move |r| {
            r.upsert_referral(&snap)?;
            if has_side && let Some(mut link) = r.link_by_crm_id(crm, &crm_id)? {
                // pc_hash stays: the next poll compares the referral with what
                // the CRM has, so a concurrent Partner Center edit still
                // reaches the CRM (and our own echo costs no write).
                link.pc_version = e_tag;
                link.updated_at = now;
                r.update_link(&link)?;
            }
            r.complete_effect(entry_id)?;
            // Partner Center holds the CRM's changes now: reading our own
            // write back is no edit on both sides.
            if let Some(referral_id) = &carried {
                r.forget_crm_changes_of(referral_id)?;
            }
            if let Some(invite) = &invite {
                r.upsert_effect(invite, now)?;
            }
            if let Some(follow_up) = &follow_up {
                r.upsert_effect(follow_up, now)?;
            }
            r.resolve_failure(&referral_id, PARTNER_CENTER)?;
            r.append_event(&referral_id, now, PARTNER_CENTER, "updated", &event, None)?;
            Ok(())
        })
        .await?;
        cycle.summary.partner_center.updated += 1;
        Ok(Flow::Continue)
    }

    #[allow(clippy::too_many_arguments)]
    async fn exec_pc_create(
        &self,
        pc: &dyn PartnerCenter,
        entry: &OutboxEntry,
        crm: crate::store::CrmKind,
        crm_id: &str,
        draft: &Value,
        prior: PriorCreate,
        crm_fields: &CrmFields,
        cycle: &mut Cycle,
    ) -> Result<Flow, SyncError> {
        let now = cycle.now;
        let Some(draft) = self.queued_draft(entry, draft, cycle).await? else {
            return Ok(Flow::Continue);
        };
        let mut notes = Vec::new();
        let mut recovered = false;
        // A create is the one write that is not idempotent: look for the deal
        // we may already have made before (re)sending it.
        let created = match prior {
            PriorCreate::Looked(Some(PriorDeal::Found(found))) => {
                notes.push(
                    "found the deal created before an interruption; not created twice".to_owned(),
                );
                recovered = true;
                *found
            }
            PriorCreate::Looked(Some(PriorDeal::Unreadable(failure))) => {
                let e = PartnerCenterError::Unreadable(failure);
                return self.fail_pc(entry, &e, cycle).await;
            }
            PriorCreate::LookupFailed {
                directive,
                message,
                hint,
            } => {
                return self
                    .fail_effect(entry, directive, &message, &hint, cycle)
                    .await;
            }
            PriorCreate::NotSent | PriorCreate::Looked(None) => {
                match pc.create_own_referral(&draft).await {
                    Ok(c) => c,
                    Err(e) => {
                        return self.fail_pc(entry, &e, cycle).await;
                    }
                }
            }
        };
        let kind = DealKind::of(&created);
        // Co-sell: Microsoft's referral is the second step, queued with this
        // commit so that an interruption here is finished on recovery.
        let invite = draft.assistance_requested().is_some().then(|| {
            Effect::PcInviteMicrosoft {
                referral_id: created.id.clone(),
                engagement_id: created.engagement_id.clone().unwrap_or_default(),
                crm,
                crm_id: crm_id.to_owned(),
                draft: draft.to_json(),
                look_first: recovered,
            }
            .to_new()
        });
        let snap = ReferralSnapshot::from_referral(&created, self.settings.expiry_days, now);
        let (json, stage) = effective_json(&snap);
        let side = self.side(crm).cloned();
        let rid = created.id.clone();
        self.hit("pc_create.before_commit")?;
        let (entry_id, record_key, crm_id, crm_fields) = (
            entry.id,
            entry.record_key.clone(),
            crm_id.to_owned(),
            crm_fields.clone(),
        );
        let created_event = format!(
            "{} deal created from {crm} opportunity {crm_id}",
            kind.as_str()
        );
        self.write_db(move |r| {
            let (crm_id, crm_fields) = (&crm_id, &crm_fields);
            r.upsert_referral(&snap)?;
            let mut link = r
                .link_by_crm_id(crm, crm_id)?
                .unwrap_or_else(|| Link::new(crm, crm_id, Some(&rid), now));
            link.referral_id = Some(rid.clone());
            link.crm_fields = Some(Value::Object(crm_fields.clone()));
            link.updated_at = now;
            super::plan::upsert_link(r, &link)?;
            if let Some(side) = &side {
                // Write the referral id (and what Partner Center filled in) back.
                let m = &side.mapping;
                let mut fields = m
                    .crm_update(&json, stage.unwrap_or(Stage::Accepted), crm_fields)
                    .record;
                fields.insert(m.external_id.clone(), Value::String(rid.clone()));
                if let Some(update) = m.error_update(&[]) {
                    for (k, v) in update {
                        if crm_fields.get(&k).is_some_and(|cur| {
                            !cur.is_null() && cur != &Value::String(String::new())
                        }) {
                            fields.insert(k, v);
                        }
                    }
                }
                let write_back = Effect::CrmUpsert {
                    crm,
                    write: RecordWrite {
                        key: RecordKey::CrmId(crm_id.to_owned()),
                        fields,
                        if_match: None,
                        customer: None,
                    },
                    referral_id: Some(rid.clone()),
                    pc_hash: Some(m.pc_projection_hash(&json)),
                };
                r.upsert_effect(&write_back.to_new(), now)?;
            }
            r.complete_effect(entry_id)?;
            if let Some(invite) = &invite {
                r.upsert_effect(invite, now)?;
            }
            r.resolve_failure(&record_key, PARTNER_CENTER)?;
            r.resolve_failure(&record_key, crm.as_str())?;
            r.append_event(&rid, now, PARTNER_CENTER, "created", &created_event, None)?;
            for n in &notes {
                r.append_event(&rid, now, PARTNER_CENTER, "created", n, None)?;
            }
            Ok(())
        })
        .await?;
        cycle.summary.partner_center.created += 1;
        Ok(Flow::Continue)
    }

    /// The referral draft an outbox entry carries; an unreadable one (a
    /// store written by another version) is quarantined.
    async fn queued_draft(
        &self,
        entry: &OutboxEntry,
        draft: &Value,
        cycle: &mut Cycle,
    ) -> Result<Option<Referral>, SyncError> {
        match Referral::from_json(draft.clone()) {
            Ok(d) => Ok(Some(d)),
            Err(e) => {
                self.quarantine(
                    entry,
                    "permanent",
                    &e.to_string(),
                    "report this to the cosell-sync maintainers",
                    cycle,
                )
                .await?;
                Ok(None)
            }
        }
    }

    /// Invites Microsoft into a co-sell engagement: the Microsoft-targeted
    /// referral, created once. A first attempt is marked sent before it goes
    /// out; any later one (and an invitation that may have been made
    /// elsewhere) looks in the engagement first.
    async fn exec_pc_invite(
        &self,
        pc: &dyn PartnerCenter,
        entry: &OutboxEntry,
        invite: Invitation,
        cycle: &mut Cycle,
    ) -> Result<Flow, SyncError> {
        let now = cycle.now;
        let Some(draft) = self.queued_draft(entry, &invite.draft, cycle).await? else {
            return Ok(Flow::Continue);
        };
        let look = invite.look_first || entry.sent_at.is_some() || entry.attempts > 0;
        let found = if look {
            match pc.find_microsoft_referral(&invite.engagement_id).await {
                Ok(found) => found,
                Err(e) => return self.fail_pc(entry, &e, cycle).await,
            }
        } else {
            None
        };
        let (microsoft, how) = match found {
            Some(m) => (m, "found already in the engagement; not invited twice"),
            None => {
                if entry.sent_at.is_none() {
                    let id = entry.id;
                    self.write_db(move |r| r.mark_sent(&[id], now)).await?;
                }
                match pc.invite_microsoft(&draft, &invite.engagement_id).await {
                    Ok(m) => (m, "invited"),
                    Err(e) => return self.fail_pc(entry, &e, cycle).await,
                }
            }
        };
        self.hit("pc_invite.before_commit")?;
        let entry_id = entry.id;
        let event = format!(
            "Microsoft {how}: referral {} in engagement {}",
            microsoft.id, invite.engagement_id
        );
        self.write_db(move |r| {
            if let Some(mut link) = r.link_by_crm_id(invite.crm, &invite.crm_id)?
                && link.help_requested_at.is_none()
            {
                link.help_requested_at = Some(now);
                link.updated_at = now;
                r.update_link(&link)?;
            }
            // Microsoft's answer, read from its referral, belongs to this deal.
            r.kv_set(
                &format!(
                    "{}{}",
                    super::seller::ENGAGEMENT_OWNER,
                    invite.engagement_id
                ),
                &invite.referral_id,
                now,
            )?;
            r.complete_effect(entry_id)?;
            r.resolve_failure(&invite.referral_id, PARTNER_CENTER)?;
            r.append_event(
                &invite.referral_id,
                now,
                PARTNER_CENTER,
                "microsoft_invited",
                &event,
                None,
            )?;
            Ok(())
        })
        .await?;
        cycle.summary.partner_center.created += 1;
        Ok(Flow::Continue)
    }

    // ---- CRMs --------------------------------------------------------------------------

    async fn execute_crm(&self, side: &CrmSide, cycle: &mut Cycle) -> Result<(), SyncError> {
        self.send_crm_batches(side, cycle, false).await
    }

    /// Sends the CRM writes a long listing has queued, in full batches, while
    /// the listing is still being read: the outbox then stays a few batches
    /// long and in SQLite's page cache instead of holding a whole backfill
    /// until the end. What is left goes out with the cycle's other effects.
    pub(crate) async fn send_full_crm_batches(&self, cycle: &mut Cycle) -> Result<(), SyncError> {
        if cycle.dry_run {
            return Ok(());
        }
        for side in self.crms.clone() {
            self.send_crm_batches(&side, cycle, true).await?;
        }
        Ok(())
    }

    /// Sends `side`'s due effects a batch per call, all of them, or with
    /// `only_full` only while a whole batch is due.
    async fn send_crm_batches(
        &self,
        side: &CrmSide,
        cycle: &mut Cycle,
        only_full: bool,
    ) -> Result<(), SyncError> {
        let target = side.kind.as_str();
        loop {
            if cycle.stopped.contains(target) {
                return Ok(());
            }
            let (now, batch) = (cycle.now, side.batch_size.max(1));
            if only_full
                && self
                    .read_db(move |r| r.due_effect_count_for(target, now, batch))
                    .await?
                    < batch
            {
                return Ok(());
            }
            let due = self
                .read_db(move |r| r.due_effects_for(target, now, batch))
                .await?;
            if due.is_empty() {
                return Ok(());
            }
            // The writes apart from their entries: the call borrows them.
            let mut upserts: Vec<(OutboxEntry, Option<String>, Option<String>)> = Vec::new();
            let mut writes: Vec<RecordWrite> = Vec::new();
            let mut closes = Vec::new();
            for entry in due {
                match serde_json::from_str::<Effect>(entry.payload.text()) {
                    Ok(Effect::CrmUpsert {
                        write,
                        referral_id,
                        pc_hash,
                        ..
                    }) => {
                        upserts.push((entry, referral_id, pc_hash));
                        writes.push(write);
                    }
                    Ok(Effect::CrmClose {
                        close,
                        referral_id,
                        pc_hash,
                        ..
                    }) => closes.push((entry, close, referral_id, pc_hash)),
                    Ok(_) | Err(_) => {
                        self.quarantine(
                            &entry,
                            "permanent",
                            "unreadable outbox entry",
                            "report this to the cosell-sync maintainers",
                            cycle,
                        )
                        .await?;
                    }
                }
            }
            if !upserts.is_empty() {
                let result = side.crm.upsert(&writes).await;
                let flow = self
                    .crm_results(
                        side,
                        result,
                        upserts
                            .into_iter()
                            .zip(writes)
                            .map(|((e, rid, h), w)| (e, w.fields, rid, h, false))
                            .collect(),
                        cycle,
                    )
                    .await?;
                if flow == Flow::Stop {
                    return Ok(());
                }
            }
            if !closes.is_empty() {
                let requests = closes.iter().map(|(_, c, _, _)| c.clone()).collect();
                let result = side.crm.close(requests).await;
                let flow = self
                    .crm_results(
                        side,
                        result,
                        closes
                            .into_iter()
                            .map(|(e, c, rid, h)| (e, c.fields, Some(rid), h, true))
                            .collect(),
                        cycle,
                    )
                    .await?;
                if flow == Flow::Stop {
                    return Ok(());
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    async fn crm_results(
        &self,
        side: &CrmSide,
        result: Result<Vec<crate::crm::WriteResult>, crate::crm::CrmError>,
        items: Vec<(OutboxEntry, CrmFields, Option<String>, Option<String>, bool)>,
        cycle: &mut Cycle,
    ) -> Result<Flow, SyncError> {
        let results = match result {
            Ok(r) => r,
            // A one-record call failing on that record is the record's failure.
            Err(
                e @ (CrmError::Record { .. }
                | CrmError::Conflict { .. }
                | CrmError::MultipleMatches { .. }),
            ) if items.len() == 1 => {
                let key = match &e {
                    CrmError::Record { key, .. }
                    | CrmError::Conflict { key }
                    | CrmError::MultipleMatches { key, .. } => key.clone(),
                    _ => RecordKey::CrmId(String::new()),
                };
                vec![crate::crm::WriteResult {
                    key,
                    outcome: Err(e),
                }]
            }
            Err(e) => {
                // The whole call failed: every record shares the verdict. A call
                // refused as a whole is the side's problem (mapping, org setup),
                // not the records': pause the side instead of quarantining them.
                let directive = match e.directive() {
                    RetryDirective::Permanent => RetryDirective::Operator,
                    d => d,
                };
                let (msg, hint) = (e.to_string(), e.hint());
                for (entry, ..) in &items {
                    if self
                        .fail_effect(entry, directive, &msg, &hint, cycle)
                        .await?
                        == Flow::Stop
                    {
                        return Ok(Flow::Stop);
                    }
                }
                return Ok(Flow::Continue);
            }
        };
        let mut successes = Vec::new();
        let mut failures = Vec::new();
        for ((entry, fields, referral_id, pc_hash, is_close), result) in
            items.into_iter().zip(results)
        {
            match result.outcome {
                Ok(ok) => successes.push(CrmSuccess {
                    entry,
                    fields,
                    referral_id,
                    pc_hash,
                    is_close,
                    ok,
                }),
                Err(e) => failures.push((entry, e)),
            }
        }
        // The successes of one call are recorded in one transaction: the
        // writes were upserts and closes, so replaying them after a crash
        // before this commit is harmless.
        self.crm_successes(side, successes, cycle).await?;
        for (entry, e) in failures {
            if self
                .fail_effect(&entry, e.directive(), &e.to_string(), &e.hint(), cycle)
                .await?
                == Flow::Stop
            {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    async fn crm_successes(
        &self,
        side: &CrmSide,
        successes: Vec<CrmSuccess>,
        cycle: &mut Cycle,
    ) -> Result<(), SyncError> {
        if successes.is_empty() {
            return Ok(());
        }
        let now = cycle.now;
        let kind = side.kind;
        for s in &successes {
            self.hit(if s.is_close {
                "crm_close.before_commit"
            } else {
                "crm_upsert.before_commit"
            })?;
        }
        self.beat(0);
        let counts: Vec<(bool, bool)> = successes
            .iter()
            .map(|s| (s.is_close, s.ok.created))
            .collect();
        let owned_side = side.clone();
        self.write_db(move |r| {
            for s in &successes {
                Self::crm_success(r, &owned_side, s, now)?;
            }
            Ok(())
        })
        .await?;
        for (is_close, created) in counts {
            let summary = cycle.summary.crm(kind);
            if is_close {
                summary.closed += 1;
            } else if created {
                summary.created += 1;
            } else {
                summary.updated += 1;
            }
        }
        Ok(())
    }

    fn crm_success(
        r: &crate::store::Repo<'_>,
        side: &CrmSide,
        s: &CrmSuccess,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), crate::store::StoreError> {
        let kind = side.kind;
        let (entry, fields, ok, is_close) = (&s.entry, &s.fields, &s.ok, s.is_close);
        let (referral_id, pc_hash) = (s.referral_id.clone(), s.pc_hash.clone());
        {
            let existing = match r.link_by_crm_id(kind, &ok.crm_id)? {
                Some(l) => Some(l),
                None => match &referral_id {
                    Some(rid) => r.link_by_referral(kind, rid)?,
                    None => None,
                },
            };
            let is_new = existing.is_none();
            let mut link = existing
                .unwrap_or_else(|| Link::new(kind, &ok.crm_id, referral_id.as_deref(), now));
            link.crm_id = ok.crm_id.clone();
            if referral_id.is_some() {
                link.referral_id = referral_id.clone();
            }
            let mut merged = merge_fields(&link.crm_fields, fields);
            let added = side.crm.as_read_back(&ok.crm_id, &mut merged);
            // A field the write did not carry (a new record's id) that the
            // mapping sends to Partner Center is news there: its echo is
            // decided, not skipped as seen.
            let news = added
                .iter()
                .any(|k| side.mapping.sends_to_partner_center(k));
            if news {
                for k in &added {
                    merged.remove(k);
                }
            }
            link.crm_hash = (!news).then(|| side.mapping.crm_projection_hash(&merged));
            link.crm_fields = Some(Value::Object(merged));
            if ok.version.is_some() {
                link.crm_version = ok.version.clone();
            }
            if pc_hash.is_some() {
                link.pc_hash = pc_hash.clone();
            }
            link.updated_at = now;
            if is_new {
                // Neither this CRM id nor this referral is linked yet.
                r.insert_link(&link)?;
            } else {
                r.update_link(&link)?;
            }
            r.complete_effect(entry.id)?;
            r.resolve_failure(&entry.record_key, kind.as_str())?;
            if !is_close
                && let Some(rid) = &referral_id
                && let Some(close) = Self::close_after_upsert(side, fields, &ok.crm_id)
            {
                // Queued with the upsert's success, so a crash between the two
                // calls replays the close, never leaves the deal open.
                let effect = Effect::CrmClose {
                    crm: kind,
                    close,
                    referral_id: rid.clone(),
                    pc_hash: pc_hash.clone(),
                };
                r.upsert_effect(&effect.to_new(), now)?;
            }
            if let Some(rid) = &referral_id {
                let what = if is_close {
                    "opportunity closed"
                } else if ok.created {
                    "opportunity created"
                } else {
                    "opportunity updated"
                };
                r.append_event(
                    rid,
                    now,
                    kind.as_str(),
                    if is_close {
                        "closed"
                    } else if ok.created {
                        "created"
                    } else {
                        "updated"
                    },
                    &format!("{what} ({})", ok.crm_id),
                    None,
                )?;
            }
            Ok(())
        }
    }

    /// The close that must follow an upsert that asked for a closed stage
    /// the CRM cannot create (a Dataverse row is created open): its stage
    /// fields, the reason having gone with the upsert.
    fn close_after_upsert(
        side: &CrmSide,
        written: &CrmFields,
        crm_id: &str,
    ) -> Option<crate::crm::CloseRequest> {
        if side.kind.creates_closed() {
            return None;
        }
        let stages = &side.mapping.stages;
        let shown = stages.candidates(written);
        let stage = [Stage::Won, Stage::Lost, Stage::Declined, Stage::Expired]
            .into_iter()
            .find(|s| shown.contains(s))?;
        let stage_fields = stages.fields();
        let reason = stages
            .reason_field
            .as_ref()
            .and_then(|f| written.get(f))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(crate::crm::CloseRequest {
            key: RecordKey::CrmId(crm_id.to_owned()),
            outcome: super::plan::close_outcome(stage),
            fields: written
                .iter()
                .filter(|(k, _)| stage_fields.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            reason,
        })
    }

    // ---- Microsoft's 14-day decision window ------------------------------------------------

    /// Reports, once per deal, whether Microsoft sellers engaged within their
    /// window after a co-sell request. Nothing is closed.
    pub(crate) async fn check_microsoft_windows(
        &self,
        pc: &dyn PartnerCenter,
        cycle: &mut Cycle,
    ) -> Result<(), SyncError> {
        if pc.paused_for_login() {
            return Ok(());
        }
        let window = chrono::Duration::days(i64::from(self.settings.microsoft_decision_days));
        let since = cycle.now - window;
        let lapsed = self.read_db(move |r| r.help_windows_lapsed(since)).await?;
        for link in lapsed {
            let Some(rid) = link.referral_id.clone() else {
                continue;
            };
            let owned = rid.clone();
            let Some(snap) = self.read_db(move |r| r.get_referral(&owned)).await? else {
                continue;
            };
            let engagement = snap
                .raw
                .value()
                .get("engagementId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let microsoft = if engagement.is_empty() {
                None
            } else {
                match pc.find_microsoft_referral(&engagement).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::warn!(referral_id = %rid, error = %e, "could not read Microsoft's referral");
                        continue;
                    }
                }
            };
            let engaged = microsoft
                .as_ref()
                .and_then(|m| match (&m.status, &m.substatus) {
                    (Some(s), Some(sub)) => Stage::from_api(s, sub),
                    _ => None,
                });
            let message = match (&microsoft, engaged) {
                (None, _) => "Microsoft was never invited: its engagement holds no Microsoft-targeted referral (see `cosell-sync failures list` for the invitation)".to_owned(),
                (_, Some(Stage::Accepted | Stage::Won)) => {
                    "Microsoft sellers engaged on the co-sell request".to_owned()
                }
                _ => {
                    self.record_no_answer(&rid, cycle.now).await?;
                    format!(
                        "Microsoft sellers did not engage within {} days of the co-sell request; the deal stays open",
                        self.settings.microsoft_decision_days
                    )
                }
            };
            let now = cycle.now;
            self.write_db(move |r| {
                r.append_event(
                    &rid,
                    now,
                    PARTNER_CENTER,
                    "microsoft_window",
                    &message,
                    None,
                )
            })
            .await?;
        }
        Ok(())
    }
}

/// What a CRM record asked of a referral, as queued.
struct Decided {
    action: Option<StageAction>,
    ops: Vec<crate::domain::PatchOp>,
    upgrade: bool,
    invitation: Option<Value>,
    after_acceptance: bool,
}

/// The update that follows an acceptance: what the CRM record holds for
/// Partner Center only and the accepted `referral` lacks (see
/// [`held_until_accepted`]); `None` when it lacks nothing. Queued in the
/// transaction that records the acceptance, so a crash cannot lose it.
fn update_after_acceptance(
    side: &CrmSide,
    referral_id: &str,
    crm_id: &str,
    crm_fields: &CrmFields,
    referral: &Value,
) -> Option<NewEffect> {
    let ops = held_until_accepted(&side.mapping, crm_fields, referral);
    if ops.is_empty() {
        return None;
    }
    let effect = Effect::PcUpdate {
        referral_id: referral_id.to_owned(),
        crm: side.kind,
        crm_id: crm_id.to_owned(),
        action: None,
        ops,
        upgrade_to_co_sell: false,
        invitation: None,
        crm_fields: crm_fields.clone(),
        after_acceptance: true,
    };
    Some(effect.to_new())
}

/// A queued invitation of Microsoft into a co-sell engagement.
struct Invitation {
    referral_id: String,
    engagement_id: String,
    crm: crate::store::CrmKind,
    crm_id: String,
    draft: Value,
    look_first: bool,
}

/// A CRM write the CRM confirmed, to record.
struct CrmSuccess {
    entry: OutboxEntry,
    fields: CrmFields,
    referral_id: Option<String>,
    pc_hash: Option<String>,
    is_close: bool,
    ok: WriteOk,
}
