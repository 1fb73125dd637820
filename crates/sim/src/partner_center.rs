//! Partner Center Referrals API (`/v1.0/engagements/referrals`): OData list
//! with `$filter`/`$orderby`/`$top` and keyset `$skiptoken` paging, get by id,
//! create, JSON Patch (replace/add) and PUT with If-Match, the documented
//! status transition table, and archiving of unanswered referrals.

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::clock::truncate;
use super::entra::{PARTNER_CENTER_RESOURCE, TokenProblem};
use super::odata::{self, CmpOp, Expr, Literal, Resolver};
use super::{SimError, SimState, bearer, json_response, lock};
use cosell_core::domain::lifecycle::{
    LifecycleAction, Stage, TransitionError, api_transition_allowed, substatus_fits, transition,
};
use cosell_core::domain::referral::Referral;
use cosell_core::domain::{Direction, ReferralStatus, ReferralSubstatus};

const MAX_PAGE: usize = 100;
/// Timestamps are kept at the service's 100 ns precision.
const TICK_NANOS: i64 = 100;

/// The partner organization the simulated Partner Center account belongs to.
pub(crate) const PARTNER_ORG_ID: &str = "5e3a1f70-2c4d-4e8b-9a61-7d0c2b9e4f11";
pub(crate) const PARTNER_ORG_NAME: &str = "Contoso Partner Ltd";
pub(crate) const PARTNER_MPN_ID: &str = "6193175";

/// Top-level Referral members; anything else in a patch path or filter is refused.
const KNOWN_FIELDS: &[&str] = &[
    "id",
    "engagementId",
    "name",
    "organizationId",
    "organizationName",
    "externalReferenceId",
    "createdDateTime",
    "updatedDateTime",
    "expirationDateTime",
    "acceptedDateTime",
    "closedDateTime",
    "status",
    "substatus",
    "statusReason",
    "type",
    "qualification",
    "referralSource",
    "callToAction",
    "customerMarketplaceIntent",
    "customerProfile",
    "consent",
    "details",
    "team",
    "inviteContext",
    "target",
    "eTag",
    "links",
    "direction",
    "salesStage",
    "campaignId",
    "favorite",
    "lastModifiedVia",
    "lastRunId",
    "referralProgram",
    "mpnId",
    "trackingInfo",
    "registrations",
    "registrationStatus",
    "quality",
    "isSpam",
    "tags",
    "dealSensitivity",
    "createdVia",
];
/// Members a client cannot write.
const READ_ONLY: &[&str] = &[
    "id",
    "engagementId",
    "organizationId",
    "organizationName",
    "createdDateTime",
    "updatedDateTime",
    "expirationDateTime",
    "acceptedDateTime",
    "closedDateTime",
    "eTag",
    "links",
    "direction",
    "mpnId",
];
/// Members set when a referral is created and read-only after: no documented
/// update changes `target` (partner-center-api §3.2); Microsoft joins an
/// engagement only through its own connected referral.
const FIXED_AT_CREATE: &[&str] = &["target"];
const DATE_FIELDS: &[&str] = &[
    "createdDateTime",
    "updatedDateTime",
    "expirationDateTime",
    "acceptedDateTime",
    "closedDateTime",
];

pub(crate) struct StoredReferral {
    status: ReferralStatus,
    substatus: ReferralSubstatus,
    engagement_id: String,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
    etag: String,
    body: Box<str>,
}

impl StoredReferral {
    fn value(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

pub(crate) struct PcState {
    rng: StdRng,
    expiry_days: u32,
    by_id: HashMap<String, StoredReferral>,
    by_updated: BTreeSet<(DateTime<Utc>, String)>,
    by_created: BTreeSet<(DateTime<Utc>, String)>,
    by_engagement: HashMap<String, Vec<String>>,
    deadlines: BTreeSet<(DateTime<Utc>, String)>,
    pub(crate) base_url: String,
}

/// A time as Partner Center writes it: UTC with 7 fractional digits.
pub(crate) fn fmt_time(t: DateTime<Utc>) -> String {
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.timestamp_subsec_nanos() / 100
    )
}

fn time_of(v: &Value, field: &str) -> Option<DateTime<Utc>> {
    v.get(field)
        .and_then(Value::as_str)
        .and_then(cosell_core::domain::referral::api_datetime::parse)
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

fn etag_inner(s: &str) -> &str {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.trim_matches('"')
}

impl PcState {
    pub(crate) fn new(seed: u64, expiry_days: u32) -> Self {
        PcState {
            rng: StdRng::seed_from_u64(seed ^ 0x9a27_ce11),
            expiry_days,
            by_id: HashMap::new(),
            by_updated: BTreeSet::new(),
            by_created: BTreeSet::new(),
            by_engagement: HashMap::new(),
            deadlines: BTreeSet::new(),
            base_url: String::new(),
        }
    }

    pub(crate) fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    pub(crate) fn new_guid(&mut self) -> String {
        let b: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(b).into_uuid().to_string()
    }

    fn new_etag(&mut self, now: DateTime<Utc>) -> String {
        let a: u32 = self.rng.random();
        format!(
            "\"{a:08x}-0000-0800-0000-{:012x}\"",
            now.timestamp() as u64 & 0xffff_ffff_ffff
        )
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn links(&self, id: &str, engagement_id: &str) -> Value {
        json!({
            "relatedReferrals": {"uri": format!("{}/v1.0/engagements/referrals?$filter=engagementId eq '{engagement_id}'", self.base_url), "method": "GET"},
            "self": {"uri": format!("{}/v1.0/engagements/referrals/{id}", self.base_url), "method": "GET"},
        })
    }

    /// Stores a referral (new or changed), keeping every index in step. The
    /// value must carry id, engagementId, status, substatus and timestamps.
    pub(crate) fn put(&mut self, v: Value) {
        let id = str_of(&v, "id").to_owned();
        if let Some(old) = self.by_id.remove(&id) {
            self.by_updated.remove(&(old.updated, id.clone()));
            self.by_created.remove(&(old.created, id.clone()));
            if let Some(d) = old.deadline {
                self.deadlines.remove(&(d, id.clone()));
            }
            if old.engagement_id != str_of(&v, "engagementId")
                && let Some(ids) = self.by_engagement.get_mut(&old.engagement_id)
            {
                ids.retain(|x| x != &id);
            }
        }
        let status = ReferralStatus::parse(str_of(&v, "status"));
        let substatus = ReferralSubstatus::parse(str_of(&v, "substatus"));
        let created = time_of(&v, "createdDateTime").unwrap_or_default();
        let updated = time_of(&v, "updatedDateTime").unwrap_or(created);
        let deadline = if status == ReferralStatus::New {
            let ours = created + TimeDelta::days(i64::from(self.expiry_days));
            Some(time_of(&v, "expirationDateTime").map_or(ours, |e| e.min(ours)))
        } else {
            None
        };
        let engagement_id = str_of(&v, "engagementId").to_owned();
        let ids = self.by_engagement.entry(engagement_id.clone()).or_default();
        if !ids.contains(&id) {
            ids.push(id.clone());
        }
        self.by_updated.insert((updated, id.clone()));
        self.by_created.insert((created, id.clone()));
        if let Some(d) = deadline {
            self.deadlines.insert((d, id.clone()));
        }
        let etag = str_of(&v, "eTag").to_owned();
        self.by_id.insert(
            id,
            StoredReferral {
                status,
                substatus,
                engagement_id,
                created,
                updated,
                deadline,
                etag,
                body: v.to_string().into_boxed_str(),
            },
        );
    }

    pub(crate) fn get(&self, id: &str) -> Option<Value> {
        self.by_id.get(id).map(StoredReferral::value)
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        self.by_created.iter().map(|(_, id)| id.clone()).collect()
    }

    /// Archives every unanswered referral whose deadline has passed.
    pub(crate) fn sweep(&mut self, now: DateTime<Utc>) {
        while let Some((d, id)) = self.deadlines.first().cloned() {
            if d > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(mut v) = self.get(&id) {
                let t = truncate(now, TICK_NANOS);
                v["status"] = json!("Closed");
                v["substatus"] = json!("Expired");
                v["closedDateTime"] = json!(fmt_time(t));
                v["updatedDateTime"] = json!(fmt_time(t));
                v["eTag"] = json!(self.new_etag(t));
                self.put(v);
            }
        }
    }

    /// Moves a referral through the transition table as a person (or
    /// Microsoft) would in Partner Center.
    pub(crate) fn transition(
        &mut self,
        id: &str,
        status: ReferralStatus,
        substatus: ReferralSubstatus,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Value, SimError> {
        self.sweep(now);
        let old = self
            .get(id)
            .ok_or_else(|| SimError::NotFound(format!("referral {id}")))?;
        let mut new = old.clone();
        new["status"] = json!(status.as_str());
        new["substatus"] = json!(substatus.as_str());
        if let Some(r) = reason {
            new["statusReason"] = json!(r);
        }
        let v = self
            .commit_change(&old, new, now)
            .map_err(|(_, _, msg)| SimError::Conflict(msg))?;
        Ok(v)
    }

    /// Checks a changed referral against the service's rules, stamps it and
    /// stores it. Errors carry (status, code, message).
    fn commit_change(
        &mut self,
        old: &Value,
        mut new: Value,
        now: DateTime<Utc>,
    ) -> Result<Value, (StatusCode, &'static str, String)> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, "invalidRequest", m);
        let old_status = ReferralStatus::parse(str_of(old, "status"));
        let old_sub = ReferralSubstatus::parse(str_of(old, "substatus"));
        if old_status == ReferralStatus::Closed {
            return Err(bad(format!(
                "The referral is {}/{}: expired, declined, won and lost referrals are archived and accept no further updates.",
                old_status, old_sub
            )));
        }
        for f in READ_ONLY.iter().chain(FIXED_AT_CREATE) {
            let o = old.get(*f).cloned().unwrap_or(Value::Null);
            let n = new.get(*f).cloned().unwrap_or(Value::Null);
            if o != n {
                return Err(bad(format!("The property '{f}' is read-only.")));
            }
        }
        let new_status = ReferralStatus::parse(str_of(&new, "status"));
        let new_sub = ReferralSubstatus::parse(str_of(&new, "substatus"));
        if matches!(new_status, ReferralStatus::Other(_))
            || matches!(new_sub, ReferralSubstatus::Other(_))
        {
            return Err(bad(format!(
                "'{new_status}/{new_sub}' is not a valid status/substatus."
            )));
        }
        let status_changed = new_status != old_status || new_sub != old_sub;
        if status_changed {
            if !api_transition_allowed(&old_status, &new_status, &new_sub) {
                return Err(bad(format!(
                    "The status transition from {old_status}/{old_sub} to {new_status}/{new_sub} is not allowed."
                )));
            }
        } else if !substatus_fits(&new_status, &new_sub) {
            return Err(bad(format!(
                "Substatus {new_sub} does not belong to status {new_status}."
            )));
        }
        if new_sub == ReferralSubstatus::Declined
            && new
                .get("statusReason")
                .and_then(Value::as_str)
                .is_none_or(|r| r.trim().is_empty())
        {
            return Err(bad("Declining a referral requires a statusReason.".into()));
        }
        let was_shared = str_of(old, "type").eq_ignore_ascii_case("Shared");
        if was_shared && !str_of(&new, "type").eq_ignore_ascii_case("Shared") {
            return Err(bad(
                "A shared (co-sell) referral cannot be made independent again.".into(),
            ));
        }
        let consent_path = "/consent/consentToShareReferralWithMicrosoftSellers";
        if old.pointer(consent_path) == Some(&Value::Bool(true))
            && new.pointer(consent_path) != Some(&Value::Bool(true))
        {
            return Err(bad(
                "Sharing a referral with Microsoft sellers cannot be reverted.".into(),
            ));
        }
        if let Err(e) = Referral::from_json(new.clone()) {
            return Err(bad(e.reason));
        }
        let t = truncate(now, TICK_NANOS);
        if status_changed && old_status == ReferralStatus::New && new_status != ReferralStatus::New
        {
            new["expirationDateTime"] = Value::Null;
            if new_status == ReferralStatus::Active {
                new["acceptedDateTime"] = json!(fmt_time(t));
            }
        }
        if status_changed && new_status == ReferralStatus::Closed {
            new["closedDateTime"] = json!(fmt_time(t));
        }
        new["updatedDateTime"] = json!(fmt_time(t));
        new["eTag"] = json!(self.new_etag(t));
        self.put(new.clone());
        Ok(new)
    }
}

/// A Partner Center error body.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message, "target": "referral"}}),
    )
}

#[allow(clippy::result_large_err)] // the error is the finished HTTP answer
fn auth(state: &SimState, headers: &HeaderMap) -> Result<(), Response> {
    let now = state.clock.now();
    match lock(&state.entra).check(bearer(headers), &[PARTNER_CENTER_RESOURCE], now, true) {
        Ok(_) => Ok(()),
        Err(TokenProblem::AppOnly) => Err(error(
            StatusCode::FORBIDDEN,
            "accessDenied",
            &TokenProblem::AppOnly.message(),
        )),
        Err(p) => {
            let mut r = error(StatusCode::UNAUTHORIZED, "unauthenticated", &p.message());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\""),
            );
            Err(r)
        }
    }
}

fn with_common_headers(mut r: Response, req: &HeaderMap, etag: Option<&str>) -> Response {
    let h = r.headers_mut();
    for name in ["client-request-id", "ms-correlationid"] {
        if let Some(v) = req.get(name) {
            h.insert(name, v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("request-id", v);
    }
    if let Some(e) = etag
        && let Ok(v) = HeaderValue::from_str(e)
    {
        h.insert(header::ETAG, v);
    }
    r
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SkipToken {
    /// Filter text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<String>,
    /// Order field: `c` created, `u` updated.
    o: char,
    d: bool,
    t: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
    /// Last key returned: nanoseconds since the epoch and id.
    k: (i64, String),
}

fn encode_token(t: &SkipToken) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(t).unwrap_or_default())
}

fn decode_token(s: &str) -> Option<SkipToken> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim())
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

/// Resolves filter paths on a stored referral, reading its body only when a
/// path is not one of the indexed fields.
struct StoredResolver<'a> {
    r: &'a StoredReferral,
    parsed: OnceCell<Value>,
}

impl StoredResolver<'_> {
    fn doc(&self) -> &Value {
        self.parsed.get_or_init(|| self.r.value())
    }
}

impl Resolver for StoredResolver<'_> {
    fn value(&self, path: &[String]) -> Value {
        if path.len() == 1 {
            let f = path[0].as_str();
            if f.eq_ignore_ascii_case("status") {
                return json!(self.r.status.as_str());
            }
            if f.eq_ignore_ascii_case("substatus") {
                return json!(self.r.substatus.as_str());
            }
            if f.eq_ignore_ascii_case("engagementId") {
                return json!(self.r.engagement_id);
            }
            if f.eq_ignore_ascii_case("updatedDateTime") {
                return json!(fmt_time(self.r.updated));
            }
            if f.eq_ignore_ascii_case("createdDateTime") {
                return json!(fmt_time(self.r.created));
            }
        }
        odata::JsonResolver(self.doc()).value(path)
    }
    fn elements(&self, path: &[String]) -> Vec<Value> {
        odata::JsonResolver(self.doc()).elements(path)
    }
}

/// Validates filter paths and literal types; quoted date-times are read as date-times.
fn check_filter(e: &mut Expr) -> Result<(), String> {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            check_filter(a)?;
            check_filter(b)
        }
        Expr::Not(a) => check_filter(a),
        Expr::Cmp { path, value, .. } => {
            check_path(path)?;
            let f = path[0].as_str();
            if DATE_FIELDS.iter().any(|d| d.eq_ignore_ascii_case(f)) && path.len() == 1 {
                match value {
                    Literal::DateTime(_) | Literal::Null => {}
                    Literal::String(s) => {
                        match cosell_core::domain::referral::api_datetime::parse(s) {
                            Some(dt) => *value = Literal::DateTime(dt),
                            None => {
                                return Err(format!(
                                    "'{s}' is not a valid Edm.DateTimeOffset for {f}."
                                ));
                            }
                        }
                    }
                    Literal::Date(d) => {
                        *value =
                            Literal::DateTime(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
                    }
                    other => {
                        return Err(format!(
                            "A binary operator with incompatible types was detected: Edm.DateTimeOffset and {}.",
                            other.type_name()
                        ));
                    }
                }
            }
            Ok(())
        }
        Expr::Func { path, .. } => check_path(path),
        Expr::Any { collection, .. } => check_path(collection),
    }
}

fn check_path(path: &[String]) -> Result<(), String> {
    let first = path.first().map(String::as_str).unwrap_or("");
    if KNOWN_FIELDS.iter().any(|k| k.eq_ignore_ascii_case(first))
        || first.eq_ignore_ascii_case("email")
    {
        Ok(())
    } else {
        Err(format!(
            "Could not find a property named '{first}' on type 'Referral'."
        ))
    }
}

struct ListQuery {
    filter_text: Option<String>,
    filter: Option<Expr>,
    order_updated: bool,
    desc: bool,
    top: usize,
    skip: usize,
    select: Option<Vec<String>>,
    count: bool,
    after: Option<(DateTime<Utc>, String)>,
}

fn parse_query(raw: Option<&str>) -> Result<ListQuery, String> {
    let params: HashMap<String, String> = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    if let Some(tok) = params.get("$skiptoken") {
        let t = decode_token(tok).ok_or_else(|| "The $skiptoken is not valid.".to_owned())?;
        let mut filter = match &t.f {
            Some(f) => Some(odata::parse_filter(f).map_err(|e| e.0)?),
            None => None,
        };
        if let Some(f) = filter.as_mut() {
            check_filter(f)?;
        }
        let after = DateTime::from_timestamp_nanos(t.k.0);
        return Ok(ListQuery {
            filter_text: t.f,
            filter,
            order_updated: t.o == 'u',
            desc: t.d,
            top: t.t,
            skip: 0,
            select: t
                .s
                .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect()),
            count: false,
            after: Some((after, t.k.1)),
        });
    }
    let filter_text = params
        .get("$filter")
        .cloned()
        .filter(|s| !s.trim().is_empty());
    let mut filter = match &filter_text {
        Some(f) => Some(odata::parse_filter(f).map_err(|e| format!("Invalid $filter: {}", e.0))?),
        None => None,
    };
    if let Some(f) = filter.as_mut() {
        check_filter(f)?;
    }
    let (mut order_updated, mut desc) = (false, false);
    if let Some(o) = params.get("$orderby") {
        let items = odata::parse_orderby(o).map_err(|e| e.0)?;
        if items.len() != 1 {
            return Err("Only one $orderby field is supported.".into());
        }
        let f = items[0].field.as_str();
        if f.eq_ignore_ascii_case("updatedDateTime") {
            order_updated = true;
        } else if !f.eq_ignore_ascii_case("createdDateTime") {
            return Err(format!(
                "Ordering by '{f}' is not supported: use createdDateTime or updatedDateTime."
            ));
        }
        desc = items[0].desc;
    }
    let top = match params.get("$top") {
        None => MAX_PAGE,
        Some(t) => match t.trim().parse::<usize>() {
            Ok(0) | Err(_) => return Err(format!("'{t}' is not a valid $top.")),
            Ok(n) => n.min(MAX_PAGE),
        },
    };
    let skip = match params.get("$skip") {
        None => 0,
        Some(s) => s
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("'{s}' is not a valid $skip."))?,
    };
    let select = params.get("$select").map(|s| {
        s.split(',')
            .map(|x| x.trim().to_owned())
            .collect::<Vec<_>>()
    });
    if let Some(sel) = &select {
        for f in sel {
            check_path(std::slice::from_ref(f))?;
        }
    }
    let count = params
        .get("$count")
        .is_some_and(|c| c.eq_ignore_ascii_case("true"));
    Ok(ListQuery {
        filter_text,
        filter,
        order_updated,
        desc,
        top,
        skip,
        select,
        count,
        after: None,
    })
}

fn bounds_from(filter: Option<&Expr>, field: &str) -> (Bound<DateTime<Utc>>, Bound<DateTime<Utc>>) {
    let mut lo = Bound::Unbounded;
    let mut hi = Bound::Unbounded;
    if let Some(f) = filter {
        for (op, lit) in f.conjunct_bounds(field) {
            if let Literal::DateTime(t) = lit {
                match op {
                    CmpOp::Ge | CmpOp::Gt | CmpOp::Eq if matches!(lo, Bound::Unbounded) => {
                        lo = Bound::Included(*t)
                    }
                    CmpOp::Le | CmpOp::Lt | CmpOp::Eq if matches!(hi, Bound::Unbounded) => {
                        hi = Bound::Included(*t)
                    }
                    _ => {}
                }
            }
        }
    }
    (lo, hi)
}

fn project(v: Value, select: &Option<Vec<String>>) -> Value {
    match (select, v) {
        (Some(sel), Value::Object(m)) => {
            let mut out = Map::new();
            for (k, val) in m {
                if k == "id" || sel.iter().any(|s| s.eq_ignore_ascii_case(&k)) {
                    out.insert(k, val);
                }
            }
            Value::Object(out)
        }
        (_, v) => v,
    }
}

impl PcState {
    fn list(&self, q: &ListQuery) -> (Vec<Value>, Option<String>, Option<usize>) {
        let field = if q.order_updated {
            "updatedDateTime"
        } else {
            "createdDateTime"
        };
        let index = if q.order_updated {
            &self.by_updated
        } else {
            &self.by_created
        };
        let (lo, hi) = bounds_from(q.filter.as_ref(), field);
        let key = |b: Bound<DateTime<Utc>>, low: bool| -> Bound<(DateTime<Utc>, String)> {
            match b {
                Bound::Included(t) if low => Bound::Included((t, String::new())),
                Bound::Included(t) => Bound::Included((t, "\u{10FFFF}".to_owned())),
                _ => Bound::Unbounded,
            }
        };
        let (mut lo_k, mut hi_k) = (key(lo, true), key(hi, false));
        if let Some(after) = &q.after {
            if q.desc {
                hi_k = Bound::Excluded(after.clone());
            } else {
                lo_k = Bound::Excluded(after.clone());
            }
        }
        if matches!((&lo_k, &hi_k), (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) if a > b)
        {
            return (Vec::new(), None, q.count.then_some(0));
        }
        let range = index.range((lo_k, hi_k));
        let iter: Box<dyn Iterator<Item = &(DateTime<Utc>, String)>> = if q.desc {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let matches = |id: &String| -> Option<&StoredReferral> {
            let r = self.by_id.get(id)?;
            match &q.filter {
                None => Some(r),
                Some(f) => odata::eval(
                    f,
                    &StoredResolver {
                        r,
                        parsed: OnceCell::new(),
                    },
                )
                .then_some(r),
            }
        };
        let mut out = Vec::new();
        let mut last: Option<(DateTime<Utc>, String)> = None;
        let mut more = false;
        let mut skipped = 0;
        let mut total = 0usize;
        for (t, id) in iter {
            let Some(r) = matches(id) else { continue };
            if skipped < q.skip {
                skipped += 1;
                continue;
            }
            total += 1;
            if out.len() < q.top {
                out.push(project(r.value(), &q.select));
                last = Some((*t, id.clone()));
            } else {
                more = true;
                if !q.count {
                    break;
                }
            }
        }
        let next = match (more, last) {
            (true, Some((t, id))) => Some(encode_token(&SkipToken {
                f: q.filter_text.clone(),
                o: if q.order_updated { 'u' } else { 'c' },
                d: q.desc,
                t: q.top,
                s: q.select.as_ref().map(|s| s.join(",")),
                k: (t.timestamp_nanos_opt().unwrap_or(0), id),
            })),
            _ => None,
        };
        (out, next, q.count.then_some(total))
    }
}

/// `GET /v1.0/engagements/referrals`
pub(crate) async fn list(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(r) = auth(&state, &headers) {
        return r;
    }
    let q = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(m) => {
            return with_common_headers(
                error(StatusCode::BAD_REQUEST, "invalidRequest", &m),
                &headers,
                None,
            );
        }
    };
    let now = state.clock.now();
    let mut pc = lock(&state.pc);
    pc.sweep(now);
    let (items, next, count) = pc.list(&q);
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{}/v1.0/$metadata#Referrals", pc.base_url)),
    );
    if let Some(c) = count {
        body.insert("@odata.count".into(), json!(c));
    }
    body.insert("value".into(), Value::Array(items));
    if let Some(tok) = next {
        body.insert(
            "@odata.nextLink".into(),
            json!(format!(
                "{}/v1.0/engagements/referrals?$skiptoken={tok}",
                pc.base_url
            )),
        );
    }
    with_common_headers(
        json_response(StatusCode::OK, &Value::Object(body)),
        &headers,
        None,
    )
}

/// `GET /v1.0/engagements/referrals/{id}`
pub(crate) async fn get_one(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = auth(&state, &headers) {
        return r;
    }
    let now = state.clock.now();
    let mut pc = lock(&state.pc);
    pc.sweep(now);
    match pc.by_id.get(&id) {
        Some(r) => with_common_headers(
            json_response(StatusCode::OK, &r.value()),
            &headers,
            Some(&r.etag),
        ),
        None => with_common_headers(
            error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                &format!("Referral '{id}' was not found."),
            ),
            &headers,
            None,
        ),
    }
}

fn missing_required(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let blank = |p: &str| {
        v.pointer(p)
            .is_none_or(|x| x.is_null() || x.as_str().is_some_and(|s| s.trim().is_empty()))
    };
    for (p, name) in [
        ("/name", "name"),
        ("/type", "type"),
        ("/customerProfile", "customerProfile"),
        ("/customerProfile/name", "customerProfile.name"),
        (
            "/customerProfile/address/country",
            "customerProfile.address.country",
        ),
        ("/consent", "consent"),
        ("/details", "details"),
    ] {
        if blank(p) {
            out.push(name.to_owned());
        }
    }
    out
}

/// `POST /v1.0/engagements/referrals`
pub(crate) async fn create(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = auth(&state, &headers) {
        return r;
    }
    let bad = |m: String| {
        with_common_headers(
            error(StatusCode::BAD_REQUEST, "invalidRequest", &m),
            &headers,
            None,
        )
    };
    let mut v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad("The request body must be a Referral object.".into()),
        Err(e) => return bad(format!("The request body is not valid JSON: {e}")),
    };
    let missing = missing_required(&v);
    if !missing.is_empty() {
        return bad(format!(
            "Required properties are missing: {}.",
            missing.join(", ")
        ));
    }
    if let Some(Value::Object(m)) = Some(&v)
        && let Some(k) = m
            .keys()
            .find(|k| !KNOWN_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k)))
    {
        return bad(format!(
            "Could not find a property named '{k}' on type 'Referral'."
        ));
    }
    if let Some(c) = v
        .pointer("/customerProfile/address/country")
        .and_then(Value::as_str)
        && !cosell_core::domain::country::is_alpha2(c)
    {
        return bad(format!(
            "customerProfile.address.country '{c}' is not an ISO 3166 two-letter country code."
        ));
    }
    let mut probe = v.clone();
    probe["id"] = json!("");
    if let Err(e) = Referral::from_json(probe) {
        return bad(e.reason);
    }
    let for_microsoft = v.get("target").and_then(Value::as_array).is_some_and(|t| {
        t.iter().any(|x| {
            x.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case("msft"))
        })
    });
    let now = state.clock.now();
    let t = truncate(now, TICK_NANOS);
    let mut pc = lock(&state.pc);
    pc.sweep(now);
    let given_engagement = v
        .get("engagementId")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .filter(|s| !s.is_empty());
    let engagement_id = match given_engagement {
        Some(e) if pc.by_engagement.get(&e).is_some_and(|ids| !ids.is_empty()) => e,
        Some(e) => return bad(format!("Engagement '{e}' does not exist.")),
        None if for_microsoft => {
            return bad(
                "A referral for Microsoft needs the engagementId of your own referral.".into(),
            );
        }
        None => pc.new_guid(),
    };
    let id = pc.new_guid();
    let obj = v.as_object_mut();
    if let Some(m) = obj {
        for f in READ_ONLY
            .iter()
            .chain(["status", "substatus", "statusReason"].iter())
        {
            m.remove(*f);
        }
    }
    v["id"] = json!(id);
    v["engagementId"] = json!(engagement_id);
    v["organizationId"] = json!(PARTNER_ORG_ID);
    v["organizationName"] = json!(PARTNER_ORG_NAME);
    v["mpnId"] = json!(PARTNER_MPN_ID);
    v["direction"] = json!(Direction::Outgoing.as_str());
    v["createdDateTime"] = json!(fmt_time(t));
    v["updatedDateTime"] = json!(fmt_time(t));
    v["closedDateTime"] = Value::Null;
    if for_microsoft {
        // Microsoft sellers decide within the window: New/Pending until then.
        v["status"] = json!("New");
        v["substatus"] = json!("Pending");
        v["statusReason"] = Value::Null;
        v["acceptedDateTime"] = Value::Null;
        v["expirationDateTime"] = json!(fmt_time(t + TimeDelta::days(i64::from(pc.expiry_days))));
    } else {
        v["status"] = json!("Active");
        v["substatus"] = json!("Accepted");
        v["statusReason"] = Value::Null;
        v["acceptedDateTime"] = json!(fmt_time(t));
        v["expirationDateTime"] = Value::Null;
    }
    if v.get("favorite").is_none() {
        v["favorite"] = json!(false);
    }
    v["eTag"] = json!(pc.new_etag(t));
    v["links"] = pc.links(&id, &engagement_id);
    let etag = str_of(&v, "eTag").to_owned();
    pc.put(v.clone());
    let mut r = with_common_headers(
        json_response(StatusCode::CREATED, &v),
        &headers,
        Some(&etag),
    );
    if let Ok(loc) =
        HeaderValue::from_str(&format!("{}/v1.0/engagements/referrals/{id}", pc.base_url))
    {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    r
}

#[derive(Deserialize)]
struct RawOp {
    op: String,
    path: String,
    #[serde(default)]
    value: Option<Value>,
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

/// Applies one replace/add at a JSON Pointer (typed-model semantics: a
/// missing member is created; array indexes must exist, `-` appends).
fn apply_op(doc: &mut Value, path: &str, value: Value, add: bool) -> Result<(), String> {
    let segs: Vec<String> = path
        .strip_prefix('/')
        .ok_or_else(|| format!("The path '{path}' is not a JSON Pointer."))?
        .split('/')
        .map(unescape)
        .collect();
    let (last, parents) = segs
        .split_last()
        .ok_or_else(|| "The path is empty.".to_owned())?;
    let mut cur = doc;
    for seg in parents {
        cur = match cur {
            Value::Object(m) => {
                let e = m.entry(seg.clone()).or_insert(Value::Null);
                if e.is_null() {
                    *e = Value::Object(Map::new());
                }
                e
            }
            Value::Array(a) => {
                let i: usize = seg
                    .parse()
                    .map_err(|_| format!("'{seg}' in '{path}' is not an array index."))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("The target location '{path}' was not found."))?
            }
            _ => return Err(format!("The target location '{path}' was not found.")),
        };
    }
    match cur {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" && add {
                a.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("'{last}' in '{path}' is not an array index."))?;
            if add && i <= a.len() {
                a.insert(i, value);
                Ok(())
            } else if !add && i < a.len() {
                a[i] = value;
                Ok(())
            } else {
                Err(format!("The index in '{path}' is out of bounds."))
            }
        }
        _ => Err(format!("The target location '{path}' was not found.")),
    }
}

fn if_match_fails(headers: &HeaderMap, etag: &str) -> Option<bool> {
    let v = headers.get(header::IF_MATCH)?.to_str().ok()?;
    let want = etag_inner(etag);
    Some(
        !v.split(',')
            .any(|x| x.trim() == "*" || etag_inner(x) == want),
    )
}

fn wants_representation(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("return=representation"))
        })
}

fn update(state: &SimState, headers: &HeaderMap, id: &str, body: &[u8], put: bool) -> Response {
    let bad = |m: String| {
        with_common_headers(
            error(StatusCode::BAD_REQUEST, "invalidRequest", &m),
            headers,
            None,
        )
    };
    let now = state.clock.now();
    let mut pc = lock(&state.pc);
    pc.sweep(now);
    let Some(stored) = pc.by_id.get(id) else {
        return with_common_headers(
            error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                &format!("Referral '{id}' was not found."),
            ),
            headers,
            None,
        );
    };
    match if_match_fails(headers, &stored.etag) {
        Some(true) => {
            return with_common_headers(
                error(
                    StatusCode::PRECONDITION_FAILED,
                    "preconditionFailed",
                    "The referral was changed since you read it: the If-Match eTag does not match. Get the latest version and retry.",
                ),
                headers,
                Some(&stored.etag),
            );
        }
        None if put => return bad("The If-Match header is required for PUT.".into()),
        _ => {}
    }
    let old = stored.value();
    let new = if put {
        let mut v: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return bad("The request body must be a Referral object.".into()),
            Err(e) => return bad(format!("The request body is not valid JSON: {e}")),
        };
        if let Some(m) = v.as_object()
            && let Some(k) = m
                .keys()
                .find(|k| !KNOWN_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k)))
        {
            return bad(format!(
                "Could not find a property named '{k}' on type 'Referral'."
            ));
        }
        for f in READ_ONLY {
            v[*f] = old.get(*f).cloned().unwrap_or(Value::Null);
        }
        v
    } else {
        let ops: Vec<RawOp> = match serde_json::from_slice(body) {
            Ok(ops) => ops,
            Err(e) => {
                return bad(format!(
                    "The request body must be a JSON Patch document (an array of operations): {e}"
                ));
            }
        };
        if ops.is_empty() {
            return bad("The JSON Patch document has no operations.".into());
        }
        let mut doc = old.clone();
        for op in ops {
            let add = match op.op.as_str() {
                "replace" => false,
                "add" => true,
                other => {
                    return bad(format!(
                        "The operation '{other}' is not supported: only 'replace' and 'add' are."
                    ));
                }
            };
            let first = op
                .path
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("");
            let Some(canonical) = KNOWN_FIELDS.iter().find(|k| k.eq_ignore_ascii_case(first))
            else {
                return bad(format!(
                    "Could not find a property named '{first}' on type 'Referral'."
                ));
            };
            if READ_ONLY.contains(canonical) || FIXED_AT_CREATE.contains(canonical) {
                return bad(format!("The property '{canonical}' is read-only."));
            }
            let path = format!(
                "/{canonical}{}",
                &op.path.trim_start_matches('/')[first.len()..]
            );
            let Some(value) = op.value else {
                return bad(format!(
                    "The '{}' operation on '{}' needs a value.",
                    op.op, op.path
                ));
            };
            if let Err(m) = apply_op(&mut doc, &path, value, add) {
                return bad(m);
            }
        }
        doc
    };
    match pc.commit_change(&old, new, now) {
        Err((status, code, msg)) => with_common_headers(error(status, code, &msg), headers, None),
        Ok(v) => {
            let etag = str_of(&v, "eTag").to_owned();
            if wants_representation(headers) || put {
                let mut r =
                    with_common_headers(json_response(StatusCode::OK, &v), headers, Some(&etag));
                r.headers_mut().insert(
                    "preference-applied",
                    HeaderValue::from_static("return=representation"),
                );
                r
            } else {
                let mut r = Response::new(axum::body::Body::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                with_common_headers(r, headers, Some(&etag))
            }
        }
    }
}

/// `PATCH /v1.0/engagements/referrals/{id}`
pub(crate) async fn patch(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = auth(&state, &headers) {
        return r;
    }
    update(&state, &headers, &id, &body, false)
}

/// `PUT /v1.0/engagements/referrals/{id}`
pub(crate) async fn put(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = auth(&state, &headers) {
        return r;
    }
    update(&state, &headers, &id, &body, true)
}

/// What a person does in Partner Center, without HTTP.
impl SimState {
    /// The referral as the API would return it now.
    pub fn referral(&self, id: &str) -> Option<Value> {
        let mut pc = lock(&self.pc);
        pc.sweep(self.clock.now());
        pc.get(id)
    }

    /// Every referral id, oldest first.
    pub fn referral_ids(&self) -> Vec<String> {
        let mut pc = lock(&self.pc);
        pc.sweep(self.clock.now());
        pc.ids()
    }

    pub fn referral_count(&self) -> usize {
        lock(&self.pc).len()
    }

    /// Applies what a person does in Partner Center's UI, under the
    /// lifecycle rules (accept/decline only a received referral, win/lose
    /// only an accepted one).
    fn person_action(&self, id: &str, action: LifecycleAction) -> Result<Value, SimError> {
        let now = self.clock.now();
        let mut pc = lock(&self.pc);
        pc.sweep(now);
        let r = pc
            .by_id
            .get(id)
            .ok_or_else(|| SimError::NotFound(format!("referral {id}")))?;
        let from = Stage::from_api(&r.status, &r.substatus).ok_or_else(|| {
            SimError::Conflict(format!("referral {id} is {}/{}", r.status, r.substatus))
        })?;
        let to = transition(from, &action).map_err(|e| match e {
            TransitionError::ReasonRequired => SimError::Invalid(e.to_string()),
            other => SimError::Conflict(other.to_string()),
        })?;
        let (status, substatus) = to.api();
        pc.transition(id, status, substatus, action.reason(), now)
    }

    /// Accepts an inbound referral.
    pub fn accept_referral(&self, id: &str) -> Result<Value, SimError> {
        self.person_action(id, LifecycleAction::Accept)
    }

    /// Declines an inbound referral; a reason is required.
    pub fn decline_referral(&self, id: &str, reason: &str) -> Result<Value, SimError> {
        self.person_action(
            id,
            LifecycleAction::Decline {
                reason: reason.to_owned(),
            },
        )
    }

    pub fn win_referral(&self, id: &str) -> Result<Value, SimError> {
        self.person_action(id, LifecycleAction::Win)
    }

    pub fn lose_referral(&self, id: &str, reason: Option<&str>) -> Result<Value, SimError> {
        self.person_action(
            id,
            LifecycleAction::Lose {
                reason: reason.map(str::to_owned),
            },
        )
    }

    /// Microsoft's sellers answer a co-sell request (the Microsoft-targeted
    /// referral of an engagement): accept engages them, otherwise declined.
    pub fn microsoft_respond(&self, id: &str, accept: bool) -> Result<Value, SimError> {
        let now = self.clock.now();
        let mut pc = lock(&self.pc);
        if accept {
            let v = pc.transition(
                id,
                ReferralStatus::Active,
                ReferralSubstatus::Accepted,
                None,
                now,
            )?;
            let mut v2 = v.clone();
            let msx = format!("7-{}", &pc.new_guid()[..10].to_ascii_uppercase());
            v2["trackingInfo"] = json!({"microsoftMsxId": msx});
            pc.put(v2.clone());
            Ok(v2)
        } else {
            pc.transition(
                id,
                ReferralStatus::Closed,
                ReferralSubstatus::Declined,
                Some("Microsoft sellers declined to engage"),
                now,
            )
        }
    }

    /// Edits a referral as a person would in Partner Center (JSON Patch
    /// replace/add, same rules as the API).
    pub fn edit_referral(
        &self,
        id: &str,
        ops: &[cosell_core::domain::PatchOp],
    ) -> Result<Value, SimError> {
        let now = self.clock.now();
        let mut pc = lock(&self.pc);
        pc.sweep(now);
        let old = pc
            .get(id)
            .ok_or_else(|| SimError::NotFound(format!("referral {id}")))?;
        let mut doc = old.clone();
        for op in ops {
            apply_op(
                &mut doc,
                &op.path,
                op.value.clone(),
                op.op == cosell_core::domain::PatchOpKind::Add,
            )
            .map_err(SimError::Invalid)?;
        }
        pc.commit_change(&old, doc, now)
            .map_err(|(_, _, m)| SimError::Invalid(m))
    }

    /// Adds `n` new inbound co-sell referrals (New/Pending) from Microsoft,
    /// created now. Returns their ids.
    pub fn insert_referrals(&self, n: usize) -> Vec<String> {
        let now = truncate(self.clock.now(), TICK_NANOS);
        let mut pc = lock(&self.pc);
        let start = pc.len();
        (0..n)
            .map(|i| super::seed::inbound_referral(&mut pc, start + i, now))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn state_with(values: Vec<Value>) -> PcState {
        let mut pc = PcState::new(1, 14);
        pc.base_url = "http://sim/partner-center".into();
        for v in values {
            pc.put(v);
        }
        pc
    }

    fn referral(id: &str, status: &str, sub: &str, created: DateTime<Utc>) -> Value {
        json!({"id": id, "engagementId": format!("e-{id}"), "status": status, "substatus": sub,
               "direction": "Incoming", "type": "Shared", "name": id,
               "createdDateTime": fmt_time(created), "updatedDateTime": fmt_time(created),
               "expirationDateTime": null, "eTag": "\"1\""})
    }

    #[test]
    fn paging_is_stable_under_updates() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let pc_values: Vec<Value> = (0..5)
            .map(|i| {
                referral(
                    &format!("r{i}"),
                    "Active",
                    "Accepted",
                    t0 + TimeDelta::minutes(i),
                )
            })
            .collect();
        let mut pc = state_with(pc_values);
        let mut q = parse_query(Some("$top=2&$orderby=updatedDateTime asc")).unwrap();
        let (page, next, _) = pc.list(&q);
        assert_eq!(
            page.iter()
                .map(|v| str_of(v, "id").to_owned())
                .collect::<Vec<_>>(),
            ["r0", "r1"]
        );
        // r0 changes between pages: it moves to the end and is seen again, nothing is skipped.
        let mut r0 = pc.get("r0").unwrap();
        r0["updatedDateTime"] = json!(fmt_time(t0 + TimeDelta::hours(1)));
        pc.put(r0);
        let raw = format!("$skiptoken={}", next.unwrap());
        q = parse_query(Some(&raw)).unwrap();
        let (page, next, _) = pc.list(&q);
        assert_eq!(
            page.iter()
                .map(|v| str_of(v, "id").to_owned())
                .collect::<Vec<_>>(),
            ["r2", "r3"]
        );
        let raw = format!("$skiptoken={}", next.unwrap());
        let (page, next, _) = pc.list(&parse_query(Some(&raw)).unwrap());
        assert_eq!(
            page.iter()
                .map(|v| str_of(v, "id").to_owned())
                .collect::<Vec<_>>(),
            ["r4", "r0"]
        );
        assert!(next.is_none());
    }

    #[test]
    fn unanswered_referrals_expire_when_read() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let mut pc = state_with(vec![
            referral("old", "New", "Pending", t0),
            referral("new", "New", "Pending", t0 + TimeDelta::days(10)),
        ]);
        pc.sweep(t0 + TimeDelta::days(14));
        assert_eq!(str_of(&pc.get("old").unwrap(), "substatus"), "Expired");
        assert_eq!(str_of(&pc.get("new").unwrap(), "substatus"), "Pending");
        let q = parse_query(Some("$filter=status eq 'New'")).unwrap();
        assert_eq!(pc.list(&q).0.len(), 1);
    }

    #[test]
    fn patches_follow_the_table() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let mut pc = state_with(vec![referral("a", "Active", "Accepted", t0)]);
        let old = pc.get("a").unwrap();
        let mut back = old.clone();
        back["status"] = json!("New");
        back["substatus"] = json!("Pending");
        assert!(pc.commit_change(&old, back, t0).is_err());
        let mut won = old.clone();
        won["status"] = json!("Closed");
        won["substatus"] = json!("Won");
        let v = pc
            .commit_change(&old, won, t0 + TimeDelta::hours(1))
            .unwrap();
        assert!(v["closedDateTime"].is_string());
        let mut again = v.clone();
        again["name"] = json!("renamed");
        assert!(pc.commit_change(&v, again, t0).is_err());
    }

    #[test]
    fn json_pointer_ops() {
        let mut d = json!({"details": {"notes": "a"}, "team": [{"email": "x"}]});
        apply_op(&mut d, "/details/dealValue", json!(5), false).unwrap();
        apply_op(&mut d, "/team/-", json!({"email": "y"}), true).unwrap();
        apply_op(&mut d, "/team/0/email", json!("z"), false).unwrap();
        assert!(apply_op(&mut d, "/team/5/email", json!("z"), false).is_err());
        assert_eq!(
            d,
            json!({"details": {"notes": "a", "dealValue": 5}, "team": [{"email": "z"}, {"email": "y"}]})
        );
    }
}
