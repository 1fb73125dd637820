//! Dataverse service-protection limits, kept on our side: a request quota
//! (6,000 per 5 minutes), at most 52 requests in flight, and a pause shared by
//! every request of the client once the server answers 429 `Retry-After`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The documented per-user limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Requests allowed per `window`.
    pub requests: u32,
    pub window: Duration,
    /// Requests in flight at once.
    pub concurrent: usize,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        ServiceLimits {
            requests: 6000,
            window: Duration::from_secs(300),
            concurrent: 52,
        }
    }
}

/// governor on tokio's clock, so the quota follows a paused test clock.
#[derive(Debug, Clone)]
struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }
}

type Quotas = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// What a caller may do before sending.
#[derive(Debug)]
pub enum Admission {
    /// Send now; hold the permit until the response is read.
    Go(OwnedSemaphorePermit),
    /// The shared pause lasts longer than the caller is willing to wait.
    Paused { remaining: Duration },
}

pub struct Limiter {
    quota: Quotas,
    clock: TokioClock,
    in_flight: Arc<Semaphore>,
    paused_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("available_slots", &self.in_flight.available_permits())
            .finish()
    }
}

impl Limiter {
    pub fn new(limits: &ServiceLimits) -> Limiter {
        let requests = NonZeroU32::new(limits.requests.max(1)).unwrap_or(NonZeroU32::MIN);
        let period = (limits.window / requests.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(requests))
            .allow_burst(requests);
        let clock = TokioClock {
            origin: Instant::now(),
        };
        Limiter {
            quota: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            in_flight: Arc::new(Semaphore::new(limits.concurrent.max(1))),
            paused_until: Mutex::new(None),
        }
    }

    /// Waits for the shared pause (if no longer than `max_wait`), a slot in
    /// the request quota and a concurrency slot.
    pub async fn admit(&self, max_wait: Duration) -> Admission {
        if let Some(remaining) = self.pause_remaining().await {
            if remaining > max_wait {
                return Admission::Paused { remaining };
            }
            tracing::debug!(
                wait_ms = remaining.as_millis() as u64,
                "dynamics: waiting out the service-protection pause"
            );
            tokio::time::sleep(remaining).await;
        }
        loop {
            match self.quota.check() {
                Ok(()) => break,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                }
            }
        }
        match self.in_flight.clone().acquire_owned().await {
            Ok(permit) => Admission::Go(permit),
            // The semaphore is never closed.
            Err(_) => Admission::Paused {
                remaining: Duration::ZERO,
            },
        }
    }

    /// Pauses every request of this client for `d` (extends, never shortens).
    pub async fn pause_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut slot = self.paused_until.lock().await;
        if slot.is_none_or(|current| current < until) {
            *slot = Some(until);
        }
    }

    /// Time left in the shared pause, if one is running.
    pub async fn pause_remaining(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut slot = self.paused_until.lock().await;
        match *slot {
            Some(until) if until > now => Some(until - now),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_quota_spaces_requests_once_the_burst_is_used() {
        let limiter = Limiter::new(&ServiceLimits {
            requests: 2,
            window: Duration::from_secs(10),
            concurrent: 10,
        });
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..4 {
            match limiter.admit(Duration::from_secs(60)).await {
                Admission::Go(_permit) => times.push(start.elapsed().as_secs()),
                Admission::Paused { .. } => panic!("not paused"),
            }
        }
        // Two at once, then one every 5 s (2 per 10 s).
        assert_eq!(times, vec![0, 0, 5, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_are_bounded() {
        let limiter = Arc::new(Limiter::new(&ServiceLimits {
            requests: 100,
            window: Duration::from_secs(1),
            concurrent: 2,
        }));
        let Admission::Go(a) = limiter.admit(Duration::ZERO).await else {
            panic!()
        };
        let Admission::Go(_b) = limiter.admit(Duration::ZERO).await else {
            panic!()
        };
        let l = limiter.clone();
        let third = tokio::spawn(async move {
            let start = Instant::now();
            let _p = l.admit(Duration::ZERO).await;
            start.elapsed()
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!third.is_finished(), "a third request waits for a slot");
        drop(a);
        assert!(third.await.unwrap() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_is_shared_and_only_waited_when_short_enough() {
        let limiter = Limiter::new(&ServiceLimits::default());
        limiter.pause_for(Duration::from_secs(30)).await;
        limiter.pause_for(Duration::from_secs(5)).await;
        match limiter.admit(Duration::from_secs(10)).await {
            Admission::Paused { remaining } => assert_eq!(remaining, Duration::from_secs(30)),
            Admission::Go(_) => panic!("a 30 s pause is longer than 10 s"),
        }
        let start = Instant::now();
        assert!(matches!(
            limiter.admit(Duration::from_secs(60)).await,
            Admission::Go(_)
        ));
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert_eq!(limiter.pause_remaining().await, None);
    }
}
