//! `config validate --online`: the mapping against the org's metadata
//! (`EntityDefinitions(LogicalName='…')/Attributes` and `/Keys`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use serde_json::Value;

use super::client::Call;
use super::{DynamicsCrm, EntityInfo};
use crate::config::AccountMatch;
use crate::crm::{CrmError, MetadataProblem};

/// The attribute a mapped name refers to: `_x_value` and `x@odata.bind`
/// both name attribute `x`.
fn attribute_of(field: &str) -> String {
    if let Some(inner) = field
        .strip_prefix('_')
        .and_then(|f| f.strip_suffix("_value"))
    {
        return inner.to_owned();
    }
    match field.split_once('@') {
        Some((nav, _)) => nav.to_ascii_lowercase(),
        None => field.to_owned(),
    }
}

impl DynamicsCrm {
    async fn get_json(
        &self,
        relative: &str,
        query: &[(&str, String)],
    ) -> Result<Option<Value>, CrmError> {
        let call = Call::get(self.url(relative, query)?);
        match self.api.call(&call).await {
            Ok(answer) => answer.json(&call).map(Some),
            Err(CrmError::Http(e)) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn check(&self, duns_usable: bool) -> Result<Vec<MetadataProblem>, CrmError> {
        let table = self.table().to_owned();
        let mut problems = Vec::new();
        let problem = |item: String, message: String| MetadataProblem::error(item, message);

        let entity: EntityInfo = match self.entity().await {
            Ok(e) => e.clone(),
            Err(CrmError::Invalid(message)) => {
                return Ok(vec![problem(table, message)]);
            }
            Err(e) => return Err(e),
        };
        if self.change_tracking && entity.change_tracking != Some(true) {
            problems.push(problem(
                format!("{table} (change tracking)"),
                "dynamics.change_tracking is on but the table does not track changes: enable \"Track changes\" on it, or turn the setting off".into(),
            ));
        }

        let base = self.metadata_path(&table);
        let attributes = self
            .get_json(
                &format!("{base}/Attributes"),
                &[("$select", "LogicalName,AttributeType".into())],
            )
            .await?
            .unwrap_or(Value::Null);
        let types: HashMap<String, String> = attributes
            .get("value")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((
                    a.get("LogicalName")?.as_str()?.to_owned(),
                    a.get("AttributeType")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                ))
            })
            .collect();
        for field in self.spec.select_fields() {
            let attribute = attribute_of(&field);
            if !types.contains_key(&attribute) {
                problems.push(problem(
                    format!("{table}.{field}"),
                    format!("no column `{attribute}` in the Dataverse table `{table}`"),
                ));
            }
        }

        let keys = self
            .get_json(
                &format!("{base}/Keys"),
                &[(
                    "$select",
                    "LogicalName,KeyAttributes,EntityKeyIndexStatus".into(),
                )],
            )
            .await?
            .unwrap_or(Value::Null);
        let ext = &self.spec.external_id_field;
        let key = keys
            .get("value")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|k| {
                let attrs: Vec<&str> = k
                    .get("KeyAttributes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                attrs.len() == 1 && attrs[0].eq_ignore_ascii_case(ext)
            });
        match key {
            None => problems.push(problem(
                format!("{table}.{ext} (alternate key)"),
                format!("no alternate key on `{ext}` alone: upserts by referral id need one"),
            )),
            Some(k) => {
                let status = k
                    .get("EntityKeyIndexStatus")
                    .and_then(Value::as_str)
                    .unwrap_or("Active");
                if !status.eq_ignore_ascii_case("Active") {
                    problems.push(problem(
                        format!("{table}.{ext} (alternate key)"),
                        format!(
                            "the alternate key's index is {status}: upserts fail until it is Active"
                        ),
                    ));
                }
            }
        }

        // Option values the stage mapping uses.
        let mut wanted: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (field, value) in &self.spec.stage_values {
            wanted.entry(field.clone()).or_default().push(value.clone());
        }
        for (field, values) in wanted {
            let cast = match types.get(&field).map(String::as_str) {
                Some("Picklist") => "PicklistAttributeMetadata",
                Some("State") => "StateAttributeMetadata",
                Some("Status") => "StatusAttributeMetadata",
                _ => continue,
            };
            let options = self
                .get_json(
                    &format!(
                        "{base}/Attributes(LogicalName='{field}')/Microsoft.Dynamics.CRM.{cast}"
                    ),
                    &[
                        ("$select", "LogicalName".into()),
                        ("$expand", "OptionSet($select=Options)".into()),
                    ],
                )
                .await?
                .unwrap_or(Value::Null);
            let known: Vec<i64> = options
                .pointer("/OptionSet/Options")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|o| o.get("Value").and_then(Value::as_i64))
                .collect();
            for v in values {
                let ok = v.as_i64().is_some_and(|n| known.contains(&n));
                if !ok {
                    problems.push(problem(
                        format!("{table}.{field} = {v}"),
                        format!("`{field}` has no option with the value {v}"),
                    ));
                }
            }
        }

        if self.account_match == AccountMatch::DunsThenNamePostalCode {
            let found = duns_usable
                && self
                    .get_json(
                        &format!(
                            "{}/Attributes(LogicalName='{}')",
                            self.metadata_path("account"),
                            self.duns_column
                        ),
                        &[("$select", "LogicalName".into())],
                    )
                    .await?
                    .is_some();
            if !found {
                // What the sync would otherwise learn from a refused lookup.
                self.duns_usable.store(false, Ordering::Relaxed);
                problems.push(MetadataProblem::note(
                    format!("account.{}", self.duns_column),
                    "no DUNS column on accounts: customers are matched by name and postal code only (set dynamics.account_match = \"name_postal_code\" to silence this)",
                ));
            }
        }
        problems.extend(self.contact_metadata_problems().await?);
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_bind_names_map_to_their_attribute() {
        assert_eq!(attribute_of("_parentaccountid_value"), "parentaccountid");
        assert_eq!(attribute_of("new_PartnerId@odata.bind"), "new_partnerid");
        assert_eq!(attribute_of("name"), "name");
    }
}
