//! CRM records read changed whose Partner Center side has not been read
//! since, for conflicts: a Partner Center change read for the same referral
//! before the next complete listing was made on both sides.
//!
//! Kept in the store, not in memory: the set grows with the records a cycle
//! reads (every one in a full reconcile), and a crash between the CRM's
//! listing and Partner Center's must not forget it (the next cycle would
//! send both sides' values across). The rows are written with the CRM page
//! they come from and removed with the complete Partner Center listing that
//! has matched them, unless the change is still on its way to Partner Center
//! (its update queued, or quarantined and not given up): then with that
//! update. A dry run writes nothing: it notes its rows in a TEMP copy of the
//! table, private to its connection, which shadows the stored one until the
//! next cycle that is not a dry run.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::repo::Repo;
use super::{CrmKind, StoreError, parse_ts, ts};

/// The columns and key of the stored table (schema migration 5, which is
/// never edited), for the dry run's copy; the copy is filled from the
/// stored table with `SELECT *`, so a difference fails the dry run.
const COLUMNS: &str = "(
        crm          TEXT NOT NULL,
        referral_id  TEXT NOT NULL,
        modified_at  TEXT,
        noted_at     TEXT NOT NULL,
        PRIMARY KEY (crm, referral_id)
    ) STRICT, WITHOUT ROWID";

impl Repo<'_> {
    /// Starts a cycle's view of the table: a dry run gets a private copy
    /// (TEMP, no write to the store and no write lock), any other cycle the
    /// stored table again.
    pub fn begin_crm_changes(&self, dry_run: bool) -> Result<(), StoreError> {
        self.conn
            .execute_batch("DROP TABLE IF EXISTS temp.pending_crm_changes")?;
        if dry_run {
            self.conn.execute_batch(&format!(
                "CREATE TEMP TABLE pending_crm_changes {COLUMNS};
                 INSERT INTO temp.pending_crm_changes SELECT * FROM main.pending_crm_changes;"
            ))?;
        }
        Ok(())
    }

    /// Notes that the CRM record of `referral_id` was read changed at `now`
    /// (last modified at `modified_at`, when the CRM says).
    pub fn note_crm_change(
        &self,
        crm: CrmKind,
        referral_id: &str,
        modified_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO pending_crm_changes (crm, referral_id, modified_at, noted_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![crm.as_str(), referral_id, modified_at.map(ts), ts(now)],
        )?;
        Ok(())
    }

    /// `Some` (with when it was modified, if the CRM said) if the CRM record
    /// of `referral_id` was read changed and Partner Center not read since.
    pub fn pending_crm_change(
        &self,
        crm: CrmKind,
        referral_id: &str,
    ) -> Result<Option<Option<DateTime<Utc>>>, StoreError> {
        let found: Option<Option<String>> = self
            .row(
                "SELECT modified_at FROM pending_crm_changes WHERE crm = ?1 AND referral_id = ?2",
                params![crm.as_str(), referral_id],
                |r| r.get(0),
            )
            .optional()?;
        found
            .map(|m| m.map(|s| parse_ts(&s)).transpose())
            .transpose()
    }

    /// Forgets the changes noted at or before `listed_from`: a complete
    /// Partner Center listing that began then has matched them. A change
    /// still on its way to Partner Center is kept: its referral has an
    /// effect of `waiting_operation` queued for `waiting_target` (an update
    /// refused or waiting for its retry), or such an effect was quarantined
    /// and its failure is open (`failures retry` may send it). A Partner
    /// Center change read later is then still an edit on both sides; the row
    /// goes with that effect (see [`Repo::forget_crm_changes_of`]) or with
    /// the first complete listing after it has left the outbox and its
    /// failure, if any, is no longer open (retried, ignored or resolved).
    pub fn forget_crm_changes(
        &self,
        listed_from: DateTime<Utc>,
        waiting_target: &str,
        waiting_operation: &str,
    ) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM pending_crm_changes WHERE noted_at <= ?1
               AND NOT EXISTS (SELECT 1 FROM outbox
                   WHERE outbox.target = ?2 AND outbox.record_key = pending_crm_changes.referral_id
                     AND outbox.operation = ?3)
               AND NOT EXISTS (SELECT 1 FROM failures
                   WHERE failures.side = ?2 AND failures.record = pending_crm_changes.referral_id
                     AND failures.state = 'open'
                     AND CASE WHEN json_valid(failures.raw)
                         THEN json_extract(failures.raw, '$.operation') END = ?3)",
            params![ts(listed_from), waiting_target, waiting_operation],
        )?;
        Ok(())
    }

    /// Forgets the changes noted for `referral_id` in any CRM: the update
    /// that carried them to Partner Center is done (sent, or taken out of
    /// the outbox), in the same transaction, so that Partner Center's echo
    /// of our own write is not read as an edit on both sides.
    pub fn forget_crm_changes_of(&self, referral_id: &str) -> Result<(), StoreError> {
        for crm in CrmKind::ALL {
            self.exec(
                "DELETE FROM pending_crm_changes WHERE crm = ?1 AND referral_id = ?2",
                params![crm.as_str(), referral_id],
            )?;
        }
        Ok(())
    }
}
