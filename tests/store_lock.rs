//! One writer per state store (DESIGN.md guarantee 8), with real processes:
//! the binary against the in-process simulator, the lock file beside the
//! store (`<state.path>.lock`) and real signals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cosell_sync::sim::{SimHandle, SimOptions, Simulator};
use serde_json::{Value, json};

/// The simulator, a config file for it and a fresh state store in a temp dir.
struct Rig {
    sim: SimHandle,
    dir: tempfile::TempDir,
    config: PathBuf,
    env: BTreeMap<String, String>,
}

impl Rig {
    async fn start(referrals: usize) -> Rig {
        let sim = Simulator::start(SimOptions {
            referrals,
            crm_opportunities: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sim.toml");
        std::fs::write(&config, sim.daemon_config()).unwrap();
        let mut env: BTreeMap<String, String> = sim
            .daemon_env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        env.insert(
            "COSELL_SYNC__STATE__PATH".into(),
            dir.path().join("state.db").display().to_string(),
        );
        // No health server: tests run in parallel and must not share a port.
        env.insert("COSELL_SYNC__SERVER__ENABLED".into(), "false".into());
        Rig {
            sim,
            dir,
            config,
            env,
        }
    }

    fn store_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.path().join("state.db.lock")
    }

    fn command(&self, args: &[&str], extra_env: &[(&str, &str)]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cosell-sync"));
        for (k, _) in std::env::vars() {
            if k.starts_with("COSELL_SYNC") || k == "RUST_LOG" || k == "CREDENTIALS_DIRECTORY" {
                cmd.env_remove(k);
            }
        }
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .envs(&self.env)
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs a command to completion (at most two minutes).
    async fn run(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Outcome {
        let started = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            self.command(args, extra_env).output(),
        )
        .await
        .unwrap_or_else(|_| panic!("`{}` did not finish within two minutes", args.join(" ")))
        .unwrap();
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: started.elapsed(),
        }
    }

    /// Starts `run` with an hour between cycles and waits until its pid is
    /// in the lock file.
    async fn start_daemon(&self, extra_env: &[(&str, &str)]) -> tokio::process::Child {
        let mut env = vec![("COSELL_SYNC__SYNC__INTERVAL", "1h")];
        env.extend_from_slice(extra_env);
        let child = self.command(&["run"], &env).spawn().unwrap();
        let pid = child.id().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(self.lock_path()).unwrap_or_default();
            if text.contains(&format!("pid={pid}")) {
                return child;
            }
            assert!(
                Instant::now() < deadline,
                "`run` (pid {pid}) did not record itself in {} within 30 s; the lock file holds {text:?}",
                self.lock_path().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a Salesforce opportunity flagged for Partner Center, complete
    /// enough to become a private deal.
    fn flagged_opportunity(&self, n: usize) -> String {
        let opp = self
            .sim
            .state()
            .create_salesforce_opportunity(json!({
                "Name": format!("Lock test deal {n}"), "Amount": 50000 + n,
                "CloseDate": "2027-03-31", "StageName": "Qualification",
                "Sync_with_Partner_Center__c": true,
                "Customer_Name__c": format!("Customer {n} Ltd"), "Customer_Street__c": "1 Main Street",
                "Customer_City__c": "Dublin", "Customer_Postal_Code__c": "D02",
                "Customer_Country__c": "IE",
                "Partner_Contact_First_Name__c": "Ada", "Partner_Contact_Last_Name__c": "Lovelace",
                "Partner_Contact_Email__c": "ada@contoso-partner.example",
                "Partner_Contact_Phone__c": "+353 1 555 0100",
                "Microsoft_Solutions__c": "SOL-12345-ABC"
            }))
            .unwrap();
        opp["Id"].as_str().expect("a Salesforce Id").to_owned()
    }

    /// The partner's own (not Microsoft-targeted) referrals made for a CRM id.
    fn deals_for(&self, crm_id: &str) -> Vec<String> {
        let st = self.sim.state();
        st.referral_ids()
            .into_iter()
            .filter_map(|id| st.referral(&id))
            .filter(|r| r["externalReferenceId"] == crm_id)
            .filter(|r| !is_for_microsoft(r))
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect()
    }
}

fn is_for_microsoft(r: &Value) -> bool {
    r["target"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x["id"] == "msft"))
}

#[derive(Debug)]
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn signal(child: &tokio::process::Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id().expect("the child still runs")).unwrap();
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// SIGTERM, then the exit status (at most a minute).
async fn stop(mut child: tokio::process::Child) -> std::process::ExitStatus {
    signal(&child, libc::SIGTERM);
    tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("`run` stops within a minute of SIGTERM")
        .unwrap()
}

fn holder_pid_line(lock: &Path) -> String {
    std::fs::read_to_string(lock).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_syncs_create_every_deal_exactly_once() {
    let rig = Rig::start(5).await;
    // A store in service already (created and migrated by a first cycle).
    let first = rig.run(&["sync", "--once"], &[]).await;
    assert_eq!(first.code, 0, "{first:#?}");
    let opportunities: Vec<String> = (0..20).map(|n| rig.flagged_opportunity(n)).collect();

    // Both start together on the same config and store; the second waits its
    // turn (default state.lock_wait: 10 s) and then finds nothing to create.
    // Each is given its own refresh token: the simulator's are single-use,
    // Entra ID's may be redeemed again, so two processes can both sign in.
    let tokens = [
        rig.sim.state().issue_refresh_token(),
        rig.sim.state().issue_refresh_token(),
    ];
    let key = "COSELL_SYNC__PARTNER_CENTER__REFRESH_TOKEN";
    let (env_a, env_b) = ([(key, tokens[0].as_str())], [(key, tokens[1].as_str())]);
    let (a, b) = tokio::join!(
        rig.run(&["sync", "--once"], &env_a),
        rig.run(&["sync", "--once"], &env_b)
    );
    assert_eq!(a.code, 0, "first sync: {a:#?}");
    assert_eq!(b.code, 0, "second sync: {b:#?}");

    let mut problems = Vec::new();
    for opp in &opportunities {
        let deals = rig.deals_for(opp);
        if deals.len() != 1 {
            problems.push(format!("{opp}: {} deal(s) {deals:?}", deals.len()));
        }
    }
    assert!(
        problems.is_empty(),
        "every flagged opportunity must become exactly one Partner Center deal:\n{}",
        problems.join("\n")
    );
    // And each opportunity carries the one referral id that was made for it.
    for opp in &opportunities {
        let written =
            rig.sim.state().salesforce_opportunity(opp).unwrap()["Referral_Identifier__c"]
                .as_str()
                .map(str::to_owned);
        assert_eq!(written, rig.deals_for(opp).into_iter().next(), "{opp}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_beside_the_running_service_exits_75_naming_it() {
    let rig = Rig::start(5).await;
    let daemon = rig.start_daemon(&[]).await;
    let pid = daemon.id().unwrap();

    let out = rig
        .run(
            &["sync", "--once"],
            &[("COSELL_SYNC__STATE__LOCK_WAIT", "1s")],
        )
        .await;
    assert_eq!(out.code, 75, "{out:#?}");
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("an error line: {out:#?}"));
    let store = rig.store_path().display().to_string();
    let expected = format!("error: the state store {store} is in use by pid {pid} (run) since ");
    assert!(
        error.starts_with(&expected),
        "names the store, the holder's pid and command: {error}"
    );
    assert!(
        error.ends_with("; wait for it to finish or stop it (systemctl stop cosell-sync)"),
        "says what to do: {error}"
    );
    // "since" is the RFC 3339 UTC time the service took the lock.
    let since = error[expected.len()..]
        .split(';')
        .next()
        .unwrap_or_default();
    let parsed = chrono::DateTime::parse_from_rfc3339(since);
    assert!(parsed.is_ok(), "since {since:?} is RFC 3339: {out:#?}");
    assert!(since.ends_with('Z'), "in UTC: {since:?}");
    assert!(
        out.took >= Duration::from_millis(900) && out.took < Duration::from_secs(20),
        "waited about state.lock_wait (1 s), took {:?}",
        out.took
    );
    assert!(
        out.stdout.is_empty(),
        "no sync report: nothing ran: {out:#?}"
    );

    let status = stop(daemon).await;
    assert!(status.success(), "`run` stops cleanly: {status:?}");
    // The service still owned the store to the end: the refused sync left
    // the holder's record alone, and the lock is free again afterwards.
    let after = rig.run(&["sync", "--once"], &[]).await;
    assert_eq!(after.code, 0, "{after:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_frees_the_store_at_once() {
    let rig = Rig::start(5).await;
    let mut daemon = rig.start_daemon(&[]).await;
    let pid = daemon.id().unwrap();
    signal(&daemon, libc::SIGKILL);
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("a killed process is reaped")
        .unwrap();
    assert!(!status.success());
    // The dead holder's record is still in the file; the kernel dropped its lock.
    assert!(
        holder_pid_line(&rig.lock_path()).contains(&format!("pid={pid}")),
        "{:?}",
        holder_pid_line(&rig.lock_path())
    );

    let out = rig
        .run(
            &["sync", "--once"],
            &[("COSELL_SYNC__STATE__LOCK_WAIT", "60s")],
        )
        .await;
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("cycle: "), "{out:#?}");
    assert!(
        out.took < Duration::from_secs(30),
        "no waiting on a dead holder (lock_wait 60 s), took {:?}",
        out.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_do_not_wait_for_the_service() {
    let rig = Rig::start(5).await;
    let daemon = rig.start_daemon(&[]).await;
    let wait = [("COSELL_SYNC__STATE__LOCK_WAIT", "60s")];

    for args in [
        &["status"][..],
        &["status", "--json"],
        &["referrals", "list"],
        &["failures", "list"],
        &["config", "show"],
        &["config", "validate"],
        &["sync", "--once", "--dry-run"],
    ] {
        let out = rig.run(args, &wait).await;
        assert_eq!(out.code, 0, "`{}`: {out:#?}", args.join(" "));
        assert!(
            out.took < Duration::from_secs(30),
            "`{}` must not wait for the lock (lock_wait 60 s), took {:?}",
            args.join(" "),
            out.took
        );
    }
    // The service held the lock all along.
    assert!(
        holder_pid_line(&rig.lock_path()).contains(&format!("pid={}", daemon.id().unwrap())),
        "{:?}",
        holder_pid_line(&rig.lock_path())
    );
    let status = stop(daemon).await;
    assert!(status.success(), "`run` stops cleanly: {status:?}");
}
