//! Deterministic sample data: referrals in every stage and kind, and CRM
//! opportunities flagged for co-sell (some missing what a deal needs).

use chrono::{DateTime, Duration, DurationRound, Utc};
use rand::Rng;
use serde_json::{Map, Value, json};

use super::clock::truncate;
use super::dataverse::DvState;
use super::partner_center::{PARTNER_MPN_ID, PARTNER_ORG_ID, PARTNER_ORG_NAME, PcState, fmt_time};
use super::salesforce::SfState;
use super::{SimOptions, SimState, SimUrls, lock};

/// A seeded customer: name, street, city, state, postal code, ISO country.
struct Customer {
    name: &'static str,
    street: &'static str,
    city: &'static str,
    state: Option<&'static str>,
    postal_code: &'static str,
    country: &'static str,
}

const fn customer(
    name: &'static str,
    street: &'static str,
    city: &'static str,
    state: Option<&'static str>,
    postal_code: &'static str,
    country: &'static str,
) -> Customer {
    Customer {
        name,
        street,
        city,
        state,
        postal_code,
        country,
    }
}

const CUSTOMERS: &[Customer] = &[
    customer(
        "Contoso Pharmaceuticals",
        "One Contoso Way",
        "Redmond",
        Some("WA"),
        "98052",
        "US",
    ),
    customer(
        "Fabrikam Manufacturing",
        "12 Industriestrasse",
        "Stuttgart",
        Some("Baden-Wuerttemberg"),
        "70173",
        "DE",
    ),
    customer(
        "Northwind Traders",
        "221 Harbour Road",
        "Seattle",
        Some("WA"),
        "98101",
        "US",
    ),
    customer(
        "Adventure Works Cycles",
        "45 Rue de Rivoli",
        "Paris",
        None,
        "75001",
        "FR",
    ),
    customer(
        "Tailspin Toys",
        "8 King Street",
        "London",
        None,
        "EC2V 8AT",
        "GB",
    ),
    customer(
        "Wide World Importers",
        "300 Queen Street",
        "Auckland",
        None,
        "1010",
        "NZ",
    ),
    customer(
        "Woodgrove Bank",
        "77 Bay Street",
        "Toronto",
        Some("ON"),
        "M5J 2S1",
        "CA",
    ),
    customer(
        "Proseware Inc",
        "5 Marina Boulevard",
        "Singapore",
        None,
        "018940",
        "SG",
    ),
    customer(
        "Litware Systems",
        "19 Avenida Paulista",
        "Sao Paulo",
        Some("SP"),
        "01311-000",
        "BR",
    ),
    customer(
        "Alpine Ski House",
        "3 Bahnhofstrasse",
        "Zurich",
        Some("ZH"),
        "8001",
        "CH",
    ),
    customer(
        "Coho Winery",
        "14 Vineyard Lane",
        "Napa",
        Some("CA"),
        "94558",
        "US",
    ),
    customer(
        "Lucerne Publishing",
        "60 Kungsgatan",
        "Stockholm",
        None,
        "111 22",
        "SE",
    ),
];

/// The customer's D-U-N-S number: the same in referrals and CRM accounts, so
/// accounts can be matched by it.
fn duns_of(customer: usize) -> String {
    format!("{:09}", 150_000_007 + (customer as u64 % 100) * 7_919_573)
}

fn customer_domain(c: &Customer) -> String {
    format!(
        "{}.example",
        c.name
            .split(' ')
            .next()
            .unwrap_or("customer")
            .to_lowercase()
    )
}

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
/// "How can Microsoft help?": Partner Center code, Salesforce picklist label
/// and Dataverse option value, as the shipped mappings pair them.
const HELP: &[(&str, &str, i64)] = &[
    ("GeneralOrOther", "General or other", 100_000_005),
    (
        "CustomerTechnicalArchitecture",
        "Customer technical architecture",
        100_000_001,
    ),
    (
        "ProofOfConceptOrDemo",
        "Proof of concept or demo",
        100_000_002,
    ),
    ("QuotesOrLicensing", "Quotes or licensing", 100_000_003),
    (
        "PostSalesCustomerSuccess",
        "Post sales customer success",
        100_000_004,
    ),
    (
        "WorkloadSpecificValueProposition",
        "Workload specific value proposition",
        100_000_000,
    ),
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
    let cust = &CUSTOMERS[i % CUSTOMERS.len()];
    let cname = cust.name;
    let project = PROJECTS[rng.random_range(0..PROJECTS.len())];
    let value = (rng.random_range(5..400) as i64) * 1000;
    let currency = CURRENCY[i % CURRENCY.len()];
    let close_days = rng.random_range(30..200);
    let closing = (spec.created + Duration::days(close_days))
        .duration_trunc(Duration::days(1))
        .unwrap_or(spec.created);
    let (sol_id, sol_name) = SOLUTIONS[i % SOLUTIONS.len()];
    let customer_contact = person(rng, &customer_domain(cust));
    let partner_seller = person(rng, "contoso-partner.example");
    let microsoft_seller = person(rng, "microsoft.example");
    let help = HELP[rng.random_range(0..HELP.len())].0;
    let duns = duns_of(i % CUSTOMERS.len());
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
            "address": {"addressLine1": cust.street, "addressLine2": Value::Null, "city": cust.city, "state": cust.state,
                        "postalCode": cust.postal_code, "country": cust.country, "region": Value::Null},
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
fn inbound_referral(pc: &mut PcState, i: usize, now: DateTime<Utc>) -> String {
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

/// What a seeded CRM opportunity is, by its index.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CrmKind {
    /// Flagged, private, with everything a new deal needs.
    Private,
    /// Flagged, co-sell (Microsoft's help asked), with everything it needs.
    CoSell,
    /// Flagged but missing deal value, country, seller email and solution.
    Incomplete,
    /// Flagged co-sell without a customer contact or consent.
    CoSellIncomplete,
    /// An ordinary opportunity, not shared.
    NotFlagged,
}

fn crm_kind(k: usize) -> CrmKind {
    match k % 5 {
        0 | 2 => CrmKind::Private,
        1 => CrmKind::Incomplete,
        3 => CrmKind::NotFlagged,
        _ if k % 10 == 9 => CrmKind::CoSellIncomplete,
        _ => CrmKind::CoSell,
    }
}

/// The mapped values of one seeded opportunity, before naming them per CRM.
struct CrmDeal {
    kind: CrmKind,
    customer: usize,
    name: String,
    amount: Option<f64>,
    currency: &'static str,
    close: String,
    description: String,
    country: Option<&'static str>,
    contact: Option<(String, String, String, String)>,
    consent: bool,
    seller: (String, String, Option<String>, String),
    help: Option<usize>,
    visibility: bool,
    solutions: Option<String>,
}

fn crm_deal(opts: &SimOptions, k: usize, currency: &'static str, rng: &mut impl Rng) -> CrmDeal {
    let kind = crm_kind(k);
    let customer = k % CUSTOMERS.len();
    let c = &CUSTOMERS[customer];
    let project = PROJECTS[rng.random_range(0..PROJECTS.len())];
    let close = (opts.start_time + Duration::days(rng.random_range(20..180))).date_naive();
    let amount = (rng.random_range(10..500) * 1000) as f64;
    let phone =
        |rng: &mut dyn rand::RngCore| format!("+1 425 555 {:04}", rng.random_range(0..10_000));
    let (sf, sl) = (
        FIRST[rng.random_range(0..FIRST.len())],
        LAST[rng.random_range(0..LAST.len())],
    );
    let seller_email = format!(
        "{}.{}@contoso-partner.example",
        sf.to_lowercase(),
        sl.to_lowercase()
    );
    let seller = (sf.to_owned(), sl.to_owned(), Some(seller_email), phone(rng));
    let (cf, cl) = (
        FIRST[rng.random_range(0..FIRST.len())],
        LAST[rng.random_range(0..LAST.len())],
    );
    let contact = (
        cf.to_owned(),
        cl.to_owned(),
        format!(
            "{}.{}@{}",
            cf.to_lowercase(),
            cl.to_lowercase(),
            customer_domain(c)
        ),
        phone(rng),
    );
    let cosell = matches!(kind, CrmKind::CoSell | CrmKind::CoSellIncomplete);
    let solutions = if k.is_multiple_of(4) {
        format!(
            "{};{}",
            SOLUTIONS[k % SOLUTIONS.len()].0,
            SOLUTIONS[(k + 1) % SOLUTIONS.len()].0
        )
    } else {
        SOLUTIONS[k % SOLUTIONS.len()].0.to_owned()
    };
    let incomplete = kind == CrmKind::Incomplete;
    CrmDeal {
        kind,
        customer,
        name: format!("{} - {project}", c.name),
        amount: (!incomplete).then_some(amount),
        currency,
        close: close.format("%Y-%m-%d").to_string(),
        description: match kind {
            CrmKind::Incomplete => {
                "Flagged for co-sell but missing deal value, customer country, seller email and solution".into()
            }
            CrmKind::CoSell | CrmKind::CoSellIncomplete => format!(
                "{} wants help with {project}; decision expected this quarter.",
                c.name
            ),
            _ => format!("{project} opportunity"),
        },
        country: (!incomplete).then_some(c.country),
        contact: (kind != CrmKind::CoSellIncomplete && kind != CrmKind::Incomplete)
            .then_some(contact),
        consent: kind == CrmKind::CoSell,
        seller: if incomplete {
            (seller.0, seller.1, None, seller.3)
        } else {
            seller
        },
        help: cosell.then_some(k % HELP.len()),
        visibility: cosell,
        solutions: (!incomplete).then_some(solutions),
    }
}

fn opt<T: serde::Serialize>(v: Option<T>) -> Value {
    v.map_or(Value::Null, |v| json!(v))
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
        currencies.push((id, code));
    }
    let mut accounts = Vec::new();
    for (k, c) in CUSTOMERS.iter().enumerate() {
        let id = dv.new_guid();
        let t = start - Duration::days(200 + k as i64);
        let values = obj(json!({
            "name": c.name, "accountnumber": format!("ACC-{:04}", k + 1), "address1_line1": c.street, "address1_city": c.city,
            "address1_stateorprovince": c.state, "address1_postalcode": c.postal_code, "address1_country": c.country,
            "telephone1": format!("+1 206 555 {:04}", k), "new_dunsnumber": duns_of(k),
            "statecode": 0, "statuscode": 1, "_ownerid_value": dv.user_id(), "createdon": t.to_rfc3339(), "modifiedon": t.to_rfc3339(),
        }));
        dv.store(acc_t, &id, values, t, None);
        accounts.push(id);
    }
    for k in 0..n {
        let id = dv.new_guid();
        let (currency_id, currency) = currencies[k % currencies.len()].clone();
        let d = crm_deal(opts, k, currency, rng);
        let c = &CUSTOMERS[d.customer];
        let acc = accounts[d.customer].clone();
        let t = start - Duration::hours(rng.random_range(1..24 * 30));
        let contact = d.contact.as_ref();
        let v = json!({
            "name": d.name, "description": d.description,
            "estimatedvalue": opt(d.amount), "new_currencycode": d.currency,
            "estimatedclosedate": d.close,
            "statecode": 0, "statuscode": 1, "salesstage": rng.random_range(0..3), "closeprobability": 20,
            "_parentaccountid_value": acc, "_customerid_value": acc, "_customerid_type": "account",
            "_transactioncurrencyid_value": currency_id, "_ownerid_value": dv.user_id(),
            opts.dynamics_referral_key.as_str(): Value::Null,
            "new_syncwithpartnercenter": d.kind != CrmKind::NotFlagged,
            "new_customername": c.name,
            "new_customeraddressline1": c.street,
            "new_customercity": c.city,
            "new_customerstate": c.state,
            "new_customerpostalcode": c.postal_code,
            "new_customercountry": opt(d.country),
            "new_customercontactfirstname": opt(contact.map(|x| &x.0)),
            "new_customercontactlastname": opt(contact.map(|x| &x.1)),
            "new_customercontactemail": opt(contact.map(|x| &x.2)),
            "new_customercontactphone": opt(contact.map(|x| &x.3)),
            "new_customerconsenttoshare": d.consent,
            "new_partnercontactfirstname": d.seller.0,
            "new_partnercontactlastname": d.seller.1,
            "new_partnercontactemail": opt(d.seller.2.as_ref()),
            "new_partnercontactphone": d.seller.3,
            "new_howcanmicrosofthelp": opt(d.help.map(|h| HELP[h].2)),
            "new_referralvisibility": d.visibility,
            "new_microsoftsolutions": opt(d.solutions.as_ref()),
            "createdon": t.to_rfc3339(), "modifiedon": t.to_rfc3339(),
        });
        dv.store(opp_t, &id, obj(v), t, None);
    }
}

fn seed_salesforce(opts: &SimOptions, n: usize, sf: &mut SfState, rng: &mut impl Rng) {
    let start = opts.start_time;
    let mut accounts = Vec::new();
    for (k, c) in CUSTOMERS.iter().enumerate() {
        let t = start - Duration::days(200 + k as i64);
        let mut account = obj(json!({
            "Name": c.name, "BillingStreet": c.street, "BillingCity": c.city, "BillingState": c.state,
            "BillingPostalCode": c.postal_code, "BillingCountry": c.country,
        }));
        if opts.salesforce_data_com {
            account.insert("DunsNumber".into(), json!(duns_of(k)));
        }
        let id = sf.insert_raw(1, account, t);
        accounts.push(id);
    }
    let stages = [
        "Prospecting",
        "Qualification",
        "Needs Analysis",
        "Value Proposition",
        "Proposal/Price Quote",
    ];
    for k in 0..n {
        let d = crm_deal(opts, k, ["USD", "EUR", "GBP"][k % 3], rng);
        let c = &CUSTOMERS[d.customer];
        let t = start - Duration::hours(rng.random_range(1..24 * 30));
        let contact = d.contact.as_ref();
        let v = json!({
            "Name": d.name, "AccountId": accounts[d.customer],
            "Amount": opt(d.amount),
            "CloseDate": d.close,
            "StageName": stages[k % stages.len()],
            "Description": d.description,
            sf.external_id.as_str(): Value::Null,
            "Sync_with_Partner_Center__c": d.kind != CrmKind::NotFlagged,
            "Customer_Name__c": c.name,
            "Customer_Street__c": c.street,
            "Customer_City__c": c.city,
            "Customer_State__c": c.state,
            "Customer_Postal_Code__c": c.postal_code,
            "Customer_Country__c": opt(d.country),
            "Customer_Contact_First_Name__c": opt(contact.map(|x| &x.0)),
            "Customer_Contact_Last_Name__c": opt(contact.map(|x| &x.1)),
            "Customer_Contact_Email__c": opt(contact.map(|x| &x.2)),
            "Customer_Contact_Phone__c": opt(contact.map(|x| &x.3)),
            "Customer_Consent_To_Share__c": d.consent,
            "Partner_Contact_First_Name__c": d.seller.0,
            "Partner_Contact_Last_Name__c": d.seller.1,
            "Partner_Contact_Email__c": opt(d.seller.2.as_ref()),
            "Partner_Contact_Phone__c": d.seller.3,
            "How_can_Microsoft_help__c": opt(d.help.map(|h| HELP[h].1)),
            "Microsoft_Referral_Visibility__c": d.visibility,
            "Microsoft_Solutions__c": opt(d.solutions.as_ref()),
        });
        let mut opportunity = obj(v);
        if opts.salesforce_multi_currency {
            opportunity.insert("CurrencyIsoCode".into(), json!(d.currency));
        }
        sf.insert_raw(0, opportunity, t);
    }
}

/// Seeds every fake from `opts.seed`.
impl SimState {
    /// Adds `n` new inbound co-sell referrals (New/Pending) from Microsoft,
    /// created one after another over the last `n` ticks of 100 ns, oldest
    /// first. Returns their ids, oldest first. Partner Center's ids are
    /// random GUIDs, so a listing in `updatedDateTime` order does not come
    /// in id order (referrals created at one instant would come sorted by id
    /// here, flattering any store keyed by the id).
    pub fn insert_referrals(&self, n: usize) -> Vec<String> {
        let now = truncate(self.clock.now(), 100);
        let mut pc = lock(&self.pc);
        let start = pc.len();
        (0..n)
            .map(|i| {
                let created = now - Duration::nanoseconds(100 * (n - 1 - i) as i64);
                inbound_referral(&mut pc, start + i, created)
            })
            .collect()
    }
}

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
