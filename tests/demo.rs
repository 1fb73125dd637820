//! `cosell-sync demo` runs to completion and shows referrals flowing both ways.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_to_completion() {
    let mut printed = String::new();
    let report = cosell_sync::demo::run(|s| {
        printed.push_str(s);
        printed.push('\n');
    })
    .await
    .unwrap_or_else(|e| panic!("demo failed: {e}"));
    assert_eq!(report.cycles.len(), 8, "{printed}");
    assert!(report.accepted_in_salesforce.is_some());
    assert!(report.won_in_dynamics.is_some());
    assert!(
        report.co_sell_created.is_some(),
        "the co-sell deal was created: {printed}"
    );
    assert!(report.expired.is_some());
    assert!(
        report.cycles[7].crms.values().all(|s| s.closed >= 1),
        "day 15: the unanswered referrals' opportunities are closed as expired: {printed}"
    );
    assert!(
        report.final_table.contains("Closed/Expired"),
        "{}",
        report.final_table
    );
    assert!(
        report.cycles[0].crms.values().all(|s| s.created > 0),
        "backfill creates opportunities: {printed}"
    );
    assert!(
        report.final_table.contains("Active/Accepted"),
        "{}",
        report.final_table
    );
    assert!(
        report.final_table.contains("Closed/Won"),
        "{}",
        report.final_table
    );
    assert!(
        printed.contains("answer by 20"),
        "received deals show their answer-by date: {printed}"
    );
    assert!(
        printed.contains("Microsoft engagement Engaged, Microsoft CRM id 7-"),
        "the co-sell deal shows Microsoft's answer: {printed}"
    );
    assert!(
        report.final_table.contains("Engaged") && report.final_table.contains("ANSWER BY"),
        "{}",
        report.final_table
    );
    assert!(
        printed.contains("customerProfile.address.country"),
        "the seller sees the missing field: {printed}"
    );
}
