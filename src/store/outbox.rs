//! The `outbox` table: remote effects decided and committed, not yet
//! confirmed done (DESIGN.md guarantee 2).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};

use super::repo::{FromRow, Repo, all, opt_ts_col, ts_col};
use super::{NewEffect, OutboxEntry, RawJson, StoreError, ts};

impl FromRow for OutboxEntry {
    const COLUMNS: &'static str = "id, target, operation, record_key, payload, attempts, next_attempt_at, last_error, created_at, sent_at";

    fn from_row(row: &Row<'_>) -> Result<Self, StoreError> {
        Ok(OutboxEntry {
            id: row.get("id")?,
            target: row.get("target")?,
            operation: row.get("operation")?,
            record_key: row.get("record_key")?,
            payload: RawJson::from_text(row.get::<_, String>("payload")?).map_err(|e| {
                StoreError::Corrupt {
                    what: "outbox payload",
                    detail: e.to_string(),
                }
            })?,
            attempts: row.get("attempts")?,
            next_attempt_at: ts_col(row, "next_attempt_at")?,
            last_error: row.get("last_error")?,
            created_at: ts_col(row, "created_at")?,
            sent_at: opt_ts_col(row, "sent_at")?,
        })
    }
}

impl Repo<'_> {
    pub fn enqueue(&self, e: &NewEffect, now: DateTime<Utc>) -> Result<i64, StoreError> {
        self.exec(
            "INSERT INTO outbox (target, operation, record_key, payload, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![e.target, e.operation, e.record_key, e.payload.text(), ts(now)],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Inserts an effect, or replaces the payload of the pending one for the
    /// same target, operation and record (its attempts and schedule are kept,
    /// so a record that keeps failing is still quarantined in time).
    pub fn upsert_effect(&self, e: &NewEffect, now: DateTime<Utc>) -> Result<i64, StoreError> {
        let existing: Option<i64> = self.row(
                "SELECT id FROM outbox WHERE target = ?1 AND operation = ?2 AND record_key = ?3 ORDER BY id LIMIT 1",
                params![e.target, e.operation, e.record_key],
                |r| r.get("id"),
            )
            .optional()?;
        match existing {
            Some(id) => {
                self.exec(
                    "UPDATE outbox SET payload = ?2 WHERE id = ?1",
                    params![id, e.payload.text()],
                )?;
                Ok(id)
            }
            None => self.enqueue(e, now),
        }
    }

    /// The pending effect of one operation on a record, if any (the one
    /// [`Repo::upsert_effect`] would change).
    pub fn pending_effect(
        &self,
        target: &str,
        operation: &str,
        record_key: &str,
    ) -> Result<Option<OutboxEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {} FROM outbox WHERE target = ?1 AND operation = ?2 AND record_key = ?3 ORDER BY id LIMIT 1",
            OutboxEntry::COLUMNS
        ))?;
        Ok(all(&mut stmt, params![target, operation, record_key])?.pop())
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

    /// Effects due at `now`, oldest first.
    pub fn due_effects(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {} FROM outbox WHERE next_attempt_at <= ?1 ORDER BY id LIMIT ?2",
            OutboxEntry::COLUMNS
        ))?;
        all(&mut stmt, params![ts(now), limit as i64])
    }

    /// Pending effects for one target, due at `now`, oldest first.
    pub fn due_effects_for(
        &self,
        target: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {} FROM outbox WHERE target = ?1 AND next_attempt_at <= ?2 ORDER BY id LIMIT ?3",
            OutboxEntry::COLUMNS
        ))?;
        all(&mut stmt, params![target, ts(now), limit as i64])
    }

    /// How many of a target's effects are due, counted up to `limit`.
    pub fn due_effect_count_for(
        &self,
        target: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let n: i64 = self.row(
            "SELECT COUNT(*) FROM (SELECT 1 FROM outbox
              WHERE target = ?1 AND next_attempt_at <= ?2 ORDER BY id LIMIT ?3)",
            params![target, ts(now), limit as i64],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// How many effects are pending (without reading them).
    pub fn pending_effect_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self.row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Every pending effect, oldest first.
    pub fn pending_effects(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {} FROM outbox ORDER BY id",
            OutboxEntry::COLUMNS
        ))?;
        all(&mut stmt, [])
    }

    /// Postpones every pending effect of a target (a throttled or paused side).
    pub fn postpone_target(&self, target: &str, until: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(self.exec(
            "UPDATE outbox SET next_attempt_at = MAX(next_attempt_at, ?2) WHERE target = ?1",
            params![target, ts(until)],
        )?)
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

    /// Removes the queued effects of one operation on a record (a later
    /// decision overruled them); returns how many there were.
    pub fn withdraw_effect(
        &self,
        target: &str,
        operation: &str,
        record_key: &str,
    ) -> Result<usize, StoreError> {
        Ok(self.exec(
            "DELETE FROM outbox WHERE target = ?1 AND operation = ?2 AND record_key = ?3",
            params![target, operation, record_key],
        )?)
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
            |r| r.get("attempts"),
        )
        .optional()?
        .ok_or(StoreError::NotFound {
            what: "outbox entry",
            key: id.to_string(),
        })
    }
}
