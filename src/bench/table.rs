//! The report as Markdown tables (readable in a terminal, pasted into
//! BENCHMARKS.md as is).

use std::fmt::Write;

use super::{BenchReport, Calls};

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
                m.what.clone(),
                m.minimum.to_string(),
                m.measured.to_string(),
                format!("{:.3}", m.ratio),
            ]);
        }
    }
    table(
        &mut o,
        &["N", "calls", "minimum", "measured", "ratio"],
        &rows,
    );
    let rows: Vec<Vec<String>> = r
        .sizes
        .iter()
        .map(|z| {
            let b = &z.backfill;
            vec![
                z.referrals.to_string(),
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
            ]
        })
        .collect();
    table(
        &mut o,
        &[
            "N",
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
        .map(|z| vec![z.referrals.to_string(), ops_cell(&z.backfill.calls)])
        .collect();
    table(&mut o, &["N", "calls per operation (first cycle)"], &rows);
    let rows: Vec<Vec<String>> = r
        .sizes
        .iter()
        .map(|z| {
            let b = &z.backfill;
            vec![
                z.referrals.to_string(),
                format!("{:.2}", b.wall_secs),
                format!("{:.0}", b.referrals_per_sec),
                format!("{:.2}", b.cpu_secs),
                format!("{:.3}", b.cpu_secs * 1000.0 / z.referrals.max(1) as f64),
                format!("{:.1}", b.peak_rss_mib),
            ]
        })
        .collect();
    table(
        &mut o,
        &[
            "N",
            "wall s",
            "referrals/s",
            "CPU s (user+sys)",
            "CPU ms per referral",
            "peak RSS MiB",
        ],
        &rows,
    );

    let echo: Vec<Vec<String>> = r
        .sizes
        .iter()
        .filter_map(|z| {
            let e = z.backfill.echo.as_ref()?;
            Some(vec![
                z.referrals.to_string(),
                calls_cell(&e.calls),
                format!("{:.2}", e.wall_secs),
                format!("{:.2}", e.cpu_secs),
                format!("{:.1}", e.peak_rss_mib),
            ])
        })
        .collect();
    if !echo.is_empty() {
        o.push_str("### Echo read: the cycle after the backfill, in its own process\n\n");
        table(
            &mut o,
            &["N", "calls", "wall s", "CPU s (user+sys)", "peak RSS MiB"],
            &echo,
        );
    }

    o.push_str("### Steady state: nothing changed\n\n");
    let rows: Vec<Vec<String>> = r
        .sizes
        .iter()
        .map(|z| {
            let c = &z.steady;
            vec![
                c.tracked.to_string(),
                calls_cell(&c.calls),
                c.calls.writes.to_string(),
                c.listing_calls
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                format!("{:.1}", c.wall_ms),
                format!("{:.1}", c.engine_cpu_ms),
                format!("{:.1}", c.process_cpu_ms),
            ]
        })
        .collect();
    table(
        &mut o,
        &[
            "tracked",
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
            rows.push(vec![
                z.referrals.to_string(),
                (i + 1).to_string(),
                format!("{} x 3", c.cycle.changed_per_side),
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
        }
    }
    table(
        &mut o,
        &[
            "tracked",
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
            rows.push(vec![z.referrals.to_string(), ops_cell(&c.cycle.calls)]);
        }
    }
    table(
        &mut o,
        &["tracked", "calls per operation (first churn cycle)"],
        &rows,
    );

    o.push_str("### Scaling\n\n");
    let rows: Vec<Vec<String>> = r
        .scaling
        .iter()
        .map(|s| {
            vec![
                s.tracked.to_string(),
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
