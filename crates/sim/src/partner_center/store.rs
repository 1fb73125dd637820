//! The simulated service's referrals, with the indexes a list needs, the
//! rules every change passes (the transition table, read-only members,
//! terminal states), and the archiving of unanswered referrals.

use std::collections::{BTreeSet, HashMap};

use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

use super::model::{
    self, FIXED_AT_CREATE, READ_ONLY, Status, Substatus, is_terminal, substatus_belongs,
    table_allows,
};
use crate::SimError;
use crate::clock::truncate;
use crate::datetime;

/// Timestamps are kept at the service's 100 ns precision.
pub(crate) const TICK_NANOS: i64 = 100;

/// The partner organization the simulated Partner Center account belongs to.
pub(crate) const PARTNER_ORG_ID: &str = "5e3a1f70-2c4d-4e8b-9a61-7d0c2b9e4f11";
pub(crate) const PARTNER_ORG_NAME: &str = "Contoso Partner Ltd";
pub(crate) const PARTNER_MPN_ID: &str = "6193175";

pub(crate) struct StoredReferral {
    pub(super) status: Status,
    pub(super) substatus: Substatus,
    pub(super) engagement_id: String,
    pub(super) created: DateTime<Utc>,
    pub(super) updated: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
    pub(super) etag: String,
    body: Box<str>,
}

impl StoredReferral {
    pub(super) fn value(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

pub(crate) struct PcState {
    rng: StdRng,
    pub(super) expiry_days: u32,
    pub(super) by_id: HashMap<String, StoredReferral>,
    pub(super) by_updated: BTreeSet<(DateTime<Utc>, String)>,
    pub(super) by_created: BTreeSet<(DateTime<Utc>, String)>,
    pub(super) by_engagement: HashMap<String, Vec<String>>,
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

pub(super) fn time_of(v: &Value, field: &str) -> Option<DateTime<Utc>> {
    v.get(field)
        .and_then(Value::as_str)
        .and_then(datetime::parse)
}

pub(super) fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn etag_inner(s: &str) -> &str {
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

    pub(super) fn new_etag(&mut self, now: DateTime<Utc>) -> String {
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
        let status = Status::parse(str_of(&v, "status"));
        let substatus = Substatus::parse(str_of(&v, "substatus"));
        let created = time_of(&v, "createdDateTime").unwrap_or_default();
        let updated = time_of(&v, "updatedDateTime").unwrap_or(created);
        let deadline = if status == Status::New {
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
        status: Status,
        substatus: Substatus,
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
    pub(super) fn commit_change(
        &mut self,
        old: &Value,
        mut new: Value,
        now: DateTime<Utc>,
    ) -> Result<Value, (StatusCode, &'static str, String)> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, "invalidRequest", m);
        let old_status = Status::parse(str_of(old, "status"));
        let old_sub = Substatus::parse(str_of(old, "substatus"));
        if is_terminal(&old_status) {
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
        let new_status = Status::parse(str_of(&new, "status"));
        let new_sub = Substatus::parse(str_of(&new, "substatus"));
        if !new_status.is_known() || !new_sub.is_known() {
            return Err(bad(format!(
                "'{new_status}/{new_sub}' is not a valid status/substatus."
            )));
        }
        let status_changed = new_status != old_status || new_sub != old_sub;
        if status_changed {
            if !table_allows(&old_status, &new_status, &new_sub) {
                return Err(bad(format!(
                    "The status transition from {old_status}/{old_sub} to {new_status}/{new_sub} is not allowed."
                )));
            }
        } else if !substatus_belongs(&new_status, &new_sub) {
            return Err(bad(format!(
                "Substatus {new_sub} does not belong to status {new_status}."
            )));
        }
        if new_sub == Substatus::Declined
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
        model::check_shape(&new).map_err(bad)?;
        let t = truncate(now, TICK_NANOS);
        if status_changed && old_status == Status::New && new_status != Status::New {
            new["expirationDateTime"] = Value::Null;
            if new_status == Status::Active {
                new["acceptedDateTime"] = json!(fmt_time(t));
            }
        }
        if status_changed && new_status == Status::Closed {
            new["closedDateTime"] = json!(fmt_time(t));
        }
        new["updatedDateTime"] = json!(fmt_time(t));
        new["eTag"] = json!(self.new_etag(t));
        self.put(new.clone());
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn referrals_added_in_bulk_are_listed_in_creation_order_not_in_id_order() {
        let opts = crate::SimOptions {
            referrals: 0,
            ..crate::SimOptions::default()
        };
        let state = crate::SimState::new(
            opts,
            crate::SimUrls::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        );
        let ids = state.insert_referrals(300);
        let pc = crate::lock(&state.pc);
        let listed: Vec<&String> = pc.by_updated.iter().map(|(_, id)| id).collect();
        assert_eq!(listed, ids.iter().collect::<Vec<_>>(), "oldest first");
        let times: std::collections::BTreeSet<_> = pc.by_updated.iter().map(|(t, _)| *t).collect();
        assert_eq!(times.len(), 300, "each at its own time");
        assert!(!ids.is_sorted(), "random GUIDs, listed in id order");
    }

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
    fn closed_referrals_absorb_everything() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        for sub in ["Won", "Lost", "Declined", "Expired"] {
            let mut pc = state_with(vec![referral("c", "Closed", sub, t0)]);
            let old = pc.get("c").unwrap();
            // Even a move the table lists (Closed -> Closed) and a plain edit.
            let mut other = old.clone();
            other["substatus"] = json!(if sub == "Won" { "Lost" } else { "Won" });
            let mut renamed = old.clone();
            renamed["name"] = json!("renamed");
            for new in [other, renamed] {
                let (status, code, _) = pc.commit_change(&old, new, t0).unwrap_err();
                assert_eq!((status, code), (StatusCode::BAD_REQUEST, "invalidRequest"));
            }
            assert_eq!(pc.get("c").unwrap(), old, "{sub}: unchanged");
        }
    }

    #[test]
    fn target_cannot_change_after_create() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let mut r = referral("a", "Active", "Accepted", t0);
        r["target"] = json!([]);
        let mut pc = state_with(vec![r]);
        let old = pc.get("a").unwrap();
        let mut new = old.clone();
        new["target"] = json!([{"type": "BusinessProfileLocation", "id": "msft"}]);
        let (_, _, msg) = pc.commit_change(&old, new, t0).unwrap_err();
        assert_eq!(msg, "The property 'target' is read-only.");
        assert_eq!(pc.get("a").unwrap(), old);
    }

    #[test]
    fn a_body_of_the_wrong_shape_is_refused() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let mut pc = state_with(vec![referral("a", "Active", "Accepted", t0)]);
        let old = pc.get("a").unwrap();
        let mut new = old.clone();
        new["details"] = json!({"dealValue": "lots"});
        let (_, _, msg) = pc.commit_change(&old, new, t0).unwrap_err();
        assert!(msg.starts_with("details.dealValue"), "{msg}");
    }
}
