//! Repository methods over one connection or transaction.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::models::*;
use super::{StoreError, classify, parse_ts, ts};
use crate::domain::Stage;

/// Queries and changes, used inside [`super::Store::read`] / [`super::Store::write`].
pub struct Repo<'c> {
    conn: &'c Connection,
}

impl Repo<'_> {
    /// Runs a statement, parsed once per connection and kept.
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute(params)
    }

    /// Reads one row with a statement parsed once per connection.
    fn row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.conn.prepare_cached(sql)?.query_row(params, f)
    }
}

fn opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.map(|s| parse_ts(&s)).transpose()
}

fn json(s: &str, what: &'static str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// Rows as SQLite returns them, before timestamps and JSON are parsed.
struct RawLink {
    crm: String,
    crm_id: String,
    referral_id: Option<String>,
    crm_hash: Option<String>,
    crm_version: Option<String>,
    pc_hash: Option<String>,
    pc_version: Option<String>,
    created_at: String,
    updated_at: String,
    crm_fields: Option<String>,
    help_requested_at: Option<String>,
}

struct RawOutbox {
    id: i64,
    target: String,
    operation: String,
    record_key: String,
    payload: String,
    attempts: u32,
    next_attempt_at: String,
    last_error: Option<String>,
    created_at: String,
    sent_at: Option<String>,
}

struct RawFailure {
    id: i64,
    record: String,
    side: String,
    kind: String,
    message: String,
    hint: String,
    raw: Option<String>,
    attempts: u32,
    first_seen: String,
    last_seen: String,
    state: String,
}

const SNAPSHOT_COLUMNS: &str = "id, etag, status, substatus, stage, direction, referral_type, name, \
     created_at, updated_at, deadline, projection_hash, raw_json, favorite, locally_expired, first_seen, last_seen";

const LINK_COLUMNS: &str = "crm, crm_id, referral_id, crm_hash, crm_version, pc_hash, pc_version, created_at, updated_at, \
     crm_fields, help_requested_at";

const OUTBOX_COLUMNS: &str = "id, target, operation, record_key, payload, attempts, next_attempt_at, last_error, created_at, sent_at";

const FAILURE_COLUMNS: &str =
    "id, record, side, kind, message, hint, raw, attempts, first_seen, last_seen, state";

impl<'c> Repo<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Repo { conn }
    }

    // ---- referral snapshots ------------------------------------------------

    /// Inserts or replaces a snapshot; `first_seen`, `favorite` and
    /// `locally_expired` of an existing row are kept unless the new snapshot
    /// sets them.
    pub fn upsert_referral(&self, s: &ReferralSnapshot) -> Result<(), StoreError> {
        self.exec(
                "INSERT INTO referrals (id, etag, status, substatus, stage, direction, referral_type, name,
                    created_at, updated_at, deadline, projection_hash, raw_json, favorite, locally_expired,
                    first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
                 ON CONFLICT(id) DO UPDATE SET
                    etag = excluded.etag, status = excluded.status, substatus = excluded.substatus,
                    stage = excluded.stage, direction = excluded.direction,
                    referral_type = excluded.referral_type, name = excluded.name,
                    created_at = excluded.created_at, updated_at = excluded.updated_at,
                    deadline = excluded.deadline,
                    projection_hash = COALESCE(excluded.projection_hash, referrals.projection_hash),
                    raw_json = excluded.raw_json, favorite = excluded.favorite,
                    locally_expired = MAX(referrals.locally_expired, excluded.locally_expired),
                    last_seen = excluded.last_seen",
                params![
                    s.id,
                    s.etag,
                    s.status,
                    s.substatus,
                    s.stage.map(Stage::as_str),
                    s.direction,
                    s.referral_type,
                    s.name,
                    s.created_at.map(ts),
                    s.updated_at.map(ts),
                    s.deadline.map(ts),
                    s.projection_hash,
                    s.raw.to_string(),
                    s.favorite,
                    s.locally_expired,
                    ts(s.first_seen),
                    ts(s.last_seen),
                ],
            )
            .map_err(|e| classify(e, "referral"))?;
        Ok(())
    }

    fn snapshot_row(row: &Row<'_>) -> rusqlite::Result<[Option<String>; 17]> {
        let mut out: [Option<String>; 17] = Default::default();
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = match row.get_ref(i)? {
                rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                rusqlite::types::ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                _ => None,
            };
        }
        Ok(out)
    }

    fn snapshot_from(cols: [Option<String>; 17]) -> Result<ReferralSnapshot, StoreError> {
        let [
            id,
            etag,
            status,
            substatus,
            stage,
            direction,
            referral_type,
            name,
            created_at,
            updated_at,
            deadline,
            projection_hash,
            raw,
            favorite,
            locally_expired,
            first_seen,
            last_seen,
        ] = cols;
        let required = |v: Option<String>, what: &'static str| {
            v.ok_or(StoreError::Corrupt {
                what,
                detail: "missing".into(),
            })
        };
        Ok(ReferralSnapshot {
            id: required(id, "referral id")?,
            etag,
            status: required(status, "referral status")?,
            substatus: required(substatus, "referral substatus")?,
            stage: stage.as_deref().and_then(Stage::parse),
            direction,
            referral_type,
            name,
            created_at: opt_ts(created_at)?,
            updated_at: opt_ts(updated_at)?,
            deadline: opt_ts(deadline)?,
            projection_hash,
            raw: json(&required(raw, "referral JSON")?, "referral JSON")?,
            favorite: favorite.as_deref() == Some("1"),
            locally_expired: locally_expired.as_deref() == Some("1"),
            first_seen: parse_ts(&required(first_seen, "first_seen")?)?,
            last_seen: parse_ts(&required(last_seen, "last_seen")?)?,
        })
    }

    pub fn get_referral(&self, id: &str) -> Result<Option<ReferralSnapshot>, StoreError> {
        let cols = self
            .row(
                &format!("SELECT {SNAPSHOT_COLUMNS} FROM referrals WHERE id = ?1"),
                [id],
                Self::snapshot_row,
            )
            .optional()?;
        cols.map(Self::snapshot_from).transpose()
    }

    /// Referrals matching a filter, most recently updated first. The tab
    /// flags combine with OR; no flag means every tab.
    pub fn list_referrals(&self, f: &ReferralFilter) -> Result<Vec<ReferralSnapshot>, StoreError> {
        let mut tabs = Vec::new();
        if f.inbound {
            tabs.push("direction = 'Incoming'");
        }
        if f.outbound {
            tabs.push("direction = 'Outgoing'");
        }
        if f.favorites {
            tabs.push("favorite = 1");
        }
        let mut sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM referrals WHERE 1 = 1");
        if !tabs.is_empty() {
            sql.push_str(&format!(" AND ({})", tabs.join(" OR ")));
        }
        if f.stage.is_some() {
            sql.push_str(" AND stage = ?1");
        }
        sql.push_str(" ORDER BY COALESCE(updated_at, first_seen) DESC, id");
        if let Some(limit) = f.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = match f.stage {
            Some(stage) => stmt
                .query_map([stage.as_str()], Self::snapshot_row)?
                .collect::<Result<Vec<_>, _>>()?,
            None => stmt
                .query_map([], Self::snapshot_row)?
                .collect::<Result<Vec<_>, _>>()?,
        };
        rows.into_iter().map(Self::snapshot_from).collect()
    }

    /// Received inbound referrals whose deadline is at or before `now`.
    pub fn referrals_past_deadline(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReferralSnapshot>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM referrals INDEXED BY referrals_open_deadline
             WHERE stage = 'received' AND locally_expired = 0 AND deadline IS NOT NULL AND deadline <= ?1
             ORDER BY deadline"
        ))?;
        let rows = stmt
            .query_map([ts(now)], Self::snapshot_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(Self::snapshot_from).collect()
    }

    pub fn set_favorite(&self, id: &str, favorite: bool) -> Result<(), StoreError> {
        let n = self.exec(
            "UPDATE referrals SET favorite = ?2 WHERE id = ?1",
            params![id, favorite],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "referral",
                key: id.to_owned(),
            });
        }
        Ok(())
    }

    pub fn mark_locally_expired(&self, id: &str) -> Result<(), StoreError> {
        let n = self.exec(
            "UPDATE referrals SET locally_expired = 1, stage = 'expired' WHERE id = ?1",
            [id],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "referral",
                key: id.to_owned(),
            });
        }
        Ok(())
    }

    // ---- links ---------------------------------------------------------------

    /// Inserts a new link; a second link for the same CRM record or for the
    /// same referral in the same CRM is a [`StoreError::Duplicate`].
    pub fn insert_link(&self, l: &Link) -> Result<(), StoreError> {
        self.exec(
                &format!(
                    "INSERT INTO links ({LINK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    l.crm.as_str(),
                    l.crm_id,
                    l.referral_id,
                    l.crm_hash,
                    l.crm_version,
                    l.pc_hash,
                    l.pc_version,
                    ts(l.created_at),
                    ts(l.updated_at),
                    l.crm_fields.as_ref().map(Value::to_string),
                    l.help_requested_at.map(ts),
                ],
            )
            .map_err(|e| classify(e, "link"))?;
        Ok(())
    }

    /// Updates the hashes, versions and referral id of an existing link.
    pub fn update_link(&self, l: &Link) -> Result<(), StoreError> {
        let n = self
            .exec(
                "UPDATE links SET referral_id = ?3, crm_hash = ?4, crm_version = ?5, pc_hash = ?6,
                    pc_version = ?7, updated_at = ?8, crm_fields = ?9, help_requested_at = ?10
                 WHERE crm = ?1 AND crm_id = ?2",
                params![
                    l.crm.as_str(),
                    l.crm_id,
                    l.referral_id,
                    l.crm_hash,
                    l.crm_version,
                    l.pc_hash,
                    l.pc_version,
                    ts(l.updated_at),
                    l.crm_fields.as_ref().map(Value::to_string),
                    l.help_requested_at.map(ts),
                ],
            )
            .map_err(|e| classify(e, "link"))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "link",
                key: format!("{}:{}", l.crm, l.crm_id),
            });
        }
        Ok(())
    }

    fn link_from(row: &Row<'_>) -> rusqlite::Result<RawLink> {
        Ok(RawLink {
            crm: row.get(0)?,
            crm_id: row.get(1)?,
            referral_id: row.get(2)?,
            crm_hash: row.get(3)?,
            crm_version: row.get(4)?,
            pc_hash: row.get(5)?,
            pc_version: row.get(6)?,
            created_at: row.get(7)?,
            updated_at: row.get(8)?,
            crm_fields: row.get(9)?,
            help_requested_at: row.get(10)?,
        })
    }

    fn link_build(raw: RawLink) -> Result<Link, StoreError> {
        Ok(Link {
            crm: CrmKind::parse(&raw.crm).ok_or(StoreError::Corrupt {
                what: "link",
                detail: format!("unknown CRM {:?}", raw.crm),
            })?,
            crm_id: raw.crm_id,
            referral_id: raw.referral_id,
            crm_hash: raw.crm_hash,
            crm_version: raw.crm_version,
            pc_hash: raw.pc_hash,
            pc_version: raw.pc_version,
            crm_fields: raw
                .crm_fields
                .map(|f| json(&f, "link CRM fields"))
                .transpose()?,
            help_requested_at: opt_ts(raw.help_requested_at)?,
            created_at: parse_ts(&raw.created_at)?,
            updated_at: parse_ts(&raw.updated_at)?,
        })
    }

    pub fn link_by_crm_id(&self, crm: CrmKind, crm_id: &str) -> Result<Option<Link>, StoreError> {
        self.row(
            &format!("SELECT {LINK_COLUMNS} FROM links WHERE crm = ?1 AND crm_id = ?2"),
            params![crm.as_str(), crm_id],
            Self::link_from,
        )
        .optional()?
        .map(Self::link_build)
        .transpose()
    }

    pub fn link_by_referral(
        &self,
        crm: CrmKind,
        referral_id: &str,
    ) -> Result<Option<Link>, StoreError> {
        self.row(
            &format!("SELECT {LINK_COLUMNS} FROM links WHERE crm = ?1 AND referral_id = ?2"),
            params![crm.as_str(), referral_id],
            Self::link_from,
        )
        .optional()?
        .map(Self::link_build)
        .transpose()
    }

    /// Every link of a referral, one per CRM.
    pub fn links_of_referral(&self, referral_id: &str) -> Result<Vec<Link>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LINK_COLUMNS} FROM links WHERE referral_id = ?1 ORDER BY crm"
        ))?;
        let rows = stmt
            .query_map([referral_id], Self::link_from)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(Self::link_build).collect()
    }

    // ---- cursors -------------------------------------------------------------

    pub fn cursor(&self, source: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .row(
                "SELECT position FROM cursors WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_cursor(
        &self,
        source: &str,
        position: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO cursors (source, position, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(source) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
            params![source, position, ts(now)],
        )?;
        Ok(())
    }

    pub fn cursors(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT source, position FROM cursors ORDER BY source")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // ---- outbox --------------------------------------------------------------

    pub fn enqueue(&self, e: &NewEffect, now: DateTime<Utc>) -> Result<i64, StoreError> {
        self.exec(
            "INSERT INTO outbox (target, operation, record_key, payload, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![e.target, e.operation, e.record_key, e.payload.to_string(), ts(now)],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn outbox_from(row: &Row<'_>) -> rusqlite::Result<RawOutbox> {
        Ok(RawOutbox {
            id: row.get(0)?,
            target: row.get(1)?,
            operation: row.get(2)?,
            record_key: row.get(3)?,
            payload: row.get(4)?,
            attempts: row.get(5)?,
            next_attempt_at: row.get(6)?,
            last_error: row.get(7)?,
            created_at: row.get(8)?,
            sent_at: row.get(9)?,
        })
    }

    fn outbox_build(raw: RawOutbox) -> Result<OutboxEntry, StoreError> {
        Ok(OutboxEntry {
            id: raw.id,
            target: raw.target,
            operation: raw.operation,
            record_key: raw.record_key,
            payload: json(&raw.payload, "outbox payload")?,
            attempts: raw.attempts,
            next_attempt_at: parse_ts(&raw.next_attempt_at)?,
            last_error: raw.last_error,
            created_at: parse_ts(&raw.created_at)?,
            sent_at: raw.sent_at.as_deref().map(parse_ts).transpose()?,
        })
    }

    /// Effects due at `now`, oldest first.
    pub fn due_effects(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE next_attempt_at <= ?1 ORDER BY id LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![ts(now), limit as i64], Self::outbox_from)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(Self::outbox_build).collect()
    }

    /// Every pending effect, oldest first.
    pub fn pending_effects(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY id"))?;
        let rows = stmt
            .query_map([], Self::outbox_from)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(Self::outbox_build).collect()
    }

    /// Records, before they are sent, that these effects may reach the
    /// service from now on: a create marked so is looked up before it is
    /// sent again (it may have been made before a crash).
    pub fn mark_sent(&self, ids: &[i64], now: DateTime<Utc>) -> Result<(), StoreError> {
        for id in ids {
            self.exec(
                "UPDATE outbox SET sent_at = ?2 WHERE id = ?1 AND sent_at IS NULL",
                params![id, ts(now)],
            )?;
        }
        Ok(())
    }

    /// Removes an effect that is done.
    pub fn complete_effect(&self, id: i64) -> Result<(), StoreError> {
        self.exec("DELETE FROM outbox WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Records a failed attempt and when to try next; returns the attempts so far.
    pub fn retry_effect_later(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        self.row(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3
                 WHERE id = ?1 RETURNING attempts",
            params![id, error, ts(next_attempt_at)],
            |r| r.get(0),
        )
        .optional()?
        .ok_or(StoreError::NotFound {
            what: "outbox entry",
            key: id.to_string(),
        })
    }

    // ---- failures ------------------------------------------------------------

    /// Records a failure, or another occurrence of an open one (same record
    /// and side): attempts go up, message and hint are refreshed.
    pub fn record_failure(
        &self,
        f: &NewFailure,
        now: DateTime<Utc>,
    ) -> Result<Failure, StoreError> {
        self.exec(
            "INSERT INTO failures (record, side, kind, message, hint, raw, attempts, first_seen, last_seen, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7, 'open')
             ON CONFLICT(record, side) DO UPDATE SET
                kind = excluded.kind, message = excluded.message, hint = excluded.hint,
                raw = COALESCE(excluded.raw, failures.raw),
                attempts = CASE WHEN failures.state IN ('resolved', 'ignored') THEN 1 ELSE failures.attempts + 1 END,
                first_seen = CASE WHEN failures.state = 'resolved' THEN excluded.first_seen ELSE failures.first_seen END,
                last_seen = excluded.last_seen,
                state = CASE WHEN failures.state = 'ignored' THEN 'ignored' ELSE 'open' END",
            params![f.record, f.side, f.kind, f.message, f.hint, f.raw, ts(now)],
        )?;
        self.failure_for(&f.record, &f.side)?
            .ok_or(StoreError::NotFound {
                what: "failure",
                key: f.record.clone(),
            })
    }

    fn failure_from(row: &Row<'_>) -> rusqlite::Result<RawFailure> {
        Ok(RawFailure {
            id: row.get(0)?,
            record: row.get(1)?,
            side: row.get(2)?,
            kind: row.get(3)?,
            message: row.get(4)?,
            hint: row.get(5)?,
            raw: row.get(6)?,
            attempts: row.get(7)?,
            first_seen: row.get(8)?,
            last_seen: row.get(9)?,
            state: row.get(10)?,
        })
    }

    fn failure_build(raw: RawFailure) -> Result<Failure, StoreError> {
        Ok(Failure {
            id: raw.id,
            record: raw.record,
            side: raw.side,
            kind: raw.kind,
            message: raw.message,
            hint: raw.hint,
            raw: raw.raw,
            attempts: raw.attempts,
            first_seen: parse_ts(&raw.first_seen)?,
            last_seen: parse_ts(&raw.last_seen)?,
            state: FailureState::parse(&raw.state).ok_or(StoreError::Corrupt {
                what: "failure state",
                detail: raw.state.clone(),
            })?,
        })
    }

    pub fn failure_for(&self, record: &str, side: &str) -> Result<Option<Failure>, StoreError> {
        self.row(
            &format!("SELECT {FAILURE_COLUMNS} FROM failures WHERE record = ?1 AND side = ?2"),
            params![record, side],
            Self::failure_from,
        )
        .optional()?
        .map(Self::failure_build)
        .transpose()
    }

    pub fn failure(&self, id: i64) -> Result<Option<Failure>, StoreError> {
        self.row(
            &format!("SELECT {FAILURE_COLUMNS} FROM failures WHERE id = ?1"),
            [id],
            Self::failure_from,
        )
        .optional()?
        .map(Self::failure_build)
        .transpose()
    }

    /// Failures in the given states (all when empty), newest first.
    pub fn list_failures(&self, states: &[FailureState]) -> Result<Vec<Failure>, StoreError> {
        let mut sql = format!("SELECT {FAILURE_COLUMNS} FROM failures");
        if !states.is_empty() {
            let list = states
                .iter()
                .map(|s| format!("'{}'", s.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            sql.push_str(&format!(" WHERE state IN ({list})"));
        }
        sql.push_str(" ORDER BY last_seen DESC, id DESC");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map([], Self::failure_from)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(Self::failure_build).collect()
    }

    pub fn set_failure_state(&self, id: i64, state: FailureState) -> Result<(), StoreError> {
        let n = self.exec(
            "UPDATE failures SET state = ?2, attempts = CASE WHEN ?2 = 'retrying' THEN 0 ELSE attempts END
             WHERE id = ?1",
            params![id, state.as_str()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "failure",
                key: id.to_string(),
            });
        }
        Ok(())
    }

    /// Marks a record's failure on one side resolved (it synced since).
    pub fn resolve_failure(&self, record: &str, side: &str) -> Result<bool, StoreError> {
        let n = self.exec(
            "UPDATE failures SET state = 'resolved' WHERE record = ?1 AND side = ?2 AND state IN ('open', 'retrying')",
            params![record, side],
        )?;
        Ok(n > 0)
    }

    // ---- run history -----------------------------------------------------------

    pub fn start_run(&self, now: DateTime<Utc>) -> Result<i64, StoreError> {
        self.exec("INSERT INTO runs (started_at) VALUES (?1)", [ts(now)])?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(
        &self,
        id: i64,
        now: DateTime<Utc>,
        outcome: &str,
        summary: &Value,
    ) -> Result<(), StoreError> {
        let n = self.exec(
            "UPDATE runs SET finished_at = ?2, outcome = ?3, summary = ?4 WHERE id = ?1",
            params![id, ts(now), outcome, summary.to_string()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "run",
                key: id.to_string(),
            });
        }
        Ok(())
    }

    pub fn last_runs(&self, limit: usize) -> Result<Vec<Run>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, started_at, finished_at, outcome, summary FROM runs ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, started, finished, outcome, summary)| {
                Ok(Run {
                    id,
                    started_at: parse_ts(&started)?,
                    finished_at: opt_ts(finished)?,
                    outcome,
                    summary: summary.map(|s| json(&s, "run summary")).transpose()?,
                })
            })
            .collect()
    }

    // ---- events ------------------------------------------------------------------

    pub fn append_event(
        &self,
        referral_id: &str,
        at: DateTime<Utc>,
        side: &str,
        kind: &str,
        message: &str,
        detail: Option<&Value>,
    ) -> Result<i64, StoreError> {
        self.exec(
            "INSERT INTO events (referral_id, at, side, kind, message, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![referral_id, ts(at), side, kind, message, detail.map(Value::to_string)],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// A referral's sync history, oldest first.
    pub fn events_for(&self, referral_id: &str) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, referral_id, at, side, kind, message, detail FROM events WHERE referral_id = ?1 ORDER BY id",
        )?;
        let rows = stmt
            .query_map([referral_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    [
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ],
                    r.get::<_, Option<String>>(6)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, [referral_id, at, side, kind, message], detail)| {
                Ok(Event {
                    id,
                    referral_id,
                    at: parse_ts(&at)?,
                    side,
                    kind,
                    message,
                    detail: detail.map(|d| json(&d, "event detail")).transpose()?,
                })
            })
            .collect()
    }

    // ---- key-value -------------------------------------------------------------

    pub fn kv_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn kv_set(&self, key: &str, value: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO kv (key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![key, value, ts(now)],
        )?;
        Ok(())
    }

    pub fn kv_delete(&self, key: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM kv WHERE key = ?1", [key])?;
        Ok(())
    }

    /// Inserts an effect, or replaces the payload of the pending one for the
    /// same target, operation and record (its attempts and schedule are kept,
    /// so a record that keeps failing is still quarantined in time).
    pub fn upsert_effect(&self, e: &NewEffect, now: DateTime<Utc>) -> Result<i64, StoreError> {
        let existing: Option<i64> = self.row(
                "SELECT id FROM outbox WHERE target = ?1 AND operation = ?2 AND record_key = ?3 ORDER BY id LIMIT 1",
                params![e.target, e.operation, e.record_key],
                |r| r.get(0),
            )
            .optional()?;
        match existing {
            Some(id) => {
                self.exec(
                    "UPDATE outbox SET payload = ?2 WHERE id = ?1",
                    params![id, e.payload.to_string()],
                )?;
                Ok(id)
            }
            None => self.enqueue(e, now),
        }
    }

    /// Whether an effect is pending for a record on a target.
    pub fn has_pending_effect(&self, target: &str, record_key: &str) -> Result<bool, StoreError> {
        let n: i64 = self.row(
            "SELECT COUNT(*) FROM outbox WHERE target = ?1 AND record_key = ?2",
            params![target, record_key],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Pending effects for one target, due at `now`, oldest first.
    pub fn due_effects_for(
        &self,
        target: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE target = ?1 AND next_attempt_at <= ?2 ORDER BY id LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(params![target, ts(now), limit as i64], Self::outbox_from)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(Self::outbox_build).collect()
    }

    /// Postpones every pending effect of a target (a throttled or paused side).
    pub fn postpone_target(&self, target: &str, until: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(self.exec(
            "UPDATE outbox SET next_attempt_at = MAX(next_attempt_at, ?2) WHERE target = ?1",
            params![target, ts(until)],
        )?)
    }

    /// Undoes a local expiry: Partner Center accepted the referral in time.
    pub fn clear_local_expiry(&self, id: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE referrals SET locally_expired = 0 WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// Whether a referral's history has an event of this kind.
    pub fn has_event(&self, referral_id: &str, kind: &str) -> Result<bool, StoreError> {
        let n: i64 = self.row(
            "SELECT COUNT(*) FROM events WHERE referral_id = ?1 AND kind = ?2",
            params![referral_id, kind],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Every link of one CRM (full reconcile, Microsoft decision windows).
    pub fn links_of_crm(&self, crm: CrmKind) -> Result<Vec<Link>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LINK_COLUMNS} FROM links WHERE crm = ?1 ORDER BY crm_id"
        ))?;
        let rows = stmt
            .query_map([crm.as_str()], Self::link_from)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(Self::link_build).collect()
    }

    /// Links of deals that asked Microsoft for help before `before` and
    /// whose window was not reported yet.
    pub fn help_windows_lapsed(&self, before: DateTime<Utc>) -> Result<Vec<Link>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LINK_COLUMNS} FROM links l INDEXED BY links_help_requested
             WHERE help_requested_at IS NOT NULL AND help_requested_at <= ?1 AND referral_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM events e WHERE e.referral_id = l.referral_id AND e.kind = 'microsoft_window')
             ORDER BY help_requested_at"
        ))?;
        let rows = stmt
            .query_map([ts(before)], Self::link_from)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(Self::link_build).collect()
    }

    // ---- status ------------------------------------------------------------------

    fn count(&self, sql: &str) -> Result<u64, StoreError> {
        Ok(self.row(sql, [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Everything `status` shows.
    pub fn status_report(&self, runs: usize) -> Result<StatusReport, StoreError> {
        let mut by_stage: Vec<(String, u64)> = Stage::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect();
        let mut unknown = 0;
        let mut stmt = self
            .conn
            .prepare("SELECT stage, COUNT(*) FROM referrals GROUP BY stage")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (stage, n) in rows {
            match stage.and_then(|s| by_stage.iter().position(|(name, _)| *name == s)) {
                Some(i) => by_stage[i].1 = n as u64,
                None => unknown += n as u64,
            }
        }
        by_stage.push(("unknown".into(), unknown));

        let mut links_by_crm = Vec::new();
        for crm in CrmKind::ALL {
            let n: i64 = self.row(
                "SELECT COUNT(*) FROM links WHERE crm = ?1",
                [crm.as_str()],
                |r| r.get(0),
            )?;
            links_by_crm.push((crm.as_str().to_owned(), n as u64));
        }

        Ok(StatusReport {
            schema_version: self.row("PRAGMA user_version", [], |r| r.get(0))?,
            referrals_total: self.count("SELECT COUNT(*) FROM referrals")?,
            inbound: self.count("SELECT COUNT(*) FROM referrals WHERE direction = 'Incoming'")?,
            outbound: self.count("SELECT COUNT(*) FROM referrals WHERE direction = 'Outgoing'")?,
            favorites: self.count("SELECT COUNT(*) FROM referrals WHERE favorite = 1")?,
            by_stage,
            links_by_crm,
            cursors: self.cursors()?,
            pending_effects: self.count("SELECT COUNT(*) FROM outbox")?,
            open_failures: self
                .count("SELECT COUNT(*) FROM failures WHERE state IN ('open', 'retrying')")?,
            last_runs: self.last_runs(runs)?,
        })
    }
}
