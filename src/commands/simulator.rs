//! The verbs that run on the built-in simulator: `simulate` and `bench`
//! (`demo` lives in [`crate::demo`]). Built with the `sim` feature only.

use super::CommandError;

/// What `bench` runs (its command-line options).
#[derive(Debug, Clone, Default)]
pub struct BenchRun {
    pub sizes: Option<Vec<usize>>,
    pub crms: Option<Vec<crate::bench::Crms>>,
    pub smoke: bool,
    pub in_process: bool,
    pub engine: Option<std::path::PathBuf>,
}

/// `bench`: the benchmark scenarios against the in-process simulator; the
/// tables are printed and the JSON result written to `out`.
pub async fn bench(
    run: BenchRun,
    out: &std::path::Path,
    say: impl FnMut(&str),
) -> Result<String, CommandError> {
    let mut opts = if run.smoke {
        crate::bench::BenchOptions::smoke()
    } else {
        crate::bench::BenchOptions::standard()
    };
    if let Some(sizes) = run.sizes {
        opts.sizes = sizes;
    }
    if let Some(crms) = run.crms {
        opts.crms = crms;
    }
    if !run.in_process {
        opts.engine_binary = run.engine.or_else(|| std::env::current_exe().ok());
    }
    let report = crate::bench::run(opts, say)
        .await
        .map_err(|e| CommandError::Failed(format!("benchmark: {e}")))?;
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    std::fs::write(out, json)
        .map_err(|e| CommandError::Failed(format!("cannot write {}: {e}", out.display())))?;
    Ok(format!(
        "{}\nresult written to {}\n",
        crate::bench::render_table(&report),
        out.display()
    ))
}

/// `bench-cycle` (hidden): one engine cycle in the benchmark's child
/// process, on the simulator's clock; prints the summary as JSON.
pub async fn bench_cycle(
    settings: &crate::config::Settings,
    full: bool,
    clock_offset_ms: i64,
) -> Result<String, CommandError> {
    let offset = chrono::TimeDelta::milliseconds(clock_offset_ms);
    let summary = crate::bench::engine_cycle(settings, full, offset)
        .await
        .map_err(|e| CommandError::Failed(format!("benchmark cycle: {e}")))?;
    Ok(format!(
        "{:#}\n",
        serde_json::to_value(&summary).unwrap_or(serde_json::Value::Null)
    ))
}

/// `simulate`: serves the four fake APIs until interrupted, after printing
/// where they are and a config for the daemon.
pub async fn simulate(
    opts: crate::sim::SimOptions,
    print: impl Fn(&str),
) -> Result<String, CommandError> {
    let handle = crate::sim::Simulator::start(opts).await?;
    let urls = handle.urls().clone();
    print(&format!(
        "simulator listening on {}\n  Partner Center  {}\n  Dynamics 365    {}\n  Salesforce      {}\n  control API     {}/_sim/\n\n# Save this as cosell-sim.toml and run: cosell-sync sync --once --config cosell-sim.toml\n{}",
        urls.base,
        urls.partner_center,
        urls.dynamics,
        urls.salesforce,
        urls.base,
        handle.daemon_config()
    ));
    let _ = tokio::signal::ctrl_c().await;
    handle.shutdown().await;
    Ok("simulator stopped\n".into())
}
