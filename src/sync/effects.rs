//! Remote effects as they are kept in the outbox: decided and committed
//! before anything is sent, replayed harmlessly after a crash.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crm::{CloseRequest, CrmFields, RecordWrite};
use crate::domain::{LifecycleAction, PatchOp};
use crate::store::{CrmKind, NewEffect, RawJson};

/// The outbox target of Partner Center effects.
pub const PARTNER_CENTER: &str = "partner_center";

/// A lifecycle action, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum StageAction {
    Accept,
    Decline { reason: String },
    Win,
    Lose { reason: Option<String> },
}

impl StageAction {
    pub fn to_lifecycle(&self) -> LifecycleAction {
        match self {
            StageAction::Accept => LifecycleAction::Accept,
            StageAction::Decline { reason } => LifecycleAction::Decline {
                reason: reason.clone(),
            },
            StageAction::Win => LifecycleAction::Win,
            StageAction::Lose { reason } => LifecycleAction::Lose {
                reason: reason.clone(),
            },
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            StageAction::Accept => "accept",
            StageAction::Decline { .. } => "decline",
            StageAction::Win => "win",
            StageAction::Lose { .. } => "lose",
        }
    }
}

/// One remote effect.
// An upsert is the common effect and lives only between plan and outbox:
// boxing its write would add an allocation per referral to save stack space.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "effect")]
pub enum Effect {
    /// Upsert an opportunity (by referral id, or by CRM id for write-backs).
    CrmUpsert {
        crm: CrmKind,
        write: RecordWrite,
        /// The referral this write reflects.
        referral_id: Option<String>,
        /// Projection hash of the referral state the write reflects.
        pc_hash: Option<String>,
    },
    /// Close an opportunity as won or lost (declined and expired close as lost).
    CrmClose {
        crm: CrmKind,
        close: CloseRequest,
        referral_id: String,
        pc_hash: Option<String>,
    },
    /// Change a referral: a lifecycle action and/or a JSON Patch of mapped
    /// fields, decided from a CRM record.
    PcUpdate {
        referral_id: String,
        crm: CrmKind,
        crm_id: String,
        action: Option<StageAction>,
        ops: Vec<PatchOp>,
        /// Private → co-sell: invite Microsoft after the patch (an
        /// [`Effect::PcInviteMicrosoft`] committed with its success).
        upgrade_to_co_sell: bool,
        /// With `upgrade_to_co_sell`: the Microsoft-targeted referral's draft.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invitation: Option<Value>,
        /// The CRM record the decision came from (to decide again after a 412).
        crm_fields: CrmFields,
        /// The follow-up of an acceptance: the fields the mapping sends only
        /// to Partner Center whose CRM values it does not hold yet (held
        /// while the referral was received), queued with the acceptance's
        /// success. Its own outbox operation, so that a later decision about
        /// the record queues beside it instead of replacing it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        after_acceptance: bool,
    },
    /// Create an outbound deal from a flagged CRM opportunity.
    PcCreate {
        crm: CrmKind,
        crm_id: String,
        /// The create body (validated).
        draft: Value,
        /// When the create was decided: the look-up for a deal we may already
        /// have made starts here.
        intent_at: DateTime<Utc>,
        crm_fields: CrmFields,
    },
    /// The second step of a co-sell create or upgrade: the Microsoft-targeted
    /// referral in the partner's engagement. Queued in the transaction that
    /// records the first step, so an interruption between the two is
    /// finished; looked up in the engagement before any resend.
    PcInviteMicrosoft {
        /// The partner's own referral.
        referral_id: String,
        engagement_id: String,
        crm: CrmKind,
        crm_id: String,
        /// The Microsoft referral's draft (assistance request code, notes,
        /// customer contact).
        draft: Value,
        /// Microsoft may already be invited (a recovered create, an upgrade
        /// someone may have finished in Partner Center): look first.
        look_first: bool,
    },
}

/// The outbox operation of a Partner Center update ([`Effect::PcUpdate`]).
pub(crate) const PC_UPDATE: &str = "update";

/// The outbox operation of the update that follows an acceptance
/// ([`Effect::PcUpdate`] with `after_acceptance`).
pub(crate) const PC_UPDATE_AFTER_ACCEPTANCE: &str = "update_after_acceptance";

impl Effect {
    /// The outbox target.
    pub fn target(&self) -> &'static str {
        match self {
            Effect::CrmUpsert { crm, .. } | Effect::CrmClose { crm, .. } => crm.as_str(),
            Effect::PcUpdate { .. }
            | Effect::PcCreate { .. }
            | Effect::PcInviteMicrosoft { .. } => PARTNER_CENTER,
        }
    }

    /// The outbox operation.
    pub fn operation(&self) -> &'static str {
        match self {
            Effect::CrmUpsert { .. } => "upsert",
            Effect::CrmClose { .. } => "close",
            Effect::PcUpdate {
                after_acceptance: true,
                ..
            } => PC_UPDATE_AFTER_ACCEPTANCE,
            Effect::PcUpdate { .. } => PC_UPDATE,
            Effect::PcCreate { .. } => "create",
            Effect::PcInviteMicrosoft { .. } => "invite_microsoft",
        }
    }

    /// The record the effect is about: a referral id, or `<crm>:<crm id>`
    /// for records that have no referral yet.
    pub fn record_key(&self) -> String {
        match self {
            Effect::CrmUpsert {
                crm,
                write,
                referral_id,
                ..
            } => match (referral_id, &write.key) {
                (Some(id), _) => id.clone(),
                (None, crate::crm::RecordKey::Referral(id)) => id.clone(),
                (None, crate::crm::RecordKey::CrmId(id)) => crm_record_key(*crm, id),
            },
            Effect::CrmClose { referral_id, .. }
            | Effect::PcUpdate { referral_id, .. }
            | Effect::PcInviteMicrosoft { referral_id, .. } => referral_id.clone(),
            Effect::PcCreate { crm, crm_id, .. } => crm_record_key(*crm, crm_id),
        }
    }

    /// The outbox row.
    pub fn to_new(&self) -> NewEffect {
        NewEffect {
            target: self.target().to_owned(),
            operation: self.operation().to_owned(),
            record_key: self.record_key(),
            payload: RawJson::of(self),
        }
    }

    /// One line for `sync --dry-run` and the event log.
    pub fn describe(&self) -> String {
        match self {
            Effect::CrmUpsert { crm, write, .. } => {
                let mut fields: Vec<&str> = write.fields.keys().map(String::as_str).collect();
                fields.sort_unstable();
                format!("{crm}: upsert {} ({})", write.key, fields.join(", "))
            }
            Effect::CrmClose { crm, close, .. } => format!(
                "{crm}: close {} as {}{}",
                close.key,
                match close.outcome {
                    crate::crm::CloseOutcome::Won => "won",
                    crate::crm::CloseOutcome::Lost => "lost",
                },
                close
                    .reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            Effect::PcUpdate {
                referral_id,
                action,
                ops,
                upgrade_to_co_sell,
                after_acceptance,
                ..
            } => {
                let mut parts = Vec::new();
                if *after_acceptance {
                    parts.push("after the acceptance".to_owned());
                }
                if let Some(a) = action {
                    parts.push(a.describe().to_owned());
                }
                if !ops.is_empty() {
                    parts.push(format!(
                        "patch {}",
                        ops.iter()
                            .map(|o| o.path.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if *upgrade_to_co_sell {
                    parts.push("upgrade to co-sell".into());
                }
                format!(
                    "partner_center: referral {referral_id}: {}",
                    parts.join("; ")
                )
            }
            Effect::PcCreate {
                crm, crm_id, draft, ..
            } => format!(
                "partner_center: create {} deal {:?} from {crm} record {crm_id}",
                if draft.get("type").and_then(Value::as_str) == Some("Shared") {
                    "co-sell"
                } else {
                    "private"
                },
                draft.get("name").and_then(Value::as_str).unwrap_or("")
            ),
            Effect::PcInviteMicrosoft {
                referral_id,
                engagement_id,
                ..
            } => format!(
                "partner_center: invite Microsoft to engagement {engagement_id} of referral {referral_id}"
            ),
        }
    }
}

/// Whether a JSON Pointer is `parent` or lies under it.
fn under(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Effect {
    /// Whether a Partner Center update has nothing left to send.
    pub(crate) fn sends_nothing(&self) -> bool {
        matches!(
            self,
            Effect::PcUpdate {
                action: None,
                ops,
                upgrade_to_co_sell: false,
                ..
            } if ops.is_empty()
        )
    }

    /// This effect, decided after `queued` (the pending effect of the same
    /// target, operation and record, not confirmed done), as one effect that
    /// loses neither: a decision made from the link's base sends only what
    /// changed since the last decision, so replacing what still waits would
    /// drop the earlier edits on both sides.
    ///
    /// - A Partner Center update takes the union of both patches, in order,
    ///   an operation of this one replacing the queued one on the same path
    ///   or on a path under it (a later `/team/0` supersedes `/team/0/email`;
    ///   a later `/team/0/email` applies after an earlier `/team/0`). The
    ///   lifecycle action is this one's when set; when this one has none, the
    ///   queued one stays unless this decision read the same CRM record again:
    ///   an action is decided from the record's whole stage, not from what
    ///   changed, so a new decision without one means the stage now agrees
    ///   with Partner Center, was moved back, or cannot move (a decline
    ///   without reason, a late acceptance): sending the older action would
    ///   archive a deal the seller reopened. Only notes go with a decline.
    ///   The co-sell upgrade is ORed (its operations may be queued already),
    ///   its invitation this one's when set, the CRM record this one's.
    /// - A CRM upsert takes the union of both field sets, this one's value
    ///   winning; the projection hash and referral id are this one's when it
    ///   has them (an engagement write has no hash: the queued one's stays).
    /// - Any other effect is decided whole: this one replaces the queued one.
    pub(crate) fn merged_after(self, queued: Effect) -> Effect {
        match (self, queued) {
            (
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
                },
                Effect::PcUpdate {
                    crm: queued_crm,
                    crm_id: queued_crm_id,
                    action: queued_action,
                    ops: queued_ops,
                    upgrade_to_co_sell: queued_upgrade,
                    invitation: queued_invitation,
                    ..
                },
            ) => {
                let same_record = crm == queued_crm && crm_id == queued_crm_id;
                let action = if same_record {
                    action
                } else {
                    action.or(queued_action)
                };
                let mut merged: Vec<PatchOp> = queued_ops
                    .into_iter()
                    .filter(|q| !ops.iter().any(|o| under(&q.path, &o.path)))
                    .collect();
                merged.extend(ops);
                if matches!(action, Some(StageAction::Decline { .. })) {
                    merged.retain(super::plan::sets_notes);
                }
                let upgrade_to_co_sell = upgrade_to_co_sell || queued_upgrade;
                Effect::PcUpdate {
                    referral_id,
                    crm,
                    crm_id,
                    action,
                    ops: merged,
                    upgrade_to_co_sell,
                    invitation: invitation
                        .or(queued_invitation)
                        .filter(|_| upgrade_to_co_sell),
                    crm_fields,
                    after_acceptance,
                }
            }
            (
                Effect::CrmUpsert {
                    crm,
                    write,
                    referral_id,
                    pc_hash,
                },
                Effect::CrmUpsert {
                    write: queued_write,
                    referral_id: queued_referral_id,
                    pc_hash: queued_pc_hash,
                    ..
                },
            ) => {
                let mut fields = queued_write.fields;
                fields.extend(write.fields);
                Effect::CrmUpsert {
                    crm,
                    write: RecordWrite {
                        key: write.key,
                        fields,
                        if_match: write.if_match,
                        customer: write.customer.or(queued_write.customer),
                    },
                    referral_id: referral_id.or(queued_referral_id),
                    pc_hash: pc_hash.or(queued_pc_hash),
                }
            }
            (later, _) => later,
        }
    }

    /// A queued Partner Center update a conflict resolution decided afresh:
    /// without its operations on `overruled` paths (the resolution kept
    /// Partner Center's values there), and without its lifecycle action when
    /// `drop_action` (the resolution read the same CRM record's stage and
    /// found nothing to send).
    pub(crate) fn overruled(self, overruled: &[String], drop_action: bool) -> Effect {
        match self {
            Effect::PcUpdate {
                referral_id,
                crm,
                crm_id,
                action,
                mut ops,
                upgrade_to_co_sell,
                invitation,
                crm_fields,
                after_acceptance,
            } => {
                ops.retain(|op| !overruled.iter().any(|p| under(&op.path, p)));
                Effect::PcUpdate {
                    referral_id,
                    crm,
                    crm_id,
                    action: action.filter(|_| !drop_action),
                    ops,
                    upgrade_to_co_sell,
                    invitation,
                    crm_fields,
                    after_acceptance,
                }
            }
            other => other,
        }
    }
}

/// The record key of a CRM record with no referral.
pub fn crm_record_key(crm: CrmKind, crm_id: &str) -> String {
    format!("{crm}:{crm_id}")
}

/// A record key as the log fields `referral_id`, `crm` and `crm_id` (a
/// `None` field is left out of the line), so that every log line names a
/// record alike.
pub fn record_log_fields(key: &str) -> (Option<&str>, Option<&str>, Option<&str>) {
    match key.split_once(':') {
        Some((crm, id)) if CrmKind::ALL.iter().any(|k| k.as_str() == crm) => {
            (None, Some(crm), Some(id))
        }
        _ => (Some(key), None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::RecordKey;

    #[test]
    fn effects_round_trip_through_the_outbox_payload() {
        let e = Effect::PcUpdate {
            referral_id: "r1".into(),
            crm: CrmKind::Salesforce,
            crm_id: "006A".into(),
            action: Some(StageAction::Decline {
                reason: "No budget".into(),
            }),
            ops: vec![PatchOp::replace("/name", "Renamed")],
            upgrade_to_co_sell: false,
            invitation: None,
            crm_fields: CrmFields::new(),
            after_acceptance: false,
        };
        let row = e.to_new();
        assert_eq!(
            (row.target.as_str(), row.operation.as_str()),
            ("partner_center", "update")
        );
        assert_eq!(row.record_key, "r1");
        let back: Effect = serde_json::from_str(row.payload.text()).unwrap();
        // The text reads as the JSON tree of the effect.
        let tree = serde_json::to_value(&e).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(row.payload.text()).unwrap(),
            tree
        );
        assert_eq!(back, e);
        assert!(
            !row.payload.text().contains("after_acceptance"),
            "an update queued before the follow-up existed reads the same"
        );

        // The follow-up of an acceptance queues beside a later update.
        let follow_up = Effect::PcUpdate {
            referral_id: "r1".into(),
            crm: CrmKind::Salesforce,
            crm_id: "006A".into(),
            action: None,
            ops: vec![PatchOp::replace("/externalReferenceId", "006A")],
            upgrade_to_co_sell: false,
            invitation: None,
            crm_fields: CrmFields::new(),
            after_acceptance: true,
        };
        let row = follow_up.to_new();
        assert_eq!(
            (row.operation.as_str(), row.record_key.as_str()),
            ("update_after_acceptance", "r1")
        );
        let back: Effect = serde_json::from_str(row.payload.text()).unwrap();
        assert_eq!(back, follow_up);

        let w = Effect::CrmUpsert {
            crm: CrmKind::Dynamics,
            write: RecordWrite {
                key: RecordKey::CrmId("guid".into()),
                fields: CrmFields::new(),
                if_match: None,
                customer: None,
            },
            referral_id: None,
            pc_hash: None,
        };
        assert_eq!(w.record_key(), "dynamics:guid");
        assert_eq!(w.target(), "dynamics");
    }

    fn update(crm_id: &str, action: Option<StageAction>, ops: Vec<PatchOp>) -> Effect {
        Effect::PcUpdate {
            referral_id: "r1".into(),
            crm: CrmKind::Salesforce,
            crm_id: crm_id.into(),
            action,
            ops,
            upgrade_to_co_sell: false,
            invitation: None,
            crm_fields: CrmFields::new(),
            after_acceptance: false,
        }
    }

    fn parts(e: &Effect) -> (Option<StageAction>, Vec<PatchOp>) {
        match e {
            Effect::PcUpdate { action, ops, .. } => (action.clone(), ops.clone()),
            other => panic!("not an update: {other:?}"),
        }
    }

    #[test]
    fn a_later_update_merges_into_the_queued_one_the_later_op_winning_per_path() {
        let queued = update(
            "006A",
            Some(StageAction::Win),
            vec![
                PatchOp::replace("/details/dealValue", 1),
                PatchOp::replace("/team/0/email", "old@x"),
                PatchOp::replace("/customerProfile/address", serde_json::json!({"city": "A"})),
                PatchOp::replace("/name", "Old"),
            ],
        );
        let later = update(
            "006A",
            None,
            vec![
                PatchOp::replace("/details/notes", "n"),
                PatchOp::replace("/team/0", serde_json::json!({"email": "new@x"})),
                PatchOp::replace("/customerProfile/address/city", "B"),
                PatchOp::replace("/name", "New"),
            ],
        );
        let (action, ops) = parts(&later.merged_after(queued.clone()));
        assert_eq!(
            ops,
            vec![
                PatchOp::replace("/details/dealValue", 1),
                // An earlier parent stays, its later child applies after it.
                PatchOp::replace("/customerProfile/address", serde_json::json!({"city": "A"})),
                PatchOp::replace("/details/notes", "n"),
                // A later parent supersedes an earlier child.
                PatchOp::replace("/team/0", serde_json::json!({"email": "new@x"})),
                PatchOp::replace("/customerProfile/address/city", "B"),
                PatchOp::replace("/name", "New"),
            ]
        );
        assert_eq!(
            action, None,
            "the same record read again: its stage decides"
        );

        // Another record's decision does not speak for the queued action.
        let other = update("006B", None, vec![PatchOp::replace("/name", "New")]);
        assert_eq!(
            parts(&other.merged_after(queued.clone())).0,
            Some(StageAction::Win)
        );
        // A later action wins; only notes go with a decline.
        let decline = update(
            "006A",
            Some(StageAction::Decline {
                reason: "No budget".into(),
            }),
            vec![],
        );
        let queued = update(
            "006A",
            Some(StageAction::Accept),
            vec![
                PatchOp::replace("/details/notes", "why"),
                PatchOp::replace("/name", "x"),
            ],
        );
        assert_eq!(
            parts(&decline.merged_after(queued)),
            (
                Some(StageAction::Decline {
                    reason: "No budget".into()
                }),
                vec![PatchOp::replace("/details/notes", "why")]
            )
        );
    }

    #[test]
    fn a_later_upsert_merges_into_the_queued_one_the_later_value_winning() {
        let upsert = |fields: serde_json::Value, pc_hash: Option<&str>| Effect::CrmUpsert {
            crm: CrmKind::Dynamics,
            write: RecordWrite {
                key: RecordKey::CrmId("guid".into()),
                fields: fields.as_object().unwrap().clone(),
                if_match: None,
                customer: None,
            },
            referral_id: Some("r1".into()),
            pc_hash: pc_hash.map(str::to_owned),
        };
        let queued = upsert(serde_json::json!({"a": 1, "b": 1}), Some("h1"));
        let later = upsert(serde_json::json!({"b": 2, "c": 2}), None);
        assert_eq!(
            later.merged_after(queued),
            upsert(serde_json::json!({"a": 1, "b": 2, "c": 2}), Some("h1"))
        );
    }

    #[test]
    fn a_conflict_withdraws_only_the_overruled_paths() {
        let queued = update(
            "006A",
            Some(StageAction::Win),
            vec![
                PatchOp::replace("/details/dealValue", 1),
                PatchOp::replace("/details/notes", "n"),
            ],
        );
        let left = queued
            .clone()
            .overruled(&["/details/dealValue".to_owned()], false);
        assert_eq!(
            parts(&left),
            (
                Some(StageAction::Win),
                vec![PatchOp::replace("/details/notes", "n")]
            )
        );
        let left = queued.overruled(
            &["/details/dealValue".to_owned(), "/details/notes".to_owned()],
            true,
        );
        assert!(left.sends_nothing());
    }
}
