//! `cosell-sync demo`: the simulator in-process with sample data, the daemon
//! running against it for a few cycles, and a person acting in between —
//! accepting in Salesforce, winning in Dynamics, letting a referral expire,
//! creating a co-sell deal with a missing field and then fixing it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::commands::{render_summary, table};
use crate::config;
use crate::sim::{SimHandle, SimOptions, Simulator};
use crate::store::Store;
use crate::sync::setup::build_engine;
use crate::sync::{CycleOptions, CycleSummary, Engine};

/// Each message includes its cause, so the cause is not also a `source()`.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("simulator: {0}")]
    Sim(crate::sim::SimError),
    #[error("configuration: {0}")]
    Config(crate::config::ConfigError),
    #[error("setup: {0}")]
    Setup(Box<crate::sync::setup::SetupError>),
    #[error("state store: {0}")]
    Store(crate::store::StoreError),
    #[error("sync: {0}")]
    Sync(crate::sync::SyncError),
    #[error("cannot create a temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error("the demo could not {0}")]
    Step(String),
}

macro_rules! demo_error_from {
    ($($variant:ident($ty:ty)),* $(,)?) => {$(
        impl From<$ty> for DemoError {
            fn from(e: $ty) -> Self {
                DemoError::$variant(e)
            }
        }
    )*};
}

demo_error_from!(
    Sim(crate::sim::SimError),
    Config(crate::config::ConfigError),
    Store(crate::store::StoreError),
    Sync(crate::sync::SyncError),
    TempDir(std::io::Error),
);

/// What the demo saw, for tests.
#[derive(Debug, Default)]
pub struct DemoReport {
    pub cycles: Vec<CycleSummary>,
    pub accepted_in_salesforce: Option<String>,
    pub won_in_dynamics: Option<String>,
    pub expired: Option<String>,
    pub co_sell_created: Option<String>,
    /// The final state per referral, as printed.
    pub final_table: String,
}

impl From<crate::sync::setup::SetupError> for DemoError {
    fn from(e: crate::sync::setup::SetupError) -> Self {
        DemoError::Setup(Box::new(e))
    }
}

struct Demo {
    sim: SimHandle,
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl Demo {
    async fn cycle(
        &self,
        say: &mut dyn FnMut(&str),
        title: &str,
        report: &mut DemoReport,
    ) -> Result<(), DemoError> {
        let s = self.engine.run_cycle(&CycleOptions::default()).await?;
        say(&format!("\n── {title}\n{}", render_summary(&s)));
        report.cycles.push(s);
        Ok(())
    }

    fn referrals_where(&self, f: impl Fn(&Value) -> bool) -> Vec<String> {
        let st = self.sim.state();
        let mut ids: Vec<String> = st
            .referral_ids()
            .into_iter()
            .filter(|id| st.referral(id).is_some_and(|r| f(&r)))
            .collect();
        ids.sort();
        ids
    }
}

fn step(what: &str) -> DemoError {
    DemoError::Step(what.to_owned())
}

/// Runs the demo, printing through `say`.
pub async fn run(mut say: impl FnMut(&str)) -> Result<DemoReport, DemoError> {
    let say: &mut dyn FnMut(&str) = &mut say;
    let mut report = DemoReport::default();
    let sim = Simulator::start(SimOptions {
        seed: 7,
        referrals: 10,
        crm_opportunities: Some(0),
        ..Default::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let settings = config::load(&crate::simulate::daemon_sources(&sim, dir.path())?)?;
    let store = Arc::new(Store::open(&settings.state.path)?);
    let engine = build_engine(&settings, store, crate::simulate::clock(&sim))?;
    let demo = Demo {
        sim,
        engine,
        _dir: dir,
    };
    say(&format!(
        "cosell-sync demo: a simulated Partner Center, Dynamics 365 and Salesforce at {}\n\
         (no credentials, no network: everything runs on this machine)",
        demo.sim.urls().base
    ));

    demo.cycle(
        say,
        "cycle 1: backfill — every open referral lands in both CRMs; received ones on hold",
        &mut report,
    )
    .await?;

    // A seller accepts a referral in Salesforce by moving it out of on-hold.
    let received = demo.referrals_where(|r| r["direction"] == "Incoming" && r["status"] == "New");
    let st = demo.sim.state().clone();
    for id in &received {
        if let Some(o) = st.salesforce_opportunity_by_referral(id) {
            say(&format!(
                "  on hold in Salesforce: {:?}, answer by {} UTC",
                o["Name"].as_str().unwrap_or_default(),
                o["Answer_By__c"]
                    .as_str()
                    .map(|t| t.chars().take(16).collect::<String>().replace('T', " "))
                    .unwrap_or_else(|| "-".into())
            ));
        }
    }
    let accept = received
        .first()
        .cloned()
        .ok_or_else(|| step("find a received referral"))?;
    let sf = st
        .salesforce_opportunity_by_referral(&accept)
        .ok_or_else(|| step("find the referral's Salesforce opportunity"))?;
    let sf_id = sf["Id"].as_str().unwrap_or_default().to_owned();
    st.set_sf_stage(&sf_id, "Qualification")
        .map_err(|e| step(&format!("move the stage: {e}")))?;
    say(&format!(
        "\n▶ a seller moves Salesforce opportunity {sf_id} (referral {accept}) from \"On Hold\" to \"Qualification\""
    ));
    demo.cycle(
        say,
        "cycle 2: the move out of on-hold accepts the referral in Partner Center",
        &mut report,
    )
    .await?;
    report.accepted_in_salesforce = Some(accept.clone());

    // Another seller accepts and wins a referral in Dynamics.
    let win = received
        .get(1)
        .cloned()
        .ok_or_else(|| step("find a second referral"))?;
    let dv = st
        .dynamics_opportunity_by_referral(&win)
        .ok_or_else(|| step("find the referral's Dynamics opportunity"))?;
    let dv_id = dv["opportunityid"].as_str().unwrap_or_default().to_owned();
    st.edit_dynamics(&dv_id, json!({"statuscode": 1}))
        .map_err(|e| step(&format!("accept in Dynamics: {e}")))?;
    say(&format!(
        "\n▶ a seller sets Dynamics opportunity {dv_id} (referral {win}) to In Progress"
    ));
    demo.cycle(say, "cycle 3: accepted from Dynamics", &mut report)
        .await?;
    st.win_dynamics(&dv_id)
        .map_err(|e| step(&format!("win in Dynamics: {e}")))?;
    say(&format!(
        "\n▶ the seller closes Dynamics opportunity {dv_id} as won"
    ));
    demo.cycle(
        say,
        "cycle 4: won in Partner Center, and closed won in Salesforce too",
        &mut report,
    )
    .await?;
    report.won_in_dynamics = Some(win);

    // A co-sell deal from Salesforce, first without the customer's country.
    let mut deal = json!({
        "Name": "Fabrikam AI pilot", "Amount": 250000, "CloseDate": "2027-06-30",
        "StageName": "Qualification", "Sync_with_Partner_Center__c": true,
        "Customer_Name__c": "Fabrikam Ltd", "Customer_Street__c": "1 Main Street", "Customer_City__c": "Dublin",
        "Customer_Postal_Code__c": "D02", "Partner_Contact_First_Name__c": "Ada",
        "Partner_Contact_Last_Name__c": "Lovelace", "Partner_Contact_Email__c": "ada@contoso-partner.example",
        "Partner_Contact_Phone__c": "+353 1 555 0100", "Microsoft_Solutions__c": "SOL-12345-ABC",
        "How_can_Microsoft_help__c": "Proof of concept or demo",
        "Description": "Pilot of an AI assistant; needs Microsoft's help with a proof of concept",
        "Customer_Contact_First_Name__c": "Sean", "Customer_Contact_Last_Name__c": "Murphy",
        "Customer_Contact_Email__c": "sean@fabrikam.example", "Customer_Contact_Phone__c": "+353 1 555 0199",
        "Customer_Consent_To_Share__c": true
    });
    if let Value::Object(m) = &mut deal {
        m.remove("Customer_Country__c");
    }
    let created = st
        .create_salesforce_opportunity(deal)
        .map_err(|e| step(&format!("create a Salesforce opportunity: {e}")))?;
    let new_id = created["Id"].as_str().unwrap_or_default().to_owned();
    say(&format!(
        "\n▶ a seller creates Salesforce opportunity {new_id}, flagged to sync and asking Microsoft for a proof of concept — but forgets the customer's country"
    ));
    demo.cycle(
        say,
        "cycle 5: the deal is checked before anything is sent",
        &mut report,
    )
    .await?;
    let shown = st.salesforce_opportunity(&new_id).unwrap_or_default();
    say(&format!(
        "  the seller sees on the opportunity: {}",
        shown["Partner_Center_Sync_Error__c"]
            .as_str()
            .unwrap_or("(nothing)")
    ));
    st.edit_salesforce(&new_id, json!({"Customer_Country__c": "Ireland"}))
        .map_err(|e| step(&format!("fix the country: {e}")))?;
    say("\n▶ the seller fills in the country: \"Ireland\"");
    demo.cycle(
        say,
        "cycle 6: a co-sell deal is created in Partner Center and Microsoft is invited",
        &mut report,
    )
    .await?;
    // Microsoft's sellers take the co-sell request.
    let microsoft = demo.referrals_where(|r| {
        r["target"][0]["id"] == "msft" && r["externalReferenceId"] == new_id.as_str()
    });
    if let Some(m) = microsoft.first() {
        st.microsoft_respond(m, true)
            .map_err(|e| step(&format!("Microsoft accepts: {e}")))?;
        say("\n▶ Microsoft's sellers accept the co-sell request in their CRM");
    }
    demo.cycle(
        say,
        "cycle 7: the referral id is on the opportunity, and Microsoft's answer with its MSX id",
        &mut report,
    )
    .await?;
    let shown = st.salesforce_opportunity(&new_id).unwrap_or_default();
    say(&format!(
        "  the seller sees on the opportunity: Microsoft engagement {}, Microsoft CRM id {}",
        shown["Microsoft_Engagement__c"].as_str().unwrap_or("-"),
        shown["Microsoft_CRM_Identifier__c"].as_str().unwrap_or("-")
    ));
    report.co_sell_created = st
        .salesforce_opportunity(&new_id)
        .and_then(|o| o["Referral_Identifier__c"].as_str().map(str::to_owned));

    // Nobody answers a referral for 15 days.
    let expire = demo
        .referrals_where(|r| r["direction"] == "Incoming" && r["status"] == "New")
        .into_iter()
        .next();
    demo.sim
        .clock()
        .advance(Duration::from_secs(15 * 24 * 3600));
    say("\n▶ fifteen days pass without an answer to the other received referrals");
    demo.cycle(
        say,
        "cycle 8: past the 14-day deadline: expired, and their opportunities closed as expired",
        &mut report,
    )
    .await?;
    report.expired = expire;

    report.final_table = final_table(&demo);
    say(&format!(
        "\n── final state per referral\n{}",
        report.final_table
    ));
    say(
        "\nEvery write was an upsert keyed by the referral id, so replaying any of them is harmless;\n\
         see `cosell-sync status` and `cosell-sync referrals show ID` on a real state store.",
    );
    demo.sim.shutdown().await;
    Ok(report)
}

fn final_table(demo: &Demo) -> String {
    let st = demo.sim.state();
    let mut rows = Vec::new();
    let mut ids = st.referral_ids();
    ids.sort();
    for id in ids {
        let Some(r) = st.referral(&id) else { continue };
        // Microsoft's own side of a co-sell engagement is not the partner's deal.
        if r["target"][0]["id"] == "msft" {
            continue;
        }
        let sf_opp = st.salesforce_opportunity_by_referral(&id);
        let sf = sf_opp
            .as_ref()
            .and_then(|o| o["StageName"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "-".into());
        let shown = |field: &str, chars: usize| {
            sf_opp
                .as_ref()
                .and_then(|o| o[field].as_str())
                .map(|v| v.chars().take(chars).collect::<String>())
                .unwrap_or_else(|| "-".into())
        };
        let (answer_by, microsoft) = (
            shown("Answer_By__c", 16).replace('T', " "),
            shown("Microsoft_Engagement__c", 20),
        );
        let dv = st
            .dynamics_opportunity_by_referral(&id)
            .map(|o| format!("{}/{}", o["statecode"], o["statuscode"]))
            .unwrap_or_else(|| "-".into());
        let name: String = r["name"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(34)
            .collect();
        rows.push(vec![
            id.chars().take(8).collect::<String>(),
            r["direction"].as_str().unwrap_or_default().to_lowercase(),
            format!(
                "{}/{}",
                r["status"].as_str().unwrap_or_default(),
                r["substatus"].as_str().unwrap_or_default()
            ),
            sf,
            dv,
            answer_by,
            microsoft,
            name,
        ]);
    }
    table(
        &[
            "REFERRAL",
            "DIRECTION",
            "PARTNER CENTER",
            "SALESFORCE",
            "DYNAMICS (state/status)",
            "ANSWER BY (UTC)",
            "MICROSOFT",
            "NAME",
        ],
        &rows,
    )
}
