//! Request bodies for creating deals: the partner's own referral (private or
//! Shared) and the Microsoft-targeted referral of a co-sell engagement.

use serde_json::{Map, Value, json};

use crate::domain::referral::ReferralTarget;
use crate::domain::{DealKind, Referral, ReferralType};

/// Fields the service sets; never sent on create.
const SERVICE_OWNED: &[&str] = &[
    "id",
    "eTag",
    "links",
    "engagementId",
    "createdDateTime",
    "updatedDateTime",
    "acceptedDateTime",
    "closedDateTime",
    "expirationDateTime",
    "status",
    "substatus",
    "statusReason",
    "direction",
    "organizationId",
    "organizationName",
    "lastModifiedVia",
    "lastRunId",
    "mpnId",
    "quality",
    "isSpam",
    "createdVia",
    "trackingInfo",
    "registrations",
    "registrationStatus",
];

/// The kind of a new deal: asking Microsoft for help makes it co-sell.
pub(crate) fn kind_of_draft(draft: &Referral) -> DealKind {
    if draft.assistance_requested().is_some() {
        DealKind::CoSell
    } else {
        DealKind::Private
    }
}

fn object<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let map = v.as_object_mut()?;
    let entry = map.entry(key.to_owned()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut()
}

/// The partner's own referral: `Independent` and not shared with Microsoft
/// sellers (private), or `Shared` (co-sell). Microsoft targets are left to
/// the second referral.
pub(crate) fn own_referral_body(draft: &Referral, kind: DealKind) -> Value {
    let mut body = draft.to_json();
    if let Some(map) = body.as_object_mut() {
        for key in SERVICE_OWNED {
            map.remove(*key);
        }
        let referral_type = match kind {
            DealKind::Private => ReferralType::Independent,
            DealKind::CoSell => ReferralType::Shared,
        };
        map.insert("type".into(), json!(referral_type.as_str()));
        let targets: Vec<Value> = draft
            .target
            .iter()
            .flatten()
            .filter(|t| !t.is_microsoft())
            .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
            .collect();
        map.insert("target".into(), Value::Array(targets));
    }
    if let Some(consent) = object(&mut body, "consent") {
        consent.insert(
            "consentToShareReferralWithMicrosoftSellers".into(),
            json!(kind == DealKind::CoSell),
        );
    }
    if let Some(invite) = body.get_mut("inviteContext").and_then(Value::as_object_mut) {
        // Set by the service on referrals sent to us.
        invite.remove("invitedBy");
    }
    body
}

/// The referral that invites Microsoft into the engagement:
/// `target: [{type: BusinessProfileLocation, id: msft}]` with the assistance
/// request code and notes.
pub(crate) fn microsoft_referral_body(draft: &Referral, engagement_id: &str) -> Value {
    let mut body = own_referral_body(draft, DealKind::CoSell);
    if let Some(map) = body.as_object_mut() {
        map.insert("engagementId".into(), json!(engagement_id));
        map.insert(
            "target".into(),
            json!([serde_json::to_value(ReferralTarget::microsoft()).unwrap_or(Value::Null)]),
        );
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AssistanceRequestCode;

    fn draft() -> Referral {
        Referral::from_json(json!({
            "id": "", "eTag": "\"x\"", "status": "New", "substatus": "Pending", "name": "Deal",
            "externalReferenceId": "OPP-1", "customExtension": {"a": 1},
            "target": [{"type": "BusinessProfileLocation", "id": "msft"}, {"type": "SolutionProfile", "id": "SOL-1"}],
            "inviteContext": {"notes": "Need PoC", "assistanceRequestCode": "ProofOfConceptOrDemo",
                              "invitedBy": {"organizationId": "x"}},
            "consent": {"consentToToShareInfoWithOthers": true}
        }))
        .unwrap()
    }

    #[test]
    fn the_own_referral_drops_service_fields_and_microsoft_targets() {
        let body = own_referral_body(&draft(), DealKind::CoSell);
        assert_eq!(
            body,
            json!({"name": "Deal", "externalReferenceId": "OPP-1", "type": "Shared",
                "consent": {"consentToToShareInfoWithOthers": true, "consentToShareReferralWithMicrosoftSellers": true},
                "inviteContext": {"notes": "Need PoC", "assistanceRequestCode": "ProofOfConceptOrDemo"},
                "target": [{"id": "SOL-1", "type": "SolutionProfile"}],
                "customExtension": {"a": 1}})
        );
    }

    #[test]
    fn a_private_deal_is_independent_and_not_shared_with_sellers() {
        let mut d = draft();
        d.invite_context = None;
        d.consent = None;
        assert_eq!(kind_of_draft(&d), DealKind::Private);
        let body = own_referral_body(&d, DealKind::Private);
        assert_eq!(body["type"], "Independent");
        assert_eq!(
            body["consent"],
            json!({"consentToShareReferralWithMicrosoftSellers": false})
        );
    }

    #[test]
    fn the_microsoft_referral_joins_the_engagement_and_targets_msft() {
        let d = draft();
        assert_eq!(kind_of_draft(&d), DealKind::CoSell);
        let body = microsoft_referral_body(&d, "eng-1");
        assert_eq!(body["engagementId"], "eng-1");
        assert_eq!(body["type"], "Shared");
        assert_eq!(
            body["target"],
            json!([{"id": "msft", "type": "BusinessProfileLocation"}])
        );
        assert_eq!(
            body["inviteContext"]["assistanceRequestCode"],
            "ProofOfConceptOrDemo"
        );
        let mut unknown = d.clone();
        unknown
            .invite_context
            .as_mut()
            .unwrap()
            .assistance_request_code = Some(AssistanceRequestCode::Unknown);
        assert_eq!(kind_of_draft(&unknown), DealKind::Private);
    }
}
