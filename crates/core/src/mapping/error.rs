//! Errors in mapping files: always the file, and where known the line and key.

use std::fmt;

/// One thing wrong with a mapping file. `parse` stops at the first;
/// `validate` reports all of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MappingError {
    pub file: String,
    /// 1-based line in the file.
    pub line: Option<usize>,
    /// Dotted TOML key, with quoted parts where needed: `fields."details.dealValue".transform`.
    pub key: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

/// A problem found by offline validation; same shape as a parse error.
pub type MappingProblem = MappingError;

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key {key:?}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Quotes a TOML key part when it is not a bare key.
pub(crate) fn key_part(part: &str) -> String {
    let bare = !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        part.to_owned()
    } else {
        format!("\"{}\"", part.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Joins key parts into one dotted key.
pub(crate) fn join_key<S: AsRef<str>>(parts: &[S]) -> String {
    parts
        .iter()
        .map(|p| key_part(p.as_ref()))
        .collect::<Vec<_>>()
        .join(".")
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_line_and_key() {
        let e = MappingError {
            file: "mappings/salesforce.toml".into(),
            line: Some(12),
            key: Some(join_key(&["fields", "name", "directon"])),
            message: "unknown key; expected one of crm, direction".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"mappings/salesforce.toml:12: key "fields.name.directon": unknown key; expected one of crm, direction"#
        );
        assert_eq!(
            join_key(&["fields", "details.dealValue"]),
            "fields.\"details.dealValue\""
        );
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 0), 1);
    }
}
