//! The Dynamics 365 adapter against a wiremock Dataverse + Entra ID, with the
//! fixtures in fixtures/dynamics/.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cosell_sync::config::{AccountMatch, DynamicsSettings};
use cosell_sync::crm::dynamics::{DynamicsCredential, DynamicsCrm, DynamicsOptions, ServiceLimits};
use cosell_sync::crm::{
    CloseOutcome, CloseRequest, Crm, CrmChange, CrmError, CrmObjectSpec, CustomerRef, RecordKey,
    RecordWrite, Severity,
};
use cosell_sync::http::{RetryDirective, RetrySettings, Retryable};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{
    body_string_contains, header, headers, method, path, query_param, query_param_contains,
    query_param_is_missing,
};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SECRET: &str = "top-secret-client-value";
const ACCESS_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.dataverse-access-token-fixture";
const API: &str = "/api/data/v9.2";

fn fixture(name: &str, base: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/dynamics")
        .join(name);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .replace("{{base}}", base)
}

fn json_fixture(name: &str, base: &str) -> Value {
    serde_json::from_str(&fixture(name, base)).unwrap()
}

fn spec() -> CrmObjectSpec {
    CrmObjectSpec {
        object: "opportunity".into(),
        external_id_field: "new_referralid".into(),
        sync_flag_field: Some("new_syncwithpartnercenter".into()),
        error_field: None,
        fields: vec![
            "name".into(),
            "estimatedvalue".into(),
            "estimatedclosedate".into(),
        ],
        stage_values: vec![
            ("statecode".into(), json!(0)),
            ("statuscode".into(), json!(1)),
            ("statecode".into(), json!(1)),
            ("statuscode".into(), json!(3)),
        ],
    }
}

const SELECT: &str = "new_referralid,new_syncwithpartnercenter,name,estimatedvalue,estimatedclosedate,statecode,statuscode,opportunityid,modifiedon";

fn settings(server: &MockServer) -> DynamicsSettings {
    DynamicsSettings {
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
        page_size: 2,
    }
}

fn options() -> DynamicsOptions {
    DynamicsOptions {
        // No timeouts and no idle pool timers: tests run on a paused clock.
        client: Some(
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .no_proxy()
                .build()
                .unwrap(),
        ),
        retry: RetrySettings {
            max_attempts: 4,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            max_total: Duration::from_secs(60),
            jitter: false,
        },
        ..DynamicsOptions::default()
    }
}

async fn mount_auth_and_metadata(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(fixture("token.json", ""), "application/json"),
        )
        .named("token")
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "{API}/EntityDefinitions(LogicalName='opportunity')"
        )))
        .and(query_param(
            "$select",
            "EntitySetName,PrimaryIdAttribute,ChangeTrackingEnabled",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json_fixture("entity_opportunity.json", &server.uri())),
        )
        .expect(1)
        .named("entity metadata, read once")
        .mount(server)
        .await;
}

async fn crm(server: &MockServer) -> DynamicsCrm {
    mount_auth_and_metadata(server).await;
    DynamicsCrm::with_options(&settings(server), spec(), options()).unwrap()
}

fn requests_to<'a>(all: &'a [Request], p: &str) -> Vec<&'a Request> {
    all.iter().filter(|r| r.url.path() == p).collect()
}

fn header_of<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

// ---- reads --------------------------------------------------------------

#[tokio::test]
async fn a_paged_listing_sends_the_odata_headers_and_follows_the_absolute_next_link() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    let base = server.uri();
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities")))
        .and(query_param("$select", SELECT))
        .and(query_param(
            "$filter",
            "modifiedon ge 2025-03-01T00:00:00Z and (new_referralid ne null or new_syncwithpartnercenter eq true)",
        ))
        .and(query_param("$orderby", "modifiedon asc"))
        .and(query_param_is_missing("$skiptoken"))
        .and(header("Accept", "application/json"))
        .and(header("OData-Version", "4.0"))
        .and(header("OData-MaxVersion", "4.0"))
        .and(header("If-None-Match", "null"))
        .and(header("Prefer", "odata.maxpagesize=2"))
        .and(header("Authorization", format!("Bearer {ACCESS_TOKEN}").as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Preference-Applied", "odata.maxpagesize=2")
                .set_body_json(json_fixture("opportunities_page1.json", &base)),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities")))
        .and(query_param(
            "$skiptoken",
            "<cookie pagenumber=\"2\" pagingcookie=\"%3ccookie%20page%3d%221%22%3e\" istracking=\"False\" />",
        ))
        .and(header("Prefer", "odata.maxpagesize=2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json_fixture("opportunities_page2.json", &base)))
        .expect(1)
        .mount(&server)
        .await;

    let since: DateTime<Utc> = "2025-03-01T00:00:00Z".parse().unwrap();
    let first = crm.read_changes(Some(since), None).await.unwrap();
    assert_eq!(first.changes.len(), 2);
    let CrmChange::Upserted(rec) = &first.changes[0] else {
        panic!()
    };
    assert_eq!(rec.crm_id, "49b0be2e-d01c-ed11-b83e-000d3a572421");
    assert_eq!(rec.referral_id.as_deref(), Some("8d1c2f3e-0001"));
    assert_eq!(rec.version.as_deref(), Some("W/\"80648695\""));
    assert_eq!(rec.fields["estimatedvalue"], json!(125000.0));
    assert!(
        !rec.fields
            .contains_key("statuscode@OData.Community.Display.V1.FormattedValue")
    );
    let CrmChange::Upserted(second) = &first.changes[1] else {
        panic!()
    };
    assert_eq!(second.referral_id, None);
    assert_eq!(
        first.high_water,
        Some("2025-03-04T11:02:09Z".parse().unwrap())
    );
    let next = first.continuation.clone().expect("a next link");
    assert!(next.starts_with(&base), "{next}");
    assert_eq!(first.delta_token, None);

    let last = crm.read_changes(Some(since), Some(&next)).await.unwrap();
    assert_eq!(last.changes.len(), 1);
    assert_eq!(last.continuation, None);
    let CrmChange::Upserted(rec) = &last.changes[0] else {
        panic!()
    };
    assert!(!rec.fields.contains_key("somefuturecolumn"));
    assert_eq!(
        rec.modified_at,
        Some("2025-03-05T08:00:00Z".parse().unwrap())
    );

    // One token for all of it.
    let all = server.received_requests().await.unwrap();
    assert_eq!(requests_to(&all, "/tenant-1/oauth2/v2.0/token").len(), 1);
}

#[tokio::test]
async fn a_next_link_to_another_host_is_refused_without_sending_the_token() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    let err = crm
        .read_changes(
            None,
            Some("https://attacker.example/api/data/v9.2/opportunities?$skiptoken=x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CrmError::Protocol { .. }), "{err}");
    let all = server.received_requests().await.unwrap();
    assert!(requests_to(&all, &format!("{API}/opportunities")).is_empty());
}

#[tokio::test]
async fn without_a_sync_flag_the_filter_is_the_referral_link_only_and_since_is_optional() {
    let server = MockServer::start().await;
    mount_auth_and_metadata(&server).await;
    let mut s = spec();
    s.sync_flag_field = None;
    let crm = DynamicsCrm::with_options(&settings(&server), s, options()).unwrap();
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities")))
        .and(query_param("$filter", "new_referralid ne null"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .expect(1)
        .mount(&server)
        .await;
    let page = crm.read_changes(None, None).await.unwrap();
    assert!(page.changes.is_empty() && page.continuation.is_none());
}

#[tokio::test]
async fn change_tracking_reads_deltas_reports_deletions_and_restarts_on_a_refused_token() {
    let server = MockServer::start().await;
    mount_auth_and_metadata(&server).await;
    let mut s = settings(&server);
    s.change_tracking = true;
    let crm = DynamicsCrm::with_options(&s, spec(), options()).unwrap();
    let base = server.uri();
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities")))
        .and(query_param("$select", SELECT))
        .and(query_param_is_missing("$filter"))
        .and(query_param_is_missing("$orderby"))
        .and(query_param_is_missing("$deltatoken"))
        // wiremock splits header values on commas.
        .and(headers(
            "Prefer",
            vec!["odata.track-changes", "odata.maxpagesize=2"],
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json_fixture("delta_initial.json", &base)),
        )
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities")))
        .and(query_param("$deltatoken", "919042!08/22/2017 08:10:44"))
        .and(query_param("$select", SELECT))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json_fixture("delta_changes.json", &base)),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities")))
        .and(query_param("$deltatoken", "stale"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error":{"code":"0x80044352","message":"The delta token is expired or invalid."}}),
        ))
        .expect(1)
        .mount(&server)
        .await;

    // The initial read: the full set, filtered locally to linked/flagged rows.
    let initial = crm.read_changes(None, None).await.unwrap();
    assert_eq!(initial.changes.len(), 1, "{:?}", initial.changes);
    assert_eq!(
        initial.delta_token.as_deref(),
        Some("919042!08/22/2017 08:10:44")
    );
    assert_eq!(initial.continuation, None);

    // The stored token brings the changes since, with the deleted row.
    let delta = crm
        .read_changes(None, initial.delta_token.as_deref())
        .await
        .unwrap();
    assert_eq!(delta.changes.len(), 2);
    assert!(
        matches!(&delta.changes[0], CrmChange::Upserted(r) if r.fields["estimatedvalue"] == json!(130000.0))
    );
    assert_eq!(
        delta.changes[1],
        CrmChange::Deleted {
            crm_id: "2e451703-c686-e711-80e5-00155db19e6d".into()
        }
    );
    assert_eq!(
        delta.delta_token.as_deref(),
        Some("919058!08/22/2017 08:21:20")
    );

    let all = server.received_requests().await.unwrap();
    let listing = requests_to(&all, &format!("{API}/opportunities"))[0];
    assert_eq!(
        header_of(listing, "prefer"),
        Some("odata.track-changes, odata.maxpagesize=2")
    );

    // A refused token falls back to a full read.
    let again = crm.read_changes(None, Some("stale")).await.unwrap();
    assert_eq!(
        again.delta_token.as_deref(),
        Some("919042!08/22/2017 08:10:44")
    );
}

#[tokio::test]
async fn fetch_addresses_the_alternate_key_with_quotes_doubled_and_percent_encoded() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    Mock::given(method("GET"))
        .and(path(format!(
            "{API}/opportunities(new_referralid='O''Brien%20%26%20Co%2F7')"
        )))
        .and(query_param("$select", SELECT))
        .and(header("If-None-Match", "null"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.etag": "W/\"5\"", "opportunityid": "49b0be2e-d01c-ed11-b83e-000d3a572421",
            "new_referralid": "O'Brien & Co/7", "name": "x", "modifiedon": "2025-03-04T10:15:22Z"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities(new_referralid='missing')")))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"error":{"code":"0x80040217","message":"opportunity With Ids = new_referralid:missing Does Not Exist"}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "{API}/opportunities(49b0be2e-d01c-ed11-b83e-000d3a572421)"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "opportunityid": "49b0be2e-d01c-ed11-b83e-000d3a572421", "new_referralid": null
        })))
        .expect(1)
        .mount(&server)
        .await;

    let rec = crm
        .fetch(&RecordKey::Referral("O'Brien & Co/7".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.referral_id.as_deref(), Some("O'Brien & Co/7"));
    assert_eq!(rec.version.as_deref(), Some("W/\"5\""));
    assert!(
        crm.fetch(&RecordKey::Referral("missing".into()))
            .await
            .unwrap()
            .is_none()
    );
    let by_id = crm
        .fetch(&RecordKey::CrmId(
            "{49B0BE2E-D01C-ED11-B83E-000D3A572421}".into(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id.referral_id, None);
    let err = crm
        .fetch(&RecordKey::CrmId("1) or (2".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, CrmError::Invalid(_)), "{err}");
}

#[tokio::test]
async fn the_entity_set_comes_from_metadata_and_a_missing_table_is_named() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(fixture("token.json", ""), "application/json"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "{API}/EntityDefinitions(LogicalName='new_deal')"
        )))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"error":{"code":"0x80040217","message":"Could not find entity"}}),
        ))
        .mount(&server)
        .await;
    let mut s = spec();
    s.object = "new_deal".into();
    let crm = DynamicsCrm::with_options(&settings(&server), s, options()).unwrap();
    let err = crm.read_changes(None, None).await.unwrap_err();
    assert!(matches!(err, CrmError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("`new_deal`"), "{err}");
}

// ---- auth -----------------------------------------------------------------

#[tokio::test]
async fn the_token_request_uses_client_credentials_with_the_scope_derived_from_the_base_url() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .mount(&server)
        .await;
    crm.read_changes(None, None).await.unwrap();
    let all = server.received_requests().await.unwrap();
    let token = requests_to(&all, "/tenant-1/oauth2/v2.0/token")[0];
    assert_eq!(
        header_of(token, "content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&token.body)
        .into_owned()
        .collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("grant_type"), Some("client_credentials"));
    assert_eq!(get("client_id"), Some("app-client-id"));
    assert_eq!(get("client_secret"), Some(SECRET));
    assert_eq!(
        get("scope"),
        Some(format!("{}/.default", server.uri()).as_str())
    );
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_a_second_401_needs_an_operator() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities(new_referralid='r1')")))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_raw(fixture("error_401_expired.json", ""), "application/json"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities(new_referralid='r1')")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"opportunityid": "49b0be2e-d01c-ed11-b83e-000d3a572421"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities(new_referralid='r2')")))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_raw(fixture("error_401_expired.json", ""), "application/json"),
        )
        .expect(2)
        .mount(&server)
        .await;

    assert!(
        crm.fetch(&RecordKey::Referral("r1".into()))
            .await
            .unwrap()
            .is_some()
    );
    let all = server.received_requests().await.unwrap();
    // One token for the metadata and the first try, a new one after the 401.
    assert_eq!(requests_to(&all, "/tenant-1/oauth2/v2.0/token").len(), 2);

    let err = crm
        .fetch(&RecordKey::Referral("r2".into()))
        .await
        .unwrap_err();
    assert_eq!(err.directive(), RetryDirective::Operator, "{err}");
    assert!(err.to_string().contains("ExpiredAuthTicket"), "{err}");
    let all = server.received_requests().await.unwrap();
    assert_eq!(requests_to(&all, "/tenant-1/oauth2/v2.0/token").len(), 3);
}

#[tokio::test]
async fn a_rejected_secret_is_an_operator_problem() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1",
            "error_codes": [7000215]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let crm = DynamicsCrm::with_options(&settings(&server), spec(), options()).unwrap();
    let err = crm.read_changes(None, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            CrmError::Auth {
                needs_operator: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("AADSTS7000215"), "{err}");
}

#[tokio::test]
async fn a_certificate_signs_a_client_assertion_instead_of_sending_a_secret() {
    let server = MockServer::start().await;
    mount_auth_and_metadata(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .mount(&server)
        .await;
    let pem = fixture("test-only-rsa-key.pem", "");
    let mut opts = options();
    opts.credential = Some(DynamicsCredential::Certificate {
        private_key_pem: SecretString::from(pem),
        thumbprint_sha1_hex: "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567".into(),
    });
    let mut s = settings(&server);
    s.client_secret = None;
    let crm = DynamicsCrm::with_options(&s, spec(), opts).unwrap();
    crm.read_changes(None, None).await.unwrap();
    let all = server.received_requests().await.unwrap();
    let token = requests_to(&all, "/tenant-1/oauth2/v2.0/token")[0];
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&token.body)
        .into_owned()
        .collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("client_secret"), None);
    assert_eq!(
        get("client_assertion_type").as_deref(),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    let jwt = get("client_assertion").unwrap();
    let h = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(h.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(h.x5t.as_deref(), Some("ChssPU5fYHGCk6S1xtfo-QEjRWc"));
    use base64::Engine as _;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["aud"],
        json!(format!("{}/tenant-1/oauth2/v2.0/token", server.uri()))
    );
    assert_eq!(claims["iss"], json!("app-client-id"));
    assert_eq!(claims["sub"], json!("app-client-id"));
    assert!(claims["exp"].as_u64().unwrap() > claims["nbf"].as_u64().unwrap());
}

// ---- limits ---------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_429_pauses_for_retry_after_then_retries() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities")))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "7")
                .set_body_raw(fixture("error_429_requests.json", ""), "application/json"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .mount(&server)
        .await;
    // Warm up (token + metadata) so only the listing is timed.
    crm.fetch(&RecordKey::Referral("warm".into())).await.ok();
    let start = tokio::time::Instant::now();
    let page = crm.read_changes(None, None).await.unwrap();
    assert!(page.changes.is_empty());
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(7) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_long_429_pauses_every_request_of_the_client_until_retry_after() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities")))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "300")
                .set_body_raw(fixture("error_429_requests.json", ""), "application/json"),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities(new_referralid='r1')")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"opportunityid": "49b0be2e-d01c-ed11-b83e-000d3a572421"})),
        )
        .expect(1)
        .mount(&server)
        .await;

    let err = crm.read_changes(None, None).await.unwrap_err();
    let CrmError::Paused { until, reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("0x80072322"), "{reason}");
    let left = (*until - Utc::now()).num_seconds();
    assert!((295..=300).contains(&left), "{left}");
    assert!(matches!(err.directive(), RetryDirective::After(d) if d > Duration::from_secs(290)));

    // Another request of the same client is held back without being sent.
    let err = crm
        .fetch(&RecordKey::Referral("r1".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, CrmError::Paused { .. }), "{err:?}");
    let all = server.received_requests().await.unwrap();
    assert!(requests_to(&all, &format!("{API}/opportunities(new_referralid='r1')")).is_empty());

    // Once the pause is over, it goes through.
    tokio::time::advance(Duration::from_secs(301)).await;
    assert!(
        crm.fetch(&RecordKey::Referral("r1".into()))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(start_paused = true)]
async fn the_client_side_quota_spaces_requests() {
    let server = MockServer::start().await;
    mount_auth_and_metadata(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities(new_referralid='r1')")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"opportunityid": "49b0be2e-d01c-ed11-b83e-000d3a572421"})),
        )
        .mount(&server)
        .await;
    let mut opts = options();
    opts.limits = ServiceLimits {
        requests: 2,
        window: Duration::from_secs(20),
        concurrent: 52,
    };
    let crm = DynamicsCrm::with_options(&settings(&server), spec(), opts).unwrap();
    let start = tokio::time::Instant::now();
    // Metadata + fetch use the burst of 2; the next fetch waits 10 s.
    crm.fetch(&RecordKey::Referral("r1".into())).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    crm.fetch(&RecordKey::Referral("r1".into())).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
        "{waited:?}"
    );
}

// ---- writes ---------------------------------------------------------------

fn write(referral: &str, fields: Value) -> RecordWrite {
    RecordWrite {
        key: RecordKey::Referral(referral.into()),
        fields: fields.as_object().unwrap().clone(),
        if_match: None,
        customer: None,
    }
}

#[tokio::test]
async fn upserts_go_in_one_batch_with_a_change_set_each_and_one_failure_fails_only_its_record() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    let base = server.uri();
    Mock::given(method("POST"))
        .and(path(format!("{API}/$batch")))
        .and(header("Prefer", "odata.continue-on-error"))
        .and(header("OData-Version", "4.0"))
        .and(header("Accept", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            fixture("batch_response_one_failed.multipart", &base),
            "multipart/mixed; boundary=batchresponse_9d8a2f6c-7b1e-4c3a-a5d2-1f0e9b8c7a6d",
        ))
        .expect(1)
        .mount(&server)
        .await;

    let mut conflicting = write("r-4", json!({"name": "D"}));
    conflicting.if_match = Some("W/\"77\"".into());
    let writes = vec![
        write(
            "O'Brien-1",
            json!({"name": "A", "new_referralid": "O'Brien-1", "statecode": 0, "statuscode": 2}),
        ),
        write("r-2", json!({"name": "B".repeat(400)})),
        RecordWrite {
            key: RecordKey::CrmId("70bf4d48-34cb-ed11-b596-0022481d68cd".into()),
            fields: json!({"new_referralid": "r-3"})
                .as_object()
                .unwrap()
                .clone(),
            if_match: None,
            customer: None,
        },
        conflicting,
    ];
    let results = crm.upsert(&writes).await.unwrap();
    assert_eq!(results.len(), 4);

    let ok = results[0].outcome.as_ref().unwrap();
    assert_eq!(results[0].key, RecordKey::Referral("O'Brien-1".into()));
    assert_eq!(ok.crm_id, "ef0d112e-d70e-ed11-82e5-00224822577b");
    assert!(ok.created);
    assert_eq!(ok.version.as_deref(), Some("W/\"71004878\""));

    match &results[1].outcome {
        Err(CrmError::Record {
            key,
            code,
            message,
            directive,
            ..
        }) => {
            assert_eq!(key, &RecordKey::Referral("r-2".into()));
            assert_eq!(code, "0x80044331");
            assert!(message.contains("exceeded the maximum allowed length"));
            assert_eq!(*directive, RetryDirective::Permanent);
        }
        other => panic!("{other:?}"),
    }

    let ok = results[2].outcome.as_ref().unwrap();
    assert_eq!(ok.crm_id, "70bf4d48-34cb-ed11-b596-0022481d68cd");
    assert!(!ok.created);

    assert!(
        matches!(&results[3].outcome, Err(CrmError::Conflict { key }) if key == &RecordKey::Referral("r-4".into())),
        "{:?}",
        results[3].outcome
    );

    // The exact request.
    let all = server.received_requests().await.unwrap();
    let batch = requests_to(&all, &format!("{API}/$batch"))[0];
    let ct = header_of(batch, "content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/mixed; boundary=batch_")
        .expect(ct);
    uuid::Uuid::parse_str(boundary).unwrap();
    let body = String::from_utf8(batch.body.clone()).unwrap();
    assert_eq!(body.matches("boundary=changeset_").count(), 4, "{body}");
    assert!(body.ends_with(&format!("--batch_{boundary}--\r\n")));
    let expected_first = "Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\
Content-ID: 1\r\n\
\r\n\
PATCH /api/data/v9.2/opportunities(new_referralid='O''Brien-1')?$select=opportunityid HTTP/1.1\r\n\
Content-Type: application/json; type=entry\r\n\
Prefer: return=representation\r\n\
\r\n\
{\"name\":\"A\",\"statuscode\":2}\r\n";
    assert!(body.contains(expected_first), "{body}");
    assert!(body.contains(
        "PATCH /api/data/v9.2/opportunities(70bf4d48-34cb-ed11-b596-0022481d68cd)?$select=opportunityid HTTP/1.1\r\n\
Content-Type: application/json; type=entry\r\n\
Prefer: return=representation\r\n\
If-Match: *\r\n\
\r\n\
{\"new_referralid\":\"r-3\"}\r\n"
    ), "{body}");
    assert!(body.contains(
        "Content-ID: 4\r\n\r\nPATCH /api/data/v9.2/opportunities(new_referralid='r-4')?$select=opportunityid HTTP/1.1\r\n\
Content-Type: application/json; type=entry\r\n\
Prefer: return=representation\r\n\
If-Match: W/\"77\"\r\n"
    ), "{body}");
}

#[tokio::test]
async fn large_upserts_are_split_into_batches_of_the_configured_size() {
    let server = MockServer::start().await;
    mount_auth_and_metadata(&server).await;
    let mut s = settings(&server);
    s.batch_size = 2;
    let crm = DynamicsCrm::with_options(&s, spec(), options()).unwrap();
    // Every batch answers with no parts: each record is reported unprocessed.
    Mock::given(method("POST"))
        .and(path(format!("{API}/$batch")))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "--batchresponse_x--\r\n",
            "multipart/mixed; boundary=batchresponse_x",
        ))
        .expect(3)
        .mount(&server)
        .await;
    let writes: Vec<RecordWrite> = (0..5)
        .map(|i| write(&format!("r{i}"), json!({"name": "x"})))
        .collect();
    let results = crm.upsert(&writes).await.unwrap();
    assert_eq!(results.len(), 5);
    for r in &results {
        assert!(
            matches!(&r.outcome, Err(CrmError::Record { code, directive: RetryDirective::Backoff, .. }) if code == "NotProcessed"),
            "{:?}",
            r.outcome
        );
    }
}

#[tokio::test]
async fn a_204_naming_the_alternate_key_is_followed_by_a_read_of_the_id() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    let base = server.uri();
    let body = format!(
        "--batchresponse_a\r\nContent-Type: multipart/mixed; boundary=changesetresponse_b\r\n\r\n\
--changesetresponse_b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\n\
HTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\n\
OData-EntityId: {base}/api/data/v9.2/opportunities(new_referralid='r1')\r\n\r\n\r\n\
--changesetresponse_b--\r\n--batchresponse_a--\r\n"
    );
    Mock::given(method("POST"))
        .and(path(format!("{API}/$batch")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(body, "multipart/mixed; boundary=batchresponse_a"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/opportunities(new_referralid='r1')")))
        .and(query_param("$select", "opportunityid,modifiedon"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.etag": "W/\"9\"", "opportunityid": "49b0be2e-d01c-ed11-b83e-000d3a572421"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let results = crm
        .upsert(&[write("r1", json!({"name": "x"}))])
        .await
        .unwrap();
    let ok = results[0].outcome.as_ref().unwrap();
    assert_eq!(ok.crm_id, "49b0be2e-d01c-ed11-b83e-000d3a572421");
    assert_eq!(ok.version.as_deref(), Some("W/\"9\""));
}

#[tokio::test]
async fn a_whole_batch_failure_is_reported_on_every_record() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/$batch")))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"error":{"code":"0x80040220","message":"Principal user is missing prvWriteOpportunity privilege"}}),
        ))
        .mount(&server)
        .await;
    let results = crm
        .upsert(&[write("a", json!({})), write("b", json!({}))])
        .await
        .unwrap();
    for r in results {
        let e = r.outcome.unwrap_err();
        assert!(e.to_string().contains("prvWriteOpportunity"), "{e}");
    }
}

// ---- customer -------------------------------------------------------------

fn customer() -> CustomerRef {
    CustomerRef {
        name: "Contoso's Bakery".into(),
        duns: Some("123456789".into()),
        address_line1: Some("1 Main St".into()),
        city: Some("Seattle".into()),
        state: Some("WA".into()),
        postal_code: Some("98052".into()),
        country: Some("US".into()),
        contact: None,
    }
}

fn ok_batch(base: &str) -> String {
    format!(
        "--batchresponse_a\r\nContent-Type: multipart/mixed; boundary=changesetresponse_b\r\n\r\n\
--changesetresponse_b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\n\
HTTP/1.1 204 No Content\r\nOData-EntityId: {base}/api/data/v9.2/opportunities(49b0be2e-d01c-ed11-b83e-000d3a572421)\r\n\r\n\r\n\
--changesetresponse_b--\r\n--batchresponse_a--\r\n"
    )
}

const ACCOUNT_SELECT: &str = "accountid,name,address1_postalcode,createdon";
const ACCOUNT_SELECT_DUNS: &str = "accountid,name,address1_postalcode,new_dunsnumber,createdon";

fn account_lookups(all: &[Request]) -> Vec<&Request> {
    all.iter()
        .filter(|r| {
            r.method == wiremock::http::Method::GET && r.url.path() == format!("{API}/accounts")
        })
        .collect()
}

fn account_creations(all: &[Request]) -> Vec<Value> {
    all.iter()
        .filter(|r| {
            r.method == wiremock::http::Method::POST && r.url.path() == format!("{API}/accounts")
        })
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

fn query_of(r: &Request, name: &str) -> Option<String> {
    r.url
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The `customerid_account` bound by each operation of the batch, in order.
fn bound_accounts(batch: &Request) -> Vec<Option<String>> {
    let body = String::from_utf8_lossy(&batch.body).into_owned();
    body.split("\r\nPATCH ")
        .skip(1)
        .map(|op| {
            let value = op
                .split("\"customerid_account@odata.bind\":\"")
                .nth(1)?
                .split('"')
                .next()?;
            // `/accounts(<id>)`, or `$n`: the account created in the change set.
            Some(match value.strip_prefix("/accounts(") {
                Some(rest) => rest.trim_end_matches(')').to_owned(),
                None => value.to_owned(),
            })
        })
        .collect()
}

/// The bodies of the account creates inside a `$batch`, in order.
fn batch_account_creates(batch: &Request) -> Vec<Value> {
    let body = String::from_utf8_lossy(&batch.body).into_owned();
    body.split("\r\nPOST /api/data/v9.2/accounts?$select=accountid HTTP/1.1\r\n")
        .skip(1)
        .map(|op| {
            let json = op.split("\r\n\r\n").nth(1).unwrap();
            serde_json::from_str(json.split("\r\n--").next().unwrap()).unwrap()
        })
        .collect()
}

/// A `$batch` answer with one 204 per operation.
fn ok_batch_of(base: &str, n: usize) -> String {
    let mut s = String::from(
        "--batchresponse_a\r\nContent-Type: multipart/mixed; boundary=changesetresponse_b\r\n\r\n",
    );
    for i in 1..=n {
        s.push_str(&format!(
            "--changesetresponse_b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {i}\r\n\r\n\
HTTP/1.1 204 No Content\r\nOData-EntityId: {base}/api/data/v9.2/opportunities(49b0be2e-d01c-ed11-b83e-{i:012})\r\n\r\n\r\n"
        ));
    }
    s.push_str("--changesetresponse_b--\r\n--batchresponse_a--\r\n");
    s
}

async fn mount_ok_batch(server: &MockServer, n: usize) {
    Mock::given(method("POST"))
        .and(path(format!("{API}/$batch")))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            ok_batch_of(&server.uri(), n),
            "multipart/mixed; boundary=batchresponse_a",
        ))
        .mount(server)
        .await;
}

fn with_customer(referral: &str, c: &CustomerRef) -> RecordWrite {
    let mut w = write(referral, json!({"name": referral}));
    w.customer = Some(c.clone());
    w
}

fn named(name: &str, postal: Option<&str>) -> CustomerRef {
    CustomerRef {
        name: name.into(),
        postal_code: postal.map(Into::into),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_missing_customer_account_is_created_once_and_bound() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param(
            "$filter",
            "(name eq 'Contoso''s Bakery' and address1_postalcode eq '98052')",
        ))
        .and(query_param("$select", ACCOUNT_SELECT))
        .and(query_param("$orderby", "createdon asc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/accounts")))
        .and(header("Content-Type", "application/json"))
        .and(header("Prefer", "return=representation"))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            json!({"@odata.etag": "W/\"1\"", "accountid": "78914942-34cb-ed11-b596-0022481d68cd"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/$batch")))
        .and(body_string_contains(
            r#""customerid_account@odata.bind":"/accounts(78914942-34cb-ed11-b596-0022481d68cd)""#,
        ))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            ok_batch(&server.uri()),
            "multipart/mixed; boundary=batchresponse_a",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let mut a = write("r1", json!({"name": "A"}));
    a.customer = Some(customer());
    let mut b = write("r2", json!({"name": "B"}));
    b.customer = Some(customer());
    let results = crm.upsert(&[a, b]).await.unwrap();
    assert!(results[0].outcome.is_ok(), "{:?}", results[0].outcome);

    let all = server.received_requests().await.unwrap();
    assert_eq!(
        account_creations(&all),
        vec![
            json!({"name": "Contoso's Bakery", "address1_line1": "1 Main St", "address1_city": "Seattle",
               "address1_stateorprovince": "WA", "address1_postalcode": "98052", "address1_country": "US"})
        ]
    );
}

#[tokio::test]
async fn one_query_finds_the_accounts_of_every_customer_of_a_call() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    let contoso = named("Contoso", Some("98052"));
    let fabrikam = named("Fabrikam ", None);
    let northwind = named("Northwind Traders", Some("10115"));
    // The service compares case-insensitively: a row in other case matches.
    let filter = "(name eq 'Contoso' and address1_postalcode eq '98052') \
        or (name eq 'Fabrikam' and address1_postalcode eq null) \
        or (name eq 'Northwind Traders' and address1_postalcode eq '10115') \
        or (name eq 'CONTOSO' and address1_postalcode eq '98052')";
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("$filter", filter))
        .and(query_param("$select", ACCOUNT_SELECT))
        .and(query_param("$orderby", "createdon asc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"accountid": "00000000-0000-0000-0000-00000000000f", "name": "fabrikam", "address1_postalcode": null, "createdon": "2020-01-01T00:00:00Z"},
            {"accountid": "00000000-0000-0000-0000-00000000000c", "name": "CONTOSO ", "address1_postalcode": "98052", "createdon": "2021-01-01T00:00:00Z"},
            {"accountid": "00000000-0000-0000-0000-0000000000f2", "name": "Fabrikam", "address1_postalcode": null, "createdon": "2022-01-01T00:00:00Z"}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/accounts")))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    mount_ok_batch(&server, 6).await;
    let contoso_upper = named("CONTOSO", Some("98052"));
    let writes = vec![
        with_customer("r1", &contoso),
        with_customer("r2", &fabrikam),
        with_customer("r3", &northwind),
        with_customer("r4", &contoso),
        with_customer("r5", &contoso_upper),
    ];
    let results = crm.upsert(&writes).await.unwrap();
    assert!(results.iter().all(|r| r.outcome.is_ok()), "{results:?}");

    let all = server.received_requests().await.unwrap();
    assert_eq!(account_lookups(&all).len(), 1);
    // The missing account travels with its only deal, in its change set.
    let batches = requests_to(&all, &format!("{API}/$batch"));
    assert_eq!(batches.len(), 1);
    assert_eq!(
        batch_account_creates(batches[0]),
        vec![json!({"name": "Northwind Traders", "address1_postalcode": "10115"})]
    );
    let c = "00000000-0000-0000-0000-00000000000c";
    assert_eq!(
        bound_accounts(batches[0]),
        [c, "00000000-0000-0000-0000-00000000000f", "$3", c, c]
            .map(|id| Some(id.to_owned()))
            .to_vec(),
        "the oldest match wins; a created account is bound by its Content-ID"
    );

    // The next call finds them all remembered.
    crm.upsert(&writes).await.unwrap();
    let all = server.received_requests().await.unwrap();
    assert_eq!(account_lookups(&all).len(), 1);
    assert_eq!(account_creations(&all).len(), 0);
}

#[tokio::test]
async fn lookups_fill_the_longest_url_and_new_accounts_travel_with_their_deals() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    let next = format!("{}{API}/accounts?$skiptoken=page2", server.uri());
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("$skiptoken", "page2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"accountid": "00000000-0000-0000-0000-000000000119", "name": "C0119"}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param_is_missing("$skiptoken"))
        .and(query_param_contains("$filter", "'C0119'"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{"accountid": "00000000-0000-0000-0000-000000000000", "name": "C0000"}],
            "@odata.nextLink": next
        })))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param_is_missing("$skiptoken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .mount(&server)
        .await;
    mount_ok_batch(&server, 1100).await;
    // A thousand and a hundred writes in one call, each of its own customer.
    let writes: Vec<RecordWrite> = (0..1100)
        .map(|i| with_customer(&format!("r{i}"), &named(&format!("C{i:04}"), None)))
        .collect();
    crm.upsert(&writes).await.unwrap();

    let all = server.received_requests().await.unwrap();
    let lookups: Vec<&Request> = account_lookups(&all)
        .into_iter()
        .filter(|r| query_of(r, "$skiptoken").is_none())
        .collect();
    // Each lookup as long as the Web API's 32 KB URL allows (less a margin):
    // 1,100 customers in three queries, not eleven.
    assert_eq!(lookups.len(), 3);
    let mut seen = vec![0; 1100];
    for (i, r) in lookups.iter().enumerate() {
        let len = r.url.as_str().len();
        assert!(len <= 32 * 1024, "lookup {i}: {len}");
        if i < 2 {
            assert!(len > 32 * 1024 - 400, "lookup {i} is not full: {len}");
        }
        let filter = query_of(r, "$filter").unwrap();
        for (n, count) in seen.iter_mut().enumerate() {
            if filter.contains(&format!("'C{n:04}'")) {
                *count += 1;
            }
        }
    }
    assert!(seen.iter().all(|c| *c == 1), "every customer in one lookup");
    // Both pages of the lookup naming C0119 were read: two accounts found;
    // the other 1,098 are created each in its deal's change set, none alone.
    assert_eq!(account_creations(&all).len(), 0);
    let batches = requests_to(&all, &format!("{API}/$batch"));
    let creates: Vec<usize> = batches
        .iter()
        .map(|r| {
            String::from_utf8_lossy(&r.body)
                .matches("\r\nPOST /api/data/v9.2/accounts?")
                .count()
        })
        .filter(|n| *n > 0)
        .collect();
    let mut expected = vec![100; 11];
    expected[0] = 99;
    expected[1] = 99;
    assert_eq!(creates, expected);
    // The opportunities still go in batches of `batch_size` (100).
    let upserts: Vec<usize> = batches
        .iter()
        .map(|r| bound_accounts(r).len())
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(upserts, vec![100; 11]);
    let bound: Vec<String> = batches
        .iter()
        .flat_map(|r| bound_accounts(r))
        .map(Option::unwrap)
        .collect();
    assert_eq!(bound[0], "00000000-0000-0000-0000-000000000000");
    assert_eq!(bound[119], "00000000-0000-0000-0000-000000000119");
    assert_eq!(bound.iter().filter(|b| b.starts_with('$')).count(), 1098);
}

#[tokio::test]
async fn a_failed_account_creation_fails_only_that_customers_records() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"accountid": "00000000-0000-0000-0000-00000000000c", "name": "Contoso", "address1_postalcode": "98052"}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/accounts")))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": {"code": "0x80044331", "message": "A validation error occurred."}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    mount_ok_batch(&server, 2).await;
    let contoso = named("Contoso", Some("98052"));
    let bad = named("Bad Name", None);
    let results = crm
        .upsert(&[
            with_customer("r1", &contoso),
            with_customer("r2", &bad),
            with_customer("r3", &contoso),
            with_customer("r4", &bad),
        ])
        .await
        .unwrap();
    assert!(results[0].outcome.is_ok() && results[2].outcome.is_ok());
    for r in [&results[1], &results[3]] {
        let e = r.outcome.as_ref().unwrap_err();
        assert!(e.to_string().contains("validation error"), "{e}");
    }
    let all = server.received_requests().await.unwrap();
    let batches = requests_to(&all, &format!("{API}/$batch"));
    assert_eq!(batches.len(), 1);
    assert_eq!(
        bound_accounts(batches[0]).len(),
        2,
        "only the two good records"
    );
}

#[tokio::test]
async fn accounts_are_found_by_duns_first_when_configured() {
    let server = MockServer::start().await;
    mount_auth_and_metadata(&server).await;
    let mut s = settings(&server);
    s.account_match = AccountMatch::DunsThenNamePostalCode;
    let crm = DynamicsCrm::with_options(&s, spec(), options()).unwrap();
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param(
            "$filter",
            "new_dunsnumber eq '123456789' or (name eq 'Contoso''s Bakery' and address1_postalcode eq '98052')",
        ))
        .and(query_param("$select", ACCOUNT_SELECT_DUNS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            // Older, but matched by name only: the DUNS match wins.
            {"accountid": "bbbbbbbb-34cb-ed11-b596-0022481d68cd", "name": "Contoso's Bakery", "address1_postalcode": "98052", "new_dunsnumber": null},
            {"accountid": "aaaaaaaa-34cb-ed11-b596-0022481d68cd", "name": "Contoso Bakery Inc", "address1_postalcode": "10115", "new_dunsnumber": "123456789"}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/$batch")))
        .and(body_string_contains(
            r#""customerid_account@odata.bind":"/accounts(aaaaaaaa-34cb-ed11-b596-0022481d68cd)""#,
        ))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            ok_batch(&server.uri()),
            "multipart/mixed; boundary=batchresponse_a",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let mut a = write("r1", json!({"name": "A"}));
    a.customer = Some(customer());
    let results = crm.upsert(&[a]).await.unwrap();
    assert!(results[0].outcome.is_ok(), "{:?}", results[0].outcome);
}

#[tokio::test]
async fn without_the_duns_column_accounts_are_matched_by_name_and_postal_code() {
    let server = MockServer::start().await;
    mount_auth_and_metadata(&server).await;
    let mut s = settings(&server);
    s.account_match = AccountMatch::DunsThenNamePostalCode;
    let crm = DynamicsCrm::with_options(&s, spec(), options()).unwrap();
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("$select", ACCOUNT_SELECT_DUNS))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "code": "0x80060888",
            "message": "Could not find a property named 'new_dunsnumber' on type 'Microsoft.Dynamics.CRM.account'."
        }})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("$select", ACCOUNT_SELECT))
        .and(query_param(
            "$filter",
            "(name eq 'Contoso''s Bakery' and address1_postalcode eq '98052') \
             or (name eq 'Fabrikam' and address1_postalcode eq null)",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"accountid": "cccccccc-34cb-ed11-b596-0022481d68cd", "name": "contoso's bakery", "address1_postalcode": "98052"}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    mount_ok_batch(&server, 3).await;
    let fabrikam = CustomerRef {
        name: "Fabrikam".into(),
        duns: Some("987654321".into()),
        ..Default::default()
    };
    let results = crm
        .upsert(&[
            with_customer("r1", &customer()),
            with_customer("r2", &fabrikam),
        ])
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.outcome.is_ok()), "{results:?}");
    let all = server.received_requests().await.unwrap();
    let batches = requests_to(&all, &format!("{API}/$batch"));
    assert_eq!(
        bound_accounts(batches[0]),
        vec![
            Some("cccccccc-34cb-ed11-b596-0022481d68cd".to_owned()),
            Some("$2".to_owned())
        ]
    );
    // The account is created without the missing column.
    assert_eq!(account_creations(&all), Vec::<Value>::new());
    assert_eq!(
        batch_account_creates(batches[0]),
        vec![json!({"name": "Fabrikam"})]
    );
    // Once with the DUNS column, once without.
    assert_eq!(account_lookups(&all).len(), 2);
}

#[tokio::test]
async fn with_account_match_none_no_account_is_looked_up() {
    let server = MockServer::start().await;
    mount_auth_and_metadata(&server).await;
    let mut s = settings(&server);
    s.account_match = AccountMatch::None;
    let crm = DynamicsCrm::with_options(&s, spec(), options()).unwrap();
    Mock::given(method("POST"))
        .and(path(format!("{API}/$batch")))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            ok_batch(&server.uri()),
            "multipart/mixed; boundary=batchresponse_a",
        ))
        .mount(&server)
        .await;
    let mut a = write("r1", json!({"name": "A"}));
    a.customer = Some(customer());
    crm.upsert(&[a]).await.unwrap();
    let all = server.received_requests().await.unwrap();
    assert!(requests_to(&all, &format!("{API}/accounts")).is_empty());
    let batch = requests_to(&all, &format!("{API}/$batch"))[0];
    assert!(!String::from_utf8_lossy(&batch.body).contains("customerid_account"));
}

// ---- closing --------------------------------------------------------------

async fn mount_state(server: &MockServer, referral: &str, state: i64) {
    Mock::given(method("GET"))
        .and(path(format!(
            "{API}/opportunities(new_referralid='{referral}')"
        )))
        .and(query_param("$select", "opportunityid,statecode,statuscode"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.etag": "W/\"3\"", "opportunityid": "49b0be2e-d01c-ed11-b83e-000d3a572421",
            "statecode": state, "statuscode": 1
        })))
        .mount(server)
        .await;
}

#[tokio::test]
async fn won_and_lost_use_the_close_actions_with_the_documented_bodies() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    mount_state(&server, "won-1", 0).await;
    mount_state(&server, "lost-1", 0).await;
    for action in ["WinOpportunity", "LoseOpportunity"] {
        Mock::given(method("POST"))
            .and(path(format!("{API}/{action}")))
            .and(header("Content-Type", "application/json"))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("PATCH"))
        .and(path(format!(
            "{API}/opportunities(49b0be2e-d01c-ed11-b83e-000d3a572421)"
        )))
        .and(header("If-Match", "*"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let results = crm
        .close(vec![
            CloseRequest {
                key: RecordKey::Referral("won-1".into()),
                outcome: CloseOutcome::Won,
                fields: json!({"statecode": 1, "statuscode": 3})
                    .as_object()
                    .unwrap()
                    .clone(),
                reason: None,
            },
            CloseRequest {
                key: RecordKey::Referral("lost-1".into()),
                outcome: CloseOutcome::Lost,
                fields: json!({"statecode": 2, "statuscode": 5, "new_lossreason": "Competitor"})
                    .as_object()
                    .unwrap()
                    .clone(),
                reason: Some("Declined: customer chose a competitor".into()),
            },
        ])
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.outcome.is_ok()), "{results:?}");

    let all = server.received_requests().await.unwrap();
    let body = |p: &str| -> Value {
        serde_json::from_slice(&requests_to(&all, &format!("{API}/{p}"))[0].body).unwrap()
    };
    assert_eq!(
        body("WinOpportunity"),
        serde_json::from_str::<Value>(r#"{"Status":3,"OpportunityClose":{"subject":"Won Opportunity","opportunityid@odata.bind":"/opportunities(49b0be2e-d01c-ed11-b83e-000d3a572421)"}}"#).unwrap()
    );
    assert_eq!(
        body("LoseOpportunity"),
        serde_json::from_str::<Value>(r#"{"Status":5,"OpportunityClose":{"subject":"Declined: customer chose a competitor","opportunityid@odata.bind":"/opportunities(49b0be2e-d01c-ed11-b83e-000d3a572421)"}}"#).unwrap()
    );
    // The reason column is written before the row becomes read-only.
    assert_eq!(
        body("opportunities(49b0be2e-d01c-ed11-b83e-000d3a572421)"),
        json!({"new_lossreason": "Competitor"})
    );
    let patch_at = all
        .iter()
        .position(|r| r.method == wiremock::http::Method::PATCH)
        .unwrap();
    let lose_at = all
        .iter()
        .position(|r| r.url.path().ends_with("LoseOpportunity"))
        .unwrap();
    assert!(patch_at < lose_at);
}

#[tokio::test]
async fn closed_deals_are_never_reopened_and_a_replayed_close_is_a_no_op() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    mount_state(&server, "already-won", 1).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .named("no close action")
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .named("no reopen")
        .mount(&server)
        .await;
    let close = |outcome| CloseRequest {
        key: RecordKey::Referral("already-won".into()),
        outcome,
        fields: Default::default(),
        reason: None,
    };
    let results = crm
        .close(vec![close(CloseOutcome::Won), close(CloseOutcome::Lost)])
        .await
        .unwrap();
    let ok = results[0].outcome.as_ref().unwrap();
    assert_eq!(ok.crm_id, "49b0be2e-d01c-ed11-b83e-000d3a572421");
    match &results[1].outcome {
        Err(e @ CrmError::Record { code, .. }) => {
            assert_eq!(code, "AlreadyClosed");
            assert_eq!(e.directive(), RetryDirective::Permanent);
            assert!(e.to_string().contains("never reopened"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

// ---- metadata -------------------------------------------------------------

#[tokio::test]
async fn the_metadata_check_names_every_missing_column_key_and_option() {
    let server = MockServer::start().await;
    mount_auth_and_metadata(&server).await;
    let mut s = settings(&server);
    s.account_match = AccountMatch::DunsThenNamePostalCode;
    let crm = DynamicsCrm::with_options(&s, spec(), options()).unwrap();
    let meta = format!("{API}/EntityDefinitions(LogicalName='opportunity')");
    Mock::given(method("GET"))
        .and(path(format!("{meta}/Attributes")))
        .and(query_param("$select", "LogicalName,AttributeType"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"LogicalName": "name", "AttributeType": "String"},
            {"LogicalName": "estimatedvalue", "AttributeType": "Money"},
            {"LogicalName": "new_referralid", "AttributeType": "String"},
            {"LogicalName": "statecode", "AttributeType": "State"},
            {"LogicalName": "statuscode", "AttributeType": "Status"},
            {"LogicalName": "opportunityid", "AttributeType": "Uniqueidentifier"}
        ]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{meta}/Keys")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"LogicalName": "new_other", "KeyAttributes": ["name"], "EntityKeyIndexStatus": "Active"}
        ]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "{meta}/Attributes(LogicalName='statecode')/Microsoft.Dynamics.CRM.StateAttributeMetadata"
        )))
        .and(query_param("$expand", "OptionSet($select=Options)"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "LogicalName": "statecode",
            "OptionSet": {"Options": [{"Value": 0}, {"Value": 1}, {"Value": 2}]}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "{meta}/Attributes(LogicalName='statuscode')/Microsoft.Dynamics.CRM.StatusAttributeMetadata"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "LogicalName": "statuscode",
            "OptionSet": {"Options": [{"Value": 1, "State": 0}, {"Value": 2, "State": 0}, {"Value": 4, "State": 2}]}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "{API}/EntityDefinitions(LogicalName='account')/Attributes(LogicalName='new_dunsnumber')"
        )))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"error":{"code":"0x80040217","message":"Could not find attribute"}}),
        ))
        .mount(&server)
        .await;

    let problems = crm.check_metadata().await.unwrap();
    let items: Vec<&str> = problems.iter().map(|p| p.item.as_str()).collect();
    assert_eq!(
        items,
        vec![
            "opportunity.new_syncwithpartnercenter",
            "opportunity.estimatedclosedate",
            "opportunity.new_referralid (alternate key)",
            "opportunity.statuscode = 3",
            "account.new_dunsnumber",
        ],
        "{problems:#?}"
    );
    assert!(problems[0].message.contains("no column"));
    // A missing DUNS column is a note (matching falls back to name and postal code).
    let notes: Vec<&str> = problems
        .iter()
        .filter(|p| p.severity == Severity::Note)
        .map(|p| p.item.as_str())
        .collect();
    assert_eq!(notes, ["account.new_dunsnumber"]);

    // What the check learnt is kept: the adapter neither reads nor writes the column.
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .and(query_param("$select", ACCOUNT_SELECT))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .expect(1)
        .mount(&server)
        .await;
    mount_ok_batch(&server, 2).await;
    let results = crm
        .upsert(&[with_customer("r1", &customer())])
        .await
        .unwrap();
    assert!(results[0].outcome.is_ok(), "{results:?}");
    let all = server.received_requests().await.unwrap();
    assert_eq!(account_lookups(&all).len(), 1, "no lookup was refused");
    let batches = requests_to(&all, &format!("{API}/$batch"));
    let created = batch_account_creates(batches[0]);
    assert!(created[0].get("new_dunsnumber").is_none(), "{created:?}");
}

#[tokio::test]
async fn a_complete_mapping_passes_the_metadata_check() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    let meta = format!("{API}/EntityDefinitions(LogicalName='opportunity')");
    let attrs: Vec<Value> = SELECT
        .split(',')
        .map(|a| json!({"LogicalName": a, "AttributeType": "String"}))
        .collect();
    Mock::given(method("GET"))
        .and(path(format!("{meta}/Attributes")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "value": attrs })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{meta}/Keys")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"LogicalName": "new_referralkey", "KeyAttributes": ["new_referralid"], "EntityKeyIndexStatus": "Active"}
        ]})))
        .mount(&server)
        .await;
    assert_eq!(crm.check_metadata().await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_missing_account_travels_with_its_deal_and_a_refused_one_fails_only_that_deal() {
    let server = MockServer::start().await;
    let crm = crm(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .expect(2)
        .mount(&server)
        .await;
    let base = server.uri();
    let http = |id: u32, http: String| {
        format!(
            "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {id}\r\n\r\n{http}\r\n"
        )
    };
    let account = |id: u32, n: u32| {
        http(
            id,
            format!(
                "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n{{\"accountid\":\"aaaaaaaa-0000-0000-0000-00000000000{n}\"}}"
            ),
        )
    };
    let deal = |id: u32| {
        http(
            id,
            format!(
                "HTTP/1.1 204 No Content\r\nOData-EntityId: {base}/api/data/v9.2/opportunities(49b0be2e-d01c-ed11-b83e-00000000000{id})\r\n\r\n"
            ),
        )
    };
    let ok_set = |name: &str, parts: [String; 2]| {
        format!(
            "--batchresponse_a\r\nContent-Type: multipart/mixed; boundary={name}\r\n\r\n--{name}\r\n{}--{name}\r\n{}--{name}--\r\n",
            parts[0], parts[1]
        )
    };
    // Change sets 1 and 3 succeed; the second fails as a whole: one answer.
    let answer = format!(
        "{}--batchresponse_a\r\n{}{}--batchresponse_a--\r\n",
        ok_set("cs1", [account(1, 1), deal(2)]),
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n{\"error\":{\"code\":\"0x80044331\",\"message\":\"A validation error occurred.\"}}\r\n",
        ok_set("cs3", [account(5, 3), deal(6)]),
    );
    Mock::given(method("POST"))
        .and(path(format!("{API}/$batch")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(answer, "multipart/mixed; boundary=batchresponse_a"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (a, b, c) = (
        named("Alpine Ski House", Some("80202")),
        named("Bad Name", None),
        named("Coho Winery", Some("94110")),
    );
    let results = crm
        .upsert(&[
            with_customer("r1", &a),
            with_customer("r2", &b),
            with_customer("r3", &c),
        ])
        .await
        .unwrap();
    assert!(results[0].outcome.is_ok(), "{:?}", results[0].outcome);
    assert!(results[2].outcome.is_ok(), "{:?}", results[2].outcome);
    let e = results[1].outcome.as_ref().unwrap_err();
    assert!(e.to_string().contains("validation error"), "{e}");

    let all = server.received_requests().await.unwrap();
    assert!(
        account_creations(&all).is_empty(),
        "no account POSTed alone"
    );
    let batches = requests_to(&all, &format!("{API}/$batch"));
    assert_eq!(batches.len(), 1, "accounts and deals in one $batch");
    let body = String::from_utf8_lossy(&batches[0].body).into_owned();
    // Three change sets, each the account create (Content-ID 2k-1) then
    // the deal binding it (`$2k-1`).
    assert_eq!(body.matches("boundary=changeset_").count(), 3, "{body}");
    let names: Vec<Value> = batch_account_creates(batches[0])
        .into_iter()
        .map(|v| v["name"].clone())
        .collect();
    assert_eq!(
        names,
        [
            json!("Alpine Ski House"),
            json!("Bad Name"),
            json!("Coho Winery")
        ]
    );
    assert_eq!(
        bound_accounts(batches[0]),
        ["$1", "$3", "$5"].map(|id| Some(id.to_owned())).to_vec()
    );
    for k in 1..=6 {
        assert!(body.contains(&format!("Content-ID: {k}\r\n")), "{body}");
    }

    // The created accounts are remembered; the refused one is tried again.
    Mock::given(method("POST"))
        .and(path(format!("{API}/$batch")))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            ok_batch_of(&server.uri(), 4),
            "multipart/mixed; boundary=batchresponse_a",
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    crm.upsert(&[
        with_customer("r1", &a),
        with_customer("r2", &b),
        with_customer("r3", &c),
    ])
    .await
    .unwrap();
    let all = server.received_requests().await.unwrap();
    let lookups = account_lookups(&all);
    let again = query_of(lookups[1], "$filter").unwrap();
    assert_eq!(
        again,
        "(name eq 'Bad Name' and address1_postalcode eq null)"
    );
    let batches = requests_to(&all, &format!("{API}/$batch"));
    assert_eq!(
        bound_accounts(batches[1]),
        [
            "aaaaaaaa-0000-0000-0000-000000000001",
            "$2",
            "aaaaaaaa-0000-0000-0000-000000000003"
        ]
        .map(|id| Some(id.to_owned()))
        .to_vec()
    );
}

#[tokio::test]
async fn contacts_are_found_by_email_under_the_account_or_created_and_bound() {
    use cosell_sync::crm::ContactRef;
    const ACCOUNT: &str = "00000000-0000-0000-0000-00000000000c";
    const OLD: &str = "00000000-0000-0000-0000-0000000000a1";
    const NEW: &str = "00000000-0000-0000-0000-0000000000b2";
    let server = MockServer::start().await;
    let crm = crm(&server).await.with_contact_records(true);
    Mock::given(method("GET"))
        .and(path(format!("{API}/accounts")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"accountid": ACCOUNT, "name": "Contoso", "address1_postalcode": "98052", "createdon": "2021-01-01T00:00:00Z"}
        ]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/contacts")))
        .and(query_param(
            "$filter",
            format!(
                "(_parentcustomerid_value eq {ACCOUNT} and emailaddress1 eq 'jo@contoso.example') \
                 or (_parentcustomerid_value eq {ACCOUNT} and emailaddress1 eq 'new@contoso.example')"
            ),
        ))
        .and(query_param(
            "$select",
            "contactid,emailaddress1,_parentcustomerid_value,createdon",
        ))
        .and(query_param("$orderby", "createdon asc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"contactid": OLD, "emailaddress1": "JO@contoso.example", "_parentcustomerid_value": ACCOUNT, "createdon": "2022-01-01T00:00:00Z"}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/contacts")))
        .and(header("Prefer", "return=representation"))
        .and(wiremock::matchers::body_partial_json(
            json!({"lastname": "New", "firstname": "Jo",
            "emailaddress1": "new@contoso.example",
            "parentcustomerid_account@odata.bind": format!("/accounts({ACCOUNT})")}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"contactid": NEW})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/$batch")))
        .and(body_string_contains(format!(
            r#""parentcontactid@odata.bind":"/contacts({OLD})""#
        )))
        .and(body_string_contains(format!(
            r#""parentcontactid@odata.bind":"/contacts({NEW})""#
        )))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            ok_batch_of(&server.uri(), 2),
            "multipart/mixed; boundary=batchresponse_a",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let contoso = |email: &str, last: &str| CustomerRef {
        contact: Some(ContactRef {
            first_name: Some("Jo".into()),
            last_name: last.into(),
            email: Some(email.into()),
            phone: None,
        }),
        ..named("Contoso", Some("98052"))
    };
    let results = crm
        .upsert(&[
            with_customer("r1", &contoso("jo@contoso.example", "Old")),
            with_customer("r2", &contoso("new@contoso.example", "New")),
        ])
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.outcome.is_ok()), "{results:?}");
}
