//! The `PartnerCenter` trait: what the sync engine asks of Partner Center,
//! implemented by [`PartnerCenterClient`](super::PartnerCenterClient) and by
//! in-memory fakes in unit tests.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::PartnerCenterError;
use super::query::ListFilter;
use crate::domain::{LifecycleAction, PatchOp, Referral, ReferralParseError};

/// What an earlier, possibly interrupted create left in Partner Center.
#[derive(Debug)]
pub enum PriorDeal {
    /// The deal exists (the partner's own referral preferred over the
    /// Microsoft-targeted copy; the earliest created among several).
    Found(Box<Referral>),
    /// A record mentions the CRM id but cannot be read: creating again
    /// could make a duplicate.
    Unreadable(Box<ReferralParseError>),
}

/// One page of referrals. A record that could not be read is in `failures`
/// (with its id and raw JSON) while the rest of the page is delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferralPage {
    pub referrals: Vec<Referral>,
    pub failures: Vec<ReferralParseError>,
    /// Whether another page follows.
    pub has_more: bool,
    /// Where the next page is (pass it back to
    /// [`PartnerCenter::list_page`]); `None` on the last page.
    pub next: Option<String>,
}

/// Partner Center as the sync engine uses it.
#[async_trait]
pub trait PartnerCenter: Send + Sync {
    /// The same Partner Center, sending `MS-CorrelationId: id` (one per cycle).
    fn with_correlation_id(&self, id: Uuid) -> Arc<dyn PartnerCenter>;

    /// True while the stored sign-in was refused and an operator must sign
    /// in again; nothing is sent meanwhile.
    fn paused_for_login(&self) -> bool;

    /// One page of the referrals updated at or after `since`, oldest change
    /// first: the first page with `next = None`, then the page at the
    /// previous page's `next`.
    async fn list_page(
        &self,
        since: DateTime<Utc>,
        filter: &ListFilter,
        next: Option<&str>,
    ) -> Result<ReferralPage, PartnerCenterError>;

    /// One referral by id.
    async fn get(&self, id: &str) -> Result<Referral, PartnerCenterError>;

    /// Validates a draft and creates the partner's own referral (the first
    /// step of a create). Not idempotent.
    async fn create_own_referral(&self, draft: &Referral) -> Result<Referral, PartnerCenterError>;

    /// Creates the Microsoft-targeted referral in the engagement (the second
    /// step of a co-sell create or upgrade). Not idempotent.
    async fn invite_microsoft(
        &self,
        draft: &Referral,
        engagement_id: &str,
    ) -> Result<Referral, PartnerCenterError>;

    /// The Microsoft-targeted referral of an engagement, if it exists.
    async fn find_microsoft_referral(
        &self,
        engagement_id: &str,
    ) -> Result<Option<Referral>, PartnerCenterError>;

    /// The outgoing referrals created for these CRM ids (matched on
    /// `externalReferenceId`) among those updated since `created_since`.
    async fn find_outgoing_by_external_references(
        &self,
        external_reference_ids: &[&str],
        created_since: DateTime<Utc>,
    ) -> Result<HashMap<String, PriorDeal>, PartnerCenterError>;

    /// JSON Patch of fields (never the status) with `If-Match: etag`; the
    /// updated referral when the service returns it.
    async fn patch(
        &self,
        id: &str,
        etag: &str,
        ops: &[PatchOp],
    ) -> Result<Option<Referral>, PartnerCenterError>;

    /// A lifecycle move checked locally first, with field operations in the
    /// same PATCH.
    async fn change_stage_with(
        &self,
        referral: &Referral,
        action: &LifecycleAction,
        extra: &[PatchOp],
    ) -> Result<Option<Referral>, PartnerCenterError>;

    /// A lifecycle move checked locally first.
    async fn change_stage(
        &self,
        referral: &Referral,
        action: &LifecycleAction,
    ) -> Result<Option<Referral>, PartnerCenterError> {
        self.change_stage_with(referral, action, &[]).await
    }
}
