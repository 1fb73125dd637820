//! What `status` reports, counted across the tables.

use super::repo::Repo;
use super::{CrmKind, StatusReport, StoreError};
use crate::domain::Stage;

impl Repo<'_> {
    fn count(&self, sql: &str) -> Result<u64, StoreError> {
        Ok(self.row(sql, [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Everything `status` shows.
    pub fn status_report(&self, runs: usize) -> Result<StatusReport, StoreError> {
        let mut by_stage: Vec<(String, u64)> = Stage::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect();
        let mut unknown = 0;
        let mut stmt = self
            .conn
            .prepare("SELECT stage, COUNT(*) AS n FROM referrals GROUP BY stage")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Option<String>>("stage")?, r.get::<_, i64>("n")?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (stage, n) in rows {
            match stage.and_then(|s| by_stage.iter().position(|(name, _)| *name == s)) {
                Some(i) => by_stage[i].1 = n as u64,
                None => unknown += n as u64,
            }
        }
        by_stage.push(("unknown".into(), unknown));

        let mut links_by_crm = Vec::new();
        for crm in CrmKind::ALL {
            let n: i64 = self.row(
                "SELECT COUNT(*) FROM links WHERE crm = ?1",
                [crm.as_str()],
                |r| r.get(0),
            )?;
            links_by_crm.push((crm.as_str().to_owned(), n as u64));
        }

        Ok(StatusReport {
            schema_version: self.row("PRAGMA user_version", [], |r| r.get(0))?,
            referrals_total: self.count("SELECT COUNT(*) FROM referrals")?,
            inbound: self.count("SELECT COUNT(*) FROM referrals WHERE direction = 'Incoming'")?,
            // Microsoft's half of a co-sell deal of ours is not a deal of ours.
            outbound: self.count(&format!(
                "SELECT COUNT(*) FROM referrals WHERE direction = 'Outgoing' AND NOT {}",
                super::referrals::MICROSOFT_HALF
            ))?,
            favorites: self.count("SELECT COUNT(*) FROM referrals WHERE favorite = 1")?,
            by_stage,
            links_by_crm,
            cursors: self.cursors()?,
            pending_effects: self.count("SELECT COUNT(*) FROM outbox")?,
            open_failures: self
                .count("SELECT COUNT(*) FROM failures WHERE state IN ('open', 'retrying')")?,
            last_runs: self.last_runs(runs)?,
        })
    }
}
