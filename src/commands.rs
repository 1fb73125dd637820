//! What the read-only and bookkeeping subcommands print. Each returns the
//! text to print so that it can be tested without a terminal.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::config::{ConfigError, Settings};
use crate::domain::{DealKind, Stage};
use crate::store::{
    FailureState, LockError, ReferralFilter, ReferralSnapshot, StatusReport, Store, StoreError,
    StoreLock,
};

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
    #[error("{0}")]
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
    PartnerCenter(#[from] crate::partner_center::PartnerCenterError),
    #[error(transparent)]
    Setup(Box<crate::sync::setup::SetupError>),
    #[error("sync: {0}")]
    Sync(#[from] crate::sync::SyncError),
    #[error("simulator: {0}")]
    Sim(#[from] crate::sim::SimError),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Daemon(#[from] crate::ops::DaemonError),
    #[error("metrics: {0}")]
    Metrics(#[from] crate::ops::metrics::MetricsError),
    /// The command ran and has a report, but did not fully succeed.
    #[error("{reason}")]
    Incomplete { report: String, reason: String },
}

impl From<crate::sync::setup::SetupError> for CommandError {
    fn from(e: crate::sync::setup::SetupError) -> Self {
        CommandError::Setup(Box::new(e))
    }
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Config(_) | CommandError::ConfigProblems(_) => exit::CONFIG,
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
            CommandError::Setup(e) => match e.as_ref() {
                crate::sync::setup::SetupError::PartnerCenter(e) => Some(e.hint()),
                crate::sync::setup::SetupError::Crm { source, .. } => Some(source.hint()),
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

/// `config validate`: every setting typed and checked, every credential the
/// enabled systems need present.
pub fn config_validate(settings: &Settings) -> Result<String, CommandError> {
    let mut problems: Vec<String> = settings
        .readiness_problems()
        .into_iter()
        .map(|p| p.to_string())
        .collect();
    let mut mappings = Vec::new();
    for crm in enabled_crms(settings) {
        let (text, name) = settings.mapping_source(crm)?;
        match crate::mapping::Mapping::load(&text, &name) {
            Ok(m) => mappings.push(format!(
                "{name}: {} fields, stages complete",
                m.fields.len()
            )),
            Err(found) => problems.extend(found.into_iter().map(|p| p.to_string())),
        }
    }
    if !problems.is_empty() {
        return Err(CommandError::ConfigProblems(problems));
    }
    let mut enabled = vec!["Partner Center"];
    if settings.dynamics.enabled {
        enabled.push("Dynamics 365");
    }
    if settings.salesforce.enabled {
        enabled.push("Salesforce");
    }
    let mut out = format!(
        "configuration is valid: syncing {} every {}; state store {}\n",
        enabled.join(" ↔ "),
        humantime::format_duration(settings.sync.interval),
        settings.state.path.display()
    );
    for m in mappings {
        out.push_str(&format!("  mapping {m}\n"));
    }
    Ok(out)
}

/// The CRMs switched on in the settings.
pub fn enabled_crms(settings: &Settings) -> Vec<crate::store::CrmKind> {
    let mut out = Vec::new();
    if settings.dynamics.enabled {
        out.push(crate::store::CrmKind::Dynamics);
    }
    if settings.salesforce.enabled {
        out.push(crate::store::CrmKind::Salesforce);
    }
    out
}

/// `config show`: the effective settings, secrets redacted.
pub fn config_show(settings: &Settings) -> String {
    settings.render()
}

fn empty_report() -> StatusReport {
    StatusReport {
        by_stage: Stage::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .chain(std::iter::once(("unknown".to_owned(), 0)))
            .collect(),
        links_by_crm: vec![("dynamics".into(), 0), ("salesforce".into(), 0)],
        ..Default::default()
    }
}

/// `status`: counts by tab and stage, cursors, recent runs, open failures.
pub fn status(settings: &Settings, as_json: bool) -> Result<String, CommandError> {
    let path = &settings.state.path;
    let (report, exists) = match Store::open_existing(path)? {
        Some(store) => (store.read(|r| r.status_report(5))?, true),
        None => (empty_report(), false),
    };
    if as_json {
        let mut v = serde_json::to_value(&report).unwrap_or(Value::Null);
        v["state_path"] = json!(path.display().to_string());
        v["state_exists"] = json!(exists);
        return Ok(format!("{v:#}\n"));
    }
    let mut o = String::new();
    o.push_str(&format!("State store   {}", path.display()));
    if exists {
        o.push_str(&format!(" (schema {})\n", report.schema_version));
    } else {
        o.push_str(" (not created yet: the first sync creates it)\n");
    }
    o.push_str(&format!(
        "\nReferrals     {} in total\n  inbound     {}\n  outbound    {}\n  favorites   {}\n",
        report.referrals_total, report.inbound, report.outbound, report.favorites
    ));
    o.push_str("\nBy stage\n");
    for (stage, n) in &report.by_stage {
        o.push_str(&format!("  {stage:<11} {n}\n"));
    }
    o.push_str("\nCRM links\n");
    for (crm, n) in &report.links_by_crm {
        o.push_str(&format!("  {crm:<11} {n}\n"));
    }
    o.push_str("\nCursors\n");
    if report.cursors.is_empty() {
        o.push_str("  (none yet)\n");
    }
    for (source, position) in &report.cursors {
        o.push_str(&format!("  {source:<15} {position}\n"));
    }
    o.push_str(&format!(
        "\nOutbox        {} pending effect(s)\nFailures      {} open",
        report.pending_effects, report.open_failures
    ));
    if report.open_failures > 0 {
        o.push_str(" (see `cosell-sync failures list`)");
    }
    o.push_str("\n\nLast runs\n");
    if report.last_runs.is_empty() {
        o.push_str("  (none yet)\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .last_runs
            .iter()
            .map(|r| {
                vec![
                    r.id.to_string(),
                    when(Some(r.started_at)),
                    r.finished_at
                        .map(|f| {
                            format!(
                                "{:.1}s",
                                (f - r.started_at).num_milliseconds() as f64 / 1000.0
                            )
                        })
                        .unwrap_or_else(|| "-".into()),
                    r.outcome.clone().unwrap_or_else(|| "unfinished".into()),
                ]
            })
            .collect();
        for line in table(&["RUN", "STARTED (UTC)", "TOOK", "OUTCOME"], &rows).lines() {
            o.push_str("  ");
            o.push_str(line);
            o.push('\n');
        }
    }
    Ok(o)
}

fn kind_of(s: &ReferralSnapshot) -> &'static str {
    match s.referral() {
        Ok(r) => DealKind::of(&r).as_str(),
        Err(_) => "-",
    }
}

/// `referrals list`.
pub fn referrals_list(
    settings: &Settings,
    filter: &ReferralFilter,
    as_json: bool,
) -> Result<String, CommandError> {
    let rows = match Store::open_existing(&settings.state.path)? {
        Some(store) => store.read(|r| r.list_referrals(filter))?,
        None => Vec::new(),
    };
    if as_json {
        let items: Vec<Value> = rows
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "name": s.name, "direction": s.direction, "stage": s.stage,
                    "status": s.status, "substatus": s.substatus, "kind": kind_of(s),
                    "favorite": s.favorite, "updated_at": s.updated_at, "deadline": s.deadline,
                    "locally_expired": s.locally_expired,
                })
            })
            .collect();
        return Ok(format!("{:#}\n", Value::Array(items)));
    }
    if rows.is_empty() {
        return Ok("no referrals match\n".into());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                match s.tab() {
                    crate::store::Tab::Inbound => "inbound".into(),
                    crate::store::Tab::Outbound => "outbound".into(),
                    crate::store::Tab::Other => "-".into(),
                },
                s.stage
                    .map(|st| st.as_str().to_owned())
                    .unwrap_or_else(|| format!("{}/{}", s.status, s.substatus)),
                kind_of(s).into(),
                if s.favorite {
                    "★".into()
                } else {
                    String::new()
                },
                when(s.updated_at),
                when(s.deadline),
                s.name.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "TAB",
            "STAGE",
            "KIND",
            "FAV",
            "UPDATED (UTC)",
            "DEADLINE (UTC)",
            "NAME",
        ],
        &cells,
    );
    out.push_str(&format!("{} referral(s)\n", rows.len()));
    Ok(out)
}

/// `referrals show ID`: the snapshot, its CRM links, failures and history.
pub fn referrals_show(
    settings: &Settings,
    id: &str,
    as_json: bool,
) -> Result<String, CommandError> {
    let not_found = || CommandError::NotFound {
        what: "referral",
        id: id.to_owned(),
        hint: " (see `cosell-sync referrals list`)",
    };
    let store = Store::open_existing(&settings.state.path)?.ok_or_else(not_found)?;
    let (snap, links, events, failures) = store.read(|r| {
        let snap = r.get_referral(id)?;
        let links = r.links_of_referral(id)?;
        let events = r.events_for(id)?;
        let failures: Vec<_> = r
            .list_failures(&[])?
            .into_iter()
            .filter(|f| f.record == id)
            .collect();
        Ok((snap, links, events, failures))
    })?;
    let snap = snap.ok_or_else(not_found)?;
    if as_json {
        let v =
            json!({ "referral": snap, "links": links, "failures": failures, "history": events });
        return Ok(format!("{v:#}\n"));
    }
    let mut o = String::new();
    let field = |o: &mut String, k: &str, v: String| o.push_str(&format!("{k:<16}{v}\n"));
    field(&mut o, "Referral", snap.id.clone());
    field(&mut o, "Name", snap.name.clone().unwrap_or_default());
    field(
        &mut o,
        "Direction",
        snap.direction.clone().unwrap_or_else(|| "-".into()),
    );
    field(&mut o, "Kind", kind_of(&snap).into());
    field(
        &mut o,
        "Stage",
        format!(
            "{} ({}/{}){}",
            snap.stage.map(|s| s.as_str()).unwrap_or("unknown"),
            snap.status,
            snap.substatus,
            if snap.locally_expired {
                ", expired locally by the 14-day rule"
            } else {
                ""
            }
        ),
    );
    field(
        &mut o,
        "Favorite",
        if snap.favorite {
            "yes".into()
        } else {
            "no".into()
        },
    );
    field(&mut o, "Created", when(snap.created_at));
    field(&mut o, "Updated", when(snap.updated_at));
    if snap.deadline.is_some() {
        field(&mut o, "Answer by", when(snap.deadline));
    }
    field(
        &mut o,
        "eTag",
        snap.etag.clone().unwrap_or_else(|| "-".into()),
    );
    o.push_str("\nCRM links\n");
    if links.is_empty() {
        o.push_str("  (none)\n");
    }
    for l in &links {
        o.push_str(&format!("  {:<11} {}\n", l.crm.as_str(), l.crm_id));
    }
    if !failures.is_empty() {
        o.push_str("\nFailures\n");
        for f in &failures {
            o.push_str(&format!(
                "  #{} {} [{}] {} attempt(s), {}: {}\n    hint: {}\n",
                f.id,
                f.side,
                f.state.as_str(),
                f.attempts,
                f.kind,
                f.message,
                f.hint
            ));
        }
    }
    o.push_str("\nHistory\n");
    if events.is_empty() {
        o.push_str("  (none yet)\n");
    }
    for e in &events {
        o.push_str(&format!(
            "  {}  {:<15} {:<10} {}\n",
            when(Some(e.at)),
            e.side,
            e.kind,
            e.message
        ));
    }
    Ok(o)
}

/// `failures list`: open ones by default, every one with `all`.
pub fn failures_list(
    settings: &Settings,
    all: bool,
    as_json: bool,
) -> Result<String, CommandError> {
    let states: &[FailureState] = if all {
        &[]
    } else {
        &[FailureState::Open, FailureState::Retrying]
    };
    let failures = match Store::open_existing(&settings.state.path)? {
        Some(store) => store.read(|r| r.list_failures(states))?,
        None => Vec::new(),
    };
    if as_json {
        return Ok(format!(
            "{:#}\n",
            serde_json::to_value(&failures).unwrap_or(Value::Null)
        ));
    }
    if failures.is_empty() {
        return Ok(if all {
            "no failures recorded\n".into()
        } else {
            "no open failures\n".into()
        });
    }
    let mut o = String::new();
    for f in &failures {
        o.push_str(&format!(
            "#{id} {side} {record} [{state}] {kind}, {attempts} attempt(s), last {last}\n  {message}\n  hint: {hint}\n",
            id = f.id,
            side = f.side,
            record = f.record,
            state = f.state.as_str(),
            kind = f.kind,
            attempts = f.attempts,
            last = when(Some(f.last_seen)),
            message = f.message,
            hint = f.hint,
        ));
        if let Some(raw) = &f.raw {
            let shown: String = raw.chars().take(200).collect();
            o.push_str(&format!(
                "  raw: {shown}{}\n",
                if raw.chars().count() > 200 { "…" } else { "" }
            ));
        }
    }
    o.push_str(&format!("{} failure(s)\n", failures.len()));
    Ok(o)
}

/// `failures retry ID`: puts a quarantined effect back in the outbox (or, for
/// a record that failed validation, marks it for another look).
pub fn failures_retry(settings: &Settings, id: i64) -> Result<String, CommandError> {
    let _lock = lock_store(settings, &format!("failures retry {id}"))?;
    let store = open_for_failures(settings, id)?;
    let now = Utc::now();
    store.write(|r| {
        let f = r.failure(id)?.ok_or(StoreError::NotFound {
            what: "failure",
            key: id.to_string(),
        })?;
        let effect = f
            .raw
            .as_deref()
            .and_then(|raw| serde_json::from_str::<Value>(raw).ok())
            .filter(|v| v.get("effect").is_some());
        let message = match effect {
            Some(v) => {
                let target = v["target"].as_str().unwrap_or(&f.side).to_owned();
                let operation = v["operation"].as_str().unwrap_or("retry").to_owned();
                r.upsert_effect(
                    &crate::store::NewEffect {
                        target,
                        operation,
                        record_key: f.record.clone(),
                        payload: v["effect"].clone(),
                    },
                    now,
                )?;
                format!(
                    "failure #{id} ({} on {}) is back in the outbox; the next sync cycle tries it again\n",
                    f.record, f.side
                )
            }
            None => format!(
                "failure #{id} ({} on {}) is marked for retry; the record is checked again when it changes or at the next full reconcile (`cosell-sync resync` runs one now)\n",
                f.record, f.side
            ),
        };
        r.set_failure_state(id, FailureState::Retrying)?;
        Ok(message)
    })
    .map_err(CommandError::from)
}

/// `failures ignore ID`: stop reporting a failure (a new, different failure
/// of the same record is reported again).
pub fn failures_ignore(settings: &Settings, id: i64) -> Result<String, CommandError> {
    let _lock = lock_store(settings, &format!("failures ignore {id}"))?;
    let store = open_for_failures(settings, id)?;
    store
        .write(|r| {
            let f = r.failure(id)?.ok_or(StoreError::NotFound {
                what: "failure",
                key: id.to_string(),
            })?;
            r.set_failure_state(id, FailureState::Ignored)?;
            Ok(format!(
                "failure #{id} ({} on {}) is ignored\n",
                f.record, f.side
            ))
        })
        .map_err(CommandError::from)
}

fn open_for_failures(settings: &Settings, id: i64) -> Result<Store, CommandError> {
    Store::open_existing(&settings.state.path)?.ok_or(CommandError::NotFound {
        what: "failure",
        id: format!("#{id}"),
        hint: " (see `cosell-sync failures list`)",
    })
}

/// The Partner Center client over the state store's refresh token.
pub fn partner_center_client(
    settings: &Settings,
    store: std::sync::Arc<Store>,
) -> Result<crate::partner_center::PartnerCenterClient, CommandError> {
    Ok(crate::sync::setup::build_partner_center(settings, store)?)
}

/// `login partner-center`: the device authorization grant; the refresh token
/// is kept in the state store. `prompt` shows the operator where to sign in.
pub async fn login_partner_center(
    settings: &Settings,
    prompt: impl FnOnce(&str),
) -> Result<String, CommandError> {
    use crate::partner_center::{PartnerCenterOptions, RefreshTokenStore, device_code_login};
    if settings.partner_center.client_id.trim().is_empty() {
        return Err(CommandError::ConfigProblems(vec![
            "`partner_center.client_id`: set the application (client) id of your Entra ID app registration".into(),
        ]));
    }
    // Held through the sign-in: the refresh token is written at the end.
    let _lock = lock_store_async(settings, "login partner-center").await?;
    let store = std::sync::Arc::new(Store::open(&settings.state.path)?);
    let options = PartnerCenterOptions::from_settings(&settings.partner_center);
    let token = device_code_login(&options, |p| {
        let text = match &p.message {
            Some(m) => m.clone(),
            None => format!(
                "To sign in, open {} and enter the code {}",
                p.verification_uri, p.user_code
            ),
        };
        prompt(&format!(
            "{text}\n(Sign in with an account that has the Referrals Admin role; the code expires in {}.)",
            humantime::format_duration(p.expires_in)
        ));
    })
    .await?;
    let tokens = crate::store::StoredRefreshToken::new(store, None);
    tokens.save(&token).map_err(|e| {
        CommandError::Store(StoreError::Corrupt {
            what: "refresh token",
            detail: e.to_string(),
        })
    })?;
    tracing::info!("Partner Center sign-in stored");
    Ok(format!(
        "signed in to Partner Center; the refresh token is kept in the state store {}\n",
        settings.state.path.display()
    ))
}

/// `referrals favorite ID [--off]`: patches `favorite` in Partner Center
/// (with `If-Match`), then records it locally.
pub async fn referrals_favorite(
    settings: &Settings,
    id: &str,
    on: bool,
) -> Result<String, CommandError> {
    let not_found = || CommandError::NotFound {
        what: "referral",
        id: id.to_owned(),
        hint: " (see `cosell-sync referrals list`; run a sync first)",
    };
    let command = format!("referrals favorite {id}{}", if on { "" } else { " --off" });
    let _lock = lock_store_async(settings, &command).await?;
    let store =
        std::sync::Arc::new(Store::open_existing(&settings.state.path)?.ok_or_else(not_found)?);
    let snap = store.read(|r| r.get_referral(id))?.ok_or_else(not_found)?;
    let referral = snap.referral().map_err(|e| {
        CommandError::Store(StoreError::Corrupt {
            what: "referral snapshot",
            detail: e.to_string(),
        })
    })?;
    let client = partner_center_client(settings, store.clone())?;
    let client = client.with_correlation_id(uuid::Uuid::new_v4());
    let updated = match client.set_favorite(&referral, on).await {
        Ok(updated) => updated,
        Err(crate::partner_center::PartnerCenterError::ModifiedConcurrently { .. }) => {
            // Someone changed it since our last read: read it again and retry once.
            let fresh = client.get(id).await?;
            client.set_favorite(&fresh, on).await?.or(Some(fresh))
        }
        Err(e) => return Err(e.into()),
    };
    let now = Utc::now();
    store.write(|r| {
        if let Some(fresh) = &updated {
            let mut s = ReferralSnapshot::from_referral(fresh, settings.sync.expiry_days, now);
            s.favorite = on;
            s.first_seen = snap.first_seen;
            r.upsert_referral(&s)?;
        }
        r.set_favorite(id, on)?;
        r.append_event(
            id,
            now,
            "partner_center",
            "favorite",
            if on {
                "marked as favorite"
            } else {
                "removed from favorites"
            },
            None,
        )?;
        Ok(())
    })?;
    Ok(format!(
        "referral {id} {} favorites\n",
        if on { "added to" } else { "removed from" }
    ))
}

// ---- bench ----------------------------------------------------------------------

/// `bench`: the benchmark scenarios against the in-process simulator; the
/// tables are printed and the JSON result written to `out`.
pub async fn bench(
    sizes: Option<Vec<usize>>,
    out: &std::path::Path,
    smoke: bool,
    in_process: bool,
    engine: Option<std::path::PathBuf>,
    say: impl FnMut(&str),
) -> Result<String, CommandError> {
    let mut opts = if smoke {
        crate::bench::BenchOptions::smoke()
    } else {
        crate::bench::BenchOptions::standard()
    };
    if let Some(sizes) = sizes {
        opts.sizes = sizes;
    }
    if !in_process {
        opts.engine_binary = engine.or_else(|| std::env::current_exe().ok());
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

// ---- run ------------------------------------------------------------------------

/// `run`: the daemon. `load` reads the settings (again on every SIGHUP).
pub async fn run_daemon(
    settings: &Settings,
    load: impl Fn() -> Result<Settings, ConfigError> + Send + Sync + 'static,
) -> Result<String, CommandError> {
    use std::sync::Arc;
    // Held for the daemon's whole life. A SIGHUP reload that changes
    // `state.path` is only warned about (it takes effect after a restart),
    // so this lock stays the one on the store in use.
    let _lock = lock_store_async(settings, "run").await?;
    crate::ops::metrics::install()?;
    let store = Arc::new(Store::open(&settings.state.path)?);
    let heartbeat = crate::ops::Heartbeat::new();
    let options = crate::ops::DaemonOptions {
        heartbeat: heartbeat.clone(),
        ..Default::default()
    };
    let engine_store = store.clone();
    let factory =
        move |s: &Settings| -> Result<crate::sync::Engine, crate::sync::setup::SetupError> {
            let hb = heartbeat.clone();
            Ok(crate::sync::setup::build_engine(
                s,
                engine_store.clone(),
                Arc::new(crate::sync::SystemClock),
            )?
            .with_progress(Arc::new(move |_| hb.touch())))
        };
    crate::ops::Daemon::with_options(load, factory, store, options)
        .run_with_signals()
        .await?;
    Ok(String::new())
}

// ---- sync, resync, simulate ------------------------------------------------------

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

/// `sync --once [--dry-run]` and `resync [--since DATE]`: one cycle.
/// `command` names it in the store's lock file (`sync --once`, `resync`).
pub async fn sync_once(
    settings: &Settings,
    opts: crate::sync::CycleOptions,
    command: &str,
    as_json: bool,
) -> Result<String, CommandError> {
    // A dry run plans and changes no sync state, so it neither waits for nor
    // takes the writer lock; only a refresh token that Entra ID rotates while
    // signing in is kept (losing it would sign us out).
    let _lock = if opts.dry_run {
        None
    } else {
        Some(lock_store_async(settings, command).await?)
    };
    let store = std::sync::Arc::new(Store::open(&settings.state.path)?);
    let progress = std::sync::Arc::new(crate::ops::Progress::new("records read", None));
    let bar = progress.clone();
    let engine = crate::sync::setup::build_engine(
        settings,
        store,
        std::sync::Arc::new(crate::sync::SystemClock),
    )?
    .with_progress(std::sync::Arc::new(move |n| {
        if n > 0 {
            bar.inc(n);
        }
    }));
    let summary = engine.run_cycle(&opts).await;
    progress.finish();
    let summary = summary?;
    let mut out = if as_json {
        format!(
            "{:#}\n",
            serde_json::to_value(&summary).unwrap_or(Value::Null)
        )
    } else {
        let mut o = String::new();
        if opts.dry_run {
            o.push_str("dry run: nothing was written anywhere (the state store included)\n\n");
            if summary.planned.is_empty() {
                o.push_str("planned operations: none\n\n");
            } else {
                o.push_str(&format!(
                    "planned operations ({}):\n",
                    summary.planned.len()
                ));
                for p in &summary.planned {
                    o.push_str(&format!("  {p}\n"));
                }
                o.push('\n');
            }
        }
        o.push_str(&render_summary(&summary));
        o
    };
    if !summary.errors.is_empty() {
        // The cycle ran, but a side could not be synced at all.
        return Err(CommandError::Incomplete {
            report: std::mem::take(&mut out),
            reason: format!(
                "the cycle could not sync every side: {}",
                summary
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }
    Ok(out)
}

/// Parses `--since` as a date (`2025-03-01`) or an RFC 3339 date-time.
pub fn parse_since(s: &str) -> Result<chrono::DateTime<Utc>, String> {
    crate::domain::referral::api_datetime::parse(s).ok_or_else(|| {
        format!("{s:?} is not a date (2025-03-01) or a date-time (2025-03-01T10:00:00Z)")
    })
}

/// `config validate --online`: the offline checks, then each enabled CRM's
/// metadata (fields, external id / alternate key, stage values) and a
/// Partner Center sign-in with one listing call. Notes (what many orgs lack
/// and the sync does without) are printed and keep the exit code 0.
pub async fn config_validate_online(settings: &Settings) -> Result<String, CommandError> {
    let mut out = config_validate(settings)?;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for side in crate::sync::setup::build_crms(settings)? {
        match side.crm.check_metadata().await {
            Ok(found) => {
                let (errors, side_notes): (Vec<_>, Vec<_>) =
                    found.into_iter().partition(|p| p.is_error());
                if errors.is_empty() && side_notes.is_empty() {
                    out.push_str(&format!(
                        "  {}: every mapped field, the external id and every stage value exist\n",
                        side.kind
                    ));
                } else if errors.is_empty() {
                    out.push_str(&format!(
                        "  {}: the external id, every stage value and every field the sync needs exist\n",
                        side.kind
                    ));
                }
                problems.extend(errors.into_iter().map(|p| format!("{}: {p}", side.kind)));
                notes.extend(
                    side_notes
                        .into_iter()
                        .map(|p| format!("{}: note: {p}", side.kind)),
                );
            }
            Err(e) => {
                return Err(CommandError::Failed(format!(
                    "{}: {e} (hint: {})",
                    side.kind,
                    e.hint()
                )));
            }
        }
    }
    // Signing in may rotate the refresh token: it is kept in the state store.
    let store = std::sync::Arc::new(Store::open(&settings.state.path)?);
    let pc = partner_center_client(settings, store)?;
    let mut pager = pc.list_changes(Utc::now(), crate::partner_center::ListFilter::default());
    match pager.next_page().await {
        Ok(_) => out.push_str("  partner_center: signed in; the Referrals API answers\n"),
        Err(e) => return Err(CommandError::PartnerCenter(e)),
    }
    if !problems.is_empty() {
        problems.extend(notes);
        return Err(CommandError::ConfigProblems(problems));
    }
    for note in notes {
        out.push_str(&format!("  {note}\n"));
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

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
