//! A standard Salesforce org — no Data.com licence (no `Account.DunsNumber`),
//! one currency (no `Opportunity.CurrencyIsoCode`) — works with the shipped
//! defaults: the adapter learns the org's fields from describe, never names a
//! field the org lacks, and adapts when a field disappears mid-run.

mod cli_support;
mod sync_support;

use cli_support::{SimCli, run};
use cosell_sync::sim::{Api, LoggedRequest, SimOptions};
use cosell_sync::sync::{CycleOptions, CycleSummary};
use serde_json::{Value, json};
use sync_support::*;

/// The simulator's Salesforce requests, oldest first.
fn sf_requests(h: &Harness) -> Vec<LoggedRequest> {
    h.sim
        .state()
        .request_log()
        .into_iter()
        .filter(|r| r.api == Api::Salesforce)
        .collect()
}

/// Inbound referrals still open in Partner Center (received or accepted).
fn open_inbound(h: &Harness) -> Vec<String> {
    let st = h.sim.state();
    st.referral_ids()
        .into_iter()
        .filter(|id| {
            let r = st.referral(id).unwrap_or_default();
            r["direction"] == "Incoming" && r["status"] != "Closed"
        })
        .collect()
}

fn account(h: &Harness, id: &str) -> Value {
    h.sim
        .state()
        .salesforce_records("Account")
        .into_iter()
        .find(|a| a["Id"] == id)
        .unwrap_or_else(|| panic!("no Account {id}"))
}

fn salesforce_failures(h: &Harness) -> Vec<String> {
    h.store
        .read(|r| r.list_failures(&[]))
        .unwrap()
        .into_iter()
        .filter(|f| f.side == "salesforce")
        .map(|f| format!("{} [{}]: {}", f.record, f.kind, f.message))
        .collect()
}

fn assert_clean(summaries: &[CycleSummary]) {
    for s in summaries {
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.quarantined, 0, "{s:?}");
        let failed = s.crms.get("salesforce").map_or(0, |c| c.failed);
        assert_eq!(failed, 0, "{s:?}");
    }
}

/// Every open inbound referral is an opportunity bound to an Account with
/// the customer's name and postal code; returns how many were checked.
fn assert_inbound_landed_with_accounts(h: &Harness) -> usize {
    let ids = open_inbound(h);
    assert!(!ids.is_empty(), "the simulator has open inbound referrals");
    for id in &ids {
        let opp = h
            .sf(id)
            .unwrap_or_else(|| panic!("referral {id} did not land in Salesforce"));
        let account_id = opp["AccountId"]
            .as_str()
            .unwrap_or_else(|| panic!("opportunity of {id} has no Account: {opp}"));
        let acc = account(h, account_id);
        let customer = &h.referral(id)["customerProfile"];
        assert_eq!(
            acc["Name"].as_str().map(str::to_lowercase),
            customer["name"].as_str().map(str::to_lowercase),
            "{acc}"
        );
        assert_eq!(
            acc["BillingPostalCode"], customer["address"]["postalCode"],
            "{acc}"
        );
    }
    ids.len()
}

fn assert_never_named(h: &Harness, fields: &[&str]) {
    for r in sf_requests(h) {
        for f in fields {
            assert!(
                !r.uri.contains(f),
                "a request names {f}: {} {}",
                r.method,
                r.uri
            );
        }
        assert!(
            r.status < 400,
            "Salesforce refused {} {}: {}",
            r.method,
            r.uri,
            r.status
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_defaults_sync_inbound_referrals_into_a_standard_org() {
    let h = harness(options(8, 0)).await;
    let summaries = h.settle(4).await;

    assert_clean(&summaries);
    let last = summaries.last().unwrap();
    assert_eq!(last.writes(), 0, "then a quiet steady state: {last:?}");
    assert_eq!(salesforce_failures(&h), Vec::<String>::new());
    let n = assert_inbound_landed_with_accounts(&h);
    assert!(n >= 2, "{n}");
    assert_never_named(&h, &["DunsNumber", "CurrencyIsoCode"]);
    // The org was described once per adapter: Opportunity and Account.
    let describes = sf_requests(&h)
        .iter()
        .filter(|r| r.operation.ends_with("describe"))
        .count();
    assert!(describes >= 2, "{describes}");
    // The seeded accounts were found: none was created for a known customer.
    assert_eq!(h.sim.state().salesforce_records("Account").len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_and_postal_code_matching_creates_accounts_in_a_standard_org() {
    let h = harness_with(
        options(8, 0),
        &[("COSELL_SYNC__SALESFORCE__ACCOUNT_MATCH", "name_postal_code")],
    )
    .await;
    // No account yet: every customer's Account is created.
    let st = h.sim.state();
    for a in st.salesforce_records("Account") {
        st.delete_salesforce_record("Account", a["Id"].as_str().unwrap())
            .unwrap();
    }
    let summaries = h.settle(4).await;

    assert_clean(&summaries);
    assert_eq!(salesforce_failures(&h), Vec::<String>::new());
    assert_inbound_landed_with_accounts(&h);
    assert_never_named(&h, &["DunsNumber", "CurrencyIsoCode"]);
    let accounts = st.salesforce_records("Account");
    assert!(!accounts.is_empty());
    assert!(
        accounts.iter().all(|a| a.get("DunsNumber").is_none()),
        "{accounts:?}"
    );
    // One Account per customer (name + postal code), however many deals.
    let mut keys: Vec<(String, String)> = accounts
        .iter()
        .map(|a| {
            (
                a["Name"].as_str().unwrap_or_default().to_lowercase(),
                a["BillingPostalCode"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let total = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total, "{accounts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_com_multi_currency_org_matches_by_duns_and_writes_the_currency() {
    let h = harness(SimOptions {
        salesforce_data_com: true,
        salesforce_multi_currency: true,
        ..options(8, 0)
    })
    .await;
    let st = h.sim.state();
    // Renamed after a merger: only its DUNS number still matches the customer.
    let first = open_inbound(&h)[0].clone();
    let customer = h.referral(&first)["customerProfile"].clone();
    let duns = customer["ids"][0]["id"].as_str().unwrap().to_owned();
    let renamed = st
        .salesforce_records("Account")
        .into_iter()
        .find(|a| a["DunsNumber"] == duns.as_str())
        .expect("a seeded account carries the customer's DUNS");
    let renamed_id = renamed["Id"].as_str().unwrap().to_owned();
    st.edit_salesforce_record(
        "Account",
        &renamed_id,
        json!({"Name": "Renamed Holdings", "BillingPostalCode": "00000"}),
    )
    .unwrap();

    let summaries = h.settle(4).await;
    assert_clean(&summaries);
    assert_eq!(salesforce_failures(&h), Vec::<String>::new());
    let opp = h.sf(&first).expect("the referral landed");
    assert_eq!(opp["AccountId"], renamed_id.as_str(), "matched by DUNS");
    assert_eq!(
        opp["CurrencyIsoCode"],
        h.referral(&first)["details"]["currency"],
        "{opp}"
    );
    let named = |f: &str| sf_requests(&h).iter().any(|r| r.uri.contains(f));
    assert!(named("DunsNumber") && named("CurrencyIsoCode"));
    assert_eq!(
        st.salesforce_records("Account").len(),
        12,
        "nothing created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_lost_mid_run_is_described_again_and_skipped() {
    let h = harness(SimOptions {
        salesforce_data_com: true,
        salesforce_multi_currency: true,
        ..options(6, 0)
    })
    .await;
    // One engine for the whole run: the describe is cached across cycles.
    let engine = h.engine();
    let mut summaries = Vec::new();
    for _ in 0..4 {
        let s = engine.run_cycle(&CycleOptions::default()).await.unwrap();
        let quiet = s.writes() == 0 && s.pending_effects == 0;
        summaries.push(s);
        if quiet {
            break;
        }
    }
    assert_clean(&summaries);

    // The org switches multiple currencies off; a new referral arrives.
    let st = h.sim.state();
    st.remove_salesforce_field("Opportunity", "CurrencyIsoCode")
        .unwrap();
    st.clear_request_log();
    let new = st.insert_referrals(1).remove(0);
    let mut summaries = Vec::new();
    for _ in 0..3 {
        summaries.push(engine.run_cycle(&CycleOptions::default()).await.unwrap());
    }

    assert_clean(&summaries);
    assert_eq!(salesforce_failures(&h), Vec::<String>::new());
    let opp = h.sf(&new).expect("the new referral landed");
    assert!(opp.get("CurrencyIsoCode").is_none());
    let log = sf_requests(&h);
    let refused: Vec<&LoggedRequest> = log.iter().filter(|r| r.status >= 400).collect();
    assert_eq!(refused.len(), 1, "one INVALID_FIELD: {refused:?}");
    assert!(refused[0].uri.contains("CurrencyIsoCode"), "{refused:?}");
    let at = log.iter().position(|r| r.status >= 400).unwrap();
    assert_eq!(
        log[at + 1].operation,
        "GET describe",
        "described again right after: {log:?}"
    );
    assert!(
        log[at + 1..]
            .iter()
            .all(|r| !r.uri.contains("CurrencyIsoCode")),
        "{log:?}"
    );
    let describes = log.iter().filter(|r| r.operation == "GET describe").count();
    assert_eq!(describes, 1, "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_online_notes_what_a_standard_org_lacks_and_passes() {
    let h = harness(options(4, 0)).await;
    let file = h.dir.path().join("cosell-sync.toml");
    let cli = SimCli::with_settings(&h.sim, tempfile::tempdir().unwrap(), &file, "validate");
    let (cfg, envs) = (cli.cfg.clone(), cli.envs.clone());
    let (code, out, err) = run(&["config", "validate", "--online", "-c", &cfg], &envs).await;
    assert_eq!(code, 0, "{out}{err}");
    let note = |item: &str| {
        out.lines()
            .any(|l| l.contains("salesforce: note:") && l.contains(item))
    };
    assert!(note("Account.DunsNumber"), "{out}");
    assert!(note("Opportunity.CurrencyIsoCode"), "{out}");
    assert!(out.contains("partner_center: signed in"), "{out}");

    // A mapped custom field the org lacks stays an error.
    h.sim
        .state()
        .remove_salesforce_field("Opportunity", "Microsoft_Solutions__c")
        .unwrap();
    let (code, out, err) = run(&["config", "validate", "--online", "-c", &cfg], &envs).await;
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains("Opportunity.Microsoft_Solutions__c"), "{err}");
}
