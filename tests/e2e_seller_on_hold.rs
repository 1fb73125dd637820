//! What a seller put on a received referral's opportunity while it was on
//! hold, against the simulator with the shipped mappings: the fields the
//! mapping sends only to Partner Center (the opportunity's id, the partner
//! contact) are held while the referral is received, and reach Partner
//! Center once a stage move has accepted it; so does an edit of a field both
//! sides hold (the amount), which the opportunity keeps meanwhile. The
//! simulator's referral is asked, not the engine's store.

mod sync_support;

use std::time::Duration;

use cosell_sync::store::CrmKind;
use serde_json::{Value, json};
use sync_support::*;

/// A received inbound referral linked in the CRM `crm_of` reads, with its
/// opportunity's id there.
async fn on_hold(h: &Harness, crm_of: impl Fn(&Harness, &str) -> Option<Value>) -> String {
    let id = h.sim.state().insert_referrals(1).remove(0);
    h.settle(4).await;
    assert!(crm_of(h, &id).is_some(), "{id} is in the CRM");
    assert_eq!(h.status(&id).0, "New", "still received");
    id
}

/// The partner contact the simulator's referral holds first in `team`.
fn first_team_member(h: &Harness, id: &str) -> Value {
    h.referral(id)["team"][0].clone()
}

/// A Salesforce-only sync with one received referral on hold: the harness,
/// the referral id and its opportunity's Id.
async fn salesforce_deal_on_hold() -> (Harness, String, String) {
    salesforce_deal_on_hold_mapped(None).await
}

/// [`salesforce_deal_on_hold`], with `mapping` as the Salesforce mapping.
async fn salesforce_deal_on_hold_mapped(mapping: Option<String>) -> (Harness, String, String) {
    let h = harness_with(
        options(2, 0),
        &[("COSELL_SYNC__DYNAMICS__ENABLED", "false")],
    )
    .await;
    if let Some(mapping) = mapping {
        let dir = h.dir.path().join("mappings");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("salesforce.toml"), mapping).unwrap();
    }
    h.settle(4).await;
    let id = on_hold(&h, |h, id| h.sf(id)).await;
    let opp = h.sf(&id).unwrap()["Id"].as_str().unwrap().to_owned();
    (h, id, opp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_fields_held_on_hold_reach_partner_center_after_the_acceptance() {
    let (h, id, opp) = salesforce_deal_on_hold().await;
    assert_eq!(
        h.link_crm_id(CrmKind::Salesforce, &id).as_deref(),
        Some(opp.as_str())
    );

    // On hold: the seller names the partner contact. Not sent yet.
    h.sim.clock().advance(Duration::from_secs(60));
    h.sim
        .state()
        .edit_salesforce(
            &opp,
            json!({
                "Partner_Contact_First_Name__c": "Ada",
                "Partner_Contact_Last_Name__c": "Lovelace",
                "Partner_Contact_Email__c": "ada@contoso-partner.example",
                "Partner_Contact_Phone__c": "+353 1 555 0100",
            }),
        )
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.status(&id).0, "New");
    assert!(h.referral(&id)["externalReferenceId"].is_null());

    // Moved out of on-hold: accepted, then the held fields follow.
    h.sim.clock().advance(Duration::from_secs(60));
    h.sim.state().set_sf_stage(&opp, "Qualification").unwrap();
    let cycles = h.settle(6).await;
    assert_eq!(h.status(&id), ("Active".into(), "Accepted".into()));
    let r = h.referral(&id);
    assert_eq!(r["externalReferenceId"], json!(opp), "{r}");
    let member = first_team_member(&h, &id);
    assert_eq!(member["firstName"], "Ada", "{member}");
    assert_eq!(member["lastName"], "Lovelace", "{member}");
    assert_eq!(member["email"], "ada@contoso-partner.example", "{member}");
    assert_eq!(member["phoneNumber"], "+353 1 555 0100", "{member}");

    // Sent once: the sync settled, and a quiet cycle writes nothing.
    let last = cycles.last().unwrap();
    assert_eq!(last.writes(), 0, "{}", last.one_line());
    h.sim.clock().advance(Duration::from_secs(60));
    let before = write_calls(&h.counters());
    let s = h.cycle().await;
    assert_eq!(s.writes(), 0, "{}", s.one_line());
    assert_eq!(write_calls(&h.counters()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamics_opportunity_id_reaches_partner_center_after_the_acceptance() {
    let h = harness_with(
        options(2, 0),
        &[("COSELL_SYNC__SALESFORCE__ENABLED", "false")],
    )
    .await;
    h.settle(4).await;
    let id = on_hold(&h, |h, id| h.dv(id)).await;
    let opp = h.dv(&id).unwrap()["opportunityid"]
        .as_str()
        .unwrap()
        .to_owned();

    h.sim.clock().advance(Duration::from_secs(60));
    h.sim
        .state()
        .edit_dynamics(
            &opp,
            json!({
                "new_partnercontactfirstname": "Grace",
                "new_partnercontactlastname": "Hopper",
                "new_partnercontactemail": "grace@contoso-partner.example",
                "new_partnercontactphone": "+1 425 555 0100",
            }),
        )
        .unwrap();
    h.settle(4).await;
    assert!(h.referral(&id)["externalReferenceId"].is_null());

    h.sim.clock().advance(Duration::from_secs(60));
    h.sim
        .state()
        .edit_dynamics(&opp, json!({"statuscode": 1}))
        .unwrap();
    h.settle(6).await;
    assert_eq!(h.status(&id), ("Active".into(), "Accepted".into()));
    let r = h.referral(&id);
    assert_eq!(r["externalReferenceId"], json!(opp), "{r}");
    let member = first_team_member(&h, &id);
    assert_eq!(member["email"], "grace@contoso-partner.example", "{member}");
    assert_eq!(member["lastName"], "Hopper", "{member}");
}

/// A number the simulator holds (an integer or a decimal).
fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salesforce_amount_edited_on_hold_reaches_partner_center_once_accepted() {
    let (h, id, opp) = salesforce_deal_on_hold().await;
    let first = number(&h.referral(&id)["details"]["dealValue"]);
    assert_ne!(first, Some(4242.0));

    // On hold: the seller sets the amount. Not sent yet, and kept.
    h.sim.clock().advance(Duration::from_secs(60));
    h.sim
        .state()
        .edit_salesforce(&opp, json!({"Amount": 4242}))
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.status(&id).0, "New");
    assert_eq!(number(&h.referral(&id)["details"]["dealValue"]), first);
    assert_eq!(number(&h.sf(&id).unwrap()["Amount"]), Some(4242.0));

    // Moved out of on-hold: accepted, then the seller's amount follows;
    // Salesforce keeps it.
    h.sim.clock().advance(Duration::from_secs(60));
    h.sim.state().set_sf_stage(&opp, "Qualification").unwrap();
    let cycles = h.settle(6).await;
    assert_eq!(h.status(&id), ("Active".into(), "Accepted".into()));
    let r = h.referral(&id);
    assert_eq!(number(&r["details"]["dealValue"]), Some(4242.0), "{r}");
    let o = h.sf(&id).unwrap();
    assert_eq!(number(&o["Amount"]), Some(4242.0), "{o}");

    let last = cycles.last().unwrap();
    assert_eq!(last.writes(), 0, "{}", last.one_line());
    h.sim.clock().advance(Duration::from_secs(60));
    let before = write_calls(&h.counters());
    let s = h.cycle().await;
    assert_eq!(s.writes(), 0, "{}", s.one_line());
    assert_eq!(write_calls(&h.counters()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_salesforce_owning_the_amount_an_edit_on_hold_outlasts_a_later_partner_center_change()
{
    // The shipped mapping, with the deal value owned by the CRM.
    let shipped = cosell_sync::mapping::DEFAULT_SALESFORCE;
    let rule = r#"{ crm = "Amount", transform = "decimal", empty = "keep" }"#;
    assert!(shipped.contains(rule), "the shipped deal value rule");
    let owned = r#"{ crm = "Amount", transform = "decimal", empty = "keep", owner = "crm" }"#;
    let (h, id, opp) = salesforce_deal_on_hold_mapped(Some(shipped.replace(rule, owned))).await;

    // On hold: the seller sets the amount; a later cycle reads Partner
    // Center's own change of the deal value.
    h.sim.clock().advance(Duration::from_secs(60));
    h.sim
        .state()
        .edit_salesforce(&opp, json!({"Amount": 4242}))
        .unwrap();
    h.settle(4).await;
    h.sim.clock().advance(Duration::from_secs(60));
    h.sim
        .state()
        .edit_referral(
            &id,
            &[cosell_sync::sim::PatchOp::replace(
                "/details/dealValue",
                60000,
            )],
        )
        .unwrap();
    h.settle(4).await;
    assert_eq!(
        number(&h.sf(&id).unwrap()["Amount"]),
        Some(4242.0),
        "Salesforce owns it"
    );

    // Accepted: Salesforce's amount reaches Partner Center.
    h.sim.clock().advance(Duration::from_secs(60));
    h.sim.state().set_sf_stage(&opp, "Qualification").unwrap();
    h.settle(6).await;
    assert_eq!(h.status(&id), ("Active".into(), "Accepted".into()));
    let r = h.referral(&id);
    assert_eq!(number(&r["details"]["dealValue"]), Some(4242.0), "{r}");
    assert_eq!(number(&h.sf(&id).unwrap()["Amount"]), Some(4242.0));
}
