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
            "INSERT INTO events (referral_id, at, side, kind, message, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![referral_id, ts(at), side, kind, message, detail.map(Value::to_string)],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// A referral's sync history, oldest first.
    pub fn events_for(&self, referral_id: &str) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {} FROM events WHERE referral_id = ?1 ORDER BY id",
            Event::COLUMNS
        ))?;
        all(&mut stmt, [referral_id])
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
}
