//! The `runs` table: the history of sync cycles.

use chrono::{DateTime, Utc};
use rusqlite::{Row, params};
use serde_json::Value;

use super::repo::{FromRow, Repo, all, opt_json_col, opt_ts_col, ts_col};
use super::{Run, StoreError, ts};

impl FromRow for Run {
    const COLUMNS: &'static str = "id, started_at, finished_at, outcome, summary";

    fn from_row(row: &Row<'_>) -> Result<Self, StoreError> {
        Ok(Run {
            id: row.get("id")?,
            started_at: ts_col(row, "started_at")?,
            finished_at: opt_ts_col(row, "finished_at")?,
            outcome: row.get("outcome")?,
            summary: opt_json_col(row, "summary", "run summary")?,
        })
    }
}

impl Repo<'_> {
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
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {} FROM runs ORDER BY id DESC LIMIT ?1",
            Run::COLUMNS
        ))?;
        all(&mut stmt, [limit as i64])
    }
}
