//! Salesforce REST wire formats: error arrays, query pages, collection
//! results, `Sforce-Limit-Info`, and how Salesforce error codes are retried.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::http::{RetryDirective, ServiceError};

/// One element of a Salesforce error array:
/// `[{"message":"…","errorCode":"…","fields":["…"]}]`. Collection results
/// name the code `statusCode`; both are accepted.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ApiError {
    #[serde(default, alias = "statusCode")]
    #[serde(rename = "errorCode")]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub fields: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl ApiError {
    /// Reads an error body: an array of errors, or a single error object.
    /// `None` for anything else (HTML from a wrong host, empty bodies).
    pub fn parse_body(body: &[u8]) -> Option<Vec<ApiError>> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let items = match v {
            Value::Array(items) => items,
            obj @ Value::Object(_) => vec![obj],
            _ => return None,
        };
        let errors: Vec<ApiError> = items
            .into_iter()
            .filter_map(|i| serde_json::from_value::<ApiError>(i).ok())
            .filter(|e| !e.code.is_empty() || !e.message.is_empty())
            .collect();
        (!errors.is_empty()).then_some(errors)
    }

    /// The shared HTTP layer's view of the first error, so `HttpError`
    /// messages and hints show the Salesforce code.
    pub fn to_service_error(errors: &[ApiError]) -> Option<ServiceError> {
        let first = errors.first()?;
        let message = errors
            .iter()
            .map(|e| e.message.as_str())
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Some(ServiceError {
            code: first.code.clone(),
            message: (!message.is_empty()).then_some(message),
            target: (!first.fields.is_empty()).then(|| first.fields.join(",")),
            inner_error: None,
        })
    }
}

/// Error codes that mean "this org's API allocation is used up".
pub const REQUEST_LIMIT_EXCEEDED: &str = "REQUEST_LIMIT_EXCEEDED";
/// The access token is no longer valid.
pub const INVALID_SESSION_ID: &str = "INVALID_SESSION_ID";

/// How a Salesforce error code on one record should be retried.
pub fn classify_code(code: &str) -> RetryDirective {
    match code {
        // Transient: another transaction held the row, or the server was busy,
        // or the record was rolled back only because another one failed.
        "UNABLE_TO_LOCK_ROW"
        | "SERVER_UNAVAILABLE"
        | "REQUEST_RUNNING_TOO_LONG"
        | "QUERY_TIMEOUT"
        | "ALL_OR_NONE_OPERATION_ROLLED_BACK"
        | "CONCURRENT_REQUESTS_LIMIT_EXCEEDED"
        | REQUEST_LIMIT_EXCEEDED => RetryDirective::Backoff,
        // The org, the integration user or the mapping must change.
        "INSUFFICIENT_ACCESS"
        | "INSUFFICIENT_ACCESS_OR_READONLY"
        | "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY"
        | "INVALID_FIELD"
        | "INVALID_FIELD_FOR_INSERT_UPDATE"
        | "INVALID_TYPE"
        | "NOT_FOUND"
        | "API_DISABLED_FOR_ORG"
        | "API_CURRENTLY_DISABLED"
        | "INVALID_SESSION_ID"
        | "DUPLICATE_EXTERNAL_ID"
        | "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY" => RetryDirective::Operator,
        // REQUIRED_FIELD_MISSING, FIELD_CUSTOM_VALIDATION_EXCEPTION,
        // STRING_TOO_LONG, INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST,
        // MALFORMED_ID, DUPLICATE_VALUE, ENTITY_IS_DELETED, …: this record's data.
        _ => RetryDirective::Permanent,
    }
}

/// `Sforce-Limit-Info: api-usage=18/5000` (possibly with
/// `per-app-api-usage=17/250(appName=…)` alongside) → `(used, max)`.
pub fn parse_limit_info(header: &str) -> Option<(u64, u64)> {
    header.split(',').find_map(|part| {
        let rest = part.trim().strip_prefix("api-usage=")?;
        let (used, max) = rest.split_once('/')?;
        let max: String = max.chars().take_while(char::is_ascii_digit).collect();
        Some((used.trim().parse().ok()?, max.parse().ok()?))
    })
}

/// A SOQL query page.
#[derive(Debug, Deserialize)]
pub struct QueryPage {
    #[serde(default)]
    pub done: bool,
    #[serde(default, rename = "nextRecordsUrl")]
    pub next_records_url: Option<String>,
    #[serde(default)]
    pub records: Vec<Map<String, Value>>,
}

/// One element of an sObject Collections response, in request order.
#[derive(Debug, Deserialize)]
pub struct CollectionItem {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub created: Option<bool>,
    #[serde(default, deserialize_with = "null_as_empty_errors")]
    pub errors: Vec<ApiError>,
}

fn null_as_empty_errors<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ApiError>, D::Error> {
    Ok(Option::<Vec<ApiError>>::deserialize(d)?.unwrap_or_default())
}

/// The body of a single-record create/upsert (`201`/`200`).
#[derive(Debug, Deserialize)]
pub struct SaveResult {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(default)]
    pub created: Option<bool>,
    #[serde(default, deserialize_with = "null_as_empty_errors")]
    pub errors: Vec<ApiError>,
}

/// The record ids named in a `300 Multiple Choices` body: an array of record
/// URLs (`/services/data/v62.0/sobjects/Opportunity/006…`), of records, or of
/// ids; unknown shapes yield what can be found.
pub fn multiple_choice_ids(body: &[u8]) -> Vec<String> {
    fn id_of(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => s
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            Value::Object(m) => m
                .get("Id")
                .or_else(|| m.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    m.get("attributes")
                        .and_then(|a| a.get("url"))
                        .and_then(id_of)
                }),
            _ => None,
        }
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => items.iter().filter_map(id_of).collect(),
        Ok(other) => id_of(&other).into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

/// Record ids quoted in a `DUPLICATE_EXTERNAL_ID` message such as
/// `more than one record found for external id field: [006A, 006B]`.
pub fn ids_in_message(message: &str) -> Vec<String> {
    let Some(start) = message.find('[') else {
        return Vec::new();
    };
    let rest = &message[start + 1..];
    let end = rest.find(']').unwrap_or(rest.len());
    rest[..end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_arrays_parse_with_either_code_key() {
        let e = ApiError::parse_body(
            br#"[{"message":"Opportunity ID: id value of incorrect type: 006XX","errorCode":"MALFORMED_ID","fields":["Id"]}]"#,
        )
        .unwrap();
        assert_eq!(e[0].code, "MALFORMED_ID");
        assert_eq!(e[0].fields, vec!["Id"]);
        let e = ApiError::parse_body(
            br#"[{"statusCode":"REQUIRED_FIELD_MISSING","message":"Required fields are missing: [CloseDate]","fields":["CloseDate"],"extendedErrorDetails":null}]"#,
        )
        .unwrap();
        assert_eq!(e[0].code, "REQUIRED_FIELD_MISSING");
        let e = ApiError::parse_body(
            br#"[{"message":"x","errorCode":"A","fields":null},{"message":"y","errorCode":"B"}]"#,
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        let se = ApiError::to_service_error(&e).unwrap();
        assert_eq!(se.code, "A");
        assert_eq!(se.message.as_deref(), Some("x; y"));
        assert!(ApiError::parse_body(b"<html>wrong host</html>").is_none());
        assert!(ApiError::parse_body(b"").is_none());
        assert!(ApiError::parse_body(b"[]").is_none());
    }

    #[test]
    fn codes_are_classified() {
        assert_eq!(classify_code("UNABLE_TO_LOCK_ROW"), RetryDirective::Backoff);
        assert_eq!(
            classify_code("ALL_OR_NONE_OPERATION_ROLLED_BACK"),
            RetryDirective::Backoff
        );
        assert_eq!(
            classify_code("INSUFFICIENT_ACCESS_OR_READONLY"),
            RetryDirective::Operator
        );
        assert_eq!(classify_code("INVALID_FIELD"), RetryDirective::Operator);
        assert_eq!(
            classify_code("REQUIRED_FIELD_MISSING"),
            RetryDirective::Permanent
        );
        assert_eq!(classify_code("SOMETHING_NEW"), RetryDirective::Permanent);
    }

    #[test]
    fn limit_info_is_read_and_per_app_usage_ignored() {
        assert_eq!(parse_limit_info("api-usage=18/5000"), Some((18, 5000)));
        assert_eq!(
            parse_limit_info("per-app-api-usage=17/250(appName=sample-app), api-usage=25/5000"),
            Some((25, 5000))
        );
        assert_eq!(
            parse_limit_info("per-app-api-usage=17/250(appName=x)"),
            None
        );
        assert_eq!(parse_limit_info("garbage"), None);
    }

    #[test]
    fn multiple_choices_name_the_records() {
        assert_eq!(
            multiple_choice_ids(
                br#"["/services/data/v62.0/sobjects/Opportunity/006A","/services/data/v62.0/sobjects/Opportunity/006B"]"#
            ),
            vec!["006A", "006B"]
        );
        assert_eq!(
            multiple_choice_ids(
                br#"[{"attributes":{"type":"Opportunity","url":"/services/data/v62.0/sobjects/Opportunity/006C"}},{"Id":"006D"}]"#
            ),
            vec!["006C", "006D"]
        );
        assert!(multiple_choice_ids(b"not json").is_empty());
        assert_eq!(
            ids_in_message(
                "Opportunity: more than one record found for external id field: [006A0000001, 006A0000002]"
            ),
            vec!["006A0000001", "006A0000002"]
        );
    }
}
