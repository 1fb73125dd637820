//! The Partner Center fake through raw HTTP: audience, paging, filters,
//! JSON Patch with If-Match and the transition table, create, expiry.

mod sim_support;

use std::collections::HashSet;
use std::time::Duration;

use cosell_sync::sim::Api;
use serde_json::{Value, json};
use sim_support::*;

fn referrals_url(sim: &cosell_sync::sim::SimHandle) -> String {
    format!("{}/v1.0/engagements/referrals", sim.urls().partner_center)
}

async fn get(url: &str, token: &str) -> (u16, Value) {
    let r = client().get(url).bearer_auth(token).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(start_paused = true)]
async fn only_delegated_partner_center_tokens_are_accepted() {
    let sim = start().await;
    let url = referrals_url(&sim);
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");

    // A Dataverse token has the wrong audience.
    let wrong = dynamics_token(&sim).await;
    let (status, body) = get(&url, &wrong).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("audience")
    );

    let token = pc_token(&sim).await;
    let (status, _) = get(&url, &token).await;
    assert_eq!(status, 200);

    // Expired by the control API: refused again.
    sim.state().expire_tokens(Some(Api::PartnerCenter));
    let (status, _) = get(&url, &token).await;
    assert_eq!(status, 401);
}

#[tokio::test(start_paused = true)]
async fn next_links_walk_every_referral_once() {
    let sim = start().await;
    let token = pc_token(&sim).await;
    let mut url = format!(
        "{}?$top=7&$orderby=updatedDateTime asc",
        referrals_url(&sim)
    );
    let mut seen = HashSet::new();
    let mut pages = 0;
    let mut last_updated = String::new();
    loop {
        let (status, body) = get(&url, &token).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        let items = body["value"].as_array().unwrap();
        assert!(items.len() <= 7);
        for r in items {
            assert!(seen.insert(r["id"].as_str().unwrap().to_owned()));
            let u = r["updatedDateTime"].as_str().unwrap().to_owned();
            assert!(u >= last_updated, "ordered by updatedDateTime");
            last_updated = u;
        }
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), sim.state().referral_count());
    assert_eq!(pages, sim.state().referral_count().div_ceil(7));
}

#[tokio::test(start_paused = true)]
async fn filters_on_status_direction_and_updated_time() {
    let sim = start().await;
    let token = pc_token(&sim).await;
    let base = referrals_url(&sim);
    let (status, body) = get(
        &format!("{base}?$filter=status eq 'New' and direction eq 'Incoming'&$top=100"),
        &token,
    )
    .await;
    assert_eq!(status, 200);
    let pending = body["value"].as_array().unwrap();
    assert!(!pending.is_empty());
    assert!(
        pending
            .iter()
            .all(|r| r["status"] == "New" && r["direction"] == "Incoming")
    );

    let cut = "2025-06-01T00:00:00Z";
    let (_, body) = get(&format!("{base}?$filter=updatedDateTime ge {cut}"), &token).await;
    for r in body["value"].as_array().unwrap() {
        assert!(r["updatedDateTime"].as_str().unwrap() >= cut);
    }

    let one = &pending[0];
    let eng = one["engagementId"].as_str().unwrap();
    let (_, body) = get(&format!("{base}?$filter=engagementId eq '{eng}'"), &token).await;
    assert!(
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["engagementId"] == eng)
    );

    let (status, body) = get(&format!("{base}?$filter=nonsense eq 'x'"), &token).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalidRequest");
    let (status, _) = get(&format!("{base}?$filter=status eq"), &token).await;
    assert_eq!(status, 400);
}

async fn first_with(sim: &cosell_sync::sim::SimHandle, token: &str, filter: &str) -> Value {
    let (_, body) = get(&format!("{}?$filter={filter}", referrals_url(sim)), token).await;
    body["value"][0].clone()
}

#[tokio::test(start_paused = true)]
async fn patch_checks_if_match_and_the_transition_table() {
    let sim = start().await;
    let token = pc_token(&sim).await;
    let r = first_with(&sim, &token, "status eq 'New' and direction eq 'Incoming'").await;
    let id = r["id"].as_str().unwrap();
    let etag = r["eTag"].as_str().unwrap();
    let url = format!("{}/{id}", referrals_url(&sim));
    let patch = |body: Value, if_match: Option<&str>, prefer: bool| {
        let mut req = client().patch(&url).bearer_auth(&token).json(&body);
        if let Some(m) = if_match {
            req = req.header("If-Match", m);
        }
        if prefer {
            req = req.header("Prefer", "return=representation");
        }
        req.send()
    };

    // Stale eTag: 412 with the documented error body.
    let r = patch(
        json!([{"op": "replace", "path": "/name", "value": "x"}]),
        Some("\"stale\""),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 412);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "preconditionFailed");

    // New -> Closed/Won is in the table, New -> Active/Won is not.
    let r = patch(json!([{"op": "replace", "path": "/status", "value": "Active"}, {"op": "replace", "path": "/substatus", "value": "Won"}]), Some(etag), false).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalidRequest");

    // Only replace and add.
    let r = patch(
        json!([{"op": "remove", "path": "/name"}]),
        Some(etag),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    // Unknown and read-only members.
    let r = patch(
        json!([{"op": "replace", "path": "/bogusField", "value": 1}]),
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = patch(
        json!([{"op": "replace", "path": "/id", "value": "x"}]),
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);

    // Accept with the current eTag: 200 + representation, new eTag.
    let r = patch(
        json!([{"op": "replace", "path": "/status", "value": "Active"}, {"op": "replace", "path": "/substatus", "value": "Accepted"}, {"op": "replace", "path": "/details/dealValue", "value": 125000}]),
        Some(etag),
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let header_etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "Active");
    assert_eq!(body["details"]["dealValue"], 125000);
    assert!(body["acceptedDateTime"].is_string());
    assert!(body["expirationDateTime"].is_null());
    assert_ne!(body["eTag"].as_str().unwrap(), etag);
    assert_eq!(body["eTag"].as_str().unwrap(), header_etag);

    // The old eTag is now stale; without Prefer the answer is 204.
    let r = patch(
        json!([{"op": "replace", "path": "/name", "value": "y"}]),
        Some(etag),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 412);
    let r = patch(json!([{"op": "replace", "path": "/status", "value": "Closed"}, {"op": "replace", "path": "/substatus", "value": "Won"}]), Some(&header_etag), false).await.unwrap();
    assert_eq!(r.status(), 204);

    // Archived: nothing more, ever.
    let r = patch(
        json!([{"op": "replace", "path": "/name", "value": "z"}]),
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(start_paused = true)]
async fn declining_needs_a_reason() {
    let sim = start().await;
    let token = pc_token(&sim).await;
    let r = first_with(&sim, &token, "status eq 'New' and direction eq 'Incoming'").await;
    let url = format!("{}/{}", referrals_url(&sim), r["id"].as_str().unwrap());
    let decline = json!([{"op": "replace", "path": "/status", "value": "Closed"}, {"op": "replace", "path": "/substatus", "value": "Declined"}]);
    let resp = client()
        .patch(&url)
        .bearer_auth(&token)
        .json(&decline)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let mut with_reason = decline.as_array().unwrap().clone();
    with_reason.push(json!({"op": "replace", "path": "/statusReason", "value": "No budget"}));
    let resp = client()
        .patch(&url)
        .bearer_auth(&token)
        .json(&with_reason)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

fn new_deal() -> Value {
    json!({
        "name": "Contoso - new deal", "type": "Independent", "qualification": "SalesQualified",
        "customerProfile": {"name": "Contoso", "address": {"addressLine1": "1 Way", "city": "Redmond", "postalCode": "98052", "country": "US"},
                            "team": [{"firstName": "Sue", "lastName": "Smith", "phoneNumber": "1", "email": "sue@contoso.example"}]},
        "consent": {"consentToToShareInfoWithOthers": true, "consentToContact": true, "consentToShareReferralWithMicrosoftSellers": false},
        "details": {"dealValue": 50000, "currency": "USD", "closingDateTime": "2025-11-14T00:00:00Z",
                    "requirements": {"solutions": [{"type": "Name", "id": "SOL-15974-MQF"}]}},
        "team": [{"firstName": "John", "lastName": "Doe", "phoneNumber": "2", "email": "john@partner.example"}],
        "target": [], "externalReferenceId": "006XX0000001",
        "status": "New", "substatus": "Pending"
    })
}

#[tokio::test(start_paused = true)]
async fn created_deals_come_back_accepted_and_the_microsoft_referral_joins_the_engagement() {
    let sim = start().await;
    let token = pc_token(&sim).await;
    let url = referrals_url(&sim);
    let r = client()
        .post(&url)
        .bearer_auth(&token)
        .json(&new_deal())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let created: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "Active");
    assert_eq!(created["substatus"], "Accepted");
    assert_eq!(created["direction"], "Outgoing");
    assert_eq!(created["externalReferenceId"], "006XX0000001");
    assert!(created["eTag"].is_string());
    let eng = created["engagementId"].as_str().unwrap();

    let mut for_msft = new_deal();
    for_msft["engagementId"] = json!(eng);
    for_msft["target"] = json!([{"type": "BusinessProfileLocation", "id": "msft"}]);
    let r = client()
        .post(&url)
        .bearer_auth(&token)
        .json(&for_msft)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let related: Value = r.json().await.unwrap();
    assert_eq!(related["engagementId"], eng);
    assert_ne!(related["id"], created["id"]);

    let (_, body) = get(&format!("{url}?$filter=engagementId eq '{eng}'"), &token).await;
    assert_eq!(body["value"].as_array().unwrap().len(), 2);

    // `target` is read-only after create: a PATCH that would invite Microsoft
    // on the partner's own referral is refused and changes nothing.
    let own = format!("{url}/{}", created["id"].as_str().unwrap());
    for ops in [
        json!([{"op": "replace", "path": "/target", "value": [{"type": "BusinessProfileLocation", "id": "msft"}]}]),
        json!([{"op": "add", "path": "/target/-", "value": {"type": "BusinessProfileLocation", "id": "msft"}}]),
    ] {
        let r = client()
            .patch(&own)
            .bearer_auth(&token)
            .json(&ops)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{ops}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalidRequest");
    }
    let (_, after) = get(&own, &token).await;
    assert_eq!(after["target"], json!([]));
    assert_eq!(after["eTag"], created["eTag"]);

    // Missing required parts and bad countries are refused.
    let mut bad = new_deal();
    bad.as_object_mut().unwrap().remove("name");
    bad["customerProfile"]["address"]["country"] = json!("USA");
    let r = client()
        .post(&url)
        .bearer_auth(&token)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(start_paused = true)]
async fn unanswered_referrals_expire_after_fourteen_days() {
    let sim = start().await;
    let token = pc_token(&sim).await;
    let ids = sim.state().insert_referrals(1);
    let url = format!("{}/{}", referrals_url(&sim), ids[0]);
    let (_, r) = get(&url, &token).await;
    assert_eq!(r["substatus"], "Pending");
    sim.clock().advance(Duration::from_secs(14 * 86_400 + 1));
    let token = pc_token_refresh(&sim).await;
    let (status, r) = get(&url, &token).await;
    assert_eq!(status, 200);
    assert_eq!(r["status"], "Closed");
    assert_eq!(r["substatus"], "Expired");
}

async fn pc_token_refresh(sim: &cosell_sync::sim::SimHandle) -> String {
    let rt = sim.state().issue_refresh_token();
    let (status, body) = form(
        &sim.urls().token_url("organizations"),
        &[
            ("grant_type", "refresh_token"),
            (
                "client_id",
                cosell_sync::sim::creds::PARTNER_CENTER_CLIENT_ID,
            ),
            ("refresh_token", &rt),
        ],
    )
    .await;
    assert_eq!(status, 200);
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(start_paused = true)]
async fn seeded_data_is_deterministic() {
    let a = start().await;
    let b = start().await;
    let ids_a = a.state().referral_ids();
    assert_eq!(ids_a, b.state().referral_ids());
    assert_eq!(ids_a.len(), 60);
    let without_links = |v: Option<Value>| {
        let mut v = v.unwrap();
        v.as_object_mut().unwrap().remove("links");
        v
    };
    assert_eq!(
        without_links(a.state().referral(&ids_a[3])),
        without_links(b.state().referral(&ids_a[3]))
    );
    let all: Vec<Value> = ids_a
        .iter()
        .filter_map(|id| a.state().referral(id))
        .collect();
    let has = |status: &str, sub: &str, dir: &str| {
        all.iter()
            .any(|r| r["status"] == status && r["substatus"] == sub && r["direction"] == dir)
    };
    assert!(has("New", "Pending", "Incoming"));
    assert!(
        has("Closed", "Expired", "Incoming"),
        "older than 14 days: archived when read"
    );
    assert!(has("Active", "Accepted", "Outgoing"));
    assert!(has("Closed", "Won", "Incoming") || has("Closed", "Won", "Outgoing"));
    assert!(has("Closed", "Lost", "Outgoing") || has("Closed", "Lost", "Incoming"));
    assert!(
        all.iter()
            .any(|r| r["type"] == "Independent" && r["direction"] == "Outgoing")
    );
    assert!(
        all.iter()
            .any(|r| r["type"] == "Shared" && r["direction"] == "Outgoing")
    );
}
