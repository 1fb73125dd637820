//! Running as a service: the `run` loop, signals, systemd notifications, the
//! HTTP health and metrics endpoint, and progress reporting for long work.
//!
//! The pieces meet in [`Daemon`]: it loads the settings, builds the engine,
//! runs a cycle per interval, records metrics and health after each one,
//! reloads on SIGHUP and stops cleanly on SIGTERM/SIGINT.

mod daemon;
pub mod health;
mod heartbeat;
pub mod metrics;
pub mod notify;
pub mod progress;

pub use daemon::{
    Control, ControlHandle, CycleRunner, Daemon, DaemonError, DaemonOptions, ReloadHook, control,
    listen_for_signals,
};
pub use health::Health;
pub use heartbeat::Heartbeat;
pub use notify::Notifier;
pub use progress::{Progress, ProgressMode};
