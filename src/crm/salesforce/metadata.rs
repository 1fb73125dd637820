//! `config validate --online`: the object's describe has every mapped field
//! with a compatible type, the external id field is an External ID, and
//! every mapped stage exists in `OpportunityStage`. Fields many orgs lack
//! (see [`super::schema::org_dependent`]) are notes: the sync does without.

use serde_json::Value;

use super::schema::org_dependent;
use super::{OpportunityStageInfo, SalesforceCrm};
use crate::config::AccountMatch;
use crate::crm::{CrmError, CrmObjectSpec, MetadataProblem};

/// What kind of value a mapped field must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    Number,
    Date,
    DateTime,
    Boolean,
    /// A lookup (record Id).
    Reference,
}

impl FieldKind {
    /// Whether a Salesforce describe `type` can hold this kind.
    pub fn accepts(self, sf_type: &str) -> bool {
        match self {
            FieldKind::Text => matches!(
                sf_type,
                "string"
                    | "textarea"
                    | "picklist"
                    | "multipicklist"
                    | "email"
                    | "phone"
                    | "url"
                    | "combobox"
                    | "encryptedstring"
                    | "id"
                    | "reference"
            ),
            FieldKind::Number => {
                matches!(sf_type, "double" | "currency" | "percent" | "int" | "long")
            }
            FieldKind::Date => matches!(sf_type, "date" | "datetime"),
            FieldKind::DateTime => sf_type == "datetime",
            FieldKind::Boolean => sf_type == "boolean",
            FieldKind::Reference => matches!(sf_type, "reference" | "id"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            FieldKind::Text => "text",
            FieldKind::Number => "number",
            FieldKind::Date => "date",
            FieldKind::DateTime => "date/time",
            FieldKind::Boolean => "checkbox",
            FieldKind::Reference => "lookup",
        }
    }

    fn of_value(v: &Value) -> Option<FieldKind> {
        match v {
            Value::String(_) => Some(FieldKind::Text),
            Value::Number(_) => Some(FieldKind::Number),
            Value::Bool(_) => Some(FieldKind::Boolean),
            _ => None,
        }
    }
}

/// Length of a Partner Center referral id (a GUID).
const REFERRAL_ID_LENGTH: u64 = 36;

/// Mapped stage names (`StageName` values) missing from, or inactive in, the org.
pub(super) fn stage_problems(
    spec: &CrmObjectSpec,
    stages: &[OpportunityStageInfo],
) -> Vec<MetadataProblem> {
    let mut out: Vec<MetadataProblem> = Vec::new();
    for (field, value) in &spec.stage_values {
        if !field.eq_ignore_ascii_case("StageName") {
            continue;
        }
        let Some(name) = value.as_str() else {
            out.push(MetadataProblem::error(
                format!("{}.StageName", spec.object),
                format!("stage value {value} is not text"),
            ));
            continue;
        };
        let item = format!("{}.StageName = {name:?}", spec.object);
        if out.iter().any(|p| p.item == item) {
            continue;
        }
        match stages.iter().find(|s| s.api_name == name) {
            Some(s) if !s.is_active => out.push(MetadataProblem::error(
                item,
                "this opportunity stage is inactive in the org",
            )),
            Some(_) => {}
            None => {
                let by_label = stages.iter().find(|s| s.label == name);
                let message = match by_label {
                    Some(s) => format!(
                        "no stage has this API name; the stage labelled {name:?} has the API name {:?}",
                        s.api_name
                    ),
                    None => format!(
                        "no such opportunity stage in the org (it has: {})",
                        stages
                            .iter()
                            .filter(|s| s.is_active)
                            .map(|s| s.api_name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                out.push(MetadataProblem::error(item, message));
            }
        }
    }
    out
}

impl SalesforceCrm {
    pub(super) async fn metadata_problems(&self) -> Result<Vec<MetadataProblem>, CrmError> {
        let spec = &self.spec;
        let object = &spec.object;
        let fields = self.describe(object).await?;
        let find = |name: &str| fields.iter().find(|f| f.name.eq_ignore_ascii_case(name));
        let mut out = Vec::new();
        let mut notes = Vec::new();
        // Every mapped field exists (relationship paths are checked by the query
        // itself); a standard field many orgs lack is a note: the sync skips it.
        for name in spec.select_fields() {
            if name.contains('.') || find(&name).is_some() {
                continue;
            }
            match org_dependent(object, &name) {
                Some(why) if !name.eq_ignore_ascii_case(&spec.external_id_field) => {
                    notes.push(MetadataProblem::note(
                        format!("{object}.{name}"),
                        format!("the org has no such field ({why}): the sync neither reads nor writes it; remove it from the mapping to silence this note"),
                    ))
                }
                _ => out.push(MetadataProblem::error(
                    format!("{object}.{name}"),
                    "no such field on the object (check the API name and field-level security for the integration user)",
                )),
            }
        }
        let mut problem = |item: &str, message: String| {
            out.push(MetadataProblem::error(format!("{object}.{item}"), message))
        };

        let ext = &spec.external_id_field;
        if let Some(f) = find(ext) {
            if !f.external_id {
                problem(
                    ext,
                    "the field is not marked External ID; upserts by referral id need it".into(),
                );
            }
            if f.sf_type != "string" {
                problem(
                    ext,
                    format!(
                        "the field is of type {}; a referral id needs Text",
                        f.sf_type
                    ),
                );
            } else if f.length.is_some_and(|l| l < REFERRAL_ID_LENGTH) {
                problem(
                    ext,
                    format!(
                        "the field holds {} characters; a referral id needs {REFERRAL_ID_LENGTH}",
                        f.length.unwrap_or_default()
                    ),
                );
            }
            if !f.createable || !f.updateable {
                problem(ext, "the integration user cannot write this field".into());
            }
        }
        if let Some(flag) = &spec.sync_flag_field
            && let Some(f) = find(flag)
            && !FieldKind::Boolean.accepts(&f.sf_type)
        {
            problem(
                flag,
                format!(
                    "the sync flag is of type {}; it must be a checkbox",
                    f.sf_type
                ),
            );
        }
        if let Some(err_field) = &spec.error_field
            && let Some(f) = find(err_field)
        {
            if !matches!(f.sf_type.as_str(), "string" | "textarea") {
                problem(
                    err_field,
                    format!("the error field is of type {}; it must be text", f.sf_type),
                );
            }
            if !f.updateable {
                problem(
                    err_field,
                    "the integration user cannot write the error field".into(),
                );
            }
        }
        for (name, kind) in &self.field_kinds {
            if let Some(f) = find(name)
                && !kind.accepts(&f.sf_type)
            {
                problem(
                    name,
                    format!(
                        "the field is of type {}; the mapping needs {}",
                        f.sf_type,
                        kind.name()
                    ),
                );
            }
        }
        for (name, value) in &spec.stage_values {
            if let (Some(f), Some(kind)) = (find(name), FieldKind::of_value(value))
                && !kind.accepts(&f.sf_type)
            {
                problem(
                    name,
                    format!(
                        "the field is of type {}; the stage mapping gives it {value}",
                        f.sf_type
                    ),
                );
            }
        }
        if find("StageName").is_some()
            || spec
                .stage_values
                .iter()
                .any(|(f, _)| f.eq_ignore_ascii_case("StageName"))
        {
            let stages = self.load_stages().await?;
            out.extend(stage_problems(spec, stages));
        }

        if self.account_match == AccountMatch::DunsThenNamePostalCode && !self.duns_field.is_empty()
        {
            let account = self.describe("Account").await?;
            if !account
                .iter()
                .any(|f| f.name.eq_ignore_ascii_case(&self.duns_field))
            {
                let why = org_dependent("Account", &self.duns_field)
                    .map(|why| format!(" ({why})"))
                    .unwrap_or_default();
                notes.push(MetadataProblem::note(
                    format!("Account.{}", self.duns_field),
                    format!("no such field on Account{why}: customers are matched by name and postal code only; set salesforce.duns_field to your own DUNS field, or to \"\" to silence this note"),
                ));
            }
        }
        out.extend(self.contact_metadata_problems().await);
        out.extend(notes);
        Ok(out)
    }
}
