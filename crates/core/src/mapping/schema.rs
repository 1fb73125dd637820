//! The shape of the Referral JSON (reference: partner-center-api.md §2), for
//! checking mapping paths and types offline.

use crate::domain::{
    AssistanceRequestCode, CustomerProfileType, Direction, ReferralQualification, ReferralStatus,
    ReferralSubstatus, ReferralTargetType, ReferralType, SolutionTagType,
};

use super::path::FieldPath;

/// The type of a scalar field of the Referral.
#[derive(Debug, Clone, Copy)]
pub enum FieldType {
    Text,
    Number,
    /// UTC date-time text.
    DateTime,
    Bool,
    /// Text limited to documented values (unknown ones are still accepted on read).
    Enum(fn() -> Vec<&'static str>),
}

impl PartialEq for FieldType {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (FieldType::Enum(a), FieldType::Enum(b)) => a() == b(),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Eq for FieldType {}

impl FieldType {
    pub fn describe(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "a number",
            FieldType::DateTime => "a UTC date-time",
            FieldType::Bool => "true/false",
            FieldType::Enum(_) => "one of a fixed set of values",
        }
    }

    pub fn enum_values(self) -> Option<Vec<&'static str>> {
        match self {
            FieldType::Enum(f) => Some(f()),
            _ => None,
        }
    }
}

macro_rules! values_of {
    ($t:ty) => {
        || <$t>::KNOWN.iter().map(|v| v.as_str()).collect()
    };
}

/// One scalar field: its shape (`team[].email`), type, and whether Partner
/// Center sets it itself (never written by a mapping).
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub shape: &'static str,
    pub ty: FieldType,
    pub read_only: bool,
}

const fn rw(shape: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        shape,
        ty,
        read_only: false,
    }
}

const fn ro(shape: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        shape,
        ty,
        read_only: true,
    }
}

use FieldType::{Bool, DateTime, Number, Text};

fn member(prefix: &'static str) -> [FieldSpec; 7] {
    match prefix {
        "team" => [
            rw("team[].firstName", Text),
            rw("team[].lastName", Text),
            rw("team[].phoneNumber", Text),
            rw("team[].email", Text),
            rw("team[].title", Text),
            rw("team[].contactPreference.locale", Text),
            rw("team[].contactPreference.disableNotifications", Bool),
        ],
        _ => [
            rw("customerProfile.team[].firstName", Text),
            rw("customerProfile.team[].lastName", Text),
            rw("customerProfile.team[].phoneNumber", Text),
            rw("customerProfile.team[].email", Text),
            rw("customerProfile.team[].title", Text),
            rw("customerProfile.team[].contactPreference.locale", Text),
            rw(
                "customerProfile.team[].contactPreference.disableNotifications",
                Bool,
            ),
        ],
    }
}

/// Every scalar field of the Referral this build knows.
pub fn fields() -> Vec<FieldSpec> {
    let mut v = vec![
        ro("id", Text),
        ro("engagementId", Text),
        rw("name", Text),
        ro("organizationId", Text),
        ro("organizationName", Text),
        rw("externalReferenceId", Text),
        ro("createdDateTime", DateTime),
        ro("updatedDateTime", DateTime),
        ro("expirationDateTime", DateTime),
        ro("acceptedDateTime", DateTime),
        ro("closedDateTime", DateTime),
        ro("status", FieldType::Enum(values_of!(ReferralStatus))),
        ro("substatus", FieldType::Enum(values_of!(ReferralSubstatus))),
        ro("statusReason", Text),
        rw("type", FieldType::Enum(values_of!(ReferralType))),
        rw(
            "qualification",
            FieldType::Enum(values_of!(ReferralQualification)),
        ),
        ro("direction", FieldType::Enum(values_of!(Direction))),
        rw("salesStage", Text),
        rw("campaignId", Text),
        rw("favorite", Bool),
        ro("mpnId", Text),
        ro("referralProgram", Text),
        ro("referralSource", Text),
        ro("callToAction", Text),
        rw("customerMarketplaceIntent", Text),
        ro("registrationStatus", Text),
        ro("quality", Text),
        ro("isSpam", Bool),
        rw("tags[]", Text),
        ro("dealSensitivity", Text),
        ro("createdVia", Text),
        ro("lastModifiedVia", Text),
        ro("lastRunId", Text),
        rw("customerProfile.name", Text),
        rw("customerProfile.size", Text),
        ro("customerProfile.isMatchingComplete", Bool),
        rw("customerProfile.address.addressLine1", Text),
        rw("customerProfile.address.addressLine2", Text),
        rw("customerProfile.address.city", Text),
        rw("customerProfile.address.state", Text),
        rw("customerProfile.address.postalCode", Text),
        rw("customerProfile.address.region", Text),
        rw("customerProfile.address.country", Text),
        rw("customerProfile.ids[].id", Text),
        rw(
            "customerProfile.ids[].profileType",
            FieldType::Enum(values_of!(CustomerProfileType)),
        ),
        rw("consent.consentToToShareInfoWithOthers", Bool),
        rw("consent.consentToContact", Bool),
        rw("consent.consentToMicrosoftToContactSpecificPartners", Bool),
        rw("consent.consentToShareReferralWithMicrosoftSellers", Bool),
        rw("details.notes", Text),
        rw("details.dealValue", Number),
        rw("details.currency", Text),
        rw("details.closingDateTime", DateTime),
        rw("details.customerAction", Text),
        rw("details.customerRequestedContact", Bool),
        ro("details.incentiveLevel", Text),
        rw("details.requirements.industries[].id", Text),
        rw("details.requirements.products[].id", Text),
        rw("details.requirements.services[].id", Text),
        rw("details.requirements.offers[].id", Text),
        rw("details.requirements.salesPlays[].id", Text),
        rw("details.requirements.solutions[].id", Text),
        rw("details.requirements.solutions[].name", Text),
        rw(
            "details.requirements.solutions[].type",
            FieldType::Enum(values_of!(SolutionTagType)),
        ),
        rw("details.requirements.solutions[].publisherName", Text),
        rw("details.requirements.solutions[].solutionType", Text),
        rw("details.requirements.solutions[].price", Number),
        rw("details.requirements.solutions[].quantity", Number),
        rw("details.requirements.solutions[].currency", Text),
        rw("details.requirements.solutions[].closingDateTime", DateTime),
        rw(
            "details.requirements.additionalRequirements.attributes[].id",
            Text,
        ),
        rw(
            "details.requirements.additionalRequirements.attributes[].type",
            Text,
        ),
        rw(
            "details.requirements.additionalRequirements.iot.customerLicenseAgreementNumber",
            Text,
        ),
        rw(
            "details.requirements.additionalRequirements.iot.deviceCategory",
            Text,
        ),
        rw(
            "details.requirements.additionalRequirements.iot.siliconType",
            Text,
        ),
        rw(
            "details.requirements.additionalRequirements.iot.azureCertifiedDevice",
            Bool,
        ),
        rw(
            "details.requirements.additionalRequirements.iot.attachServices",
            Bool,
        ),
        rw("inviteContext.notes", Text),
        rw(
            "inviteContext.assistanceRequestCode",
            FieldType::Enum(values_of!(AssistanceRequestCode)),
        ),
        ro("inviteContext.invitedMpnId", Text),
        ro("inviteContext.invitedBy.organizationId", Text),
        ro("inviteContext.invitedBy.organizationName", Text),
        rw("target[].id", Text),
        rw(
            "target[].type",
            FieldType::Enum(values_of!(ReferralTargetType)),
        ),
        ro("trackingInfo.microsoftMsxId", Text),
        ro("trackingInfo.microsoftUSFedOpportunityId", Text),
        ro("trackingInfo.microsoftUSFedLeadId", Text),
        ro("trackingInfo.migratedPSCDealId", Text),
        ro("trackingInfo.migratedPSCPartnerDealId", Text),
    ];
    v.extend(member("team"));
    v.extend(member("customerProfile.team"));
    v
}

/// A path the Referral model does not have; the message says what exists instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The path goes below a field that is a value (`name.first`).
    #[error("{field} is {kind}, it has no fields; the Referral model has no {path}")]
    BelowAValue {
        field: &'static str,
        kind: &'static str,
        path: String,
    },
    /// The path names an object or a list, not a value; `examples` are some
    /// of its fields.
    #[error("{path} is {}, e.g. {examples}", if *.list { "a list; name one element's field" } else { "an object; map one of its fields" })]
    NotAValue {
        path: String,
        list: bool,
        examples: String,
    },
    /// An unknown path, with the closest known ones.
    #[error("{path} is not a field of the Partner Center Referral; did you mean {suggestions}?")]
    Unknown { path: String, suggestions: String },
}

/// Looks a path up in the model. The error says what exists instead.
pub fn lookup(path: &FieldPath) -> Result<FieldSpec, LookupError> {
    let shape = path.shape();
    let all = fields();
    if let Some(spec) = all.iter().find(|f| f.shape == shape) {
        return Ok(*spec);
    }
    // A scalar used as an object, or an object/list used as a value?
    if let Some(spec) = all
        .iter()
        .find(|f| shape.starts_with(&format!("{}.", f.shape)))
    {
        return Err(LookupError::BelowAValue {
            field: spec.shape,
            kind: spec.ty.describe(),
            path: path.to_string(),
        });
    }
    let children: Vec<&str> = all
        .iter()
        .filter_map(|f| {
            let rest = f.shape.strip_prefix(shape.as_str())?;
            (rest.starts_with('.') || rest.starts_with("[]")).then_some(f.shape)
        })
        .collect();
    if !children.is_empty() {
        let listish = children.iter().all(|c| c[shape.len()..].starts_with("[]"));
        return Err(LookupError::NotAValue {
            path: path.to_string(),
            list: listish && !shape.ends_with("[]"),
            examples: children
                .iter()
                .take(3)
                .map(|c| display_shape(c))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    // Unknown: suggest the closest known shapes.
    let mut scored: Vec<(usize, &str)> = all
        .iter()
        .map(|f| (distance(&shape, f.shape), f.shape))
        .collect();
    scored.sort();
    let hint = scored
        .iter()
        .take(3)
        .map(|(_, s)| display_shape(s))
        .collect::<Vec<_>>()
        .join(", ");
    Err(LookupError::Unknown {
        path: path.to_string(),
        suggestions: hint,
    })
}

/// `team[].email` → `team[0].email` for messages.
fn display_shape(shape: &str) -> String {
    shape.replace("[]", "[0]")
}

/// Case-insensitive Levenshtein distance (small strings only).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(s: &str) -> Result<FieldSpec, String> {
        lookup(&FieldPath::parse(s).unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn documented_paths_exist_with_their_types() {
        assert_eq!(look("details.dealValue").unwrap().ty, FieldType::Number);
        assert_eq!(
            look("details.closingDateTime").unwrap().ty,
            FieldType::DateTime
        );
        assert_eq!(look("team[3].email").unwrap().ty, FieldType::Text);
        assert!(look("details.requirements.solutions[*].id").is_ok());
        assert!(look("id").unwrap().read_only);
        let code = look("inviteContext.assistanceRequestCode").unwrap().ty;
        assert!(
            code.enum_values()
                .unwrap()
                .contains(&"ProofOfConceptOrDemo")
        );
    }

    #[test]
    fn unknown_paths_get_a_suggestion() {
        let e = look("details.dealvalue").unwrap_err();
        assert!(e.contains("did you mean details.dealValue"), "{e}");
        let e = look("customerProfile.address").unwrap_err();
        assert!(e.contains("an object"), "{e}");
        let e = look("team.email").unwrap_err();
        assert!(e.contains("team[0].email"), "{e}");
        let e = look("name.first").unwrap_err();
        assert!(e.contains("has no fields"), "{e}");
    }

    #[test]
    fn lookup_errors_read_as_before() {
        let e = |s: &str| {
            lookup(&FieldPath::parse(s).unwrap())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e("customerProfile.address"),
            "customerProfile.address is an object; map one of its fields, e.g. customerProfile.address.addressLine1, customerProfile.address.addressLine2, customerProfile.address.city"
        );
        assert_eq!(
            e("team"),
            "team is a list; name one element's field, e.g. team[0].firstName, team[0].lastName, team[0].phoneNumber"
        );
        assert_eq!(
            e("name.first"),
            "name is text, it has no fields; the Referral model has no name.first"
        );
        assert!(matches!(
            lookup(&FieldPath::parse("name.first").unwrap()),
            Err(LookupError::BelowAValue { field: "name", .. })
        ));
        assert_eq!(
            e("details.dealvalue"),
            "details.dealvalue is not a field of the Partner Center Referral; did you mean details.dealValue, details.currency, details.notes?"
        );
    }
}
