//! The Referrals API client.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, IF_MATCH};
use url::Url;
use uuid::Uuid;

use async_trait::async_trait;
use serde_json::Value;

use super::PartnerCenterOptions;
use super::api::{PartnerCenter, PriorDeal, ReferralPage};
use super::auth::{RefreshTokenSource, RefreshTokenStore};
use super::create::{kind_of_draft, microsoft_referral_body, own_referral_body};
use super::error::PartnerCenterError;
use super::pager::ReferralPager;
use super::query::{ListFilter, changes_filter, engagement_filter, list_url, resolve_next_link};
use crate::domain::patch::lifecycle_patch;
use crate::domain::{DealKind, LifecycleAction, PatchOp, Referral, Stage, validate_new_deal};
use crate::http::{ClientSettings, HttpError, RetryPolicy, Retryable, TokenCache, build_client};

/// What `create_deal` made.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedDeal {
    pub kind: DealKind,
    /// The partner's own referral (`Independent` or `Shared`).
    pub referral: Referral,
    /// For co-sell: the referral that invites Microsoft into the engagement.
    pub microsoft_referral: Option<Referral>,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    referrals_url: Url,
    page_size: u32,
    tokens: TokenCache<RefreshTokenSource>,
    retry: RetryPolicy,
}

/// Partner Center Referrals API client. Cloning is cheap; clones share the
/// HTTP connection pool and the token cache.
#[derive(Clone)]
pub struct PartnerCenterClient {
    inner: Arc<Inner>,
    correlation_id: Uuid,
}

impl std::fmt::Debug for PartnerCenterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerCenterClient")
            .field("base_url", &self.inner.base_url.as_str())
            .field("correlation_id", &self.correlation_id)
            .finish()
    }
}

struct ApiRequest {
    method: Method,
    url: Url,
    body: Option<Vec<u8>>,
    if_match: Option<String>,
    prefer_representation: bool,
    /// Safe to resend after a failure that may have reached the server.
    idempotent: bool,
    /// The referral concerned, for the 412 error.
    referral_id: Option<String>,
}

impl ApiRequest {
    fn get(url: Url) -> Self {
        ApiRequest {
            method: Method::GET,
            url,
            body: None,
            if_match: None,
            prefer_representation: false,
            idempotent: true,
            referral_id: None,
        }
    }
}

struct ApiResponse {
    status: u16,
    /// As reqwest collected it: a page is not copied again.
    body: bytes::Bytes,
}

fn json_bytes(v: &impl serde::Serialize) -> Vec<u8> {
    // Plain data with string keys always serializes.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The engagement a created referral belongs to.
fn engagement_of(referral: &Referral) -> Result<String, PartnerCenterError> {
    referral
        .engagement_id
        .clone()
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| PartnerCenterError::UnexpectedResponse {
            what: "the created referral".into(),
            reason: format!("referral {} has no engagementId", referral.id),
        })
}

fn parse_referral(body: &[u8]) -> Result<Referral, PartnerCenterError> {
    Referral::from_slice(body).map_err(|e| PartnerCenterError::Unreadable(Box::new(e)))
}

impl PartnerCenterClient {
    /// A client with the standard HTTP settings (rustls, User-Agent, timeouts).
    pub fn new(
        options: PartnerCenterOptions,
        store: Arc<dyn RefreshTokenStore>,
    ) -> Result<Self, PartnerCenterError> {
        let http = build_client(&ClientSettings::with_timeout(options.timeout))?;
        Self::with_http_client(options, store, http)
    }

    /// A client over a caller-built reqwest client (`options.timeout` is then
    /// the caller's business).
    pub fn with_http_client(
        options: PartnerCenterOptions,
        store: Arc<dyn RefreshTokenStore>,
        http: reqwest::Client,
    ) -> Result<Self, PartnerCenterError> {
        if options.client_id.trim().is_empty() {
            return Err(PartnerCenterError::Config(
                "partner_center.client_id is empty".into(),
            ));
        }
        if options.page_size == 0 {
            return Err(PartnerCenterError::Config(
                "partner_center.page_size must be at least 1".into(),
            ));
        }
        let mut base_url = options.base_url.clone();
        if base_url.cannot_be_a_base() {
            return Err(PartnerCenterError::Config(format!(
                "partner_center.base_url {base_url} is not a base URL"
            )));
        }
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        let referrals_url = base_url
            .join("v1.0/engagements/referrals")
            .map_err(|e| PartnerCenterError::Config(format!("partner_center.base_url: {e}")))?;
        let source = RefreshTokenSource::new(http.clone(), &options, store);
        Ok(PartnerCenterClient {
            inner: Arc::new(Inner {
                http,
                base_url,
                referrals_url,
                page_size: options.page_size,
                tokens: TokenCache::new(source),
                retry: RetryPolicy::new(options.retry.clone()).for_api("partner_center"),
            }),
            correlation_id: Uuid::new_v4(),
        })
    }

    /// The same client, sending `MS-CorrelationId: id` (one per sync cycle).
    pub fn with_correlation_id(&self, id: Uuid) -> Self {
        PartnerCenterClient {
            inner: self.inner.clone(),
            correlation_id: id,
        }
    }

    pub fn correlation_id(&self) -> Uuid {
        self.correlation_id
    }

    /// True after Entra ID refused the stored sign-in, until a new refresh
    /// token is saved (`cosell-sync login partner-center`). While paused no
    /// request reaches the token endpoint or the API.
    pub fn paused_for_login(&self) -> bool {
        self.inner.tokens.source().paused()
    }

    /// Referrals updated at or after `since`, oldest change first, page by page.
    pub fn list_changes(&self, since: DateTime<Utc>, filter: ListFilter) -> ReferralPager<'_> {
        ReferralPager::new(self, since, filter)
    }

    /// One page of a listing: the first page of `first`, or the page at
    /// `next` (a continuation this client returned, checked again).
    async fn read_page(
        &self,
        first: impl FnOnce() -> Url,
        next: Option<&str>,
    ) -> Result<ReferralPage, PartnerCenterError> {
        let unexpected = |reason: String| PartnerCenterError::UnexpectedResponse {
            what: "the referral list".into(),
            reason,
        };
        let url = match next {
            Some(link) => resolve_next_link(&self.inner.base_url, link).map_err(unexpected)?,
            None => first(),
        };
        let response = self.execute(&ApiRequest::get(url.clone())).await?;
        let (values, next_link) = parse_collection(&response.body)?;
        let next = match next_link {
            Some(link) => {
                let next = resolve_next_link(&self.inner.base_url, &link).map_err(unexpected)?;
                if next == url {
                    return Err(unexpected(
                        "@odata.nextLink repeats the page just read".into(),
                    ));
                }
                Some(next.to_string())
            }
            None => None,
        };
        let mut page = ReferralPage {
            referrals: Vec::with_capacity(values.len()),
            failures: Vec::new(),
            has_more: next.is_some(),
            next,
        };
        for value in values {
            match Referral::from_json_text(value.get()) {
                Ok(r) => page.referrals.push(r),
                Err(e) => {
                    tracing::warn!(referral_id = e.id.as_deref().unwrap_or(""), reason = %e.reason, "unreadable referral in page");
                    page.failures.push(e);
                }
            }
        }
        Ok(page)
    }

    /// Every referral of one engagement (`engagementId eq '<id>'`).
    async fn list_engagement(
        &self,
        engagement_id: &str,
    ) -> Result<Vec<Referral>, PartnerCenterError> {
        let first = || {
            list_url(
                &self.inner.referrals_url,
                &engagement_filter(engagement_id),
                self.inner.page_size,
            )
        };
        let mut all = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self.read_page(first, next.as_deref()).await?;
            all.extend(page.referrals);
            match page.next {
                Some(n) => next = Some(n),
                None => return Ok(all),
            }
        }
    }

    fn referral_url(&self, id: &str) -> Result<Url, PartnerCenterError> {
        if id.trim().is_empty() {
            return Err(PartnerCenterError::InvalidPatch {
                id: String::new(),
                reason: "the referral id is empty".into(),
            });
        }
        let mut url = self.inner.referrals_url.clone();
        url.path_segments_mut()
            .map_err(|_| {
                PartnerCenterError::Config("partner_center.base_url is not a base URL".into())
            })?
            .push(id);
        Ok(url)
    }

    /// `GET /v1.0/engagements/referrals/{id}`.
    pub async fn get(&self, id: &str) -> Result<Referral, PartnerCenterError> {
        let response = self
            .execute(&ApiRequest::get(self.referral_url(id)?))
            .await?;
        parse_referral(&response.body)
    }

    /// Creates an outbound deal after validating it (an invalid deal is
    /// refused with every problem, and nothing is sent). A draft asking
    /// Microsoft for help (`inviteContext.assistanceRequestCode`) becomes
    /// co-sell: a `Shared` referral, then the Microsoft-targeted referral in
    /// the same engagement. Otherwise it is private pipeline (`Independent`,
    /// not shared with Microsoft sellers).
    ///
    /// The two steps in one call, for one-shot callers; the engine makes them
    /// separate outbox effects ([`create_own_referral`](Self::create_own_referral),
    /// then [`invite_microsoft`](Self::invite_microsoft)) so that a crash
    /// between them is finished on recovery.
    ///
    /// Creating is not idempotent: a failure that may have reached the
    /// service is not resent. Before retrying, look for the deal with
    /// [`find_outgoing_by_external_reference`](Self::find_outgoing_by_external_reference).
    pub async fn create_deal(&self, draft: &Referral) -> Result<CreatedDeal, PartnerCenterError> {
        let referral = self.create_own_referral(draft).await?;
        let kind = kind_of_draft(draft);
        if kind == DealKind::Private {
            return Ok(CreatedDeal {
                kind,
                referral,
                microsoft_referral: None,
            });
        }
        let engagement_id = engagement_of(&referral)?;
        match self.invite_microsoft(draft, &engagement_id).await {
            Ok(microsoft) => Ok(CreatedDeal {
                kind,
                referral,
                microsoft_referral: Some(microsoft),
            }),
            Err(source) => Err(PartnerCenterError::CoSellIncomplete {
                created: Box::new(referral),
                source: Box::new(source),
            }),
        }
    }

    /// The first step of a create: validates the draft (every problem at
    /// once, nothing sent when invalid) and creates the partner's own
    /// referral, `Shared` for co-sell or `Independent` for private pipeline.
    /// A co-sell deal is complete only once Microsoft is invited.
    pub async fn create_own_referral(
        &self,
        draft: &Referral,
    ) -> Result<Referral, PartnerCenterError> {
        let problems = validate_new_deal(draft);
        if !problems.is_empty() {
            return Err(PartnerCenterError::Invalid(problems));
        }
        let kind = kind_of_draft(draft);
        let referral = self.post_referral(&own_referral_body(draft, kind)).await?;
        tracing::info!(referral_id = %referral.id, kind = kind.as_str(), "deal created in Partner Center");
        Ok(referral)
    }

    /// Creates the Microsoft-targeted referral in the engagement, with the
    /// draft's assistance request code, notes and customer contact: the
    /// second step of a co-sell create, and of a private → co-sell upgrade
    /// (the partner's own referral's `target` is read-only; Microsoft joins
    /// through its own connected referral). Not idempotent: after an
    /// interruption check [`find_microsoft_referral`](Self::find_microsoft_referral) first.
    pub async fn invite_microsoft(
        &self,
        draft: &Referral,
        engagement_id: &str,
    ) -> Result<Referral, PartnerCenterError> {
        if draft.assistance_requested().is_none() {
            return Err(PartnerCenterError::Invalid(vec![crate::domain::Problem {
                path: "inviteContext.assistanceRequestCode".into(),
                reason: "say how Microsoft should help before inviting Microsoft".into(),
            }]));
        }
        if engagement_id.trim().is_empty() {
            return Err(PartnerCenterError::InvalidPatch {
                id: draft.id.clone(),
                reason: "inviting Microsoft needs the engagement id of the partner's referral"
                    .into(),
            });
        }
        let microsoft = self
            .post_referral(&microsoft_referral_body(draft, engagement_id))
            .await?;
        tracing::info!(referral_id = %microsoft.id, engagement_id, "Microsoft invited to the engagement");
        Ok(microsoft)
    }

    /// The Microsoft-targeted referral of an engagement, if it exists.
    pub async fn find_microsoft_referral(
        &self,
        engagement_id: &str,
    ) -> Result<Option<Referral>, PartnerCenterError> {
        let all = self.list_engagement(engagement_id).await?;
        Ok(all
            .into_iter()
            .find(|r| r.target.iter().flatten().any(|t| t.is_microsoft())))
    }

    async fn post_referral(
        &self,
        body: &serde_json::Value,
    ) -> Result<Referral, PartnerCenterError> {
        let request = ApiRequest {
            method: Method::POST,
            url: self.inner.referrals_url.clone(),
            body: Some(json_bytes(body)),
            if_match: None,
            prefer_representation: false,
            idempotent: false,
            referral_id: None,
        };
        let response = self.execute(&request).await?;
        // The deal exists even if its echo is unreadable: report a retriable
        // failure so the caller looks it up (by CRM id) instead of quarantining.
        Referral::from_slice(&response.body).map_err(|e| PartnerCenterError::UnexpectedResponse {
            what: "the created referral".into(),
            reason: format!(
                "the deal was created but its response could not be read: {}",
                e.reason
            ),
        })
    }

    /// The outgoing referral we created for a CRM record, found by our CRM
    /// id in `externalReferenceId` among outgoing referrals updated since
    /// `created_since` (the filter uses documented fields only; the id is
    /// matched here). The partner's own referral is preferred over the
    /// Microsoft-targeted copy; among several, the earliest created wins.
    pub async fn find_outgoing_by_external_reference(
        &self,
        external_reference_id: &str,
        created_since: DateTime<Utc>,
    ) -> Result<Option<Referral>, PartnerCenterError> {
        let wanted = external_reference_id.trim();
        match self
            .find_outgoing_by_external_references(&[wanted], created_since)
            .await?
            .remove(wanted)
        {
            Some(PriorDeal::Found(r)) => Ok(Some(*r)),
            Some(PriorDeal::Unreadable(failure)) => Err(PartnerCenterError::Unreadable(failure)),
            None => Ok(None),
        }
    }

    /// [`find_outgoing_by_external_reference`](Self::find_outgoing_by_external_reference)
    /// for many CRM ids in one listing. Ids not found are absent from the map.
    pub async fn find_outgoing_by_external_references(
        &self,
        external_reference_ids: &[&str],
        created_since: DateTime<Utc>,
    ) -> Result<HashMap<String, PriorDeal>, PartnerCenterError> {
        let wanted: HashSet<&str> = external_reference_ids.iter().map(|s| s.trim()).collect();
        let mut found: HashMap<String, PriorDeal> = HashMap::new();
        if wanted.is_empty() {
            return Ok(found);
        }
        let rank = |r: &Referral| {
            let microsoft = r.target.iter().flatten().any(|t| t.is_microsoft());
            (microsoft, r.created_date_time)
        };
        let mut pager = self.list_changes(created_since, ListFilter::outgoing());
        while let Some(page) = pager.next_page().await? {
            for failure in page.failures {
                // Deciding without this record could create a duplicate.
                let mentions = serde_json::from_str::<serde_json::Value>(&failure.raw)
                    .ok()
                    .and_then(|v| {
                        v.get("externalReferenceId")
                            .and_then(|x| x.as_str())
                            .map(|s| s.trim().to_owned())
                    })
                    .filter(|s| wanted.contains(s.as_str()));
                if let Some(id) = mentions {
                    found.insert(id, PriorDeal::Unreadable(Box::new(failure)));
                }
            }
            for r in page.referrals {
                let Some(id) = r
                    .external_reference_id
                    .as_deref()
                    .map(str::trim)
                    .filter(|id| wanted.contains(id))
                    .map(str::to_owned)
                else {
                    continue;
                };
                match found.get(&id) {
                    Some(PriorDeal::Unreadable(_)) => {}
                    Some(PriorDeal::Found(best)) if rank(best) <= rank(&r) => {}
                    _ => {
                        found.insert(id, PriorDeal::Found(Box::new(r)));
                    }
                }
            }
        }
        Ok(found)
    }

    /// JSON Patch (`replace`/`add` only) with `If-Match: <etag>` and
    /// `Prefer: return=representation`. Returns the updated referral when
    /// the service sends it (200), `None` on 204. A 412 is
    /// [`PartnerCenterError::ModifiedConcurrently`]. Status changes go through
    /// [`change_stage`](Self::change_stage), never through here.
    pub async fn patch(
        &self,
        id: &str,
        etag: &str,
        ops: &[PatchOp],
    ) -> Result<Option<Referral>, PartnerCenterError> {
        let touches_status = ops.iter().any(|op| {
            let p = op.path.trim_end_matches('/').to_ascii_lowercase();
            p == "/status" || p == "/substatus"
        });
        if touches_status {
            return Err(PartnerCenterError::InvalidPatch {
                id: id.to_owned(),
                reason: "status changes must go through change_stage, which checks the lifecycle"
                    .into(),
            });
        }
        self.patch_unchecked(id, etag, ops).await
    }

    async fn patch_unchecked(
        &self,
        id: &str,
        etag: &str,
        ops: &[PatchOp],
    ) -> Result<Option<Referral>, PartnerCenterError> {
        let invalid = |reason: &str| PartnerCenterError::InvalidPatch {
            id: id.to_owned(),
            reason: reason.to_owned(),
        };
        if ops.is_empty() {
            return Err(invalid("no operations"));
        }
        if let Some(op) = ops.iter().find(|op| !op.path.starts_with('/')) {
            return Err(invalid(&format!(
                "path {:?} is not a JSON Pointer",
                op.path
            )));
        }
        if etag.trim().is_empty() {
            return Err(PartnerCenterError::MissingETag { id: id.to_owned() });
        }
        let request = ApiRequest {
            method: Method::PATCH,
            url: self.referral_url(id)?,
            body: Some(json_bytes(&ops)),
            if_match: Some(etag.to_owned()),
            prefer_representation: true,
            idempotent: true,
            referral_id: Some(id.to_owned()),
        };
        let response = self.execute(&request).await?;
        if response.status == 204 || response.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match Referral::from_slice(&response.body) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                // The update was applied; only the echo is unreadable.
                tracing::warn!(referral_id = id, reason = %e.reason, "patched referral could not be read back");
                Ok(None)
            }
        }
    }

    /// Moves a referral through its lifecycle. The transition is checked
    /// locally first: a forbidden one is an error and nothing is sent.
    pub async fn change_stage(
        &self,
        referral: &Referral,
        action: &LifecycleAction,
    ) -> Result<Option<Referral>, PartnerCenterError> {
        self.change_stage_with(referral, action, &[]).await
    }

    /// [`change_stage`](Self::change_stage) with field operations in the same
    /// PATCH: what must go with a move to an archived stage (the notes of a
    /// decline), as nothing can be sent after it. The transition is checked
    /// the same way; `extra` may not touch the status, substatus or reason.
    pub async fn change_stage_with(
        &self,
        referral: &Referral,
        action: &LifecycleAction,
        extra: &[PatchOp],
    ) -> Result<Option<Referral>, PartnerCenterError> {
        if let Some(op) = extra.iter().find(|op| {
            let p = op.path.trim_end_matches('/').to_ascii_lowercase();
            p == "/status" || p == "/substatus" || p == "/statusreason"
        }) {
            return Err(PartnerCenterError::InvalidPatch {
                id: referral.id.clone(),
                reason: format!(
                    "{} is set by the lifecycle action, not sent with it",
                    op.path
                ),
            });
        }
        let (status, substatus) = (referral.status.clone(), referral.substatus.clone());
        let stage = match (&status, &substatus) {
            (Some(s), Some(sub)) => Stage::from_api(s, sub),
            (Some(s @ crate::domain::ReferralStatus::New), None) => {
                Stage::from_api(s, &crate::domain::ReferralSubstatus::None)
            }
            _ => None,
        }
        .ok_or_else(|| PartnerCenterError::UnknownStage {
            id: referral.id.clone(),
            status: status.as_ref().map_or("(none)", |s| s.as_str()).to_owned(),
            substatus: substatus
                .as_ref()
                .map_or("(none)", |s| s.as_str())
                .to_owned(),
        })?;
        let mut ops = lifecycle_patch(stage, action)?;
        ops.extend(extra.iter().cloned());
        let etag = referral.e_tag.as_deref().unwrap_or_default();
        self.patch_unchecked(&referral.id, etag, &ops).await
    }

    /// Sets or clears the referral's `favorite` flag (with `If-Match`).
    pub async fn set_favorite(
        &self,
        referral: &Referral,
        on: bool,
    ) -> Result<Option<Referral>, PartnerCenterError> {
        let etag = referral.e_tag.as_deref().unwrap_or_default();
        self.patch_unchecked(&referral.id, etag, &[PatchOp::replace("/favorite", on)])
            .await
    }

    /// Sends a request with retries: 429/503 after `Retry-After`, transient
    /// failures with backoff; a 401 refreshes the token once and resends once.
    async fn execute(&self, request: &ApiRequest) -> Result<ApiResponse, PartnerCenterError> {
        let refreshed = AtomicBool::new(false);
        let op = |attempt| self.attempt(request, attempt, &refreshed);
        if request.idempotent {
            self.inner.retry.run(op).await
        } else {
            self.inner
                .retry
                .run_if(op, |e: &PartnerCenterError| {
                    e.retry_in_place()
                        && match e {
                            PartnerCenterError::Http(h) => h.request_not_processed(),
                            // The token is fetched before anything is sent.
                            PartnerCenterError::Token(_) => true,
                            _ => false,
                        }
                })
                .await
        }
    }

    async fn attempt(
        &self,
        request: &ApiRequest,
        attempt: u32,
        refreshed: &AtomicBool,
    ) -> Result<ApiResponse, PartnerCenterError> {
        let token = self.inner.tokens.token().await?;
        let mut response = self.send(request, token.secret(), attempt).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED
            && !refreshed.swap(true, Ordering::SeqCst)
        {
            tracing::info!(
                path = request.url.path(),
                "access token rejected; refreshing it once"
            );
            self.inner.tokens.invalidate(&token).await;
            let token = self.inner.tokens.token().await?;
            response = self.send(request, token.secret(), attempt).await?;
        }
        let method = request.method.as_str();
        let path = request.url.path();
        let status = response.status().as_u16();
        if response.status().is_success() {
            let body = response
                .bytes()
                .await
                .map_err(|e| HttpError::from_reqwest(method, path, e))?;
            return Ok(ApiResponse { status, body });
        }
        let error = HttpError::from_response(method, path, response).await;
        let code = error
            .service_error()
            .map(|e| e.code.clone())
            .unwrap_or_default();
        tracing::warn!(method, path, status, error_code = %code, attempt, "Partner Center refused the request");
        let conflict = status == 412
            || error.service_error().is_some_and(|e| {
                e.has_code("preconditionFailed") || e.has_code("resourceModified")
            });
        if conflict && request.if_match.is_some() {
            return Err(PartnerCenterError::ModifiedConcurrently {
                id: request.referral_id.clone().unwrap_or_default(),
            });
        }
        Err(PartnerCenterError::Http(error))
    }

    async fn send(
        &self,
        request: &ApiRequest,
        bearer: &str,
        attempt: u32,
    ) -> Result<reqwest::Response, PartnerCenterError> {
        let client_request_id = Uuid::new_v4();
        let method = request.method.as_str();
        let path = request.url.path();
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), request.url.clone())
            .bearer_auth(bearer)
            .header(ACCEPT, "application/json")
            .header("client-request-id", client_request_id.to_string())
            .header("MS-CorrelationId", self.correlation_id.to_string());
        if let Some(body) = &request.body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        if let Some(etag) = &request.if_match {
            builder = builder.header(IF_MATCH, etag.as_str());
        }
        if request.prefer_representation {
            builder = builder.header("Prefer", "return=representation");
        }
        let started = tokio::time::Instant::now();
        let sent = builder.send().await;
        crate::metrics::record_api_duration(crate::metrics::PARTNER_CENTER, started.elapsed());
        crate::metrics::record_api_request(
            crate::metrics::PARTNER_CENTER,
            match &sent {
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) if e.is_timeout() => "timeout".into(),
                Err(_) => "error".into(),
            },
        );
        match sent {
            Ok(response) => {
                tracing::debug!(
                    method,
                    path,
                    status = response.status().as_u16(),
                    client_request_id = %client_request_id,
                    correlation_id = %self.correlation_id,
                    attempt,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Partner Center request"
                );
                Ok(response)
            }
            Err(e) => {
                let error = HttpError::from_reqwest(method, path, e);
                tracing::warn!(
                    method,
                    path,
                    client_request_id = %client_request_id,
                    correlation_id = %self.correlation_id,
                    attempt,
                    error = %error,
                    "Partner Center request failed"
                );
                Err(PartnerCenterError::Http(error))
            }
        }
    }
}

/// `{"value": [...], "@odata.nextLink": "..."}`: each item's JSON text (read
/// into a referral straight from the text, without a JSON tree of the page),
/// found in one pass over the page.
fn parse_collection(
    body: &[u8],
) -> Result<(Vec<&serde_json::value::RawValue>, Option<String>), PartnerCenterError> {
    let unexpected = |reason: String| PartnerCenterError::UnexpectedResponse {
        what: "the referral list".into(),
        reason,
    };
    // A struct would also be read from an array: the page must be an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(unexpected(
            "not a collection page: not a JSON object".into(),
        ));
    }
    let page: CollectionPage<'_> = serde_json::from_slice(body)
        .map_err(|e| unexpected(format!("not a collection page: {e}")))?;
    let values = match page.value {
        Some(Items::Array(items)) => items,
        Some(Items::Not(what)) => {
            return Err(unexpected(format!("`value` is not an array but {what}")));
        }
        Some(Items::Null) | None => return Err(unexpected("no `value` array".into())),
    };
    let next_link = match page.next_link {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        Some(Value::String(_)) | Some(Value::Null) | None => None,
        Some(other) => {
            return Err(unexpected(format!(
                "@odata.nextLink is not a string but {other}"
            )));
        }
    };
    Ok((values, next_link))
}

/// A collection page as the service sends it (other members ignored).
#[derive(serde::Deserialize)]
struct CollectionPage<'a> {
    #[serde(borrow, default)]
    value: Option<Items<'a>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<Value>,
}

/// A page's `value`: its items' texts, or what it was instead of an array.
enum Items<'a> {
    Array(Vec<&'a serde_json::value::RawValue>),
    Null,
    Not(String),
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Items<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for ItemsVisitor<'a> {
            type Value = Items<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Items<'a>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element::<&'de serde_json::value::RawValue>()? {
                    items.push(item);
                }
                Ok(Items::Array(items))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Items<'a>, E> {
                Ok(Items::Null)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Items<'a>, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Items::Not("an object".into()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Items<'a>, E> {
                Ok(Items::Not(format!("the string {v:?}")))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Items<'a>, E> {
                Ok(Items::Not(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Items<'a>, E> {
                Ok(Items::Not(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Items<'a>, E> {
                Ok(Items::Not(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Items<'a>, E> {
                Ok(Items::Not(v.to_string()))
            }
        }
        d.deserialize_any(ItemsVisitor(std::marker::PhantomData))
    }
}

#[async_trait]
impl PartnerCenter for PartnerCenterClient {
    fn with_correlation_id(&self, id: Uuid) -> Arc<dyn PartnerCenter> {
        Arc::new(PartnerCenterClient::with_correlation_id(self, id))
    }

    fn paused_for_login(&self) -> bool {
        PartnerCenterClient::paused_for_login(self)
    }

    async fn list_page(
        &self,
        since: DateTime<Utc>,
        filter: &ListFilter,
        next: Option<&str>,
    ) -> Result<ReferralPage, PartnerCenterError> {
        let first = || {
            list_url(
                &self.inner.referrals_url,
                &changes_filter(since, filter),
                self.inner.page_size,
            )
        };
        self.read_page(first, next).await
    }

    async fn get(&self, id: &str) -> Result<Referral, PartnerCenterError> {
        PartnerCenterClient::get(self, id).await
    }

    async fn create_own_referral(&self, draft: &Referral) -> Result<Referral, PartnerCenterError> {
        PartnerCenterClient::create_own_referral(self, draft).await
    }

    async fn invite_microsoft(
        &self,
        draft: &Referral,
        engagement_id: &str,
    ) -> Result<Referral, PartnerCenterError> {
        PartnerCenterClient::invite_microsoft(self, draft, engagement_id).await
    }

    async fn find_microsoft_referral(
        &self,
        engagement_id: &str,
    ) -> Result<Option<Referral>, PartnerCenterError> {
        PartnerCenterClient::find_microsoft_referral(self, engagement_id).await
    }

    async fn find_outgoing_by_external_references(
        &self,
        external_reference_ids: &[&str],
        created_since: DateTime<Utc>,
    ) -> Result<HashMap<String, PriorDeal>, PartnerCenterError> {
        PartnerCenterClient::find_outgoing_by_external_references(
            self,
            external_reference_ids,
            created_since,
        )
        .await
    }

    async fn patch(
        &self,
        id: &str,
        etag: &str,
        ops: &[PatchOp],
    ) -> Result<Option<Referral>, PartnerCenterError> {
        PartnerCenterClient::patch(self, id, etag, ops).await
    }

    async fn change_stage_with(
        &self,
        referral: &Referral,
        action: &LifecycleAction,
        extra: &[PatchOp],
    ) -> Result<Option<Referral>, PartnerCenterError> {
        PartnerCenterClient::change_stage_with(self, referral, action, extra).await
    }
}

impl From<PartnerCenterClient> for Arc<dyn PartnerCenter> {
    fn from(client: PartnerCenterClient) -> Self {
        Arc::new(client)
    }
}

#[cfg(test)]
mod collection_tests {
    use super::parse_collection;

    fn reason(body: &str) -> String {
        match parse_collection(body.as_bytes()) {
            Err(super::PartnerCenterError::UnexpectedResponse { reason, .. }) => reason,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_page_yields_each_item_as_sent_and_its_next_link() {
        let body = r#"{"@odata.count": 2, "value": [{"id": "a", "x": [1, {"y": null}]}, {"id":"b"}, 7],
            "@odata.nextLink": "https://h/next", "totalCount": 2}"#;
        let (items, next) = parse_collection(body.as_bytes()).unwrap();
        let texts: Vec<&str> = items.iter().map(|i| i.get()).collect();
        assert_eq!(
            texts,
            [
                r#"{"id": "a", "x": [1, {"y": null}]}"#,
                r#"{"id":"b"}"#,
                "7"
            ]
        );
        assert_eq!(next.as_deref(), Some("https://h/next"));
        for last in [
            r#"{"value": []}"#,
            r#"{"value": [], "@odata.nextLink": null}"#,
            r#"{"value": [], "@odata.nextLink": " "}"#,
        ] {
            let (items, next) = parse_collection(last.as_bytes()).unwrap();
            assert!(items.is_empty() && next.is_none(), "{last}");
        }
    }

    #[test]
    fn a_page_that_is_not_a_collection_is_refused_with_what_it_was() {
        assert_eq!(reason(r#"{"items": []}"#), "no `value` array");
        assert_eq!(reason(r#"{"value": null}"#), "no `value` array");
        assert_eq!(
            reason(r#"{"value": {"id": "a"}}"#),
            "`value` is not an array but an object"
        );
        assert_eq!(
            reason(r#"{"value": "a"}"#),
            "`value` is not an array but the string \"a\""
        );
        assert_eq!(
            reason(r#"{"value": [], "@odata.nextLink": 3}"#),
            "@odata.nextLink is not a string but 3"
        );
        assert!(
            reason("[1]").starts_with("not a collection page"),
            "{}",
            reason("[1]")
        );
        assert!(reason(r#"{"value": [1"#).starts_with("not a collection page"));
    }
}
