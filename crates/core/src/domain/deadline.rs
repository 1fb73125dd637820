//! The 14-day windows: an inbound referral's answer deadline, and Microsoft
//! sellers' decision window on a co-sell request.

use chrono::{DateTime, Duration, Utc};

use super::lifecycle::Stage;
use super::referral::Referral;

/// The earlier of the service's own deadline (when it gives one) and the
/// start of the window plus `window_days`.
pub fn window_deadline(
    start: Option<DateTime<Utc>>,
    service_deadline: Option<DateTime<Utc>>,
    window_days: u32,
) -> Option<DateTime<Utc>> {
    let ours = start.map(|s| s + Duration::days(i64::from(window_days)));
    match (ours, service_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When an inbound referral that is still `received` expires; `None` for any
/// other referral (outbound, answered or archived) or when no date is known.
pub fn expiry_deadline(
    referral: &Referral,
    stage: Option<Stage>,
    expiry_days: u32,
) -> Option<DateTime<Utc>> {
    if !referral.is_inbound() || stage != Some(Stage::Received) {
        return None;
    }
    window_deadline(
        referral.created_date_time,
        referral.expiration_date_time,
        expiry_days,
    )
}

/// Whether a received inbound referral is past its deadline at `now`.
pub fn is_expired(
    referral: &Referral,
    stage: Option<Stage>,
    expiry_days: u32,
    now: DateTime<Utc>,
) -> bool {
    expiry_deadline(referral, stage, expiry_days).is_some_and(|d| now >= d)
}

/// Until when Microsoft sellers may decide on a co-sell request made at
/// `requested_at`; `service_deadline` is the Microsoft referral's own expiry.
pub fn microsoft_decision_deadline(
    requested_at: DateTime<Utc>,
    service_deadline: Option<DateTime<Utc>>,
    decision_days: u32,
) -> DateTime<Utc> {
    window_deadline(Some(requested_at), service_deadline, decision_days)
        .unwrap_or(requested_at + Duration::days(i64::from(decision_days)))
}

/// Partner Center's own state wins over a local expiry when it accepted the
/// referral before the deadline.
pub fn acceptance_beats_deadline(
    accepted_at: Option<DateTime<Utc>>,
    deadline: Option<DateTime<Utc>>,
) -> bool {
    match (accepted_at, deadline) {
        (Some(a), Some(d)) => a < d,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::enums::Direction;
    use chrono::TimeZone;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap()
    }

    fn inbound(created: DateTime<Utc>, expires: Option<DateTime<Utc>>) -> Referral {
        Referral {
            id: "r".into(),
            direction: Some(Direction::Incoming),
            created_date_time: Some(created),
            expiration_date_time: expires,
            ..Default::default()
        }
    }

    #[test]
    fn deadline_is_created_plus_window_unless_the_service_says_earlier() {
        let r = inbound(at(1, 10), None);
        assert_eq!(
            expiry_deadline(&r, Some(Stage::Received), 14),
            Some(at(15, 10))
        );
        let r = inbound(at(1, 10), Some(at(9, 0)));
        assert_eq!(
            expiry_deadline(&r, Some(Stage::Received), 14),
            Some(at(9, 0))
        );
        let r = inbound(at(1, 10), Some(at(20, 0)));
        assert_eq!(
            expiry_deadline(&r, Some(Stage::Received), 14),
            Some(at(15, 10))
        );
        assert_eq!(
            expiry_deadline(&r, Some(Stage::Received), 7),
            Some(at(8, 10))
        );
    }

    #[test]
    fn only_received_inbound_referrals_expire() {
        let r = inbound(at(1, 10), None);
        assert!(is_expired(&r, Some(Stage::Received), 14, at(15, 10)));
        assert!(!is_expired(&r, Some(Stage::Received), 14, at(15, 9)));
        assert!(!is_expired(&r, Some(Stage::Accepted), 14, at(28, 0)));
        let mut out = r.clone();
        out.direction = Some(Direction::Outgoing);
        assert!(!is_expired(&out, Some(Stage::Received), 14, at(28, 0)));
    }

    #[test]
    fn microsoft_window_is_computed_the_same_way() {
        assert_eq!(microsoft_decision_deadline(at(1, 0), None, 14), at(15, 0));
        assert_eq!(
            microsoft_decision_deadline(at(1, 0), Some(at(10, 0)), 14),
            at(10, 0)
        );
    }

    #[test]
    fn an_acceptance_before_the_deadline_wins() {
        assert!(acceptance_beats_deadline(Some(at(14, 0)), Some(at(15, 0))));
        assert!(!acceptance_beats_deadline(Some(at(15, 0)), Some(at(15, 0))));
        assert!(!acceptance_beats_deadline(None, Some(at(15, 0))));
    }
}
