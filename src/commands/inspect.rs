//! The read-only verbs: `status`, `referrals list|show`, `failures list`,
//! `config show|validate`. None of them takes the store's writer lock, and
//! none writes to the state store (`config validate --online` only keeps a
//! refresh token that Entra ID rotates while it signs in).

use chrono::Utc;
use serde_json::{Value, json};

use super::{CommandError, partner_center_client, table, when};
use crate::config::Settings;
use crate::domain::{DealKind, Stage};
use crate::store::{FailureState, ReferralFilter, ReferralSnapshot, StatusReport, Store};

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
    let (report, tenant, organization, exists) = match Store::open_existing(path)? {
        Some(store) => {
            let (report, tenant, organization) = store.read(|r| {
                Ok((
                    r.status_report(5)?,
                    r.tenant()?,
                    r.partner_center_organization()?,
                ))
            })?;
            (report, tenant, organization, true)
        }
        None => (empty_report(), None, None, false),
    };
    if as_json {
        let mut v = serde_json::to_value(&report).unwrap_or(Value::Null);
        v["state_path"] = json!(path.display().to_string());
        v["state_exists"] = json!(exists);
        v["tenant"] = serde_json::to_value(&tenant).unwrap_or(Value::Null);
        v["partner_center_organization"] =
            serde_json::to_value(&organization).unwrap_or(Value::Null);
        return Ok(format!("{v:#}\n"));
    }
    let mut o = String::new();
    o.push_str(&format!("State store   {}", path.display()));
    if exists {
        o.push_str(&format!(" (schema {})\n", report.schema_version));
    } else {
        o.push_str(" (not created yet: the first sync creates it)\n");
    }
    match &tenant {
        Some(t) => {
            o.push_str(&format!(
                "Tenant        first synced {} with\n  partner_center  {}\n",
                t.since.format("%Y-%m-%d %H:%M UTC"),
                t.identity.partner_center
            ));
            for (kind, org) in &t.identity.crm {
                o.push_str(&format!("  {kind:<15} {org}\n"));
            }
        }
        None => o.push_str("Tenant        (not recorded yet: the first sync records it)\n"),
    }
    if let Some(org) = &organization {
        o.push_str(&format!(
            "  organization    {}{} (as its referrals name it)\n",
            org.id,
            org.name
                .as_deref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default()
        ));
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
