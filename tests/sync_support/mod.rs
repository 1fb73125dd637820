//! Harness for end-to-end sync tests: the simulator on 127.0.0.1:0, the
//! daemon's own settings pointing at it, a fresh state store per test.
#![allow(dead_code)]

use std::sync::Arc;

use cosell_sync::config::{self, Settings};
use cosell_sync::sim::{Api, Counters, SimHandle, SimOptions, Simulator};
use cosell_sync::store::{CrmKind, Store};
use cosell_sync::sync::setup::build_engine;
use cosell_sync::sync::{CycleOptions, CycleSummary, Engine, Failpoint};
use serde_json::Value;

pub struct Harness {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    pub store: Arc<Store>,
}

/// Options for a small, quiet simulator: `referrals` seeded referrals, no
/// seeded CRM opportunities unless asked.
pub fn options(referrals: usize, crm_opportunities: usize) -> SimOptions {
    SimOptions {
        referrals,
        crm_opportunities: Some(crm_opportunities),
        ..Default::default()
    }
}

pub async fn harness(opts: SimOptions) -> Harness {
    harness_with(opts, &[]).await
}

/// `overrides`: extra environment settings, e.g. ("COSELL_SYNC__SALESFORCE__ENABLED", "false").
pub async fn harness_with(opts: SimOptions, overrides: &[(&str, &str)]) -> Harness {
    let sim = Simulator::start(opts).await.expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let mut sources = cosell_sync::simulate::daemon_sources(&sim, dir.path()).unwrap();
    sources
        .env
        .insert("COSELL_SYNC__SERVER__ENABLED".into(), "false".into());
    for (k, v) in overrides {
        sources.env.insert((*k).to_owned(), (*v).to_owned());
    }
    let settings = config::load(&sources).expect("the simulator's config loads");
    let store = Arc::new(Store::open(&settings.state.path).unwrap());
    Harness {
        sim,
        dir,
        settings,
        store,
    }
}

impl Harness {
    pub fn engine(&self) -> Engine {
        build_engine(
            &self.settings,
            self.store.clone(),
            cosell_sync::simulate::clock(&self.sim),
        )
        .expect("engine")
    }

    pub fn engine_with_failpoint(&self, f: Failpoint) -> Engine {
        self.engine().with_failpoint(f)
    }

    /// Runs one cycle that stops at failpoint `point` the first time it is
    /// reached, as `kill -9` would there; fails the test if it is not reached.
    pub async fn crash_once_at(&self, point: &'static str) {
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = fired.clone();
        let engine = self.engine_with_failpoint(Arc::new(move |name: &str| {
            name == point && !f.swap(true, std::sync::atomic::Ordering::SeqCst)
        }));
        let result = engine.run_cycle(&CycleOptions::default()).await;
        assert!(
            fired.load(std::sync::atomic::Ordering::SeqCst),
            "{point} was reached"
        );
        assert!(result.is_err(), "the cycle stopped at {point}");
    }

    pub async fn cycle(&self) -> CycleSummary {
        self.engine()
            .run_cycle(&CycleOptions::default())
            .await
            .expect("cycle runs")
    }

    /// Cycles until one makes no remote write (at most `max`).
    pub async fn settle(&self, max: usize) -> Vec<CycleSummary> {
        let mut out = Vec::new();
        for _ in 0..max {
            let s = self.cycle().await;
            let quiet = s.writes() == 0 && s.pending_effects == 0;
            out.push(s);
            if quiet {
                break;
            }
        }
        out
    }

    /// [`settle`](Self::settle), asserting that the last cycle had nothing
    /// left to write or to send.
    pub async fn settle_quietly(&self, max: usize) -> CycleSummary {
        let last = self.settle(max).await.pop().expect("at least one cycle");
        assert!(
            last.writes() == 0 && last.pending_effects == 0,
            "settled: {}",
            last.one_line()
        );
        last
    }

    pub fn referral(&self, id: &str) -> Value {
        self.sim
            .state()
            .referral(id)
            .expect("referral exists in the simulator")
    }

    pub fn status(&self, id: &str) -> (String, String) {
        let r = self.referral(id);
        (
            r["status"].as_str().unwrap_or_default().to_owned(),
            r["substatus"].as_str().unwrap_or_default().to_owned(),
        )
    }

    pub fn sf(&self, referral_id: &str) -> Option<Value> {
        self.sim
            .state()
            .salesforce_opportunity_by_referral(referral_id)
    }

    pub fn dv(&self, referral_id: &str) -> Option<Value> {
        self.sim
            .state()
            .dynamics_opportunity_by_referral(referral_id)
    }

    pub fn counters(&self) -> Counters {
        self.sim.state().counters()
    }

    /// Inbound referrals the simulator holds in New/Pending or New/Received.
    pub fn received_inbound(&self) -> Vec<String> {
        let st = self.sim.state();
        st.referral_ids()
            .into_iter()
            .filter(|id| {
                let r = st.referral(id).unwrap_or_default();
                r["direction"] == "Incoming" && r["status"] == "New"
            })
            .collect()
    }

    /// A received inbound referral linked in Salesforce, accepted there by a
    /// seller's stage move a minute later and settled: (referral id,
    /// Opportunity id).
    pub async fn accept_a_received_deal_in_salesforce(&self) -> (String, String) {
        self.settle(6).await;
        let id = self
            .received_inbound()
            .into_iter()
            .find(|id| self.sf(id).is_some())
            .expect("a received referral linked in Salesforce");
        let opp = self.sf(&id).unwrap()["Id"].as_str().unwrap().to_owned();
        self.sim.clock().advance(std::time::Duration::from_secs(60));
        self.sim
            .state()
            .set_sf_stage(&opp, "Qualification")
            .unwrap();
        self.settle(6).await;
        assert_eq!(self.status(&id).0, "Active", "accepted");
        (id, opp)
    }

    /// The same in Dynamics 365, accepted by a move to status reason
    /// In Progress: (referral id, opportunity id).
    pub async fn accept_a_received_deal_in_dynamics(&self) -> (String, String) {
        self.settle(6).await;
        let id = self
            .received_inbound()
            .into_iter()
            .find(|id| self.dv(id).is_some())
            .expect("a received referral linked in Dynamics");
        let opp = self.dv(&id).unwrap()["opportunityid"]
            .as_str()
            .unwrap()
            .to_owned();
        self.sim.clock().advance(std::time::Duration::from_secs(60));
        self.sim
            .state()
            .edit_dynamics(&opp, serde_json::json!({"statuscode": 1}))
            .unwrap();
        self.settle(6).await;
        assert_eq!(self.status(&id).0, "Active", "accepted");
        (id, opp)
    }

    /// `api` answers every PATCH with 503 (no Retry-After) until the
    /// returned fault is removed.
    pub fn refuse_patches(&self, api: Api) -> u64 {
        self.sim.state().add_fault(
            cosell_sync::sim::FaultRule::new(
                api,
                cosell_sync::sim::FaultKind::ServiceUnavailable {
                    retry_after_secs: None,
                },
            )
            .operation("PATCH"),
        )
    }

    pub fn link_crm_id(&self, crm: CrmKind, referral_id: &str) -> Option<String> {
        self.store
            .read(|r| r.link_by_referral(crm, referral_id))
            .unwrap()
            .map(|l| l.crm_id)
    }
}

/// Remote writes the simulator received (creates, updates, closes, batches).
pub fn write_calls(c: &Counters) -> u64 {
    c.per_operation
        .iter()
        .filter(|(api, _)| **api != Api::Entra)
        .flat_map(|(_, ops)| ops.iter())
        .filter(|(op, _)| {
            let write = ["POST ", "PATCH ", "PUT ", "DELETE "]
                .iter()
                .any(|m| op.starts_with(m));
            write && !op.ends_with("token") && !op.ends_with(" query")
        })
        .map(|(_, n)| *n)
        .sum()
}
