//! The engine's phases, each run as one cycle in its own process so that its
//! CPU time and peak RSS are the engine's alone: the backfill, the cycle
//! that reads back the echo of the backfill's writes, a quiet cycle past the
//! overlap, a churn cycle and a full reconcile.
//!
//! The child is `cosell-sync bench-cycle` (a hidden command): what
//! `sync --once` runs, on the simulator's clock. The benchmark moves that
//! clock past the poll overlap and between churn rounds; an engine on the
//! machine's clock would then set its cursor minutes behind the simulator's
//! timestamps and re-read what it already has.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde::Serialize;
use serde_json::Value;

use super::{BenchError, Calls, Rig, io, measure, round3};
use crate::config::Settings;
use crate::sim::{Api, LoggedRequest};
use crate::store::Store;
use crate::sync::setup::build_engine;
use crate::sync::{CycleOptions, CycleSummary};

/// One engine process's cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The first cycle: no cursor, every referral since 2000-01-01.
    Backfill,
    /// The next cycle: reads back the echo of the backfill's writes from
    /// the CRMs, and Partner Center again through the overlap.
    EchoRead,
    /// Past the overlap, nothing changed.
    Quiet,
    /// A share of the tracked referrals changed on each side.
    Churn,
    /// Everything re-read: every referral and every linked opportunity.
    FullReconcile,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Backfill,
        Phase::EchoRead,
        Phase::Quiet,
        Phase::Churn,
        Phase::FullReconcile,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Phase::Backfill => "backfill",
            Phase::EchoRead => "echo-read cycle",
            Phase::Quiet => "quiet cycle",
            Phase::Churn => "churn cycle",
            Phase::FullReconcile => "full reconcile",
        }
    }

    /// Whether the phase reads every tracked referral (so its CPU per
    /// referral is a figure that must not grow with N).
    pub fn reads_all(self) -> bool {
        matches!(
            self,
            Phase::Backfill | Phase::EchoRead | Phase::FullReconcile
        )
    }
}

/// One phase, measured in its own process.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub phase: Phase,
    /// Referrals tracked when it ran (the backfill: the referrals it brings in).
    pub tracked: usize,
    /// Records changed per side before it ran (churn only).
    pub changed_per_side: usize,
    /// Every call of the process, its sign-in and metadata included.
    pub calls: Calls,
    /// Listing calls per source (first pages and follow-on pages): Partner
    /// Center list pages, Salesforce queries of Opportunity, Dataverse reads
    /// of `opportunities`; from the simulator's request log, so that a
    /// process's start-up reads (the Salesforce stage list) are not counted.
    pub listing_calls: BTreeMap<String, u64>,
    /// Remote writes the engine reports (created + updated + closed).
    pub writes: u64,
    pub wall_secs: f64,
    /// User + sys time of the engine process (`wait4` rusage).
    pub cpu_secs: f64,
    /// The part of `cpu_secs` spent in the kernel (`ru_stime`).
    pub sys_cpu_secs: f64,
    /// `cpu_secs` per tracked referral, in ms (phases that read them all).
    pub cpu_ms_per_referral: Option<f64>,
    /// The engine process's page faults served without I/O (`ru_minflt`):
    /// memory it touched for the first time or again after returning it.
    pub minor_faults: u64,
    /// The engine process's peak RSS (`ru_maxrss`).
    pub peak_rss_mib: f64,
    /// What the engine process wrote to storage (`ru_oublock`): the store's
    /// pages, in its WAL and copied back at checkpoints.
    pub written_mib: f64,
    /// `written_mib` per tracked referral, in KiB (phases that read them all).
    pub written_kib_per_referral: Option<f64>,
    /// CPU time of the simulator's thread meanwhile (in the benchmark's
    /// process): what the simulated services cost, so the wall time can be
    /// told apart from theirs.
    pub simulator_cpu_secs: f64,
    pub outcome: String,
    /// Opportunities created per CRM, from the cycle's summary.
    pub created: BTreeMap<String, u64>,
}

/// What the child printed and used.
pub(super) struct ChildRun {
    pub calls: Calls,
    pub listing_calls: BTreeMap<String, u64>,
    pub wall: Duration,
    pub cpu: Duration,
    pub sys_cpu: Duration,
    pub minor_faults: u64,
    pub simulator_cpu: Duration,
    pub max_rss_kib: u64,
    pub written_bytes: u64,
    pub summary: Value,
}

impl ChildRun {
    pub(super) fn created(&self) -> BTreeMap<String, u64> {
        self.summary["crms"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, s)| (k.clone(), s["created"].as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn writes(&self) -> u64 {
        let side = |s: &Value| {
            ["created", "updated", "closed"]
                .iter()
                .map(|k| s[*k].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        side(&self.summary["partner_center"])
            + self.summary["crms"]
                .as_object()
                .map_or(0, |m| m.values().map(side).sum())
    }

    fn outcome(&self) -> String {
        let failed = |s: &Value| s["failed"].as_u64().unwrap_or(0);
        let crm_failed: u64 = self.summary["crms"]
            .as_object()
            .map_or(0, |m| m.values().map(failed).sum());
        let empty = |k: &str| self.summary[k].as_array().is_none_or(Vec::is_empty);
        let clean = failed(&self.summary["partner_center"]) + crm_failed == 0
            && self.summary["quarantined"].as_u64().unwrap_or(0) == 0
            && empty("paused")
            && empty("errors");
        if clean { "clean" } else { "degraded" }.to_owned()
    }

    pub(super) fn report(
        &self,
        phase: Phase,
        tracked: usize,
        changed_per_side: usize,
    ) -> PhaseReport {
        let cpu_secs = round3(self.cpu.as_secs_f64());
        PhaseReport {
            phase,
            tracked,
            changed_per_side,
            listing_calls: self.listing_calls.clone(),
            calls: self.calls.clone(),
            writes: self.writes(),
            wall_secs: round3(self.wall.as_secs_f64()),
            cpu_secs,
            sys_cpu_secs: round3(self.sys_cpu.as_secs_f64()),
            minor_faults: self.minor_faults,
            cpu_ms_per_referral: (phase.reads_all() && tracked > 0)
                .then(|| round3(self.cpu.as_secs_f64() * 1000.0 / tracked as f64)),
            peak_rss_mib: round3(self.max_rss_kib as f64 / 1024.0),
            written_mib: round3(self.written_bytes as f64 / (1024.0 * 1024.0)),
            written_kib_per_referral: (phase.reads_all() && tracked > 0)
                .then(|| round3(self.written_bytes as f64 / 1024.0 / tracked as f64)),
            simulator_cpu_secs: round3(self.simulator_cpu.as_secs_f64()),
            outcome: self.outcome(),
            created: self.created(),
        }
    }
}

/// Runs one cycle as `bin bench-cycle` in a process exec'd from `launcher`,
/// on the simulator's clock as it reads now.
pub(super) async fn run_child(
    rig: &Rig,
    bin: &Path,
    launcher: measure::Launcher,
    phase: Phase,
) -> Result<ChildRun, BenchError> {
    let name = phase.label().replace(' ', "-");
    let out_path = rig.dir.path().join(format!("{name}.json"));
    let err_path = rig.dir.path().join(format!("{name}.log"));
    let script_path = rig.dir.path().join(format!("{name}.sh"));
    let q = |p: &Path| measure::shell_quote(&p.display().to_string());
    let mut script = String::new();
    for (k, v) in &rig.env {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(BenchError::Failed(format!(
                "environment variable {k:?} cannot be passed through the shell"
            )));
        }
        script.push_str(&format!("export {k}={}\n", measure::shell_quote(v)));
    }
    // The simulator's clock moves with real time from where the benchmark
    // set it: the child adds the same offset to the machine's clock.
    let offset_ms = (rig.handle().clock().now() - Utc::now()).num_milliseconds();
    script.push_str(&format!(
        "exec {} --config {} --log-level warn bench-cycle --clock-offset-ms={offset_ms}{} </dev/null >{} 2>{}\n",
        q(bin),
        q(&rig.config_file),
        if phase == Phase::FullReconcile {
            " --full"
        } else {
            ""
        },
        q(&out_path),
        q(&err_path)
    ));
    std::fs::write(&script_path, script).map_err(io("phase script"))?;
    let st = rig.handle().state();
    st.reset_counters();
    st.clear_request_log();
    let (t0, sim0) = (Instant::now(), rig.sim.cpu());
    let pid = launcher
        .exec(&script_path)
        .map_err(io(format!("starting {}", bin.display())))?;
    let usage = tokio::task::spawn_blocking(move || measure::wait_child(pid))
        .await
        .map_err(|e| BenchError::Failed(format!("waiting for the {}: {e}", phase.label())))?
        .map_err(io(format!("waiting for the {}", phase.label())))?;
    let wall = t0.elapsed();
    let simulator_cpu = rig.sim.cpu().saturating_sub(sim0);
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    if usage.exit_code != Some(0) {
        let log = std::fs::read_to_string(&err_path).unwrap_or_default();
        let tail: String = log.lines().rev().take(10).collect::<Vec<_>>().join("\n");
        return Err(BenchError::Failed(format!(
            "the {} (`{} bench-cycle`) exited with {:?}:\n{stdout}\n{tail}",
            phase.label(),
            bin.display(),
            usage.exit_code
        )));
    }
    Ok(ChildRun {
        calls: Calls::of(&st.counters()),
        listing_calls: listing_calls(&st.request_log()),
        wall,
        cpu: usage.cpu,
        sys_cpu: usage.sys_cpu,
        minor_faults: usage.minor_faults,
        simulator_cpu,
        max_rss_kib: usage.max_rss_kib,
        written_bytes: usage.written_bytes,
        summary: serde_json::from_str(&stdout).unwrap_or(Value::Null),
    })
}

/// Listing calls per source in a request log (see
/// [`PhaseReport::listing_calls`]).
fn listing_calls(log: &[LoggedRequest]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = ["partner_center", "salesforce", "dynamics"]
        .into_iter()
        .map(|s| (s.to_owned(), 0))
        .collect();
    for r in log {
        let source = match (r.api, r.operation.as_str()) {
            (Api::PartnerCenter, "GET list") => "partner_center",
            (Api::Dynamics, "GET opportunities") => "dynamics",
            (Api::Salesforce, "GET query/more") => "salesforce",
            (Api::Salesforce, "GET query") if soql_reads(&r.uri, "Opportunity") => "salesforce",
            _ => continue,
        };
        *out.entry(source.to_owned()).or_default() += 1;
    }
    out
}

/// Whether the SOQL query in `uri` (its `q` parameter) reads `object`.
fn soql_reads(uri: &str, object: &str) -> bool {
    let Some((_, query)) = uri.split_once('?') else {
        return false;
    };
    let Some((_, q)) = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "q") else {
        return false;
    };
    let words: Vec<&str> = q
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .any(|w| w[0].eq_ignore_ascii_case("from") && w[1].eq_ignore_ascii_case(object))
}

/// The child's side (`cosell-sync bench-cycle`): one cycle as `sync --once`
/// runs it, on the machine's clock plus `clock_offset` (the simulator's).
pub async fn engine_cycle(
    settings: &Settings,
    full: bool,
    clock_offset: TimeDelta,
) -> Result<CycleSummary, BenchError> {
    let store = Arc::new(Store::open(&settings.state.path)?);
    let engine = build_engine(settings, store, Arc::new(move || Utc::now() + clock_offset))?;
    let opts = CycleOptions {
        full,
        ..CycleOptions::default()
    };
    Ok(engine.run_cycle(&opts).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_opportunity_queries_are_salesforce_listings() {
        let q = |soql: &str| {
            format!(
                "/services/data/v62.0/query?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("q", soql)
                    .finish()
            )
        };
        assert!(soql_reads(
            &q(
                "SELECT Id, (SELECT ContactId FROM OpportunityContactRoles) FROM Opportunity WHERE SystemModstamp >= 2025-01-01T00:00:00Z"
            ),
            "Opportunity"
        ));
        assert!(soql_reads(&q("select Id from opportunity"), "Opportunity"));
        assert!(!soql_reads(
            &q("SELECT ApiName, IsClosed FROM OpportunityStage"),
            "Opportunity"
        ));
        assert!(!soql_reads(
            &q("SELECT Id FROM Account WHERE Name IN ('Opportunity')"),
            "Opportunity"
        ));
        assert!(!soql_reads("/services/data/v62.0/query", "Opportunity"));
    }
}
