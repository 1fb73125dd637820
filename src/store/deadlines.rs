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
