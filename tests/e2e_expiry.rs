//! The local 14-day expiry acts on fresh data only: a CRM opportunity is
//! closed as expired only after a Partner Center listing that began after
//! the deadline still shows the referral unanswered, and a referral first
//! seen past its deadline lands closed as expired, never on hold.
//!
//! The simulator's Partner Center expires a referral itself only at the
//! midnight after created + 14 days (its `expirationDateTime`); the clock
//! starts at 06:00 so that there are hours between the daemon's own deadline
//! (created + 14 days) and Partner Center's: what acts here is the local rule.

mod sync_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, DurationRound, Utc};
use cosell_sync::sim::{Api, FaultKind, FaultRule};
use cosell_sync::store::{CrmKind, FailureState};
use cosell_sync::sync::{CycleOptions, CycleSummary};
use serde_json::Value;
use sync_support::*;

async fn local_rule_harness() -> Harness {
    let mut opts = options(8, 0);
    opts.expiry_days = 30;
    opts.start_time =
        Utc::now().duration_trunc(Duration::days(1)).expect("a day") + Duration::hours(6);
    let h = harness_with(opts, &[("COSELL_SYNC__SYNC__EXPIRY_DAYS", "14")]).await;
    h.settle(4).await;
    h
}

fn created_at(h: &Harness, id: &str) -> DateTime<Utc> {
    let created = h.referral(id)["createdDateTime"]
        .as_str()
        .expect("createdDateTime")
        .to_owned();
    DateTime::parse_from_rfc3339(&created)
        .expect("a date-time")
        .with_timezone(&Utc)
}

/// A fresh received referral synced to both CRMs (on hold), and its deadline.
async fn received_referral(h: &Harness) -> (String, DateTime<Utc>) {
    let id = h.sim.state().insert_referrals(1).remove(0);
    h.settle(3).await;
    assert_eq!(h.sf(&id).expect("in Salesforce")["StageName"], "On Hold");
    assert_eq!(h.dv(&id).expect("in Dynamics")["statuscode"], 2);
    (id.clone(), created_at(h, &id) + Duration::days(14))
}

/// Partner Center listings answer 503 (for an hour) until the rule is removed.
fn listings_fail(h: &Harness) -> u64 {
    h.sim.state().add_fault(
        FaultRule::new(
            Api::PartnerCenter,
            FaultKind::ServiceUnavailable {
                retry_after_secs: Some(3600),
            },
        )
        .operation("GET list"),
    )
}

fn sf_id(opp: &Value) -> String {
    opp["Id"].as_str().expect("Salesforce Id").to_owned()
}

/// Neither CRM shows the opportunity closed.
fn assert_not_closed(h: &Harness, id: &str, when: &str) {
    let sf = h.sf(id).unwrap();
    assert!(
        !sf["StageName"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Closed"),
        "{when}: Salesforce must not be closed: {sf}"
    );
    let dv = h.dv(id).unwrap();
    assert_eq!(dv["statecode"], 0, "{when}: Dynamics must stay open: {dv}");
    let snap = h.store.read(|r| r.get_referral(id)).unwrap().unwrap();
    assert!(!snap.locally_expired, "{when}: not expired here: {snap:?}");
}

fn assert_closed_as_expired(h: &Harness, id: &str) {
    let sf = h.sf(id).unwrap();
    assert_eq!(sf["StageName"], "Closed Lost", "{sf}");
    assert!(
        sf["Loss_Reason__c"]
            .as_str()
            .unwrap_or_default()
            .contains("Expired"),
        "the reason is shown: {sf}"
    );
    let dv = h.dv(id).unwrap();
    assert_eq!(dv["statecode"], 2, "closed as lost in Dynamics: {dv}");
    assert!(
        dv["statuscode"] == 4 || dv["statuscode"] == 5,
        "a lost status, never on hold: {dv}"
    );
    assert!(
        dv["new_closereason"]
            .as_str()
            .unwrap_or_default()
            .contains("Expired"),
        "the reason is shown: {dv}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_across_the_deadline_never_closes_a_referral_accepted_in_partner_center() {
    let h = local_rule_harness().await;
    let (id, deadline) = received_referral(&h).await;
    h.sim.clock().advance_to(deadline - Duration::hours(2));
    h.settle(3).await;

    let fault = listings_fail(&h);
    // A person accepts it in Partner Center before the deadline; we cannot see it.
    h.sim.clock().advance_to(deadline - Duration::minutes(30));
    h.sim.state().accept_referral(&id).unwrap();

    h.sim.clock().advance_to(deadline + Duration::minutes(30));
    let s = h.cycle().await;
    assert!(
        s.errors
            .iter()
            .any(|e| e.to_string().contains("partner_center")),
        "the listing failed: {s:?}"
    );
    assert_not_closed(
        &h,
        &id,
        "right after the deadline, Partner Center unreadable",
    );
    h.sim.clock().advance(std::time::Duration::from_secs(3600));
    h.cycle().await;
    assert_not_closed(&h, &id, "an hour into the outage");

    assert!(h.sim.state().remove_fault(fault));
    h.settle(4).await;
    assert_eq!(h.status(&id), ("Active".into(), "Accepted".into()));
    assert_eq!(
        h.sf(&id).unwrap()["StageName"],
        "Qualification",
        "the CRM follows Partner Center: accepted"
    );
    let dv = h.dv(&id).unwrap();
    assert_eq!(
        (dv["statecode"].clone(), dv["statuscode"].clone()),
        (0.into(), 1.into()),
        "{dv}"
    );
    let events = h.store.read(|r| r.events_for(&id)).unwrap();
    assert!(
        !events
            .iter()
            .any(|e| e.kind == "expired" || e.kind == "closed"),
        "never expired nor closed: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_referral_is_closed_as_expired_only_once_partner_center_is_read_again() {
    let h = local_rule_harness().await;
    let (id, deadline) = received_referral(&h).await;
    let opp = sf_id(&h.sf(&id).unwrap());
    h.sim.clock().advance_to(deadline - Duration::hours(2));
    h.settle(3).await;

    let fault = listings_fail(&h);
    h.sim.clock().advance_to(deadline + Duration::minutes(30));
    let s = h.cycle().await;
    assert!(
        s.errors
            .iter()
            .any(|e| e.to_string().contains("partner_center")),
        "{s:?}"
    );
    assert_eq!(s.expired, 0, "{s:?}");
    assert_not_closed(&h, &id, "Partner Center unreadable");

    // A late acceptance from the CRM is still refused, and said so on the record.
    h.sim.state().set_sf_stage(&opp, "Qualification").unwrap();
    h.cycle().await;
    h.cycle().await;
    assert_eq!(h.status(&id).0, "New", "the late acceptance is not sent");
    let shown = h.sim.state().salesforce_opportunity(&opp).unwrap();
    assert!(
        shown["Partner_Center_Sync_Error__c"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "the refusal is on the record: {shown}"
    );
    let failures = h
        .store
        .read(|r| r.list_failures(&[FailureState::Open]))
        .unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f.record == id && f.message.contains("expired")),
        "{failures:?}"
    );
    assert_not_closed(&h, &id, "still unreadable");

    assert!(h.sim.state().remove_fault(fault));
    h.settle(5).await;
    assert_closed_as_expired(&h, &id);
    let snap = h.store.read(|r| r.get_referral(&id)).unwrap().unwrap();
    assert!(snap.locally_expired);
    assert_eq!(h.status(&id).0, "New", "nothing is sent to Partner Center");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_first_seen_past_its_deadline_lands_closed_as_expired_in_every_crm() {
    let h = local_rule_harness().await;
    let id = h.sim.state().insert_referrals(1).remove(0);
    // First seen two hours past its deadline (a long outage, a first
    // install), while Partner Center still shows it unanswered.
    h.sim
        .clock()
        .advance_to(created_at(&h, &id) + Duration::days(14) + Duration::hours(2));
    assert_eq!(h.status(&id).0, "New");

    // Look at both CRMs after every CRM write call: never on hold, not even briefly.
    let on_hold = Arc::new(Mutex::new(Vec::new()));
    let seen = on_hold.clone();
    let sim = h.sim.state().clone();
    let rid = id.clone();
    let engine = h.engine_with_failpoint(Arc::new(move |name: &str| {
        if name.starts_with("crm_") {
            let sf = sim.salesforce_opportunity_by_referral(&rid);
            let dv = sim.dynamics_opportunity_by_referral(&rid);
            if sf.as_ref().is_some_and(|o| o["StageName"] == "On Hold")
                || dv.as_ref().is_some_and(|o| o["statuscode"] == 2)
            {
                seen.lock().unwrap().push(format!("{name}: {sf:?} {dv:?}"));
            }
        }
        false
    }));
    let mut runs: Vec<CycleSummary> = Vec::new();
    for _ in 0..5 {
        let s = engine.run_cycle(&CycleOptions::default()).await.unwrap();
        let quiet = s.writes() == 0 && s.pending_effects == 0;
        runs.push(s);
        if quiet {
            break;
        }
    }
    assert!(
        on_hold.lock().unwrap().is_empty(),
        "landed on hold: {:?}",
        on_hold.lock().unwrap()
    );
    assert_closed_as_expired(&h, &id);

    // One opportunity per CRM, and steady state: a cycle with no write.
    let st = h.sim.state();
    let sf_count = st
        .salesforce_opportunity_ids()
        .iter()
        .filter(|o| st.salesforce_opportunity(o).unwrap()["Referral_Identifier__c"] == id.as_str())
        .count();
    let dv_count = st
        .dynamics_opportunity_ids()
        .iter()
        .filter(|o| st.dynamics_opportunity(o).unwrap()["new_referralid"] == id.as_str())
        .count();
    assert_eq!((sf_count, dv_count), (1, 1), "no duplicate");
    let last = runs.last().unwrap();
    assert!(
        last.writes() == 0 && last.pending_effects == 0,
        "settled: {runs:?}"
    );
    h.sim.state().reset_counters();
    let s = h.cycle().await;
    assert_eq!(s.writes(), 0, "{s:?}");
    assert_eq!(write_calls(&h.counters()), 0, "{:?}", h.counters());
    let snap = h.store.read(|r| r.get_referral(&id)).unwrap().unwrap();
    assert!(snap.locally_expired, "{snap:?}");
    let events = h.store.read(|r| r.events_for(&id)).unwrap();
    assert!(
        events.iter().any(|e| e.kind == "expired"),
        "the history says why: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_past_the_deadline_closes_nothing_and_vouches_for_nothing_later() {
    let h = local_rule_harness().await;
    let (id, deadline) = received_referral(&h).await;
    let sf_opp = h.link_crm_id(CrmKind::Salesforce, &id).unwrap();
    h.sim.clock().advance_to(deadline + Duration::minutes(30));

    let dry = h
        .engine()
        .run_cycle(&CycleOptions {
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        dry.planned
            .iter()
            .any(|p| p.contains("close") && p.contains(&sf_opp)),
        "the dry run shows the close it would make: {:?}",
        dry.planned
    );
    assert_not_closed(&h, &id, "after a dry run");
    assert_eq!(h.sf(&id).unwrap()["StageName"], "On Hold");

    // The dry run's listing was not recorded as fresh data: a real cycle
    // that cannot read Partner Center closes nothing.
    let fault = listings_fail(&h);
    h.cycle().await;
    assert_not_closed(&h, &id, "Partner Center unreadable after a dry run");

    assert!(h.sim.state().remove_fault(fault));
    h.settle(5).await;
    assert_closed_as_expired(&h, &id);
}

/// A referral first seen past its deadline, with a crash right after the
/// CRM call at `point` (Dynamics: the create, or the close that follows it).
async fn first_seen_expired_with_a_crash_at(point: &'static str) {
    let h = local_rule_harness().await;
    let id = h.sim.state().insert_referrals(1).remove(0);
    h.sim
        .clock()
        .advance_to(created_at(&h, &id) + Duration::days(14) + Duration::hours(2));

    let fired = Arc::new(AtomicBool::new(false));
    let f = fired.clone();
    let sim = h.sim.state().clone();
    let rid = id.clone();
    let engine = h.engine_with_failpoint(Arc::new(move |name: &str| {
        name == point
            && sim.dynamics_opportunity_by_referral(&rid).is_some()
            && !f.swap(true, Ordering::SeqCst)
    }));
    let result = engine.run_cycle(&CycleOptions::default()).await;
    assert!(fired.load(Ordering::SeqCst), "{point} was reached");
    assert!(result.is_err(), "the cycle stopped at {point}");
    drop(engine);

    let runs = h.settle(6).await;
    assert_closed_as_expired(&h, &id);
    let st = h.sim.state();
    let dv_count = st
        .dynamics_opportunity_ids()
        .iter()
        .filter(|o| st.dynamics_opportunity(o).unwrap()["new_referralid"] == id.as_str())
        .count();
    assert_eq!(dv_count, 1, "{point}: no duplicate");
    let last = runs.last().unwrap();
    assert!(
        last.writes() == 0 && last.pending_effects == 0,
        "{point}: settled: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_creating_an_expired_dynamics_row_still_closes_it() {
    first_seen_expired_with_a_crash_at("crm_upsert.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_closing_an_expired_dynamics_row_loses_nothing() {
    first_seen_expired_with_a_crash_at("crm_close.before_commit").await;
}
