//! Who sent a referral and why, as plain mapped fields in both CRMs: the
//! sender's organisation and note (shown, never sent back), the help asked
//! for, the direction, every partner seller on the deal; Partner Center's
//! favourite both ways; the marketing campaign; the deal registration
//! status once won.

mod sync_support;

use cosell_sync::sim::PatchOp;
use serde_json::{Value, json};
use sync_support::*;

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// A fresh received referral in both CRMs.
async fn received(h: &Harness) -> String {
    let id = h.sim.state().insert_referrals(1).remove(0);
    h.settle(3).await;
    assert!(h.sf(&id).is_some() && h.dv(&id).is_some());
    id
}

/// A received referral accepted in Partner Center and synced.
async fn accepted(h: &Harness) -> String {
    let id = received(h).await;
    h.sim.state().accept_referral(&id).unwrap();
    h.settle(3).await;
    assert_eq!(h.sf(&id).unwrap()["StageName"], "Qualification");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_referral_shows_who_sent_it_and_why_in_both_crms() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let id = received(&h).await;
    let r = h.referral(&id);
    let sender = text(&r["inviteContext"]["invitedBy"]["organizationName"]).to_owned();
    let note = text(&r["inviteContext"]["notes"]).to_owned();
    let help = text(&r["inviteContext"]["assistanceRequestCode"]).to_owned();
    let team: Vec<&str> = r["team"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| text(&m["email"]))
        .collect();
    assert!(
        !sender.is_empty() && !note.is_empty() && !team.is_empty(),
        "{r}"
    );
    let sf = h.sf(&id).unwrap();
    let dv = h.dv(&id).unwrap();
    for (crm, rec, by, notes, asked, dir, members, fav) in [
        (
            "salesforce",
            &sf,
            "Referred_By__c",
            "Referral_Notes__c",
            "Microsoft_Help_Requested__c",
            "Referral_Direction__c",
            "Partner_Team__c",
            "Partner_Center_Favorite__c",
        ),
        (
            "dynamics",
            &dv,
            "new_referredby",
            "new_referralnotes",
            "new_microsofthelprequested",
            "new_referraldirection",
            "new_partnerteam",
            "new_partnercenterfavorite",
        ),
    ] {
        assert_eq!(text(&rec[by]), sender, "{crm}: {rec}");
        assert_eq!(text(&rec[notes]), note, "{crm}: {rec}");
        assert_eq!(text(&rec[asked]), help, "{crm}: {rec}");
        assert_eq!(rec[dir], "Incoming", "{crm}: {rec}");
        assert_eq!(text(&rec[members]), team.join("; "), "{crm}: {rec}");
        assert_eq!(rec[fav], r["favorite"], "{crm}: {rec}");
    }

    // The sender's note is theirs: an edit in the CRM is not sent back.
    let opp = text(&sf["Id"]).to_owned();
    h.sim
        .state()
        .edit_salesforce(
            &opp,
            json!({"StageName": "Qualification", "Referral_Notes__c": "my own words"}),
        )
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.status(&id).1, "Accepted", "the move accepted it");
    assert_eq!(h.referral(&id)["inviteContext"]["notes"], note.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_favourite_goes_both_ways_between_partner_center_and_either_crm() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let id = accepted(&h).await;
    let start = h.referral(&id)["favorite"].as_bool().unwrap();

    // Ticked in Salesforce: Partner Center's heart, and Dynamics follows.
    let sf_opp = text(&h.sf(&id).unwrap()["Id"]).to_owned();
    h.sim
        .state()
        .edit_salesforce(&sf_opp, json!({"Partner_Center_Favorite__c": !start}))
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.referral(&id)["favorite"], !start);
    assert_eq!(h.dv(&id).unwrap()["new_partnercenterfavorite"], !start);

    // Ticked off in Dynamics.
    let dv_opp = text(&h.dv(&id).unwrap()["opportunityid"]).to_owned();
    h.sim
        .state()
        .edit_dynamics(&dv_opp, json!({"new_partnercenterfavorite": start}))
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.referral(&id)["favorite"], start);
    assert_eq!(h.sf(&id).unwrap()["Partner_Center_Favorite__c"], start);

    // Changed in Partner Center: both CRMs show it.
    h.sim
        .state()
        .edit_referral(&id, &[PatchOp::replace("/favorite", !start)])
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.sf(&id).unwrap()["Partner_Center_Favorite__c"], !start);
    assert_eq!(h.dv(&id).unwrap()["new_partnercenterfavorite"], !start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marketing_campaign_goes_to_partner_center_from_either_crm() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let id = accepted(&h).await;
    let dv_opp = text(&h.dv(&id).unwrap()["opportunityid"]).to_owned();
    h.sim
        .state()
        .edit_dynamics(&dv_opp, json!({"new_marketingcampaignid": "FY27-AI-EMEA"}))
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.referral(&id)["campaignId"], "FY27-AI-EMEA");
    assert_eq!(
        h.sf(&id).unwrap()["Marketing_Campaign_Id__c"],
        "FY27-AI-EMEA"
    );

    let sf_opp = text(&h.sf(&id).unwrap()["Id"]).to_owned();
    h.sim
        .state()
        .edit_salesforce(
            &sf_opp,
            json!({"Marketing_Campaign_Id__c": "FY27-AI-EMEA-2"}),
        )
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.referral(&id)["campaignId"], "FY27-AI-EMEA-2");
    assert_eq!(
        h.dv(&id).unwrap()["new_marketingcampaignid"],
        "FY27-AI-EMEA-2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deal_registration_status_reaches_won_deals() {
    let h = harness(options(2, 0)).await;
    h.settle(3).await;
    let id = accepted(&h).await;
    assert_eq!(h.sf(&id).unwrap()["Registration_Status__c"], "None");

    // Won and registered before the next cycle: both CRMs close with it.
    h.sim.state().win_referral(&id).unwrap();
    h.sim
        .state()
        .set_registration_status(&id, "ReviewPending")
        .unwrap();
    h.settle(4).await;
    let sf = h.sf(&id).unwrap();
    assert_eq!(sf["StageName"], "Closed Won");
    assert_eq!(sf["Registration_Status__c"], "ReviewPending", "{sf}");
    let dv = h.dv(&id).unwrap();
    assert_eq!(dv["statecode"], 1);
    assert_eq!(dv["new_registrationstatus"], "ReviewPending", "{dv}");

    // Reviewed later: Salesforce shows it on the closed deal (a closed
    // Dataverse row is read-only, see docs/mapping-guide.md).
    h.sim
        .state()
        .set_registration_status(&id, "Approved")
        .unwrap();
    h.settle(4).await;
    assert_eq!(h.sf(&id).unwrap()["Registration_Status__c"], "Approved");
    let failures = h
        .store
        .read(|r| r.list_failures(&[cosell_sync::store::FailureState::Open]))
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
}
