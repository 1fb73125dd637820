//! The simulator's default org schema and seed data against the shipped
//! mappings: every mapped field exists, the real adapters find no metadata
//! problem, a received inbound referral upserts into both CRMs, and the
//! seeded flagged opportunities are complete or visibly not.
//!
//! These tests run the adapters with their real HTTP clients (which carry
//! timeouts), so they use tokio's real clock; nothing in them sleeps.

mod sim_support;

use std::collections::{BTreeMap, BTreeSet};

use cosell_sync::config::{self, Settings, Sources};
use cosell_sync::crm::dynamics::DynamicsCrm;
use cosell_sync::crm::salesforce::SalesforceCrm;
use cosell_sync::crm::{Crm, CrmChange, CustomerRef, RecordKey, RecordWrite, Severity};
use cosell_sync::domain::{DealKind, Stage};
use cosell_sync::mapping::Mapping;
use cosell_sync::sim::SimHandle;
use serde_json::Value;
use sim_support::*;

fn settings(sim: &SimHandle, dir: &tempfile::TempDir) -> Settings {
    let file = dir.path().join("cosell-sync.toml");
    std::fs::write(&file, sim.daemon_config()).unwrap();
    let env: BTreeMap<String, String> = sim
        .daemon_env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    config::load(&Sources {
        file: Some(file),
        env,
        credentials_dir: None,
    })
    .unwrap()
}

fn adapters(sim: &SimHandle, dir: &tempfile::TempDir) -> (SalesforceCrm, DynamicsCrm) {
    let s = settings(sim, dir);
    let sf = SalesforceCrm::new(
        &s.salesforce,
        cosell_sync::sync::object_spec(&Mapping::default_salesforce().unwrap()),
    )
    .unwrap();
    let dv = DynamicsCrm::new(
        &s.dynamics,
        cosell_sync::sync::object_spec(&Mapping::default_dynamics().unwrap()),
    )
    .unwrap();
    (sf, dv)
}

async fn get_json(url: &str, token: &str) -> Value {
    let r = client().get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{url}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn every_field_of_the_shipped_mappings_exists_in_the_fakes() {
    let sim = start().await;

    let (token, instance) = sf_session(&sim).await;
    let describe = get_json(
        &format!("{instance}/services/data/v62.0/sobjects/Opportunity/describe"),
        &token,
    )
    .await;
    let fields: BTreeMap<&str, &Value> = describe["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f))
        .collect();
    let mapping = Mapping::default_salesforce().unwrap();
    for name in mapping.crm_fields() {
        // The default org has one currency: no CurrencyIsoCode, as in most orgs.
        let present = name != "CurrencyIsoCode";
        assert_eq!(fields.contains_key(name), present, "Opportunity.{name}");
    }
    let ty = |n: &str| fields[n]["type"].as_str().unwrap();
    assert_eq!(ty("Customer_Contact_Email__c"), "email");
    assert_eq!(ty("Customer_Contact_Phone__c"), "phone");
    assert_eq!(ty("Customer_Consent_To_Share__c"), "boolean");
    assert_eq!(ty("Microsoft_Referral_Visibility__c"), "boolean");
    assert_eq!(ty("Microsoft_Solutions__c"), "string");
    // The picklist holds exactly the labels of the mapping's value table.
    let help = fields["How_can_Microsoft_help__c"];
    let labels: BTreeSet<&str> = help["picklistValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_str().unwrap())
        .collect();
    let wanted: BTreeSet<&str> = [
        "Workload specific value proposition",
        "Customer technical architecture",
        "Proof of concept or demo",
        "Quotes or licensing",
        "Post sales customer success",
        "General or other",
    ]
    .into();
    assert_eq!(labels, wanted);
    let stages: Vec<&str> = fields["StageName"]["picklistValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_str().unwrap())
        .collect();
    assert!(stages.contains(&"On Hold"), "{stages:?}");
    let account = get_json(
        &format!("{instance}/services/data/v62.0/sobjects/Account/describe"),
        &token,
    )
    .await;
    let has_duns = |describe: &Value| {
        describe["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "DunsNumber")
    };
    assert!(!has_duns(&account), "no Data.com licence by default");
    // With the options, an org with Data.com and multiple currencies.
    let full = cosell_sync::sim::Simulator::start(cosell_sync::sim::SimOptions {
        salesforce_data_com: true,
        salesforce_multi_currency: true,
        ..opts()
    })
    .await
    .unwrap();
    let (full_token, full_instance) = sf_session(&full).await;
    let describe_of =
        |object: &str| format!("{full_instance}/services/data/v62.0/sobjects/{object}/describe");
    assert!(has_duns(
        &get_json(&describe_of("Account"), &full_token).await
    ));
    let opportunity = get_json(&describe_of("Opportunity"), &full_token).await;
    let names: BTreeSet<&str> = opportunity["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for name in mapping.crm_fields() {
        assert!(names.contains(name), "Opportunity.{name} is missing");
    }

    let token = dynamics_token(&sim).await;
    let base = format!(
        "{}/api/data/v9.2/EntityDefinitions(LogicalName='opportunity')",
        sim.urls().dynamics
    );
    let attrs = get_json(&format!("{base}/Attributes"), &token).await;
    let columns: BTreeMap<&str, &str> = attrs["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["LogicalName"].as_str().unwrap(),
                a["AttributeType"].as_str().unwrap(),
            )
        })
        .collect();
    let mapping = Mapping::default_dynamics().unwrap();
    for name in mapping.crm_fields() {
        assert!(columns.contains_key(name), "opportunity.{name} is missing");
    }
    assert_eq!(columns["new_customerconsenttoshare"], "Boolean");
    assert_eq!(columns["new_referralvisibility"], "Boolean");
    assert_eq!(columns["new_howcanmicrosofthelp"], "Picklist");
    assert_eq!(columns["statuscode"], "Status");
    let help = get_json(
        &format!("{base}/Attributes(LogicalName='new_howcanmicrosofthelp')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options)"),
        &token,
    )
    .await;
    let values: Vec<i64> = help["OptionSet"]["Options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["Value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, (100_000_000..=100_000_005).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_real_adapters_find_no_metadata_problem_and_upsert_a_received_referral() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (sf, dv) = adapters(&sim, &dir);
    // The default org is a standard one: what it lacks is noted, nothing is wrong.
    let notes: Vec<(String, Severity)> = sf
        .check_metadata()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.item, p.severity))
        .collect();
    assert_eq!(
        notes,
        [
            ("Opportunity.CurrencyIsoCode".to_owned(), Severity::Note),
            ("Account.DunsNumber".to_owned(), Severity::Note)
        ]
    );
    assert_eq!(dv.check_metadata().await.unwrap(), vec![]);

    // A seeded inbound referral waiting for an answer, as Partner Center returns it.
    let token = pc_token(&sim).await;
    let list = get_json(
        &format!(
            "{}/v1.0/engagements/referrals?$filter=status eq 'New'",
            sim.urls().partner_center
        ),
        &token,
    )
    .await;
    let referral = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["direction"] == "Incoming" && r["substatus"] == "Pending")
        .expect("a pending inbound referral")
        .clone();
    let id = referral["id"].as_str().unwrap().to_owned();
    let address = &referral["customerProfile"]["address"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let customer = CustomerRef {
        name: referral["customerProfile"]["name"]
            .as_str()
            .unwrap()
            .to_owned(),
        duns: text(&referral["customerProfile"]["ids"][0]["id"]),
        address_line1: text(&address["addressLine1"]),
        city: text(&address["city"]),
        state: text(&address["state"]),
        postal_code: text(&address["postalCode"]),
        country: text(&address["country"]),
        contact: None,
    };

    for (crm, mapping, stage_field) in [
        (
            &sf as &dyn Crm,
            Mapping::default_salesforce().unwrap(),
            "StageName",
        ),
        (
            &dv as &dyn Crm,
            Mapping::default_dynamics().unwrap(),
            "statuscode",
        ),
    ] {
        let report = mapping.to_crm_report(&referral, Stage::Received);
        assert_eq!(report.problems, vec![], "{:?}", crm.kind());
        let fields = mapping.to_crm(&referral, Stage::Received);
        let results = crm
            .upsert(&[RecordWrite {
                key: RecordKey::Referral(id.clone()),
                fields: fields.clone(),
                if_match: None,
                customer: Some(customer.clone()),
            }])
            .await
            .unwrap();
        assert_eq!(results.len(), 1);
        let ok = results[0]
            .outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("{:?}: {e}", crm.kind()));
        assert!(ok.created, "{:?}", crm.kind());

        let back = crm
            .fetch(&RecordKey::Referral(id.clone()))
            .await
            .unwrap()
            .expect("the upserted opportunity");
        assert_eq!(back.referral_id.as_deref(), Some(id.as_str()));
        assert_eq!(back.fields[stage_field], fields[stage_field]);
        assert_eq!(
            mapping.stages.candidates(&back.fields),
            BTreeSet::from([Stage::Received]),
            "{:?}",
            crm.kind()
        );
    }
}

#[tokio::test]
async fn seeded_flagged_opportunities_are_complete_deals_or_show_what_is_missing() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (sf, dv) = adapters(&sim, &dir);
    for (crm, mapping) in [
        (&sf as &dyn Crm, Mapping::default_salesforce().unwrap()),
        (&dv as &dyn Crm, Mapping::default_dynamics().unwrap()),
    ] {
        let mut records = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let page = crm
                .read_changes(None, continuation.as_deref())
                .await
                .unwrap();
            records.extend(page.changes.into_iter().filter_map(|c| match c {
                CrmChange::Upserted(r) => Some(r),
                CrmChange::Deleted { .. } => None,
            }));
            continuation = page.continuation;
            if continuation.is_none() {
                break;
            }
        }
        let (mut private, mut cosell, mut incomplete) = (0, 0, 0);
        for r in records.iter().filter(|r| mapping.wants_new_deal(&r.fields)) {
            let deal = mapping.new_deal(&r.fields);
            match (deal.problems.is_empty(), deal.kind) {
                (true, DealKind::Private) => private += 1,
                (true, DealKind::CoSell) => {
                    let c = deal.referral.consent.as_ref().unwrap();
                    assert_eq!(c.consent_to_share_info_with_others, Some(true));
                    cosell += 1;
                }
                (false, _) => {
                    incomplete += 1;
                    assert!(
                        deal.problems.iter().all(|p| !p.reason.contains("not a")),
                        "{:?}: seeded values must convert: {:?}",
                        crm.kind(),
                        deal.problems
                    );
                }
            }
        }
        let kind = crm.kind();
        assert!(private >= 2, "{kind:?}: {private} complete private deals");
        assert!(cosell >= 1, "{kind:?}: {cosell} complete co-sell deals");
        assert!(incomplete >= 2, "{kind:?}: {incomplete} incomplete deals");
    }
}

async fn post_json(url: &str, token: &str, body: Value) -> Value {
    let r = client()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

/// The queries the simulator answered after `after` whose text (the decoded
/// `$filter` or `q`) contains `needle`.
fn queries_since(sim: &SimHandle, after: u64, needle: &str) -> Vec<String> {
    sim.state()
        .request_log()
        .into_iter()
        .filter(|r| r.seq > after && r.method == "GET")
        .filter_map(|r| {
            let url = url::Url::parse(&format!("http://sim{}", r.uri)).ok()?;
            url.query_pairs()
                .find(|(k, _)| k == "q" || k == "$filter")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|q| q.contains(needle))
        .collect()
}

#[tokio::test]
async fn the_adapters_resolve_every_customer_of_a_call_in_one_query_against_the_simulator() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (sf, dv) = adapters(&sim, &dir);
    let dv_token = dynamics_token(&sim).await;
    let (sf_token, instance) = sf_session(&sim).await;
    let dv_accounts = format!("{}/api/data/v9.2/accounts", sim.urls().dynamics);
    let sf_accounts = format!("{instance}/services/data/v62.0/sobjects/Account");
    for (name, postal) in [("Zeta Bakery", "98052"), ("Eta Corp", "98052")] {
        post_json(
            &dv_accounts,
            &dv_token,
            serde_json::json!({"name": name, "address1_postalcode": postal}),
        )
        .await;
        post_json(
            &sf_accounts,
            &sf_token,
            serde_json::json!({"Name": name, "BillingPostalCode": postal}),
        )
        .await;
    }
    // A second "Eta Corp" in Salesforce makes that customer ambiguous there.
    post_json(
        &sf_accounts,
        &sf_token,
        serde_json::json!({"Name": "eta corp", "BillingPostalCode": "98052"}),
    )
    .await;

    let customer = |name: &str, postal: &str| CustomerRef {
        name: name.into(),
        postal_code: Some(postal.into()),
        ..Default::default()
    };
    let customers = [
        customer("ZETA BAKERY", "98052"),
        customer("Theta New", "10115"),
        customer("Eta Corp", "98052"),
        customer("theta new", "10115"),
        customer("Iota Labs", "20095"),
    ];
    for (crm, lookup, name_field) in [
        (&sf as &dyn Crm, "FROM Account", "Name"),
        (&dv as &dyn Crm, "name eq", "name"),
    ] {
        let before = sim.state().request_log().last().map_or(0, |r| r.seq);
        let writes: Vec<RecordWrite> = customers
            .iter()
            .enumerate()
            .map(|(i, c)| RecordWrite {
                key: RecordKey::Referral(format!("{:?}-{i}", crm.kind())),
                fields: match name_field {
                    "Name" => serde_json::json!({"Name": format!("Deal {i}"),
                        "StageName": "Prospecting", "CloseDate": "2025-12-31"}),
                    _ => serde_json::json!({"name": format!("Deal {i}")}),
                }
                .as_object()
                .unwrap()
                .clone(),
                if_match: None,
                customer: Some(c.clone()),
            })
            .collect();
        let results = crm.upsert(&writes).await.unwrap();
        let queries = queries_since(&sim, before, lookup);
        assert_eq!(queries.len(), 1, "{:?}: {queries:?}", crm.kind());
        assert!(queries[0].contains("ZETA BAKERY"), "{queries:?}");
        let ok: Vec<bool> = results.iter().map(|r| r.outcome.is_ok()).collect();
        if crm.kind() == sf.kind() {
            assert_eq!(ok, [true, true, false, true, true], "{results:?}");
            assert!(
                results[2]
                    .outcome
                    .as_ref()
                    .unwrap_err()
                    .to_string()
                    .contains("AMBIGUOUS_ACCOUNT")
            );
        } else {
            assert_eq!(ok, [true; 5], "{results:?}");
            // "Theta New" (two deals) is created first; "Iota Labs" (one
            // deal) travels in its deal's change set, in the deals' $batch.
            let dv_posts: Vec<String> = sim
                .state()
                .request_log()
                .into_iter()
                .filter(|r| r.seq > before && r.method == "POST" && r.uri.starts_with("/dynamics/"))
                .map(|r| r.uri)
                .collect();
            assert_eq!(dv_posts.len(), 2, "{dv_posts:?}");
            assert!(dv_posts[0].contains("/accounts?"), "{dv_posts:?}");
            assert!(dv_posts[1].ends_with("/$batch"), "{dv_posts:?}");
        }
    }
    let dv_iota = get_json(
        &format!("{dv_accounts}?$select=accountid&$filter=name eq 'Iota Labs'"),
        &dv_token,
    )
    .await;
    assert_eq!(dv_iota["value"].as_array().unwrap().len(), 1);
    // "Theta New" was created once per CRM, for both spellings.
    let dv_theta = get_json(
        &format!("{dv_accounts}?$select=accountid&$filter=name eq 'Theta New'"),
        &dv_token,
    )
    .await;
    assert_eq!(dv_theta["value"].as_array().unwrap().len(), 1);
    let sf_theta = get_json(
        &format!(
            "{instance}/services/data/v62.0/query?q=SELECT+Id+FROM+Account+WHERE+Name+%3D+%27Theta+New%27"
        ),
        &sf_token,
    )
    .await;
    assert_eq!(sf_theta["totalSize"], 1);
}
