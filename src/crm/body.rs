//! A record's body as an adapter sends it: the write's mapped fields,
//! borrowed rather than copied, less the fields the adapter leaves out, with
//! the fields it adds (an Account found, a lookup bound), in name order.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub(crate) struct BodyFields<'a> {
    own: &'a Map<String, Value>,
    left_out: Vec<&'a str>,
    /// Added by the adapter; each replaces a mapped field of the same name.
    added: BTreeMap<String, Value>,
}

impl<'a> BodyFields<'a> {
    pub(crate) fn new(own: &'a Map<String, Value>) -> Self {
        BodyFields {
            own,
            left_out: Vec::new(),
            added: BTreeMap::new(),
        }
    }

    /// The mapped fields.
    pub(crate) fn own(&self) -> &'a Map<String, Value> {
        self.own
    }

    pub(crate) fn leave_out(&mut self, name: &'a str) {
        if !self.left_out.contains(&name) {
            self.left_out.push(name);
        }
    }

    pub(crate) fn is_left_out(&self, name: &str) -> bool {
        self.left_out.contains(&name)
    }

    pub(crate) fn add(&mut self, name: impl Into<String>, value: Value) {
        self.added.insert(name.into(), value);
    }

    /// The fields sent, in name order (the order of a JSON object here).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        let mut own = self
            .own
            .iter()
            .filter(|(k, _)| !self.left_out.contains(&k.as_str()) && !self.added.contains_key(*k))
            .map(|(k, v)| (k.as_str(), v))
            .peekable();
        let mut added = self.added.iter().map(|(k, v)| (k.as_str(), v)).peekable();
        std::iter::from_fn(move || match (own.peek(), added.peek()) {
            (Some(o), Some(a)) if a.0 < o.0 => added.next(),
            (Some(_), _) => own.next(),
            (None, _) => added.next(),
        })
    }
}

impl serde::Serialize for BodyFields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn the_body_is_the_mapped_fields_less_those_left_out_with_those_added_in_name_order() {
        let own = object(json!({"b": 1, "d": 2, "f": 3, "h": 4}));
        let mut body = BodyFields::new(&own);
        body.leave_out("f");
        body.add("a", json!("first"));
        body.add("d", json!("replaced"));
        body.add("e", json!(5));
        body.add("z", json!("last"));
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"a":"first","b":1,"d":"replaced","e":5,"h":4,"z":"last"}"#
        );
        // The same as copying the map and editing it.
        let mut copied = own.clone();
        copied.remove("f");
        for (k, v) in [
            ("a", json!("first")),
            ("d", json!("replaced")),
            ("e", json!(5)),
            ("z", json!("last")),
        ] {
            copied.insert(k.into(), v);
        }
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            Value::Object(copied).to_string()
        );
        assert!(body.is_left_out("f") && !body.is_left_out("b"));
    }

    proptest::proptest! {
        // Any mapped fields, any names left out, any added (overlapping
        // or not): the same bytes as copying the map and editing it.
        #[test]
        fn the_body_is_what_copying_and_editing_the_map_gave(
            own in proptest::collection::btree_map("[A-Za-z_@$]{1,6}", 0i64..100, 0..12),
            left_out in proptest::collection::vec("[A-Za-z_@$]{1,6}", 0..6),
            added in proptest::collection::vec(("[A-Za-z_@$]{1,6}", 100i64..200), 0..6),
        ) {
            let own: Map<String, Value> = own.into_iter().map(|(k, v)| (k, json!(v))).collect();
            let mut body = BodyFields::new(&own);
            let mut copied = own.clone();
            for name in &left_out {
                body.leave_out(name);
                copied.remove(name);
            }
            for (name, v) in &added {
                body.add(name.clone(), json!(v));
                copied.insert(name.clone(), json!(v));
            }
            proptest::prop_assert_eq!(
                serde_json::to_string(&body).unwrap(),
                Value::Object(copied).to_string()
            );
        }
    }

    #[test]
    fn an_empty_side_leaves_the_other_whole() {
        let none = Map::new();
        let mut body = BodyFields::new(&none);
        assert_eq!(serde_json::to_string(&body).unwrap(), "{}");
        body.add("x", json!(1));
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"x":1}"#);
        let own = object(json!({"a": 1, "b": 2}));
        let mut body = BodyFields::new(&own);
        body.leave_out("a");
        body.leave_out("b");
        assert_eq!(serde_json::to_string(&body).unwrap(), "{}");
    }
}
