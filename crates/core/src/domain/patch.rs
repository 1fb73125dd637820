//! JSON Patch (RFC 6902) as Partner Center accepts it: `replace` and `add` only.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lifecycle::{LifecycleAction, Stage, TransitionError, transition};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchOpKind {
    Replace,
    Add,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOp {
    pub op: PatchOpKind,
    /// JSON Pointer, e.g. `/details/dealValue`.
    pub path: String,
    pub value: Value,
}

impl PatchOp {
    pub fn replace(path: impl Into<String>, value: impl Into<Value>) -> Self {
        PatchOp {
            op: PatchOpKind::Replace,
            path: path.into(),
            value: value.into(),
        }
    }

    pub fn add(path: impl Into<String>, value: impl Into<Value>) -> Self {
        PatchOp {
            op: PatchOpKind::Add,
            path: path.into(),
            value: value.into(),
        }
    }
}

/// The patch that performs a lifecycle action, checked against the rules
/// first: a forbidden transition yields an error and no operations.
pub fn lifecycle_patch(
    from: Stage,
    action: &LifecycleAction,
) -> Result<Vec<PatchOp>, TransitionError> {
    let to = transition(from, action)?;
    let (status, substatus) = to.api();
    let mut ops = vec![
        PatchOp::replace("/status", status.as_str()),
        PatchOp::replace("/substatus", substatus.as_str()),
    ];
    if let Some(reason) = action.reason() {
        ops.push(PatchOp::replace("/statusReason", reason));
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn winning_is_the_documented_patch() {
        let ops = lifecycle_patch(Stage::Accepted, &LifecycleAction::Win).unwrap();
        assert_eq!(
            serde_json::to_value(ops).unwrap(),
            json!([{"op":"replace","path":"/status","value":"Closed"},
                   {"op":"replace","path":"/substatus","value":"Won"}])
        );
    }

    #[test]
    fn declining_carries_the_reason() {
        let ops = lifecycle_patch(
            Stage::Received,
            &LifecycleAction::Decline {
                reason: "No budget".into(),
            },
        )
        .unwrap();
        assert_eq!(ops[2], PatchOp::replace("/statusReason", "No budget"));
        assert_eq!(ops[1], PatchOp::replace("/substatus", "Declined"));
    }

    #[test]
    fn forbidden_transitions_produce_no_patch() {
        assert!(lifecycle_patch(Stage::Won, &LifecycleAction::Accept).is_err());
        assert!(lifecycle_patch(Stage::Received, &LifecycleAction::Win).is_err());
    }
}
