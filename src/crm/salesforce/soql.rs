//! SOQL text: escaped string literals, datetime literals, checked field
//! names, and Salesforce's own datetime format.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// A SOQL string literal, quotes included. Escapes per the SOQL reference
/// ("Quoted String Escape Sequences"): `\'` `\"` `\\` `\n` `\r` `\t` `\b` `\f`;
/// other control characters are dropped (SOQL has no escape for them).
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A SOQL dateTime literal (unquoted, UTC): `2025-03-01T10:00:00Z`.
pub fn datetime_literal(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Whether `name` is a field API name SOQL can take as is: `Name`,
/// `Referral_Identifier__c`, `ns__Field__c`, or a relationship path
/// `Account.Name`. Field names cannot be escaped, so anything else is refused.
pub fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            part.starts_with(|c: char| c.is_ascii_alphabetic())
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Parses a Salesforce datetime: `2025-03-01T10:00:00.000+0000` (offset
/// without a colon), as well as RFC 3339 (`…Z`, `…+01:00`) and a bare date
/// (midnight UTC).
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn hostile_values_stay_inside_the_literal() {
        assert_eq!(quote("O'Brien"), r"'O\'Brien'");
        assert_eq!(
            quote(r"O'Brien\' OR Name != '"),
            r"'O\'Brien\\\' OR Name != \''"
        );
        assert_eq!(quote("a\nb\r\tc\"d"), r#"'a\nb\r\tc\"d'"#);
        assert_eq!(quote("nul\u{0}bell\u{7}"), "'nulbell'");
        assert_eq!(quote("Zürich 東京"), "'Zürich 東京'");
    }

    /// Reads a quoted literal back the way SOQL does; the whole input must be
    /// consumed by exactly one literal.
    fn unquote(lit: &str) -> Option<String> {
        let inner = lit.strip_prefix('\'')?.strip_suffix('\'')?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(match chars.next()? {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    c @ ('\'' | '"' | '\\') => c,
                    _ => return None,
                }),
                '\'' => return None, // an unescaped quote would end the literal early
                c => out.push(c),
            }
        }
        Some(out)
    }

    proptest::proptest! {
        #[test]
        fn any_printable_value_round_trips(s in "[^\\p{Cc}]*|[\\\\'\"\n\r\t ]*") {
            proptest::prop_assert_eq!(unquote(&quote(&s)), Some(s.clone()));
        }
    }

    #[test]
    fn datetime_literals_are_unquoted_utc_seconds() {
        let t = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap()
            + chrono::Duration::milliseconds(999);
        assert_eq!(datetime_literal(t), "2025-03-01T10:00:00Z");
    }

    #[test]
    fn salesforce_datetimes_parse() {
        let want = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap();
        assert_eq!(parse_datetime("2025-03-01T10:00:00.000+0000"), Some(want));
        assert_eq!(parse_datetime("2025-03-01T12:00:00.000+0200"), Some(want));
        assert_eq!(parse_datetime("2025-03-01T10:00:00Z"), Some(want));
        assert_eq!(parse_datetime("2025-03-01T11:00:00+01:00"), Some(want));
        assert_eq!(
            parse_datetime("2025-03-01T10:00:00.123+0000"),
            Some(want + chrono::Duration::milliseconds(123))
        );
        assert_eq!(
            parse_datetime("2025-03-01"),
            Some(Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap())
        );
        assert_eq!(parse_datetime("yesterday"), None);
        assert_eq!(parse_datetime("2025-13-01T10:00:00.000+0000"), None);
    }

    #[test]
    fn field_names_are_checked() {
        for ok in [
            "Name",
            "Referral_Identifier__c",
            "ns__Field__c",
            "Account.Name",
            "Custom__r.Name",
        ] {
            assert!(is_field_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Name, (SELECT Id FROM Contacts)",
            "Name FROM Account --",
            "1abc",
            "Na me",
            "Account..Name",
            "Name'",
        ] {
            assert!(!is_field_name(bad), "{bad}");
        }
    }
}
