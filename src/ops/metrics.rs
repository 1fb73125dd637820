//! Prometheus metrics of the daemon: one recorder per process, the `/metrics`
//! text, and what a finished cycle and the store report. The names and the
//! `record_*` functions the lower layers call live in the leaf
//! [`crate::metrics`], re-exported here.

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use crate::metrics::*;
use crate::store::StatusReport;
use crate::sync::CycleSummary;

const CYCLE_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

const API_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot install the Prometheus metrics recorder: {0}")]
pub struct MetricsError(String);

static HANDLE: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle) and describes every metric.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(CYCLE_DURATION.to_owned()), CYCLE_BUCKETS)
                .map_err(|e| MetricsError(e.to_string()))?
                .set_buckets_for_metric(Matcher::Full(API_REQUEST_DURATION.to_owned()), API_BUCKETS)
                .map_err(|e| MetricsError(e.to_string()))?
                .install_recorder()
                .map_err(|e| MetricsError(e.to_string()))?;
            describe();
            Ok(handle)
        })
        .clone()
}

/// The installed recorder's handle, if [`install`] succeeded.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().and_then(|h| h.as_ref().ok()).cloned()
}

fn describe() {
    describe_counter!(RECORDS_READ, Unit::Count, "Records read, per side");
    describe_counter!(
        RECORDS_WRITTEN,
        Unit::Count,
        "Records written, per side and operation (created, updated, closed)"
    );
    describe_counter!(
        RECORDS_FAILED,
        Unit::Count,
        "Record-level failures, per side"
    );
    describe_counter!(RECORDS_QUARANTINED, Unit::Count, "Records quarantined");
    describe_counter!(
        REFERRALS_EXPIRED,
        Unit::Count,
        "Referrals expired locally by the 14-day rule"
    );
    describe_counter!(
        API_REQUESTS,
        Unit::Count,
        "HTTP requests, per API and response status"
    );
    describe_counter!(RETRIES, Unit::Count, "In-place request retries, per API");
    describe_counter!(
        THROTTLE_PAUSES,
        Unit::Count,
        "Times a side was paused by throttling or an API limit"
    );
    describe_gauge!(
        QUARANTINED_RECORDS,
        Unit::Count,
        "Failures waiting for an operator (cosell-sync failures list)"
    );
    describe_gauge!(
        REFERRALS,
        Unit::Count,
        "Referrals in the store, per lifecycle stage"
    );
    describe_gauge!(
        PENDING_EFFECTS,
        Unit::Count,
        "Effects waiting in the outbox"
    );
    describe_gauge!(
        SIDE_PAUSED,
        "1 while a side is paused (reason: throttled or operator)"
    );
    describe_counter!(CYCLES, Unit::Count, "Sync cycles, per outcome");
    describe_histogram!(CYCLE_DURATION, Unit::Seconds, "Duration of a sync cycle");
    describe_gauge!(
        LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of the last successful sync cycle"
    );
    describe_gauge!(
        SALESFORCE_API_USAGE,
        Unit::Count,
        "Salesforce daily API requests: used and max (Sforce-Limit-Info)"
    );
    describe_counter!(
        CONFIG_RELOADS,
        Unit::Count,
        "Configuration reloads, per result"
    );
    describe_gauge!(
        SYNC_INTERVAL,
        Unit::Seconds,
        "The configured sync.interval between cycles"
    );
    describe_histogram!(
        API_REQUEST_DURATION,
        Unit::Seconds,
        "Time to the response headers of an API request, per API"
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label");
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for outcome in ["clean", "degraded", "failed"] {
        counter!(CYCLES, "outcome" => outcome).increment(0);
    }
    for result in ["applied", "rejected"] {
        counter!(CONFIG_RELOADS, "result" => result).increment(0);
    }
    gauge!(QUARANTINED_RECORDS).set(0.0);
    gauge!(PENDING_EFFECTS).set(0.0);
    // Exported before the first retry, so that `rate()` sees it.
    for api in [PARTNER_CENTER, DYNAMICS, SALESFORCE] {
        counter!(RETRIES, "api" => api).increment(0);
    }
    describe_gauge!(
        ANSWER_WINDOWS,
        Unit::Count,
        "Received inbound referrals still to answer, per time left (lt_48h, lt_7d, ge_7d)"
    );
    describe_gauge!(
        MICROSOFT_ENGAGEMENTS,
        Unit::Count,
        "Co-sell deals of ours, per Microsoft answer (requested, engaged, declined, no_answer)"
    );
    for left in crate::domain::TimeLeft::ALL {
        gauge!(ANSWER_WINDOWS, "left" => left.label()).set(0.0);
    }
    for state in crate::domain::MicrosoftEngagement::ALL {
        gauge!(MICROSOFT_ENGAGEMENTS, "state" => state.metric_label()).set(0.0);
    }
}

/// A configuration reload, applied or rejected.
pub fn record_reload(applied: bool) {
    let result = if applied { "applied" } else { "rejected" };
    counter!(CONFIG_RELOADS, "result" => result).increment(1);
}

pub use crate::sync::PauseReason;

/// The sides a cycle paused, and why, one entry a side (an operator pause
/// outweighs a throttle on the same side).
pub fn pauses(summary: &CycleSummary) -> Vec<(String, PauseReason)> {
    let mut out: Vec<(String, PauseReason)> = Vec::new();
    for p in &summary.paused {
        let side = p.side.as_str();
        match out.iter_mut().find(|(s, _)| s == side) {
            Some(existing) => {
                if p.reason == PauseReason::Operator {
                    existing.1 = p.reason;
                }
            }
            None => out.push((side.to_owned(), p.reason)),
        }
    }
    out
}

/// Everything one finished cycle tells: per-side counts, pauses, outcome
/// and duration.
pub fn record_cycle(summary: &CycleSummary, duration: Duration) {
    let mut sides = vec![(PARTNER_CENTER.to_owned(), &summary.partner_center)];
    sides.extend(summary.crms.iter().map(|(k, v)| (k.clone(), v)));
    for (side, s) in &sides {
        counter!(RECORDS_READ, "side" => side.clone()).increment(s.read);
        for (operation, n) in [
            ("created", s.created),
            ("updated", s.updated),
            ("closed", s.closed),
        ] {
            counter!(RECORDS_WRITTEN, "side" => side.clone(), "operation" => operation)
                .increment(n);
        }
        counter!(RECORDS_FAILED, "side" => side.clone()).increment(s.failed);
        // Exported from the first cycle on, so that `increase()` sees the first pause.
        counter!(THROTTLE_PAUSES, "side" => side.clone()).increment(0);
    }
    counter!(RECORDS_QUARANTINED).increment(summary.quarantined);
    counter!(REFERRALS_EXPIRED).increment(summary.expired);
    gauge!(PENDING_EFFECTS).set(summary.pending_effects as f64);

    let paused = pauses(summary);
    for (side, _) in &sides {
        let reason = paused.iter().find(|(s, _)| s == side).map(|(_, r)| *r);
        for r in [PauseReason::Throttled, PauseReason::Operator] {
            let v = if reason == Some(r) { 1.0 } else { 0.0 };
            gauge!(SIDE_PAUSED, "side" => side.clone(), "reason" => r.as_str()).set(v);
        }
    }
    for (side, reason) in &paused {
        if *reason == PauseReason::Throttled {
            counter!(THROTTLE_PAUSES, "side" => side.clone()).increment(1);
        }
    }
    counter!(CYCLES, "outcome" => summary.outcome()).increment(1);
    histogram!(CYCLE_DURATION).record(duration.as_secs_f64());
}

/// A cycle that ended in an error before finishing.
pub fn record_failed_cycle(duration: Duration) {
    counter!(CYCLES, "outcome" => "failed").increment(1);
    histogram!(CYCLE_DURATION).record(duration.as_secs_f64());
}

/// The time of the last successful cycle.
pub fn record_last_success(at: DateTime<Utc>) {
    gauge!(LAST_SUCCESS).set(at.timestamp_millis() as f64 / 1000.0);
}

/// The configured interval between cycles.
pub fn record_sync_interval(interval: Duration) {
    gauge!(SYNC_INTERVAL).set(interval.as_secs_f64());
}

/// Gauges read from the store: referrals per stage, failures waiting for an
/// operator, the outbox.
pub fn record_store_report(report: &StatusReport) {
    for (stage, n) in &report.by_stage {
        gauge!(REFERRALS, "stage" => stage.clone()).set(*n as f64);
    }
    gauge!(QUARANTINED_RECORDS).set(report.open_failures as f64);
    gauge!(PENDING_EFFECTS).set(report.pending_effects as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_tell_throttling_from_operator_action() {
        use crate::store::CrmKind;
        use crate::sync::{Paused, Side};
        let until = Utc::now();
        let mut s = CycleSummary {
            paused: vec![
                Paused::throttled(Side::Crm(CrmKind::Salesforce), Some(until)),
                Paused::throttled(Side::Crm(CrmKind::Dynamics), Some(until)),
                Paused::operator(Side::PartnerCenter),
            ],
            ..Default::default()
        };
        assert_eq!(
            pauses(&s),
            vec![
                ("salesforce".to_owned(), PauseReason::Throttled),
                ("dynamics".to_owned(), PauseReason::Throttled),
                ("partner_center".to_owned(), PauseReason::Operator),
            ]
        );
        // The same side throttled and waiting for sign-in is an operator matter.
        s.paused
            .push(Paused::operator(Side::Crm(CrmKind::Salesforce)));
        assert_eq!(
            pauses(&s)[0],
            ("salesforce".to_owned(), PauseReason::Operator)
        );
    }
}
