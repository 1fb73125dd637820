//! Co-sell creates and private → co-sell upgrades end to end: the partner's
//! own referral is patched only where Partner Center allows it (`target` is
//! read-only), Microsoft joins through its own referral in the engagement,
//! and an interruption at any step is finished on recovery — one partner
//! referral, Microsoft invited exactly once.

mod sync_support;

use std::time::Duration;

use cosell_sync::sim::{Api, FaultKind, FaultRule};
use serde_json::{Value, json};
use sync_support::*;

/// A complete private deal as a seller fills it in Salesforce (a standard,
/// single-currency org: no CurrencyIsoCode).
fn sf_private_deal(name: &str) -> Value {
    json!({
        "Name": name, "Amount": 125000, "CloseDate": "2027-03-31",
        "StageName": "Qualification", "Sync_with_Partner_Center__c": true,
        "Customer_Name__c": "Fabrikam Ltd", "Customer_Street__c": "1 Main Street",
        "Customer_City__c": "Dublin", "Customer_Postal_Code__c": "D02", "Customer_Country__c": "IE",
        "Partner_Contact_First_Name__c": "Ada", "Partner_Contact_Last_Name__c": "Lovelace",
        "Partner_Contact_Email__c": "ada@contoso-partner.example", "Partner_Contact_Phone__c": "+353 1 555 0100",
        "Microsoft_Solutions__c": "SOL-12345-ABC"
    })
}

/// What a seller fills in to ask Microsoft for help: the request, notes for
/// Microsoft, the customer contact and the customer's consent to share it.
fn sf_help_request() -> Value {
    json!({
        "How_can_Microsoft_help__c": "Proof of concept or demo",
        "Description": "Customer wants a pilot with Microsoft's help",
        "Customer_Contact_First_Name__c": "Sean", "Customer_Contact_Last_Name__c": "Murphy",
        "Customer_Contact_Email__c": "sean@fabrikam.example", "Customer_Contact_Phone__c": "+353 1 555 0199",
        "Customer_Consent_To_Share__c": true
    })
}

fn sf_co_sell_deal(name: &str) -> Value {
    let mut deal = sf_private_deal(name);
    if let (Some(d), Some(help)) = (deal.as_object_mut(), sf_help_request().as_object()) {
        for (k, v) in help {
            d.insert(k.clone(), v.clone());
        }
    }
    deal
}

fn referral_id_of_sf(h: &Harness, opp: &str) -> Option<String> {
    h.sim.state().salesforce_opportunity(opp)?["Referral_Identifier__c"]
        .as_str()
        .map(str::to_owned)
}

fn is_microsoft_targeted(r: &Value) -> bool {
    r["target"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x["id"] == "msft"))
}

/// The referrals Partner Center holds for one CRM opportunity: the
/// partner's own, and the Microsoft-targeted ones of its engagement.
fn deal_in_partner_center(h: &Harness, crm_id: &str) -> (Vec<Value>, Vec<Value>) {
    let st = h.sim.state();
    let all: Vec<Value> = st
        .referral_ids()
        .into_iter()
        .filter_map(|i| st.referral(&i))
        .collect();
    let own: Vec<Value> = all
        .iter()
        .filter(|r| r["externalReferenceId"] == crm_id && !is_microsoft_targeted(r))
        .cloned()
        .collect();
    let engagements: Vec<&Value> = own.iter().map(|r| &r["engagementId"]).collect();
    let microsoft = all
        .iter()
        .filter(|r| is_microsoft_targeted(r) && engagements.contains(&&r["engagementId"]))
        .cloned()
        .collect();
    (own, microsoft)
}

/// Exactly one partner referral, shared, and Microsoft invited exactly once.
fn assert_one_co_sell_deal(h: &Harness, crm_id: &str, context: &str) -> (Value, Value) {
    let (own, microsoft) = deal_in_partner_center(h, crm_id);
    assert_eq!(own.len(), 1, "{context}: one partner referral: {own:?}");
    assert_eq!(
        microsoft.len(),
        1,
        "{context}: Microsoft invited exactly once: {microsoft:?}"
    );
    let (own, microsoft) = (own[0].clone(), microsoft[0].clone());
    assert_eq!(own["type"], "Shared", "{context}");
    assert_eq!(
        own["consent"]["consentToShareReferralWithMicrosoftSellers"], true,
        "{context}"
    );
    assert!(
        !is_microsoft_targeted(&own),
        "{context}: the partner's own referral keeps its targets"
    );
    assert_eq!(microsoft["engagementId"], own["engagementId"], "{context}");
    assert_eq!(
        microsoft["inviteContext"]["assistanceRequestCode"], "ProofOfConceptOrDemo",
        "{context}"
    );
    (own, microsoft)
}

fn open_failures(h: &Harness) -> Vec<cosell_sync::store::Failure> {
    h.store
        .read(|r| r.list_failures(&[cosell_sync::store::FailureState::Open]))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_microsoft_for_help_upgrades_a_private_salesforce_deal_in_the_documented_shape() {
    let h = harness(options(2, 0)).await;
    let opp = h
        .sim
        .state()
        .create_salesforce_opportunity(sf_private_deal("Fabrikam rollout"))
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.settle(4).await;
    let rid = referral_id_of_sf(&h, &opp).expect("the private deal was created");
    assert_eq!(h.referral(&rid)["type"], "Independent");

    h.sim
        .state()
        .edit_salesforce(&opp, sf_help_request())
        .unwrap();
    h.settle(5).await;

    let (own, microsoft) = assert_one_co_sell_deal(&h, &opp, "upgrade");
    assert_eq!(own["id"], rid.as_str(), "the same deal, upgraded");
    assert_eq!(
        own["inviteContext"]["assistanceRequestCode"],
        "ProofOfConceptOrDemo"
    );
    assert_eq!(
        microsoft["inviteContext"]["notes"],
        "Customer wants a pilot with Microsoft's help"
    );
    assert_eq!(
        microsoft["customerProfile"]["team"][0]["email"], "sean@fabrikam.example",
        "the customer contact goes to Microsoft with the customer's consent"
    );
    assert!(open_failures(&h).is_empty(), "{:?}", open_failures(&h));
    let shown = h.sim.state().salesforce_opportunity(&opp).unwrap();
    assert!(
        shown["Partner_Center_Sync_Error__c"].is_null()
            || shown["Partner_Center_Sync_Error__c"] == "",
        "{shown}"
    );
    let events = h.store.read(|r| r.events_for(&rid)).unwrap();
    assert!(
        events.iter().any(|e| e.kind == "microsoft_invited"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_missing_the_customer_contact_is_shown_on_the_record_and_sends_nothing() {
    let h = harness(options(2, 0)).await;
    let opp = h
        .sim
        .state()
        .create_salesforce_opportunity(sf_private_deal("Northwind pilot"))
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.settle(4).await;
    let rid = referral_id_of_sf(&h, &opp).expect("the private deal was created");
    let etag_before = h.referral(&rid)["eTag"].clone();

    h.sim
        .state()
        .edit_salesforce(
            &opp,
            json!({"How_can_Microsoft_help__c": "Quotes or licensing", "Description": "Licensing questions"}),
        )
        .unwrap();
    h.settle(4).await;
    let shown = h.sim.state().salesforce_opportunity(&opp).unwrap();
    let error = shown["Partner_Center_Sync_Error__c"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("customerProfile.team") && error.contains("asking Microsoft for help"),
        "the seller sees what to fill in: {shown}"
    );
    let referral = h.referral(&rid);
    assert_eq!(referral["type"], "Independent", "still private");
    assert_eq!(
        referral["consent"]["consentToShareReferralWithMicrosoftSellers"],
        false
    );
    let (_, microsoft) = deal_in_partner_center(&h, &opp);
    assert!(microsoft.is_empty(), "Microsoft not invited: {microsoft:?}");
    // Description is also the deal's notes: only that edit went through.
    assert_eq!(referral["details"]["notes"], "Licensing questions");
    assert_ne!(referral["eTag"], etag_before);

    // Fixed: the upgrade goes through and the message clears.
    let mut fix = sf_help_request();
    fix["How_can_Microsoft_help__c"] = json!("Proof of concept or demo");
    h.sim.state().edit_salesforce(&opp, fix).unwrap();
    h.settle(5).await;
    assert_one_co_sell_deal(&h, &opp, "after the fix");
    let shown = h.sim.state().salesforce_opportunity(&opp).unwrap();
    assert!(
        shown["Partner_Center_Sync_Error__c"].is_null()
            || shown["Partner_Center_Sync_Error__c"] == "",
        "the message clears once fixed: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_microsoft_for_help_upgrades_a_private_dynamics_deal() {
    let h = harness(options(2, 0)).await;
    let created = h
        .sim
        .state()
        .create_dynamics_opportunity(json!({
            "name": "Tailspin data platform", "estimatedvalue": 90000, "new_currencycode": "EUR",
            "estimatedclosedate": "2027-02-28", "new_syncwithpartnercenter": true,
            "new_customername": "Tailspin Toys", "new_customeraddressline1": "5 Harbour Road",
            "new_customercity": "Cork", "new_customerpostalcode": "T12", "new_customercountry": "IE",
            "new_partnercontactfirstname": "Grace", "new_partnercontactlastname": "Hopper",
            "new_partnercontactemail": "grace@contoso-partner.example", "new_partnercontactphone": "+353 21 555 0100",
            "new_microsoftsolutions": "SOL-12345-ABC"
        }))
        .unwrap();
    let opp = created["opportunityid"].as_str().unwrap().to_owned();
    h.settle(4).await;
    let rid = h.sim.state().dynamics_opportunity(&opp).unwrap()["new_referralid"]
        .as_str()
        .expect("the private deal was created")
        .to_owned();
    assert_eq!(h.referral(&rid)["type"], "Independent");

    h.sim
        .state()
        .edit_dynamics(
            &opp,
            json!({
                "new_howcanmicrosofthelp": 100000002, "description": "Customer wants a pilot with Microsoft's help",
                "new_customercontactfirstname": "Aoife", "new_customercontactlastname": "Byrne",
                "new_customercontactemail": "aoife@tailspin.example", "new_customercontactphone": "+353 21 555 0199",
                "new_customerconsenttoshare": true
            }),
        )
        .unwrap();
    h.settle(5).await;
    let (own, microsoft) = assert_one_co_sell_deal(&h, &opp, "dynamics upgrade");
    assert_eq!(own["id"], rid.as_str());
    assert_eq!(
        microsoft["customerProfile"]["team"][0]["email"],
        "aoife@tailspin.example"
    );
    assert!(open_failures(&h).is_empty(), "{:?}", open_failures(&h));
}

/// A co-sell deal created from Salesforce, crashing at `point` the first time
/// it is reached; a fresh engine then finishes.
async fn co_sell_create_crash_at(point: &'static str) {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let opp = h
        .sim
        .state()
        .create_salesforce_opportunity(sf_co_sell_deal("Crash-safe co-sell"))
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.crash_once_at(point).await;

    h.settle(6).await;
    let (own, _) = assert_one_co_sell_deal(&h, &opp, point);
    assert_eq!(
        referral_id_of_sf(&h, &opp).as_deref(),
        own["id"].as_str(),
        "{point}: the referral id is written back"
    );
    assert!(
        open_failures(&h).is_empty(),
        "{point}: {:?}",
        open_failures(&h)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_partner_s_referral_of_a_co_sell_create_still_invites_microsoft() {
    co_sell_create_crash_at("pc_create.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_inviting_microsoft_to_a_new_deal_invites_it_once() {
    co_sell_create_crash_at("pc_invite.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_co_sell_create_whose_invitation_is_cut_off_is_finished() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let opp = h
        .sim
        .state()
        .create_salesforce_opportunity(sf_co_sell_deal("Cut-off co-sell"))
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The partner's referral goes through; the connection drops on Microsoft's.
    h.sim.state().add_fault(
        FaultRule::new(Api::PartnerCenter, FaultKind::ConnectionReset)
            .operation("POST create")
            .after(1)
            .times(1),
    );
    h.cycle().await;
    h.sim.clock().advance(Duration::from_secs(120));
    h.settle(6).await;
    assert_one_co_sell_deal(&h, &opp, "cut-off invitation");
    assert!(open_failures(&h).is_empty(), "{:?}", open_failures(&h));
}

/// A private deal upgraded from Salesforce, crashing at `point` the first
/// time it is reached; a fresh engine then finishes.
async fn upgrade_crash_at(point: &'static str) {
    let h = harness(options(2, 0)).await;
    let opp = h
        .sim
        .state()
        .create_salesforce_opportunity(sf_private_deal("Upgrade crash"))
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.settle(4).await;
    let rid = referral_id_of_sf(&h, &opp).expect("the private deal was created");
    h.sim
        .state()
        .edit_salesforce(&opp, sf_help_request())
        .unwrap();

    h.crash_once_at(point).await;

    h.settle(6).await;
    let (own, _) = assert_one_co_sell_deal(&h, &opp, point);
    assert_eq!(own["id"], rid.as_str(), "{point}");
    assert!(
        open_failures(&h).is_empty(),
        "{point}: {:?}",
        open_failures(&h)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_an_upgrade_is_committed_loses_nothing() {
    upgrade_crash_at("plan.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_an_upgrade_s_patch_still_invites_microsoft() {
    upgrade_crash_at("pc_update.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_inviting_microsoft_to_an_upgraded_deal_invites_it_once() {
    upgrade_crash_at("pc_invite.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_whose_invitation_is_cut_off_is_finished() {
    let h = harness(options(2, 0)).await;
    let opp = h
        .sim
        .state()
        .create_salesforce_opportunity(sf_private_deal("Cut-off upgrade"))
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.settle(4).await;
    h.sim
        .state()
        .edit_salesforce(&opp, sf_help_request())
        .unwrap();
    h.sim.state().add_fault(
        FaultRule::new(Api::PartnerCenter, FaultKind::ConnectionReset)
            .operation("POST create")
            .times(1),
    );
    h.cycle().await;
    h.sim.clock().advance(Duration::from_secs(120));
    h.settle(6).await;
    assert_one_co_sell_deal(&h, &opp, "cut-off upgrade invitation");
    assert!(open_failures(&h).is_empty(), "{:?}", open_failures(&h));
}
