//! The `cursors` table: where each source's incremental read stands.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::repo::Repo;
use super::{StoreError, ts};

impl Repo<'_> {
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
            .query_map([], |r| Ok((r.get("source")?, r.get("position")?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
