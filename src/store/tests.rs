use chrono::{Duration, TimeZone};
use serde_json::json;

use super::*;
use crate::domain::{Referral, Stage};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state").join("cosell-sync.db")).unwrap();
    (dir, store)
}

fn referral(id: &str, direction: &str, status: &str, substatus: &str) -> Referral {
    Referral::from_json(json!({
        "id": id, "name": format!("Deal {id}"), "direction": direction, "status": status,
        "substatus": substatus, "type": "Shared", "eTag": "\"e1\"",
        "createdDateTime": "2026-11-20T10:00:00Z", "updatedDateTime": "2026-11-21T10:00:00Z",
        "futureField": {"kept": true}
    }))
    .unwrap()
}

fn link(crm: CrmKind, crm_id: &str, referral_id: &str) -> Link {
    Link {
        crm,
        crm_id: crm_id.into(),
        referral_id: Some(referral_id.into()),
        crm_hash: Some("h1".into()),
        crm_version: None,
        pc_hash: None,
        pc_version: None,
        crm_fields: Some(json!({"Name": "Deal"})),
        help_requested_at: None,
        held_edit: None,
        created_at: now(),
        updated_at: now(),
    }
}

#[test]
fn an_empty_file_is_migrated_and_reopens_at_the_same_version() {
    let (dir, store) = open();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let path = store.path().to_path_buf();
    store
        .write(|r| r.set_cursor("partner_center", "2026-11-25T00:00:00Z", now()))
        .unwrap();
    drop(store);
    let again = Store::open(&path).unwrap();
    assert_eq!(again.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(
        again
            .read(|r| r.cursor("partner_center"))
            .unwrap()
            .as_deref(),
        Some("2026-11-25T00:00:00Z")
    );
    let mode: String = again
        .lock()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = again
        .lock()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    let cache: i64 = again
        .lock()
        .query_row("PRAGMA cache_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(cache, -super::PAGE_CACHE_KIB, "a page cache of 1 MiB");
    drop(dir);
}

#[test]
fn processes_opening_a_new_file_together_migrate_it_once() {
    // A read-only command (which takes no writer lock) may open the store
    // while the service creates it: each connection must see the other's
    // migrations instead of applying them again.
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cosell-sync.db");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Store::open(&path).map(|s| s.schema_version().unwrap())
                })
            })
            .collect();
        for open in opens {
            assert_eq!(open.join().unwrap().unwrap(), SCHEMA_VERSION);
        }
    }
}

#[test]
fn a_file_from_a_newer_version_is_refused() {
    let (_dir, store) = open();
    let path = store.path().to_path_buf();
    store
        .lock()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(store);
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    assert!(err.to_string().contains("upgrade cosell-sync"));
}

#[test]
fn open_existing_does_not_create_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");
    assert!(Store::open_existing(&path).unwrap().is_none());
    assert!(!path.exists());
}

#[test]
fn snapshots_round_trip_and_keep_first_seen_and_flags() {
    let (_dir, store) = open();
    let r = referral("r1", "Incoming", "New", "Pending");
    let mut snap = ReferralSnapshot::from_referral(&r, 14, now());
    assert_eq!(snap.stage, Some(Stage::Received));
    assert_eq!(
        snap.deadline,
        Some(Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap())
    );
    store.write(|repo| repo.upsert_referral(&snap)).unwrap();
    store.write(|repo| repo.mark_locally_expired("r1")).unwrap();

    snap.first_seen = now() + Duration::hours(1);
    snap.last_seen = now() + Duration::hours(1);
    snap.name = Some("Renamed".into());
    store.write(|repo| repo.upsert_referral(&snap)).unwrap();

    let back = store.read(|repo| repo.get_referral("r1")).unwrap().unwrap();
    assert_eq!(back.first_seen, now());
    assert_eq!(back.last_seen, now() + Duration::hours(1));
    assert_eq!(back.name.as_deref(), Some("Renamed"));
    assert!(
        back.locally_expired,
        "a local expiry is never undone by a re-read"
    );
    assert_eq!(back.raw.value()["futureField"], json!({"kept": true}));
    assert_eq!(back.referral().unwrap(), r);
}

#[test]
fn a_stored_referral_whose_json_is_damaged_is_named_when_read() {
    let (_dir, store) = open();
    let r = referral("r1", "Incoming", "New", "Pending");
    let snap = ReferralSnapshot::from_referral(&r, 14, now());
    store.write(|repo| repo.upsert_referral(&snap)).unwrap();
    let back = store.read(|repo| repo.get_referral("r1")).unwrap().unwrap();
    assert_eq!(back.raw, snap.raw, "the same text reads back");
    assert_eq!(back.raw.value(), r.to_json());
    // Packed bytes cut short, then (a row written before schema 9) text
    // that is not JSON.
    for damage in [
        "UPDATE referrals SET raw_packed = substr(raw_packed, 1, length(raw_packed) - 3) WHERE id = 'r1'",
        "UPDATE referrals SET raw_packed = NULL, raw_json = '{\"id\": \"r1\"' WHERE id = 'r1'",
    ] {
        store
            .write(|repo| repo.conn.execute(damage, []).map_err(StoreError::from))
            .unwrap();
        let err = store.read(|repo| repo.get_referral("r1")).unwrap_err();
        match &err {
            StoreError::Corrupt {
                what: "referral JSON",
                detail,
            } => assert!(detail.contains("referral r1"), "{damage}: {detail}"),
            other => panic!("{damage}: {other:?}"),
        }
    }
}

#[test]
fn a_referral_and_its_crm_fields_are_stored_packed_and_read_back_whole() {
    let (_dir, store) = open();
    let r = referral("r1", "Incoming", "New", "Pending");
    let snap = ReferralSnapshot::from_referral(&r, 14, now());
    let mut l = link(CrmKind::Salesforce, "006A", "r1");
    l.crm_fields =
        Some(json!({"Name": "Deal r1", "Amount": 12.5, "Customer_Name__c": "Northwind"}));
    store
        .write(|repo| {
            repo.upsert_referral(&snap)?;
            repo.insert_link(&l)
        })
        .unwrap();
    let (text, packed, fields_text, fields_packed): (String, Vec<u8>, Option<String>, Vec<u8>) = {
        let conn = store.lock();
        conn.query_row(
            "SELECT r.raw_json, r.raw_packed, l.crm_fields, l.crm_fields_packed
               FROM referrals r, links l WHERE r.id = 'r1' AND l.crm_id = '006A'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .unwrap()
    };
    assert_eq!(
        (text.as_str(), fields_text),
        ("", None),
        "no text copy kept"
    );
    assert!(
        packed.len() < snap.raw.text().len(),
        "{} bytes",
        packed.len()
    );
    assert!(!fields_packed.is_empty());
    let back = store.read(|repo| repo.get_referral("r1")).unwrap().unwrap();
    assert_eq!(back.raw, snap.raw);
    assert_eq!(back.referral().unwrap(), r);
    let back = store
        .read(|repo| repo.link_by_crm_id(CrmKind::Salesforce, "006A"))
        .unwrap()
        .unwrap();
    assert_eq!(back.crm_fields, l.crm_fields);
    // An update repacks; fields cleared are stored as none.
    l.crm_fields = None;
    store.write(|repo| repo.update_link(&l)).unwrap();
    let back = store
        .read(|repo| repo.link_by_crm_id(CrmKind::Salesforce, "006A"))
        .unwrap()
        .unwrap();
    assert_eq!(back.crm_fields, None);
}

#[test]
fn a_link_whose_packed_fields_are_damaged_is_named_when_read() {
    let (_dir, store) = open();
    store
        .write(|repo| repo.insert_link(&link(CrmKind::Dynamics, "guid-7", "r7")))
        .unwrap();
    store
        .write(|repo| {
            repo.conn
                .execute(
                    "UPDATE links SET crm_fields_packed = X'0901000000' WHERE crm_id = 'guid-7'",
                    [],
                )
                .map_err(StoreError::from)
        })
        .unwrap();
    let err = store
        .read(|repo| repo.link_by_crm_id(CrmKind::Dynamics, "guid-7"))
        .unwrap_err();
    match &err {
        StoreError::Corrupt {
            what: "link CRM fields",
            detail,
        } => assert!(
            detail.contains("dynamics:guid-7") && detail.contains("format 9"),
            "{detail}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn lists_filter_by_tab_and_stage() {
    let (_dir, store) = open();
    store
        .write(|repo| {
            for (id, dir, st, sub) in [
                ("in-1", "Incoming", "New", "Pending"),
                ("in-2", "Incoming", "Active", "Accepted"),
                ("out-1", "Outgoing", "Active", "Accepted"),
                ("out-2", "Outgoing", "Closed", "Won"),
            ] {
                repo.upsert_referral(&ReferralSnapshot::from_referral(
                    &referral(id, dir, st, sub),
                    14,
                    now(),
                ))?;
            }
            repo.set_favorite("out-2", true)
        })
        .unwrap();
    let ids = |f: ReferralFilter| -> Vec<String> {
        let mut v: Vec<_> = store
            .read(|r| r.list_referrals(&f))
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(ReferralFilter::default()).len(), 4);
    assert_eq!(
        ids(ReferralFilter {
            inbound: true,
            ..Default::default()
        }),
        ["in-1", "in-2"]
    );
    assert_eq!(
        ids(ReferralFilter {
            favorites: true,
            ..Default::default()
        }),
        ["out-2"]
    );
    assert_eq!(
        ids(ReferralFilter {
            stage: Some(Stage::Accepted),
            ..Default::default()
        }),
        ["in-2", "out-1"]
    );
    assert_eq!(
        ids(ReferralFilter {
            outbound: true,
            stage: Some(Stage::Accepted),
            ..Default::default()
        }),
        ["out-1"]
    );
    assert!(matches!(
        store.write(|r| r.set_favorite("nope", true)),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn referrals_past_their_deadline_are_found() {
    let (_dir, store) = open();
    let snap =
        ReferralSnapshot::from_referral(&referral("r1", "Incoming", "New", "Pending"), 14, now());
    store.write(|r| r.upsert_referral(&snap)).unwrap();
    let deadline = snap.deadline.unwrap();
    assert!(
        store
            .read(|r| r.referrals_past_deadline(deadline - Duration::seconds(1)))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .read(|r| r.referrals_past_deadline(deadline))
            .unwrap()
            .len(),
        1
    );
    store.write(|r| r.mark_locally_expired("r1")).unwrap();
    assert!(
        store
            .read(|r| r.referrals_past_deadline(deadline))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn an_edit_held_on_hold_is_kept_with_its_link_and_cleared_with_it() {
    let (dir, store) = open();
    let mut l = link(CrmKind::Salesforce, "006A", "r1");
    store.write(|r| r.insert_link(&l)).unwrap();
    l.held_edit = Some(HeldEdit {
        fields: json!({"Amount": 4242}).as_object().unwrap().clone(),
        modified_at: Some(now()),
    });
    store.write(|r| r.update_link(&l)).unwrap();
    drop(store);
    let store = Store::open(&dir.path().join("state").join("cosell-sync.db")).unwrap();
    let back = store
        .read(|r| r.link_by_crm_id(CrmKind::Salesforce, "006A"))
        .unwrap()
        .unwrap();
    assert_eq!(back.held_edit, l.held_edit, "survives a restart");
    l.held_edit = None;
    store.write(|r| r.update_link(&l)).unwrap();
    let back = store
        .read(|r| r.link_by_crm_id(CrmKind::Salesforce, "006A"))
        .unwrap()
        .unwrap();
    assert_eq!(back.held_edit, None);
}

#[test]
fn links_are_unique_per_crm_record_and_per_referral() {
    let (_dir, store) = open();
    store
        .write(|r| r.insert_link(&link(CrmKind::Salesforce, "006A", "r1")))
        .unwrap();
    // The same referral may be linked once in each CRM.
    store
        .write(|r| r.insert_link(&link(CrmKind::Dynamics, "guid-1", "r1")))
        .unwrap();

    let err = store
        .write(|r| r.insert_link(&link(CrmKind::Salesforce, "006A", "r2")))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { what: "link", .. }),
        "{err}"
    );
    let err = store
        .write(|r| r.insert_link(&link(CrmKind::Salesforce, "006B", "r1")))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { what: "link", .. }),
        "{err}"
    );

    let mut l = store
        .read(|r| r.link_by_referral(CrmKind::Salesforce, "r1"))
        .unwrap()
        .unwrap();
    assert_eq!(l.crm_id, "006A");
    l.pc_hash = Some("p2".into());
    store.write(|r| r.update_link(&l)).unwrap();
    assert_eq!(
        store
            .read(|r| r.link_by_crm_id(CrmKind::Salesforce, "006A"))
            .unwrap()
            .unwrap()
            .pc_hash
            .as_deref(),
        Some("p2")
    );
    assert_eq!(store.read(|r| r.links_of_referral("r1")).unwrap().len(), 2);
    assert_eq!(l.crm_fields, Some(json!({"Name": "Deal"})));
}

#[test]
fn a_failed_transaction_leaves_nothing_behind() {
    let (_dir, store) = open();
    let result = store.write(|r| {
        r.enqueue(
            &NewEffect {
                target: "salesforce".into(),
                operation: "upsert".into(),
                record_key: "r1".into(),
                payload: RawJson::of(&json!({"Name": "x"})),
            },
            now(),
        )?;
        r.set_cursor("partner_center", "later", now())?;
        r.insert_link(&link(CrmKind::Salesforce, "006A", "r1"))?;
        r.insert_link(&link(CrmKind::Salesforce, "006A", "r1"))
    });
    assert!(result.is_err());
    assert!(store.read(|r| r.pending_effects()).unwrap().is_empty());
    assert_eq!(store.read(|r| r.cursor("partner_center")).unwrap(), None);
    assert_eq!(
        store
            .read(|r| r.link_by_crm_id(CrmKind::Salesforce, "006A"))
            .unwrap(),
        None
    );
}

#[test]
fn the_outbox_hands_out_due_effects_and_counts_attempts() {
    let (_dir, store) = open();
    let effect = |key: &str| NewEffect {
        target: "dynamics".into(),
        operation: "upsert".into(),
        record_key: key.into(),
        payload: RawJson::of(&json!({"name": key})),
    };
    let (a, b) = store
        .write(|r| {
            Ok((
                r.enqueue(&effect("a"), now())?,
                r.enqueue(&effect("b"), now())?,
            ))
        })
        .unwrap();
    let due = store.read(|r| r.due_effects(now(), 10)).unwrap();
    assert_eq!(due.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(due[0].payload.value(), json!({"name": "a"}));

    let later = now() + Duration::minutes(5);
    let attempts = store
        .write(|r| r.retry_effect_later(a, "503 Service Unavailable", later))
        .unwrap();
    assert_eq!(attempts, 1);
    store.write(|r| r.complete_effect(b)).unwrap();
    assert!(store.read(|r| r.due_effects(now(), 10)).unwrap().is_empty());
    let due = store.read(|r| r.due_effects(later, 10)).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        due[0].last_error.as_deref(),
        Some("503 Service Unavailable")
    );
    assert!(matches!(
        store.write(|r| r.retry_effect_later(999, "x", later)),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn failures_accumulate_attempts_and_move_between_states() {
    let (_dir, store) = open();
    let f = NewFailure {
        record: "r1".into(),
        side: "salesforce".into(),
        kind: "permanent".into(),
        message: "INVALID_FIELD: No such column 'Foo__c'".into(),
        hint: "fix the mapping".into(),
        raw: None,
    };
    let first = store.write(|r| r.record_failure(&f, now())).unwrap();
    assert_eq!((first.attempts, first.state), (1, FailureState::Open));
    let second = store
        .write(|r| r.record_failure(&f, now() + Duration::minutes(1)))
        .unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempts, 2);
    assert_eq!(second.first_seen, now());

    store
        .write(|r| r.set_failure_state(first.id, FailureState::Ignored))
        .unwrap();
    assert!(
        store
            .read(|r| r.list_failures(&[FailureState::Open]))
            .unwrap()
            .is_empty()
    );
    // A new occurrence of an ignored failure stays ignored.
    let third = store.write(|r| r.record_failure(&f, now())).unwrap();
    assert_eq!(third.state, FailureState::Ignored);

    store
        .write(|r| r.set_failure_state(first.id, FailureState::Retrying))
        .unwrap();
    assert!(
        store
            .write(|r| r.resolve_failure("r1", "salesforce"))
            .unwrap()
    );
    assert_eq!(
        store.read(|r| r.failure(first.id)).unwrap().unwrap().state,
        FailureState::Resolved
    );
    assert_eq!(store.read(|r| r.list_failures(&[])).unwrap().len(), 1);
}

#[test]
fn runs_and_events_are_kept_in_order() {
    let (_dir, store) = open();
    let id = store.write(|r| r.start_run(now())).unwrap();
    store
        .write(|r| {
            r.finish_run(
                id,
                now() + Duration::seconds(2),
                "clean",
                &json!({"read": 3}),
            )?;
            r.append_event(
                "r1",
                now(),
                "partner_center",
                "read",
                "received from Microsoft",
                None,
            )?;
            r.append_event(
                "r1",
                now(),
                "salesforce",
                "upsert",
                "opportunity created on hold",
                Some(&json!({"crm_id": "006A"})),
            )
        })
        .unwrap();
    let runs = store.read(|r| r.last_runs(5)).unwrap();
    assert_eq!(runs[0].outcome.as_deref(), Some("clean"));
    assert_eq!(runs[0].summary, Some(json!({"read": 3})));
    let events = store.read(|r| r.events_for("r1")).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].detail, Some(json!({"crm_id": "006A"})));
}

#[test]
fn the_status_report_of_a_fresh_store_is_empty_but_complete() {
    let (_dir, store) = open();
    let report = store.read(|r| r.status_report(5)).unwrap();
    assert_eq!(report.referrals_total, 0);
    assert_eq!(report.by_stage.len(), 7);
    assert!(report.by_stage.iter().all(|(_, n)| *n == 0));
    assert_eq!(
        report.links_by_crm,
        vec![("dynamics".into(), 0), ("salesforce".into(), 0)]
    );
    assert!(report.cursors.is_empty() && report.last_runs.is_empty());
    assert_eq!(report.schema_version, SCHEMA_VERSION);
}

#[test]
fn kv_values_are_replaced_and_deleted() {
    let (_dir, store) = open();
    store.write(|r| r.kv_set("k", "1", now())).unwrap();
    store.write(|r| r.kv_set("k", "2", now())).unwrap();
    assert_eq!(store.read(|r| r.kv_get("k")).unwrap().as_deref(), Some("2"));
    store.write(|r| r.kv_delete("k")).unwrap();
    assert_eq!(store.read(|r| r.kv_get("k")).unwrap(), None);
    store.check_writable().unwrap();
}

#[test]
fn upserting_an_effect_keeps_its_attempts() {
    let (_dir, store) = open();
    let effect = |n: i64| NewEffect {
        target: "salesforce".into(),
        operation: "upsert".into(),
        record_key: "r1".into(),
        payload: RawJson::of(&json!({ "n": n })),
    };
    let id = store.write(|r| r.upsert_effect(&effect(1), now())).unwrap();
    store
        .write(|r| r.retry_effect_later(id, "503", now() + Duration::minutes(1)))
        .unwrap();
    // What a new decision is merged into: the pending row of the operation.
    let found = store
        .read(|r| r.pending_effect("salesforce", "upsert", "r1"))
        .unwrap()
        .unwrap();
    assert_eq!((found.id, found.payload.value()), (id, json!({ "n": 1 })));
    for (operation, record) in [("close", "r1"), ("upsert", "r2")] {
        assert!(
            store
                .read(|r| r.pending_effect("salesforce", operation, record))
                .unwrap()
                .is_none()
        );
    }
    let again = store.write(|r| r.upsert_effect(&effect(2), now())).unwrap();
    assert_eq!(again, id);
    let pending = store.read(|r| r.pending_effects()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].payload.value(), json!({ "n": 2 }));
    assert_eq!(
        pending[0].attempts, 1,
        "a replaced effect keeps counting toward quarantine"
    );
    assert!(
        store
            .read(|r| r.has_pending_effect("salesforce", "r1"))
            .unwrap()
    );
    store
        .write(|r| r.postpone_target("salesforce", now() + Duration::hours(1)))
        .unwrap();
    assert!(
        store
            .read(|r| r.due_effects_for("salesforce", now() + Duration::minutes(30), 10))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn rows_are_decoded_by_column_name_not_position() {
    let (_dir, store) = open();
    store
        .write(|r| {
            r.insert_link(&link(CrmKind::Salesforce, "006A", "R1"))?;
            r.append_event("R1", now(), "salesforce", "created", "made", None)
        })
        .unwrap();
    // The columns in another order than `FromRow::COLUMNS`: still the same link.
    let reversed: Vec<&str> = <Link as repo::FromRow>::COLUMNS
        .split(',')
        .map(str::trim)
        .rev()
        .collect();
    let sql = format!("SELECT {} FROM links", reversed.join(", "));
    let got: Option<Link> = store.read(|r| r.one(&sql, [])).unwrap();
    assert_eq!(got, Some(link(CrmKind::Salesforce, "006A", "R1")));
    // An extra column does not shift the others.
    let sql = format!(
        "SELECT 'noise' AS extra, {} FROM events",
        <Event as repo::FromRow>::COLUMNS
    );
    let got: Option<Event> = store.read(|r| r.one(&sql, [])).unwrap();
    assert_eq!(
        got.map(|e| (e.kind, e.message)),
        Some(("created".into(), "made".into()))
    );
}

#[test]
fn an_unreadable_stored_value_is_a_corrupt_row_naming_what() {
    let (_dir, store) = open();
    store
        .write(|r| {
            r.insert_link(&link(CrmKind::Dynamics, "opp-1", "R1"))?;
            r.exec(
                "UPDATE links SET crm = 'sugarcrm', crm_id = 'opp-2' WHERE crm_id = 'opp-1'",
                [],
            )?;
            r.insert_link(&link(CrmKind::Dynamics, "opp-3", "R3"))?;
            r.exec(
                "UPDATE links SET updated_at = 'yesterday' WHERE crm_id = 'opp-3'",
                [],
            )?;
            Ok(())
        })
        .unwrap();
    let err = store.read(|r| r.links_of_referral("R1")).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { what: "link", ref detail } if detail.contains("sugarcrm")),
        "{err}"
    );
    let err = store
        .read(|r| r.link_by_crm_id(CrmKind::Dynamics, "opp-3"))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { what: "timestamp", ref detail } if detail.contains("yesterday")),
        "{err}"
    );
}

#[test]
fn a_chain_printer_names_the_sqlite_error_once() {
    let sqlite = rusqlite::Error::InvalidQuery;
    let text = sqlite.to_string();
    let e = StoreError::from(sqlite);
    assert_eq!(e.to_string(), format!("state store error: {text}"));
    let chain = format!("{:#}", anyhow::Error::new(e));
    assert_eq!(chain.matches(text.as_str()).count(), 1, "{chain}");

    let dir = tempfile::tempdir().unwrap();
    // A directory where the store file should be cannot be opened.
    let e = Store::open(dir.path()).unwrap_err();
    let StoreError::Open { cause, .. } = &e else {
        panic!("{e}")
    };
    let text = cause.to_string();
    let chain = format!("{:#}", anyhow::Error::new(e));
    assert_eq!(chain.matches(text.as_str()).count(), 1, "{chain}");
    assert!(std::error::Error::source(&StoreError::from(rusqlite::Error::InvalidQuery)).is_none());
}

#[test]
fn kv_with_prefix_returns_exactly_the_keys_under_it_through_the_index() {
    let (_dir, store) = open();
    store
        .write(|r| {
            for key in ["a.b", "a.b.1", "a.b.2", "a.c", "a.b/", "a.", "b"] {
                r.kv_set(key, key, now())?;
            }
            Ok(())
        })
        .unwrap();
    let keys = |prefix: &str| -> Vec<String> {
        store
            .read(|r| r.kv_with_prefix(prefix))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(keys("a.b."), ["a.b.1", "a.b.2"]);
    assert_eq!(keys("a.b"), ["a.b", "a.b.1", "a.b.2", "a.b/"]);
    assert_eq!(keys("").len(), 7);
    let plan: String = store
        .read(|r| {
            Ok(r.conn
                .query_row(
                    &format!("EXPLAIN QUERY PLAN {}", super::kv::KV_PREFIX_SQL),
                    ["a", "b"],
                    |row| row.get::<_, String>(3),
                )
                .unwrap())
        })
        .unwrap();
    assert!(plan.contains("USING INDEX"), "{plan}");
}

#[test]
fn open_deadlines_are_counted_by_time_left_and_listed_inside_a_window() {
    let (_dir, store) = open();
    // Deadlines 1 h ago, in 1 h, in 3 days, in exactly 7 days, in 10 days;
    // one answered, one expired here: neither counts.
    store
        .write(|repo| {
            for (id, hours) in [
                ("past", -1),
                ("h1", 1),
                ("d3", 72),
                ("d7", 168),
                ("d10", 240),
            ] {
                let mut s = ReferralSnapshot::from_referral(
                    &referral(id, "Incoming", "New", "Pending"),
                    14,
                    now(),
                );
                s.deadline = Some(now() + Duration::hours(hours));
                repo.upsert_referral(&s)?;
            }
            let mut accepted = ReferralSnapshot::from_referral(
                &referral("acc", "Incoming", "Active", "Accepted"),
                14,
                now(),
            );
            accepted.deadline = Some(now() + Duration::hours(1));
            repo.upsert_referral(&accepted)?;
            let mut expired = ReferralSnapshot::from_referral(
                &referral("exp", "Incoming", "New", "Pending"),
                14,
                now(),
            );
            expired.deadline = Some(now() + Duration::hours(1));
            repo.upsert_referral(&expired)?;
            repo.mark_locally_expired("exp")
        })
        .unwrap();
    let counts = store
        .read(|r| r.open_deadline_counts(now() + Duration::hours(48), now() + Duration::days(7)))
        .unwrap();
    assert_eq!(
        counts,
        [2, 1, 2],
        "under 48 h (past included), under 7 days, 7 days on"
    );
    let soon: Vec<String> = store
        .read(|r| r.open_deadlines_between(now(), now() + Duration::hours(48)))
        .unwrap()
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(soon, ["h1"]);
}

#[test]
fn pending_crm_changes_outlive_the_process_and_a_dry_runs_stay_private() {
    let (dir, store) = open();
    let path = dir.path().join("state").join("cosell-sync.db");
    let at = |m: i64| now() + Duration::minutes(m);
    store
        .write(|r| {
            r.begin_crm_changes(false)?;
            r.note_crm_change(CrmKind::Salesforce, "r1", Some(at(-5)), at(0))?;
            r.note_crm_change(CrmKind::Dynamics, "r1", None, at(0))
        })
        .unwrap();
    // Inside a write that rolls back, nothing stays.
    let failed: Result<(), StoreError> = store.write(|r| {
        r.note_crm_change(CrmKind::Salesforce, "r2", None, at(0))?;
        Err(StoreError::NotFound {
            what: "test",
            key: "rollback".into(),
        })
    });
    assert!(failed.is_err());
    let seen =
        |s: &Store, crm, id: &'static str| s.read(|r| r.pending_crm_change(crm, id)).unwrap();
    drop(store);

    // Kept across the process (a crash before Partner Center was read).
    let store = Store::open(&path).unwrap();
    assert_eq!(seen(&store, CrmKind::Salesforce, "r1"), Some(Some(at(-5))));
    assert_eq!(seen(&store, CrmKind::Dynamics, "r1"), Some(None));
    assert_eq!(seen(&store, CrmKind::Salesforce, "r2"), None);

    // A dry run beside it (another connection) reads them, notes its own
    // and forgets them in its private copy only.
    let dry = Store::open(&path).unwrap();
    dry.read(|r| {
        r.begin_crm_changes(true)?;
        r.note_crm_change(CrmKind::Salesforce, "r3", None, at(1))?;
        r.forget_crm_changes(at(0), "partner_center", "update")
    })
    .unwrap();
    assert_eq!(seen(&dry, CrmKind::Salesforce, "r3"), Some(None));
    assert_eq!(seen(&dry, CrmKind::Salesforce, "r1"), None);
    assert_eq!(seen(&store, CrmKind::Salesforce, "r3"), None);
    assert_eq!(seen(&store, CrmKind::Salesforce, "r1"), Some(Some(at(-5))));
    // Its next cycle that is not a dry run sees the stored table again.
    dry.read(|r| r.begin_crm_changes(false)).unwrap();
    assert_eq!(seen(&dry, CrmKind::Salesforce, "r1"), Some(Some(at(-5))));
    assert_eq!(seen(&dry, CrmKind::Salesforce, "r3"), None);

    // A complete listing forgets what was noted up to its start.
    store
        .write(|r| {
            r.note_crm_change(CrmKind::Salesforce, "r4", None, at(2))?;
            r.forget_crm_changes(at(1), "partner_center", "update")
        })
        .unwrap();
    assert_eq!(seen(&store, CrmKind::Salesforce, "r1"), None);
    assert_eq!(seen(&store, CrmKind::Salesforce, "r4"), Some(None));
}

#[test]
fn a_crm_change_whose_update_waits_outlives_the_listing_until_the_update_is_done() {
    let (_dir, store) = open();
    let at = |m: i64| now() + Duration::minutes(m);
    let update = |key: &str, operation: &str| NewEffect {
        target: "partner_center".into(),
        operation: operation.into(),
        record_key: key.into(),
        payload: RawJson::of(&json!({})),
    };
    let seen = |crm, id: &'static str| store.read(|r| r.pending_crm_change(crm, id)).unwrap();
    let update_id = store
        .write(|r| {
            r.begin_crm_changes(false)?;
            for id in ["waits", "sent", "other_op"] {
                r.note_crm_change(CrmKind::Salesforce, id, Some(at(-5)), at(0))?;
            }
            r.note_crm_change(CrmKind::Dynamics, "waits", None, at(0))?;
            // Another target's effect, or another operation, keeps nothing.
            r.enqueue(&update("other_op", "update_after_acceptance"), at(0))?;
            r.enqueue(
                &NewEffect {
                    target: "salesforce".into(),
                    ..update("sent", "update")
                },
                at(0),
            )?;
            r.enqueue(&update("waits", "update"), at(0))
        })
        .unwrap();
    store
        .write(|r| r.forget_crm_changes(at(1), "partner_center", "update"))
        .unwrap();
    assert_eq!(seen(CrmKind::Salesforce, "waits"), Some(Some(at(-5))));
    assert_eq!(seen(CrmKind::Dynamics, "waits"), Some(None));
    assert_eq!(seen(CrmKind::Salesforce, "sent"), None);
    assert_eq!(seen(CrmKind::Salesforce, "other_op"), None);

    // Done: the referral's rows go, in every CRM, and only its.
    store
        .write(|r| {
            r.note_crm_change(CrmKind::Salesforce, "later", None, at(2))?;
            r.complete_effect(update_id)?;
            r.forget_crm_changes_of("waits")
        })
        .unwrap();
    assert_eq!(seen(CrmKind::Salesforce, "waits"), None);
    assert_eq!(seen(CrmKind::Dynamics, "waits"), None);
    assert_eq!(seen(CrmKind::Salesforce, "later"), Some(None));
}

#[test]
fn a_crm_change_whose_update_is_quarantined_outlives_the_listing_while_the_failure_is_open() {
    let (_dir, store) = open();
    let at = |m: i64| now() + Duration::minutes(m);
    let seen = |id: &'static str| {
        store
            .read(|r| r.pending_crm_change(CrmKind::Salesforce, id))
            .unwrap()
    };
    let failure = |record: &str, raw: &str| NewFailure {
        record: record.into(),
        side: "partner_center".into(),
        kind: "permanent".into(),
        message: "HTTP 400".into(),
        hint: "fix the value".into(),
        raw: Some(raw.into()),
    };
    let update = json!({"effect": {}, "target": "partner_center", "operation": "update"});
    let ignored = store
        .write(|r| {
            r.begin_crm_changes(false)?;
            for id in ["open", "ignored", "other_op", "unreadable"] {
                r.note_crm_change(CrmKind::Salesforce, id, None, at(0))?;
            }
            r.record_failure(&failure("open", &update.to_string()), at(0))?;
            let ignored = r.record_failure(&failure("ignored", &update.to_string()), at(0))?;
            let create = json!({"effect": {}, "target": "partner_center", "operation": "create"});
            r.record_failure(&failure("other_op", &create.to_string()), at(0))?;
            // A raw record that is no JSON (an unreadable referral) keeps
            // nothing, and fails nothing.
            r.record_failure(&failure("unreadable", "{\"id\": \"unread"), at(0))?;
            Ok(ignored.id)
        })
        .unwrap();
    store
        .write(|r| r.set_failure_state(ignored, FailureState::Ignored))
        .unwrap();
    store
        .write(|r| r.forget_crm_changes(at(1), "partner_center", "update"))
        .unwrap();
    assert_eq!(seen("open"), Some(None));
    assert_eq!(seen("ignored"), None);
    assert_eq!(seen("other_op"), None);
    assert_eq!(seen("unreadable"), None);
}

fn snapshot(id: &str) -> ReferralSnapshot {
    ReferralSnapshot::from_referral(&referral(id, "Incoming", "New", "Pending"), 14, now())
}

fn event(r: &Repo<'_>, id: &str, kind: &str, message: &str) -> Result<i64, StoreError> {
    r.append_event(id, now(), "partner_center", kind, message, None)
}

fn messages(store: &Store, id: &str) -> Vec<String> {
    store
        .read(|r| r.events_for(id))
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect()
}

#[test]
fn a_referrals_history_holds_events_written_before_and_after_it_was_stored() {
    let (_dir, store) = open();
    store
        .write(|r| {
            event(r, "r1", "created", "before r1 was stored")?;
            r.upsert_referral(&snapshot("r2"))?;
            event(r, "r2", "read", "r2 stored")?;
            r.upsert_referral(&snapshot("r1"))?;
            event(r, "r1", "microsoft_window", "after r1 was stored")?;
            event(r, "r2", "updated", "r2 again")?;
            r.upsert_referral(&snapshot("r1"))?;
            event(r, "r1", "updated", "after r1 was stored again")
        })
        .unwrap();
    assert_eq!(
        messages(&store, "r1"),
        [
            "before r1 was stored",
            "after r1 was stored",
            "after r1 was stored again"
        ]
    );
    assert_eq!(messages(&store, "r2"), ["r2 stored", "r2 again"]);
    assert!(messages(&store, "r3").is_empty());
    let has = |id: &str, kind: &str| store.read(|r| r.has_event(id, kind)).unwrap();
    assert!(has("r1", "created"), "an event from before r1 was stored");
    assert!(has("r1", "microsoft_window"));
    assert!(!has("r2", "microsoft_window"));
    assert!(!has("r2", "created"));
}

#[test]
fn events_are_found_through_the_referral_sequence_not_a_scan() {
    let (_dir, store) = open();
    let plan = |sql: &str, param: &str| -> String {
        let conn = store.lock();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map([param], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows.join("\n")
    };
    let history = plan(&super::events::events_for_sql(), "r1");
    assert!(
        history.contains("USING INDEX events_by_referral_seq"),
        "{history}"
    );
    assert!(
        history.contains("USING INDEX events_of_unstored_referrals"),
        "{history}"
    );
    assert!(!history.contains("SCAN events"), "{history}");
    let lapsed = plan(&super::links::help_windows_lapsed_sql(), &ts(now()));
    assert!(!lapsed.contains("SCAN events"), "{lapsed}");
    assert!(!lapsed.contains("SCAN referrals"), "{lapsed}");
}

#[test]
fn a_referral_keeps_its_sequence_and_history_through_vacuum() {
    let (_dir, store) = open();
    store
        .write(|r| {
            for id in ["c", "a", "b"] {
                r.upsert_referral(&snapshot(id))?;
                event(r, id, "read", &format!("{id} read"))?;
            }
            Ok(())
        })
        .unwrap();
    let seqs = || -> Vec<(i64, String)> {
        let conn = store.lock();
        let mut stmt = conn
            .prepare("SELECT seq, id FROM referrals ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let before = seqs();
    assert_eq!(
        before.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(),
        ["c", "a", "b"],
        "numbered in the order first stored"
    );
    store.lock().execute_batch("VACUUM").unwrap();
    assert_eq!(seqs(), before);
    for id in ["a", "b", "c"] {
        assert_eq!(messages(&store, id), [format!("{id} read")]);
    }
}

/// A store made at schema `version` with `seed` run in it, then opened
/// (and so upgraded) by this build.
fn upgraded_from(version: usize, seed: &str) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cosell-sync.db");
    {
        let conn = Connection::open(&path).unwrap();
        for sql in &schema::MIGRATIONS[..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", version as i64)
            .unwrap();
        conn.execute_batch(seed).unwrap();
    }
    let store = Store::open(&path).unwrap();
    (dir, store)
}

#[test]
fn a_store_of_schema_6_keeps_its_referrals_and_their_history_when_upgraded() {
    let (_dir, store) = upgraded_from(
        6,
        "INSERT INTO referrals (id, status, substatus, stage, raw_json, first_seen, last_seen, deadline)
         VALUES ('zz', 'New', 'Pending', 'received', '{\"id\":\"zz\"}', '2026-11-25T10:00:00.000000Z', '2026-11-25T10:00:00.000000Z', '2026-12-01T00:00:00.000000Z'),
                ('aa', 'Active', 'Accepted', 'accepted', '{\"id\":\"aa\"}', '2026-11-25T11:00:00.000000Z', '2026-11-25T11:00:00.000000Z', NULL);
         INSERT INTO events (referral_id, at, side, kind, message)
         VALUES ('aa', '2026-11-25T12:00:00.000000Z', 'partner_center', 'read', 'aa read'),
                ('gone', '2026-11-25T12:00:00.000000Z', 'partner_center', 'created', 'never stored'),
                ('zz', '2026-11-25T12:00:00.000000Z', 'salesforce', 'created', 'zz created'),
                ('aa', '2026-11-25T12:00:00.000000Z', 'partner_center', 'microsoft_window', 'aa window');",
    );
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(messages(&store, "aa"), ["aa read", "aa window"]);
    assert_eq!(messages(&store, "zz"), ["zz created"]);
    assert_eq!(messages(&store, "gone"), ["never stored"]);
    assert!(
        store
            .read(|r| r.has_event("aa", "microsoft_window"))
            .unwrap()
    );
    let zz = store.read(|r| r.get_referral("zz")).unwrap().unwrap();
    assert_eq!(zz.stage, Some(Stage::Received));
    assert!(zz.deadline.is_some());
    let order: Vec<String> = {
        let conn = store.lock();
        let mut stmt = conn
            .prepare("SELECT id FROM referrals ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(order, ["zz", "aa"], "sequence follows the order stored");
    // A referral stored after the upgrade comes next, and the id stays unique.
    store.write(|r| r.upsert_referral(&snapshot("mm"))).unwrap();
    store.write(|r| r.upsert_referral(&snapshot("aa"))).unwrap();
    let seq: i64 = store
        .lock()
        .query_row("SELECT seq FROM referrals WHERE id = 'mm'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(seq, 3);
    let n: i64 = store
        .lock()
        .query_row("SELECT COUNT(*) FROM referrals", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn updating_a_link_changes_its_referral_only_when_asked_and_keeps_it_unique() {
    let (_dir, store) = open();
    let mut a = link(CrmKind::Salesforce, "006A", "r1");
    let b = link(CrmKind::Salesforce, "006B", "r2");
    store
        .write(|r| {
            r.insert_link(&a)?;
            r.insert_link(&b)
        })
        .unwrap();
    let referral_of = |crm_id: &str| {
        store
            .read(|r| r.link_by_crm_id(CrmKind::Salesforce, crm_id))
            .unwrap()
            .unwrap()
            .referral_id
    };

    a.crm_hash = Some("h2".into());
    store.write(|r| r.update_link(&a)).unwrap();
    assert_eq!(referral_of("006A").as_deref(), Some("r1"));

    a.referral_id = Some("r2".into());
    let err = store.write(|r| r.update_link(&a)).unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { what: "link", .. }),
        "{err}"
    );
    assert_eq!(referral_of("006A").as_deref(), Some("r1"), "rolled back");

    a.referral_id = None;
    store.write(|r| r.update_link(&a)).unwrap();
    assert_eq!(referral_of("006A"), None);
    a.referral_id = Some("r3".into());
    a.pc_hash = Some("p3".into());
    store.write(|r| r.update_link(&a)).unwrap();
    let back = store
        .read(|r| r.link_by_referral(CrmKind::Salesforce, "r3"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (back.crm_id.as_str(), back.pc_hash.as_deref()),
        ("006A", Some("p3"))
    );

    let missing = link(CrmKind::Salesforce, "006Z", "r9");
    let err = store.write(|r| r.update_link(&missing)).unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "link", .. }),
        "{err}"
    );
}

fn link_ids(store: &Store, referral_id: &str) -> Vec<String> {
    store
        .read(|r| r.links_of_referral(referral_id))
        .unwrap()
        .into_iter()
        .map(|l| format!("{}:{}", l.crm, l.crm_id))
        .collect()
}

fn referral_seq_of_link(store: &Store, crm_id: &str) -> Option<i64> {
    store
        .lock()
        .query_row(
            "SELECT referral_seq FROM links WHERE crm_id = ?1",
            [crm_id],
            |r| r.get(0),
        )
        .unwrap()
}

/// A second Salesforce link (`crm_id`) for `referral` is refused.
fn assert_a_second_link_is_refused(store: &Store, crm_id: &str, referral: &str) {
    let err = store
        .write(|r| r.insert_link(&link(CrmKind::Salesforce, crm_id, referral)))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { what: "link", .. }),
        "{crm_id}: {err}"
    );
}

#[test]
fn a_link_finds_its_referral_whether_written_before_or_after_the_referral_was_stored() {
    let (_dir, store) = open();
    // Linked before Partner Center's referral was read (a CRM record that
    // names it), then the referral is stored.
    store
        .write(|r| r.insert_link(&link(CrmKind::Salesforce, "006A", "early")))
        .unwrap();
    assert_eq!(referral_seq_of_link(&store, "006A"), None);
    assert_eq!(link_ids(&store, "early"), ["salesforce:006A"]);
    store
        .write(|r| {
            r.upsert_referral(&snapshot("first"))?;
            r.upsert_referral(&snapshot("early"))
        })
        .unwrap();
    assert_eq!(
        referral_seq_of_link(&store, "006A"),
        Some(2),
        "storing the referral gives its links its sequence"
    );
    // Stored first, linked after; and a second CRM for the same referral.
    store
        .write(|r| {
            r.insert_link(&link(CrmKind::Dynamics, "guid-1", "early"))?;
            r.insert_link(&link(CrmKind::Salesforce, "006B", "first"))
        })
        .unwrap();
    assert_eq!(referral_seq_of_link(&store, "006B"), Some(1));
    assert_eq!(
        link_ids(&store, "early"),
        ["dynamics:guid-1", "salesforce:006A"]
    );
    for (crm, referral, crm_id) in [
        (CrmKind::Salesforce, "early", "006A"),
        (CrmKind::Dynamics, "early", "guid-1"),
        (CrmKind::Salesforce, "first", "006B"),
    ] {
        let found = store.read(|r| r.link_by_referral(crm, referral)).unwrap();
        assert_eq!(found.map(|l| l.crm_id).as_deref(), Some(crm_id));
    }
    assert!(
        store
            .read(|r| r.link_by_referral(CrmKind::Dynamics, "first"))
            .unwrap()
            .is_none()
    );

    // Still one link per referral and CRM, stored or not.
    for (crm_id, referral) in [("006C", "early"), ("006D", "first")] {
        assert_a_second_link_is_refused(&store, crm_id, referral);
    }
    store
        .write(|r| r.insert_link(&link(CrmKind::Salesforce, "006E", "late")))
        .unwrap();
    assert_a_second_link_is_refused(&store, "006F", "late");

    // Moved to another referral: found under the new one only.
    let mut moved = link(CrmKind::Salesforce, "006E", "first");
    let err = store.write(|r| r.update_link(&moved)).unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { what: "link", .. }),
        "{err}"
    );
    moved.referral_id = Some("stored-later".into());
    store.write(|r| r.update_link(&moved)).unwrap();
    store
        .write(|r| r.upsert_referral(&snapshot("stored-later")))
        .unwrap();
    assert_eq!(link_ids(&store, "late"), Vec::<String>::new());
    assert_eq!(link_ids(&store, "stored-later"), ["salesforce:006E"]);
    assert_eq!(referral_seq_of_link(&store, "006E"), Some(3));
}

#[test]
fn links_are_found_through_the_referral_sequence_not_a_scan() {
    let (_dir, store) = open();
    let plan = |sql: &str, params: &[&str]| -> String {
        let conn = store.lock();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows.join("\n")
    };
    for (sql, params) in [
        (
            super::links::link_by_referral_sql(),
            &["salesforce", "r1"][..],
        ),
        (super::links::links_of_referral_sql(), &["r1"][..]),
    ] {
        let p = plan(sql, params);
        assert!(p.contains("USING INDEX links_by_referral_seq"), "{p}");
        assert!(p.contains("USING INDEX links_of_unstored_referrals"), "{p}");
        assert!(!p.contains("SCAN links"), "{p}");
    }
    // What storing a referral runs.
    let waiting = plan(super::referrals::LINKS_WAITING_SQL, &["r1"]);
    assert!(
        waiting.contains("USING INDEX links_of_unstored_referrals"),
        "{waiting}"
    );
    let stored = plan(super::referrals::STORED_REFERRAL_LINKS_SQL, &["r1"]);
    assert!(
        stored.contains("USING INDEX links_of_unstored_referrals"),
        "{stored}"
    );
}

#[test]
fn a_store_of_schema_7_keeps_its_links_unique_and_found_when_upgraded() {
    let (_dir, store) = upgraded_from(
        7,
        "INSERT INTO referrals (id, status, substatus, stage, raw_json, first_seen, last_seen)
         VALUES ('zz', 'New', 'Pending', 'received', '{\"id\":\"zz\"}', '2026-11-25T10:00:00.000000Z', '2026-11-25T10:00:00.000000Z'),
                ('aa', 'Active', 'Accepted', 'accepted', '{\"id\":\"aa\"}', '2026-11-25T11:00:00.000000Z', '2026-11-25T11:00:00.000000Z');
         INSERT INTO links (crm, crm_id, referral_id, crm_hash, created_at, updated_at, crm_fields, help_requested_at)
         VALUES ('salesforce', '006A', 'aa', 'h1', '2026-11-25T12:00:00.000000Z', '2026-11-25T12:00:00.000000Z', '{\"Name\":\"A\"}', '2026-11-25T12:00:00.000000Z'),
                ('dynamics', 'guid-1', 'aa', 'h2', '2026-11-25T12:00:00.000000Z', '2026-11-25T12:00:00.000000Z', NULL, NULL),
                ('salesforce', '006B', 'not-yet-read', 'h3', '2026-11-25T12:00:00.000000Z', '2026-11-25T12:00:00.000000Z', NULL, NULL),
                ('salesforce', '006C', NULL, 'h4', '2026-11-25T12:00:00.000000Z', '2026-11-25T12:00:00.000000Z', NULL, NULL);",
    );
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(
        link_ids(&store, "aa"),
        ["dynamics:guid-1", "salesforce:006A"]
    );
    assert_eq!(referral_seq_of_link(&store, "006A"), Some(2));
    assert_eq!(link_ids(&store, "not-yet-read"), ["salesforce:006B"]);
    let a = store
        .read(|r| r.link_by_crm_id(CrmKind::Salesforce, "006A"))
        .unwrap()
        .unwrap();
    assert_eq!(a.crm_fields, Some(json!({"Name": "A"})));
    assert_eq!(a.help_requested_at, Some(now()));
    let c = store
        .read(|r| r.link_by_crm_id(CrmKind::Salesforce, "006C"))
        .unwrap()
        .unwrap();
    assert_eq!(c.referral_id, None);
    let lapsed = store
        .read(|r| r.help_windows_lapsed(now() + Duration::hours(1)))
        .unwrap();
    assert_eq!(lapsed.len(), 1);
    for (crm_id, referral) in [("006X", "aa"), ("006Y", "not-yet-read")] {
        assert_a_second_link_is_refused(&store, crm_id, referral);
    }
    store
        .write(|r| r.upsert_referral(&snapshot("not-yet-read")))
        .unwrap();
    assert_eq!(referral_seq_of_link(&store, "006B"), Some(3));
}

#[test]
fn a_link_whose_referral_row_is_deleted_is_found_by_id_and_not_given_to_a_later_referral() {
    let (_dir, store) = open();
    store
        .write(|r| {
            r.upsert_referral(&snapshot("gone"))?;
            r.insert_link(&link(CrmKind::Salesforce, "006A", "gone"))
        })
        .unwrap();
    assert_eq!(referral_seq_of_link(&store, "006A"), Some(1));
    // Nothing in cosell-sync deletes a referral; a hand-edited store might.
    store
        .lock()
        .execute("DELETE FROM referrals WHERE id = 'gone'", [])
        .unwrap();
    assert_eq!(referral_seq_of_link(&store, "006A"), None);
    assert_eq!(link_ids(&store, "gone"), ["salesforce:006A"]);
    // The freed sequence number goes to the next referral stored, which
    // must not inherit the link.
    store
        .write(|r| r.upsert_referral(&snapshot("next")))
        .unwrap();
    assert_eq!(link_ids(&store, "next"), Vec::<String>::new());
    assert_a_second_link_is_refused(&store, "006B", "gone");
}

#[test]
fn a_store_of_schema_8_reads_its_text_rows_and_packs_them_when_rewritten() {
    let (_dir, store) = upgraded_from(
        8,
        "INSERT INTO referrals (id, status, substatus, stage, direction, raw_json, first_seen, last_seen)
         VALUES ('ours', 'Active', 'Accepted', 'accepted', 'Outgoing',
                 '{\"id\":\"ours\",\"organizationId\":\"org-1\",\"organizationName\":\"Contoso Partner\",\"target\":[{\"id\":\"x\"}]}',
                 '2026-11-25T10:00:00.000000Z', '2026-11-25T10:00:00.000000Z'),
                ('msft-half', 'Active', 'Accepted', 'accepted', 'Outgoing',
                 '{\"id\":\"msft-half\",\"organizationId\":\"msft\",\"target\":[{\"id\":\"msft\"}]}',
                 '2026-11-25T09:00:00.000000Z', '2026-11-25T09:00:00.000000Z');
         INSERT INTO links (crm, crm_id, referral_id, crm_hash, created_at, updated_at, crm_fields, referral_seq)
         VALUES ('salesforce', '006A', 'ours', 'h1', '2026-11-25T12:00:00.000000Z', '2026-11-25T12:00:00.000000Z', '{\"Name\":\"A\"}', 1);",
    );
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let listed = |store: &Store| -> Vec<String> {
        store
            .read(|r| r.list_referrals(&ReferralFilter::default()))
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    };
    let org = || {
        store
            .read(|r| r.partner_center_organization())
            .unwrap()
            .map(|o| (o.id, o.name))
    };
    assert_eq!(listed(&store), ["ours"], "Microsoft's half is not listed");
    assert_eq!(
        org(),
        Some(("org-1".into(), Some("Contoso Partner".into())))
    );
    let ours = store.read(|r| r.get_referral("ours")).unwrap().unwrap();
    assert_eq!(ours.raw.value()["target"], json!([{"id": "x"}]));
    let mut l = store
        .read(|r| r.link_by_crm_id(CrmKind::Salesforce, "006A"))
        .unwrap()
        .unwrap();
    assert_eq!(l.crm_fields, Some(json!({"Name": "A"})));

    // Rewritten, each row is packed, and reads and SQL still find the same.
    let half = store
        .read(|r| r.get_referral("msft-half"))
        .unwrap()
        .unwrap();
    l.crm_hash = Some("h2".into());
    store
        .write(|r| {
            r.upsert_referral(&ours)?;
            r.upsert_referral(&half)?;
            r.update_link(&l)
        })
        .unwrap();
    let packed_rows: i64 = {
        let conn = store.lock();
        conn.query_row(
            "SELECT (SELECT count(*) FROM referrals WHERE raw_packed IS NOT NULL AND raw_json = '')
                  + (SELECT count(*) FROM links WHERE crm_fields_packed IS NOT NULL AND crm_fields IS NULL)",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(packed_rows, 3);
    assert_eq!(listed(&store), ["ours"]);
    assert_eq!(
        org(),
        Some(("org-1".into(), Some("Contoso Partner".into())))
    );
    assert_eq!(
        store.read(|r| r.get_referral("ours")).unwrap().unwrap().raw,
        ours.raw
    );
    assert_eq!(
        store
            .read(|r| r.link_by_crm_id(CrmKind::Salesforce, "006A"))
            .unwrap()
            .unwrap()
            .crm_fields,
        Some(json!({"Name": "A"}))
    );
}

#[test]
fn json_too_long_to_pack_is_kept_as_text_and_reads_back() {
    let (_dir, store) = open();
    let mut json = referral("big", "Incoming", "New", "Pending").to_json();
    json["futureField"] = json!("x".repeat(17 << 20));
    let r = Referral::from_json(json).unwrap();
    let snap = ReferralSnapshot::from_referral(&r, 14, now());
    let mut l = link(CrmKind::Salesforce, "006BIG", "big");
    l.crm_fields = Some(json!({"Description": "y".repeat(17 << 20)}));
    store
        .write(|repo| {
            repo.upsert_referral(&snap)?;
            repo.insert_link(&l)
        })
        .unwrap();
    let back = store
        .read(|repo| repo.get_referral("big"))
        .unwrap()
        .unwrap();
    assert_eq!(back.raw, snap.raw, "nothing lost");
    let back = store
        .read(|repo| repo.link_by_crm_id(CrmKind::Salesforce, "006BIG"))
        .unwrap()
        .unwrap();
    assert_eq!(back.crm_fields, l.crm_fields);
    store.write(|repo| repo.update_link(&l)).unwrap();
    let back = store
        .read(|repo| repo.link_by_crm_id(CrmKind::Salesforce, "006BIG"))
        .unwrap()
        .unwrap();
    assert_eq!(back.crm_fields, l.crm_fields);
}
