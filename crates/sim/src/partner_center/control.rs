//! What a person (or Microsoft's sellers) does in Partner Center, without
//! HTTP: the in-process helpers tests, the demo and the control API use.

use serde_json::{Value, json};

use super::model::{Status, Substatus};
use super::patch::{PatchOp, PatchOpKind, apply_op};
use crate::{SimError, SimState, lock};

/// What a person does to a referral in Partner Center's UI (§3.1, "Rules
/// from the docs and the UI"): accept or decline (with a reason) a received
/// referral, win or lose an accepted one.
enum PersonAction<'a> {
    Accept,
    Decline(&'a str),
    Win,
    Lose(Option<&'a str>),
}

impl PersonAction<'_> {
    fn name(&self) -> &'static str {
        match self {
            PersonAction::Accept => "accept",
            PersonAction::Decline(_) => "decline",
            PersonAction::Win => "win",
            PersonAction::Lose(_) => "lose",
        }
    }
}

/// A referral waiting for an answer: New, with substatus Pending or Received
/// (or none given).
fn is_received(status: &Status, substatus: &Substatus) -> bool {
    *status == Status::New
        && matches!(
            substatus,
            Substatus::Pending | Substatus::Received | Substatus::None
        )
}

fn is_accepted(status: &Status, substatus: &Substatus) -> bool {
    *status == Status::Active && *substatus == Substatus::Accepted
}

impl SimState {
    /// The referral as the API would return it now.
    pub fn referral(&self, id: &str) -> Option<Value> {
        let mut pc = lock(&self.pc);
        pc.sweep(self.clock.now());
        pc.get(id)
    }

    /// Every referral id, oldest first.
    pub fn referral_ids(&self) -> Vec<String> {
        let mut pc = lock(&self.pc);
        pc.sweep(self.clock.now());
        pc.ids()
    }

    pub fn referral_count(&self) -> usize {
        lock(&self.pc).len()
    }

    /// Applies what a person does in Partner Center's UI: accept and
    /// decline only a received referral, win and lose only an accepted one;
    /// closed referrals are terminal.
    fn person_action(&self, id: &str, action: PersonAction) -> Result<Value, SimError> {
        let now = self.clock.now();
        let mut pc = lock(&self.pc);
        pc.sweep(now);
        let r = pc
            .by_id
            .get(id)
            .ok_or_else(|| SimError::NotFound(format!("referral {id}")))?;
        let (from, from_sub) = (&r.status, &r.substatus);
        let received = is_received(from, from_sub);
        let accepted = is_accepted(from, from_sub);
        if !received && !accepted {
            return Err(SimError::Conflict(format!(
                "cannot {} referral {id}: it is {from}/{from_sub}, and closed referrals are terminal",
                action.name()
            )));
        }
        let (status, substatus, reason) = match action {
            PersonAction::Accept if received => (Status::Active, Substatus::Accepted, None),
            PersonAction::Decline(reason) if received => {
                if reason.trim().is_empty() {
                    return Err(SimError::Invalid(
                        "declining a referral requires a reason".into(),
                    ));
                }
                (Status::Closed, Substatus::Declined, Some(reason))
            }
            PersonAction::Win if accepted => (Status::Closed, Substatus::Won, None),
            PersonAction::Lose(reason) if accepted => (Status::Closed, Substatus::Lost, reason),
            other => {
                return Err(SimError::Conflict(format!(
                    "cannot {} referral {id}: it is {from}/{from_sub}",
                    other.name()
                )));
            }
        };
        pc.transition(id, status, substatus, reason, now)
    }

    /// Accepts an inbound referral.
    pub fn accept_referral(&self, id: &str) -> Result<Value, SimError> {
        self.person_action(id, PersonAction::Accept)
    }

    /// Declines an inbound referral; a reason is required.
    pub fn decline_referral(&self, id: &str, reason: &str) -> Result<Value, SimError> {
        self.person_action(id, PersonAction::Decline(reason))
    }

    pub fn win_referral(&self, id: &str) -> Result<Value, SimError> {
        self.person_action(id, PersonAction::Win)
    }

    pub fn lose_referral(&self, id: &str, reason: Option<&str>) -> Result<Value, SimError> {
        self.person_action(id, PersonAction::Lose(reason))
    }

    /// Microsoft's sellers answer a co-sell request (the Microsoft-targeted
    /// referral of an engagement): accept engages them, otherwise declined.
    pub fn microsoft_respond(&self, id: &str, accept: bool) -> Result<Value, SimError> {
        let now = self.clock.now();
        let mut pc = lock(&self.pc);
        if accept {
            let v = pc.transition(id, Status::Active, Substatus::Accepted, None, now)?;
            let mut v2 = v.clone();
            let msx = format!("7-{}", &pc.new_guid()[..10].to_ascii_uppercase());
            v2["trackingInfo"] = json!({"microsoftMsxId": msx});
            pc.put(v2.clone());
            Ok(v2)
        } else {
            pc.transition(
                id,
                Status::Closed,
                Substatus::Declined,
                Some("Microsoft sellers declined to engage"),
                now,
            )
        }
    }

    /// Microsoft reviews a deal registration of a won referral (reference
    /// §2.7, §7.4): only `registrationStatus` changes, stamped like any
    /// other change, though the referral is archived.
    pub fn set_registration_status(&self, id: &str, status: &str) -> Result<Value, SimError> {
        let now = self.clock.now();
        let mut pc = lock(&self.pc);
        let mut v = pc
            .get(id)
            .ok_or_else(|| SimError::NotFound(format!("referral {id}")))?;
        if v["substatus"] != "Won" {
            return Err(SimError::Conflict(format!(
                "referral {id} is not won: only won deals can be registered"
            )));
        }
        v["registrationStatus"] = json!(status);
        v["updatedDateTime"] = json!(super::store::fmt_time(now));
        v["eTag"] = json!(pc.new_etag(now));
        pc.put(v.clone());
        Ok(v)
    }

    /// Edits a referral as a person would in Partner Center (JSON Patch
    /// replace/add, same rules as the API).
    pub fn edit_referral(&self, id: &str, ops: &[PatchOp]) -> Result<Value, SimError> {
        let now = self.clock.now();
        let mut pc = lock(&self.pc);
        pc.sweep(now);
        let old = pc
            .get(id)
            .ok_or_else(|| SimError::NotFound(format!("referral {id}")))?;
        let mut doc = old.clone();
        for op in ops {
            apply_op(
                &mut doc,
                &op.path,
                op.value.clone(),
                op.op == PatchOpKind::Add,
            )
            .map_err(SimError::Invalid)?;
        }
        pc.commit_change(&old, doc, now)
            .map_err(|(_, _, m)| SimError::Invalid(m))
    }
}
