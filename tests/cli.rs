//! The command line as ops scripts use it: exit codes, messages, redaction.

use std::path::Path;
use std::process::{Command, Output};

use chrono::Utc;
use cosell_sync::domain::Referral;
use cosell_sync::store::{NewFailure, ReferralSnapshot, Store};
use serde_json::json;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cosell-sync"));
    // Nothing from the developer's environment leaks into the test.
    for (k, _) in std::env::vars() {
        if k.starts_with("COSELL_SYNC") || k == "RUST_LOG" || k == "CREDENTIALS_DIRECTORY" {
            c.env_remove(k);
        }
    }
    c
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn config_file(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("cosell-sync.toml");
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn a_misspelled_key_exits_78_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), "[sync]\ninterval = \"30s\"\nmax_attempt = 3\n");
    let (code, out, err) = run(bin().args(["config", "validate", "--config"]).arg(&file));
    assert_eq!(code, 78, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("unknown key `sync.max_attempt`"), "{err}");
    assert!(err.contains(":3"), "names the line: {err}");
    assert!(err.contains("did you mean `max_attempts`"), "{err}");
}

#[test]
fn an_invalid_value_from_the_environment_exits_78_naming_the_variable() {
    let (code, _, err) = run(bin()
        .args(["status"])
        .env("COSELL_SYNC__SYNC__INTERVAL", "soon"));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("sync.interval"), "{err}");
    assert!(err.contains("COSELL_SYNC__SYNC__INTERVAL"), "{err}");
}

#[test]
fn validate_names_missing_credentials_and_passes_when_complete() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        "[partner_center]\nclient_id = \"app\"\n[salesforce]\nenabled = true\nclient_id = \"ck\"\n",
    );
    let (code, _, err) = run(bin().args(["config", "validate", "-c"]).arg(&file));
    assert_eq!(code, 78);
    assert!(err.contains("salesforce.client_secret"), "{err}");

    let (code, out, err) = run(bin()
        .args(["config", "validate", "-c"])
        .arg(&file)
        .env("COSELL_SYNC__SALESFORCE__CLIENT_SECRET", "s3cr3t-value"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration is valid"), "{out}");
}

#[test]
fn config_show_never_prints_secrets() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(
        creds.path().join("partner_center_refresh_token"),
        "rt-0123456789",
    )
    .unwrap();
    let (code, out, err) = run(bin()
        .args(["config", "show", "--log-level", "trace"])
        .env("COSELL_SYNC__DYNAMICS__CLIENT_SECRET", "dyn-secret-value")
        .env("CREDENTIALS_DIRECTORY", creds.path()));
    assert_eq!(code, 0, "{err}");
    for secret in ["dyn-secret-value", "rt-0123456789"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "leaked {secret}"
        );
    }
    assert!(out.contains("# refresh_token: set (redacted)"), "{out}");
    assert!(out.contains("# client_secret: set (redacted)"), "{out}");
    assert!(out.contains("interval = \"1m\""), "{out}");
}

#[test]
fn status_on_a_fresh_state_file_is_empty_but_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.db");
    Store::open(&db).unwrap();
    let (code, out, err) = run(bin().args(["status"]).env("COSELL_SYNC__STATE__PATH", &db));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("(schema {})", cosell_sync::store::SCHEMA_VERSION)),
        "{out}"
    );
    assert!(out.contains("0 in total"), "{out}");
    for stage in ["received", "accepted", "won", "lost", "declined", "expired"] {
        assert!(out.contains(&format!("  {stage:<11} 0")), "{stage}: {out}");
    }
    let (code, out, _) = run(bin()
        .args(["status", "--json"])
        .env("COSELL_SYNC__STATE__PATH", &db));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["referrals_total"], 0);
    assert_eq!(v["state_exists"], true);

    // A missing store is reported, not created.
    let missing = dir.path().join("missing.db");
    let (code, out, _) = run(bin()
        .args(["status"])
        .env("COSELL_SYNC__STATE__PATH", &missing));
    assert_eq!(code, 0);
    assert!(out.contains("not created yet"));
    assert!(!missing.exists());
}

fn seeded_store(db: &Path) {
    let store = Store::open(db).unwrap();
    let now = Utc::now();
    store
        .write(|r| {
            for (id, dir, status, sub, fav) in [
                ("in-1", "Incoming", "New", "Pending", false),
                ("out-1", "Outgoing", "Active", "Accepted", true),
                ("out-2", "Outgoing", "Closed", "Won", false),
            ] {
                let referral = Referral::from_json(json!({
                    "id": id, "name": format!("Deal {id}"), "direction": dir, "status": status,
                    "substatus": sub, "favorite": fav, "type": "Independent",
                    "createdDateTime": "2026-11-20T10:00:00Z", "updatedDateTime": "2026-11-21T10:00:00Z"
                }))
                .unwrap();
                r.upsert_referral(&ReferralSnapshot::from_referral(&referral, 14, now))?;
            }
            r.append_event("in-1", now, "partner_center", "read", "received from Microsoft", None)?;
            r.record_failure(
                &NewFailure {
                    record: "out-1".into(),
                    side: "salesforce".into(),
                    kind: "invalid".into(),
                    message: "customerProfile.address.country: \"USA\" is not an ISO 3166 two-letter country code".into(),
                    hint: "fix the opportunity in the CRM".into(),
                    raw: None,
                },
                now,
            )?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn referrals_and_failures_are_listed_by_tab_and_stage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    seeded_store(&db);
    let list = |args: &[&str]| {
        let (code, out, err) = run(bin()
            .args(["referrals", "list"])
            .args(args)
            .env("COSELL_SYNC__STATE__PATH", &db));
        assert_eq!(code, 0, "{err}");
        out
    };
    let out = list(&["--outbound"]);
    assert!(
        out.contains("out-1") && out.contains("out-2") && !out.contains("in-1"),
        "{out}"
    );
    assert!(out.contains("2 referral(s)"));
    let out = list(&["--favorites"]);
    assert!(out.contains("out-1") && !out.contains("out-2"), "{out}");
    let out = list(&["--stage", "won"]);
    assert!(
        out.contains("out-2") && out.contains("1 referral(s)"),
        "{out}"
    );
    let out = list(&["--inbound", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["stage"], "received");

    let (code, _, err) = run(bin().args(["referrals", "list", "--stage", "maybe"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown stage"), "{err}");

    let (code, out, _) = run(bin()
        .args(["referrals", "show", "in-1"])
        .env("COSELL_SYNC__STATE__PATH", &db));
    assert_eq!(code, 0);
    assert!(out.contains("received (New/Pending)"), "{out}");
    assert!(out.contains("received from Microsoft"), "{out}");

    let (code, _, err) = run(bin()
        .args(["referrals", "show", "nope"])
        .env("COSELL_SYNC__STATE__PATH", &db));
    assert_eq!(code, 1);
    assert!(
        err.contains("referral nope is not in the state store"),
        "{err}"
    );

    let (code, out, _) = run(bin()
        .args(["failures", "list"])
        .env("COSELL_SYNC__STATE__PATH", &db));
    assert_eq!(code, 0);
    assert!(
        out.contains("out-1") && out.contains("hint: fix the opportunity in the CRM"),
        "{out}"
    );
}

#[test]
fn usage_errors_exit_2_and_json_logs_are_json() {
    let (code, _, _) = run(bin().args(["frobnicate"]));
    assert_eq!(code, 2);
    let (code, _, _) = run(&mut bin());
    assert_eq!(code, 2);
    let (code, out, _) = run(bin().arg("--version"));
    assert_eq!(code, 0);
    assert!(out.starts_with("cosell-sync "));

    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(bin()
        .args(["status", "--log-format", "json", "--log-level", "debug"])
        .env("COSELL_SYNC__STATE__PATH", dir.path().join("x.db")));
    assert_eq!(code, 0);
    let line = err
        .lines()
        .find(|l| l.contains("starting"))
        .expect("a debug line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "DEBUG");
}

#[test]
fn validate_checks_the_mapping_of_each_enabled_crm() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        "[partner_center]\nclient_id = \"app\"\n[salesforce]\nenabled = true\nclient_id = \"ck\"\n",
    );
    let env = ("COSELL_SYNC__SALESFORCE__CLIENT_SECRET", "x");
    // No mapping file next to the config: the built-in default is used and is valid.
    let (code, out, err) = run(bin()
        .args(["config", "validate", "-c"])
        .arg(&file)
        .env(env.0, env.1));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("mapping built-in mappings/salesforce.toml"),
        "{out}"
    );

    // A broken mapping is named with file, line and key.
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    let broken = cosell_sync::mapping::DEFAULT_SALESFORCE.replacen(
        "\"name\"                        = { crm = \"Name\", empty = \"keep\" }",
        "\"name\"                        = { crm = \"Name\", directon = \"both\" }",
        1,
    );
    assert_ne!(
        broken,
        cosell_sync::mapping::DEFAULT_SALESFORCE,
        "the test edits a real line"
    );
    std::fs::write(dir.path().join("mappings/salesforce.toml"), broken).unwrap();
    let (code, _, err) = run(bin()
        .args(["config", "validate", "-c"])
        .arg(&file)
        .env(env.0, env.1));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("mappings/salesforce.toml:"), "{err}");
    assert!(err.contains("directon"), "{err}");
}

#[test]
fn failures_retry_puts_the_quarantined_effect_back_and_ignore_silences_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("f.db");
    let store = Store::open(&db).unwrap();
    let effect = json!({"effect": "crm_upsert", "crm": "salesforce"});
    let (quarantined, invalid) = store
        .write(|r| {
            let q = r.record_failure(
                &NewFailure {
                    record: "r-9".into(),
                    side: "salesforce".into(),
                    kind: "permanent".into(),
                    message: "INVALID_FIELD".into(),
                    hint: "fix the mapping".into(),
                    raw: Some(
                        json!({"effect": effect, "target": "salesforce", "operation": "upsert"})
                            .to_string(),
                    ),
                },
                Utc::now(),
            )?;
            let i = r.record_failure(
                &NewFailure {
                    record: "salesforce:006X".into(),
                    side: "salesforce".into(),
                    kind: "invalid".into(),
                    message: "team: at least one employee".into(),
                    hint: "fix the opportunity".into(),
                    raw: None,
                },
                Utc::now(),
            )?;
            Ok((q.id, i.id))
        })
        .unwrap();
    drop(store);
    let env = ("COSELL_SYNC__STATE__PATH", db.display().to_string());

    let (code, out, err) = run(bin()
        .args(["failures", "retry", &quarantined.to_string()])
        .env(env.0, &env.1));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("back in the outbox"), "{out}");
    let store = Store::open(&db).unwrap();
    let pending = store.read(|r| r.pending_effects()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].payload.value(), effect);
    assert_eq!(pending[0].record_key, "r-9");
    drop(store);

    let (code, out, _) = run(bin()
        .args(["failures", "retry", &invalid.to_string()])
        .env(env.0, &env.1));
    assert_eq!(code, 0);
    assert!(out.contains("marked for retry"), "{out}");

    let (code, _, _) = run(bin()
        .args(["failures", "ignore", &invalid.to_string()])
        .env(env.0, &env.1));
    assert_eq!(code, 0);
    let (_, out, _) = run(bin()
        .args(["failures", "list", "--json"])
        .env(env.0, &env.1));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let states: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        states,
        vec!["retrying"],
        "ignored failures leave the open list: {v}"
    );

    let (code, _, err) = run(bin().args(["failures", "retry", "999"]).env(env.0, &env.1));
    assert_eq!(code, 1);
    assert!(err.contains("999"), "{err}");
}
