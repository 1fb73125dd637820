//! Seller edits decided while Partner Center refuses writes, against the
//! simulator: an accepted referral's opportunity is edited in Salesforce
//! twice, a few minutes apart, while every PATCH to Partner Center fails
//! (503). The update queued for the first edit waits; the second edit is
//! decided before it is sent. Once Partner Center takes writes again both
//! edits must be in Partner Center, and the CRM must keep them: nothing of
//! the first edit may be lost to the second.

mod sync_support;

use std::time::Duration;

use cosell_sync::sim::{Api, PatchOp};
use serde_json::json;
use sync_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edits_made_while_partner_center_refuses_writes_both_reach_it() {
    let h = harness(options(4, 0)).await;
    let (id, opp) = h.accept_a_received_deal_in_salesforce().await;
    let notes = "Second call booked with the customer.";
    assert_ne!(h.referral(&id)["details"]["notes"], json!(notes));

    let refusing = h.refuse_patches(Api::PartnerCenter);
    h.sim.clock().advance(Duration::from_secs(300));
    h.sim
        .state()
        .edit_salesforce(&opp, json!({ "Amount": 555 }))
        .unwrap();
    let s = h.cycle().await;
    assert!(
        s.pending_effects > 0,
        "the first edit waits: {}",
        s.one_line()
    );

    h.sim.clock().advance(Duration::from_secs(120));
    h.sim
        .state()
        .edit_salesforce(&opp, json!({ "Description": notes }))
        .unwrap();
    let s = h.cycle().await;
    assert!(s.pending_effects > 0, "both edits wait: {}", s.one_line());
    assert_ne!(h.referral(&id)["details"]["dealValue"], json!(555));

    // Partner Center takes writes again, past any back-off.
    assert!(h.sim.state().remove_fault(refusing));
    h.sim.clock().advance(Duration::from_secs(3600));
    h.settle_quietly(6).await;

    let r = h.referral(&id);
    assert_eq!(r["details"]["dealValue"].as_f64(), Some(555.0), "{r}");
    assert_eq!(r["details"]["notes"], json!(notes), "{r}");
    let sf = h.sim.state().salesforce_opportunity(&opp).unwrap();
    assert_eq!(sf["Amount"].as_f64(), Some(555.0), "{sf}");
    assert_eq!(sf["Description"], json!(notes), "{sf}");
}

/// A CRM write waiting for Salesforce (a Partner Center edit of the deal
/// value) when another decision writes the same opportunity: Microsoft's
/// 14 days to answer a co-sell request lapse, and "No answer" is shown. That
/// write must not replace the waiting one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_center_edit_waiting_for_the_crm_survives_microsoft_s_lapsed_answer() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let opp = h
        .sim
        .state()
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
    let sf = h.sim.state().salesforce_opportunity(&opp).unwrap();
    let id = sf["Referral_Identifier__c"]
        .as_str()
        .expect("created")
        .to_owned();
    assert_eq!(sf["Microsoft_Engagement__c"], "Requested", "{sf}");
    // Close to the end of Microsoft's 14 days (a full reconcile on the way).
    h.sim
        .clock()
        .advance(Duration::from_secs(13 * 86_400 + 20 * 3600));
    h.settle(3).await;

    // Salesforce refuses writes; the deal value is changed in Partner Center.
    let refusing = h.refuse_patches(Api::Salesforce);
    h.sim.clock().advance(Duration::from_secs(60));
    h.sim
        .state()
        .edit_referral(&id, &[PatchOp::replace("/details/dealValue", 130000)])
        .unwrap();
    let s = h.cycle().await;
    assert!(
        s.pending_effects > 0,
        "the CRM write waits: {}",
        s.one_line()
    );

    // Microsoft's 14 days lapse before the write went out.
    h.sim.clock().advance(Duration::from_secs(5 * 3600));
    let s = h.cycle().await;
    assert!(s.pending_effects > 0, "{}", s.one_line());

    assert!(h.sim.state().remove_fault(refusing));
    h.sim.clock().advance(Duration::from_secs(600));
    h.settle_quietly(6).await;
    let sf = h.sim.state().salesforce_opportunity(&opp).unwrap();
    assert_eq!(sf["Microsoft_Engagement__c"], "No answer", "{sf}");
    assert_eq!(sf["Amount"].as_f64(), Some(130000.0), "{sf}");
}
