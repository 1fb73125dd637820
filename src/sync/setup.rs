//! Building an engine from settings: the Partner Center client over the
//! stored refresh token, and each enabled CRM with its validated mapping.

use std::sync::Arc;

use secrecy::SecretString;

use crate::config::{ConfigError, ReadinessProblem, Settings};
use crate::crm::dynamics::DynamicsCrm;
use crate::crm::salesforce::SalesforceCrm;
use crate::crm::{Crm, CrmError};
use crate::mapping::{Mapping, MappingProblem};
use crate::partner_center::{
    PartnerCenterClient, PartnerCenterError, PartnerCenterOptions, RefreshTokenStore,
    TokenStoreError,
};
use crate::store::{CrmKind, Store, StoredRefreshToken};

use super::{Clock, CrmSide, Engine, object_spec};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("settings needed to sync are missing:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Readiness(Vec<ReadinessProblem>),
    #[error("the mapping is not valid:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Mapping(Vec<MappingProblem>),
    // The cause is in the message, and not chained as `source()` too, so an
    // error chain shows it once.
    #[error("{crm}: {cause}")]
    Crm { crm: CrmKind, cause: CrmError },
    #[error("Partner Center: {0}")]
    PartnerCenter(PartnerCenterError),
}

impl From<PartnerCenterError> for SetupError {
    fn from(e: PartnerCenterError) -> Self {
        SetupError::PartnerCenter(e)
    }
}

impl SetupError {
    /// Configuration problems stop startup with exit 78.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            SetupError::Config(_) | SetupError::Readiness(_) | SetupError::Mapping(_)
        ) || matches!(
            self,
            SetupError::Crm {
                cause: CrmError::Invalid(_),
                ..
            }
        )
    }
}

/// The validated mapping of a CRM.
pub fn load_mapping(settings: &Settings, crm: CrmKind) -> Result<Mapping, SetupError> {
    let (text, name) = settings.mapping_source(crm)?;
    Mapping::load(&text, &name).map_err(SetupError::Mapping)
}

/// `customer_contact = "record"`: the contact as a CRM Contact record.
fn contact_records(mapping: &Mapping) -> bool {
    mapping.status.customer_contact == crate::mapping::ContactMode::Record
}

/// The CRM sides enabled in the settings.
pub fn build_crms(settings: &Settings) -> Result<Vec<CrmSide>, SetupError> {
    let mut sides = Vec::new();
    if settings.dynamics.enabled {
        let mapping = load_mapping(settings, CrmKind::Dynamics)?;
        let crm = DynamicsCrm::new(&settings.dynamics, object_spec(&mapping))
            .map_err(|cause| SetupError::Crm {
                crm: CrmKind::Dynamics,
                cause,
            })?
            .with_contact_records(contact_records(&mapping));
        sides.push(CrmSide {
            kind: CrmKind::Dynamics,
            crm: Arc::new(crm) as Arc<dyn Crm>,
            mapping: Arc::new(mapping),
            batch_size: (settings.dynamics.batch_size as usize)
                .max(crate::crm::dynamics::WRITES_PER_CALL),
        });
    }
    if settings.salesforce.enabled {
        let mapping = load_mapping(settings, CrmKind::Salesforce)?;
        let crm = SalesforceCrm::new(&settings.salesforce, object_spec(&mapping))
            .map_err(|cause| SetupError::Crm {
                crm: CrmKind::Salesforce,
                cause,
            })?
            .with_contact_records(contact_records(&mapping));
        sides.push(CrmSide {
            kind: CrmKind::Salesforce,
            crm: Arc::new(crm) as Arc<dyn Crm>,
            mapping: Arc::new(mapping),
            batch_size: settings.salesforce.batch_size as usize,
        });
    }
    Ok(sides)
}

/// The Partner Center client over the state store's refresh token.
pub fn build_partner_center(
    settings: &Settings,
    store: Arc<Store>,
) -> Result<PartnerCenterClient, SetupError> {
    let tokens = StoredRefreshToken::new(store, settings.partner_center.refresh_token.clone());
    Ok(PartnerCenterClient::new(
        PartnerCenterOptions::from_settings(&settings.partner_center),
        Arc::new(StoreRefreshTokens(tokens)),
    )?)
}

/// The Partner Center client's refresh-token store over the state store: the
/// adapter lives here, where both are known, so that the store need not know
/// the client.
pub struct StoreRefreshTokens(pub StoredRefreshToken);

impl RefreshTokenStore for StoreRefreshTokens {
    fn load(&self) -> Result<Option<SecretString>, TokenStoreError> {
        Ok(self.0.load()?)
    }

    fn save(&self, token: &SecretString) -> Result<(), TokenStoreError> {
        Ok(self.0.save(token)?)
    }
}

/// An engine for the settings, after checking everything a sync needs.
pub fn build_engine(
    settings: &Settings,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
) -> Result<Engine, SetupError> {
    let problems = settings.readiness_problems();
    if !problems.is_empty() {
        return Err(SetupError::Readiness(problems));
    }
    let crms = build_crms(settings)?;
    let pc = build_partner_center(settings, store.clone())?;
    Ok(Engine::new(store, pc, crms, settings.sync.clone(), clock))
}
