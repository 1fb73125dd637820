//! Delegated sign-in: refresh-token rotation, the single refresh on 401, the
//! login pause after invalid_grant, the device code flow, and no secret in logs.

mod pc_support;

use std::sync::Arc;
use std::time::Duration;

use cosell_sync::http::{RetryDirective, Retryable};
use cosell_sync::partner_center::{
    DeviceCodePrompt, MemoryRefreshTokenStore, PartnerCenterError, RefreshTokenStore,
    device_code_login_with,
};
use pc_support::*;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const DEVICE_CODE: &str = "DAQABAAEAAAD--DLA3VO7QrddgJg7WevrQvHwZ8bLX_device_code_secret";

async fn mount_referral(server: &MockServer, id: &str) {
    Mock::given(method("GET"))
        .and(path(format!("{REFERRALS}/{id}")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(fixture_json("referral_new_pending.json")),
        )
        .mount(server)
        .await;
}

#[tokio::test]
async fn the_refresh_grant_is_sent_and_the_rotated_token_is_saved() {
    let server = MockServer::start().await;
    mount_token_ok(&server, ACCESS_TOKEN, Some(REFRESH_TOKEN_ROTATED)).await;
    mount_referral(&server, "r1").await;
    let store = Arc::new(MemoryRefreshTokenStore::new(Some(REFRESH_TOKEN)));
    let client = client_with(&server, store.clone());

    client.get("r1").await.unwrap();
    client.get("r1").await.unwrap();

    let token_calls = requests_to(&server, "POST", TOKEN_PATH).await;
    assert_eq!(token_calls.len(), 1, "the access token is cached");
    let form = form(&token_calls[0]);
    assert_eq!(
        form,
        vec![
            ("grant_type".to_owned(), "refresh_token".to_owned()),
            (
                "client_id".to_owned(),
                "11111111-2222-3333-4444-555555555555".to_owned()
            ),
            ("refresh_token".to_owned(), REFRESH_TOKEN.to_owned()),
            (
                "scope".to_owned(),
                "https://api.partner.microsoft.com/.default offline_access".to_owned()
            ),
        ]
    );
    assert_eq!(
        header(&token_calls[0], "content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(store.current().as_deref(), Some(REFRESH_TOKEN_ROTATED));
    assert_eq!(store.saves(), 1);
}

#[tokio::test(start_paused = true)]
async fn access_tokens_are_refreshed_shortly_before_they_expire() {
    let (server, client, store) = setup().await;
    mount_referral(&server, "r1").await;
    client.get("r1").await.unwrap();
    tokio::time::advance(Duration::from_secs(3599 - 121)).await;
    client.get("r1").await.unwrap();
    assert_eq!(requests_to(&server, "POST", TOKEN_PATH).await.len(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    client.get("r1").await.unwrap();
    assert_eq!(requests_to(&server, "POST", TOKEN_PATH).await.len(), 2);
    assert_eq!(store.saves(), 0, "no rotation, nothing to save");
}

#[tokio::test]
async fn a_401_refreshes_once_and_retries_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(script(vec![
            ResponseTemplate::new(200).set_body_json(token_body(ACCESS_TOKEN, None)),
            ResponseTemplate::new(200).set_body_json(token_body(ACCESS_TOKEN_2, None)),
        ]))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{REFERRALS}/r1")))
        .respond_with(script(vec![
            ResponseTemplate::new(401)
                .set_body_raw(fixture("error_unauthorized.json"), "application/json"),
            ResponseTemplate::new(200).set_body_json(fixture_json("referral_new_pending.json")),
        ]))
        .mount(&server)
        .await;
    let client = client_with(
        &server,
        Arc::new(MemoryRefreshTokenStore::new(Some(REFRESH_TOKEN))),
    );
    client.get("r1").await.unwrap();

    let gets = requests_to(&server, "GET", &format!("{REFERRALS}/r1")).await;
    assert_eq!(gets.len(), 2);
    assert_eq!(
        header(&gets[0], "authorization"),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
    assert_eq!(
        header(&gets[1], "authorization"),
        Some(format!("Bearer {ACCESS_TOKEN_2}").as_str())
    );
    assert_eq!(requests_to(&server, "POST", TOKEN_PATH).await.len(), 2);
}

#[tokio::test]
async fn a_persistent_401_is_never_a_loop() {
    let (server, client, _) = setup().await;
    Mock::given(method("GET"))
        .and(path(format!("{REFERRALS}/r1")))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_raw(fixture("error_unauthorized.json"), "application/json"),
        )
        .mount(&server)
        .await;
    let err = client.get("r1").await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.directive(), RetryDirective::Operator);
    assert_eq!(
        requests_to(&server, "GET", &format!("{REFERRALS}/r1"))
            .await
            .len(),
        2
    );
    assert_eq!(requests_to(&server, "POST", TOKEN_PATH).await.len(), 2);
}

#[tokio::test]
async fn invalid_grant_pauses_partner_center_until_a_new_login_is_saved() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .and(body_string_contains("REFRESH-TOKEN-ORIGINAL"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_raw(fixture("oauth_invalid_grant.json"), "application/json"),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .and(body_string_contains("REFRESH-TOKEN-ROTATED"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(ACCESS_TOKEN, None)))
        .mount(&server)
        .await;
    mount_referral(&server, "r1").await;
    let store = Arc::new(MemoryRefreshTokenStore::new(Some(REFRESH_TOKEN)));
    let client = client_with(&server, store.clone());

    assert!(!client.paused_for_login());
    let err = client.get("r1").await.unwrap_err();
    assert!(err.is_login_required(), "{err:?}");
    assert!(
        err.to_string()
            .contains("run `cosell-sync login partner-center`"),
        "{err}"
    );
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    assert_eq!(err.directive(), RetryDirective::Operator);
    assert!(client.paused_for_login());

    // Later calls fail fast: no token request, no API request.
    for _ in 0..3 {
        let err = client.get("r1").await.unwrap_err();
        assert!(err.is_login_required());
    }
    assert_eq!(requests_to(&server, "POST", TOKEN_PATH).await.len(), 1);
    assert!(
        requests_to(&server, "GET", &format!("{REFERRALS}/r1"))
            .await
            .is_empty()
    );

    // `cosell-sync login partner-center` saves a new refresh token.
    store
        .save(&SecretString::from(REFRESH_TOKEN_ROTATED))
        .unwrap();
    assert!(!client.paused_for_login());
    client.get("r1").await.unwrap();
    assert_eq!(requests_to(&server, "POST", TOKEN_PATH).await.len(), 2);
    assert!(!client.paused_for_login());
}

#[tokio::test]
async fn no_stored_refresh_token_asks_for_a_login_without_calling_anyone() {
    let server = MockServer::start().await;
    let client = client_with(&server, Arc::new(MemoryRefreshTokenStore::new(None)));
    let err = client.get("r1").await.unwrap_err();
    assert!(err.is_login_required(), "{err:?}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

async fn device_code_server(expires_in: u64, polls: Vec<ResponseTemplate>) -> MockServer {
    let server = MockServer::start().await;
    let mut code = fixture_json("device_code.json");
    code["expires_in"] = json!(expires_in);
    Mock::given(method("POST"))
        .and(path(DEVICE_CODE_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(code))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(script(polls))
        .mount(&server)
        .await;
    server
}

fn oauth(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(json!({"error": code,
        "error_description": format!("AADSTS70016: {code}.\r\nTrace ID: 1"), "error_codes": [70016]}))
}

#[tokio::test(start_paused = true)]
async fn device_code_login_polls_through_pending_and_slow_down() {
    let server = device_code_server(
        900,
        vec![
            oauth("authorization_pending"),
            oauth("slow_down"),
            oauth("authorization_pending"),
            ResponseTemplate::new(200).set_body_json(token_body(ACCESS_TOKEN, Some(REFRESH_TOKEN))),
        ],
    )
    .await;
    let mut shown: Option<DeviceCodePrompt> = None;
    let started = tokio::time::Instant::now();
    let refresh = device_code_login_with(&http(), &options(&server), |p| shown = Some(p.clone()))
        .await
        .unwrap();
    assert_eq!(refresh.expose_secret(), REFRESH_TOKEN);
    // 5s, 5s, then 10s twice after slow_down.
    assert_eq!(started.elapsed().as_secs(), 5 + 5 + 10 + 10);

    let prompt = shown.unwrap();
    assert_eq!(prompt.verification_uri, "https://microsoft.com/devicelogin");
    assert_eq!(prompt.user_code, "FQK5HW3UF");
    assert_eq!(prompt.expires_in, Duration::from_secs(900));
    assert!(prompt.message.unwrap().contains("FQK5HW3UF"));

    let device = &requests_to(&server, "POST", DEVICE_CODE_PATH).await[0];
    assert_eq!(
        form(device),
        vec![
            (
                "client_id".to_owned(),
                "11111111-2222-3333-4444-555555555555".to_owned()
            ),
            (
                "scope".to_owned(),
                "https://api.partner.microsoft.com/.default offline_access".to_owned()
            ),
        ]
    );
    let polls = requests_to(&server, "POST", TOKEN_PATH).await;
    assert_eq!(polls.len(), 4);
    assert_eq!(
        form_value(&polls[0], "grant_type").as_deref(),
        Some("urn:ietf:params:oauth:grant-type:device_code")
    );
    assert_eq!(
        form_value(&polls[0], "device_code").as_deref(),
        Some(DEVICE_CODE)
    );
    assert_eq!(
        form_value(&polls[0], "client_id").as_deref(),
        Some("11111111-2222-3333-4444-555555555555")
    );
}

#[tokio::test(start_paused = true)]
async fn device_code_login_stops_on_expired_token() {
    let server = device_code_server(
        900,
        vec![oauth("authorization_pending"), oauth("expired_token")],
    )
    .await;
    let err = device_code_login_with(&http(), &options(&server), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, PartnerCenterError::DeviceCodeExpired),
        "{err:?}"
    );
    assert!(err.to_string().contains("cosell-sync login partner-center"));
    assert_eq!(requests_to(&server, "POST", TOKEN_PATH).await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn device_code_login_stops_when_the_code_runs_out_locally() {
    let server = device_code_server(12, vec![oauth("authorization_pending")]).await;
    let started = tokio::time::Instant::now();
    let err = device_code_login_with(&http(), &options(&server), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, PartnerCenterError::DeviceCodeExpired),
        "{err:?}"
    );
    assert_eq!(requests_to(&server, "POST", TOKEN_PATH).await.len(), 2);
    assert_eq!(started.elapsed().as_secs(), 15);
}

#[tokio::test(start_paused = true)]
async fn device_code_login_stops_on_access_denied() {
    for code in ["access_denied", "authorization_declined"] {
        let server = device_code_server(900, vec![oauth(code)]).await;
        let err = device_code_login_with(&http(), &options(&server), |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(&err, PartnerCenterError::LoginDeclined(c) if c == code),
            "{err:?}"
        );
        assert_eq!(err.directive(), RetryDirective::Operator);
        assert_eq!(requests_to(&server, "POST", TOKEN_PATH).await.len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn device_code_login_keeps_polling_through_a_server_hiccup() {
    let server = device_code_server(
        900,
        vec![
            ResponseTemplate::new(503),
            ResponseTemplate::new(200).set_body_json(token_body(ACCESS_TOKEN, Some(REFRESH_TOKEN))),
        ],
    )
    .await;
    let refresh = device_code_login_with(&http(), &options(&server), |_| {})
        .await
        .unwrap();
    assert_eq!(refresh.expose_secret(), REFRESH_TOKEN);
}

#[tokio::test(start_paused = true)]
async fn a_login_without_offline_access_is_reported() {
    let server = device_code_server(
        900,
        vec![ResponseTemplate::new(200).set_body_json(token_body(ACCESS_TOKEN, None))],
    )
    .await;
    let err = device_code_login_with(&http(), &options(&server), |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("offline_access"), "{err}");
}
