//! The daemon as a real process: real signals, a real engine against a mock
//! Partner Center, sd_notify messages captured on a test NOTIFY_SOCKET.
//!
//! The parent test re-executes this test binary with an environment
//! variable that makes the child test run the daemon (see store_crash.rs).

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use cosell_sync::config::{self, Settings, Sources};
use cosell_sync::ops::{Daemon, DaemonOptions, Notifier};
use cosell_sync::partner_center::{
    MemoryRefreshTokenStore, PartnerCenterClient, PartnerCenterError, PartnerCenterOptions,
};
use cosell_sync::store::Store;
use cosell_sync::sync::{Engine, SystemClock};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const CHILD_CONFIG: &str = "COSELL_SYNC_TEST_DAEMON_CONFIG";
const REFRESH_TOKEN: &str = "0.ARwA-test-refresh-token";
const REFERRALS: &str = "/v1.0/engagements/referrals";
const TOKEN_PATH: &str = "/organizations/oauth2/v2.0/token";

fn sources(config: &Path) -> Sources {
    let mut env = BTreeMap::new();
    env.insert(
        "COSELL_SYNC__PARTNER_CENTER__REFRESH_TOKEN".to_owned(),
        REFRESH_TOKEN.to_owned(),
    );
    Sources {
        file: Some(config.to_path_buf()),
        env,
        credentials_dir: None,
    }
}

/// Runs in the child process only: the daemon as `cosell-sync run` runs it.
#[test]
fn child_runs_the_daemon() {
    let Some(config_path) = std::env::var_os(CHILD_CONFIG).map(PathBuf::from) else {
        return; // only meaningful when spawned by a parent test
    };
    let first = config::load(&sources(&config_path)).expect("the first config is valid");
    let store = Arc::new(Store::open(&first.state.path).unwrap());
    let loader = {
        let config_path = config_path.clone();
        move || config::load(&sources(&config_path))
    };
    let factory = {
        let store = store.clone();
        move |s: &Settings| -> Result<Engine, PartnerCenterError> {
            let pc = PartnerCenterClient::new(
                PartnerCenterOptions::from_settings(&s.partner_center),
                Arc::new(MemoryRefreshTokenStore::new(Some(REFRESH_TOKEN))),
            )?;
            Ok(Engine::new(
                store.clone(),
                pc,
                Vec::new(),
                s.sync.clone(),
                Arc::new(SystemClock),
            ))
        }
    };
    let daemon = Daemon::with_options(
        loader,
        factory,
        store,
        DaemonOptions {
            stop_timeout: Duration::from_secs(20),
            notifier: Notifier::from_env(),
            ..Default::default()
        },
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _ = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    if let Err(e) = rt.block_on(daemon.run_with_signals()) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}

/// Collects datagrams sent to a NOTIFY_SOCKET.
struct NotifySocket {
    path: PathBuf,
    messages: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let (lock, cvar) = &*sink;
                lock.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                cvar.notify_all();
            }
        });
        NotifySocket { path, messages }
    }

    fn all(&self) -> Vec<String> {
        self.messages.0.lock().unwrap().clone()
    }

    /// Waits for a message containing `needle`, after the first `skip` messages.
    fn wait_for(&self, needle: &str, skip: usize) -> (usize, String) {
        let (lock, cvar) = &*self.messages;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut msgs = lock.lock().unwrap();
        loop {
            if let Some((i, m)) = msgs
                .iter()
                .enumerate()
                .skip(skip)
                .find(|(_, m)| m.contains(needle))
            {
                return (i, m.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {needle:?} in {:?}", *msgs);
            msgs = cvar.wait_timeout(msgs, left).unwrap().0;
        }
    }
}

struct Setup {
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    server: MockServer,
    /// One message per referrals listing the mock answered.
    listed: mpsc::Receiver<()>,
    config: PathBuf,
    db: PathBuf,
    notify: NotifySocket,
}

fn good_config(server: &MockServer, db: &Path, listen: &str, interval: &str) -> String {
    format!(
        r#"[state]
path = "{db}"

[sync]
interval = "{interval}"

[server]
enabled = true
listen = "{listen}"

[partner_center]
base_url = "{base}"
token_url = "{base}{TOKEN_PATH}"
device_code_url = "{base}/organizations/oauth2/v2.0/devicecode"
client_id = "11111111-2222-3333-4444-555555555555"
"#,
        db = db.display(),
        base = server.uri(),
    )
}

fn setup(listing_delay: Duration) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(MockServer::start());
    let (tx, listed) = mpsc::channel();
    let tx = Mutex::new(tx);
    let fixture = |name: &str| -> serde_json::Value {
        let p = format!(
            "{}/fixtures/partner_center/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    // One page, no continuation: an inbound referral waiting for an answer,
    // an accepted one and a won one.
    let page = serde_json::json!({
        "value": [
            fixture("referral_new_pending.json"),
            fixture("referral_active_accepted.json"),
            fixture("referral_closed_won.json"),
        ],
        "@odata.count": 3
    })
    .to_string();
    rt.block_on(async {
        Mock::given(method("POST"))
            .and(path(TOKEN_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "token_type": "Bearer", "expires_in": 3599,
                "access_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.ACCESS.sig"
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(REFERRALS))
            .respond_with(move |_: &Request| {
                let _ = tx.lock().unwrap().send(());
                ResponseTemplate::new(200)
                    .set_body_raw(page.clone(), "application/json")
                    .set_delay(listing_delay)
            })
            .mount(&server)
            .await;
    });
    let db = dir.path().join("state").join("cosell-sync.db");
    let config = dir.path().join("cosell-sync.toml");
    let notify = NotifySocket::bind(dir.path());
    Setup {
        dir,
        rt,
        server,
        listed,
        config,
        db,
        notify,
    }
}

/// The daemon child; killed if the test fails before it exits.
struct ChildDaemon(Option<Child>);

impl ChildDaemon {
    fn child(&self) -> &Child {
        self.0.as_ref().unwrap()
    }
}

impl Drop for ChildDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_child(s: &Setup) -> ChildDaemon {
    ChildDaemon(Some(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_runs_the_daemon",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_CONFIG, &s.config)
            .env("NOTIFY_SOCKET", &s.notify.path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ))
}

fn signal(daemon: &ChildDaemon, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(daemon.child().id()).unwrap();
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill failed");
}

/// Waits for the child to exit (at most a minute); returns its status and stderr.
fn wait_exit(mut daemon: ChildDaemon) -> (std::process::ExitStatus, String) {
    let child = daemon.0.take().unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(Duration::from_secs(60)) else {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), libc::SIGKILL) };
        panic!("the daemon did not exit within a minute");
    };
    let out = out.unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn free_loopback_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn sigterm_during_a_cycle_finishes_it_and_exits_cleanly() {
    let s = setup(Duration::from_millis(1500));
    std::fs::write(
        &s.config,
        good_config(&s.server, &s.db, "127.0.0.1:0", "1h"),
    )
    .unwrap();
    let child = spawn_child(&s);

    let (ready_at, _) = s.notify.wait_for("READY=1", 0);
    s.listed
        .recv_timeout(Duration::from_secs(60))
        .expect("the first cycle lists Partner Center");
    // The listing answer is delayed: the cycle is in flight now.
    signal(&child, libc::SIGTERM);
    let (status, output) = wait_exit(child);
    assert!(status.success(), "exit {status:?}:\n{output}");
    assert!(
        output.contains("finishing the sync cycle in flight"),
        "{output}"
    );

    let (stopping_at, _) = s.notify.wait_for("STOPPING=1", 0);
    assert!(ready_at < stopping_at);
    let all = s.notify.all();
    assert!(all.iter().any(|m| m.contains("WATCHDOG=1")), "{all:?}");
    assert!(
        all.iter()
            .any(|m| m.starts_with("STATUS=") && m.contains("partner center: 3 read")),
        "the finished cycle's summary is the status: {all:?}"
    );

    // The store is consistent and the cycle's work is committed.
    let conn = rusqlite::Connection::open(&s.db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    let store = Store::open(&s.db).unwrap();
    let runs = store.read(|r| r.last_runs(5)).unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].finished_at.is_some(), "{runs:?}");
    assert_eq!(runs[0].outcome.as_deref(), Some("clean"));
    let report = store.read(|r| r.status_report(0)).unwrap();
    assert_eq!(report.referrals_total, 3);
    assert!(
        store
            .read(|r| r.cursor("partner_center"))
            .unwrap()
            .is_some()
    );
    drop(s.rt);
    drop(s.dir);
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_running() {
    let s = setup(Duration::ZERO);
    let listen = free_loopback_port();
    std::fs::write(&s.config, good_config(&s.server, &s.db, &listen, "1h")).unwrap();
    let child = spawn_child(&s);

    let (ready, _) = s.notify.wait_for("READY=1", 0);
    let (first_status, _) = s.notify.wait_for("partner center: 3 read", ready);

    std::fs::write(&s.config, "[sync]\ninterval = \"soon\"\n").unwrap();
    signal(&child, libc::SIGHUP);
    let (reloading, _) = s.notify.wait_for("RELOADING=1", first_status);
    let (rejected, msg) = s.notify.wait_for("reload rejected", reloading);
    assert!(msg.contains("READY=1"), "a reload ends with READY=1: {msg}");
    assert!(
        msg.contains("sync.interval"),
        "the message names the key: {msg}"
    );

    // Still running the old configuration: ready on the old address.
    let ready_body = s.rt.block_on(async {
        reqwest::get(format!("http://{listen}/readyz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(ready_body.contains("\"ready\":true"), "{ready_body}");

    // A fixed file is applied.
    std::fs::write(&s.config, good_config(&s.server, &s.db, &listen, "2h")).unwrap();
    signal(&child, libc::SIGHUP);
    s.notify.wait_for("configuration reloaded", rejected);

    signal(&child, libc::SIGTERM);
    let (status, output) = wait_exit(child);
    assert!(status.success(), "exit {status:?}:\n{output}");
    assert!(
        output.contains("configuration reload rejected"),
        "logged clearly: {output}"
    );
    s.notify.wait_for("STOPPING=1", 0);
}
