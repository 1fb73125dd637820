//! Secrets never reach the logs of the Dynamics adapter. Its own test binary:
//! the capturing subscriber is the process-wide default here.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cosell_sync::config::{AccountMatch, DynamicsSettings};
use cosell_sync::crm::dynamics::{DynamicsCrm, DynamicsOptions};
use cosell_sync::crm::{Crm, CrmObjectSpec, RecordKey};
use cosell_sync::http::RetrySettings;
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "top-secret-client-value";
const API: &str = "/api/data/v9.2";

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/dynamics")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn secrets_and_tokens_never_reach_the_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let access_token =
        serde_json::from_str::<serde_json::Value>(&fixture("token.json")).unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(fixture("token.json"), "application/json"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "{API}/EntityDefinitions(LogicalName='opportunity')"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"EntitySetName": "opportunities", "PrimaryIdAttribute": "opportunityid"}),
        ))
        .mount(&server)
        .await;
    let settings = DynamicsSettings {
        enabled: true,
        base_url: server.uri().parse().unwrap(),
        api_version: "v9.2".into(),
        token_url: format!("{}/tenant-1/oauth2/v2.0/token", server.uri())
            .parse()
            .unwrap(),
        client_id: "app-client-id".into(),
        client_secret: Some(SecretString::from(SECRET)),
        scope: String::new(),
        mapping: "mappings/dynamics.toml".into(),
        batch_size: 100,
        timeout: Duration::from_secs(30),
        change_tracking: false,
        account_match: AccountMatch::NamePostalCode,
        duns_column: "new_dunsnumber".into(),
        page_size: 100,
    };
    let spec = CrmObjectSpec {
        object: "opportunity".into(),
        external_id_field: "new_referralid".into(),
        ..Default::default()
    };
    let options = DynamicsOptions {
        retry: RetrySettings {
            max_attempts: 2,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_total: Duration::from_secs(1),
            jitter: false,
        },
        ..DynamicsOptions::default()
    };
    let crm = DynamicsCrm::with_options(&settings, spec, options).unwrap();
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities(new_referralid='r1')")))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_raw(fixture("error_401_expired.json"), "application/json"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities")))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("Retry-After", "0")
                .set_body_string("unavailable"),
        )
        .mount(&server)
        .await;
    let err = crm
        .fetch(&RecordKey::Referral("r1".into()))
        .await
        .unwrap_err();
    let _ = crm.read_changes(None, None).await;
    let shown = format!("{err} {err:?} {crm:?}");

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("dataverse answered"),
        "logging was captured: {logs}"
    );
    assert!(logs.contains("access token rejected"), "{logs}");
    for secret in [
        SECRET,
        access_token.as_str(),
        "dataverse-access-token-fixture",
    ] {
        assert!(!logs.contains(secret), "secret in logs: {logs}");
        assert!(!shown.contains(secret), "secret in an error: {shown}");
    }
}
