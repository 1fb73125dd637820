//! The `run` loop: a sync cycle per interval (with jitter), SIGHUP reloads
//! settings and mappings (a bad new config is logged and the old one keeps
//! running), SIGTERM/SIGINT stop after the cycle in flight (or abandon it
//! after the stop timeout: every store change is one transaction, so
//! dropping a cycle between two awaits loses nothing committed).
//!
//! Shutdown and reload arrive through a [`Control`]; real signals feed it
//! through [`listen_for_signals`], tests feed it directly.

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::health::{HealthServer, Phase, ServerState};
use super::{Health, Heartbeat, Notifier, metrics};
use crate::config::{ConfigError, ReadinessProblem, Settings};
use crate::store::{Store, StoreError};
use crate::sync::{CycleOptions, CycleSummary, Engine, SyncError};

/// One sync cycle, as the loop sees it. [`Engine`] is the real one; tests
/// drive the loop with their own.
pub trait CycleRunner {
    fn run_cycle(
        &self,
        opts: &CycleOptions,
    ) -> impl Future<Output = Result<CycleSummary, SyncError>> + Send;
}

impl<T: CycleRunner + Send + Sync + ?Sized> CycleRunner for Arc<T> {
    fn run_cycle(
        &self,
        opts: &CycleOptions,
    ) -> impl Future<Output = Result<CycleSummary, SyncError>> + Send {
        (**self).run_cycle(opts)
    }
}

impl CycleRunner for Engine {
    fn run_cycle(
        &self,
        opts: &CycleOptions,
    ) -> impl Future<Output = Result<CycleSummary, SyncError>> + Send {
        Engine::run_cycle(self, opts)
    }
}

/// A variant whose message includes its cause does not also give it as
/// `source()`, so `error: …` at exit says it once.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the configuration is incomplete: {}", join_problems(.0))]
    Incomplete(Vec<ReadinessProblem>),
    #[error("cannot start the sync engine: {0}")]
    Engine(String),
    #[error("{0} (hint: {hint})", hint = .0.hint())]
    Store(StoreError),
    #[error(
        "cannot listen on {addr} for /healthz, /readyz and /metrics: {cause} (set server.listen to a free address, or server.enabled = false)"
    )]
    Bind {
        addr: std::net::SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Store work on the blocking pool, off the async workers; `None` if the
/// runtime is shutting down meanwhile. A panic in `f` is raised again here.
async fn off_worker<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Option<Result<T, StoreError>> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(out) => Some(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

impl From<StoreError> for DaemonError {
    fn from(e: StoreError) -> Self {
        DaemonError::Store(e)
    }
}

impl DaemonError {
    /// The process exit code: 78 for a configuration (or mapping) problem,
    /// 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            DaemonError::Config(_) | DaemonError::Incomplete(_) | DaemonError::Engine(_) => 78,
            _ => 1,
        }
    }
}

fn join_problems(p: &[ReadinessProblem]) -> String {
    p.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// How the loop stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stop {
    Running,
    /// Finish the cycle in flight (up to the stop timeout), then exit.
    Graceful,
    /// A second request: abandon the cycle in flight now.
    Now,
}

/// Asks the loop to stop or reload. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    stop: Arc<watch::Sender<Stop>>,
    reload: Arc<Notify>,
}

impl ControlHandle {
    /// First call: stop after the cycle in flight. Second call: stop now.
    pub fn shutdown(&self) {
        self.stop.send_modify(|s| {
            *s = match *s {
                Stop::Running => Stop::Graceful,
                _ => Stop::Now,
            }
        });
    }

    /// Reload the settings and mappings (after the cycle in flight).
    pub fn reload(&self) {
        self.reload.notify_one();
    }
}

/// The loop's side of a [`ControlHandle`].
#[derive(Debug)]
pub struct Control {
    stop: watch::Receiver<Stop>,
    reload: Arc<Notify>,
}

impl Control {
    async fn stop_requested(&self, at_least: Stop) {
        let mut rx = self.stop.clone();
        // The sender lives in the handle; if every handle is gone, no stop
        // can come any more.
        if rx.wait_for(|s| *s >= at_least).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() >= Stop::Graceful
    }
}

/// A connected handle and control.
pub fn control() -> (ControlHandle, Control) {
    let (tx, rx) = watch::channel(Stop::Running);
    let reload = Arc::new(Notify::new());
    (
        ControlHandle {
            stop: Arc::new(tx),
            reload: reload.clone(),
        },
        Control { stop: rx, reload },
    )
}

/// SIGTERM and SIGINT ask for a shutdown (a second one: right now); SIGHUP
/// asks for a reload. Runs until aborted.
pub fn listen_for_signals(handle: ControlHandle) -> std::io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                // Act first, then log: a failing log writer must not cost the signal.
                Some(()) = term.recv() => {
                    handle.shutdown();
                    tracing::info!("SIGTERM received: stopping");
                }
                Some(()) = int.recv() => {
                    handle.shutdown();
                    tracing::info!("SIGINT received: stopping");
                }
                Some(()) = hup.recv() => {
                    handle.reload();
                    tracing::info!("SIGHUP received: reloading the configuration");
                }
                else => return,
            }
        }
    }))
}

/// Called with the settings of an applied reload.
pub type ReloadHook = Arc<dyn Fn(&Settings) + Send + Sync>;

/// Tuning of the loop; the defaults suit production.
#[derive(Clone)]
pub struct DaemonOptions {
    /// How long SIGTERM waits for the cycle in flight before abandoning it.
    /// Keep it below systemd's `TimeoutStopSec=`.
    pub stop_timeout: Duration,
    /// A heartbeat older than this means the loop is stuck: `/healthz` fails
    /// and the systemd watchdog is no longer pinged.
    pub stuck_after: Duration,
    /// `/readyz` wants a successful cycle within this window; `None` means
    /// max(3 × sync.interval, 15 minutes).
    pub ready_window: Option<Duration>,
    /// Each wait is the interval plus up to this fraction of it, at random.
    pub jitter: f64,
    /// Touched by the loop; pass a clone to the engine so long cycles count
    /// as progress.
    pub heartbeat: Heartbeat,
    pub notifier: Notifier,
    /// Called with the new settings after a reload was applied (e.g. to
    /// change the log level).
    pub on_reload: Option<ReloadHook>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            stop_timeout: Duration::from_secs(30),
            stuck_after: Duration::from_secs(15 * 60),
            ready_window: None,
            jitter: 0.1,
            heartbeat: Heartbeat::new(),
            notifier: Notifier::from_env(),
            on_reload: None,
        }
    }
}

impl std::fmt::Debug for DaemonOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonOptions")
            .field("stop_timeout", &self.stop_timeout)
            .field("stuck_after", &self.stuck_after)
            .field("ready_window", &self.ready_window)
            .field("jitter", &self.jitter)
            .field("notifier", &self.notifier)
            .finish()
    }
}

/// How often the loop touches the heartbeat while it waits.
const IDLE_TICK: Duration = Duration::from_secs(5);
/// How long the health endpoint gets to finish open requests at shutdown.
const SERVER_DRAIN: Duration = Duration::from_secs(5);

/// The `run` daemon. `L` loads the settings (again on every SIGHUP), `F`
/// builds the engine from them.
pub struct Daemon<L, F, R> {
    loader: L,
    factory: F,
    store: Arc<Store>,
    options: DaemonOptions,
    health: Health,
    _runner: PhantomData<fn() -> R>,
}

struct Current<R> {
    settings: Settings,
    runner: R,
}

impl<L, F, R, E> Daemon<L, F, R>
where
    L: Fn() -> Result<Settings, ConfigError>,
    F: Fn(&Settings) -> Result<R, E>,
    E: Display,
    R: CycleRunner,
{
    pub fn new(loader: L, factory: F, store: Arc<Store>) -> Self {
        Self::with_options(loader, factory, store, DaemonOptions::default())
    }

    pub fn with_options(loader: L, factory: F, store: Arc<Store>, options: DaemonOptions) -> Self {
        let health = Health::new(options.heartbeat.clone(), options.stuck_after);
        Daemon {
            loader,
            factory,
            store,
            options,
            health,
            _runner: PhantomData,
        }
    }

    /// The loop's health, as `/healthz` and `/readyz` report it.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Runs until SIGTERM or SIGINT. Returns `Ok` after a clean stop.
    pub async fn run_with_signals(self) -> Result<(), DaemonError> {
        let (handle, control) = control();
        let signals = listen_for_signals(handle).map_err(DaemonError::Signals)?;
        let result = self.run(control).await;
        signals.abort();
        result
    }

    fn load(&self) -> Result<(Settings, R), String> {
        let settings = (self.loader)().map_err(|e| e.to_string())?;
        let problems = settings.readiness_problems();
        if !problems.is_empty() {
            return Err(format!(
                "the configuration is incomplete: {}",
                join_problems(&problems)
            ));
        }
        let runner = (self.factory)(&settings).map_err(|e| e.to_string())?;
        metrics::record_sync_interval(settings.sync.interval);
        Ok((settings, runner))
    }

    fn ready_window(&self, settings: &Settings) -> Duration {
        self.options.ready_window.unwrap_or_else(|| {
            settings
                .sync
                .interval
                .saturating_mul(3)
                .max(Duration::from_secs(15 * 60))
        })
    }

    fn next_wait(&self, settings: &Settings) -> Duration {
        let interval = settings.sync.interval;
        let jitter = self.options.jitter.clamp(0.0, 1.0) * rand::random::<f64>();
        interval + interval.mul_f64(jitter)
    }

    /// Runs until `control` asks for a stop. Startup errors (bad settings,
    /// an engine that cannot be built, an unwritable store, an address in
    /// use) return before READY=1 is sent.
    pub async fn run(self, control: Control) -> Result<(), DaemonError> {
        let settings = (self.loader)()?;
        let problems = settings.readiness_problems();
        if !problems.is_empty() {
            return Err(DaemonError::Incomplete(problems));
        }
        let runner = (self.factory)(&settings).map_err(|e| DaemonError::Engine(e.to_string()))?;
        off_worker(&self.store, |store| store.check_writable())
            .await
            .unwrap_or(Ok(()))?;
        let metrics_handle = metrics::install()?;
        // After the recorder exists: a value recorded before would be lost.
        metrics::record_sync_interval(settings.sync.interval);
        self.health.set_ready_window(self.ready_window(&settings));
        self.record_store_gauges().await;

        let (stop_tx, stop_rx) = watch::channel(false);
        let server = if settings.server.enabled {
            let state = ServerState {
                health: self.health.clone(),
                store: self.store.clone(),
                metrics: Some(metrics_handle),
            };
            let addr = settings.server.listen;
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    address = %addr,
                    "the health and metrics endpoint listens beyond this machine (server.listen); it has no authentication"
                );
            }
            let server = HealthServer::bind(addr, state)
                .await
                .map_err(|cause| DaemonError::Bind { addr, cause })?;
            let local = server.local_addr().unwrap_or(addr);
            tracing::info!(address = %local, "serving /healthz, /readyz and /metrics");
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = server.serve(shutdown).await {
                    tracing::error!(error = %e, "the health endpoint failed");
                }
            }))
        } else {
            tracing::info!("the health endpoint is disabled (server.enabled = false)");
            None
        };

        let notifier = self.options.notifier;
        let watchdog = notifier.watchdog_period().map(|period| {
            tracing::info!(
                period_ms = period.as_millis() as u64,
                "systemd watchdog enabled"
            );
            tokio::spawn(super::notify::watchdog(
                notifier,
                self.options.heartbeat.clone(),
                period,
                self.options.stuck_after,
                stop_rx.clone(),
            ))
        });

        self.options.heartbeat.touch();
        self.health.set_phase(Phase::Idle);
        notifier.ready("started; first sync cycle starting");
        tracing::info!(
            interval = %humantime::format_duration(settings.sync.interval),
            store = %self.store.path().display(),
            "cosell-sync is running"
        );

        let mut current = Current { settings, runner };
        self.run_loop(&control, &mut current).await;

        self.health.set_phase(Phase::Stopping);
        notifier.stopping("stopping");
        let _ = stop_tx.send(true);
        if let Some(task) = watchdog {
            let _ = task.await;
        }
        if let Some(task) = server {
            let abort = task.abort_handle();
            if tokio::time::timeout(SERVER_DRAIN, task).await.is_err() {
                abort.abort();
            }
        }
        tracing::info!("cosell-sync stopped");
        Ok(())
    }

    async fn run_loop(&self, control: &Control, current: &mut Current<R>) {
        let heartbeat = &self.options.heartbeat;
        let mut next = Instant::now();
        let mut idle = tokio::time::interval(IDLE_TICK);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            heartbeat.touch();
            if control.stopping() {
                return;
            }
            tokio::select! {
                biased;
                _ = control.stop_requested(Stop::Graceful) => return,
                _ = control.reload.notified() => {
                    self.reload(current);
                    continue;
                }
                _ = tokio::time::sleep_until(next) => {}
                _ = idle.tick() => continue,
            }

            let started = Instant::now();
            let stop_now = self.cycle(control, current).await;
            heartbeat.touch();
            if stop_now || control.stopping() {
                return;
            }
            next = started + self.next_wait(&current.settings);
        }
    }

    /// Runs one cycle; returns true when a stop came during it.
    async fn cycle(&self, control: &Control, current: &Current<R>) -> bool {
        self.health.set_phase(Phase::Cycling);
        let started = Instant::now();
        let opts = CycleOptions::default();
        let cycle = current.runner.run_cycle(&opts);
        tokio::pin!(cycle);
        let (result, stop) = tokio::select! {
            r = &mut cycle => (Some(r), false),
            _ = control.stop_requested(Stop::Graceful) => {
                let timeout = self.options.stop_timeout;
                tracing::info!(
                    "finishing the sync cycle in flight before stopping (at most {})",
                    humantime::format_duration(timeout)
                );
                self.options.notifier.status("stopping: finishing the sync cycle in flight");
                tokio::select! {
                    r = tokio::time::timeout(timeout, &mut cycle) => match r {
                        Ok(r) => (Some(r), true),
                        Err(_) => {
                            tracing::warn!(
                                "the sync cycle did not finish within {}; abandoning it (committed work is kept, the rest is redone next start)",
                                humantime::format_duration(timeout)
                            );
                            (None, true)
                        }
                    },
                    _ = control.stop_requested(Stop::Now) => {
                        tracing::warn!("second stop request: abandoning the sync cycle in flight (committed work is kept)");
                        (None, true)
                    }
                }
            }
        };
        let elapsed = started.elapsed();
        match result {
            Some(Ok(summary)) => self.record_summary(&summary, elapsed).await,
            Some(Err(e)) => self.record_error(&e, elapsed),
            None => {}
        }
        self.health.set_phase(Phase::Idle);
        stop
    }

    async fn record_summary(&self, summary: &CycleSummary, elapsed: Duration) {
        let now = Utc::now();
        metrics::record_cycle(summary, elapsed);
        if summary.errors.is_empty() {
            metrics::record_last_success(now);
        }
        self.record_store_gauges().await;
        self.health.record_cycle(summary, now);
        self.options.notifier.status(&summary.one_line());
        if let Some(h) = metrics::handle() {
            h.run_upkeep();
        }
    }

    fn record_error(&self, e: &SyncError, elapsed: Duration) {
        let hint = match e {
            SyncError::Store(store) => store.hint(),
            SyncError::Failpoint(_) => "a test failpoint stopped the cycle",
            SyncError::Cancelled => "none: the process is stopping",
        };
        let message = format!("{e} (hint: {hint})");
        tracing::error!(error = %e, hint, "the sync cycle failed");
        metrics::record_failed_cycle(elapsed);
        self.health.record_failure(&message, Utc::now());
        self.options
            .notifier
            .status(&format!("last cycle failed: {message}"));
    }

    async fn record_store_gauges(&self) {
        match off_worker(&self.store, |store| store.read(|r| r.status_report(0))).await {
            Some(Ok(report)) => metrics::record_store_report(&report),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the store's status for metrics")
            }
            None => {}
        }
    }

    fn reload(&self, current: &mut Current<R>) {
        let notifier = self.options.notifier;
        notifier.reloading();
        match self.load() {
            Ok((settings, runner)) => {
                warn_restart_only(&current.settings, &settings);
                self.health.set_ready_window(self.ready_window(&settings));
                if let Some(hook) = &self.options.on_reload {
                    hook(&settings);
                }
                *current = Current { settings, runner };
                metrics::record_reload(true);
                tracing::info!("configuration and mappings reloaded");
                notifier.ready("configuration reloaded");
            }
            Err(message) => {
                metrics::record_reload(false);
                tracing::error!(
                    error = %message,
                    "configuration reload rejected; the previous configuration keeps running (fix the file and send SIGHUP again)"
                );
                notifier.ready(&format!(
                    "configuration reload rejected, previous configuration still running: {message}"
                ));
            }
        }
    }
}

/// Settings a running process cannot change: say so instead of ignoring them.
fn warn_restart_only(old: &Settings, new: &Settings) {
    if old.state.path != new.state.path {
        tracing::warn!(
            old = %old.state.path.display(),
            new = %new.state.path.display(),
            "state.path changed: takes effect after a restart"
        );
    }
    if old.server.enabled != new.server.enabled || old.server.listen != new.server.listen {
        tracing::warn!("server settings changed: take effect after a restart");
    }
    if old.log.level != new.log.level || old.log.format != new.log.format {
        tracing::info!("log settings changed");
    }
}
