//! Dataverse account upkeep: a backfill of N inbound referrals into Dynamics
//! alone, every referral's customer new to the org (a name and DUNS number
//! no account carries), so each write call must look its customers up and
//! create their accounts. Calls per API against the fewest possible, CPU,
//! wall and peak RSS, measured as the main backfill is (`super::Rig`, a
//! child `sync --once` when the engine binary is given).
//!
//! The minimum (BENCHMARKS.md, "Dataverse account upkeep"):
//! ceil(N / page size) Partner Center pages
//! + ceil(N / batch size) opportunity `$batch` calls
//! + ceil(filter bytes of all customers / (32,768 − the URL without its filter))
//!   account look-ups (the Web API's longest URL; each customer's terms as the
//!   DUNS-then-name-and-postal-code rule needs them, percent-encoded)
//! + ceil(new customers / 1,000) account-create `$batch` calls (the most
//!   requests one `$batch` carries).
//!
//! Quotes count as one character in that minimum (they may travel
//! unescaped), though the URL parser escapes them: the engine's lookups
//! carry a little less than the minimum assumes. Its account creates travel
//! in the deals' own change sets, so they cost no `$batch` of their own.

use serde::Serialize;
use serde_json::json;

use super::phases::Phase;
use super::{
    BenchError, BenchOptions, Calls, Crms, MinimumCheck, RSS_BUDGET_MIB, Rig, TargetCheck,
    backfill_in_process, ceil_div, io, measure, phases, round3,
};
use crate::sim::{Api, PatchOp};

/// The Web API's longest URL (Microsoft: "Compose HTTP requests", 32 KB).
pub const MAX_URL_CHARS: u64 = 32_768;
/// Requests in one `$batch` at most.
pub const MAX_BATCH_REQUESTS: u64 = 1_000;
/// The DUNS column of the simulator's accounts.
const DUNS_COLUMN: &str = "new_dunsnumber";

#[derive(Debug, Clone, Serialize)]
pub struct AccountUpkeepReport {
    pub referrals: usize,
    /// Distinct customers, none of them an account in the org beforehand.
    pub new_customers: usize,
    pub calls: Calls,
    /// Per term of the minimum, and all Dataverse + Partner Center calls.
    pub minimum: Vec<MinimumCheck>,
    /// Dataverse calls that are neither `$batch` nor an account look-up.
    pub other_dynamics_calls: u64,
    pub wall_secs: f64,
    pub cpu_secs: f64,
    pub peak_rss_mib: f64,
    pub peak_rss_scope: String,
    /// CPU time of the simulator's thread meanwhile: what the simulated
    /// services cost, told apart from the engine's.
    pub simulator_cpu_secs: f64,
    /// Accounts the backfill created (the simulator's count).
    pub accounts_created: usize,
}

/// Percent-encoded length as a query value: unreserved characters and
/// OData's `'()` `,` `:` travel as they are, everything else as `%XX` per byte.
fn encoded_len(s: &str) -> u64 {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~'(),:".contains(&b) {
                1
            } else {
                3
            }
        })
        .sum()
}

/// The `$filter` terms that find one customer's account: its DUNS number,
/// or its name and postal code (joined to the next customer's by ` or `).
fn customer_terms(name: &str, postal: Option<&str>, duns: &str) -> String {
    let postal = match postal {
        Some(p) => format!("address1_postalcode eq '{p}'"),
        None => "address1_postalcode eq null".into(),
    };
    format!("{DUNS_COLUMN} eq '{duns}' or (name eq '{name}' and {postal}) or ")
}

/// One launcher per size, for the child backfills: started while the
/// benchmark is small (see `measure::Launcher`).
pub(super) fn launchers(opts: &BenchOptions) -> Result<Vec<measure::Launcher>, BenchError> {
    match &opts.engine_binary {
        Some(_) => opts
            .sizes
            .iter()
            .map(|_| measure::Launcher::spawn().map_err(io("starting /bin/sh")))
            .collect(),
        None => Ok(Vec::new()),
    }
}

/// The scenario at every size of `opts`.
pub(super) async fn run_all(
    opts: &BenchOptions,
    launchers: Vec<measure::Launcher>,
    say: &mut impl FnMut(&str),
) -> Result<Vec<AccountUpkeepReport>, BenchError> {
    let mut launchers = launchers.into_iter();
    let mut out = Vec::new();
    for &n in &opts.sizes {
        out.push(run(opts, n, launchers.next(), say).await?);
    }
    Ok(out)
}

async fn run(
    opts: &BenchOptions,
    n: usize,
    launcher: Option<measure::Launcher>,
    say: &mut impl FnMut(&str),
) -> Result<AccountUpkeepReport, BenchError> {
    // Dynamics alone: the figures are Dataverse's and Partner Center's.
    let rig = Rig::new(opts.seed, Crms::Dynamics).await?;
    let st = rig.handle().state().clone();
    say(&format!(
        "dynamics account upkeep {n}: seeding referrals of new customers"
    ));
    let ids = st.insert_referrals(n);
    let mut filter_bytes = 0;
    for (i, id) in ids.iter().enumerate() {
        let name = format!("Upkeep Customer {i:06}");
        let duns = format!("{:09}", 800_000_000 + i);
        let doc = st.edit_referral(
            id,
            &[
                PatchOp::replace("/customerProfile/name", name.clone()),
                PatchOp::replace(
                    "/customerProfile/ids",
                    json!([{"profileType": "Duns", "id": duns}]),
                ),
            ],
        )?;
        let postal = doc
            .pointer("/customerProfile/address/postalCode")
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|p| !p.is_empty());
        filter_bytes += encoded_len(&customer_terms(&name, postal, &duns));
    }
    let accounts_before = st.dynamics_rows("accounts").len();

    say(&format!("dynamics account upkeep {n}: backfill"));
    st.reset_counters();
    let sim0 = rig.sim.cpu();
    let (wall, cpu, peak_kib, scope, _) = match (&opts.engine_binary, launcher) {
        (Some(bin), Some(launcher)) => {
            let run = phases::run_child(&rig, bin, launcher, Phase::Backfill).await?;
            (
                run.wall,
                run.cpu,
                run.max_rss_kib,
                "the engine process alone (its own process, ru_maxrss)".to_owned(),
                run.created(),
            )
        }
        _ => backfill_in_process(&rig).await?,
    };
    let simulator_cpu = rig.sim.cpu().saturating_sub(sim0);
    let calls = Calls::of(&st.counters());
    let accounts_created = st
        .dynamics_rows("accounts")
        .len()
        .saturating_sub(accounts_before);

    let nn = n as u64;
    let page_size = u64::from(rig.settings.partner_center.page_size);
    let batch_size = u64::from(rig.settings.dynamics.batch_size);
    let base = rig
        .settings
        .dynamics
        .base_url
        .as_str()
        .trim_end_matches('/');
    let fixed = encoded_len(&format!(
        "{base}/api/data/{}/accounts?$filter=",
        rig.settings.dynamics.api_version
    ));
    let new_customers = n as u64;
    let pc_min = ceil_div(nn, page_size);
    let opp_min = ceil_div(nn, batch_size);
    let lookup_min = ceil_div(filter_bytes, MAX_URL_CHARS.saturating_sub(fixed).max(1));
    let create_min = ceil_div(new_customers, MAX_BATCH_REQUESTS);

    let pc = calls.operation(Api::PartnerCenter, "GET list");
    let batches = calls.operation(Api::Dynamics, "POST $batch");
    let lookups = calls.operation(Api::Dynamics, "GET accounts");
    let minimum = vec![
        MinimumCheck::new("partner center listing pages", pc_min, pc),
        MinimumCheck::new(
            "dynamics $batch calls (opportunities and account creates)",
            opp_min + create_min,
            batches,
        ),
        MinimumCheck::new("dynamics account look-ups", lookup_min, lookups),
        MinimumCheck::new(
            "all calls to Partner Center and Dataverse",
            pc_min + opp_min + lookup_min + create_min,
            calls.partner_center + calls.dynamics,
        ),
    ];
    rig.stop().await;
    Ok(AccountUpkeepReport {
        referrals: n,
        new_customers: n,
        other_dynamics_calls: calls.dynamics.saturating_sub(batches + lookups),
        minimum,
        wall_secs: round3(wall.as_secs_f64()),
        cpu_secs: round3(cpu.as_secs_f64()),
        peak_rss_mib: round3(peak_kib as f64 / 1024.0),
        peak_rss_scope: scope,
        simulator_cpu_secs: round3(simulator_cpu.as_secs_f64()),
        accounts_created,
        calls,
    })
}

/// The targets rows: all calls within 1.1 x the minimum, and the peak RSS
/// within the budget.
pub(super) fn targets(reports: &[AccountUpkeepReport]) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    for r in reports {
        if let Some(all) = r.minimum.last() {
            out.push(TargetCheck {
                target: format!(
                    "dynamics account upkeep: calls <= 1.1 x minimum (backfill of {} new customers)",
                    r.referrals
                ),
                measured: format!(
                    "{} / {} = {:.3}; {:.2} s CPU (simulator {:.2} s)",
                    all.measured, all.minimum, all.ratio, r.cpu_secs, r.simulator_cpu_secs
                ),
                held: all.ratio <= 1.1,
            });
        }
        // A backfill like the others: the memory budget holds here too.
        out.push(TargetCheck {
            target: format!(
                "dynamics account upkeep (backfill of {} new customers): peak RSS under {RSS_BUDGET_MIB} MiB",
                r.referrals
            ),
            measured: format!("{:.1} MiB; {}", r.peak_rss_mib, r.peak_rss_scope),
            held: r.peak_rss_mib > 0.0 && r.peak_rss_mib < RSS_BUDGET_MIB,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(peak_rss_mib: f64) -> AccountUpkeepReport {
        AccountUpkeepReport {
            referrals: 10_000,
            new_customers: 10_000,
            calls: Calls::default(),
            minimum: vec![MinimumCheck {
                what: "all calls to Partner Center and Dataverse".into(),
                minimum: 252,
                measured: 252,
                ratio: 1.0,
                target: true,
            }],
            other_dynamics_calls: 2,
            wall_secs: 2.0,
            cpu_secs: 1.0,
            peak_rss_mib,
            peak_rss_scope: "its own process".into(),
            simulator_cpu_secs: 0.5,
            accounts_created: 10_000,
        }
    }

    #[test]
    fn the_upkeep_backfill_is_held_to_the_memory_budget() {
        let rss = |peak| {
            targets(&[report(peak)])
                .into_iter()
                .find(|t| t.target.contains("peak RSS"))
                .map(|t| t.held)
        };
        assert_eq!(rss(31.9), Some(true));
        assert_eq!(rss(32.4), Some(false));
        // Not measured is not within the budget.
        assert_eq!(rss(0.0), Some(false));
        let calls = targets(&[report(31.0)]);
        assert!(
            calls
                .iter()
                .any(|t| t.target.contains("1.1 x minimum") && t.held)
        );
    }

    #[test]
    fn filter_terms_are_counted_as_they_travel() {
        assert_eq!(encoded_len("a b'(x)"), 9);
        let t = customer_terms("Upkeep Customer 000001", Some("98052"), "800000001");
        assert_eq!(
            t,
            "new_dunsnumber eq '800000001' or (name eq 'Upkeep Customer 000001' and address1_postalcode eq '98052') or "
        );
        // 14 spaces become `%20`.
        assert_eq!(encoded_len(&t), t.len() as u64 + 2 * 14);
    }
}
