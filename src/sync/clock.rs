//! Where the engine gets "now": the system clock in production, the
//! simulator's clock in the demo and in tests (to reach day 15 without waiting).

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

impl<F> Clock for F
where
    F: Fn() -> DateTime<Utc> + Send + Sync,
{
    fn now(&self) -> DateTime<Utc> {
        self()
    }
}

/// The simulator's clock, so the demo and tests can move time (day 15).
impl Clock for crate::sim::SimClock {
    fn now(&self) -> DateTime<Utc> {
        crate::sim::SimClock::now(self)
    }
}
