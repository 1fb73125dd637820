//! Every refusal is on the opportunity, with what to do, in either CRM, and
//! clears itself once fixed: a decline without a reason, a co-sell request
//! without the customer's consent to share their contact, an acceptance
//! after the deadline.

mod sync_support;

use chrono::{DateTime, Duration, DurationRound, Utc};
use cosell_sync::sim::{Api, FaultKind, FaultRule};
use serde_json::{Value, json};
use sync_support::*;

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn sf_error(h: &Harness, opp: &str) -> String {
    text(&h.sim.state().salesforce_opportunity(opp).unwrap()["Partner_Center_Sync_Error__c"])
        .to_owned()
}

fn dv_error(h: &Harness, opp: &str) -> String {
    text(&h.sim.state().dynamics_opportunity(opp).unwrap()["new_partnercentersyncerror"]).to_owned()
}

async fn received_referral(h: &Harness) -> String {
    let id = h.sim.state().insert_referrals(1).remove(0);
    h.settle(3).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_without_a_reason_is_refused_on_the_record_until_the_reason_is_filled() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;

    // Salesforce.
    let id = received_referral(&h).await;
    let opp = text(&h.sf(&id).unwrap()["Id"]).to_owned();
    h.sim
        .state()
        .edit_salesforce(&opp, json!({"StageName": "Closed Lost"}))
        .unwrap();
    h.settle(3).await;
    assert_eq!(h.status(&id).0, "New");
    let shown = sf_error(&h, &opp);
    assert!(
        shown.contains("requires a reason") && shown.contains("Loss_Reason__c"),
        "{shown}"
    );
    h.sim
        .state()
        .edit_salesforce(&opp, json!({"Loss_Reason__c": "Not our market"}))
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.status(&id).1, "Declined");
    assert_eq!(sf_error(&h, &opp), "", "cleared once fixed");

    // Dynamics: a deal closed without a reason cannot carry a message (a
    // closed row is read-only): the refusal is in `failures` with what to do.
    let id = received_referral(&h).await;
    let opp = text(&h.dv(&id).unwrap()["opportunityid"]).to_owned();
    h.sim.state().lose_dynamics(&opp, None).unwrap();
    h.settle(3).await;
    assert_eq!(h.status(&id).0, "New", "nothing sent without a reason");
    let failures = h
        .store
        .read(|r| r.list_failures(&[cosell_sync::store::FailureState::Open]))
        .unwrap();
    assert!(
        failures.iter().any(|f| f.record == id
            && f.message.contains("requires a reason")
            && f.hint.contains("reopen it")),
        "{failures:?}"
    );
    assert!(
        !failures.iter().any(|f| f.kind == "permanent"),
        "no write to the closed row was tried: {failures:?}"
    );
}

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
        "Customer_Contact_Email__c": "sean@fabrikam.example", "Customer_Contact_Phone__c": "+353 1 555 0199"
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
        "new_customercontactemail": "aoife@tailspin.example", "new_customercontactphone": "+353 21 555 0199"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_sell_without_the_customer_s_consent_is_refused_on_the_record_until_it_is_given() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let st = h.sim.state();
    let sf_opp = text(
        &st.create_salesforce_opportunity(sf_co_sell_deal("Fabrikam pilot"))
            .unwrap()["Id"],
    )
    .to_owned();
    let dv_opp = text(
        &st.create_dynamics_opportunity(dv_co_sell_deal("Tailspin pilot"))
            .unwrap()["opportunityid"],
    )
    .to_owned();
    h.settle(4).await;
    for shown in [sf_error(&h, &sf_opp), dv_error(&h, &dv_opp)] {
        assert!(
            shown.contains("consent.consentToToShareInfoWithOthers")
                && shown.contains("customer's recorded consent"),
            "the seller sees what to do: {shown}"
        );
    }
    assert!(
        st.salesforce_opportunity(&sf_opp).unwrap()["Referral_Identifier__c"].is_null(),
        "nothing was created"
    );

    st.edit_salesforce(&sf_opp, json!({"Customer_Consent_To_Share__c": true}))
        .unwrap();
    st.edit_dynamics(&dv_opp, json!({"new_customerconsenttoshare": true}))
        .unwrap();
    h.settle(6).await;
    assert!(
        !text(&st.salesforce_opportunity(&sf_opp).unwrap()["Referral_Identifier__c"]).is_empty()
    );
    assert!(!text(&st.dynamics_opportunity(&dv_opp).unwrap()["new_referralid"]).is_empty());
    assert_eq!(sf_error(&h, &sf_opp), "", "cleared once fixed");
    assert_eq!(dv_error(&h, &dv_opp), "", "cleared once fixed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_acceptance_is_refused_on_the_record_and_cleared_when_the_deal_expires() {
    let mut opts = options(2, 0);
    opts.expiry_days = 30;
    opts.start_time =
        Utc::now().duration_trunc(Duration::days(1)).expect("a day") + Duration::hours(6);
    let h = harness_with(opts, &[("COSELL_SYNC__SYNC__EXPIRY_DAYS", "14")]).await;
    h.settle(3).await;
    let ids = h.sim.state().insert_referrals(2);
    h.settle(3).await;
    let created = |id: &str| -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text(&h.referral(id)["createdDateTime"]))
            .unwrap()
            .with_timezone(&Utc)
    };
    let deadline = created(&ids[0]).max(created(&ids[1])) + Duration::days(14);
    h.sim.clock().advance_to(deadline - Duration::hours(1));
    h.settle(2).await;

    // Partner Center cannot be read across the deadline; sellers accept late.
    let fault = h.sim.state().add_fault(
        FaultRule::new(
            Api::PartnerCenter,
            FaultKind::ServiceUnavailable {
                retry_after_secs: Some(3600),
            },
        )
        .operation("GET list"),
    );
    h.sim.clock().advance_to(deadline + Duration::minutes(30));
    let sf_opp = text(&h.sf(&ids[0]).unwrap()["Id"]).to_owned();
    let dv_opp = text(&h.dv(&ids[1]).unwrap()["opportunityid"]).to_owned();
    h.sim
        .state()
        .set_sf_stage(&sf_opp, "Qualification")
        .unwrap();
    h.sim
        .state()
        .edit_dynamics(&dv_opp, json!({"statuscode": 1}))
        .unwrap();
    h.cycle().await;
    h.cycle().await;
    assert_eq!(h.status(&ids[0]).0, "New", "not sent");
    assert_eq!(h.status(&ids[1]).0, "New", "not sent");
    for shown in [sf_error(&h, &sf_opp), dv_error(&h, &dv_opp)] {
        assert!(
            shown.contains("expired before it was accepted")
                && shown.contains("cannot be accepted"),
            "the refusal is on the record: {shown}"
        );
    }

    // Partner Center readable again: the deals expire, the message goes.
    h.sim.state().remove_fault(fault);
    h.sim
        .clock()
        .advance(std::time::Duration::from_secs(2 * 3600));
    h.settle(5).await;
    assert_eq!(h.sf(&ids[0]).unwrap()["StageName"], "Closed Lost");
    assert_eq!(h.dv(&ids[1]).unwrap()["statecode"], 2);
    assert_eq!(sf_error(&h, &sf_opp), "", "cleared with the close");
    assert_eq!(dv_error(&h, &dv_opp), "", "cleared with the close");
}
