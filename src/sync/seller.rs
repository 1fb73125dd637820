//! What a seller sees besides the referral's own fields: the time left to
//! answer a received referral (`[status] answer_by`, a metric by time left,
//! one warning 48 hours before), and Microsoft's answer to a co-sell request
//! (`[status] microsoft_engagement`, a metric by state).
//!
//! Microsoft's answer is read from the Microsoft-targeted referral of the
//! deal's engagement when the listing shows it, kept in the `kv` table
//! (`microsoft_engagement.<referral id>`), and put into the referral JSON
//! the mapping reads under [`ENGAGEMENT_KEY`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crm::{RecordKey, RecordWrite};
use crate::domain::{DealKind, MicrosoftEngagement, Referral, Stage, TimeLeft};
use crate::mapping::{ANSWER_BY_KEY, ENGAGEMENT_KEY};
use crate::store::{CrmKind, Link, ReferralSnapshot, Repo, StoreError};

use super::effects::{Effect, PARTNER_CENTER};
use super::plan::{PageRows, Plan};
use super::{Cycle, Engine, SyncError};

/// kv: the partner's referral of an engagement (`…<engagement id>`).
pub(crate) const ENGAGEMENT_OWNER: &str = "microsoft_engagement.owner.";
/// kv: Microsoft's answer on a partner referral (`…<referral id>`), as [`EngagementState`] JSON.
pub(crate) const ENGAGEMENT_STATE: &str = "microsoft_engagement.state.";
/// kv: a received referral whose 48-hour warning was given (`…<referral id>`).
pub(crate) const DEADLINE_WARNED: &str = "answer_by.warned.";

/// Microsoft's answer on one co-sell deal, as kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EngagementState {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msx_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub microsoft_referral_id: Option<String>,
}

impl EngagementState {
    fn engagement(&self) -> Option<MicrosoftEngagement> {
        MicrosoftEngagement::parse(&self.state)
    }
}

/// The deadline as written to the CRM: RFC 3339, UTC, whole seconds.
pub(crate) fn answer_by_text(deadline: DateTime<Utc>) -> String {
    deadline.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Puts the answer-by date of a received inbound referral into its JSON.
pub(crate) fn add_answer_by(json: &mut Value, snapshot: &ReferralSnapshot, stage: Option<Stage>) {
    if stage == Some(Stage::Received)
        && !snapshot.locally_expired
        && let Some(deadline) = snapshot.deadline
    {
        json[ANSWER_BY_KEY] = Value::String(answer_by_text(deadline));
    }
}

/// Puts Microsoft's answer (and its MSX id, when the partner's referral has
/// none yet) into the JSON of the partner's referral.
fn add_engagement(json: &mut Value, state: &EngagementState) {
    json[ENGAGEMENT_KEY] = Value::String(state.state.clone());
    if let Some(msx) = &state.msx_id
        && json
            .pointer("/trackingInfo/microsoftMsxId")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        if !json.get("trackingInfo").is_some_and(Value::is_object) {
            json["trackingInfo"] = serde_json::json!({});
        }
        json["trackingInfo"]["microsoftMsxId"] = Value::String(msx.clone());
    }
}

/// The kv rows a page's co-sell deals need, read with the page's other
/// rows so that deciding never waits for the store.
pub(crate) struct EngagementReads {
    /// Outbound co-sell referrals of ours: their answer so far.
    partner_referrals: Vec<String>,
    /// Engagements whose Microsoft-targeted referral is on the page.
    engagements: Vec<String>,
}

impl EngagementReads {
    pub(crate) fn of_page(referrals: &[Referral]) -> EngagementReads {
        let mut reads = EngagementReads {
            partner_referrals: Vec::new(),
            engagements: Vec::new(),
        };
        for r in referrals.iter().filter(|r| r.is_outbound()) {
            if r.target.iter().flatten().any(|t| t.is_microsoft()) {
                if let Some(e) = r.engagement_id.as_deref().filter(|e| !e.is_empty()) {
                    reads.engagements.push(e.to_owned());
                }
            } else if DealKind::of(r) == DealKind::CoSell {
                reads.partner_referrals.push(r.id.clone());
            }
        }
        reads
    }

    pub(crate) fn load(
        &self,
        repo: &Repo<'_>,
        kinds: &[CrmKind],
        rows: &mut PageRows,
    ) -> Result<(), StoreError> {
        for id in &self.partner_referrals {
            rows.add_kv(repo, format!("{ENGAGEMENT_STATE}{id}"))?;
        }
        for engagement in &self.engagements {
            let owner_key = format!("{ENGAGEMENT_OWNER}{engagement}");
            rows.add_kv(repo, owner_key.clone())?;
            let Some(owner) = rows.kv(&owner_key).map(str::to_owned) else {
                continue;
            };
            rows.add_kv(repo, format!("{ENGAGEMENT_STATE}{owner}"))?;
            for kind in kinds {
                rows.add_link_by_referral(repo, *kind, &owner)?;
            }
        }
        Ok(())
    }
}

impl Engine {
    /// Microsoft's answer on a partner referral: this page's plan first,
    /// then what the page read from the store.
    fn engagement_state(
        &self,
        rows: &PageRows,
        plan: &Plan,
        referral_id: &str,
    ) -> Option<EngagementState> {
        let key = format!("{ENGAGEMENT_STATE}{referral_id}");
        let raw = match plan.kv.iter().rev().find(|(k, _)| *k == key) {
            Some((_, v)) => Some(v.as_str()),
            None => rows.kv(&key),
        };
        raw.and_then(|v| serde_json::from_str(v).ok())
    }

    /// Adds Microsoft's answer to the JSON of a co-sell deal of ours.
    pub(crate) fn add_engagement_of(
        &self,
        r: &Referral,
        json: &mut Value,
        rows: &PageRows,
        plan: &Plan,
    ) {
        if !r.is_outbound() || DealKind::of(r) != DealKind::CoSell {
            return;
        }
        if let Some(state) = self.engagement_state(rows, plan, &r.id) {
            add_engagement(json, &state);
        }
    }

    /// The listing showed the Microsoft-targeted referral of an engagement:
    /// Microsoft's answer, recorded on the partner's referral and brought
    /// to its opportunities.
    pub(crate) fn plan_microsoft_half(
        &self,
        microsoft: &Referral,
        stage: Option<Stage>,
        rows: &PageRows,
        plan: &mut Plan,
    ) -> Result<(), SyncError> {
        let Some(engagement) = microsoft.engagement_id.as_deref().filter(|e| !e.is_empty()) else {
            return Ok(());
        };
        let Some(answer) = MicrosoftEngagement::of_microsoft_stage(stage) else {
            return Ok(());
        };
        let owner_key = format!("{ENGAGEMENT_OWNER}{engagement}");
        let Some(owner) = rows.kv(&owner_key).map(str::to_owned) else {
            return Ok(());
        };
        let old = self.engagement_state(rows, plan, &owner);
        let old_answer = old.as_ref().and_then(EngagementState::engagement);
        // An answer never goes back to "requested" or "no answer".
        if old_answer.is_some_and(MicrosoftEngagement::is_answer) && !answer.is_answer() {
            return Ok(());
        }
        if old_answer == Some(MicrosoftEngagement::NoAnswer) && !answer.is_answer() {
            return Ok(());
        }
        let msx_id = microsoft
            .extra
            .get("trackingInfo")
            .and_then(|t| t.get("microsoftMsxId"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let reason = (answer == MicrosoftEngagement::Declined)
            .then(|| microsoft.status_reason.clone())
            .flatten()
            .filter(|s| !s.trim().is_empty());
        let new = EngagementState {
            state: answer.label().to_owned(),
            msx_id,
            reason: reason.clone(),
            microsoft_referral_id: Some(microsoft.id.clone()),
        };
        if old.as_ref() == Some(&new) {
            return Ok(());
        }
        plan.kv.push((
            format!("{ENGAGEMENT_STATE}{owner}"),
            serde_json::to_string(&new).unwrap_or_default(),
        ));
        if old_answer != Some(answer) {
            let message = match answer {
                MicrosoftEngagement::Requested => {
                    "Microsoft's sellers have the co-sell request".to_owned()
                }
                MicrosoftEngagement::Engaged => format!(
                    "Microsoft's sellers engaged on the co-sell request{}",
                    new.msx_id
                        .as_deref()
                        .map(|m| format!(" (MSX id {m})"))
                        .unwrap_or_default()
                ),
                MicrosoftEngagement::Declined => format!(
                    "Microsoft's sellers declined the co-sell request: {}",
                    reason.as_deref().unwrap_or("no reason given")
                ),
                MicrosoftEngagement::NoAnswer => {
                    "Microsoft's sellers did not answer the co-sell request".to_owned()
                }
            };
            tracing::info!(referral_id = %owner, microsoft_referral_id = %microsoft.id, engagement = answer.label(), "{message}");
            plan.event(&owner, PARTNER_CENTER, "microsoft_engagement", message);
        }
        // Bring it to the partner's opportunities: only these fields, so
        // nothing else of the deal is decided here.
        let links: Vec<Link> = self
            .crms
            .iter()
            .filter_map(|side| rows.link_by_referral(side.kind, &owner).cloned())
            .collect();
        plan.effects
            .extend(self.engagement_effects(&owner, &new, &links));
        Ok(())
    }

    /// The CRM writes that show Microsoft's answer (and its MSX id) on
    /// every opportunity of a partner referral.
    fn engagement_effects(
        &self,
        referral_id: &str,
        state: &EngagementState,
        links: &[Link],
    ) -> Vec<Effect> {
        let mut json = serde_json::json!({});
        add_engagement(&mut json, state);
        let mut effects = Vec::new();
        for side in &self.crms {
            let Some(link) = links.iter().find(|l| l.crm == side.kind) else {
                continue;
            };
            let m = &side.mapping;
            let mut keep: Vec<&str> = m
                .status
                .microsoft_engagement
                .as_deref()
                .into_iter()
                .collect();
            if state.msx_id.is_some() {
                keep.extend(
                    m.fields
                        .iter()
                        .filter(|r| {
                            r.path.as_str() == "trackingInfo.microsoftMsxId"
                                && r.direction.writes_crm()
                        })
                        .filter_map(|r| r.crm.as_deref()),
                );
            }
            let fields: serde_json::Map<String, Value> = m
                .to_crm(&json, Stage::Accepted)
                .into_iter()
                .filter(|(k, v)| keep.contains(&k.as_str()) && !v.is_null())
                .collect();
            if fields.is_empty() {
                continue;
            }
            effects.push(Effect::CrmUpsert {
                crm: side.kind,
                write: RecordWrite {
                    key: RecordKey::CrmId(link.crm_id.clone()),
                    fields,
                    if_match: None,
                    customer: None,
                },
                referral_id: Some(referral_id.to_owned()),
                pc_hash: None,
            });
        }
        effects
    }

    /// Microsoft's decision window lapsed without an answer: "No answer"
    /// on the partner's referral and its opportunities.
    pub(crate) async fn record_no_answer(
        &self,
        referral_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), SyncError> {
        let key = format!("{ENGAGEMENT_STATE}{referral_id}");
        let kinds: Vec<CrmKind> = self.crms.iter().map(|s| s.kind).collect();
        let (raw, links) = {
            let (key, rid) = (key.clone(), referral_id.to_owned());
            self.read_db(move |r| {
                let mut links = Vec::new();
                for kind in kinds {
                    links.extend(r.link_by_referral(kind, &rid)?);
                }
                Ok((r.kv_get(&key)?, links))
            })
            .await?
        };
        let old: Option<EngagementState> = raw.and_then(|v| serde_json::from_str(&v).ok());
        if old
            .as_ref()
            .and_then(EngagementState::engagement)
            .is_some_and(MicrosoftEngagement::is_answer)
        {
            return Ok(());
        }
        let new = EngagementState {
            state: MicrosoftEngagement::NoAnswer.label().to_owned(),
            msx_id: None,
            reason: None,
            microsoft_referral_id: old.and_then(|o| o.microsoft_referral_id),
        };
        let effects = self.engagement_effects(referral_id, &new, &links);
        let value = serde_json::to_string(&new).unwrap_or_default();
        self.write_db(move |r| {
            r.kv_set(&key, &value, now)?;
            for e in &effects {
                super::plan::queue_effect(r, e, now)?;
            }
            Ok(())
        })
        .await
    }

    /// Gauges of the two windows, and the one warning per received referral
    /// 48 hours before its deadline.
    pub(crate) async fn report_windows(&self, cycle: &mut Cycle) -> Result<(), SyncError> {
        let now = cycle.now;
        // The bounds of TimeLeft's buckets.
        let (under_48h, under_7d) = (now + TimeLeft::WARN_BEFORE, now + TimeLeft::WEEK);
        let (counts, warn, engagements) = self
            .read_db(move |r| {
                Ok((
                    r.open_deadline_counts(under_48h, under_7d)?,
                    r.open_deadlines_between(now, under_48h)?,
                    r.kv_with_prefix(ENGAGEMENT_STATE)?,
                ))
            })
            .await?;
        let buckets: std::collections::BTreeMap<&'static str, u64> = TimeLeft::ALL
            .iter()
            .zip(counts)
            .map(|(b, n)| (b.label(), n))
            .collect();
        crate::metrics::record_answer_windows(&buckets);

        let mut states = std::collections::BTreeMap::new();
        for e in MicrosoftEngagement::ALL {
            states.insert(e.metric_label(), 0u64);
        }
        for (_, v) in engagements {
            if let Some(e) = serde_json::from_str::<EngagementState>(&v)
                .ok()
                .and_then(|s| s.engagement())
            {
                *states.entry(e.metric_label()).or_default() += 1;
            }
        }
        crate::metrics::record_microsoft_engagements(&states);

        if cycle.dry_run {
            return Ok(());
        }
        // Only the few inside 48 hours are looked up: once warned, never again.
        let candidates: Vec<String> = warn.iter().map(|(id, _, _)| id.clone()).collect();
        let warned: std::collections::HashSet<String> = self
            .read_db(move |r| {
                let mut warned = std::collections::HashSet::new();
                for id in candidates {
                    if r.kv_get(&format!("{DEADLINE_WARNED}{id}"))?.is_some() {
                        warned.insert(id);
                    }
                }
                Ok(warned)
            })
            .await?;
        for (id, name, deadline) in warn {
            if warned.contains(&id) {
                continue;
            }
            let key = format!("{DEADLINE_WARNED}{id}");
            let message = format!(
                "received referral {:?} must be accepted or declined by {} (less than 48 hours left)",
                name.as_deref().unwrap_or(""),
                deadline.format("%Y-%m-%d %H:%M UTC")
            );
            tracing::warn!(referral_id = %id, answer_by = %answer_by_text(deadline), "{message}");
            let now = cycle.now;
            self.write_db(move |r| {
                r.kv_set(&key, &answer_by_text(deadline), now)?;
                r.append_event(&id, now, PARTNER_CENTER, "deadline_near", &message, None)
            })
            .await?;
        }
        Ok(())
    }
}
