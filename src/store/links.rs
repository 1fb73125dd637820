//! The `links` table: which CRM record goes with which referral, and what
//! was last written to each side (echo suppression).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Row, params};
use serde_json::Value;

use super::packed::{Packing, pack, unpack_as};
use super::repo::{FromRow, Repo, all, json_text, opt_json_col, opt_ts_col, ts_col};
use super::{CrmKind, Link, StoreError, classify, ts};

impl FromRow for Link {
    const COLUMNS: &'static str = "crm, crm_id, referral_id, crm_hash, crm_version, pc_hash, pc_version, created_at, updated_at, \
         crm_fields, help_requested_at, held_edit, crm_fields_packed";

    fn from_row(row: &Row<'_>) -> Result<Self, StoreError> {
        let crm: String = row.get("crm")?;
        Ok(Link {
            crm: CrmKind::parse(&crm).ok_or(StoreError::Corrupt {
                what: "link",
                detail: format!("unknown CRM {crm:?}"),
            })?,
            crm_id: row.get("crm_id")?,
            referral_id: row.get("referral_id")?,
            crm_hash: row.get("crm_hash")?,
            crm_version: row.get("crm_version")?,
            pc_hash: row.get("pc_hash")?,
            pc_version: row.get("pc_version")?,
            crm_fields: link_crm_fields(row)?,
            help_requested_at: opt_ts_col(row, "help_requested_at")?,
            held_edit: opt_json_col(row, "held_edit", "link held edit")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| StoreError::Corrupt {
                    what: "link held edit",
                    detail: e.to_string(),
                })?,
            created_at: ts_col(row, "created_at")?,
            updated_at: ts_col(row, "updated_at")?,
        })
    }
}

/// A link's CRM fields, packed (schema 9) or as text (links written before).
fn link_crm_fields(row: &Row<'_>) -> Result<Option<Value>, StoreError> {
    match row.get_ref("crm_fields_packed")? {
        ValueRef::Blob(b) => {
            let corrupt = |detail: String| StoreError::Corrupt {
                what: "link CRM fields",
                detail: format!(
                    "link {}:{}: {detail}",
                    row.get::<_, String>("crm").unwrap_or_default(),
                    row.get::<_, String>("crm_id").unwrap_or_default()
                ),
            };
            let text = unpack_as(Packing::CrmFields, b).map_err(|e| corrupt(e.to_string()))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| corrupt(e.to_string()))
        }
        _ => opt_json_col(row, "crm_fields", "link CRM fields"),
    }
}

/// CRM fields as stored: (text, packed), packed unless too long to be.
fn stored_crm_fields(l: &Link) -> (Option<String>, Option<Vec<u8>>) {
    let Some(text) = l.crm_fields.as_ref().map(json_text) else {
        return (None, None);
    };
    match pack(Packing::CrmFields, &text) {
        Some(packed) => (None, Some(packed)),
        None => (Some(text), None),
    }
}

fn held_edit_text(l: &Link) -> Result<Option<String>, StoreError> {
    l.held_edit
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            what: "link held edit",
            detail: e.to_string(),
        })
}

/// Links whose help request is older than `?1` and not reported yet.
pub(super) fn help_windows_lapsed_sql() -> String {
    format!(
            "SELECT {} FROM links l INDEXED BY links_help_requested
             WHERE help_requested_at IS NOT NULL AND help_requested_at <= ?1 AND referral_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM events e
                   WHERE e.referral_seq = (SELECT seq FROM referrals WHERE id = l.referral_id)
                     AND e.referral_id = l.referral_id AND e.kind = 'microsoft_window')
               AND NOT EXISTS (SELECT 1 FROM events e
                   WHERE e.referral_seq IS NULL
                     AND e.referral_id = l.referral_id AND e.kind = 'microsoft_window')
             ORDER BY help_requested_at",
            Link::COLUMNS
    )
}

/// The link of a referral (`?2`) in a CRM (`?1`): by the referral's
/// sequence number once it is stored, else by id (see schema 8).
pub(super) fn link_by_referral_sql() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {0} FROM links
          WHERE referral_seq = (SELECT seq FROM referrals WHERE id = ?2) AND crm = ?1
         UNION ALL
         SELECT {0} FROM links WHERE referral_seq IS NULL AND referral_id = ?2 AND crm = ?1",
            Link::COLUMNS
        )
    });
    &SQL
}

/// Every link of a referral (`?1`), one per CRM, in CRM order.
pub(super) fn links_of_referral_sql() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {0} FROM links
          WHERE referral_seq = (SELECT seq FROM referrals WHERE id = ?1)
         UNION ALL
         SELECT {0} FROM links WHERE referral_seq IS NULL AND referral_id = ?1
         ORDER BY crm",
            Link::COLUMNS
        )
    });
    &SQL
}

impl Repo<'_> {
    /// Inserts a new link; a second link for the same CRM record or for the
    /// same referral in the same CRM is a [`StoreError::Duplicate`].
    pub fn insert_link(&self, l: &Link) -> Result<(), StoreError> {
        let (fields_text, fields_packed) = stored_crm_fields(l);
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "INSERT INTO links ({}, referral_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?13, ?10,
                    ?11, ?12, (SELECT seq FROM referrals WHERE id = ?3))",
                Link::COLUMNS
            )
        });
        self.exec(
            &SQL,
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
                l.help_requested_at.map(ts),
                held_edit_text(l)?,
                fields_packed,
                fields_text,
            ],
        )
        .map_err(|e| classify(e, "link"))?;
        Ok(())
    }

    /// Updates the hashes, versions and referral id of an existing link.
    pub fn update_link(&self, l: &Link) -> Result<(), StoreError> {
        let (fields_text, fields_packed) = stored_crm_fields(l);
        // The referral only when it changes: SQLite rewrites the entry of
        // every index whose column is assigned, even to the same value.
        self.exec(
            "UPDATE links SET referral_id = ?3, referral_seq = (SELECT seq FROM referrals WHERE id = ?3)
             WHERE crm = ?1 AND crm_id = ?2 AND referral_id IS NOT ?3",
            params![l.crm.as_str(), l.crm_id, l.referral_id],
        )
        .map_err(|e| classify(e, "link"))?;
        let n = self
            .exec(
                "UPDATE links SET crm_hash = ?3, crm_version = ?4, pc_hash = ?5,
                    pc_version = ?6, updated_at = ?7, crm_fields = ?11, crm_fields_packed = ?8,
                    help_requested_at = ?9, held_edit = ?10
                 WHERE crm = ?1 AND crm_id = ?2",
                params![
                    l.crm.as_str(),
                    l.crm_id,
                    l.crm_hash,
                    l.crm_version,
                    l.pc_hash,
                    l.pc_version,
                    ts(l.updated_at),
                    fields_packed,
                    l.help_requested_at.map(ts),
                    held_edit_text(l)?,
                    fields_text,
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

    pub fn link_by_crm_id(&self, crm: CrmKind, crm_id: &str) -> Result<Option<Link>, StoreError> {
        self.one(
            &format!(
                "SELECT {} FROM links WHERE crm = ?1 AND crm_id = ?2",
                Link::COLUMNS
            ),
            params![crm.as_str(), crm_id],
        )
    }

    pub fn link_by_referral(
        &self,
        crm: CrmKind,
        referral_id: &str,
    ) -> Result<Option<Link>, StoreError> {
        self.one(link_by_referral_sql(), params![crm.as_str(), referral_id])
    }

    /// Every link of a referral, one per CRM.
    pub fn links_of_referral(&self, referral_id: &str) -> Result<Vec<Link>, StoreError> {
        let mut stmt = self.conn.prepare_cached(links_of_referral_sql())?;
        all(&mut stmt, [referral_id])
    }

    /// Every link of one CRM (full reconcile, Microsoft decision windows).
    pub fn links_of_crm(&self, crm: CrmKind) -> Result<Vec<Link>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {} FROM links WHERE crm = ?1 ORDER BY crm_id",
            Link::COLUMNS
        ))?;
        all(&mut stmt, [crm.as_str()])
    }

    /// Links of deals that asked Microsoft for help before `before` and
    /// whose window was not reported yet.
    pub fn help_windows_lapsed(&self, before: DateTime<Utc>) -> Result<Vec<Link>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&help_windows_lapsed_sql())?;
        all(&mut stmt, [ts(before)])
    }
}
