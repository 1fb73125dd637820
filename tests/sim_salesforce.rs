//! The Salesforce fake through raw HTTP: token endpoint and instance_url,
//! SOQL subset with nextRecordsUrl paging, collections upsert limits and
//! per-record errors, describe, OpportunityStage, Sforce-Limit-Info and the
//! daily limit.

mod sim_support;

use cosell_sync::sim::{SimHandle, creds};
use serde_json::{Value, json};
use sim_support::*;

async fn get(
    url: &str,
    token: &str,
    batch: Option<usize>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client().get(url).bearer_auth(token);
    if let Some(b) = batch {
        req = req.header("Sforce-Query-Options", format!("batchSize={b}"));
    }
    let r = req.send().await.unwrap();
    (
        r.status().as_u16(),
        r.headers().clone(),
        r.json().await.unwrap_or(Value::Null),
    )
}

fn query_url(instance: &str, soql: &str) -> String {
    let mut u = reqwest::Url::parse(&format!("{instance}/services/data/v62.0/query")).unwrap();
    u.query_pairs_mut().append_pair("q", soql);
    u.to_string()
}

#[tokio::test(start_paused = true)]
async fn token_endpoint_returns_an_instance_url_and_refuses_bad_clients() {
    let sim = start().await;
    let (token, instance) = sf_session(&sim).await;
    assert_eq!(instance, sim.urls().salesforce);
    assert!(token.contains('!'));
    let url = format!("{}/services/oauth2/token", sim.urls().salesforce);
    let (status, body) = form(
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", creds::SALESFORCE_CLIENT_ID),
            ("client_secret", "nope"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = form(&url, &[("grant_type", "password")]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "unsupported_grant_type");

    // JWT bearer: claims are checked.
    let exp = chrono::Utc::now().timestamp() + 180;
    let jwt = |iss: &str, sub: &str, aud: &str| {
        let key = jsonwebtoken::EncodingKey::from_secret(b"unchecked-without-a-configured-key");
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"iss": iss, "sub": sub, "aud": aud, "exp": exp}),
            &key,
        )
        .unwrap()
    };
    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let good = jwt(
        creds::SALESFORCE_CLIENT_ID,
        creds::SALESFORCE_USERNAME,
        "https://login.salesforce.com",
    );
    let (status, body) = form(&url, &[("grant_type", grant), ("assertion", &good)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instance_url"], sim.urls().salesforce.as_str());
    let wrong_aud = jwt(
        creds::SALESFORCE_CLIENT_ID,
        creds::SALESFORCE_USERNAME,
        "https://elsewhere.example",
    );
    let (status, body) = form(&url, &[("grant_type", grant), ("assertion", &wrong_aud)]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");

    let (status, _, body) = get(
        &format!("{instance}/services/data/v62.0/sobjects/Opportunity/describe"),
        "bogus",
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body[0]["errorCode"], "INVALID_SESSION_ID");
}

#[tokio::test(start_paused = true)]
async fn queries_page_with_next_records_url() {
    let sim = cosell_sync::sim::Simulator::start(cosell_sync::sim::SimOptions {
        crm_opportunities: Some(450),
        ..opts()
    })
    .await
    .unwrap();
    let (token, instance) = sf_session(&sim).await;
    let soql = "SELECT Id, Name, StageName, SystemModstamp, Referral_Identifier__c FROM Opportunity WHERE SystemModstamp >= 2025-01-01T00:00:00Z ORDER BY SystemModstamp ASC";
    let (status, headers, first) = get(&query_url(&instance, soql), &token, Some(200)).await;
    assert_eq!(status, 200, "{first}");
    assert!(
        headers["sforce-limit-info"]
            .to_str()
            .unwrap()
            .starts_with("api-usage=")
    );
    assert_eq!(first["totalSize"], 450);
    assert_eq!(first["done"], false);
    let rec = &first["records"][0];
    assert_eq!(rec["attributes"]["type"], "Opportunity");
    assert!(rec["SystemModstamp"].as_str().unwrap().ends_with("+0000"));
    let mut all: Vec<Value> = first["records"].as_array().unwrap().clone();
    let mut next = first["nextRecordsUrl"].as_str().map(str::to_owned);
    while let Some(path) = next {
        assert!(path.starts_with("/services/data/v62.0/query/"));
        let (status, _, page) = get(&format!("{instance}{path}"), &token, None).await;
        assert_eq!(status, 200);
        all.extend(page["records"].as_array().unwrap().iter().cloned());
        next = page["nextRecordsUrl"].as_str().map(str::to_owned);
    }
    assert_eq!(all.len(), 450);
    let stamps: Vec<&str> = all
        .iter()
        .map(|r| r["SystemModstamp"].as_str().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]));

    for (bad, code) in [
        ("SELECT Id FROM Opportunity WHERE", "MALFORMED_QUERY"),
        (
            "SELECT Id FROM Opportunity GROUP BY Name",
            "MALFORMED_QUERY",
        ),
        ("SELECT Nope__c FROM Opportunity", "INVALID_FIELD"),
        (
            "SELECT Id FROM Opportunity WHERE SystemModstamp > '2025-01-01T00:00:00Z'",
            "INVALID_QUERY_FILTER_OPERATOR",
        ),
        ("SELECT Id FROM Widget__c", "INVALID_TYPE"),
    ] {
        let (status, _, body) = get(&query_url(&instance, bad), &token, None).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body[0]["errorCode"], code, "{bad}");
    }

    let (status, _, stages) = get(&query_url(&instance, "SELECT ApiName, IsClosed, IsWon, DefaultProbability FROM OpportunityStage WHERE IsActive = true ORDER BY SortOrder"), &token, None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = stages["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ApiName"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"Prospecting"));
    assert!(
        stages["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ApiName"] == "Closed Won" && r["IsWon"] == true)
    );
}

fn upsert_url(instance: &str) -> String {
    format!("{instance}/services/data/v62.0/composite/sobjects/Opportunity/Referral_Identifier__c")
}

fn record(i: usize) -> Value {
    json!({"attributes": {"type": "Opportunity"}, "Referral_Identifier__c": format!("ref-{i}"), "Name": format!("Deal {i}"),
           "StageName": "Qualification", "CloseDate": "2025-09-30", "Amount": 1000 * i})
}

async fn patch(url: &str, token: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .patch(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(start_paused = true)]
async fn collections_upsert_by_external_id_with_per_record_results() {
    let sim = start().await;
    let (token, instance) = sf_session(&sim).await;
    let url = upsert_url(&instance);
    let (status, body) = patch(
        &url,
        &token,
        &json!({"allOrNone": false, "records": [record(1), record(2)]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["success"], true);
    assert_eq!(body[0]["created"], true);
    assert!(body[0]["id"].as_str().unwrap().starts_with("006"));

    let mut changed = record(1);
    changed["StageName"] = json!("Closed Won");
    let mut unknown = record(3);
    unknown["Bogus__c"] = json!("x");
    let mut bad_stage = record(4);
    bad_stage["StageName"] = json!("Signed");
    let (status, body) = patch(
        &url,
        &token,
        &json!({"allOrNone": false, "records": [changed, unknown, bad_stage]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["success"], true);
    assert_eq!(body[0]["created"], false);
    assert_eq!(body[1]["success"], false);
    assert_eq!(body[1]["errors"][0]["statusCode"], "INVALID_FIELD");
    assert_eq!(
        body[2]["errors"][0]["statusCode"],
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    );
    let won = sim
        .state()
        .salesforce_opportunity_by_referral("ref-1")
        .unwrap();
    assert_eq!(won["IsWon"], true);
    assert_eq!(won["IsClosed"], true);

    // allOrNone: one bad record rolls back the rest.
    let mut good = record(5);
    good["Name"] = json!("would be created");
    let mut missing = record(6);
    missing.as_object_mut().unwrap().remove("CloseDate");
    let (status, body) = patch(
        &url,
        &token,
        &json!({"allOrNone": true, "records": [good, missing]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(body[1]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING");
    assert!(
        sim.state()
            .salesforce_opportunity_by_referral("ref-5")
            .is_none()
    );

    // 201 records in one call: the whole request fails.
    let many: Vec<Value> = (100..301).map(record).collect();
    let (status, body) = patch(&url, &token, &json!({"allOrNone": false, "records": many})).await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "EXCEEDED_ID_LIMIT");
    assert!(
        sim.state()
            .salesforce_opportunity_by_referral("ref-100")
            .is_none()
    );
    let ok: Vec<Value> = (100..300).map(record).collect();
    let (status, _) = patch(&url, &token, &json!({"allOrNone": false, "records": ok})).await;
    assert_eq!(status, 200);

    // Not an External ID field.
    let (status, body) = patch(
        &format!("{instance}/services/data/v62.0/composite/sobjects/Opportunity/Name"),
        &token,
        &json!({"records": [record(7)]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
}

#[tokio::test(start_paused = true)]
async fn single_upsert_describe_and_limits() {
    let sim = start().await;
    let (token, instance) = sf_session(&sim).await;
    let url =
        format!("{instance}/services/data/v62.0/sobjects/Opportunity/Referral_Identifier__c/ref-x");
    let body = json!({"Name": "One", "StageName": "Prospecting", "CloseDate": "2025-08-01"});
    let (status, created) = patch(&url, &token, &body).await;
    assert_eq!(status, 201);
    assert_eq!(created["created"], true);
    let (status, updated) = patch(&url, &token, &json!({"Amount": 5})).await;
    assert_eq!(status, 200);
    assert_eq!(updated["created"], false);

    let (status, _, describe) = get(
        &format!("{instance}/services/data/v62.0/sobjects/Opportunity/describe"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let fields = describe["fields"].as_array().unwrap();
    let ext = fields
        .iter()
        .find(|f| f["name"] == "Referral_Identifier__c")
        .unwrap();
    assert_eq!(ext["externalId"], true);
    let stage = fields.iter().find(|f| f["name"] == "StageName").unwrap();
    assert_eq!(stage["restrictedPicklist"], true);
    assert!(
        stage["picklistValues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["value"] == "Closed Lost")
    );

    sim.state().set_salesforce_daily_limit(1_000);
    sim.state().exhaust_salesforce_daily_limit();
    let (status, headers, body) = get(
        &format!("{instance}/services/data/v62.0/limits"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    assert!(headers.get("retry-after").is_none());
    assert_eq!(headers["sforce-limit-info"], "api-usage=1000/1000");
    sim.clock()
        .advance(std::time::Duration::from_secs(25 * 3600));
    let (token, _) = sf_session(&sim).await;
    let (status, _, body) = get(
        &format!("{instance}/services/data/v62.0/limits"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["DailyApiRequests"]["Max"], 1000);
}

#[tokio::test(start_paused = true)]
async fn a_person_moves_a_stage_and_the_modstamp_moves() {
    let sim: SimHandle = start().await;
    let id = sim.state().salesforce_opportunity_ids()[0].clone();
    let before = sim.state().salesforce_opportunity(&id).unwrap();
    sim.clock().advance(std::time::Duration::from_secs(60));
    let after = sim.state().set_sf_stage(&id, "Closed Lost").unwrap();
    assert!(after["SystemModstamp"].as_str() > before["SystemModstamp"].as_str());
    assert_eq!(after["IsClosed"], true);
    assert_eq!(after["IsWon"], false);
    assert!(sim.state().set_sf_stage(&id, "Made Up").is_err());
}

async fn post(url: &str, token: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(start_paused = true)]
async fn a_standard_org_refuses_the_fields_it_lacks_as_salesforce_does() {
    let sim = start().await;
    let (token, instance) = sf_session(&sim).await;
    let api = format!("{instance}/services/data/v62.0");
    let field_names = |describe: &Value| -> Vec<String> {
        describe["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, _, account) = get(&format!("{api}/sobjects/Account/describe"), &token, None).await;
    assert!(!field_names(&account).contains(&"DunsNumber".to_owned()));
    let (_, _, opp) = get(
        &format!("{api}/sobjects/Opportunity/describe"),
        &token,
        None,
    )
    .await;
    assert!(!field_names(&opp).contains(&"CurrencyIsoCode".to_owned()));

    // A query naming a missing field, in the SELECT or the WHERE: 400 INVALID_FIELD.
    for soql in [
        "SELECT Id, DunsNumber FROM Account",
        "SELECT Id FROM Account WHERE DunsNumber IN ('123456789') OR Name IN ('Contoso')",
    ] {
        let (status, _, body) = get(&query_url(&instance, soql), &token, None).await;
        assert_eq!(status, 400, "{soql}");
        assert_eq!(body[0]["errorCode"], "INVALID_FIELD", "{body}");
        assert!(
            body[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("No such column 'DunsNumber' on entity 'Account'."),
            "{body}"
        );
    }
    // A single-record write: 400 with the error array.
    let (status, body) = post(
        &format!("{api}/sobjects/Account"),
        &token,
        &json!({"Name": "Contoso", "DunsNumber": "123456789"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD", "{body}");
    // sObject Collections: the record with the field fails alone (`statusCode`).
    let (status, body) = post(
        &format!("{api}/composite/sobjects"),
        &token,
        &json!({"allOrNone": false, "records": [
            {"attributes": {"type": "Account"}, "Name": "Contoso", "DunsNumber": "123456789"},
            {"attributes": {"type": "Account"}, "Name": "Fabrikam"}
        ]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["success"], false);
    assert_eq!(
        body[0]["errors"][0]["statusCode"], "INVALID_FIELD",
        "{body}"
    );
    assert_eq!(body[0]["errors"][0]["fields"], json!(["DunsNumber"]));
    assert_eq!(body[1]["success"], true);
    let (status, body) = patch(
        &format!("{api}/composite/sobjects/Opportunity/Referral_Identifier__c"),
        &token,
        &json!({"allOrNone": false, "records": [
            {"attributes": {"type": "Opportunity"}, "Referral_Identifier__c": "R-1", "Name": "Deal",
             "CloseDate": "2027-01-31", "StageName": "Qualification", "CurrencyIsoCode": "EUR"}
        ]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body[0]["errors"][0]["statusCode"], "INVALID_FIELD",
        "{body}"
    );

    // A field removed mid-run (a licence ends) is refused from then on.
    let (status, _, _) = get(
        &query_url(&instance, "SELECT Id, Loss_Reason__c FROM Opportunity"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    sim.state()
        .remove_salesforce_field("Opportunity", "Loss_Reason__c")
        .unwrap();
    let (status, _, body) = get(
        &query_url(&instance, "SELECT Id, Loss_Reason__c FROM Opportunity"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
    assert!(
        sim.state()
            .remove_salesforce_field("Opportunity", "Referral_Identifier__c")
            .is_err(),
        "the referral id field stays"
    );
}
