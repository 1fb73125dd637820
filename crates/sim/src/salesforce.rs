//! Salesforce REST API: OAuth token endpoint (client credentials and JWT
//! bearer) returning `instance_url`, the SOQL subset with `nextRecordsUrl`
//! paging, sObject rows and upsert by External ID, sObject Collections
//! (≤ 200 records), describe, OpportunityStage, limits and `Sforce-Limit-Info`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, NaiveDate, SubsecRound, TimeDelta, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::soql::{self, Cond, Op, SoqlValue};
use super::{SimError, SimOptions, SimState, bearer, creds, lock};

const MAX_COLLECTION: usize = 200;
const DEFAULT_BATCH: usize = 2000;
const CURSOR_LIMIT: usize = 2000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FType {
    Id,
    Str(usize),
    TextArea(usize),
    Email,
    Phone,
    Url,
    Currency,
    Percent,
    Int,
    Bool,
    Date,
    DateTime,
    Picklist {
        values: Vec<String>,
        restricted: bool,
    },
    Reference(&'static str),
}

impl FType {
    fn soap_type(&self) -> (&'static str, &'static str) {
        match self {
            FType::Id => ("id", "tns:ID"),
            FType::Str(_) => ("string", "xsd:string"),
            FType::TextArea(_) => ("textarea", "xsd:string"),
            FType::Email => ("email", "xsd:string"),
            FType::Phone => ("phone", "xsd:string"),
            FType::Url => ("url", "xsd:string"),
            FType::Currency => ("currency", "xsd:double"),
            FType::Percent => ("percent", "xsd:double"),
            FType::Int => ("int", "xsd:int"),
            FType::Bool => ("boolean", "xsd:boolean"),
            FType::Date => ("date", "xsd:date"),
            FType::DateTime => ("datetime", "xsd:dateTime"),
            FType::Picklist { .. } => ("picklist", "xsd:string"),
            FType::Reference(_) => ("reference", "tns:ID"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: String,
    label: String,
    ty: FType,
    createable: bool,
    updateable: bool,
    required: bool,
    external_id: bool,
}

fn f(name: &str, label: &str, ty: FType) -> Field {
    Field {
        name: name.into(),
        label: label.into(),
        ty,
        createable: true,
        updateable: true,
        required: false,
        external_id: false,
    }
}

fn ro(name: &str, label: &str, ty: FType) -> Field {
    Field {
        createable: false,
        updateable: false,
        ..f(name, label, ty)
    }
}

fn req(mut fl: Field) -> Field {
    fl.required = true;
    fl
}

fn pick(values: &[&str], restricted: bool) -> FType {
    FType::Picklist {
        values: values.iter().map(|s| (*s).to_owned()).collect(),
        restricted,
    }
}

/// One row of OpportunityStage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SfStage {
    pub api_name: String,
    pub probability: u32,
    pub forecast_category: String,
    pub is_closed: bool,
    pub is_won: bool,
}

fn default_stages() -> Vec<SfStage> {
    let s = |n: &str, p: u32, fc: &str, closed: bool, won: bool| SfStage {
        api_name: n.into(),
        probability: p,
        forecast_category: fc.into(),
        is_closed: closed,
        is_won: won,
    };
    vec![
        s("Prospecting", 10, "Pipeline", false, false),
        // The connector's stage for a referral not yet accepted.
        s("On Hold", 10, "Pipeline", false, false),
        s("Qualification", 10, "Pipeline", false, false),
        s("Needs Analysis", 20, "Pipeline", false, false),
        s("Value Proposition", 50, "Pipeline", false, false),
        s("Id. Decision Makers", 60, "Pipeline", false, false),
        s("Perception Analysis", 70, "Pipeline", false, false),
        s("Proposal/Price Quote", 75, "Pipeline", false, false),
        s("Negotiation/Review", 90, "Commit", false, false),
        s("Closed Won", 100, "Closed", true, true),
        s("Closed Lost", 0, "Omitted", true, false),
    ]
}

const CURRENCIES: &[&str] = &[
    "USD", "EUR", "GBP", "CAD", "AUD", "JPY", "CHF", "SEK", "NOK", "DKK", "INR", "BRL", "MXN",
    "NZD", "SGD", "ZAR",
];
const HELP_LABELS: &[&str] = &[
    "Workload specific value proposition",
    "Customer technical architecture",
    "Proof of concept or demo",
    "Quotes or licensing",
    "Post sales customer success",
    "General or other",
];

fn audit_fields() -> Vec<Field> {
    vec![
        ro("CreatedDate", "Created Date", FType::DateTime),
        ro("LastModifiedDate", "Last Modified Date", FType::DateTime),
        ro("SystemModstamp", "System Modstamp", FType::DateTime),
        ro("IsDeleted", "Deleted", FType::Bool),
        ro("CreatedById", "Created By ID", FType::Reference("User")),
        ro(
            "LastModifiedById",
            "Last Modified By ID",
            FType::Reference("User"),
        ),
    ]
}

/// One record: field name to value.
type Record = Map<String, Value>;

pub(crate) struct SObject {
    pub(crate) name: &'static str,
    label: &'static str,
    prefix: &'static str,
    pub(crate) fields: Vec<Field>,
    writable: bool,
    pub(crate) records: BTreeMap<String, Map<String, Value>>,
    by_ext: HashMap<String, HashMap<String, String>>,
    by_modstamp: BTreeSet<(DateTime<Utc>, String)>,
    next_id: u64,
}

impl SObject {
    fn new(
        name: &'static str,
        label: &'static str,
        prefix: &'static str,
        fields: Vec<Field>,
        writable: bool,
    ) -> Self {
        let by_ext = fields
            .iter()
            .filter(|f| f.external_id)
            .map(|f| (f.name.clone(), HashMap::new()))
            .collect();
        SObject {
            name,
            label,
            prefix,
            fields,
            writable,
            records: BTreeMap::new(),
            by_ext,
            by_modstamp: BTreeSet::new(),
            next_id: 1,
        }
    }

    fn field(&self, name: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    fn new_id(&mut self) -> String {
        let n = self.next_id;
        self.next_id += 1;
        id18(
            &format!("{}5g00000{:05}", self.prefix, n % 100_000)
                .chars()
                .take(15)
                .collect::<String>(),
        )
    }

    fn unindex(&mut self, id: &str) -> Option<Map<String, Value>> {
        let old = self.records.remove(id)?;
        if let Some(t) = old
            .get("SystemModstamp")
            .and_then(Value::as_str)
            .and_then(parse_sf_datetime)
        {
            self.by_modstamp.remove(&(t, id.to_owned()));
        }
        for (fname, idx) in self.by_ext.iter_mut() {
            if let Some(Value::String(v)) = old.get(fname) {
                idx.remove(&v.to_ascii_lowercase());
            }
        }
        Some(old)
    }

    fn index(&mut self, id: String, rec: Map<String, Value>) {
        if let Some(t) = rec
            .get("SystemModstamp")
            .and_then(Value::as_str)
            .and_then(parse_sf_datetime)
        {
            self.by_modstamp.insert((t, id.clone()));
        }
        for (fname, idx) in self.by_ext.iter_mut() {
            if let Some(Value::String(v)) = rec.get(fname) {
                idx.insert(v.to_ascii_lowercase(), id.clone());
            }
        }
        self.records.insert(id, rec);
    }

    fn find_ext(&self, field: &str, value: &str) -> Option<String> {
        self.by_ext
            .get(field)?
            .get(&value.to_ascii_lowercase())
            .cloned()
    }
}

/// The 18-character form of a 15-character Salesforce id.
pub(crate) fn id18(id15: &str) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let b = id15.as_bytes();
    let mut suffix = String::new();
    for chunk in 0..3 {
        let mut n = 0usize;
        for j in 0..5 {
            if b.get(chunk * 5 + j).is_some_and(u8::is_ascii_uppercase) {
                n |= 1 << j;
            }
        }
        suffix.push(ALPHA[n] as char);
    }
    format!("{id15}{suffix}")
}

fn normalize_id(id: &str) -> Option<String> {
    match id.len() {
        15 if id.chars().all(|c| c.is_ascii_alphanumeric()) => Some(id18(id)),
        18 if id.chars().all(|c| c.is_ascii_alphanumeric()) => Some(id.to_owned()),
        _ => None,
    }
}

/// Salesforce date-times: `2025-03-04T10:15:22.000+0000`.
pub(crate) fn fmt_sf(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

pub(crate) fn parse_sf_datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| crate::datetime::parse(s))
}

struct Cursor {
    object: &'static str,
    fields: Vec<String>,
    ids: Vec<String>,
    batch: usize,
}

pub(crate) struct SfState {
    rng: StdRng,
    pub(crate) objects: Vec<SObject>,
    pub(crate) stages: Vec<SfStage>,
    sessions: HashMap<String, DateTime<Utc>>,
    session_lifetime: TimeDelta,
    cursors: HashMap<String, Cursor>,
    cursor_order: VecDeque<String>,
    next_cursor: u64,
    usage: VecDeque<(i64, u64)>,
    pub(crate) daily_limit: u64,
    pub(crate) external_id: String,
    org_id: String,
    user_id: String,
    jwt_key: Option<String>,
}

/// One Salesforce error: (errorCode, message, fields).
#[derive(Debug, Clone)]
pub(crate) struct SfErr {
    code: &'static str,
    message: String,
    fields: Vec<String>,
}

impl SfErr {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        SfErr {
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }
    fn on(mut self, field: &str) -> Self {
        self.fields.push(field.to_owned());
        self
    }
    fn top(&self) -> Value {
        let mut v = json!({"message": self.message, "errorCode": self.code});
        if !self.fields.is_empty() {
            v["fields"] = json!(self.fields);
        }
        v
    }
    fn item(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }
}

/// A Salesforce error body (a JSON array) as a response.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    sf_json(status, &json!([{"message": message, "errorCode": code}]))
}

fn sf_json(status: StatusCode, body: &Value) -> Response {
    let mut r = Response::new(axum::body::Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r
}

fn err_response(status: StatusCode, e: &SfErr) -> Response {
    sf_json(status, &json!([e.top()]))
}

fn no_content() -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Whether an operation counts toward the daily API allocation.
pub(crate) fn counts_toward_usage(operation: &str) -> bool {
    !(operation.ends_with(" versions") || operation.ends_with(" oauth2/token"))
}

impl SfState {
    pub(crate) fn new(opts: &SimOptions) -> Self {
        let ext = opts.salesforce_external_id.clone();
        let stages = default_stages();
        let stage_values: Vec<String> = stages.iter().map(|s| s.api_name.clone()).collect();
        let mut opp = vec![
            ro("Id", "Opportunity ID", FType::Id),
            req(f("Name", "Name", FType::Str(120))),
            f("AccountId", "Account ID", FType::Reference("Account")),
            f("Amount", "Amount", FType::Currency),
            req(f("CloseDate", "Close Date", FType::Date)),
            req(f(
                "StageName",
                "Stage",
                FType::Picklist {
                    values: stage_values,
                    restricted: true,
                },
            )),
            f("Probability", "Probability (%)", FType::Percent),
            f("Description", "Description", FType::TextArea(32000)),
            ro("IsClosed", "Closed", FType::Bool),
            ro("IsWon", "Won", FType::Bool),
            ro(
                "ForecastCategory",
                "Forecast Category",
                pick(
                    &[
                        "Omitted",
                        "Pipeline",
                        "BestCase",
                        "MostLikely",
                        "Forecast",
                        "Closed",
                    ],
                    true,
                ),
            ),
            f(
                "ForecastCategoryName",
                "Forecast Category",
                pick(
                    &["Omitted", "Pipeline", "Best Case", "Commit", "Closed"],
                    true,
                ),
            ),
            f(
                "Type",
                "Opportunity Type",
                pick(
                    &[
                        "Existing Customer - Upgrade",
                        "Existing Customer - Replacement",
                        "Existing Customer - Downgrade",
                        "New Customer",
                    ],
                    false,
                ),
            ),
            f(
                "LeadSource",
                "Lead Source",
                pick(
                    &[
                        "Web",
                        "Phone Inquiry",
                        "Partner Referral",
                        "Purchased List",
                        "Other",
                    ],
                    false,
                ),
            ),
            f("NextStep", "Next Step", FType::Str(255)),
            f("OwnerId", "Owner ID", FType::Reference("User")),
            f("CampaignId", "Campaign ID", FType::Reference("Campaign")),
            Field {
                external_id: true,
                ..f(&ext, "Referral Identifier", FType::Str(100))
            },
            f("Referral_Link__c", "Referral Link", FType::Url),
            f(
                "Sync_with_Partner_Center__c",
                "Sync with Partner Center",
                FType::Bool,
            ),
            f(
                "How_can_Microsoft_help__c",
                "How can Microsoft help?",
                pick(HELP_LABELS, true),
            ),
            f("Customer_Name__c", "Customer Name", FType::Str(255)),
            f("Customer_Street__c", "Customer Street", FType::Str(255)),
            f("Customer_City__c", "Customer City", FType::Str(80)),
            f("Customer_State__c", "Customer State", FType::Str(80)),
            f(
                "Customer_Postal_Code__c",
                "Customer Postal Code",
                FType::Str(20),
            ),
            f("Customer_Country__c", "Customer Country", FType::Str(80)),
            f(
                "Customer_Contact_First_Name__c",
                "Customer Contact First Name",
                FType::Str(40),
            ),
            f(
                "Customer_Contact_Last_Name__c",
                "Customer Contact Last Name",
                FType::Str(80),
            ),
            f(
                "Customer_Contact_Email__c",
                "Customer Contact Email",
                FType::Email,
            ),
            f(
                "Customer_Contact_Phone__c",
                "Customer Contact Phone",
                FType::Phone,
            ),
            f(
                "Customer_Consent_To_Share__c",
                "Customer Consent To Share",
                FType::Bool,
            ),
            f(
                "Partner_Contact_First_Name__c",
                "Partner Contact First Name",
                FType::Str(40),
            ),
            f(
                "Partner_Contact_Last_Name__c",
                "Partner Contact Last Name",
                FType::Str(80),
            ),
            f(
                "Partner_Contact_Email__c",
                "Partner Contact Email",
                FType::Email,
            ),
            f(
                "Partner_Contact_Phone__c",
                "Partner Contact Phone",
                FType::Phone,
            ),
            f(
                "Microsoft_Referral_Visibility__c",
                "Microsoft Partner Center Referral Visibility",
                FType::Bool,
            ),
            f(
                "Microsoft_Solutions__c",
                "Microsoft Solutions",
                FType::Str(255),
            ),
            f("Loss_Reason__c", "Loss Reason", FType::Str(255)),
            f(
                "Microsoft_CRM_Identifier__c",
                "Microsoft CRM Identifier",
                FType::Str(100),
            ),
            f(
                "Partner_Center_Sync_Error__c",
                "Partner Center Sync Error",
                FType::TextArea(32768),
            ),
            f("Audit__c", "Audit", FType::TextArea(100_000)),
        ];
        // Only multi-currency orgs have the field (Salesforce object reference).
        if opts.salesforce_multi_currency {
            opp.push(f(
                "CurrencyIsoCode",
                "Opportunity Currency",
                pick(CURRENCIES, true),
            ));
        }
        if ext != "Referral_Identifier__c" {
            opp.push(Field {
                external_id: true,
                ..f(
                    "Referral_Identifier__c",
                    "Referral Identifier",
                    FType::Str(100),
                )
            });
        }
        for extra in &opts.salesforce_extra_fields {
            if !opp.iter().any(|x| x.name.eq_ignore_ascii_case(extra)) {
                opp.push(f(extra, extra, FType::Str(255)));
            }
        }
        opp.extend(audit_fields());
        let mut account = vec![
            ro("Id", "Account ID", FType::Id),
            req(f("Name", "Account Name", FType::Str(255))),
            f("BillingStreet", "Billing Street", FType::TextArea(255)),
            f("BillingCity", "Billing City", FType::Str(40)),
            f("BillingState", "Billing State/Province", FType::Str(80)),
            f(
                "BillingPostalCode",
                "Billing Zip/Postal Code",
                FType::Str(20),
            ),
            f("BillingCountry", "Billing Country", FType::Str(80)),
            f("Phone", "Account Phone", FType::Phone),
            f("Website", "Website", FType::Url),
            f(
                "Industry",
                "Industry",
                pick(
                    &[
                        "Technology",
                        "Manufacturing",
                        "Retail",
                        "Finance",
                        "Healthcare",
                        "Education",
                        "Other",
                    ],
                    false,
                ),
            ),
            f("NumberOfEmployees", "Employees", FType::Int),
            f("OwnerId", "Owner ID", FType::Reference("User")),
        ];
        // Data.com fields exist only while the org holds a Data.com licence.
        if opts.salesforce_data_com {
            account.push(f("DunsNumber", "D-U-N-S Number", FType::Str(9)));
        }
        account.extend(audit_fields());
        let mut stage_fields = vec![
            ro("Id", "Opportunity Stage ID", FType::Id),
            ro("ApiName", "API Name", FType::Str(255)),
            ro("MasterLabel", "Master Label", FType::Str(255)),
            ro("IsActive", "Is Active", FType::Bool),
            ro("IsClosed", "Closed", FType::Bool),
            ro("IsWon", "Won", FType::Bool),
            ro("DefaultProbability", "Default Probability", FType::Percent),
            ro(
                "ForecastCategory",
                "Forecast Category",
                pick(
                    &[
                        "Omitted",
                        "Pipeline",
                        "BestCase",
                        "MostLikely",
                        "Forecast",
                        "Closed",
                    ],
                    true,
                ),
            ),
            ro(
                "ForecastCategoryName",
                "Forecast Category Name",
                pick(
                    &["Omitted", "Pipeline", "Best Case", "Commit", "Closed"],
                    true,
                ),
            ),
            ro("SortOrder", "Sort Order", FType::Int),
            ro("Description", "Description", FType::Str(255)),
        ];
        stage_fields.extend(audit_fields());
        let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5f5f);
        let org_id = id18(&format!("00D5g0000{:06}", rng.random_range(0..1_000_000)));
        let user_id = id18(&format!("0055g0000{:06}", rng.random_range(0..1_000_000)));
        let mut st = SfState {
            rng,
            objects: vec![
                SObject::new("Opportunity", "Opportunity", "006", opp, true),
                SObject::new("Account", "Account", "001", account, true),
                SObject::new(
                    "OpportunityStage",
                    "Opportunity Stage",
                    "01J",
                    stage_fields,
                    false,
                ),
            ],
            stages: stages.clone(),
            sessions: HashMap::new(),
            session_lifetime: TimeDelta::from_std(opts.salesforce_session_lifetime)
                .unwrap_or(TimeDelta::hours(2)),
            cursors: HashMap::new(),
            cursor_order: VecDeque::new(),
            next_cursor: 1,
            usage: VecDeque::new(),
            daily_limit: opts.salesforce_daily_limit,
            external_id: ext,
            org_id,
            user_id,
            jwt_key: opts.salesforce_jwt_public_key_pem.clone(),
        };
        let t = opts.start_time - TimeDelta::days(400);
        for (i, s) in stages.iter().enumerate() {
            let fc = match s.forecast_category.as_str() {
                "Commit" => "Forecast",
                "Best Case" => "BestCase",
                other => other,
            };
            let rec = json!({
                "ApiName": s.api_name, "MasterLabel": s.api_name, "IsActive": true, "IsClosed": s.is_closed,
                "IsWon": s.is_won, "DefaultProbability": s.probability, "ForecastCategory": fc,
                "ForecastCategoryName": s.forecast_category, "SortOrder": i + 1, "Description": Value::Null,
            });
            if let Value::Object(m) = rec {
                st.insert_raw(2, m, t);
            }
        }
        st
    }

    fn obj_index(&self, name: &str) -> Option<usize> {
        self.objects
            .iter()
            .position(|o| o.name.eq_ignore_ascii_case(name))
    }

    /// Inserts a record without checks (seeding); returns its id.
    pub(crate) fn insert_raw(
        &mut self,
        o: usize,
        mut rec: Map<String, Value>,
        at: DateTime<Utc>,
    ) -> String {
        let id = self.objects[o].new_id();
        let ts = json!(fmt_sf(at.trunc_subsecs(3)));
        rec.insert("Id".into(), json!(id));
        for k in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
            rec.insert(k.into(), ts.clone());
        }
        rec.insert("IsDeleted".into(), json!(false));
        rec.insert("CreatedById".into(), json!(self.user_id));
        rec.insert("LastModifiedById".into(), json!(self.user_id));
        if self.objects[o].name == "Opportunity" {
            self.derive_stage(&mut rec, true);
        }
        if self.objects[o].field("OwnerId").is_some() && !rec.contains_key("OwnerId") {
            rec.insert("OwnerId".into(), json!(self.user_id));
        }
        self.objects[o].index(id.clone(), rec);
        id
    }

    fn derive_stage(&self, rec: &mut Map<String, Value>, set_probability: bool) {
        let Some(stage) = rec
            .get("StageName")
            .and_then(Value::as_str)
            .and_then(|n| self.stages.iter().find(|s| s.api_name == n))
        else {
            return;
        };
        let stage = stage.clone();
        rec.insert("IsClosed".into(), json!(stage.is_closed));
        rec.insert("IsWon".into(), json!(stage.is_won));
        rec.insert(
            "ForecastCategoryName".into(),
            json!(stage.forecast_category),
        );
        let fc = match stage.forecast_category.as_str() {
            "Commit" => "Forecast",
            "Best Case" => "BestCase",
            other => other,
        };
        rec.insert("ForecastCategory".into(), json!(fc));
        if set_probability {
            rec.insert("Probability".into(), json!(stage.probability));
        }
    }

    pub(crate) fn new_session(&mut self, now: DateTime<Utc>) -> String {
        let raw: Vec<u8> = (0..36).map(|_| self.rng.random()).collect();
        let token = format!(
            "{}!{}",
            &self.org_id[..15],
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(raw)
                .replace('/', ".")
        );
        self.sessions.insert(token.clone(), now);
        token
    }

    pub(crate) fn expire_sessions(&mut self) {
        self.sessions.clear();
    }

    fn session_ok(&self, token: Option<&str>, now: DateTime<Utc>) -> bool {
        token
            .and_then(|t| self.sessions.get(t))
            .is_some_and(|issued| now - *issued < self.session_lifetime)
    }

    fn prune_usage(&mut self, now: DateTime<Utc>) -> u64 {
        let hour = now.timestamp().div_euclid(3600);
        while self.usage.front().is_some_and(|(h, _)| *h <= hour - 24) {
            self.usage.pop_front();
        }
        self.usage.iter().map(|(_, n)| n).sum()
    }

    /// Counts one API call; false (and not counted) when the limit is reached.
    pub(crate) fn use_api_call(&mut self, now: DateTime<Utc>) -> bool {
        let used = self.prune_usage(now);
        if used >= self.daily_limit {
            return false;
        }
        self.add_usage(now, 1);
        true
    }

    fn add_usage(&mut self, now: DateTime<Utc>, n: u64) {
        let hour = now.timestamp().div_euclid(3600);
        match self.usage.back_mut() {
            Some((h, c)) if *h == hour => *c += n,
            _ => self.usage.push_back((hour, n)),
        }
    }

    /// (used, allocation) over the last 24 hours.
    pub(crate) fn api_usage(&mut self, now: DateTime<Utc>) -> (u64, u64) {
        (self.prune_usage(now), self.daily_limit)
    }

    /// Uses up what is left of the daily allocation.
    pub(crate) fn exhaust(&mut self, now: DateTime<Utc>) {
        let used = self.prune_usage(now);
        let left = self.daily_limit.saturating_sub(used);
        self.add_usage(now, left);
    }

    /// Checks and converts the fields of one write. `creating` decides
    /// required-field and createable/updateable checks.
    fn check_fields(
        &self,
        o: usize,
        body: &Map<String, Value>,
        creating: bool,
        skip: &[&str],
    ) -> Result<Map<String, Value>, SfErr> {
        let obj = &self.objects[o];
        let mut out = Map::new();
        for (k, v) in body {
            if k == "attributes" || skip.iter().any(|s| s.eq_ignore_ascii_case(k)) {
                continue;
            }
            let Some(fl) = obj.field(k) else {
                return Err(SfErr::new(
                    "INVALID_FIELD",
                    format!("No such column '{k}' on sobject of type {}", obj.name),
                )
                .on(k));
            };
            if (creating && !fl.createable) || (!creating && !fl.updateable) {
                return Err(SfErr::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!("Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", fl.name),
                )
                .on(&fl.name));
            }
            if v.is_null() {
                if fl.required {
                    return Err(SfErr::new(
                        "REQUIRED_FIELD_MISSING",
                        format!("Required fields are missing: [{}]", fl.name),
                    )
                    .on(&fl.name));
                }
                out.insert(fl.name.clone(), Value::Null);
                continue;
            }
            let parse_err = |ty: &str| {
                SfErr::new(
                    "JSON_PARSER_ERROR",
                    format!("Cannot deserialize instance of {ty} from {} value {v} or request may be missing a required field", if v.is_string() { "VALUE_STRING" } else { "VALUE" }),
                )
                .on(&fl.name)
            };
            let val = match &fl.ty {
                FType::Str(_) | FType::TextArea(_) | FType::Phone => {
                    let max = match fl.ty {
                        FType::Str(n) | FType::TextArea(n) => n,
                        _ => 40,
                    };
                    let s = v
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| v.is_number().then(|| v.to_string()))
                        .ok_or_else(|| parse_err("string"))?;
                    if s.chars().count() > max {
                        return Err(SfErr::new(
                            "STRING_TOO_LONG",
                            format!(
                                "{}: data value too large: {s:.40} (max length={max})",
                                fl.label
                            ),
                        )
                        .on(&fl.name));
                    }
                    json!(s)
                }
                FType::Url => json!(v.as_str().ok_or_else(|| parse_err("string"))?),
                FType::Email => {
                    let s = v.as_str().ok_or_else(|| parse_err("string"))?;
                    let plausible = s.contains('@')
                        && s.rsplit('@').next().is_some_and(|d| d.contains('.'))
                        && !s.contains(' ');
                    if !s.is_empty() && !plausible {
                        return Err(SfErr::new(
                            "INVALID_EMAIL_ADDRESS",
                            format!("{}: invalid email address: {s}", fl.label),
                        )
                        .on(&fl.name));
                    }
                    json!(s)
                }
                FType::Currency | FType::Percent => json!(
                    v.as_f64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .ok_or_else(|| parse_err("double"))?
                ),
                FType::Int => json!(v.as_i64().ok_or_else(|| parse_err("int"))?),
                FType::Bool => json!(v.as_bool().ok_or_else(|| parse_err("boolean"))?),
                FType::Date => {
                    let s = v.as_str().ok_or_else(|| parse_err("date"))?;
                    let d =
                        NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| parse_err("date"))?;
                    json!(d.format("%Y-%m-%d").to_string())
                }
                FType::DateTime => {
                    let s = v.as_str().ok_or_else(|| parse_err("datetime"))?;
                    json!(fmt_sf(
                        parse_sf_datetime(s).ok_or_else(|| parse_err("datetime"))?
                    ))
                }
                FType::Picklist { values, restricted } => {
                    let s = v.as_str().ok_or_else(|| parse_err("string"))?;
                    if *restricted && !values.iter().any(|x| x == s) {
                        return Err(SfErr::new(
                            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                            format!("{}: bad value for restricted picklist field: {s}", fl.label),
                        )
                        .on(&fl.name));
                    }
                    json!(s)
                }
                FType::Id | FType::Reference(_) => {
                    let s = v.as_str().ok_or_else(|| parse_err("id"))?;
                    let Some(id) = normalize_id(s) else {
                        return Err(SfErr::new(
                            "MALFORMED_ID",
                            format!("{}: id value of incorrect type: {s}", fl.label),
                        )
                        .on(&fl.name));
                    };
                    if let FType::Reference(target) = fl.ty
                        && let Some(t) = self.obj_index(target)
                        && !self.objects[t].records.contains_key(&id)
                    {
                        return Err(SfErr::new(
                            "INVALID_CROSS_REFERENCE_KEY",
                            format!("invalid cross reference id: {s}"),
                        )
                        .on(&fl.name));
                    }
                    json!(id)
                }
            };
            out.insert(fl.name.clone(), val);
        }
        if creating {
            let missing: Vec<String> = obj
                .fields
                .iter()
                .filter(|f| f.required && out.get(&f.name).is_none_or(Value::is_null))
                .map(|f| f.name.clone())
                .collect();
            if !missing.is_empty() {
                let mut e = SfErr::new(
                    "REQUIRED_FIELD_MISSING",
                    format!("Required fields are missing: [{}]", missing.join(", ")),
                );
                e.fields = missing;
                return Err(e);
            }
        }
        Ok(out)
    }

    fn unique_check(
        &self,
        o: usize,
        values: &Map<String, Value>,
        own: Option<&str>,
    ) -> Result<(), SfErr> {
        let obj = &self.objects[o];
        for fl in obj.fields.iter().filter(|f| f.external_id) {
            if let Some(Value::String(v)) = values.get(&fl.name)
                && let Some(other) = obj.find_ext(&fl.name, v)
                && Some(other.as_str()) != own
            {
                return Err(SfErr::new(
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {} duplicates value on record with id: {other}",
                        fl.name
                    ),
                )
                .on(&fl.name));
            }
        }
        Ok(())
    }

    /// Creates (id None) or updates a record after checks. Returns (id, created).
    fn write(
        &mut self,
        o: usize,
        id: Option<&str>,
        values: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<(String, bool), SfErr> {
        if !self.objects[o].writable {
            return Err(SfErr::new(
                "INVALID_TYPE_FOR_OPERATION",
                format!(
                    "entity type {} does not support this operation",
                    self.objects[o].name
                ),
            ));
        }
        self.unique_check(o, &values, id)?;
        let ts = json!(fmt_sf(now.trunc_subsecs(3)));
        match id {
            None => {
                let new_id = self.insert_raw(o, values.clone(), now);
                if let Some(p) = values.get("Probability")
                    && let Some(rec) = self.objects[o].records.get_mut(&new_id)
                {
                    rec.insert("Probability".into(), p.clone());
                }
                Ok((new_id, true))
            }
            Some(id) => {
                let Some(mut rec) = self.objects[o].unindex(id) else {
                    return Err(SfErr::new("ENTITY_IS_DELETED", "entity is deleted"));
                };
                let stage_changed = values
                    .get("StageName")
                    .is_some_and(|s| Some(s) != rec.get("StageName"));
                for (k, v) in &values {
                    rec.insert(k.clone(), v.clone());
                }
                if self.objects[o].name == "Opportunity" && stage_changed {
                    self.derive_stage(&mut rec, !values.contains_key("Probability"));
                }
                rec.insert("LastModifiedDate".into(), ts.clone());
                rec.insert("SystemModstamp".into(), ts);
                rec.insert("LastModifiedById".into(), json!(self.user_id));
                self.objects[o].index(id.to_owned(), rec);
                Ok((id.to_owned(), false))
            }
        }
    }

    fn render(&self, o: usize, id: &str, fields: &[String], version: &str) -> Option<Value> {
        let obj = &self.objects[o];
        let rec = obj.records.get(id)?;
        let mut m = Map::new();
        m.insert("attributes".into(), json!({"type": obj.name, "url": format!("/services/data/{version}/sobjects/{}/{id}", obj.name)}));
        for fname in fields {
            let canonical = obj
                .field(fname)
                .map(|f| f.name.clone())
                .unwrap_or_else(|| fname.clone());
            let v = rec.get(&canonical).cloned().unwrap_or(Value::Null);
            m.insert(canonical, v);
        }
        Some(Value::Object(m))
    }

    fn all_fields(&self, o: usize) -> Vec<String> {
        self.objects[o]
            .fields
            .iter()
            .map(|f| f.name.clone())
            .collect()
    }
}

/// Checks that every compared value has the field's type.
fn bind(obj: &SObject, cond: &Cond) -> Result<(), SfErr> {
    for (field, values) in cond.leaves() {
        let Some(fl) = obj.field(field) else {
            return Err(SfErr::new(
                "INVALID_FIELD",
                format!(
                    "No such column '{field}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.",
                    obj.name
                ),
            ));
        };
        for v in values {
            let ok = matches!(
                (&fl.ty, v),
                (_, SoqlValue::Null)
                    | (FType::DateTime, SoqlValue::DateTime(_))
                    | (FType::Date, SoqlValue::Date(_))
                    | (
                        FType::Currency | FType::Percent | FType::Int,
                        SoqlValue::Number(_)
                    )
                    | (FType::Bool, SoqlValue::Bool(_))
                    | (
                        FType::Str(_)
                            | FType::TextArea(_)
                            | FType::Email
                            | FType::Phone
                            | FType::Url
                            | FType::Picklist { .. }
                            | FType::Id
                            | FType::Reference(_),
                        SoqlValue::String(_)
                    )
            );
            if !ok {
                let ty = fl.ty.soap_type().0;
                let hint = match fl.ty {
                    FType::DateTime
                    | FType::Date
                    | FType::Bool
                    | FType::Currency
                    | FType::Percent
                    | FType::Int => " and should not be enclosed in quotes",
                    _ => " and should be enclosed in quotes",
                };
                return Err(SfErr::new(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    format!(
                        "value of filter criterion for field '{}' must be of type {ty}{hint}",
                        fl.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn cmp_sf(actual: &Value, lit: &SoqlValue) -> Option<std::cmp::Ordering> {
    match (actual, lit) {
        (Value::Null, SoqlValue::Null) => Some(std::cmp::Ordering::Equal),
        (Value::Null, _) | (_, SoqlValue::Null) => None,
        (Value::String(s), SoqlValue::String(l)) => Some(s.to_lowercase().cmp(&l.to_lowercase())),
        (Value::String(s), SoqlValue::DateTime(t)) => parse_sf_datetime(s).map(|a| a.cmp(t)),
        (Value::String(s), SoqlValue::Date(d)) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .map(|a| a.cmp(d)),
        (Value::Number(n), SoqlValue::Number(l)) => n.as_f64().and_then(|a| a.partial_cmp(l)),
        (Value::Bool(b), SoqlValue::Bool(l)) => Some(b.cmp(l)),
        _ => None,
    }
}

fn eval(rec: &Map<String, Value>, obj: &SObject, c: &Cond) -> bool {
    let get = |f: &str| {
        obj.field(f)
            .and_then(|fl| rec.get(&fl.name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    match c {
        Cond::And(a, b) => eval(rec, obj, a) && eval(rec, obj, b),
        Cond::Or(a, b) => eval(rec, obj, a) || eval(rec, obj, b),
        Cond::Not(a) => !eval(rec, obj, a),
        Cond::Cmp { field, op, value } => {
            let actual = get(field);
            if matches!(value, SoqlValue::Null) {
                return match op {
                    Op::Eq => actual.is_null(),
                    Op::Ne => !actual.is_null(),
                    _ => false,
                };
            }
            match cmp_sf(&actual, value) {
                None => *op == Op::Ne && !actual.is_null(),
                Some(o) => match op {
                    Op::Eq => o.is_eq(),
                    Op::Ne => o.is_ne(),
                    Op::Lt => o.is_lt(),
                    Op::Le => o.is_le(),
                    Op::Gt => o.is_gt(),
                    Op::Ge => o.is_ge(),
                },
            }
        }
        Cond::In {
            field,
            values,
            negated,
        } => {
            let actual = get(field);
            let hit = values.iter().any(|v| {
                cmp_sf(&actual, v).is_some_and(|o| o.is_eq())
                    || (v == &SoqlValue::Null && actual.is_null())
            });
            hit != *negated
        }
        Cond::Like { field, pattern } => {
            get(field).as_str().is_some_and(|s| soql::like(s, pattern))
        }
    }
}

fn order_cmp(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    obj: &SObject,
    order: &[soql::OrderItem],
) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for o in order {
        let name = obj
            .field(&o.field)
            .map(|f| f.name.as_str())
            .unwrap_or(&o.field);
        let (x, y) = (
            a.get(name).unwrap_or(&Value::Null),
            b.get(name).unwrap_or(&Value::Null),
        );
        let ord = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if o.nulls_last {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, true) => {
                if o.nulls_last {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            _ => {
                let base = match (x, y) {
                    (Value::Number(p), Value::Number(q)) => p
                        .as_f64()
                        .partial_cmp(&q.as_f64())
                        .unwrap_or(Ordering::Equal),
                    (Value::String(p), Value::String(q)) => {
                        match (parse_sf_datetime(p), parse_sf_datetime(q)) {
                            (Some(s), Some(t)) if p.contains('T') => s.cmp(&t),
                            _ => p.to_lowercase().cmp(&q.to_lowercase()),
                        }
                    }
                    (Value::Bool(p), Value::Bool(q)) => p.cmp(q),
                    _ => Ordering::Equal,
                };
                if o.desc { base.reverse() } else { base }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    let ia = a.get("Id").and_then(Value::as_str).unwrap_or("");
    let ib = b.get("Id").and_then(Value::as_str).unwrap_or("");
    ia.cmp(ib)
}

fn batch_size(headers: &HeaderMap) -> usize {
    headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',').find_map(|p| {
                p.trim()
                    .strip_prefix("batchSize=")
                    .and_then(|n| n.trim().parse::<usize>().ok())
            })
        })
        .map(|n| n.clamp(200, DEFAULT_BATCH))
        .unwrap_or(DEFAULT_BATCH)
}

impl SfState {
    fn query(
        &mut self,
        q: &str,
        version: &str,
        batch: usize,
    ) -> Result<Value, (StatusCode, SfErr)> {
        let bad = |e: SfErr| (StatusCode::BAD_REQUEST, e);
        let parsed = soql::parse(q).map_err(|e| bad(SfErr::new("MALFORMED_QUERY", e.0)))?;
        let o = self.obj_index(&parsed.object).ok_or_else(|| {
            bad(SfErr::new(
                "INVALID_TYPE",
                format!("sObject type '{}' is not supported.", parsed.object),
            ))
        })?;
        let obj = &self.objects[o];
        let mut fields = Vec::new();
        for fname in &parsed.fields {
            let fl = obj.field(fname).ok_or_else(|| {
                bad(SfErr::new(
                    "INVALID_FIELD",
                    format!("No such column '{fname}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.", obj.name),
                ))
            })?;
            fields.push(fl.name.clone());
        }
        for o in &parsed.order {
            if obj.field(&o.field).is_none() {
                return Err(bad(SfErr::new(
                    "INVALID_FIELD",
                    format!("No such column '{}' on entity '{}'.", o.field, obj.name),
                )));
            }
        }
        if let Some(c) = &parsed.filter {
            bind(obj, c).map_err(bad)?;
        }
        let lower = parsed
            .filter
            .as_ref()
            .and_then(|c| c.lower_bound("SystemModstamp"));
        let mut ids: Vec<&String> = match lower {
            Some(t) => obj
                .by_modstamp
                .range((
                    std::ops::Bound::Included((t.trunc_subsecs(3), String::new())),
                    std::ops::Bound::Unbounded,
                ))
                .map(|(_, id)| id)
                .filter(|id| {
                    obj.records
                        .get(*id)
                        .is_some_and(|r| parsed.filter.as_ref().is_none_or(|c| eval(r, obj, c)))
                })
                .collect(),
            None => obj
                .records
                .iter()
                .filter(|(_, r)| parsed.filter.as_ref().is_none_or(|c| eval(r, obj, c)))
                .map(|(id, _)| id)
                .collect(),
        };
        if !parsed.order.is_empty() {
            let modstamp_only = parsed.order.len() == 1
                && parsed.order[0].field.eq_ignore_ascii_case("SystemModstamp")
                && !parsed.order[0].desc
                && lower.is_some();
            if !modstamp_only {
                ids.sort_by(|a, b| {
                    order_cmp(&obj.records[*a], &obj.records[*b], obj, &parsed.order)
                });
            }
        }
        let offset = parsed.offset.unwrap_or(0);
        let ids: Vec<String> = ids
            .into_iter()
            .skip(offset)
            .take(parsed.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        let total = ids.len();
        let first: Vec<Value> = ids
            .iter()
            .take(batch)
            .filter_map(|id| self.render(o, id, &fields, version))
            .collect();
        let mut body = json!({"totalSize": total, "done": total <= batch, "records": first});
        if total > batch {
            let loc = format!("01gSIM{:010}", self.next_cursor);
            self.next_cursor += 1;
            self.cursors.insert(
                loc.clone(),
                Cursor {
                    object: self.objects[o].name,
                    fields,
                    ids,
                    batch,
                },
            );
            self.cursor_order.push_back(loc.clone());
            while self.cursor_order.len() > CURSOR_LIMIT {
                if let Some(old) = self.cursor_order.pop_front() {
                    self.cursors.remove(&old);
                }
            }
            body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{loc}-{batch}"));
        }
        Ok(body)
    }

    fn query_more(&self, locator: &str, version: &str) -> Result<Value, (StatusCode, SfErr)> {
        let invalid = || {
            (
                StatusCode::BAD_REQUEST,
                SfErr::new("INVALID_QUERY_LOCATOR", "invalid query locator"),
            )
        };
        let (loc, off) = locator.rsplit_once('-').ok_or_else(invalid)?;
        let off: usize = off.parse().map_err(|_| invalid())?;
        let c = self.cursors.get(loc).ok_or_else(invalid)?;
        let o = self.obj_index(c.object).ok_or_else(invalid)?;
        if off > c.ids.len() {
            return Err(invalid());
        }
        let end = (off + c.batch).min(c.ids.len());
        let records: Vec<Value> = c.ids[off..end]
            .iter()
            .filter_map(|id| self.render(o, id, &c.fields, version))
            .collect();
        let mut body =
            json!({"totalSize": c.ids.len(), "done": end >= c.ids.len(), "records": records});
        if end < c.ids.len() {
            body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{loc}-{end}"));
        }
        Ok(body)
    }

    fn describe(&self, o: usize, version: &str) -> Value {
        let obj = &self.objects[o];
        let fields: Vec<Value> = obj
            .fields
            .iter()
            .map(|fl| {
                let (ty, soap) = fl.ty.soap_type();
                let (picklist, restricted) = match &fl.ty {
                    FType::Picklist { values, restricted } => (
                        values.iter().map(|v| json!({"active": true, "defaultValue": false, "label": v, "validFor": null, "value": v})).collect::<Vec<_>>(),
                        *restricted,
                    ),
                    _ => (Vec::new(), false),
                };
                let length = match fl.ty {
                    FType::Str(n) | FType::TextArea(n) => n,
                    FType::Id | FType::Reference(_) => 18,
                    FType::Email => 80,
                    FType::Phone => 40,
                    FType::Url => 255,
                    FType::Picklist { .. } => 255,
                    _ => 0,
                };
                json!({
                    "name": fl.name, "label": fl.label, "type": ty, "soapType": soap, "length": length,
                    "custom": fl.name.ends_with("__c"), "externalId": fl.external_id, "unique": fl.external_id,
                    "idLookup": fl.external_id || fl.name == "Id", "nillable": !fl.required && fl.createable,
                    "createable": fl.createable, "updateable": fl.updateable, "filterable": true, "sortable": true,
                    "picklistValues": picklist, "restrictedPicklist": restricted,
                    "referenceTo": match fl.ty { FType::Reference(t) => vec![t], _ => vec![] },
                    "defaultedOnCreate": matches!(fl.ty, FType::Bool) || fl.name == "Id",
                })
            })
            .collect();
        json!({
            "name": obj.name, "label": obj.label, "labelPlural": format!("{}s", obj.label), "keyPrefix": obj.prefix,
            "custom": false, "createable": obj.writable, "updateable": obj.writable, "deletable": obj.writable,
            "queryable": true, "fields": fields,
            "urls": {"sobject": format!("/services/data/{version}/sobjects/{}", obj.name),
                     "describe": format!("/services/data/{version}/sobjects/{}/describe", obj.name),
                     "rowTemplate": format!("/services/data/{version}/sobjects/{}/{{ID}}", obj.name)},
        })
    }

    /// sObject Collections upsert by External ID.
    fn collection_upsert(
        &mut self,
        o: usize,
        ext: &str,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value, (StatusCode, SfErr)> {
        let bad = |e: SfErr| (StatusCode::BAD_REQUEST, e);
        let obj = &self.objects[o];
        let Some(ext_field) = obj
            .field(ext)
            .filter(|f| f.external_id)
            .map(|f| f.name.clone())
        else {
            return Err(bad(SfErr::new(
                "INVALID_FIELD",
                format!("Provided external ID field does not exist or is not accessible: {ext}"),
            )));
        };
        let (all_or_none, records) = collection_body(body).map_err(bad)?;
        let mut results: Vec<Result<(String, bool), SfErr>> = Vec::new();
        let mut undo: Vec<(String, Option<Map<String, Value>>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for rec in records {
            let r = (|| -> Result<(String, bool), SfErr> {
                let m = rec.as_object().ok_or_else(|| {
                    SfErr::new("JSON_PARSER_ERROR", "each record must be a JSON object")
                })?;
                check_type(m, self.objects[o].name)?;
                let key = m
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&ext_field))
                    .and_then(|(_, v)| {
                        v.as_str()
                            .map(str::to_owned)
                            .or_else(|| v.as_i64().map(|n| n.to_string()))
                    })
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        SfErr::new("MISSING_ARGUMENT", format!("{ext_field} not specified"))
                    })?;
                if !seen.insert(key.to_ascii_lowercase()) {
                    return Err(SfErr::new(
                        "DUPLICATE_EXTERNAL_ID",
                        format!("Duplicate external id specified: {key}"),
                    )
                    .on(&ext_field));
                }
                if m.keys().any(|k| k.eq_ignore_ascii_case("Id")) {
                    return Err(SfErr::new(
                        "INVALID_FIELD",
                        "Id is not allowed in an upsert by external ID",
                    )
                    .on("Id"));
                }
                let existing = self.objects[o].find_ext(&ext_field, &key);
                let values = self.check_fields(o, m, existing.is_none(), &[])?;
                let before = existing
                    .as_ref()
                    .and_then(|id| self.objects[o].records.get(id).cloned());
                let (id, created) = self.write(o, existing.as_deref(), values, now)?;
                undo.push((id.clone(), before));
                Ok((id, created))
            })();
            results.push(r);
        }
        let any_failed = results.iter().any(Result::is_err);
        if all_or_none && any_failed {
            for (id, before) in undo.into_iter().rev() {
                self.objects[o].unindex(&id);
                if let Some(b) = before {
                    self.objects[o].index(id, b);
                }
            }
            return Ok(Value::Array(
                results
                    .into_iter()
                    .map(|r| match r {
                        Ok(_) => json!({"success": false, "created": false, "errors": [SfErr::new("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all records were valid and the request was using AllOrNone header").item()]}),
                        Err(e) => json!({"success": false, "created": false, "errors": [e.item()]}),
                    })
                    .collect(),
            ));
        }
        Ok(Value::Array(
            results
                .into_iter()
                .map(|r| match r {
                    Ok((id, created)) => {
                        json!({"id": id, "success": true, "errors": [], "created": created})
                    }
                    Err(e) => json!({"success": false, "created": false, "errors": [e.item()]}),
                })
                .collect(),
        ))
    }

    /// sObject Collections create (POST) or update by Id (PATCH).
    fn collection_write(
        &mut self,
        body: &Value,
        creating: bool,
        now: DateTime<Utc>,
    ) -> Result<Value, (StatusCode, SfErr)> {
        let bad = |e: SfErr| (StatusCode::BAD_REQUEST, e);
        let (all_or_none, records) = collection_body(body).map_err(bad)?;
        let mut results = Vec::new();
        let mut undo: Vec<(usize, String, Option<Record>)> = Vec::new();
        for rec in records {
            let r = (|| -> Result<String, SfErr> {
                let m = rec.as_object().ok_or_else(|| {
                    SfErr::new("JSON_PARSER_ERROR", "each record must be a JSON object")
                })?;
                let ty = m
                    .get("attributes")
                    .and_then(|a| a.get("type"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        SfErr::new("INVALID_TYPE", "Must send a concrete entity type.")
                    })?;
                let o = self.obj_index(ty).ok_or_else(|| {
                    SfErr::new(
                        "INVALID_TYPE",
                        format!("sObject type '{ty}' is not supported."),
                    )
                })?;
                let id = if creating {
                    if m.keys().any(|k| k.eq_ignore_ascii_case("Id")) {
                        return Err(SfErr::new(
                            "INVALID_FIELD",
                            "Records in a create request must not have an Id",
                        )
                        .on("Id"));
                    }
                    None
                } else {
                    let raw = m
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("Id"))
                        .and_then(|(_, v)| v.as_str())
                        .ok_or_else(|| {
                            SfErr::new("MISSING_ARGUMENT", "Id not specified in an update call")
                        })?;
                    let id = normalize_id(raw).ok_or_else(|| {
                        SfErr::new(
                            "MALFORMED_ID",
                            format!("{ty} ID: id value of incorrect type: {raw}"),
                        )
                        .on("Id")
                    })?;
                    if !self.objects[o].records.contains_key(&id) {
                        return Err(SfErr::new("ENTITY_IS_DELETED", "entity is deleted").on("Id"));
                    }
                    Some(id)
                };
                let values = self.check_fields(o, m, creating, &["Id"])?;
                let before = id
                    .as_ref()
                    .and_then(|i| self.objects[o].records.get(i).cloned());
                let (id, _) = self.write(o, id.as_deref(), values, now)?;
                undo.push((o, id.clone(), before));
                Ok(id)
            })();
            results.push(r);
        }
        let any_failed = results.iter().any(Result::is_err);
        if all_or_none && any_failed {
            for (o, id, before) in undo.into_iter().rev() {
                self.objects[o].unindex(&id);
                if let Some(b) = before {
                    self.objects[o].index(id, b);
                }
            }
        }
        let rolled = all_or_none && any_failed;
        Ok(Value::Array(
            results
                .into_iter()
                .map(|r| match r {
                    Ok(_) if rolled => json!({"success": false, "errors": [SfErr::new("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all records were valid and the request was using AllOrNone header").item()]}),
                    Ok(id) => json!({"id": id, "success": true, "errors": []}),
                    Err(e) => json!({"success": false, "errors": [e.item()]}),
                })
                .collect(),
        ))
    }
}

fn check_type(m: &Map<String, Value>, want: &str) -> Result<(), SfErr> {
    match m
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
    {
        None => Err(SfErr::new(
            "INVALID_TYPE",
            "Must send a concrete entity type.",
        )),
        Some(t) if !t.eq_ignore_ascii_case(want) => Err(SfErr::new(
            "INVALID_TYPE",
            format!("Record type {t} does not match the sObject type {want} of the request URI."),
        )),
        Some(_) => Ok(()),
    }
}

fn collection_body(body: &Value) -> Result<(bool, &Vec<Value>), SfErr> {
    let records = body
        .get("records")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            SfErr::new(
                "JSON_PARSER_ERROR",
                "The request body must be an object with a records array.",
            )
        })?;
    if records.len() > MAX_COLLECTION {
        return Err(SfErr::new(
            "EXCEEDED_ID_LIMIT",
            format!(
                "record limit reached. cannot submit more than {MAX_COLLECTION} records into this call"
            ),
        ));
    }
    if records.is_empty() {
        return Err(SfErr::new("INVALID_INPUT", "The records array is empty."));
    }
    let all_or_none = body
        .get("allOrNone")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((all_or_none, records))
}

fn supported_version(v: &str) -> bool {
    v.strip_prefix('v')
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(|n| (20.0..=64.0).contains(&n))
}

/// `GET /services/data`
pub(crate) async fn versions(State(state): State<Arc<SimState>>) -> Response {
    let _ = &state;
    let list: Vec<Value> = (58..=64)
        .map(|n| json!({"label": format!("API {n}.0"), "url": format!("/services/data/v{n}.0"), "version": format!("{n}.0")}))
        .collect();
    sf_json(StatusCode::OK, &Value::Array(list))
}

#[derive(Deserialize)]
struct JwtClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Value>,
    exp: Option<i64>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    sf_json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// `POST /services/oauth2/token` (at the root or under `/salesforce`).
/// The `instance_url` is the origin plus the prefix the token was asked at,
/// so clients that build host-rooted paths (as on Salesforce) work too.
pub(crate) async fn token(
    State(state): State<Arc<SimState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let login = if uri.path().starts_with("/salesforce/") {
        state.urls.salesforce.clone()
    } else {
        state.urls.base.clone()
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let now = state.clock.now();
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    match grant {
        "client_credentials" => {
            let id = form
                .get("client_id")
                .cloned()
                .or_else(|| basic.as_ref().map(|b| b.0.clone()));
            let secret = form
                .get("client_secret")
                .cloned()
                .or_else(|| basic.as_ref().map(|b| b.1.clone()));
            if id.as_deref() != Some(creds::SALESFORCE_CLIENT_ID) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client_id",
                    "client identifier invalid",
                );
            }
            if secret.as_deref() != Some(creds::SALESFORCE_CLIENT_SECRET) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    "invalid client credentials",
                );
            }
        }
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            let Some(assertion) = form.get("assertion") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "assertion is required",
                );
            };
            let key = lock(&state.sf).jwt_key.clone();
            let claims: Result<JwtClaims, String> = match key {
                Some(pem) => match jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()) {
                    Ok(k) => {
                        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                        v.validate_exp = false;
                        v.validate_aud = false;
                        v.required_spec_claims.clear();
                        jsonwebtoken::decode::<JwtClaims>(assertion, &k, &v)
                            .map(|d| d.claims)
                            .map_err(|_| "invalid assertion".to_owned())
                    }
                    Err(_) => Err("the simulator's JWT public key is not a valid PEM".to_owned()),
                },
                None => jsonwebtoken::dangerous::insecure_decode_claims::<JwtClaims>(assertion)
                    .map_err(|_| "invalid assertion".to_owned()),
            };
            let claims = match claims {
                Ok(c) => c,
                Err(m) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &m),
            };
            if claims.iss.as_deref() != Some(creds::SALESFORCE_CLIENT_ID) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client_id",
                    "client identifier invalid",
                );
            }
            if claims.sub.as_deref() != Some(creds::SALESFORCE_USERNAME) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "user hasn't approved this consumer",
                );
            }
            let aud_ok = |a: &str| {
                let a = a.trim_end_matches('/');
                a == "https://login.salesforce.com"
                    || a == "https://test.salesforce.com"
                    || a == state.urls.salesforce
                    || a == state.urls.base
            };
            let aud_matches = match &claims.aud {
                Some(Value::String(a)) => aud_ok(a),
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(aud_ok),
                _ => false,
            };
            if !aud_matches {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "audience is invalid",
                );
            }
            let wall = Utc::now().timestamp();
            match claims.exp {
                Some(exp) if exp > now.timestamp() || exp > wall => {}
                _ => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "expired authorization code",
                    );
                }
            }
        }
        "" => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant type is required",
            );
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant type not supported",
            );
        }
    }
    let mut sf = lock(&state.sf);
    let token = sf.new_session(now);
    let instance = login;
    let body = json!({
        "access_token": token,
        "signature": base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes()),
        "scope": "api",
        "instance_url": instance,
        "id": format!("{instance}/id/{}/{}", sf.org_id, sf.user_id),
        "token_type": "Bearer",
        "issued_at": now.timestamp_millis().to_string(),
    });
    sf_json(StatusCode::OK, &body)
}

/// `ANY /services/data/{version}/{*rest}`
pub(crate) async fn dispatch(
    State(state): State<Arc<SimState>>,
    method: Method,
    headers: HeaderMap,
    Path((version, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let now = state.clock.now();
    if !supported_version(&version) {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    }
    let mut sf = lock(&state.sf);
    if !sf.session_ok(bearer(&headers), now) {
        return error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        );
    }
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let segs: Vec<String> = rest
        .trim_end_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let json_body = || {
        serde_json::from_slice::<Value>(&body).map_err(|e| {
            SfErr::new(
                "JSON_PARSER_ERROR",
                format!("The request body is not valid JSON: {e}"),
            )
        })
    };
    let result: Result<Response, (StatusCode, SfErr)> = (|| match (method.clone(), segs.as_slice())
    {
        (Method::GET, ["query" | "queryAll"]) => {
            let q = params.get("q").ok_or((
                StatusCode::BAD_REQUEST,
                SfErr::new("MALFORMED_QUERY", "A query string (q) is required."),
            ))?;
            sf.query(q, &version, batch_size(&headers))
                .map(|b| sf_json(StatusCode::OK, &b))
        }
        (Method::GET, ["query" | "queryAll", loc]) => sf
            .query_more(loc, &version)
            .map(|b| sf_json(StatusCode::OK, &b)),
        (Method::GET, ["limits"]) => {
            let (used, max) = sf.api_usage(now);
            Ok(sf_json(
                StatusCode::OK,
                &json!({"DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(used)}}),
            ))
        }
        (Method::GET, ["sobjects"]) => {
            let list: Vec<Value> = sf
                .objects
                .iter()
                .map(|o| json!({"name": o.name, "label": o.label, "keyPrefix": o.prefix, "queryable": true, "createable": o.writable,
                    "urls": {"sobject": format!("/services/data/{version}/sobjects/{}", o.name)}}))
                .collect();
            Ok(sf_json(
                StatusCode::OK,
                &json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": list}),
            ))
        }
        (Method::GET, ["sobjects", obj, "describe"]) => {
            let o = sf.obj_index(obj).ok_or((
                StatusCode::NOT_FOUND,
                SfErr::new("NOT_FOUND", "The requested resource does not exist"),
            ))?;
            Ok(sf_json(StatusCode::OK, &sf.describe(o, &version)))
        }
        (m, ["sobjects", obj, rest @ ..]) => {
            let o = sf.obj_index(obj).ok_or((
                StatusCode::NOT_FOUND,
                SfErr::new("NOT_FOUND", "The requested resource does not exist"),
            ))?;
            sobject_op(&mut sf, o, &m, rest, &params, &version, json_body, now)
        }
        (Method::PATCH, ["composite", "sobjects", obj, ext]) => {
            let o = sf.obj_index(obj).ok_or((
                StatusCode::NOT_FOUND,
                SfErr::new("NOT_FOUND", "The requested resource does not exist"),
            ))?;
            let b = json_body().map_err(|e| (StatusCode::BAD_REQUEST, e))?;
            sf.collection_upsert(o, ext, &b, now)
                .map(|v| sf_json(StatusCode::OK, &v))
        }
        (Method::POST | Method::PATCH, ["composite", "sobjects"]) => {
            let b = json_body().map_err(|e| (StatusCode::BAD_REQUEST, e))?;
            sf.collection_write(&b, method == Method::POST, now)
                .map(|v| sf_json(StatusCode::OK, &v))
        }
        _ => Err((
            StatusCode::NOT_FOUND,
            SfErr::new("NOT_FOUND", "The requested resource does not exist"),
        )),
    })();
    match result {
        Ok(r) => r,
        Err((status, e)) => err_response(status, &e),
    }
}

#[allow(clippy::too_many_arguments)]
fn sobject_op(
    sf: &mut SfState,
    o: usize,
    method: &Method,
    rest: &[&str],
    params: &HashMap<String, String>,
    version: &str,
    json_body: impl Fn() -> Result<Value, SfErr>,
    now: DateTime<Utc>,
) -> Result<Response, (StatusCode, SfErr)> {
    let bad = |e: SfErr| (StatusCode::BAD_REQUEST, e);
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            SfErr::new("NOT_FOUND", "The requested resource does not exist"),
        )
    };
    let as_obj = |v: Value| -> Result<Map<String, Value>, (StatusCode, SfErr)> {
        match v {
            Value::Object(m) => Ok(m),
            _ => Err(bad(SfErr::new(
                "JSON_PARSER_ERROR",
                "The request body must be a JSON object.",
            ))),
        }
    };
    let fields_param = |sf: &SfState| -> Result<Vec<String>, (StatusCode, SfErr)> {
        match params.get("fields") {
            None => Ok(sf.all_fields(o)),
            Some(list) => list
                .split(',')
                .map(|f| {
                    sf.objects[o]
                        .field(f.trim())
                        .map(|x| x.name.clone())
                        .ok_or_else(|| {
                            bad(SfErr::new(
                                "INVALID_FIELD",
                                format!(
                                    "No such column '{}' on sobject of type {}",
                                    f.trim(),
                                    sf.objects[o].name
                                ),
                            ))
                        })
                })
                .collect(),
        }
    };
    match (method.clone(), rest) {
        (Method::GET, []) => Ok(sf_json(
            StatusCode::OK,
            &json!({"objectDescribe": {"name": sf.objects[o].name, "keyPrefix": sf.objects[o].prefix}, "recentItems": []}),
        )),
        (Method::POST, []) => {
            let m = as_obj(json_body().map_err(bad)?)?;
            if m.keys().any(|k| k.eq_ignore_ascii_case("Id")) {
                return Err(bad(SfErr::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    "Unable to create/update fields: Id.",
                )
                .on("Id")));
            }
            let values = sf.check_fields(o, &m, true, &[]).map_err(bad)?;
            let (id, _) = sf.write(o, None, values, now).map_err(bad)?;
            Ok(sf_json(
                StatusCode::CREATED,
                &json!({"id": id, "success": true, "errors": []}),
            ))
        }
        (m, [raw_id]) => {
            let id = normalize_id(raw_id)
                .filter(|id| sf.objects[o].records.contains_key(id))
                .ok_or_else(not_found)?;
            match m {
                Method::GET => {
                    let fields = fields_param(sf)?;
                    sf.render(o, &id, &fields, version)
                        .map(|v| sf_json(StatusCode::OK, &v))
                        .ok_or_else(not_found)
                }
                Method::PATCH => {
                    let body = as_obj(json_body().map_err(bad)?)?;
                    let values = sf.check_fields(o, &body, false, &[]).map_err(bad)?;
                    sf.write(o, Some(&id), values, now).map_err(bad)?;
                    Ok(no_content())
                }
                Method::DELETE => {
                    if !sf.objects[o].writable {
                        return Err(bad(SfErr::new(
                            "INVALID_TYPE_FOR_OPERATION",
                            "entity type does not support delete",
                        )));
                    }
                    sf.objects[o].unindex(&id);
                    Ok(no_content())
                }
                _ => Err((
                    StatusCode::METHOD_NOT_ALLOWED,
                    SfErr::new(
                        "METHOD_NOT_ALLOWED",
                        format!("HTTP Method '{m}' not allowed. Allowed are GET,PATCH,DELETE"),
                    ),
                )),
            }
        }
        (m, [ext, value]) => {
            let Some(ext_field) = sf.objects[o]
                .field(ext)
                .filter(|f| f.external_id || f.name == "Id")
                .map(|f| f.name.clone())
            else {
                return Err(not_found());
            };
            let existing = if ext_field == "Id" {
                normalize_id(value).filter(|id| sf.objects[o].records.contains_key(id))
            } else {
                sf.objects[o].find_ext(&ext_field, value)
            };
            match m {
                Method::GET => {
                    let id = existing.ok_or_else(not_found)?;
                    let fields = fields_param(sf)?;
                    sf.render(o, &id, &fields, version)
                        .map(|v| sf_json(StatusCode::OK, &v))
                        .ok_or_else(not_found)
                }
                Method::PATCH => {
                    let body = as_obj(json_body().map_err(bad)?)?;
                    if let Some((_, v)) = body
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(&ext_field))
                        && v.as_str() != Some(value)
                    {
                        return Err(bad(SfErr::new("INVALID_FIELD", format!("The external ID field {ext_field} in the body does not match the value in the URL")).on(&ext_field)));
                    }
                    if params.get("updateOnly").is_some_and(|v| v == "true") && existing.is_none() {
                        return Err(not_found());
                    }
                    let mut values = sf
                        .check_fields(o, &body, existing.is_none(), &[])
                        .map_err(bad)?;
                    if existing.is_none() && ext_field != "Id" {
                        values.insert(ext_field.clone(), json!(value));
                    }
                    let (id, created) =
                        sf.write(o, existing.as_deref(), values, now).map_err(bad)?;
                    let status = if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    Ok(sf_json(
                        status,
                        &json!({"id": id, "success": true, "errors": [], "created": created}),
                    ))
                }
                _ => Err((
                    StatusCode::METHOD_NOT_ALLOWED,
                    SfErr::new(
                        "METHOD_NOT_ALLOWED",
                        format!("HTTP Method '{m}' not allowed. Allowed are GET,PATCH"),
                    ),
                )),
            }
        }
        _ => Err(not_found()),
    }
}

/// What a person does in Salesforce, without HTTP.
impl SimState {
    fn sf_opportunity_index(sf: &SfState) -> usize {
        sf.obj_index("Opportunity").unwrap_or(0)
    }

    /// An Opportunity as the REST API returns it (all fields).
    pub fn salesforce_opportunity(&self, id: &str) -> Option<Value> {
        let sf = lock(&self.sf);
        let o = Self::sf_opportunity_index(&sf);
        let id = normalize_id(id)?;
        sf.render(o, &id, &sf.all_fields(o), "v62.0")
    }

    /// The Opportunity whose External ID field holds a referral id.
    pub fn salesforce_opportunity_by_referral(&self, referral_id: &str) -> Option<Value> {
        let sf = lock(&self.sf);
        let o = Self::sf_opportunity_index(&sf);
        let id = sf.objects[o].find_ext(&sf.external_id, referral_id)?;
        sf.render(o, &id, &sf.all_fields(o), "v62.0")
    }

    pub fn salesforce_opportunity_ids(&self) -> Vec<String> {
        let sf = lock(&self.sf);
        sf.objects[Self::sf_opportunity_index(&sf)]
            .records
            .keys()
            .cloned()
            .collect()
    }

    /// The OpportunityStage picklist.
    pub fn salesforce_stages(&self) -> Vec<SfStage> {
        lock(&self.sf).stages.clone()
    }

    /// Moves an Opportunity to another stage, as a seller would.
    pub fn set_sf_stage(&self, id: &str, stage: &str) -> Result<Value, SimError> {
        self.edit_salesforce(id, json!({"StageName": stage}))
    }

    /// Edits Opportunity fields (the same checks as the REST API).
    pub fn edit_salesforce(&self, id: &str, fields: Value) -> Result<Value, SimError> {
        self.edit_salesforce_record("Opportunity", id, fields)
    }

    /// Every record of an sObject (e.g. `Account`), as the REST API returns
    /// them with all fields, oldest id first.
    pub fn salesforce_records(&self, object: &str) -> Vec<Value> {
        let sf = lock(&self.sf);
        let Some(o) = sf.obj_index(object) else {
            return Vec::new();
        };
        let fields = sf.all_fields(o);
        sf.objects[o]
            .records
            .keys()
            .filter_map(|id| sf.render(o, id, &fields, "v62.0"))
            .collect()
    }

    /// Deletes a record of a writable sObject, as a user would.
    pub fn delete_salesforce_record(&self, object: &str, id: &str) -> Result<(), SimError> {
        let mut sf = lock(&self.sf);
        let o = sf
            .obj_index(object)
            .filter(|o| sf.objects[*o].writable)
            .ok_or_else(|| SimError::NotFound(format!("sObject {object}")))?;
        let nid = normalize_id(id).ok_or_else(|| SimError::NotFound(format!("{object} {id}")))?;
        sf.objects[o]
            .unindex(&nid)
            .map(|_| ())
            .ok_or_else(|| SimError::NotFound(format!("{object} {id}")))
    }

    /// Edits fields of any writable record (the same checks as the REST API).
    pub fn edit_salesforce_record(
        &self,
        object: &str,
        id: &str,
        fields: Value,
    ) -> Result<Value, SimError> {
        let now = self.clock.now();
        let mut sf = lock(&self.sf);
        let o = sf
            .obj_index(object)
            .ok_or_else(|| SimError::NotFound(format!("sObject {object}")))?;
        let nid = normalize_id(id)
            .filter(|i| sf.objects[o].records.contains_key(i))
            .ok_or_else(|| SimError::NotFound(format!("{object} {id}")))?;
        let Value::Object(m) = fields else {
            return Err(SimError::Invalid("fields must be a JSON object".into()));
        };
        let values = sf
            .check_fields(o, &m, false, &[])
            .map_err(|e| SimError::Invalid(format!("{}: {}", e.code, e.message)))?;
        sf.write(o, Some(&nid), values, now)
            .map_err(|e| SimError::Invalid(format!("{}: {}", e.code, e.message)))?;
        sf.render(o, &nid, &sf.all_fields(o), "v62.0")
            .ok_or_else(|| SimError::NotFound(id.to_owned()))
    }

    /// Creates an Opportunity (e.g. with `Sync_with_Partner_Center__c` set).
    pub fn create_salesforce_opportunity(&self, fields: Value) -> Result<Value, SimError> {
        let now = self.clock.now();
        let mut sf = lock(&self.sf);
        let o = Self::sf_opportunity_index(&sf);
        let Value::Object(m) = fields else {
            return Err(SimError::Invalid("fields must be a JSON object".into()));
        };
        let values = sf
            .check_fields(o, &m, true, &[])
            .map_err(|e| SimError::Invalid(format!("{}: {}", e.code, e.message)))?;
        let (id, _) = sf
            .write(o, None, values, now)
            .map_err(|e| SimError::Invalid(format!("{}: {}", e.code, e.message)))?;
        sf.render(o, &id, &sf.all_fields(o), "v62.0")
            .ok_or(SimError::NotFound(id))
    }

    /// Removes a field from an sObject, as when a Data.com licence ends or an
    /// admin deletes a custom field: describe no longer lists it, and a query
    /// or write naming it gets `INVALID_FIELD`. Required fields, `Id` and the
    /// External ID field holding the referral id cannot be removed.
    pub fn remove_salesforce_field(&self, object: &str, field: &str) -> Result<(), SimError> {
        let mut sf = lock(&self.sf);
        let o = sf
            .obj_index(object)
            .ok_or_else(|| SimError::NotFound(format!("sObject {object}")))?;
        let external_id = sf.external_id.clone();
        let obj = &mut sf.objects[o];
        let fl = obj
            .field(field)
            .ok_or_else(|| SimError::NotFound(format!("field {object}.{field}")))?;
        if fl.required || fl.name == "Id" || fl.name.eq_ignore_ascii_case(&external_id) {
            return Err(SimError::Conflict(format!(
                "{object}.{} cannot be removed",
                fl.name
            )));
        }
        let name = fl.name.clone();
        obj.fields.retain(|f| f.name != name);
        obj.by_ext.remove(&name);
        for rec in obj.records.values_mut() {
            rec.remove(&name);
        }
        Ok(())
    }

    /// Sets the org's rolling 24-hour API allocation.
    pub fn set_salesforce_daily_limit(&self, max: u64) {
        lock(&self.sf).daily_limit = max;
    }

    /// Uses up the rest of today's allocation: calls get 403 REQUEST_LIMIT_EXCEEDED
    /// until usage rolls off (24 simulated hours) or the limit is raised.
    pub fn exhaust_salesforce_daily_limit(&self) {
        let now = self.clock.now();
        lock(&self.sf).exhaust(now);
    }

    /// (used, allocation) of Salesforce API calls over the last 24 hours.
    pub fn salesforce_api_usage(&self) -> (u64, u64) {
        let now = self.clock.now();
        lock(&self.sf).api_usage(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_get_their_checksum_suffix() {
        assert_eq!(id18("001A0000006Vm9r"), "001A0000006Vm9rIAC");
        assert_eq!(
            normalize_id("001A0000006Vm9r").as_deref(),
            Some("001A0000006Vm9rIAC")
        );
        assert!(normalize_id("006XX").is_none());
    }

    #[test]
    fn usage_rolls_over_24_hours() {
        let mut sf = SfState::new(&SimOptions {
            salesforce_daily_limit: 2,
            ..SimOptions::default()
        });
        let t = Utc::now();
        assert!(sf.use_api_call(t));
        assert!(sf.use_api_call(t));
        assert!(!sf.use_api_call(t));
        assert_eq!(sf.api_usage(t), (2, 2));
        assert!(sf.use_api_call(t + TimeDelta::hours(25)));
    }

    #[test]
    fn stage_changes_derive_closed_and_won() {
        let mut sf = SfState::new(&SimOptions::default());
        let now = Utc::now();
        let body = json!({"Name": "X", "CloseDate": "2025-06-30", "StageName": "Prospecting"});
        let v = sf
            .check_fields(0, body.as_object().unwrap(), true, &[])
            .unwrap();
        let (id, created) = sf.write(0, None, v, now).unwrap();
        assert!(created);
        let v = sf
            .check_fields(
                0,
                json!({"StageName": "Closed Won"}).as_object().unwrap(),
                false,
                &[],
            )
            .unwrap();
        sf.write(0, Some(&id), v, now).unwrap();
        let rec = &sf.objects[0].records[&id];
        assert_eq!(rec["IsWon"], json!(true));
        assert_eq!(rec["Probability"], json!(100));
        let e = sf
            .check_fields(
                0,
                json!({"StageName": "Nope"}).as_object().unwrap(),
                false,
                &[],
            )
            .unwrap_err();
        assert_eq!(e.code, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
        let e = sf
            .check_fields(0, json!({"Bogus__c": 1}).as_object().unwrap(), false, &[])
            .unwrap_err();
        assert_eq!(e.code, "INVALID_FIELD");
    }
}
