//! The sync loop's heartbeat. The loop touches it while it waits and between
//! cycles; the engine (and [`super::Progress`]) may touch it while a cycle
//! makes progress. The systemd watchdog and `/healthz` trust the loop only
//! while the heartbeat is fresh, so a loop stuck inside a cycle gets restarted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A cheap, shareable "last sign of life" timestamp (monotonic, and tokio's
/// clock, so tests can pause time).
#[derive(Clone)]
pub struct Heartbeat {
    inner: Arc<Inner>,
}

struct Inner {
    origin: Instant,
    /// Milliseconds after `origin` of the last touch.
    last_ms: AtomicU64,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("age", &self.age())
            .finish()
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    /// A heartbeat touched now.
    pub fn new() -> Heartbeat {
        Heartbeat {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                last_ms: AtomicU64::new(0),
            }),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a sign of life.
    pub fn touch(&self) {
        self.inner
            .last_ms
            .fetch_max(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// Time since the last touch.
    pub fn age(&self) -> Duration {
        let last = self.inner.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.elapsed_ms().saturating_sub(last))
    }

    /// Whether the last touch is at most `max_age` old.
    pub fn is_fresh(&self, max_age: Duration) -> bool {
        self.age() <= max_age
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_ages_until_touched() {
        let hb = Heartbeat::new();
        let clone = hb.clone();
        assert!(hb.is_fresh(Duration::ZERO));
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(hb.age(), Duration::from_secs(90));
        assert!(!hb.is_fresh(Duration::from_secs(60)));
        clone.touch();
        assert!(hb.is_fresh(Duration::ZERO), "clones share one heartbeat");
    }
}
