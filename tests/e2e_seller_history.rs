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
