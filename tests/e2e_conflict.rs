//! A field edited on both sides before one cycle, against the simulator:
//! the deal value of an accepted referral is changed by a seller in
//! Salesforce (`Amount`) and in Partner Center (`details.dealValue`). The
//! shipped mapping leaves the owner to `newest`: the later edit must end up
//! on both sides, and the earlier one nowhere. The same holds when the
//! Salesforce edit is still waiting to reach Partner Center (it refuses
//! writes) by the time Partner Center's edit is read, or was quarantined
//! and is put back by the operator (`failures retry`) afterwards.
//!
//! The mapping here is the shipped one without its fields that only go to
//! Partner Center (the Opportunity's id, the partner contact), so that the
//! deal value is the only thing a conflict decides.

mod sync_support;

use std::time::Duration;

use cosell_sync::sim::{Api, PatchOp};
use cosell_sync::sync::CycleSummary;
use serde_json::json;
use sync_support::*;

/// The shipped Salesforce mapping without its `to_partner_center` fields.
fn deal_value_mapping() -> String {
    without_to_partner_center(cosell_sync::mapping::DEFAULT_SALESFORCE)
}

/// A shipped mapping without its `to_partner_center` fields.
fn without_to_partner_center(shipped: &str) -> String {
    let kept: Vec<&str> = shipped
        .lines()
        .filter(|l| !(l.starts_with('"') && l.contains(r#"direction = "to_partner_center""#)))
        .collect();
    assert!(
        kept.len() + 5 <= shipped.lines().count(),
        "the to-Partner-Center rules are gone"
    );
    kept.join("\n")
}

/// A received inbound referral accepted from Salesforce (so that its deal
/// value travels both ways), edited once more and settled: (referral id,
/// Opportunity id).
async fn accepted_deal(h: &Harness) -> (String, String) {
    let (id, opp) = h.accept_a_received_deal_in_salesforce().await;
    // A seller's edit once accepted, settled: afterwards only the deal value
    // below differs.
    h.sim.clock().advance(Duration::from_secs(60));
    h.sim
        .state()
        .edit_salesforce(&opp, json!({ "Description": "Scoped with the customer." }))
        .unwrap();
    h.settle(6).await;
    (id, opp)
}

/// Edits the deal value on both sides, the Salesforce edit first when
/// `crm_first`, ten minutes apart; then cycles until nothing is left to do.
/// Returns (Partner Center's deal value, Salesforce's Amount, whether a
/// conflict was recorded).
async fn both_sides_edit(crm_first: bool) -> (f64, f64, bool) {
    let h = harness(options(4, 0)).await;
    let dir = h.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("salesforce.toml"), deal_value_mapping()).unwrap();
    let (id, opp) = accepted_deal(&h).await;
    h.sim.clock().advance(Duration::from_secs(3600));
    let edit_crm = || {
        h.sim
            .state()
            .edit_salesforce(&opp, json!({ "Amount": 555 }))
            .unwrap();
    };
    let edit_pc = || {
        h.sim
            .state()
            .edit_referral(&id, &[PatchOp::replace("/details/dealValue", 777)])
            .unwrap();
    };
    if crm_first {
        edit_crm();
        h.sim.clock().advance(Duration::from_secs(600));
        edit_pc();
    } else {
        edit_pc();
        h.sim.clock().advance(Duration::from_secs(600));
        edit_crm();
    }
    h.sim.clock().advance(Duration::from_secs(60));
    h.settle(6).await;
    let pc = h.referral(&id)["details"]["dealValue"].as_f64().unwrap();
    let crm = h.sim.state().salesforce_opportunity(&opp).unwrap()["Amount"]
        .as_f64()
        .unwrap();
    let conflict = h
        .store
        .read(|r| r.events_for(&id))
        .unwrap()
        .iter()
        .any(|e| e.kind == "conflict");
    (pc, crm, conflict)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_partner_center_edit_wins_on_both_sides() {
    let (pc, crm, conflict) = both_sides_edit(true).await;
    assert!(conflict, "a conflict is recorded");
    assert_eq!((pc, crm), (777.0, 777.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_salesforce_edit_wins_on_both_sides() {
    let (pc, crm, conflict) = both_sides_edit(false).await;
    assert!(conflict, "a conflict is recorded");
    assert_eq!((pc, crm), (555.0, 555.0));
}

/// A deal accepted in Salesforce under the deal-value mapping, then its
/// Amount edited to 555 in Salesforce while Partner Center refuses writes,
/// and one cycle run: the deal's ids, the refusal (still in place) and that
/// cycle.
async fn a_salesforce_edit_partner_center_refuses(
    h: &Harness,
) -> (String, String, u64, CycleSummary) {
    let dir = h.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("salesforce.toml"), deal_value_mapping()).unwrap();
    let (id, opp) = accepted_deal(h).await;
    let refusing = h.refuse_patches(Api::PartnerCenter);
    h.sim.clock().advance(Duration::from_secs(3600));
    h.sim
        .state()
        .edit_salesforce(&opp, json!({ "Amount": 555 }))
        .unwrap();
    h.sim.clock().advance(Duration::from_secs(60));
    let s = h.cycle().await;
    (id, opp, refusing, s)
}

/// The deal value edited to 777 in Partner Center ten minutes later.
fn a_later_partner_center_edit(h: &Harness, id: &str) {
    h.sim.clock().advance(Duration::from_secs(600));
    h.sim
        .state()
        .edit_referral(id, &[PatchOp::replace("/details/dealValue", 777)])
        .unwrap();
}

/// Partner Center's deal value and Salesforce's Amount.
fn deal_values(h: &Harness, id: &str, opp: &str) -> (Option<f64>, Option<f64>) {
    let pc = h.referral(id)["details"]["dealValue"].as_f64();
    let sf = h.sim.state().salesforce_opportunity(opp).unwrap()["Amount"].as_f64();
    (pc, sf)
}

/// The Salesforce edit first, while Partner Center refuses writes: its
/// update waits past a cycle that lists Partner Center completely. Then the
/// deal value is edited in Partner Center, and Partner Center takes writes
/// again. The waiting edit is still an edit on the Salesforce side: the
/// Partner Center edit, newer, wins on both sides, and the waiting value
/// never reaches Partner Center (sent, it would overwrite the newer edit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_partner_center_edit_wins_over_a_salesforce_edit_still_waiting_to_be_sent() {
    let h = harness(options(4, 0)).await;
    let (id, opp, refusing, s) = a_salesforce_edit_partner_center_refuses(&h).await;
    assert!(s.pending_effects > 0, "the edit waits: {}", s.one_line());
    assert_ne!(deal_values(&h, &id, &opp).0, Some(555.0));

    a_later_partner_center_edit(&h, &id);
    assert!(h.sim.state().remove_fault(refusing));
    h.sim.clock().advance(Duration::from_secs(60));
    h.settle_quietly(6).await;

    assert_eq!(
        deal_values(&h, &id, &opp),
        (Some(777.0), Some(777.0)),
        "the newer edit on both sides"
    );
    let conflict = h
        .store
        .read(|r| r.events_for(&id))
        .unwrap()
        .iter()
        .any(|e| e.kind == "conflict");
    assert!(conflict, "a conflict is recorded");
}

/// The Salesforce edit first, while Partner Center refuses writes until the
/// update is quarantined (one attempt allowed). Then the deal value is edited
/// in Partner Center, newer, and read: a conflict, Partner Center's value
/// kept and written to Salesforce. Then the operator runs `failures retry`:
/// the quarantined update is decided again and has nothing left to send
/// (sent as stored, its older value would overwrite the newer edit on both
/// sides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_quarantined_salesforce_edit_does_not_overwrite_a_newer_partner_center_edit() {
    let h = harness_with(options(4, 0), &[("COSELL_SYNC__SYNC__MAX_ATTEMPTS", "1")]).await;
    let (id, opp, refusing, s) = a_salesforce_edit_partner_center_refuses(&h).await;
    retried_after_a_later_partner_center_edit(&h, &id, refusing, &s).await;
    assert_eq!(
        deal_values(&h, &id, &opp),
        (Some(777.0), Some(777.0)),
        "the newer edit on both sides"
    );
}

/// The same on Dynamics 365: the opportunity's estimated value edited to
/// 555 while Partner Center refuses writes until the update is quarantined;
/// then 777 in Partner Center, newer, read and written to Dataverse; then
/// `failures retry`. The newer edit stands on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_quarantined_dynamics_edit_does_not_overwrite_a_newer_partner_center_edit() {
    let h = harness_with(
        options(4, 0),
        &[
            ("COSELL_SYNC__SYNC__MAX_ATTEMPTS", "1"),
            ("COSELL_SYNC__SALESFORCE__ENABLED", "false"),
        ],
    )
    .await;
    let dir = h.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dynamics.toml"),
        without_to_partner_center(cosell_sync::mapping::DEFAULT_DYNAMICS),
    )
    .unwrap();
    let (id, opp) = h.accept_a_received_deal_in_dynamics().await;

    let refusing = h.refuse_patches(Api::PartnerCenter);
    h.sim.clock().advance(Duration::from_secs(3600));
    h.sim
        .state()
        .edit_dynamics(&opp, json!({"estimatedvalue": 555}))
        .unwrap();
    h.sim.clock().advance(Duration::from_secs(60));
    let s = h.cycle().await;
    retried_after_a_later_partner_center_edit(&h, &id, refusing, &s).await;
    let pc = h.referral(&id)["details"]["dealValue"].as_f64();
    let dv = h.sim.state().dynamics_opportunity(&opp).unwrap()["estimatedvalue"].as_f64();
    assert_eq!(
        (pc, dv),
        (Some(777.0), Some(777.0)),
        "the newer edit on both sides"
    );
}

/// After a cycle `s` that quarantined the CRM edit's update: Partner Center
/// takes writes again, its deal value is edited (newer) and read, the
/// operator runs `failures retry`, and the sync settles.
async fn retried_after_a_later_partner_center_edit(
    h: &Harness,
    id: &str,
    refusing: u64,
    s: &CycleSummary,
) {
    assert_eq!(s.quarantined, 1, "{}", s.one_line());
    assert!(h.sim.state().remove_fault(refusing));
    a_later_partner_center_edit(h, id);
    h.sim.clock().advance(Duration::from_secs(60));
    h.settle(6).await;
    let failure = h
        .store
        .read(|r| r.failure_for(id, "partner_center"))
        .unwrap()
        .expect("the update is quarantined");
    cosell_sync::commands::failures_retry(&h.settings, failure.id).unwrap();
    h.sim.clock().advance(Duration::from_secs(60));
    h.settle_quietly(6).await;
}
