//! Partner Center enumerations. Unknown wire values become `Other(String)` and
//! are written back exactly as received, so a new value never fails a record.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! api_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
            /// A value this build does not know; kept verbatim.
            Other(String),
        }

        impl $name {
            /// Every value this build knows, in documentation order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),*];

            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)*
                    Self::Other(s) => s,
                }
            }

            /// Parses a wire value; matching is case-insensitive because the
            /// documentation itself mixes `Substatus` and `substatus` casing.
            pub fn parse(s: &str) -> Self {
                $(if s.eq_ignore_ascii_case($wire) { return Self::$variant; })*
                Self::Other(s.to_owned())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct WireVisitor;
                impl<'de> serde::de::Visitor<'de> for WireVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a string")
                    }
                    // Read from the text in place; only an unknown value is copied.
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        Ok($name::parse(s))
                    }
                }
                deserializer.deserialize_str(WireVisitor)
            }
        }
    };
}

api_enum!(
    /// `status` of a referral.
    ReferralStatus { None => "None", New => "New", Active => "Active", Closed => "Closed" }
);

api_enum!(
    /// `substatus` of a referral.
    ReferralSubstatus {
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

api_enum!(
    /// `type`: `Independent` (one partner; private pipeline) or `Shared` (co-sell).
    ReferralType { Independent => "Independent", Shared => "Shared" }
);

api_enum!(
    /// `direction`: inbound (`Incoming`) or created by the partner (`Outgoing`).
    Direction { Incoming => "Incoming", Outgoing => "Outgoing" }
);

api_enum!(
    /// `qualification`.
    ReferralQualification {
        None => "None",
        Direct => "Direct",
        MarketingQualified => "MarketingQualified",
        SalesQualified => "SalesQualified",
    }
);

api_enum!(
    /// `inviteContext.assistanceRequestCode`: the "how can Microsoft help?" answer.
    AssistanceRequestCode {
        Unknown => "Unknown",
        GeneralOrOther => "GeneralOrOther",
        CustomerTechnicalArchitecture => "CustomerTechnicalArchitecture",
        ProofOfConceptOrDemo => "ProofOfConceptOrDemo",
        QuotesOrLicensing => "QuotesOrLicensing",
        PostSalesCustomerSuccess => "PostSalesCustomerSuccess",
        WorkloadSpecificValueProposition => "WorkloadSpecificValueProposition",
    }
);

api_enum!(
    /// `target[].type`.
    ReferralTargetType {
        None => "None",
        BusinessProfileLocation => "BusinessProfileLocation",
        SolutionProfile => "SolutionProfile",
    }
);

api_enum!(
    /// `details.requirements.solutions[].type`.
    SolutionTagType { None => "None", Category => "Category", Name => "Name" }
);

api_enum!(
    /// `customerProfile.ids[].profileType`.
    CustomerProfileType { Duns => "Duns", External => "External" }
);

impl AssistanceRequestCode {
    /// True when the code actually asks Microsoft for help (`Unknown` does not).
    pub fn requests_help(&self) -> bool {
        match self {
            Self::Unknown => false,
            Self::Other(s) => !s.trim().is_empty(),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_round_trip_and_unknown_ones_are_kept() {
        for s in ReferralSubstatus::KNOWN {
            let json = serde_json::to_string(s).unwrap();
            let back: ReferralSubstatus = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, s);
        }
        let engaged: ReferralSubstatus = serde_json::from_str("\"Engaged\"").unwrap();
        assert_eq!(engaged, ReferralSubstatus::Other("Engaged".into()));
        assert_eq!(serde_json::to_string(&engaged).unwrap(), "\"Engaged\"");
    }

    #[test]
    fn parsing_ignores_case() {
        assert_eq!(ReferralStatus::parse("closed"), ReferralStatus::Closed);
        assert_eq!(Direction::parse("INCOMING"), Direction::Incoming);
    }

    #[test]
    fn only_real_codes_request_help() {
        assert!(!AssistanceRequestCode::Unknown.requests_help());
        assert!(AssistanceRequestCode::ProofOfConceptOrDemo.requests_help());
        assert!(AssistanceRequestCode::Other("NewCode".into()).requests_help());
        assert!(!AssistanceRequestCode::Other(" ".into()).requests_help());
    }
}
