//! A decline carries its notes: the notes typed on the opportunity together
//! with the decline reach Partner Center in the same PATCH as the decline
//! (a declined referral is archived: nothing can be sent after it). Other
//! edits made with the decline are not sent, and the history says so.

mod sync_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cosell_sync::sim::Api;
use cosell_sync::sim::PatchOp;
use cosell_sync::store::FailureState;
use cosell_sync::sync::CycleOptions;
use serde_json::{Value, json};
use sync_support::*;

const NOTES: &str = "Customer postponed the project to next fiscal year; revisit in Q3.";

fn sf_id(opp: &Value) -> String {
    opp["Id"].as_str().expect("Salesforce Id").to_owned()
}

fn dv_id(opp: &Value) -> String {
    opp["opportunityid"]
        .as_str()
        .expect("opportunityid")
        .to_owned()
}

/// A synced harness and one received inbound referral in it.
async fn received() -> (Harness, String) {
    let h = harness(options(8, 0)).await;
    h.settle(4).await;
    let id = h
        .received_inbound()
        .into_iter()
        .next()
        .expect("a received inbound referral");
    assert_ne!(
        h.referral(&id)["details"]["notes"],
        NOTES,
        "the test needs notes that differ"
    );
    (h, id)
}

fn assert_declined_with_notes(h: &Harness, id: &str, reason: &str) {
    let r = h.referral(id);
    assert_eq!(
        (r["status"].as_str(), r["substatus"].as_str()),
        (Some("Closed"), Some("Declined")),
        "{r}"
    );
    assert_eq!(r["statusReason"], reason, "{r}");
    assert_eq!(
        r["details"]["notes"], NOTES,
        "the notes went with the decline: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_from_salesforce_carries_its_notes_in_the_same_patch() {
    let (h, id) = received().await;
    let opp = sf_id(&h.sf(&id).unwrap());
    let value_before = h.referral(&id)["details"]["dealValue"].clone();

    // The seller declines, writes why in the notes, and also changes the amount.
    h.sim
        .state()
        .edit_salesforce(
            &opp,
            json!({"StageName": "Closed Lost", "Loss_Reason__c": "No budget this year",
                   "Description": NOTES, "Amount": 4242}),
        )
        .unwrap();
    h.sim.state().reset_counters();
    h.settle(4).await;

    assert_declined_with_notes(&h, &id, "No budget this year");
    assert_eq!(
        h.counters().operation(Api::PartnerCenter, "PATCH referral"),
        1,
        "one PATCH: the decline and its notes together"
    );
    assert_eq!(
        h.referral(&id)["details"]["dealValue"],
        value_before,
        "only notes go with a decline"
    );
    let events = h.store.read(|r| r.events_for(&id)).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "withheld" && e.message.contains("/details/dealValue")),
        "the history says which CRM edit was not sent: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_from_dynamics_carries_its_notes() {
    let (h, id) = received().await;
    let opp = dv_id(&h.dv(&id).unwrap());

    h.sim
        .state()
        .edit_dynamics(&opp, json!({"description": NOTES}))
        .unwrap();
    h.sim
        .state()
        .lose_dynamics(&opp, Some("Chose another partner"))
        .unwrap();
    h.settle(4).await;

    assert_declined_with_notes(&h, &id, "Chose another partner");
    assert_eq!(
        h.sf(&id).unwrap()["StageName"],
        "Closed Lost",
        "Salesforce follows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_typed_with_a_decline_without_reason_go_once_the_reason_is_filled() {
    let (h, id) = received().await;
    let opp = sf_id(&h.sf(&id).unwrap());

    h.sim
        .state()
        .edit_salesforce(
            &opp,
            json!({"StageName": "Closed Lost", "Description": NOTES}),
        )
        .unwrap();
    h.settle(3).await;
    assert_eq!(h.status(&id).0, "New", "no reason: nothing is sent");
    assert_ne!(
        h.referral(&id)["details"]["notes"],
        NOTES,
        "the notes wait for the decline"
    );
    let shown = h.sim.state().salesforce_opportunity(&opp).unwrap();
    assert!(
        shown["Partner_Center_Sync_Error__c"]
            .as_str()
            .unwrap_or_default()
            .contains("requires a reason"),
        "the seller sees why: {shown}"
    );
    let failures = h
        .store
        .read(|r| r.list_failures(&[FailureState::Open]))
        .unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f.record == id && f.message.contains("reason")),
        "{failures:?}"
    );

    h.sim
        .state()
        .edit_salesforce(&opp, json!({"Loss_Reason__c": "No budget this year"}))
        .unwrap();
    h.settle(4).await;
    assert_declined_with_notes(&h, &id, "No budget this year");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notes_survive_a_412_and_the_decision_made_again() {
    let (h, id) = received().await;
    let opp = sf_id(&h.sf(&id).unwrap());
    h.sim
        .state()
        .edit_salesforce(
            &opp,
            json!({"StageName": "Closed Lost", "Loss_Reason__c": "No budget this year",
                   "Description": NOTES}),
        )
        .unwrap();

    // Someone renames the referral in Partner Center between plan and execute.
    let sim = h.sim.state().clone();
    let rid = id.clone();
    let fired = Arc::new(AtomicBool::new(false));
    let f = fired.clone();
    let engine = h.engine_with_failpoint(Arc::new(move |name: &str| {
        if name == "execute.before" && !f.swap(true, Ordering::SeqCst) {
            sim.edit_referral(
                &rid,
                &[PatchOp::replace("/name", "Renamed in Partner Center")],
            )
            .unwrap();
        }
        false
    }));
    h.sim.state().reset_counters();
    let s = engine.run_cycle(&CycleOptions::default()).await.unwrap();
    assert!(fired.load(Ordering::SeqCst));
    assert!(
        h.counters().operation(Api::PartnerCenter, "PATCH referral") >= 2,
        "one 412, one retry: {s:?}"
    );
    assert_declined_with_notes(&h, &id, "No budget this year");
    assert_eq!(
        h.referral(&id)["name"],
        "Renamed in Partner Center",
        "the concurrent edit is not overwritten"
    );
}
