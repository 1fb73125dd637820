//! Creating deals, JSON Patch updates with If-Match, stage changes and the
//! crash-safe lookup of a created deal.

mod pc_support;

use chrono::{TimeZone, Utc};
use cosell_sync::domain::{DealKind, LifecycleAction, PatchOp, Referral};
use cosell_sync::http::{RetryDirective, Retryable};
use cosell_sync::partner_center::PartnerCenterError;
use pc_support::*;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, ResponseTemplate};

const NEW_ID: &str = "49d90c72-3326-4f61-aacc-2cb57970448c";
const NEW_ETAG: &str = "\"2500ec5a-0000-0000-0000-5bf4967d0000\"";

fn private_draft() -> Referral {
    Referral::from_json(json!({
        "id": "",
        "name": "Contoso Test Deal - [Private]",
        "externalReferenceId": "OPP-0042",
        "qualification": "SalesQualified",
        "customerProfile": {"name": "Contoso Customer Inc",
            "address": {"addressLine1": "One Microsoft Way", "addressLine2": "34", "city": "Redmond", "state": "WA",
                        "postalCode": "98052", "country": "US"},
            "size": "10to50employees"},
        "consent": {"consentToToShareInfoWithOthers": true, "consentToContact": true},
        "details": {"notes": "Field Service rollout", "dealValue": 50000, "currency": "USD",
            "closingDateTime": "2026-11-14T00:00:00Z",
            "requirements": {"solutions": [{"type": "Name", "id": "SOL-15974-MQF", "name": "Contoso-Ale_Test",
                "publisherName": "Contoso_Test", "solutionType": "3P"}],
                "additionalRequirements": {"iot": {},
                    "attributes": [{"id": "HaveNotDecided", "type": "CustomerMarketplaceIntent"}]}}},
        "team": [{"firstName": "John", "lastName": "Doe", "phoneNumber": "1231231234", "email": "john.doe@fabrikam.example"}]
    }))
    .unwrap()
}

fn co_sell_draft() -> Referral {
    let mut v = private_draft().to_json();
    v["name"] = json!("Contoso Test Deal - [Co-sell]");
    v["customerProfile"]["team"] = json!([{"firstName": "Sue", "lastName": "Smith", "phoneNumber": "1234567890",
        "email": "sue.smith@contoso.com"}]);
    v["inviteContext"] = json!({"notes": "Customer wants a proof of concept in Q3", "assistanceRequestCode": "ProofOfConceptOrDemo"});
    Referral::from_json(v).unwrap()
}

/// What the service answers to a create: the body plus service fields.
fn created(body: &Value, id: &str, engagement: &str) -> Value {
    let mut out = body.clone();
    out["id"] = json!(id);
    out["engagementId"] = json!(engagement);
    out["status"] = json!("Active");
    out["substatus"] = json!("Accepted");
    out["direction"] = json!("Outgoing");
    out["createdDateTime"] = json!("2026-01-05T10:00:00.1234567Z");
    out["eTag"] = json!("\"0100aa00-0000-0000-0000-000000000000\"");
    out
}

fn echo_created(
    id: &'static str,
    engagement: &'static str,
) -> impl Fn(&Request) -> ResponseTemplate + Send + Sync {
    move |r: &Request| {
        let body: Value = r.body_json().unwrap();
        ResponseTemplate::new(201).set_body_json(created(&body, id, engagement))
    }
}

fn targets_microsoft(r: &Request) -> bool {
    r.body_json::<Value>()
        .map(|b| {
            b["target"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x["id"] == "msft"))
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_private_deal_is_created_as_an_independent_referral_not_shared_with_sellers() {
    let (server, client, _) = setup().await;
    Mock::given(method("POST"))
        .and(path(REFERRALS))
        .respond_with(echo_created("p-1", "e-1"))
        .expect(1)
        .mount(&server)
        .await;
    let deal = client.create_deal(&private_draft()).await.unwrap();
    assert_eq!(deal.kind, DealKind::Private);
    assert_eq!(deal.referral.id, "p-1");
    assert!(deal.microsoft_referral.is_none());

    let posts = requests_to(&server, "POST", REFERRALS).await;
    let r = &posts[0];
    assert_eq!(header(r, "content-type"), Some("application/json"));
    assert_eq!(header(r, "if-match"), None);
    assert_eq!(
        r.body_json::<Value>().unwrap(),
        json!({
            "name": "Contoso Test Deal - [Private]",
            "externalReferenceId": "OPP-0042",
            "type": "Independent",
            "qualification": "SalesQualified",
            "customerProfile": {"name": "Contoso Customer Inc",
                "address": {"addressLine1": "One Microsoft Way", "addressLine2": "34", "city": "Redmond", "state": "WA",
                            "postalCode": "98052", "country": "US"},
                "size": "10to50employees"},
            "consent": {"consentToToShareInfoWithOthers": true, "consentToContact": true,
                        "consentToShareReferralWithMicrosoftSellers": false},
            "details": {"notes": "Field Service rollout", "dealValue": 50000, "currency": "USD",
                "closingDateTime": "2026-11-14T00:00:00Z",
                "requirements": {"solutions": [{"type": "Name", "id": "SOL-15974-MQF", "name": "Contoso-Ale_Test",
                    "publisherName": "Contoso_Test", "solutionType": "3P"}],
                    "additionalRequirements": {"iot": {},
                        "attributes": [{"id": "HaveNotDecided", "type": "CustomerMarketplaceIntent"}]}}},
            "team": [{"firstName": "John", "lastName": "Doe", "phoneNumber": "1231231234", "email": "john.doe@fabrikam.example"}],
            "target": []
        })
    );
}

#[tokio::test]
async fn a_co_sell_deal_is_a_shared_referral_then_a_microsoft_targeted_one_in_the_same_engagement()
{
    let (server, client, _) = setup().await;
    Mock::given(method("POST"))
        .and(path(REFERRALS))
        .and(targets_microsoft)
        .respond_with(echo_created("m-1", "e-77"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(REFERRALS))
        .respond_with(echo_created("s-1", "e-77"))
        .expect(1)
        .mount(&server)
        .await;

    let deal = client.create_deal(&co_sell_draft()).await.unwrap();
    assert_eq!(deal.kind, DealKind::CoSell);
    assert_eq!(deal.referral.id, "s-1");
    assert_eq!(deal.microsoft_referral.as_ref().unwrap().id, "m-1");

    let posts = requests_to(&server, "POST", REFERRALS).await;
    assert_eq!(posts.len(), 2);
    let own: Value = posts[0].body_json().unwrap();
    assert_eq!(own["type"], "Shared");
    assert_eq!(own["target"], json!([]));
    assert_eq!(
        own["consent"]["consentToShareReferralWithMicrosoftSellers"],
        true
    );
    assert!(own.get("engagementId").is_none());
    let microsoft: Value = posts[1].body_json().unwrap();
    assert_eq!(microsoft["engagementId"], "e-77");
    assert_eq!(microsoft["type"], "Shared");
    assert_eq!(
        microsoft["target"],
        json!([{"type": "BusinessProfileLocation", "id": "msft"}])
    );
    assert_eq!(
        microsoft["inviteContext"],
        json!({"notes": "Customer wants a proof of concept in Q3", "assistanceRequestCode": "ProofOfConceptOrDemo"})
    );
    assert_eq!(
        microsoft["customerProfile"]["team"][0]["email"],
        "sue.smith@contoso.com"
    );
}

#[tokio::test]
async fn an_invalid_deal_is_refused_with_every_problem_and_nothing_is_sent() {
    let (server, client, _) = setup().await;
    let mut draft = co_sell_draft();
    draft.name = None;
    draft.customer_profile.as_mut().unwrap().team = None;
    draft.details.as_mut().unwrap().deal_value = Some(0.0);
    let err = client.create_deal(&draft).await.unwrap_err();
    let PartnerCenterError::Invalid(problems) = &err else {
        panic!("{err:?}")
    };
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["name", "details.dealValue", "customerProfile.team"]
    );
    assert_eq!(err.directive(), RetryDirective::Permanent);
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "not even a token request"
    );
}

#[tokio::test(start_paused = true)]
async fn a_create_that_may_have_reached_the_service_is_not_resent() {
    let (server, client, _) = setup().await;
    Mock::given(method("POST"))
        .and(path(REFERRALS))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let err = client.create_deal(&private_draft()).await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.directive(), RetryDirective::Backoff);
    assert_eq!(requests_to(&server, "POST", REFERRALS).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_throttled_create_is_resent_after_retry_after() {
    let (server, client, _) = setup().await;
    let ok = echo_created("p-9", "e-9");
    let calls = std::sync::atomic::AtomicU32::new(0);
    Mock::given(method("POST"))
        .and(path(REFERRALS))
        .respond_with(move |r: &Request| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                ResponseTemplate::new(429).insert_header("Retry-After", "12")
            } else {
                ok(r)
            }
        })
        .mount(&server)
        .await;
    let started = tokio::time::Instant::now();
    let deal = client.create_deal(&private_draft()).await.unwrap();
    assert_eq!(deal.referral.id, "p-9");
    assert_eq!(started.elapsed().as_secs(), 12);
    assert_eq!(requests_to(&server, "POST", REFERRALS).await.len(), 2);
}

#[tokio::test]
async fn a_failed_microsoft_invitation_reports_the_referral_already_created() {
    let (server, client, _) = setup().await;
    Mock::given(method("POST"))
        .and(path(REFERRALS))
        .and(targets_microsoft)
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_raw(fixture("error_invalid_request.json"), "application/json"),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(REFERRALS))
        .respond_with(echo_created("s-2", "e-2"))
        .mount(&server)
        .await;
    let err = client.create_deal(&co_sell_draft()).await.unwrap_err();
    let PartnerCenterError::CoSellIncomplete { created, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(created.id, "s-2");
    assert_eq!(source.status(), Some(400));
    assert_eq!(err.directive(), RetryDirective::Permanent);

    // Finishing later: look for the Microsoft referral first, then invite.
    Mock::given(method("GET"))
        .and(path(REFERRALS))
        .and(wiremock::matchers::query_param(
            "$filter",
            "engagementId eq 'e-2'",
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"value": [created.to_json()]})),
        )
        .mount(&server)
        .await;
    assert_eq!(client.find_microsoft_referral("e-2").await.unwrap(), None);
}

#[tokio::test]
async fn patch_sends_json_patch_with_if_match_and_reads_the_representation() {
    let (server, client, _) = setup().await;
    let mut updated = fixture_json("referral_new_pending.json");
    updated["details"]["dealValue"] = json!(75000);
    Mock::given(method("PATCH"))
        .and(path(format!("{REFERRALS}/{NEW_ID}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(&updated))
        .expect(1)
        .mount(&server)
        .await;
    let ops = [
        PatchOp::replace("/details/dealValue", 75000),
        PatchOp::add("/externalReferenceId", "OPP-0042"),
    ];
    let r = client.patch(NEW_ID, NEW_ETAG, &ops).await.unwrap().unwrap();
    assert_eq!(r.details.unwrap().deal_value, Some(75000.0));

    let req = &requests_to(&server, "PATCH", &format!("{REFERRALS}/{NEW_ID}")).await[0];
    assert_eq!(header(req, "if-match"), Some(NEW_ETAG));
    assert_eq!(header(req, "prefer"), Some("return=representation"));
    assert_eq!(header(req, "content-type"), Some("application/json"));
    assert_eq!(
        req.body_json::<Value>().unwrap(),
        json!([{"op": "replace", "path": "/details/dealValue", "value": 75000},
               {"op": "add", "path": "/externalReferenceId", "value": "OPP-0042"}])
    );
}

#[tokio::test]
async fn a_204_patch_returns_no_representation() {
    let (server, client, _) = setup().await;
    Mock::given(method("PATCH"))
        .and(path(format!("{REFERRALS}/{NEW_ID}")))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let out = client
        .patch(NEW_ID, NEW_ETAG, &[PatchOp::replace("/name", "Renamed")])
        .await
        .unwrap();
    assert_eq!(out, None);
}

#[tokio::test(start_paused = true)]
async fn a_412_is_a_concurrent_modification_and_is_not_resent() {
    let (server, client, _) = setup().await;
    Mock::given(method("PATCH"))
        .and(path(format!("{REFERRALS}/{NEW_ID}")))
        .respond_with(ResponseTemplate::new(412).set_body_raw(
            fixture("error_precondition_failed.json"),
            "application/json",
        ))
        .mount(&server)
        .await;
    let err = client
        .patch(NEW_ID, NEW_ETAG, &[PatchOp::replace("/name", "Renamed")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PartnerCenterError::ModifiedConcurrently { id } if id == NEW_ID),
        "{err:?}"
    );
    assert_eq!(err.directive(), RetryDirective::Backoff);
    assert_eq!(
        requests_to(&server, "PATCH", &format!("{REFERRALS}/{NEW_ID}"))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn bad_patches_never_reach_the_network() {
    let (server, client, _) = setup().await;
    let cases: Vec<(&str, Vec<PatchOp>)> = vec![
        (NEW_ETAG, vec![]),
        (NEW_ETAG, vec![PatchOp::replace("/status", "Closed")]),
        (NEW_ETAG, vec![PatchOp::replace("/Substatus", "Won")]),
        (NEW_ETAG, vec![PatchOp::replace("name", "no pointer")]),
        ("", vec![PatchOp::replace("/name", "x")]),
    ];
    for (etag, ops) in cases {
        let err = client.patch(NEW_ID, etag, &ops).await.unwrap_err();
        assert_eq!(err.directive(), RetryDirective::Permanent, "{err:?}");
    }
    // Only `replace` and `add` exist as operations at all.
    let unsupported =
        serde_json::from_value::<PatchOp>(json!({"op": "remove", "path": "/name", "value": null}));
    assert!(unsupported.is_err());
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn accepting_an_inbound_referral_patches_status_and_substatus() {
    let (server, client, _) = setup().await;
    Mock::given(method("PATCH"))
        .and(path(format!("{REFERRALS}/{NEW_ID}")))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let referral = Referral::from_json(fixture_json("referral_new_pending.json")).unwrap();
    client
        .change_stage(&referral, &LifecycleAction::Accept)
        .await
        .unwrap();
    client
        .change_stage(
            &referral,
            &LifecycleAction::Decline {
                reason: "Customer has no budget".into(),
            },
        )
        .await
        .unwrap();
    let reqs = requests_to(&server, "PATCH", &format!("{REFERRALS}/{NEW_ID}")).await;
    assert_eq!(header(&reqs[0], "if-match"), Some(NEW_ETAG));
    assert_eq!(
        reqs[0].body_json::<Value>().unwrap(),
        json!([{"op": "replace", "path": "/status", "value": "Active"},
               {"op": "replace", "path": "/substatus", "value": "Accepted"}])
    );
    assert_eq!(
        reqs[1].body_json::<Value>().unwrap(),
        json!([{"op": "replace", "path": "/status", "value": "Closed"},
               {"op": "replace", "path": "/substatus", "value": "Declined"},
               {"op": "replace", "path": "/statusReason", "value": "Customer has no budget"}])
    );
}

#[tokio::test]
async fn winning_an_accepted_deal_sends_the_documented_patch() {
    let (server, client, _) = setup().await;
    let id = "a2546b7e-5d1c-4f8e-9a6b-0c3d2e1f4a5b";
    Mock::given(method("PATCH"))
        .and(path(format!("{REFERRALS}/{id}")))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let referral = Referral::from_json(fixture_json("referral_active_accepted.json")).unwrap();
    client
        .change_stage(&referral, &LifecycleAction::Win)
        .await
        .unwrap();
    let req = &requests_to(&server, "PATCH", &format!("{REFERRALS}/{id}")).await[0];
    assert_eq!(
        header(req, "if-match"),
        Some("\"1a008cb8-0000-0800-0000-62191b330000\"")
    );
    assert_eq!(
        req.body_json::<Value>().unwrap(),
        json!([{"op":"replace","path":"/status","value":"Closed"},{"op":"replace","path":"/substatus","value":"Won"}])
    );
}

#[tokio::test]
async fn forbidden_transitions_never_reach_the_network() {
    let (server, client, _) = setup().await;
    let won = Referral::from_json(fixture_json("referral_closed_won.json")).unwrap();
    let inbound = Referral::from_json(fixture_json("referral_new_pending.json")).unwrap();
    let unknown = Referral::from_json(fixture_json("referral_unknown_fields.json")).unwrap();

    let err = client
        .change_stage(&won, &LifecycleAction::Lose { reason: None })
        .await
        .unwrap_err();
    assert!(matches!(err, PartnerCenterError::Transition(_)), "{err:?}");
    assert_eq!(err.directive(), RetryDirective::Permanent);
    let err = client
        .change_stage(&inbound, &LifecycleAction::Win)
        .await
        .unwrap_err();
    assert!(matches!(err, PartnerCenterError::Transition(_)), "{err:?}");
    let err = client
        .change_stage(&inbound, &LifecycleAction::Decline { reason: " ".into() })
        .await
        .unwrap_err();
    assert!(matches!(err, PartnerCenterError::Transition(_)), "{err:?}");
    let err = client
        .change_stage(&unknown, &LifecycleAction::Win)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PartnerCenterError::UnknownStage { .. }),
        "{err:?}"
    );
    let mut no_etag = inbound.clone();
    no_etag.e_tag = None;
    let err = client
        .change_stage(&no_etag, &LifecycleAction::Accept)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PartnerCenterError::MissingETag { .. }),
        "{err:?}"
    );

    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn favorites_are_patched_with_if_match() {
    let (server, client, _) = setup().await;
    Mock::given(method("PATCH"))
        .and(path(format!("{REFERRALS}/{NEW_ID}")))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let referral = Referral::from_json(fixture_json("referral_new_pending.json")).unwrap();
    client.set_favorite(&referral, true).await.unwrap();
    client.set_favorite(&referral, false).await.unwrap();
    let reqs = requests_to(&server, "PATCH", &format!("{REFERRALS}/{NEW_ID}")).await;
    assert_eq!(header(&reqs[0], "if-match"), Some(NEW_ETAG));
    assert_eq!(
        reqs[0].body_json::<Value>().unwrap(),
        json!([{"op": "replace", "path": "/favorite", "value": true}])
    );
    assert_eq!(
        reqs[1].body_json::<Value>().unwrap(),
        json!([{"op": "replace", "path": "/favorite", "value": false}])
    );
}

#[tokio::test]
async fn a_created_deal_is_found_by_its_crm_id_among_outgoing_referrals() {
    let (server, client, _) = setup().await;
    let mut own = fixture_json("referral_closed_won.json");
    own["externalReferenceId"] = json!("OPP-0042");
    own["createdDateTime"] = json!("2026-01-05T10:00:00Z");
    let mut microsoft_copy = own.clone();
    microsoft_copy["id"] = json!("ms-copy");
    microsoft_copy["createdDateTime"] = json!("2026-01-05T09:59:00Z");
    microsoft_copy["target"] = json!([{"type": "BusinessProfileLocation", "id": "msft"}]);
    let other = fixture_json("referral_active_accepted.json");
    Mock::given(method("GET"))
        .and(path(REFERRALS))
        .and(wiremock::matchers::query_param(
            "$filter",
            "updatedDateTime ge 2026-01-05T09:58:00Z and direction eq 'Outgoing'",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [other, microsoft_copy],
            "@odata.nextLink": format!("{}{REFERRALS}?$skiptoken=p2", server.uri())})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(REFERRALS))
        .and(wiremock::matchers::query_param("$skiptoken", "p2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [own]})))
        .mount(&server)
        .await;
    let since = Utc.with_ymd_and_hms(2026, 1, 5, 9, 58, 0).unwrap();
    let found = client
        .find_outgoing_by_external_reference("OPP-0042", since)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found.id, "5b7c1e2d-9a8b-4c3d-8e1f-2a3b4c5d6e7f",
        "the partner's own referral, not Microsoft's copy"
    );
    assert_eq!(
        client
            .find_outgoing_by_external_reference("OPP-404", since)
            .await
            .unwrap(),
        None
    );
    for r in server.received_requests().await.unwrap() {
        assert!(
            !r.url.as_str().contains("externalReferenceId"),
            "not a documented filter field"
        );
    }
}

#[tokio::test]
async fn an_unreadable_record_carrying_our_crm_id_stops_the_lookup() {
    let (server, client, _) = setup().await;
    let mut bad = fixture_json("referral_malformed.json");
    bad["externalReferenceId"] = json!("OPP-0042");
    Mock::given(method("GET"))
        .and(path(REFERRALS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [bad]})))
        .mount(&server)
        .await;
    let since = Utc.with_ymd_and_hms(2026, 1, 5, 9, 58, 0).unwrap();
    let err = client
        .find_outgoing_by_external_reference("OPP-0042", since)
        .await
        .unwrap_err();
    assert!(matches!(err, PartnerCenterError::Unreadable(_)), "{err:?}");
}

#[tokio::test]
async fn an_unreadable_create_response_is_retriable_so_the_deal_is_looked_up_not_quarantined() {
    let (server, client, _) = setup().await;
    Mock::given(method("POST"))
        .and(path(REFERRALS))
        .respond_with(ResponseTemplate::new(201).set_body_string("<html>created</html>"))
        .mount(&server)
        .await;
    let err = client.create_deal(&private_draft()).await.unwrap_err();
    assert!(
        matches!(err, PartnerCenterError::UnexpectedResponse { .. }),
        "{err:?}"
    );
    assert_eq!(err.directive(), RetryDirective::Backoff);
    assert_eq!(requests_to(&server, "POST", REFERRALS).await.len(), 1);
}

#[test]
fn the_client_and_its_futures_can_cross_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let server_less = cosell_sync::partner_center::PartnerCenterOptions::microsoft("app");
    let store = std::sync::Arc::new(cosell_sync::partner_center::MemoryRefreshTokenStore::new(
        None,
    ));
    let client = cosell_sync::partner_center::PartnerCenterClient::new(server_less, store).unwrap();
    send_sync(&client);
    let draft = private_draft();
    send(client.get("x"));
    send(client.create_deal(&draft));
    send(client.patch("x", "e", &[]));
    send(client.change_stage(&draft, &LifecycleAction::Accept));
    send(client.find_outgoing_by_external_reference("x", Utc::now()));
    let mut pager = client.list_changes(Utc::now(), Default::default());
    send(pager.next_page());
    let err = PartnerCenterError::DeviceCodeExpired;
    send_sync(&err);
}
