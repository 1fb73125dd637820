//! The benchmark at a smoke size: the count invariants hold (never times,
//! which depend on the machine).

use cosell_sync::bench::{self, BenchOptions};
use cosell_sync::sim::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_benchmark_meets_the_count_targets() {
    let opts = BenchOptions {
        engine_binary: Some(env!("CARGO_BIN_EXE_cosell-sync").into()),
        ..BenchOptions::smoke()
    };
    let report = bench::run(opts, |_| {}).await.expect("the benchmark runs");
    let size = &report.sizes[0];
    assert_eq!(size.referrals, 200);

    // Backfill: every referral into both CRMs, within 1.1 x the fewest calls.
    assert_eq!(size.backfill.created.get("salesforce"), Some(&200));
    assert_eq!(size.backfill.created.get("dynamics"), Some(&200));
    for m in &size.backfill.minimum[..3] {
        assert!(m.minimum > 0, "{m:?}");
        assert!(m.ratio <= 1.1, "{m:?}");
    }
    assert!(size.backfill.peak_rss_mib > 0.0);
    // The engine's own process stays within the memory budget. An
    // unoptimised build (`cargo test`'s) maps twice the code and runs an
    // unoptimised allocator: 12.6 MiB at startup against 6 MiB, 41 to 48 MiB
    // at this size across this round's builds (48.1 once: a 16 MiB margin
    // made the check flaky); it gets 24 MiB more. The release figures per
    // size are BENCHMARKS.md's.
    let budget = if cfg!(debug_assertions) {
        bench::RSS_BUDGET_MIB + 24.0
    } else {
        bench::RSS_BUDGET_MIB
    };
    assert!(
        size.backfill.peak_rss_mib < budget,
        "backfill peak RSS {} MiB, budget {budget} MiB",
        size.backfill.peak_rss_mib,
    );
    // The echo-read cycle after it runs in its own process too and writes
    // nothing. Its peak RSS is reported, not yet held to the budget: it is
    // over it (BENCHMARKS.md, issue 17).
    let echo = size
        .backfill
        .echo
        .as_ref()
        .expect("the echo-read cycle ran");
    assert!(echo.peak_rss_mib > 0.0, "{echo:?}");
    assert_eq!(echo.calls.writes, 0, "{:?}", echo.calls);
    // The customers of a write call are looked up in one query per CRM, and
    // no create is preceded by a listing: the only Partner Center reads are
    // the listing pages.
    let calls = &size.backfill.calls;
    assert_eq!(
        calls.operation(Api::Dynamics, "GET accounts"),
        1,
        "{calls:?}"
    );
    assert_eq!(
        calls.operation(Api::PartnerCenter, "GET list"),
        size.backfill.minimum[0].minimum,
        "{calls:?}"
    );
    // The Salesforce adapter describes Opportunity and Account once per run
    // (so it never names a field the org lacks): 2 calls more than before.
    assert_eq!(
        calls.operation(Api::Salesforce, "GET describe"),
        2,
        "{calls:?}"
    );
    assert!(size.backfill.overhead_calls <= 12, "{calls:?}");

    // Steady state, past the overlap: no writes, one listing call (one
    // page) per source; more is a regression.
    assert_eq!(size.steady.writes, 0, "{:?}", size.steady);
    assert_eq!(size.steady.calls.writes, 0, "{:?}", size.steady.calls);
    assert_eq!(size.steady.listing_calls.len(), 3);
    for (source, n) in &size.steady.listing_calls {
        assert_eq!(*n, 1, "{source}: {:?}", size.steady.calls);
    }

    // Churn: every changed record is written where it belongs.
    for round in &size.churn {
        assert_eq!(round.cycle.changed_per_side, 2);
        assert!(round.cycle.writes >= 6, "{:?}", round.cycle);
        assert_eq!(round.cycle.outcome, "clean", "{:?}", round.cycle);
    }

    // Latency: the writes happen within the cycle that saw the change.
    let l = &report.latency;
    assert!(l.pc_to_crm_in_cycle_secs <= l.pc_to_crm_cycle_secs + 0.1);
    assert!(l.pc_to_crm_worst_secs >= 60.0);

    // The JSON result and the table carry every section.
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "sizes",
        "latency",
        "scaling",
        "comparison",
        "targets",
        "machine",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    let table = bench::render_table(&report);
    for heading in [
        "Backfill",
        "Steady state",
        "Churn",
        "Latency",
        "Scaling",
        "connectors",
    ] {
        assert!(table.contains(heading), "{heading}\n{table}");
    }
}
