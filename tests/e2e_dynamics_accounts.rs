//! Dataverse account upkeep end to end, engine and simulator: a customer new
//! to the org gets its account created in its deal's own change set, so an
//! account the service refuses fails that deal alone; the others land, each
//! bound to its new account.

mod sync_support;

use cosell_sync::sim::PatchOp;
use serde_json::{Value, json};
use sync_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_account_fails_only_its_own_deal_and_the_others_land() {
    let h = harness_with(
        options(0, 0),
        &[("COSELL_SYNC__SALESFORCE__ENABLED", "false")],
    )
    .await;
    let st = h.sim.state();
    let accounts_before = st.dynamics_rows("accounts").len();
    let ids = st.insert_referrals(3);
    // The account name column holds 160 characters: the middle customer's
    // account is refused.
    let names = [
        "Upkeep Alpha Ltd".to_owned(),
        format!("Upkeep Bravo {}", "x".repeat(170)),
        "Upkeep Charlie Ltd".to_owned(),
    ];
    for (i, (id, name)) in ids.iter().zip(&names).enumerate() {
        st.edit_referral(
            id,
            &[
                PatchOp::replace("/customerProfile/name", name.clone()),
                PatchOp::replace(
                    "/customerProfile/ids",
                    json!([{"profileType": "Duns", "id": format!("{:09}", 700_000_000 + i)}]),
                ),
            ],
        )
        .unwrap();
    }
    h.sim.state().reset_counters();
    let summary = h.cycle().await;

    let accounts = st.dynamics_rows("accounts");
    let account_named = |name: &str| -> Option<Value> {
        accounts
            .iter()
            .find(|a| a["name"].as_str() == Some(name))
            .cloned()
    };
    for i in [0, 2] {
        let deal = h
            .dv(&ids[i])
            .unwrap_or_else(|| panic!("deal {i} landed: {}", summary.one_line()));
        let account = account_named(&names[i]).expect("its account was created");
        assert_eq!(
            deal["_customerid_value"], account["accountid"],
            "deal {i} is bound to its new account"
        );
    }
    assert!(h.dv(&ids[1]).is_none(), "the deal of the refused account");
    assert!(account_named(&names[1]).is_none());
    assert_eq!(accounts.len(), accounts_before + 2);

    // One lookup and one $batch carried all three: no account POSTed alone.
    let c = h.counters();
    let ops = &c.per_operation[&cosell_sync::sim::Api::Dynamics];
    assert_eq!(ops.get("GET accounts").copied(), Some(1), "{ops:?}");
    assert_eq!(ops.get("POST $batch").copied(), Some(1), "{ops:?}");
    assert_eq!(ops.get("POST accounts"), None, "{ops:?}");
}
