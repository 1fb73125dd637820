//! The simulated clock: starts at a chosen instant, moves with (tokio's) real
//! time, and jumps forward when a test or the control API advances it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// Cheaply cloneable handle on one shared simulated clock.
#[derive(Clone)]
pub struct SimClock {
    inner: Arc<ClockInner>,
}

struct ClockInner {
    start: DateTime<Utc>,
    origin: tokio::time::Instant,
    frozen: bool,
    offset: Mutex<TimeDelta>,
}

impl std::fmt::Debug for SimClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimClock")
            .field("now", &self.now())
            .finish()
    }
}

impl SimClock {
    /// A clock that reads `start` now and then moves with real time.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self::build(start, false)
    }

    /// A clock that only moves when advanced: handy for exact assertions.
    pub fn frozen(start: DateTime<Utc>) -> Self {
        Self::build(start, true)
    }

    fn build(start: DateTime<Utc>, frozen: bool) -> Self {
        SimClock {
            inner: Arc::new(ClockInner {
                start,
                origin: tokio::time::Instant::now(),
                frozen,
                offset: Mutex::new(TimeDelta::zero()),
            }),
        }
    }

    /// The simulated current time.
    pub fn now(&self) -> DateTime<Utc> {
        let offset = *self.inner.offset.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = if self.inner.frozen {
            TimeDelta::zero()
        } else {
            TimeDelta::from_std(self.inner.origin.elapsed()).unwrap_or(TimeDelta::zero())
        };
        self.inner.start + elapsed + offset
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
        let mut offset = self.inner.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset = offset.checked_add(&by).unwrap_or(*offset);
    }

    /// Moves the clock forward to `to`; a time in the past is ignored (the
    /// clock never goes back). Returns the time now.
    pub fn advance_to(&self, to: DateTime<Utc>) -> DateTime<Utc> {
        let now = self.now();
        if let Ok(d) = (to - now).to_std() {
            self.advance(d);
        }
        self.now()
    }

    /// The instant the clock started at.
    pub fn start_time(&self) -> DateTime<Utc> {
        self.inner.start
    }
}

/// Truncates a time to a multiple of `unit_nanos` nanoseconds, as services
/// store timestamps at a fixed precision.
pub(crate) fn truncate(t: DateTime<Utc>, unit_nanos: i64) -> DateTime<Utc> {
    let nanos = t.timestamp_subsec_nanos() as i64;
    t - TimeDelta::nanoseconds(nanos % unit_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[tokio::test(start_paused = true)]
    async fn moves_with_time_and_with_advances() {
        let start = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
        let clock = SimClock::new(start);
        assert_eq!(clock.now(), start);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), start + TimeDelta::seconds(5));
        clock.clone().advance(Duration::from_secs(3600));
        assert_eq!(clock.now(), start + TimeDelta::seconds(3605));
        clock.advance_to(start);
        assert_eq!(clock.now(), start + TimeDelta::seconds(3605));
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_clock_moves_only_when_advanced() {
        let start = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
        let clock = SimClock::frozen(start);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), start + TimeDelta::seconds(1));
    }

    #[test]
    fn truncation_keeps_the_unit() {
        let t = Utc.timestamp_opt(10, 123_456_789).unwrap();
        assert_eq!(truncate(t, 1_000_000).timestamp_subsec_nanos(), 123_000_000);
        assert_eq!(truncate(t, 100).timestamp_subsec_nanos(), 123_456_700);
    }
}
