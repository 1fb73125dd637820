//! What a person does in Salesforce, without HTTP: the in-process helpers
//! tests, the demo and the control API use.

use serde_json::{Value, json};

use crate::{SimError, SimState, lock};

use super::schema::{SfStage, normalize_id};
use super::store::SfState;

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

    /// Creates a record of any writable sObject (e.g. a `Contact`), as a user
    /// would (the same checks as the REST API).
    pub fn create_salesforce_record(&self, object: &str, fields: Value) -> Result<Value, SimError> {
        let now = self.clock.now();
        let mut sf = lock(&self.sf);
        let o = sf
            .obj_index(object)
            .filter(|o| sf.objects[*o].writable)
            .ok_or_else(|| SimError::NotFound(format!("sObject {object}")))?;
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
