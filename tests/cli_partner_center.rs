//! `login partner-center` and `referrals favorite` end to end: the binary
//! against a mock Entra ID and Partner Center on loopback.

use chrono::Utc;
use cosell_sync::domain::Referral;
use cosell_sync::store::{ReferralSnapshot, Store};
use serde_json::json;
use wiremock::matchers::{body_json, body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn run(args: &[&str], envs: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cosell-sync"));
    for (k, _) in std::env::vars() {
        if k.starts_with("COSELL_SYNC") || k == "RUST_LOG" || k == "CREDENTIALS_DIRECTORY" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn envs(server: &MockServer, db: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("COSELL_SYNC__STATE__PATH", db.display().to_string()),
        ("COSELL_SYNC__PARTNER_CENTER__CLIENT_ID", "app-123".into()),
        ("COSELL_SYNC__PARTNER_CENTER__BASE_URL", server.uri()),
        (
            "COSELL_SYNC__PARTNER_CENTER__TOKEN_URL",
            format!("{}/oauth2/v2.0/token", server.uri()),
        ),
        (
            "COSELL_SYNC__PARTNER_CENTER__DEVICE_CODE_URL",
            format!("{}/oauth2/v2.0/devicecode", server.uri()),
        ),
    ]
}

#[tokio::test]
async fn login_stores_the_refresh_token_and_favorite_patches_with_if_match() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let envs = envs(&server, &db);

    Mock::given(method("POST"))
        .and(path("/oauth2/v2.0/devicecode"))
        .and(body_string_contains("client_id=app-123"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "device_code": "dc-secret", "user_code": "ABCD-EFGH",
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 900, "interval": 1
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth2/v2.0/token"))
        .and(body_string_contains("device_code=dc-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "access_token": "at-1", "refresh_token": "rt-from-login",
            "expires_in": 3600
        })))
        .expect(1)
        .mount(&server)
        .await;

    let (code, out, err) = run(&["login", "partner-center"], &envs).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("https://microsoft.com/devicelogin") && out.contains("ABCD-EFGH"),
        "{out}"
    );
    assert!(out.contains("Referrals Admin"), "{out}");
    for secret in ["rt-from-login", "at-1", "dc-secret"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "leaked {secret}"
        );
    }
    let store = Store::open(&db).unwrap();
    assert_eq!(
        store
            .read(|r| r.kv_get("partner_center.refresh_token"))
            .unwrap()
            .as_deref(),
        Some("rt-from-login")
    );

    // A referral we know, then `referrals favorite` on it.
    let referral = Referral::from_json(json!({
        "id": "r-1", "name": "Contoso", "direction": "Incoming", "status": "Active",
        "substatus": "Accepted", "eTag": "\"e1\"", "favorite": false
    }))
    .unwrap();
    store
        .write(|r| r.upsert_referral(&ReferralSnapshot::from_referral(&referral, 14, Utc::now())))
        .unwrap();
    drop(store);

    Mock::given(method("POST"))
        .and(path("/oauth2/v2.0/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=rt-from-login"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "access_token": "at-2", "refresh_token": "rt-rotated",
            "expires_in": 3600
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/v1.0/engagements/referrals/r-1"))
        .and(header("If-Match", "\"e1\""))
        .and(header("Authorization", "Bearer at-2"))
        .and(body_json(
            json!([{"op": "replace", "path": "/favorite", "value": true}]),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "r-1", "name": "Contoso", "direction": "Incoming", "status": "Active",
            "substatus": "Accepted", "eTag": "\"e2\"", "favorite": true
        })))
        .expect(1)
        .mount(&server)
        .await;

    let (code, out, err) = run(&["referrals", "favorite", "r-1"], &envs).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added to favorites"), "{out}");
    let store = Store::open(&db).unwrap();
    let snap = store.read(|r| r.get_referral("r-1")).unwrap().unwrap();
    assert!(snap.favorite);
    assert_eq!(snap.etag.as_deref(), Some("\"e2\""));
    assert_eq!(
        store
            .read(|r| r.kv_get("partner_center.refresh_token"))
            .unwrap()
            .as_deref(),
        Some("rt-rotated"),
        "the rotated refresh token is persisted"
    );
    let (_, out, _) = run(&["referrals", "list", "--favorites"], &envs).await;
    assert!(out.contains("r-1"), "{out}");
}

#[tokio::test]
async fn a_refused_sign_in_pauses_with_the_login_hint() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let mut envs = envs(&server, &db);
    envs.push((
        "COSELL_SYNC__PARTNER_CENTER__REFRESH_TOKEN",
        "rt-revoked".into(),
    ));
    let store = Store::open(&db).unwrap();
    let referral = Referral::from_json(json!({"id": "r-1", "eTag": "\"e1\""})).unwrap();
    store
        .write(|r| r.upsert_referral(&ReferralSnapshot::from_referral(&referral, 14, Utc::now())))
        .unwrap();
    drop(store);
    Mock::given(method("POST"))
        .and(path("/oauth2/v2.0/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant", "error_description": "AADSTS70008: The refresh token has expired."
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (code, _, err) = run(&["referrals", "favorite", "r-1", "--off"], &envs).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cosell-sync login partner-center"), "{err}");
    assert!(!err.contains("rt-revoked"), "{err}");
}
