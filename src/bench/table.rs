//! The report as Markdown tables (readable in a terminal, pasted into
//! BENCHMARKS.md as is).

use std::fmt::Write;

use super::{BenchReport, Calls, SizeReport};

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", head.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        head.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out.push('\n');
}

fn calls_cell(c: &Calls) -> String {
    format!(
        "{} (PC {}, SF {}, DV {}; sign-in {})",
        c.business(),
        c.partner_center,
        c.salesforce,
        c.dynamics,
        c.entra
    )
}

fn ops_cell(c: &Calls) -> String {
    c.operations
        .iter()
        .filter(|(k, _)| !k.starts_with("entra "))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn listings_cell(l: &std::collections::BTreeMap<String, u64>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first two cells of a row about one size: its N and its CRMs.
fn key(z: &SizeReport) -> Vec<String> {
    vec![z.referrals.to_string(), z.crms.label().to_owned()]
}

/// Every figure of the report, counts and ratios first, times second.
pub fn render_table(r: &BenchReport) -> String {
    let mut o = String::new();
    let s = &r.settings;
    let _ = writeln!(
        o,
        "cosell-sync {} ({} build), {} CPUs: {}; started {}\n",
        r.version,
        r.build,
        r.machine.cpus,
        r.machine.cpu_model,
        r.started_at.format("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(
        o,
        "Page size {}, Salesforce collection {}, Dynamics batch {}; interval {} s, overlap {} s; backfill: {}\n",
        s.partner_center_page_size,
        s.salesforce_collection_size,
        s.dynamics_batch_size,
        s.interval_secs,
        s.overlap_secs,
        s.backfill_process
    );

    o.push_str("### Backfill: calls against the minimum\n\n");
    let mut rows = Vec::new();
    for z in &r.sizes {
        for m in &z.backfill.minimum {
            rows.push(vec![
                z.referrals.to_string(),
                z.crms.label().to_owned(),
                m.what.clone(),
                m.minimum.to_string(),
                m.measured.to_string(),
                format!("{:.3}", m.ratio),
            ]);
        }
    }
    table(
        &mut o,
        &["N", "CRMs", "calls", "minimum", "measured", "ratio"],
        &rows,
    );
    let rows: Vec<Vec<String>> = r
        .sizes
        .iter()
        .map(|z| {
            let b = &z.backfill;
            let mut row = key(z);
            row.extend([
                calls_cell(&b.calls),
                b.overhead_calls.to_string(),
                b.created
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                format!(
                    "{} cycles, {}",
                    b.follow_up_cycles,
                    calls_cell(&b.follow_up_calls)
                ),
            ]);
            row
        })
        .collect();
    table(
        &mut o,
        &[
            "N",
            "CRMs",
            "calls (first cycle)",
            "outside the formula",
            "created",
            "follow-up until quiet",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = r
        .sizes
        .iter()
        .map(|z| {
            let mut row = key(z);
            row.push(ops_cell(&z.backfill.calls));
            row
        })
        .collect();
    table(
        &mut o,
        &["N", "CRMs", "calls per operation (first cycle)"],
        &rows,
    );
    let rows: Vec<Vec<String>> = r
        .sizes
        .iter()
        .map(|z| {
            let b = &z.backfill;
            let mut row = key(z);
            row.extend([
                format!("{:.2}", b.wall_secs),
                format!("{:.0}", b.referrals_per_sec),
                format!("{:.2}", b.cpu_secs),
                format!("{:.3}", b.cpu_secs * 1000.0 / z.referrals.max(1) as f64),
                format!("{:.1}", b.peak_rss_mib),
            ]);
            row
        })
        .collect();
    table(
        &mut o,
        &[
            "N",
            "CRMs",
            "wall s",
            "referrals/s",
            "CPU s (user+sys)",
            "CPU ms per referral",
            "peak RSS MiB",
        ],
        &rows,
    );

    let mut phases = Vec::new();
    let runs = r
        .sizes
        .iter()
        .map(|z| (z, key(z)))
        .chain(r.again.iter().map(|z| {
            let mut k = key(z);
            k[0].push_str(" (again)");
            (z, k)
        }));
    for (z, k) in runs {
        for p in &z.phases {
            let mut row = k.clone();
            row.extend([
                p.phase.label().to_owned(),
                calls_cell(&p.calls),
                listings_cell(&p.listing_calls),
                p.writes.to_string(),
                format!("{:.2}", p.wall_secs),
                format!("{:.2} ({:.2})", p.cpu_secs, p.sys_cpu_secs),
                p.cpu_ms_per_referral
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.3}")),
                format!("{:.1}", p.peak_rss_mib),
                p.minor_faults.to_string(),
                match p.written_kib_per_referral {
                    Some(k) => format!("{:.1} ({k:.1})", p.written_mib),
                    None => format!("{:.1}", p.written_mib),
                },
                format!("{:.2}", p.simulator_cpu_secs),
            ]);
            phases.push(row);
        }
    }
    if !phases.is_empty() {
        o.push_str("### Phases: each cycle in its own engine process\n\n");
        table(
            &mut o,
            &[
                "N",
                "CRMs",
                "phase",
                "calls",
                "listing calls",
                "writes",
                "wall s",
                "CPU s, user+sys (sys)",
                "CPU ms per referral",
                "peak RSS MiB",
                "page faults",
                "store written MiB (KiB per referral)",
                "simulator CPU s",
            ],
            &phases,
        );
    }

    o.push_str("### Steady state: nothing changed\n\n");
    let rows: Vec<Vec<String>> = r
        .sizes
        .iter()
        .map(|z| {
            let c = &z.steady;
            let mut row = key(z);
            row.extend([
                calls_cell(&c.calls),
                c.calls.writes.to_string(),
                listings_cell(&c.listing_calls),
                format!("{:.1}", c.wall_ms),
                format!("{:.1}", c.engine_cpu_ms),
                format!("{:.1}", c.process_cpu_ms),
            ]);
            row
        })
        .collect();
    table(
        &mut o,
        &[
            "tracked",
            "CRMs",
            "calls",
            "write calls",
            "listing calls",
            "wall ms",
            "engine CPU ms",
            "process CPU ms",
        ],
        &rows,
    );

    o.push_str("### Churn: a share changed on each side per cycle\n\n");
    let mut rows = Vec::new();
    for z in &r.sizes {
        for (i, c) in z.churn.iter().enumerate() {
            let mut row = key(z);
            row.extend([
                (i + 1).to_string(),
                format!("{} x {}", c.cycle.changed_per_side, z.crms.sides()),
                calls_cell(&c.cycle.calls),
                c.cycle.calls.writes.to_string(),
                format!(
                    "{} cycles, {}",
                    c.follow_up_cycles,
                    calls_cell(&c.follow_up_calls)
                ),
                format!("{:.3}", c.calls_per_change),
                format!("{:.1}", c.cycle.wall_ms),
                format!("{:.1}", c.cycle.engine_cpu_ms),
            ]);
            rows.push(row);
        }
    }
    table(
        &mut o,
        &[
            "tracked",
            "CRMs",
            "cycle",
            "changed",
            "calls",
            "write calls",
            "follow-up",
            "calls per change",
            "wall ms",
            "engine CPU ms",
        ],
        &rows,
    );
    let mut rows = Vec::new();
    for z in &r.sizes {
        if let Some(c) = z.churn.first() {
            let mut row = key(z);
            row.push(ops_cell(&c.cycle.calls));
            rows.push(row);
        }
    }
    table(
        &mut o,
        &["tracked", "CRMs", "calls per operation (first churn cycle)"],
        &rows,
    );

    o.push_str("### Scaling\n\n");
    let rows: Vec<Vec<String>> = r
        .scaling
        .iter()
        .map(|s| {
            vec![
                s.tracked.to_string(),
                s.crms.label().to_owned(),
                s.steady_calls.to_string(),
                format!("{:.1}", s.steady_wall_ms),
                format!("{:.1}", s.steady_engine_cpu_ms),
                s.churn_changes.to_string(),
                s.churn_calls.to_string(),
                format!("{:.1}", s.churn_wall_ms),
                format!("{:.1}", s.churn_engine_cpu_ms),
                format!("{:.2}", s.churn_ms_per_change),
                s.churn_peak_rss_growth_kib.to_string(),
            ]
        })
        .collect();
    table(
        &mut o,
        &[
            "tracked",
            "CRMs",
            "steady calls",
            "steady wall ms",
            "steady CPU ms",
            "churn changes",
            "churn calls",
            "churn wall ms",
            "churn CPU ms",
            "ms per change",
            "RSS growth KiB",
        ],
        &rows,
    );

    let l = &r.latency;
    let _ = writeln!(
        o,
        "### Latency: {} ms on every call, {} s interval, {} tracked\n",
        l.latency_ms, l.interval_secs, l.tracked
    );
    table(
        &mut o,
        &[
            "direction",
            "calls in the cycle",
            "cycle s",
            "write answered after s",
            "end to end mean s",
            "end to end worst s",
        ],
        &[
            vec![
                "Partner Center -> CRMs".into(),
                l.pc_to_crm_cycle_calls.to_string(),
                format!("{:.2}", l.pc_to_crm_cycle_secs),
                format!("{:.2}", l.pc_to_crm_in_cycle_secs),
                format!("{:.1}", l.pc_to_crm_mean_secs),
                format!("{:.1}", l.pc_to_crm_worst_secs),
            ],
            vec![
                "CRM -> Partner Center".into(),
                l.crm_to_pc_cycle_calls.to_string(),
                format!("{:.2}", l.crm_to_pc_cycle_secs),
                format!("{:.2}", l.crm_to_pc_in_cycle_secs),
                format!("{:.1}", l.crm_to_pc_mean_secs),
                format!("{:.1}", l.crm_to_pc_worst_secs),
            ],
        ],
    );

    o.push_str("### Compared with Microsoft's connectors (documented behaviour)\n\n");
    let rows: Vec<Vec<String>> = r
        .comparison
        .iter()
        .map(|c| vec![c.what.clone(), c.cosell_sync.clone(), c.connectors.clone()])
        .collect();
    table(&mut o, &["", "cosell-sync (measured)", "connectors"], &rows);

    o.push_str("### Targets\n\n");
    let rows: Vec<Vec<String>> = r
        .targets
        .iter()
        .map(|t| {
            vec![
                t.target.clone(),
                t.measured.clone(),
                if t.held { "held" } else { "NOT held" }.into(),
            ]
        })
        .collect();
    table(&mut o, &["target", "measured", ""], &rows);
    o
}
