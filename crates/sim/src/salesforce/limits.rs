//! The rolling 24-hour API allocation and `Sforce-Limit-Info`.

use chrono::{DateTime, Utc};

use super::store::SfState;

/// Whether an operation counts toward the daily API allocation.
pub(crate) fn counts_toward_usage(operation: &str) -> bool {
    !(operation.ends_with(" versions") || operation.ends_with(" oauth2/token"))
}

impl SfState {
    pub(super) fn prune_usage(&mut self, now: DateTime<Utc>) -> u64 {
        let hour = now.timestamp().div_euclid(3600);
        while self.usage.front().is_some_and(|(h, _)| *h <= hour - 24) {
            self.usage.pop_front();
        }
        self.usage.iter().map(|(_, n)| n).sum()
    }

    /// Counts one API call; false (and not counted) when the limit is reached.
    pub(crate) fn use_api_call(&mut self, now: DateTime<Utc>) -> bool {
        let used = self.prune_usage(now);
        if used >= self.daily_limit {
            return false;
        }
        self.add_usage(now, 1);
        true
    }

    pub(super) fn add_usage(&mut self, now: DateTime<Utc>, n: u64) {
        let hour = now.timestamp().div_euclid(3600);
        match self.usage.back_mut() {
            Some((h, c)) if *h == hour => *c += n,
            _ => self.usage.push_back((hour, n)),
        }
    }

    /// (used, allocation) over the last 24 hours.
    pub(crate) fn api_usage(&mut self, now: DateTime<Utc>) -> (u64, u64) {
        (self.prune_usage(now), self.daily_limit)
    }

    /// Uses up what is left of the daily allocation.
    pub(crate) fn exhaust(&mut self, now: DateTime<Utc>) {
        let used = self.prune_usage(now);
        let left = self.daily_limit.saturating_sub(used);
        self.add_usage(now, left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimOptions;
    use chrono::TimeDelta;

    #[test]
    fn usage_rolls_over_24_hours() {
        let mut sf = SfState::new(&SimOptions {
            salesforce_daily_limit: 2,
            ..SimOptions::default()
        });
        let t = Utc::now();
        assert!(sf.use_api_call(t));
        assert!(sf.use_api_call(t));
        assert!(!sf.use_api_call(t));
        assert_eq!(sf.api_usage(t), (2, 2));
        assert!(sf.use_api_call(t + TimeDelta::hours(25)));
    }
}
