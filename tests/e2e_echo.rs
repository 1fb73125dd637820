//! The echo of the engine's own Salesforce write: the next cycle reads the
//! record back and must know it as already seen (skipped, no decision, no
//! write). The mapping sends a date-time both ways, which Salesforce returns
//! in its own spelling (`…T09:30:00.000+0000` for the `…T09:30:00Z`
//! written); the org is a standard one (one currency: no `CurrencyIsoCode`,
//! although the mapping names it) or one with Data.com and several
//! currencies. The shipped mapping's one date-time field, `Answer_By__c`,
//! is a status field that never reaches Partner Center, so its spelling
//! cannot make an echo look changed; the mapping here sends one.

mod sync_support;

use std::time::Duration;

use cosell_sync::sim::{Api, PatchOp, SimOptions};
use cosell_sync::store::CrmKind;
use cosell_sync::sync::{CycleOptions, CycleSummary, Engine};
use sync_support::*;

const CLOSE_DATE_RULE: &str =
    r#""details.closingDateTime"     = { crm = "CloseDate", transform = "date", empty = "keep" }"#;
const ANSWER_BY_STATUS: &str = r#"answer_by            = "Answer_By__c""#;
const EXTERNAL_REFERENCE_RULE: &str = r#""externalReferenceId"         = { crm = "Id""#;

/// The shipped Salesforce mapping, except that the customer's closing date
/// and time also travels both ways in the Date/Time field `Answer_By__c`
/// (the close date itself is still written to `CloseDate`).
fn date_time_mapping() -> String {
    let shipped = cosell_sync::mapping::DEFAULT_SALESFORCE;
    assert!(shipped.contains(CLOSE_DATE_RULE) && shipped.contains(ANSWER_BY_STATUS));
    shipped
        .replace(
            CLOSE_DATE_RULE,
            concat!(
                r#""details.closingDateTime" = { crm = "Answer_By__c", transform = "datetime", empty = "keep" }"#,
                "\n",
                r#""details.closingDateTime#close" = { crm = "CloseDate", direction = "to_crm", transform = "date", empty = "keep" }"#,
            ),
        )
        .replace(ANSWER_BY_STATUS, "")
}

/// A standard org (the simulator's default: no Data.com, one currency).
fn standard_org() -> SimOptions {
    let opts = options(4, 0);
    assert!(!opts.salesforce_multi_currency && !opts.salesforce_data_com);
    opts
}

/// The simulator with `opts`, the engine reading `mapping` as its
/// Salesforce mapping.
async fn org(opts: SimOptions, mapping: &str) -> Harness {
    let h = harness(opts).await;
    let dir = h.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("salesforce.toml"), mapping).unwrap();
    h
}

async fn run(engine: &Engine) -> CycleSummary {
    let s = engine.run_cycle(&CycleOptions::default()).await.unwrap();
    assert!(s.errors.is_empty(), "{s:?}");
    assert_eq!(s.quarantined, 0, "{s:?}");
    for (crm, side) in &s.crms {
        assert_eq!(side.failed, 0, "{crm}: {s:?}");
    }
    s
}

/// Cycles until one makes no write and leaves nothing pending.
async fn settle(engine: &Engine) {
    for _ in 0..6 {
        let s = run(engine).await;
        if s.writes() == 0 && s.pending_effects == 0 {
            return;
        }
    }
    panic!("no quiet cycle");
}

/// Requests that wrote to Salesforce or Partner Center (sign-ins aside).
fn writes_in_log(h: &Harness) -> Vec<String> {
    h.sim
        .state()
        .request_log()
        .into_iter()
        .filter(|r| matches!(r.api, Api::Salesforce | Api::PartnerCenter))
        .filter(|r| r.method != "GET" && !r.operation.ends_with("token"))
        .filter(|r| !r.operation.ends_with("query"))
        .map(|r| format!("{} {} ({})", r.method, r.uri, r.operation))
        .collect()
}

fn events(h: &Harness, referral_id: &str) -> Vec<String> {
    h.store
        .read(|r| r.events_for(referral_id))
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}: {}", e.side, e.kind, e.message))
        .collect()
}

/// The cycle that reads back the engine's own Salesforce write: the one
/// Opportunity read is skipped as seen (its link untouched), nothing is
/// written anywhere, nothing is queued, and the referral gets no event.
async fn assert_echo_seen(h: &Harness, engine: &Engine, referral_id: &str) {
    let link_before = h
        .store
        .read(|r| r.link_by_referral(CrmKind::Salesforce, referral_id))
        .unwrap()
        .expect("linked");
    let events_before = events(h, referral_id);
    h.sim.state().clear_request_log();
    h.sim.state().reset_counters();

    let echo = run(engine).await;

    let sf = &echo.crms["salesforce"];
    assert_eq!(sf.read, 1, "the echo is read: {echo:?}");
    // The referral the Partner Center listing reads again (its overlap) is
    // skipped for each CRM too: one skip per record read on either side.
    assert_eq!(
        sf.skipped,
        sf.read + echo.partner_center.read,
        "the echo is skipped as seen: {echo:?}"
    );
    assert_eq!(echo.writes(), 0, "{echo:?}");
    assert_eq!(echo.pending_effects, 0, "{echo:?}");
    assert_eq!(writes_in_log(h), Vec::<String>::new());
    assert_eq!(write_calls(&h.counters()), 0, "{:?}", h.counters());
    assert_eq!(events(h, referral_id), events_before, "no decision");
    let link_after = h
        .store
        .read(|r| r.link_by_referral(CrmKind::Salesforce, referral_id))
        .unwrap()
        .expect("linked");
    assert_eq!(
        link_after.updated_at, link_before.updated_at,
        "link untouched"
    );
    assert_eq!(link_after.crm_hash, link_before.crm_hash);
}

/// A referral already linked is updated in Partner Center; the engine
/// updates its Opportunity; the next cycle's read of that Opportunity is the
/// echo of the update and is skipped as seen.
async fn the_echo_of_an_update_is_skipped(opts: SimOptions) {
    let multi_currency = opts.salesforce_multi_currency;
    let h = org(opts, &date_time_mapping()).await;
    let engine = h.engine();
    settle(&engine).await;
    let id = h
        .received_inbound()
        .into_iter()
        .find(|id| h.sf(id).is_some())
        .expect("a received referral linked in Salesforce");
    let opp = h.sf(&id).unwrap();
    assert_eq!(
        opp.get("CurrencyIsoCode").is_some(),
        multi_currency,
        "{opp}"
    );
    let opp_id = opp["Id"].as_str().unwrap().to_owned();

    // An hour later the close date and deal value change in Partner Center.
    h.sim.clock().advance(Duration::from_secs(3600));
    h.sim
        .state()
        .edit_referral(
            &id,
            &[
                PatchOp::replace("/details/closingDateTime", "2027-05-17T09:30:00Z"),
                PatchOp::replace("/details/dealValue", 424242),
            ],
        )
        .unwrap();
    let update = run(&engine).await;
    assert_eq!(update.crms["salesforce"].updated, 1, "{update:?}");
    let opp = h.sim.state().salesforce_opportunity(&opp_id).unwrap();
    assert_eq!(opp["Answer_By__c"], "2027-05-17T09:30:00.000+0000", "{opp}");
    assert_eq!(opp["CloseDate"], "2027-05-17", "{opp}");
    assert_eq!(opp["Amount"].as_f64(), Some(424242.0), "{opp}");

    h.sim.clock().advance(Duration::from_secs(60));
    assert_echo_seen(&h, &engine, &id).await;
    assert_eq!(
        h.sim.state().salesforce_opportunity(&opp_id).unwrap(),
        opp,
        "the Opportunity is as the update left it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_of_an_update_with_a_date_time_in_a_standard_org_is_skipped() {
    the_echo_of_an_update_is_skipped(standard_org()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_of_an_update_with_a_date_time_in_a_data_com_multi_currency_org_is_skipped() {
    the_echo_of_an_update_is_skipped(SimOptions {
        salesforce_data_com: true,
        salesforce_multi_currency: true,
        ..options(4, 0)
    })
    .await;
}

/// Without `externalReferenceId` in the mapping, nothing the create did not
/// write goes to Partner Center: the read-back of a new Opportunity is the
/// echo of the create and is skipped as seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_of_a_create_with_a_date_time_in_a_standard_org_is_skipped() {
    let mapping = date_time_mapping();
    let line = mapping
        .lines()
        .find(|l| l.starts_with(EXTERNAL_REFERENCE_RULE))
        .expect("the shipped mapping sends the Id as externalReferenceId");
    let h = org(standard_org(), &mapping.replace(line, "")).await;
    let engine = h.engine();
    settle(&engine).await;

    h.sim.clock().advance(Duration::from_secs(3600));
    let id = h.sim.state().insert_referrals(1).remove(0);
    let create = run(&engine).await;
    assert_eq!(create.crms["salesforce"].created, 1, "{create:?}");
    let opp = h.sf(&id).expect("the new referral landed");
    let answer_by = opp["Answer_By__c"].as_str().unwrap_or_default();
    assert!(answer_by.ends_with(".000+0000"), "{opp}");

    h.sim.clock().advance(Duration::from_secs(60));
    assert_echo_seen(&h, &engine, &id).await;
    assert_eq!(h.sf(&id).unwrap(), opp);
    let referral = h.referral(&id);
    assert!(referral["externalReferenceId"].is_null(), "{referral}");
}
