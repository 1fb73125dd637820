//! Logging: tracing-subscriber to stderr, `pretty` for terminals or `json`
//! (one object per line) for journald and log shippers. `RUST_LOG` wins over
//! the configured level.
//!
//! A JSON line is flat: `timestamp`, `level`, `target`, `message`, the
//! event's fields and the fields of every span it is in (the cycle's
//! `correlation_id`, a pull's `side`, an effect's `referral_id`…), all on the
//! top level, so that log shippers index them without unnesting. The stable
//! field names are listed in [`STABLE_FIELDS`] and docs/operations.md.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The field names log queries may rely on; renaming one is a breaking change.
pub const STABLE_FIELDS: &[&str] = &[
    "timestamp",
    "level",
    "message",
    "correlation_id",
    "side",
    "referral_id",
    "crm",
    "crm_id",
    "operation",
    "outcome",
];

use crate::config::LogFormat;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {message}")]
    Filter { filter: String, message: String },
    #[error("logging was already initialised")]
    AlreadySet,
}

/// The filter in force: `RUST_LOG` when set and valid, else `level`.
pub fn filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter, TelemetryError> {
    let chosen = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or(level);
    EnvFilter::try_new(chosen).map_err(|e| TelemetryError::Filter {
        filter: chosen.to_owned(),
        message: e.to_string(),
    })
}

/// Installs the global subscriber writing to `writer`.
pub fn init_with_writer<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Result<(), TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => {
            let layer = json_subscriber::fmt::layer()
                .with_writer(writer)
                .flatten_event(true)
                .flatten_span_list_on_top_level(true)
                .with_current_span(false)
                .with_span_list(false);
            tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init()
                .map_err(|_| TelemetryError::AlreadySet)
        }
        LogFormat::Pretty => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_target(false)
            .compact()
            .try_init()
            .map_err(|_| TelemetryError::AlreadySet),
    }
}

/// Installs the global subscriber writing to stderr.
pub fn init(format: LogFormat, level: &str) -> Result<(), TelemetryError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    init_with_writer(format, filter(level, rust_log.as_deref())?, std::io::stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_wins_over_the_configured_level() {
        assert_eq!(filter("info", Some("debug")).unwrap().to_string(), "debug");
        assert_eq!(filter("warn", None).unwrap().to_string(), "warn");
        assert_eq!(filter("warn", Some("  ")).unwrap().to_string(), "warn");
        assert!(filter("info,cosell_sync=debug", None).is_ok());
        assert!(matches!(
            filter("info=[", None),
            Err(TelemetryError::Filter { .. })
        ));
    }
}
