//! One store, one tenant: the identity the settings point at, checked
//! against (and recorded in) the state store by the commands that sync.

use std::collections::BTreeMap;

use chrono::Utc;

use crate::config::{SalesforceAuth, Settings};
use crate::store::{Store, TenantIdentity};

use super::CommandError;

/// The tenant the settings point at: the Partner Center sign-in (app and
/// Entra ID authority) and each enabled CRM's org (the Dynamics
/// organization URL; the Salesforce login URL, and the user for JWT bearer).
pub fn tenant_of(settings: &Settings) -> TenantIdentity {
    let pc = &settings.partner_center;
    let authority = pc
        .token_url
        .path_segments()
        .and_then(|mut s| s.next())
        .unwrap_or_default();
    let mut crm = BTreeMap::new();
    if settings.dynamics.enabled {
        crm.insert(
            "dynamics".to_owned(),
            settings
                .dynamics
                .base_url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        );
    }
    if settings.salesforce.enabled {
        let sf = &settings.salesforce;
        let mut org = sf.login_url.as_str().trim_end_matches('/').to_owned();
        if sf.auth == SalesforceAuth::JwtBearer {
            org.push_str(&format!(" as {}", sf.username));
        }
        crm.insert("salesforce".to_owned(), org);
    }
    TenantIdentity {
        partner_center: format!(
            "app {} at {}/{authority}",
            pc.client_id,
            pc.token_url.host_str().unwrap_or_default()
        ),
        crm,
    }
}

/// Refuses a store recorded for another tenant (exit 78, naming both);
/// else, unless `dry_run`, records the settings' tenant in it (the first
/// time, or a CRM enabled since).
pub fn check_tenant(settings: &Settings, store: &Store, dry_run: bool) -> Result<(), CommandError> {
    let current = tenant_of(settings);
    if let Some(recorded) = store.read(|r| r.tenant())? {
        let differences = current.differences(&recorded.identity);
        if !differences.is_empty() {
            return Err(CommandError::OtherTenant {
                path: settings.state.path.display().to_string(),
                recorded: recorded.identity.to_string(),
                since: recorded.since.format("%Y-%m-%d %H:%M UTC").to_string(),
                current: current.to_string(),
                differences,
            });
        }
    }
    if !dry_run {
        store.write(|r| r.record_tenant(&current, Utc::now()))?;
    }
    Ok(())
}
