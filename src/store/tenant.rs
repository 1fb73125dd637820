//! Which tenant a state store belongs to: the Partner Center sign-in and the
//! CRM org(s) it was first synced with, kept in the `kv` table, and the
//! Partner Center organization its referrals name. One store serves one
//! tenant; the commands that sync refuse a store recorded for another.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::repo::Repo;
use super::{StoreError, parse_ts, ts};

const PARTNER_CENTER: &str = "tenant.partner_center";
const CRM_PREFIX: &str = "tenant.crm.";
const SINCE: &str = "tenant.since";

/// A tenant as the settings point at it: the Partner Center sign-in and each
/// enabled CRM's org, in words an operator recognises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantIdentity {
    pub partner_center: String,
    /// CRM kind (`dynamics`, `salesforce`) → its org.
    pub crm: BTreeMap<String, String>,
}

impl TenantIdentity {
    /// What makes `self` another tenant than `recorded`: another Partner
    /// Center sign-in, or a CRM both name at another org. A CRM enabled
    /// since the record is no difference (it is added to the record).
    pub fn differences(&self, recorded: &TenantIdentity) -> Vec<String> {
        let mut out = Vec::new();
        if self.partner_center != recorded.partner_center {
            out.push(format!(
                "Partner Center {} (recorded) vs {} (these settings)",
                recorded.partner_center, self.partner_center
            ));
        }
        for (kind, org) in &self.crm {
            if let Some(was) = recorded.crm.get(kind).filter(|was| *was != org) {
                out.push(format!("{kind} {was} (recorded) vs {org} (these settings)"));
            }
        }
        out
    }
}

impl std::fmt::Display for TenantIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partner Center {}", self.partner_center)?;
        for (kind, org) in &self.crm {
            write!(f, ", {kind} {org}")?;
        }
        Ok(())
    }
}

/// The tenant recorded in a store, and when it was first synced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedTenant {
    #[serde(flatten)]
    pub identity: TenantIdentity,
    pub since: DateTime<Utc>,
}

/// The Partner Center organization (`organizationId`, `organizationName`)
/// its referrals name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerCenterOrganization {
    pub id: String,
    pub name: Option<String>,
}

impl Repo<'_> {
    /// The recorded tenant, if a sync has recorded one.
    pub fn tenant(&self) -> Result<Option<RecordedTenant>, StoreError> {
        let (Some(partner_center), Some(since)) =
            (self.kv_get(PARTNER_CENTER)?, self.kv_get(SINCE)?)
        else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, value FROM kv WHERE key LIKE 'tenant.crm.%' ORDER BY key",
        )?;
        let crm = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .map(|row| row.map(|(k, v)| (k.trim_start_matches(CRM_PREFIX).to_owned(), v)))
            .collect::<Result<_, _>>()?;
        Ok(Some(RecordedTenant {
            identity: TenantIdentity {
                partner_center,
                crm,
            },
            since: parse_ts(&since)?,
        }))
    }

    /// Records `identity` as the store's tenant: the whole of it on a store
    /// with no record, else only the CRMs the record does not name yet.
    pub fn record_tenant(
        &self,
        identity: &TenantIdentity,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if self.kv_get(SINCE)?.is_none() {
            self.kv_set(PARTNER_CENTER, &identity.partner_center, now)?;
            self.kv_set(SINCE, &ts(now), now)?;
        }
        for (kind, org) in &identity.crm {
            let key = format!("{CRM_PREFIX}{kind}");
            if self.kv_get(&key)?.is_none() {
                self.kv_set(&key, org, now)?;
            }
        }
        Ok(())
    }

    /// The partner's organization as its referrals name it (Microsoft's
    /// `msft` is never the owner of a referral listed in a partner's tenant,
    /// but is skipped all the same).
    pub fn partner_center_organization(
        &self,
    ) -> Result<Option<PartnerCenterOrganization>, StoreError> {
        // Oldest first; the scan ends at the first referral that names one.
        let mut stmt = self.conn.prepare_cached(
            "SELECT unpacked_json(raw_json, raw_packed) FROM referrals ORDER BY first_seen",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let Some(text) = row.get::<_, Option<String>>(0)? else {
                continue;
            };
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Owner {
                organization_id: Option<serde_json::Value>,
                organization_name: Option<serde_json::Value>,
            }
            let Ok(owner) = serde_json::from_str::<Owner>(&text) else {
                continue;
            };
            if let Some(serde_json::Value::String(id)) = owner.organization_id
                && !id.is_empty()
                && id != "msft"
            {
                return Ok(Some(PartnerCenterOrganization {
                    id,
                    name: owner.organization_name.map(|n| match n {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    }),
                }));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn identity(pc: &str, crm: &[(&str, &str)]) -> TenantIdentity {
        TenantIdentity {
            partner_center: pc.into(),
            crm: crm
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_crm_enabled_later_joins_the_record_and_another_org_is_a_difference() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(store.read(|r| r.tenant()).unwrap(), None);
        let acme = identity("app a", &[("dynamics", "https://acme.crm.dynamics.com")]);
        let t0 = Utc::now();
        store.write(|r| r.record_tenant(&acme, t0)).unwrap();

        let more = identity(
            "app a",
            &[
                ("dynamics", "https://acme.crm.dynamics.com"),
                ("salesforce", "https://acme.my.salesforce.com"),
            ],
        );
        let recorded = store.read(|r| r.tenant()).unwrap().unwrap();
        assert!(more.differences(&recorded.identity).is_empty());
        store
            .write(|r| r.record_tenant(&more, t0 + chrono::TimeDelta::hours(1)))
            .unwrap();
        let recorded = store.read(|r| r.tenant()).unwrap().unwrap();
        assert_eq!(recorded.identity, more);
        assert_eq!(
            recorded.since.timestamp(),
            t0.timestamp(),
            "first synced stays"
        );

        let globex = identity(
            "app a",
            &[("salesforce", "https://globex.my.salesforce.com")],
        );
        assert_eq!(
            globex.differences(&recorded.identity),
            vec![
                "salesforce https://acme.my.salesforce.com (recorded) vs https://globex.my.salesforce.com (these settings)"
                    .to_owned()
            ]
        );
        assert_eq!(
            identity("app b", &[]).differences(&recorded.identity).len(),
            1
        );
        // A CRM switched off is no difference either.
        assert!(
            identity("app a", &[])
                .differences(&recorded.identity)
                .is_empty()
        );
    }
}
