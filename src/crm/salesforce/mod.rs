//! Salesforce adapter (REST API): SOQL reads on `SystemModstamp`, upserts by
//! the external id field through sObject Collections, stage checks against
//! `OpportunityStage`, customer accounts, and the org's API limits.

// `CrmError` is the `Crm` trait's error type; its size is not ours to change.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod auth;
mod contacts;
mod customer;
mod metadata;
mod schema;
pub mod soql;
mod writes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use crate::config::{AccountMatch, SalesforceSettings};
use crate::crm::{
    ChangePage, CloseRequest, Crm, CrmChange, CrmError, CrmObjectSpec, CrmRecord, MetadataProblem,
    RecordKey, RecordWrite, WriteResult,
};
use crate::domain::CrmKind;
use crate::http::{
    ClientSettings, HttpError, RetryPolicy, RetrySettings, TokenCache, build_client, read_response,
};
use crate::metrics;

pub use auth::{JwtClaims, SalesforceTokenSource};
pub use customer::ContactRef;
pub use metadata::FieldKind;
pub use soql::parse_datetime;

use api::{ApiError, INVALID_SESSION_ID, QueryPage, REQUEST_LIMIT_EXCEEDED};
use schema::{ObjectFields, names_missing_field};

/// Records per query page (`Sforce-Query-Options`, 200 to 2,000; Salesforce
/// answers 2,000 when not asked). A page is held in memory while it is
/// decided, so the smallest batch keeps a full reconcile's memory flat: at
/// 2,000 per page the cycle after a 10,000-referral backfill peaked near
/// 140 MiB. Sent again with each `nextRecordsUrl` page.
const QUERY_BATCH: &str = "batchSize=200";

/// One row of `OpportunityStage`: a `StageName` picklist value and what it means.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OpportunityStageInfo {
    /// The value `StageName` holds.
    #[serde(rename = "ApiName")]
    pub api_name: String,
    #[serde(rename = "MasterLabel", default)]
    pub label: String,
    #[serde(rename = "IsActive", default)]
    pub is_active: bool,
    #[serde(rename = "IsClosed", default)]
    pub is_closed: bool,
    #[serde(rename = "IsWon", default)]
    pub is_won: bool,
    #[serde(rename = "DefaultProbability", default)]
    pub default_probability: Option<f64>,
    #[serde(rename = "ForecastCategoryName", default)]
    pub forecast_category: Option<String>,
    #[serde(rename = "SortOrder", default)]
    pub sort_order: Option<i64>,
}

/// Salesforce work is stopped until `deadline` (REQUEST_LIMIT_EXCEEDED).
#[derive(Debug, Clone)]
struct Pause {
    deadline: tokio::time::Instant,
    until: DateTime<Utc>,
    reason: String,
}

#[derive(Debug, Default)]
struct Usage {
    last: Option<(u64, u64)>,
    /// The highest percentage already warned about; reset below the threshold.
    warned_percent: Option<u64>,
}

/// A JSON request body, written once for every attempt of a request.
pub(super) struct JsonBody(bytes::Bytes);

impl JsonBody {
    pub(super) fn of<T: serde::Serialize + ?Sized>(value: &T) -> Result<JsonBody, CrmError> {
        serde_json::to_vec(value)
            .map(|v| JsonBody(v.into()))
            .map_err(|e| CrmError::Invalid(format!("a request body could not be written: {e}")))
    }
}

/// A successful answer (2xx, or the 300 of a single-record upsert).
struct Reply {
    status: u16,
    body: Vec<u8>,
}

/// The Salesforce adapter. Cheap to share behind an `Arc`.
pub struct SalesforceCrm {
    http: reqwest::Client,
    tokens: TokenCache<SalesforceTokenSource>,
    retry: RetryPolicy,
    /// `/services/data/v62.0`
    api_base: String,
    spec: CrmObjectSpec,
    batch_size: usize,
    limit_pause: Duration,
    limit_warn_percent: u64,
    account_match: AccountMatch,
    /// Accounts resolved recently, across write calls.
    accounts: crate::crm::accounts::AccountCache,
    duns_field: String,
    /// `customer_contact = "record"`: contacts as Contact records.
    contact_records: bool,
    field_kinds: Vec<(String, FieldKind)>,
    usage: Mutex<Usage>,
    pause: Mutex<Option<Pause>>,
    stages: tokio::sync::OnceCell<Vec<OpportunityStageInfo>>,
    /// The org's fields per sObject, from describe (see [`schema`]).
    described: tokio::sync::Mutex<HashMap<String, Arc<ObjectFields>>>,
    /// `object.field` (lower case) of mapped fields already reported missing.
    reported_missing: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for SalesforceCrm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceCrm")
            .field("api_base", &self.api_base)
            .field("object", &self.spec.object)
            .field("token_source", self.tokens.source())
            .finish_non_exhaustive()
    }
}

/// Statuses besides 2xx a caller handles itself.
const MULTIPLE_CHOICES: u16 = 300;

impl SalesforceCrm {
    /// Builds the adapter; checks the credentials the chosen flow needs, the
    /// private key, and that every mapped field name is a plain API name.
    /// Nothing is sent until the first call.
    pub fn new(
        settings: &SalesforceSettings,
        spec: CrmObjectSpec,
    ) -> Result<SalesforceCrm, CrmError> {
        let http = build_client(&ClientSettings::with_timeout(settings.timeout))?;
        Self::with_client(settings, spec, http, RetrySettings::default())
    }

    /// Like [`new`](Self::new) with a given HTTP client and retry bounds
    /// (tests use a client without timers and no jitter).
    pub fn with_client(
        settings: &SalesforceSettings,
        spec: CrmObjectSpec,
        http: reqwest::Client,
        retry: RetrySettings,
    ) -> Result<SalesforceCrm, CrmError> {
        for name in std::iter::once(&spec.object).chain(spec.select_fields().iter()) {
            if !soql::is_field_name(name) {
                return Err(CrmError::Invalid(format!(
                    "{name:?} in the Salesforce mapping is not an API name (letters, digits and underscores)"
                )));
            }
        }
        if spec.external_id_field.is_empty() {
            return Err(CrmError::Invalid(
                "the Salesforce mapping has no external_id field".into(),
            ));
        }
        if !settings.duns_field.is_empty() && !soql::is_field_name(&settings.duns_field) {
            return Err(CrmError::Invalid(format!(
                "salesforce.duns_field {:?} is not an API name",
                settings.duns_field
            )));
        }
        let source = SalesforceTokenSource::new(http.clone(), settings)?;
        let version = settings.api_version.trim().trim_start_matches('v');
        Ok(SalesforceCrm {
            http,
            tokens: TokenCache::new(source),
            retry: RetryPolicy::new(retry).for_api("salesforce"),
            api_base: format!("/services/data/v{version}"),
            spec,
            batch_size: (settings.batch_size as usize).clamp(1, 200),
            limit_pause: settings.limit_pause,
            limit_warn_percent: u64::from(settings.limit_warn_percent),
            account_match: settings.account_match,
            accounts: Default::default(),
            duns_field: settings.duns_field.clone(),
            contact_records: false,
            field_kinds: Vec::new(),
            usage: Mutex::new(Usage::default()),
            pause: Mutex::new(None),
            stages: tokio::sync::OnceCell::new(),
            described: tokio::sync::Mutex::new(HashMap::new()),
            reported_missing: Mutex::new(HashSet::new()),
        })
    }

    /// `customer_contact = "record"`: the customer contact becomes a Contact
    /// under the account, linked as the opportunity's primary contact role;
    /// a flagged opportunity's primary contact is read for outbound deals.
    pub fn with_contact_records(mut self, on: bool) -> Self {
        self.contact_records = on;
        self
    }

    /// The expected kind of mapped fields, checked by `check_metadata`
    /// (e.g. `CloseDate` → `Date`). The external id, sync flag and error
    /// fields are always checked.
    pub fn with_field_kinds(
        mut self,
        kinds: impl IntoIterator<Item = (String, FieldKind)>,
    ) -> Self {
        self.field_kinds.extend(kinds);
        self
    }

    /// The last `Sforce-Limit-Info` API usage seen: `(used, max)` for the
    /// org's rolling 24-hour allocation.
    pub fn api_usage(&self) -> Option<(u64, u64)> {
        self.usage.lock().map(|u| u.last).unwrap_or(None)
    }

    /// The org's opportunity stages (read once, then cached).
    pub async fn stages(&self) -> Result<Vec<OpportunityStageInfo>, CrmError> {
        Ok(self.load_stages().await?.clone())
    }

    /// The token source (for the JWT assertion in tests and diagnostics).
    pub fn token_source(&self) -> &SalesforceTokenSource {
        self.tokens.source()
    }

    pub fn spec(&self) -> &CrmObjectSpec {
        &self.spec
    }

    async fn load_stages(&self) -> Result<&Vec<OpportunityStageInfo>, CrmError> {
        self.stages
            .get_or_try_init(|| async {
                let soql = "SELECT ApiName, MasterLabel, IsActive, IsClosed, IsWon, DefaultProbability, ForecastCategoryName, SortOrder FROM OpportunityStage ORDER BY SortOrder";
                let records = self.query_all(soql).await?;
                let stages = records
                    .into_iter()
                    .map(|r| {
                        serde_json::from_value::<OpportunityStageInfo>(Value::Object(r)).map_err(
                            |e| protocol(format!("an OpportunityStage row is unreadable: {e}")),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                tracing::info!(count = stages.len(), "read the Salesforce opportunity stages");
                Ok(stages)
            })
            .await
    }

    /// The stages, after checking every stage the mapping names exists and is
    /// active. Sync refuses to run against an org missing one.
    async fn verified_stages(&self) -> Result<&Vec<OpportunityStageInfo>, CrmError> {
        let stages = self.load_stages().await?;
        let problems = metadata::stage_problems(&self.spec, stages);
        if problems.is_empty() {
            Ok(stages)
        } else {
            Err(CrmError::Invalid(format!(
                "the Salesforce mapping names opportunity stages this org does not have: {}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )))
        }
    }

    // ---- requests ------------------------------------------------------

    fn check_pause(&self) -> Result<(), CrmError> {
        let mut slot = self
            .pause
            .lock()
            .map_err(|_| protocol("pause state poisoned".into()))?;
        if let Some(p) = slot.as_ref() {
            if tokio::time::Instant::now() < p.deadline {
                return Err(CrmError::Paused {
                    crm: CrmKind::Salesforce,
                    until: p.until,
                    reason: p.reason.clone(),
                });
            }
            tracing::info!("Salesforce API pause over; resuming");
            *slot = None;
        }
        Ok(())
    }

    fn start_pause(&self, message: &str) -> CrmError {
        let reason = format!("{REQUEST_LIMIT_EXCEEDED}: {message}");
        let pause = Pause {
            deadline: tokio::time::Instant::now() + self.limit_pause,
            until: Utc::now()
                + chrono::Duration::from_std(self.limit_pause).unwrap_or(chrono::Duration::MAX),
            reason,
        };
        if let Ok(mut slot) = self.pause.lock() {
            *slot = Some(pause.clone());
        }
        metrics::record_crm_paused(metrics::SALESFORCE, "request_limit_exceeded");
        tracing::warn!(
            crm = "salesforce",
            until = %pause.until,
            pause_s = self.limit_pause.as_secs(),
            usage = ?self.api_usage(),
            "the Salesforce org's API request limit is exceeded; Salesforce work pauses"
        );
        CrmError::Paused {
            crm: CrmKind::Salesforce,
            until: pause.until,
            reason: pause.reason,
        }
    }

    fn record_usage(&self, headers: &HeaderMap) {
        let Some((used, max)) = headers
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok())
            .and_then(api::parse_limit_info)
        else {
            return;
        };
        metrics::record_salesforce_api_usage(used, max);
        let Ok(mut usage) = self.usage.lock() else {
            return;
        };
        usage.last = Some((used, max));
        let percent = used.saturating_mul(100).checked_div(max).unwrap_or(100);
        if percent >= self.limit_warn_percent {
            if usage.warned_percent.is_none_or(|w| percent > w) {
                usage.warned_percent = Some(percent);
                tracing::warn!(
                    crm = "salesforce",
                    used,
                    max,
                    percent,
                    threshold = self.limit_warn_percent,
                    "Salesforce API usage is above the warning threshold"
                );
            }
        } else {
            usage.warned_percent = None;
        }
    }

    /// Sends one request to `<instance_url><path>`; on a 401
    /// `INVALID_SESSION_ID` gets a new token once and sends it again. A 403
    /// `REQUEST_LIMIT_EXCEEDED` starts the pause. Non-success statuses are
    /// errors except a 300.
    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&JsonBody>,
    ) -> Result<Reply, CrmError> {
        let mut refreshed = false;
        loop {
            self.check_pause()?;
            let token = self.tokens.token().await?;
            let instance = token
                .extra("instance_url")
                .and_then(Value::as_str)
                .and_then(|s| Url::parse(s).ok())
                .ok_or_else(|| protocol("the token has no instance_url".into()))?;
            // `path` is server-absolute (`/services/data/…`, as in nextRecordsUrl);
            // a path prefix of the instance URL (a proxy, the simulator) is kept.
            let mut url = Url::parse(&format!(
                "{}/{}",
                instance.as_str().trim_end_matches('/'),
                path.trim_start_matches('/')
            ))
            .map_err(|e| CrmError::Invalid(format!("bad Salesforce path {path}: {e}")))?;
            if !query.is_empty() {
                url.query_pairs_mut().extend_pairs(query);
            }
            let mut request = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token.secret())
                .header(ACCEPT, "application/json");
            if *method == Method::GET && (path.ends_with("/query") || path.contains("/query/")) {
                request = request.header("Sforce-Query-Options", QUERY_BATCH);
            }
            if let Some(b) = body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(b.0.clone());
            }
            let started = std::time::Instant::now();
            let sent = request.send().await;
            metrics::record_api_duration(metrics::SALESFORCE, started.elapsed());
            if sent.is_err() {
                metrics::record_api_request(metrics::SALESFORCE, "error");
            }
            let response = sent.map_err(|e| HttpError::from_reqwest(method.as_str(), path, e))?;
            metrics::record_api_request(metrics::SALESFORCE, response.status().as_u16());
            let (status, headers, bytes) = read_response(method.as_str(), path, response).await?;
            self.record_usage(&headers);
            tracing::debug!(method = %method, path, status, "Salesforce answered");
            if (200..300).contains(&status) || status == MULTIPLE_CHOICES {
                return Ok(Reply {
                    status,
                    body: bytes,
                });
            }
            let errors = ApiError::parse_body(&bytes).unwrap_or_default();
            let has = |code: &str| errors.iter().any(|e| e.code == code);
            if status == 401 && has(INVALID_SESSION_ID) && !refreshed {
                tracing::debug!("Salesforce session expired; getting a new token");
                self.tokens.invalidate(&token).await;
                refreshed = true;
                continue;
            }
            if status == 403 && has(REQUEST_LIMIT_EXCEEDED) {
                let message = errors
                    .iter()
                    .find(|e| e.code == REQUEST_LIMIT_EXCEEDED)
                    .map(|e| e.message.clone())
                    .unwrap_or_default();
                return Err(self.start_pause(&message));
            }
            let mut error = HttpError::from_parts(
                method.as_str(),
                path,
                status,
                &headers,
                &bytes,
                std::time::SystemTime::now(),
            );
            // Salesforce's error array, not the OData reading of it (serde
            // would read `[{…}]` as an `{"error": …}` envelope by position).
            if let HttpError::Status { error: e, .. } = &mut error
                && !errors.is_empty()
            {
                *e = ApiError::to_service_error(&errors).map(Box::new);
            }
            return Err(CrmError::Http(error));
        }
    }

    /// [`send_once`](Self::send_once) under the retry policy. Requests that
    /// are not idempotent are only retried when they cannot have been processed.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply, CrmError> {
        let body = body.map(JsonBody::of).transpose()?;
        self.send_with(method, path, query, body.as_ref()).await
    }

    /// [`send`](Self::send) of a body already written.
    async fn send_body(
        &self,
        method: Method,
        path: &str,
        body: JsonBody,
    ) -> Result<Reply, CrmError> {
        self.send_with(method, path, &[], Some(&body)).await
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&JsonBody>,
    ) -> Result<Reply, CrmError> {
        let idempotent = method != Method::POST;
        self.retry
            .run_if(
                |_| self.send_once(&method, path, query, body),
                |e: &CrmError| {
                    if idempotent {
                        crate::http::Retryable::retry_in_place(e)
                    } else {
                        matches!(e, CrmError::Http(h) if h.request_not_processed())
                    }
                },
            )
            .await
    }

    fn path(&self, rest: &str) -> String {
        format!("{}/{}", self.api_base, rest.trim_start_matches('/'))
    }

    /// One query page: the first (`soql`) or a `nextRecordsUrl`; a refused
    /// query is the mapping's fault.
    async fn query_page(
        &self,
        soql: Option<&str>,
        next: Option<&str>,
    ) -> Result<QueryPage, CrmError> {
        self.query_page_raw(soql, next).await.map_err(query_refused)
    }

    /// [`query_page`](Self::query_page) with Salesforce's refusal as it came.
    async fn query_page_raw(
        &self,
        soql: Option<&str>,
        next: Option<&str>,
    ) -> Result<QueryPage, CrmError> {
        let reply = match (soql, next) {
            (_, Some(next)) => {
                // A stored continuation must stay on the instance and the API.
                if !next.starts_with("/services/data/")
                    || next.contains("//")
                    || next.contains("..")
                {
                    return Err(CrmError::Invalid(format!(
                        "{next:?} is not a Salesforce nextRecordsUrl"
                    )));
                }
                self.send(Method::GET, next, &[], None).await?
            }
            (Some(q), None) => {
                tracing::debug!(soql = q, "Salesforce query");
                self.send(Method::GET, &self.path("query"), &[("q", q)], None)
                    .await?
            }
            (None, None) => return Err(CrmError::Invalid("no query given".into())),
        };
        let page: QueryPage = decode(&reply.body, "query")?;
        if !page.done && page.next_records_url.is_none() {
            return Err(protocol(
                "a query page says more records follow but has no nextRecordsUrl".into(),
            ));
        }
        Ok(page)
    }

    /// Every record of a query, following `nextRecordsUrl` until `done`.
    async fn query_all(&self, soql: &str) -> Result<Vec<Map<String, Value>>, CrmError> {
        self.query_all_raw(soql).await.map_err(query_refused)
    }

    /// [`query_all`](Self::query_all) with Salesforce's refusal as it came.
    async fn query_all_raw(&self, soql: &str) -> Result<Vec<Map<String, Value>>, CrmError> {
        let mut page = self.query_page_raw(Some(soql), None).await?;
        let mut out = std::mem::take(&mut page.records);
        while !page.done {
            let next = page.next_records_url.take().unwrap_or_default();
            page = self.query_page_raw(None, Some(&next)).await?;
            out.append(&mut page.records);
        }
        Ok(out)
    }

    /// The first page of an opportunity query built for the org's fields. A
    /// field refused meanwhile (`INVALID_FIELD`) has the object described
    /// again and the query, rebuilt without it, sent once more.
    async fn query_opportunities(
        &self,
        build: impl Fn(&ObjectFields) -> String,
    ) -> Result<(Arc<ObjectFields>, QueryPage), CrmError> {
        let fields = self.opportunity_fields().await?;
        let soql = build(&fields);
        match self.query_page_raw(Some(&soql), None).await {
            Err(e) if names_missing_field(&e) => {
                let fresh = self.opportunity_fields_again(&fields).await?;
                let again = build(&fresh);
                if again == soql {
                    return Err(query_refused(e));
                }
                let page = self.query_page(Some(&again), None).await?;
                Ok((fresh, page))
            }
            Err(e) => Err(query_refused(e)),
            Ok(page) => Ok((fields, page)),
        }
    }

    /// `SELECT Id, SystemModstamp, <mapped fields> FROM <object>`, leaving
    /// out the fields the org lacks (`None`: every mapped field).
    fn select_clause(&self, org: Option<&ObjectFields>) -> String {
        let mut fields = vec!["Id".to_owned(), "SystemModstamp".to_owned()];
        for f in self.spec.select_fields() {
            if !fields.iter().any(|x| x.eq_ignore_ascii_case(&f)) && org.is_none_or(|o| o.has(&f)) {
                fields.push(f);
            }
        }
        format!("SELECT {} FROM {}", fields.join(", "), self.spec.object)
    }

    /// The incremental query: changed at or after `since`, linked to a
    /// referral or flagged to sync, oldest first (with every mapped field;
    /// the adapter leaves out the fields the org lacks).
    pub fn changes_soql(&self, since: Option<DateTime<Utc>>) -> String {
        self.changes_soql_in(since, None)
    }

    fn changes_soql_in(&self, since: Option<DateTime<Utc>>, org: Option<&ObjectFields>) -> String {
        let mut filter = format!("{} != null", self.spec.external_id_field);
        if let Some(flag) = &self.spec.sync_flag_field
            && org.is_none_or(|o| o.has(flag))
        {
            filter = format!("({filter} OR {flag} = true)");
        }
        let mut soql = self.select_clause(org);
        match since {
            Some(t) => soql.push_str(&format!(
                " WHERE SystemModstamp >= {} AND {filter}",
                soql::datetime_literal(t)
            )),
            None => soql.push_str(&format!(" WHERE {filter}")),
        }
        soql.push_str(" ORDER BY SystemModstamp ASC, Id ASC");
        soql
    }

    /// The query for one record by referral id or CRM id (with every mapped
    /// field; the adapter leaves out the fields the org lacks).
    pub fn fetch_soql(&self, key: &RecordKey) -> String {
        self.fetch_soql_in(key, None)
    }

    fn fetch_soql_in(&self, key: &RecordKey, org: Option<&ObjectFields>) -> String {
        let condition = match key {
            RecordKey::Referral(id) => {
                format!("{} = {}", self.spec.external_id_field, soql::quote(id))
            }
            RecordKey::CrmId(id) => format!("Id = {}", soql::quote(id)),
        };
        format!("{} WHERE {condition} LIMIT 2", self.select_clause(org))
    }

    /// A query record as the engine sees it: the mapped fields the org has
    /// (a field it lacks is absent, never a null the engine would copy).
    fn to_record(
        &self,
        raw: &Map<String, Value>,
        org: &ObjectFields,
    ) -> Result<CrmRecord, CrmError> {
        let crm_id = raw
            .get("Id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| protocol("a query record has no Id".into()))?
            .to_owned();
        let mut fields = Map::new();
        for f in self.spec.select_fields().into_iter().filter(|f| org.has(f)) {
            let value = field_value(raw, &f);
            fields.insert(f, value);
        }
        let referral_id = field_value(raw, &self.spec.external_id_field)
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let version = raw
            .get("SystemModstamp")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let modified_at = version.as_deref().and_then(parse_datetime);
        Ok(CrmRecord {
            crm_id,
            referral_id,
            fields,
            version,
            modified_at,
        })
    }
}

/// A field of a query record by API name, following `Account.Name` through
/// nested relationship objects; names match case-insensitively.
fn field_value(record: &Map<String, Value>, name: &str) -> Value {
    fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        m.get(key).or_else(|| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
    }
    let mut current = record;
    let mut parts = name.split('.').peekable();
    while let Some(part) = parts.next() {
        let Some(v) = get(current, part) else {
            return Value::Null;
        };
        if parts.peek().is_none() {
            return v.clone();
        }
        match v {
            Value::Object(m) => current = m,
            _ => return Value::Null,
        }
    }
    Value::Null
}

/// A query naming what the org does not have is the mapping's fault.
fn query_refused(e: CrmError) -> CrmError {
    if let CrmError::Http(HttpError::Status {
        method,
        error: Some(service),
        ..
    }) = &e
        && method == "GET"
        && matches!(
            service.code.as_str(),
            "INVALID_FIELD" | "INVALID_TYPE" | "MALFORMED_QUERY" | "INVALID_QUERY_FILTER_OPERATOR"
        )
    {
        return CrmError::Invalid(format!(
            "Salesforce refused the query: {}: {} (check the mapping's field names)",
            service.code,
            service.message.as_deref().unwrap_or_default()
        ));
    }
    e
}

fn protocol(message: String) -> CrmError {
    CrmError::Protocol {
        crm: CrmKind::Salesforce,
        message,
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, CrmError> {
    serde_json::from_slice(body).map_err(|e| protocol(format!("unreadable {what} response: {e}")))
}

#[async_trait]
impl Crm for SalesforceCrm {
    fn kind(&self) -> CrmKind {
        CrmKind::Salesforce
    }

    async fn read_changes(
        &self,
        since: Option<DateTime<Utc>>,
        continuation: Option<&str>,
    ) -> Result<ChangePage, CrmError> {
        self.verified_stages().await?;
        let (org, page) = match continuation {
            Some(next) => (
                self.opportunity_fields().await?,
                self.query_page(None, Some(next)).await?,
            ),
            None => {
                self.query_opportunities(|org| self.changes_soql_in(since, Some(org)))
                    .await?
            }
        };
        let mut changes = Vec::with_capacity(page.records.len());
        let mut high_water: Option<DateTime<Utc>> = None;
        for raw in &page.records {
            let record = self.to_record(raw, &org)?;
            if let Some(t) = record.modified_at {
                high_water = Some(high_water.map_or(t, |h| h.max(t)));
            }
            changes.push(CrmChange::Upserted(record));
        }
        self.attach_contacts(&mut changes).await?;
        Ok(ChangePage {
            changes,
            continuation: if page.done {
                None
            } else {
                page.next_records_url
            },
            delta_token: None,
            high_water,
        })
    }

    async fn fetch(&self, key: &RecordKey) -> Result<Option<CrmRecord>, CrmError> {
        // LIMIT 2: one page.
        let (org, page) = self
            .query_opportunities(|org| self.fetch_soql_in(key, Some(org)))
            .await?;
        let records = page.records;
        match records.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(self.to_record(one, &org)?)),
            many => Err(CrmError::MultipleMatches {
                key: key.clone(),
                ids: many
                    .iter()
                    .filter_map(|r| r.get("Id").and_then(Value::as_str).map(str::to_owned))
                    .collect(),
            }),
        }
    }

    async fn upsert(&self, writes: &[RecordWrite]) -> Result<Vec<WriteResult>, CrmError> {
        self.verified_stages().await?;
        self.write_all(writes).await
    }

    async fn close(&self, closes: Vec<CloseRequest>) -> Result<Vec<WriteResult>, CrmError> {
        let stages = self.verified_stages().await?.clone();
        self.close_all(closes, &stages).await
    }

    async fn check_metadata(&self) -> Result<Vec<MetadataProblem>, CrmError> {
        self.metadata_problems().await
    }

    fn as_read_back(&self, crm_id: &str, written: &mut Map<String, Value>) -> Vec<String> {
        let mut added = Vec::new();
        if self.spec.selects("Id")
            && written
                .insert("Id".into(), Value::String(crm_id.to_owned()))
                .is_none()
        {
            added.push("Id".to_owned());
        }
        // The describe is cached by the write that just succeeded; while
        // another task holds it, the fields are kept as written.
        if let Ok(described) = self.described.try_lock()
            && let Some(org) = described.get(&self.spec.object)
        {
            org.as_read_back(written);
        }
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_relationship_fields_are_found_case_insensitively() {
        let rec = json!({
            "attributes": {"type": "Opportunity"},
            "Id": "006A",
            "Account": {"attributes": {"type": "Account"}, "Name": "Contoso"},
            "Owner": null,
            "amount": 5
        });
        let m = rec.as_object().unwrap();
        assert_eq!(field_value(m, "Account.Name"), json!("Contoso"));
        assert_eq!(field_value(m, "Owner.Name"), Value::Null);
        assert_eq!(field_value(m, "Amount"), json!(5));
        assert_eq!(field_value(m, "Missing__c"), Value::Null);
    }
}
