//! Dynamics 365 through the Dataverse Web API (OData v4).
//!
//! Reads opportunities incrementally (a `modifiedon` watermark, or change
//! tracking with delta links), upserts them by the alternate key on the
//! referral-id column in `$batch` calls, closes them with the
//! `WinOpportunity` / `LoseOpportunity` actions, finds or creates the
//! customer account (a new one in its deal's change set), and checks the
//! org's metadata against the mapping.

// `CrmError` (the trait's error type) is large; boxing it here would only
// move the allocation around.
#![allow(clippy::result_large_err)]

mod auth;
mod batch;
mod client;
mod contacts;
mod customer;
mod limiter;
mod metadata;
mod odata;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;
use url::Url;

pub use auth::DynamicsCredential;
pub use batch::{
    BatchBody, BatchItem, BatchOperation, BatchParseError, OperationResponse, build_batch,
    build_change_sets, parse_batch_response,
};
pub use limiter::ServiceLimits;

use self::auth::EntraClientCredentials;
use self::client::{Api, Call};
use crate::config::{AccountMatch, DynamicsSettings};
use crate::crm::body::BodyFields;
use crate::crm::{
    ChangePage, CloseOutcome, CloseRequest, Crm, CrmChange, CrmError, CrmObjectSpec, CrmRecord,
    CustomerRef, MetadataProblem, RecordKey, RecordWrite, WriteOk, WriteResult,
};
use crate::domain::CrmKind;
use crate::http::{
    ClientSettings, HttpError, RetryDirective, RetryPolicy, RetrySettings, ServiceError,
    TokenCache, build_client, classify_status,
};

/// Most operations Dataverse accepts in one `$batch`.
pub const MAX_BATCH_OPERATIONS: usize = 1000;
/// Records the engine hands over per write call, at least: about as many
/// customers as one account lookup's URL carries (some 230 with DUNS, name
/// and postal code), so that a backfill looks its customers up in full
/// queries; the opportunities still go in `$batch` calls of `batch_size`.
pub const WRITES_PER_CALL: usize = 200;
/// The account column holding the DUNS number, unless told otherwise.
pub const DEFAULT_DUNS_COLUMN: &str = "new_dunsnumber";
/// The longest `opportunityclose.subject`.
const SUBJECT_MAX_CHARS: usize = 200;

/// Knobs beyond the `[dynamics]` settings, mostly for tests.
#[derive(Debug, Clone)]
pub struct DynamicsOptions {
    /// A ready-made HTTP client (tests: one without timeouts, for the paused clock).
    pub client: Option<reqwest::Client>,
    /// Overrides the client secret from the settings (e.g. a certificate).
    pub credential: Option<DynamicsCredential>,
    pub retry: RetrySettings,
    pub limits: ServiceLimits,
    /// Account column holding the DUNS number (a custom column).
    pub duns_column: String,
}

impl Default for DynamicsOptions {
    fn default() -> Self {
        DynamicsOptions {
            client: None,
            credential: None,
            retry: RetrySettings::default(),
            limits: ServiceLimits::default(),
            duns_column: DEFAULT_DUNS_COLUMN.into(),
        }
    }
}

/// What the table's metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EntityInfo {
    set_name: String,
    primary_key: String,
    change_tracking: Option<bool>,
}

/// The Dataverse adapter.
pub struct DynamicsCrm {
    api: Api,
    /// `https://org/api/data/v9.2/`
    api_root: Url,
    spec: CrmObjectSpec,
    change_tracking: bool,
    account_match: AccountMatch,
    /// Accounts resolved recently, across write calls.
    accounts: crate::crm::accounts::AccountCache,
    page_size: u32,
    batch_size: usize,
    duns_column: String,
    /// Cleared when the DUNS column turns out not to exist.
    duns_usable: AtomicBool,
    /// `customer_contact = "record"`: contacts as rows of `contacts`.
    contact_records: bool,
    entity: OnceCell<EntityInfo>,
}

impl std::fmt::Debug for DynamicsCrm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicsCrm")
            .field("api_root", &self.api_root.as_str())
            .field("table", &self.spec.object)
            .field("change_tracking", &self.change_tracking)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> CrmError {
    CrmError::Invalid(message.into())
}

fn protocol(message: impl Into<String>) -> CrmError {
    CrmError::Protocol {
        crm: CrmKind::Dynamics,
        message: message.into(),
    }
}

impl DynamicsCrm {
    pub fn new(settings: &DynamicsSettings, spec: CrmObjectSpec) -> Result<DynamicsCrm, CrmError> {
        let options = DynamicsOptions {
            duns_column: settings.duns_column.clone(),
            ..DynamicsOptions::default()
        };
        Self::with_options(settings, spec, options)
    }

    pub fn with_options(
        settings: &DynamicsSettings,
        spec: CrmObjectSpec,
        options: DynamicsOptions,
    ) -> Result<DynamicsCrm, CrmError> {
        if spec.object.trim().is_empty() {
            return Err(invalid("the Dynamics mapping names no table (`object`)"));
        }
        if spec.external_id_field.trim().is_empty() {
            return Err(invalid(
                "the Dynamics mapping names no referral-id column (`external_id`)",
            ));
        }
        let credential = match (options.credential, &settings.client_secret) {
            (Some(c), _) => c,
            (None, Some(secret)) => DynamicsCredential::ClientSecret(secret.clone()),
            (None, None) => {
                return Err(CrmError::Auth {
                    crm: CrmKind::Dynamics,
                    message:
                        "no client secret is configured (COSELL_SYNC__DYNAMICS__CLIENT_SECRET)"
                            .into(),
                    needs_operator: true,
                });
            }
        };
        let http = match options.client {
            Some(c) => c,
            None => build_client(&ClientSettings::with_timeout(settings.timeout))?,
        };
        let mut base = settings.base_url.as_str().to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let api_root = Url::parse(&format!("{base}api/data/{}/", settings.api_version))
            .map_err(|e| invalid(format!("dynamics.base_url: {e}")))?;
        let tokens = TokenCache::new(EntraClientCredentials {
            http: http.clone(),
            token_url: settings.token_url.clone(),
            client_id: settings.client_id.clone(),
            scope: settings.effective_scope(),
            credential,
        });
        Ok(DynamicsCrm {
            api: Api {
                http,
                tokens,
                limiter: limiter::Limiter::new(&options.limits),
                retry: RetryPolicy::new(options.retry).for_api("dynamics"),
            },
            api_root,
            spec,
            change_tracking: settings.change_tracking,
            account_match: settings.account_match,
            page_size: settings.page_size.clamp(1, 5000),
            batch_size: (settings.batch_size as usize).clamp(1, MAX_BATCH_OPERATIONS),
            duns_column: options.duns_column,
            duns_usable: AtomicBool::new(true),
            accounts: Default::default(),
            contact_records: false,
            entity: OnceCell::new(),
        })
    }

    /// `https://org/api/data/v9.2/<relative>[?query]`.
    fn url(&self, relative: &str, query: &[(&str, String)]) -> Result<Url, CrmError> {
        let mut url = Url::parse(&format!("{}{relative}", self.api_root))
            .map_err(|e| invalid(format!("cannot build the URL for {relative}: {e}")))?;
        if !query.is_empty() {
            url.set_query(Some(&odata::query(query)));
        }
        Ok(url)
    }

    /// A link the service gave us (`@odata.nextLink`, `@odata.deltaLink`),
    /// followed as is, but only on our own Web API: the token goes nowhere else.
    fn follow_link(&self, link: &str) -> Result<Url, CrmError> {
        let url = Url::parse(link).map_err(|e| protocol(format!("bad next link: {e}")))?;
        let same_origin =
            url.origin() == self.api_root.origin() && url.path().starts_with(self.api_root.path());
        if !same_origin {
            return Err(protocol(format!(
                "a paging link points outside the configured Web API ({})",
                url.origin().ascii_serialization()
            )));
        }
        Ok(url)
    }

    fn table(&self) -> &str {
        &self.spec.object
    }

    fn metadata_path(&self, table: &str) -> String {
        format!(
            "EntityDefinitions(LogicalName={})",
            odata::string_literal(table)
        )
    }

    /// The entity set name and primary key, read once from the metadata.
    async fn entity(&self) -> Result<&EntityInfo, CrmError> {
        self.entity
            .get_or_try_init(|| async {
                let url = self.url(
                    &self.metadata_path(self.table()),
                    &[(
                        "$select",
                        "EntitySetName,PrimaryIdAttribute,ChangeTrackingEnabled".into(),
                    )],
                )?;
                let call = Call::get(url);
                let answer = self.api.call(&call).await.map_err(|e| match e {
                    CrmError::Http(h) if h.status() == Some(404) => invalid(format!(
                        "Dataverse has no table with the logical name `{}` (check the mapping's `object`)",
                        self.table()
                    )),
                    other => other,
                })?;
                let v = answer.json(&call)?;
                let set_name = v
                    .get("EntitySetName")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        protocol(format!(
                            "the metadata of table `{}` has no EntitySetName",
                            self.table()
                        ))
                    })?
                    .to_owned();
                let primary_key = v
                    .get("PrimaryIdAttribute")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{}id", self.table()));
                let info = EntityInfo {
                    set_name,
                    primary_key,
                    change_tracking: v.get("ChangeTrackingEnabled").and_then(Value::as_bool),
                };
                tracing::debug!(table = %self.table(), entity_set = %info.set_name, "dataverse table metadata read");
                Ok(info)
            })
            .await
    }

    /// `opportunities(new_referralid='…')` or `opportunities(<guid>)`.
    fn record_path(&self, entity: &EntityInfo, key: &RecordKey) -> Result<String, CrmError> {
        match key {
            RecordKey::Referral(id) => {
                if id.is_empty() {
                    return Err(invalid("an empty referral id cannot address a record"));
                }
                Ok(format!(
                    "{}({})",
                    entity.set_name,
                    odata::alternate_key_segment(&self.spec.external_id_field, id)
                ))
            }
            RecordKey::CrmId(id) => {
                let guid = odata::guid_segment(id).ok_or_else(|| {
                    invalid(format!("`{id}` is not a Dataverse record id (GUID)"))
                })?;
                Ok(format!("{}({guid})", entity.set_name))
            }
        }
    }

    fn select(&self, entity: &EntityInfo) -> String {
        let mut cols = self.spec.select_fields();
        for extra in [entity.primary_key.as_str(), "modifiedon"] {
            if !cols.iter().any(|c| c == extra) {
                cols.push(extra.to_owned());
            }
        }
        cols.join(",")
    }

    fn page_from(
        &self,
        entity: &EntityInfo,
        body: &Value,
        local_filter: bool,
    ) -> Result<ChangePage, CrmError> {
        let rows = body
            .get("value")
            .and_then(Value::as_array)
            .ok_or_else(|| protocol("a listing has no `value` array"))?;
        let mut page = ChangePage::default();
        for row in rows {
            let Some(row) = row.as_object() else {
                tracing::warn!(
                    crm = "dynamics",
                    "skipping a listing row that is not an object"
                );
                continue;
            };
            match odata::change_from_row(row, &self.spec, &entity.primary_key) {
                Ok(CrmChange::Upserted(rec)) => {
                    if local_filter && !odata::in_scope(&rec, &self.spec) {
                        continue;
                    }
                    if let Some(at) = rec.modified_at {
                        page.high_water =
                            Some(page.high_water.map_or(at, |h: DateTime<Utc>| h.max(at)));
                    }
                    page.changes.push(CrmChange::Upserted(rec));
                }
                Ok(deleted) => page.changes.push(deleted),
                Err(e) => {
                    tracing::warn!(crm = "dynamics", problem = %e.0, "skipping an unreadable row")
                }
            }
        }
        page.continuation = body
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if page.continuation.is_none() {
            page.delta_token = body
                .get("@odata.deltaLink")
                .and_then(Value::as_str)
                .and_then(odata::delta_token_of);
        }
        Ok(page)
    }

    async fn read_watermark(
        &self,
        entity: &EntityInfo,
        since: Option<DateTime<Utc>>,
        continuation: Option<&str>,
    ) -> Result<ChangePage, CrmError> {
        let url = match continuation {
            Some(link) => self.follow_link(link)?,
            None => {
                let mut filter = odata::scope_filter(&self.spec);
                if let Some(since) = since {
                    filter = format!(
                        "modifiedon ge {} and {filter}",
                        odata::datetime_literal(since)
                    );
                }
                self.url(
                    &entity.set_name,
                    &[
                        ("$select", self.select(entity)),
                        ("$filter", filter),
                        ("$orderby", "modifiedon asc".into()),
                    ],
                )?
            }
        };
        let call = Call::get(url).prefer(format!("odata.maxpagesize={}", self.page_size));
        let answer = self.api.call(&call).await?;
        self.page_from(entity, &answer.json(&call)?, false)
    }

    async fn read_delta(
        &self,
        entity: &EntityInfo,
        continuation: Option<&str>,
    ) -> Result<ChangePage, CrmError> {
        let initial = || self.url(&entity.set_name, &[("$select", self.select(entity))]);
        let (url, from_token) = match continuation {
            None => (initial()?, false),
            Some(c) if c.starts_with("http://") || c.starts_with("https://") => (
                self.follow_link(c)?,
                c.contains("$deltatoken") || c.contains("%24deltatoken"),
            ),
            Some(token) => (
                self.url(
                    &entity.set_name,
                    &[
                        ("$select", self.select(entity)),
                        ("$deltatoken", token.to_owned()),
                    ],
                )?,
                true,
            ),
        };
        let prefer = |url: Url| {
            Call::get(url)
                .prefer("odata.track-changes")
                .prefer(format!("odata.maxpagesize={}", self.page_size))
        };
        let call = prefer(url);
        let answer = match self.api.call(&call).await {
            Ok(a) => a,
            Err(CrmError::Http(e)) if from_token && delta_token_refused(&e) => {
                // An expired or unknown delta token: start over with a full read.
                tracing::warn!(
                    crm = "dynamics",
                    error = %e,
                    "the change-tracking token was refused; reading every opportunity again"
                );
                let call = prefer(initial()?);
                let answer = self.api.call(&call).await?;
                return self.page_from(entity, &answer.json(&call)?, true);
            }
            Err(e) => return Err(e),
        };
        self.page_from(entity, &answer.json(&call)?, true)
    }

    async fn fetch_with(
        &self,
        entity: &EntityInfo,
        key: &RecordKey,
        select: String,
    ) -> Result<Option<Map<String, Value>>, CrmError> {
        let url = self.url(&self.record_path(entity, key)?, &[("$select", select)])?;
        let call = Call::get(url);
        match self.api.call(&call).await {
            Ok(answer) => match answer.json(&call)? {
                Value::Object(row) => Ok(Some(row)),
                _ => Err(protocol("a record read is not a JSON object")),
            },
            Err(CrmError::Http(e)) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The body of an upsert: mapped fields, minus what a PATCH must not carry.
    fn write_body<'a>(&'a self, write: &'a RecordWrite) -> BodyFields<'a> {
        let mut body = BodyFields::new(&write.fields);
        if matches!(write.key, RecordKey::Referral(_)) {
            // The key is in the URL; on create a body value would win over it.
            body.leave_out(&self.spec.external_id_field);
        }
        // Won/lost are reached only through the close actions, and an open
        // state is never forced onto a row: archived deals are never reopened.
        let closing = write
            .fields
            .get("statecode")
            .and_then(Value::as_i64)
            .is_some_and(|s| s != 0);
        body.leave_out("statecode");
        if closing {
            body.leave_out("statuscode");
        }
        body
    }

    fn operation(
        &self,
        entity: &EntityInfo,
        write: &RecordWrite,
        body: &BodyFields<'_>,
    ) -> Result<BatchOperation, CrmError> {
        let path = format!(
            "{}{}?$select={}",
            self.api_root.path(),
            self.record_path(entity, &write.key)?,
            entity.primary_key
        );
        let mut headers = vec![("Prefer", "return=representation".to_owned())];
        match (&write.if_match, &write.key) {
            (Some(etag), _) => headers.push(("If-Match", etag.clone())),
            // Updating by id must never create a row.
            (None, RecordKey::CrmId(_)) => headers.push(("If-Match", "*".into())),
            (None, RecordKey::Referral(_)) => {}
        }
        Ok(BatchOperation {
            method: Method::PATCH,
            path_and_query: path,
            headers,
            body: Some(serde_json::to_vec(body).map_err(|e| {
                CrmError::Invalid(format!("a request body could not be written: {e}"))
            })?),
        })
    }

    /// Sends `ops` as one `$batch` (each in its own change set); the
    /// response of each operation, in order (`None` when the answer has
    /// none for it). `Err` when the call as a whole failed.
    pub(super) async fn batch_call(
        &self,
        ops: &[BatchOperation],
        idempotent: bool,
    ) -> Result<Vec<Option<OperationResponse>>, CrmError> {
        let sets: Vec<&[BatchOperation]> = ops.iter().map(std::slice::from_ref).collect();
        self.change_sets_call(&sets, idempotent).await
    }

    /// Sends `sets` as one `$batch`, each an atomic change set; the response
    /// of each operation, in order across the sets. The operations of a
    /// failed change set all get its failure.
    pub(super) async fn change_sets_call(
        &self,
        sets: &[&[BatchOperation]],
        idempotent: bool,
    ) -> Result<Vec<Option<OperationResponse>>, CrmError> {
        let built = build_change_sets(sets);
        let url = self.url("$batch", &[])?;
        let call = Call {
            method: Method::POST,
            url,
            prefer: vec!["odata.continue-on-error".into()],
            headers: Vec::new(),
            body: Some((built.content_type.clone(), built.body.clone())),
            idempotent,
        };
        let (content_type, body) = match self.api.call(&call).await {
            Ok(answer) => (
                answer.header("content-type").unwrap_or_default().to_owned(),
                answer.body,
            ),
            // Without continue-on-error honoured, a failed batch answers 400
            // with the parts processed so far.
            Err(CrmError::Http(HttpError::Status { status, body, .. }))
                if status == 400 && body.contains("--batchresponse_") =>
            {
                let boundary = body
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("--"))
                    .map(|b| b.trim_end_matches("--").to_owned())
                    .unwrap_or_default();
                (
                    format!("multipart/mixed; boundary={boundary}"),
                    body.into_bytes(),
                )
            }
            Err(e) => return Err(e),
        };
        let items = parse_batch_response(&content_type, &body)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let total = built.content_ids.len();
        // The operations of each set: `first[k]..first[k + 1]`.
        let mut first = Vec::with_capacity(sets.len() + 1);
        let mut at = 0;
        for set in sets {
            first.push(at);
            at += set.len();
        }
        first.push(at);
        let mut by_index: Vec<Option<OperationResponse>> = vec![None; total];
        for (position, item) in items.into_iter().enumerate() {
            let responses = match item {
                BatchItem::ChangeSet(r) => r,
                BatchItem::Single(r) => vec![r],
            };
            for r in responses {
                // Content-ID n is the n-th operation; a failed change set
                // answers once, maybe without one, in the change set's position.
                let index = r
                    .content_id
                    .as_deref()
                    .and_then(|id| built.content_ids.iter().position(|c| c == id))
                    .or_else(|| first.get(position).copied().filter(|i| *i < total));
                if let Some(slot) = index.and_then(|i| by_index.get_mut(i))
                    && slot.is_none()
                {
                    *slot = Some(r);
                }
            }
        }
        // A change set is all or nothing: its failure is every operation's.
        for w in first.windows(2) {
            let ops = &mut by_index[w[0]..w[1]];
            let failure = ops
                .iter()
                .flatten()
                .find(|r| !(200..300).contains(&r.status))
                .cloned();
            if let Some(f) = failure {
                for slot in ops.iter_mut() {
                    if slot.as_ref().is_none_or(|r| (200..300).contains(&r.status)) {
                        *slot = Some(f.clone());
                    }
                }
            }
        }
        Ok(by_index)
    }

    /// Sends one batch of prepared writes, each its own change set: the
    /// deal's upsert, after the create of its new account if it has one.
    /// Per write, in order: its result, and the new account's id (or why it
    /// was not created).
    async fn send_batch(
        &self,
        entity: &EntityInfo,
        keys: &[&RecordKey],
        sets: Vec<Vec<BatchOperation>>,
    ) -> Vec<(Result<WriteOk, CrmError>, Option<Result<String, CrmError>>)> {
        let refs: Vec<&[BatchOperation]> = sets.iter().map(Vec::as_slice).collect();
        // Every deal is an upsert, and an account create travels with its
        // deal, so a resent batch creates no account twice only if the first
        // one failed as a whole: creates are not resent.
        let idempotent = sets.iter().all(|s| s.len() == 1);
        let by_index = match self.change_sets_call(&refs, idempotent).await {
            Ok(r) => r,
            Err(e) => {
                return keys
                    .iter()
                    .zip(&sets)
                    .map(|(_, s)| (Err(e.clone()), (s.len() > 1).then(|| Err(e.clone()))))
                    .collect();
            }
        };
        let mut responses = by_index.into_iter();
        let mut results = Vec::with_capacity(keys.len());
        for (key, set) in keys.iter().zip(&sets) {
            let account = if set.len() > 1 {
                Some(responses.next().flatten())
            } else {
                None
            };
            let result = match responses.next().flatten() {
                None => Err(CrmError::Record {
                    key: (*key).clone(),
                    code: "NotProcessed".into(),
                    message: "the $batch answer has no response for this operation".into(),
                    fields: Vec::new(),
                    directive: RetryDirective::Backoff,
                }),
                Some(r) => self.operation_outcome(entity, key, r).await,
            };
            let account = account.map(|a| match a {
                Some(r) if (200..300).contains(&r.status) => customer::created_account_id(
                    &r.body,
                    r.headers
                        .get("odata-entityid")
                        .and_then(|v| v.to_str().ok()),
                ),
                Some(r) => Err(protocol(format!(
                    "the account was not created (HTTP {})",
                    r.status
                ))),
                None => Err(protocol(
                    "the $batch answer has no response for the account create",
                )),
            });
            results.push((result, account));
        }
        results
    }

    async fn operation_outcome(
        &self,
        entity: &EntityInfo,
        key: &RecordKey,
        r: OperationResponse,
    ) -> Result<WriteOk, CrmError> {
        let header = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if !(200..300).contains(&r.status) {
            return Err(record_error(key, r.status, header("retry-after"), &r.body));
        }
        let row: Option<Map<String, Value>> = serde_json::from_slice(&r.body).ok();
        let from_body = row.as_ref().and_then(|row| {
            row.get(&entity.primary_key)
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let version = row
            .as_ref()
            .and_then(|row| {
                row.get("@odata.etag")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .or_else(|| header("etag"));
        let crm_id = from_body.or_else(|| {
            header("odata-entityid")
                .or_else(|| header("location"))
                .and_then(|id| odata::guid_from_entity_id(&id))
        });
        match crm_id {
            Some(crm_id) => Ok(WriteOk {
                crm_id,
                created: r.status == 201,
                version,
            }),
            None => {
                // A 204 naming the row by its alternate key: read its id.
                let row = self
                    .fetch_with(entity, key, format!("{},modifiedon", entity.primary_key))
                    .await?
                    .ok_or_else(|| {
                        protocol(format!("{key} was written but cannot be read back"))
                    })?;
                let crm_id = row
                    .get(&entity.primary_key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| protocol(format!("{key} was read back without its id")))?
                    .to_owned();
                Ok(WriteOk {
                    crm_id,
                    created: false,
                    version: row
                        .get("@odata.etag")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or(version),
                })
            }
        }
    }

    async fn close_one(
        &self,
        entity: &EntityInfo,
        close: &CloseRequest,
    ) -> Result<WriteOk, CrmError> {
        let select = format!("{},statecode,statuscode", entity.primary_key);
        let row = self
            .fetch_with(entity, &close.key, select)
            .await?
            .ok_or_else(|| CrmError::Record {
                key: close.key.clone(),
                code: "NotFound".into(),
                message: "no opportunity to close".into(),
                fields: Vec::new(),
                directive: RetryDirective::Backoff,
            })?;
        let crm_id = row
            .get(&entity.primary_key)
            .and_then(Value::as_str)
            .and_then(odata::guid_segment)
            .ok_or_else(|| protocol(format!("{} was read without its id", close.key)))?;
        let version = row
            .get("@odata.etag")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let wanted_state = match close.outcome {
            CloseOutcome::Won => 1,
            CloseOutcome::Lost => 2,
        };
        match row.get("statecode").and_then(Value::as_i64) {
            Some(0) | None => {}
            Some(state) if state == wanted_state => {
                // Already closed this way (a replay): nothing to do.
                return Ok(WriteOk {
                    crm_id,
                    created: false,
                    version,
                });
            }
            Some(state) => {
                return Err(CrmError::Record {
                    key: close.key.clone(),
                    code: "AlreadyClosed".into(),
                    message: format!(
                        "the opportunity is already closed as {}; archived deals are never reopened",
                        if state == 1 { "won" } else { "lost" }
                    ),
                    fields: vec!["statecode".into()],
                    directive: RetryDirective::Permanent,
                });
            }
        }
        // Other mapped fields (the reason field…) go on before the row
        // becomes read-only.
        let mut extra = close.fields.clone();
        extra.remove("statecode");
        let status = extra.remove("statuscode");
        if !extra.is_empty() {
            let url = self.url(&format!("{}({crm_id})", entity.set_name), &[])?;
            let call =
                Call::json(Method::PATCH, url, &Value::Object(extra), true).header("If-Match", "*");
            self.api
                .call(&call)
                .await
                .map_err(|e| keyed(e, &close.key))?;
        }
        let (action, default_status, default_subject) = match close.outcome {
            CloseOutcome::Won => ("WinOpportunity", 3, "Won Opportunity"),
            CloseOutcome::Lost => ("LoseOpportunity", 4, "Lost Opportunity"),
        };
        let status = match status {
            None | Some(Value::Null) => default_status,
            Some(v) => v.as_i64().ok_or_else(|| {
                invalid(format!("the mapped statuscode {v} is not an option value"))
            })?,
        };
        let subject: String = close
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .unwrap_or(default_subject)
            .chars()
            .take(SUBJECT_MAX_CHARS)
            .collect();
        let body = json!({
            "Status": status,
            "OpportunityClose": {
                "subject": subject,
                "opportunityid@odata.bind": format!("/{}({crm_id})", entity.set_name),
            }
        });
        let url = self.url(action, &[])?;
        let call = Call::json(Method::POST, url, &body, false);
        self.api
            .call(&call)
            .await
            .map_err(|e| keyed(e, &close.key))?;
        tracing::info!(crm = "dynamics", key = %close.key, action, "opportunity closed");
        Ok(WriteOk {
            crm_id,
            created: false,
            version: None,
        })
    }
}

/// Whether a failed delta-link request means "start over".
fn delta_token_refused(e: &HttpError) -> bool {
    matches!(e.status(), Some(400 | 404 | 410 | 422))
}

/// A 412 on a record becomes a typed conflict; other failures stay as they are.
fn keyed(e: CrmError, key: &RecordKey) -> CrmError {
    match e {
        CrmError::Http(h) if h.status() == Some(412) => CrmError::Conflict { key: key.clone() },
        other => other,
    }
}

/// One failed operation of a batch.
fn record_error(
    key: &RecordKey,
    status: u16,
    retry_after: Option<String>,
    body: &[u8],
) -> CrmError {
    if status == 412 {
        return CrmError::Conflict { key: key.clone() };
    }
    let error = ServiceError::parse(body);
    let retry_after = retry_after
        .as_deref()
        .and_then(|v| crate::http::parse_retry_after(v, std::time::SystemTime::now()));
    let code = match &error {
        Some(e) if !e.code.is_empty() => e.code.clone(),
        _ => format!("HTTP {status}"),
    };
    let message = error
        .as_ref()
        .and_then(|e| e.message.clone())
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(500)
                .collect()
        });
    CrmError::Record {
        key: key.clone(),
        code,
        message,
        fields: Vec::new(),
        directive: match status {
            401 | 403 => RetryDirective::Operator,
            s => classify_status(s, retry_after),
        },
    }
}

#[async_trait]
impl Crm for DynamicsCrm {
    fn kind(&self) -> CrmKind {
        CrmKind::Dynamics
    }

    async fn read_changes(
        &self,
        since: Option<DateTime<Utc>>,
        continuation: Option<&str>,
    ) -> Result<ChangePage, CrmError> {
        let entity = self.entity().await?;
        let mut page = if self.change_tracking {
            self.read_delta(entity, continuation).await
        } else {
            self.read_watermark(entity, since, continuation).await
        }?;
        self.attach_contacts(&entity.set_name, &entity.primary_key, &mut page.changes)
            .await?;
        Ok(page)
    }

    async fn fetch(&self, key: &RecordKey) -> Result<Option<CrmRecord>, CrmError> {
        let entity = self.entity().await?;
        let Some(row) = self.fetch_with(entity, key, self.select(entity)).await? else {
            return Ok(None);
        };
        odata::record_from_row(&row, &self.spec, &entity.primary_key)
            .map(Some)
            .map_err(|e| protocol(e.0))
    }

    async fn upsert(&self, writes: &[RecordWrite]) -> Result<Vec<WriteResult>, CrmError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let entity = self.entity().await?;
        let mut outcomes: Vec<Option<Result<WriteOk, CrmError>>> =
            writes.iter().map(|_| None).collect();
        // The writes to send, with the account and contact they bind, and
        // the account each creates in its own change set.
        let mut ready: Vec<(usize, Vec<(&'static str, String)>, Option<CustomerRef>)> = Vec::new();
        // A contact needs its account's id first: with contact records, every
        // account is created before the deals.
        let (accounts, mut deferred) = if self.account_match == AccountMatch::None {
            (HashMap::new(), HashMap::new())
        } else {
            self.resolve_accounts(writes, !self.contact_records).await
        };
        let contacts = self.resolve_contacts(writes, &accounts).await;
        for (i, write) in writes.iter().enumerate() {
            let mut binds = Vec::new();
            if let (Some(customer), true) =
                (&write.customer, self.account_match != AccountMatch::None)
            {
                let key = crate::crm::accounts::cache_key(customer);
                if let Some(new_account) = deferred.remove(&key) {
                    ready.push((i, Vec::new(), Some(new_account)));
                    continue;
                }
                match accounts.get(&key) {
                    Some(Ok(account_id)) => {
                        binds.push((
                            "customerid_account@odata.bind",
                            format!("/{}({account_id})", customer::ACCOUNT_SET),
                        ));
                        match contacts::IDS.result_for(&contacts, customer, account_id) {
                            Some(Ok(contact_id)) => {
                                binds.push((
                                    "parentcontactid@odata.bind",
                                    format!("/{}({contact_id})", contacts::CONTACT_SET),
                                ));
                            }
                            Some(Err(e)) => {
                                outcomes[i] = Some(Err(e.clone()));
                                continue;
                            }
                            None => {}
                        }
                    }
                    Some(Err(e)) => {
                        outcomes[i] = Some(Err(e.clone()));
                        continue;
                    }
                    None => {}
                }
            }
            ready.push((i, binds, None));
        }
        // Operations are built one `$batch` at a time: a call may carry more
        // writes than one batch. A write whose customer's account is new
        // creates it in the write's own change set (the deal binds `$n`, the
        // create's Content-ID), so a refused account fails only its deal.
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let mut sent: Vec<(usize, Option<CustomerRef>)> = Vec::with_capacity(self.batch_size);
            let mut sets: Vec<Vec<BatchOperation>> = Vec::with_capacity(self.batch_size);
            let mut ops_so_far = 0;
            for (i, binds, new_account) in ready.by_ref().take(self.batch_size) {
                let mut body = self.write_body(&writes[i]);
                for (field, target) in binds {
                    body.add(field, Value::String(target));
                }
                let mut set = Vec::with_capacity(2);
                if let Some(c) = &new_account {
                    set.push(self.account_create_op(c));
                    // Content-IDs number the batch's operations from 1.
                    body.add(
                        "customerid_account@odata.bind",
                        Value::String(format!("${}", ops_so_far + 1)),
                    );
                }
                match self.operation(entity, &writes[i], &body) {
                    Ok(op) => {
                        set.push(op);
                        ops_so_far += set.len();
                        sent.push((i, new_account));
                        sets.push(set);
                    }
                    Err(e) => outcomes[i] = Some(Err(e)),
                }
            }
            if sets.is_empty() {
                continue;
            }
            let keys: Vec<&RecordKey> = sent.iter().map(|(i, _)| &writes[*i].key).collect();
            let results = self.send_batch(entity, &keys, sets).await;
            for ((i, new_account), (result, account)) in sent.into_iter().zip(results) {
                if let (Some(c), Some(Ok(id))) = (&new_account, account) {
                    self.accounts
                        .insert(crate::crm::accounts::cache_key(c), id.clone());
                }
                outcomes[i] = Some(result);
            }
        }
        Ok(writes
            .iter()
            .zip(outcomes)
            .map(|(w, outcome)| WriteResult {
                outcome: outcome
                    .unwrap_or_else(|| Err(protocol(format!("{} was not attempted", w.key)))),
                key: w.key.clone(),
            })
            .collect())
    }

    async fn close(&self, closes: Vec<CloseRequest>) -> Result<Vec<WriteResult>, CrmError> {
        if closes.is_empty() {
            return Ok(Vec::new());
        }
        let entity = self.entity().await?;
        let mut out = Vec::with_capacity(closes.len());
        for close in closes {
            let outcome = self.close_one(entity, &close).await;
            if let Err(e) = &outcome {
                tracing::warn!(crm = "dynamics", key = %close.key, error = %e, "closing failed");
            }
            out.push(WriteResult {
                key: close.key,
                outcome,
            });
        }
        Ok(out)
    }

    async fn check_metadata(&self) -> Result<Vec<MetadataProblem>, CrmError> {
        self.check(self.duns_usable.load(Ordering::Relaxed)).await
    }

    fn as_read_back(&self, crm_id: &str, written: &mut Map<String, Value>) -> Vec<String> {
        let Some(entity) = self.entity.get() else {
            return Vec::new();
        };
        let key = &entity.primary_key;
        let new = self.spec.selects(key)
            && written
                .insert(key.clone(), Value::String(crm_id.to_owned()))
                .is_none();
        if new { vec![key.clone()] } else { Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_operations_are_classified() {
        let key = RecordKey::Referral("r".into());
        assert!(matches!(
            record_error(&key, 412, None, b""),
            CrmError::Conflict { .. }
        ));
        let e = record_error(
            &key,
            400,
            None,
            br#"{"error":{"code":"0x80040203","message":"Invalid value"}}"#,
        );
        match &e {
            CrmError::Record {
                code,
                message,
                directive,
                ..
            } => {
                assert_eq!(code, "0x80040203");
                assert_eq!(message, "Invalid value");
                assert_eq!(*directive, RetryDirective::Permanent);
            }
            other => panic!("{other:?}"),
        }
        let e = record_error(&key, 429, Some("9".into()), b"{}");
        assert_eq!(
            crate::http::Retryable::directive(&e),
            RetryDirective::After(std::time::Duration::from_secs(9))
        );
        let e = record_error(&key, 403, None, b"");
        assert_eq!(
            crate::http::Retryable::directive(&e),
            RetryDirective::Operator
        );
    }
}
