//! The `events` table: each referral's sync history.

use chrono::{DateTime, Utc};
use rusqlite::{Row, params};
use serde_json::Value;

use super::repo::{FromRow, Repo, all, opt_json_col, ts_col};
use super::{Event, StoreError, ts};

impl FromRow for Event {
    const COLUMNS: &'static str = "id, referral_id, at, side, kind, message, detail";

    fn from_row(row: &Row<'_>) -> Result<Self, StoreError> {
        Ok(Event {
            id: row.get("id")?,
            referral_id: row.get("referral_id")?,
            at: ts_col(row, "at")?,
            side: row.get("side")?,
            kind: row.get("kind")?,
            message: row.get("message")?,
            detail: opt_json_col(row, "detail", "event detail")?,
        })
    }
}

/// A referral's events (`?1`: its id), found by its sequence number, and by
/// id those written before it was stored.
pub(super) fn events_for_sql() -> String {
    format!(
        "SELECT {0} FROM events
          WHERE referral_seq = (SELECT seq FROM referrals WHERE id = ?1) AND referral_id = ?1
         UNION ALL
         SELECT {0} FROM events WHERE referral_seq IS NULL AND referral_id = ?1
         ORDER BY id",
        Event::COLUMNS
    )
}

impl Repo<'_> {
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
            "INSERT INTO events (referral_id, referral_seq, at, side, kind, message, detail)
             VALUES (?1, (SELECT seq FROM referrals WHERE id = ?1), ?2, ?3, ?4, ?5, ?6)",
            params![
                referral_id,
                ts(at),
                side,
                kind,
                message,
                detail.map(Value::to_string)
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// A referral's sync history, oldest first.
    pub fn events_for(&self, referral_id: &str) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&events_for_sql())?;
        all(&mut stmt, [referral_id])
    }

    /// Whether a referral's history has an event of this kind.
    pub fn has_event(&self, referral_id: &str, kind: &str) -> Result<bool, StoreError> {
        Ok(self.row(
            "SELECT EXISTS (SELECT 1 FROM events
                 WHERE referral_seq = (SELECT seq FROM referrals WHERE id = ?1)
                   AND referral_id = ?1 AND kind = ?2)
              OR EXISTS (SELECT 1 FROM events
                 WHERE referral_seq IS NULL AND referral_id = ?1 AND kind = ?2)",
            params![referral_id, kind],
            |r| r.get(0),
        )?)
    }
}
