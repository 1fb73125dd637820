//! The Entra ID fake through raw HTTP: client credentials, refresh-token
//! rotation, device code, and the errors Entra returns.

mod sim_support;

use cosell_sync::sim::creds;
use sim_support::*;

#[tokio::test(start_paused = true)]
async fn client_credentials_need_the_right_secret_and_a_default_scope() {
    let sim = start().await;
    let url = sim.urls().token_url(creds::TENANT_ID);
    let scope = format!("{}/.default", sim.urls().dynamics);
    let ok = [
        ("grant_type", "client_credentials"),
        ("client_id", creds::DYNAMICS_CLIENT_ID),
        ("client_secret", creds::DYNAMICS_CLIENT_SECRET),
        ("scope", scope.as_str()),
    ];
    let (status, body) = form(&url, &ok).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body.get("refresh_token").is_none());

    let (status, body) = form(&url, &[ok[0], ok[1], ("client_secret", "wrong"), ok[3]]).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 7000215);

    let bare = format!("{}/user_impersonation", sim.urls().dynamics);
    let (status, body) = form(&url, &[ok[0], ok[1], ok[2], ("scope", bare.as_str())]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_scope");

    let (status, body) = form(
        &url,
        &[
            ok[0],
            ok[1],
            ok[2],
            ("scope", "https://unknown.example/.default"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_resource");

    let (status, body) = form(&url, &[("grant_type", "password"), ok[1]]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "unsupported_grant_type");
}

/// Entra hands out a fresh refresh token on every use and does not revoke
/// the one redeemed: a process killed before it saved the new one still
/// signs in with the old one.
#[tokio::test(start_paused = true)]
async fn refresh_tokens_rotate_and_the_redeemed_one_stays_valid() {
    let sim = start().await;
    let url = sim.urls().token_url("organizations");
    let grant = |rt: String| {
        let url = url.clone();
        async move {
            form(
                &url,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", creds::PARTNER_CENTER_CLIENT_ID),
                    ("refresh_token", &rt),
                ],
            )
            .await
        }
    };
    let (status, first) = grant(creds::PARTNER_CENTER_REFRESH_TOKEN.to_owned()).await;
    assert_eq!(status, 200, "{first}");
    let rotated = first["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rotated, creds::PARTNER_CENTER_REFRESH_TOKEN);

    let (status, again) = grant(creds::PARTNER_CENTER_REFRESH_TOKEN.to_owned()).await;
    assert_eq!(status, 200, "the redeemed token still works: {again}");
    assert_ne!(again["refresh_token"], first["refresh_token"]);

    let (status, second) = grant(rotated.clone()).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);

    let (status, body) = grant("0.AXsim.never-issued".to_owned()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_codes"][0], 70000);
}

#[tokio::test(start_paused = true)]
async fn device_code_polls_pending_until_a_person_approves() {
    let sim = start().await;
    let (status, dc) = form(
        &sim.urls().device_code_url("organizations"),
        &[
            ("client_id", creds::PARTNER_CENTER_CLIENT_ID),
            (
                "scope",
                "https://api.partner.microsoft.com/.default offline_access",
            ),
        ],
    )
    .await;
    assert_eq!(status, 200, "{dc}");
    assert_eq!(dc["interval"], 5);
    let device_code = dc["device_code"].as_str().unwrap().to_owned();
    let user_code = dc["user_code"].as_str().unwrap().to_owned();
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", creds::PARTNER_CENTER_CLIENT_ID),
        ("device_code", device_code.as_str()),
    ];
    let url = sim.urls().token_url("organizations");
    let (status, body) = form(&url, &poll).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "authorization_pending");

    let r = client()
        .post(format!(
            "{}/_sim/entra/approve",
            sim.base_url.as_str().trim_end_matches('/')
        ))
        .json(&serde_json::json!({"user_code": user_code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = form(&url, &poll).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["refresh_token"].is_string());
    assert!(body["access_token"].is_string());
    // The device code is used up.
    let (status, body) = form(&url, &poll).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "bad_verification_code");
}

#[tokio::test(start_paused = true)]
async fn a_device_code_expires() {
    let sim = start().await;
    let (_, dc) = form(
        &sim.urls().device_code_url("organizations"),
        &[
            ("client_id", creds::PARTNER_CENTER_CLIENT_ID),
            (
                "scope",
                "https://api.partner.microsoft.com/.default offline_access",
            ),
        ],
    )
    .await;
    sim.clock().advance(std::time::Duration::from_secs(901));
    let (status, body) = form(
        &sim.urls().token_url("organizations"),
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", creds::PARTNER_CENTER_CLIENT_ID),
            ("device_code", dc["device_code"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "expired_token");
}
