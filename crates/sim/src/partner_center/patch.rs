//! JSON Patch (RFC 6902) as Partner Center takes it: "only `replace` and
//! `add` are supported" (partner-center-api §1, Partial update).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The two operations the service supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchOpKind {
    Replace,
    Add,
}

/// One operation of an edit made in Partner Center (see
/// `SimState::edit_referral`), e.g. `{"op":"replace","path":"/name","value":"x"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOp {
    pub op: PatchOpKind,
    /// A JSON Pointer such as `/details/dealValue`.
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

/// An operation as it arrives over HTTP, before it is checked.
#[derive(Deserialize)]
pub(crate) struct RawOp {
    pub(crate) op: String,
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) value: Option<Value>,
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

/// Applies one replace/add at a JSON Pointer (typed-model semantics: a
/// missing member is created; array indexes must exist, `-` appends).
pub(crate) fn apply_op(doc: &mut Value, path: &str, value: Value, add: bool) -> Result<(), String> {
    let segs: Vec<String> = path
        .strip_prefix('/')
        .ok_or_else(|| format!("The path '{path}' is not a JSON Pointer."))?
        .split('/')
        .map(unescape)
        .collect();
    let (last, parents) = segs
        .split_last()
        .ok_or_else(|| "The path is empty.".to_owned())?;
    let mut cur = doc;
    for seg in parents {
        cur = match cur {
            Value::Object(m) => {
                let e = m.entry(seg.clone()).or_insert(Value::Null);
                if e.is_null() {
                    *e = Value::Object(Map::new());
                }
                e
            }
            Value::Array(a) => {
                let i: usize = seg
                    .parse()
                    .map_err(|_| format!("'{seg}' in '{path}' is not an array index."))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("The target location '{path}' was not found."))?
            }
            _ => return Err(format!("The target location '{path}' was not found.")),
        };
    }
    match cur {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" && add {
                a.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("'{last}' in '{path}' is not an array index."))?;
            if add && i <= a.len() {
                a.insert(i, value);
                Ok(())
            } else if !add && i < a.len() {
                a[i] = value;
                Ok(())
            } else {
                Err(format!("The index in '{path}' is out of bounds."))
            }
        }
        _ => Err(format!("The target location '{path}' was not found.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_pointer_ops() {
        let mut d = json!({"details": {"notes": "a"}, "team": [{"email": "x"}]});
        apply_op(&mut d, "/details/dealValue", json!(5), false).unwrap();
        apply_op(&mut d, "/team/-", json!({"email": "y"}), true).unwrap();
        apply_op(&mut d, "/team/0/email", json!("z"), false).unwrap();
        assert!(apply_op(&mut d, "/team/5/email", json!("z"), false).is_err());
        assert_eq!(
            d,
            json!({"details": {"notes": "a", "dealValue": 5}, "team": [{"email": "z"}, {"email": "y"}]})
        );
    }

    #[test]
    fn only_replace_and_add_are_read() {
        let ops: Vec<PatchOp> = serde_json::from_value(json!([
            {"op": "replace", "path": "/name", "value": "n"},
            {"op": "add", "path": "/externalReferenceId", "value": "OPP-1"}
        ]))
        .unwrap();
        assert_eq!(
            ops,
            [
                PatchOp::replace("/name", "n"),
                PatchOp::add("/externalReferenceId", "OPP-1")
            ]
        );
        for op in ["remove", "move", "copy", "test", "Replace"] {
            let r =
                serde_json::from_value::<PatchOp>(json!({"op": op, "path": "/name", "value": 1}));
            assert!(r.is_err(), "{op}");
        }
    }
}
