//! The engine's decisions against in-memory fakes of Partner Center and the
//! CRMs (no simulator, no network): each test fails if a decision changes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use super::effects::PARTNER_CENTER;
use super::fakes::{FakeCrm, FakePartnerCenter, PcCall};
use super::*;
use crate::config::ConflictPolicy;
use crate::crm::{CrmError, RecordKey};
use crate::domain::{PatchOp, Referral, Stage};
use crate::http::HttpError;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

fn settings() -> SyncSettings {
    SyncSettings {
        interval: Duration::from_secs(60),
        overlap: Duration::from_secs(600),
        full_reconcile_every: Duration::from_secs(6 * 3600),
        expiry_days: 14,
        microsoft_decision_days: 14,
        max_attempts: 5,
        conflict: ConflictPolicy::Mapping,
    }
}

/// An inbound co-sell referral, received (New/Pending), created at
/// `created` (deadline 14 days later) and last updated at `updated`.
fn inbound(id: &str, created: DateTime<Utc>, updated: DateTime<Utc>) -> Referral {
    let mut v: Value = serde_json::from_str(include_str!(
        "../../fixtures/partner_center/referral_new_pending.json"
    ))
    .unwrap();
    v["id"] = json!(id);
    v["engagementId"] = json!(format!("engagement-of-{id}"));
    v["createdDateTime"] = json!(created.to_rfc3339());
    v["updatedDateTime"] = json!(updated.to_rfc3339());
    v["expirationDateTime"] = json!((created + chrono::Duration::days(14)).to_rfc3339());
    v["eTag"] = json!("\"first\"");
    Referral::from_json(v).unwrap()
}

fn http_error(status: u16, retry_after: Option<Duration>) -> PartnerCenterError {
    PartnerCenterError::Http(HttpError::Status {
        method: "GET".into(),
        path: "/v1.0/engagements/referrals".into(),
        status,
        retry_after,
        error: None,
        body: String::new(),
    })
}

struct Harness {
    engine: Engine,
    pc: FakePartnerCenter,
    sf: Arc<FakeCrm>,
    dynamics: Option<Arc<FakeCrm>>,
    store: Arc<Store>,
    now: Arc<Mutex<DateTime<Utc>>>,
    crash_at: Arc<Mutex<Option<&'static str>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_sides(false)
    }

    fn with_sides(dynamics: bool) -> Harness {
        Harness::with_deal_value_owner(dynamics, None)
    }

    /// `owner`: the owner rule of the deal value in every mapping (the
    /// shipped one, `newest`, when `None`).
    fn with_deal_value_owner(dynamics: bool, owner: Option<crate::mapping::Owner>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("state.db")).unwrap());
        let pc = FakePartnerCenter::new();
        pc.set_now(t0());
        let owned = |mut m: Mapping| {
            for rule in m
                .fields
                .iter_mut()
                .filter(|r| r.path.as_str() == "details.dealValue")
            {
                rule.owner = owner.or(rule.owner);
            }
            m
        };
        let sf_mapping = owned(Mapping::default_salesforce().unwrap());
        let sf = Arc::new(FakeCrm::new(CrmKind::Salesforce, &sf_mapping.external_id));
        let mut sides = vec![CrmSide {
            kind: CrmKind::Salesforce,
            crm: sf.clone(),
            mapping: Arc::new(sf_mapping),
            batch_size: 10,
        }];
        let dynamics = dynamics.then(|| {
            let m = owned(Mapping::default_dynamics().unwrap());
            let crm = Arc::new(FakeCrm::new(CrmKind::Dynamics, &m.external_id));
            sides.push(CrmSide {
                kind: CrmKind::Dynamics,
                crm: crm.clone(),
                mapping: Arc::new(m),
                batch_size: 10,
            });
            crm
        });
        let now = Arc::new(Mutex::new(t0()));
        let clock = {
            let now = now.clone();
            move || *now.lock().unwrap()
        };
        let crash_at: Arc<Mutex<Option<&'static str>>> = Arc::new(Mutex::new(None));
        let failpoint = {
            let crash_at = crash_at.clone();
            move |name: &str| {
                let mut at = crash_at.lock().unwrap();
                if *at == Some(name) {
                    *at = None;
                    true
                } else {
                    false
                }
            }
        };
        let engine = Engine::new(
            store.clone(),
            Arc::new(pc.clone()) as Arc<dyn PartnerCenter>,
            sides,
            settings(),
            Arc::new(clock),
        )
        .with_failpoint(Arc::new(failpoint));
        Harness {
            engine,
            pc,
            sf,
            dynamics,
            store,
            now,
            crash_at,
            _dir: dir,
        }
    }

    fn set_now(&self, t: DateTime<Utc>) {
        *self.now.lock().unwrap() = t;
        self.pc.set_now(t);
    }

    async fn cycle(&self) -> CycleSummary {
        let marked = crate::store::worker_probe::mark_this_thread();
        let summary = self
            .engine
            .run_cycle(&CycleOptions::default())
            .await
            .unwrap();
        assert_no_store_work_on_the_worker(marked);
        summary
    }

    /// A cycle that stops at `failpoint`, as `kill -9` there would.
    async fn cycle_crashing_at(&self, failpoint: &'static str) {
        *self.crash_at.lock().unwrap() = Some(failpoint);
        let marked = crate::store::worker_probe::mark_this_thread();
        match self.engine.run_cycle(&CycleOptions::default()).await {
            Err(SyncError::Failpoint(name)) => assert_eq!(name, failpoint),
            other => panic!("expected a stop at {failpoint}, got {other:?}"),
        }
        assert_no_store_work_on_the_worker(marked);
    }

    /// The queued effects for `target`.
    fn pending(&self, target: &str) -> Vec<Effect> {
        self.store
            .read(|r| r.pending_effects())
            .unwrap()
            .into_iter()
            .filter(|e| e.target == target)
            .map(|e| serde_json::from_str(e.payload.text()).unwrap())
            .collect()
    }

    fn pc_cursor(&self) -> Option<String> {
        self.store.read(|r| r.cursor(PC_CURSOR)).unwrap()
    }

    fn sf_id_of(&self, referral_id: &str) -> String {
        self.sf.record_of(referral_id).unwrap().crm_id
    }
}

/// Every engine test runs on a current-thread runtime: its one async
/// worker is the test's thread, so a store access counted there ran on the
/// async worker instead of the blocking pool.
fn assert_no_store_work_on_the_worker(marked: crate::store::worker_probe::Marked) {
    let hits = crate::store::worker_probe::hits_on_this_thread();
    drop(marked);
    assert_eq!(hits, 0, "{hits} store accesses ran on the async worker");
}

fn accept_ops() -> Vec<PatchOp> {
    vec![
        PatchOp::replace("/status", "Active"),
        PatchOp::replace("/substatus", "Accepted"),
    ]
}

fn error_text(h: &Harness) -> Option<String> {
    h.sf.upserts().into_iter().find_map(|w| {
        w.fields
            .get("Partner_Center_Sync_Error__c")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    })
}

#[tokio::test]
async fn a_received_inbound_referral_lands_on_hold_in_each_crm() {
    let h = Harness::with_sides(true);
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    let s = h.cycle().await;
    assert_eq!(s.outcome(), "clean", "{}", s.one_line());

    let sides = [
        (h.sf.clone(), Mapping::default_salesforce().unwrap()),
        (
            h.dynamics.clone().unwrap(),
            Mapping::default_dynamics().unwrap(),
        ),
    ];
    for (crm, mapping) in sides {
        let upserts = crm.upserts();
        assert_eq!(upserts.len(), 1, "{upserts:?}");
        assert_eq!(upserts[0].key, RecordKey::Referral("r1".into()));
        let on_hold = mapping.stages.pattern(Stage::Received).unwrap();
        for (field, value) in on_hold.written() {
            assert_eq!(upserts[0].fields.get(field), Some(value), "{field}");
        }
        assert!(crm.closes().is_empty());
    }
    assert_eq!(
        h.sf.upserts()[0].fields.get("StageName"),
        Some(&json!("On Hold"))
    );
    assert!(h.pc.writes().is_empty(), "{:?}", h.pc.writes());
    assert!(h.pending("salesforce").is_empty() && h.pending("dynamics").is_empty());
}

#[tokio::test]
async fn an_unchanged_re_read_makes_no_write() {
    let h = Harness::new();
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.cycle().await;
    h.sf.clear_calls();
    h.pc.clear_calls();

    h.set_now(t0() + minutes(2));
    h.sf.reread_all();
    let s = h.cycle().await;
    assert_eq!(
        s.partner_center.read, 1,
        "the overlap reads the referral again"
    );
    assert_eq!(s.crms["salesforce"].read, 1);
    assert_eq!(
        s.crms["salesforce"].skipped, 2,
        "both reads match what was last written"
    );
    assert_eq!(s.partner_center.skipped, 1);
    assert_eq!(s.writes(), 0, "{}", s.one_line());
    assert!(h.sf.upserts().is_empty() && h.sf.closes().is_empty());
    assert!(h.pc.writes().is_empty(), "{:?}", h.pc.writes());
    assert!(h.pending("salesforce").is_empty() && h.pending(PARTNER_CENTER).is_empty());
}

#[tokio::test]
async fn moving_out_of_on_hold_accepts_with_exactly_the_lifecycle_patch() {
    let h = Harness::new();
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");

    h.set_now(t0() + minutes(1));
    h.sf.edit(&crm_id, &[("StageName", json!("Qualification"))]);
    h.cycle_crashing_at("execute.before").await;
    let queued = h.pending(PARTNER_CENTER);
    assert_eq!(queued.len(), 1, "{queued:?}");
    match &queued[0] {
        Effect::PcUpdate {
            referral_id,
            action,
            ops,
            upgrade_to_co_sell,
            ..
        } => {
            assert_eq!(referral_id, "r1");
            assert_eq!(action, &Some(StageAction::Accept));
            assert!(ops.is_empty(), "{ops:?}");
            assert!(!upgrade_to_co_sell);
        }
        other => panic!("expected an update, got {other:?}"),
    }
    assert!(h.pc.writes().is_empty(), "nothing is sent before execute");

    let s = h.cycle().await;
    assert_eq!(
        h.pc.writes(),
        vec![PcCall::ChangeStage {
            id: "r1".into(),
            ops: accept_ops()
        }]
    );
    assert_eq!(s.partner_center.updated, 1);
    let r = h.pc.referral("r1").unwrap();
    assert_eq!(r.status.unwrap().as_str(), "Active");
    assert!(h.pending(PARTNER_CENTER).is_empty());
}

/// What a read of the opportunity shows while the referral is on hold that
/// the mapping sends to Partner Center only (`to_partner_center`): the
/// Opportunity's id (a real read holds it; the fake's records do not until
/// told) and the partner contact the seller filled in.
fn held_on_hold(crm_id: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("Id", json!(crm_id)),
        ("Partner_Contact_First_Name__c", json!("Ada")),
        ("Partner_Contact_Last_Name__c", json!("Lovelace")),
        (
            "Partner_Contact_Email__c",
            json!("ada@contoso-partner.example"),
        ),
        ("Partner_Contact_Phone__c", json!("+353 1 555 0100")),
    ]
}

/// The follow-up patch of [`held_on_hold`] after the acceptance: the CRM id
/// and the partner contact, as `replace`/`add` operations only.
fn held_ops(crm_id: &str) -> Vec<PatchOp> {
    vec![
        PatchOp::add("/externalReferenceId", crm_id),
        PatchOp::replace("/team/0/firstName", "Ada"),
        PatchOp::replace("/team/0/lastName", "Lovelace"),
        PatchOp::replace("/team/0/email", "ada@contoso-partner.example"),
        PatchOp::replace("/team/0/phoneNumber", "+353 1 555 0100"),
    ]
}

/// `r1` received and on hold in Salesforce, with [`held_on_hold`] read
/// from its opportunity (and not sent); returns the opportunity's id.
async fn on_hold_with_held_fields(h: &Harness) -> String {
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");
    h.set_now(t0() + minutes(1));
    h.sf.edit(&crm_id, &held_on_hold(&crm_id));
    h.cycle().await;
    assert!(
        h.pc.writes().is_empty(),
        "edits on hold are not sent: {:?}",
        h.pc.writes()
    );
    crm_id
}

#[tokio::test]
async fn fields_held_on_hold_follow_the_acceptance_in_a_patch_of_their_own() {
    let h = Harness::new();
    let crm_id = on_hold_with_held_fields(&h).await;

    h.set_now(t0() + minutes(2));
    h.sf.edit(&crm_id, &[("StageName", json!("Qualification"))]);
    h.cycle().await;
    assert_eq!(
        h.pc.writes(),
        vec![
            PcCall::ChangeStage {
                id: "r1".into(),
                ops: accept_ops()
            },
            PcCall::Patch {
                id: "r1".into(),
                ops: held_ops(&crm_id)
            },
        ],
        "the acceptance alone, then what was held"
    );
    let r = h.pc.referral("r1").unwrap().to_json();
    assert_eq!(r["status"], "Active");
    assert_eq!(r["externalReferenceId"], json!(crm_id));
    assert_eq!(r["team"][0]["email"], "ada@contoso-partner.example");
    assert!(h.pending(PARTNER_CENTER).is_empty());

    // Sent once: later cycles send nothing more, and settle to no write.
    h.pc.clear_calls();
    let mut last = None;
    for i in 3..7 {
        h.set_now(t0() + minutes(i));
        h.sf.reread_all();
        last = Some(h.cycle().await);
    }
    assert!(h.pc.writes().is_empty(), "{:?}", h.pc.writes());
    let last = last.unwrap();
    assert_eq!(last.writes(), 0, "{}", last.one_line());
}

#[tokio::test]
async fn a_decline_or_an_expiry_sends_no_held_field() {
    // Declined: the lifecycle patch (with its reason) and nothing after it.
    let h = Harness::new();
    let crm_id = on_hold_with_held_fields(&h).await;
    h.set_now(t0() + minutes(2));
    h.sf.edit(
        &crm_id,
        &[
            ("StageName", json!("Closed Lost")),
            ("Loss_Reason__c", json!("No budget this year")),
        ],
    );
    h.cycle().await;
    h.set_now(t0() + minutes(3));
    h.cycle().await;
    assert_eq!(
        h.pc.writes(),
        vec![PcCall::ChangeStage {
            id: "r1".into(),
            ops: vec![
                PatchOp::replace("/status", "Closed"),
                PatchOp::replace("/substatus", "Declined"),
                PatchOp::replace("/statusReason", "No budget this year"),
            ]
        }]
    );
    assert!(h.pending(PARTNER_CENTER).is_empty());

    // Expired here: closed in the CRM, nothing sent to Partner Center.
    let h = Harness::new();
    on_hold_with_held_fields(&h).await;
    h.set_now(t0() + chrono::Duration::days(14));
    let s = h.cycle().await;
    assert_eq!(s.expired, 1, "{}", s.one_line());
    h.set_now(t0() + chrono::Duration::days(14) + minutes(1));
    h.cycle().await;
    assert!(h.pc.writes().is_empty(), "{:?}", h.pc.writes());
    assert!(h.pending(PARTNER_CENTER).is_empty());
}

/// The process dies once the acceptance is sent, before it is recorded;
/// with `listing_fails`, the next cycle cannot list Partner Center either
/// (the stored copy still says received: the acceptance is refused as
/// stale, read again and found done). Either way the held fields follow,
/// once, and the acceptance is not sent again.
async fn held_fields_after_a_crash_once_accepted(listing_fails: bool) {
    let h = Harness::new();
    let crm_id = on_hold_with_held_fields(&h).await;

    h.set_now(t0() + minutes(2));
    h.sf.edit(&crm_id, &[("StageName", json!("Qualification"))]);
    h.cycle_crashing_at("pc_update.before_commit").await;
    assert_eq!(
        h.pc.writes(),
        vec![PcCall::ChangeStage {
            id: "r1".into(),
            ops: accept_ops()
        }]
    );
    h.pc.clear_calls();

    h.set_now(t0() + minutes(3));
    if listing_fails {
        h.pc.fail_next("list", http_error(503, None));
    }
    h.cycle().await;
    let writes = h.pc.writes();
    let sent_again = writes
        .iter()
        .filter(|c| matches!(c, PcCall::ChangeStage { ops, .. } if *ops == accept_ops()))
        .count();
    let patches: Vec<&PcCall> = writes
        .iter()
        .filter(|c| matches!(c, PcCall::Patch { .. }))
        .collect();
    assert_eq!(
        patches,
        vec![&PcCall::Patch {
            id: "r1".into(),
            ops: held_ops(&crm_id)
        }],
        "{writes:?}"
    );
    // A resent acceptance is refused as stale (412) and never applied twice.
    assert!(sent_again <= usize::from(listing_fails), "{writes:?}");
    let r = h.pc.referral("r1").unwrap().to_json();
    assert_eq!(r["externalReferenceId"], json!(crm_id));
    assert!(h.pending(PARTNER_CENTER).is_empty());

    h.pc.clear_calls();
    for i in 4..7 {
        h.set_now(t0() + minutes(i));
        h.cycle().await;
    }
    assert!(h.pc.writes().is_empty(), "{:?}", h.pc.writes());
}

#[tokio::test]
async fn held_fields_follow_an_acceptance_interrupted_before_it_was_recorded() {
    held_fields_after_a_crash_once_accepted(false).await;
    held_fields_after_a_crash_once_accepted(true).await;
}

/// Whether the Salesforce fake was ever written `Amount` = `value`.
fn crm_written_amount(h: &Harness, value: Value) -> bool {
    h.sf.upserts()
        .iter()
        .any(|w| w.fields.get("Amount") == Some(&value))
}

#[tokio::test]
async fn a_value_edited_on_hold_follows_the_acceptance_and_is_never_reverted() {
    let h = Harness::new();
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");
    h.sf.clear_calls();
    h.set_now(t0() + minutes(1));
    h.sf.edit(&crm_id, &[("Amount", json!(4242))]);
    h.cycle().await;
    assert!(
        h.pc.writes().is_empty(),
        "held on hold: {:?}",
        h.pc.writes()
    );

    h.set_now(t0() + minutes(2));
    h.sf.edit(&crm_id, &[("StageName", json!("Qualification"))]);
    h.cycle().await;
    h.set_now(t0() + minutes(3));
    h.cycle().await;
    assert_eq!(
        h.pc.writes(),
        vec![
            PcCall::ChangeStage {
                id: "r1".into(),
                ops: accept_ops()
            },
            PcCall::Patch {
                id: "r1".into(),
                ops: vec![PatchOp::replace("/details/dealValue", 4242)]
            },
        ],
        "the acceptance alone, then the value edited on hold"
    );
    let pc = h.pc.referral("r1").unwrap().to_json();
    assert_eq!(pc["status"], "Active");
    assert_eq!(pc["details"]["dealValue"], json!(4242));
    assert_eq!(h.sf.record_of("r1").unwrap().fields["Amount"], json!(4242));
    assert!(
        !crm_written_amount(&h, json!(50000)),
        "the old value is never written back: {:?}",
        h.sf.upserts()
    );
    assert!(h.pending(PARTNER_CENTER).is_empty());

    // Settled: later cycles write nothing anywhere.
    h.pc.clear_calls();
    h.sf.clear_calls();
    for i in 4..7 {
        h.set_now(t0() + minutes(i));
        h.sf.reread_all();
        let s = h.cycle().await;
        assert_eq!(s.writes(), 0, "{}", s.one_line());
    }
    assert!(h.pc.writes().is_empty(), "{:?}", h.pc.writes());
    assert!(h.sf.upserts().is_empty(), "{:?}", h.sf.upserts());
}

/// The deal value on both sides once `r1`, received, is accepted from
/// Salesforce, after the seller set Amount 4242 on hold at minute 2 and
/// Partner Center set 60000 at minute `pc_edit` (read in the same cycle);
/// also whether a conflict was recorded and whether the CRM was ever
/// written the first value (50000) after the seller's edit.
async fn deal_value_after_an_on_hold_conflict(pc_edit: i64) -> (Value, Value, bool, bool) {
    let h = Harness::new();
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");
    h.sf.clear_calls();
    h.set_now(t0() + minutes(5));
    h.sf.edit_at(&crm_id, &[("Amount", json!(4242))], t0() + minutes(2));
    h.pc.edit("r1", |v| {
        v["details"]["dealValue"] = json!(60000);
        v["updatedDateTime"] = json!((t0() + minutes(pc_edit)).to_rfc3339());
    });
    h.cycle().await;
    h.set_now(t0() + minutes(6));
    h.sf.edit(&crm_id, &[("StageName", json!("Qualification"))]);
    h.cycle().await;
    for i in 7..10 {
        h.set_now(t0() + minutes(i));
        h.cycle().await;
    }
    let pc = h.pc.referral("r1").unwrap().to_json()["details"]["dealValue"].clone();
    let crm = h.sf.record_of("r1").unwrap().fields["Amount"].clone();
    let conflict = h
        .store
        .read(|r| r.events_for("r1"))
        .unwrap()
        .iter()
        .any(|e| e.kind == "conflict");
    assert!(h.pending(PARTNER_CENTER).is_empty());
    (pc, crm, conflict, crm_written_amount(&h, json!(50000)))
}

/// A received inbound referral in Salesforce whose Amount the seller set to
/// 4242 a minute later, on hold, read: the harness and the opportunity id.
async fn an_amount_held_on_hold(owner: Option<crate::mapping::Owner>) -> (Harness, String) {
    let h = Harness::with_deal_value_owner(false, owner);
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");
    h.set_now(t0() + minutes(1));
    h.sf.edit(&crm_id, &[("Amount", json!(4242))]);
    h.cycle().await;
    (h, crm_id)
}

#[tokio::test]
async fn a_partner_center_change_read_after_an_edit_held_on_hold_is_said() {
    let (h, crm_id) = an_amount_held_on_hold(None).await;

    // A later cycle reads Partner Center's own change of the same value.
    h.set_now(t0() + minutes(3));
    h.pc.edit("r1", |v| {
        v["details"]["dealValue"] = json!(60000);
        v["updatedDateTime"] = json!((t0() + minutes(2)).to_rfc3339());
    });
    h.cycle().await;
    let events = h.store.read(|r| r.events_for("r1")).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "conflict" && e.message.contains("dealValue")),
        "a conflict is recorded"
    );
    // Read later, Partner Center's edit is the newer one.
    assert_eq!(h.sf.record_of("r1").unwrap().fields["Amount"], json!(60000));

    h.set_now(t0() + minutes(4));
    h.sf.edit(&crm_id, &[("StageName", json!("Qualification"))]);
    h.cycle().await;
    h.set_now(t0() + minutes(5));
    h.cycle().await;
    let pc = h.pc.referral("r1").unwrap().to_json();
    assert_eq!(pc["status"], "Active");
    assert_eq!(pc["details"]["dealValue"], json!(60000));
    assert_eq!(h.sf.record_of("r1").unwrap().fields["Amount"], json!(60000));
    assert!(h.pending(PARTNER_CENTER).is_empty());
}

/// An edit held on hold (Amount 4242, modified at `crm_at` minutes), then a
/// Partner Center change of the deal value (60000, stamped at `pc_at`) read a
/// cycle later, then the acceptance. Returns the CRM's Amount after the
/// Partner Center change, then Partner Center's and the CRM's values at the end.
async fn an_edit_held_on_hold_then_a_partner_center_change(
    owner: crate::mapping::Owner,
    crm_at: i64,
    pc_at: i64,
) -> (Value, Value, Value) {
    let h = Harness::with_deal_value_owner(false, Some(owner));
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");
    h.set_now(t0() + minutes(3));
    h.sf.edit_at(&crm_id, &[("Amount", json!(4242))], t0() + minutes(crm_at));
    h.cycle().await;

    // A later cycle reads Partner Center's own change of the same value.
    h.set_now(t0() + minutes(4));
    h.pc.edit("r1", |v| {
        v["details"]["dealValue"] = json!(60000);
        v["updatedDateTime"] = json!((t0() + minutes(pc_at)).to_rfc3339());
    });
    h.cycle().await;
    let events = h.store.read(|r| r.events_for("r1")).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "conflict" && e.message.contains("dealValue")),
        "a conflict is recorded"
    );
    let after_change = h.sf.record_of("r1").unwrap().fields["Amount"].clone();

    h.set_now(t0() + minutes(5));
    h.sf.edit(&crm_id, &[("StageName", json!("Qualification"))]);
    h.cycle().await;
    h.set_now(t0() + minutes(6));
    h.cycle().await;
    let pc = h.pc.referral("r1").unwrap().to_json();
    assert_eq!(pc["status"], "Active");
    assert!(h.pending(PARTNER_CENTER).is_empty());
    (
        after_change,
        pc["details"]["dealValue"].clone(),
        h.sf.record_of("r1").unwrap().fields["Amount"].clone(),
    )
}

#[tokio::test]
async fn a_partner_center_change_of_a_field_the_held_edit_left_alone_is_written_without_a_conflict()
{
    let (h, _) = an_amount_held_on_hold(Some(crate::mapping::Owner::Crm)).await;

    h.set_now(t0() + minutes(3));
    h.pc.edit("r1", |v| {
        v["name"] = json!("Renamed in Partner Center");
        v["updatedDateTime"] = json!((t0() + minutes(2)).to_rfc3339());
    });
    h.cycle().await;
    let record = h.sf.record_of("r1").unwrap();
    assert_eq!(record.fields["Name"], json!("Renamed in Partner Center"));
    assert_eq!(record.fields["Amount"], json!(4242), "the held edit stays");
    let events = h.store.read(|r| r.events_for("r1")).unwrap();
    assert!(
        !events.iter().any(|e| e.kind == "conflict"),
        "no field was edited on both sides: {events:?}"
    );
}

#[tokio::test]
async fn a_partner_center_change_to_the_value_held_on_hold_is_no_conflict() {
    let (h, _) = an_amount_held_on_hold(Some(crate::mapping::Owner::Crm)).await;

    h.set_now(t0() + minutes(3));
    h.pc.edit("r1", |v| {
        v["details"]["dealValue"] = json!(4242);
        v["updatedDateTime"] = json!((t0() + minutes(2)).to_rfc3339());
    });
    h.cycle().await;
    assert_eq!(h.sf.record_of("r1").unwrap().fields["Amount"], json!(4242));
    let events = h.store.read(|r| r.events_for("r1")).unwrap();
    assert!(
        !events.iter().any(|e| e.kind == "conflict"),
        "both sides agree: {events:?}"
    );
}

#[tokio::test]
async fn an_edit_held_on_hold_and_a_later_partner_center_change_follow_the_owner_rule() {
    use crate::mapping::Owner;
    let crm = (json!(4242), json!(4242), json!(4242));
    let pc = (json!(60000), json!(60000), json!(60000));
    // (owner, CRM edit at, Partner Center edit at, expected)
    for (owner, crm_at, pc_at, expected) in [
        (Owner::Crm, 2, 3, &crm),
        (Owner::PartnerCenter, 3, 2, &pc),
        (Owner::Newest, 2, 3, &pc),
        (Owner::Newest, 3, 2, &crm),
    ] {
        let got = an_edit_held_on_hold_then_a_partner_center_change(owner, crm_at, pc_at).await;
        assert_eq!(
            &got, expected,
            "{owner:?}, CRM at {crm_at}, Partner Center at {pc_at}"
        );
    }
}

#[tokio::test]
async fn a_value_edited_on_hold_and_in_partner_center_is_a_conflict_the_owner_rule_settles() {
    // The seller's edit is newer: it reaches Partner Center once accepted.
    let (pc, crm, conflict, reverted) = deal_value_after_an_on_hold_conflict(1).await;
    assert!(conflict, "a conflict is recorded");
    assert!(!reverted, "the first value is never written back");
    assert_eq!(
        (pc, crm),
        (json!(4242), json!(4242)),
        "the CRM edit is newer"
    );
    // Partner Center's edit is newer: the CRM shows it.
    let (pc, crm, conflict, reverted) = deal_value_after_an_on_hold_conflict(3).await;
    assert!(conflict, "a conflict is recorded");
    assert!(!reverted, "the first value is never written back");
    assert_eq!(
        (pc, crm),
        (json!(60000), json!(60000)),
        "the Partner Center edit is newer"
    );
}

/// The deal value of `r1` on both sides after a conflict over it: the CRM
/// edit made at `crm_edit` (minutes after t0), the Partner Center edit at
/// `pc_edit`, read by the same cycle. Also whether a conflict was recorded.
async fn deal_value_after_a_conflict(
    crm_edit: i64,
    pc_edit: i64,
    dry_run_first: bool,
) -> (Value, Value, bool) {
    let h = Harness::new();
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.pc.edit("r1", |v| {
        v["status"] = json!("Active");
        v["substatus"] = json!("Accepted");
    });
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");

    h.set_now(t0() + minutes(5));
    h.sf.edit_at(&crm_id, &[("Amount", json!(555))], t0() + minutes(crm_edit));
    h.pc.edit("r1", |v| {
        v["details"]["dealValue"] = json!(777);
        v["updatedDateTime"] = json!((t0() + minutes(pc_edit)).to_rfc3339());
    });
    if dry_run_first {
        let opts = CycleOptions {
            dry_run: true,
            ..CycleOptions::default()
        };
        h.engine.run_cycle(&opts).await.unwrap();
        // A dry run reads the changes again next time, as a daemon would.
        h.sf.edit_at(&crm_id, &[("Amount", json!(555))], t0() + minutes(crm_edit));
    }
    h.cycle().await;
    h.cycle().await;
    let pc = h.pc.referral("r1").unwrap().to_json()["details"]["dealValue"].clone();
    let crm = h.sf.record_of("r1").unwrap().fields["Amount"].clone();
    let conflict = h
        .store
        .read(|r| r.events_for("r1"))
        .unwrap()
        .iter()
        .any(|e| e.kind == "conflict");
    (pc, crm, conflict)
}

#[tokio::test]
async fn an_edit_on_both_sides_in_one_cycle_is_a_conflict_the_newer_edit_wins() {
    // Without the conflict both edits cross (each side gets the other's
    // value): the deal ends with two amounts.
    let (pc, crm, conflict) = deal_value_after_a_conflict(3, 2, false).await;
    assert!(conflict, "a conflict is recorded");
    assert_eq!((pc, crm), (json!(555), json!(555)), "the CRM edit is newer");
    let (pc, crm, conflict) = deal_value_after_a_conflict(2, 3, false).await;
    assert!(conflict, "a conflict is recorded");
    assert_eq!(
        (pc, crm),
        (json!(777), json!(777)),
        "the Partner Center edit is newer"
    );
    // A dry run in between changes nothing of it.
    let (pc, crm, _) = deal_value_after_a_conflict(3, 2, true).await;
    assert_eq!((pc, crm), (json!(555), json!(555)));
}

#[tokio::test]
async fn a_conflict_survives_a_crash_between_the_crm_and_partner_center_listings() {
    let h = Harness::new();
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.pc.edit("r1", |v| {
        v["status"] = json!("Active");
        v["substatus"] = json!("Accepted");
    });
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");
    h.set_now(t0() + minutes(5));
    h.sf.edit_at(&crm_id, &[("Amount", json!(555))], t0() + minutes(2));
    h.pc.edit("r1", |v| {
        v["details"]["dealValue"] = json!(777);
        v["updatedDateTime"] = json!((t0() + minutes(3)).to_rfc3339());
    });
    // The CRM page is committed; the process dies before Partner Center is read.
    h.cycle_crashing_at("partner_center.before_listing").await;
    h.set_now(t0() + minutes(6));
    h.cycle().await;
    h.cycle().await;
    let pc = h.pc.referral("r1").unwrap().to_json()["details"]["dealValue"].clone();
    let crm = h.sf.record_of("r1").unwrap().fields["Amount"].clone();
    assert_eq!((pc, crm), (json!(777), json!(777)), "as without the crash");
}

#[tokio::test]
async fn a_late_acceptance_is_refused_and_nothing_is_queued() {
    let h = Harness::new();
    // Deadline one day after t0.
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(13),
        t0() - minutes(1),
    ));
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");
    h.sf.clear_calls();

    // Past the deadline, and Partner Center cannot be read this cycle.
    h.set_now(t0() + chrono::Duration::days(2));
    h.pc.fail_next("list", http_error(503, None));
    h.sf.edit(&crm_id, &[("StageName", json!("Qualification"))]);
    let s = h.cycle().await;

    assert!(h.pending(PARTNER_CENTER).is_empty());
    assert!(h.pc.writes().is_empty(), "{:?}", h.pc.writes());
    let text = error_text(&h).expect("the problem is written on the opportunity");
    assert!(text.contains("expired"), "{text}");
    assert!(s.crms["salesforce"].failed >= 1);
    // Nothing is closed while Partner Center cannot be read.
    assert!(h.sf.closes().is_empty());
    assert_eq!(s.expired, 0);
}

#[tokio::test]
async fn a_failed_listing_moves_no_cursor_and_expires_nothing_until_fresh_data() {
    let h = Harness::new();
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(13),
        t0() - minutes(1),
    ));
    h.cycle().await;
    let cursor = h.pc_cursor();
    assert!(cursor.is_some());

    h.set_now(t0() + chrono::Duration::days(2));
    h.pc.fail_next("list", http_error(503, None));
    let s = h.cycle().await;
    assert_eq!(h.pc_cursor(), cursor, "the cursor stays where it was");
    assert_eq!(s.expired, 0);
    assert!(!s.errors.is_empty());
    assert!(h.sf.closes().is_empty());
    let snap = h.store.read(|r| r.get_referral("r1")).unwrap().unwrap();
    assert!(!snap.locally_expired);

    // The next listing works and still shows it unanswered: now it expires.
    h.set_now(t0() + chrono::Duration::days(2) + minutes(1));
    let s = h.cycle().await;
    assert_eq!(s.expired, 1, "{}", s.one_line());
    assert_ne!(h.pc_cursor(), cursor);
    let closes = h.sf.closes();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0].outcome, crate::crm::CloseOutcome::Lost);
}

#[tokio::test]
async fn a_decline_without_reason_queues_nothing_and_says_why() {
    let h = Harness::new();
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");
    h.sf.clear_calls();

    h.set_now(t0() + minutes(1));
    h.sf.edit(&crm_id, &[("StageName", json!("Closed Lost"))]);
    h.cycle().await;
    assert!(h.pending(PARTNER_CENTER).is_empty());
    assert!(h.pc.writes().is_empty(), "{:?}", h.pc.writes());
    let text = error_text(&h).expect("the problem is written on the opportunity");
    assert!(text.contains("Loss_Reason__c"), "{text}");
    assert_eq!(h.pc.referral("r1").unwrap().status.unwrap().as_str(), "New");
}

#[tokio::test]
async fn a_decline_with_reason_and_notes_sends_both_in_one_patch() {
    let h = Harness::new();
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");

    h.set_now(t0() + minutes(1));
    h.sf.edit(
        &crm_id,
        &[
            ("StageName", json!("Closed Lost")),
            ("Loss_Reason__c", json!("No budget this year")),
            ("Description", json!("Customer postponed the project")),
        ],
    );
    h.cycle().await;
    assert_eq!(
        h.pc.writes(),
        vec![PcCall::ChangeStage {
            id: "r1".into(),
            ops: vec![
                PatchOp::replace("/status", "Closed"),
                PatchOp::replace("/substatus", "Declined"),
                PatchOp::replace("/statusReason", "No budget this year"),
                PatchOp::replace("/details/notes", "Customer postponed the project"),
            ]
        }]
    );
    let r = h.pc.referral("r1").unwrap();
    assert_eq!(r.substatus.unwrap().as_str(), "Declined");
    assert!(h.pending(PARTNER_CENTER).is_empty());
}

#[tokio::test]
async fn a_stale_etag_is_read_again_and_decided_again() {
    let h = Harness::new();
    // Updated long ago: later listings (from the cursor) do not show it.
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - chrono::Duration::days(1),
    ));
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");

    h.set_now(t0() + minutes(1));
    h.sf.edit(&crm_id, &[("StageName", json!("Qualification"))]);
    h.cycle_crashing_at("execute.before").await;
    // Someone edits the referral before the accept goes out.
    h.pc.edit("r1", |j| j["details"]["dealValue"] = json!(60000));
    h.pc.clear_calls();

    h.cycle().await;
    let calls: Vec<PcCall> =
        h.pc.calls()
            .into_iter()
            .filter(|c| *c != PcCall::List)
            .collect();
    let accept = PcCall::ChangeStage {
        id: "r1".into(),
        ops: accept_ops(),
    };
    assert_eq!(
        calls,
        vec![accept.clone(), PcCall::Get("r1".into()), accept],
        "412, read again, decided again"
    );
    let r = h.pc.referral("r1").unwrap();
    assert_eq!(r.status.as_ref().unwrap().as_str(), "Active");
    assert_eq!(r.to_json()["details"]["dealValue"], json!(60000));
    assert!(h.pending(PARTNER_CENTER).is_empty());
}

fn co_sell_opportunity() -> serde_json::Map<String, Value> {
    let v = json!({
        "Name": "Fabrikam pilot", "Amount": 125000, "CloseDate": "2027-03-31",
        "StageName": "Qualification", "Sync_with_Partner_Center__c": true,
        "Customer_Name__c": "Fabrikam Ltd", "Customer_Street__c": "1 Main Street",
        "Customer_City__c": "Dublin", "Customer_Postal_Code__c": "D02", "Customer_Country__c": "IE",
        "Partner_Contact_First_Name__c": "Ada", "Partner_Contact_Last_Name__c": "Lovelace",
        "Partner_Contact_Email__c": "ada@contoso-partner.example", "Partner_Contact_Phone__c": "+353 1 555 0100",
        "Microsoft_Solutions__c": "SOL-12345-ABC",
        "How_can_Microsoft_help__c": "Proof of concept or demo",
        "Description": "Customer wants a pilot with Microsoft's help",
        "Customer_Contact_First_Name__c": "Sean", "Customer_Contact_Last_Name__c": "Murphy",
        "Customer_Contact_Email__c": "sean@fabrikam.example", "Customer_Contact_Phone__c": "+353 1 555 0199",
        "Customer_Consent_To_Share__c": true
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn count(calls: &[PcCall], f: impl Fn(&PcCall) -> bool) -> usize {
    calls.iter().filter(|c| f(c)).count()
}

#[tokio::test]
async fn a_co_sell_create_invites_microsoft_once_across_a_crash() {
    let h = Harness::new();
    h.sf.create("006A", co_sell_opportunity());

    // The invitation is sent, then the process dies before recording it.
    h.cycle_crashing_at("pc_invite.before_commit").await;
    let calls = h.pc.calls();
    assert_eq!(count(&calls, |c| matches!(c, PcCall::CreateOwn { .. })), 1);
    assert_eq!(
        count(&calls, |c| matches!(c, PcCall::InviteMicrosoft { .. })),
        1
    );
    // The create's commit holds both the link and the queued invitation.
    let link = h
        .store
        .read(|r| r.link_by_crm_id(CrmKind::Salesforce, "006A"))
        .unwrap()
        .unwrap();
    let rid = link
        .referral_id
        .expect("the link knows the created referral");
    let queued = h.pending(PARTNER_CENTER);
    assert!(
        matches!(queued.as_slice(), [Effect::PcInviteMicrosoft { referral_id, .. }] if *referral_id == rid),
        "{queued:?}"
    );

    h.set_now(t0() + minutes(1));
    h.cycle().await;
    let calls = h.pc.calls();
    assert_eq!(count(&calls, |c| matches!(c, PcCall::CreateOwn { .. })), 1);
    assert_eq!(
        count(&calls, |c| matches!(c, PcCall::InviteMicrosoft { .. })),
        1,
        "Microsoft is invited exactly once"
    );
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, PcCall::FindMicrosoft { .. })),
        "the resent invitation looks in the engagement first"
    );
    assert!(h.pending(PARTNER_CENTER).is_empty());
    let partner_referrals =
        h.pc.referrals()
            .into_iter()
            .filter(|r| r.external_reference_id.as_deref() == Some("006A"))
            .count();
    assert_eq!(
        partner_referrals, 2,
        "the partner's referral and Microsoft's"
    );
}

#[tokio::test]
async fn a_retry_after_pauses_partner_center_and_keeps_the_effect() {
    let h = Harness::new();
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");

    h.set_now(t0() + minutes(1));
    h.sf.edit(&crm_id, &[("StageName", json!("Qualification"))]);
    h.pc.fail_next(
        "change_stage",
        http_error(429, Some(Duration::from_secs(120))),
    );
    let s = h.cycle().await;
    assert_eq!(
        s.paused,
        vec![Paused::throttled(
            Side::PartnerCenter,
            Some(t0() + minutes(1) + minutes(2))
        )]
    );
    assert_eq!(
        s.one_line().rsplit_once("; ").unwrap().1,
        "paused: partner_center (throttled until 09:03:00 UTC))"
    );
    assert_eq!(s.outcome(), "degraded");
    assert_eq!(h.pending(PARTNER_CENTER).len(), 1, "the accept waits");
    assert_eq!(h.pc.referral("r1").unwrap().status.unwrap().as_str(), "New");

    // Still paused: nothing is sent.
    h.pc.clear_calls();
    h.set_now(t0() + minutes(2));
    h.cycle().await;
    assert!(h.pc.writes().is_empty(), "{:?}", h.pc.writes());

    // After the pause: the accept goes out.
    h.set_now(t0() + minutes(4));
    h.cycle().await;
    assert_eq!(
        h.pc.writes(),
        vec![PcCall::ChangeStage {
            id: "r1".into(),
            ops: accept_ops()
        }]
    );
    assert!(h.pending(PARTNER_CENTER).is_empty());
}

#[tokio::test]
async fn a_refused_sign_in_pauses_partner_center_and_sends_nothing() {
    let h = Harness::new();
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.cycle().await;
    let crm_id = h.sf_id_of("r1");
    let cursor = h.pc_cursor();

    h.set_now(t0() + minutes(1));
    h.sf.edit(&crm_id, &[("StageName", json!("Qualification"))]);
    h.pc.set_paused_for_login(true);
    h.pc.clear_calls();
    let s = h.cycle().await;
    assert!(h.pc.calls().is_empty(), "{:?}", h.pc.calls());
    // Both the listing and the outbox found it paused.
    assert!(!s.paused.is_empty());
    assert!(
        s.paused
            .iter()
            .all(|p| *p == Paused::operator(Side::PartnerCenter)),
        "{:?}",
        s.paused
    );
    assert_eq!(
        s.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["partner_center: sign-in needed: run `cosell-sync login partner-center`"]
    );
    assert_eq!(h.pc_cursor(), cursor);
    assert_eq!(
        h.pending(PARTNER_CENTER).len(),
        1,
        "the accept waits for the sign-in"
    );
}

#[tokio::test]
async fn the_pager_follows_continuations_over_any_partner_center() {
    let pc = FakePartnerCenter::new();
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        let at = t0() + minutes(i as i64);
        pc.add(inbound(id, at, at));
    }
    let mut pager = crate::partner_center::ReferralPager::new(
        &pc,
        t0(),
        crate::partner_center::ListFilter::default(),
    );
    let first = pager.next_page().await.unwrap().unwrap();
    assert!(first.has_more && !pager.is_done());
    let second = pager.next_page().await.unwrap().unwrap();
    assert!(!second.has_more && pager.is_done());
    assert!(pager.next_page().await.unwrap().is_none());
    let ids: Vec<String> = first
        .referrals
        .into_iter()
        .chain(second.referrals)
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(pager.pages_read(), 2);
    assert_eq!(pc.calls(), vec![PcCall::List, PcCall::List]);

    // A failed page is asked for again by the next call.
    pc.fail_next("list", http_error(503, None));
    let mut pager = crate::partner_center::ReferralPager::new(
        &pc,
        t0(),
        crate::partner_center::ListFilter::default(),
    );
    assert!(pager.next_page().await.is_err());
    assert!(!pager.is_done());
    assert_eq!(pager.collect_all().await.unwrap().referrals.len(), 3);
}

/// Why the probe marks the worker thread instead of asking tokio: the
/// blocking pool's threads are inside the runtime's context as well.
#[tokio::test]
async fn the_blocking_pool_cannot_be_told_apart_by_the_runtime_handle() {
    assert!(tokio::runtime::Handle::try_current().is_ok());
    let on_pool = tokio::task::spawn_blocking(|| tokio::runtime::Handle::try_current().is_ok())
        .await
        .unwrap();
    assert!(on_pool);
}

/// An accepted referral `r1` in step with its opportunity; returns the
/// opportunity's id.
async fn accepted_in_step(h: &Harness) -> String {
    h.pc.add(inbound(
        "r1",
        t0() - chrono::Duration::days(1),
        t0() - minutes(1),
    ));
    h.pc.edit("r1", |v| {
        v["status"] = json!("Active");
        v["substatus"] = json!("Accepted");
    });
    h.cycle().await;
    h.sf.clear_calls();
    h.pc.clear_calls();
    h.sf_id_of("r1")
}

/// Two seller edits decided one cycle apart while Partner Center refuses
/// writes (the update waits, then is decided again with the second edit);
/// then Partner Center takes writes again. Returns the PATCHes sent once it
/// does, and the queued Partner Center effects after the next, quiet cycle.
async fn two_edits_while_partner_center_refuses(
    h: &Harness,
    first: (&str, Value),
    second: (&str, Value),
) -> Vec<PcCall> {
    let crm_id = accepted_in_step(h).await;
    h.set_now(t0() + minutes(5));
    h.sf.edit(&crm_id, &[(first.0, first.1)]);
    h.pc.fail_next("patch", http_error(503, None));
    h.cycle().await;
    assert_eq!(h.pending(PARTNER_CENTER).len(), 1, "the first edit waits");

    h.set_now(t0() + minutes(6));
    h.sf.edit(&crm_id, &[(second.0, second.1)]);
    h.pc.fail_next("patch", http_error(429, None));
    h.cycle().await;
    assert_eq!(h.pending(PARTNER_CENTER).len(), 1, "one update waits");

    // Past any back-off: Partner Center takes the update.
    h.pc.clear_calls();
    h.set_now(t0() + minutes(30));
    h.cycle().await;
    let sent = h.pc.writes();
    assert!(h.pending(PARTNER_CENTER).is_empty(), "{sent:?}");

    // Both sides in step: the next cycles write nothing.
    h.sf.clear_calls();
    h.pc.clear_calls();
    h.set_now(t0() + minutes(31));
    let s = h.cycle().await;
    assert_eq!(s.writes(), 0, "{} {:?}", s.one_line(), h.sf.upserts());
    h.set_now(t0() + minutes(32));
    let s = h.cycle().await;
    assert_eq!(s.writes(), 0, "{}", s.one_line());
    assert!(h.pc.writes().is_empty(), "{:?}", h.pc.writes());
    assert!(h.sf.upserts().is_empty(), "{:?}", h.sf.upserts());
    assert!(h.pending(PARTNER_CENTER).is_empty() && h.pending("salesforce").is_empty());
    sent
}

#[tokio::test]
async fn two_edits_decided_while_partner_center_refuses_writes_both_reach_it() {
    let h = Harness::new();
    let sent = two_edits_while_partner_center_refuses(
        &h,
        ("Amount", json!(555)),
        ("Description", json!("Second call booked")),
    )
    .await;
    // One PATCH carries both edits (the queued update took in the second).
    assert_eq!(
        sent,
        vec![PcCall::Patch {
            id: "r1".into(),
            ops: vec![
                PatchOp::replace("/details/dealValue", 555),
                PatchOp::replace("/details/notes", "Second call booked"),
            ]
        }]
    );
    let pc = h.pc.referral("r1").unwrap().to_json();
    assert_eq!(pc["details"]["dealValue"], json!(555));
    assert_eq!(pc["details"]["notes"], json!("Second call booked"));
}

#[tokio::test]
async fn one_field_edited_twice_while_partner_center_refuses_writes_sends_the_later_value_once() {
    let h = Harness::new();
    let sent =
        two_edits_while_partner_center_refuses(&h, ("Amount", json!(555)), ("Amount", json!(666)))
            .await;
    assert_eq!(
        sent,
        vec![PcCall::Patch {
            id: "r1".into(),
            ops: vec![PatchOp::replace("/details/dealValue", 666)]
        }]
    );
    assert_eq!(
        h.pc.referral("r1").unwrap().to_json()["details"]["dealValue"],
        json!(666)
    );
    assert_eq!(h.sf.record_of("r1").unwrap().fields["Amount"], json!(666));

    // Edited back to what Partner Center still holds: the queued value must
    // not reach Partner Center (and from there overwrite the CRM's).
    let h = Harness::new();
    let sent = two_edits_while_partner_center_refuses(
        &h,
        ("Amount", json!(555)),
        ("Amount", json!(50000)),
    )
    .await;
    // (Partner Center is sent the value it holds: the queued one is gone.)
    assert_eq!(
        sent,
        vec![PcCall::Patch {
            id: "r1".into(),
            ops: vec![PatchOp::replace("/details/dealValue", 50000)]
        }]
    );
    assert_eq!(
        h.pc.referral("r1").unwrap().to_json()["details"]["dealValue"],
        json!(50000)
    );
    assert_eq!(h.sf.record_of("r1").unwrap().fields["Amount"], json!(50000));
}

#[tokio::test]
async fn a_conflict_withdraws_of_a_waiting_update_only_what_it_overrules() {
    for crm_newer in [true, false] {
        let h = Harness::new();
        let crm_id = accepted_in_step(&h).await;
        // An edit of the notes waits: Partner Center refuses writes.
        h.set_now(t0() + minutes(5));
        h.sf.edit(&crm_id, &[("Description", json!("Second call booked"))]);
        h.pc.fail_next("patch", http_error(503, None));
        h.cycle().await;
        assert_eq!(h.pending(PARTNER_CENTER).len(), 1, "the notes wait");

        // Then the deal value is edited on both sides before one cycle.
        h.set_now(t0() + minutes(10));
        let (crm_at, pc_at) = if crm_newer { (8, 7) } else { (7, 8) };
        h.sf.edit_at(&crm_id, &[("Amount", json!(555))], t0() + minutes(crm_at));
        h.pc.edit("r1", |v| {
            v["details"]["dealValue"] = json!(777);
            v["updatedDateTime"] = json!((t0() + minutes(pc_at)).to_rfc3339());
        });
        h.cycle().await;
        h.set_now(t0() + minutes(30));
        h.cycle().await;
        h.cycle().await;
        assert!(h.pending(PARTNER_CENTER).is_empty() && h.pending("salesforce").is_empty());

        let newer = if crm_newer { json!(555) } else { json!(777) };
        let pc = h.pc.referral("r1").unwrap().to_json();
        let crm = h.sf.record_of("r1").unwrap().fields;
        assert_eq!(
            (&pc["details"]["dealValue"], &crm["Amount"]),
            (&newer, &newer),
            "the newer deal value on both sides (CRM newer: {crm_newer})"
        );
        // The notes were never edited in Partner Center: no conflict of theirs.
        assert_eq!(
            (&pc["details"]["notes"], &crm["Description"]),
            (&json!("Second call booked"), &json!("Second call booked")),
            "the waiting edit reaches Partner Center (CRM newer: {crm_newer})"
        );
    }
}

/// The deal value of `r1` on both sides, and whether a conflict was
/// recorded, after a seller's edit of the amount (modified at `crm_at`
/// minutes after t0) waits because Partner Center refuses writes, and a
/// Partner Center edit of the deal value stamped `pc_at` is read a cycle
/// later, after the cycle that queued the update had listed Partner Center
/// completely. Partner Center refuses `refusals` more writes after the
/// first. The last two cycles must write nothing.
async fn deal_value_after_a_conflict_with_a_waiting_update(
    crm_at: i64,
    pc_at: i64,
    refusals: usize,
) -> (Value, Value, bool, Vec<Value>) {
    let h = Harness::new();
    let crm_id = accepted_in_step(&h).await;
    h.set_now(t0() + minutes(5));
    h.sf.edit_at(&crm_id, &[("Amount", json!(555))], t0() + minutes(crm_at));
    h.pc.fail_next("patch", http_error(503, None));
    h.cycle().await;
    assert_eq!(h.pending(PARTNER_CENTER).len(), 1, "the edit waits");
    h.pc.clear_calls();

    // Edited in Partner Center since; read by the next cycle.
    h.pc.edit("r1", |v| {
        v["details"]["dealValue"] = json!(777);
        v["updatedDateTime"] = json!((t0() + minutes(pc_at)).to_rfc3339());
    });
    for _ in 0..refusals {
        h.pc.fail_next("patch", http_error(429, None));
    }
    h.set_now(t0() + minutes(10));
    h.cycle().await;
    // Past any back-off: Partner Center takes writes.
    h.set_now(t0() + minutes(30));
    h.cycle().await;
    assert!(
        h.pending(PARTNER_CENTER).is_empty() && h.pending("salesforce").is_empty(),
        "{:?} {:?}",
        h.pending(PARTNER_CENTER),
        h.pending("salesforce")
    );
    // Every deal value sent either way since the edits.
    let mut sent: Vec<Value> =
        h.pc.writes()
            .into_iter()
            .filter_map(|c| match c {
                PcCall::Patch { ops, .. } => Some(ops),
                _ => None,
            })
            .flatten()
            .filter(|op| op.path == "/details/dealValue")
            .map(|op| op.value)
            .collect();
    sent.extend(
        h.sf.upserts()
            .into_iter()
            .filter_map(|w| w.fields.get("Amount").cloned()),
    );

    // In step: the next cycles write nothing.
    h.sf.clear_calls();
    h.pc.clear_calls();
    for minute in [31, 32] {
        h.set_now(t0() + minutes(minute));
        let s = h.cycle().await;
        assert_eq!(s.writes(), 0, "{}", s.one_line());
    }
    assert!(h.pc.writes().is_empty(), "{:?}", h.pc.writes());
    assert!(h.sf.upserts().is_empty(), "{:?}", h.sf.upserts());
    let pc = h.pc.referral("r1").unwrap().to_json()["details"]["dealValue"].clone();
    let crm = h.sf.record_of("r1").unwrap().fields["Amount"].clone();
    let conflict = h
        .store
        .read(|r| r.events_for("r1"))
        .unwrap()
        .iter()
        .any(|e| e.kind == "conflict");
    (pc, crm, conflict, sent)
}

#[tokio::test]
async fn a_crm_edit_still_waiting_for_partner_center_conflicts_with_a_later_partner_center_edit() {
    let mut got = Vec::new();
    let mut want = Vec::new();
    for refusals in [0, 1] {
        // Partner Center's edit is newer: its value wins on both sides (the
        // waiting CRM value never reaches Partner Center).
        got.push(deal_value_after_a_conflict_with_a_waiting_update(4, 8, refusals).await);
        want.push((json!(777), json!(777), true, vec![json!(777)]));
        // The CRM edit is newer (Partner Center's listing showed the older
        // edit only after the cycle that read the CRM's): the CRM value wins.
        got.push(deal_value_after_a_conflict_with_a_waiting_update(4, 3, refusals).await);
        want.push((json!(555), json!(555), true, vec![json!(555); refusals + 1]));
    }
    // (Partner Center's value, the CRM's, a conflict recorded, the deal
    // values sent after the first refusal, refused ones included: to Partner
    // Center, then to the CRM), for 0 and 1 more
    // refusals, Partner Center newer then the CRM newer. Only the newer value
    // is sent, and only to the side that lacks it.
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_conflict_survives_a_crash_after_partner_center_took_a_waiting_update() {
    let h = Harness::new();
    let crm_id = accepted_in_step(&h).await;
    h.set_now(t0() + minutes(5));
    h.sf.edit_at(&crm_id, &[("Amount", json!(555))], t0() + minutes(4));
    // Partner Center takes the update; the process dies before it is recorded.
    h.cycle_crashing_at("pc_update.before_commit").await;
    assert_eq!(h.pending(PARTNER_CENTER).len(), 1, "not recorded as sent");
    // Then someone edits the deal value in Partner Center.
    h.pc.edit("r1", |v| {
        v["details"]["dealValue"] = json!(777);
        v["updatedDateTime"] = json!((t0() + minutes(8)).to_rfc3339());
    });
    h.set_now(t0() + minutes(10));
    h.cycle().await;
    h.set_now(t0() + minutes(30));
    h.cycle().await;
    assert!(h.pending(PARTNER_CENTER).is_empty() && h.pending("salesforce").is_empty());
    let pc = h.pc.referral("r1").unwrap().to_json()["details"]["dealValue"].clone();
    let crm = h.sf.record_of("r1").unwrap().fields["Amount"].clone();
    assert_eq!(
        (pc, crm),
        (json!(777), json!(777)),
        "the newer edit on both sides"
    );
    h.sf.clear_calls();
    h.pc.clear_calls();
    h.set_now(t0() + minutes(31));
    let s = h.cycle().await;
    assert_eq!(s.writes(), 0, "{}", s.one_line());
}

/// The deal value of `r1` in Partner Center and in each CRM (Salesforce,
/// then Dynamics when `dynamics`) after a seller's edit of the amount in
/// the last CRM (modified at `crm_at` minutes after t0) is refused by
/// Partner Center for good (400: quarantined at once), Partner Center's deal
/// value is edited (stamped `pc_at`) and read by the next cycle, and then
/// the operator runs `failures retry` (when `retry`, else `failures
/// ignore`). The last two cycles must write nothing, and no CRM change is
/// left noted as waiting for Partner Center.
async fn deal_value_after_a_quarantined_update(
    owner: Option<crate::mapping::Owner>,
    dynamics: bool,
    crm_at: i64,
    pc_at: i64,
    retry: bool,
) -> Vec<Value> {
    let h = Harness::with_deal_value_owner(dynamics, owner);
    accepted_in_step(&h).await;
    let (crm, field) = match &h.dynamics {
        Some(d) => (d.clone(), "estimatedvalue"),
        None => (h.sf.clone(), "Amount"),
    };
    h.set_now(t0() + minutes(5));
    let crm_id = crm.record_of("r1").unwrap().crm_id;
    crm.edit_at(&crm_id, &[(field, json!(555))], t0() + minutes(crm_at));
    h.pc.fail_next("patch", http_error(400, None));
    h.cycle().await;
    assert!(h.pending(PARTNER_CENTER).is_empty(), "quarantined at once");
    let failures = h
        .store
        .read(|r| r.list_failures(&[crate::store::FailureState::Open]))
        .unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");

    h.pc.edit("r1", |v| {
        v["details"]["dealValue"] = json!(777);
        v["updatedDateTime"] = json!((t0() + minutes(pc_at)).to_rfc3339());
    });
    h.set_now(t0() + minutes(10));
    h.cycle().await;

    let id = failures[0].id;
    let now = t0() + minutes(20);
    h.store
        .write(|r| {
            if retry {
                let mappings: Vec<_> = h
                    .engine
                    .crms
                    .iter()
                    .map(|s| (s.kind, &*s.mapping))
                    .collect();
                retry_failure(r, id, now, &mappings).map(drop)
            } else {
                ignore_failure(r, id).map(drop)
            }
        })
        .unwrap();
    h.set_now(t0() + minutes(30));
    h.cycle().await;
    h.cycle().await;
    let waiting: Vec<Effect> = [PARTNER_CENTER, "salesforce", "dynamics"]
        .into_iter()
        .flat_map(|t| h.pending(t))
        .collect();
    assert!(waiting.is_empty(), "{waiting:?}");
    h.sf.clear_calls();
    h.pc.clear_calls();
    for minute in [31, 32] {
        h.set_now(t0() + minutes(minute));
        let s = h.cycle().await;
        assert_eq!(s.writes(), 0, "{}", s.one_line());
    }
    for kind in CrmKind::ALL {
        let noted = h.store.read(|r| r.pending_crm_change(kind, "r1")).unwrap();
        assert_eq!(noted, None, "{kind:?}");
    }
    let mut values = vec![h.pc.referral("r1").unwrap().to_json()["details"]["dealValue"].clone()];
    values.push(h.sf.record_of("r1").unwrap().fields["Amount"].clone());
    if let Some(d) = &h.dynamics {
        values.push(d.record_of("r1").unwrap().fields["estimatedvalue"].clone());
    }
    values
}

#[tokio::test]
async fn a_retried_quarantined_update_ends_as_the_owner_rule_says_on_both_sides() {
    use crate::mapping::Owner;
    let (crm, pc) = (json!(555), json!(777));
    let mut got = Vec::new();
    let mut want = Vec::new();
    // (owner, edited in Dynamics, CRM edit stamped at, Partner Center's at,
    // whether the CRM edit wins the conflict read while the update was
    // quarantined). Retried, the winner ends on every side. Ignored, the
    // CRM's value is never sent: a Partner Center value that wins reaches
    // every CRM, one overruled stays in Partner Center, and the CRM that
    // holds the ignored edit keeps it.
    for retry in [true, false] {
        for (owner, dynamics, crm_at, pc_at, crm_wins) in [
            (None, false, 4, 8, false),
            (None, false, 8, 7, true),
            (Some(Owner::Crm), false, 4, 8, true),
            (Some(Owner::PartnerCenter), false, 8, 7, false),
            (None, true, 4, 8, false),
            (None, true, 8, 7, true),
        ] {
            let case = (retry, owner, dynamics, crm_at);
            let values =
                deal_value_after_a_quarantined_update(owner, dynamics, crm_at, pc_at, retry).await;
            got.push((case, values));
            let sides = if dynamics { 3 } else { 2 };
            let mut end = vec![if crm_wins { crm.clone() } else { pc.clone() }; sides];
            if crm_wins && !retry {
                end = vec![pc.clone(); sides];
                end[sides - 1] = crm.clone();
            }
            want.push((case, end));
        }
    }
    assert_eq!(got, want);
}

/// `n` received referrals, listed in that order (the fake lists two a page).
fn add_received(h: &Harness, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = format!("r{i:02}");
            h.pc.add(inbound(
                &id,
                t0() - chrono::Duration::days(1),
                t0() - minutes(60) + minutes(i as i64),
            ));
            id
        })
        .collect()
}

#[tokio::test]
async fn a_long_listing_sends_full_crm_batches_while_it_is_read_and_the_rest_after() {
    let h = Harness::new();
    let ids = add_received(&h, 25);
    // A crash once the listing is read and planned: the two full batches of
    // ten were sent while it was read; the last five wait in the outbox.
    h.cycle_crashing_at("execute.before").await;
    assert_eq!(h.sf.upsert_calls(), 2);
    let written: Vec<RecordKey> = h.sf.upserts().into_iter().map(|w| w.key).collect();
    let first: Vec<RecordKey> = ids[..20]
        .iter()
        .map(|id| RecordKey::Referral(id.clone()))
        .collect();
    assert_eq!(written, first, "in listing order, each once");
    assert_eq!(h.pending("salesforce").len(), 5);

    let s = h.cycle().await;
    assert_eq!(s.outcome(), "clean", "{}", s.one_line());
    assert_eq!(h.sf.upserts().len(), 25, "nothing written twice");
    for id in &ids {
        assert!(h.sf.record_of(id).is_some(), "{id}");
    }
    assert!(h.pending("salesforce").is_empty());
}

#[tokio::test]
async fn a_crm_throttled_while_a_listing_is_read_gets_no_more_calls_that_cycle() {
    let h = Harness::new();
    let ids = add_received(&h, 25);
    h.sf.fail_next_upsert(CrmError::Paused {
        crm: CrmKind::Salesforce,
        until: t0() + minutes(30),
        reason: "REQUEST_LIMIT_EXCEEDED".into(),
    });
    let s = h.cycle().await;
    assert_eq!(h.sf.upsert_calls(), 1, "one refused call, then none");
    assert_eq!(s.outcome(), "degraded", "{}", s.one_line());
    assert!(
        s.paused
            .iter()
            .any(|p| p.side == Side::Crm(CrmKind::Salesforce)),
        "{:?}",
        s.paused
    );
    assert_eq!(s.partner_center.read, 25, "the listing is read to the end");
    assert_eq!(h.pending("salesforce").len(), 25, "every write kept");

    h.set_now(t0() + minutes(31));
    let s = h.cycle().await;
    assert_eq!(s.outcome(), "clean", "{}", s.one_line());
    for id in &ids {
        assert!(h.sf.record_of(id).is_some(), "{id}");
    }
    assert_eq!(h.sf.upserts().len(), 25);
    assert!(h.pending("salesforce").is_empty());
}
