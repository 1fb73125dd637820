//! Property tests: random action sequences against the lifecycle rules.

use proptest::prelude::*;

use super::lifecycle::{
    LifecycleAction, Stage, api_transition_allowed, substatus_fits, transition,
};
use super::patch::lifecycle_patch;

fn action() -> impl Strategy<Value = LifecycleAction> {
    prop_oneof![
        Just(LifecycleAction::Accept),
        Just(LifecycleAction::Win),
        Just(LifecycleAction::Expire),
        prop::option::of("[ a-z]{0,8}").prop_map(|reason| LifecycleAction::Lose { reason }),
        "[ a-z]{0,8}".prop_map(|reason| LifecycleAction::Decline { reason }),
    ]
}

fn start() -> impl Strategy<Value = Stage> {
    prop::sample::select(Stage::ALL.to_vec())
}

proptest! {
    #[test]
    fn archived_stages_are_never_left(from in start(), actions in prop::collection::vec(action(), 0..20)) {
        let mut stage = from;
        let mut archived_at: Option<Stage> = stage.is_archived().then_some(stage);
        for a in &actions {
            if let Ok(next) = transition(stage, a) {
                prop_assert!(!stage.is_archived(), "left archived {stage} by {a:?}");
                stage = next;
            }
            if let Some(first) = archived_at {
                prop_assert_eq!(stage, first);
            } else if stage.is_archived() {
                archived_at = Some(stage);
            }
        }
    }

    #[test]
    fn no_decline_without_a_reason(from in start(), actions in prop::collection::vec(action(), 0..20)) {
        let mut stage = from;
        for a in &actions {
            if let Ok(next) = transition(stage, a) {
                if next == Stage::Declined && stage != Stage::Declined {
                    match a {
                        LifecycleAction::Decline { reason } => prop_assert!(!reason.trim().is_empty()),
                        other => prop_assert!(false, "declined by {other:?}"),
                    }
                }
                stage = next;
            }
        }
    }

    #[test]
    fn every_move_is_inside_the_api_table(from in start(), actions in prop::collection::vec(action(), 0..20)) {
        let mut stage = from;
        for a in &actions {
            match lifecycle_patch(stage, a) {
                Ok(ops) => {
                    let next = transition(stage, a).unwrap();
                    let (from_status, _) = stage.api();
                    let (status, substatus) = next.api();
                    prop_assert!(api_transition_allowed(&from_status, &status, &substatus));
                    prop_assert!(substatus_fits(&status, &substatus));
                    prop_assert_eq!(&ops[0].value, &serde_json::json!(status.as_str()));
                    prop_assert_eq!(&ops[1].value, &serde_json::json!(substatus.as_str()));
                    stage = next;
                }
                Err(_) => prop_assert!(transition(stage, a).is_err()),
            }
        }
    }
}
