//! Applying a mapping, both ways. Pure functions of their inputs.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::domain::deal::describe_problems;
use crate::domain::{
    AssistanceRequestCode, DealKind, PatchOp, Problem, Referral, ReferralStatus, ReferralSubstatus,
    Stage, validate_new_deal,
};

use super::path::FieldPath;
use super::schema;
use super::stages::StageReading;
use super::transform::ConvertError;
use super::value::{
    is_empty, loosely_same, same, stable_hash, stable_hash_of_map, stable_hash_of_pairs,
};
use super::{CrmRecord, EmptyPolicy, FieldDirection, FieldRule, Mapping};

/// CRM fields to write, and the values that could not be converted (left out).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CrmWrite {
    pub record: CrmRecord,
    pub problems: Vec<Problem>,
}

/// What a CRM record asks of the referral.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// JSON Patch on mapped paths only (`add`/`replace`); empty when the deal
    /// cannot be edited in its current stage.
    pub patch: Vec<PatchOp>,
    /// The CRM's stage values read relative to the current stage.
    pub stage: StageReading,
    /// Changes the CRM made that the current stage does not allow
    /// (archived deals; received deals not being accepted; co-sell and
    /// visibility, which never go back).
    pub withheld: Vec<PatchOp>,
    /// `Some(CoSell)` when the CRM now asks Microsoft for help on a private deal
    /// (the patch then also sets `type` and the share-with-sellers consent;
    /// `target` is read-only: Microsoft joins through its own referral).
    pub kind_change: Option<DealKind>,
    /// With `kind_change`: the draft of the Microsoft-targeted referral
    /// (the referral as patched, with the CRM's customer contact, consent
    /// and notes for Microsoft), checked as a co-sell create is.
    pub invitation: Option<Referral>,
    /// CRM values that could not be converted; their fields are left out.
    pub problems: Vec<Problem>,
}

/// An outbound deal built from a flagged CRM record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeal {
    /// The create body (`id` empty).
    pub referral: Referral,
    pub kind: DealKind,
    /// Conversion problems and every rule of a new deal it breaks
    /// ([`validate_new_deal`]); the deal may be created only when empty.
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    PartnerCenter,
    Crm,
}

/// How one field that differs between the two sides was settled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDecision {
    pub path: String,
    pub crm_field: String,
    pub winner: Side,
}

/// The writes that bring both sides in step after edits on both.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resolution {
    /// Fields to write to the CRM (Partner Center won).
    pub crm_updates: CrmRecord,
    /// Patch for Partner Center (the CRM won), empty when the stage allows no edit.
    pub patch: Vec<PatchOp>,
    pub withheld: Vec<PatchOp>,
    pub decisions: Vec<FieldDecision>,
    pub problems: Vec<Problem>,
}

enum Desired {
    /// Nothing to write (source not read, or empty with `empty = "keep"`).
    Skip,
    Set(Value),
    Fail(ConvertError),
}

const ASSISTANCE: &str = "inviteContext.assistanceRequestCode";
const SHARE_WITH_SELLERS: &str = "consent.consentToShareReferralWithMicrosoftSellers";

fn problem(path: &str, reason: impl Into<String>) -> Problem {
    Problem {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read_pc(referral: &Value, path: &str) -> Option<Value> {
    FieldPath::parse(path).ok()?.read(referral)
}

fn field_type(rule: &FieldRule) -> Option<schema::FieldType> {
    schema::lookup(&rule.path).ok().map(|s| s.ty)
}

/// The stage of a referral JSON, from its status and substatus.
pub fn stage_of(referral: &Value) -> Option<Stage> {
    let status = ReferralStatus::parse(referral.get("status")?.as_str()?);
    let sub = ReferralSubstatus::parse(referral.get("substatus")?.as_str()?);
    Stage::from_api(&status, &sub)
}

fn requests_help(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|s| AssistanceRequestCode::parse(s.trim()).requests_help())
}

impl Mapping {
    /// The value a rule writes to its CRM field, from the referral.
    fn desired_crm(&self, rule: &FieldRule, referral: &Value) -> Desired {
        let source = match rule.template() {
            Some(t) if rule.direction == FieldDirection::ToCrm => {
                t.render(|p| read_pc(referral, p)).map(Value::String)
            }
            _ => rule.path.read(referral),
        };
        let source = if is_empty(source.as_ref()) {
            rule.default.clone()
        } else {
            source
        };
        match source {
            None => match rule.empty {
                EmptyPolicy::Clear => Desired::Set(Value::Null),
                EmptyPolicy::Keep => Desired::Skip,
            },
            Some(v) if rule.template().is_some() => Desired::Set(v),
            Some(v) => match rule.conversion.to_crm(&v) {
                Ok(out) => Desired::Set(out),
                Err(m) => Desired::Fail(m),
            },
        }
    }

    /// The value a rule writes at its Partner Center path, from the CRM record.
    /// A CRM field missing from the record (not read) gives `Skip`.
    fn desired_pc(&self, rule: &FieldRule, crm: &CrmRecord) -> Desired {
        let ty = field_type(rule);
        let source = match (rule.template(), &rule.crm) {
            (Some(t), _) if rule.direction == FieldDirection::ToPartnerCenter => {
                if !t.fields().any(|f| crm.contains_key(f)) {
                    return Desired::Skip;
                }
                t.render(|f| crm.get(f).cloned()).map(Value::String)
            }
            (_, Some(field)) => match crm.get(field) {
                None => return Desired::Skip,
                Some(v) => Some(v.clone()),
            },
            _ => return Desired::Skip,
        };
        let converted = match source {
            Some(v) if !is_empty(Some(&v)) => {
                if rule.template().is_some() {
                    Some(v)
                } else {
                    match rule.conversion.to_pc(&v, ty) {
                        Ok(out) if !is_empty(Some(&out)) => Some(out),
                        Ok(_) => None,
                        Err(m) => return Desired::Fail(m),
                    }
                }
            }
            _ => None,
        };
        match converted.or_else(|| rule.default.clone()) {
            Some(v) => match ty {
                Some(ty) if rule.path.wildcards() == 0 => match super::transform::coerce(&v, ty) {
                    Ok(v) => Desired::Set(v),
                    Err(m) => Desired::Fail(m),
                },
                _ => Desired::Set(v),
            },
            None => match rule.empty {
                EmptyPolicy::Clear => Desired::Set(Value::Null),
                EmptyPolicy::Keep => Desired::Skip,
            },
        }
    }

    /// Whether the two sides already agree on a rule's field. Compared in
    /// both representations, so lossy transforms (a date-time read as a date)
    /// never look like a change.
    fn in_step(&self, rule: &FieldRule, referral: &Value, crm: &CrmRecord) -> bool {
        let pc = rule.path.read(referral);
        if let Some(field) = &rule.crm
            && let Some(crm_v) = crm.get(field)
        {
            if rule.default.is_none() && is_empty(pc.as_ref()) && is_empty(Some(crm_v)) {
                return true;
            }
            if let Desired::Set(v) = self.desired_crm(rule, referral)
                && (loosely_same(&v, crm_v) || (v.is_null() && is_empty(Some(crm_v))))
            {
                return true;
            }
        }
        match self.desired_pc(rule, crm) {
            Desired::Set(v) => {
                same(&v, pc.as_ref().unwrap_or(&Value::Null))
                    || (v.is_null() && is_empty(pc.as_ref()))
            }
            Desired::Skip => true,
            Desired::Fail(_) => false,
        }
    }

    /// Referral → CRM fields: every mapped field (nulls where the referral has
    /// none, unless `empty = "keep"`), the external id, the sync flag, the
    /// referral link, the stage values and, for closed stages, the reason.
    /// Values that cannot be converted are left out; see [`Mapping::to_crm_report`].
    pub fn to_crm(&self, referral: &Value, stage: Stage) -> CrmRecord {
        self.to_crm_report(referral, stage).record
    }

    /// [`Mapping::to_crm`] with the problems found on the way.
    pub fn to_crm_report(&self, referral: &Value, stage: Stage) -> CrmWrite {
        let mut out = CrmWrite::default();
        if let Some(id) = referral
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            out.record
                .insert(self.external_id.clone(), Value::String(id.to_owned()));
        }
        if let Some(flag) = &self.sync_flag {
            out.record.insert(flag.clone(), Value::Bool(true));
        }
        if let (Some(field), Some(url)) = (&self.link_field, &self.link_url)
            && let Some(link) = url.render(|p| read_pc(referral, p))
        {
            out.record.insert(field.clone(), Value::String(link));
        }
        for rule in self.fields.iter().filter(|r| r.direction.writes_crm()) {
            let Some(field) = &rule.crm else { continue };
            match self.desired_crm(rule, referral) {
                Desired::Set(v) => {
                    out.record.insert(field.clone(), v);
                }
                Desired::Skip => {}
                Desired::Fail(m) => out.problems.push(problem(
                    rule.path.as_str(),
                    format!("not written to {field}: {m}"),
                )),
            }
        }
        if let Some(pattern) = self.stages.pattern(stage) {
            for (field, v) in pattern.written() {
                out.record.insert(field.to_owned(), v.clone());
            }
        }
        if let Some(reason_field) = &self.stages.reason_field
            && matches!(stage, Stage::Lost | Stage::Declined | Stage::Expired)
            && let Some(reason) = referral.get("statusReason").and_then(Value::as_str)
            && !reason.trim().is_empty()
        {
            out.record
                .insert(reason_field.clone(), Value::String(reason.to_owned()));
        }
        if let Some(field) = &self.status.answer_by {
            // Only a received referral has a deadline; any other stage clears it.
            let due = referral
                .get(super::ANSWER_BY_KEY)
                .filter(|v| stage == Stage::Received && !is_empty(Some(v)))
                .cloned()
                .unwrap_or(Value::Null);
            out.record.insert(field.clone(), due);
        }
        if let Some(field) = &self.status.microsoft_engagement
            && let Some(state) = referral
                .get(super::ENGAGEMENT_KEY)
                .filter(|v| !is_empty(Some(v)))
        {
            out.record.insert(field.clone(), state.clone());
        }
        out
    }

    /// The fields of [`Mapping::to_crm`] that differ from the CRM's current
    /// record: nothing when the two are in step. Stage values are written only
    /// when the record does not already show the stage (a seller's own open
    /// stage on an accepted deal is left alone).
    pub fn crm_update(&self, referral: &Value, stage: Stage, current: &CrmRecord) -> CrmWrite {
        let mut full = self.to_crm_report(referral, stage);
        if self.stages.shows(current, stage)
            && let Some(pattern) = self.stages.pattern(stage)
        {
            for (field, _) in &pattern.fields {
                full.record.remove(field);
            }
        }
        let in_step: Vec<String> = self
            .fields
            .iter()
            .filter(|r| r.direction.writes_crm())
            .filter(|r| self.in_step(r, referral, current))
            .filter_map(|r| r.crm.clone())
            .collect();
        full.record.retain(|field, v| {
            if in_step.contains(field) {
                return false;
            }
            match current.get(field) {
                Some(cur) => !(loosely_same(cur, v) || (v.is_null() && is_empty(Some(cur)))),
                None => !v.is_null(),
            }
        });
        full
    }

    /// CRM record → changes to propose to Partner Center, relative to the
    /// referral as it is now and its current stage.
    pub fn proposed_changes(
        &self,
        crm: &CrmRecord,
        current_referral: &Value,
        current_stage: Stage,
    ) -> Proposal {
        let mut doc = current_referral.clone();
        let mut patch = Vec::new();
        let mut withheld = Vec::new();
        let mut problems = Vec::new();
        for rule in self
            .fields
            .iter()
            .filter(|r| r.direction.writes_partner_center() && !r.create_only)
        {
            if self.in_step(rule, current_referral, crm) {
                continue;
            }
            let v = match self.desired_pc(rule, crm) {
                Desired::Set(v) => v,
                Desired::Skip => continue,
                Desired::Fail(m) => {
                    problems.push(problem(
                        rule.path.as_str(),
                        format!(
                            "{} not sent: {m}",
                            rule.crm.as_deref().unwrap_or("template")
                        ),
                    ));
                    continue;
                }
            };
            let path = rule.path.as_str();
            let current = rule.path.read(current_referral);
            let one_way_back =
                (path == ASSISTANCE && requests_help(current.as_ref()) && !requests_help(Some(&v)))
                    || (path == SHARE_WITH_SELLERS
                        && current == Some(Value::Bool(true))
                        && v != Value::Bool(true));
            if one_way_back {
                let mut scratch = doc.clone();
                rule.path.write_with_patch(&mut scratch, v, &mut withheld);
                continue;
            }
            rule.path.write_with_patch(&mut doc, v, &mut patch);
        }

        let stage = if self.stages.fields().is_empty() {
            StageReading::Unchanged
        } else {
            self.stages.read(crm, current_stage)
        };

        let mut kind_change = None;
        let mut invitation = None;
        let private_now = Referral::from_json(current_referral.clone())
            .map(|r| DealKind::of(&r) == DealKind::Private)
            .unwrap_or(false);
        if private_now
            && !current_stage.is_archived()
            && requests_help(read_pc(&doc, ASSISTANCE).as_ref())
        {
            kind_change = Some(DealKind::CoSell);
            // What co-sell needs that is otherwise sent only at creation (notes to Microsoft).
            for rule in self.fields.iter().filter(|r| {
                r.create_only
                    && r.direction.writes_partner_center()
                    && r.path.as_str().starts_with("inviteContext.")
            }) {
                if is_empty(rule.path.read(&doc).as_ref())
                    && let Desired::Set(v) = self.desired_pc(rule, crm)
                    && !v.is_null()
                {
                    rule.path.write_with_patch(&mut doc, v, &mut patch);
                }
            }
            upgrade_to_co_sell(&mut doc, &mut patch);
            match self.co_sell_invitation(crm, &doc) {
                Ok(draft) => invitation = Some(draft),
                Err(found) => {
                    // Nothing of the upgrade is sent until the deal can be co-sell.
                    problems.extend(found);
                    kind_change = None;
                    patch.retain(|op| !is_upgrade_path(&op.path));
                }
            }
        }

        let editable = match current_stage {
            Stage::Accepted => true,
            Stage::Received => stage == StageReading::Accept,
            _ => false,
        };
        if !editable {
            withheld.append(&mut patch);
            kind_change = None;
            invitation = None;
        }
        Proposal {
            patch,
            stage,
            withheld,
            kind_change,
            invitation,
            problems,
        }
    }

    /// The Microsoft-targeted referral of a private → co-sell upgrade: the
    /// referral as patched (`upgraded`), with what the CRM holds that Partner
    /// Center was given only at creation — the customer contact, the
    /// customer's consent to share it, notes for Microsoft. Checked as a
    /// co-sell create is; every problem at once.
    pub fn co_sell_invitation(
        &self,
        crm: &CrmRecord,
        upgraded: &Value,
    ) -> Result<Referral, Vec<Problem>> {
        let from_crm = self.new_deal(crm).referral.to_json();
        let mut doc = upgraded.clone();
        let mut fill = |path: &str| {
            if let Ok(p) = FieldPath::parse(path)
                && is_empty(p.read(&doc).as_ref())
                && let Some(v) = p.read(&from_crm).filter(|v| !is_empty(Some(v)))
            {
                p.write(&mut doc, v);
            }
        };
        fill("customerProfile.team");
        fill("consent.consentToToShareInfoWithOthers");
        fill(ASSISTANCE);
        fill("inviteContext.notes");
        let referral = Referral::from_json(doc).map_err(|e| vec![problem("", e.reason)])?;
        let problems: Vec<Problem> = validate_new_deal(&referral)
            .into_iter()
            .map(|p| Problem {
                reason: format!("asking Microsoft for help: {}", p.reason),
                ..p
            })
            .collect();
        if problems.is_empty() {
            Ok(referral)
        } else {
            Err(problems)
        }
    }

    /// Builds an outbound deal from a flagged CRM record: constants first,
    /// then every field the CRM feeds. A non-empty assistance request code
    /// makes it co-sell (type `Shared`, shared with Microsoft sellers, the
    /// Microsoft target); otherwise it is private pipeline (`Independent`).
    pub fn new_deal(&self, crm: &CrmRecord) -> NewDeal {
        let mut doc = json!({});
        let mut problems = Vec::new();
        for c in self.constants.iter().filter(|c| c.path.wildcards() == 0) {
            c.path.write(&mut doc, c.value.clone());
        }
        for rule in self
            .fields
            .iter()
            .filter(|r| r.direction.writes_partner_center())
        {
            match self.desired_pc(rule, crm) {
                Desired::Set(v) if !v.is_null() => rule.path.write(&mut doc, v),
                Desired::Set(_) | Desired::Skip => {}
                Desired::Fail(m) => problems.push(problem(
                    rule.path.as_str(),
                    format!("{}: {m}", rule.crm.as_deref().unwrap_or("template")),
                )),
            }
        }
        for c in self.constants.iter().filter(|c| c.path.wildcards() > 0) {
            c.path.write(&mut doc, c.value.clone());
        }
        self.linked_contact(crm, &mut doc);
        let kind = if requests_help(read_pc(&doc, ASSISTANCE).as_ref()) {
            let mut ignored = Vec::new();
            upgrade_to_co_sell(&mut doc, &mut ignored);
            DealKind::CoSell
        } else {
            // Nothing to invite Microsoft to: notes for Microsoft wait for an upgrade.
            if let Value::Object(m) = &mut doc
                && let Some(Value::Object(ctx)) = m.get_mut("inviteContext")
            {
                ctx.remove("notes");
                if ctx.is_empty() {
                    m.remove("inviteContext");
                }
            }
            FieldPath::parse("type")
                .map(|p| p.write(&mut doc, json!("Independent")))
                .ok();
            if read_pc(&doc, SHARE_WITH_SELLERS).is_none() {
                FieldPath::parse(SHARE_WITH_SELLERS)
                    .map(|p| p.write(&mut doc, json!(false)))
                    .ok();
            }
            DealKind::Private
        };
        if let Value::Object(m) = &mut doc {
            m.insert("id".into(), Value::String(String::new()));
        }
        let referral = match Referral::from_json(doc) {
            Ok(r) => r,
            Err(e) => {
                problems.push(problem("", e.reason));
                Referral::default()
            }
        };
        problems.extend(validate_new_deal(&referral));
        NewDeal {
            referral,
            kind,
            problems,
        }
    }

    /// `customer_contact = "record"`: the contact linked to the opportunity
    /// becomes the customer contact of a co-sell request when the mapped
    /// contact fields left it empty (no email and no last name).
    fn linked_contact(&self, crm: &CrmRecord, doc: &mut Value) {
        // Only a co-sell request needs it: a private deal is not refused for
        // a linked contact Partner Center would not take.
        if self.status.customer_contact != super::ContactMode::Record
            || !requests_help(read_pc(doc, ASSISTANCE).as_ref())
        {
            return;
        }
        let Some(Value::Object(linked)) = crm.get(super::CONTACT_KEY) else {
            return;
        };
        let filled = |path: &str| {
            read_pc(doc, path)
                .as_ref()
                .and_then(Value::as_str)
                .is_some_and(|s| !s.trim().is_empty())
        };
        if filled("customerProfile.team[0].email") || filled("customerProfile.team[0].lastName") {
            return;
        }
        for key in ["firstName", "lastName", "email", "phoneNumber"] {
            let Some(v) = linked
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
            else {
                continue;
            };
            if let Ok(p) = FieldPath::parse(&format!("customerProfile.team[0].{key}")) {
                p.write(doc, Value::String(v.to_owned()));
            }
        }
    }

    /// Whether a CRM record asks for a new outbound deal: sync flag set and no referral id yet.
    pub fn wants_new_deal(&self, crm: &CrmRecord) -> bool {
        let flagged = self
            .sync_flag
            .as_ref()
            .and_then(|f| crm.get(f))
            .is_some_and(|v| {
                matches!(
                    super::transform::coerce(v, schema::FieldType::Bool),
                    Ok(Value::Bool(true))
                )
            });
        flagged && self.referral_id(crm).is_none()
    }

    /// The referral id a CRM record holds, if any.
    pub fn referral_id<'a>(&self, crm: &'a CrmRecord) -> Option<&'a str> {
        crm.get(&self.external_id)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The CRM write that shows problems to the seller (or clears them when
    /// `problems` is empty); `None` without an `error_field`.
    pub fn error_update(&self, problems: &[Problem]) -> Option<CrmRecord> {
        let field = self.error_field.as_ref()?;
        let value = if problems.is_empty() {
            Value::Null
        } else {
            Value::String(describe_problems(problems))
        };
        let mut m = Map::new();
        m.insert(field.clone(), value);
        Some(m)
    }

    /// The values of a referral that matter to the CRM, in CRM form (what
    /// [`Mapping::to_crm`] would write, plus the raw status when it reads as no stage).
    pub fn pc_projection(&self, referral: &Value) -> CrmRecord {
        match stage_of(referral) {
            Some(stage) => self.to_crm(referral, stage),
            None => {
                let mut m = self.to_crm(referral, Stage::Accepted);
                for f in self.stages.fields() {
                    m.remove(f);
                }
                m.insert(
                    "$status".into(),
                    referral.get("status").cloned().unwrap_or(Value::Null),
                );
                m.insert(
                    "$substatus".into(),
                    referral.get("substatus").cloned().unwrap_or(Value::Null),
                );
                m
            }
        }
    }

    /// Stable hash of [`Mapping::pc_projection`]: unmapped fields never change it.
    pub fn pc_projection_hash(&self, referral: &Value) -> String {
        stable_hash(&Value::Object(self.pc_projection(referral)))
    }

    /// [`Mapping::to_crm`] and [`Mapping::pc_projection_hash`] of one
    /// referral, mapped once: when the referral's own status gives `stage`,
    /// its projection is that record.
    pub fn to_crm_with_pc_hash(&self, referral: &Value, stage: Stage) -> (CrmRecord, String) {
        let record = self.to_crm(referral, stage);
        let hash = if stage_of(referral) == Some(stage) {
            stable_hash_of_map(&record)
        } else {
            self.pc_projection_hash(referral)
        };
        (record, hash)
    }

    /// The values of a CRM record that matter to Partner Center: the fields
    /// the mapping reads into the referral, the stage fields, the reason,
    /// the sync flag and the external id.
    pub fn crm_projection(&self, crm: &CrmRecord) -> CrmRecord {
        let mut fields: Vec<&str> = vec![self.external_id.as_str()];
        fields.extend(self.sync_flag.as_deref());
        for rule in self
            .fields
            .iter()
            .filter(|r| r.direction.writes_partner_center())
        {
            fields.extend(rule.crm.as_deref());
            if let Some(t) = rule.template() {
                fields.extend(t.fields());
            }
        }
        fields.extend(self.stages.fields());
        let mut out = Map::new();
        for f in fields {
            if !out.contains_key(f) {
                out.insert(f.to_owned(), crm.get(f).cloned().unwrap_or(Value::Null));
            }
        }
        out
    }

    /// The CRM fields whose values can reach Partner Center: the external
    /// id, the sync flag, every field a rule sends there, the stage fields.
    fn crm_fields_for_partner_center(&self) -> Vec<&str> {
        let mut fields: Vec<&str> = vec![self.external_id.as_str()];
        fields.extend(self.sync_flag.as_deref());
        for rule in self
            .fields
            .iter()
            .filter(|r| r.direction.writes_partner_center())
        {
            fields.extend(rule.crm.as_deref());
            if let Some(t) = rule.template() {
                fields.extend(t.fields());
            }
        }
        fields.extend(self.stages.fields());
        fields
    }

    /// Whether a value of this CRM field can reach Partner Center.
    pub fn sends_to_partner_center(&self, crm_field: &str) -> bool {
        self.crm_fields_for_partner_center().contains(&crm_field)
    }

    /// Stable hash of [`Mapping::crm_projection`].
    pub fn crm_projection_hash(&self, crm: &CrmRecord) -> String {
        // The projection's fields, hashed without copying their values.
        let fields = self.crm_fields_for_partner_center();
        let mut seen = std::collections::HashSet::new();
        let pairs: Vec<(&str, &Value)> = fields
            .into_iter()
            .filter(|f| seen.insert(*f))
            .map(|f| (f, crm.get(f).unwrap_or(&Value::Null)))
            .collect();
        stable_hash_of_pairs(&pairs)
    }

    /// Settles fields that differ after edits on both sides. `both` fields
    /// follow their `owner` (`newest`: the side edited last, Partner Center on
    /// a tie or when a time is unknown); one-way fields follow their direction.
    pub fn resolve_conflict(
        &self,
        referral: &Value,
        stage: Stage,
        crm: &CrmRecord,
        pc_modified: Option<DateTime<Utc>>,
        crm_modified: Option<DateTime<Utc>>,
    ) -> Resolution {
        let mut out = Resolution::default();
        let mut doc = referral.clone();
        let mut patch = Vec::new();
        for rule in &self.fields {
            if self.in_step(rule, referral, crm) {
                continue;
            }
            let winner = match rule.direction {
                FieldDirection::ToCrm => Side::PartnerCenter,
                FieldDirection::ToPartnerCenter => Side::Crm,
                FieldDirection::Both => rule.owner_side(pc_modified, crm_modified),
            };
            if winner == Side::Crm && rule.create_only {
                continue;
            }
            let crm_field = rule.crm.clone().unwrap_or_default();
            match winner {
                Side::PartnerCenter => {
                    let Some(field) = &rule.crm else { continue };
                    match self.desired_crm(rule, referral) {
                        Desired::Set(v) => {
                            out.crm_updates.insert(field.clone(), v);
                        }
                        Desired::Skip => continue,
                        Desired::Fail(m) => {
                            out.problems
                                .push(problem(rule.path.as_str(), m.to_string()));
                            continue;
                        }
                    }
                }
                Side::Crm => match self.desired_pc(rule, crm) {
                    Desired::Set(v) => rule.path.write_with_patch(&mut doc, v, &mut patch),
                    Desired::Skip => continue,
                    Desired::Fail(m) => {
                        out.problems
                            .push(problem(rule.path.as_str(), m.to_string()));
                        continue;
                    }
                },
            }
            out.decisions.push(FieldDecision {
                path: rule.path.as_str().to_owned(),
                crm_field,
                winner,
            });
        }
        if stage == Stage::Accepted {
            out.patch = patch;
        } else {
            out.withheld = patch;
        }
        out
    }
}

/// Adds what makes the partner's own referral co-sell: type `Shared` and
/// shared with Microsoft sellers. Its `target` is read-only (partner-center-api
/// §3.2): Microsoft is invited by a referral of its own in the engagement.
fn upgrade_to_co_sell(doc: &mut Value, ops: &mut Vec<PatchOp>) {
    let set = |doc: &mut Value, ops: &mut Vec<PatchOp>, path: &str, v: Value| {
        if let Ok(p) = FieldPath::parse(path)
            && !p.read(doc).is_some_and(|cur| same(&cur, &v))
        {
            p.write_with_patch(doc, v, ops);
        }
    };
    set(doc, ops, "type", json!("Shared"));
    set(doc, ops, SHARE_WITH_SELLERS, json!(true));
}

/// Whether a patch path belongs to a private → co-sell upgrade (`type`,
/// the share-with-sellers consent, the invite context).
pub fn is_upgrade_path(path: &str) -> bool {
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    under("/type")
        || under("/consent/consentToShareReferralWithMicrosoftSellers")
        || under("/inviteContext")
}
