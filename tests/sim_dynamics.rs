//! The Dataverse fake through raw HTTP: audience, paging, alternate-key
//! upsert, conditional headers, unknown columns, Win/LoseOpportunity,
//! change tracking and `$batch`.

mod sim_support;

use cosell_sync::sim::SimHandle;
use serde_json::{Value, json};
use sim_support::*;

fn root(sim: &SimHandle) -> String {
    format!("{}/api/data/v9.2", sim.urls().dynamics)
}

async fn send(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = req
        .header("OData-MaxVersion", "4.0")
        .header("OData-Version", "4.0")
        .header("Accept", "application/json")
        .header("If-None-Match", "null")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(start_paused = true)]
async fn the_token_audience_must_be_the_environment() {
    let sim = start().await;
    let url = format!("{}/opportunities", root(&sim));
    let (status, headers, _) = send(client().get(&url)).await;
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("authorization_uri")
    );
    let pc = pc_token(&sim).await;
    let (status, _, _) = send(client().get(&url).bearer_auth(&pc)).await;
    assert_eq!(status, 401);
    let token = dynamics_token(&sim).await;
    let (status, _, body) = send(client().get(&url).bearer_auth(&token)).await;
    assert_eq!(status, 200);
    assert!(!body["value"].as_array().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn maxpagesize_pages_with_absolute_next_links() {
    let sim = start().await;
    let token = dynamics_token(&sim).await;
    let mut url = format!(
        "{}/opportunities?$select=name,modifiedon,new_referralid&$filter=modifiedon ge 2025-01-01T00:00:00Z&$orderby=modifiedon asc",
        root(&sim)
    );
    let mut seen = Vec::new();
    loop {
        let (status, headers, body) = send(
            client()
                .get(&url)
                .bearer_auth(&token)
                .header("Prefer", "odata.maxpagesize=5"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["preference-applied"], "odata.maxpagesize=5");
        for r in body["value"].as_array().unwrap() {
            assert!(r["@odata.etag"].as_str().unwrap().starts_with("W/\""));
            assert!(r.get("description").is_none(), "only selected columns");
            seen.push(r["opportunityid"].as_str().unwrap().to_owned());
        }
        match body["@odata.nextLink"].as_str() {
            Some(n) => {
                assert!(n.starts_with("http://"));
                url = n.to_owned();
            }
            None => break,
        }
    }
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len());
    assert_eq!(seen.len(), sim.state().dynamics_opportunity_ids().len());

    let (status, _, body) = send(
        client()
            .get(format!("{}/opportunities?$select=bogus", root(&sim)))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("bogus"));
    let (status, _, _) = send(
        client()
            .get(format!(
                "{}/opportunities?$filter=modifiedon ge 'yesterday'",
                root(&sim)
            ))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(start_paused = true)]
async fn alternate_key_upsert_creates_then_updates() {
    let sim = start().await;
    let token = dynamics_token(&sim).await;
    let url = format!(
        "{}/opportunities(new_referralid='ref-0001')?$select=opportunityid,name",
        root(&sim)
    );
    let body = json!({"name": "Contoso - Azure migration", "estimatedvalue": 125000, "estimatedclosedate": "2025-06-30"});
    let (status, headers, created) = send(
        client()
            .patch(&url)
            .bearer_auth(&token)
            .header("Prefer", "return=representation")
            .json(&body),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(headers["etag"].to_str().unwrap().starts_with("W/"));
    let id = created["opportunityid"].as_str().unwrap().to_owned();

    let (status, _, updated) = send(
        client()
            .patch(&url)
            .bearer_auth(&token)
            .header("Prefer", "return=representation")
            .json(&json!({"estimatedvalue": 130000})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(updated["opportunityid"], id);
    let row = sim.state().dynamics_opportunity(&id).unwrap();
    assert_eq!(row["estimatedvalue"], 130000.0);
    assert_eq!(row["new_referralid"], "ref-0001");

    // Without Prefer: 204 and OData-EntityId.
    let (status, headers, _) = send(
        client()
            .patch(&url)
            .bearer_auth(&token)
            .json(&json!({"description": "x"})),
    )
    .await;
    assert_eq!(status, 204);
    assert!(
        headers["odata-entityid"]
            .to_str()
            .unwrap()
            .contains("opportunities(")
    );

    // If-None-Match: * refuses an existing row; If-Match: * refuses a missing one.
    let (status, _, _) = send(
        client()
            .patch(&url)
            .bearer_auth(&token)
            .header("If-None-Match", "*")
            .json(&json!({"name": "y"})),
    )
    .await;
    assert_eq!(status, 412);
    let other = format!("{}/opportunities(new_referralid='ref-missing')", root(&sim));
    let (status, _, _) = send(
        client()
            .patch(&other)
            .bearer_auth(&token)
            .header("If-Match", "*")
            .json(&json!({"name": "y"})),
    )
    .await;
    assert_eq!(status, 404);

    // A stale row version: 412.
    let by_id = format!("{}/opportunities({id})", root(&sim));
    let (status, _, body) = send(
        client()
            .patch(&by_id)
            .bearer_auth(&token)
            .header("If-Match", "W/\"1\"")
            .json(&json!({"name": "z"})),
    )
    .await;
    assert_eq!(status, 412);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RowVersion")
    );

    // Unknown columns, bad choices, long text.
    let (status, _, body) = send(
        client()
            .patch(&by_id)
            .bearer_auth(&token)
            .json(&json!({"new_nosuchcolumn": 1})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "0x80048d19");
    let (status, _, _) = send(
        client()
            .patch(&by_id)
            .bearer_auth(&token)
            .json(&json!({"salesstage": 9})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = send(
        client()
            .patch(&by_id)
            .bearer_auth(&token)
            .json(&json!({"name": "x".repeat(301)})),
    )
    .await;
    assert_eq!(status, 400);
    // An unknown alternate key.
    let (status, _, _) = send(
        client()
            .patch(format!("{}/opportunities(name='x')", root(&sim)))
            .bearer_auth(&token)
            .json(&json!({"name": "y"})),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(start_paused = true)]
async fn win_closes_and_closed_rows_are_read_only() {
    let sim = start().await;
    let token = dynamics_token(&sim).await;
    let id = sim.state().dynamics_opportunity_ids()[0].clone();
    let win = json!({"Status": 3, "OpportunityClose": {"subject": "Won", "opportunityid@odata.bind": format!("/opportunities({id})")}});
    let (status, _, body) = send(
        client()
            .post(format!("{}/WinOpportunity", root(&sim)))
            .bearer_auth(&token)
            .json(&json!({"Status": 4, "OpportunityClose": win["OpportunityClose"]})),
    )
    .await;
    assert_eq!(status, 400, "a lost status cannot win: {body}");
    let (status, _, _) = send(
        client()
            .post(format!("{}/WinOpportunity", root(&sim)))
            .bearer_auth(&token)
            .json(&win),
    )
    .await;
    assert_eq!(status, 204);
    let row = sim.state().dynamics_opportunity(&id).unwrap();
    assert_eq!(row["statecode"], 1);
    assert_eq!(row["statuscode"], 3);
    let (status, _, _) = send(
        client()
            .patch(format!("{}/opportunities({id})", root(&sim)))
            .bearer_auth(&token)
            .json(&json!({"name": "late edit"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = send(
        client()
            .post(format!("{}/WinOpportunity", root(&sim)))
            .bearer_auth(&token)
            .json(&win),
    )
    .await;
    assert_eq!(status, 400);
    // Closing by statecode is refused; reopening is allowed.
    let (status, _, _) = send(
        client()
            .patch(format!("{}/opportunities({id})", root(&sim)))
            .bearer_auth(&token)
            .json(&json!({"statecode": 0, "statuscode": 1})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, _) = send(
        client()
            .patch(format!("{}/opportunities({id})", root(&sim)))
            .bearer_auth(&token)
            .json(&json!({"statecode": 2, "statuscode": 4})),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(start_paused = true)]
async fn change_tracking_returns_changes_and_deletes() {
    let sim = start().await;
    let token = dynamics_token(&sim).await;
    let (status, headers, body) = send(
        client()
            .get(format!("{}/opportunities?$select=name", root(&sim)))
            .bearer_auth(&token)
            .header("Prefer", "odata.track-changes"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers["preference-applied"]
            .to_str()
            .unwrap()
            .contains("odata.track-changes")
    );
    let delta = body["@odata.deltaLink"].as_str().unwrap().to_owned();
    assert!(delta.contains("$deltatoken="));

    let ids = sim.state().dynamics_opportunity_ids();
    sim.state()
        .edit_dynamics(&ids[1], json!({"name": "renamed"}))
        .unwrap();
    let (status, _, _) = send(
        client()
            .delete(format!("{}/opportunities({})", root(&sim), ids[2]))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 204);

    let (status, _, body) = send(client().get(&delta).bearer_auth(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/$delta")
    );
    let items = body["value"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    assert_eq!(items[0]["name"], "renamed");
    assert_eq!(items[1]["reason"], "deleted");
    assert_eq!(items[1]["id"], ids[2].as_str());

    let (status, _, _) = send(
        client()
            .get(format!(
                "{}/opportunities?$filter=statecode eq 0",
                root(&sim)
            ))
            .bearer_auth(&token)
            .header("Prefer", "odata.track-changes"),
    )
    .await;
    assert_eq!(status, 400);
}

fn batch_body(boundary: &str, parts: &[String]) -> String {
    let mut s = String::new();
    for p in parts {
        s.push_str(&format!("--{boundary}\r\n{p}\r\n"));
    }
    s.push_str(&format!("--{boundary}--\r\n"));
    s
}

fn http_part(method: &str, url: &str, body: Option<&Value>, content_id: Option<usize>) -> String {
    let mut s =
        String::from("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n");
    if let Some(id) = content_id {
        s.push_str(&format!("Content-ID: {id}\r\n"));
    }
    s.push_str(&format!("\r\n{method} {url} HTTP/1.1\r\n"));
    match body {
        Some(b) => s.push_str(&format!(
            "Content-Type: application/json; type=entry\r\n\r\n{b}\r\n"
        )),
        None => s.push_str("Accept: application/json\r\n\r\n"),
    }
    s
}

fn changeset(boundary: &str, parts: &[String]) -> String {
    format!(
        "Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n{}",
        batch_body(boundary, parts)
    )
}

async fn post_batch(
    sim: &SimHandle,
    token: &str,
    body: String,
    prefer: Option<&str>,
) -> (u16, String) {
    let mut req = client()
        .post(format!("{}/$batch", root(sim)))
        .bearer_auth(token)
        .header("Content-Type", "multipart/mixed; boundary=\"batch_AAA\"")
        .header("OData-Version", "4.0")
        .body(body);
    if let Some(p) = prefer {
        req = req.header("Prefer", p);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        ct.starts_with("multipart/mixed; boundary=batchresponse_"),
        "{ct}"
    );
    (status, r.text().await.unwrap())
}

#[tokio::test(start_paused = true)]
async fn batch_change_sets_apply_atomically_and_answer_in_order() {
    let sim = start().await;
    let token = dynamics_token(&sim).await;
    let win_target = sim.state().dynamics_opportunity_ids()[4].clone();
    let ok = changeset(
        "changeset_1",
        &[
            http_part(
                "PATCH",
                "/api/data/v9.2/opportunities(new_referralid='b-1')",
                Some(&json!({"name": "Batch one", "estimatedvalue": 1000})),
                Some(1),
            ),
            http_part(
                "PATCH",
                "opportunities(new_referralid='b-2')",
                Some(&json!({"name": "Batch two"})),
                Some(2),
            ),
            http_part(
                "POST",
                "/api/data/v9.2/WinOpportunity",
                Some(
                    &json!({"Status": 3, "OpportunityClose": {"subject": "Won", "opportunityid@odata.bind": format!("/opportunities({win_target})")}}),
                ),
                Some(3),
            ),
        ],
    );
    let get = http_part(
        "GET",
        &format!("{}/opportunities?$select=name&$top=1", root(&sim)),
        None,
        None,
    );
    let (status, text) = post_batch(&sim, &token, batch_body("batch_AAA", &[ok, get]), None).await;
    assert_eq!(status, 200, "{text}");
    let codes: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect();
    assert_eq!(
        codes,
        [
            "HTTP/1.1 204 No Content",
            "HTTP/1.1 204 No Content",
            "HTTP/1.1 204 No Content",
            "HTTP/1.1 200 OK"
        ]
    );
    assert!(text.contains("changesetresponse_"));
    assert!(text.contains("Content-ID: 2"));
    assert!(
        sim.state()
            .dynamics_opportunity_by_referral("b-1")
            .is_some()
    );
    assert_eq!(
        sim.state().dynamics_opportunity(&win_target).unwrap()["statecode"],
        1
    );

    // The second operation fails: the first is rolled back, and processing stops.
    let bad = changeset(
        "changeset_2",
        &[
            http_part(
                "PATCH",
                "opportunities(new_referralid='b-3')",
                Some(&json!({"name": "rolled back"})),
                Some(1),
            ),
            http_part(
                "PATCH",
                "opportunities(new_referralid='b-4')",
                Some(&json!({"no_such_column": 1})),
                Some(2),
            ),
        ],
    );
    let after = changeset(
        "changeset_3",
        &[http_part(
            "PATCH",
            "opportunities(new_referralid='b-5')",
            Some(&json!({"name": "never"})),
            Some(1),
        )],
    );
    let (status, text) = post_batch(
        &sim,
        &token,
        batch_body("batch_AAA", &[bad.clone(), after.clone()]),
        None,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("HTTP/1.1 400 Bad Request"));
    assert!(
        sim.state()
            .dynamics_opportunity_by_referral("b-3")
            .is_none()
    );
    assert!(
        sim.state()
            .dynamics_opportunity_by_referral("b-5")
            .is_none()
    );

    // With continue-on-error the later change set still runs.
    let (status, text) = post_batch(
        &sim,
        &token,
        batch_body("batch_AAA", &[bad, after]),
        Some("odata.continue-on-error"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        sim.state()
            .dynamics_opportunity_by_referral("b-3")
            .is_none()
    );
    assert!(
        sim.state()
            .dynamics_opportunity_by_referral("b-5")
            .is_some()
    );
}

#[tokio::test(start_paused = true)]
async fn batches_over_a_thousand_requests_are_refused() {
    let sim = start().await;
    let token = dynamics_token(&sim).await;
    let parts: Vec<String> = (0..1001)
        .map(|i| {
            http_part(
                "PATCH",
                &format!("opportunities(new_referralid='n-{i}')"),
                Some(&json!({"name": "n"})),
                None,
            )
        })
        .collect();
    let r = client()
        .post(format!("{}/$batch", root(&sim)))
        .bearer_auth(&token)
        .header("Content-Type", "multipart/mixed; boundary=batch_AAA")
        .body(batch_body("batch_AAA", &parts))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        sim.state()
            .dynamics_opportunity_by_referral("n-0")
            .is_none()
    );
    let r = client()
        .post(format!("{}/$batch", root(&sim)))
        .bearer_auth(&token)
        .header("Content-Type", "multipart/mixed; boundary=batch_AAA")
        .body("--batch_AAA\r\nContent-Type: application/http\r\n\r\nGET opportunities HTTP/1.1\r\n\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "no closing delimiter");
}

#[tokio::test(start_paused = true)]
async fn urls_over_32_kb_are_refused_and_over_64_kb_inside_a_batch() {
    let sim = start().await;
    let token = dynamics_token(&sim).await;
    // `prefix` padded with an ignored parameter to exactly `len` characters.
    let padded = |prefix: String, len: usize| {
        let url = format!("{prefix}&pad=");
        let url = format!("{url}{}", "a".repeat(len - url.len()));
        assert_eq!(url.len(), len);
        url
    };
    let query = "accounts?$select=accountid&$filter=name%20eq%20null";
    let absolute = |len| padded(format!("{}/{query}", root(&sim)), len);
    let (status, _, body) = send(client().get(absolute(32_768)).bearer_auth(&token)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = send(client().get(absolute(32_769)).bearer_auth(&token)).await;
    assert_eq!(status, 414, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("32768"));

    // Inside a $batch an operation's URL may be 64 KB: one of 40,000
    // characters is answered, one of 65,537 refused on its own.
    let relative = |len| padded(query.to_owned(), len);
    let long = http_part("GET", &relative(40_000), None, None);
    let too_long = http_part("GET", &relative(65_537), None, None);
    let (status, text) = post_batch(
        &sim,
        &token,
        batch_body("batch_AAA", &[long, too_long]),
        Some("odata.continue-on-error"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let statuses: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect();
    assert_eq!(statuses.len(), 2, "{text}");
    assert!(statuses[0].starts_with("HTTP/1.1 200"), "{statuses:?}");
    assert!(statuses[1].starts_with("HTTP/1.1 414"), "{statuses:?}");
}
