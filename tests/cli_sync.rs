//! `sync`, `resync`, `config validate --online` and `status` as an operator
//! runs them: the binary against the simulator.

use cosell_sync::sim::{SimOptions, Simulator};

async fn run(args: &[&str], envs: &[(String, String)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cosell-sync"));
    for (k, _) in std::env::vars() {
        if k.starts_with("COSELL_SYNC") || k == "RUST_LOG" || k == "CREDENTIALS_DIRECTORY" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_syncs_against_the_simulator() {
    let sim = Simulator::start(SimOptions {
        referrals: 10,
        crm_opportunities: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sim.toml");
    std::fs::write(&file, sim.daemon_config()).unwrap();
    let mut envs: Vec<(String, String)> = sim
        .daemon_env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    envs.push((
        "COSELL_SYNC__STATE__PATH".into(),
        dir.path().join("state.db").display().to_string(),
    ));
    let cfg = file.display().to_string();

    let (code, out, err) = run(&["config", "validate", "--online", "-c", &cfg], &envs).await;
    assert_eq!(code, 0, "{out}{err}");
    // The simulator's default org is a standard one: what it lacks is noted.
    assert!(
        out.contains(
            "salesforce: the external id, every stage value and every field the sync needs exist"
        ),
        "{out}"
    );
    assert!(
        out.contains("salesforce: note: Account.DunsNumber"),
        "{out}"
    );
    assert!(out.contains("dynamics: every mapped field"), "{out}");
    assert!(out.contains("partner_center: signed in"), "{out}");

    let (code, out, err) = run(&["sync", "--once", "--dry-run", "-c", &cfg], &envs).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dry run: nothing was written"), "{out}");
    assert!(out.contains("salesforce: upsert referral"), "{out}");
    let (_, status, _) = run(&["status", "--json", "-c", &cfg], &envs).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["referrals_total"], 0,
        "a dry run stores nothing: {status}"
    );
    assert_eq!(status["cursors"], serde_json::json!([]), "{status}");
    assert_eq!(status["last_runs"], serde_json::json!([]), "{status}");

    let (code, out, err) = run(&["sync", "--once", "-c", &cfg], &envs).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("SIDE"), "{out}");
    assert!(out.contains("cycle: clean"), "{out}");

    let (code, out, _) = run(&["status", "-c", &cfg], &envs).await;
    assert_eq!(code, 0);
    assert!(!out.contains(" 0 in total"), "{out}");

    let (code, out, err) = run(&["resync", "-c", &cfg], &envs).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(full reconcile)"), "{out}");

    // A side that cannot be reached makes `sync` exit 1 with the report.
    sim.state().expire_tokens(None);
    let mut broken = envs.clone();
    broken.push((
        "COSELL_SYNC__SALESFORCE__CLIENT_SECRET".into(),
        "wrong-secret".into(),
    ));
    let (code, out, err) = run(&["sync", "--once", "-c", &cfg], &broken).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with("SIDE"),
        "the report is still printed: {out}"
    );
    assert!(err.contains("salesforce"), "{err}");
    assert!(!err.contains("wrong-secret") && !out.contains("wrong-secret"));
}
