//! The Salesforce adapter against wiremock, with bodies from fixtures/salesforce/.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use cosell_sync::config::{AccountMatch, SalesforceAuth, SalesforceSettings};
use cosell_sync::crm::salesforce::{FieldKind, JwtClaims, SalesforceCrm};
use cosell_sync::crm::{
    CloseOutcome, CloseRequest, Crm, CrmChange, CrmError, CrmObjectSpec, CustomerRef, RecordKey,
    RecordWrite, Severity,
};
use cosell_sync::http::{ClientSettings, RetryDirective, RetrySettings, Retryable, build_client};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{
    body_partial_json, body_string_contains, header, method, path, query_param,
    query_param_contains,
};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const API: &str = "/services/data/v62.0";
const TOKEN: &str = "00D5g000004TEST!AQ4AQ.client-credentials-token";
const CLIENT_SECRET: &str = "very-secret-consumer-secret-4711";

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/salesforce")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn settings(server: &MockServer) -> SalesforceSettings {
    SalesforceSettings {
        enabled: true,
        login_url: server.uri().parse().unwrap(),
        api_version: "v62.0".into(),
        auth: SalesforceAuth::ClientCredentials,
        client_id: "3MVG9-consumer-key".into(),
        username: String::new(),
        client_secret: Some(SecretString::from(CLIENT_SECRET)),
        private_key: None,
        mapping: "mappings/salesforce.toml".into(),
        batch_size: 200,
        timeout: Duration::from_secs(30),
        limit_pause: Duration::from_secs(15 * 60),
        limit_warn_percent: 80,
        account_match: AccountMatch::DunsThenNamePostalCode,
        duns_field: "DunsNumber".into(),
    }
}

fn spec() -> CrmObjectSpec {
    CrmObjectSpec {
        object: "Opportunity".into(),
        external_id_field: "Referral_Identifier__c".into(),
        sync_flag_field: Some("Sync_with_Partner_Center__c".into()),
        error_field: Some("Partner_Center_Sync_Error__c".into()),
        fields: vec![
            "Name".into(),
            "Amount".into(),
            "CloseDate".into(),
            "Account.Name".into(),
        ],
        stage_values: vec![
            ("StageName".into(), json!("Prospecting")),
            ("StageName".into(), json!("Qualification")),
            ("StageName".into(), json!("Closed Won")),
            ("StageName".into(), json!("Closed Lost")),
        ],
    }
}

/// No timers in the client (tokio's paused clock) and no jitter.
fn retry() -> RetrySettings {
    RetrySettings {
        max_attempts: 3,
        min_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(4),
        max_total: Duration::from_secs(30),
        jitter: false,
    }
}

fn crm_with(settings: SalesforceSettings, spec: CrmObjectSpec) -> SalesforceCrm {
    let http = build_client(&ClientSettings::without_timeouts()).unwrap();
    SalesforceCrm::with_client(&settings, spec, http, retry()).unwrap_or_else(|e| panic!("{e}"))
}

fn crm(server: &MockServer) -> SalesforceCrm {
    crm_with(settings(server), spec())
}

async fn mount_token(server: &MockServer, expect: u64) {
    let body = fixture("token-client-credentials.json").replace("{{INSTANCE_URL}}", &server.uri());
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .expect(expect)
        .mount(server)
        .await;
}

async fn mount_stages(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param_contains("q", "FROM OpportunityStage"))
        .respond_with(json_response(200, fixture_json("opportunity-stages.json")))
        .mount(server)
        .await;
}

/// Opportunity fields of a standard org (no `CurrencyIsoCode`).
const OPPORTUNITY_FIELDS: &[&str] = &[
    "Id",
    "Name",
    "AccountId",
    "Amount",
    "CloseDate",
    "StageName",
    "Description",
    "SystemModstamp",
    "Referral_Identifier__c",
    "Sync_with_Partner_Center__c",
    "Partner_Center_Sync_Error__c",
    "Loss_Reason__c",
];
/// Account fields of a standard org (no `DunsNumber`).
const ACCOUNT_FIELDS: &[&str] = &[
    "Id",
    "Name",
    "BillingStreet",
    "BillingCity",
    "BillingState",
    "BillingPostalCode",
    "BillingCountry",
    "CreatedDate",
];

/// An sObject describe listing `fields` (and `extra`).
fn describe(object: &str, fields: &[&str], extra: &[&str]) -> Value {
    let fields: Vec<Value> = fields
        .iter()
        .chain(extra)
        .map(|f| json!({"name": f, "type": "string", "createable": true, "updateable": true}))
        .collect();
    json!({"name": object, "fields": fields})
}

async fn mount_describe(server: &MockServer, object: &str, body: Value, times: Option<u64>) {
    let mock = Mock::given(method("GET"))
        .and(path(format!("{API}/sobjects/{object}/describe")))
        .respond_with(json_response(200, body));
    match times {
        Some(n) => mock.up_to_n_times(n).expect(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

/// A Data.com, multi-currency org: every field these tests name.
async fn mount_full_org(server: &MockServer) {
    let opp = describe("Opportunity", OPPORTUNITY_FIELDS, &["CurrencyIsoCode"]);
    mount_describe(server, "Opportunity", opp, None).await;
    let account = describe("Account", ACCOUNT_FIELDS, &["DunsNumber"]);
    mount_describe(server, "Account", account, None).await;
}

fn json_response(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("Sforce-Limit-Info", "api-usage=1203/115000")
        .set_body_json(body)
}

fn body_of(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

async fn requests_to(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

// ---- reads ------------------------------------------------------------------

#[tokio::test]
async fn incremental_reads_follow_next_records_url_until_done() {
    let server = MockServer::start().await;
    mount_full_org(&server).await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    let expected = "SELECT Id, SystemModstamp, Referral_Identifier__c, Sync_with_Partner_Center__c, \
        Partner_Center_Sync_Error__c, Name, Amount, CloseDate, Account.Name, StageName FROM Opportunity \
        WHERE SystemModstamp >= 2025-03-01T10:00:00Z AND (Referral_Identifier__c != null OR \
        Sync_with_Partner_Center__c = true) ORDER BY SystemModstamp ASC, Id ASC";
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param("q", expected))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("sforce-query-options", "batchSize=200"))
        .respond_with(json_response(200, fixture_json("query-page-1.json")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query/01gRO0000016PIAYA2-2000")))
        .and(header("sforce-query-options", "batchSize=200"))
        .respond_with(json_response(200, fixture_json("query-page-2.json")))
        .expect(1)
        .mount(&server)
        .await;

    let crm = crm(&server);
    let since = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap();
    let first = crm.read_changes(Some(since), None).await.unwrap();
    assert_eq!(
        first.continuation.as_deref(),
        Some("/services/data/v62.0/query/01gRO0000016PIAYA2-2000")
    );
    assert_eq!(first.changes.len(), 2);
    let CrmChange::Upserted(a) = &first.changes[0] else {
        panic!()
    };
    assert_eq!(a.crm_id, "006J9000003abcdIAA");
    assert_eq!(
        a.referral_id.as_deref(),
        Some("8d1c2f3e-0001-4000-8000-000000000001")
    );
    assert_eq!(a.fields["Account.Name"], json!("Contoso Ltd"));
    assert_eq!(a.fields["Amount"], json!(125000.0));
    assert_eq!(a.modified_at, Some(since));
    assert_eq!(a.version.as_deref(), Some("2025-03-01T10:00:00.000+0000"));
    let CrmChange::Upserted(b) = &first.changes[1] else {
        panic!()
    };
    assert_eq!(b.referral_id, None, "flagged to sync, not linked yet");
    assert_eq!(b.fields["Sync_with_Partner_Center__c"], json!(true));
    assert_eq!(b.fields["Account.Name"], Value::Null);
    assert!(!b.fields.contains_key("SomeNewField__c"));
    assert_eq!(
        first.high_water,
        Some(Utc.with_ymd_and_hms(2025, 3, 2, 8, 30, 0).unwrap())
    );

    let second = crm
        .read_changes(Some(since), first.continuation.as_deref())
        .await
        .unwrap();
    assert_eq!(second.continuation, None);
    assert_eq!(second.changes.len(), 1);
    assert_eq!(
        second.high_water,
        Some(Utc.with_ymd_and_hms(2025, 3, 4, 10, 15, 22).unwrap())
    );
    assert_eq!(crm.api_usage(), Some((1203, 115000)));

    // A continuation pointing anywhere else is refused without a request.
    let err = crm
        .read_changes(
            None,
            Some("https://evil.example/services/data/v62.0/query/x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CrmError::Invalid(_)), "{err}");
}

#[tokio::test]
async fn hostile_values_are_escaped_in_soql() {
    let server = MockServer::start().await;
    mount_full_org(&server).await;
    mount_token(&server, 1).await;
    let hostile = r"O'Brien\' OR Name != '";
    let expected = "SELECT Id, SystemModstamp, Referral_Identifier__c, Sync_with_Partner_Center__c, \
         Partner_Center_Sync_Error__c, Name, Amount, CloseDate, Account.Name, StageName FROM Opportunity \
         WHERE Referral_Identifier__c = 'O\\'Brien\\\\\\' OR Name != \\'' LIMIT 2";
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param("q", expected))
        .respond_with(json_response(
            200,
            json!({"totalSize":0,"done":true,"records":[]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let crm = crm(&server);
    assert_eq!(
        crm.fetch_soql(&RecordKey::Referral(hostile.into())),
        expected
    );
    let found = crm
        .fetch(&RecordKey::Referral(hostile.into()))
        .await
        .unwrap();
    assert_eq!(found, None);

    // The raw query string is percent-encoded: no bare quote or space reaches the URL.
    let sent = requests_to(&server, &format!("{API}/query")).await;
    let raw = sent[0].url.query().unwrap();
    assert!(!raw.contains('\'') && !raw.contains(' '), "{raw}");

    // A customer name goes through the same escaping.
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param(
            "q",
            "SELECT Id, Name, BillingPostalCode, DunsNumber, CreatedDate FROM Account WHERE Name IN ('Acme\\' OR Name != \\'x') ORDER BY CreatedDate ASC",
        ))
        .respond_with(json_response(200, json!({"totalSize":1,"done":true,"records":[
            {"attributes":{"type":"Account"},"Id":"001A","Name":"Acme' OR Name != 'x","BillingPostalCode":"\\","DunsNumber":null,"CreatedDate":"2024-01-01T00:00:00.000+0000"}]})))
        .expect(1)
        .mount(&server)
        .await;
    mount_stages(&server).await;
    Mock::given(method("PATCH"))
        .and(path(format!(
            "{API}/sobjects/Opportunity/Referral_Identifier__c/R-1"
        )))
        .and(body_partial_json(json!({"AccountId": "001A"})))
        .respond_with(json_response(
            200,
            json!({"id":"006X","success":true,"errors":[],"created":false}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let results = crm
        .upsert(&[RecordWrite {
            key: RecordKey::Referral("R-1".into()),
            fields: serde_json::from_value(json!({"Name": "Deal"})).unwrap(),
            if_match: None,
            customer: Some(CustomerRef {
                name: "Acme' OR Name != 'x".into(),
                postal_code: Some("\\".into()),
                ..Default::default()
            }),
        }])
        .await
        .unwrap();
    assert_eq!(results[0].outcome.as_ref().unwrap().crm_id, "006X");
}

// ---- writes -----------------------------------------------------------------

fn write(key: RecordKey, fields: Value) -> RecordWrite {
    RecordWrite {
        key,
        fields: serde_json::from_value(fields).unwrap(),
        if_match: None,
        customer: None,
    }
}

#[tokio::test]
async fn collection_upserts_map_mixed_results_back_to_records() {
    let server = MockServer::start().await;
    mount_full_org(&server).await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    let upsert_path = format!("{API}/composite/sobjects/Opportunity/Referral_Identifier__c");
    Mock::given(method("PATCH"))
        .and(path(upsert_path.as_str()))
        .respond_with(json_response(
            200,
            fixture_json("collection-upsert-mixed.json"),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("{API}/composite/sobjects")))
        .respond_with(json_response(
            200,
            json!([{"id":"006J9000003wxyzIAA","success":true,"errors":[]}]),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let crm = crm(&server);
    let mut writes: Vec<RecordWrite> = (1..=5)
        .map(|i| {
            write(
                RecordKey::Referral(format!("R-{i}")),
                json!({"Name": format!("Deal {i}"), "StageName": "Qualification", "Id": "ignored"}),
            )
        })
        .collect();
    writes.insert(
        2,
        write(
            RecordKey::CrmId("006J9000003wxyzIAA".into()),
            json!({"Referral_Identifier__c": "R-NEW"}),
        ),
    );
    let results = crm.upsert(&writes).await.unwrap();
    assert_eq!(results.len(), 6);
    let keys: Vec<String> = results.iter().map(|r| r.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "referral R-1",
            "referral R-2",
            "record 006J9000003wxyzIAA",
            "referral R-3",
            "referral R-4",
            "referral R-5"
        ]
    );
    let ok = |i: usize| results[i].outcome.as_ref().unwrap();
    assert_eq!(
        (ok(0).crm_id.as_str(), ok(0).created),
        ("006J9000003abcdIAA", false)
    );
    assert_eq!(
        (ok(1).crm_id.as_str(), ok(1).created),
        ("006J9000003zzzzIAA", true)
    );
    assert_eq!(ok(2).crm_id, "006J9000003wxyzIAA");
    match &results[3].outcome {
        Err(CrmError::Record {
            key,
            code,
            fields,
            directive,
            ..
        }) => {
            assert_eq!(key, &RecordKey::Referral("R-3".into()));
            assert_eq!(code, "REQUIRED_FIELD_MISSING");
            assert_eq!(fields, &["CloseDate"]);
            assert_eq!(*directive, RetryDirective::Permanent);
        }
        other => panic!("{other:?}"),
    }
    match &results[4].outcome {
        Err(CrmError::MultipleMatches { ids, .. }) => {
            assert_eq!(ids, &["006J9000003aaaaIAA", "006J9000003bbbbIAA"])
        }
        other => panic!("{other:?}"),
    }
    let lock = results[5].outcome.as_ref().unwrap_err();
    assert_eq!(lock.directive(), RetryDirective::Backoff);

    // The wire format: allOrNone false, attributes.type, the external id on
    // each record, no Id in an upsert; the update by Id carries `id`.
    let sent = requests_to(&server, &upsert_path).await;
    let body = body_of(&sent[0]);
    assert_eq!(body["allOrNone"], json!(false));
    let records = body["records"].as_array().unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(records[0]["attributes"], json!({"type": "Opportunity"}));
    assert_eq!(records[0]["Referral_Identifier__c"], json!("R-1"));
    assert_eq!(records[4]["Referral_Identifier__c"], json!("R-5"));
    assert!(records[0].get("Id").is_none());
    let by_id = body_of(&requests_to(&server, &format!("{API}/composite/sobjects")).await[0]);
    assert_eq!(
        by_id["records"][0],
        json!({"attributes": {"type": "Opportunity"}, "id": "006J9000003wxyzIAA", "Referral_Identifier__c": "R-NEW"})
    );
}

#[tokio::test]
async fn collections_are_chunked_by_batch_size() {
    let server = MockServer::start().await;
    mount_full_org(&server).await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    let upsert_path = format!("{API}/composite/sobjects/Opportunity/Referral_Identifier__c");
    Mock::given(method("PATCH"))
        .and(path(upsert_path.as_str()))
        .respond_with(|r: &Request| {
            let n = body_of(r)["records"].as_array().unwrap().len();
            let items: Vec<Value> = (0..n)
                .map(|i| json!({"id": format!("006{i}"), "success": true, "errors": [], "created": true}))
                .collect();
            ResponseTemplate::new(200).set_body_json(items)
        })
        .expect(3)
        .mount(&server)
        .await;
    let crm = crm(&server);
    let writes: Vec<RecordWrite> = (0..450)
        .map(|i| write(RecordKey::Referral(format!("R-{i}")), json!({"Name": "x"})))
        .collect();
    let results = crm.upsert(&writes).await.unwrap();
    assert_eq!(results.len(), 450);
    assert!(results.iter().all(|r| r.outcome.is_ok()));
    let sizes: Vec<usize> = requests_to(&server, &upsert_path)
        .await
        .iter()
        .map(|r| body_of(r)["records"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [200, 200, 50]);
}

#[tokio::test]
async fn the_single_record_upsert_handles_201_200_204_and_300() {
    let server = MockServer::start().await;
    mount_full_org(&server).await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    let one = |id: &str| format!("{API}/sobjects/Opportunity/Referral_Identifier__c/{id}");
    Mock::given(method("PATCH"))
        .and(path(one("R-new")))
        .respond_with(json_response(
            201,
            json!({"id":"006NEW","success":true,"errors":[],"created":true}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(one("R-old")))
        .respond_with(json_response(
            200,
            json!({"id":"006OLD","success":true,"errors":[],"created":false}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(one("R-legacy")))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param_contains("q", "Referral_Identifier__c = 'R-legacy'"))
        .respond_with(json_response(200, json!({"totalSize":1,"done":true,"records":[
            {"attributes":{"type":"Opportunity"},"Id":"006LEG","SystemModstamp":"2025-03-01T10:00:00.000+0000","Referral_Identifier__c":"R-legacy"}]})))
        .mount(&server)
        .await;
    // A referral id with a slash and a space is one encoded path segment.
    Mock::given(method("PATCH"))
        .and(path(one("R%2Fdup%20x")))
        .respond_with(json_response(
            300,
            json!([
                "/services/data/v62.0/sobjects/Opportunity/006DUP1",
                "/services/data/v62.0/sobjects/Opportunity/006DUP2"
            ]),
        ))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(one("R-bad")))
        .respond_with(json_response(400, json!([{"message":"Close Date: bad value","errorCode":"FIELD_CUSTOM_VALIDATION_EXCEPTION","fields":["CloseDate"]}])))
        .mount(&server)
        .await;

    let crm = crm(&server);
    let fields =
        serde_json::from_value(json!({"Name": "Deal", "Referral_Identifier__c": "dropped"}))
            .unwrap();
    let created = crm
        .upsert_one(&RecordKey::Referral("R-new".into()), &fields)
        .await
        .unwrap();
    assert_eq!((created.crm_id.as_str(), created.created), ("006NEW", true));
    let updated = crm
        .upsert_one(&RecordKey::Referral("R-old".into()), &fields)
        .await
        .unwrap();
    assert_eq!(
        (updated.crm_id.as_str(), updated.created),
        ("006OLD", false)
    );
    let legacy = crm
        .upsert_one(&RecordKey::Referral("R-legacy".into()), &fields)
        .await
        .unwrap();
    assert_eq!((legacy.crm_id.as_str(), legacy.created), ("006LEG", false));
    let err = crm
        .upsert_one(&RecordKey::Referral("R/dup x".into()), &fields)
        .await
        .unwrap_err();
    match &err {
        CrmError::MultipleMatches { ids, .. } => assert_eq!(ids, &["006DUP1", "006DUP2"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.directive(), RetryDirective::Operator);
    assert!(err.to_string().contains("006DUP1, 006DUP2"), "{err}");
    let err = crm
        .upsert_one(&RecordKey::Referral("R-bad".into()), &fields)
        .await
        .unwrap_err();
    match err {
        CrmError::Record {
            code,
            fields,
            directive,
            ..
        } => {
            assert_eq!(code, "FIELD_CUSTOM_VALIDATION_EXCEPTION");
            assert_eq!(fields, ["CloseDate"]);
            assert_eq!(directive, RetryDirective::Permanent);
        }
        other => panic!("{other:?}"),
    }
    // The body never carries the external id (it is in the URL).
    let sent = requests_to(&server, &one("R-new")).await;
    assert_eq!(body_of(&sent[0]), json!({"Name": "Deal"}));
}

#[tokio::test]
async fn a_stale_version_is_a_conflict_and_is_not_written() {
    let server = MockServer::start().await;
    mount_full_org(&server).await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param(
            "q",
            "SELECT Id, Referral_Identifier__c, SystemModstamp FROM Opportunity WHERE Referral_Identifier__c IN ('R-1', 'R-2')",
        ))
        .respond_with(json_response(200, json!({"totalSize":2,"done":true,"records":[
            {"attributes":{"type":"Opportunity"},"Id":"006A","Referral_Identifier__c":"R-1","SystemModstamp":"2025-03-01T10:00:00.000+0000"},
            {"attributes":{"type":"Opportunity"},"Id":"006B","Referral_Identifier__c":"R-2","SystemModstamp":"2025-03-05T09:00:00.000+0000"}]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!(
            "{API}/sobjects/Opportunity/Referral_Identifier__c/R-1"
        )))
        .respond_with(json_response(
            200,
            json!({"id":"006A","success":true,"errors":[],"created":false}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let crm = crm(&server);
    let mut a = write(RecordKey::Referral("R-1".into()), json!({"Name": "a"}));
    a.if_match = Some("2025-03-01T10:00:00Z".into());
    let mut b = write(RecordKey::Referral("R-2".into()), json!({"Name": "b"}));
    b.if_match = Some("2025-03-01T10:00:00.000+0000".into());
    let results = crm.upsert(&[a, b]).await.unwrap();
    assert!(results[0].outcome.is_ok());
    assert!(matches!(results[1].outcome, Err(CrmError::Conflict { .. })));
}

fn account(id: &str, name: &str, postal: Option<&str>, duns: Option<&str>) -> Value {
    json!({"attributes": {"type": "Account"}, "Id": id, "Name": name,
           "BillingPostalCode": postal, "DunsNumber": duns, "CreatedDate": "2024-01-01T00:00:00.000+0000"})
}

fn customer_write(i: usize, c: &CustomerRef) -> RecordWrite {
    let mut w = write(RecordKey::Referral(format!("R-{i}")), json!({"Name": "x"}));
    w.customer = Some(c.clone());
    w
}

async fn account_queries(server: &MockServer) -> Vec<String> {
    requests_to(server, &format!("{API}/query"))
        .await
        .iter()
        .filter_map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "q")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|q| q.contains("FROM Account"))
        .collect()
}

async fn mount_collection_upsert(server: &MockServer, n: usize) {
    let items: Vec<Value> = (0..n)
        .map(
            |i| json!({"id": format!("006{i:03}"), "success": true, "errors": [], "created": true}),
        )
        .collect();
    Mock::given(method("PATCH"))
        .and(path(format!(
            "{API}/composite/sobjects/Opportunity/Referral_Identifier__c"
        )))
        .respond_with(json_response(200, Value::Array(items)))
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn customers_are_found_by_duns_or_created() {
    let server = MockServer::start().await;
    mount_full_org(&server).await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param(
            "q",
            "SELECT Id, Name, BillingPostalCode, DunsNumber, CreatedDate FROM Account \
             WHERE DunsNumber IN ('123456789') OR Name IN ('Contoso', 'Fabrikam', 'CONTOSO') \
             ORDER BY CreatedDate ASC",
        ))
        .respond_with(json_response(
            200,
            json!({"totalSize": 3, "done": true, "records": [
                // Same name, no DUNS: the DUNS match is preferred, so no ambiguity.
                account("001NAME", "Contoso", None, None),
                account("001DUNS", "Contoso Holdings", Some("10115"), Some("123456789")),
                // Another postal code: not this Fabrikam.
                account("001FAB", "Fabrikam", Some("10115"), None),
            ]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/composite/sobjects")))
        .respond_with(json_response(
            200,
            json!([{"id": "001NEW", "success": true, "errors": []}]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    mount_collection_upsert(&server, 4).await;
    let crm = crm(&server);
    let contoso = CustomerRef {
        name: "Contoso".into(),
        duns: Some("123456789".into()),
        ..Default::default()
    };
    let upper = CustomerRef {
        name: "CONTOSO".into(),
        duns: Some("123456789".into()),
        ..Default::default()
    };
    let fabrikam = CustomerRef {
        name: "Fabrikam".into(),
        city: Some("Redmond".into()),
        postal_code: Some("98052".into()),
        country: Some("US".into()),
        ..Default::default()
    };
    let writes: Vec<RecordWrite> = [&contoso, &fabrikam, &fabrikam, &upper]
        .into_iter()
        .enumerate()
        .map(|(i, c)| customer_write(i, c))
        .collect();
    let results = crm.upsert(&writes).await.unwrap();
    assert!(results.iter().all(|r| r.outcome.is_ok()), "{results:?}");
    let created = requests_to(&server, &format!("{API}/composite/sobjects")).await;
    assert_eq!(
        body_of(&created[0]),
        json!({"allOrNone": false, "records": [{"attributes": {"type": "Account"}, "Name": "Fabrikam",
            "BillingCity": "Redmond", "BillingPostalCode": "98052", "BillingCountry": "US"}]})
    );
    let sent = requests_to(
        &server,
        &format!("{API}/composite/sobjects/Opportunity/Referral_Identifier__c"),
    )
    .await;
    let body = body_of(&sent[0]);
    let bound: Vec<&Value> = (0..4).map(|i| &body["records"][i]["AccountId"]).collect();
    assert_eq!(
        bound,
        [
            &json!("001DUNS"),
            &json!("001NEW"),
            &json!("001NEW"),
            &json!("001DUNS")
        ]
    );

    // Remembered: the next call looks nothing up.
    Mock::given(method("PATCH"))
        .and(path(format!(
            "{API}/composite/sobjects/Opportunity/Referral_Identifier__c"
        )))
        .respond_with(json_response(200, json!([{"id":"006A","success":true,"errors":[]},{"id":"006B","success":true,"errors":[]},{"id":"006C","success":true,"errors":[]},{"id":"006D","success":true,"errors":[]}])))
        .with_priority(1)
        .mount(&server)
        .await;
    crm.upsert(&writes).await.unwrap();
    assert_eq!(account_queries(&server).await.len(), 1);
}

#[tokio::test]
async fn an_ambiguous_or_uncreatable_customer_fails_only_its_records() {
    let server = MockServer::start().await;
    mount_full_org(&server).await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param_contains("q", "FROM Account"))
        .respond_with(json_response(
            200,
            json!({"totalSize": 3, "done": true, "records": [
                account("001A", "Alpha", Some("98052"), None),
                account("001B1", "Beta", Some("98052"), None),
                account("001B2", "beta ", Some("98052"), None),
                account("001G", "Gamma", Some("10115"), None),
            ]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/composite/sobjects")))
        .respond_with(json_response(200, json!([
            {"success": false, "errors": [{"statusCode": "STRING_TOO_LONG", "message": "Billing Street: data value too large", "fields": ["BillingStreet"]}]},
            {"id": "001D", "success": true, "errors": []}
        ])))
        .expect(1)
        .mount(&server)
        .await;
    mount_collection_upsert(&server, 2).await;
    let crm = crm(&server);
    let c = |name: &str, postal: &str| CustomerRef {
        name: name.into(),
        postal_code: Some(postal.into()),
        ..Default::default()
    };
    let (alpha, beta, gamma, delta) = (
        c("Alpha", "98052"),
        c("Beta", "98052"),
        c("Gamma", "98052"),
        c("Delta", "98052"),
    );
    let writes: Vec<RecordWrite> = [&alpha, &beta, &gamma, &delta, &beta, &gamma]
        .into_iter()
        .enumerate()
        .map(|(i, c)| customer_write(i, c))
        .collect();
    let results = crm.upsert(&writes).await.unwrap();
    for i in [1, 4] {
        match &results[i].outcome {
            Err(CrmError::Record {
                key,
                code,
                message,
                directive,
                ..
            }) => {
                assert_eq!(key, &RecordKey::Referral(format!("R-{i}")));
                assert_eq!(code, "AMBIGUOUS_ACCOUNT");
                assert!(message.contains("001B1, 001B2"), "{message}");
                assert_eq!(*directive, RetryDirective::Operator);
            }
            other => panic!("{other:?}"),
        }
    }
    for i in [2, 5] {
        match &results[i].outcome {
            Err(CrmError::Record { key, code, .. }) => {
                assert_eq!(key, &RecordKey::Referral(format!("R-{i}")));
                assert_eq!(code, "STRING_TOO_LONG");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(results[0].outcome.is_ok() && results[3].outcome.is_ok());
    // Gamma and Delta were created in one call; only Alpha and Delta's deals were written.
    let created = requests_to(&server, &format!("{API}/composite/sobjects")).await;
    let created = body_of(&created[0]);
    let names: Vec<&Value> = created["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["Name"])
        .collect();
    assert_eq!(names, [&json!("Gamma"), &json!("Delta")]);
    let sent = requests_to(
        &server,
        &format!("{API}/composite/sobjects/Opportunity/Referral_Identifier__c"),
    )
    .await;
    let body = body_of(&sent[0]);
    assert_eq!(body["records"].as_array().unwrap().len(), 2);
    assert_eq!(body["records"][0]["AccountId"], json!("001A"));
    assert_eq!(body["records"][1]["AccountId"], json!("001D"));
}

#[tokio::test]
async fn closing_writes_the_mapped_closed_stage_after_checking_it() {
    let server = MockServer::start().await;
    mount_full_org(&server).await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    Mock::given(method("PATCH"))
        .and(path(format!("{API}/composite/sobjects")))
        .respond_with(json_response(
            200,
            json!([{"id":"006A","success":true,"errors":[]}]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let crm = crm(&server);
    let close = |key: RecordKey, outcome, stage: &str| CloseRequest {
        key,
        outcome,
        fields: serde_json::from_value(
            json!({"StageName": stage, "Loss_Reason__c": "Lost to competitor"}),
        )
        .unwrap(),
        reason: Some("Lost to competitor".into()),
    };
    let results = crm
        .close(vec![
            close(
                RecordKey::CrmId("006B".into()),
                CloseOutcome::Won,
                "Closed Lost",
            ),
            close(
                RecordKey::CrmId("006A".into()),
                CloseOutcome::Lost,
                "Closed Lost",
            ),
            close(
                RecordKey::CrmId("006C".into()),
                CloseOutcome::Won,
                "Qualification",
            ),
        ])
        .await
        .unwrap();
    assert!(matches!(results[0].outcome, Err(CrmError::Invalid(_))));
    assert_eq!(results[1].outcome.as_ref().unwrap().crm_id, "006A");
    assert!(matches!(results[2].outcome, Err(CrmError::Invalid(_))));
    let sent = requests_to(&server, &format!("{API}/composite/sobjects")).await;
    assert_eq!(
        body_of(&sent[0])["records"],
        json!([{"attributes":{"type":"Opportunity"},"id":"006A","StageName":"Closed Lost","Loss_Reason__c":"Lost to competitor"}])
    );
}

// ---- stages and metadata -------------------------------------------------------

#[tokio::test]
async fn a_stage_missing_from_the_org_stops_sync_and_is_named() {
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    let mut spec = spec();
    spec.stage_values
        .push(("StageName".into(), json!("Negotiation/Review")));
    spec.stage_values
        .push(("StageName".into(), json!("Needs Analysis")));
    let crm = crm_with(settings(&server), spec);
    let stages = crm.stages().await.unwrap();
    assert_eq!(stages.len(), 5);
    assert!(stages[3].is_won && stages[3].is_closed);
    let err = crm.read_changes(None, None).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CrmError::Invalid(_)), "{msg}");
    assert!(msg.contains("\"Negotiation/Review\""), "{msg}");
    assert!(
        msg.contains("\"Needs Analysis\"") && msg.contains("inactive"),
        "{msg}"
    );
    assert!(!msg.contains("\"Prospecting\""), "{msg}");
    let err = crm
        .upsert(&[write(RecordKey::Referral("R".into()), json!({}))])
        .await;
    assert!(matches!(err, Err(CrmError::Invalid(_))));
    // Nothing but the stage list was ever read.
    let queries = requests_to(&server, &format!("{API}/query")).await;
    assert_eq!(queries.len(), 1);
}

#[tokio::test]
async fn the_metadata_check_names_every_problem() {
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/sobjects/Opportunity/describe")))
        .respond_with(json_response(
            200,
            fixture_json("describe-opportunity.json"),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/sobjects/Account/describe")))
        .respond_with(json_response(200, fixture_json("describe-account.json")))
        .mount(&server)
        .await;
    let mut spec = spec();
    spec.fields.push("Customer_Country__c".into());
    spec.fields.push("CurrencyIsoCode".into());
    spec.stage_values.push(("StageName".into(), json!("Won")));
    let crm = crm_with(settings(&server), spec).with_field_kinds([
        ("CloseDate".into(), FieldKind::DateTime),
        ("Amount".into(), FieldKind::Number),
    ]);
    let problems = crm.check_metadata().await.unwrap();
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let has = |item: &str, words: &str| {
        assert!(
            problems
                .iter()
                .any(|p| p.item == item && p.message.contains(words)),
            "{item} / {words} not in {shown:#?}"
        )
    };
    has("Opportunity.Customer_Country__c", "no such field");
    has("Opportunity.Referral_Identifier__c", "External ID");
    has("Opportunity.Sync_with_Partner_Center__c", "checkbox");
    has("Opportunity.CloseDate", "date/time");
    has(
        "Opportunity.StageName = \"Won\"",
        "no such opportunity stage",
    );
    has("Account.DunsNumber", "no such field");
    has("Opportunity.CurrencyIsoCode", "multiple currencies");
    assert_eq!(problems.len(), 7, "{shown:#?}");
    // What many orgs lack is a note (the sync does without); a missing custom field is an error.
    let notes: Vec<&str> = problems
        .iter()
        .filter(|p| p.severity == Severity::Note)
        .map(|p| p.item.as_str())
        .collect();
    assert_eq!(
        notes,
        ["Opportunity.CurrencyIsoCode", "Account.DunsNumber"],
        "{shown:#?}"
    );
}

// ---- the org's fields ----------------------------------------------------------

/// Lines of a test's log (at INFO and above), captured for one thread.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

fn invalid_field(object: &str, field: &str) -> Value {
    json!([{"message": format!("No such column '{field}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name."), "errorCode": "INVALID_FIELD"}])
}

fn query_text(r: &Request) -> String {
    r.url
        .query_pairs()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_standard_org_is_described_once_and_never_asked_for_what_it_lacks() {
    let (logs, _guard) = capture_logs();
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    let opp = describe("Opportunity", OPPORTUNITY_FIELDS, &[]);
    mount_describe(&server, "Opportunity", opp, Some(1)).await;
    let account = describe("Account", ACCOUNT_FIELDS, &[]);
    mount_describe(&server, "Account", account, Some(1)).await;
    let select = "SELECT Id, SystemModstamp, Referral_Identifier__c, Sync_with_Partner_Center__c, \
        Partner_Center_Sync_Error__c, Name, Amount, CloseDate, Account.Name, StageName FROM Opportunity";
    let record = json!({"attributes": {"type": "Opportunity"}, "Id": "006A",
        "SystemModstamp": "2025-03-01T10:00:00.000+0000", "Referral_Identifier__c": "R-1", "Name": "Deal"});
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param(
            "q",
            format!(
                "{select} WHERE (Referral_Identifier__c != null OR Sync_with_Partner_Center__c = true) \
                 ORDER BY SystemModstamp ASC, Id ASC"
            ),
        ))
        .respond_with(json_response(
            200,
            json!({"totalSize": 1, "done": true, "records": [record.clone()]}),
        ))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param(
            "q",
            format!("{select} WHERE Referral_Identifier__c = 'R-1' LIMIT 2"),
        ))
        .respond_with(json_response(
            200,
            json!({"totalSize": 1, "done": true, "records": [record]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    // DUNS matching is configured, but the org has no DUNS field.
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param(
            "q",
            "SELECT Id, Name, BillingPostalCode, CreatedDate FROM Account \
             WHERE Name IN ('Contoso') ORDER BY CreatedDate ASC",
        ))
        .respond_with(json_response(
            200,
            json!({"totalSize": 0, "done": true, "records": []}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/composite/sobjects")))
        .respond_with(json_response(
            200,
            json!([{"id": "001NEW", "success": true, "errors": []}]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let one = |id: &str| format!("{API}/sobjects/Opportunity/Referral_Identifier__c/{id}");
    Mock::given(method("PATCH"))
        .and(path(one("R-1")))
        .respond_with(json_response(
            200,
            json!({"id": "006A", "success": true, "errors": [], "created": false}),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let mut spec = spec();
    spec.fields.push("CurrencyIsoCode".into());
    let crm = crm_with(settings(&server), spec);
    for _ in 0..2 {
        let page = crm.read_changes(None, None).await.unwrap();
        let CrmChange::Upserted(r) = &page.changes[0] else {
            panic!()
        };
        assert_eq!(r.fields["Name"], json!("Deal"));
        assert!(
            !r.fields.contains_key("CurrencyIsoCode"),
            "absent, not null: {r:?}"
        );
    }
    assert!(
        crm.fetch(&RecordKey::Referral("R-1".into()))
            .await
            .unwrap()
            .is_some()
    );
    let mut w = write(
        RecordKey::Referral("R-1".into()),
        json!({"Name": "Deal", "CurrencyIsoCode": "EUR"}),
    );
    w.customer = Some(CustomerRef {
        name: "Contoso".into(),
        duns: Some("123456789".into()),
        postal_code: Some("98052".into()),
        ..Default::default()
    });
    let results = crm.upsert(&[w]).await.unwrap();
    assert!(results[0].outcome.is_ok(), "{results:?}");

    let created = requests_to(&server, &format!("{API}/composite/sobjects")).await;
    assert_eq!(
        body_of(&created[0]),
        json!({"allOrNone": false, "records": [{"attributes": {"type": "Account"},
            "Name": "Contoso", "BillingPostalCode": "98052"}]})
    );
    let upserted = requests_to(&server, &one("R-1")).await;
    assert_eq!(
        body_of(&upserted[0]),
        json!({"Name": "Deal", "AccountId": "001NEW"})
    );
    for r in server.received_requests().await.unwrap() {
        let seen = format!("{} {}", r.url, String::from_utf8_lossy(&r.body));
        assert!(
            !seen.contains("DunsNumber") && !seen.contains("CurrencyIsoCode"),
            "{seen}"
        );
    }
    // Said once each, however many calls.
    let text = logs.text();
    assert_eq!(
        text.matches("the Salesforce org has no Opportunity.CurrencyIsoCode")
            .count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("the Salesforce org has no Account DUNS field")
            .count(),
        1,
        "{text}"
    );
    assert!(text.contains("field=DunsNumber"), "{text}");
}

#[tokio::test]
async fn without_its_external_id_field_the_org_cannot_be_synced() {
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    let fields: Vec<&str> = OPPORTUNITY_FIELDS
        .iter()
        .copied()
        .filter(|f| *f != "Referral_Identifier__c")
        .collect();
    mount_describe(
        &server,
        "Opportunity",
        describe("Opportunity", &fields, &[]),
        None,
    )
    .await;
    let crm = crm(&server);
    for err in [
        crm.read_changes(None, None).await.unwrap_err(),
        crm.upsert(&[write(
            RecordKey::Referral("R-1".into()),
            json!({"Name": "x"}),
        )])
        .await
        .unwrap_err(),
    ] {
        match err {
            CrmError::Invalid(m) => assert!(m.contains("Referral_Identifier__c"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    // Nothing but the stages and the describe was asked.
    assert_eq!(requests_to(&server, &format!("{API}/query")).await.len(), 1);
}

#[tokio::test]
async fn a_refused_query_has_the_object_described_again_and_is_sent_once_more() {
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    // Described with the fields, which are then removed from the org.
    let full = describe("Opportunity", OPPORTUNITY_FIELDS, &["CurrencyIsoCode"]);
    mount_describe(&server, "Opportunity", full, Some(1)).await;
    let standard = describe("Opportunity", OPPORTUNITY_FIELDS, &[]);
    mount_describe(&server, "Opportunity", standard, Some(1)).await;
    let full = describe("Account", ACCOUNT_FIELDS, &["DunsNumber"]);
    mount_describe(&server, "Account", full, Some(1)).await;
    let standard = describe("Account", ACCOUNT_FIELDS, &[]);
    mount_describe(&server, "Account", standard, Some(1)).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param_contains("q", "CurrencyIsoCode"))
        .respond_with(json_response(
            400,
            invalid_field("Opportunity", "CurrencyIsoCode"),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param_contains("q", "DunsNumber"))
        .respond_with(json_response(400, invalid_field("Account", "DunsNumber")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param_contains("q", "FROM Opportunity"))
        .respond_with(json_response(
            200,
            json!({"totalSize": 0, "done": true, "records": []}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param(
            "q",
            "SELECT Id, Name, BillingPostalCode, CreatedDate FROM Account \
             WHERE Name IN ('Contoso') ORDER BY CreatedDate ASC",
        ))
        .respond_with(json_response(
            200,
            json!({"totalSize": 1, "done": true, "records": [account("001C", "Contoso", None, None)]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let one = format!("{API}/sobjects/Opportunity/Referral_Identifier__c/R-1");
    Mock::given(method("PATCH"))
        .and(path(one.as_str()))
        .respond_with(json_response(
            200,
            json!({"id": "006A", "success": true, "errors": [], "created": false}),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let mut spec = spec();
    spec.fields.push("CurrencyIsoCode".into());
    let crm = crm_with(settings(&server), spec);
    let page = crm.read_changes(None, None).await.unwrap();
    assert!(page.changes.is_empty());
    let mut w = write(
        RecordKey::Referral("R-1".into()),
        json!({"Name": "Deal", "CurrencyIsoCode": "EUR"}),
    );
    w.customer = Some(CustomerRef {
        name: "Contoso".into(),
        duns: Some("123456789".into()),
        ..Default::default()
    });
    let results = crm.upsert(&[w]).await.unwrap();
    assert!(results[0].outcome.is_ok(), "{results:?}");
    assert_eq!(
        body_of(&requests_to(&server, &one).await[0]),
        json!({"Name": "Deal", "AccountId": "001C"})
    );
    // Each refused query was followed by a describe, then the query without the field.
    let log: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() != "/services/oauth2/token")
        .map(|r| {
            let q = query_text(r);
            if q.is_empty() {
                r.url.path().to_owned()
            } else {
                q
            }
        })
        .collect();
    for (field, object) in [
        ("CurrencyIsoCode", "Opportunity"),
        ("DunsNumber", "Account"),
    ] {
        let at = log.iter().position(|l| l.contains(field)).unwrap();
        assert_eq!(
            log[at + 1],
            format!("{API}/sobjects/{object}/describe"),
            "{log:#?}"
        );
        assert!(
            log[at + 2].contains(&format!("FROM {object}")) && !log[at + 2].contains(field),
            "{log:#?}"
        );
    }
}

#[tokio::test]
async fn writes_refused_for_a_removed_field_are_sent_once_more_without_it() {
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    let full = describe("Opportunity", OPPORTUNITY_FIELDS, &["CurrencyIsoCode"]);
    mount_describe(&server, "Opportunity", full, Some(1)).await;
    let standard = describe("Opportunity", OPPORTUNITY_FIELDS, &[]);
    mount_describe(&server, "Opportunity", standard, Some(1)).await;
    let full = describe("Account", ACCOUNT_FIELDS, &["DunsNumber"]);
    mount_describe(&server, "Account", full, Some(1)).await;
    let standard = describe("Account", ACCOUNT_FIELDS, &[]);
    mount_describe(&server, "Account", standard, Some(1)).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param_contains("q", "FROM Account"))
        .respond_with(json_response(
            200,
            json!({"totalSize": 0, "done": true, "records": []}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    // Salesforce refuses every record naming a field the org no longer has;
    // Loss_Reason__c is refused although describe lists it (a different cause).
    let refuse = |records: &[Value], object: &str| -> Vec<Value> {
        records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let bad = ["CurrencyIsoCode", "DunsNumber", "Loss_Reason__c"]
                    .into_iter()
                    .find(|f| r.get(*f).is_some());
                match bad {
                    Some(f) => json!({"success": false, "errors": [{"statusCode": "INVALID_FIELD",
                        "message": format!("No such column '{f}' on sobject of type {object}"), "fields": [f]}]}),
                    None => json!({"id": format!("{}{i}", &object[..3]), "success": true, "errors": [], "created": true}),
                }
            })
            .collect()
    };
    Mock::given(method("POST"))
        .and(path(format!("{API}/composite/sobjects")))
        .respond_with(move |r: &Request| {
            let records = body_of(r)["records"].as_array().unwrap().clone();
            ResponseTemplate::new(200).set_body_json(refuse(&records, "Account"))
        })
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!(
            "{API}/composite/sobjects/Opportunity/Referral_Identifier__c"
        )))
        .respond_with(move |r: &Request| {
            let records = body_of(r)["records"].as_array().unwrap().clone();
            ResponseTemplate::new(200).set_body_json(refuse(&records, "Opportunity"))
        })
        .expect(2)
        .mount(&server)
        .await;

    let crm = crm(&server);
    let customer = CustomerRef {
        name: "Contoso".into(),
        duns: Some("123456789".into()),
        ..Default::default()
    };
    let mut writes = vec![
        write(
            RecordKey::Referral("R-1".into()),
            json!({"Name": "One", "CurrencyIsoCode": "EUR"}),
        ),
        write(
            RecordKey::Referral("R-2".into()),
            json!({"Name": "Two", "CurrencyIsoCode": "USD"}),
        ),
        write(
            RecordKey::Referral("R-3".into()),
            json!({"Name": "Three", "Loss_Reason__c": "x"}),
        ),
    ];
    writes[0].customer = Some(customer);
    let results = crm.upsert(&writes).await.unwrap();
    assert!(results[0].outcome.is_ok(), "{results:?}");
    assert!(results[1].outcome.is_ok(), "{results:?}");
    match &results[2].outcome {
        Err(CrmError::Record { code, .. }) => assert_eq!(code, "INVALID_FIELD"),
        other => panic!("not sent again, its fields did not change: {other:?}"),
    }

    let accounts = requests_to(&server, &format!("{API}/composite/sobjects")).await;
    assert_eq!(
        body_of(&accounts[0])["records"][0]["DunsNumber"],
        "123456789"
    );
    assert_eq!(
        body_of(&accounts[1])["records"],
        json!([{"attributes": {"type": "Account"}, "Name": "Contoso"}])
    );
    let sent = requests_to(
        &server,
        &format!("{API}/composite/sobjects/Opportunity/Referral_Identifier__c"),
    )
    .await;
    assert_eq!(body_of(&sent[0])["records"].as_array().unwrap().len(), 3);
    let again = body_of(&sent[1]);
    let again = again["records"].as_array().unwrap();
    let names: Vec<&Value> = again.iter().map(|r| &r["Name"]).collect();
    assert_eq!(names, [&json!("One"), &json!("Two")]);
    assert!(again.iter().all(|r| r.get("CurrencyIsoCode").is_none()));
    assert_eq!(again[0]["AccountId"], "Acc0");
}

// ---- auth -----------------------------------------------------------------------

#[tokio::test]
async fn a_401_invalid_session_gets_one_new_token_then_succeeds() {
    let server = MockServer::start().await;
    mount_token(&server, 2).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .respond_with(json_response(
            401,
            fixture_json("error-invalid-session.json"),
        ))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    mount_stages(&server).await;
    let crm = crm(&server);
    assert_eq!(crm.stages().await.unwrap().len(), 5);

    // A 401 that persists after the new token is an operator problem, not a loop.
    let server = MockServer::start().await;
    mount_token(&server, 2).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .respond_with(json_response(
            401,
            fixture_json("error-invalid-session.json"),
        ))
        .expect(2)
        .mount(&server)
        .await;
    let crm = crm_with(settings(&server), spec());
    let err = crm.stages().await.unwrap_err();
    assert_eq!(err.directive(), RetryDirective::Operator, "{err}");
    assert!(err.to_string().contains("INVALID_SESSION_ID"), "{err}");
}

#[tokio::test]
async fn a_rejected_sign_in_is_an_operator_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error":"invalid_client_id","error_description":"client identifier invalid"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let crm = crm(&server);
    let err = crm.stages().await.unwrap_err();
    assert!(
        matches!(
            err,
            CrmError::Auth {
                needs_operator: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("invalid_client_id"), "{err}");
}

#[test]
fn client_credentials_on_the_generic_login_host_is_refused() {
    let mut s = SalesforceSettings {
        login_url: "https://login.salesforce.com".parse().unwrap(),
        ..settings_offline()
    };
    let err = SalesforceCrm::new(&s, spec()).unwrap_err();
    assert!(err.to_string().contains("My Domain"), "{err}");
    s.login_url = "https://contoso.my.salesforce.com".parse().unwrap();
    assert!(SalesforceCrm::new(&s, spec()).is_ok());
    let mut bad = spec();
    bad.fields.push("Name, (SELECT Id FROM Contacts)".into());
    assert!(matches!(
        SalesforceCrm::new(&s, bad),
        Err(CrmError::Invalid(_))
    ));
}

fn settings_offline() -> SalesforceSettings {
    SalesforceSettings {
        enabled: true,
        login_url: "https://contoso.my.salesforce.com".parse().unwrap(),
        api_version: "v62.0".into(),
        auth: SalesforceAuth::ClientCredentials,
        client_id: "3MVG9-consumer-key".into(),
        username: String::new(),
        client_secret: Some(SecretString::from(CLIENT_SECRET)),
        private_key: None,
        mapping: "mappings/salesforce.toml".into(),
        batch_size: 200,
        timeout: Duration::from_secs(30),
        limit_pause: Duration::from_secs(900),
        limit_warn_percent: 80,
        account_match: AccountMatch::DunsThenNamePostalCode,
        duns_field: "DunsNumber".into(),
    }
}

#[tokio::test]
async fn the_jwt_assertion_is_signed_with_the_key_and_carries_the_claims() {
    let server = MockServer::start().await;
    let private = fixture("test-jwt-private.pem");
    let public = fixture("test-jwt-public.pem");
    let mut s = settings(&server);
    s.auth = SalesforceAuth::JwtBearer;
    s.client_secret = None;
    s.username = "integration@contoso.example".into();
    s.private_key = Some(SecretString::from(private));
    let body = fixture("token-client-credentials.json").replace("{{INSTANCE_URL}}", &server.uri());
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .and(body_string_contains(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    mount_stages(&server).await;
    let crm = crm_with(s, spec());
    crm.stages().await.unwrap();

    let sent = requests_to(&server, "/services/oauth2/token").await;
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&sent[0].body)
        .into_owned()
        .collect();
    let assertion = &form.iter().find(|(k, _)| k == "assertion").unwrap().1;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    let audience = server.uri();
    validation.set_audience(&[audience.as_str()]);
    validation.set_issuer(&["3MVG9-consumer-key"]);
    let decoded = jsonwebtoken::decode::<JwtClaims>(assertion, &key, &validation).unwrap();
    assert_eq!(decoded.header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(decoded.claims.iss, "3MVG9-consumer-key");
    assert_eq!(decoded.claims.sub, "integration@contoso.example");
    assert_eq!(decoded.claims.aud, audience, "no trailing slash");
    let ttl = decoded.claims.exp - Utc::now().timestamp();
    assert!((100..=180).contains(&ttl), "short expiry, got {ttl}s");

    // The signature covers the claims: another subject's claims under this
    // signature fail verification.
    let mut other = settings_offline();
    other.login_url = server.uri().parse().unwrap();
    other.auth = SalesforceAuth::JwtBearer;
    other.username = "admin@contoso.example".into();
    other.private_key = Some(SecretString::from(fixture("test-jwt-private.pem")));
    let other_assertion = SalesforceCrm::new(&other, spec())
        .unwrap()
        .token_source()
        .assertion(Utc::now())
        .unwrap();
    assert!(jsonwebtoken::decode::<JwtClaims>(&other_assertion, &key, &validation).is_ok());
    let parts: Vec<&str> = assertion.split('.').collect();
    let other_parts: Vec<&str> = other_assertion.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    assert!(jsonwebtoken::decode::<JwtClaims>(&forged, &key, &validation).is_err());

    // A broken key is refused up front, without echoing it.
    let mut s = settings(&server);
    s.auth = SalesforceAuth::JwtBearer;
    s.username = "integration@contoso.example".into();
    s.private_key = Some(SecretString::from(
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----",
    ));
    let err = SalesforceCrm::new(&s, spec()).unwrap_err();
    assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    assert!(err.to_string().contains("private_key"), "{err}");
}

// ---- limits -----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn request_limit_exceeded_pauses_salesforce_work_until_the_pause_ends() {
    let server = MockServer::start().await;
    // The token outlives the pause only by its assumed 10 minutes.
    mount_token(&server, 2).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .respond_with(json_response(403, fixture_json("error-request-limit.json")))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    mount_stages(&server).await;
    let crm = crm(&server);
    let before = Utc::now();
    let err = crm.stages().await.unwrap_err();
    let CrmError::Paused { until, reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("REQUEST_LIMIT_EXCEEDED"), "{reason}");
    let pause = (*until - before).num_seconds();
    assert!((899..=901).contains(&pause), "{pause}");
    assert!(matches!(err.directive(), RetryDirective::After(_)));
    assert!(!err.retry_in_place(), "no tight loop");

    // During the pause nothing is sent.
    tokio::time::advance(Duration::from_secs(14 * 60)).await;
    assert!(matches!(crm.stages().await, Err(CrmError::Paused { .. })));
    assert!(matches!(
        crm.read_changes(None, None).await,
        Err(CrmError::Paused { .. })
    ));
    assert!(matches!(
        crm.upsert(&[write(RecordKey::Referral("R".into()), json!({}))])
            .await,
        Err(CrmError::Paused { .. })
    ));
    assert_eq!(requests_to(&server, &format!("{API}/query")).await.len(), 1);

    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(crm.stages().await.unwrap().len(), 5);
}

/// Captures every log line at TRACE.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn usage_is_exposed_and_warned_about_and_secrets_are_never_logged() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    mount_token(&server, 2).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .respond_with(json_response(
            401,
            fixture_json("error-invalid-session.json"),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Sforce-Limit-Info", "api-usage=93000/100000")
                .set_body_json(fixture_json("opportunity-stages.json")),
        )
        .mount(&server)
        .await;
    let crm = crm(&server);
    crm.stages().await.unwrap();
    assert_eq!(crm.api_usage(), Some((93000, 100000)));

    // JWT flow too: the private key must not show up either.
    let jwt_server = MockServer::start().await;
    let body =
        fixture("token-client-credentials.json").replace("{{INSTANCE_URL}}", &jwt_server.uri());
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&jwt_server)
        .await;
    mount_stages(&jwt_server).await;
    let private = fixture("test-jwt-private.pem");
    let mut s = settings(&jwt_server);
    s.auth = SalesforceAuth::JwtBearer;
    s.username = "integration@contoso.example".into();
    s.private_key = Some(SecretString::from(private.clone()));
    let jwt = crm_with(s, spec());
    jwt.stages().await.unwrap();
    let assertion = jwt.token_source().assertion(Utc::now()).unwrap();
    assert!(!format!("{jwt:?}{crm:?}").contains(CLIENT_SECRET));

    let text = logs.text();
    assert!(
        text.contains("above the warning threshold") && text.contains("percent=93"),
        "{text}"
    );
    assert_eq!(
        text.matches("above the warning threshold").count(),
        1,
        "warned once per level"
    );
    for secret in [CLIENT_SECRET, TOKEN, "AQ4AQ", &assertion[..40]] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    let key_line = private.lines().nth(1).unwrap();
    assert!(!text.contains(key_line), "private key leaked");
}

#[tokio::test]
async fn contacts_are_found_by_email_on_the_account_or_created() {
    use cosell_sync::crm::salesforce::ContactRef;
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param_contains("q", "Email = 'jo@contoso.example'"))
        .respond_with(json_response(200, json!({"totalSize":1,"done":true,"records":[{"attributes":{"type":"Contact"},"Id":"003OLD"}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param_contains("q", "Email = 'new@contoso.example'"))
        .respond_with(json_response(
            200,
            json!({"totalSize":0,"done":true,"records":[]}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/sobjects/Contact")))
        .and(body_partial_json(
            json!({"AccountId":"001A","LastName":"New","Email":"new@contoso.example"}),
        ))
        .respond_with(json_response(
            201,
            json!({"id":"003NEW","success":true,"errors":[]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let crm = crm(&server);
    let contact = |email: &str, last: &str| ContactRef {
        first_name: Some("Jo".into()),
        last_name: last.into(),
        email: Some(email.into()),
        phone: None,
    };
    assert_eq!(
        crm.ensure_contact("001A", &contact("jo@contoso.example", "Old"))
            .await
            .unwrap(),
        "003OLD"
    );
    assert_eq!(
        crm.ensure_contact("001A", &contact("new@contoso.example", "New"))
            .await
            .unwrap(),
        "003NEW"
    );
    assert!(matches!(
        crm.ensure_contact("001A", &contact("x@contoso.example", " "))
            .await,
        Err(CrmError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_salesforce_token_request_is_counted_under_the_salesforce_label() {
    use cosell_sync::http::TokenSource;
    let metrics = cosell_sync::ops::metrics::install().unwrap();
    let server = MockServer::start().await;
    mount_token(&server, 1).await;
    // A status no other test of this file gets from its token endpoint.
    let refused = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(
            ResponseTemplate::new(418)
                .set_body_json(json!({"error":"invalid_grant","error_description":"not today"})),
        )
        .expect(1)
        .mount(&refused)
        .await;

    crm(&server).token_source().fetch_token().await.unwrap();
    assert!(crm(&refused).token_source().fetch_token().await.is_err());

    let text = metrics.render();
    assert!(
        text.contains("cosell_sync_api_requests_total{api=\"salesforce\",status=\"418\"} 1"),
        "{text}"
    );
    // Nothing in this test binary talks to Entra ID.
    assert!(!text.contains("api=\"entra_id\""), "{text}");
}

#[tokio::test]
async fn contacts_of_a_call_are_looked_up_once_created_if_missing_and_linked_as_primary() {
    use cosell_sync::crm::ContactRef;
    let server = MockServer::start().await;
    mount_full_org(&server).await;
    mount_token(&server, 1).await;
    mount_stages(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param_contains("q", "FROM Account"))
        .respond_with(json_response(
            200,
            json!({"totalSize": 1, "done": true, "records": [account("001A", "Contoso", None, None)]}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param(
            "q",
            "SELECT Id, AccountId, Email, CreatedDate FROM Contact WHERE AccountId IN ('001A') AND Email IN ('jo@contoso.example', 'new@contoso.example') ORDER BY CreatedDate ASC",
        ))
        .respond_with(json_response(
            200,
            json!({"totalSize": 1, "done": true, "records": [{"attributes": {"type": "Contact"},
                "Id": "003OLD", "AccountId": "001A", "Email": "Jo@Contoso.example",
                "CreatedDate": "2024-01-01T00:00:00.000+0000"}]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(query_param(
            "q",
            "SELECT Id, OpportunityId, ContactId FROM OpportunityContactRole WHERE OpportunityId IN ('006000', '006001')",
        ))
        .respond_with(json_response(
            200,
            json!({"totalSize": 1, "done": true, "records": [{"attributes": {"type": "OpportunityContactRole"},
                "Id": "00KOLD", "OpportunityId": "006000", "ContactId": "003OLD"}]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/composite/sobjects")))
        .and(body_partial_json(json!({"allOrNone": false, "records": [{
            "attributes": {"type": "Contact"}, "AccountId": "001A", "LastName": "New",
            "FirstName": "Jo", "Email": "new@contoso.example"}]})))
        .respond_with(json_response(
            200,
            json!([{"id": "003NEW", "success": true, "errors": []}]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/composite/sobjects")))
        .and(body_partial_json(json!({"allOrNone": false, "records": [{
            "attributes": {"type": "OpportunityContactRole"}, "OpportunityId": "006001",
            "ContactId": "003NEW", "IsPrimary": true}]})))
        .respond_with(json_response(
            200,
            json!([{"id": "00KNEW", "success": true, "errors": []}]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    mount_collection_upsert(&server, 2).await;
    let crm = crm(&server).with_contact_records(true);
    let with_contact = |email: &str, last: &str| CustomerRef {
        name: "Contoso".into(),
        contact: Some(ContactRef {
            first_name: Some("Jo".into()),
            last_name: last.into(),
            email: Some(email.into()),
            phone: None,
        }),
        ..Default::default()
    };
    let writes = vec![
        customer_write(0, &with_contact("jo@contoso.example", "Old")),
        customer_write(1, &with_contact("new@contoso.example", "New")),
    ];
    let results = crm.upsert(&writes).await.unwrap();
    assert!(results.iter().all(|r| r.outcome.is_ok()), "{results:?}");
    assert_eq!(
        requests_to(&server, &format!("{API}/composite/sobjects"))
            .await
            .len(),
        2,
        "one Contact created, one role created"
    );
}
