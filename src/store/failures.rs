//! The `failures` table: records that could not be synced, with a hint for
//! the operator (DESIGN.md guarantee 5).

use chrono::{DateTime, Utc};
use rusqlite::{Row, params};

use super::repo::{FromRow, Repo, all, ts_col};
use super::{Failure, FailureState, NewFailure, StoreError, ts};

impl FromRow for Failure {
    const COLUMNS: &'static str =
        "id, record, side, kind, message, hint, raw, attempts, first_seen, last_seen, state";

    fn from_row(row: &Row<'_>) -> Result<Self, StoreError> {
        let state: String = row.get("state")?;
        Ok(Failure {
            id: row.get("id")?,
            record: row.get("record")?,
            side: row.get("side")?,
            kind: row.get("kind")?,
            message: row.get("message")?,
            hint: row.get("hint")?,
            raw: row.get("raw")?,
            attempts: row.get("attempts")?,
            first_seen: ts_col(row, "first_seen")?,
            last_seen: ts_col(row, "last_seen")?,
            state: FailureState::parse(&state).ok_or(StoreError::Corrupt {
                what: "failure state",
                detail: state.clone(),
            })?,
        })
    }
}

impl Repo<'_> {
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

    pub fn failure_for(&self, record: &str, side: &str) -> Result<Option<Failure>, StoreError> {
        self.one(
            &format!(
                "SELECT {} FROM failures WHERE record = ?1 AND side = ?2",
                Failure::COLUMNS
            ),
            params![record, side],
        )
    }

    pub fn failure(&self, id: i64) -> Result<Option<Failure>, StoreError> {
        self.one(
            &format!("SELECT {} FROM failures WHERE id = ?1", Failure::COLUMNS),
            [id],
        )
    }

    /// Failures in the given states (all when empty), newest first.
    pub fn list_failures(&self, states: &[FailureState]) -> Result<Vec<Failure>, StoreError> {
        let mut sql = format!("SELECT {} FROM failures", Failure::COLUMNS);
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
        all(&mut stmt, [])
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
}
