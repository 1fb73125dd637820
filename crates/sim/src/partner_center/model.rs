//! The Referral resource as the vendor reference documents it
//! (shared/reference/partner-center-api.md): its members (§2.1), what a
//! create needs (§2, "Required"), the status/substatus enumerations and the
//! transition table (§3.1). Written from the reference alone, so the
//! simulator can disagree with the engine's own reading of it.

use std::fmt;

use serde_json::Value;

use crate::datetime;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub(crate) enum $name {
            $($variant,)*
            /// A value the reference does not list (§3.1: "Don't hard-fail on
            /// unknown enum strings"), kept as sent.
            Other(String),
        }

        impl $name {
            /// Reads a wire value. Case is ignored: the reference's own
            /// examples write `Substatus` as well as `substatus` (§2).
            pub(crate) fn parse(s: &str) -> Self {
                $(if s.eq_ignore_ascii_case($wire) { return Self::$variant; })*
                Self::Other(s.to_owned())
            }

            pub(crate) fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)*
                    Self::Other(s) => s,
                }
            }

            pub(crate) fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// `status` (§3.1 ReferralStatus).
    Status { None => "None", New => "New", Active => "Active", Closed => "Closed" }
);

wire_enum!(
    /// `substatus` (§3.1 ReferralSubstatus).
    Substatus {
        None => "None",
        Pending => "Pending",
        Received => "Received",
        Accepted => "Accepted",
        Won => "Won",
        Lost => "Lost",
        Declined => "Declined",
        Expired => "Expired",
    }
);

/// §3.1, transition table, column "Allowed substatus": the substatuses of
/// each status.
pub(crate) fn substatus_belongs(status: &Status, substatus: &Substatus) -> bool {
    use Substatus as Sub;
    match status {
        Status::New => matches!(substatus, Sub::Pending | Sub::Received),
        Status::Active => matches!(substatus, Sub::Accepted),
        Status::Closed => matches!(
            substatus,
            Sub::Won | Sub::Lost | Sub::Declined | Sub::Expired
        ),
        Status::None | Status::Other(_) => false,
    }
}

/// §3.1, the transition table as the reference gives it:
///
/// | Status | Allowed status transition | Allowed substatus |
/// |---|---|---|
/// | New | New, Active, Closed | Pending, Received |
/// | Active | Active, Closed | Accepted |
/// | Closed | Closed | Won, Lost, Declined, Expired |
///
/// A move is allowed when the target status is in the row of the current
/// status and the target substatus belongs to the target status.
pub(crate) fn table_allows(from: &Status, to: &Status, to_substatus: &Substatus) -> bool {
    let status_ok = match from {
        Status::New => matches!(to, Status::New | Status::Active | Status::Closed),
        Status::Active => matches!(to, Status::Active | Status::Closed),
        Status::Closed => matches!(to, Status::Closed),
        Status::None | Status::Other(_) => false,
    };
    status_ok && substatus_belongs(to, to_substatus)
}

/// "Expired, decline, won, and lost are terminal states where no further
/// updates are possible to the deal" (§3.1): a Closed referral takes no
/// change at all, although the table lists Closed → Closed.
pub(crate) fn is_terminal(status: &Status) -> bool {
    *status == Status::Closed
}

/// Top-level Referral members (§2.1); anything else in a patch path, a
/// filter or a create/PUT body is refused.
pub(crate) const KNOWN_FIELDS: &[&str] = &[
    "id",
    "engagementId",
    "name",
    "organizationId",
    "organizationName",
    "externalReferenceId",
    "createdDateTime",
    "updatedDateTime",
    "expirationDateTime",
    "acceptedDateTime",
    "closedDateTime",
    "status",
    "substatus",
    "statusReason",
    "type",
    "qualification",
    "referralSource",
    "callToAction",
    "customerMarketplaceIntent",
    "customerProfile",
    "consent",
    "details",
    "team",
    "inviteContext",
    "target",
    "eTag",
    "links",
    "direction",
    "salesStage",
    "campaignId",
    "favorite",
    "lastModifiedVia",
    "lastRunId",
    "referralProgram",
    "mpnId",
    "trackingInfo",
    "registrations",
    "registrationStatus",
    "quality",
    "isSpam",
    "tags",
    "dealSensitivity",
    "createdVia",
];

/// Members a client cannot write: ids, owner, timestamps the service keeps,
/// the concurrency token and `links` (§2.1, "read-only; remove before PUT").
pub(crate) const READ_ONLY: &[&str] = &[
    "id",
    "engagementId",
    "organizationId",
    "organizationName",
    "createdDateTime",
    "updatedDateTime",
    "expirationDateTime",
    "acceptedDateTime",
    "closedDateTime",
    "eTag",
    "links",
    "direction",
    "mpnId",
];

/// Members set when a referral is created and read-only after: no documented
/// update changes `target` (§3.2); Microsoft joins an engagement only
/// through its own connected referral.
pub(crate) const FIXED_AT_CREATE: &[&str] = &["target"];

/// Top-level UTC date-time members (§2.1).
pub(crate) const DATE_FIELDS: &[&str] = &[
    "createdDateTime",
    "updatedDateTime",
    "expirationDateTime",
    "acceptedDateTime",
    "closedDateTime",
];

/// What a create must carry (§2.1: `type`, `customerProfile`, `consent` and
/// `details` are Required; the deal needs a name, the customer a name and a
/// country, §2.2), by dotted path; empty when nothing is missing.
pub(crate) fn missing_on_create(v: &Value) -> Vec<String> {
    let blank = |p: &str| {
        v.pointer(p)
            .is_none_or(|x| x.is_null() || x.as_str().is_some_and(|s| s.trim().is_empty()))
    };
    [
        ("/name", "name"),
        ("/type", "type"),
        ("/customerProfile", "customerProfile"),
        ("/customerProfile/name", "customerProfile.name"),
        (
            "/customerProfile/address/country",
            "customerProfile.address.country",
        ),
        ("/consent", "consent"),
        ("/details", "details"),
    ]
    .into_iter()
    .filter(|(p, _)| blank(p))
    .map(|(_, name)| name.to_owned())
    .collect()
}

/// The documented type of a member. Every member may be `null` or absent;
/// members the reference does not type are not checked.
enum Shape {
    Text,
    Bool,
    /// `dealValue`: "decimal; the swagger says number/double" (§2.4); a
    /// numeric string is read as well.
    Number,
    /// A UTC date-time (§2.1).
    Time,
    Object(&'static [(&'static str, Shape)]),
    /// An array of objects of this shape.
    ArrayOf(&'static [(&'static str, Shape)]),
}

/// §2.2 Member and ContactPreference.
const MEMBER: &[(&str, Shape)] = &[
    ("firstName", Shape::Text),
    ("lastName", Shape::Text),
    ("phoneNumber", Shape::Text),
    ("email", Shape::Text),
    ("title", Shape::Text),
    (
        "contactPreference",
        Shape::Object(&[
            ("locale", Shape::Text),
            ("disableNotifications", Shape::Bool),
        ]),
    ),
];

/// §2.2 Address.
const ADDRESS: &[(&str, Shape)] = &[
    ("addressLine1", Shape::Text),
    ("addressLine2", Shape::Text),
    ("city", Shape::Text),
    ("state", Shape::Text),
    ("postalCode", Shape::Text),
    ("region", Shape::Text),
    ("country", Shape::Text),
];

/// §2.4 Tag.
const TAG: &[(&str, Shape)] = &[("id", Shape::Text)];

/// The Referral resource's typed members (§2.1–§2.6).
const REFERRAL: &[(&str, Shape)] = &[
    ("id", Shape::Text),
    ("engagementId", Shape::Text),
    ("name", Shape::Text),
    ("organizationId", Shape::Text),
    ("organizationName", Shape::Text),
    ("externalReferenceId", Shape::Text),
    ("createdDateTime", Shape::Time),
    ("updatedDateTime", Shape::Time),
    ("expirationDateTime", Shape::Time),
    ("acceptedDateTime", Shape::Time),
    ("closedDateTime", Shape::Time),
    ("status", Shape::Text),
    ("substatus", Shape::Text),
    ("statusReason", Shape::Text),
    ("type", Shape::Text),
    ("qualification", Shape::Text),
    ("direction", Shape::Text),
    (
        "customerProfile",
        Shape::Object(&[
            ("name", Shape::Text),
            ("address", Shape::Object(ADDRESS)),
            ("size", Shape::Text),
            ("team", Shape::ArrayOf(MEMBER)),
        ]),
    ),
    (
        "consent",
        Shape::Object(&[
            ("consentToToShareInfoWithOthers", Shape::Bool),
            ("consentToContact", Shape::Bool),
            ("consentToMicrosoftToContactSpecificPartners", Shape::Bool),
            ("consentToShareReferralWithMicrosoftSellers", Shape::Bool),
        ]),
    ),
    (
        "details",
        Shape::Object(&[
            ("notes", Shape::Text),
            ("dealValue", Shape::Number),
            ("currency", Shape::Text),
            ("closingDateTime", Shape::Time),
            (
                "requirements",
                Shape::Object(&[
                    ("industries", Shape::ArrayOf(TAG)),
                    ("products", Shape::ArrayOf(TAG)),
                    ("services", Shape::ArrayOf(TAG)),
                    (
                        "solutions",
                        Shape::ArrayOf(&[
                            ("id", Shape::Text),
                            ("name", Shape::Text),
                            ("type", Shape::Text),
                        ]),
                    ),
                ]),
            ),
        ]),
    ),
    ("team", Shape::ArrayOf(MEMBER)),
    (
        "inviteContext",
        Shape::Object(&[
            ("notes", Shape::Text),
            (
                "invitedBy",
                Shape::Object(&[
                    ("organizationId", Shape::Text),
                    ("organizationName", Shape::Text),
                ]),
            ),
            ("assistanceRequestCode", Shape::Text),
        ]),
    ),
    (
        "target",
        Shape::ArrayOf(&[("id", Shape::Text), ("type", Shape::Text)]),
    ),
    ("eTag", Shape::Text),
    ("salesStage", Shape::Text),
    ("campaignId", Shape::Text),
    ("favorite", Shape::Bool),
];

/// Checks a Referral body against the documented member types: the error
/// names the first offending member by dotted path. Members the reference
/// does not list are accepted here; whether the service accepts them at
/// the top level is decided by [`KNOWN_FIELDS`] where it matters.
pub(crate) fn check_shape(v: &Value) -> Result<(), String> {
    match v {
        Value::Object(_) => check_object(v, REFERRAL, ""),
        _ => Err("expected a Referral object".into()),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
        other => other.to_string(),
    }
}

fn check_object(v: &Value, members: &[(&str, Shape)], at: &str) -> Result<(), String> {
    for (name, shape) in members {
        let path = if at.is_empty() {
            (*name).to_owned()
        } else {
            format!("{at}.{name}")
        };
        match v.get(*name) {
            None | Some(Value::Null) => {}
            Some(x) => check(x, shape, &path)?,
        }
    }
    Ok(())
}

fn check(v: &Value, shape: &Shape, path: &str) -> Result<(), String> {
    let wrong = |want: &str| Err(format!("{path}: expected {want}, found {}", describe(v)));
    match shape {
        Shape::Text if v.is_string() => Ok(()),
        Shape::Text => wrong("a string"),
        Shape::Bool if v.is_boolean() => Ok(()),
        Shape::Bool => wrong("true or false"),
        Shape::Number => match v {
            Value::Number(_) => Ok(()),
            Value::String(s) if s.trim().is_empty() || s.trim().parse::<f64>().is_ok() => Ok(()),
            _ => wrong("a number"),
        },
        Shape::Time => match v {
            Value::String(s) if s.trim().is_empty() || datetime::parse(s).is_some() => Ok(()),
            _ => wrong("a UTC date-time"),
        },
        Shape::Object(members) if v.is_object() => check_object(v, members, path),
        Shape::Object(_) => wrong("an object"),
        Shape::ArrayOf(members) => {
            let Value::Array(items) = v else {
                return wrong("an array");
            };
            for (i, item) in items.iter().enumerate() {
                let at = format!("{path}[{i}]");
                if !item.is_object() {
                    return Err(format!(
                        "{at}: expected an object, found {}",
                        describe(item)
                    ));
                }
                check_object(item, members, &at)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use Status as S;
    use Substatus as Sub;

    #[test]
    fn every_transition_the_table_lists_is_allowed() {
        let rows: [(S, &[S]); 3] = [
            (S::New, &[S::New, S::Active, S::Closed]),
            (S::Active, &[S::Active, S::Closed]),
            (S::Closed, &[S::Closed]),
        ];
        let subs_of = |s: &S| -> Vec<Sub> {
            match s {
                S::New => vec![Sub::Pending, Sub::Received],
                S::Active => vec![Sub::Accepted],
                _ => vec![Sub::Won, Sub::Lost, Sub::Declined, Sub::Expired],
            }
        };
        let mut allowed = 0;
        for (from, tos) in rows {
            for to in tos {
                for sub in subs_of(to) {
                    assert!(table_allows(&from, to, &sub), "{from} -> {to}/{sub}");
                    allowed += 1;
                }
            }
        }
        // New: 2 + 1 + 4, Active: 1 + 4, Closed: 4.
        assert_eq!(allowed, 16);
    }

    #[test]
    fn transitions_outside_the_table_are_refused() {
        let forbidden = [
            // Backwards.
            (S::Active, S::New, Sub::Pending),
            (S::Active, S::New, Sub::Received),
            (S::Closed, S::Active, Sub::Accepted),
            (S::Closed, S::New, Sub::Pending),
            // A substatus of another status.
            (S::New, S::Active, Sub::Pending),
            (S::New, S::Active, Sub::Won),
            (S::New, S::New, Sub::Accepted),
            (S::Active, S::Closed, Sub::Accepted),
            (S::Active, S::Active, Sub::Won),
            (S::New, S::Closed, Sub::Received),
            // Values outside the table.
            (S::New, S::None, Sub::None),
            (S::New, S::New, Sub::None),
            (S::None, S::Active, Sub::Accepted),
            (S::Other("Engaged".into()), S::Closed, Sub::Won),
            (S::Active, S::Active, Sub::Other("Engaged".into())),
        ];
        for (from, to, sub) in forbidden {
            assert!(!table_allows(&from, &to, &sub), "{from} -> {to}/{sub}");
        }
    }

    #[test]
    fn only_closed_is_terminal() {
        assert!(is_terminal(&S::Closed));
        for s in [S::New, S::Active, S::None, S::Other("X".into())] {
            assert!(!is_terminal(&s), "{s}");
        }
    }

    #[test]
    fn enums_ignore_case_and_keep_unknown_values() {
        assert_eq!(S::parse("closed"), S::Closed);
        assert_eq!(Sub::parse("DECLINED"), Sub::Declined);
        let engaged = Sub::parse("Engaged");
        assert_eq!(engaged, Sub::Other("Engaged".into()));
        assert_eq!(engaged.as_str(), "Engaged");
        assert!(!engaged.is_known());
        assert!(Sub::Won.is_known());
    }

    #[test]
    fn the_documented_put_example_has_the_documented_shape() {
        let v = json!({
            "id": "49d90c72-3326-4f61-aacc-2cb57970448c",
            "createdDateTime": "2018-11-06T18:40:42.6178337Z", "expirationDateTime": "2018-11-14T00:00:00Z",
            "status": "Closed", "substatus": "Won", "type": "Independent",
            "target": [{"type": "BusinessProfileLocation", "id": "01e2abcd"}],
            "customerProfile": {"name": "Contoso", "address": {"addressLine1": "One Microsoft Way", "country": "US"},
                "size": "10to50employees", "ids": [],
                "team": [{"contactPreference": {"locale": "en-us", "disableNotifications": false},
                          "firstName": "Sue", "email": "sue.smith@contoso.com"}]},
            "consent": {"consentToToShareInfoWithOthers": true, "consentToContact": true},
            "details": {"notes": "n", "dealValue": 50000, "currency": "USD", "closingDateTime": "2018-11-14T00:00:00Z",
                "requirements": {"industries": [{"id": "Manufacturing"}],
                    "solutions": [{"name": "Field Service", "type": "Category", "id": "D365FS"}]}},
            "inviteContext": {"notes": "Hi", "invitedBy": {"organizationId": "msft"}},
            "eTag": "\"2500ec5a-0000-0000-0000-5bf4967d0000\"",
            "trackingInfo": {"microsoftMsxId": null}, "brandNew": {"x": 1}
        });
        assert_eq!(check_shape(&v), Ok(()));
    }

    #[test]
    fn wrong_member_types_are_named_by_path() {
        let cases = [
            (
                json!({"details": {"dealValue": "lots"}}),
                "details.dealValue",
            ),
            (
                json!({"details": {"closingDateTime": "soon"}}),
                "details.closingDateTime",
            ),
            (json!({"name": 5}), "name"),
            (json!({"favorite": "yes"}), "favorite"),
            (json!({"team": {"firstName": "A"}}), "team"),
            (json!({"team": [null]}), "team[0]"),
            (
                json!({"customerProfile": {"team": [{"email": 1}]}}),
                "customerProfile.team[0].email",
            ),
            (
                json!({"customerProfile": {"address": "Redmond"}}),
                "customerProfile.address",
            ),
            (
                json!({"consent": {"consentToContact": "true"}}),
                "consent.consentToContact",
            ),
            (
                json!({"createdDateTime": "2018-13-01T00:00:00Z"}),
                "createdDateTime",
            ),
            (json!({"target": [{"id": 7}]}), "target[0].id"),
        ];
        for (v, path) in cases {
            let e = check_shape(&v).unwrap_err();
            assert!(e.starts_with(&format!("{path}: ")), "{path}: {e}");
        }
        assert!(check_shape(&json!(["not", "an", "object"])).is_err());
        // Nulls, numeric strings and blank dates are what the reference shows on the wire.
        assert_eq!(
            check_shape(
                &json!({"expirationDateTime": null, "details": {"dealValue": "1500.50",
                "closingDateTime": ""}, "customerProfile": {"ids": {}}})
            ),
            Ok(())
        );
    }

    #[test]
    fn a_create_names_every_missing_required_member() {
        assert_eq!(
            missing_on_create(&json!({"name": " ", "customerProfile": {"address": {}}})),
            [
                "name",
                "type",
                "customerProfile.name",
                "customerProfile.address.country",
                "consent",
                "details"
            ]
        );
    }
}
