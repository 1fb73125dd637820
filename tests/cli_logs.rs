//! JSON logs as journald and log shippers see them: one flat object per
//! line, with the stable field names docs/operations.md lists and the
//! cycle's correlation id on every line the cycle writes.

use std::collections::BTreeSet;

use cosell_sync::sim::{SimOptions, Simulator};

mod cli_support;
use cli_support::{SimCli, run};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_logs_flat_json_with_the_stable_field_names() {
    let sim = Simulator::start(SimOptions {
        referrals: 8,
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
    let (code, out, err) = run(
        &[
            "sync",
            "--once",
            "-c",
            &cfg,
            "--log-format",
            "json",
            "--log-level",
            "info,cosell_sync=debug",
        ],
        &envs,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 10, "{err}");
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut correlation_ids: BTreeSet<&str> = BTreeSet::new();
    for l in &lines {
        let obj = l.as_object().unwrap();
        for key in ["timestamp", "level", "message"] {
            assert!(obj[key].is_string(), "{key} missing: {l}");
        }
        for (key, value) in obj {
            seen.insert(key.as_str());
            // Flat: no nested span or field objects to unpack.
            assert!(
                !value.is_object() && !value.is_array(),
                "{key} is nested: {l}"
            );
            // The names these fields had before they were made stable.
            assert!(
                !["record", "target_side", "fields", "span", "spans"].contains(&key.as_str()),
                "{l}"
            );
        }
        // Every line the cycle writes carries its correlation id.
        if obj.contains_key("side") || obj.contains_key("operation") {
            correlation_ids.insert(
                obj["correlation_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{l}")),
            );
        }
        for key in ["referral_id", "crm", "crm_id"] {
            if let Some(v) = obj.get(key) {
                assert!(
                    v.as_str().is_some_and(|v| !v.is_empty()),
                    "{key} empty: {l}"
                );
            }
        }
    }
    assert_eq!(
        correlation_ids.len(),
        1,
        "one cycle, one id: {correlation_ids:?}"
    );
    for key in cosell_sync::telemetry::STABLE_FIELDS {
        assert!(seen.contains(key), "no line has {key}: {seen:?}");
    }
    let summary = lines
        .iter()
        .find(|l| l.get("outcome").is_some() && l.get("writes").is_some())
        .expect("the cycle's summary line");
    // The simulator's sample data includes deals that cannot be synced.
    assert!(
        ["clean", "degraded"].contains(&summary["outcome"].as_str().unwrap()),
        "{summary}"
    );
    assert_eq!(summary["level"], "INFO");
    // An effect names its record, its side and what it did.
    assert!(
        lines.iter().any(|l| l["side"] == "partner_center"
            && l["operation"] == "create"
            && l["crm"].is_string()
            && l["crm_id"].is_string()),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["referral_id"].is_string() && l["operation"].is_string()),
        "{err}"
    );
}
