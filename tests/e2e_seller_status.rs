//! What a seller sees in either CRM besides the referral's own fields: the
//! date a received referral must be answered by (cleared once answered or
//! expired, one warning 48 hours before), and Microsoft's answer to a
//! co-sell request (Requested → Engaged with its MSX id / Declined with the
//! reason in the history / No answer after its 14 days).

mod sync_support;

use chrono::{DateTime, Duration, DurationRound, SubsecRound, Utc};
use serde_json::{Value, json};
use sync_support::*;

fn at(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .or_else(|| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f%z").ok())
        })
        .map(|t| t.with_timezone(&Utc))
}

fn empty(v: &Value) -> bool {
    v.is_null() || v == ""
}

/// The deadline the daemon computes: created + 14 days, or Partner Center's
/// own `expirationDateTime` when earlier.
fn deadline_of(h: &Harness, id: &str) -> DateTime<Utc> {
    let r = h.referral(id);
    let created = at(&r["createdDateTime"]).expect("createdDateTime");
    let ours = created + Duration::days(14);
    match at(&r["expirationDateTime"]) {
        Some(theirs) => ours.min(theirs),
        None => ours,
    }
}

async fn harness_at_six() -> Harness {
    let mut opts = options(2, 0);
    opts.start_time =
        Utc::now().duration_trunc(Duration::days(1)).expect("a day") + Duration::hours(6);
    let h = harness(opts).await;
    h.settle(4).await;
    h
}

/// Fresh received referrals, synced on hold to both CRMs, each showing its deadline.
async fn received(h: &Harness, n: usize) -> Vec<String> {
    let ids = h.sim.state().insert_referrals(n);
    h.settle(3).await;
    for id in &ids {
        // Shown to the second (never later than the real deadline).
        let due = deadline_of(h, id).trunc_subsecs(0);
        let sf = h.sf(id).expect("in Salesforce");
        assert_eq!(sf["StageName"], "On Hold");
        assert_eq!(
            at(&sf["Answer_By__c"]),
            Some(due),
            "Salesforce shows the deadline: {sf}"
        );
        let dv = h.dv(id).expect("in Dynamics");
        assert_eq!(
            at(&dv["new_answerby"]),
            Some(due),
            "Dynamics shows the deadline: {dv}"
        );
    }
    ids
}

fn assert_answer_by_cleared(h: &Harness, id: &str, context: &str) {
    let sf = h.sf(id).unwrap();
    assert!(
        empty(&sf["Answer_By__c"]),
        "{context}: cleared in Salesforce: {sf}"
    );
    let dv = h.dv(id).unwrap();
    assert!(
        empty(&dv["new_answerby"]),
        "{context}: cleared in Dynamics: {dv}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_by_date_is_shown_until_a_referral_is_accepted_declined_or_expired() {
    let h = harness_at_six().await;
    let ids = received(&h, 3).await;
    let (accept, decline, expire) = (&ids[0], &ids[1], &ids[2]);

    // Accepted from Dynamics, declined from Salesforce.
    let dv_opp = h.dv(accept).unwrap()["opportunityid"]
        .as_str()
        .unwrap()
        .to_owned();
    h.sim
        .state()
        .edit_dynamics(&dv_opp, json!({"statuscode": 1}))
        .unwrap();
    let sf_opp = h.sf(decline).unwrap()["Id"].as_str().unwrap().to_owned();
    h.sim
        .state()
        .edit_salesforce(
            &sf_opp,
            json!({"StageName": "Closed Lost", "Loss_Reason__c": "Not our market"}),
        )
        .unwrap();
    h.settle(5).await;
    assert_eq!(h.status(accept).1, "Accepted");
    assert_eq!(h.status(decline).1, "Declined");
    assert_answer_by_cleared(&h, accept, "accepted");
    assert_answer_by_cleared(&h, decline, "declined");
    let sf = h.sf(expire).unwrap();
    assert!(!empty(&sf["Answer_By__c"]), "still waiting: {sf}");

    // The third one runs out of time.
    h.sim
        .clock()
        .advance_to(deadline_of(&h, expire) + Duration::minutes(5));
    h.settle(4).await;
    assert_eq!(h.sf(expire).unwrap()["StageName"], "Closed Lost");
    assert_answer_by_cleared(&h, expire, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_with_48_hours_left_is_warned_about_once() {
    let h = harness_at_six().await;
    let id = received(&h, 1).await.remove(0);
    let due = deadline_of(&h, &id);
    let warnings = |h: &Harness| {
        h.store
            .read(|r| r.events_for(&id))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "deadline_near")
            .count()
    };
    h.sim.clock().advance_to(due - Duration::hours(49));
    h.settle(2).await;
    assert_eq!(warnings(&h), 0, "more than 48 hours left");

    h.sim.clock().advance_to(due - Duration::hours(47));
    h.cycle().await;
    h.sim.clock().advance_to(due - Duration::hours(30));
    h.cycle().await;
    h.cycle().await;
    assert_eq!(warnings(&h), 1, "warned once, not every cycle");
    // Remembered in the store: a restarted daemon (a fresh engine) does not warn again.
    h.cycle().await;
    assert_eq!(warnings(&h), 1);
}

// ---- Microsoft's answer -----------------------------------------------------------

fn sf_co_sell_deal(name: &str) -> Value {
    json!({
        "Name": name, "Amount": 125000, "CloseDate": "2027-03-31",
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
    })
}

fn dv_co_sell_deal(name: &str) -> Value {
    json!({
        "name": name, "estimatedvalue": 90000, "new_currencycode": "EUR",
        "estimatedclosedate": "2027-02-28", "new_syncwithpartnercenter": true,
        "new_customername": "Tailspin Toys", "new_customeraddressline1": "5 Harbour Road",
        "new_customercity": "Cork", "new_customerpostalcode": "T12", "new_customercountry": "IE",
        "new_partnercontactfirstname": "Grace", "new_partnercontactlastname": "Hopper",
        "new_partnercontactemail": "grace@contoso-partner.example", "new_partnercontactphone": "+353 21 555 0100",
        "new_microsoftsolutions": "SOL-12345-ABC",
        "new_howcanmicrosofthelp": 100000002, "description": "Customer wants a pilot with Microsoft's help",
        "new_customercontactfirstname": "Aoife", "new_customercontactlastname": "Byrne",
        "new_customercontactemail": "aoife@tailspin.example", "new_customercontactphone": "+353 21 555 0199",
        "new_customerconsenttoshare": true
    })
}

/// The Microsoft-targeted referral of a partner referral's engagement.
fn microsoft_referral_of(h: &Harness, referral_id: &str) -> String {
    let st = h.sim.state();
    let engagement = h.referral(referral_id)["engagementId"].clone();
    st.referral_ids()
        .into_iter()
        .filter_map(|i| st.referral(&i))
        .find(|r| {
            r["engagementId"] == engagement
                && r["target"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x["id"] == "msft"))
        })
        .and_then(|r| r["id"].as_str().map(str::to_owned))
        .expect("Microsoft was invited")
}

/// A co-sell deal made in each CRM: (Salesforce opportunity, its referral),
/// (Dynamics opportunity, its referral), both showing "Requested".
async fn co_sell_deals(h: &Harness) -> ((String, String), (String, String)) {
    let sf_opp = h
        .sim
        .state()
        .create_salesforce_opportunity(sf_co_sell_deal("Fabrikam pilot"))
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dv_opp = h
        .sim
        .state()
        .create_dynamics_opportunity(dv_co_sell_deal("Tailspin pilot"))
        .unwrap()["opportunityid"]
        .as_str()
        .unwrap()
        .to_owned();
    h.settle(6).await;
    let sf = h.sim.state().salesforce_opportunity(&sf_opp).unwrap();
    let sf_rid = sf["Referral_Identifier__c"]
        .as_str()
        .expect("created")
        .to_owned();
    assert_eq!(sf["Microsoft_Engagement__c"], "Requested", "{sf}");
    let dv = h.sim.state().dynamics_opportunity(&dv_opp).unwrap();
    let dv_rid = dv["new_referralid"].as_str().expect("created").to_owned();
    assert_eq!(dv["new_microsoftengagement"], "Requested", "{dv}");
    ((sf_opp, sf_rid), (dv_opp, dv_rid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsoft_engaging_shows_engaged_and_its_msx_id_in_both_crms() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let ((sf_opp, sf_rid), (dv_opp, dv_rid)) = co_sell_deals(&h).await;
    let sf_msx = h
        .sim
        .state()
        .microsoft_respond(&microsoft_referral_of(&h, &sf_rid), true)
        .unwrap()["trackingInfo"]["microsoftMsxId"]
        .clone();
    let dv_msx = h
        .sim
        .state()
        .microsoft_respond(&microsoft_referral_of(&h, &dv_rid), true)
        .unwrap()["trackingInfo"]["microsoftMsxId"]
        .clone();
    h.settle(4).await;
    let sf = h.sim.state().salesforce_opportunity(&sf_opp).unwrap();
    assert_eq!(sf["Microsoft_Engagement__c"], "Engaged", "{sf}");
    assert_eq!(sf["Microsoft_CRM_Identifier__c"], sf_msx, "{sf}");
    let dv = h.sim.state().dynamics_opportunity(&dv_opp).unwrap();
    assert_eq!(dv["new_microsoftengagement"], "Engaged", "{dv}");
    assert_eq!(dv["new_microsoftcrmidentifier"], dv_msx, "{dv}");
    // A later window check changes nothing: Microsoft answered.
    h.sim
        .clock()
        .advance(std::time::Duration::from_secs(15 * 86_400));
    h.settle(3).await;
    let sf = h.sim.state().salesforce_opportunity(&sf_opp).unwrap();
    assert_eq!(sf["Microsoft_Engagement__c"], "Engaged", "{sf}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsoft_declining_shows_declined_with_its_reason_in_the_history() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let ((sf_opp, sf_rid), (dv_opp, dv_rid)) = co_sell_deals(&h).await;
    for rid in [&sf_rid, &dv_rid] {
        h.sim
            .state()
            .microsoft_respond(&microsoft_referral_of(&h, rid), false)
            .unwrap();
    }
    h.settle(4).await;
    let sf = h.sim.state().salesforce_opportunity(&sf_opp).unwrap();
    assert_eq!(sf["Microsoft_Engagement__c"], "Declined", "{sf}");
    let dv = h.sim.state().dynamics_opportunity(&dv_opp).unwrap();
    assert_eq!(dv["new_microsoftengagement"], "Declined", "{dv}");
    for rid in [&sf_rid, &dv_rid] {
        let events = h.store.read(|r| r.events_for(rid)).unwrap();
        assert!(
            events.iter().any(|e| e.kind == "microsoft_engagement"
                && e.message.contains("Microsoft sellers declined to engage")),
            "the reason is in the deal's history: {events:?}"
        );
    }
    // The partner's own deal stays open.
    assert_eq!(h.status(&sf_rid).0, "Active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_from_microsoft_within_14_days_shows_no_answer() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let ((sf_opp, _), (dv_opp, _)) = co_sell_deals(&h).await;
    h.sim
        .clock()
        .advance(std::time::Duration::from_secs(13 * 86_400));
    h.settle(3).await;
    let sf = h.sim.state().salesforce_opportunity(&sf_opp).unwrap();
    assert_eq!(sf["Microsoft_Engagement__c"], "Requested", "day 13: {sf}");
    h.sim
        .clock()
        .advance(std::time::Duration::from_secs(2 * 86_400));
    h.settle(3).await;
    let sf = h.sim.state().salesforce_opportunity(&sf_opp).unwrap();
    assert_eq!(sf["Microsoft_Engagement__c"], "No answer", "{sf}");
    let dv = h.sim.state().dynamics_opportunity(&dv_opp).unwrap();
    assert_eq!(dv["new_microsoftengagement"], "No answer", "{dv}");
}

// ---- config validate --online ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_validation_names_a_missing_status_field_in_either_crm() {
    use cosell_sync::crm::Crm;
    use cosell_sync::crm::dynamics::DynamicsCrm;
    use cosell_sync::crm::salesforce::SalesforceCrm;
    use cosell_sync::mapping::Mapping;
    use cosell_sync::sync::object_spec;

    let h = harness(options(0, 0)).await;
    let sf_mapping = Mapping::default_salesforce().unwrap();
    let dv_mapping = Mapping::load(
        &cosell_sync::mapping::DEFAULT_DYNAMICS
            .replace("new_microsoftengagement", "new_msengagement"),
        "dynamics.toml",
    )
    .unwrap();
    let sf = SalesforceCrm::new(&h.settings.salesforce, object_spec(&sf_mapping)).unwrap();
    let dv = DynamicsCrm::new(&h.settings.dynamics, object_spec(&dv_mapping)).unwrap();
    let errors = |p: Vec<cosell_sync::crm::MetadataProblem>| -> Vec<String> {
        p.into_iter()
            .filter(|p| p.is_error())
            .map(|p| p.item)
            .collect()
    };
    assert_eq!(
        errors(sf.check_metadata().await.unwrap()),
        Vec::<String>::new()
    );

    h.sim
        .state()
        .remove_salesforce_field("Opportunity", "Answer_By__c")
        .unwrap();
    let sf = SalesforceCrm::new(&h.settings.salesforce, object_spec(&sf_mapping)).unwrap();
    let found = errors(sf.check_metadata().await.unwrap());
    assert!(
        found.iter().any(|i| i.contains("Answer_By__c")),
        "Salesforce: {found:?}"
    );
    let found = errors(dv.check_metadata().await.unwrap());
    assert!(
        found.iter().any(|i| i.contains("new_msengagement")),
        "Dynamics: {found:?}"
    );
}
