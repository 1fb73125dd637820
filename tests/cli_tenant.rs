//! One store, one tenant: the first sync records the Partner Center sign-in
//! and the CRM orgs, `status` prints them, and the daemon (and `sync`)
//! refuse a store that belongs to another tenant with exit 78 naming both.

use cosell_sync::sim::{SimOptions, Simulator};

mod cli_support;
use cli_support::{SimCli, run, with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_belongs_to_the_tenant_it_was_first_synced_with() {
    let sim = Simulator::start(SimOptions {
        referrals: 5,
        crm_opportunities: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    let SimCli {
        dir: _dir,
        cfg,
        mut envs,
        ..
    } = SimCli::new(&sim, "acme");
    envs.push(("COSELL_SYNC__SERVER__LISTEN".into(), "127.0.0.1:0".into()));
    let base = |key: &str| {
        let config: toml::Table = toml::from_str(&sim.daemon_config()).unwrap();
        let (section, key) = key.split_once('.').unwrap();
        config[section][key]
            .as_str()
            .unwrap()
            .trim_end_matches('/')
            .to_owned()
    };
    let dynamics_url = base("dynamics.base_url");

    // A dry run records nothing.
    let (code, out, err) = run(&["sync", "--once", "--dry-run", "-c", &cfg], &envs).await;
    assert_eq!(code, 0, "{out}{err}");
    let (_, status, _) = run(&["status", "--json", "-c", &cfg], &envs).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["tenant"], serde_json::Value::Null, "{status}");

    let (code, out, err) = run(&["sync", "--once", "-c", &cfg], &envs).await;
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, _) = run(&["status", "-c", &cfg], &envs).await;
    assert_eq!(code, 0);
    assert!(out.contains("Tenant        first synced "), "{out}");
    assert!(
        out.contains(&format!("  dynamics        {dynamics_url}\n")),
        "{out}"
    );
    assert!(out.contains("  salesforce      "), "{out}");
    assert!(out.contains("  partner_center  app "), "{out}");
    // The partner's organization, as the simulator's referrals name it.
    assert!(
        out.contains("  organization    5e3a1f70-2c4d-4e8b-9a61-7d0c2b9e4f11 "),
        "{out}"
    );
    let (_, status, _) = run(&["status", "--json", "-c", &cfg], &envs).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["tenant"]["crm"]["dynamics"],
        dynamics_url.as_str(),
        "{status}"
    );
    assert_eq!(
        status["partner_center_organization"]["id"],
        "5e3a1f70-2c4d-4e8b-9a61-7d0c2b9e4f11"
    );

    // The same tenant syncs again.
    let (code, out, err) = run(&["sync", "--once", "-c", &cfg], &envs).await;
    assert_eq!(code, 0, "{out}{err}");

    // Another tenant's Dynamics org on this store: the daemon refuses to start.
    let globex = with(
        &envs,
        "COSELL_SYNC__DYNAMICS__BASE_URL",
        "https://globex.crm.dynamics.com",
    );
    let (code, out, err) = run(&["run", "-c", &cfg], &globex).await;
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains("belongs to another tenant"), "{err}");
    assert!(
        err.contains(&format!(
            "dynamics {dynamics_url} (recorded) vs https://globex.crm.dynamics.com (these settings)"
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: each tenant needs its own state store"),
        "{err}"
    );
    let (code, _, err) = run(&["sync", "--once", "-c", &cfg], &globex).await;
    assert_eq!(code, 78, "{err}");

    // Another Partner Center sign-in: refused too.
    let other_app = with(
        &envs,
        "COSELL_SYNC__PARTNER_CENTER__CLIENT_ID",
        "globex-app",
    );
    let (code, _, err) = run(&["run", "-c", &cfg], &other_app).await;
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("app globex-app at "), "{err}");

    // Nothing was recorded by the refusals: the store still names acme's org.
    let (_, status, _) = run(&["status", "--json", "-c", &cfg], &envs).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["tenant"]["crm"]["dynamics"],
        dynamics_url.as_str(),
        "{status}"
    );
}
