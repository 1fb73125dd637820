//! The sync engine. One cycle: pull each CRM's changes, pull Partner Center's
//! changes, reconcile, expire, commit decided effects with the cursor moves
//! (one SQLite transaction per page), then execute the outbox.
//!
//! The engine decides; the clients carry out. It never builds HTTP requests.

mod clock;
pub mod effects;
#[cfg(test)]
mod engine_tests;
mod execute;
#[cfg(test)]
mod fakes;
mod plan;
mod seller;
pub mod setup;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use tracing::Instrument;

use crate::config::SyncSettings;
use crate::crm::{Crm, CrmError, CrmObjectSpec};
use crate::mapping::Mapping;
use crate::partner_center::{PartnerCenter, PartnerCenterError};
use crate::store::{CrmKind, Store, StoreError};

pub use clock::{Clock, SystemClock};
pub use effects::{Effect, StageAction};
pub use execute::{Retried, ignore_failure, retry_failure};

/// One CRM the engine syncs with, and its mapping.
#[derive(Clone)]
pub struct CrmSide {
    pub kind: CrmKind,
    pub crm: Arc<dyn Crm>,
    pub mapping: Arc<Mapping>,
    /// Records per write call.
    pub batch_size: usize,
}

/// What an adapter needs to know of a mapping.
pub fn object_spec(mapping: &Mapping) -> CrmObjectSpec {
    let mut fields: Vec<String> = mapping
        .crm_fields()
        .into_iter()
        .map(str::to_owned)
        .collect();
    fields.retain(|f| {
        Some(f) != Some(&mapping.external_id)
            && mapping.sync_flag.as_ref() != Some(f)
            && mapping.error_field.as_ref() != Some(f)
    });
    let mut stage_values = Vec::new();
    for stage in crate::domain::Stage::ALL {
        if let Some(p) = mapping.stages.pattern(stage) {
            for (field, value) in p.written() {
                if !stage_values.contains(&(field.to_owned(), value.clone())) {
                    stage_values.push((field.to_owned(), value.clone()));
                }
            }
        }
    }
    CrmObjectSpec {
        object: mapping.object.clone(),
        external_id_field: mapping.external_id.clone(),
        sync_flag_field: mapping.sync_flag.clone(),
        error_field: mapping.error_field.clone(),
        fields,
        stage_values,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime shut down while the store was being written.
    #[error("the store work was cancelled: the runtime is shutting down")]
    Cancelled,
    /// A failpoint fired: the cycle stops as if the process had died there.
    #[error("failpoint {0} fired")]
    Failpoint(String),
}

/// Runs store work on the blocking pool, off the async workers (a commit
/// waits for the disk). A panic in `f` is raised again here.
pub(crate) async fn off_worker<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, SyncError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(out) => Ok(out?),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(SyncError::Cancelled),
    }
}

type StoreJob = Box<dyn FnOnce() + Send>;

/// The engine's store thread: every store read and write of the engine runs
/// there, off the async workers (`Engine::read_db`, `Engine::write_db`).
///
/// One dedicated thread rather than `spawn_blocking` per access: the store
/// serializes on its one connection anyway; one thread keeps one allocator
/// heap for the rows it reads and the plans it writes (the blocking pool
/// alternated between threads, each holding its own heap: several MiB more
/// peak RSS in a backfill); it works the same on a current-thread runtime
/// (where `block_in_place` cannot); and a hop costs a channel send, small
/// next to the fsync of a commit. The engine keeps hops few by reading and
/// writing a whole page or write call at a time. If the thread cannot be
/// started, the blocking pool does the work instead.
struct StoreThread {
    jobs: Option<std::sync::mpsc::Sender<StoreJob>>,
}

impl StoreThread {
    fn spawn() -> StoreThread {
        let (tx, rx) = std::sync::mpsc::channel::<StoreJob>();
        let started = std::thread::Builder::new()
            .name("cosell-store".into())
            .spawn(move || {
                // Ends when the engine (the sender) is dropped.
                for job in rx {
                    job();
                }
            });
        match started {
            Ok(_) => StoreThread { jobs: Some(tx) },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the store thread; using the blocking pool");
                StoreThread { jobs: None }
            }
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let Some(jobs) = &self.jobs else {
            return off_worker(f).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: StoreJob = Box::new(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(out);
        });
        if jobs.send(job).is_err() {
            return Err(SyncError::Cancelled);
        }
        match rx.await {
            Ok(Ok(out)) => Ok(out?),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(SyncError::Cancelled),
        }
    }
}

/// A progress hook, called with the number of records just read (0 when
/// the engine only made other progress): the daemon's watchdog heartbeat,
/// the progress bar of a backfill.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Crash injection for tests: called with a failpoint's name; returning
/// `true` stops the cycle right there, as `kill -9` would.
pub type Failpoint = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How to run one cycle.
#[derive(Debug, Clone, Default)]
pub struct CycleOptions {
    /// Plan and print; write nothing anywhere, the store included.
    pub dry_run: bool,
    /// Re-read everything (all referrals and all linked or flagged opportunities).
    pub full: bool,
    /// Re-read Partner Center from this time instead of the cursor (`resync --since`).
    pub since: Option<DateTime<Utc>>,
    /// Bring archived referrals (won, lost, declined, expired) that no CRM
    /// record holds into the CRMs, closed with their outcome and reason
    /// (`resync --include-archived`).
    pub include_archived: bool,
}

/// Counts for one side of the sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SideSummary {
    pub read: u64,
    pub created: u64,
    pub updated: u64,
    pub closed: u64,
    pub skipped: u64,
    pub failed: u64,
}

/// A side of the sync: Partner Center or one CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    PartnerCenter,
    Crm(CrmKind),
}

impl Side {
    /// `partner_center`, `dynamics` or `salesforce` (the outbox target).
    pub fn as_str(self) -> &'static str {
        match self {
            Side::PartnerCenter => effects::PARTNER_CENTER,
            Side::Crm(kind) => kind.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<Side> {
        if s == effects::PARTNER_CENTER {
            Some(Side::PartnerCenter)
        } else {
            CrmKind::parse(s).map(Side::Crm)
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Side {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Why a side was paused in a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// Throttling or an API limit: work resumes by itself.
    Throttled,
    /// Sign-in, credentials or permissions: an operator must act.
    Operator,
}

impl PauseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::Throttled => "throttled",
            PauseReason::Operator => "operator",
        }
    }
}

/// A side paused by a cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Paused {
    pub side: Side,
    pub reason: PauseReason,
    /// When work resumes by itself (a throttle the engine honours).
    pub until: Option<DateTime<Utc>>,
}

impl Paused {
    pub fn throttled(side: Side, until: Option<DateTime<Utc>>) -> Paused {
        Paused {
            side,
            reason: PauseReason::Throttled,
            until,
        }
    }

    pub fn operator(side: Side) -> Paused {
        Paused {
            side,
            reason: PauseReason::Operator,
            until: None,
        }
    }
}

/// `partner_center`, or `salesforce (throttled until 10:00:00 UTC)`.
impl std::fmt::Display for Paused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.reason, self.until) {
            (PauseReason::Throttled, Some(until)) => write!(
                f,
                "{} (throttled until {})",
                self.side,
                until.format("%H:%M:%S UTC")
            ),
            _ => write!(f, "{}", self.side),
        }
    }
}

/// What kind of whole-side failure a [`SideError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SideErrorKind {
    /// The side could not be read or written this cycle; tried again next cycle.
    Unavailable,
    /// Throttling or an API limit.
    Throttled,
    /// Sign-in, credentials or permissions: an operator must act.
    Operator,
}

impl SideErrorKind {
    fn of(directive: crate::http::RetryDirective) -> SideErrorKind {
        match directive {
            crate::http::RetryDirective::After(_) => SideErrorKind::Throttled,
            crate::http::RetryDirective::Operator => SideErrorKind::Operator,
            _ => SideErrorKind::Unavailable,
        }
    }
}

/// A whole-call failure of one side (a listing that failed, a side that
/// could not be reached), with what an operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SideError {
    pub side: Side,
    pub kind: SideErrorKind,
    pub message: String,
    /// Empty when the message says it all.
    pub hint: String,
}

/// `side: message (hint: hint)`.
impl std::fmt::Display for SideError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.hint.is_empty() {
            write!(f, "{}: {}", self.side, self.message)
        } else {
            write!(f, "{}: {} (hint: {})", self.side, self.message, self.hint)
        }
    }
}

impl SideError {
    pub fn new(
        side: Side,
        kind: SideErrorKind,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> SideError {
        SideError {
            side,
            kind,
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub(crate) fn partner_center(e: &PartnerCenterError) -> SideError {
        use crate::http::Retryable;
        let kind = if e.is_login_required() {
            SideErrorKind::Operator
        } else {
            SideErrorKind::of(e.directive())
        };
        SideError::new(Side::PartnerCenter, kind, e.to_string(), e.hint())
    }

    pub(crate) fn crm(kind: CrmKind, e: &CrmError) -> SideError {
        use crate::http::Retryable;
        let error_kind = match e {
            CrmError::Paused { .. } => SideErrorKind::Throttled,
            other => SideErrorKind::of(other.directive()),
        };
        SideError::new(Side::Crm(kind), error_kind, e.to_string(), e.hint())
    }
}

/// What a cycle did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CycleSummary {
    pub partner_center: SideSummary,
    pub crms: BTreeMap<String, SideSummary>,
    /// Referrals expired here by the 14-day rule.
    pub expired: u64,
    /// Records quarantined this cycle.
    pub quarantined: u64,
    /// Effects still pending after the cycle (retries scheduled).
    pub pending_effects: u64,
    /// Sides that are paused (throttled, limit reached, sign-in needed).
    pub paused: Vec<Paused>,
    /// Whole-call failures (a listing that failed, a side that could not be reached).
    pub errors: Vec<SideError>,
    /// `--dry-run`: the planned effects, one line each.
    pub planned: Vec<String>,
    pub full_reconcile: bool,
    pub dry_run: bool,
}

impl CycleSummary {
    pub fn crm(&mut self, kind: CrmKind) -> &mut SideSummary {
        self.crms.entry(kind.as_str().to_owned()).or_default()
    }

    /// `clean`, or `degraded` when any record failed, a side was paused or
    /// anything could not be reached. Never reported clean with a failure.
    pub fn outcome(&self) -> &'static str {
        let failed = self.partner_center.failed + self.crms.values().map(|s| s.failed).sum::<u64>();
        if failed > 0 || self.quarantined > 0 || !self.paused.is_empty() || !self.errors.is_empty()
        {
            "degraded"
        } else {
            "clean"
        }
    }

    /// Total remote writes made (created + updated + closed on every side).
    pub fn writes(&self) -> u64 {
        let side = |s: &SideSummary| s.created + s.updated + s.closed;
        side(&self.partner_center) + self.crms.values().map(side).sum::<u64>()
    }

    /// One line for logs and sd_notify STATUS=.
    pub fn one_line(&self) -> String {
        let mut parts = vec![format!(
            "partner center: {} read, {} created, {} updated, {} closed, {} failed",
            self.partner_center.read,
            self.partner_center.created,
            self.partner_center.updated,
            self.partner_center.closed,
            self.partner_center.failed
        )];
        for (name, s) in &self.crms {
            parts.push(format!(
                "{name}: {} read, {} created, {} updated, {} closed, {} failed",
                s.read, s.created, s.updated, s.closed, s.failed
            ));
        }
        if self.expired > 0 {
            parts.push(format!("{} expired", self.expired));
        }
        if !self.paused.is_empty() {
            let paused: Vec<String> = self.paused.iter().map(Paused::to_string).collect();
            parts.push(format!("paused: {}", paused.join(", ")));
        }
        format!("{} ({})", self.outcome(), parts.join("; "))
    }
}

/// The engine: the store, Partner Center and the enabled CRMs.
pub struct Engine {
    store: Arc<Store>,
    pc: Arc<dyn PartnerCenter>,
    crms: Vec<CrmSide>,
    settings: SyncSettings,
    clock: Arc<dyn Clock>,
    failpoint: Option<Failpoint>,
    progress: Option<Progress>,
    store_thread: StoreThread,
}

/// State carried through one cycle.
pub(crate) struct Cycle {
    pub now: DateTime<Utc>,
    pub dry_run: bool,
    pub summary: CycleSummary,
    /// Set when this cycle's Partner Center listing completed: the time its
    /// data is fresh as of (recorded in the store too, except in a dry run).
    pub pc_fresh_as_of: Option<DateTime<Utc>>,
    /// Referrals this cycle's listing read (their expiry is decided from
    /// them) whose stored copy was due to expire; other reads cannot be
    /// picked up by the expiry check, so they are not kept.
    pub pc_read: HashSet<String>,
    /// [`CycleOptions::include_archived`].
    pub include_archived: bool,
    /// Targets whose sending stopped this cycle (throttled, or waiting for an
    /// operator): nothing more is sent to them until the next cycle.
    pub stopped: HashSet<String>,
}

/// The cursor key of Partner Center.
pub const PC_CURSOR: &str = "partner_center";

/// The cursor key of a CRM.
pub fn crm_cursor(kind: CrmKind) -> String {
    format!("crm:{kind}")
}

const FULL_RECONCILE_KEY: &str = "sync.last_full_reconcile";

/// Where a first listing starts: before any co-sell referral existed.
pub fn beginning_of_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Engine {
    /// An engine over Partner Center (the client, or a fake in tests).
    pub fn new(
        store: Arc<Store>,
        pc: impl Into<Arc<dyn PartnerCenter>>,
        crms: Vec<CrmSide>,
        settings: SyncSettings,
        clock: Arc<dyn Clock>,
    ) -> Engine {
        Engine {
            store,
            pc: pc.into(),
            crms,
            settings,
            clock,
            failpoint: None,
            progress: None,
            store_thread: StoreThread::spawn(),
        }
    }

    /// Installs a crash-injection hook (tests).
    pub fn with_failpoint(mut self, failpoint: Failpoint) -> Engine {
        self.failpoint = Some(failpoint);
        self
    }

    /// Called whenever the engine makes progress (a page committed, an
    /// effect done): the daemon's watchdog heartbeat.
    pub fn with_progress(mut self, progress: Progress) -> Engine {
        self.progress = Some(progress);
        self
    }

    pub(crate) fn hit(&self, name: &str) -> Result<(), SyncError> {
        if let Some(f) = &self.failpoint
            && f(name)
        {
            tracing::warn!(failpoint = name, "failpoint fired");
            return Err(SyncError::Failpoint(name.to_owned()));
        }
        Ok(())
    }

    pub(crate) fn beat(&self, records: u64) {
        if let Some(p) = &self.progress {
            p(records);
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn crms(&self) -> &[CrmSide] {
        &self.crms
    }

    pub fn partner_center(&self) -> &Arc<dyn PartnerCenter> {
        &self.pc
    }

    fn side(&self, kind: CrmKind) -> Option<&CrmSide> {
        self.crms.iter().find(|s| s.kind == kind)
    }

    /// Reads the store on the store thread (see [`StoreThread`]).
    pub(crate) async fn read_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::store::Repo<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let store = self.store.clone();
        self.store_thread.run(move || store.read(f)).await
    }

    /// Writes the store, one transaction, on the store thread (see
    /// [`StoreThread`]).
    pub(crate) async fn write_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::store::Repo<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let store = self.store.clone();
        self.store_thread.run(move || store.write(f)).await
    }

    async fn full_due(&self, now: DateTime<Utc>) -> Result<bool, SyncError> {
        let last = self.read_db(|r| r.kv_get(FULL_RECONCILE_KEY)).await?;
        let every = chrono::Duration::from_std(self.settings.full_reconcile_every)
            .unwrap_or(chrono::Duration::hours(6));
        Ok(
            match last.and_then(|s| DateTime::parse_from_rfc3339(&s).ok()) {
                Some(t) => now - t.with_timezone(&Utc) >= every,
                // The first cycle reads everything anyway (no cursor).
                None => false,
            },
        )
    }

    /// Runs one sync cycle.
    pub async fn run_cycle(&self, opts: &CycleOptions) -> Result<CycleSummary, SyncError> {
        let now = self.clock.now();
        let correlation = uuid::Uuid::new_v4();
        let full = opts.full || self.full_due(now).await?;
        let span = tracing::info_span!("cycle", correlation_id = %correlation, full, dry_run = opts.dry_run);
        async move {
            let started = std::time::Instant::now();
            let run_id = if opts.dry_run {
                None
            } else {
                Some(self.write_db(move |r| r.start_run(now)).await?)
            };
            let pc = self.pc.with_correlation_id(correlation);
            let mut cycle = Cycle {
                now,
                dry_run: opts.dry_run,
                summary: CycleSummary {
                    full_reconcile: full,
                    dry_run: opts.dry_run,
                    ..Default::default()
                },
                pc_fresh_as_of: None,
                pc_read: HashSet::new(),
                stopped: HashSet::new(),
                include_archived: opts.include_archived,
            };
            for side in &self.crms {
                cycle.summary.crm(side.kind);
            }
            // A dry run notes the CRM records it reads changed in a private
            // copy (conflicts); any other cycle in the stored table.
            let dry_run = opts.dry_run;
            self.read_db(move |r| r.begin_crm_changes(dry_run)).await?;

            for side in &self.crms {
                self.pull_crm(side, full, &mut cycle)
                    .instrument(tracing::info_span!("pull", side = side.kind.as_str()))
                    .await?;
            }
            self.pull_partner_center(&*pc, full, opts.since, &mut cycle)
                .instrument(tracing::info_span!("pull", side = "partner_center"))
                .await?;
            self.expire_overdue(&mut cycle).await?;
            self.report_windows(&mut cycle).await?;
            if !opts.dry_run {
                self.check_microsoft_windows(&*pc, &mut cycle).await?;
                self.execute(&*pc, &mut cycle)
                    .instrument(tracing::info_span!("execute"))
                    .await?;
                cycle.summary.pending_effects = self.read_db(|r| r.pending_effect_count()).await?;
                // The first cycle reads everything: it starts the schedule.
                let first = self
                    .read_db(|r| r.kv_get(FULL_RECONCILE_KEY))
                    .await?
                    .is_none();
                if full || first {
                    self.write_db(move |r| {
                        r.kv_set(FULL_RECONCILE_KEY, &crate::store::ts(now), now)
                    })
                    .await?;
                }
            }
            let summary = cycle.summary;
            if let Some(id) = run_id {
                let value = serde_json::to_value(&summary).unwrap_or_default();
                let (at, outcome) = (self.clock.now(), summary.outcome());
                self.write_db(move |r| r.finish_run(id, at, outcome, &value))
                    .await?;
            }
            tracing::info!(
                outcome = summary.outcome(),
                duration_ms = started.elapsed().as_millis() as u64,
                writes = summary.writes(),
                "{}",
                summary.one_line()
            );
            Ok(summary)
        }
        .instrument(span)
        .await
    }

    /// Backoff before the next attempt of an effect that failed `attempts` times.
    pub(crate) fn backoff(&self, attempts: u32) -> Duration {
        let base = Duration::from_secs(30);
        let exp = base.saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(10)));
        let capped = exp.min(Duration::from_secs(3600));
        let jitter = rand::random::<f64>() * 0.2 + 0.9;
        capped.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_with_a_failure_is_never_clean() {
        let mut s = CycleSummary::default();
        assert_eq!(s.outcome(), "clean");
        s.crm(CrmKind::Salesforce).failed = 1;
        assert_eq!(s.outcome(), "degraded");
        let mut s = CycleSummary::default();
        s.paused
            .push(Paused::operator(Side::Crm(CrmKind::Salesforce)));
        assert_eq!(s.outcome(), "degraded");
    }

    #[test]
    fn pauses_and_side_errors_render_as_before() {
        let until = Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap();
        let mut s = CycleSummary::default();
        s.paused.push(Paused::operator(Side::PartnerCenter));
        s.paused.push(Paused::throttled(
            Side::Crm(CrmKind::Salesforce),
            Some(until),
        ));
        assert!(
            s.one_line()
                .ends_with("; paused: partner_center, salesforce (throttled until 10:00:00 UTC))"),
            "{}",
            s.one_line()
        );
        let e = SideError::new(
            Side::Crm(CrmKind::Dynamics),
            SideErrorKind::Unavailable,
            "GET /opportunities returned HTTP 503",
            "try again later",
        );
        assert_eq!(
            e.to_string(),
            "dynamics: GET /opportunities returned HTTP 503 (hint: try again later)"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["paused"][1]["side"], "salesforce");
        assert_eq!(json["paused"][1]["reason"], "throttled");
        assert_eq!(Side::parse("partner_center"), Some(Side::PartnerCenter));
        assert_eq!(Side::parse("dynamics"), Some(Side::Crm(CrmKind::Dynamics)));
    }

    #[test]
    fn the_object_spec_comes_from_the_mapping() {
        let m = Mapping::default_salesforce().unwrap();
        let spec = object_spec(&m);
        assert_eq!(spec.object, "Opportunity");
        assert_eq!(spec.external_id_field, "Referral_Identifier__c");
        assert!(spec.fields.iter().any(|f| f == "Amount"));
        assert!(!spec.fields.iter().any(|f| f == "Referral_Identifier__c"));
        assert!(
            spec.stage_values
                .contains(&("StageName".to_owned(), serde_json::json!("Closed Won")))
        );
    }
}
