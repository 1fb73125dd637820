//! The `kv` table: small named values (the last full reconcile, how fresh
//! the Partner Center listing is, the stored refresh token…).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::repo::Repo;
use super::{StoreError, ts};

impl Repo<'_> {
    pub fn kv_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .row("SELECT value FROM kv WHERE key = ?1", [key], |r| {
                r.get("value")
            })
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
}

impl Repo<'_> {
    /// Every `(key, value)` whose key starts with `prefix`, by key.
    pub fn kv_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        // A key range, so the primary key's index answers it (a `substr`
        // comparison would scan every row of the table).
        let upper = match prefix.chars().last() {
            Some(last) => {
                let next = char::from_u32(u32::from(last) + 1).unwrap_or(char::MAX);
                format!("{}{next}", &prefix[..prefix.len() - last.len_utf8()])
            }
            None => char::MAX.to_string(),
        };
        let mut stmt = self.conn.prepare_cached(KV_PREFIX_SQL)?;
        let rows = stmt.query_map([prefix, upper.as_str()], |r| {
            Ok((r.get("key")?, r.get("value")?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }
}

/// The rows of one key prefix: `?1` the prefix, `?2` the first key after it.
pub(super) const KV_PREFIX_SQL: &str =
    "SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key";
