//! OData v4 pieces of the Dataverse Web API: literals, key segments, query
//! strings, and rows read back into `CrmRecord`s.

use chrono::{DateTime, SecondsFormat, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::crm::{CrmChange, CrmObjectSpec, CrmRecord};

/// Everything but RFC 3986 unreserved characters and `'` (the OData string
/// delimiter, legal in a path segment) is escaped inside a key segment.
const KEY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'\'');

/// Query values: as for keys, plus OData's harmless punctuation kept readable.
/// `&`, `=`, `+`, `#`, `%`, `;`, `/`, `?`, `@`, `$` and spaces are escaped,
/// and `'` too: the URL parser escapes it in an http(s) query anyway, so
/// escaping it here keeps [`encoded_len`] the length that travels.
const QUERY_VALUE: &AsciiSet = &KEY_VALUE
    .remove(b'(')
    .remove(b')')
    .remove(b',')
    .remove(b':')
    .add(b'\'');

/// An OData string literal: `'…'` with `'` doubled.
pub fn string_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A date-time literal (unquoted ISO 8601 UTC).
pub fn datetime_literal(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `name='value'` for an alternate key, quotes doubled, then
/// percent-encoded for the URL path.
pub fn alternate_key_segment(column: &str, value: &str) -> String {
    let literal = string_literal(value);
    format!("{column}={}", utf8_percent_encode(&literal, KEY_VALUE))
}

/// A primary key (a GUID) for `entityset(<guid>)`; `None` if it is not one.
pub fn guid_segment(id: &str) -> Option<String> {
    uuid::Uuid::parse_str(id.trim().trim_start_matches('{').trim_end_matches('}'))
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// The length of `value` once percent-encoded as a query value.
pub fn encoded_len(value: &str) -> usize {
    utf8_percent_encode(value, QUERY_VALUE).map(str::len).sum()
}

/// A query string from `(name, value)` pairs, each value percent-encoded.
pub fn query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The GUID inside an `OData-EntityId` such as
/// `https://org/api/data/v9.2/opportunities(49b0be2e-…)`; `None` for an
/// alternate-key form.
pub fn guid_from_entity_id(entity_id: &str) -> Option<String> {
    let open = entity_id.rfind('(')?;
    let inner = entity_id[open + 1..].trim_end_matches(')');
    guid_segment(inner)
}

/// The id of a created row: its `id_column` in the body
/// (`return=representation`), else the GUID of its `OData-EntityId` header.
pub fn created_id(body: &[u8], id_column: &str, entity_id: Option<&str>) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get(id_column).and_then(Value::as_str).map(str::to_owned))
        .or_else(|| entity_id.and_then(guid_from_entity_id))
}

/// The `@odata.context` of a `$deletedEntity` row.
fn is_deleted_entity(row: &Map<String, Value>) -> bool {
    row.get("@odata.context")
        .and_then(Value::as_str)
        .is_some_and(|c| c.ends_with("$deletedEntity"))
        || (row.get("reason").and_then(Value::as_str) == Some("deleted")
            && row.contains_key("id")
            && !row.contains_key("@odata.etag"))
}

/// A string form of a key value: strings as is, numbers as written.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses `modifiedon` (`2025-03-04T10:15:22Z`, with or without fractions).
pub fn parse_datetime(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Why a row could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct RowError(pub String);

/// A row of `opportunities` as a `CrmRecord`.
pub fn record_from_row(
    row: &Map<String, Value>,
    spec: &CrmObjectSpec,
    primary_key: &str,
) -> Result<CrmRecord, RowError> {
    let crm_id = row
        .get(primary_key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RowError(format!("a row has no `{primary_key}`")))?
        .to_owned();
    let mut fields = Map::new();
    for name in spec.select_fields() {
        if let Some(v) = row.get(&name) {
            fields.insert(name, v.clone());
        }
    }
    Ok(CrmRecord {
        crm_id,
        referral_id: row.get(&spec.external_id_field).and_then(text_of),
        fields,
        version: row
            .get("@odata.etag")
            .and_then(Value::as_str)
            .map(str::to_owned),
        modified_at: parse_datetime(row.get("modifiedon")),
    })
}

/// A row of a listing or delta response as a change.
pub fn change_from_row(
    row: &Map<String, Value>,
    spec: &CrmObjectSpec,
    primary_key: &str,
) -> Result<CrmChange, RowError> {
    if is_deleted_entity(row) {
        let id = row
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| RowError("a $deletedEntity row has no `id`".into()))?;
        return Ok(CrmChange::Deleted {
            crm_id: id.to_owned(),
        });
    }
    record_from_row(row, spec, primary_key).map(CrmChange::Upserted)
}

/// Whether a row is linked to a referral or flagged to sync (the mapping's
/// filter, applied locally where the server cannot filter).
pub fn in_scope(record: &CrmRecord, spec: &CrmObjectSpec) -> bool {
    record.referral_id.is_some()
        || spec
            .sync_flag_field
            .as_ref()
            .is_some_and(|f| record.fields.get(f) == Some(&Value::Bool(true)))
}

/// The `$filter` of the mapping: linked to a referral or flagged to sync.
pub fn scope_filter(spec: &CrmObjectSpec) -> String {
    match &spec.sync_flag_field {
        Some(flag) => format!("({} ne null or {flag} eq true)", spec.external_id_field),
        None => format!("{} ne null", spec.external_id_field),
    }
}

/// The `$deltatoken` of a delta link.
pub fn delta_token_of(link: &str) -> Option<String> {
    let url = url::Url::parse(link).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "$deltatoken")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> CrmObjectSpec {
        CrmObjectSpec {
            object: "opportunity".into(),
            external_id_field: "new_referralid".into(),
            sync_flag_field: Some("new_syncwithpartnercenter".into()),
            error_field: None,
            fields: vec!["name".into(), "estimatedvalue".into()],
            stage_values: vec![("statecode".into(), json!(0))],
        }
    }

    #[test]
    fn alternate_keys_double_quotes_then_percent_encode() {
        assert_eq!(
            alternate_key_segment("new_referralid", "8d1c2f3e-0001"),
            "new_referralid='8d1c2f3e-0001'"
        );
        assert_eq!(
            alternate_key_segment("new_referralid", "O'Brien & Co/1 #2"),
            "new_referralid='O''Brien%20%26%20Co%2F1%20%232'"
        );
        assert_eq!(alternate_key_segment("k", "é?%+"), "k='%C3%A9%3F%25%2B'");
    }

    #[test]
    fn literals_and_queries_are_escaped() {
        assert_eq!(string_literal("it's"), "'it''s'");
        let at = DateTime::parse_from_rfc3339("2025-03-01T00:00:00.750Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(datetime_literal(at), "2025-03-01T00:00:00Z");
        assert_eq!(
            query(&[
                ("$select", "name,modifiedon".into()),
                ("$filter", "name eq 'a&b=c+d'".into())
            ]),
            "$select=name,modifiedon&$filter=name%20eq%20%27a%26b%3Dc%2Bd%27"
        );
    }

    #[test]
    fn guids_are_checked_and_found_in_entity_ids() {
        assert_eq!(
            guid_segment("{49B0BE2E-D01C-ED11-B83E-000D3A572421}").as_deref(),
            Some("49b0be2e-d01c-ed11-b83e-000d3a572421")
        );
        assert_eq!(guid_segment("x') or (1"), None);
        assert_eq!(
            guid_from_entity_id(
                "https://org.crm.dynamics.com/api/data/v9.2/opportunities(49b0be2e-d01c-ed11-b83e-000d3a572421)"
            )
            .as_deref(),
            Some("49b0be2e-d01c-ed11-b83e-000d3a572421")
        );
        assert_eq!(
            guid_from_entity_id("https://org/api/data/v9.2/opportunities(new_referralid='a')"),
            None
        );
    }

    #[test]
    fn a_created_rows_id_comes_from_the_body_else_the_entity_id() {
        let header =
            Some("https://org/api/data/v9.2/contacts(00000000-0000-0000-0000-00000000000b)");
        let body = br#"{"contactid":"00000000-0000-0000-0000-00000000000a"}"#;
        assert_eq!(
            created_id(body, "contactid", header).as_deref(),
            Some("00000000-0000-0000-0000-00000000000a")
        );
        assert_eq!(
            created_id(b"", "contactid", header).as_deref(),
            Some("00000000-0000-0000-0000-00000000000b")
        );
        assert_eq!(created_id(body, "accountid", None), None);
    }

    #[test]
    fn rows_become_records_with_only_the_requested_fields() {
        let row = json!({
            "@odata.etag": "W/\"80648695\"", "name": "Contoso", "estimatedvalue": 125000.0,
            "statecode": 0, "modifiedon": "2025-03-04T10:15:22Z", "new_referralid": "r-1",
            "opportunityid": "49b0be2e-d01c-ed11-b83e-000d3a572421", "unasked": 1,
            "statecode@OData.Community.Display.V1.FormattedValue": "Open"
        });
        let rec = record_from_row(row.as_object().unwrap(), &spec(), "opportunityid").unwrap();
        assert_eq!(rec.crm_id, "49b0be2e-d01c-ed11-b83e-000d3a572421");
        assert_eq!(rec.referral_id.as_deref(), Some("r-1"));
        assert_eq!(rec.version.as_deref(), Some("W/\"80648695\""));
        assert_eq!(
            rec.modified_at.unwrap().to_rfc3339(),
            "2025-03-04T10:15:22+00:00"
        );
        assert_eq!(
            rec.fields
                .keys()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>(),
            ["new_referralid", "name", "estimatedvalue", "statecode"].into()
        );
        assert!(in_scope(&rec, &spec()));
        let err = record_from_row(
            json!({"name": "x"}).as_object().unwrap(),
            &spec(),
            "opportunityid",
        );
        assert!(err.is_err());
    }

    #[test]
    fn deleted_entities_are_told_apart() {
        let row = json!({"@odata.context": "https://org/api/data/v9.2/$metadata#opportunities/$deletedEntity",
            "id": "2e451703-c686-e711-80e5-00155db19e6d", "reason": "deleted"});
        assert_eq!(
            change_from_row(row.as_object().unwrap(), &spec(), "opportunityid").unwrap(),
            CrmChange::Deleted {
                crm_id: "2e451703-c686-e711-80e5-00155db19e6d".into()
            }
        );
    }

    #[test]
    fn the_scope_filter_follows_the_mapping() {
        assert_eq!(
            scope_filter(&spec()),
            "(new_referralid ne null or new_syncwithpartnercenter eq true)"
        );
        let mut s = spec();
        s.sync_flag_field = None;
        assert_eq!(scope_filter(&s), "new_referralid ne null");
    }

    #[test]
    fn delta_tokens_are_read_from_delta_links() {
        assert_eq!(
            delta_token_of("https://org/api/data/v9.2/opportunities?$select=name&$deltatoken=919058%2108%2f22%2f2017%2008%3a21%3a20")
                .as_deref(),
            Some("919058!08/22/2017 08:21:20")
        );
        assert_eq!(delta_token_of("https://org/x?a=b"), None);
    }
}
