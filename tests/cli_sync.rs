//! `sync`, `resync`, `config validate --online` and `status` as an operator
//! runs them: the binary against the simulator.

use cosell_sync::sim::{SimOptions, Simulator};

mod cli_support;
use cli_support::{SimCli, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_syncs_against_the_simulator() {
    let sim = Simulator::start(SimOptions {
        referrals: 10,
        crm_opportunities: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    let SimCli {
        dir: _dir,
        cfg,
        envs,
        ..
    } = SimCli::new(&sim, "sim");

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
