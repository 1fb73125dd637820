//! Deal kinds (private pipeline vs co-sell) and the rules for new outbound deals.

use serde::{Deserialize, Serialize};

use super::country;
use super::enums::ReferralType;
use super::lifecycle::Stage;
use super::referral::{Member, Referral};

/// How a deal is worked: alone (private pipeline) or with Microsoft (co-sell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DealKind {
    /// `Independent`, not shared with Microsoft sellers.
    Private,
    /// `Shared`, Microsoft invited with an assistance request code and notes.
    CoSell,
}

impl DealKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DealKind::Private => "private",
            DealKind::CoSell => "co-sell",
        }
    }

    /// The kind a referral is today: `Shared`, or shared with Microsoft
    /// sellers, is co-sell; everything else is private pipeline.
    pub fn of(referral: &Referral) -> DealKind {
        let shared_type = referral.referral_type == Some(ReferralType::Shared);
        let shared_with_sellers = referral
            .consent
            .as_ref()
            .and_then(|c| c.consent_to_share_referral_with_microsoft_sellers)
            .unwrap_or(false);
        if shared_type || shared_with_sellers {
            DealKind::CoSell
        } else {
            DealKind::Private
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindChangeError {
    #[error("a co-sell deal cannot go back to private pipeline")]
    CoSellIsFinal,
    #[error("the deal is {0}: archived deals cannot change kind")]
    Archived(Stage),
}

/// Private → co-sell is allowed at any non-archived stage; never back.
/// Returns whether anything changes.
pub fn check_kind_change(
    from: DealKind,
    to: DealKind,
    stage: Stage,
) -> Result<bool, KindChangeError> {
    if from == to {
        return Ok(false);
    }
    if stage.is_archived() {
        return Err(KindChangeError::Archived(stage));
    }
    match (from, to) {
        (DealKind::Private, DealKind::CoSell) => Ok(true),
        _ => Err(KindChangeError::CoSellIsFinal),
    }
}

/// One thing wrong with a deal, by field path in the Referral JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub path: String,
    pub reason: String,
}

impl Problem {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Joins problems into one line for a CRM error field or a failure record.
pub fn describe_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn blank(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(|v| v.trim().is_empty())
}

fn plausible_email(s: &str) -> bool {
    let s = s.trim();
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

fn check_member(m: &Member, path: &str, out: &mut Vec<Problem>) {
    if blank(&m.first_name) && blank(&m.last_name) {
        out.push(Problem::new(
            format!("{path}.firstName"),
            "a name is required",
        ));
    }
    if blank(&m.phone_number) {
        out.push(Problem::new(
            format!("{path}.phoneNumber"),
            "a phone number is required",
        ));
    }
    match m.email.as_deref().map(str::trim) {
        None | Some("") => out.push(Problem::new(
            format!("{path}.email"),
            "an email address is required",
        )),
        Some(e) if !plausible_email(e) => out.push(Problem::new(
            format!("{path}.email"),
            format!("{e:?} is not an email address"),
        )),
        Some(_) => {}
    }
}

/// Validates a new outbound deal before anything is sent. Returns every
/// problem at once (empty when the deal can be created).
pub fn validate_new_deal(deal: &Referral) -> Vec<Problem> {
    let mut out = Vec::new();

    if blank(&deal.name) {
        out.push(Problem::new("name", "a deal name is required"));
    }

    let details = deal.details.clone().unwrap_or_default();
    match details.deal_value {
        None => out.push(Problem::new(
            "details.dealValue",
            "an estimated deal value is required",
        )),
        Some(v) if v.is_nan() || v <= 0.0 || !v.is_finite() => out.push(Problem::new(
            "details.dealValue",
            format!("the estimated deal value must be greater than 0 (got {v})"),
        )),
        Some(_) => {}
    }
    if let Some(cur) = details.currency.as_deref() {
        let ok = cur.len() == 3 && cur.chars().all(|c| c.is_ascii_uppercase());
        if !ok {
            out.push(Problem::new(
                "details.currency",
                format!("{cur:?} is not an ISO 4217 currency code such as \"USD\""),
            ));
        }
    }
    if details.closing_date_time.is_none() {
        out.push(Problem::new(
            "details.closingDateTime",
            "an estimated close date is required",
        ));
    }

    let customer = deal.customer_profile.clone().unwrap_or_default();
    if blank(&customer.name) {
        out.push(Problem::new(
            "customerProfile.name",
            "the customer's name is required",
        ));
    }
    let address = customer.address.clone().unwrap_or_default();
    if blank(&address.address_line1) {
        out.push(Problem::new(
            "customerProfile.address.addressLine1",
            "the customer's street address is required",
        ));
    }
    if blank(&address.city) {
        out.push(Problem::new(
            "customerProfile.address.city",
            "the customer's city is required",
        ));
    }
    match address.country.as_deref().map(str::trim) {
        None | Some("") => out.push(Problem::new(
            "customerProfile.address.country",
            "the customer's country is required as an ISO 3166 two-letter code",
        )),
        Some(c) if !country::is_alpha2(c) => out.push(Problem::new(
            "customerProfile.address.country",
            format!("{c:?} is not an ISO 3166 two-letter country code such as \"US\""),
        )),
        Some(_) => {}
    }

    let team = deal.team.clone().unwrap_or_default();
    if team.is_empty() {
        out.push(Problem::new(
            "team",
            "at least one employee with name, phone and email is required",
        ));
    }
    for (i, m) in team.iter().enumerate() {
        check_member(m, &format!("team[{i}]"), &mut out);
    }

    let solutions = details
        .requirements
        .as_ref()
        .and_then(|r| r.solutions.clone())
        .unwrap_or_default();
    if solutions.is_empty() {
        out.push(Problem::new(
            "details.requirements.solutions",
            "at least one solution (your own, Microsoft's or a third party's co-sell ready one) is required",
        ));
    }
    for (i, s) in solutions.iter().enumerate() {
        if blank(&s.id) {
            out.push(Problem::new(
                format!("details.requirements.solutions[{i}].id"),
                "a solution id is required",
            ));
        }
    }

    let contacts = customer.team.clone().unwrap_or_default();
    if deal.assistance_requested().is_some() {
        if contacts.is_empty() {
            out.push(Problem::new(
                "customerProfile.team",
                "a customer contact is required when Microsoft's help is requested",
            ));
        }
        let notes_missing = deal.invite_context.as_ref().is_none_or(|c| blank(&c.notes));
        if notes_missing {
            out.push(Problem::new(
                "inviteContext.notes",
                "notes for Microsoft are required when Microsoft's help is requested",
            ));
        }
        let consent = deal
            .consent
            .as_ref()
            .and_then(|c| c.consent_to_share_info_with_others)
            .unwrap_or(false);
        if !contacts.is_empty() && !consent {
            out.push(Problem::new(
                "consent.consentToToShareInfoWithOthers",
                "the customer's contact is shared with Microsoft only with the customer's recorded consent",
            ));
        }
    }
    for (i, m) in contacts.iter().enumerate() {
        check_member(m, &format!("customerProfile.team[{i}]"), &mut out);
    }

    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::enums::AssistanceRequestCode;
    use serde_json::json;

    pub(crate) fn valid_private_deal() -> Referral {
        Referral::from_json(json!({
            "id": "", "name": "Contoso Test Deal",
            "customerProfile": {"name": "Contoso Customer Inc",
                "address": {"addressLine1": "One Microsoft Way", "city": "Redmond", "state": "WA",
                            "postalCode": "98052", "country": "US"}},
            "details": {"dealValue": 50000, "currency": "USD", "closingDateTime": "2026-12-14T00:00:00Z",
                "requirements": {"solutions": [{"type": "Name", "id": "SOL-15974-MQF"}]}},
            "team": [{"firstName": "John", "lastName": "Doe", "phoneNumber": "1231231234",
                      "email": "john.doe@contoso.com"}]
        }))
        .unwrap()
    }

    #[test]
    fn a_complete_private_deal_is_valid() {
        assert_eq!(validate_new_deal(&valid_private_deal()), vec![]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let deal = Referral::from_json(
            json!({"id": "", "details": {"dealValue": 0, "currency": "usd"},
            "customerProfile": {"address": {"country": "USA"}},
            "team": [{"firstName": "A", "email": "not-an-email"}]}),
        )
        .unwrap();
        let paths: Vec<_> = validate_new_deal(&deal)
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths,
            vec![
                "name",
                "details.dealValue",
                "details.currency",
                "details.closingDateTime",
                "customerProfile.name",
                "customerProfile.address.addressLine1",
                "customerProfile.address.city",
                "customerProfile.address.country",
                "team[0].phoneNumber",
                "team[0].email",
                "details.requirements.solutions",
            ]
        );
    }

    #[test]
    fn a_deal_without_employees_or_solutions_is_refused() {
        let mut deal = valid_private_deal();
        deal.team = Some(vec![]);
        deal.details.as_mut().unwrap().requirements = None;
        let problems = validate_new_deal(&deal);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].path, "team");
        assert_eq!(problems[1].path, "details.requirements.solutions");
    }

    #[test]
    fn co_sell_needs_a_customer_contact_notes_and_consent() {
        let mut deal = valid_private_deal();
        deal.invite_context = Some(crate::domain::referral::InviteContext {
            assistance_request_code: Some(AssistanceRequestCode::ProofOfConceptOrDemo),
            ..Default::default()
        });
        let paths: Vec<_> = validate_new_deal(&deal)
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(paths, vec!["customerProfile.team", "inviteContext.notes"]);

        deal.invite_context.as_mut().unwrap().notes = Some("Need a PoC".into());
        deal.customer_profile.as_mut().unwrap().team = Some(vec![Member {
            first_name: Some("Sue".into()),
            phone_number: Some("1234567890".into()),
            email: Some("sue@contoso.com".into()),
            ..Default::default()
        }]);
        let paths: Vec<_> = validate_new_deal(&deal)
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(paths, vec!["consent.consentToToShareInfoWithOthers"]);

        deal.consent = Some(crate::domain::referral::Consent {
            consent_to_share_info_with_others: Some(true),
            ..Default::default()
        });
        assert_eq!(validate_new_deal(&deal), vec![]);
    }

    #[test]
    fn unknown_assistance_code_is_not_a_request_for_help() {
        let mut deal = valid_private_deal();
        deal.invite_context = Some(crate::domain::referral::InviteContext {
            assistance_request_code: Some(AssistanceRequestCode::Unknown),
            ..Default::default()
        });
        assert_eq!(validate_new_deal(&deal), vec![]);
    }

    #[test]
    fn kind_is_read_from_type_and_consent() {
        let mut deal = valid_private_deal();
        assert_eq!(DealKind::of(&deal), DealKind::Private);
        deal.referral_type = Some(ReferralType::Shared);
        assert_eq!(DealKind::of(&deal), DealKind::CoSell);
    }

    #[test]
    fn private_becomes_co_sell_but_never_back() {
        assert_eq!(
            check_kind_change(DealKind::Private, DealKind::CoSell, Stage::Accepted),
            Ok(true)
        );
        assert_eq!(
            check_kind_change(DealKind::Private, DealKind::Private, Stage::Won),
            Ok(false)
        );
        assert_eq!(
            check_kind_change(DealKind::CoSell, DealKind::Private, Stage::Accepted),
            Err(KindChangeError::CoSellIsFinal)
        );
        assert_eq!(
            check_kind_change(DealKind::Private, DealKind::CoSell, Stage::Lost),
            Err(KindChangeError::Archived(Stage::Lost))
        );
    }
}
