//! Helpers shared by the simulator tests: start a simulator, get tokens.
#![allow(dead_code)]

use chrono::{TimeZone, Utc};
use cosell_sync::sim::{SimHandle, SimOptions, Simulator, creds};
use serde_json::Value;

pub fn opts() -> SimOptions {
    SimOptions {
        seed: 7,
        referrals: 60,
        start_time: Utc.with_ymd_and_hms(2025, 6, 2, 9, 0, 0).unwrap(),
        frozen_clock: true,
        ..SimOptions::default()
    }
}

pub async fn start() -> SimHandle {
    Simulator::start(opts()).await.unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub async fn form(url: &str, fields: &[(&str, &str)]) -> (u16, Value) {
    let r = client().post(url).form(fields).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A delegated Partner Center token from the bootstrap refresh token.
pub async fn pc_token(sim: &SimHandle) -> String {
    let (status, body) = form(
        &sim.urls().token_url("organizations"),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", creds::PARTNER_CENTER_CLIENT_ID),
            ("refresh_token", creds::PARTNER_CENTER_REFRESH_TOKEN),
            (
                "scope",
                "https://api.partner.microsoft.com/.default offline_access",
            ),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// An app-only Dataverse token (client credentials).
pub async fn dynamics_token(sim: &SimHandle) -> String {
    let scope = format!("{}/.default", sim.urls().dynamics);
    let (status, body) = form(
        &sim.urls().token_url(creds::TENANT_ID),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", creds::DYNAMICS_CLIENT_ID),
            ("client_secret", creds::DYNAMICS_CLIENT_SECRET),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A Salesforce session (client credentials) and the instance URL.
pub async fn sf_session(sim: &SimHandle) -> (String, String) {
    let (status, body) = form(
        &format!("{}/services/oauth2/token", sim.urls().salesforce),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", creds::SALESFORCE_CLIENT_ID),
            ("client_secret", creds::SALESFORCE_CLIENT_SECRET),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["instance_url"].as_str().unwrap().to_owned(),
    )
}
