//! The command line's verbs. Each returns the text to print, so that it can
//! be tested without a terminal. [`inspect`] holds the read-only ones (they
//! never take the store's writer lock), [`operate`] the ones that write (the
//! daemon included), [`simulator`] the ones that run on the built-in
//! simulator (feature `sim`). This module keeps what they share: the error
//! type and its exit codes, the writer lock, and table rendering.

mod inspect;
mod operate;
mod probe;
#[cfg(feature = "sim")]
mod simulator;
mod tenant;

use chrono::{DateTime, Utc};

use crate::config::{ConfigError, Settings};
use crate::store::{LockError, Store, StoreError, StoreLock};

pub use inspect::{
    config_show, config_validate, config_validate_online, enabled_crms, failures_list,
    referrals_list, referrals_show, status,
};
pub use operate::{
    failures_ignore, failures_retry, login_partner_center, parse_since, referrals_favorite,
    run_daemon, sync_once,
};
pub use probe::{health, health_address};
#[cfg(feature = "sim")]
pub use simulator::{BenchRun, bench, bench_cycle, simulate};
pub use tenant::{check_tenant, tenant_of};

/// Process exit codes (DESIGN.md "Command line").
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    /// EX_TEMPFAIL from sysexits.h: another command that writes holds the
    /// state store; trying again later can succeed.
    pub const STORE_BUSY: u8 = 75;
    /// EX_CONFIG from sysexits.h.
    pub const CONFIG: u8 = 78;
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the configuration is not usable:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    ConfigProblems(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{what} {id} is not in the state store{hint}")]
    NotFound {
        what: &'static str,
        id: String,
        hint: &'static str,
    },
    #[error("{0}")]
    Usage(String),
    #[error("Partner Center: {0}")]
    PartnerCenter(crate::partner_center::PartnerCenterError),
    #[error(transparent)]
    Setup(Box<crate::sync::setup::SetupError>),
    #[error("sync: {0}")]
    Sync(crate::sync::SyncError),
    #[cfg(feature = "sim")]
    #[error("simulator: {0}")]
    Sim(crate::sim::SimError),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Daemon(#[from] crate::ops::DaemonError),
    #[error("metrics: {0}")]
    Metrics(crate::ops::metrics::MetricsError),
    #[error(
        "the state store {path} belongs to another tenant: it was first synced with {recorded} (since {since}); these settings point at {current} ({})",
        .differences.join("; ")
    )]
    OtherTenant {
        path: String,
        recorded: String,
        since: String,
        current: String,
        differences: Vec<String>,
    },
    /// The command ran and has a report, but did not fully succeed.
    #[error("{reason}")]
    Incomplete { report: String, reason: String },
}

// These variants print their cause in their own message; they are built by
// hand (not `#[from]`) so the cause is not also chained as `source()` and an
// error chain shows it once.
impl From<crate::partner_center::PartnerCenterError> for CommandError {
    fn from(e: crate::partner_center::PartnerCenterError) -> Self {
        CommandError::PartnerCenter(e)
    }
}

impl From<crate::sync::SyncError> for CommandError {
    fn from(e: crate::sync::SyncError) -> Self {
        CommandError::Sync(e)
    }
}

#[cfg(feature = "sim")]
impl From<crate::sim::SimError> for CommandError {
    fn from(e: crate::sim::SimError) -> Self {
        CommandError::Sim(e)
    }
}

impl From<crate::ops::metrics::MetricsError> for CommandError {
    fn from(e: crate::ops::metrics::MetricsError) -> Self {
        CommandError::Metrics(e)
    }
}

impl From<crate::sync::setup::SetupError> for CommandError {
    fn from(e: crate::sync::setup::SetupError) -> Self {
        CommandError::Setup(Box::new(e))
    }
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Config(_)
            | CommandError::ConfigProblems(_)
            | CommandError::OtherTenant { .. } => exit::CONFIG,
            CommandError::Setup(e) if e.is_configuration() => exit::CONFIG,
            CommandError::Daemon(e) => u8::try_from(e.exit_code()).unwrap_or(exit::FAILURE),
            CommandError::Usage(_) => exit::USAGE,
            CommandError::Lock(LockError::Held { .. }) => exit::STORE_BUSY,
            _ => exit::FAILURE,
        }
    }

    /// What the operator can do, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            CommandError::Store(e) => Some(e.hint().to_owned()),
            CommandError::Lock(e) => Some(e.hint()),
            CommandError::PartnerCenter(e) => Some(e.hint()),
            CommandError::OtherTenant { .. } => Some(
                "each tenant needs its own state store: check --config and state.path (the unit cosell-sync@TENANT keeps each in /var/lib/cosell-sync/TENANT/). If this store should follow these settings (same tenant, new app registration or org URL), see docs/install.md \"Moving a tenant\"".to_owned(),
            ),
            CommandError::Setup(e) => match e.as_ref() {
                crate::sync::setup::SetupError::PartnerCenter(e) => Some(e.hint()),
                crate::sync::setup::SetupError::Crm { cause, .. } => Some(cause.hint()),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Takes the state store's writer lock for `command` (the words recorded as
/// its holder, e.g. `sync --once`), waiting up to `state.lock_wait` for
/// another writer (DESIGN.md guarantee 8). Every command that may write takes
/// it before opening the store and keeps it until it ends; read-only commands
/// never take it. Blocks the calling thread while it waits.
pub fn lock_store(settings: &Settings, command: &str) -> Result<StoreLock, CommandError> {
    Ok(StoreLock::acquire(
        &settings.state.path,
        command,
        settings.state.lock_wait,
    )?)
}

/// [`lock_store`] for async commands: the wait runs off the runtime's threads.
pub async fn lock_store_async(
    settings: &Settings,
    command: &str,
) -> Result<StoreLock, CommandError> {
    let (path, wait, command) = (
        settings.state.path.clone(),
        settings.state.lock_wait,
        command.to_owned(),
    );
    tokio::task::spawn_blocking(move || StoreLock::acquire(&path, &command, wait))
        .await
        .map_err(|e| CommandError::Failed(format!("waiting for the state store lock: {e}")))?
        .map_err(CommandError::from)
}

fn when(dt: Option<DateTime<Utc>>) -> String {
    dt.map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Left-aligned columns separated by two spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// The Partner Center client over the state store's refresh token.
pub fn partner_center_client(
    settings: &Settings,
    store: std::sync::Arc<Store>,
) -> Result<crate::partner_center::PartnerCenterClient, CommandError> {
    Ok(crate::sync::setup::build_partner_center(settings, store)?)
}

/// The per-side table of a cycle summary.
pub fn render_summary(summary: &crate::sync::CycleSummary) -> String {
    let mut rows = vec![side_row("partner_center", &summary.partner_center)];
    for (name, s) in &summary.crms {
        rows.push(side_row(name, s));
    }
    let mut o = table(
        &[
            "SIDE", "READ", "CREATED", "UPDATED", "CLOSED", "SKIPPED", "FAILED",
        ],
        &rows,
    );
    if summary.expired > 0 {
        o.push_str(&format!(
            "expired locally (14-day rule): {}\n",
            summary.expired
        ));
    }
    if summary.quarantined > 0 {
        o.push_str(&format!(
            "quarantined: {} (see `cosell-sync failures list`)\n",
            summary.quarantined
        ));
    }
    if summary.pending_effects > 0 {
        o.push_str(&format!(
            "pending effects (retries scheduled): {}\n",
            summary.pending_effects
        ));
    }
    for p in &summary.paused {
        o.push_str(&format!("paused: {p}\n"));
    }
    for e in &summary.errors {
        o.push_str(&format!("error: {e}\n"));
    }
    o.push_str(&format!(
        "cycle: {}{}\n",
        summary.outcome(),
        if summary.full_reconcile {
            " (full reconcile)"
        } else {
            ""
        }
    ));
    o
}

fn side_row(name: &str, s: &crate::sync::SideSummary) -> Vec<String> {
    vec![
        name.to_owned(),
        s.read.to_string(),
        s.created.to_string(),
        s.updated.to_string(),
        s.closed.to_string(),
        s.skipped.to_string(),
        s.failed.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_message_names_its_cause_once() {
        let cause = "partner_center.base_url is not a base URL";
        let errors = [
            CommandError::from(crate::partner_center::PartnerCenterError::Config(
                cause.into(),
            )),
            CommandError::from(crate::sync::setup::SetupError::from(
                crate::partner_center::PartnerCenterError::Config(cause.into()),
            )),
        ];
        for e in errors {
            // What main prints: the error and its chain of causes.
            let shown = format!("{:#}", anyhow::Error::new(e));
            assert_eq!(shown.matches(cause).count(), 1, "{shown}");
        }
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "NAME"],
            &[
                vec!["1".into(), "Contoso".into()],
                vec!["22".into(), "Fabrikam".into()],
            ],
        );
        assert_eq!(t, "ID  NAME\n1   Contoso\n22  Fabrikam\n");
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        let e = CommandError::ConfigProblems(vec!["x".into()]);
        assert_eq!(e.exit_code(), 78);
        assert_eq!(CommandError::Usage("x".into()).exit_code(), 2);
        let e = CommandError::NotFound {
            what: "referral",
            id: "x".into(),
            hint: "",
        };
        assert_eq!(e.exit_code(), 1);
        let e = CommandError::from(LockError::Held {
            path: "cosell-sync.db".into(),
            holder: crate::store::Holder::default(),
            waited: std::time::Duration::from_secs(10),
        });
        assert_eq!(e.exit_code(), 75);
        assert!(e.hint().is_some_and(|h| h.contains("state.lock_wait")));
    }
}
