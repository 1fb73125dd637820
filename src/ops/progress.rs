//! Progress of long work (backfills, resyncs of thousands of referrals): a
//! progress bar when stderr is a terminal, a log line every few seconds
//! otherwise (journald, CI, pipes).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Heartbeat;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A progress bar on stderr.
    Bar,
    /// A tracing `info` line at most every `every`.
    Log { every: Duration },
    /// Nothing (counts are still kept).
    Hidden,
}

impl ProgressMode {
    /// A bar on a terminal, log lines every 10 seconds otherwise.
    pub fn auto() -> ProgressMode {
        if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Log {
                every: Duration::from_secs(10),
            }
        }
    }
}

const BAR_TEMPLATE: &str =
    "{spinner} {prefix}: {msg} [{bar:40}] {human_pos}/{human_len} ({per_sec}, eta {eta})";
const SPINNER_TEMPLATE: &str = "{spinner} {prefix}: {msg} {human_pos} ({per_sec})";

/// Progress of one piece of long work. Cheap to call from hot loops.
pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    log_every: Option<Duration>,
    done: AtomicU64,
    total: AtomicU64,
    log: Mutex<LogState>,
    heartbeat: Option<Heartbeat>,
}

struct LogState {
    started: Instant,
    last_line: Instant,
    message: String,
    finished: bool,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("label", &self.label)
            .field("done", &self.position())
            .field("total", &self.total())
            .finish()
    }
}

impl Progress {
    /// Progress shown the [`ProgressMode::auto`] way. `total` when known.
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Progress {
        Progress::with_mode(label, total, ProgressMode::auto())
    }

    pub fn with_mode(label: impl Into<String>, total: Option<u64>, mode: ProgressMode) -> Progress {
        let label = label.into();
        let bar = match mode {
            ProgressMode::Bar => {
                let bar = match total {
                    Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
                    None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                };
                let template = if total.is_some() {
                    BAR_TEMPLATE
                } else {
                    SPINNER_TEMPLATE
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(label.clone());
                bar.enable_steady_tick(Duration::from_millis(200));
                Some(bar)
            }
            _ => None,
        };
        let now = Instant::now();
        Progress {
            bar,
            log_every: match mode {
                ProgressMode::Log { every } => Some(every),
                _ => None,
            },
            done: AtomicU64::new(0),
            total: AtomicU64::new(total.unwrap_or(0)),
            log: Mutex::new(LogState {
                started: now,
                last_line: now,
                message: String::new(),
                finished: false,
            }),
            heartbeat: None,
            label,
        }
    }

    /// Touches `heartbeat` on every step, so long work keeps the watchdog fed.
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Progress {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// `n` more items done.
    pub fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(hb) = &self.heartbeat {
            hb.touch();
        }
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
        self.maybe_log(false);
    }

    /// What is being done now (e.g. "page 12", a referral id).
    pub fn set_message(&self, message: impl Into<String>) {
        let message = message.into();
        if let Some(bar) = &self.bar {
            bar.set_message(message.clone());
        }
        self.lock().message = message;
    }

    /// The total, once it becomes known.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
                bar.set_style(style.progress_chars("=> "));
            }
        }
    }

    pub fn position(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The total, when known.
    pub fn total(&self) -> Option<u64> {
        Some(self.total.load(Ordering::Relaxed)).filter(|n| *n > 0)
    }

    /// Ends the bar (or writes the last log line).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
        self.maybe_log(true);
    }

    /// Runs `f` with the bar hidden, so a log line does not tear it.
    pub fn suspend<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn maybe_log(&self, finished: bool) {
        let Some(every) = self.log_every else {
            return;
        };
        let mut state = self.lock();
        if state.finished {
            return;
        }
        let now = Instant::now();
        if !finished && now.duration_since(state.last_line) < every {
            return;
        }
        state.last_line = now;
        state.finished = finished;
        let done = self.position();
        let elapsed = now.duration_since(state.started);
        let rate = if elapsed.as_secs_f64() > 0.0 {
            done as f64 / elapsed.as_secs_f64()
        } else {
            0.0
        };
        let of = self.total().map(|t| format!("/{t}")).unwrap_or_default();
        let elapsed = humantime::format_duration(Duration::from_secs(elapsed.as_secs()));
        if finished {
            tracing::info!(
                task = %self.label, done, total = self.total(), "{}: finished {done}{of} in {elapsed}",
                self.label
            );
        } else {
            tracing::info!(
                task = %self.label, done, total = self.total(),
                "{}: {done}{of} ({rate:.1}/s, {elapsed}) {}",
                self.label, state.message
            );
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logs(f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(sub, f);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn off_a_terminal_progress_is_logged_periodically() {
        let out = logs(|| {
            let p = Progress::with_mode(
                "backfill",
                Some(3000),
                ProgressMode::Log {
                    every: Duration::ZERO,
                },
            );
            p.set_message("page 1");
            p.inc(100);
            p.inc(100);
            p.finish();
            p.finish();
            assert_eq!(p.position(), 200);
        });
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[0].contains("backfill: 100/3000") && lines[0].contains("page 1"),
            "{out}"
        );
        assert!(lines[2].contains("backfill: finished 200/3000"), "{out}");
    }

    #[test]
    fn log_lines_are_rate_limited() {
        let out = logs(|| {
            let p = Progress::with_mode(
                "resync",
                None,
                ProgressMode::Log {
                    every: Duration::from_secs(3600),
                },
            );
            for _ in 0..1000 {
                p.inc(1);
            }
            p.finish();
        });
        assert_eq!(out.lines().count(), 1, "only the final line: {out}");
        assert!(out.contains("resync: finished 1000 in"), "{out}");
    }

    #[tokio::test(start_paused = true)]
    async fn progress_feeds_the_heartbeat() {
        let hb = Heartbeat::new();
        let p =
            Progress::with_mode("backfill", None, ProgressMode::Hidden).with_heartbeat(hb.clone());
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(!hb.is_fresh(Duration::from_secs(60)));
        p.inc(1);
        assert!(hb.is_fresh(Duration::from_secs(60)));
    }
}
