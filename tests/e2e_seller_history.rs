//! A co-sell deal of ours is one deal: Microsoft's half (the referral that
//! invites Microsoft into our engagement) is not counted or listed as an
//! outbound deal of its own by `status` and `referrals list`.

mod sync_support;

use cosell_sync::store::ReferralFilter;
use serde_json::json;
use sync_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsoft_s_half_of_a_co_sell_deal_is_not_an_outbound_deal_of_ours() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let outbound = |h: &Harness| h.store.read(|r| r.status_report(0)).unwrap().outbound;
    let before = outbound(&h);

    let st = h.sim.state();
    let opp = st
        .create_salesforce_opportunity(json!({
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
        }))
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.settle(6).await;
    let own = st.salesforce_opportunity(&opp).unwrap()["Referral_Identifier__c"]
        .as_str()
        .expect("created")
        .to_owned();
    let engagement = h.referral(&own)["engagementId"].clone();
    let microsoft: Vec<String> = st
        .referral_ids()
        .into_iter()
        .filter(|i| {
            let r = st.referral(i).unwrap();
            i != &own && r["engagementId"] == engagement
        })
        .collect();
    assert_eq!(microsoft.len(), 1, "Microsoft was invited");
    assert!(
        h.store
            .read(|r| r.get_referral(&microsoft[0]))
            .unwrap()
            .is_some(),
        "we have read Microsoft's referral"
    );

    assert_eq!(outbound(&h), before + 1, "one deal of ours, not two");
    let listed: Vec<String> = h
        .store
        .read(|r| {
            r.list_referrals(&ReferralFilter {
                outbound: true,
                ..Default::default()
            })
        })
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert!(listed.contains(&own), "{listed:?}");
    assert!(!listed.contains(&microsoft[0]), "{listed:?}");
    let all: Vec<String> = h
        .store
        .read(|r| r.list_referrals(&ReferralFilter::default()))
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert!(!all.contains(&microsoft[0]), "{all:?}");
}

/// Won, lost, declined and expired referrals no CRM holds: left out by a
/// normal cycle, brought in closed with their outcome and reason by
/// `resync --include-archived`, in both CRMs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_including_archived_brings_closed_referrals_in_with_outcome_and_reason() {
    use cosell_sync::sync::CycleOptions;

    // Closed before the daemon ever read them.
    let h = harness(options(0, 0)).await;
    let st = h.sim.state();
    let ids = st.insert_referrals(4);
    let (won, lost, declined, expired) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    st.accept_referral(won).unwrap();
    st.win_referral(won).unwrap();
    st.accept_referral(lost).unwrap();
    st.lose_referral(lost, Some("Chose a competitor")).unwrap();
    st.decline_referral(declined, "Outside our region").unwrap();
    h.sim
        .clock()
        .advance(std::time::Duration::from_secs(16 * 86_400));
    h.settle(3).await;
    assert_eq!(h.status(expired).1, "Expired", "Partner Center expired it");
    for id in &ids {
        assert!(
            h.sf(id).is_none() && h.dv(id).is_none(),
            "archived: left out"
        );
    }

    h.engine()
        .run_cycle(&CycleOptions {
            full: true,
            include_archived: true,
            ..Default::default()
        })
        .await
        .unwrap();
    h.settle(3).await;
    for (id, stage, reason) in [
        (won, "Closed Won", None),
        (lost, "Closed Lost", Some("Chose a competitor")),
        (declined, "Closed Lost", Some("Outside our region")),
        (expired, "Closed Lost", None),
    ] {
        let sf = h.sf(id).expect("in Salesforce");
        assert_eq!(sf["StageName"], stage, "{sf}");
        let dv = h.dv(id).expect("in Dynamics");
        assert_eq!(
            dv["statecode"],
            if stage == "Closed Won" { 1 } else { 2 },
            "{dv}"
        );
        if let Some(reason) = reason {
            assert_eq!(sf["Loss_Reason__c"], reason, "{sf}");
            assert_eq!(dv["new_closereason"], reason, "{dv}");
        }
    }
    let failures = h
        .store
        .read(|r| r.list_failures(&[cosell_sync::store::FailureState::Open]))
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
}
