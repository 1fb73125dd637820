//! The simulated org's objects and fields: field types, picklists
//! (OpportunityStage), 18-character ids and the date formats
//! (crm-apis.md, Salesforce).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FType {
    Id,
    Str(usize),
    TextArea(usize),
    Email,
    Phone,
    Url,
    Currency,
    Percent,
    Int,
    Bool,
    Date,
    DateTime,
    Picklist {
        values: Vec<String>,
        restricted: bool,
    },
    Reference(&'static str),
}

impl FType {
    pub(super) fn soap_type(&self) -> (&'static str, &'static str) {
        match self {
            FType::Id => ("id", "tns:ID"),
            FType::Str(_) => ("string", "xsd:string"),
            FType::TextArea(_) => ("textarea", "xsd:string"),
            FType::Email => ("email", "xsd:string"),
            FType::Phone => ("phone", "xsd:string"),
            FType::Url => ("url", "xsd:string"),
            FType::Currency => ("currency", "xsd:double"),
            FType::Percent => ("percent", "xsd:double"),
            FType::Int => ("int", "xsd:int"),
            FType::Bool => ("boolean", "xsd:boolean"),
            FType::Date => ("date", "xsd:date"),
            FType::DateTime => ("datetime", "xsd:dateTime"),
            FType::Picklist { .. } => ("picklist", "xsd:string"),
            FType::Reference(_) => ("reference", "tns:ID"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(super) label: String,
    pub(super) ty: FType,
    pub(super) createable: bool,
    pub(super) updateable: bool,
    pub(super) required: bool,
    pub(super) external_id: bool,
}

pub(super) fn f(name: &str, label: &str, ty: FType) -> Field {
    Field {
        name: name.into(),
        label: label.into(),
        ty,
        createable: true,
        updateable: true,
        required: false,
        external_id: false,
    }
}

pub(super) fn ro(name: &str, label: &str, ty: FType) -> Field {
    Field {
        createable: false,
        updateable: false,
        ..f(name, label, ty)
    }
}

pub(super) fn req(mut fl: Field) -> Field {
    fl.required = true;
    fl
}

pub(super) fn pick(values: &[&str], restricted: bool) -> FType {
    FType::Picklist {
        values: values.iter().map(|s| (*s).to_owned()).collect(),
        restricted,
    }
}

/// One row of OpportunityStage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SfStage {
    pub api_name: String,
    pub probability: u32,
    pub forecast_category: String,
    pub is_closed: bool,
    pub is_won: bool,
}

pub(super) fn default_stages() -> Vec<SfStage> {
    let s = |n: &str, p: u32, fc: &str, closed: bool, won: bool| SfStage {
        api_name: n.into(),
        probability: p,
        forecast_category: fc.into(),
        is_closed: closed,
        is_won: won,
    };
    vec![
        s("Prospecting", 10, "Pipeline", false, false),
        // The connector's stage for a referral not yet accepted.
        s("On Hold", 10, "Pipeline", false, false),
        s("Qualification", 10, "Pipeline", false, false),
        s("Needs Analysis", 20, "Pipeline", false, false),
        s("Value Proposition", 50, "Pipeline", false, false),
        s("Id. Decision Makers", 60, "Pipeline", false, false),
        s("Perception Analysis", 70, "Pipeline", false, false),
        s("Proposal/Price Quote", 75, "Pipeline", false, false),
        s("Negotiation/Review", 90, "Commit", false, false),
        s("Closed Won", 100, "Closed", true, true),
        s("Closed Lost", 0, "Omitted", true, false),
    ]
}

pub(super) const CURRENCIES: &[&str] = &[
    "USD", "EUR", "GBP", "CAD", "AUD", "JPY", "CHF", "SEK", "NOK", "DKK", "INR", "BRL", "MXN",
    "NZD", "SGD", "ZAR",
];

pub(super) const HELP_LABELS: &[&str] = &[
    "Workload specific value proposition",
    "Customer technical architecture",
    "Proof of concept or demo",
    "Quotes or licensing",
    "Post sales customer success",
    "General or other",
];

pub(super) fn audit_fields() -> Vec<Field> {
    vec![
        ro("CreatedDate", "Created Date", FType::DateTime),
        ro("LastModifiedDate", "Last Modified Date", FType::DateTime),
        ro("SystemModstamp", "System Modstamp", FType::DateTime),
        ro("IsDeleted", "Deleted", FType::Bool),
        ro("CreatedById", "Created By ID", FType::Reference("User")),
        ro(
            "LastModifiedById",
            "Last Modified By ID",
            FType::Reference("User"),
        ),
    ]
}

/// The 18-character form of a 15-character Salesforce id.
pub(crate) fn id18(id15: &str) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let b = id15.as_bytes();
    let mut suffix = String::new();
    for chunk in 0..3 {
        let mut n = 0usize;
        for j in 0..5 {
            if b.get(chunk * 5 + j).is_some_and(u8::is_ascii_uppercase) {
                n |= 1 << j;
            }
        }
        suffix.push(ALPHA[n] as char);
    }
    format!("{id15}{suffix}")
}

pub(super) fn normalize_id(id: &str) -> Option<String> {
    match id.len() {
        15 if id.chars().all(|c| c.is_ascii_alphanumeric()) => Some(id18(id)),
        18 if id.chars().all(|c| c.is_ascii_alphanumeric()) => Some(id.to_owned()),
        _ => None,
    }
}

/// Salesforce date-times: `2025-03-04T10:15:22.000+0000`.
pub(crate) fn fmt_sf(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

pub(crate) fn parse_sf_datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| crate::datetime::parse(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_get_their_checksum_suffix() {
        assert_eq!(id18("001A0000006Vm9r"), "001A0000006Vm9rIAC");
        assert_eq!(
            normalize_id("001A0000006Vm9r").as_deref(),
            Some("001A0000006Vm9rIAC")
        );
        assert!(normalize_id("006XX").is_none());
    }
}
