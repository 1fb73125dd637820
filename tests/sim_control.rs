//! The control API and fault injection through raw HTTP: counters, request
//! log, faults (429, 503, latency, malformed JSON, connection reset), token
//! expiry, the clock, person actions, and the daemon config.

mod sim_support;

use std::time::Duration;

use cosell_sync::sim::{Api, FaultKind, FaultRule, SimHandle};
use serde_json::{Value, json};
use sim_support::*;

fn ctl(sim: &SimHandle, path: &str) -> String {
    format!("{}/_sim{path}", sim.base_url.as_str().trim_end_matches('/'))
}

fn list_url(sim: &SimHandle) -> String {
    format!(
        "{}/v1.0/engagements/referrals?$top=5",
        sim.urls().partner_center
    )
}

#[tokio::test(start_paused = true)]
async fn counters_count_each_request_once_per_api_and_operation() {
    let sim = start().await;
    let token = pc_token(&sim).await;
    sim.state().reset_counters();
    for _ in 0..3 {
        client()
            .get(list_url(&sim))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
    }
    client()
        .get(format!(
            "{}/v1.0/engagements/referrals/nope",
            sim.urls().partner_center
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    client().get(ctl(&sim, "/counters")).send().await.unwrap();
    let c = sim.state().counters();
    assert_eq!(c.api(Api::PartnerCenter), 4);
    assert_eq!(c.operation(Api::PartnerCenter, "GET list"), 3);
    assert_eq!(c.operation(Api::PartnerCenter, "GET referral"), 1);
    assert_eq!(c.total(), 4, "control calls are not counted");

    let over_http: Value = client()
        .get(ctl(&sim, "/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http["per_operation"]["partner_center"]["GET list"], 3);
    client()
        .post(ctl(&sim, "/counters/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(sim.state().counters().total(), 0);

    let log: Value = client()
        .get(ctl(&sim, "/requests?api=partner_center"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log[3]["status"], 404);
    assert!(
        log.iter().all(|e| !e.to_string().contains(&token)),
        "credentials never logged"
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_and_outages_carry_retry_after() {
    let sim = start().await;
    let token = pc_token(&sim).await;
    let r = client()
        .post(ctl(&sim, "/faults"))
        .json(&json!({"api": "partner_center", "operation": "GET list", "kind": "too_many_requests", "retry_after_secs": 7, "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(list_url(&sim))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["statusCode"], 429);
    let r = client()
        .get(list_url(&sim))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the fault was used up");

    let dv = dynamics_token(&sim).await;
    sim.state().add_fault(
        FaultRule::new(
            Api::Dynamics,
            FaultKind::TooManyRequests {
                retry_after_secs: 3,
            },
        )
        .times(1),
    );
    let r = client()
        .get(format!(
            "{}/api/data/v9.2/opportunities",
            sim.urls().dynamics
        ))
        .bearer_auth(&dv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "0x80072322");

    let (sf, instance) = sf_session(&sim).await;
    sim.state().add_fault(
        FaultRule::new(
            Api::Salesforce,
            FaultKind::ServiceUnavailable {
                retry_after_secs: Some(2),
            },
        )
        .times(1),
    );
    let r = client()
        .get(format!("{instance}/services/data/v62.0/limits"))
        .bearer_auth(&sf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "2");
    assert!(r.headers().contains_key("sforce-limit-info"));
}

#[tokio::test(start_paused = true)]
async fn malformed_json_and_connection_resets() {
    let sim = start().await;
    let token = pc_token(&sim).await;
    sim.state()
        .add_fault(FaultRule::new(Api::PartnerCenter, FaultKind::MalformedJson).times(1));
    let r = client()
        .get(list_url(&sim))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "cut short: {text}"
    );

    sim.state()
        .add_fault(FaultRule::new(Api::PartnerCenter, FaultKind::ConnectionReset).times(1));
    let err = client()
        .get(list_url(&sim))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(err.is_err(), "the connection is reset without an answer");
    let r = client()
        .get(list_url(&sim))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = sim.state().request_log();
    assert!(
        log.iter()
            .any(|e| e.fault.as_deref() == Some("connection_reset") && e.status == 0)
    );
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_answer_on_the_paused_clock() {
    let sim = start().await;
    let token = pc_token(&sim).await;
    sim.state().add_fault(
        FaultRule::new(Api::PartnerCenter, FaultKind::Latency { millis: 30_000 }).times(1),
    );
    let started = tokio::time::Instant::now();
    let r = client()
        .get(list_url(&sim))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn token_expiry_and_the_clock_over_the_control_api() {
    let sim = start().await;
    let token = pc_token(&sim).await;
    assert_eq!(
        client()
            .get(list_url(&sim))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = client()
        .post(ctl(&sim, "/tokens/expire"))
        .json(&json!({"api": "partner_center"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        client()
            .get(list_url(&sim))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let before = sim.clock().now();
    let r: Value = client()
        .post(ctl(&sim, "/clock/advance"))
        .json(&json!({"duration": "2h"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["now"].is_string());
    assert_eq!(sim.clock().now() - before, chrono::TimeDelta::hours(2));
    let dv = dynamics_token(&sim).await;
    sim.clock().advance(Duration::from_secs(3600));
    let r = client()
        .get(format!("{}/api/data/v9.2/WhoAmI", sim.urls().dynamics))
        .bearer_auth(&dv)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "access tokens expire on the simulated clock"
    );
}

#[tokio::test(start_paused = true)]
async fn person_actions_over_the_control_api() {
    let sim = start().await;
    let ids: Value = client()
        .post(ctl(&sim, "/partner-center/referrals"))
        .json(&json!({"count": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = ids[0].as_str().unwrap();
    let r: Value = client()
        .post(ctl(&sim, &format!("/partner-center/referrals/{id}/accept")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "Active");
    let r = client()
        .post(ctl(&sim, &format!("/partner-center/referrals/{id}/accept")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        409,
        "accepting twice breaks the transition table"
    );
    let other = ids[1].as_str().unwrap();
    let r = client()
        .post(ctl(
            &sim,
            &format!("/partner-center/referrals/{other}/decline"),
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a decline needs a reason");

    let created: Value = client()
        .post(ctl(&sim, "/salesforce/opportunities"))
        .json(&json!({"Name": "Flagged", "StageName": "Prospecting", "CloseDate": "2025-10-01", "Sync_with_Partner_Center__c": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sf_id = created["Id"].as_str().unwrap();
    let r: Value = client()
        .post(ctl(
            &sim,
            &format!("/salesforce/opportunities/{sf_id}/stage"),
        ))
        .json(&json!({"stage": "Qualification"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["StageName"], "Qualification");

    let dv: Value = client()
        .post(ctl(&sim, "/dynamics/opportunities"))
        .json(&json!({"name": "Flagged", "new_syncwithpartnercenter": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dv_id = dv["opportunityid"].as_str().unwrap();
    let r = client()
        .post(ctl(&sim, &format!("/dynamics/opportunities/{dv_id}/win")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        sim.state().dynamics_opportunity(dv_id).unwrap()["statecode"],
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_salesforce_field_is_removed_over_the_control_api() {
    let sim = start().await;
    let remove = |object: &str, field: &str| {
        client()
            .delete(ctl(
                &sim,
                &format!("/salesforce/sobjects/{object}/fields/{field}"),
            ))
            .send()
    };
    assert_eq!(
        remove("Account", "DunsNumber").await.unwrap().status(),
        404,
        "a standard org has no Data.com field to remove"
    );
    assert_eq!(
        remove("Opportunity", "Referral_Identifier__c")
            .await
            .unwrap()
            .status(),
        409
    );
    let r = remove("Opportunity", "Loss_Reason__c").await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["removed"], "Opportunity.Loss_Reason__c");
    let e = sim
        .state()
        .create_salesforce_opportunity(json!({"Name": "X", "StageName": "Prospecting",
            "CloseDate": "2025-10-01", "Loss_Reason__c": "gone"}))
        .unwrap_err();
    assert!(e.to_string().contains("INVALID_FIELD"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn the_daemon_config_points_every_url_at_the_simulator() {
    let sim = start().await;
    let text = sim.daemon_config();
    let cfg: toml::Table = toml::from_str(&text).unwrap();
    let base = sim.base_url.as_str().trim_end_matches('/');
    for (section, key) in [
        ("partner_center", "base_url"),
        ("partner_center", "token_url"),
        ("partner_center", "device_code_url"),
        ("dynamics", "base_url"),
        ("dynamics", "token_url"),
        ("salesforce", "login_url"),
    ] {
        assert!(
            cfg[section][key].as_str().unwrap().starts_with(base),
            "{section}.{key}"
        );
    }
    assert_eq!(cfg["dynamics"]["enabled"].as_bool(), Some(true));
    assert_eq!(cfg["salesforce"]["enabled"].as_bool(), Some(true));
    let env = sim.daemon_env();
    assert!(
        env.iter()
            .any(|(k, _)| *k == "COSELL_SYNC__PARTNER_CENTER__REFRESH_TOKEN")
    );
    // The URLs work as the daemon would use them.
    let scope = format!("{}/.default", cfg["dynamics"]["base_url"].as_str().unwrap());
    let (status, _) = form(
        cfg["dynamics"]["token_url"].as_str().unwrap(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", cfg["dynamics"]["client_id"].as_str().unwrap()),
            ("client_secret", &env[1].1),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = form(
        &format!(
            "{}/services/oauth2/token",
            cfg["salesforce"]["login_url"].as_str().unwrap()
        ),
        &[
            ("grant_type", "client_credentials"),
            (
                "client_id",
                cfg["salesforce"]["client_id"].as_str().unwrap(),
            ),
            ("client_secret", &env[2].1),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    sim.shutdown().await;
}
