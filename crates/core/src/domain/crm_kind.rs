//! The CRMs cosell-sync syncs with.

use serde::{Deserialize, Serialize};

/// The CRM side of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum CrmKind {
    Dynamics,
    Salesforce,
}

impl CrmKind {
    pub const ALL: [CrmKind; 2] = [CrmKind::Dynamics, CrmKind::Salesforce];

    pub fn as_str(self) -> &'static str {
        match self {
            CrmKind::Dynamics => "dynamics",
            CrmKind::Salesforce => "salesforce",
        }
    }

    pub fn parse(s: &str) -> Option<CrmKind> {
        CrmKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether an upsert can write an opportunity straight into a closed
    /// stage (Salesforce: a closed `StageName`). A Dataverse row is never
    /// created closed: closing goes through Win/LoseOpportunity.
    pub fn creates_closed(self) -> bool {
        matches!(self, CrmKind::Salesforce)
    }
}

impl std::fmt::Display for CrmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
