//! The CRM records changed in the running cycle, for conflicts: a Partner
//! Center change the same cycle reads for the same referral was made on
//! both sides. A TEMP table, private to this connection and emptied when a
//! cycle starts: the set grows with the records a cycle reads (every one in
//! a full reconcile), so it is kept in the store (spilling to a temporary
//! file past SQLite's page cache), not in memory; and a dry run in another
//! process can neither see nor clear the running daemon's.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::repo::Repo;
use super::{CrmKind, StoreError, parse_ts, ts};

/// Made on every connection (a TEMP table lives as long as its connection).
pub(super) const CREATE: &str = "CREATE TEMP TABLE IF NOT EXISTS cycle_crm_changes (
        crm          TEXT NOT NULL,
        referral_id  TEXT NOT NULL,
        modified_at  TEXT,
        PRIMARY KEY (crm, referral_id)
    ) WITHOUT ROWID";

impl Repo<'_> {
    /// Forgets the changes of an earlier cycle.
    pub fn clear_cycle_crm_changes(&self) -> Result<(), StoreError> {
        self.exec("DELETE FROM temp.cycle_crm_changes", [])?;
        Ok(())
    }

    /// Notes that the CRM record of `referral_id` changed this cycle (last
    /// modified at `modified_at`, when the CRM says).
    pub fn note_cycle_crm_change(
        &self,
        crm: CrmKind,
        referral_id: &str,
        modified_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO temp.cycle_crm_changes (crm, referral_id, modified_at)
             VALUES (?1, ?2, ?3)",
            params![crm.as_str(), referral_id, modified_at.map(ts)],
        )?;
        Ok(())
    }

    /// Whether the CRM record of `referral_id` changed this cycle: `Some`
    /// with when it was modified (`None` inside when the CRM did not say).
    pub fn cycle_crm_change(
        &self,
        crm: CrmKind,
        referral_id: &str,
    ) -> Result<Option<Option<DateTime<Utc>>>, StoreError> {
        let found: Option<Option<String>> = self
            .row(
                "SELECT modified_at FROM temp.cycle_crm_changes WHERE crm = ?1 AND referral_id = ?2",
                params![crm.as_str(), referral_id],
                |r| r.get(0),
            )
            .optional()?;
        found
            .map(|m| m.map(|s| parse_ts(&s)).transpose())
            .transpose()
    }
}
