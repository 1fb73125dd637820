//! The Partner Center Referral resource (`/v1.0/engagements/referrals`).
//!
//! Every object keeps the fields this build does not know in `extra`, and they
//! are serialized back unchanged. Known fields that are absent stay absent.

use chrono::{DateTime, Utc};
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::enums::*;

/// Unknown fields of one JSON object, kept in their original order.
pub type Extra = Map<String, Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Referral {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engagement_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_reference_id: Option<String>,
    #[serde(with = "api_datetime", skip_serializing_if = "Option::is_none")]
    pub created_date_time: Option<DateTime<Utc>>,
    #[serde(with = "api_datetime", skip_serializing_if = "Option::is_none")]
    pub updated_date_time: Option<DateTime<Utc>>,
    #[serde(with = "api_datetime", skip_serializing_if = "Option::is_none")]
    pub expiration_date_time: Option<DateTime<Utc>>,
    #[serde(with = "api_datetime", skip_serializing_if = "Option::is_none")]
    pub accepted_date_time: Option<DateTime<Utc>>,
    #[serde(with = "api_datetime", skip_serializing_if = "Option::is_none")]
    pub closed_date_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ReferralStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub substatus: Option<ReferralSubstatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub referral_type: Option<ReferralType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qualification: Option<ReferralQualification>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_profile: Option<CustomerProfile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<ReferralDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<Vec<Member>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite_context: Option<InviteContext>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<ReferralTarget>>,
    /// Quoted ETag as the service sends it, e.g. `"\"2500ec5a-…\""`.
    #[serde(rename = "eTag", skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
    /// Observed as `Qualify|Develop|Propose|Close` and as `"100"`: kept as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sales_stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub favorite: Option<bool>,
    /// Read-only; never sent back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CustomerProfile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Number of employees as a documented range string (`10to50employees`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// The customer's contacts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<Vec<Member>>,
    /// An array on the wire; documentation examples also send `{}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl CustomerProfile {
    /// The customer's identifiers, when `ids` has the array shape.
    pub fn profile_ids(&self) -> Vec<CustomerProfileId> {
        match &self.ids {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| serde_json::from_value(v.clone()).ok())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The DUNS number, if the profile carries one.
    pub fn duns(&self) -> Option<String> {
        self.profile_ids()
            .into_iter()
            .find(|i| i.profile_type == Some(CustomerProfileType::Duns))
            .and_then(|i| i.id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CustomerProfileId {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_type: Option<CustomerProfileType>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line2: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// ISO 3166 two-letter code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A person: a partner seller in `team`, or a customer contact in `customerProfile.team`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_preference: Option<ContactPreference>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContactPreference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_notifications: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Consent {
    /// Spelled with the double "To" on the wire.
    #[serde(
        rename = "consentToToShareInfoWithOthers",
        skip_serializing_if = "Option::is_none"
    )]
    pub consent_to_share_info_with_others: Option<bool>,
    #[serde(rename = "consentToContact", skip_serializing_if = "Option::is_none")]
    pub consent_to_contact: Option<bool>,
    #[serde(
        rename = "consentToMicrosoftToContactSpecificPartners",
        skip_serializing_if = "Option::is_none"
    )]
    pub consent_to_microsoft_to_contact_specific_partners: Option<bool>,
    /// `false` makes the deal private pipeline.
    #[serde(
        rename = "consentToShareReferralWithMicrosoftSellers",
        skip_serializing_if = "Option::is_none"
    )]
    pub consent_to_share_referral_with_microsoft_sellers: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReferralDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(with = "lenient_number", skip_serializing_if = "Option::is_none")]
    pub deal_value: Option<f64>,
    /// ISO 4217 code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(with = "api_datetime", skip_serializing_if = "Option::is_none")]
    pub closing_date_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Requirements {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub industries: Option<Vec<Tag>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub products: Option<Vec<Tag>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<Tag>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solutions: Option<Vec<SolutionTag>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SolutionTag {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub tag_type: Option<SolutionTagType>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InviteContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invited_by: Option<InvitedBy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assistance_request_code: Option<AssistanceRequestCode>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InvitedBy {
    /// A GUID, or `msft` for Microsoft.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReferralTarget {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub target_type: Option<ReferralTargetType>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ReferralTarget {
    /// The target that routes a referral to Microsoft: `{type: BusinessProfileLocation, id: msft}`.
    pub fn microsoft() -> Self {
        ReferralTarget {
            id: Some(MICROSOFT_ORGANIZATION_ID.to_owned()),
            target_type: Some(ReferralTargetType::BusinessProfileLocation),
            extra: Extra::new(),
        }
    }

    pub fn is_microsoft(&self) -> bool {
        self.id
            .as_deref()
            .is_some_and(|id| id.eq_ignore_ascii_case(MICROSOFT_ORGANIZATION_ID))
    }
}

/// `Deserialize` for an object of known keys whose other keys go to `extra`:
/// one pass over the object, straight into the struct. (Serde's `flatten`
/// first copies the whole object into a tree of its own, for every object
/// of every referral.) A repeated key: the last one wins, as in a JSON tree.
/// `required` names a field without which the object is refused.
macro_rules! object_with_extra {
    ($ty:ident $(required $req:ident)? {
        $($field:ident: $key:literal $(via $via:ident)?),* $(,)?
    }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                #[allow(non_camel_case_types)]
                enum Key {
                    $($field,)*
                    Other(String),
                }

                impl Key {
                    fn of(key: &str) -> Option<Key> {
                        match key {
                            $($key => Some(Key::$field),)*
                            _ => None,
                        }
                    }
                }

                impl<'de> Deserialize<'de> for Key {
                    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                        struct KeyVisitor;
                        impl<'de> Visitor<'de> for KeyVisitor {
                            type Value = Key;
                            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                                f.write_str("a field name")
                            }
                            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                                Ok(Key::of(key).unwrap_or_else(|| Key::Other(key.to_owned())))
                            }
                            fn visit_string<E: de::Error>(self, key: String) -> Result<Key, E> {
                                Ok(Key::of(&key).unwrap_or(Key::Other(key)))
                            }
                        }
                        deserializer.deserialize_identifier(KeyVisitor)
                    }
                }

                struct ObjectVisitor;
                impl<'de> Visitor<'de> for ObjectVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("struct ", stringify!($ty)))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        let mut out = <$ty>::default();
                        $(let mut $req = false;)?
                        while let Some(key) = map.next_key::<Key>()? {
                            $(if matches!(key, Key::$req) {
                                $req = true;
                            })?
                            match key {
                                $(Key::$field => {
                                    out.$field = field_value!(map $(, $via)?);
                                })*
                                Key::Other(key) => {
                                    let value: Value = map.next_value()?;
                                    out.extra.insert(key, value);
                                }
                            }
                        }
                        $(if !$req {
                            return Err(de::Error::missing_field(stringify!($req)));
                        })?
                        Ok(out)
                    }
                }

                deserializer.deserialize_map(ObjectVisitor)
            }
        }
    };
}

/// The next value of a map, read as its field's type or through a wrapper.
macro_rules! field_value {
    ($map:ident) => {
        $map.next_value()?
    };
    ($map:ident, $via:ident) => {
        $map.next_value::<$via>()?.0
    };
}

/// A Partner Center date-time field ([`api_datetime`]).
struct ApiDateTime(Option<DateTime<Utc>>);

impl<'de> Deserialize<'de> for ApiDateTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        api_datetime::deserialize(d).map(ApiDateTime)
    }
}

/// A number field that may arrive as a numeric string ([`lenient_number`]).
struct LenientNumber(Option<f64>);

impl<'de> Deserialize<'de> for LenientNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient_number::deserialize(d).map(LenientNumber)
    }
}

object_with_extra!(Referral required id {
    id: "id",
    engagement_id: "engagementId",
    name: "name",
    organization_id: "organizationId",
    organization_name: "organizationName",
    external_reference_id: "externalReferenceId",
    created_date_time: "createdDateTime" via ApiDateTime,
    updated_date_time: "updatedDateTime" via ApiDateTime,
    expiration_date_time: "expirationDateTime" via ApiDateTime,
    accepted_date_time: "acceptedDateTime" via ApiDateTime,
    closed_date_time: "closedDateTime" via ApiDateTime,
    status: "status",
    substatus: "substatus",
    status_reason: "statusReason",
    referral_type: "type",
    qualification: "qualification",
    direction: "direction",
    customer_profile: "customerProfile",
    consent: "consent",
    details: "details",
    team: "team",
    invite_context: "inviteContext",
    target: "target",
    e_tag: "eTag",
    sales_stage: "salesStage",
    campaign_id: "campaignId",
    favorite: "favorite",
    links: "links",
});

object_with_extra!(CustomerProfile {
    name: "name",
    address: "address",
    size: "size",
    team: "team",
    ids: "ids",
});

object_with_extra!(CustomerProfileId {
    id: "id",
    profile_type: "profileType",
});

object_with_extra!(Address {
    address_line1: "addressLine1",
    address_line2: "addressLine2",
    city: "city",
    state: "state",
    postal_code: "postalCode",
    region: "region",
    country: "country",
});

object_with_extra!(Member {
    first_name: "firstName",
    last_name: "lastName",
    phone_number: "phoneNumber",
    email: "email",
    title: "title",
    contact_preference: "contactPreference",
});

object_with_extra!(ContactPreference {
    locale: "locale",
    disable_notifications: "disableNotifications",
});

object_with_extra!(Consent {
    consent_to_share_info_with_others: "consentToToShareInfoWithOthers",
    consent_to_contact: "consentToContact",
    consent_to_microsoft_to_contact_specific_partners: "consentToMicrosoftToContactSpecificPartners",
    consent_to_share_referral_with_microsoft_sellers: "consentToShareReferralWithMicrosoftSellers",
});

object_with_extra!(ReferralDetails {
    notes: "notes",
    deal_value: "dealValue" via LenientNumber,
    currency: "currency",
    closing_date_time: "closingDateTime" via ApiDateTime,
    requirements: "requirements",
});

object_with_extra!(Requirements {
    industries: "industries",
    products: "products",
    services: "services",
    solutions: "solutions",
});

object_with_extra!(Tag { id: "id" });

object_with_extra!(SolutionTag {
    id: "id",
    name: "name",
    tag_type: "type",
});

object_with_extra!(InviteContext {
    notes: "notes",
    invited_by: "invitedBy",
    assistance_request_code: "assistanceRequestCode",
});

object_with_extra!(InvitedBy {
    organization_id: "organizationId",
    organization_name: "organizationName",
});

object_with_extra!(ReferralTarget {
    id: "id",
    target_type: "type",
});

/// The organization id Partner Center uses for Microsoft.
pub const MICROSOFT_ORGANIZATION_ID: &str = "msft";

/// A record the service sent that could not be read as a Referral.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("referral {} could not be read: {reason}", id.as_deref().unwrap_or("(no id)"))]
pub struct ReferralParseError {
    /// The `id` field, when it could be read.
    pub id: Option<String>,
    /// The record exactly as received, for quarantine.
    pub raw: String,
    /// What was wrong, with the JSON path of the offending field.
    pub reason: String,
}

impl Referral {
    /// Reads one referral from the JSON the service sent. Never panics; a
    /// failure carries the id (when readable) and the raw record.
    pub fn from_json(value: Value) -> Result<Referral, ReferralParseError> {
        let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        if !value.is_object() {
            return Err(ReferralParseError {
                id,
                raw: value.to_string(),
                reason: "expected a JSON object".into(),
            });
        }
        // The raw text is only made for a record that cannot be read.
        serde_path_to_error::deserialize::<_, Referral>(&value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            ReferralParseError {
                id,
                raw: value.to_string(),
                reason: if path == "." {
                    inner
                } else {
                    format!("{path}: {inner}")
                },
            }
        })
    }

    /// Reads one referral from raw bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Referral, ReferralParseError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Referral::from_json_text(text),
            Err(e) => Err(ReferralParseError {
                id: None,
                raw: String::from_utf8_lossy(bytes).into_owned(),
                reason: format!("not JSON: {e}"),
            }),
        }
    }

    /// Reads one referral from its JSON text, typed straight from the text
    /// (no JSON tree first). A text the typed read refuses is read as
    /// [`Referral::from_json`] reads a tree, so both accept and refuse the
    /// same records, for the same reasons (a duplicated key, which the typed
    /// read refuses, is taken as the tree takes it: the last one wins).
    pub fn from_json_text(text: &str) -> Result<Referral, ReferralParseError> {
        if let Ok(r) = serde_json::from_str::<Referral>(text) {
            return Ok(r);
        }
        match serde_json::from_str::<Value>(text) {
            Ok(v) => Referral::from_json(v),
            Err(e) => Err(ReferralParseError {
                id: None,
                raw: text.to_owned(),
                reason: format!("not JSON: {e}"),
            }),
        }
    }

    /// The referral as JSON, unknown fields included.
    pub fn to_json(&self) -> Value {
        // Serializing plain data structs with string keys cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn is_inbound(&self) -> bool {
        self.direction == Some(Direction::Incoming)
    }

    pub fn is_outbound(&self) -> bool {
        self.direction == Some(Direction::Outgoing)
    }

    pub fn is_favorite(&self) -> bool {
        self.favorite.unwrap_or(false)
    }

    /// The assistance request code, when the partner asked Microsoft for help.
    pub fn assistance_requested(&self) -> Option<&AssistanceRequestCode> {
        self.invite_context
            .as_ref()
            .and_then(|c| c.assistance_request_code.as_ref())
            .filter(|c| c.requests_help())
    }
}

/// Partner Center date-times: RFC 3339 with up to 7 fractional digits; tolerant
/// of a missing offset (taken as UTC) and of a bare date.
pub mod api_datetime {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(s: &str) -> Option<DateTime<Utc>> {
        let s = s.trim();
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Some(dt.with_timezone(&Utc));
        }
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
            return Some(dt.and_utc());
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return d.and_hms_opt(0, 0, 0).map(|dt| dt.and_utc());
        }
        None
    }

    pub fn format(dt: &DateTime<Utc>) -> String {
        dt.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    pub fn serialize<S: Serializer>(v: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(dt) => s.serialize_str(&format(dt)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => parse(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("not a date-time: {s:?}"))),
        }
    }
}

/// A number that may arrive as a JSON number or a numeric string.
mod lenient_number {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => s.serialize_i64(*n as i64),
            Some(n) => s.serialize_f64(*n),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("not a number: {s:?}"))),
            Some(other) => Err(serde::de::Error::custom(format!("not a number: {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_text_and_the_tree_read_the_same_referral_or_refuse_it_alike() {
        let texts = [
            r#"{"id":"r1","status":"Active","substatus":"Engaged","brandNew":{"x":1},"customerProfile":{"name":"Contoso","address":{"country":"DE","plusCode":"9F4M"}},"details":{"dealValue":100000,"requirements":{"solutions":[{"id":"S","type":"Name","price":null}]}},"team":[{"firstName":"A","title":"CTO"}]}"#,
            r#"{"id":"r2","createdDateTime":"2022-02-25T17:54:36.1961744Z","updatedDateTime":"2022-02-25T18:08:51","expirationDateTime":null,"details":{"closingDateTime":"2018-11-14","dealValue":"1500.50"}}"#,
            r#"{"id":"r3","name":"Caf\u00e9 \"Nord\"","n\u0061me2":"escaped key","eTag":"\"abc\""}"#,
            r#"{"id":"r4","status":"New","status":"Closed","substatus":"Won"}"#,
            r#"{"id":"r5","createdDateTime":"yesterday"}"#,
            r#"{"id":"r6","status":42}"#,
            r#"["not","an","object"]"#,
            r#"{"name":"no id"}"#,
            r#"{"id":"r7","favorite":true,"type":"Independent","direction":"Incoming","target":[{"type":"BusinessProfileLocation","id":"x"}]}"#,
        ];
        for text in texts {
            let tree: Value = serde_json::from_str(text).unwrap();
            let (from_text, from_tree) =
                (Referral::from_json_text(text), Referral::from_json(tree));
            match (&from_text, &from_tree) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
                (Err(a), Err(b)) => {
                    assert_eq!((&a.id, &a.reason), (&b.id, &b.reason), "{text}");
                }
                _ => panic!("{text}: text {from_text:?}, tree {from_tree:?}"),
            }
        }
        // Bytes that are not JSON are refused with the text kept.
        let bad = Referral::from_slice(b"{\"id\": ").unwrap_err();
        assert!(bad.reason.starts_with("not JSON"), "{}", bad.reason);
        assert_eq!(bad.raw, "{\"id\": ");
    }

    #[test]
    fn every_known_field_is_read_into_its_own_field_and_written_back_alike() {
        // Each key this build knows, at every level: none may land in `extra`
        // (a key spelled differently for reading and writing would).
        let member = json!({"firstName": "A", "lastName": "B", "phoneNumber": "1", "email": "a@b.c",
            "title": "CTO", "contactPreference": {"locale": "en-us", "disableNotifications": false}});
        let raw = json!({
            "id": "r1", "engagementId": "e1", "name": "Deal", "organizationId": "o1",
            "organizationName": "Org", "externalReferenceId": "x1",
            "createdDateTime": "2022-02-25T17:54:36.196174400Z", "updatedDateTime": "2022-02-26T00:00:00Z",
            "expirationDateTime": "2022-03-01T00:00:00Z", "acceptedDateTime": "2022-02-27T00:00:00Z",
            "closedDateTime": "2022-02-28T00:00:00Z", "status": "Active", "substatus": "Accepted",
            "statusReason": "why", "type": "Shared", "qualification": "SalesQualified",
            "direction": "Incoming",
            "customerProfile": {"name": "Contoso", "size": "10to50employees", "team": [member.clone()],
                "ids": [{"id": "123", "profileType": "Duns"}],
                "address": {"addressLine1": "1", "addressLine2": "2", "city": "C", "state": "S",
                    "postalCode": "P", "region": "R", "country": "DE"}},
            "consent": {"consentToToShareInfoWithOthers": true, "consentToContact": true,
                "consentToMicrosoftToContactSpecificPartners": false,
                "consentToShareReferralWithMicrosoftSellers": true},
            "details": {"notes": "n", "dealValue": 1500.5, "currency": "EUR",
                "closingDateTime": "2022-06-29T23:00:00Z",
                "requirements": {"industries": [{"id": "i"}], "products": [{"id": "p"}],
                    "services": [{"id": "s"}], "solutions": [{"id": "S", "name": "Sol", "type": "Name"}]}},
            "team": [member],
            "inviteContext": {"notes": "n", "assistanceRequestCode": "GeneralOrOther",
                "invitedBy": {"organizationId": "o2", "organizationName": "Org2"}},
            "target": [{"id": "msft", "type": "BusinessProfileLocation"}],
            "eTag": "\"abc\"", "salesStage": "Qualify", "campaignId": "c1", "favorite": true,
            "links": {"self": {"uri": "u", "method": "GET"}}
        });
        let r = Referral::from_json_text(&raw.to_string()).unwrap();
        let cp = r.customer_profile.as_ref().unwrap();
        let details = r.details.as_ref().unwrap();
        let req = details.requirements.as_ref().unwrap();
        let invite = r.invite_context.as_ref().unwrap();
        let ids = cp.profile_ids();
        let members = r.team.iter().flatten().chain(cp.team.iter().flatten());
        let extras = [&r.extra, &cp.extra, &cp.address.as_ref().unwrap().extra]
            .into_iter()
            .chain([
                &r.consent.as_ref().unwrap().extra,
                &details.extra,
                &req.extra,
            ])
            .chain([&invite.extra, &invite.invited_by.as_ref().unwrap().extra])
            .chain(members.flat_map(|m| [&m.extra, &m.contact_preference.as_ref().unwrap().extra]))
            .chain(
                req.industries
                    .iter()
                    .chain(&req.products)
                    .chain(&req.services)
                    .flatten()
                    .map(|t| &t.extra),
            )
            .chain(req.solutions.iter().flatten().map(|t| &t.extra))
            .chain(r.target.iter().flatten().map(|t| &t.extra))
            .chain(ids.iter().map(|i| &i.extra));
        for extra in extras {
            assert!(extra.is_empty(), "read as unknown: {extra:?}");
        }
        assert_eq!(cp.duns().as_deref(), Some("123"));
        assert_eq!(r.to_json(), raw);
    }

    #[test]
    fn a_referral_without_an_id_is_refused_and_a_repeated_key_takes_the_last_value() {
        let err = Referral::from_json_text(r#"{"name":"no id","status":"New"}"#).unwrap_err();
        assert_eq!(err.reason, "missing field `id`");
        let r = Referral::from_json_text(
            r#"{"id":"r","details":{"dealValue":1,"dealValue":"2"},"x":1,"x":2}"#,
        )
        .unwrap();
        assert_eq!(r.details.unwrap().deal_value, Some(2.0));
        assert_eq!(r.extra.get("x"), Some(&json!(2)));
    }

    #[test]
    fn unknown_fields_survive_a_round_trip_at_every_level() {
        let raw = json!({
            "id": "r1", "status": "Active", "substatus": "Engaged", "brandNew": {"x": 1},
            "customerProfile": {"name": "Contoso", "isMatchingComplete": false,
                "address": {"country": "DE", "plusCode": "9F4M"}},
            "details": {"dealValue": 100000, "incentiveLevel": null,
                "requirements": {"salesPlays": [], "solutions": [{"id": "S", "type": "Name", "price": null}]}},
            "team": [{"firstName": "A", "title": "CTO"}],
            "trackingInfo": {"microsoftMsxId": null}
        });
        let r = Referral::from_json(raw.clone()).unwrap();
        assert_eq!(
            r.substatus,
            Some(ReferralSubstatus::Other("Engaged".into()))
        );
        assert_eq!(r.to_json(), raw);
    }

    #[test]
    fn seven_digit_fractions_and_missing_offsets_parse() {
        let r = Referral::from_json(json!({
            "id": "r", "createdDateTime": "2022-02-25T17:54:36.1961744Z",
            "updatedDateTime": "2022-02-25T18:08:51", "expirationDateTime": null,
            "details": {"closingDateTime": "2018-11-14", "dealValue": "1500.50"}
        }))
        .unwrap();
        assert_eq!(
            r.created_date_time.unwrap().timestamp_nanos_opt(),
            Some(1_645_811_676_196_174_400)
        );
        assert_eq!(
            r.updated_date_time.unwrap().to_rfc3339(),
            "2022-02-25T18:08:51+00:00"
        );
        assert_eq!(r.expiration_date_time, None);
        let d = r.details.unwrap();
        assert_eq!(d.deal_value, Some(1500.5));
        assert_eq!(
            d.closing_date_time.unwrap().to_rfc3339(),
            "2018-11-14T00:00:00+00:00"
        );
    }

    #[test]
    fn an_unreadable_record_reports_its_id_path_and_raw_body() {
        let raw = json!({"id": "bad-1", "details": {"dealValue": "lots"}});
        let err = Referral::from_json(raw.clone()).unwrap_err();
        assert_eq!(err.id.as_deref(), Some("bad-1"));
        assert!(
            err.reason.starts_with("details.dealValue"),
            "{}",
            err.reason
        );
        assert_eq!(serde_json::from_str::<Value>(&err.raw).unwrap(), raw);

        let err = Referral::from_json(json!({"name": "no id"})).unwrap_err();
        assert_eq!(err.id, None);
        assert!(err.reason.contains("id"), "{}", err.reason);

        let err = Referral::from_slice(b"{\"id\": \"x\", ").unwrap_err();
        assert!(err.reason.starts_with("not JSON"));
        assert_eq!(err.raw, "{\"id\": \"x\", ");

        let err = Referral::from_json(json!(["not", "an", "object"])).unwrap_err();
        assert_eq!(err.reason, "expected a JSON object");
    }

    #[test]
    fn duns_is_read_from_the_ids_array() {
        let r = Referral::from_json(json!({"id": "r", "customerProfile": {"ids": [
            {"profileType": "External", "id": "1-15"}, {"profileType": "Duns", "id": "315000554"}]}}))
        .unwrap();
        assert_eq!(
            r.customer_profile.unwrap().duns().as_deref(),
            Some("315000554")
        );
        let r = Referral::from_json(json!({"id": "r", "customerProfile": {"ids": {}}})).unwrap();
        assert_eq!(r.customer_profile.unwrap().duns(), None);
    }
}
