//! The verbs that write: `run` (the daemon), `sync --once`, `resync`,
//! `failures retry|ignore`, `referrals favorite`, `login partner-center`.
//! Each holds the store's writer lock while it runs (DESIGN.md guarantee 8).

use chrono::Utc;
use serde_json::Value;

use super::{CommandError, lock_store, lock_store_async, partner_center_client, render_summary};
use crate::config::{ConfigError, Settings};
use crate::store::{CrmKind, ReferralSnapshot, Store, StoreError};
use crate::sync::Retried;

/// `failures retry ID`: puts a quarantined effect back in the outbox (or, for
/// a record that failed validation, marks it for another look).
pub fn failures_retry(settings: &Settings, id: i64) -> Result<String, CommandError> {
    let _lock = lock_store(settings, &format!("failures retry {id}"))?;
    let store = open_for_failures(settings, id)?;
    let now = Utc::now();
    // A quarantined Partner Center update is decided again with its CRM's
    // mapping before it goes back.
    let mut mappings = Vec::new();
    for (kind, enabled) in [
        (CrmKind::Dynamics, settings.dynamics.enabled),
        (CrmKind::Salesforce, settings.salesforce.enabled),
    ] {
        if enabled {
            mappings.push((kind, crate::sync::setup::load_mapping(settings, kind)?));
        }
    }
    let mappings: Vec<_> = mappings.iter().map(|(k, m)| (*k, m)).collect();
    store
        .write(|r| {
            let (f, retried) = crate::sync::retry_failure(r, id, now, &mappings)?;
            Ok(match retried {
                Retried::Queued => format!(
                    "failure #{id} ({} on {}) is back in the outbox; the next sync cycle tries it again\n",
                    f.record, f.side
                ),
                Retried::NothingLeft => format!(
                    "failure #{id} ({} on {}) is resolved: decided again, nothing is left to send (Partner Center holds the CRM's values, or a conflict settled since kept Partner Center's)\n",
                    f.record, f.side
                ),
                Retried::Marked => format!(
                    "failure #{id} ({} on {}) is marked for retry; the record is checked again when it changes or at the next full reconcile (`cosell-sync resync` runs one now)\n",
                    f.record, f.side
                ),
            })
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
            let f = crate::sync::ignore_failure(r, id)?;
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

/// `login partner-center`: the device authorization grant; the refresh token
/// is kept in the state store. `prompt` shows the operator where to sign in.
pub async fn login_partner_center(
    settings: &Settings,
    prompt: impl FnOnce(&str),
) -> Result<String, CommandError> {
    use crate::partner_center::{PartnerCenterOptions, device_code_login};
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
    super::check_tenant(settings, &store, false)?;
    let heartbeat = crate::ops::Heartbeat::new();
    let options = crate::ops::DaemonOptions {
        heartbeat: heartbeat.clone(),
        ..Default::default()
    };
    let engine_store = store.clone();
    let factory =
        move |s: &Settings| -> Result<crate::sync::Engine, crate::sync::setup::SetupError> {
            let hb = heartbeat.clone();
            // A reload that points at another tenant is rejected like any
            // invalid configuration: the running one keeps going.
            super::check_tenant(s, &engine_store, false).map_err(|e| {
                crate::config::ConfigError::Invalid {
                    key: "tenant".into(),
                    origin: "the reloaded settings".into(),
                    message: e.to_string(),
                }
            })?;
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
    super::check_tenant(settings, &store, opts.dry_run)?;
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
