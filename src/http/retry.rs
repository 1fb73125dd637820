//! The retry policy every client uses: exponential backoff with jitter
//! (backon), bounded in attempts and total time, honouring `Retry-After`.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};

use super::error::{RetryDirective, Retryable};

/// Bounds of the in-place retry loop for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    /// Attempts in total, the first one included (at least 1).
    pub max_attempts: u32,
    /// First backoff delay; doubles each time.
    pub min_delay: Duration,
    /// Cap on one backoff delay.
    pub max_delay: Duration,
    /// Cap on the time spent waiting between attempts. A `Retry-After` that
    /// would exceed it is not waited out: the error is returned with its
    /// directive so the caller can pause that side instead.
    pub max_total: Duration,
    /// Add random jitter to each backoff delay.
    pub jitter: bool,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 4,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_total: Duration::from_secs(120),
            jitter: true,
        }
    }
}

impl RetrySettings {
    /// No retries at all.
    pub fn none() -> Self {
        RetrySettings {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    settings: RetrySettings,
    /// The API whose retries are counted in the `cosell_sync_retries_total` metric.
    api: &'static str,
}

impl RetryPolicy {
    pub fn new(settings: RetrySettings) -> Self {
        RetryPolicy {
            settings,
            api: "http",
        }
    }

    /// Names the API in the retry metric.
    pub fn for_api(mut self, api: &'static str) -> Self {
        self.api = api;
        self
    }

    pub fn settings(&self) -> &RetrySettings {
        &self.settings
    }

    /// Runs `op` (given the 1-based attempt number) until it succeeds, fails
    /// with an error that should not be retried in place, or the bounds are
    /// reached; then returns the last error.
    pub async fn run<T, E, F, Fut>(&self, op: F) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Retryable + Display,
    {
        self.run_if(op, |e: &E| e.retry_in_place()).await
    }

    /// Like [`run`](Self::run), with the caller deciding which errors to retry
    /// (used for non-idempotent requests).
    pub async fn run_if<T, E, F, Fut, W>(&self, mut op: F, mut when: W) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Retryable + Display,
        W: FnMut(&E) -> bool,
    {
        let s = &self.settings;
        let retries = s.max_attempts.max(1) - 1;
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(s.min_delay)
            .with_max_delay(s.max_delay.max(s.min_delay))
            .with_max_times(retries as usize);
        if s.jitter {
            backoff = backoff.with_jitter();
        }
        let started = tokio::time::Instant::now();
        let max_total = s.max_total;
        let mut attempt = 0u32;
        let mut waited = Duration::ZERO;

        (|| {
            attempt += 1;
            op(attempt)
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &E| when(e))
        .adjust(|e: &E, next: Option<Duration>| {
            // `next` is None once the attempts are used up.
            let next = next?;
            let delay = match e.directive() {
                RetryDirective::After(d) => d,
                _ => next,
            };
            let elapsed = started.elapsed().max(waited);
            if elapsed + delay > max_total {
                return None;
            }
            waited = elapsed + delay;
            Some(delay)
        })
        .notify(|e: &E, delay: Duration| {
            crate::metrics::record_retry(self.api);
            tracing::warn!(
                error = %e,
                directive = e.directive().as_str(),
                delay_ms = delay.as_millis() as u64,
                "request failed; retrying"
            );
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug, Clone, PartialEq)]
    struct Fail(RetryDirective);

    impl Display for Fail {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "fail {}", self.0)
        }
    }

    impl Retryable for Fail {
        fn directive(&self) -> RetryDirective {
            self.0
        }
    }

    fn settings(max_attempts: u32) -> RetrySettings {
        RetrySettings {
            max_attempts,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            max_total: Duration::from_secs(60),
            jitter: false,
        }
    }

    /// Runs a scripted sequence of outcomes and records when each attempt started.
    async fn scripted(
        policy: &RetryPolicy,
        script: Vec<Result<u32, Fail>>,
    ) -> (Result<u32, Fail>, Vec<u64>) {
        let start = tokio::time::Instant::now();
        let times = RefCell::new(Vec::new());
        let script = RefCell::new(script.into_iter());
        let out = policy
            .run(|_| {
                times.borrow_mut().push(start.elapsed().as_secs());
                let next = script.borrow_mut().next().unwrap_or(Ok(0));
                async move { next }
            })
            .await;
        (out, times.into_inner())
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_until_success() {
        let policy = RetryPolicy::new(settings(5));
        let b = Err(Fail(RetryDirective::Backoff));
        let (out, times) = scripted(&policy, vec![b.clone(), b.clone(), b, Ok(7)]).await;
        assert_eq!(out, Ok(7));
        assert_eq!(times, vec![0, 1, 3, 7]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_replaces_the_backoff_delay() {
        let policy = RetryPolicy::new(settings(5));
        let (out, times) = scripted(
            &policy,
            vec![
                Err(Fail(RetryDirective::After(Duration::from_secs(30)))),
                Ok(1),
            ],
        )
        .await;
        assert_eq!(out, Ok(1));
        assert_eq!(times, vec![0, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded() {
        let policy = RetryPolicy::new(settings(3));
        let b = Err(Fail(RetryDirective::Backoff));
        let (out, times) = scripted(&policy, vec![b.clone(), b.clone(), b.clone(), b]).await;
        assert_eq!(out, Err(Fail(RetryDirective::Backoff)));
        assert_eq!(times.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_the_total_budget_is_returned_not_waited() {
        let policy = RetryPolicy::new(settings(5));
        let long = Fail(RetryDirective::After(Duration::from_secs(3600)));
        let (out, times) = scripted(&policy, vec![Err(long.clone()), Ok(1)]).await;
        assert_eq!(out, Err(long));
        assert_eq!(times, vec![0]);
    }

    #[tokio::test(start_paused = true)]
    async fn total_time_is_bounded() {
        let mut s = settings(100);
        s.max_total = Duration::from_secs(10);
        let policy = RetryPolicy::new(s);
        let b = Err(Fail(RetryDirective::Backoff));
        let (out, times) = scripted(&policy, vec![b.clone(); 100]).await;
        assert!(out.is_err());
        // waits 1, 2, 4 (total 7); the next 8 would exceed 10.
        assert_eq!(times, vec![0, 1, 3, 7]);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_and_operator_errors_are_not_retried() {
        let policy = RetryPolicy::new(settings(5));
        for d in [RetryDirective::Permanent, RetryDirective::Operator] {
            let (out, times) = scripted(&policy, vec![Err(Fail(d)), Ok(1)]).await;
            assert_eq!(out, Err(Fail(d)));
            assert_eq!(times, vec![0]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_one_extra_delay() {
        let mut s = settings(2);
        s.jitter = true;
        let policy = RetryPolicy::new(s);
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let _ = policy
            .run(|_| {
                calls += 1;
                let r: Result<(), Fail> = Err(Fail(RetryDirective::Backoff));
                async move { r }
            })
            .await;
        let waited = start.elapsed();
        assert_eq!(calls, 2);
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }
}
