//! Metric names and the small `record_*` functions every layer calls with its
//! own labels. A leaf: it depends on nothing of ours, so the HTTP plumbing,
//! the API clients, the store and the engine may all record without knowing
//! the daemon. Installing the Prometheus recorder and rendering `/metrics`
//! is `ops::metrics`'s job.
//!
//! Without an installed recorder every `record_*` call is a no-op, so
//! commands other than `run` pay nothing.

use std::fmt::Display;

use ::metrics::{counter, gauge, histogram};

/// Records read per side (`partner_center`, `dynamics`, `salesforce`). Counter.
pub const RECORDS_READ: &str = "cosell_sync_records_read_total";
/// Records written per side and `operation` (`created`, `updated`, `closed`). Counter.
pub const RECORDS_WRITTEN: &str = "cosell_sync_records_written_total";
/// Record-level failures per side. Counter.
pub const RECORDS_FAILED: &str = "cosell_sync_records_failed_total";
/// Records quarantined per cycle, summed. Counter.
pub const RECORDS_QUARANTINED: &str = "cosell_sync_records_quarantined_total";
/// Referrals expired locally by the 14-day rule. Counter.
pub const REFERRALS_EXPIRED: &str = "cosell_sync_referrals_expired_total";
/// HTTP requests per `api` and `status` (HTTP status code, or `error` when no
/// response came back). Counter.
pub const API_REQUESTS: &str = "cosell_sync_api_requests_total";
/// In-place retries of a request, per `api`. Counter.
pub const RETRIES: &str = "cosell_sync_retries_total";
/// Times a side was paused by throttling or an API limit, per `side`. Counter.
pub const THROTTLE_PAUSES: &str = "cosell_sync_throttle_pauses_total";
/// Failures waiting for an operator (`failures list`). Gauge.
pub const QUARANTINED_RECORDS: &str = "cosell_sync_quarantined_records";
/// Referrals in the store per lifecycle `stage`. Gauge.
pub const REFERRALS: &str = "cosell_sync_referrals";
/// Effects in the outbox. Gauge.
pub const PENDING_EFFECTS: &str = "cosell_sync_pending_effects";
/// 1 while a `side` is paused (`reason`: `throttled` or `operator`), else 0. Gauge.
pub const SIDE_PAUSED: &str = "cosell_sync_side_paused";
/// Cycles per `outcome` (`clean`, `degraded`, `failed`). Counter.
pub const CYCLES: &str = "cosell_sync_cycles_total";
/// Duration of each cycle. Histogram.
pub const CYCLE_DURATION: &str = "cosell_sync_cycle_duration_seconds";
/// Unix time of the last successful cycle. Gauge.
pub const LAST_SUCCESS: &str = "cosell_sync_last_success_timestamp_seconds";
/// Salesforce's daily API usage from `Sforce-Limit-Info`, `kind` = `used` or `max`. Gauge.
pub const SALESFORCE_API_USAGE: &str = "cosell_sync_salesforce_api_usage";
/// Configuration reloads per `result` (`applied`, `rejected`). Counter.
pub const CONFIG_RELOADS: &str = "cosell_sync_config_reloads_total";
/// Always 1, labelled with the `version`. Gauge.
pub const BUILD_INFO: &str = "cosell_sync_build_info";
/// The configured `sync.interval`, so that rules can count intervals. Gauge.
pub const SYNC_INTERVAL: &str = "cosell_sync_interval_seconds";
/// Time from sending a request to its response headers, per `api`. Histogram.
pub const API_REQUEST_DURATION: &str = "cosell_sync_api_request_duration_seconds";

/// Received inbound referrals still to answer, by time left before their
/// deadline, `left` = `lt_48h` (past it and not yet expired included),
/// `lt_7d`, `ge_7d`. Gauge.
pub const ANSWER_WINDOWS: &str = "cosell_sync_received_referrals_by_time_left";
/// Co-sell deals of ours by Microsoft's answer, `state` = `requested`,
/// `engaged`, `declined`, `no_answer`. Gauge.
pub const MICROSOFT_ENGAGEMENTS: &str = "cosell_sync_microsoft_engagements";

/// Every metric name, for documentation and tests.
pub const ALL: &[&str] = &[
    RECORDS_READ,
    RECORDS_WRITTEN,
    RECORDS_FAILED,
    RECORDS_QUARANTINED,
    REFERRALS_EXPIRED,
    API_REQUESTS,
    RETRIES,
    THROTTLE_PAUSES,
    QUARANTINED_RECORDS,
    REFERRALS,
    PENDING_EFFECTS,
    SIDE_PAUSED,
    CYCLES,
    CYCLE_DURATION,
    LAST_SUCCESS,
    SALESFORCE_API_USAGE,
    CONFIG_RELOADS,
    BUILD_INFO,
    SYNC_INTERVAL,
    API_REQUEST_DURATION,
    ANSWER_WINDOWS,
    MICROSOFT_ENGAGEMENTS,
];

/// Received referrals per time-left bucket.
pub fn record_answer_windows(buckets: &std::collections::BTreeMap<&'static str, u64>) {
    for (left, n) in buckets {
        gauge!(ANSWER_WINDOWS, "left" => *left).set(*n as f64);
    }
}

/// Co-sell deals per Microsoft answer.
pub fn record_microsoft_engagements(states: &std::collections::BTreeMap<&'static str, u64>) {
    for (state, n) in states {
        gauge!(MICROSOFT_ENGAGEMENTS, "state" => *state).set(*n as f64);
    }
}

/// Times a CRM paused its work, per `crm` and `reason`. Counter.
pub const CRM_PAUSED: &str = "cosell_sync_crm_paused_total";

/// The `api` label of Partner Center requests; also its side name.
pub const PARTNER_CENTER: &str = "partner_center";
/// The `api` label of Dataverse requests.
pub const DYNAMICS: &str = "dynamics";
/// The `api` label of Salesforce requests, its token requests included.
pub const SALESFORCE: &str = "salesforce";
/// The `api` label of Microsoft Entra ID token and device-code requests.
pub const ENTRA_ID: &str = "entra_id";

/// One HTTP request and its outcome: an HTTP status (`200`, `429`) or a
/// word when no response came back (`error`, `timeout`).
pub fn record_api_request(api: &str, status: impl Display) {
    counter!(API_REQUESTS, "api" => api.to_owned(), "status" => status.to_string()).increment(1);
}

/// How long one request took to answer (its response headers).
pub fn record_api_duration(api: &str, elapsed: std::time::Duration) {
    histogram!(API_REQUEST_DURATION, "api" => api.to_owned()).record(elapsed.as_secs_f64());
}

/// One in-place retry of a request.
pub fn record_retry(api: &str) {
    counter!(RETRIES, "api" => api.to_owned()).increment(1);
}

/// A side paused by throttling. The daemon already counts the pauses a
/// cycle reports in its summary; call this only for pauses it cannot see.
pub fn record_throttle_pause(side: &str) {
    counter!(THROTTLE_PAUSES, "side" => side.to_owned()).increment(1);
}

/// Salesforce's daily API usage (from the `Sforce-Limit-Info` header, see
/// [`parse_salesforce_limit_info`]).
pub fn record_salesforce_api_usage(used: u64, max: u64) {
    gauge!(SALESFORCE_API_USAGE, "kind" => "used").set(used as f64);
    gauge!(SALESFORCE_API_USAGE, "kind" => "max").set(max as f64);
}

/// `(used, max)` from a `Sforce-Limit-Info` header such as
/// `api-usage=18/5000` or `api-usage=18/5000, per-app-api-usage=17/250(appName=x)`.
/// The per-app figure is not the org's daily usage and is ignored.
pub fn parse_salesforce_limit_info(header: &str) -> Option<(u64, u64)> {
    header
        .split([',', ';'])
        .map(str::trim)
        .find_map(|part| part.strip_prefix("api-usage="))
        .and_then(|v| {
            let (used, max) = v.split_once('/')?;
            let max: String = max.chars().take_while(char::is_ascii_digit).collect();
            Some((used.trim().parse().ok()?, max.parse().ok()?))
        })
}

/// A CRM paused its work (e.g. Salesforce's org-wide request limit).
pub fn record_crm_paused(crm: &str, reason: &str) {
    counter!(CRM_PAUSED, "crm" => crm.to_owned(), "reason" => reason.to_owned()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_salesforce_limit_header_gives_the_org_usage() {
        assert_eq!(
            parse_salesforce_limit_info("api-usage=18/5000"),
            Some((18, 5000))
        );
        assert_eq!(
            parse_salesforce_limit_info(
                "per-app-api-usage=17/250(appName=sample), api-usage=1203/115000"
            ),
            Some((1203, 115000))
        );
        assert_eq!(
            parse_salesforce_limit_info("api-usage=25/5000; per-app-api-usage=17/250(appName=x)"),
            Some((25, 5000))
        );
        assert_eq!(
            parse_salesforce_limit_info("per-app-api-usage=17/250"),
            None
        );
        assert_eq!(parse_salesforce_limit_info("api-usage=lots"), None);
        assert_eq!(parse_salesforce_limit_info(""), None);
    }
}
