//! What this org has: the fields of each sObject, learnt from `describe`
//! once per run (and again when Salesforce refuses a field), so no query or
//! write names a field the org lacks. Orgs differ: `Account.DunsNumber`
//! exists only with a Data.com licence, `CurrencyIsoCode` only in
//! multi-currency orgs, and admins delete custom fields.

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{SalesforceCrm, decode};
use crate::crm::CrmError;
use crate::http::HttpError;

/// The error code of a query or write naming a field the org lacks.
pub const INVALID_FIELD: &str = "INVALID_FIELD";

#[derive(Debug, Deserialize)]
struct Describe {
    #[serde(default)]
    fields: Vec<DescribeField>,
}

/// One field of an sObject describe.
#[derive(Debug, Deserialize)]
pub(super) struct DescribeField {
    pub(super) name: String,
    #[serde(rename = "type", default)]
    pub(super) sf_type: String,
    #[serde(rename = "externalId", default)]
    pub(super) external_id: bool,
    #[serde(default)]
    pub(super) updateable: bool,
    #[serde(default)]
    pub(super) createable: bool,
    #[serde(default)]
    pub(super) length: Option<u64>,
}

/// The fields one sObject has in this org.
#[derive(Debug)]
pub struct ObjectFields {
    pub object: String,
    names: HashSet<String>,
    /// Fields of type `datetime` (lower case).
    datetimes: HashSet<String>,
}

impl ObjectFields {
    pub(super) fn new(object: &str, fields: &[DescribeField]) -> ObjectFields {
        ObjectFields {
            object: object.to_owned(),
            names: fields.iter().map(|f| f.name.to_ascii_lowercase()).collect(),
            datetimes: fields
                .iter()
                .filter(|f| f.sf_type.eq_ignore_ascii_case("datetime"))
                .map(|f| f.name.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Written fields as a query returns them: fields the org lacks are
    /// gone, date-times are spelt as Salesforce spells them
    /// (`2026-12-17T07:06:58.000+0000`).
    pub fn as_read_back(&self, written: &mut Map<String, Value>) {
        written.retain(|name, _| self.has(name));
        for (name, value) in written.iter_mut() {
            if !self.datetimes.contains(&name.to_ascii_lowercase()) {
                continue;
            }
            if let Some(t) = value
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            {
                let utc = t.with_timezone(&chrono::Utc);
                *value = Value::String(utc.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string());
            }
        }
    }

    /// Whether the object has `field` (API names compare case-insensitively).
    /// A relationship path (`Account.Name`) is not in the describe of the
    /// object; it is taken as present and left to the query to check.
    pub fn has(&self, field: &str) -> bool {
        field.contains('.') || self.names.contains(&field.to_ascii_lowercase())
    }
}

/// Standard fields that exist only in some orgs, and why: their absence is
/// normal, not a mistake in the mapping.
pub fn org_dependent(object: &str, field: &str) -> Option<&'static str> {
    match (object, field) {
        (o, f) if o.eq_ignore_ascii_case("Account") && f.eq_ignore_ascii_case("DunsNumber") => {
            Some("a Data.com field: it exists only while the org holds a Data.com licence")
        }
        (_, f) if f.eq_ignore_ascii_case("CurrencyIsoCode") => {
            Some("it exists only in orgs with multiple currencies enabled")
        }
        _ => None,
    }
}

/// Whether Salesforce refused a query, a call or one record because it names
/// a field the org does not have.
pub fn names_missing_field(e: &CrmError) -> bool {
    match e {
        CrmError::Http(HttpError::Status {
            error: Some(service),
            ..
        }) => service.code == INVALID_FIELD,
        CrmError::Record { code, .. } => code == INVALID_FIELD,
        _ => false,
    }
}

impl SalesforceCrm {
    /// `GET sobjects/<object>/describe`: the object's fields in this org.
    pub(super) async fn describe(&self, object: &str) -> Result<Vec<DescribeField>, CrmError> {
        let path = self.path(&format!("sobjects/{object}/describe"));
        let reply = self.send(Method::GET, &path, &[], None).await?;
        let d: Describe = decode(&reply.body, "describe")?;
        Ok(d.fields)
    }

    /// The fields `object` has in this org: described on first use, then
    /// cached for the life of the adapter (one call per object per run).
    pub(super) async fn org_fields(&self, object: &str) -> Result<Arc<ObjectFields>, CrmError> {
        let mut cache = self.described.lock().await;
        if let Some(known) = cache.get(object) {
            return Ok(known.clone());
        }
        let fields = Arc::new(ObjectFields::new(object, &self.describe(object).await?));
        cache.insert(object.to_owned(), fields.clone());
        Ok(fields)
    }

    /// Describes `stale.object` again after Salesforce refused a field the
    /// cached describe `stale` lists; a call that raced us to it is reused.
    pub(super) async fn describe_again(
        &self,
        stale: &Arc<ObjectFields>,
    ) -> Result<Arc<ObjectFields>, CrmError> {
        let mut cache = self.described.lock().await;
        if let Some(known) = cache.get(&stale.object)
            && !Arc::ptr_eq(known, stale)
        {
            return Ok(known.clone());
        }
        tracing::info!(
            crm = "salesforce",
            object = %stale.object,
            "Salesforce refused a field of the object; reading its fields again"
        );
        let fields = Arc::new(ObjectFields::new(
            &stale.object,
            &self.describe(&stale.object).await?,
        ));
        cache.insert(stale.object.clone(), fields.clone());
        Ok(fields)
    }

    /// The mapped object's fields; an error when the org lacks the mapping's
    /// external id field, without which nothing can be synced. Every other
    /// mapped field the org lacks is reported once and skipped.
    pub(super) async fn opportunity_fields(&self) -> Result<Arc<ObjectFields>, CrmError> {
        let fields = self.org_fields(&self.spec.object).await?;
        self.check_mapped(&fields)?;
        Ok(fields)
    }

    /// [`opportunity_fields`](Self::opportunity_fields) read again.
    pub(super) async fn opportunity_fields_again(
        &self,
        stale: &Arc<ObjectFields>,
    ) -> Result<Arc<ObjectFields>, CrmError> {
        let fields = self.describe_again(stale).await?;
        self.check_mapped(&fields)?;
        Ok(fields)
    }

    fn check_mapped(&self, fields: &ObjectFields) -> Result<(), CrmError> {
        let ext = &self.spec.external_id_field;
        if !fields.has(ext) {
            return Err(CrmError::Invalid(format!(
                "the Salesforce org has no field {}.{ext}, the mapping's external_id that holds the referral id: create it (Text(100), External ID, Unique) and give the integration user access, or correct the mapping",
                fields.object
            )));
        }
        for name in self.spec.select_fields() {
            if !fields.has(&name) {
                self.report_missing(&fields.object, &name);
            }
        }
        Ok(())
    }

    /// Logs, once per field and run, that a mapped field is skipped because
    /// the org lacks it, and what to do about it.
    pub(super) fn report_missing(&self, object: &str, field: &str) {
        let key = format!("{object}.{field}").to_ascii_lowercase();
        let first = self
            .reported_missing
            .lock()
            .map(|mut seen| seen.insert(key))
            .unwrap_or(false);
        if !first {
            return;
        }
        match org_dependent(object, field) {
            Some(why) => tracing::warn!(
                crm = "salesforce",
                object,
                field,
                "the Salesforce org has no {object}.{field} ({why}); the mapped field is neither read nor written: remove it from the mapping (for the currency, set \"details.currency\" under [constants] if Partner Center needs one)"
            ),
            None => tracing::warn!(
                crm = "salesforce",
                object,
                field,
                "the Salesforce org has no {object}.{field}, or the integration user cannot see it; the mapped field is neither read nor written until it exists: create it (or grant field-level security), or remove it from the mapping"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_reads_back_without_absent_fields_and_with_salesforce_date_times() {
        let f: Vec<DescribeField> = serde_json::from_value(serde_json::json!([
            {"name": "Name", "type": "string"},
            {"name": "Answer_By__c", "type": "datetime"},
            {"name": "CloseDate", "type": "date"},
        ]))
        .unwrap();
        let fields = ObjectFields::new("Opportunity", &f);
        let mut written = serde_json::json!({
            "Name": "2026-12-17T07:06:58Z",
            "answer_by__c": "2026-12-17T08:06:58.5+01:00",
            "CloseDate": "2026-12-31",
            "CurrencyIsoCode": "USD",
        });
        let map = written.as_object_mut().unwrap();
        fields.as_read_back(map);
        assert_eq!(
            written,
            serde_json::json!({
                "Name": "2026-12-17T07:06:58Z",
                "answer_by__c": "2026-12-17T07:06:58.500+0000",
                "CloseDate": "2026-12-31",
            })
        );
    }

    #[test]
    fn fields_compare_case_insensitively_and_paths_are_left_to_the_query() {
        let f: Vec<DescribeField> =
            serde_json::from_value(serde_json::json!([{"name": "Name"}, {"name": "Amount"}]))
                .unwrap();
        let fields = ObjectFields::new("Opportunity", &f);
        assert!(fields.has("name") && fields.has("Amount"));
        assert!(!fields.has("CurrencyIsoCode"));
        assert!(fields.has("Account.Name"));
    }

    #[test]
    fn only_data_com_and_currency_fields_are_org_dependent() {
        assert!(org_dependent("Account", "DunsNumber").is_some());
        assert!(org_dependent("Opportunity", "CurrencyIsoCode").is_some());
        assert!(org_dependent("Opportunity", "Amount").is_none());
        assert!(org_dependent("Opportunity", "DunsNumber").is_none());
        assert!(org_dependent("Opportunity", "Customer_Name__c").is_none());
    }
}
