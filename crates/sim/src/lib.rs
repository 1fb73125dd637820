//! A stateful simulator of the services cosell-sync talks to: Microsoft Entra
//! ID (tokens), the Partner Center Referrals API, the Dataverse Web API
//! (Dynamics 365) and the Salesforce REST API, on one local axum server, with
//! seeded sample data, fault injection, a movable clock and a control API
//! under `/_sim/`.
//!
//! Path prefixes on the one port:
//! - `/entra/{tenant}/oauth2/v2.0/token` and `…/devicecode`
//! - `/partner-center/v1.0/engagements/referrals`
//! - `/dynamics/api/data/v9.2/…` (the Dynamics base URL is `<base>/dynamics`)
//! - `/salesforce/services/oauth2/token` and `/salesforce/services/data/v62.0/…`,
//!   also served at the root (`/services/…`): Salesforce paths are host-rooted
//!   (`nextRecordsUrl`, clients joining `/services/data/…` to the instance URL)
//! - `/_sim/…` (control API; never counted)

pub mod clock;
mod control;
mod dataverse;
mod datetime;
mod entra;
pub mod faults;
pub mod observe;
pub mod odata;
mod partner_center;
mod salesforce;
mod seed;
mod soql;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::serve::{IncomingStream, Listener};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

pub use clock::SimClock;
pub use entra::{AccessClaims, PARTNER_CENTER_RESOURCE};
pub use faults::{FaultKind, FaultRule, InstalledFault};
pub use observe::{Api, Counters, LoggedRequest};
pub use partner_center::{PatchOp, PatchOpKind};
pub use salesforce::SfStage;
pub use soql::SoqlError;

use faults::Faults;
use observe::RequestLog;

/// Fixed, well-known demo credentials. They are fake and only the simulator
/// accepts them.
pub mod creds {
    /// The simulated Entra tenant.
    pub const TENANT_ID: &str = "7f0c1e2d-5a6b-4c3d-8e9f-0a1b2c3d4e5f";
    /// The public client used for Partner Center (device code, refresh token).
    pub const PARTNER_CENTER_CLIENT_ID: &str = "0c05e11a-0000-4000-8000-0000000000c1";
    /// The refresh token the simulator accepts at start (each use returns a new one).
    pub const PARTNER_CENTER_REFRESH_TOKEN: &str = "sim-partner-center-refresh-token";
    /// The Partner Center user behind delegated tokens (a Referrals admin).
    pub const PARTNER_CENTER_USER: &str = "referrals.admin@contoso-partner.example";
    /// The confidential client for Dataverse (client credentials).
    pub const DYNAMICS_CLIENT_ID: &str = "0c05e11a-0000-4000-8000-0000000d3650";
    pub const DYNAMICS_CLIENT_SECRET: &str = "sim-dynamics-client-secret";
    /// The Salesforce connected app's consumer key and secret.
    pub const SALESFORCE_CLIENT_ID: &str = "3MVG9sim.cosell_sync.demo.consumer.key";
    pub const SALESFORCE_CLIENT_SECRET: &str = "sim-salesforce-client-secret";
    /// The Salesforce integration user (JWT bearer `sub`).
    pub const SALESFORCE_USERNAME: &str = "integration@contoso-partner.example";

    pub(crate) struct App {
        pub(crate) secret: Option<&'static str>,
    }

    pub(crate) fn app(client_id: &str) -> Option<App> {
        if client_id.eq_ignore_ascii_case(PARTNER_CENTER_CLIENT_ID) {
            Some(App { secret: None })
        } else if client_id.eq_ignore_ascii_case(DYNAMICS_CLIENT_ID) {
            Some(App {
                secret: Some(DYNAMICS_CLIENT_SECRET),
            })
        } else {
            None
        }
    }
}

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Seed of the sample data; the same seed gives the same data.
    pub seed: u64,
    /// How many Partner Center referrals to seed.
    pub referrals: usize,
    /// How many opportunities to seed in each CRM (default: a fifth of the
    /// referrals, at least 12).
    pub crm_opportunities: Option<usize>,
    /// Where to listen; loopback only (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The simulated time at start.
    pub start_time: DateTime<Utc>,
    /// When true the clock moves only when advanced.
    pub frozen_clock: bool,
    /// Dataverse column holding the referral id, with an alternate key on it.
    pub dynamics_referral_key: String,
    /// Extra text columns on the Dataverse opportunity table.
    pub dynamics_extra_columns: Vec<String>,
    /// Salesforce External ID field holding the referral id.
    pub salesforce_external_id: String,
    /// Extra text fields on the Salesforce Opportunity.
    pub salesforce_extra_fields: Vec<String>,
    /// Salesforce's rolling 24-hour API allocation.
    pub salesforce_daily_limit: u64,
    /// The Salesforce org holds a Data.com licence: Account has `DunsNumber`.
    /// Off by default, like most orgs (Data.com was retired).
    pub salesforce_data_com: bool,
    /// The Salesforce org has multiple currencies enabled: Opportunity has
    /// `CurrencyIsoCode`. Off by default (a single-currency org).
    pub salesforce_multi_currency: bool,
    /// Lifetime of Entra access tokens.
    pub access_token_lifetime: Duration,
    /// Lifetime of a Salesforce session.
    pub salesforce_session_lifetime: Duration,
    /// Days an inbound referral waits for an answer before Partner Center
    /// archives it as expired.
    pub expiry_days: u32,
    /// Device-code sign-ins are approved without a person.
    pub auto_approve_device_codes: bool,
    /// PEM public key to verify Salesforce JWT bearer assertions (RS256);
    /// without it the signature is not checked (claims always are).
    pub salesforce_jwt_public_key_pem: Option<String>,
    /// Requests kept in the request log.
    pub request_log_capacity: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            seed: 1,
            referrals: 40,
            crm_opportunities: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            start_time: Utc::now().trunc_subsecs(0),
            frozen_clock: false,
            dynamics_referral_key: "new_referralid".into(),
            dynamics_extra_columns: Vec::new(),
            salesforce_external_id: "Referral_Identifier__c".into(),
            salesforce_extra_fields: Vec::new(),
            salesforce_daily_limit: 115_000,
            salesforce_data_com: false,
            salesforce_multi_currency: false,
            access_token_lifetime: Duration::from_secs(3599),
            salesforce_session_lifetime: Duration::from_secs(2 * 3600),
            expiry_days: 14,
            auto_approve_device_codes: false,
            salesforce_jwt_public_key_pem: None,
            request_log_capacity: 100_000,
        }
    }
}

/// Errors of the simulator and of the actions taken on its state.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the simulator may listen on loopback addresses only, not {0}")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

impl SimError {
    fn status(&self) -> StatusCode {
        match self {
            SimError::NotFound(_) => StatusCode::NOT_FOUND,
            SimError::Conflict(_) => StatusCode::CONFLICT,
            SimError::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        json_response(self.status(), &json!({"error": self.to_string()}))
    }
}

/// The URLs the simulator serves, without trailing slashes.
#[derive(Debug, Clone)]
pub struct SimUrls {
    pub base: String,
    pub partner_center: String,
    pub dynamics: String,
    pub salesforce: String,
}

impl SimUrls {
    fn new(addr: SocketAddr) -> Self {
        let base = format!("http://{addr}");
        SimUrls {
            partner_center: format!("{base}/partner-center"),
            dynamics: format!("{base}/dynamics"),
            salesforce: format!("{base}/salesforce"),
            base,
        }
    }

    /// Entra token endpoint for a tenant (`organizations`, `common` or an id).
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/entra/{tenant}/oauth2/v2.0/token", self.base)
    }

    /// Entra device-code endpoint for a tenant.
    pub fn device_code_url(&self, tenant: &str) -> String {
        format!("{}/entra/{tenant}/oauth2/v2.0/devicecode", self.base)
    }
}

#[derive(Debug)]
pub(crate) struct Observed {
    counters: Counters,
    log: RequestLog,
}

/// The simulator's whole state. Obtained from [`SimHandle::state`]; its
/// methods act as a person would in each product, without HTTP.
pub struct SimState {
    pub(crate) opts: SimOptions,
    pub(crate) clock: SimClock,
    pub(crate) urls: SimUrls,
    pub(crate) entra: Mutex<entra::EntraState>,
    pub(crate) pc: Mutex<partner_center::PcState>,
    pub(crate) dv: Mutex<dataverse::DvState>,
    pub(crate) sf: Mutex<salesforce::SfState>,
    observed: Mutex<Observed>,
    faults: Mutex<Faults>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimState {
    fn new(opts: SimOptions, urls: SimUrls) -> SimState {
        let clock = if opts.frozen_clock {
            SimClock::frozen(opts.start_time)
        } else {
            SimClock::new(opts.start_time)
        };
        let mut es = entra::EntraState::new(opts.seed);
        es.add_refresh_token(
            creds::PARTNER_CENTER_REFRESH_TOKEN,
            creds::PARTNER_CENTER_CLIENT_ID,
            PARTNER_CENTER_RESOURCE,
        );
        let mut pc = partner_center::PcState::new(opts.seed, opts.expiry_days);
        let mut dv = dataverse::DvState::new(&opts);
        let mut sf = salesforce::SfState::new(&opts);
        seed::seed_all(&opts, &urls, &mut pc, &mut dv, &mut sf);
        SimState {
            clock,
            urls,
            entra: Mutex::new(es),
            pc: Mutex::new(pc),
            dv: Mutex::new(dv),
            sf: Mutex::new(sf),
            observed: Mutex::new(Observed {
                counters: Counters::default(),
                log: RequestLog::new(opts.request_log_capacity),
            }),
            faults: Mutex::new(Faults::default()),
            opts,
        }
    }

    /// The simulated clock every timestamp comes from.
    pub fn clock(&self) -> SimClock {
        self.clock.clone()
    }

    pub fn urls(&self) -> &SimUrls {
        &self.urls
    }

    /// The Dataverse resource (token audience): the Dynamics base URL.
    pub fn dynamics_resource(&self) -> String {
        self.urls.dynamics.clone()
    }

    /// Calls received so far.
    pub fn counters(&self) -> Counters {
        lock(&self.observed).counters.clone()
    }

    pub fn reset_counters(&self) {
        lock(&self.observed).counters = Counters::default();
    }

    /// The request log, oldest first.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.observed).log.snapshot()
    }

    pub fn clear_request_log(&self) {
        lock(&self.observed).log.clear();
    }

    /// Installs a fault rule; returns its id.
    pub fn add_fault(&self, rule: FaultRule) -> u64 {
        lock(&self.faults).add(rule)
    }

    pub fn remove_fault(&self, id: u64) -> bool {
        lock(&self.faults).remove(id)
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub fn faults(&self) -> Vec<InstalledFault> {
        lock(&self.faults).list()
    }

    /// Makes the access tokens (or Salesforce sessions) issued so far for one
    /// API, or for all when `None`, expire now.
    pub fn expire_tokens(&self, api: Option<Api>) {
        match api {
            None => {
                lock(&self.entra).expire_tokens(None);
                lock(&self.sf).expire_sessions();
            }
            Some(Api::PartnerCenter) => {
                lock(&self.entra).expire_tokens(Some(PARTNER_CENTER_RESOURCE))
            }
            Some(Api::Dynamics) => {
                let r = self.dynamics_resource();
                lock(&self.entra).expire_tokens(Some(&r))
            }
            Some(Api::Salesforce) => lock(&self.sf).expire_sessions(),
            Some(Api::Entra) => lock(&self.entra).expire_tokens(None),
        }
    }

    /// Approves (or declines) a device-code sign-in by its user code, as the
    /// person at the browser would. False when no such code is pending.
    pub fn approve_device_code(&self, user_code: &str, approve: bool) -> bool {
        lock(&self.entra).decide_device_code(user_code, approve)
    }

    /// Device-code sign-ins waiting for a person.
    pub fn pending_device_codes(&self) -> Vec<String> {
        lock(&self.entra).pending_user_codes()
    }

    /// Issues a fresh Partner Center refresh token (as a new sign-in would).
    pub fn issue_refresh_token(&self) -> String {
        lock(&self.entra)
            .new_refresh_token(creds::PARTNER_CENTER_CLIENT_ID, PARTNER_CENTER_RESOURCE)
    }

    /// Mints an access token for an API directly (tests); Partner Center
    /// tokens are delegated (user) tokens.
    pub fn access_token(&self, api: Api) -> Result<String, SimError> {
        let (aud, user, client) = match api {
            Api::PartnerCenter => (
                PARTNER_CENTER_RESOURCE.to_owned(),
                Some(creds::PARTNER_CENTER_USER),
                creds::PARTNER_CENTER_CLIENT_ID,
            ),
            Api::Dynamics => (self.dynamics_resource(), None, creds::DYNAMICS_CLIENT_ID),
            Api::Salesforce => return Ok(lock(&self.sf).new_session(self.clock.now())),
            Api::Entra => {
                return Err(SimError::Invalid(
                    "Entra itself takes no access token".into(),
                ));
            }
        };
        let lifetime = chrono::TimeDelta::from_std(self.opts.access_token_lifetime)
            .unwrap_or(chrono::TimeDelta::hours(1));
        lock(&self.entra)
            .issue_for_tests(self.clock.now(), lifetime, &aud, client, user)
            .map_err(|e| SimError::Invalid(e.to_string()))
    }
}

impl SimState {
    /// Environment variables holding the secrets the daemon needs for the
    /// simulator (fake, well-known demo values).
    pub fn daemon_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "COSELL_SYNC__PARTNER_CENTER__REFRESH_TOKEN",
                creds::PARTNER_CENTER_REFRESH_TOKEN.to_owned(),
            ),
            (
                "COSELL_SYNC__DYNAMICS__CLIENT_SECRET",
                creds::DYNAMICS_CLIENT_SECRET.to_owned(),
            ),
            (
                "COSELL_SYNC__SALESFORCE__CLIENT_SECRET",
                creds::SALESFORCE_CLIENT_SECRET.to_owned(),
            ),
        ]
    }

    /// A complete daemon configuration pointing every URL at this simulator.
    pub fn daemon_config(&self) -> String {
        let u = &self.urls;
        let o = &self.opts;
        let env = self
            .daemon_env()
            .into_iter()
            .map(|(k, v)| format!("#   export {k}='{v}'\n"))
            .collect::<String>();
        format!(
            r#"# cosell-sync configuration for the simulator at {base}
# The secrets are fake demo values the simulator accepts; set them with:
{env}#
# CRM fields the simulator knows: Dynamics alternate key column `{dkey}` on
# `opportunities`; Salesforce External ID field `{sfkey}` on Opportunity.
# The Salesforce org {sf_org}.

[state]
path = "cosell-sync-sim.db"

[sync]
interval = "60s"
overlap = "10m"
full_reconcile_every = "6h"
expiry_days = {expiry}
microsoft_decision_days = 14
max_attempts = 5
conflict = "mapping"

[partner_center]
base_url = "{pc}"
token_url = "{pc_token}"
device_code_url = "{pc_device}"
client_id = "{pc_client}"
scope = "{pc_resource}/.default offline_access"
page_size = 100

[dynamics]
enabled = true
base_url = "{dv}"
api_version = "v9.2"
token_url = "{dv_token}"
client_id = "{dv_client}"
mapping = "mappings/dynamics.toml"
batch_size = 100

[salesforce]
enabled = true
login_url = "{sf}"
api_version = "v62.0"
auth = "client_credentials"
client_id = "{sf_client}"
mapping = "mappings/salesforce.toml"
batch_size = 200
"#,
            base = u.base,
            env = env,
            dkey = o.dynamics_referral_key,
            sfkey = o.salesforce_external_id,
            sf_org = match (o.salesforce_data_com, o.salesforce_multi_currency) {
                (false, false) => "has no Data.com fields (Account.DunsNumber) and one currency",
                (true, false) => "has Data.com fields (Account.DunsNumber) and one currency",
                (false, true) => "has no Data.com fields and several currencies (CurrencyIsoCode)",
                (true, true) => "has Data.com fields and several currencies (CurrencyIsoCode)",
            },
            expiry = o.expiry_days,
            pc = u.partner_center,
            pc_token = u.token_url("organizations"),
            pc_device = u.device_code_url("organizations"),
            pc_client = creds::PARTNER_CENTER_CLIENT_ID,
            pc_resource = PARTNER_CENTER_RESOURCE,
            dv = u.dynamics,
            dv_token = u.token_url(creds::TENANT_ID),
            dv_client = creds::DYNAMICS_CLIENT_ID,
            // A login URL is a bare origin; the API is host-rooted under it.
            sf = u.base,
            sf_client = creds::SALESFORCE_CLIENT_ID,
        )
    }
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Binds `opts.listen`, seeds the data and serves all four APIs.
    pub async fn start(opts: SimOptions) -> Result<SimHandle, SimError> {
        if !opts.listen.ip().is_loopback() {
            return Err(SimError::NotLoopback(opts.listen));
        }
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: opts.listen,
            source,
        })?;
        let urls = SimUrls::new(addr);
        let base_url = Url::parse(&urls.base).map_err(|e| SimError::Invalid(e.to_string()))?;
        let state = Arc::new(SimState::new(opts, urls));
        let app = router(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(
            SimListener(listener),
            app.into_make_service_with_connect_info::<ConnKill>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "simulator server stopped with an error");
            }
        });
        tracing::info!(%addr, "simulator listening");
        Ok(SimHandle {
            base_url,
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

/// A running simulator. Dropping it stops the server too.
pub struct SimHandle {
    /// `http://127.0.0.1:PORT`
    pub base_url: Url,
    pub addr: SocketAddr,
    state: Arc<SimState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// The simulator's state, to act on it in-process.
    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }

    pub fn clock(&self) -> SimClock {
        self.state.clock()
    }

    pub fn urls(&self) -> &SimUrls {
        &self.state.urls
    }

    /// Stops accepting connections and waits for requests in flight.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Environment variables holding the secrets the daemon needs for the
    /// simulator (fake, well-known demo values).
    pub fn daemon_env(&self) -> Vec<(&'static str, String)> {
        self.state.daemon_env()
    }

    /// A complete daemon configuration pointing every URL at this simulator.
    pub fn daemon_config(&self) -> String {
        self.state.daemon_config()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/entra/{tenant}/oauth2/v2.0/token", post(entra::token))
        .route(
            "/entra/{tenant}/oauth2/v2.0/devicecode",
            post(entra::devicecode),
        )
        .route(
            "/partner-center/v1.0/engagements/referrals",
            get(partner_center::list).post(partner_center::create),
        )
        .route(
            "/partner-center/v1.0/engagements/referrals/{id}",
            get(partner_center::get_one)
                .patch(partner_center::patch)
                .put(partner_center::put),
        )
        .route(
            "/dynamics/api/data/{version}/{*rest}",
            any(dataverse::dispatch),
        )
        .route("/salesforce/services/oauth2/token", post(salesforce::token))
        .route("/salesforce/services/data", get(salesforce::versions))
        .route("/salesforce/services/data/", get(salesforce::versions))
        .route(
            "/salesforce/services/data/{version}/{*rest}",
            any(salesforce::dispatch),
        )
        .route("/services/oauth2/token", post(salesforce::token))
        .route("/services/data", get(salesforce::versions))
        .route("/services/data/", get(salesforce::versions))
        .route(
            "/services/data/{version}/{*rest}",
            any(salesforce::dispatch),
        )
        .nest("/_sim", control::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe_requests,
        ))
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/partner-center/") {
        partner_center::error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The requested resource does not exist.",
        )
    } else if path.starts_with("/dynamics/") {
        dataverse::error(
            StatusCode::NOT_FOUND,
            "0x80060888",
            &format!("Resource not found for the segment '{path}'."),
        )
    } else if path.starts_with("/salesforce/") || path.starts_with("/services/") {
        salesforce::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        )
    } else {
        json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no such path: {path}")}),
        )
    }
}

/// Which API and operation a request is, for counters and faults.
pub(crate) fn classify(method: &Method, path: &str) -> Option<(Api, String)> {
    let m = method.as_str();
    if let Some(rest) = path.strip_prefix("/entra/") {
        let op = if rest.ends_with("/token") {
            "token"
        } else if rest.ends_with("/devicecode") {
            "devicecode"
        } else {
            "other"
        };
        return Some((Api::Entra, format!("{m} {op}")));
    }
    if let Some(rest) = path.strip_prefix("/partner-center") {
        let rest = rest
            .strip_prefix("/v1.0/engagements/referrals")
            .map(|r| r.trim_matches('/'));
        let op = match (method, rest) {
            (&Method::GET, Some("")) => "GET list".to_owned(),
            (&Method::POST, Some("")) => "POST create".to_owned(),
            (_, Some(r)) if !r.is_empty() && !r.contains('/') => format!("{m} referral"),
            _ => format!("{m} other"),
        };
        return Some((Api::PartnerCenter, op));
    }
    if let Some(rest) = path.strip_prefix("/dynamics") {
        let seg = rest
            .strip_prefix("/api/data/")
            .and_then(|r| r.split_once('/'))
            .map(|(_, r)| r.split(['(', '/']).next().unwrap_or(""))
            .filter(|s| !s.is_empty())
            .unwrap_or("other");
        return Some((Api::Dynamics, format!("{m} {seg}")));
    }
    let salesforce = path
        .strip_prefix("/salesforce")
        .or_else(|| path.starts_with("/services/").then_some(path));
    if let Some(rest) = salesforce {
        let op = if rest.starts_with("/services/oauth2/") {
            format!("{m} oauth2/token")
        } else if let Some(r) = rest.strip_prefix("/services/data") {
            let r = r.trim_start_matches('/');
            match r.split_once('/') {
                None => format!("{m} versions"),
                Some((_, r)) => salesforce_operation(m, r.trim_end_matches('/')),
            }
        } else {
            format!("{m} other")
        };
        return Some((Api::Salesforce, op));
    }
    None
}

fn salesforce_operation(m: &str, r: &str) -> String {
    let segs: Vec<&str> = r.split('/').collect();
    match segs.as_slice() {
        ["query" | "queryAll"] => format!("{m} query"),
        ["query" | "queryAll", _] => format!("{m} query/more"),
        ["composite", "sobjects", ..] => format!("{m} composite/sobjects"),
        ["sobjects"] => format!("{m} sobjects"),
        ["sobjects", _, "describe"] => format!("{m} describe"),
        ["sobjects", obj, ..] => format!("{m} sobjects/{obj}"),
        [first, ..] => format!("{m} {first}"),
        [] => format!("{m} other"),
    }
}

/// Counts and logs every API request, applies faults and Salesforce's
/// API-usage accounting.
async fn observe_requests(
    State(state): State<Arc<SimState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some((api, operation)) = classify(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let at = state.clock.now();
    let method = req.method().to_string();
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    lock(&state.observed).counters.record(api, &operation);
    let hits = lock(&state.faults).take(api, &operation);
    let mut fault: Option<String> = None;
    let mut malformed = false;
    let mut early: Option<Response> = None;
    for f in &hits {
        match f {
            FaultKind::Latency { millis } => {
                tokio::time::sleep(Duration::from_millis(*millis)).await;
                fault.get_or_insert_with(|| f.name().to_owned());
            }
            FaultKind::TooManyRequests { .. } | FaultKind::ServiceUnavailable { .. }
                if early.is_none() =>
            {
                early = Some(fault_response(api, f));
                fault = Some(f.name().to_owned());
            }
            FaultKind::MalformedJson => {
                malformed = true;
                fault = Some(f.name().to_owned());
            }
            FaultKind::ConnectionReset => {
                if let Some(ConnectInfo(kill)) = req.extensions().get::<ConnectInfo<ConnKill>>() {
                    kill.0.store(true, Ordering::SeqCst);
                }
                log(
                    &state,
                    at,
                    api,
                    method,
                    uri,
                    operation,
                    0,
                    Some(f.name().to_owned()),
                );
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            _ => {}
        }
    }
    let sf_usage = api == Api::Salesforce && salesforce::counts_toward_usage(&operation);
    let mut response = match early {
        Some(r) => r,
        None => {
            let over = sf_usage && !lock(&state.sf).use_api_call(at);
            if over {
                salesforce::error(
                    StatusCode::FORBIDDEN,
                    "REQUEST_LIMIT_EXCEEDED",
                    "TotalRequests Limit exceeded.",
                )
            } else {
                next.run(req).await
            }
        }
    };
    if sf_usage {
        let (used, max) = lock(&state.sf).api_usage(state.clock.now());
        if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{max}")) {
            response.headers_mut().insert("sforce-limit-info", v);
        }
    }
    if malformed {
        response = corrupt_body(response).await;
    }
    log(
        &state,
        at,
        api,
        method,
        uri,
        operation,
        response.status().as_u16(),
        fault,
    );
    response
}

#[allow(clippy::too_many_arguments)]
fn log(
    state: &SimState,
    at: DateTime<Utc>,
    api: Api,
    method: String,
    uri: String,
    operation: String,
    status: u16,
    fault: Option<String>,
) {
    lock(&state.observed).log.push(LoggedRequest {
        seq: 0,
        at,
        api,
        method,
        uri,
        operation,
        status,
        fault,
    });
}

fn fault_response(api: Api, f: &FaultKind) -> Response {
    let (status, retry_after) = match f {
        FaultKind::TooManyRequests { retry_after_secs } => {
            (StatusCode::TOO_MANY_REQUESTS, Some(*retry_after_secs))
        }
        FaultKind::ServiceUnavailable { retry_after_secs } => {
            (StatusCode::SERVICE_UNAVAILABLE, *retry_after_secs)
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    let throttled = status == StatusCode::TOO_MANY_REQUESTS;
    let secs = retry_after.unwrap_or(0);
    let mut resp = match api {
        Api::PartnerCenter if throttled => json_response(
            status,
            &json!({"statusCode": 429, "message": format!("Rate limit is exceeded. Try again in {secs} seconds.")}),
        ),
        Api::PartnerCenter => partner_center::error(
            status,
            "serviceNotAvailable",
            "The service is temporarily unavailable. Try again later.",
        ),
        Api::Dynamics if throttled => dataverse::error(
            status,
            "0x80072322",
            "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
        ),
        Api::Dynamics => dataverse::error(status, "", "Service Unavailable"),
        Api::Salesforce if throttled => {
            salesforce::error(status, "REQUEST_LIMIT_EXCEEDED", "Too many requests.")
        }
        Api::Salesforce => salesforce::error(
            status,
            "SERVER_UNAVAILABLE",
            "Server temporarily unavailable.",
        ),
        Api::Entra => json_response(
            status,
            &json!({"error": "temporarily_unavailable", "error_description": "AADSTS50196: The server is temporarily unavailable. Retry later."}),
        ),
    };
    if let Some(s) = retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

async fn corrupt_body(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let cut = if bytes.len() > 1 {
        bytes.slice(..bytes.len() / 2)
    } else {
        axum::body::Bytes::from_static(b"{\"value\": [")
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    if !parts.headers.contains_key(header::CONTENT_TYPE) {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if parts.status == StatusCode::NO_CONTENT {
        parts.status = StatusCode::OK;
    }
    Response::from_parts(parts, Body::from(cut))
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
        .then(|| token.trim())
}

/// Per-connection switch the connection-reset fault flips.
#[derive(Clone)]
struct ConnKill(Arc<AtomicBool>);

struct SimListener(TcpListener);

/// A TCP stream that can be made to fail, which resets the connection.
struct KillableStream {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

impl KillableStream {
    fn killed(&self) -> bool {
        if self.kill.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
            true
        } else {
            false
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killed() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Listener for SimListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((s, addr)) => {
                    let _ = s.set_nodelay(true);
                    return (
                        KillableStream {
                            inner: s,
                            kill: Arc::new(AtomicBool::new(false)),
                        },
                        addr,
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, SimListener>> for ConnKill {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        ConnKill(stream.io().kill.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_per_api_and_operation() {
        let c = |m: Method, p: &str| classify(&m, p).map(|(a, o)| format!("{a} {o}"));
        assert_eq!(
            c(Method::GET, "/partner-center/v1.0/engagements/referrals").as_deref(),
            Some("partner_center GET list")
        );
        assert_eq!(
            c(
                Method::PATCH,
                "/partner-center/v1.0/engagements/referrals/abc"
            )
            .as_deref(),
            Some("partner_center PATCH referral")
        );
        assert_eq!(
            c(Method::POST, "/dynamics/api/data/v9.2/$batch").as_deref(),
            Some("dynamics POST $batch")
        );
        assert_eq!(
            c(
                Method::PATCH,
                "/dynamics/api/data/v9.2/opportunities(new_referralid='x')"
            )
            .as_deref(),
            Some("dynamics PATCH opportunities")
        );
        assert_eq!(
            c(Method::PATCH, "/salesforce/services/data/v62.0/composite/sobjects/Opportunity/Referral_Identifier__c").as_deref(),
            Some("salesforce PATCH composite/sobjects")
        );
        assert_eq!(
            c(
                Method::GET,
                "/salesforce/services/data/v62.0/query/01gX-2000"
            )
            .as_deref(),
            Some("salesforce GET query/more")
        );
        assert_eq!(
            c(Method::POST, "/entra/common/oauth2/v2.0/token").as_deref(),
            Some("entra POST token")
        );
        assert_eq!(c(Method::GET, "/_sim/counters"), None);
    }
}
