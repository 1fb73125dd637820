//! The `run` loop in process, on tokio's paused clock: cycles on the interval,
//! stop during and between cycles, SIGHUP-style reloads (a broken config
//! keeps the old one), readiness and metrics after each cycle.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{TimeZone, Utc};
use cosell_sync::config::{self, ConfigError, Settings, Sources};
use cosell_sync::ops::health::{Phase, ServerState, router};
use cosell_sync::ops::{
    Control, ControlHandle, CycleRunner, Daemon, DaemonError, DaemonOptions, Health, Notifier,
    control, metrics,
};
use cosell_sync::store::{CrmKind, Store};
use cosell_sync::sync::{
    CycleOptions, CycleSummary, Paused, Side, SideError, SideErrorKind, SyncError,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt;

/// What a scripted cycle does.
#[derive(Clone)]
enum Step {
    Finish(CycleSummary),
    /// Takes this long, then finishes clean.
    Slow(Duration),
    /// Never finishes.
    Hang,
}

/// A cycle runner that records which engine generation ran each cycle and
/// when, and plays a script (the last step repeats).
#[derive(Clone)]
struct Scripted {
    generation: u32,
    log: Arc<Mutex<Vec<(u32, Instant)>>>,
    script: Arc<Mutex<Vec<Step>>>,
    /// When set, each cycle waits for a permit before it starts.
    gate: Option<Arc<Semaphore>>,
}

impl CycleRunner for Scripted {
    fn run_cycle(
        &self,
        _opts: &CycleOptions,
    ) -> impl std::future::Future<Output = Result<CycleSummary, SyncError>> + Send {
        let this = self.clone();
        async move {
            if let Some(gate) = &this.gate {
                gate.acquire().await.unwrap().forget();
            }
            let step = {
                let mut s = this.script.lock().unwrap();
                if s.len() > 1 {
                    s.remove(0)
                } else {
                    s[0].clone()
                }
            };
            this.log
                .lock()
                .unwrap()
                .push((this.generation, Instant::now()));
            match step {
                Step::Finish(summary) => Ok(summary),
                Step::Slow(d) => {
                    tokio::time::sleep(d).await;
                    Ok(CycleSummary::default())
                }
                Step::Hang => std::future::pending().await,
            }
        }
    }
}

type Loader = Box<dyn Fn() -> Result<Settings, ConfigError> + Send + Sync>;
type Factory = Box<dyn Fn(&Settings) -> Result<Scripted, String> + Send + Sync>;
type TestDaemon = Daemon<Loader, Factory, Scripted>;

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    /// What the loader returns next.
    config: Arc<Mutex<Result<Settings, String>>>,
    loads: Arc<AtomicU32>,
    builds: Arc<AtomicU32>,
    log: Arc<Mutex<Vec<(u32, Instant)>>>,
    script: Arc<Mutex<Vec<Step>>>,
    gate: Option<Arc<Semaphore>>,
}

fn settings(extra: &[(&str, &str)]) -> Settings {
    let mut env = BTreeMap::new();
    env.insert(
        "COSELL_SYNC__PARTNER_CENTER__CLIENT_ID".to_owned(),
        "11111111-2222-3333-4444-555555555555".to_owned(),
    );
    env.insert(
        "COSELL_SYNC__SERVER__ENABLED".to_owned(),
        "false".to_owned(),
    );
    for (k, v) in extra {
        env.insert(format!("COSELL_SYNC__{k}"), (*v).to_owned());
    }
    config::load(&Sources {
        env,
        ..Default::default()
    })
    .unwrap()
}

fn clean() -> CycleSummary {
    let mut s = CycleSummary::default();
    s.partner_center.read = 2;
    s.crm(CrmKind::Salesforce).updated = 1;
    s
}

fn paused_for_sign_in() -> CycleSummary {
    let mut s = CycleSummary::default();
    s.paused.push(Paused::operator(Side::PartnerCenter));
    s.errors.push(SideError::new(
        Side::PartnerCenter,
        SideErrorKind::Operator,
        "sign-in needed: run `cosell-sync login partner-center`",
        "",
    ));
    s
}

impl Harness {
    fn new(script: Vec<Step>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("state.db")).unwrap());
        Harness {
            _dir: dir,
            store,
            config: Arc::new(Mutex::new(Ok(settings(&[])))),
            loads: Arc::default(),
            builds: Arc::default(),
            log: Arc::default(),
            script: Arc::new(Mutex::new(script)),
            gate: None,
        }
    }

    fn set_config(&self, c: Result<Settings, String>) {
        *self.config.lock().unwrap() = c;
    }

    fn generations(&self) -> Vec<u32> {
        self.log.lock().unwrap().iter().map(|(g, _)| *g).collect()
    }

    /// The daemon over this harness; the factory refuses settings whose
    /// Partner Center page size is 7 (a stand-in for a bad mapping).
    fn daemon(&self, options: DaemonOptions) -> TestDaemon {
        let config = self.config.clone();
        let loads = self.loads.clone();
        let loader = move || {
            loads.fetch_add(1, Ordering::SeqCst);
            config
                .lock()
                .unwrap()
                .clone()
                .map_err(|message| ConfigError::Invalid {
                    key: "sync.interval".into(),
                    origin: "/etc/cosell-sync/cosell-sync.toml:3".into(),
                    message,
                })
        };
        let builds = self.builds.clone();
        let log = self.log.clone();
        let script = self.script.clone();
        let gate = self.gate.clone();
        let factory = move |s: &Settings| {
            if s.partner_center.page_size == 7 {
                return Err("mapping salesforce.toml: unknown stage `Negotiation`".to_owned());
            }
            let generation = builds.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Scripted {
                generation,
                log: log.clone(),
                script: script.clone(),
                gate: gate.clone(),
            })
        };
        Daemon::with_options(
            Box::new(loader),
            Box::new(factory),
            self.store.clone(),
            options,
        )
    }
}

fn options() -> DaemonOptions {
    DaemonOptions {
        notifier: Notifier::disabled(),
        jitter: 0.0,
        ..Default::default()
    }
}

/// Starts the daemon on its own task.
fn spawn(
    h: &Harness,
    options: DaemonOptions,
) -> (
    ControlHandle,
    Health,
    tokio::task::JoinHandle<Result<(), DaemonError>>,
) {
    let daemon = h.daemon(options);
    let health = daemon.health();
    let (handle, control): (ControlHandle, Control) = control();
    (handle, health, tokio::spawn(daemon.run(control)))
}

async fn wait_cycles(health: &Health, n: u64) {
    let mut rx = health.subscribe();
    tokio::time::timeout(
        Duration::from_secs(24 * 3600),
        rx.wait_for(|s| s.cycles >= n),
    )
    .await
    .expect("cycles did not happen")
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn cycles_run_on_the_interval_and_a_stop_between_cycles_is_immediate() {
    let h = Harness::new(vec![Step::Finish(clean())]);
    let (handle, health, task) = spawn(&h, options());
    wait_cycles(&health, 3).await;
    let starts: Vec<Instant> = h.log.lock().unwrap().iter().map(|(_, t)| *t).collect();
    assert_eq!(starts[1] - starts[0], Duration::from_secs(60));
    assert_eq!(starts[2] - starts[1], Duration::from_secs(60));

    let asked = Instant::now();
    handle.shutdown();
    task.await.unwrap().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "an idle loop stops at once"
    );
    assert_eq!(h.generations().len(), 3);
    assert_eq!(health.state().phase, Phase::Stopping);
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_its_fraction_of_the_interval() {
    let h = Harness::new(vec![Step::Finish(clean())]);
    let (handle, health, task) = spawn(
        &h,
        DaemonOptions {
            jitter: 0.5,
            ..options()
        },
    );
    wait_cycles(&health, 6).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    let starts: Vec<Instant> = h.log.lock().unwrap().iter().map(|(_, t)| *t).collect();
    for w in starts.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_secs(60) && gap <= Duration::from_secs(90),
            "{gap:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_cycle_waits_for_it_to_finish() {
    let h = Harness::new(vec![Step::Slow(Duration::from_secs(20))]);
    let (handle, health, task) = spawn(&h, options());
    let mut rx = health.subscribe();
    rx.wait_for(|s| s.phase == Phase::Cycling).await.unwrap();
    let asked = Instant::now();
    handle.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(asked.elapsed(), Duration::from_secs(20));
    let state = health.state();
    assert_eq!(
        state.cycles, 1,
        "the cycle in flight was finished and recorded"
    );
    assert_eq!(state.last_outcome.as_deref(), Some("clean"));
}

#[tokio::test(start_paused = true)]
async fn a_cycle_that_outlasts_the_stop_timeout_is_abandoned() {
    let h = Harness::new(vec![Step::Hang]);
    let (handle, health, task) = spawn(
        &h,
        DaemonOptions {
            stop_timeout: Duration::from_secs(30),
            ..options()
        },
    );
    let mut rx = health.subscribe();
    rx.wait_for(|s| s.phase == Phase::Cycling).await.unwrap();
    let asked = Instant::now();
    handle.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(asked.elapsed(), Duration::from_secs(30));
    assert_eq!(health.state().cycles, 0);
}

#[tokio::test(start_paused = true)]
async fn a_second_stop_abandons_the_cycle_at_once() {
    let h = Harness::new(vec![Step::Hang]);
    let (handle, health, task) = spawn(&h, options());
    let mut rx = health.subscribe();
    rx.wait_for(|s| s.phase == Phase::Cycling).await.unwrap();
    let asked = Instant::now();
    handle.shutdown();
    tokio::time::sleep(Duration::from_secs(2)).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(asked.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_reload_with_a_broken_config_keeps_the_old_one_running() {
    let h = Harness::new(vec![Step::Finish(clean())]);
    let (handle, health, task) = spawn(&h, options());
    wait_cycles(&health, 1).await;

    // A file that does not parse.
    h.set_config(Err("\"soon\" is not a duration".into()));
    handle.reload();
    wait_cycles(&health, 2).await;
    // Settings that parse but are incomplete (Dynamics on, no secret).
    h.set_config(Ok(settings(&[
        ("DYNAMICS__ENABLED", "true"),
        (
            "DYNAMICS__TOKEN_URL",
            "https://login.example.test/t/oauth2/v2.0/token",
        ),
        ("DYNAMICS__CLIENT_ID", "app"),
    ])));
    handle.reload();
    wait_cycles(&health, 3).await;
    // A mapping the engine factory refuses.
    h.set_config(Ok(settings(&[("PARTNER_CENTER__PAGE_SIZE", "7")])));
    handle.reload();
    wait_cycles(&health, 4).await;
    assert_eq!(h.loads.load(Ordering::SeqCst), 4);
    assert_eq!(h.builds.load(Ordering::SeqCst), 1, "nothing new was built");
    assert_eq!(
        h.generations(),
        vec![1, 1, 1, 1],
        "the old engine kept running"
    );
    let starts: Vec<Instant> = h.log.lock().unwrap().iter().map(|(_, t)| *t).collect();
    assert_eq!(starts[3] - starts[2], Duration::from_secs(60));

    // A good config is applied, its interval included.
    h.set_config(Ok(settings(&[("SYNC__INTERVAL", "5m")])));
    handle.reload();
    wait_cycles(&health, 6).await;
    assert_eq!(h.generations(), vec![1, 1, 1, 1, 2, 2]);
    let starts: Vec<Instant> = h.log.lock().unwrap().iter().map(|(_, t)| *t).collect();
    assert_eq!(starts[5] - starts[4], Duration::from_secs(300));

    handle.shutdown();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_reload_during_a_cycle_waits_for_the_cycle() {
    let h = Harness::new(vec![Step::Slow(Duration::from_secs(20))]);
    let (handle, health, task) = spawn(&h, options());
    let mut rx = health.subscribe();
    rx.wait_for(|s| s.phase == Phase::Cycling).await.unwrap();
    handle.reload();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.loads.load(Ordering::SeqCst),
        1,
        "not while the cycle runs"
    );
    wait_cycles(&health, 2).await;
    assert_eq!(h.loads.load(Ordering::SeqCst), 2);
    assert_eq!(h.generations(), vec![1, 2]);
    handle.shutdown();
    task.await.unwrap().unwrap();
}

async fn get(state: &ServerState, path: &str) -> (StatusCode, String) {
    let resp = router(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(start_paused = true)]
async fn readyz_flips_while_a_side_waits_for_sign_in_and_recovers() {
    let mut h = Harness::new(vec![
        Step::Finish(clean()),
        Step::Finish(paused_for_sign_in()),
        Step::Finish(clean()),
    ]);
    let gate = Arc::new(Semaphore::new(0));
    h.gate = Some(gate.clone());
    let (handle, health, task) = spawn(&h, options());
    let state = ServerState {
        health: health.clone(),
        store: h.store.clone(),
        metrics: metrics::handle(),
    };
    let mut rx = health.subscribe();
    rx.wait_for(|s| s.phase == Phase::Cycling).await.unwrap();

    let (code, body) = get(&state, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no sync cycle has succeeded yet"), "{body}");
    let (code, body) = get(&state, "/healthz").await;
    assert_eq!(code, StatusCode::OK, "{body}");

    gate.add_permits(1);
    wait_cycles(&health, 1).await;
    let (code, body) = get(&state, "/readyz").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["ready"], true);
    assert_eq!(json["reasons"], serde_json::json!([]));

    gate.add_permits(1);
    wait_cycles(&health, 2).await;
    let (code, body) = get(&state, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["ready"], false);
    let reasons = json["reasons"].to_string();
    assert!(
        reasons.contains("partner_center is paused until an operator acts")
            && reasons.contains("cosell-sync login partner-center"),
        "{body}"
    );
    assert_eq!(json["paused"][0]["side"], "partner_center");
    assert_eq!(json["paused"][0]["reason"], "operator");

    gate.add_permits(1);
    wait_cycles(&health, 3).await;
    let (code, body) = get(&state, "/readyz").await;
    assert_eq!(code, StatusCode::OK, "{body}");

    handle.shutdown();
    task.await.unwrap().unwrap();
    let (code, body) = get(&state, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("shutting down"), "{body}");
}

#[tokio::test(start_paused = true)]
async fn healthz_fails_when_the_loop_is_stuck_in_a_cycle() {
    let h = Harness::new(vec![Step::Hang]);
    let (handle, health, task) = spawn(
        &h,
        DaemonOptions {
            stuck_after: Duration::from_secs(600),
            ..options()
        },
    );
    let state = ServerState {
        health: health.clone(),
        store: h.store.clone(),
        metrics: metrics::handle(),
    };
    let mut rx = health.subscribe();
    rx.wait_for(|s| s.phase == Phase::Cycling).await.unwrap();
    tokio::time::sleep(Duration::from_secs(599)).await;
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, body) = get(&state, "/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("\"alive\":false"), "{body}");
    handle.shutdown();
    handle.shutdown();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_metric_name_is_exported() {
    let mut throttled = clean();
    throttled.paused.push(Paused::throttled(
        Side::Crm(CrmKind::Salesforce),
        Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).single(),
    ));
    throttled.quarantined = 1;
    let h = Harness::new(vec![Step::Finish(throttled), Step::Finish(clean())]);
    let (handle, health, task) = spawn(&h, options());
    wait_cycles(&health, 2).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    // What the HTTP clients record.
    metrics::record_api_request("salesforce", 200);
    metrics::record_api_request("partner_center", "timeout");
    metrics::record_retry("partner_center");
    metrics::record_api_duration("salesforce", Duration::from_millis(120));
    metrics::record_salesforce_api_usage(18, 5000);
    metrics::record_reload(false);

    let state = ServerState {
        health,
        store: h.store.clone(),
        metrics: metrics::handle(),
    };
    let (code, body) = get(&state, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    for name in metrics::ALL {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    for line in [
        "cosell_sync_records_read_total{side=\"partner_center\"}",
        "cosell_sync_records_written_total{side=\"salesforce\",operation=\"updated\"}",
        "cosell_sync_api_requests_total{api=\"salesforce\",status=\"200\"}",
        "cosell_sync_api_requests_total{api=\"partner_center\",status=\"timeout\"}",
        "cosell_sync_throttle_pauses_total{side=\"salesforce\"}",
        "cosell_sync_referrals{stage=\"received\"} 0",
        "cosell_sync_salesforce_api_usage{kind=\"max\"} 5000",
        "cosell_sync_cycle_duration_seconds_bucket",
        "# TYPE cosell_sync_cycle_duration_seconds histogram",
    ] {
        assert!(body.contains(line), "{line} missing from:\n{body}");
    }
}

#[tokio::test(start_paused = true)]
async fn startup_refuses_bad_settings_with_the_configuration_exit_code() {
    let h = Harness::new(vec![Step::Finish(clean())]);
    h.set_config(Err("\"soon\" is not a duration".into()));
    let (_, ctl) = control();
    let err = h.daemon(options()).run(ctl).await.unwrap_err();
    assert!(matches!(err, DaemonError::Config(_)), "{err}");
    assert_eq!(err.exit_code(), 78);
    assert!(err.to_string().contains("sync.interval"), "{err}");

    h.set_config(Ok(settings(&[("PARTNER_CENTER__PAGE_SIZE", "7")])));
    let (_, ctl) = control();
    let err = h.daemon(options()).run(ctl).await.unwrap_err();
    assert_eq!(err.exit_code(), 78);
    assert!(err.to_string().contains("unknown stage"), "{err}");
    assert_eq!(h.generations().len(), 0, "no cycle ran");
}

#[tokio::test]
async fn the_endpoint_binds_where_configured_and_a_taken_address_is_an_error() {
    let h = Harness::new(vec![Step::Finish(clean())]);
    h.set_config(Ok(settings(&[
        ("SERVER__ENABLED", "true"),
        ("SERVER__LISTEN", "127.0.0.1:0"),
    ])));
    let (handle, health, task) = spawn(&h, options());
    wait_cycles(&health, 1).await;
    let addr = health.server_addr().expect("bound");
    assert!(addr.ip().is_loopback());
    let body = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(body.status(), 200);
    let metrics_body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics_body.contains("cosell_sync_cycles_total"));

    // A second daemon on the same address fails to start, clearly.
    let h2 = Harness::new(vec![Step::Finish(clean())]);
    h2.set_config(Ok(settings(&[
        ("SERVER__ENABLED", "true"),
        ("SERVER__LISTEN", &addr.to_string()),
    ])));
    let (_, ctl) = control();
    let err = h2.daemon(options()).run(ctl).await.unwrap_err();
    assert!(matches!(err, DaemonError::Bind { .. }), "{err}");
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("server.listen"), "{err}");

    handle.shutdown();
    task.await.unwrap().unwrap();
    assert!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_err(),
        "the endpoint closes at shutdown"
    );
}
