//! How much time the received inbound referrals have left to be answered,
//! counted in the buckets the metrics and alerts use.

use chrono::{DateTime, TimeDelta, Utc};

use super::repo::Repo;
use super::{StoreError, ts};

/// Received referrals still to answer: deadline under 48 hours away (or
/// passed but not yet expired here), under 7 days, 7 days or more.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TimeLeft {
    pub lt_48h: u64,
    pub lt_7d: u64,
    pub ge_7d: u64,
}

impl Repo<'_> {
    /// Received inbound referrals, not expired locally, by time left at `now`.
    pub fn received_time_left(&self, now: DateTime<Utc>) -> Result<TimeLeft, StoreError> {
        let (h48, d7) = (ts(now + TimeDelta::hours(48)), ts(now + TimeDelta::days(7)));
        Ok(self.row(
            "SELECT COALESCE(SUM(deadline < ?1), 0) AS lt_48h,
                    COALESCE(SUM(deadline >= ?1 AND deadline < ?2), 0) AS lt_7d,
                    COALESCE(SUM(deadline >= ?2), 0) AS ge_7d
               FROM referrals INDEXED BY referrals_open_deadline
              WHERE stage = 'received' AND locally_expired = 0 AND deadline IS NOT NULL",
            [&h48, &d7],
            |r| {
                Ok(TimeLeft {
                    lt_48h: r.get::<_, i64>("lt_48h")? as u64,
                    lt_7d: r.get::<_, i64>("lt_7d")? as u64,
                    ge_7d: r.get::<_, i64>("ge_7d")? as u64,
                })
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Stage;
    use crate::store::{ReferralSnapshot, Store};

    fn received(id: &str, deadline: Option<DateTime<Utc>>, stage: Stage) -> ReferralSnapshot {
        let now = Utc::now();
        ReferralSnapshot {
            id: id.into(),
            etag: None,
            status: "New".into(),
            substatus: "Pending".into(),
            stage: Some(stage),
            direction: Some("Incoming".into()),
            referral_type: None,
            name: None,
            created_at: None,
            updated_at: None,
            deadline,
            projection_hash: None,
            raw: serde_json::json!({"id": id}),
            favorite: false,
            locally_expired: false,
            first_seen: now,
            last_seen: now,
        }
    }

    #[test]
    fn received_referrals_are_counted_by_time_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let now = Utc::now();
        let h = TimeDelta::hours;
        store
            .write(|r| {
                r.upsert_referral(&received("past", Some(now - h(1)), Stage::Received))?;
                r.upsert_referral(&received("a", Some(now + h(47)), Stage::Received))?;
                r.upsert_referral(&received("b", Some(now + h(48)), Stage::Received))?;
                r.upsert_referral(&received("c", Some(now + h(7 * 24 - 1)), Stage::Received))?;
                r.upsert_referral(&received("d", Some(now + h(7 * 24)), Stage::Received))?;
                r.upsert_referral(&received("e", Some(now + h(30)), Stage::Accepted))?;
                r.upsert_referral(&received("f", None, Stage::Received))?;
                let mut gone = received("g", Some(now + h(1)), Stage::Received);
                gone.locally_expired = true;
                r.upsert_referral(&gone)
            })
            .unwrap();
        assert_eq!(
            store.read(|r| r.received_time_left(now)).unwrap(),
            TimeLeft {
                lt_48h: 2,
                lt_7d: 2,
                ge_7d: 1
            }
        );
    }
}
