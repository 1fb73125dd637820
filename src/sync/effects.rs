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
        // The text is what the JSON tree of the effect would print.
        let tree = serde_json::to_value(&e).unwrap();
        assert_eq!(row.payload.text(), serde_json::to_string(&tree).unwrap());
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
}
