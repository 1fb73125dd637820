//! Microsoft Partner Center Referrals API client (`/v1.0/engagements/referrals`):
//! delegated sign-in, incremental change listing, get, create (private and
//! co-sell), JSON Patch updates with `If-Match`, and stage changes checked
//! against the lifecycle before anything is sent.

mod api;
mod auth;
mod client;
mod create;
mod error;
mod pager;
pub mod query;

use std::time::Duration;

use url::Url;

use crate::http::RetrySettings;

pub use api::{PartnerCenter, PriorDeal, ReferralPage};
pub use auth::{
    DeviceCodePrompt, MemoryRefreshTokenStore, RefreshTokenStore, device_code_login,
    device_code_login_with,
};
pub use client::{CreatedDeal, PartnerCenterClient};
pub use error::{LOGIN_COMMAND, PartnerCenterError, TokenStoreError};
pub use pager::ReferralPager;
pub use query::ListFilter;

/// Settings of the Partner Center client (built by the caller from config).
#[derive(Debug, Clone, PartialEq)]
pub struct PartnerCenterOptions {
    /// `https://api.partner.microsoft.com`; a path prefix is kept.
    pub base_url: Url,
    /// Entra ID token endpoint (refresh-token and device-code grants).
    pub token_url: Url,
    /// Entra ID device authorization endpoint.
    pub device_code_url: Url,
    /// The app registration (public client) used for delegated sign-in.
    pub client_id: String,
    /// e.g. `https://api.partner.microsoft.com/.default offline_access`.
    pub scope: String,
    /// `$top` of each list request.
    pub page_size: u32,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// In-place retries of one request.
    pub retry: RetrySettings,
}

impl PartnerCenterOptions {
    /// The documented production endpoints, with defaults for the rest.
    pub fn microsoft(client_id: impl Into<String>) -> Self {
        // Constant, well-formed URLs.
        let url = |s: &str| Url::parse(s).unwrap_or_else(|_| unreachable!("constant URL {s}"));
        PartnerCenterOptions {
            base_url: url("https://api.partner.microsoft.com"),
            token_url: url("https://login.microsoftonline.com/organizations/oauth2/v2.0/token"),
            device_code_url: url(
                "https://login.microsoftonline.com/organizations/oauth2/v2.0/devicecode",
            ),
            client_id: client_id.into(),
            scope: "https://api.partner.microsoft.com/.default offline_access".into(),
            page_size: 100,
            timeout: Duration::from_secs(30),
            retry: RetrySettings::default(),
        }
    }
}

impl PartnerCenterOptions {
    /// The client's options from the `[partner_center]` settings.
    pub fn from_settings(s: &crate::config::PartnerCenterSettings) -> Self {
        PartnerCenterOptions {
            base_url: s.base_url.clone(),
            token_url: s.token_url.clone(),
            device_code_url: s.device_code_url.clone(),
            client_id: s.client_id.clone(),
            scope: s.scope.clone(),
            page_size: s.page_size,
            timeout: s.timeout,
            retry: RetrySettings::default(),
        }
    }
}
