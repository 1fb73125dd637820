//! A process that dies without closing the store loses nothing it committed.

use std::process::Command;

use chrono::Utc;
use cosell_sync::store::{NewEffect, RawJson, Store};
use serde_json::json;

const CHILD_ENV: &str = "COSELL_SYNC_TEST_CRASH_CHILD_DB";
const COMMITTED: usize = 50;

/// Runs in the child process: commit, then abort without any cleanup.
#[test]
fn child_commits_then_aborts() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return; // only meaningful when spawned by the parent test
    };
    let store = Store::open(std::path::Path::new(&path)).unwrap();
    for i in 0..COMMITTED {
        store
            .write(|r| {
                r.enqueue(
                    &NewEffect {
                        target: "salesforce".into(),
                        operation: "upsert".into(),
                        record_key: format!("r{i}"),
                        payload: RawJson::of(&json!({ "n": i })),
                    },
                    Utc::now(),
                )?;
                r.set_cursor("partner_center", &i.to_string(), Utc::now())
            })
            .unwrap();
    }
    // An uncommitted transaction in flight when the process dies.
    let _ = store.write(|r| {
        r.set_cursor("partner_center", "uncommitted", Utc::now())?;
        std::process::abort();
        #[allow(unreachable_code)]
        Ok(())
    });
}

#[test]
fn an_aborted_process_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_commits_then_aborts",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die by abort");

    let store = Store::open(&path).unwrap();
    let effects = store.read(|r| r.pending_effects()).unwrap();
    assert_eq!(effects.len(), COMMITTED);
    assert_eq!(
        effects[COMMITTED - 1].payload.value(),
        json!({ "n": COMMITTED - 1 })
    );
    assert_eq!(
        store
            .read(|r| r.cursor("partner_center"))
            .unwrap()
            .as_deref(),
        Some((COMMITTED - 1).to_string().as_str()),
        "the transaction that was open when the process died is rolled back"
    );
}
