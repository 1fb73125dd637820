//! Dataverse Web API (Dynamics 365) for opportunities, accounts and contacts:
//! OData queries with `modifiedon` filters and `odata.maxpagesize` paging,
//! create, update and alternate-key upsert with the conditional headers,
//! Win/LoseOpportunity, change tracking (delta links), metadata, and `$batch`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

use super::entra::TokenProblem;
use super::odata::{self, Expr, Literal, Resolver};
use super::{SimError, SimOptions, SimState, bearer, lock};

const MAX_PAGE: usize = 5000;
const DELTA_TOKEN_DAYS: i64 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColType {
    Guid,
    Text(usize),
    Money,
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    DateTime,
    DateOnly,
    Choice(&'static [(i64, &'static str)]),
    /// A lookup's `_x_value` column (read-only; written through a navigation property).
    Lookup,
}

impl ColType {
    fn attribute_type(self) -> &'static str {
        match self {
            ColType::Guid => "Uniqueidentifier",
            ColType::Text(n) if n > 4000 => "Memo",
            ColType::Text(_) => "String",
            ColType::Money => "Money",
            ColType::Int { .. } => "Integer",
            ColType::Bool => "Boolean",
            ColType::DateTime | ColType::DateOnly => "DateTime",
            ColType::Choice(_) => "Picklist",
            ColType::Lookup => "Lookup",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) ty: ColType,
    /// Set by the system only (ignored when sent).
    pub(crate) system: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct NavProp {
    /// e.g. `parentaccountid` or `customerid_account`.
    name: &'static str,
    /// The `_x_value` column it sets.
    column: &'static str,
    target_set: &'static str,
    target_logical: &'static str,
}

#[derive(Debug, Clone)]
pub(crate) struct TableDef {
    pub(crate) logical: &'static str,
    pub(crate) set: &'static str,
    pub(crate) pk: &'static str,
    primary_name: &'static str,
    pub(crate) columns: Vec<Column>,
    /// Alternate keys: (key name, column).
    keys: Vec<(String, String)>,
    nav: Vec<NavProp>,
    change_tracking: bool,
}

impl TableDef {
    fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

const STATE_OPP: &[(i64, &str)] = &[(0, "Open"), (1, "Won"), (2, "Lost")];
const STATUS_OPP: &[(i64, &str)] = &[
    (1, "In Progress"),
    (2, "On Hold"),
    (3, "Won"),
    (4, "Canceled"),
    (5, "Out-Sold"),
];
/// "How can Microsoft help?" (the `new_` publisher's option values).
pub(crate) const HELP_OPP: &[(i64, &str)] = &[
    (100_000_000, "Workload specific value proposition"),
    (100_000_001, "Customer technical architecture"),
    (100_000_002, "Proof of concept or demo"),
    (100_000_003, "Quotes or licensing"),
    (100_000_004, "Post sales customer success"),
    (100_000_005, "General or other"),
];
const SALES_STAGE: &[(i64, &str)] = &[(0, "Qualify"), (1, "Develop"), (2, "Propose"), (3, "Close")];
const RATING: &[(i64, &str)] = &[(1, "Hot"), (2, "Warm"), (3, "Cold")];
const STATE_ACTIVE: &[(i64, &str)] = &[(0, "Active"), (1, "Inactive")];
const STATUS_ACTIVE: &[(i64, &str)] = &[(1, "Active"), (2, "Inactive")];

/// The state a statuscode of an opportunity belongs to.
fn opp_state_of_status(status: i64) -> Option<i64> {
    match status {
        1 | 2 => Some(0),
        3 => Some(1),
        4 | 5 => Some(2),
        _ => None,
    }
}

fn col(name: &str, ty: ColType) -> Column {
    Column {
        name: name.to_owned(),
        ty,
        system: false,
    }
}

fn sys(name: &str, ty: ColType) -> Column {
    Column {
        name: name.to_owned(),
        ty,
        system: true,
    }
}

fn audit_columns() -> Vec<Column> {
    vec![
        sys("createdon", ColType::DateTime),
        sys("modifiedon", ColType::DateTime),
        sys(
            "versionnumber",
            ColType::Int {
                min: 0,
                max: i64::MAX,
            },
        ),
        sys("_ownerid_value", ColType::Lookup),
    ]
}

pub(crate) fn table_defs(opts: &SimOptions) -> Vec<TableDef> {
    let key = opts.dynamics_referral_key.clone();
    let mut opp = vec![
        col("opportunityid", ColType::Guid),
        col("name", ColType::Text(300)),
        col("description", ColType::Text(2000)),
        col("estimatedvalue", ColType::Money),
        col("actualvalue", ColType::Money),
        col("estimatedclosedate", ColType::DateOnly),
        col("actualclosedate", ColType::DateOnly),
        col("closeprobability", ColType::Int { min: 0, max: 100 }),
        col("statecode", ColType::Choice(STATE_OPP)),
        col("statuscode", ColType::Choice(STATUS_OPP)),
        col("salesstage", ColType::Choice(SALES_STAGE)),
        col("opportunityratingcode", ColType::Choice(RATING)),
        col("stepname", ColType::Text(200)),
        sys("_parentaccountid_value", ColType::Lookup),
        sys("_parentcontactid_value", ColType::Lookup),
        sys("_customerid_value", ColType::Lookup),
        sys("_transactioncurrencyid_value", ColType::Lookup),
        col(&key, ColType::Text(100)),
        col("new_referrallink", ColType::Text(255)),
        col("new_syncwithpartnercenter", ColType::Bool),
        col("new_howcanmicrosofthelp", ColType::Choice(HELP_OPP)),
        col("new_currencycode", ColType::Text(3)),
        col("new_customername", ColType::Text(160)),
        col("new_customeraddressline1", ColType::Text(250)),
        col("new_customercity", ColType::Text(80)),
        col("new_customerstate", ColType::Text(50)),
        col("new_customerpostalcode", ColType::Text(20)),
        col("new_customercountry", ColType::Text(100)),
        col("new_customercontactfirstname", ColType::Text(50)),
        col("new_customercontactlastname", ColType::Text(50)),
        col("new_customercontactemail", ColType::Text(100)),
        col("new_customercontactphone", ColType::Text(50)),
        col("new_customerconsenttoshare", ColType::Bool),
        col("new_partnercontactfirstname", ColType::Text(50)),
        col("new_partnercontactlastname", ColType::Text(50)),
        col("new_partnercontactemail", ColType::Text(100)),
        col("new_partnercontactphone", ColType::Text(50)),
        col("new_referralvisibility", ColType::Bool),
        col("new_microsoftsolutions", ColType::Text(1000)),
        col("new_closereason", ColType::Text(500)),
        col("new_microsoftcrmidentifier", ColType::Text(100)),
        col("new_partnercentersyncerror", ColType::Text(4000)),
        col("new_audit", ColType::Text(100_000)),
    ];
    for extra in &opts.dynamics_extra_columns {
        if !opp.iter().any(|c| &c.name == extra) {
            opp.push(col(extra, ColType::Text(4000)));
        }
    }
    opp.extend(audit_columns());
    let mut account = vec![
        col("accountid", ColType::Guid),
        col("name", ColType::Text(160)),
        col("accountnumber", ColType::Text(20)),
        col("address1_line1", ColType::Text(250)),
        col("address1_city", ColType::Text(80)),
        col("address1_stateorprovince", ColType::Text(50)),
        col("address1_postalcode", ColType::Text(20)),
        col("address1_country", ColType::Text(80)),
        col("telephone1", ColType::Text(50)),
        col("emailaddress1", ColType::Text(100)),
        col("websiteurl", ColType::Text(200)),
        col(
            "numberofemployees",
            ColType::Int {
                min: 0,
                max: 1_000_000_000,
            },
        ),
        col("statecode", ColType::Choice(STATE_ACTIVE)),
        col("statuscode", ColType::Choice(STATUS_ACTIVE)),
        col("new_dunsnumber", ColType::Text(20)),
    ];
    account.extend(audit_columns());
    let mut contact = vec![
        col("contactid", ColType::Guid),
        col("firstname", ColType::Text(50)),
        col("lastname", ColType::Text(50)),
        sys("fullname", ColType::Text(160)),
        col("emailaddress1", ColType::Text(100)),
        col("telephone1", ColType::Text(50)),
        col("jobtitle", ColType::Text(100)),
        sys("_parentcustomerid_value", ColType::Lookup),
        col("statecode", ColType::Choice(STATE_ACTIVE)),
        col("statuscode", ColType::Choice(STATUS_ACTIVE)),
    ];
    contact.extend(audit_columns());
    let currency = vec![
        col("transactioncurrencyid", ColType::Guid),
        col("isocurrencycode", ColType::Text(5)),
        col("currencyname", ColType::Text(100)),
        col("currencysymbol", ColType::Text(10)),
        sys("modifiedon", ColType::DateTime),
        sys("createdon", ColType::DateTime),
        sys(
            "versionnumber",
            ColType::Int {
                min: 0,
                max: i64::MAX,
            },
        ),
    ];
    vec![
        TableDef {
            logical: "opportunity",
            set: "opportunities",
            pk: "opportunityid",
            primary_name: "name",
            columns: opp,
            keys: vec![(format!("{key}_key"), key.clone())],
            nav: vec![
                NavProp {
                    name: "parentaccountid",
                    column: "_parentaccountid_value",
                    target_set: "accounts",
                    target_logical: "account",
                },
                NavProp {
                    name: "customerid_account",
                    column: "_customerid_value",
                    target_set: "accounts",
                    target_logical: "account",
                },
                NavProp {
                    name: "customerid_contact",
                    column: "_customerid_value",
                    target_set: "contacts",
                    target_logical: "contact",
                },
                NavProp {
                    name: "parentcontactid",
                    column: "_parentcontactid_value",
                    target_set: "contacts",
                    target_logical: "contact",
                },
                NavProp {
                    name: "transactioncurrencyid",
                    column: "_transactioncurrencyid_value",
                    target_set: "transactioncurrencies",
                    target_logical: "transactioncurrency",
                },
            ],
            change_tracking: true,
        },
        TableDef {
            logical: "account",
            set: "accounts",
            pk: "accountid",
            primary_name: "name",
            columns: account,
            keys: vec![("accountnumber_key".into(), "accountnumber".into())],
            nav: vec![NavProp {
                name: "primarycontactid",
                column: "_primarycontactid_value",
                target_set: "contacts",
                target_logical: "contact",
            }],
            change_tracking: true,
        },
        TableDef {
            logical: "contact",
            set: "contacts",
            pk: "contactid",
            primary_name: "fullname",
            columns: contact,
            keys: vec![],
            nav: vec![
                NavProp {
                    name: "parentcustomerid_account",
                    column: "_parentcustomerid_value",
                    target_set: "accounts",
                    target_logical: "account",
                },
                NavProp {
                    name: "parentcustomerid_contact",
                    column: "_parentcustomerid_value",
                    target_set: "contacts",
                    target_logical: "contact",
                },
            ],
            change_tracking: true,
        },
        TableDef {
            logical: "transactioncurrency",
            set: "transactioncurrencies",
            pk: "transactioncurrencyid",
            primary_name: "currencyname",
            columns: currency,
            keys: vec![],
            nav: vec![],
            change_tracking: false,
        },
    ]
}

#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) values: Map<String, Value>,
    version: u64,
    modified: DateTime<Utc>,
}

pub(crate) struct Table {
    pub(crate) def: TableDef,
    rows: BTreeMap<String, Row>,
    by_key: HashMap<String, HashMap<String, String>>,
    by_modified: BTreeSet<(DateTime<Utc>, String)>,
    by_version: BTreeMap<u64, String>,
    deleted: Vec<(u64, String)>,
}

impl Table {
    fn new(def: TableDef) -> Self {
        let by_key = def
            .keys
            .iter()
            .map(|(_, c)| (c.clone(), HashMap::new()))
            .collect();
        Table {
            def,
            rows: BTreeMap::new(),
            by_key,
            by_modified: BTreeSet::new(),
            by_version: BTreeMap::new(),
            deleted: Vec::new(),
        }
    }

    fn unindex(&mut self, id: &str) -> Option<Row> {
        let old = self.rows.remove(id)?;
        self.by_modified.remove(&(old.modified, id.to_owned()));
        self.by_version.remove(&old.version);
        for (colname, idx) in self.by_key.iter_mut() {
            if let Some(Value::String(k)) = old.values.get(colname) {
                idx.remove(&k.to_ascii_lowercase());
            }
        }
        Some(old)
    }

    fn index(&mut self, id: String, row: Row) {
        self.by_modified.insert((row.modified, id.clone()));
        self.by_version.insert(row.version, id.clone());
        for (colname, idx) in self.by_key.iter_mut() {
            if let Some(Value::String(k)) = row.values.get(colname) {
                idx.insert(k.to_ascii_lowercase(), id.clone());
            }
        }
        self.rows.insert(id, row);
    }

    fn find_by_key(&self, column: &str, value: &str) -> Option<String> {
        self.by_key
            .get(column)?
            .get(&value.to_ascii_lowercase())
            .cloned()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Row> {
        self.rows.get(id)
    }
}

/// Undo log of one change set: prior rows, restored in reverse on failure.
#[derive(Default)]
pub(crate) struct Undo {
    entries: Vec<(usize, String, Option<Row>)>,
    deleted_marks: Vec<(usize, usize)>,
}

pub(crate) struct DvState {
    rng: StdRng,
    version: u64,
    pub(crate) tables: Vec<Table>,
    org_id: String,
    user_id: String,
    bu_id: String,
}

/// A Dataverse response before it becomes HTTP (also used inside `$batch`).
#[derive(Debug, Clone)]
pub(crate) struct DvResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<Value>,
}

impl DvResponse {
    fn json(status: StatusCode, body: Value) -> Self {
        DvResponse {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }
    fn empty(status: StatusCode) -> Self {
        DvResponse {
            status,
            headers: Vec::new(),
            body: None,
        }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_owned(), v.into()));
        self
    }
    pub(crate) fn err(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        DvResponse::json(
            status,
            json!({"error": {"code": code, "message": message.into()}}),
        )
    }
    pub(crate) fn is_success(&self) -> bool {
        self.status.is_success()
    }
}

/// A Dataverse error as an HTTP response.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    to_http(DvResponse::err(status, code, message))
}

pub(crate) fn to_http(r: DvResponse) -> Response {
    let mut resp = match &r.body {
        Some(b) => {
            let mut x = Response::new(axum::body::Body::from(b.to_string()));
            x.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; odata.metadata=minimal"),
            );
            x
        }
        None => Response::new(axum::body::Body::empty()),
    };
    *resp.status_mut() = r.status;
    resp.headers_mut()
        .insert("odata-version", HeaderValue::from_static("4.0"));
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::try_from(k),
            HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

/// The parsed `Prefer` header.
#[derive(Debug, Default, Clone)]
pub(crate) struct Prefer {
    pub(crate) representation: bool,
    pub(crate) maxpagesize: Option<usize>,
    pub(crate) track_changes: bool,
    pub(crate) annotations: Option<String>,
    pub(crate) continue_on_error: bool,
}

pub(crate) fn parse_prefer(headers: &HeaderMap) -> Prefer {
    let mut p = Prefer::default();
    for v in headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for item in v.split(',') {
            let item = item.trim();
            let (k, val) = item
                .split_once('=')
                .map(|(a, b)| (a.trim(), b.trim().trim_matches('"')))
                .unwrap_or((item, ""));
            match k.to_ascii_lowercase().as_str() {
                "return" if val.eq_ignore_ascii_case("representation") => p.representation = true,
                "odata.maxpagesize" => p.maxpagesize = val.parse().ok(),
                "odata.track-changes" => p.track_changes = true,
                "odata.include-annotations" => p.annotations = Some(val.to_owned()),
                "odata.continue-on-error" => p.continue_on_error = true,
                _ => {}
            }
        }
    }
    p
}

/// Context of one Dataverse request.
pub(crate) struct Ctx<'a> {
    /// `<dynamics base>/api/data/v9.2`
    pub(crate) service_root: &'a str,
    pub(crate) now: DateTime<Utc>,
    pub(crate) prefer: Prefer,
    pub(crate) headers: &'a HeaderMap,
}

#[derive(Debug, Clone, PartialEq)]
enum KeySpec {
    Id(String),
    Alt(String, String),
}

/// Splits `opportunities(new_referralid='x')/rest` into set, key and the rest.
fn split_resource(path: &str) -> Result<(String, Option<String>, String), String> {
    let seg_end = path.find(['(', '/']).unwrap_or(path.len());
    let head = path[..seg_end].to_owned();
    if path[seg_end..].starts_with('(') {
        let close = find_close(path, seg_end).ok_or_else(|| {
            format!("Bad Request - Error in query syntax: unbalanced parentheses in '{path}'.")
        })?;
        let key = path[seg_end + 1..close].to_owned();
        Ok((
            head,
            Some(key),
            path[close + 1..].trim_start_matches('/').to_owned(),
        ))
    } else {
        Ok((
            head,
            None,
            path[seg_end..].trim_start_matches('/').to_owned(),
        ))
    }
}

fn find_close(s: &str, open: usize) -> Option<usize> {
    let mut in_str = false;
    let b = s.as_bytes();
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'\'' if in_str && b.get(i + 1) == Some(&b'\'') => i += 1,
            b'\'' => in_str = !in_str,
            b')' if !in_str => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn parse_key(def: &TableDef, raw: &str) -> Result<KeySpec, String> {
    let raw = raw.trim();
    let invalid = || {
        format!(
            "The key in the request URI is not valid for resource 'Microsoft.Dynamics.CRM.{}'. Ensure that the names and number of key properties match the declared or alternate key properties for the resource.",
            def.logical
        )
    };
    if let Some((name, val)) = raw.split_once('=') {
        if raw.contains(',') && !val.trim().starts_with('\'') {
            return Err(invalid());
        }
        let name = name.trim();
        let val = val.trim();
        let v = if let Some(inner) = val.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.replace("''", "'")
        } else {
            val.to_owned()
        };
        if name == def.pk {
            return uuid::Uuid::parse_str(&v)
                .map(|u| KeySpec::Id(u.to_string()))
                .map_err(|_| invalid());
        }
        if def.keys.iter().any(|(_, c)| c == name) {
            return Ok(KeySpec::Alt(name.to_owned(), v));
        }
        return Err(invalid());
    }
    uuid::Uuid::parse_str(raw.trim_matches('\''))
        .map(|u| KeySpec::Id(u.to_string()))
        .map_err(|_| invalid())
}

fn fmt_dt(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn etag_of(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// Reads and checks one value for a column; Err is (code, message).
fn coerce(def: &TableDef, c: &Column, v: &Value) -> Result<Value, (&'static str, String)> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let conv = |edm: &str| {
        (
            "0x80048d19",
            format!(
                "Error identified in Payload provided by the user for Entity :'{}'. InnerException : Microsoft.OData.ODataException: Cannot convert the literal '{}' to the expected type '{edm}'.",
                def.set,
                match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            ),
        )
    };
    let range = |n: &dyn std::fmt::Display| {
        (
            "0x80044331",
            format!(
                "A validation error occurred. The value {n} of '{}' on record of type '{}' is outside the valid range.",
                c.name, def.logical
            ),
        )
    };
    match c.ty {
        ColType::Guid => match v.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()) {
            Some(u) => Ok(json!(u.to_string())),
            None => Err(conv("Edm.Guid")),
        },
        ColType::Text(max) => match v.as_str() {
            Some(s) if s.chars().count() > max => Err((
                "0x80044331",
                format!(
                    "A validation error occurred. The length of the '{}' attribute of the '{}' entity exceeded the maximum allowed length of '{max}'.",
                    c.name, def.logical
                ),
            )),
            Some(s) => Ok(json!(s)),
            None => Err(conv("Edm.String")),
        },
        ColType::Money => match v.as_f64() {
            Some(n) if n.abs() <= 922_337_203_685_477.0 => Ok(json!(n)),
            Some(n) => Err(range(&n)),
            None => Err(conv("Edm.Decimal")),
        },
        ColType::Int { min, max } => match v.as_i64() {
            Some(n) if n >= min && n <= max => Ok(json!(n)),
            Some(n) => Err(range(&n)),
            None => Err(conv("Edm.Int32")),
        },
        ColType::Bool => v
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| conv("Edm.Boolean")),
        ColType::DateTime => match v.as_str().and_then(crate::datetime::parse) {
            Some(t) => Ok(json!(fmt_dt(t.trunc_subsecs(0)))),
            None => Err(conv("Edm.DateTimeOffset")),
        },
        ColType::DateOnly => match v.as_str() {
            Some(s) => match NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d") {
                Ok(d) => Ok(json!(d.format("%Y-%m-%d").to_string())),
                Err(_) => Err(conv("Edm.Date")),
            },
            None => Err(conv("Edm.Date")),
        },
        ColType::Choice(opts) => match v.as_i64() {
            Some(n) if opts.iter().any(|(k, _)| *k == n) => Ok(json!(n)),
            Some(n) => Err(range(&n)),
            None => Err(conv("Edm.Int32")),
        },
        ColType::Lookup => Err((
            "0x80048d19",
            format!("The property '{}' is read-only.", c.name),
        )),
    }
}

fn bad(code: &str, msg: impl Into<String>) -> DvResponse {
    DvResponse::err(StatusCode::BAD_REQUEST, code, msg)
}

fn not_found_segment(seg: &str) -> DvResponse {
    DvResponse::err(
        StatusCode::NOT_FOUND,
        "0x80060888",
        format!("Resource not found for the segment '{seg}'."),
    )
}

fn query_params(raw: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Serialize, Deserialize)]
struct PageCookie {
    /// Last key: (modifiedon seconds or 0, id) for keyset, or offset.
    #[serde(default)]
    m: Option<i64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    off: Option<usize>,
    /// Change tracking: version the snapshot was taken at.
    #[serde(default)]
    tv: Option<u64>,
    /// Delta paging: the version to continue after and the target version.
    #[serde(default)]
    dv: Option<(u64, u64)>,
    page: u32,
}

fn encode_cookie(c: &PageCookie) -> String {
    let inner = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(c).unwrap_or_default());
    format!(
        "<cookie pagenumber=\"{}\" pagingcookie=\"{inner}\" istracking=\"{}\" />",
        c.page,
        if c.tv.is_some() { "True" } else { "False" }
    )
}

fn decode_cookie(s: &str) -> Option<PageCookie> {
    let start = s.find("pagingcookie=\"")? + "pagingcookie=\"".len();
    let end = s[start..].find('"')? + start;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&s[start..end])
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Rebuilds a query string, replacing `$skiptoken`.
fn with_skiptoken(params: &[(String, String)], token: &str) -> String {
    let mut parts: Vec<String> = params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("$skiptoken"))
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    parts.push(format!("$skiptoken={}", enc(token)));
    parts.join("&")
}

struct RowResolver<'a>(&'a Map<String, Value>);

impl Resolver for RowResolver<'_> {
    fn value(&self, path: &[String]) -> Value {
        if path.len() == 1 {
            self.0.get(path[0].as_str()).cloned().unwrap_or(Value::Null)
        } else {
            Value::Null
        }
    }
    fn elements(&self, _: &[String]) -> Vec<Value> {
        Vec::new()
    }
}

fn check_filter(def: &TableDef, e: &mut Expr) -> Result<(), String> {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            check_filter(def, a)?;
            check_filter(def, b)
        }
        Expr::Not(a) => check_filter(def, a),
        Expr::Any { .. } => Err("Lambda operators are not supported on this resource.".into()),
        Expr::Func { path, .. } => {
            let c = path_column(def, path)?;
            match c.ty {
                ColType::Text(_) => Ok(()),
                _ => Err(format!(
                    "The function is not valid for the property '{}'.",
                    c.name
                )),
            }
        }
        Expr::Cmp { path, value, .. } => {
            let c = path_column(def, path)?;
            let ok = match (c.ty, &*value) {
                (_, Literal::Null) => true,
                (ColType::Guid | ColType::Lookup, Literal::Guid(_)) => true,
                (ColType::Guid | ColType::Lookup, Literal::String(s))
                    if uuid::Uuid::parse_str(s).is_ok() =>
                {
                    true
                }
                (ColType::Text(_), Literal::String(_)) => true,
                (ColType::Money | ColType::Int { .. } | ColType::Choice(_), Literal::Number(_)) => {
                    true
                }
                (ColType::Bool, Literal::Bool(_)) => true,
                (ColType::DateTime, Literal::DateTime(_)) => true,
                (ColType::DateTime, Literal::Date(d)) => {
                    *value =
                        Literal::DateTime(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
                    true
                }
                (ColType::DateOnly, Literal::Date(_)) => true,
                (ColType::DateOnly, Literal::DateTime(t)) => {
                    *value = Literal::Date(t.date_naive());
                    true
                }
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "A binary operator with incompatible types was detected. Found operand types 'Edm.{}' and '{}' for operator kind 'Equal'.",
                    c.ty.attribute_type(),
                    value.type_name()
                ))
            }
        }
    }
}

fn path_column<'a>(def: &'a TableDef, path: &[String]) -> Result<&'a Column, String> {
    let name = path.join("/");
    match def.column(&name) {
        Some(c) if path.len() == 1 => Ok(c),
        _ => Err(format!(
            "Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{}'.",
            def.logical
        )),
    }
}

fn select_list(
    def: &TableDef,
    params: &[(String, String)],
) -> Result<Option<Vec<String>>, DvResponse> {
    let Some(s) = param(params, "$select") else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for f in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if def.column(f).is_none() {
            return Err(bad(
                "0x80060888",
                format!(
                    "Could not find a property named '{f}' on type 'Microsoft.Dynamics.CRM.{}'.",
                    def.logical
                ),
            ));
        }
        out.push(f.to_owned());
    }
    Ok(Some(out))
}

fn formatted(def: &TableDef, name: &str, v: &Value) -> Option<String> {
    let c = def.column(name)?;
    match (c.ty, v) {
        (ColType::Choice(opts), Value::Number(n)) => opts
            .iter()
            .find(|(k, _)| Some(*k) == n.as_i64())
            .map(|(_, l)| (*l).to_owned()),
        (ColType::Money, Value::Number(n)) => n.as_f64().map(|x| format!("${x:.2}")),
        _ => None,
    }
}

impl DvState {
    pub(crate) fn new(opts: &SimOptions) -> Self {
        let mut rng = StdRng::seed_from_u64(opts.seed ^ 0xd365);
        let mut g = || {
            uuid::Builder::from_random_bytes(rng.random())
                .into_uuid()
                .to_string()
        };
        let (org_id, user_id, bu_id) = (g(), g(), g());
        DvState {
            rng: StdRng::seed_from_u64(opts.seed ^ 0xd366),
            version: 1_000_000,
            tables: table_defs(opts).into_iter().map(Table::new).collect(),
            org_id,
            user_id,
            bu_id,
        }
    }

    pub(crate) fn new_guid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    pub(crate) fn table_index(&self, set: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.def.set == set)
    }

    pub(crate) fn table(&self, set: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.def.set == set)
    }

    pub(crate) fn user_id(&self) -> &str {
        &self.user_id
    }

    /// Writes a row (insert or replace), stamping version and modifiedon.
    pub(crate) fn store(
        &mut self,
        t: usize,
        id: &str,
        mut values: Map<String, Value>,
        now: DateTime<Utc>,
        undo: Option<&mut Undo>,
    ) {
        self.version += 1;
        let version = self.version;
        let modified = now.trunc_subsecs(0);
        let table = &mut self.tables[t];
        let old = table.unindex(id);
        if let Some(u) = undo {
            u.entries.push((t, id.to_owned(), old.clone()));
        }
        let pk = table.def.pk;
        values.insert(pk.to_owned(), json!(id));
        if !values.contains_key("createdon") || old.is_none() {
            let created = old
                .as_ref()
                .and_then(|o| o.values.get("createdon").cloned())
                .unwrap_or_else(|| {
                    values
                        .get("createdon")
                        .cloned()
                        .unwrap_or_else(|| json!(fmt_dt(modified)))
                });
            values.insert("createdon".into(), created);
        }
        let modified = values
            .get("modifiedon")
            .filter(|_| old.is_none())
            .and_then(Value::as_str)
            .and_then(crate::datetime::parse)
            .unwrap_or(modified);
        values.insert("modifiedon".into(), json!(fmt_dt(modified)));
        values.insert("versionnumber".into(), json!(version));
        if table.def.logical == "contact" {
            let full = [values.get("firstname"), values.get("lastname")]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            values.insert("fullname".into(), json!(full));
        }
        table.index(
            id.to_owned(),
            Row {
                values,
                version,
                modified,
            },
        );
    }

    fn delete(&mut self, t: usize, id: &str, undo: Option<&mut Undo>) -> bool {
        self.version += 1;
        let version = self.version;
        let table = &mut self.tables[t];
        let Some(old) = table.unindex(id) else {
            return false;
        };
        if let Some(u) = undo {
            u.deleted_marks.push((t, table.deleted.len()));
            u.entries.push((t, id.to_owned(), Some(old)));
        }
        table.deleted.push((version, id.to_owned()));
        true
    }

    /// Restores every row an undo log recorded (a failed change set).
    pub(crate) fn rollback(&mut self, undo: Undo) {
        for (t, id, old) in undo.entries.into_iter().rev() {
            let table = &mut self.tables[t];
            table.unindex(&id);
            if let Some(row) = old {
                table.index(id, row);
            }
        }
        for (t, len) in undo.deleted_marks.into_iter().rev() {
            self.tables[t].deleted.truncate(len);
        }
    }

    fn resolve(&self, t: usize, key: &KeySpec) -> Option<String> {
        let table = &self.tables[t];
        match key {
            KeySpec::Id(id) => table.rows.contains_key(id).then(|| id.clone()),
            KeySpec::Alt(c, v) => table.find_by_key(c, v),
        }
    }

    fn render(
        &self,
        t: usize,
        row: &Row,
        select: &Option<Vec<String>>,
        annotations: bool,
    ) -> Value {
        let def = &self.tables[t].def;
        let mut out = Map::new();
        out.insert("@odata.etag".into(), json!(etag_of(row.version)));
        let cols: Vec<&str> = match select {
            Some(s) => s.iter().map(String::as_str).collect(),
            None => def.columns.iter().map(|c| c.name.as_str()).collect(),
        };
        for name in cols {
            let v = row.values.get(name).cloned().unwrap_or(Value::Null);
            if annotations {
                if let Some(f) = formatted(def, name, &v) {
                    out.insert(
                        format!("{name}@OData.Community.Display.V1.FormattedValue"),
                        json!(f),
                    );
                }
                if name.starts_with('_') && !v.is_null() {
                    let target = def
                        .nav
                        .iter()
                        .find(|n| n.column == name)
                        .map(|n| n.target_logical)
                        .unwrap_or("systemuser");
                    let target = if name == "_customerid_value" {
                        row.values
                            .get("_customerid_type")
                            .and_then(Value::as_str)
                            .unwrap_or(target)
                            .to_owned()
                    } else {
                        target.to_owned()
                    };
                    out.insert(
                        format!("{name}@Microsoft.Dynamics.CRM.lookuplogicalname"),
                        json!(target),
                    );
                }
            }
            out.insert(name.to_owned(), v);
        }
        out.insert(
            def.pk.to_owned(),
            row.values.get(def.pk).cloned().unwrap_or(Value::Null),
        );
        Value::Object(out)
    }

    /// Executes one Dataverse request. `path` is relative to the service root
    /// (`opportunities(…)`, `$batch` excluded); `undo` is set inside a change set.
    pub(crate) fn execute(
        &mut self,
        ctx: &Ctx,
        method: &Method,
        path: &str,
        query: &str,
        body: &[u8],
        undo: Option<&mut Undo>,
    ) -> DvResponse {
        let path = path.trim_start_matches('/');
        let (head, key, tail) = match split_resource(path) {
            Ok(x) => x,
            Err(m) => return bad("0x80060888", m),
        };
        let head = percent_encoding::percent_decode_str(&head)
            .decode_utf8_lossy()
            .into_owned();
        let params = query_params(query);
        match head.as_str() {
            "WhoAmI" if method == Method::GET => {
                return DvResponse::json(
                    StatusCode::OK,
                    json!({
                        "@odata.context": format!("{}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse", ctx.service_root),
                        "BusinessUnitId": self.bu_id, "UserId": self.user_id, "OrganizationId": self.org_id,
                    }),
                );
            }
            "WinOpportunity" | "LoseOpportunity" => {
                if method != Method::POST {
                    return DvResponse::err(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "0x80060888",
                        "The requested HTTP method is not supported.",
                    );
                }
                return self.close_opportunity(ctx, head == "WinOpportunity", body, undo);
            }
            "EntityDefinitions" => return self.metadata(ctx, key.as_deref(), &tail, &params),
            _ => {}
        }
        let Some(t) = self.table_index(&head) else {
            return not_found_segment(&head);
        };
        if !tail.is_empty() {
            return not_found_segment(&tail);
        }
        let key = match key {
            None => None,
            Some(k) => match parse_key(&self.tables[t].def, &k) {
                Ok(k) => Some(k),
                Err(m) => return bad("0x80060888", m),
            },
        };
        match (method.clone(), key) {
            (Method::GET, None) => self.query(ctx, t, &head, &params),
            (Method::GET, Some(k)) => self.get_one(ctx, t, &k, &params),
            (Method::POST, None) => self.create(ctx, t, &params, body, undo),
            (Method::PATCH, Some(k)) => self.upsert(ctx, t, &k, &params, body, undo),
            (Method::DELETE, Some(k)) => match self.resolve(t, &k) {
                Some(id) => {
                    self.delete(t, &id, undo);
                    DvResponse::empty(StatusCode::NO_CONTENT)
                }
                None => self.missing(t, &k),
            },
            (Method::PATCH, None) => DvResponse::err(
                StatusCode::METHOD_NOT_ALLOWED,
                "0x80060888",
                "PATCH on an entity set is not supported; address one record.",
            ),
            _ => DvResponse::err(
                StatusCode::METHOD_NOT_ALLOWED,
                "0x80060888",
                "The requested HTTP method is not supported on this resource.",
            ),
        }
    }

    fn missing(&self, t: usize, k: &KeySpec) -> DvResponse {
        let def = &self.tables[t].def;
        match k {
            KeySpec::Id(id) => DvResponse::err(
                StatusCode::NOT_FOUND,
                "0x80040217",
                format!("{} With Id = {id} Does Not Exist", def.logical),
            ),
            KeySpec::Alt(..) => DvResponse::err(
                StatusCode::NOT_FOUND,
                "0x80040217",
                format!(
                    "A record with the specified key values does not exist in {} entity",
                    def.logical
                ),
            ),
        }
    }

    fn get_one(&self, ctx: &Ctx, t: usize, k: &KeySpec, params: &[(String, String)]) -> DvResponse {
        let def = &self.tables[t].def;
        let select = match select_list(def, params) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let Some(id) = self.resolve(t, k) else {
            return self.missing(t, k);
        };
        let Some(row) = self.tables[t].get(&id) else {
            return self.missing(t, k);
        };
        let etag = etag_of(row.version);
        if let Some(inm) = ctx
            .headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            && inm.trim() == etag
        {
            return DvResponse::empty(StatusCode::NOT_MODIFIED).header("ETag", etag);
        }
        let mut v = self.render(t, row, &select, ctx.prefer.annotations.is_some());
        if let Some(m) = v.as_object_mut() {
            m.insert(
                "@odata.context".into(),
                json!(format!(
                    "{}/$metadata#{}/$entity",
                    ctx.service_root, def.set
                )),
            );
        }
        DvResponse::json(StatusCode::OK, v).header("ETag", etag)
    }

    fn query(&self, ctx: &Ctx, t: usize, set: &str, params: &[(String, String)]) -> DvResponse {
        let table = &self.tables[t];
        let def = &table.def;
        let select = match select_list(def, params) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let cookie = param(params, "$skiptoken").map(|s| decode_cookie(s).ok_or(()));
        let cookie = match cookie {
            Some(Err(())) => return bad("0x80060888", "The $skiptoken is not valid."),
            Some(Ok(c)) => Some(c),
            None => None,
        };
        let page_size = ctx
            .prefer
            .maxpagesize
            .unwrap_or(MAX_PAGE)
            .clamp(1, MAX_PAGE);
        let annotations = ctx.prefer.annotations.is_some();
        let ctx_url = |suffix: &str| {
            let cols = select
                .as_ref()
                .map(|s| format!("({})", s.join(",")))
                .unwrap_or_default();
            format!("{}/$metadata#{set}{cols}{suffix}", ctx.service_root)
        };
        if let Some(dtok) = param(params, "$deltatoken") {
            return self.delta(
                ctx,
                t,
                set,
                params,
                dtok,
                cookie,
                page_size,
                &select,
                annotations,
            );
        }
        let tracking = ctx.prefer.track_changes || cookie.as_ref().is_some_and(|c| c.tv.is_some());
        if tracking {
            if !def.change_tracking {
                return bad(
                    "0x80072491",
                    format!(
                        "Change tracking is not enabled for the {} table.",
                        def.logical
                    ),
                );
            }
            for p in ["$filter", "$orderby", "$top", "$expand"] {
                if param(params, p).is_some() {
                    return bad(
                        "0x80060888",
                        format!(
                            "The \"{p}\" query parameter isn't supported when Change Tracking is enabled."
                        ),
                    );
                }
            }
            let tv = cookie.as_ref().and_then(|c| c.tv).unwrap_or(self.version);
            let after = cookie.as_ref().and_then(|c| c.id.clone());
            let range = match &after {
                Some(a) => table
                    .rows
                    .range::<String, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
                None => table.rows.range::<String, _>(..),
            };
            let mut rows: Vec<(&String, &Row)> = range.take(page_size + 1).collect();
            let more = rows.len() > page_size;
            rows.truncate(page_size);
            let mut body = Map::new();
            body.insert("@odata.context".into(), json!(ctx_url("")));
            body.insert(
                "value".into(),
                Value::Array(
                    rows.iter()
                        .map(|(_, r)| self.render(t, r, &select, annotations))
                        .collect(),
                ),
            );
            let page = cookie.as_ref().map_or(1, |c| c.page);
            if more {
                let last = rows.last().map(|(id, _)| (*id).clone());
                let c = PageCookie {
                    m: None,
                    id: last,
                    off: None,
                    tv: Some(tv),
                    dv: None,
                    page: page + 1,
                };
                body.insert(
                    "@odata.nextLink".into(),
                    json!(format!(
                        "{}/{set}?{}",
                        ctx.service_root,
                        with_skiptoken(params, &encode_cookie(&c))
                    )),
                );
            } else {
                body.insert(
                    "@odata.deltaLink".into(),
                    json!(self.delta_link(ctx, set, params, tv)),
                );
            }
            return DvResponse::json(StatusCode::OK, Value::Object(body)).header(
                "Preference-Applied",
                format!("odata.track-changes,odata.maxpagesize={page_size}"),
            );
        }
        let mut filter = match param(params, "$filter") {
            Some(f) => match odata::parse_filter(f) {
                Ok(e) => Some(e),
                Err(e) => return bad("0x80060888", format!("Invalid $filter: {}", e.0)),
            },
            None => None,
        };
        if let Some(f) = filter.as_mut()
            && let Err(m) = check_filter(def, f)
        {
            return bad("0x80060888", m);
        }
        let order = match param(params, "$orderby") {
            Some(o) => match odata::parse_orderby(o) {
                Ok(items) => {
                    for i in &items {
                        if def.column(&i.field).is_none() {
                            return bad(
                                "0x80060888",
                                format!(
                                    "Could not find a property named '{}' on type 'Microsoft.Dynamics.CRM.{}'.",
                                    i.field, def.logical
                                ),
                            );
                        }
                    }
                    items
                }
                Err(e) => return bad("0x80060888", e.0),
            },
            None => Vec::new(),
        };
        if param(params, "$expand").is_some() {
            return bad(
                "0x80060888",
                "The simulator does not support $expand; select the _x_value lookup columns instead.",
            );
        }
        let top = match param(params, "$top").map(|t| t.parse::<usize>()) {
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return bad(
                    "0x80060888",
                    "The $top query option is not a valid integer.",
                );
            }
            None => None,
        };
        // $top limits the total and is ignored with odata.maxpagesize.
        let (page_size, total_cap) = match (ctx.prefer.maxpagesize, top) {
            (None, Some(n)) => (n.clamp(0, MAX_PAGE), Some(n)),
            _ => (page_size, None),
        };
        let keep = |r: &Row| {
            filter
                .as_ref()
                .is_none_or(|f| odata::eval(f, &RowResolver(&r.values)))
        };
        let page = cookie.as_ref().map_or(1, |c| c.page);
        let mut picked: Vec<(&String, &Row)> = Vec::new();
        let mut more = false;
        let by_modified = order.len() == 1 && order[0].field == "modifiedon";
        if order.is_empty() || by_modified {
            let want = page_size + 1;
            if by_modified {
                let desc = order[0].desc;
                let after = cookie
                    .as_ref()
                    .and_then(|c| Some((DateTime::from_timestamp(c.m?, 0)?, c.id.clone()?)));
                let bounds = filter
                    .as_ref()
                    .map(|f| f.conjunct_bounds("modifiedon"))
                    .unwrap_or_default();
                let mut lo = std::ops::Bound::Unbounded;
                for (op, lit) in bounds {
                    if let (
                        odata::CmpOp::Ge | odata::CmpOp::Gt | odata::CmpOp::Eq,
                        Literal::DateTime(t),
                    ) = (op, lit)
                    {
                        lo = std::ops::Bound::Included((*t, String::new()));
                    }
                }
                let iter: Box<dyn Iterator<Item = &(DateTime<Utc>, String)>> = match (desc, after) {
                    (false, Some(a)) => Box::new(
                        table
                            .by_modified
                            .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
                    ),
                    (false, None) => {
                        Box::new(table.by_modified.range((lo, std::ops::Bound::Unbounded)))
                    }
                    (true, Some(a)) => Box::new(
                        table
                            .by_modified
                            .range((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(a)))
                            .rev(),
                    ),
                    (true, None) => Box::new(table.by_modified.iter().rev()),
                };
                for (_, id) in iter {
                    if let Some((id, r)) = table.rows.get_key_value(id)
                        && keep(r)
                    {
                        picked.push((id, r));
                        if picked.len() >= want {
                            break;
                        }
                    }
                }
            } else {
                let after = cookie.as_ref().and_then(|c| c.id.clone());
                let range = match &after {
                    Some(a) => table.rows.range::<String, _>((
                        std::ops::Bound::Excluded(a),
                        std::ops::Bound::Unbounded,
                    )),
                    None => table.rows.range::<String, _>(..),
                };
                for (id, r) in range {
                    if keep(r) {
                        picked.push((id, r));
                        if picked.len() >= want {
                            break;
                        }
                    }
                }
            }
            if picked.len() > page_size {
                more = true;
                picked.truncate(page_size);
            }
        } else {
            let mut all: Vec<(&String, &Row)> =
                table.rows.iter().filter(|(_, r)| keep(r)).collect();
            all.sort_by(|a, b| {
                for o in &order {
                    let va = a.1.values.get(&o.field).unwrap_or(&Value::Null);
                    let vb = b.1.values.get(&o.field).unwrap_or(&Value::Null);
                    let ord = cmp_values(va, vb);
                    let ord = if o.desc { ord.reverse() } else { ord };
                    if ord != std::cmp::Ordering::Equal {
                        return ord;
                    }
                }
                a.0.cmp(b.0)
            });
            let off = cookie.as_ref().and_then(|c| c.off).unwrap_or(0);
            let rest: Vec<_> = all.into_iter().skip(off).collect();
            more = rest.len() > page_size;
            picked = rest.into_iter().take(page_size).collect();
        }
        if let Some(cap) = total_cap {
            picked.truncate(cap);
            more = false;
        }
        let mut body = Map::new();
        body.insert("@odata.context".into(), json!(ctx_url("")));
        if param(params, "$count").is_some_and(|c| c.eq_ignore_ascii_case("true")) {
            let n = table.rows.values().filter(|r| keep(r)).count().min(5000);
            body.insert("@odata.count".into(), json!(n));
        }
        body.insert(
            "value".into(),
            Value::Array(
                picked
                    .iter()
                    .map(|(_, r)| self.render(t, r, &select, annotations))
                    .collect(),
            ),
        );
        if more && let Some((id, r)) = picked.last() {
            let c = if order.is_empty() {
                PageCookie {
                    m: None,
                    id: Some((*id).clone()),
                    off: None,
                    tv: None,
                    dv: None,
                    page: page + 1,
                }
            } else if by_modified {
                PageCookie {
                    m: Some(r.modified.timestamp()),
                    id: Some((*id).clone()),
                    off: None,
                    tv: None,
                    dv: None,
                    page: page + 1,
                }
            } else {
                let off = cookie.as_ref().and_then(|c| c.off).unwrap_or(0) + picked.len();
                PageCookie {
                    m: None,
                    id: None,
                    off: Some(off),
                    tv: None,
                    dv: None,
                    page: page + 1,
                }
            };
            body.insert(
                "@odata.nextLink".into(),
                json!(format!(
                    "{}/{set}?{}",
                    ctx.service_root,
                    with_skiptoken(params, &encode_cookie(&c))
                )),
            );
        }
        let mut resp = DvResponse::json(StatusCode::OK, Value::Object(body));
        let mut applied = Vec::new();
        if let Some(n) = ctx.prefer.maxpagesize {
            applied.push(format!("odata.maxpagesize={}", n.clamp(1, MAX_PAGE)));
        }
        if let Some(a) = &ctx.prefer.annotations {
            applied.push(format!("odata.include-annotations=\"{a}\""));
        }
        if !applied.is_empty() {
            resp = resp.header("Preference-Applied", applied.join(","));
        }
        resp
    }

    fn delta_link(
        &self,
        ctx: &Ctx,
        set: &str,
        params: &[(String, String)],
        version: u64,
    ) -> String {
        let stamp = ctx.now.format("%m/%d/%Y %H:%M:%S");
        let token = format!("{version}!{stamp}");
        let mut parts: Vec<String> = params
            .iter()
            .filter(|(k, _)| {
                !k.eq_ignore_ascii_case("$skiptoken") && !k.eq_ignore_ascii_case("$deltatoken")
            })
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        parts.push(format!("$deltatoken={}", enc(&token)));
        format!("{}/{set}?{}", ctx.service_root, parts.join("&"))
    }

    #[allow(clippy::too_many_arguments)]
    fn delta(
        &self,
        ctx: &Ctx,
        t: usize,
        set: &str,
        params: &[(String, String)],
        token: &str,
        cookie: Option<PageCookie>,
        page_size: usize,
        select: &Option<Vec<String>>,
        annotations: bool,
    ) -> DvResponse {
        let table = &self.tables[t];
        let invalid = || {
            bad(
                "0x80044352",
                "The delta token is not valid or has expired. Start a new change tracking session.",
            )
        };
        let Some((ver, stamp)) = token.split_once('!') else {
            return invalid();
        };
        let Ok(since) = ver.parse::<u64>() else {
            return invalid();
        };
        let Ok(issued) = chrono::NaiveDateTime::parse_from_str(stamp, "%m/%d/%Y %H:%M:%S") else {
            return invalid();
        };
        if ctx.now - issued.and_utc() > TimeDelta::days(DELTA_TOKEN_DAYS) {
            return invalid();
        }
        let (from, upto) = cookie.and_then(|c| c.dv).unwrap_or((since, self.version));
        let mut items: Vec<(u64, Value)> = Vec::new();
        for (v, id) in table.by_version.range(from + 1..=upto) {
            if let Some(r) = table.rows.get(id) {
                items.push((*v, self.render(t, r, select, annotations)));
            }
        }
        let deleted_from = table.deleted.partition_point(|(v, _)| *v <= from);
        for (v, id) in table.deleted[deleted_from..]
            .iter()
            .take_while(|(v, _)| *v <= upto)
        {
            items.push((
                *v,
                json!({"@odata.context": format!("{}/$metadata#{set}/$deletedEntity", ctx.service_root), "id": id, "reason": "deleted"}),
            ));
        }
        let more = items.len() > page_size;
        items.truncate(page_size);
        let mut body = Map::new();
        body.insert(
            "@odata.context".into(),
            json!(format!("{}/$metadata#{set}/$delta", ctx.service_root)),
        );
        if more {
            let last = items.last().map(|(v, _)| *v).unwrap_or(upto);
            let c = PageCookie {
                m: None,
                id: None,
                off: None,
                tv: None,
                dv: Some((last, upto)),
                page: 2,
            };
            let mut p: Vec<(String, String)> = params.to_vec();
            p.retain(|(k, _)| !k.eq_ignore_ascii_case("$skiptoken"));
            body.insert(
                "@odata.nextLink".into(),
                json!(format!(
                    "{}/{set}?{}",
                    ctx.service_root,
                    with_skiptoken(&p, &encode_cookie(&c))
                )),
            );
        } else {
            body.insert(
                "@odata.deltaLink".into(),
                json!(self.delta_link(ctx, set, params, upto)),
            );
        }
        body.insert(
            "value".into(),
            Value::Array(items.into_iter().map(|(_, v)| v).collect()),
        );
        DvResponse::json(StatusCode::OK, Value::Object(body))
            .header("Preference-Applied", "odata.track-changes")
    }

    /// Reads a request body into column values, resolving `@odata.bind`.
    fn read_body(
        &self,
        t: usize,
        body: &[u8],
        creating: bool,
    ) -> Result<Map<String, Value>, DvResponse> {
        let def = &self.tables[t].def;
        let obj: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(bad(
                    "0x80048d19",
                    format!(
                        "Error identified in Payload provided by the user for Entity :'{}'. The payload must be a JSON object.",
                        def.set
                    ),
                ));
            }
            Err(e) => {
                return Err(bad(
                    "0x80048d19",
                    format!(
                        "Error identified in Payload provided by the user for Entity :'{}'. InnerException : {e}",
                        def.set
                    ),
                ));
            }
        };
        let mut out = Map::new();
        for (k, v) in obj {
            if k == "@odata.type" || k == "@odata.etag" || k == "@odata.context" {
                continue;
            }
            if let Some(nav) = k.strip_suffix("@odata.bind") {
                let Some(np) = def.nav.iter().find(|n| n.name == nav) else {
                    return Err(bad(
                        "0x80048d19",
                        format!(
                            "Error identified in Payload provided by the user for Entity :'{}'. An undeclared property '{nav}' which only has property annotations in the payload but no property value was found in the payload.",
                            def.set
                        ),
                    ));
                };
                if v.is_null() {
                    out.insert(np.column.to_owned(), Value::Null);
                    continue;
                }
                let Some(reference) = v.as_str() else {
                    return Err(bad(
                        "0x80048d19",
                        format!("The value of '{k}' must be an entity URL."),
                    ));
                };
                let target_id = self.resolve_reference(np.target_set, reference)?;
                out.insert(np.column.to_owned(), json!(target_id));
                if np.column == "_customerid_value" {
                    out.insert("_customerid_type".into(), json!(np.target_logical));
                }
                continue;
            }
            let Some(c) = def.column(&k) else {
                return Err(bad(
                    "0x80048d19",
                    format!(
                        "Error identified in Payload provided by the user for Entity :'{}', For more information on this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : Microsoft.OData.ODataException: Does not support untyped value in non-open type. Property: '{k}'.",
                        def.set
                    ),
                ));
            };
            if c.system {
                if matches!(c.ty, ColType::Lookup) {
                    return Err(bad(
                        "0x80048d19",
                        format!(
                            "The property '{k}' cannot be set: use the navigation property with @odata.bind."
                        ),
                    ));
                }
                continue;
            }
            if c.name == def.pk && !creating {
                continue;
            }
            let val = coerce(def, c, &v).map_err(|(code, m)| bad(code, m))?;
            out.insert(k, val);
        }
        Ok(out)
    }

    fn resolve_reference(&self, target_set: &str, reference: &str) -> Result<String, DvResponse> {
        let r = reference.trim();
        let r = r
            .rsplit_once("/api/data/")
            .map(|(_, x)| x.split_once('/').map_or(x, |(_, y)| y))
            .unwrap_or(r);
        let r = r.trim_start_matches('/');
        let bad_ref = || {
            bad(
                "0x80060888",
                format!("The URL '{reference}' in the @odata.bind annotation is not valid."),
            )
        };
        let (set, key, _) = split_resource(r).map_err(|_| bad_ref())?;
        if set != target_set {
            return Err(bad_ref());
        }
        let t = self.table_index(&set).ok_or_else(bad_ref)?;
        let key = parse_key(&self.tables[t].def, &key.ok_or_else(bad_ref)?)
            .map_err(|m| bad("0x80060888", m))?;
        self.resolve(t, &key).ok_or_else(|| {
            let def = &self.tables[t].def;
            let shown = match &key {
                KeySpec::Id(id) => id.clone(),
                KeySpec::Alt(c, v) => format!("{c}='{v}'"),
            };
            DvResponse::err(
                StatusCode::NOT_FOUND,
                "0x80040217",
                format!("{} With Id = {shown} Does Not Exist", def.logical),
            )
        })
    }

    fn check_state(
        &self,
        t: usize,
        values: &Map<String, Value>,
        existing: Option<&Row>,
    ) -> Result<(), DvResponse> {
        let def = &self.tables[t].def;
        if def.logical != "opportunity" {
            return Ok(());
        }
        let cur_state = existing
            .and_then(|r| r.values.get("statecode"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let new_state = values.get("statecode").and_then(Value::as_i64);
        let new_status = values.get("statuscode").and_then(Value::as_i64);
        if let Some(s) = new_state
            && s != 0
        {
            return Err(bad(
                "0x80040203",
                "An opportunity is closed with the WinOpportunity or LoseOpportunity action, not by setting statecode.",
            ));
        }
        if cur_state != 0 && new_state != Some(0) {
            return Err(bad(
                "0x80040203",
                "The opportunity is closed (won or lost) and cannot be updated. Reopen it first by setting statecode to 0.",
            ));
        }
        if let Some(st) = new_status
            && opp_state_of_status(st) != Some(0)
        {
            return Err(bad(
                "0x80044331",
                format!(
                    "A validation error occurred. The value {st} of 'statuscode' on record of type 'opportunity' is outside the valid range for an open opportunity."
                ),
            ));
        }
        Ok(())
    }

    fn key_conflict(
        &self,
        t: usize,
        values: &Map<String, Value>,
        own_id: Option<&str>,
    ) -> Option<DvResponse> {
        let table = &self.tables[t];
        for (_, colname) in &table.def.keys {
            if let Some(Value::String(k)) = values.get(colname)
                && let Some(other) = table.find_by_key(colname, k)
                && Some(other.as_str()) != own_id
            {
                return Some(DvResponse::err(
                    StatusCode::PRECONDITION_FAILED,
                    "0x80040237",
                    format!(
                        "A record that has the attribute values {colname}='{k}' already exists. The entity key requires that this set of attributes contains unique values."
                    ),
                ));
            }
        }
        None
    }

    fn entity_url(&self, ctx: &Ctx, set: &str, id: &str) -> String {
        format!("{}/{set}({id})", ctx.service_root)
    }

    fn written(
        &self,
        ctx: &Ctx,
        t: usize,
        id: &str,
        created: bool,
        params: &[(String, String)],
        entity_url: String,
    ) -> DvResponse {
        let def = &self.tables[t].def;
        let Some(row) = self.tables[t].get(id) else {
            return DvResponse::err(StatusCode::INTERNAL_SERVER_ERROR, "", "row vanished");
        };
        let etag = etag_of(row.version);
        if ctx.prefer.representation {
            let select = match select_list(def, params) {
                Ok(s) => s,
                Err(r) => return r,
            };
            let mut v = self.render(t, row, &select, ctx.prefer.annotations.is_some());
            if let Some(m) = v.as_object_mut() {
                let cols = select
                    .as_ref()
                    .map(|s| format!("({})", s.join(",")))
                    .unwrap_or_default();
                m.insert(
                    "@odata.context".into(),
                    json!(format!(
                        "{}/$metadata#{}{cols}/$entity",
                        ctx.service_root, def.set
                    )),
                );
            }
            DvResponse::json(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                v,
            )
            .header("ETag", etag)
            .header("Preference-Applied", "return=representation")
        } else {
            DvResponse::empty(StatusCode::NO_CONTENT)
                .header("OData-EntityId", entity_url)
                .header("ETag", etag)
        }
    }

    fn create(
        &mut self,
        ctx: &Ctx,
        t: usize,
        params: &[(String, String)],
        body: &[u8],
        undo: Option<&mut Undo>,
    ) -> DvResponse {
        if self.tables[t].def.logical == "transactioncurrency" {
            return DvResponse::err(
                StatusCode::FORBIDDEN,
                "0x80040220",
                "The simulator's currencies are read-only.",
            );
        }
        let mut values = match self.read_body(t, body, true) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if let Err(r) = self.check_state(t, &values, None) {
            return r;
        }
        let pk = self.tables[t].def.pk;
        let id = match values
            .remove(pk)
            .and_then(|v| v.as_str().map(str::to_owned))
        {
            Some(id) if self.tables[t].rows.contains_key(&id) => {
                return DvResponse::err(
                    StatusCode::PRECONDITION_FAILED,
                    "0x80040237",
                    "Cannot insert duplicate key.",
                );
            }
            Some(id) => id,
            None => self.new_guid(),
        };
        if let Some(r) = self.key_conflict(t, &values, None) {
            return r;
        }
        self.apply_defaults(t, &mut values);
        self.store(t, &id, values, ctx.now, undo);
        let set = self.tables[t].def.set;
        let url = self.entity_url(ctx, set, &id);
        self.written(ctx, t, &id, true, params, url)
    }

    fn apply_defaults(&self, t: usize, values: &mut Map<String, Value>) {
        let def = &self.tables[t].def;
        let defaults: &[(&str, Value)] = match def.logical {
            "opportunity" => &[
                ("statecode", json!(0)),
                ("statuscode", json!(1)),
                ("salesstage", json!(0)),
                ("closeprobability", json!(10)),
            ],
            "account" | "contact" => &[("statecode", json!(0)), ("statuscode", json!(1))],
            _ => &[],
        };
        for (k, v) in defaults {
            if values.get(*k).is_none_or(Value::is_null) {
                values.insert((*k).to_owned(), v.clone());
            }
        }
        if def.columns.iter().any(|c| c.name == "_ownerid_value")
            && !values.contains_key("_ownerid_value")
        {
            values.insert("_ownerid_value".into(), json!(self.user_id));
        }
    }

    fn upsert(
        &mut self,
        ctx: &Ctx,
        t: usize,
        k: &KeySpec,
        params: &[(String, String)],
        body: &[u8],
        undo: Option<&mut Undo>,
    ) -> DvResponse {
        let header = |n: header::HeaderName| {
            ctx.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.eq_ignore_ascii_case("null"))
        };
        let if_match = header(header::IF_MATCH);
        let if_none_match = header(header::IF_NONE_MATCH);
        let existing = self.resolve(t, k);
        if let Some(m) = if_match {
            let Some(id) = &existing else {
                return self.missing(t, k);
            };
            if m != "*" {
                let cur = self.tables[t]
                    .get(id)
                    .map(|r| etag_of(r.version))
                    .unwrap_or_default();
                if !m.split(',').any(|x| x.trim() == cur) {
                    return DvResponse::err(
                        StatusCode::PRECONDITION_FAILED,
                        "0x80060882",
                        "The version of the existing record doesn't match the RowVersion property provided.",
                    );
                }
            }
        }
        if if_none_match == Some("*") && existing.is_some() {
            return DvResponse::err(
                StatusCode::PRECONDITION_FAILED,
                "0x80060892",
                "A record with matching key values already exists.",
            );
        }
        if self.tables[t].def.logical == "transactioncurrency" {
            return DvResponse::err(
                StatusCode::FORBIDDEN,
                "0x80040220",
                "The simulator's currencies are read-only.",
            );
        }
        let mut values = match self.read_body(t, body, existing.is_none()) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let set = self.tables[t].def.set;
        let url = match k {
            KeySpec::Id(id) => self.entity_url(ctx, set, id),
            KeySpec::Alt(c, v) => format!(
                "{}/{set}({c}='{}')",
                ctx.service_root,
                v.replace('\'', "''")
            ),
        };
        match existing {
            Some(id) => {
                let Some(row) = self.tables[t].get(&id).cloned() else {
                    return self.missing(t, k);
                };
                if let Err(r) = self.check_state(t, &values, Some(&row)) {
                    return r;
                }
                if let KeySpec::Alt(c, _) = k {
                    values.remove(c);
                }
                if let Some(r) = self.key_conflict(t, &values, Some(&id)) {
                    return r;
                }
                let mut merged = row.values.clone();
                for (key, v) in values {
                    merged.insert(key, v);
                }
                self.store(t, &id, merged, ctx.now, undo);
                self.written(ctx, t, &id, false, params, url)
            }
            None => {
                if let Err(r) = self.check_state(t, &values, None) {
                    return r;
                }
                let id = match k {
                    KeySpec::Id(id) => id.clone(),
                    KeySpec::Alt(c, v) => {
                        values.entry(c.clone()).or_insert_with(|| json!(v));
                        match values
                            .remove(self.tables[t].def.pk)
                            .and_then(|v| v.as_str().map(str::to_owned))
                        {
                            Some(id) => id,
                            None => self.new_guid(),
                        }
                    }
                };
                if let Some(r) = self.key_conflict(t, &values, None) {
                    return r;
                }
                self.apply_defaults(t, &mut values);
                self.store(t, &id, values, ctx.now, undo);
                self.written(ctx, t, &id, true, params, url)
            }
        }
    }

    fn close_opportunity(
        &mut self,
        ctx: &Ctx,
        win: bool,
        body: &[u8],
        undo: Option<&mut Undo>,
    ) -> DvResponse {
        let action = if win {
            "WinOpportunity"
        } else {
            "LoseOpportunity"
        };
        let v: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return bad(
                    "0x80048d19",
                    format!(
                        "The {action} request body must be a JSON object with Status and OpportunityClose."
                    ),
                );
            }
        };
        let Some(status) = v.get("Status").and_then(Value::as_i64) else {
            return bad(
                "0x80048d19",
                format!("{action}: the parameter 'Status' is required and must be an integer."),
            );
        };
        let want_state = if win { 1 } else { 2 };
        if opp_state_of_status(status) != Some(want_state) {
            return bad(
                "0x80044331",
                format!(
                    "A validation error occurred. The value {status} of 'statuscode' is not valid for a {} opportunity.",
                    if win { "won" } else { "lost" }
                ),
            );
        }
        let Some(close) = v.get("OpportunityClose").and_then(Value::as_object) else {
            return bad(
                "0x80048d19",
                format!("{action}: the parameter 'OpportunityClose' is required."),
            );
        };
        let Some(reference) = close
            .get("opportunityid@odata.bind")
            .and_then(Value::as_str)
        else {
            return bad(
                "0x80048d19",
                format!(
                    "{action}: OpportunityClose must bind opportunityid (\"opportunityid@odata.bind\": \"/opportunities(<id>)\")."
                ),
            );
        };
        let id = match self.resolve_reference("opportunities", reference) {
            Ok(id) => id,
            Err(r) => return r,
        };
        let Some(t) = self.table_index("opportunities") else {
            return not_found_segment("opportunities");
        };
        let Some(row) = self.tables[t].get(&id).cloned() else {
            return DvResponse::err(
                StatusCode::NOT_FOUND,
                "0x80040217",
                format!("opportunity With Id = {id} Does Not Exist"),
            );
        };
        if row
            .values
            .get("statecode")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            != 0
        {
            return bad(
                "0x80040203",
                "The opportunity is already closed. Reopen it before closing it again.",
            );
        }
        let mut values = row.values.clone();
        values.insert("statecode".into(), json!(want_state));
        values.insert("statuscode".into(), json!(status));
        let end = close
            .get("actualend")
            .and_then(Value::as_str)
            .and_then(|s| NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d").ok())
            .unwrap_or(ctx.now.date_naive());
        values.insert(
            "actualclosedate".into(),
            json!(end.format("%Y-%m-%d").to_string()),
        );
        let revenue = close
            .get("actualrevenue")
            .and_then(Value::as_f64)
            .or_else(|| {
                if win {
                    values.get("estimatedvalue").and_then(Value::as_f64)
                } else {
                    Some(0.0)
                }
            });
        values.insert(
            "actualvalue".into(),
            revenue.map_or(Value::Null, |r| json!(r)),
        );
        values.insert("closeprobability".into(), json!(if win { 100 } else { 0 }));
        if !win && let Some(d) = close.get("description").and_then(Value::as_str) {
            values.entry("new_closereason").or_insert_with(|| json!(d));
        }
        self.store(t, &id, values, ctx.now, undo);
        DvResponse::empty(StatusCode::NO_CONTENT)
    }

    fn metadata(
        &self,
        ctx: &Ctx,
        key: Option<&str>,
        tail: &str,
        params: &[(String, String)],
    ) -> DvResponse {
        let defs: Vec<&TableDef> = self.tables.iter().map(|t| &t.def).collect();
        let describe = |d: &TableDef, keys: bool| {
            let mut v = json!({
                "LogicalName": d.logical, "EntitySetName": d.set, "PrimaryIdAttribute": d.pk,
                "PrimaryNameAttribute": d.primary_name, "ChangeTrackingEnabled": d.change_tracking,
                "MetadataId": format!("{:08x}-0000-4000-8000-{:012x}", d.logical.len(), d.logical.bytes().fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b))) & 0xffff_ffff_ffff),
            });
            if keys {
                v["Keys"] = json!(d.keys.iter().map(|(n, c)| json!({"LogicalName": n, "KeyAttributes": [c], "EntityKeyIndexStatus": "Active"})).collect::<Vec<_>>());
            }
            v
        };
        let expand_keys = param(params, "$expand").is_some_and(|e| e.contains("Keys"));
        match key {
            None => {
                let mut items: Vec<Value> = defs.iter().map(|d| describe(d, expand_keys)).collect();
                if let Some(f) = param(params, "$filter") {
                    match odata::parse_filter(f) {
                        Ok(e) => items.retain(|v| odata::eval(&e, &odata::JsonResolver(v))),
                        Err(e) => return bad("0x80060888", e.0),
                    }
                }
                DvResponse::json(
                    StatusCode::OK,
                    json!({"@odata.context": format!("{}/$metadata#EntityDefinitions", ctx.service_root), "value": items}),
                )
            }
            Some(k) => {
                let name = k
                    .trim()
                    .strip_prefix("LogicalName=")
                    .unwrap_or(k)
                    .trim_matches('\'');
                let Some(d) = defs.iter().find(|d| d.logical == name) else {
                    return DvResponse::err(
                        StatusCode::NOT_FOUND,
                        "0x80040217",
                        format!("Could not find entity with name '{name}'."),
                    );
                };
                match tail {
                    "" => DvResponse::json(StatusCode::OK, describe(d, expand_keys)),
                    "Attributes" => DvResponse::json(
                        StatusCode::OK,
                        json!({"value": d.columns.iter().filter(|c| c.name != "_customerid_type").map(attribute_metadata).collect::<Vec<_>>()}),
                    ),
                    t if t.starts_with("Attributes(") => attribute_response(d, t),
                    "Keys" => DvResponse::json(
                        StatusCode::OK,
                        json!({"value": describe(d, true)["Keys"].clone()}),
                    ),
                    other => not_found_segment(other),
                }
            }
        }
    }
}

/// The logical name of a column's attribute (`_x_value` is attribute `x`).
fn attribute_name(c: &Column) -> &str {
    c.name.trim_start_matches('_').trim_end_matches("_value")
}

/// The metadata `AttributeType` of a column: state and status columns of a
/// table are `State` and `Status`, other choices `Picklist`.
fn attribute_type(c: &Column) -> &'static str {
    match (c.ty, c.name.as_str()) {
        (ColType::Choice(_), "statecode") => "State",
        (ColType::Choice(_), "statuscode") => "Status",
        (ty, _) => ty.attribute_type(),
    }
}

fn attribute_metadata(c: &Column) -> Value {
    json!({
        "LogicalName": attribute_name(c),
        "AttributeType": attribute_type(c),
        "IsValidForCreate": !c.system, "IsValidForUpdate": !c.system,
        "MaxLength": match c.ty { ColType::Text(n) => json!(n), _ => Value::Null },
    })
}

/// `Attributes(LogicalName='x')` and its casts to
/// `Microsoft.Dynamics.CRM.{Picklist,State,Status}AttributeMetadata`, whose
/// `OptionSet` lists the choice's options.
fn attribute_response(d: &TableDef, tail: &str) -> DvResponse {
    let (_, key, cast) = match split_resource(tail) {
        Ok(x) => x,
        Err(m) => return bad("0x80060888", m),
    };
    let name = key
        .as_deref()
        .map(|k| {
            k.trim()
                .strip_prefix("LogicalName=")
                .unwrap_or(k)
                .trim_matches('\'')
        })
        .unwrap_or_default();
    let Some(c) = d
        .columns
        .iter()
        .find(|c| c.name != "_customerid_type" && attribute_name(c) == name)
    else {
        return DvResponse::err(
            StatusCode::NOT_FOUND,
            "0x80040217",
            format!(
                "Could not find attribute with name '{name}' on entity '{}'.",
                d.logical
            ),
        );
    };
    let mut v = attribute_metadata(c);
    if cast.is_empty() {
        return DvResponse::json(StatusCode::OK, v);
    }
    let wanted = format!(
        "Microsoft.Dynamics.CRM.{}AttributeMetadata",
        attribute_type(c)
    );
    let ColType::Choice(options) = c.ty else {
        return not_found_segment(&cast);
    };
    if cast != wanted {
        return not_found_segment(&cast);
    }
    let status = attribute_type(c) == "Status";
    let options: Vec<Value> = options
        .iter()
        .map(|(value, label)| {
            let mut o = json!({
                "Value": value,
                "Label": {"UserLocalizedLabel": {"Label": label, "LanguageCode": 1033},
                          "LocalizedLabels": [{"Label": label, "LanguageCode": 1033}]},
            });
            if status && d.logical == "opportunity" {
                o["State"] = json!(opp_state_of_status(*value));
            }
            o
        })
        .collect();
    v["OptionSet"] = json!({"Options": options});
    DvResponse::json(StatusCode::OK, v)
}

fn cmp_values(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

fn auth(state: &SimState, headers: &HeaderMap) -> Result<(), DvResponse> {
    let resource = state.dynamics_resource();
    match lock(&state.entra).check(bearer(headers), &[&resource], state.clock.now(), false) {
        Ok(_) => Ok(()),
        Err(p) => {
            let code = match p {
                TokenProblem::Expired => "0x80072543",
                _ => "0x80072560",
            };
            Err(DvResponse::err(StatusCode::UNAUTHORIZED, code, p.message()).header(
                "WWW-Authenticate",
                format!(
                    "Bearer error=invalid_token, error_description={:?}, authorization_uri=https://login.microsoftonline.com/{}/oauth2/authorize, resource_id={resource}",
                    p.message(),
                    super::creds::TENANT_ID
                ),
            ))
        }
    }
}

/// `ANY /dynamics/api/data/{version}/{*rest}`
pub(crate) async fn dispatch(
    State(state): State<Arc<SimState>>,
    method: Method,
    headers: HeaderMap,
    Path((version, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if !version.starts_with("v9.") {
        return to_http(not_found_segment(&version));
    }
    if let Err(r) = auth(&state, &headers) {
        return to_http(r);
    }
    let service_root = format!("{}/api/data/{version}", state.urls.dynamics);
    let ctx = Ctx {
        service_root: &service_root,
        now: state.clock.now(),
        prefer: parse_prefer(&headers),
        headers: &headers,
    };
    if rest == "$batch" {
        if method != Method::POST {
            return to_http(DvResponse::err(
                StatusCode::METHOD_NOT_ALLOWED,
                "0x80060888",
                "$batch accepts POST only.",
            ));
        }
        return super::batch::handle(&state, &ctx, &version, &headers, &body);
    }
    let r = lock(&state.dv).execute(
        &ctx,
        &method,
        &rest,
        query.as_deref().unwrap_or(""),
        &body,
        None,
    );
    to_http(r)
}

/// What a person does in Dynamics 365, without HTTP.
impl SimState {
    fn dv_ctx_root(&self) -> String {
        format!("{}/api/data/v9.2", self.urls.dynamics)
    }

    fn dv_apply(&self, method: Method, path: &str, body: Value) -> Result<DvResponse, SimError> {
        let root = self.dv_ctx_root();
        let headers = HeaderMap::new();
        let ctx = Ctx {
            service_root: &root,
            now: self.clock.now(),
            prefer: Prefer {
                representation: true,
                ..Prefer::default()
            },
            headers: &headers,
        };
        let r = lock(&self.dv).execute(&ctx, &method, path, "", body.to_string().as_bytes(), None);
        if r.is_success() {
            Ok(r)
        } else {
            let msg = r
                .body
                .as_ref()
                .and_then(|b| b.pointer("/error/message"))
                .and_then(Value::as_str)
                .unwrap_or("failed")
                .to_owned();
            Err(match r.status {
                StatusCode::NOT_FOUND => SimError::NotFound(msg),
                StatusCode::PRECONDITION_FAILED => SimError::Conflict(msg),
                _ => SimError::Invalid(msg),
            })
        }
    }

    /// An opportunity row as the Web API returns it.
    pub fn dynamics_opportunity(&self, id: &str) -> Option<Value> {
        let dv = lock(&self.dv);
        let t = dv.table_index("opportunities")?;
        let row = dv.tables[t].get(id)?;
        Some(dv.render(t, row, &None, false))
    }

    /// The opportunity carrying a referral id in the alternate-key column.
    pub fn dynamics_opportunity_by_referral(&self, referral_id: &str) -> Option<Value> {
        let dv = lock(&self.dv);
        let t = dv.table_index("opportunities")?;
        let id = dv.tables[t].find_by_key(&self.opts.dynamics_referral_key, referral_id)?;
        let row = dv.tables[t].get(&id)?;
        Some(dv.render(t, row, &None, false))
    }

    /// Every opportunity id.
    pub fn dynamics_opportunity_ids(&self) -> Vec<String> {
        let dv = lock(&self.dv);
        dv.table("opportunities")
            .map(|t| t.rows.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Marks an opportunity won, as a seller would (WinOpportunity, status 3).
    pub fn win_dynamics(&self, id: &str) -> Result<(), SimError> {
        self.dv_apply(Method::POST, "WinOpportunity", json!({"Status": 3, "OpportunityClose": {"subject": "Won", "opportunityid@odata.bind": format!("/opportunities({id})")}}))
            .map(|_| ())
    }

    /// Marks an opportunity lost (LoseOpportunity, status 4 Canceled).
    pub fn lose_dynamics(&self, id: &str, reason: Option<&str>) -> Result<(), SimError> {
        let mut close =
            json!({"subject": "Lost", "opportunityid@odata.bind": format!("/opportunities({id})")});
        if let Some(r) = reason {
            close["description"] = json!(r);
        }
        self.dv_apply(
            Method::POST,
            "LoseOpportunity",
            json!({"Status": 4, "OpportunityClose": close}),
        )
        .map(|_| ())
    }

    /// Edits opportunity columns (the same checks as the Web API).
    pub fn edit_dynamics(&self, id: &str, values: Value) -> Result<Value, SimError> {
        let r = self.dv_apply(Method::PATCH, &format!("opportunities({id})"), values)?;
        r.body.ok_or_else(|| SimError::Invalid("no body".into()))
    }

    /// Creates an opportunity (e.g. flagged with `new_syncwithpartnercenter`).
    pub fn create_dynamics_opportunity(&self, values: Value) -> Result<Value, SimError> {
        let r = self.dv_apply(Method::POST, "opportunities", values)?;
        r.body.ok_or_else(|| SimError::Invalid("no body".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_paths_split_into_set_key_and_rest() {
        assert_eq!(
            split_resource("opportunities").unwrap(),
            ("opportunities".into(), None, String::new())
        );
        assert_eq!(
            split_resource("opportunities(new_referralid='a(b)''c')").unwrap(),
            (
                "opportunities".into(),
                Some("new_referralid='a(b)''c'".into()),
                String::new()
            )
        );
        assert_eq!(
            split_resource("EntityDefinitions(LogicalName='opportunity')/Keys").unwrap(),
            (
                "EntityDefinitions".into(),
                Some("LogicalName='opportunity'".into()),
                "Keys".into()
            )
        );
        let opts = SimOptions::default();
        let defs = table_defs(&opts);
        assert_eq!(
            parse_key(&defs[0], "new_referralid='x''y'").unwrap(),
            KeySpec::Alt("new_referralid".into(), "x'y".into())
        );
        assert!(parse_key(&defs[0], "name='x'").is_err());
        assert!(matches!(
            parse_key(&defs[0], "00000000-0000-0000-0000-000000000001").unwrap(),
            KeySpec::Id(_)
        ));
    }

    #[test]
    fn cookies_round_trip() {
        let c = PageCookie {
            m: Some(5),
            id: Some("x".into()),
            off: None,
            tv: None,
            dv: None,
            page: 2,
        };
        let s = encode_cookie(&c);
        assert!(s.starts_with("<cookie pagenumber=\"2\""));
        let back = decode_cookie(&s).unwrap();
        assert_eq!(back.m, Some(5));
        assert_eq!(back.id.as_deref(), Some("x"));
    }
}
