//! The co-sell lifecycle: our stages, the API's status/substatus pairs, and
//! the transitions allowed between them.

use serde::{Deserialize, Serialize};

use super::enums::{Direction, ReferralStatus, ReferralSubstatus};

/// Where a deal is in its life, in the words of Partner Center's UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Inbound, not yet answered (New / Pending or Received).
    Received,
    /// Accepted, or created by the partner (Active / Accepted).
    Accepted,
    Won,
    Lost,
    Declined,
    Expired,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Received,
        Stage::Accepted,
        Stage::Won,
        Stage::Lost,
        Stage::Declined,
        Stage::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Received => "received",
            Stage::Accepted => "accepted",
            Stage::Won => "won",
            Stage::Lost => "lost",
            Stage::Declined => "declined",
            Stage::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Won, lost, declined and expired are archived: no action, no edit, ever.
    pub fn is_archived(self) -> bool {
        matches!(
            self,
            Stage::Won | Stage::Lost | Stage::Declined | Stage::Expired
        )
    }

    /// Reads the stage from the API's status and substatus. `None` for a pair
    /// outside the documented table (an unknown substatus, for instance).
    pub fn from_api(status: &ReferralStatus, substatus: &ReferralSubstatus) -> Option<Stage> {
        use ReferralStatus as S;
        use ReferralSubstatus as Sub;
        match (status, substatus) {
            (S::New, Sub::Pending | Sub::Received | Sub::None) => Some(Stage::Received),
            (S::Active, Sub::Accepted) => Some(Stage::Accepted),
            (S::Closed, Sub::Won) => Some(Stage::Won),
            (S::Closed, Sub::Lost) => Some(Stage::Lost),
            (S::Closed, Sub::Declined) => Some(Stage::Declined),
            (S::Closed, Sub::Expired) => Some(Stage::Expired),
            _ => None,
        }
    }

    /// The status/substatus pair we send to move a referral into this stage.
    /// `Received` is never a target; its pair is what Partner Center creates.
    pub fn api(self) -> (ReferralStatus, ReferralSubstatus) {
        match self {
            Stage::Received => (ReferralStatus::New, ReferralSubstatus::Pending),
            Stage::Accepted => (ReferralStatus::Active, ReferralSubstatus::Accepted),
            Stage::Won => (ReferralStatus::Closed, ReferralSubstatus::Won),
            Stage::Lost => (ReferralStatus::Closed, ReferralSubstatus::Lost),
            Stage::Declined => (ReferralStatus::Closed, ReferralSubstatus::Declined),
            Stage::Expired => (ReferralStatus::Closed, ReferralSubstatus::Expired),
        }
    }

    /// The stage a new deal starts in: inbound deals wait for an answer,
    /// deals the partner creates are accepted from the start.
    pub fn initial(direction: &Direction) -> Stage {
        match direction {
            Direction::Incoming => Stage::Received,
            _ => Stage::Accepted,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The API's allowed transitions (referral-resources, create and update docs):
///
/// | from   | to status          | with substatus                 |
/// |--------|--------------------|--------------------------------|
/// | New    | New, Active, Closed| Pending, Received              |
/// | Active | Active, Closed     | Accepted                       |
/// | Closed | Closed             | Won, Lost, Declined, Expired   |
pub fn api_transition_allowed(
    from: &ReferralStatus,
    to: &ReferralStatus,
    to_substatus: &ReferralSubstatus,
) -> bool {
    use ReferralStatus as S;
    let status_ok = match from {
        S::New => matches!(to, S::New | S::Active | S::Closed),
        S::Active => matches!(to, S::Active | S::Closed),
        S::Closed => matches!(to, S::Closed),
        _ => false,
    };
    status_ok && substatus_fits(to, to_substatus)
}

/// Whether a substatus belongs to a status in the API's table.
pub fn substatus_fits(status: &ReferralStatus, substatus: &ReferralSubstatus) -> bool {
    use ReferralStatus as S;
    use ReferralSubstatus as Sub;
    match status {
        S::New => matches!(substatus, Sub::Pending | Sub::Received),
        S::Active => matches!(substatus, Sub::Accepted),
        S::Closed => matches!(
            substatus,
            Sub::Won | Sub::Lost | Sub::Declined | Sub::Expired
        ),
        _ => false,
    }
}

/// Something a person (or the expiry rule) does to a deal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleAction {
    Accept,
    Decline { reason: String },
    Win,
    Lose { reason: Option<String> },
    Expire,
}

impl LifecycleAction {
    pub fn name(&self) -> &'static str {
        match self {
            LifecycleAction::Accept => "accept",
            LifecycleAction::Decline { .. } => "decline",
            LifecycleAction::Win => "win",
            LifecycleAction::Lose { .. } => "lose",
            LifecycleAction::Expire => "expire",
        }
    }

    fn target(&self) -> Stage {
        match self {
            LifecycleAction::Accept => Stage::Accepted,
            LifecycleAction::Decline { .. } => Stage::Declined,
            LifecycleAction::Win => Stage::Won,
            LifecycleAction::Lose { .. } => Stage::Lost,
            LifecycleAction::Expire => Stage::Expired,
        }
    }

    /// The status reason sent with the transition, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            LifecycleAction::Decline { reason } => Some(reason),
            LifecycleAction::Lose { reason } => reason.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the deal is {from}: archived deals take no action, ever")]
    Archived { from: Stage },
    #[error("cannot {action} a deal that is {from}")]
    NotAllowed { action: &'static str, from: Stage },
    #[error("declining a referral requires a reason")]
    ReasonRequired,
}

/// Applies an action to a stage, enforcing the lifecycle:
/// received → accept | decline (with a reason) | expire;
/// accepted → win | lose; archived stages absorb everything.
pub fn transition(from: Stage, action: &LifecycleAction) -> Result<Stage, TransitionError> {
    if from.is_archived() {
        return Err(TransitionError::Archived { from });
    }
    let allowed = match (from, action) {
        (Stage::Received, LifecycleAction::Accept | LifecycleAction::Expire) => true,
        (Stage::Received, LifecycleAction::Decline { reason }) => {
            if reason.trim().is_empty() {
                return Err(TransitionError::ReasonRequired);
            }
            true
        }
        (Stage::Accepted, LifecycleAction::Win | LifecycleAction::Lose { .. }) => true,
        _ => false,
    };
    if !allowed {
        return Err(TransitionError::NotAllowed {
            action: action.name(),
            from,
        });
    }
    let to = action.target();
    // Belt and braces: every stage move we make is in the API's table.
    let (from_status, _) = from.api();
    let (to_status, to_sub) = to.api();
    debug_assert!(api_transition_allowed(&from_status, &to_status, &to_sub));
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_pair_reads_as_a_stage() {
        use ReferralStatus as S;
        use ReferralSubstatus as Sub;
        assert_eq!(
            Stage::from_api(&S::New, &Sub::Pending),
            Some(Stage::Received)
        );
        assert_eq!(
            Stage::from_api(&S::New, &Sub::Received),
            Some(Stage::Received)
        );
        assert_eq!(
            Stage::from_api(&S::Active, &Sub::Accepted),
            Some(Stage::Accepted)
        );
        assert_eq!(Stage::from_api(&S::Closed, &Sub::Won), Some(Stage::Won));
        assert_eq!(Stage::from_api(&S::Closed, &Sub::Lost), Some(Stage::Lost));
        assert_eq!(
            Stage::from_api(&S::Closed, &Sub::Declined),
            Some(Stage::Declined)
        );
        assert_eq!(
            Stage::from_api(&S::Closed, &Sub::Expired),
            Some(Stage::Expired)
        );
        assert_eq!(
            Stage::from_api(&S::Active, &Sub::Other("Engaged".into())),
            None
        );
        assert_eq!(Stage::from_api(&S::Closed, &Sub::Accepted), None);
        for st in Stage::ALL {
            let (s, sub) = st.api();
            assert_eq!(Stage::from_api(&s, &sub), Some(st));
            assert_eq!(Stage::parse(st.as_str()), Some(st));
        }
    }

    #[test]
    fn the_api_table_is_enforced() {
        use ReferralStatus as S;
        use ReferralSubstatus as Sub;
        assert!(api_transition_allowed(&S::New, &S::Active, &Sub::Accepted));
        assert!(api_transition_allowed(&S::New, &S::Closed, &Sub::Declined));
        assert!(api_transition_allowed(&S::Active, &S::Closed, &Sub::Won));
        assert!(!api_transition_allowed(&S::Active, &S::New, &Sub::Pending));
        assert!(!api_transition_allowed(
            &S::Closed,
            &S::Active,
            &Sub::Accepted
        ));
        assert!(!api_transition_allowed(
            &S::Active,
            &S::Closed,
            &Sub::Accepted
        ));
        assert!(!api_transition_allowed(&S::New, &S::Active, &Sub::Won));
        assert!(!api_transition_allowed(
            &S::Other("X".into()),
            &S::Closed,
            &Sub::Won
        ));
    }

    #[test]
    fn received_can_be_accepted_declined_or_expired_only() {
        assert_eq!(
            transition(Stage::Received, &LifecycleAction::Accept),
            Ok(Stage::Accepted)
        );
        assert_eq!(
            transition(Stage::Received, &LifecycleAction::Expire),
            Ok(Stage::Expired)
        );
        assert_eq!(
            transition(
                Stage::Received,
                &LifecycleAction::Decline {
                    reason: "No budget".into()
                }
            ),
            Ok(Stage::Declined)
        );
        assert_eq!(
            transition(Stage::Received, &LifecycleAction::Win),
            Err(TransitionError::NotAllowed {
                action: "win",
                from: Stage::Received
            })
        );
    }

    #[test]
    fn declining_needs_a_reason() {
        for reason in ["", "   "] {
            assert_eq!(
                transition(
                    Stage::Received,
                    &LifecycleAction::Decline {
                        reason: reason.into()
                    }
                ),
                Err(TransitionError::ReasonRequired)
            );
        }
    }

    #[test]
    fn accepted_can_be_won_or_lost_only() {
        assert_eq!(
            transition(Stage::Accepted, &LifecycleAction::Win),
            Ok(Stage::Won)
        );
        assert_eq!(
            transition(Stage::Accepted, &LifecycleAction::Lose { reason: None }),
            Ok(Stage::Lost)
        );
        assert!(transition(Stage::Accepted, &LifecycleAction::Accept).is_err());
        assert!(transition(Stage::Accepted, &LifecycleAction::Expire).is_err());
    }

    #[test]
    fn archived_stages_absorb_everything() {
        for from in [Stage::Won, Stage::Lost, Stage::Declined, Stage::Expired] {
            for action in [
                LifecycleAction::Accept,
                LifecycleAction::Win,
                LifecycleAction::Expire,
                LifecycleAction::Lose { reason: None },
            ] {
                assert_eq!(
                    transition(from, &action),
                    Err(TransitionError::Archived { from })
                );
            }
        }
    }

    #[test]
    fn created_deals_start_accepted_and_inbound_ones_received() {
        assert_eq!(Stage::initial(&Direction::Outgoing), Stage::Accepted);
        assert_eq!(Stage::initial(&Direction::Incoming), Stage::Received);
    }
}
