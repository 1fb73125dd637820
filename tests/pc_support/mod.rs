//! Shared set-up for the Partner Center client tests: a wiremock server per
//! test, the client pointed at it, fixtures and a log capture.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cosell_sync::http::{ClientSettings, RetrySettings, build_client};
use cosell_sync::partner_center::{
    MemoryRefreshTokenStore, PartnerCenterClient, PartnerCenterOptions,
};
use serde_json::{Value, json};
use url::Url;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const REFERRALS: &str = "/v1.0/engagements/referrals";
pub const TOKEN_PATH: &str = "/organizations/oauth2/v2.0/token";
pub const DEVICE_CODE_PATH: &str = "/organizations/oauth2/v2.0/devicecode";
pub const ACCESS_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.ACCESS-TOKEN-ONE.sig";
pub const ACCESS_TOKEN_2: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.ACCESS-TOKEN-TWO.sig";
pub const REFRESH_TOKEN: &str = "0.ARwA6WgJJ9X2qk-REFRESH-TOKEN-ORIGINAL";
pub const REFRESH_TOKEN_ROTATED: &str = "0.ARwA6WgJJ9X2qk-REFRESH-TOKEN-ROTATED";

pub fn fixture(name: &str) -> String {
    let p = format!(
        "{}/fixtures/partner_center/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// A list page fixture with `{{base}}` replaced by the server's address.
pub fn page_fixture(name: &str, server: &MockServer) -> Value {
    serde_json::from_str(&fixture(name).replace("{{base}}", &server.uri())).unwrap()
}

pub fn options(server: &MockServer) -> PartnerCenterOptions {
    let base = Url::parse(&server.uri()).unwrap();
    PartnerCenterOptions {
        base_url: base.clone(),
        token_url: base.join(TOKEN_PATH).unwrap(),
        device_code_url: base.join(DEVICE_CODE_PATH).unwrap(),
        client_id: "11111111-2222-3333-4444-555555555555".into(),
        scope: "https://api.partner.microsoft.com/.default offline_access".into(),
        page_size: 2,
        timeout: Duration::from_secs(30),
        retry: RetrySettings {
            max_attempts: 4,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            max_total: Duration::from_secs(120),
            jitter: false,
        },
    }
}

/// An HTTP client with no timers, so tokio's paused clock only moves when
/// the code under test sleeps.
pub fn http() -> reqwest::Client {
    build_client(&ClientSettings::without_timeouts()).unwrap()
}

pub fn client_with(
    server: &MockServer,
    store: Arc<MemoryRefreshTokenStore>,
) -> PartnerCenterClient {
    PartnerCenterClient::with_http_client(options(server), store, http()).unwrap()
}

/// A server whose token endpoint grants `ACCESS_TOKEN`, and a client on it.
pub async fn setup() -> (
    MockServer,
    PartnerCenterClient,
    Arc<MemoryRefreshTokenStore>,
) {
    let server = MockServer::start().await;
    mount_token_ok(&server, ACCESS_TOKEN, None).await;
    let store = Arc::new(MemoryRefreshTokenStore::new(Some(REFRESH_TOKEN)));
    let client = client_with(&server, store.clone());
    (server, client, store)
}

pub fn token_body(access: &str, refresh: Option<&str>) -> Value {
    let mut body = json!({"token_type": "Bearer", "scope": "https://api.partner.microsoft.com/user_impersonation",
        "expires_in": 3599, "ext_expires_in": 3599, "access_token": access});
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r);
    }
    body
}

pub async fn mount_token_ok(server: &MockServer, access: &str, refresh: Option<&str>) {
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(access, refresh)))
        .mount(server)
        .await;
}

/// A responder that plays `responses` in order, then repeats the last one.
pub fn script(
    responses: Vec<ResponseTemplate>,
) -> impl Fn(&Request) -> ResponseTemplate + Send + Sync {
    let queue = Mutex::new(VecDeque::from(responses));
    move |_: &Request| {
        let mut q = queue.lock().unwrap();
        if q.len() > 1 {
            q.pop_front().unwrap()
        } else {
            q.front()
                .cloned()
                .unwrap_or_else(|| ResponseTemplate::new(500))
        }
    }
}

pub async fn requests_to(server: &MockServer, m: &str, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.method.as_str() == m && r.url.path() == p)
        .collect()
}

pub fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn form(r: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&r.body).into_owned().collect()
}

pub fn form_value(r: &Request, key: &str) -> Option<String> {
    form(r).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Captures every tracing event (TRACE and up) of the current thread.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn capture_logs() -> (tracing::subscriber::DefaultGuard, LogBuffer) {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (tracing::subscriber::set_default(subscriber), buffer)
}
