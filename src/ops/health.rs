//! The health endpoint: `/healthz` (the sync loop is alive), `/readyz` (the
//! store is writable, a cycle succeeded recently and no side waits for an
//! operator; the JSON body says why not) and `/metrics` (Prometheus text).
//!
//! It binds only where configured: `127.0.0.1:9464` by default.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Heartbeat;
use super::metrics::{PauseReason, pauses};
use crate::store::Store;
use crate::sync::CycleSummary;

/// What the sync loop is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Idle,
    Cycling,
    Stopping,
}

/// A side paused in the last cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PausedSide {
    pub side: String,
    pub reason: PauseReason,
    /// The side's error from the cycle, with its hint.
    pub detail: Option<String>,
}

/// The sync loop's state as the probes see it.
#[derive(Debug, Clone)]
pub struct LoopState {
    pub phase: Phase,
    pub cycles: u64,
    pub last_cycle_at: Option<DateTime<Utc>>,
    /// `clean`, `degraded` or `failed`.
    pub last_outcome: Option<String>,
    pub last_summary: Option<String>,
    /// Why the last cycle did not succeed, if it did not.
    pub last_error: Option<String>,
    pub last_success: Option<(Instant, DateTime<Utc>)>,
    pub paused: Vec<PausedSide>,
    /// How recent the last success must be for `/readyz`.
    pub ready_window: Duration,
}

impl Default for LoopState {
    fn default() -> Self {
        LoopState {
            phase: Phase::Starting,
            cycles: 0,
            last_cycle_at: None,
            last_outcome: None,
            last_summary: None,
            last_error: None,
            last_success: None,
            paused: Vec::new(),
            ready_window: Duration::from_secs(15 * 60),
        }
    }
}

/// Shared health of the sync loop: written by the daemon, read by the probes.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    heartbeat: Heartbeat,
    stuck_after: Duration,
    state: watch::Sender<LoopState>,
    server_addr: Mutex<Option<SocketAddr>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

/// `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct Liveness {
    pub alive: bool,
    pub phase: Phase,
    pub heartbeat_age_seconds: u64,
    pub stuck_after_seconds: u64,
}

/// `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not ready; empty when ready.
    pub reasons: Vec<String>,
    pub phase: Phase,
    pub cycles: u64,
    pub last_success: Option<DateTime<Utc>>,
    pub last_cycle: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_summary: Option<String>,
    pub paused: Vec<PausedSide>,
}

impl Health {
    /// `stuck_after`: how old the heartbeat may get before the loop counts as stuck.
    pub fn new(heartbeat: Heartbeat, stuck_after: Duration) -> Health {
        Health {
            inner: Arc::new(Inner {
                heartbeat,
                stuck_after,
                state: watch::Sender::new(LoopState::default()),
                server_addr: Mutex::new(None),
            }),
        }
    }

    pub fn heartbeat(&self) -> &Heartbeat {
        &self.inner.heartbeat
    }

    /// A copy of the current state.
    pub fn state(&self) -> LoopState {
        self.inner.state.borrow().clone()
    }

    /// Notified on every change (tests wait on it).
    pub fn subscribe(&self) -> watch::Receiver<LoopState> {
        self.inner.state.subscribe()
    }

    /// Where the health endpoint listens, once bound.
    pub fn server_addr(&self) -> Option<SocketAddr> {
        *self
            .inner
            .server_addr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_server_addr(&self, addr: SocketAddr) {
        *self
            .inner
            .server_addr
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    pub fn set_phase(&self, phase: Phase) {
        self.inner.state.send_modify(|s| s.phase = phase);
    }

    pub fn set_ready_window(&self, window: Duration) {
        self.inner.state.send_modify(|s| s.ready_window = window);
    }

    /// A cycle finished. It succeeded unless a whole side could not be read
    /// or written (`summary.errors`); failed records alone do not count.
    pub fn record_cycle(&self, summary: &CycleSummary, at: DateTime<Utc>) {
        let paused = pauses(summary)
            .into_iter()
            .map(|(side, reason)| PausedSide {
                detail: summary
                    .errors
                    .iter()
                    .find(|e| e.side.as_str() == side)
                    .map(ToString::to_string),
                side,
                reason,
            })
            .collect();
        let success = summary.errors.is_empty();
        self.inner.state.send_modify(|s| {
            s.cycles += 1;
            s.last_cycle_at = Some(at);
            s.last_outcome = Some(summary.outcome().to_owned());
            s.last_summary = Some(summary.one_line());
            s.paused = paused;
            if success {
                s.last_success = Some((Instant::now(), at));
                s.last_error = None;
            } else {
                s.last_error = Some(join_errors(summary));
            }
        });
    }

    /// A cycle ended in an error.
    pub fn record_failure(&self, error: &str, at: DateTime<Utc>) {
        self.inner.state.send_modify(|s| {
            s.cycles += 1;
            s.last_cycle_at = Some(at);
            s.last_outcome = Some("failed".to_owned());
            s.last_summary = None;
            s.last_error = Some(error.to_owned());
        });
    }

    /// `/healthz`: alive while the loop's heartbeat is fresh.
    pub fn liveness(&self) -> Liveness {
        let hb = &self.inner.heartbeat;
        Liveness {
            alive: hb.is_fresh(self.inner.stuck_after),
            phase: self.inner.state.borrow().phase,
            heartbeat_age_seconds: hb.age().as_secs(),
            stuck_after_seconds: self.inner.stuck_after.as_secs(),
        }
    }

    /// `/readyz`, given the result of the store's write check.
    pub fn readiness(&self, store: Result<(), String>) -> Readiness {
        let s = self.inner.state.borrow().clone();
        let mut reasons = Vec::new();
        if s.phase == Phase::Stopping {
            reasons.push("shutting down".to_owned());
        }
        if let Err(e) = store {
            reasons.push(format!("the state store is not writable: {e}"));
        }
        let last_error = s
            .last_error
            .as_deref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        match s.last_success {
            None => reasons.push(format!("no sync cycle has succeeded yet{last_error}")),
            Some((at, _)) if at.elapsed() > s.ready_window => reasons.push(format!(
                "the last successful sync cycle was {} ago, more than {}{last_error}",
                humantime::format_duration(Duration::from_secs(at.elapsed().as_secs())),
                humantime::format_duration(s.ready_window)
            )),
            Some(_) => {}
        }
        for p in s
            .paused
            .iter()
            .filter(|p| p.reason == PauseReason::Operator)
        {
            reasons.push(match &p.detail {
                Some(d) => format!("{} is paused until an operator acts: {d}", p.side),
                None => format!("{} is paused until an operator acts", p.side),
            });
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
            phase: s.phase,
            cycles: s.cycles,
            last_success: s.last_success.map(|(_, at)| at),
            last_cycle: s.last_cycle_at,
            last_outcome: s.last_outcome,
            last_summary: s.last_summary,
            paused: s.paused,
        }
    }
}

/// What the endpoint handlers share.
#[derive(Clone)]
pub struct ServerState {
    pub health: Health,
    pub store: Arc<Store>,
    /// `None` answers `/metrics` with 503 (no recorder installed).
    pub metrics: Option<PrometheusHandle>,
}

/// The `/healthz`, `/readyz` and `/metrics` routes.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(state): State<ServerState>) -> Response {
    let live = state.health.liveness();
    let code = if live.alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(live)).into_response()
}

async fn readyz(State(state): State<ServerState>) -> Response {
    let store = state.store.clone();
    let check = match tokio::task::spawn_blocking(move || store.check_writable()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{e} (hint: {})", e.hint())),
        Err(e) => Err(format!("the store check did not finish: {e}")),
    };
    let ready = state.health.readiness(check);
    let code = if ready.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(ready)).into_response()
}

async fn metrics(State(state): State<ServerState>) -> Response {
    match &state.metrics {
        Some(handle) => {
            handle.run_upkeep();
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                handle.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not being recorded in this process\n",
        )
            .into_response(),
    }
}

/// The health endpoint, bound and ready to serve.
pub struct HealthServer {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl HealthServer {
    /// Binds `addr` (and only it).
    pub async fn bind(addr: SocketAddr, state: ServerState) -> std::io::Result<HealthServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        if let Ok(local) = listener.local_addr() {
            state.health.set_server_addr(local);
        }
        Ok(HealthServer {
            listener,
            router: router(state),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then finishes open requests.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Binds `listen` and serves the endpoint until `shutdown` completes.
pub async fn serve(
    listen: SocketAddr,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    HealthServer::bind(listen, state)
        .await?
        .serve(shutdown)
        .await
}

/// The cycle's whole-side failures, as one line.
fn join_errors(summary: &CycleSummary) -> String {
    summary
        .errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CrmKind;
    use crate::sync::{Paused, Side, SideError, SideErrorKind};

    fn summary_paused(side: Side) -> CycleSummary {
        let mut s = CycleSummary::default();
        s.paused.push(Paused::operator(side));
        s.errors.push(SideError::new(
            side,
            SideErrorKind::Operator,
            "sign-in needed: run `cosell-sync login partner-center`",
            "",
        ));
        s
    }

    #[tokio::test(start_paused = true)]
    async fn ready_after_a_recent_success_only() {
        let health = Health::new(Heartbeat::new(), Duration::from_secs(60));
        health.set_ready_window(Duration::from_secs(300));
        let r = health.readiness(Ok(()));
        assert!(!r.ready);
        assert!(
            r.reasons[0].contains("no sync cycle has succeeded yet"),
            "{r:?}"
        );

        let mut clean = CycleSummary::default();
        clean.crm(CrmKind::Salesforce).read = 3;
        health.record_cycle(&clean, Utc::now());
        let r = health.readiness(Ok(()));
        assert!(r.ready, "{r:?}");
        assert_eq!(r.last_outcome.as_deref(), Some("clean"));

        let r = health.readiness(Err("disk full".into()));
        assert!(!r.ready);
        assert!(r.reasons[0].contains("disk full"));

        tokio::time::advance(Duration::from_secs(301)).await;
        let r = health.readiness(Ok(()));
        assert!(!r.ready);
        assert!(r.reasons[0].contains("more than 5m"), "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_operator_pause_is_not_ready_and_a_throttle_is() {
        let health = Health::new(Heartbeat::new(), Duration::from_secs(60));
        health.record_cycle(&CycleSummary::default(), Utc::now());
        health.record_cycle(&summary_paused(Side::PartnerCenter), Utc::now());
        let r = health.readiness(Ok(()));
        assert!(!r.ready);
        assert!(
            r.reasons.iter().any(
                |x| x.contains("partner_center is paused until an operator acts")
                    && x.contains("login partner-center")
            ),
            "{r:?}"
        );

        let mut throttled = CycleSummary::default();
        throttled.paused.push(Paused::throttled(
            Side::Crm(CrmKind::Salesforce),
            Some(Utc::now()),
        ));
        health.record_cycle(&throttled, Utc::now());
        let r = health.readiness(Ok(()));
        assert!(r.ready, "a throttle resumes by itself: {r:?}");
        assert_eq!(r.paused[0].reason, PauseReason::Throttled);
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_follows_the_heartbeat() {
        let hb = Heartbeat::new();
        let health = Health::new(hb.clone(), Duration::from_secs(60));
        assert!(health.liveness().alive);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!health.liveness().alive);
        hb.touch();
        assert!(health.liveness().alive);
    }
}
