//! No token or secret ever appears in the logs. Alone in its own test binary:
//! tracing's per-callsite interest cache is process-wide, so events from
//! tests running on other threads could hide events from this capture.

mod pc_support;

use std::sync::Arc;
use std::time::Duration;

use cosell_sync::partner_center::{
    MemoryRefreshTokenStore, PartnerCenterError, device_code_login_with,
};
use pc_support::*;
use secrecy::ExposeSecret;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const DEVICE_CODE: &str = "DAQABAAEAAAD--DLA3VO7QrddgJg7WevrQvHwZ8bLX_device_code_secret";

async fn device_code_server(polls: Vec<ResponseTemplate>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DEVICE_CODE_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture_json("device_code.json")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(script(polls))
        .mount(&server)
        .await;
    server
}

#[tokio::test(start_paused = true)]
async fn no_token_or_secret_ever_appears_in_the_logs() {
    let (_guard, logs) = capture_logs();

    // Sign-in with a device code.
    let server = device_code_server(vec![
        ResponseTemplate::new(400).set_body_json(json!({"error": "authorization_pending"})),
        ResponseTemplate::new(200).set_body_json(token_body(ACCESS_TOKEN, Some(REFRESH_TOKEN))),
    ])
    .await;
    let refresh = device_code_login_with(&http(), &options(&server), |_| {})
        .await
        .unwrap();
    let store = Arc::new(MemoryRefreshTokenStore::new(Some(refresh.expose_secret())));

    // Then work: a rotation, a 401 with a refresh, a 429, a 412 and invalid_grant.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(script(vec![
            ResponseTemplate::new(200)
                .set_body_json(token_body(ACCESS_TOKEN, Some(REFRESH_TOKEN_ROTATED))),
            ResponseTemplate::new(200).set_body_json(token_body(ACCESS_TOKEN_2, None)),
            ResponseTemplate::new(400)
                .set_body_raw(fixture("oauth_invalid_grant.json"), "application/json"),
        ]))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{REFERRALS}/r1")))
        .respond_with(script(vec![
            ResponseTemplate::new(401)
                .set_body_raw(fixture("error_unauthorized.json"), "application/json"),
            ResponseTemplate::new(429).insert_header("Retry-After", "1"),
            ResponseTemplate::new(200).set_body_json(fixture_json("referral_new_pending.json")),
        ]))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("{REFERRALS}/r1")))
        .respond_with(ResponseTemplate::new(412).set_body_raw(
            fixture("error_precondition_failed.json"),
            "application/json",
        ))
        .mount(&server)
        .await;
    let client = client_with(&server, store.clone());
    let referral = client.get("r1").await.unwrap();
    let err = client
        .set_favorite(
            &cosell_sync::domain::Referral {
                id: "r1".into(),
                ..referral
            },
            true,
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        PartnerCenterError::ModifiedConcurrently { .. }
    ));
    assert_eq!(store.current().as_deref(), Some(REFRESH_TOKEN_ROTATED));
    // Expire the cached token so the next call hits invalid_grant.
    tokio::time::advance(Duration::from_secs(3600)).await;
    let err = client.get("r1").await.unwrap_err();
    assert!(err.is_login_required());
    // Debug output of the client and store is safe too.
    tracing::info!(client = ?client, store = ?store, error = ?err, "state");

    let text = logs.contents();
    assert!(
        text.contains("Partner Center request"),
        "capture works: {text}"
    );
    assert!(text.contains("client_request_id"), "{text}");
    for secret in [
        ACCESS_TOKEN,
        ACCESS_TOKEN_2,
        REFRESH_TOKEN,
        REFRESH_TOKEN_ROTATED,
        DEVICE_CODE,
        "ACCESS-TOKEN",
        "REFRESH-TOKEN",
        "device_code_secret",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the logs:\n{text}"
        );
    }
}
