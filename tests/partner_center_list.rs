//! Listing changes, get by id, error bodies and retries of the Partner Center client.

mod pc_support;

use std::time::{Duration, SystemTime};

use chrono::{TimeZone, Utc};
use cosell_sync::domain::{Direction, ReferralStatus, ReferralSubstatus, Stage};
use cosell_sync::http::{RetryDirective, Retryable};
use cosell_sync::partner_center::{ListFilter, PartnerCenterError};
use pc_support::*;
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

fn since() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap() + chrono::Duration::milliseconds(250)
}

#[tokio::test]
async fn a_multi_page_listing_follows_next_link_and_quarantines_the_bad_record() {
    let (server, client, _) = setup().await;
    Mock::given(method("GET"))
        .and(path(REFERRALS))
        .and(query_param(
            "$filter",
            "updatedDateTime ge 2024-05-01T10:00:00Z and direction eq 'Incoming'",
        ))
        .and(query_param("$orderby", "updatedDateTime asc"))
        .and(query_param("$top", "2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(page_fixture("list_page1.json", &server)),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(REFERRALS))
        .and(query_param("$skiptoken", "k181pEdP0ykypkieJfcxX"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(page_fixture("list_page2.json", &server)),
        )
        .expect(1)
        .mount(&server)
        .await;

    let correlation = Uuid::new_v4();
    let client = client.with_correlation_id(correlation);
    let mut pager = client.list_changes(since(), ListFilter::incoming());

    let first = pager.next_page().await.unwrap().unwrap();
    assert!(first.has_more);
    assert!(first.failures.is_empty());
    let stages: Vec<_> = first
        .referrals
        .iter()
        .map(|r| Stage::from_api(r.status.as_ref().unwrap(), r.substatus.as_ref().unwrap()))
        .collect();
    assert_eq!(stages, vec![Some(Stage::Received), Some(Stage::Accepted)]);
    assert_eq!(first.referrals[0].direction, Some(Direction::Incoming));

    let second = pager.next_page().await.unwrap().unwrap();
    assert!(!second.has_more);
    assert_eq!(
        second.referrals.len(),
        2,
        "the rest of the page is delivered"
    );
    assert_eq!(second.referrals[0].substatus, Some(ReferralSubstatus::Won));
    assert_eq!(
        second.referrals[1].substatus,
        Some(ReferralSubstatus::Other("Engaged".into()))
    );
    assert_eq!(second.failures.len(), 1);
    let bad = &second.failures[0];
    assert_eq!(
        bad.id.as_deref(),
        Some("bad00000-0000-4000-8000-000000000001")
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&bad.raw).unwrap(),
        fixture_json("referral_malformed.json")
    );

    assert!(pager.next_page().await.unwrap().is_none());
    assert!(pager.next_page().await.unwrap().is_none());
    assert_eq!(pager.pages_read(), 2);

    // The exact requests: path, encoded query, headers.
    let requests = requests_to(&server, "GET", REFERRALS).await;
    assert_eq!(requests.len(), 2);
    let q = requests[0].url.query().unwrap();
    assert!(
        q.starts_with(
            "$filter=updatedDateTime%20ge%202024-05-01T10:00:00Z%20and%20direction%20eq%20"
        ),
        "{q}"
    );
    assert!(q.contains("&$orderby=updatedDateTime%20asc&$top=2"), "{q}");
    assert!(!q.contains('+'), "spaces are %20, never +: {q}");
    assert_eq!(
        requests[1].url.query(),
        Some("$skiptoken=k181pEdP0ykypkieJfcxX")
    );
    let mut request_ids = Vec::new();
    for r in &requests {
        assert_eq!(
            header(r, "authorization"),
            Some(format!("Bearer {ACCESS_TOKEN}").as_str())
        );
        assert_eq!(header(r, "accept"), Some("application/json"));
        assert_eq!(
            header(r, "ms-correlationid"),
            Some(correlation.to_string().as_str())
        );
        assert_eq!(
            header(r, "user-agent"),
            Some(format!("cosell-sync/{}", env!("CARGO_PKG_VERSION")).as_str())
        );
        let id = Uuid::parse_str(header(r, "client-request-id").unwrap()).unwrap();
        request_ids.push(id);
    }
    assert_ne!(
        request_ids[0], request_ids[1],
        "a fresh client-request-id per call"
    );
    // One token for both pages.
    assert_eq!(requests_to(&server, "POST", TOKEN_PATH).await.len(), 1);
}

#[tokio::test]
async fn status_and_type_filters_are_combined_with_the_change_window() {
    let (server, client, _) = setup().await;
    Mock::given(method("GET"))
        .and(path(REFERRALS))
        .and(query_param(
            "$filter",
            "updatedDateTime ge 2024-05-01T10:00:00Z and direction eq 'Incoming' and status eq 'New' and substatus eq 'Pending'",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .expect(1)
        .mount(&server)
        .await;
    let filter = ListFilter {
        direction: Some(Direction::Incoming),
        status: Some(ReferralStatus::New),
        substatus: Some(ReferralSubstatus::Pending),
        referral_type: None,
    };
    let mut pager = client.list_changes(since(), filter);
    let page = pager.next_page().await.unwrap().unwrap();
    assert!(page.referrals.is_empty() && !page.has_more);
    assert!(pager.next_page().await.unwrap().is_none());
}

#[tokio::test]
async fn fixtures_read_as_their_lifecycle_stages_and_unknown_values_round_trip() {
    use cosell_sync::domain::Referral;
    let read = |name| Referral::from_json(fixture_json(name)).unwrap();
    let stage =
        |r: &Referral| Stage::from_api(r.status.as_ref().unwrap(), r.substatus.as_ref().unwrap());
    assert_eq!(
        stage(&read("referral_new_pending.json")),
        Some(Stage::Received)
    );
    assert_eq!(
        stage(&read("referral_active_accepted.json")),
        Some(Stage::Accepted)
    );
    assert_eq!(stage(&read("referral_closed_won.json")), Some(Stage::Won));
    let unknown = read("referral_unknown_fields.json");
    assert_eq!(stage(&unknown), None);
    assert_eq!(
        unknown.to_json(),
        fixture_json("referral_unknown_fields.json")
    );
    assert!(Referral::from_json(fixture_json("referral_malformed.json")).is_err());
}

#[tokio::test]
async fn get_reads_one_referral_by_id() {
    let (server, client, _) = setup().await;
    let body = fixture_json("referral_active_accepted.json");
    Mock::given(method("GET"))
        .and(path(format!(
            "{REFERRALS}/a2546b7e-5d1c-4f8e-9a6b-0c3d2e1f4a5b"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(&body))
        .expect(1)
        .mount(&server)
        .await;
    let r = client
        .get("a2546b7e-5d1c-4f8e-9a6b-0c3d2e1f4a5b")
        .await
        .unwrap();
    assert_eq!(
        r.e_tag.as_deref(),
        Some("\"1a008cb8-0000-0800-0000-62191b330000\"")
    );
    assert_eq!(
        r.customer_profile.unwrap().duns().as_deref(),
        Some("315000554")
    );
}

#[tokio::test]
async fn a_missing_referral_is_a_permanent_not_found_with_the_documented_error() {
    let (server, client, _) = setup().await;
    Mock::given(method("GET"))
        .and(path(format!("{REFERRALS}/nope")))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_raw(fixture("error_item_not_found.json"), "application/json"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client.get("nope").await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.directive(), RetryDirective::Permanent);
    let PartnerCenterError::Http(http) = &err else {
        panic!("{err:?}")
    };
    let service = http.service_error().unwrap();
    assert_eq!(service.code, "itemNotFound");
    assert_eq!(service.target.as_deref(), Some("referral"));
    assert!(err.to_string().contains("itemNotFound"), "{err}");
}

#[tokio::test]
async fn other_client_errors_are_permanent_and_not_retried() {
    let (server, client, _) = setup().await;
    Mock::given(method("GET"))
        .and(path(format!("{REFERRALS}/r1")))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_raw(fixture("error_invalid_request.json"), "application/json"),
        )
        .mount(&server)
        .await;
    let err = client.get("r1").await.unwrap_err();
    assert_eq!(err.directive(), RetryDirective::Permanent);
    let PartnerCenterError::Http(http) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        http.service_error().unwrap().codes(),
        vec!["invalidRequest", "validationFailed", "countryCode"]
    );
    assert!(!err.hint().is_empty());
    assert_eq!(
        requests_to(&server, "GET", &format!("{REFERRALS}/r1"))
            .await
            .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_is_retried_after_the_servers_retry_after() {
    let (server, client, _) = setup().await;
    Mock::given(method("GET"))
        .and(path(format!("{REFERRALS}/r1")))
        .respond_with(script(vec![
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "30")
                .set_body_raw(fixture("error_throttled.json"), "application/json"),
            ResponseTemplate::new(200).set_body_json(fixture_json("referral_new_pending.json")),
        ]))
        .mount(&server)
        .await;
    let started = tokio::time::Instant::now();
    let r = client.get("r1").await.unwrap();
    assert_eq!(r.id, "49d90c72-3326-4f61-aacc-2cb57970448c");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    let requests = requests_to(&server, "GET", &format!("{REFERRALS}/r1")).await;
    assert_eq!(requests.len(), 2);
    assert_ne!(
        header(&requests[0], "client-request-id"),
        header(&requests[1], "client-request-id")
    );
}

#[tokio::test(start_paused = true)]
async fn a_503_with_an_http_date_is_retried_at_that_time() {
    let (server, client, _) = setup().await;
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(20));
    Mock::given(method("GET"))
        .and(path(format!("{REFERRALS}/r1")))
        .respond_with(script(vec![
            ResponseTemplate::new(503)
                .insert_header("Retry-After", at.as_str())
                .set_body_raw(
                    fixture("error_service_not_available.json"),
                    "application/json",
                ),
            ResponseTemplate::new(200).set_body_json(fixture_json("referral_new_pending.json")),
        ]))
        .mount(&server)
        .await;
    let started = tokio::time::Instant::now();
    client.get("r1").await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(18) && waited <= Duration::from_secs(20),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn server_errors_back_off_exponentially_within_the_attempt_budget() {
    let (server, client, _) = setup().await;
    Mock::given(method("GET"))
        .and(path(format!("{REFERRALS}/flaky")))
        .respond_with(script(vec![
            ResponseTemplate::new(500),
            ResponseTemplate::new(502),
            ResponseTemplate::new(200).set_body_json(fixture_json("referral_new_pending.json")),
        ]))
        .mount(&server)
        .await;
    let started = tokio::time::Instant::now();
    client.get("flaky").await.unwrap();
    assert_eq!(started.elapsed().as_secs(), 1 + 2);

    Mock::given(method("GET"))
        .and(path(format!("{REFERRALS}/down")))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let started = tokio::time::Instant::now();
    let err = client.get("down").await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.directive(), RetryDirective::Backoff);
    assert_eq!(
        requests_to(&server, "GET", &format!("{REFERRALS}/down"))
            .await
            .len(),
        4
    );
    assert_eq!(started.elapsed().as_secs(), 1 + 2 + 4);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_the_budget_is_handed_back_to_the_caller() {
    let (server, client, _) = setup().await;
    Mock::given(method("GET"))
        .and(path(format!("{REFERRALS}/r1")))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .mount(&server)
        .await;
    let err = client.get("r1").await.unwrap_err();
    assert_eq!(
        err.directive(),
        RetryDirective::After(Duration::from_secs(3600))
    );
    assert_eq!(
        requests_to(&server, "GET", &format!("{REFERRALS}/r1"))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_next_link_to_another_host_is_refused() {
    let (server, client, _) = setup().await;
    Mock::given(method("GET"))
        .and(path(REFERRALS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [], "@odata.nextLink": "https://elsewhere.example/v1.0/referrals?$skiptoken=x"})))
        .mount(&server)
        .await;
    let mut pager = client.list_changes(since(), ListFilter::default());
    let err = pager.next_page().await.unwrap_err();
    assert!(
        matches!(err, PartnerCenterError::UnexpectedResponse { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("refusing to send the token"),
        "{err}"
    );
}

#[tokio::test]
async fn a_page_without_value_is_an_unexpected_response() {
    let (server, client, _) = setup().await;
    Mock::given(method("GET"))
        .and(path(REFERRALS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"items": []})))
        .mount(&server)
        .await;
    let mut pager = client.list_changes(since(), ListFilter::default());
    let err = pager.next_page().await.unwrap_err();
    assert!(err.to_string().contains("no `value` array"), "{err}");
    assert!(
        !pager.is_done(),
        "the same page is asked for again on the next call"
    );
}
