//! Paths into the Referral JSON: `details.dealValue`, `team[0].email`,
//! `details.requirements.solutions[*].id`. Parsed once, then read, written
//! (creating what is missing) and turned into JSON Patch operations.

use std::fmt;

use serde_json::{Map, Value};

use crate::domain::PatchOp;

/// Highest array index a path may name; Partner Center lists are short.
pub const MAX_INDEX: usize = 99;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    Key(String),
    Index(usize),
    /// `[*]`: every element of a list.
    All,
}

/// A path that cannot be parsed; each variant holds the path as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path; expected a Partner Center field such as details.dealValue")]
    Empty,
    #[error(
        "{0:?} has an empty name; expected names joined by dots, e.g. customerProfile.address.country"
    )]
    EmptyName(String),
    #[error("{name:?} in {path:?} is not a field name; expected letters, digits and _ only")]
    BadName { name: String, path: String },
    #[error("{0:?} has an unclosed [")]
    Unclosed(String),
    #[error("[{index}] in {path:?} is not an index; expected [0], [1], … or [*]")]
    BadIndex { index: String, path: String },
    #[error("index {index} in {path:?} is too large (at most {max})", max = MAX_INDEX)]
    IndexTooLarge { index: usize, path: String },
    #[error("{0:?}: expected . or [ after ]")]
    AfterBracket(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath {
    text: String,
    segments: Vec<Segment>,
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FieldPath {
    /// Parses `a.b[0].c` / `a[*].b`. The error says what was expected.
    pub fn parse(text: &str) -> Result<FieldPath, PathError> {
        let mut segments = Vec::new();
        if text.trim().is_empty() {
            return Err(PathError::Empty);
        }
        for part in text.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if name.is_empty() {
                return Err(PathError::EmptyName(text.to_owned()));
            }
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(PathError::BadName {
                    name: name.to_owned(),
                    path: text.to_owned(),
                });
            }
            segments.push(Segment::Key(name.to_owned()));
            while !rest.is_empty() {
                let close = rest
                    .find(']')
                    .ok_or_else(|| PathError::Unclosed(text.to_owned()))?;
                let inner = &rest[1..close];
                if inner == "*" {
                    segments.push(Segment::All);
                } else {
                    let n: usize = inner.parse().map_err(|_| PathError::BadIndex {
                        index: inner.to_owned(),
                        path: text.to_owned(),
                    })?;
                    if n > MAX_INDEX {
                        return Err(PathError::IndexTooLarge {
                            index: n,
                            path: text.to_owned(),
                        });
                    }
                    segments.push(Segment::Index(n));
                }
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(PathError::AfterBracket(text.to_owned()));
                }
            }
        }
        Ok(FieldPath {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Number of `[*]` segments.
    pub fn wildcards(&self) -> usize {
        self.segments.iter().filter(|s| **s == Segment::All).count()
    }

    /// The path with every index written `[]`, as the model schema names it.
    pub fn shape(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Segment::Index(_) | Segment::All => out.push_str("[]"),
            }
        }
        out
    }

    /// Splits at the first `[*]`: (list path, path inside each element).
    fn split_all(&self) -> Option<(&[Segment], &[Segment])> {
        let i = self.segments.iter().position(|s| *s == Segment::All)?;
        Some((&self.segments[..i], &self.segments[i + 1..]))
    }

    /// Reads the value. A `[*]` path yields a list of the element values
    /// (missing ones skipped); a missing value is `None`.
    pub fn read(&self, doc: &Value) -> Option<Value> {
        match self.split_all() {
            None => get(doc, &self.segments).filter(|v| !v.is_null()).cloned(),
            Some((list, inner)) => {
                let items = get(doc, list)?.as_array()?;
                Some(Value::Array(
                    items
                        .iter()
                        .filter_map(|e| get(e, inner))
                        .filter(|v| !v.is_null())
                        .cloned()
                        .collect(),
                ))
            }
        }
    }

    /// Writes a value, creating missing objects and list elements. For a
    /// `[*]` path a list value replaces the list (elements that already hold
    /// one of the values are kept whole); a scalar is set in every element.
    pub fn write(&self, doc: &mut Value, value: Value) {
        match self.split_all() {
            None => set(doc, &self.segments, value),
            Some((list, inner)) => match value {
                Value::Array(values) => {
                    let merged = merge_list(get(doc, list), inner, values);
                    set(doc, list, merged);
                }
                scalar => {
                    if let Some(Value::Array(items)) = get_mut(doc, list) {
                        for item in items {
                            set(item, inner, scalar.clone());
                        }
                    }
                }
            },
        }
    }

    /// Writes the value into `doc` and records the JSON Patch operations that
    /// make the same change on the service's copy: `replace` where the target
    /// exists, `add` for the first missing part (Partner Center accepts only these two).
    pub fn write_with_patch(&self, doc: &mut Value, value: Value, ops: &mut Vec<PatchOp>) {
        let (target, value): (&[Segment], Value) = match self.split_all() {
            None => (&self.segments, value),
            Some((list, inner)) => match value {
                Value::Array(values) => (list, merge_list(get(doc, list), inner, values)),
                scalar => {
                    let n = get(doc, list).and_then(Value::as_array).map_or(0, Vec::len);
                    for i in 0..n {
                        let mut segs = list.to_vec();
                        segs.push(Segment::Index(i));
                        segs.extend_from_slice(inner);
                        patch_set(doc, &segs, scalar.clone(), ops);
                    }
                    return;
                }
            },
        };
        patch_set(doc, target, value, ops);
    }
}

/// A list for a `[*]` path: one element per value, reusing an existing
/// element that already holds the value so its other fields survive.
fn merge_list(existing: Option<&Value>, inner: &[Segment], values: Vec<Value>) -> Value {
    let mut pool: Vec<Option<Value>> = existing
        .and_then(Value::as_array)
        .map(|a| a.iter().cloned().map(Some).collect())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        let found = pool.iter_mut().find(|slot| {
            slot.as_ref()
                .and_then(|e| get(e, inner))
                .is_some_and(|cur| crate::mapping::value::same(cur, &v))
        });
        match found.and_then(Option::take) {
            Some(e) => out.push(e),
            None => {
                let mut e = Value::Null;
                set(&mut e, inner, v);
                out.push(e);
            }
        }
    }
    Value::Array(out)
}

pub(crate) fn get<'a>(doc: &'a Value, segments: &[Segment]) -> Option<&'a Value> {
    let mut cur = doc;
    for s in segments {
        cur = match s {
            Segment::Key(k) => cur.as_object()?.get(k)?,
            Segment::Index(i) => cur.as_array()?.get(*i)?,
            Segment::All => return None,
        };
    }
    Some(cur)
}

fn get_mut<'a>(doc: &'a mut Value, segments: &[Segment]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for s in segments {
        cur = match s {
            Segment::Key(k) => cur.as_object_mut()?.get_mut(k)?,
            Segment::Index(i) => cur.as_array_mut()?.get_mut(*i)?,
            Segment::All => return None,
        };
    }
    Some(cur)
}

/// Sets a value, turning anything in the way into the object or list the path needs.
pub(crate) fn set(doc: &mut Value, segments: &[Segment], value: Value) {
    let Some((first, rest)) = segments.split_first() else {
        *doc = value;
        return;
    };
    match first {
        Segment::Key(k) => {
            if !doc.is_object() {
                *doc = Value::Object(Map::new());
            }
            if let Value::Object(map) = doc {
                let child = map.entry(k.clone()).or_insert(Value::Null);
                set(child, rest, value);
            }
        }
        Segment::Index(i) => {
            if !doc.is_array() {
                *doc = Value::Array(Vec::new());
            }
            if let Value::Array(items) = doc {
                while items.len() <= *i {
                    items.push(Value::Null);
                }
                set(&mut items[*i], rest, value);
            }
        }
        Segment::All => {}
    }
}

/// JSON Pointer for concrete segments.
pub fn pointer(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        match s {
            Segment::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            Segment::Index(i) => out.push_str(&i.to_string()),
            Segment::All => out.push('-'),
        }
    }
    out
}

/// Sets a value in `doc` and records one patch operation doing the same.
fn patch_set(doc: &mut Value, segments: &[Segment], value: Value, ops: &mut Vec<PatchOp>) {
    // Walk down while the path exists; the first missing part is added whole.
    let mut depth = 0;
    let mut cur: &Value = doc;
    let op = loop {
        if depth == segments.len() {
            break PatchOp::replace(pointer(segments), value.clone());
        }
        let here = &segments[..depth];
        let mut subtree = Value::Null;
        set(&mut subtree, &segments[depth + 1..], value.clone());
        match (&segments[depth], cur) {
            (Segment::Key(k), Value::Object(map)) => match map.get(k) {
                Some(child) => cur = child,
                None => break PatchOp::add(pointer(&segments[..=depth]), subtree),
            },
            (Segment::Index(i), Value::Array(items)) => {
                if let Some(child) = items.get(*i) {
                    cur = child;
                } else if *i == items.len() {
                    break PatchOp::add(pointer(&segments[..=depth]), subtree);
                } else {
                    let mut list = cur.clone();
                    set(&mut list, &segments[depth..], value.clone());
                    break PatchOp::replace(pointer(here), list);
                }
            }
            (_, other) => {
                // A null or a value of the wrong shape: replace it whole.
                let mut replacement = other.clone();
                set(&mut replacement, &segments[depth..], value.clone());
                break if depth == 0 {
                    PatchOp::replace("", replacement)
                } else {
                    PatchOp::replace(pointer(here), replacement)
                };
            }
        }
        depth += 1;
    };
    set(doc, segments, value);
    ops.push(op);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PatchOpKind;
    use serde_json::json;

    fn p(s: &str) -> FieldPath {
        FieldPath::parse(s).unwrap()
    }

    #[test]
    fn paths_parse_into_segments() {
        assert_eq!(
            p("details.requirements.solutions[*].id").segments(),
            &[
                Segment::Key("details".into()),
                Segment::Key("requirements".into()),
                Segment::Key("solutions".into()),
                Segment::All,
                Segment::Key("id".into())
            ]
        );
        assert_eq!(p("team[0].email").shape(), "team[].email");
        for bad in [
            "",
            "a..b",
            "team[x]",
            "team[0",
            "a.b c",
            "team[0]x",
            "team[1000]",
        ] {
            assert!(FieldPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_errors_are_typed_and_read_as_before() {
        let e = |s: &str| FieldPath::parse(s).unwrap_err().to_string();
        assert_eq!(FieldPath::parse(" "), Err(PathError::Empty));
        assert_eq!(
            e(""),
            "empty path; expected a Partner Center field such as details.dealValue"
        );
        assert_eq!(
            e("a..b"),
            "\"a..b\" has an empty name; expected names joined by dots, e.g. customerProfile.address.country"
        );
        assert_eq!(
            e("a.b c"),
            "\"b c\" in \"a.b c\" is not a field name; expected letters, digits and _ only"
        );
        assert_eq!(e("team[0"), "\"team[0\" has an unclosed [");
        assert_eq!(
            e("team[x]"),
            "[x] in \"team[x]\" is not an index; expected [0], [1], … or [*]"
        );
        assert_eq!(
            e("team[1000]"),
            "index 1000 in \"team[1000]\" is too large (at most 99)"
        );
        assert_eq!(e("team[0]x"), "\"team[0]x\": expected . or [ after ]");
    }

    #[test]
    fn reading_follows_objects_lists_and_wildcards() {
        let doc = json!({"team": [{"email": "a@x.com"}], "details": {"requirements": {"solutions": [{"id": "S1"}, {"name": "n"}, {"id": "S2"}]}}});
        assert_eq!(p("team[0].email").read(&doc), Some(json!("a@x.com")));
        assert_eq!(p("team[1].email").read(&doc), None);
        assert_eq!(
            p("details.requirements.solutions[*].id").read(&doc),
            Some(json!(["S1", "S2"]))
        );
        assert_eq!(
            p("details.notes").read(&json!({"details": {"notes": null}})),
            None
        );
    }

    #[test]
    fn writing_creates_what_is_missing() {
        let mut doc = json!({});
        p("team[0].email").write(&mut doc, json!("a@x.com"));
        p("details.dealValue").write(&mut doc, json!(5));
        assert_eq!(
            doc,
            json!({"team": [{"email": "a@x.com"}], "details": {"dealValue": 5}})
        );
    }

    #[test]
    fn wildcard_lists_keep_matching_elements_whole() {
        let mut doc = json!({"s": [{"id": "A", "name": "Alpha"}, {"id": "B", "name": "Beta"}]});
        p("s[*].id").write(&mut doc, json!(["B", "C"]));
        assert_eq!(
            doc,
            json!({"s": [{"id": "B", "name": "Beta"}, {"id": "C"}]})
        );
        p("s[*].type").write(&mut doc, json!("Name"));
        assert_eq!(doc["s"][1], json!({"id": "C", "type": "Name"}));
    }

    #[test]
    fn patches_add_the_first_missing_part_and_replace_existing_values() {
        let mut doc = json!({"details": {"notes": "old"}});
        let mut ops = Vec::new();
        p("details.notes").write_with_patch(&mut doc, json!("new"), &mut ops);
        p("team[0].email").write_with_patch(&mut doc, json!("a@x.com"), &mut ops);
        p("team[0].firstName").write_with_patch(&mut doc, json!("Ann"), &mut ops);
        p("details.dealValue").write_with_patch(&mut doc, json!(7), &mut ops);
        assert_eq!(
            ops,
            vec![
                PatchOp::replace("/details/notes", "new"),
                PatchOp::add("/team", json!([{"email": "a@x.com"}])),
                PatchOp::add("/team/0/firstName", "Ann"),
                PatchOp::add("/details/dealValue", 7),
            ]
        );
        assert_eq!(doc["team"][0]["firstName"], "Ann");
    }

    #[test]
    fn patches_replace_nulls_and_wildcard_lists_whole() {
        let mut doc = json!({"details": null, "s": [{"id": "A", "name": "Alpha"}]});
        let mut ops = Vec::new();
        p("details.notes").write_with_patch(&mut doc, json!("n"), &mut ops);
        p("s[*].id").write_with_patch(&mut doc, json!(["A", "B"]), &mut ops);
        assert_eq!(ops[0], PatchOp::replace("/details", json!({"notes": "n"})));
        assert_eq!(ops[1].op, PatchOpKind::Replace);
        assert_eq!(ops[1].path, "/s");
        assert_eq!(
            ops[1].value,
            json!([{"id": "A", "name": "Alpha"}, {"id": "B"}])
        );
        assert_eq!(pointer(&[Segment::Key("a/b~c".into())]), "/a~1b~0c");
    }
}
