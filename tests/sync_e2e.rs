//! The sync engine end to end: the real clients against the simulator, the
//! shipped mappings, a fresh state store. Each guarantee of DESIGN.md has a
//! test here that fails if it breaks.

mod sync_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cosell_sync::sim::PatchOp;
use cosell_sync::sim::{Api, FaultKind, FaultRule};
use cosell_sync::store::FailureState;
use cosell_sync::sync::CycleOptions;
use serde_json::{Value, json};
use sync_support::*;

fn sf_id(opp: &Value) -> String {
    opp["Id"].as_str().expect("Salesforce Id").to_owned()
}

fn dv_id(opp: &Value) -> String {
    opp["opportunityid"]
        .as_str()
        .expect("opportunityid")
        .to_owned()
}

/// Every Salesforce opportunity per referral id: more than one is a duplicate.
fn sf_opportunities_per_referral(h: &Harness) -> BTreeMap<String, usize> {
    let st = h.sim.state();
    let mut out = BTreeMap::new();
    for id in st.salesforce_opportunity_ids() {
        let o = st.salesforce_opportunity(&id).unwrap();
        if let Some(r) = o["Referral_Identifier__c"].as_str() {
            *out.entry(r.to_owned()).or_default() += 1;
        }
    }
    out
}

fn dv_opportunities_per_referral(h: &Harness) -> BTreeMap<String, usize> {
    let st = h.sim.state();
    let mut out = BTreeMap::new();
    for id in st.dynamics_opportunity_ids() {
        let o = st.dynamics_opportunity(&id).unwrap();
        if let Some(r) = o["new_referralid"].as_str() {
            *out.entry(r.to_owned()).or_default() += 1;
        }
    }
    out
}

fn no_duplicates(h: &Harness) {
    for (r, n) in sf_opportunities_per_referral(h) {
        assert_eq!(n, 1, "referral {r} has {n} Salesforce opportunities");
    }
    for (r, n) in dv_opportunities_per_referral(h) {
        assert_eq!(n, 1, "referral {r} has {n} Dynamics opportunities");
    }
}

/// A complete private deal as a seller fills it in Salesforce.
fn sf_new_deal(name: &str, country: Option<&str>) -> Value {
    let mut v = json!({
        "Name": name, "Amount": 125000, "CloseDate": "2027-03-31",
        "StageName": "Qualification", "Sync_with_Partner_Center__c": true,
        "Customer_Name__c": "Fabrikam Ltd", "Customer_Street__c": "1 Main Street",
        "Customer_City__c": "Dublin", "Customer_Postal_Code__c": "D02",
        "Partner_Contact_First_Name__c": "Ada", "Partner_Contact_Last_Name__c": "Lovelace",
        "Partner_Contact_Email__c": "ada@contoso-partner.example", "Partner_Contact_Phone__c": "+353 1 555 0100",
        "Microsoft_Solutions__c": "SOL-12345-ABC"
    });
    if let Some(c) = country {
        v["Customer_Country__c"] = json!(c);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_referral_is_accepted_and_won_from_salesforce() {
    let h = harness(options(8, 0)).await;
    h.settle(4).await;
    let id = h
        .received_inbound()
        .into_iter()
        .next()
        .expect("a received inbound referral");
    let opp = h.sf(&id).expect("the referral landed in Salesforce");
    assert_eq!(opp["StageName"], "On Hold", "received deals land on hold");
    assert_eq!(h.dv(&id).expect("and in Dynamics")["statuscode"], 2);

    // The seller moves it out of on-hold: that accepts the referral.
    h.sim
        .state()
        .set_sf_stage(&sf_id(&opp), "Qualification")
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.status(&id), ("Active".into(), "Accepted".into()));
    assert_eq!(
        h.dv(&id).unwrap()["statuscode"],
        1,
        "Dynamics follows Partner Center"
    );

    h.sim
        .state()
        .set_sf_stage(&sf_id(&opp), "Closed Won")
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.status(&id), ("Closed".into(), "Won".into()));
    assert_eq!(
        h.dv(&id).unwrap()["statecode"],
        1,
        "closed as won in Dynamics"
    );
    no_duplicates(&h);

    let events = h.store.read(|r| r.events_for(&id)).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "updated" && e.message.contains("accept")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_referral_is_accepted_and_won_from_dynamics() {
    let h = harness(options(8, 0)).await;
    h.settle(4).await;
    let id = h
        .received_inbound()
        .into_iter()
        .next()
        .expect("a received inbound referral");
    let opp = h.dv(&id).expect("the referral landed in Dynamics");
    h.sim
        .state()
        .edit_dynamics(&dv_id(&opp), json!({"statuscode": 1}))
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.status(&id), ("Active".into(), "Accepted".into()));
    assert_eq!(h.sf(&id).unwrap()["StageName"], "Qualification");

    h.sim.state().win_dynamics(&dv_id(&opp)).unwrap();
    h.settle(4).await;
    assert_eq!(h.status(&id), ("Closed".into(), "Won".into()));
    assert_eq!(h.sf(&id).unwrap()["StageName"], "Closed Won");
    no_duplicates(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declining_needs_a_reason_and_sends_it() {
    let h = harness(options(8, 0)).await;
    h.settle(4).await;
    let id = h.received_inbound().into_iter().next().unwrap();
    let opp = sf_id(&h.sf(&id).unwrap());

    h.sim.state().set_sf_stage(&opp, "Closed Lost").unwrap();
    h.settle(3).await;
    assert_eq!(h.status(&id).0, "New", "no reason: nothing is sent");
    let shown = h.sim.state().salesforce_opportunity(&opp).unwrap();
    let error = shown["Partner_Center_Sync_Error__c"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("requires a reason"),
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
    assert_eq!(h.status(&id), ("Closed".into(), "Declined".into()));
    assert_eq!(h.referral(&id)["statusReason"], "No budget this year");
    let shown = h.sim.state().salesforce_opportunity(&opp).unwrap();
    assert!(
        shown["Partner_Center_Sync_Error__c"].is_null()
            || shown["Partner_Center_Sync_Error__c"] == "",
        "the error is cleared: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_15_expires_locally_and_a_late_acceptance_is_refused() {
    // Partner Center itself waits longer here, so the local rule is what acts.
    let mut opts = options(8, 0);
    opts.expiry_days = 30;
    let h = harness_with(opts, &[("COSELL_SYNC__SYNC__EXPIRY_DAYS", "14")]).await;
    h.settle(4).await;
    // A fresh referral, with Partner Center's own deadline 30 days out.
    let id = h.sim.state().insert_referrals(1).remove(0);
    h.settle(3).await;
    let opp = sf_id(&h.sf(&id).unwrap());

    // Day 15 for us (created + 14 days has passed), still before Partner
    // Center's own expirationDateTime: the midnight after created + 14 days,
    // so as little as minutes later for a referral created just before
    // midnight.
    let time_of = |field: &str| {
        let text = h.referral(&id)[field].as_str().unwrap().to_owned();
        chrono::DateTime::parse_from_rfc3339(&text)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let ours = time_of("createdDateTime") + chrono::Duration::days(14);
    let theirs = time_of("expirationDateTime");
    assert!(theirs > ours, "{theirs} {ours}");
    h.sim
        .clock()
        .advance_to(ours + ((theirs - ours) / 2).min(chrono::Duration::minutes(30)));
    let s = h.cycle().await;
    let snap = h.store.read(|r| r.get_referral(&id)).unwrap().unwrap();
    assert!(s.expired >= 1, "{s:?} {snap:?} now={}", h.sim.clock().now());
    h.settle(3).await;
    let snap = h.store.read(|r| r.get_referral(&id)).unwrap().unwrap();
    assert!(snap.locally_expired);
    let shown = h.sim.state().salesforce_opportunity(&opp).unwrap();
    assert_eq!(
        shown["StageName"], "Closed Lost",
        "closed as expired: {shown}"
    );
    assert!(
        shown["Loss_Reason__c"]
            .as_str()
            .unwrap_or_default()
            .contains("Expired"),
        "{shown}"
    );
    assert_eq!(
        h.dv(&id).unwrap()["statecode"],
        2,
        "closed as lost in Dynamics"
    );

    // A seller accepting now is refused and told so on the record.
    h.sim.state().set_sf_stage(&opp, "Qualification").unwrap();
    h.settle(3).await;
    assert_eq!(
        h.status(&id).0,
        "New",
        "the late acceptance never reaches Partner Center"
    );
    let shown = h.sim.state().salesforce_opportunity(&opp).unwrap();
    assert!(
        !shown["Partner_Center_Sync_Error__c"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "the refusal is reported on the record: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_deal_is_created_from_salesforce_after_its_data_is_fixed() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let created = h
        .sim
        .state()
        .create_salesforce_opportunity(sf_new_deal("Fabrikam rollout", None))
        .unwrap();
    let opp = sf_id(&created);
    let before = h.counters().operation(Api::PartnerCenter, "POST create");
    h.settle(3).await;
    assert_eq!(
        h.counters().operation(Api::PartnerCenter, "POST create"),
        before,
        "an invalid deal is not sent"
    );
    let shown = h.sim.state().salesforce_opportunity(&opp).unwrap();
    let error = shown["Partner_Center_Sync_Error__c"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("customerProfile.address.country"), "{shown}");

    h.sim
        .state()
        .edit_salesforce(&opp, json!({"Customer_Country__c": "Ireland"}))
        .unwrap();
    h.settle(4).await;
    let shown = h.sim.state().salesforce_opportunity(&opp).unwrap();
    let rid = shown["Referral_Identifier__c"]
        .as_str()
        .expect("the referral id is written back")
        .to_owned();
    let referral = h.referral(&rid);
    assert_eq!(referral["direction"], "Outgoing");
    assert_eq!(referral["type"], "Independent");
    assert_eq!(
        referral["consent"]["consentToShareReferralWithMicrosoftSellers"],
        false
    );
    assert_eq!(referral["externalReferenceId"], opp.as_str());
    assert_eq!(referral["customerProfile"]["address"]["country"], "IE");
    assert!(
        shown["Partner_Center_Sync_Error__c"].is_null()
            || shown["Partner_Center_Sync_Error__c"] == ""
    );
    assert_eq!(
        h.counters().operation(Api::PartnerCenter, "POST create"),
        before + 1,
        "created once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_never_sent_before_is_not_looked_up_first() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let opp = sf_id(
        &h.sim
            .state()
            .create_salesforce_opportunity(sf_new_deal("Northwind renewal", Some("IE")))
            .unwrap(),
    );
    h.sim.state().reset_counters();
    h.cycle().await;
    let c = h.counters();
    assert_eq!(c.operation(Api::PartnerCenter, "POST create"), 1);
    assert_eq!(
        c.operation(Api::PartnerCenter, "GET list"),
        1,
        "only the cycle's own listing: a create never sent before is not looked up"
    );
    let rid = h.sim.state().salesforce_opportunity(&opp).unwrap()["Referral_Identifier__c"]
        .as_str()
        .expect("the referral id is written back")
        .to_owned();
    assert_eq!(h.referral(&rid)["externalReferenceId"], opp.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_co_sell_deal_from_salesforce_invites_microsoft() {
    let h = harness(options(2, 0)).await;
    let mut deal = sf_new_deal("Fabrikam AI pilot", Some("IE"));
    deal["How_can_Microsoft_help__c"] = json!("Proof of concept or demo");
    deal["Description"] = json!("Customer wants a pilot with Microsoft's help");
    deal["Customer_Contact_First_Name__c"] = json!("Sean");
    deal["Customer_Contact_Last_Name__c"] = json!("Murphy");
    deal["Customer_Contact_Email__c"] = json!("sean@fabrikam.example");
    deal["Customer_Contact_Phone__c"] = json!("+353 1 555 0199");
    deal["Customer_Consent_To_Share__c"] = json!(true);
    let opp = sf_id(&h.sim.state().create_salesforce_opportunity(deal).unwrap());
    h.settle(4).await;
    let shown = h.sim.state().salesforce_opportunity(&opp).unwrap();
    let rid = shown["Referral_Identifier__c"]
        .as_str()
        .unwrap_or_else(|| panic!("no referral id: {shown}"))
        .to_owned();
    let referral = h.referral(&rid);
    assert_eq!(referral["type"], "Shared");
    let engagement = referral["engagementId"].as_str().unwrap().to_owned();
    let st = h.sim.state();
    let microsoft: Vec<Value> = st
        .referral_ids()
        .into_iter()
        .filter_map(|i| st.referral(&i))
        .filter(|r| r["engagementId"] == engagement.as_str() && r["id"] != rid.as_str())
        .collect();
    assert_eq!(
        microsoft.len(),
        1,
        "one Microsoft-targeted referral in the engagement"
    );
    assert_eq!(microsoft[0]["target"][0]["id"], "msft");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_with_nothing_changed_makes_zero_writes() {
    let h = harness(options(12, 4)).await;
    // One long-lived engine, as the daemon has: its metadata reads happen once.
    let engine = h.engine();
    for _ in 0..6 {
        let s = engine.run_cycle(&CycleOptions::default()).await.unwrap();
        if s.writes() == 0 && s.pending_effects == 0 {
            break;
        }
    }
    h.sim.state().reset_counters();
    let s = engine.run_cycle(&CycleOptions::default()).await.unwrap();
    assert_eq!(s.writes(), 0, "{s:?}");
    let c = h.counters();
    assert_eq!(write_calls(&c), 0, "{c:?}");
    assert_eq!(
        c.operation(Api::PartnerCenter, "GET list"),
        1,
        "one listing call: {c:?}"
    );
    assert_eq!(c.operation(Api::Salesforce, "GET query"), 1, "{c:?}");
    assert_eq!(c.operation(Api::Dynamics, "GET opportunities"), 1, "{c:?}");
}

/// The cycle after a backfill reads back what it wrote. What the writes did
/// not carry, the new records' ids, is news for Partner Center
/// (`externalReferenceId`): that echo is decided, not skipped as seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_of_a_create_brings_the_crm_id_to_partner_center() {
    let h = harness(options(12, 0)).await;
    let engine = h.engine();
    let first = engine.run_cycle(&CycleOptions::default()).await.unwrap();
    assert!(first.crms["salesforce"].created > 0, "{first:?}");
    let ids = h.sim.state().referral_ids();
    let has_crm_id = |h: &Harness| {
        ids.iter()
            .filter(|i| !h.referral(i)["externalReferenceId"].is_null())
            .count()
    };
    assert_eq!(has_crm_id(&h), 0, "not yet known to Partner Center");
    let echo = engine.run_cycle(&CycleOptions::default()).await.unwrap();
    assert!(echo.partner_center.updated > 0, "{echo:?}");
    assert_eq!(has_crm_id(&h), echo.partner_center.updated as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_edit_is_read_again_and_decided_again() {
    let h = harness(options(8, 0)).await;
    h.settle(4).await;
    let id = h.received_inbound().into_iter().next().unwrap();
    let opp = sf_id(&h.sf(&id).unwrap());
    h.sim.state().set_sf_stage(&opp, "Qualification").unwrap();
    h.settle(4).await;
    assert_eq!(h.status(&id).1, "Accepted");

    // The seller changes the amount; meanwhile someone renames the deal in Partner Center.
    h.sim
        .state()
        .edit_salesforce(&opp, json!({"Amount": 777000}))
        .unwrap();
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
    assert_eq!(s.outcome(), "clean", "{s:?}");
    let r = h.referral(&id);
    assert_eq!(
        r["details"]["dealValue"], 777000,
        "the CRM's change is sent after the 412"
    );
    assert_eq!(
        r["name"], "Renamed in Partner Center",
        "the concurrent edit is not overwritten"
    );
    assert!(
        h.counters().operation(Api::PartnerCenter, "PATCH referral") >= 2,
        "one 412, one retry"
    );
    h.settle(3).await;
    assert_eq!(
        h.sf(&id).unwrap()["Name"],
        "Renamed in Partner Center",
        "and the rename reaches the CRM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_503_bursts_lose_nothing() {
    let h = harness(options(10, 0)).await;
    let st = h.sim.state();
    st.add_fault(
        FaultRule::new(
            Api::Salesforce,
            FaultKind::TooManyRequests {
                retry_after_secs: 1,
            },
        )
        .operation("PATCH")
        .times(3),
    );
    st.add_fault(
        FaultRule::new(
            Api::Dynamics,
            FaultKind::ServiceUnavailable {
                retry_after_secs: None,
            },
        )
        .times(4),
    );
    st.add_fault(
        FaultRule::new(
            Api::PartnerCenter,
            FaultKind::ServiceUnavailable {
                retry_after_secs: Some(1),
            },
        )
        .operation("GET list")
        .times(2),
    );
    for _ in 0..8 {
        h.cycle().await;
        h.sim.clock().advance(std::time::Duration::from_secs(120));
    }
    h.settle(4).await;
    // Every open referral reached both CRMs exactly once.
    let open: Vec<String> = h
        .sim
        .state()
        .referral_ids()
        .into_iter()
        .filter(|i| h.referral(i)["status"] != "Closed")
        .collect();
    assert!(!open.is_empty());
    for id in &open {
        assert!(h.sf(id).is_some(), "{id} missing in Salesforce");
        assert!(h.dv(id).is_some(), "{id} missing in Dynamics");
    }
    no_duplicates(&h);
    let quarantined = h
        .store
        .read(|r| r.list_failures(&[FailureState::Open]))
        .unwrap();
    assert!(
        quarantined
            .iter()
            .all(|f| f.kind != "retry" && f.kind != "permanent"),
        "{quarantined:?}"
    );
}

/// Runs a scenario that exercises every kind of remote effect, crashing at
/// `point` the first time it is reached, then lets a fresh engine finish.
async fn crash_at(point: &'static str) {
    let h = harness(options(8, 0)).await;
    h.settle(4).await;
    let inbound = h.received_inbound();
    let (accept, win_in_pc) = (inbound[0].clone(), inbound[1].clone());
    let accept_opp = sf_id(&h.sf(&accept).unwrap());
    h.sim
        .state()
        .set_sf_stage(&accept_opp, "Qualification")
        .unwrap();
    h.sim.state().accept_referral(&win_in_pc).unwrap();
    h.sim.state().win_referral(&win_in_pc).unwrap();
    let new_opp = sf_id(
        &h.sim
            .state()
            .create_salesforce_opportunity(sf_new_deal("Crash-safe deal", Some("IE")))
            .unwrap(),
    );

    h.crash_once_at(point).await;

    h.settle(6).await;
    no_duplicates(&h);
    assert_eq!(
        h.status(&accept),
        ("Active".into(), "Accepted".into()),
        "{point}: acceptance lost"
    );
    let failures = h.store.read(|r| r.list_failures(&[])).unwrap();
    let pending = h.store.read(|r| r.pending_effects()).unwrap();
    let events = h.store.read(|r| r.events_for(&win_in_pc)).unwrap();
    assert_eq!(
        h.sf(&win_in_pc).unwrap()["StageName"],
        "Closed Won",
        "{point}: close lost; failures {failures:?}; pending {pending:?}; events {events:?}"
    );
    let rid = h.sim.state().salesforce_opportunity(&new_opp).unwrap()["Referral_Identifier__c"]
        .as_str()
        .unwrap_or_else(|| panic!("{point}: the new deal's id was not written back"))
        .to_owned();
    let st = h.sim.state();
    let made: Vec<String> = st
        .referral_ids()
        .into_iter()
        .filter(|i| {
            st.referral(i)
                .is_some_and(|r| r["externalReferenceId"] == new_opp.as_str())
        })
        .collect();
    assert_eq!(made, vec![rid], "{point}: the deal must exist exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_committing_a_plan_loses_nothing() {
    crash_at("plan.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_partner_center_create_makes_no_duplicate() {
    crash_at("pc_create.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_partner_center_update_loses_nothing() {
    crash_at("pc_update.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_crm_upsert_makes_no_duplicate() {
    crash_at("crm_upsert.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_crm_close_loses_nothing() {
    crash_at("crm_close.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_writes_nothing_anywhere() {
    let h = harness(options(8, 2)).await;
    let engine = h.engine();
    h.sim.state().reset_counters();
    let s = engine
        .run_cycle(&CycleOptions {
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!s.planned.is_empty(), "it plans the backfill: {s:?}");
    assert!(
        s.planned
            .iter()
            .any(|p| p.starts_with("salesforce: upsert")),
        "{:?}",
        s.planned
    );
    assert_eq!(write_calls(&h.counters()), 0);
    let report = h.store.read(|r| r.status_report(5)).unwrap();
    assert_eq!(report.referrals_total, 0, "the store is untouched");
    assert!(
        report.cursors.is_empty() && report.last_runs.is_empty() && report.pending_effects == 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_request_is_counted_in_the_metrics() {
    let metrics = cosell_sync::ops::metrics::install().unwrap();
    let h = harness(options(4, 0)).await;
    h.cycle().await;
    let text = metrics.render();
    for api in ["partner_center", "dynamics", "salesforce", "entra_id"] {
        assert!(
            text.contains(&format!(
                "cosell_sync_api_requests_total{{api=\"{api}\",status=\"200\"}}"
            )) || text.contains(&format!(
                "cosell_sync_api_requests_total{{api=\"{api}\",status=\"201\"}}"
            )),
            "{api} requests are counted:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_deal_is_created_from_dynamics_after_its_data_is_fixed() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let created = h
        .sim
        .state()
        .create_dynamics_opportunity(json!({
            "name": "Tailspin data platform", "estimatedvalue": 90000, "new_currencycode": "EUR",
            "estimatedclosedate": "2027-02-28", "new_syncwithpartnercenter": true,
            "new_customername": "Tailspin Toys", "new_customeraddressline1": "5 Harbour Road",
            "new_customercity": "Cork", "new_customerpostalcode": "T12",
            "new_partnercontactfirstname": "Grace", "new_partnercontactlastname": "Hopper",
            "new_partnercontactemail": "grace@contoso-partner.example", "new_partnercontactphone": "+353 21 555 0100",
            "new_microsoftsolutions": "SOL-12345-ABC"
        }))
        .unwrap();
    let opp = dv_id(&created);
    h.settle(3).await;
    let shown = h.sim.state().dynamics_opportunity(&opp).unwrap();
    let error = shown["new_partnercentersyncerror"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("customerProfile.address.country"), "{shown}");
    assert!(
        shown["new_referralid"].is_null(),
        "nothing created yet: {shown}"
    );

    h.sim
        .state()
        .edit_dynamics(&opp, json!({"new_customercountry": "IRL"}))
        .unwrap();
    h.settle(4).await;
    let shown = h.sim.state().dynamics_opportunity(&opp).unwrap();
    let rid = shown["new_referralid"]
        .as_str()
        .unwrap_or_else(|| panic!("no referral id: {shown}"))
        .to_owned();
    let referral = h.referral(&rid);
    assert_eq!(referral["direction"], "Outgoing");
    assert_eq!(referral["type"], "Independent");
    assert_eq!(referral["customerProfile"]["address"]["country"], "IE");
    assert_eq!(referral["externalReferenceId"], opp.as_str());
    assert!(
        shown["new_partnercentersyncerror"].is_null() || shown["new_partnercentersyncerror"] == ""
    );
    assert!(h.sf(&rid).is_some(), "the deal reaches Salesforce too");
    no_duplicates(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsoft_s_14_day_decision_window_is_reported_once_not_closed() {
    let h = harness(options(2, 0)).await;
    let mut deal = sf_new_deal("Fabrikam migration", Some("IE"));
    deal["How_can_Microsoft_help__c"] = json!("Quotes or licensing");
    deal["Description"] = json!("Licensing help needed");
    deal["Customer_Contact_First_Name__c"] = json!("Sean");
    deal["Customer_Contact_Last_Name__c"] = json!("Murphy");
    deal["Customer_Contact_Email__c"] = json!("sean@fabrikam.example");
    deal["Customer_Contact_Phone__c"] = json!("+353 1 555 0199");
    deal["Customer_Consent_To_Share__c"] = json!(true);
    let opp = sf_id(&h.sim.state().create_salesforce_opportunity(deal).unwrap());
    h.settle(4).await;
    let rid = h.sim.state().salesforce_opportunity(&opp).unwrap()["Referral_Identifier__c"]
        .as_str()
        .unwrap()
        .to_owned();
    let window = |h: &Harness| {
        h.store
            .read(|r| r.events_for(&rid))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "microsoft_window")
            .collect::<Vec<_>>()
    };
    assert!(window(&h).is_empty(), "not before the window lapses");
    h.sim
        .clock()
        .advance(std::time::Duration::from_secs(15 * 24 * 3600));
    h.settle(3).await;
    h.cycle().await;
    let events = window(&h);
    assert_eq!(events.len(), 1, "reported once: {events:?}");
    assert!(events[0].message.contains("did not engage"), "{events:?}");
    assert_eq!(
        h.status(&rid),
        ("Active".into(), "Accepted".into()),
        "the deal stays open"
    );
}
