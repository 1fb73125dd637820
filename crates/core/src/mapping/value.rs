//! Value comparison, canonical form and stable hashing.

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// Numbers compare by value (`5000` = `5000.0`), `null` equals a missing
/// value, everything else structurally.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            let nonnull = |m: &Map<String, Value>| m.iter().filter(|(_, v)| !v.is_null()).count();
            nonnull(x) == nonnull(y)
                && x.iter()
                    .all(|(k, v)| same(v, y.get(k).unwrap_or(&Value::Null)))
        }
        _ => a == b,
    }
}

/// [`same`], or the same text (`"100000000"` = `100000000`, `"true"` = `true`).
pub fn loosely_same(a: &Value, b: &Value) -> bool {
    if same(a, b) {
        return true;
    }
    match (a, b) {
        // Two scalars of one kind that differ also print differently (numbers
        // compare by value, and different values never print alike).
        (Value::String(_), Value::String(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::Bool(_), Value::Bool(_)) => false,
        (Value::String(s), other) | (other, Value::String(s)) => {
            scalar_text(other).is_some_and(|t| t == *s)
        }
        _ => matches!((scalar_text(a), scalar_text(b)), (Some(x), Some(y)) if x == y),
    }
}

/// Same as [`same`], treating a missing value as null.
pub fn same_opt(a: Option<&Value>, b: Option<&Value>) -> bool {
    same(a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null))
}

/// Empty for mapping purposes: missing, null, or a blank string.
pub fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

/// The text of a scalar: strings as they are, numbers and booleans printed.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(number_text(n)),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number_text(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

/// A JSON number from an f64, integral values as integers.
pub fn number(f: f64) -> Option<Value> {
    if !f.is_finite() {
        return None;
    }
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Some(Value::from(f as i64))
    } else {
        Number::from_f64(f).map(Value::Number)
    }
}

/// Canonical form: object keys sorted, numbers normalised, nulls dropped from objects.
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().and_then(number).unwrap_or_else(|| v.clone()),
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                if !m[k].is_null() {
                    out.insert(k.clone(), canonical(&m[k]));
                }
            }
            Value::Object(out)
        }
        _ => v.clone(),
    }
}

/// SHA-256 (hex) of the canonical JSON text: the same on every run and platform.
/// The text is fed to the hash as it is written, without building the
/// canonical tree or the text first (same bytes as `canonical(v).to_string()`).
pub fn stable_hash(v: &Value) -> String {
    let mut hasher = Sha256::new();
    write_canonical(&mut hasher, v);
    hex(&hasher.finalize())
}

/// [`stable_hash`] of an object given as its map.
pub fn stable_hash_of_map(m: &Map<String, Value>) -> String {
    let mut hasher = Sha256::new();
    write_canonical_object(&mut hasher, m);
    hex(&hasher.finalize())
}

/// [`stable_hash`] of the object with these entries (keys distinct).
pub fn stable_hash_of_pairs(pairs: &[(&str, &Value)]) -> String {
    let mut entries: Vec<(&str, &Value)> = pairs
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_null())
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut hasher = Sha256::new();
    write_sorted_entries(&mut hasher, entries);
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Feeds written bytes to the hash.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a scalar or string as serde_json writes it (hashing cannot fail).
fn write_json<T: serde::Serialize + ?Sized>(h: &mut Sha256, v: &T) {
    let _ = serde_json::to_writer(HashWriter(h), v);
}

fn write_canonical(h: &mut Sha256, v: &Value) {
    match v {
        Value::Null => h.update(b"null"),
        Value::Bool(true) => h.update(b"true"),
        Value::Bool(false) => h.update(b"false"),
        Value::Number(n) => match n.as_f64().and_then(number) {
            Some(c) => write_json(h, &c),
            None => write_json(h, n),
        },
        Value::String(s) => write_json(h, s.as_str()),
        Value::Array(a) => {
            h.update(b"[");
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                write_canonical(h, item);
            }
            h.update(b"]");
        }
        Value::Object(m) => write_canonical_object(h, m),
    }
}

fn write_canonical_object(h: &mut Sha256, m: &Map<String, Value>) {
    let mut entries: Vec<(&str, &Value)> = m
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    write_sorted_entries(h, entries);
}

fn write_sorted_entries(h: &mut Sha256, entries: Vec<(&str, &Value)>) {
    h.update(b"{");
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            h.update(b",");
        }
        write_json(h, k);
        h.update(b":");
        write_canonical(h, v);
    }
    h.update(b"}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value_and_null_is_missing() {
        assert!(same(&json!(5000), &json!(5000.0)));
        assert!(!same(&json!(5000), &json!("5000")));
        assert!(same(&json!({"a": 1, "b": null}), &json!({"a": 1.0})));
        assert!(is_empty(Some(&json!("  "))));
        assert!(!is_empty(Some(&json!(0))));
    }

    #[test]
    fn the_streamed_hash_is_the_hash_of_the_canonical_text() {
        let samples = [
            json!(null),
            json!({"b": [1.0, {"z": null, "y": "é\"\n\u{1}"}], "a": 18446744073709551615u64, "c": -0.5, "d": null, "e": true}),
            json!([null, 1e300, 12345678901234567.0, "x", {}, []]),
            json!({"Amount": 5000.0, "Name": "Contoso \\ Ltd", "Ü": false}),
        ];
        for v in samples {
            let text = canonical(&v).to_string();
            let digest = Sha256::digest(text.as_bytes());
            let expected: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(stable_hash(&v), expected, "{text}");
            if let Value::Object(m) = &v {
                assert_eq!(stable_hash_of_map(m), expected);
                let pairs: Vec<(&str, &Value)> = m.iter().map(|(k, v)| (k.as_str(), v)).collect();
                assert_eq!(stable_hash_of_pairs(&pairs), expected);
            }
        }
    }

    #[test]
    fn hashes_ignore_key_order_and_number_spelling() {
        let a = stable_hash(&json!({"Name": "X", "Amount": 5000.0}));
        let b = stable_hash(&json!({"Amount": 5000, "Name": "X"}));
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        // Pinned: the hash must never change between releases or platforms.
        assert_eq!(
            stable_hash(&json!({"a": 1})),
            "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
        );
    }
}
