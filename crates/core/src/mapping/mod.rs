//! Field and stage mappings owned by CRM admins: parse, validate, apply both
//! ways, projection hashes. Pure: no I/O.
//!
//! A mapping file says which Partner Center Referral path is which CRM field
//! (`[fields]`), which values a new deal gets (`[constants]`), and which CRM
//! values stand for each lifecycle stage (`[stages]`). See docs/mapping-guide.md.

mod apply;
pub mod error;
mod file;
pub mod path;
pub mod schema;
pub mod stages;
pub mod transform;
mod validate;
pub mod value;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use apply::{CrmWrite, FieldDecision, NewDeal, Proposal, Resolution, Side, is_upgrade_path};
pub use error::{MappingError, MappingProblem};
pub use file::ValueSpecError;
pub use path::{FieldPath, PathError, Segment};
pub use schema::LookupError;
pub use stages::{StagePattern, StageReading, StageRules};
pub use transform::{
    Conversion, ConvertError, CountryFormat, Template, TemplateError, Transform, TransformSpecError,
};

/// A CRM record: CRM API name → value, case preserved.
pub type CrmRecord = Map<String, Value>;

/// The shipped Dynamics 365 mapping, so the binary works without a config directory.
pub const DEFAULT_DYNAMICS: &str = include_str!("../../../../config/mappings/dynamics.toml");
/// The shipped Salesforce mapping.
pub const DEFAULT_SALESFORCE: &str = include_str!("../../../../config/mappings/salesforce.toml");

/// Which way a field flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldDirection {
    Both,
    ToCrm,
    ToPartnerCenter,
}

impl FieldDirection {
    pub fn writes_crm(self) -> bool {
        matches!(self, FieldDirection::Both | FieldDirection::ToCrm)
    }

    pub fn writes_partner_center(self) -> bool {
        matches!(self, FieldDirection::Both | FieldDirection::ToPartnerCenter)
    }
}

/// Who wins when both sides changed a `both` field differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    PartnerCenter,
    Crm,
    /// The side edited last.
    Newest,
}

/// What an empty source value does to the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyPolicy {
    /// Clear the target (write null).
    Clear,
    /// Leave the target as it is.
    Keep,
}

/// One `[fields]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRule {
    /// Partner Center path (the TOML key).
    pub path: FieldPath,
    /// CRM API name; absent only for a `to_partner_center` template.
    pub crm: Option<String>,
    pub direction: FieldDirection,
    /// `None` means the default: `newest`.
    pub owner: Option<Owner>,
    pub conversion: Conversion,
    /// Partner Center value used when the source side is empty.
    pub default: Option<Value>,
    pub empty: EmptyPolicy,
    /// Sent to Partner Center only when a deal is created (fields it freezes afterwards).
    pub create_only: bool,
    /// `"path#name"`: a second mapping of a path already mapped, shown in
    /// another CRM field (`to_crm` only).
    pub copy: Option<String>,
    pub(crate) line: Option<usize>,
}

impl FieldRule {
    pub fn owner(&self) -> Owner {
        self.owner.unwrap_or(Owner::Newest)
    }

    /// Which side's value stands when both sides edited this `both` field:
    /// its owner's, or with `newest` the side edited last (Partner Center on
    /// a tie or when a time is unknown).
    pub fn owner_side(
        &self,
        pc_modified: Option<chrono::DateTime<chrono::Utc>>,
        crm_modified: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Side {
        match self.owner() {
            Owner::PartnerCenter => Side::PartnerCenter,
            Owner::Crm => Side::Crm,
            Owner::Newest => match (pc_modified, crm_modified) {
                (Some(p), Some(c)) if c > p => Side::Crm,
                _ => Side::PartnerCenter,
            },
        }
    }

    pub fn template(&self) -> Option<&Template> {
        match &self.conversion.transform {
            Transform::Template(t) => Some(t),
            _ => None,
        }
    }
}

/// One `[constants]` entry: a value every new deal gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    pub path: FieldPath,
    pub value: Value,
    pub(crate) line: Option<usize>,
}

/// How the customer contact reaches the CRM (`[status] customer_contact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactMode {
    /// Only the mapped opportunity fields (the default).
    #[default]
    Fields,
    /// A CRM Contact found by email under the deal's account (or created),
    /// linked to the opportunity.
    Record,
}

/// `[status]`: CRM fields written to the CRM only, holding what the daemon
/// knows that no referral field says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatusFields {
    /// Received inbound referrals: the deadline to answer by (a date-time);
    /// cleared once the referral is answered or expired.
    pub answer_by: Option<String>,
    /// Co-sell: Microsoft's answer (`Requested`, `Engaged`, `Declined`, `No answer`).
    pub microsoft_engagement: Option<String>,
    pub customer_contact: ContactMode,
}

/// The key under which the engine puts a received referral's deadline
/// (RFC 3339) into the referral JSON it maps; never a Partner Center field.
pub const ANSWER_BY_KEY: &str = "$answerBy";
/// The key under which the engine puts Microsoft's answer to a co-sell
/// request (a `MicrosoftEngagement` label) into the referral JSON it maps.
pub const ENGAGEMENT_KEY: &str = "$microsoftEngagement";
/// The key under which a CRM adapter puts the opportunity's linked contact
/// (`customer_contact = "record"`: Salesforce's primary contact role,
/// Dynamics' `parentcontactid`) into the CRM record it reads, as a Partner
/// Center team member (`firstName`, `lastName`, `email`, `phoneNumber`);
/// never a CRM field.
pub const CONTACT_KEY: &str = "$customerContact";

/// A parsed mapping, ready to apply. [`Mapping::validate`] checks it offline.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// The file name used in messages.
    pub file: String,
    /// Salesforce sObject or Dataverse table logical name.
    pub object: String,
    /// CRM field holding the Partner Center referral id (External ID / alternate key).
    pub external_id: String,
    /// CRM field that, when true on an opportunity with no referral, creates an outbound deal.
    pub sync_flag: Option<String>,
    /// CRM field where validation problems are written back for the seller.
    pub error_field: Option<String>,
    /// CRM field holding a link to the referral in Partner Center.
    pub link_field: Option<String>,
    /// Template of that link; placeholders are Referral paths, e.g. `{id}`.
    pub link_url: Option<Template>,
    pub fields: Vec<FieldRule>,
    pub constants: Vec<Constant>,
    pub stages: StageRules,
    /// `[status]`: fields only the daemon writes.
    pub status: StatusFields,
    /// Line of each top-level and `[stages]` key, for messages.
    pub(crate) lines: BTreeMap<String, usize>,
}

impl Mapping {
    /// Parses a mapping file. Stops at the first structural error (TOML
    /// syntax, unknown key, wrong type, bad path or transform syntax); run
    /// [`Mapping::validate`] for everything else.
    pub fn parse(text: &str, file: &str) -> Result<Mapping, MappingError> {
        file::parse(text, file)
    }

    /// Parses and validates: the mapping, or every problem found.
    pub fn load(text: &str, file: &str) -> Result<Mapping, Vec<MappingProblem>> {
        let mapping = Mapping::parse(text, file).map_err(|e| vec![e])?;
        let problems = mapping.validate();
        if problems.is_empty() {
            Ok(mapping)
        } else {
            Err(problems)
        }
    }

    /// The shipped Dynamics 365 mapping.
    pub fn default_dynamics() -> Result<Mapping, Vec<MappingProblem>> {
        Mapping::load(DEFAULT_DYNAMICS, "mappings/dynamics.toml")
    }

    /// The shipped Salesforce mapping.
    pub fn default_salesforce() -> Result<Mapping, Vec<MappingProblem>> {
        Mapping::load(DEFAULT_SALESFORCE, "mappings/salesforce.toml")
    }

    /// Every CRM field to read ($select / SOQL SELECT), each once, in file order.
    pub fn crm_fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let mut all: Vec<&str> = vec![self.external_id.as_str()];
        all.extend(self.sync_flag.as_deref());
        all.extend(self.error_field.as_deref());
        all.extend(self.link_field.as_deref());
        for rule in &self.fields {
            all.extend(rule.crm.as_deref());
            if rule.direction == FieldDirection::ToPartnerCenter
                && let Some(t) = rule.template()
            {
                all.extend(t.fields());
            }
        }
        all.extend(self.stages.fields());
        all.extend(self.status.answer_by.as_deref());
        all.extend(self.status.microsoft_engagement.as_deref());
        for f in all {
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    pub(crate) fn line_of_key(&self, key: &str) -> Option<usize> {
        self.lines.get(key).copied()
    }
}
