//! systemd notifications (sd_notify): READY, STATUS, RELOADING, STOPPING and
//! watchdog pings. Without `NOTIFY_SOCKET` (not started by systemd with
//! `Type=notify`) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

use super::Heartbeat;

/// Sends notifications to the service manager.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// Notifies when this process was started with `NOTIFY_SOCKET`.
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    /// Never notifies.
    pub fn disabled() -> Notifier {
        Notifier { enabled: false }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// Startup is done: the store is open and the configuration valid.
    pub fn ready(&self, status: &str) {
        let status = one_line(status);
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// A status line for `systemctl status`.
    pub fn status(&self, status: &str) {
        let status = one_line(status);
        self.send(&[NotifyState::Status(&status)]);
    }

    /// A configuration reload started; end it with [`Notifier::ready`].
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            // systemd 253+ wants the monotonic time with RELOADING=1.
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// The service is shutting down.
    pub fn stopping(&self, status: &str) {
        let status = one_line(status);
        self.send(&[NotifyState::Stopping, NotifyState::Status(&status)]);
    }

    /// A watchdog ping.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// How often to ping the watchdog: half of `WATCHDOG_USEC`, when systemd
    /// set a watchdog for this process.
    pub fn watchdog_period(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        sd_notify::watchdog_enabled()
            .filter(|d| !d.is_zero())
            .map(|d| d / 2)
    }
}

/// STATUS= is one line; a newline would end the message field.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Pings the watchdog every `period` while the sync loop's heartbeat is at
/// most `stuck_after` old, until `stop` turns true. A stuck loop gets no
/// pings, so systemd restarts the service (`Restart=on-failure`).
pub async fn watchdog(
    notifier: Notifier,
    heartbeat: Heartbeat,
    period: Duration,
    stuck_after: Duration,
    stop: watch::Receiver<bool>,
) {
    watchdog_with(
        move || notifier.watchdog(),
        heartbeat,
        period,
        stuck_after,
        stop,
    )
    .await
}

/// [`watchdog`] with any ping.
pub async fn watchdog_with(
    ping: impl Fn(),
    heartbeat: Heartbeat,
    period: Duration,
    stuck_after: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stuck = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = ticker.tick() => {}
        }
        if heartbeat.is_fresh(stuck_after) {
            if stuck {
                tracing::info!("the sync loop is making progress again");
                stuck = false;
            }
            ping();
        } else if !stuck {
            stuck = true;
            tracing::error!(
                since_secs = heartbeat.age().as_secs(),
                "the sync loop has made no progress for {}; withholding watchdog pings so systemd restarts the service",
                humantime::format_duration(Duration::from_secs(heartbeat.age().as_secs()))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_is_fed_only_while_the_loop_makes_progress() {
        let hb = Heartbeat::new();
        let pings = Arc::new(AtomicU32::new(0));
        let (stop_tx, stop_rx) = watch::channel(false);
        let counter = pings.clone();
        let task = tokio::spawn(watchdog_with(
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            hb.clone(),
            Duration::from_secs(10),
            Duration::from_secs(60),
            stop_rx,
        ));
        // Pings at 0, 10, ..., 60 s while the heartbeat is at most 60 s old.
        tokio::time::sleep(Duration::from_secs(65)).await;
        assert_eq!(pings.load(Ordering::SeqCst), 7);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            pings.load(Ordering::SeqCst),
            7,
            "a stuck loop is not vouched for"
        );
        hb.touch();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            pings.load(Ordering::SeqCst),
            8,
            "pings resume with progress"
        );
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert!(Notifier::disabled().watchdog_period().is_none());
    }
}
