//! The alerting rules and the Grafana dashboard name only metrics that
//! `/metrics` really exports: the daemon runs a cycle against the simulator,
//! its endpoint is scraped, and every metric either file names must be there
//! (so neither can rot when a metric is renamed).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cosell_sync::config::{self, Settings, Sources};
use cosell_sync::ops::{Daemon, DaemonOptions, Notifier, control, metrics};
use cosell_sync::sim::{SimOptions, Simulator};
use cosell_sync::store::Store;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Every `cosell_…` identifier in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("cosell_") {
        let start = i + at;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            out.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// The rules of deploy/prometheus/alerts.yml: (alert, expr), checking each
/// has the keys an operator relies on.
fn alert_rules(yaml: &str) -> Vec<(String, String)> {
    let mut rules = Vec::new();
    let lines: Vec<&str> = yaml.lines().collect();
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with("- alert: "))
        .collect();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let rule = &lines[start..end];
        let name = rule[0]
            .trim_start()
            .trim_start_matches("- alert: ")
            .to_owned();
        let at = rule
            .iter()
            .position(|l| l.trim_start().starts_with("expr:"))
            .unwrap_or_else(|| panic!("{name} has no expr"));
        let first = rule[at].trim_start().trim_start_matches("expr:").trim();
        let expr = if first == "|" {
            let indent = rule[at].len() - rule[at].trim_start().len();
            rule[at + 1..]
                .iter()
                .take_while(|l| l.len() - l.trim_start().len() > indent || l.trim().is_empty())
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            first.to_owned()
        };
        for key in ["severity:", "summary:", "description:", "runbook:"] {
            assert!(
                rule.iter().any(|l| l.trim_start().starts_with(key)),
                "{name} lacks {key}"
            );
        }
        let runbook = rule
            .iter()
            .find_map(|l| l.trim().strip_prefix("runbook: "))
            .unwrap();
        assert_eq!(
            runbook.trim_matches('"'),
            format!("docs/operations.md#{}", name.to_lowercase()),
            "{name}"
        );
        rules.push((name, expr));
    }
    rules
}

/// Every `expr` (and template query) of the dashboard.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// `/metrics` of a daemon that ran one cycle against the simulator.
async fn scrape() -> String {
    let sim = Simulator::start(SimOptions {
        referrals: 12,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sim.toml");
    std::fs::write(&file, sim.daemon_config()).unwrap();
    let mut env: std::collections::BTreeMap<String, String> = sim
        .daemon_env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for (k, v) in [
        (
            "STATE__PATH",
            dir.path().join("state.db").display().to_string(),
        ),
        ("SERVER__ENABLED", "true".into()),
        ("SERVER__LISTEN", "127.0.0.1:0".into()),
    ] {
        env.insert(format!("COSELL_SYNC__{k}"), v);
    }
    let sources = Sources {
        file: Some(file),
        env,
        credentials_dir: None,
    };
    let settings: Settings = config::load(&sources).unwrap();
    metrics::install().unwrap();
    let store = Arc::new(Store::open(&settings.state.path).unwrap());
    let engine_store = store.clone();
    let daemon = Daemon::with_options(
        move || config::load(&sources),
        move |s: &Settings| {
            cosell_sync::sync::setup::build_engine(
                s,
                engine_store.clone(),
                Arc::new(cosell_sync::sync::SystemClock),
            )
            .map_err(|e| e.to_string())
        },
        store,
        DaemonOptions {
            notifier: Notifier::disabled(),
            jitter: 0.0,
            ..Default::default()
        },
    );
    let health = daemon.health();
    let (handle, ctl) = control();
    let task = tokio::spawn(daemon.run(ctl));
    let mut rx = health.subscribe();
    tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| s.cycles >= 1))
        .await
        .expect("a cycle ran")
        .unwrap();
    let addr = health.server_addr().expect("the endpoint is bound");
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    handle.shutdown();
    task.await.unwrap().unwrap();
    body
}

/// Whether the exposition has a sample of `name`.
fn exported(body: &str, name: &str) -> bool {
    body.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_dashboard_name_is_exported() {
    let rules = alert_rules(&read("deploy/prometheus/alerts.yml"));
    let names: Vec<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "CosellSyncNoSuccessfulCycle",
            "CosellSyncPausedForSignIn",
            "CosellSyncQuarantinedRecords",
            "CosellSyncReferralsNearDeadline",
            "CosellSyncThrottled",
            "CosellSyncSalesforceApiUsageHigh",
        ]
    );
    let mut used: BTreeSet<String> = BTreeSet::new();
    for (name, expr) in &rules {
        let m = metric_names(expr);
        assert!(!m.is_empty(), "{name}: {expr}");
        used.extend(m);
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/cosell-sync.json")).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "{exprs:?}");
    for e in &exprs {
        used.extend(metric_names(e));
    }
    // Every metric of the registry is on the dashboard or in a rule.
    for name in metrics::ALL {
        assert!(
            used.iter().any(|u| u.starts_with(name)),
            "{name} is neither alerted on nor shown"
        );
    }

    let body = scrape().await;
    let missing: Vec<&String> = used.iter().filter(|m| !exported(&body, m)).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{body}");
    // The deadline buckets the near-deadline alert reads are all there.
    for bucket in ["lt_48h", "lt_7d", "ge_7d"] {
        assert!(
            body.contains(&format!(
                "cosell_sync_received_referrals_by_time_left{{left=\"{bucket}\"}}"
            )),
            "{body}"
        );
    }
}
