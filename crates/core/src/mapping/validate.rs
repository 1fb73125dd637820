//! Offline validation of a mapping: paths exist in the Referral model,
//! transforms fit the types, stages complete and unambiguous.

use crate::domain::Stage;

use super::error::{MappingProblem, join_key};
use super::path::FieldPath;
use super::schema::{self, FieldType};
use super::transform::{Transform, coerce};
use super::{FieldDirection, FieldRule, Mapping, Owner};

struct Report<'a> {
    mapping: &'a Mapping,
    out: Vec<MappingProblem>,
}

impl Report<'_> {
    fn push(&mut self, line: Option<usize>, key: String, message: impl ToString) {
        self.out.push(MappingProblem {
            file: self.mapping.file.clone(),
            line,
            key: Some(key),
            message: message.to_string(),
        });
    }

    fn top(&mut self, key: &str, message: impl ToString) {
        let line = self.mapping.line_of_key(key);
        self.push(line, key.to_owned(), message);
    }
}

fn rule_key(rule: &FieldRule, sub: &str) -> String {
    let key = match &rule.copy {
        Some(name) => format!("{}#{name}", rule.path.as_str()),
        None => rule.path.as_str().to_owned(),
    };
    if sub.is_empty() {
        join_key(&["fields", &key])
    } else {
        join_key(&["fields", &key, sub])
    }
}

/// CRM API names: no spaces (labels are not API names), not empty.
fn crm_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        Some("empty CRM field name; expected an API name such as Amount or estimatedvalue".into())
    } else if name.chars().any(char::is_whitespace) {
        Some(format!(
            "{name:?} is not a CRM API name (it has spaces); use the API name, e.g. Customer_Name__c, not the label"
        ))
    } else {
        None
    }
}

impl Mapping {
    /// Checks the mapping offline and returns every problem (empty when it is good).
    pub fn validate(&self) -> Vec<MappingProblem> {
        let mut r = Report {
            mapping: self,
            out: Vec::new(),
        };
        self.check_top(&mut r);
        for rule in &self.fields {
            self.check_rule(rule, &mut r);
        }
        self.check_constants(&mut r);
        self.check_crm_writers(&mut r);
        self.check_stages(&mut r);
        r.out
    }

    fn check_top(&self, r: &mut Report) {
        if self.object.trim().is_empty() {
            r.top("object", "empty; expected the Salesforce sObject (Opportunity) or the Dataverse table (opportunity)");
        }
        let named = [
            ("external_id", Some(&self.external_id)),
            ("sync_flag", self.sync_flag.as_ref()),
            ("error_field", self.error_field.as_ref()),
            ("link_field", self.link_field.as_ref()),
            ("status.answer_by", self.status.answer_by.as_ref()),
            (
                "status.microsoft_engagement",
                self.status.microsoft_engagement.as_ref(),
            ),
        ];
        for (key, v) in named {
            if let Some(m) = v.and_then(|v| crm_name_problem(v)) {
                r.top(key, m);
            }
        }
        match (&self.link_field, &self.link_url) {
            (Some(_), None) => r.top(
                "link_field",
                "link_field needs link_url, the link template, e.g. \"https://…/{id}\"",
            ),
            (None, Some(_)) => r.top(
                "link_url",
                "link_url needs link_field, the CRM field that holds the link",
            ),
            _ => {}
        }
        if let Some(t) = &self.link_url {
            for f in t.fields() {
                if let Some(m) = pc_placeholder_problem(f) {
                    r.top("link_url", m);
                }
            }
        }
    }

    fn check_rule(&self, rule: &FieldRule, r: &mut Report) {
        let line = rule.line;
        if let Some(name) = &rule.copy {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                r.push(
                    line,
                    rule_key(rule, ""),
                    format!("{name:?} after # is not a name; expected letters, digits or _, e.g. \"inviteContext.notes#received\""),
                );
            }
            if rule.direction != FieldDirection::ToCrm {
                r.push(
                    line,
                    rule_key(rule, "direction"),
                    "a second mapping of a path (path#name) only shows the value in another CRM field; use direction = \"to_crm\"",
                );
            }
        }
        let spec = match schema::lookup(&rule.path) {
            Ok(s) => Some(s),
            Err(m) => {
                r.push(line, rule_key(rule, ""), m);
                None
            }
        };
        let to_pc_template =
            rule.template().is_some() && rule.direction == FieldDirection::ToPartnerCenter;
        match (&rule.crm, to_pc_template) {
            (None, false) => r.push(
                line,
                rule_key(rule, "crm"),
                "required key is missing; expected the CRM field's API name",
            ),
            (Some(_), true) => r.push(
                line,
                rule_key(rule, "crm"),
                "a to_partner_center template reads the CRM fields named in it; remove crm",
            ),
            (Some(c), false) => {
                if let Some(m) = crm_name_problem(c) {
                    r.push(line, rule_key(rule, "crm"), m);
                }
            }
            (None, true) => {}
        }
        if let Some(spec) = spec {
            if spec.read_only && rule.direction.writes_partner_center() {
                let hint = match rule.path.as_str() {
                    "status" | "substatus" | "statusReason" => {
                        "the lifecycle is mapped in [stages]".to_owned()
                    }
                    _ => "use direction = \"to_crm\"".to_owned(),
                };
                r.push(
                    line,
                    rule_key(rule, "direction"),
                    format!(
                        "Partner Center sets {} itself and never takes it from the CRM; {hint}",
                        rule.path
                    ),
                );
            }
            self.check_transform(rule, spec.ty, r);
            if let Some(d) = &rule.default {
                let fits = match d {
                    serde_json::Value::Array(items) => {
                        items.iter().all(|i| coerce(i, spec.ty).is_ok())
                    }
                    v => coerce(v, spec.ty).is_ok(),
                };
                if !fits {
                    r.push(
                        line,
                        rule_key(rule, "default"),
                        format!(
                            "{d} does not fit {}, which is {}",
                            rule.path,
                            spec.ty.describe()
                        ),
                    );
                }
            }
        }
        match rule.path.wildcards() {
            0 if rule.conversion.join.is_some() => {
                r.push(line, rule_key(rule, "transform"), "join applies to [*] paths only")
            }
            1 if rule.conversion.join.is_none() => r.push(
                line,
                rule_key(rule, "transform"),
                format!("{} is a list; give transform = {{ join = \";\" }} to hold it in one CRM text field", rule.path),
            ),
            n if n > 1 => r.push(line, rule_key(rule, ""), "a path may have at most one [*]"),
            _ => {}
        }
        let owner_contradicts = matches!(
            (rule.direction, rule.owner),
            (FieldDirection::ToCrm, Some(Owner::Crm | Owner::Newest))
                | (
                    FieldDirection::ToPartnerCenter,
                    Some(Owner::PartnerCenter | Owner::Newest)
                )
        );
        if owner_contradicts {
            r.push(
                line,
                rule_key(rule, "owner"),
                "owner settles edits on both sides and applies to direction = \"both\" only; remove it or use direction = \"both\"",
            );
        }
        if rule.create_only && rule.direction == FieldDirection::ToCrm {
            r.push(
                line,
                rule_key(rule, "create_only"),
                "create_only applies to fields sent to Partner Center; this one is to_crm",
            );
        }
    }

    fn check_transform(&self, rule: &FieldRule, ty: FieldType, r: &mut Report) {
        let line = rule.line;
        let key = rule_key(rule, "transform");
        let needs = |want: &[FieldType]| {
            want.iter()
                .any(|w| std::mem::discriminant(w) == std::mem::discriminant(&ty))
        };
        let misfit = |name: &str| {
            format!(
                "{name} does not fit {}, which is {}",
                rule.path,
                ty.describe()
            )
        };
        match &rule.conversion.transform {
            Transform::Copy => {}
            Transform::Date | Transform::DateTime => {
                if !needs(&[FieldType::DateTime]) {
                    r.push(line, key, misfit("a date transform"));
                }
            }
            Transform::Decimal => {
                if !needs(&[FieldType::Number]) {
                    r.push(line, key, misfit("decimal"));
                }
            }
            Transform::Currency | Transform::Country(_) => {
                if !needs(&[FieldType::Text]) {
                    r.push(line, key, misfit("this transform"));
                }
            }
            Transform::Values(table) => {
                for (pc, _) in &table.entries {
                    let ok = match ty {
                        FieldType::Enum(values) => values().iter().any(|v| v.eq_ignore_ascii_case(pc)),
                        other => coerce(&serde_json::Value::String(pc.clone()), other).is_ok(),
                    };
                    if !ok {
                        let expected = match ty.enum_values() {
                            Some(vs) => format!("expected one of {}", vs.join(", ")),
                            None => format!("expected {}", ty.describe()),
                        };
                        r.push(
                            line,
                            format!("{key}.values.{}", super::error::key_part(pc)),
                            format!("{pc:?} is not a Partner Center value of {}; {expected}", rule.path),
                        );
                    }
                }
                if rule.direction.writes_partner_center() {
                    for (i, (a, va)) in table.entries.iter().enumerate() {
                        for (b, vb) in &table.entries[i + 1..] {
                            if super::value::loosely_same(va, vb) {
                                r.push(
                                    line,
                                    format!("{key}.values"),
                                    format!("{a:?} and {b:?} share the CRM value {va}, so it cannot be read back; make them differ or use direction = \"to_crm\""),
                                );
                            }
                        }
                    }
                }
            }
            Transform::Template(t) => match rule.direction {
                FieldDirection::Both => r.push(
                    line,
                    key,
                    "a template joins several fields into one and cannot be read back; use direction = \"to_crm\" or \"to_partner_center\"",
                ),
                FieldDirection::ToCrm => {
                    for f in t.fields() {
                        if let Some(m) = pc_placeholder_problem(f) {
                            r.push(line, key.clone(), m);
                        }
                    }
                }
                FieldDirection::ToPartnerCenter => {
                    if !needs(&[FieldType::Text]) {
                        r.push(line, key.clone(), misfit("a template (text)"));
                    }
                    for f in t.fields() {
                        if let Some(m) = crm_name_problem(f) {
                            r.push(line, key.clone(), m);
                        }
                    }
                }
            },
        }
    }

    fn check_constants(&self, r: &mut Report) {
        for c in &self.constants {
            let key = join_key(&["constants", c.path.as_str()]);
            match schema::lookup(&c.path) {
                Err(m) => r.push(c.line, key, m),
                Ok(spec) => {
                    if spec.read_only {
                        r.push(
                            c.line,
                            key.clone(),
                            format!(
                                "Partner Center sets {} itself; a new deal cannot carry it",
                                c.path
                            ),
                        );
                    }
                    let fits = match &c.value {
                        serde_json::Value::Array(items) => {
                            c.path.wildcards() == 1
                                && items.iter().all(|i| coerce(i, spec.ty).is_ok())
                        }
                        v => coerce(v, spec.ty).is_ok(),
                    };
                    if !fits {
                        r.push(
                            c.line,
                            key,
                            format!(
                                "{} does not fit {}, which is {}",
                                c.value,
                                c.path,
                                spec.ty.describe()
                            ),
                        );
                    }
                }
            }
            if c.path.wildcards() > 1 {
                r.push(
                    c.line,
                    join_key(&["constants", c.path.as_str()]),
                    "a path may have at most one [*]",
                );
            }
        }
    }

    /// Every CRM field is written by one thing only.
    fn check_crm_writers(&self, r: &mut Report) {
        let mut writers: Vec<(String, String, Option<usize>)> = Vec::new();
        let mut top = |key: &str, field: Option<&String>| {
            if let Some(f) = field {
                writers.push((f.clone(), key.to_owned(), self.line_of_key(key)));
            }
        };
        top("external_id", Some(&self.external_id));
        top("sync_flag", self.sync_flag.as_ref());
        top("error_field", self.error_field.as_ref());
        top("link_field", self.link_field.as_ref());
        top("stages.reason_field", self.stages.reason_field.as_ref());
        top("status.answer_by", self.status.answer_by.as_ref());
        top(
            "status.microsoft_engagement",
            self.status.microsoft_engagement.as_ref(),
        );
        for stage in Stage::ALL {
            if let Some(p) = self.stages.pattern(stage) {
                for (f, _) in &p.fields {
                    if !writers
                        .iter()
                        .any(|(w, k, _)| w == f && k.starts_with("stages."))
                    {
                        let key = format!("stages.{stage}");
                        writers.push((f.clone(), key.clone(), self.line_of_key(&key)));
                    }
                }
            }
        }
        for rule in self.fields.iter().filter(|r| r.direction.writes_crm()) {
            if let Some(c) = &rule.crm {
                writers.push((c.clone(), rule_key(rule, "crm"), rule.line));
            }
        }
        for (i, (field, key, line)) in writers.iter().enumerate() {
            if let Some((_, first, _)) = writers[..i].iter().find(|(f, _, _)| f == field) {
                r.push(
                    *line,
                    key.clone(),
                    format!("CRM field {field} is already written by {first}; each CRM field may be written by one entry only"),
                );
            }
        }
    }

    fn check_stages(&self, r: &mut Report) {
        let st = &self.stages;
        let missing: Vec<&str> = Stage::ALL
            .iter()
            .filter(|s| st.pattern(**s).is_none())
            .map(|s| s.as_str())
            .collect();
        if !missing.is_empty() {
            let line = self.line_of_key("stages");
            r.push(
                line,
                "stages".into(),
                format!(
                    "stage{} {} not mapped; every stage needs CRM values: received, accepted, won, lost, declined, expired",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join(", ")
                ),
            );
        }
        for stage in Stage::ALL {
            if let Some(p) = st.pattern(stage) {
                for (field, _) in &p.fields {
                    if let Some(m) = crm_name_problem(field) {
                        r.push(
                            self.line_of_key(&format!("stages.{stage}")),
                            join_key(&["stages", stage.as_str(), field]),
                            m,
                        );
                    }
                }
            }
        }
        let pair = |a: Stage, b: Stage| match (st.pattern(a), st.pattern(b)) {
            (Some(pa), Some(pb)) => pa.overlaps(pb),
            _ => false,
        };
        let ambiguous = |a: Stage, b: Stage, why: &str, r: &mut Report| {
            if pair(a, b) {
                let key = format!("stages.{b}");
                r.push(
                    self.line_of_key(&key),
                    key,
                    format!("{a} and {b} cannot be told apart (a CRM record can show both); {why}"),
                );
            }
        };
        ambiguous(
            Stage::Received,
            Stage::Accepted,
            "moving a deal out of the on-hold stage is what accepts it",
            r,
        );
        for open in [Stage::Received, Stage::Accepted] {
            for closed in [Stage::Won, Stage::Lost, Stage::Declined, Stage::Expired] {
                ambiguous(open, closed, "an open deal must never read as closed", r);
            }
        }
        for closed in [Stage::Lost, Stage::Declined, Stage::Expired] {
            ambiguous(Stage::Won, closed, "a won deal must never read as lost", r);
        }
        if let Some(open) = &st.open {
            for s in [Stage::Received, Stage::Accepted] {
                if st.pattern(s).is_some_and(|p| !p.overlaps(open)) {
                    let key = format!("stages.{s}");
                    r.push(
                        self.line_of_key(&key),
                        key,
                        format!("{s} does not fit stages.open, so a {s} deal would read as closed"),
                    );
                }
            }
        }
        if let Some(reason) = &st.reason_field
            && let Some(m) = crm_name_problem(reason)
        {
            r.top("stages.reason_field", m);
        }
        let stage_fields = st.fields();
        for rule in self
            .fields
            .iter()
            .filter(|r| r.direction.writes_partner_center())
        {
            if let Some(c) = &rule.crm
                && stage_fields.contains(&c.as_str())
                && Some(c) != st.reason_field.as_ref()
            {
                r.push(
                    rule.line,
                    rule_key(rule, "crm"),
                    format!("{c} holds the stage ([stages]); it cannot also be a field"),
                );
            }
        }
    }
}

fn pc_placeholder_problem(f: &str) -> Option<String> {
    match FieldPath::parse(f) {
        Err(m) => Some(format!("template field {{{f}}}: {m}")),
        Ok(p) if p.wildcards() > 0 => Some(format!(
            "template field {{{f}}}: [*] is not allowed in a template"
        )),
        Ok(p) => schema::lookup(&p)
            .err()
            .map(|m| format!("template field {{{f}}}: {m}")),
    }
}
