//! Deterministic sample data: referrals in every stage and kind, and CRM
//! opportunities flagged for co-sell (some missing what a deal needs).

use chrono::{DateTime, Duration, DurationRound, Utc};
use rand::Rng;
use serde_json::{Map, Value, json};

use super::SimOptions;
use super::SimUrls;
use super::clock::truncate;
use super::dataverse::DvState;
use super::partner_center::{PARTNER_MPN_ID, PARTNER_ORG_ID, PARTNER_ORG_NAME, PcState, fmt_time};
use super::salesforce::SfState;

const CUSTOMERS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "Contoso Pharmaceuticals",
        "One Contoso Way",
        "Redmond",
        "98052",
        "US",
    ),
    (
        "Fabrikam Manufacturing",
        "12 Industriestrasse",
        "Stuttgart",
        "70173",
        "DE",
    ),
    (
        "Northwind Traders",
        "221 Harbour Road",
        "Seattle",
        "98101",
        "US",
    ),
    (
        "Adventure Works Cycles",
        "45 Rue de Rivoli",
        "Paris",
        "75001",
        "FR",
    ),
    ("Tailspin Toys", "8 King Street", "London", "EC2V 8AT", "GB"),
    (
        "Wide World Importers",
        "300 Queen Street",
        "Auckland",
        "1010",
        "NZ",
    ),
    (
        "Woodgrove Bank",
        "77 Bay Street",
        "Toronto",
        "M5J 2S1",
        "CA",
    ),
    (
        "Proseware Inc",
        "5 Marina Boulevard",
        "Singapore",
        "018940",
        "SG",
    ),
    (
        "Litware Systems",
        "19 Avenida Paulista",
        "Sao Paulo",
        "01311-000",
        "BR",
    ),
    (
        "Alpine Ski House",
        "3 Bahnhofstrasse",
        "Zurich",
        "8001",
        "CH",
    ),
    ("Coho Winery", "14 Vineyard Lane", "Napa", "94558", "US"),
    (
        "Lucerne Publishing",
        "60 Kungsgatan",
        "Stockholm",
        "111 22",
        "SE",
    ),
];
const PROJECTS: &[&str] = &[
    "Azure migration",
    "Dynamics 365 rollout",
    "Security modernization",
    "Data platform",
    "Copilot adoption",
    "Teams Phone",
    "SAP on Azure",
    "AI document processing",
    "Hybrid cloud",
    "Endpoint management",
];
const FIRST: &[&str] = &[
    "Sue", "John", "Aisha", "Ravi", "Mei", "Lars", "Olga", "Diego", "Fatima", "Tom",
];
const LAST: &[&str] = &[
    "Smith", "Doe", "Khan", "Patel", "Chen", "Berg", "Ivanova", "Garcia", "Haddad", "Nguyen",
];
const SOLUTIONS: &[(&str, &str)] = &[
    ("SOL-15974-MQF", "Contoso Cloud Accelerator"),
    ("SOL-34104-EBB", "Contoso Secure Workplace"),
    ("SOL-22871-KTR", "Contoso Data Estate Modernization"),
];
const HELP: &[&str] = &[
    "GeneralOrOther",
    "CustomerTechnicalArchitecture",
    "ProofOfConceptOrDemo",
    "QuotesOrLicensing",
    "PostSalesCustomerSuccess",
    "WorkloadSpecificValueProposition",
];
const CURRENCY: &[&str] = &[
    "USD", "EUR", "USD", "EUR", "GBP", "NZD", "CAD", "SGD", "BRL", "CHF", "USD", "SEK",
];

/// What kind of referral a seed slot gets.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    InboundPending { age_days: f64 },
    InboundReceived,
    InboundAccepted,
    OutboundPrivate,
    OutboundCoSell,
    Won,
    Lost,
    Declined,
}

fn kind_of(i: usize, rng: &mut impl Rng) -> Kind {
    match i % 20 {
        0 => Kind::InboundPending {
            age_days: 20.0 + rng.random_range(0.0..10.0),
        },
        1 => Kind::InboundPending {
            age_days: 13.0 + rng.random_range(0.2..0.9),
        },
        2..=5 => Kind::InboundPending {
            age_days: rng.random_range(0.1..10.0),
        },
        6 | 7 => Kind::InboundReceived,
        8..=10 => Kind::InboundAccepted,
        11..=13 => Kind::OutboundPrivate,
        14 | 15 => Kind::OutboundCoSell,
        16 | 17 => Kind::Won,
        18 => Kind::Lost,
        _ => Kind::Declined,
    }
}

fn person(rng: &mut impl Rng, domain: &str) -> Value {
    let f = FIRST[rng.random_range(0..FIRST.len())];
    let l = LAST[rng.random_range(0..LAST.len())];
    json!({
        "firstName": f, "lastName": l,
        "phoneNumber": format!("+1 425 555 {:04}", rng.random_range(0..10_000)),
        "email": format!("{}.{}@{domain}", f.to_lowercase(), l.to_lowercase()),
        "title": Value::Null,
        "contactPreference": {"locale": "en-us", "disableNotifications": false},
    })
}

struct Spec {
    kind: Kind,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    engagement_id: Option<String>,
    for_microsoft: bool,
}

fn build(pc: &mut PcState, i: usize, spec: Spec) -> Value {
    let id = pc.new_guid();
    let engagement_id = spec.engagement_id.unwrap_or_else(|| pc.new_guid());
    let rng = pc.rng();
    let (cname, street, city, zip, country) = CUSTOMERS[i % CUSTOMERS.len()];
    let project = PROJECTS[rng.random_range(0..PROJECTS.len())];
    let value = (rng.random_range(5..400) as i64) * 1000;
    let currency = CURRENCY[i % CURRENCY.len()];
    let close_days = rng.random_range(30..200);
    let closing = (spec.created + Duration::days(close_days))
        .duration_trunc(Duration::days(1))
        .unwrap_or(spec.created);
    let (sol_id, sol_name) = SOLUTIONS[i % SOLUTIONS.len()];
    let customer_contact = person(
        rng,
        &format!(
            "{}.example",
            cname.split(' ').next().unwrap_or("customer").to_lowercase()
        ),
    );
    let partner_seller = person(rng, "contoso-partner.example");
    let microsoft_seller = person(rng, "microsoft.example");
    let help = HELP[rng.random_range(0..HELP.len())];
    let duns = format!("{:09}", rng.random_range(100_000_000..999_999_999u64));
    let inbound = matches!(
        spec.kind,
        Kind::InboundPending { .. }
            | Kind::InboundReceived
            | Kind::InboundAccepted
            | Kind::Declined
    ) || (matches!(spec.kind, Kind::Won | Kind::Lost) && i.is_multiple_of(2));
    let (status, substatus, reason) = match spec.kind {
        Kind::InboundPending { .. } => ("New", "Pending", Value::Null),
        Kind::InboundReceived => ("New", "Received", Value::Null),
        Kind::InboundAccepted | Kind::OutboundPrivate | Kind::OutboundCoSell => {
            ("Active", "Accepted", Value::Null)
        }
        Kind::Won => ("Closed", "Won", json!("Customer signed the agreement")),
        Kind::Lost => ("Closed", "Lost", json!("Customer chose another vendor")),
        Kind::Declined => ("Closed", "Declined", json!("Outside our solution area")),
    };
    let (status, substatus) = if spec.for_microsoft {
        ("New", "Pending")
    } else {
        (status, substatus)
    };
    let cosell = inbound
        || matches!(spec.kind, Kind::OutboundCoSell)
        || spec.for_microsoft
        || (i.is_multiple_of(3) && matches!(spec.kind, Kind::Won | Kind::Lost));
    let is_new = status == "New";
    let expiration = if is_new {
        json!(fmt_time(
            (spec.created + Duration::days(14))
                .duration_trunc(Duration::days(1))
                .unwrap_or(spec.created)
                + Duration::days(1)
        ))
    } else {
        Value::Null
    };
    let accepted = if status == "Active"
        || (status == "Closed" && substatus != "Declined" && substatus != "Expired")
    {
        json!(fmt_time(if inbound {
            spec.created + Duration::hours(6)
        } else {
            spec.created
        }))
    } else {
        Value::Null
    };
    let closed = if status == "Closed" {
        json!(fmt_time(spec.updated))
    } else {
        Value::Null
    };
    let (invited_by, team, target) = if inbound {
        (
            json!({"organizationId": "msft", "organizationName": "Microsoft"}),
            json!([microsoft_seller]),
            json!([{"type": "BusinessProfileLocation", "id": PARTNER_ORG_ID}]),
        )
    } else if spec.for_microsoft {
        (
            json!({"organizationId": PARTNER_ORG_ID, "organizationName": PARTNER_ORG_NAME}),
            json!([partner_seller]),
            json!([{"type": "BusinessProfileLocation", "id": "msft"}]),
        )
    } else {
        (
            json!({"organizationId": PARTNER_ORG_ID, "organizationName": PARTNER_ORG_NAME}),
            json!([partner_seller]),
            json!([]),
        )
    };
    let name = format!("{cname} - {project}");
    let links = pc.links(&id, &engagement_id);
    let etag = format!(
        "\"{:08x}-0000-0800-0000-{:012x}\"",
        (i as u32).wrapping_mul(2_654_435_761),
        spec.updated.timestamp() as u64
    );
    let mut head = json!({
        "id": id, "engagementId": engagement_id, "name": name,
        "organizationId": PARTNER_ORG_ID, "organizationName": PARTNER_ORG_NAME,
        "lastModifiedVia": Value::Null, "lastRunId": Value::Null, "externalReferenceId": Value::Null,
        "createdDateTime": fmt_time(spec.created), "updatedDateTime": fmt_time(spec.updated),
        "expirationDateTime": expiration, "acceptedDateTime": accepted, "closedDateTime": closed,
        "status": status, "substatus": substatus, "statusReason": reason,
        "qualification": if inbound { "SalesQualified" } else { "None" },
        "type": if cosell { "Shared" } else { "Independent" },
        "referralSource": Value::Null, "eTag": etag, "favorite": i.is_multiple_of(7), "campaignId": Value::Null,
        "salesStage": Value::Null, "quality": "Unknown", "isSpam": false,
        "direction": if inbound { "Incoming" } else { "Outgoing" },
        "mpnId": PARTNER_MPN_ID, "referralProgram": Value::Null, "dealSensitivity": "None", "createdVia": Value::Null,
        "tags": [], "callToAction": Value::Null, "registrationStatus": "None",
    });
    let rest = json!({
        "target": target,
        "customerProfile": {
            "name": cname, "size": "51to250employees", "isMatchingComplete": false,
            "address": {"addressLine1": street, "addressLine2": Value::Null, "city": city, "state": Value::Null,
                        "postalCode": zip, "country": country, "region": Value::Null},
            "team": [customer_contact],
            "ids": [{"profileType": "Duns", "id": duns}],
        },
        "consent": {"consentToToShareInfoWithOthers": true, "consentToContact": true,
                    "consentToShareReferralWithMicrosoftSellers": cosell},
        "details": {
            "notes": format!("{project} for {cname}."), "dealValue": value, "currency": currency,
            "closingDateTime": fmt_time(closing),
            "requirements": {"industries": [], "products": [], "services": [],
                "solutions": [{"id": sol_id, "name": sol_name, "type": "Name"}]},
        },
        "team": team,
        "inviteContext": {
            "notes": if inbound { json!("Customer asked for a certified partner.") } else { Value::Null },
            "assistanceRequestCode": if cosell && !inbound { json!(help) } else { json!("Unknown") },
            "invitedBy": invited_by,
        },
        "links": links,
        "trackingInfo": {"microsoftMsxId": if inbound { json!(format!("7-{:010}", i)) } else { Value::Null }},
        "registrations": [],
    });
    if let (Some(h), Value::Object(r)) = (head.as_object_mut(), rest) {
        h.extend(r);
    }
    head
}

/// A new inbound co-sell referral from Microsoft, created at `now`.
pub(crate) fn inbound_referral(pc: &mut PcState, i: usize, now: DateTime<Utc>) -> String {
    let v = build(
        pc,
        i,
        Spec {
            kind: Kind::InboundPending { age_days: 0.0 },
            created: now,
            updated: now,
            engagement_id: None,
            for_microsoft: false,
        },
    );
    let id = v["id"].as_str().unwrap_or_default().to_owned();
    pc.put(v);
    id
}

fn seed_referrals(opts: &SimOptions, pc: &mut PcState) {
    let start = truncate(opts.start_time, 100);
    let mut i = 0;
    while i < opts.referrals {
        let kind = kind_of(i, pc.rng());
        let age = match kind {
            Kind::InboundPending { age_days } => age_days,
            Kind::InboundReceived => pc.rng().random_range(0.5..8.0),
            _ => pc.rng().random_range(15.0..120.0),
        };
        let created = truncate(start - Duration::seconds((age * 86_400.0) as i64), 100);
        let span = (start - created).num_seconds().max(1);
        let updated = match kind {
            Kind::InboundPending { .. } | Kind::InboundReceived => created,
            _ => created + Duration::seconds(pc.rng().random_range(0..span)),
        };
        let v = build(
            pc,
            i,
            Spec {
                kind,
                created,
                updated,
                engagement_id: None,
                for_microsoft: false,
            },
        );
        let engagement = v["engagementId"].as_str().map(str::to_owned);
        pc.put(v);
        i += 1;
        if kind == Kind::OutboundCoSell && i < opts.referrals {
            // The Microsoft-targeted referral of the same engagement.
            let mut related = build(
                pc,
                i,
                Spec {
                    kind,
                    created,
                    updated: created,
                    engagement_id: engagement,
                    for_microsoft: true,
                },
            );
            if i % 2 == 0
                && let Some(m) = related.as_object_mut()
            {
                // Microsoft already engaged on some of them.
                m.insert("status".into(), json!("Active"));
                m.insert("substatus".into(), json!("Accepted"));
                m.insert("expirationDateTime".into(), Value::Null);
                m.insert("acceptedDateTime".into(), json!(fmt_time(updated)));
                m.insert("updatedDateTime".into(), json!(fmt_time(updated)));
                m.insert(
                    "trackingInfo".into(),
                    json!({"microsoftMsxId": format!("7-{:010}", i)}),
                );
            }
            pc.put(related);
            i += 1;
        }
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn seed_dynamics(opts: &SimOptions, n: usize, dv: &mut DvState, rng: &mut impl Rng) {
    let start = opts.start_time;
    let Some(acc_t) = dv.table_index("accounts") else {
        return;
    };
    let Some(opp_t) = dv.table_index("opportunities") else {
        return;
    };
    let Some(cur_t) = dv.table_index("transactioncurrencies") else {
        return;
    };
    let mut currencies = Vec::new();
    for (code, name, sym) in [
        ("USD", "US Dollar", "$"),
        ("EUR", "Euro", "€"),
        ("GBP", "Pound Sterling", "£"),
    ] {
        let id = dv.new_guid();
        let t = start - Duration::days(400);
        dv.store(cur_t, &id, obj(json!({"isocurrencycode": code, "currencyname": name, "currencysymbol": sym, "createdon": t.to_rfc3339(), "modifiedon": t.to_rfc3339()})), t, None);
        currencies.push(id);
    }
    let mut accounts = Vec::new();
    for (k, (name, street, city, zip, country)) in CUSTOMERS.iter().enumerate() {
        let id = dv.new_guid();
        let t = start - Duration::days(200 + k as i64);
        let values = obj(json!({
            "name": name, "accountnumber": format!("ACC-{:04}", k + 1), "address1_line1": street, "address1_city": city,
            "address1_postalcode": zip, "address1_country": country, "telephone1": format!("+1 206 555 {:04}", k),
            "statecode": 0, "statuscode": 1, "_ownerid_value": dv.user_id(), "createdon": t.to_rfc3339(), "modifiedon": t.to_rfc3339(),
        }));
        dv.store(acc_t, &id, values, t, None);
        accounts.push((id, *name, *country));
    }
    for k in 0..n {
        let id = dv.new_guid();
        let (acc, cname, country) = accounts[k % accounts.len()].clone();
        let project = PROJECTS[rng.random_range(0..PROJECTS.len())];
        let t = start - Duration::hours(rng.random_range(1..24 * 30));
        let close = (start + Duration::days(rng.random_range(20..180))).date_naive();
        let flagged = k % 5 != 3;
        let incomplete = k % 5 == 1;
        let mut v = json!({
            "name": format!("{cname} - {project}"), "description": format!("{project} opportunity"),
            "estimatedvalue": if incomplete { Value::Null } else { json!(rng.random_range(10..500) * 1000) },
            "estimatedclosedate": close.format("%Y-%m-%d").to_string(),
            "statecode": 0, "statuscode": 1, "salesstage": rng.random_range(0..3), "closeprobability": 20,
            "_parentaccountid_value": acc, "_customerid_value": acc, "_customerid_type": "account",
            "_transactioncurrencyid_value": currencies[k % currencies.len()], "_ownerid_value": dv.user_id(),
            opts.dynamics_referral_key.as_str(): Value::Null,
            "new_syncwithpartnercenter": flagged,
            "new_customername": cname,
            "new_customercountry": if incomplete { Value::Null } else { json!(country) },
            "new_partnercontactemail": if incomplete { Value::Null } else { json!(format!("seller{k}@contoso-partner.example")) },
            "new_howcanmicrosofthelp": if k % 5 == 4 { json!(HELP[k % HELP.len()]) } else { Value::Null },
            "createdon": t.to_rfc3339(), "modifiedon": t.to_rfc3339(),
        });
        if incomplete && let Some(m) = v.as_object_mut() {
            m.insert(
                "description".into(),
                json!("Flagged for co-sell but missing deal value, customer country and contact"),
            );
        }
        dv.store(opp_t, &id, obj(v), t, None);
    }
}

fn seed_salesforce(opts: &SimOptions, n: usize, sf: &mut SfState, rng: &mut impl Rng) {
    let start = opts.start_time;
    let mut accounts = Vec::new();
    for (k, (name, street, city, zip, country)) in CUSTOMERS.iter().enumerate() {
        let t = start - Duration::days(200 + k as i64);
        let id = sf.insert_raw(1, obj(json!({"Name": name, "BillingStreet": street, "BillingCity": city, "BillingPostalCode": zip, "BillingCountry": country})), t);
        accounts.push((id, *name, *country));
    }
    let stages = [
        "Prospecting",
        "Qualification",
        "Needs Analysis",
        "Value Proposition",
        "Proposal/Price Quote",
    ];
    for k in 0..n {
        let (acc, cname, country) = accounts[k % accounts.len()].clone();
        let project = PROJECTS[rng.random_range(0..PROJECTS.len())];
        let t = start - Duration::hours(rng.random_range(1..24 * 30));
        let close = (start + Duration::days(rng.random_range(20..180))).date_naive();
        let flagged = k % 5 != 3;
        let incomplete = k % 5 == 1;
        let v = json!({
            "Name": format!("{cname} - {project}"), "AccountId": acc,
            "Amount": if incomplete { Value::Null } else { json!((rng.random_range(10..500) * 1000) as f64) },
            "CloseDate": close.format("%Y-%m-%d").to_string(),
            "StageName": stages[k % stages.len()],
            "Description": if incomplete { json!("Flagged for co-sell but missing amount, customer country and contact") } else { json!(format!("{project} opportunity")) },
            "CurrencyIsoCode": (["USD", "EUR", "GBP"])[k % 3],
            sf.external_id.as_str(): Value::Null,
            "Sync_with_Partner_Center__c": flagged,
            "Customer_Name__c": cname,
            "Customer_Country__c": if incomplete { Value::Null } else { json!(country) },
            "Partner_Contact_Email__c": if incomplete { Value::Null } else { json!(format!("seller{k}@contoso-partner.example")) },
            "Microsoft_Help__c": if k % 5 == 4 { json!(HELP[k % HELP.len()]) } else { Value::Null },
        });
        sf.insert_raw(0, obj(v), t);
    }
}

/// Seeds every fake from `opts.seed`.
pub(crate) fn seed_all(
    opts: &SimOptions,
    urls: &SimUrls,
    pc: &mut PcState,
    dv: &mut DvState,
    sf: &mut SfState,
) {
    pc.base_url = urls.partner_center.clone();
    seed_referrals(opts, pc);
    let n = opts
        .crm_opportunities
        .unwrap_or((opts.referrals / 5).max(12));
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(opts.seed ^ 0xc0ffee);
    seed_dynamics(opts, n, dv, &mut rng);
    seed_salesforce(opts, n, sf, &mut rng);
}
