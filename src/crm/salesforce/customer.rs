//! The deal's customer: find its Account (by DUNS, or by name + postal code,
//! as `salesforce.account_match` says) or create it; contacts likewise by
//! email on that account.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{Map, Value};

use super::api::{ApiError, SaveResult};
use super::soql::quote;
use super::{SalesforceCrm, decode, protocol};
use crate::config::AccountMatch;
use crate::crm::{CrmError, CustomerRef, RecordKey};
use crate::http::RetryDirective;

/// A customer contact to put on the account (Partner Center
/// `customerProfile.team[]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContactRef {
    pub first_name: Option<String>,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn customer_error(code: &str, message: String, directive: RetryDirective) -> CrmError {
    CrmError::Record {
        key: RecordKey::Referral(String::new()),
        code: code.into(),
        message,
        fields: Vec::new(),
        directive,
    }
}

impl SalesforceCrm {
    /// The Account for `customer`: found, or created when none matches.
    /// `None` when account matching is off. `cache` avoids looking up the same
    /// customer twice in one batch.
    pub(super) async fn resolve_account(
        &self,
        customer: &CustomerRef,
        cache: &mut HashMap<String, String>,
    ) -> Result<Option<String>, CrmError> {
        if self.account_match == AccountMatch::None {
            return Ok(None);
        }
        let name = customer.name.trim();
        if name.is_empty() {
            return Err(CrmError::Invalid(
                "the customer has no name to find or create its Salesforce account".into(),
            ));
        }
        let duns = non_empty(&customer.duns);
        let postal = non_empty(&customer.postal_code);
        let cache_key = format!(
            "{}\u{0}{}\u{0}{}",
            duns.unwrap_or(""),
            name,
            postal.unwrap_or("")
        );
        if let Some(id) = cache.get(&cache_key) {
            return Ok(Some(id.clone()));
        }
        if let Some(id) = self.accounts.get(&cache_key) {
            cache.insert(cache_key, id.clone());
            return Ok(Some(id));
        }
        let mut found = None;
        if self.account_match == AccountMatch::DunsThenNamePostalCode
            && !self.duns_field.is_empty()
            && let Some(duns) = duns
        {
            found = self
                .find_one_account(&format!("{} = {}", self.duns_field, quote(duns)), name)
                .await?;
        }
        if found.is_none() {
            let condition = match postal {
                Some(pc) => format!(
                    "Name = {} AND BillingPostalCode = {}",
                    quote(name),
                    quote(pc)
                ),
                None => format!("Name = {}", quote(name)),
            };
            found = self.find_one_account(&condition, name).await?;
        }
        let id = match found {
            Some(id) => id,
            None => self.create_account(customer).await?,
        };
        self.accounts.insert(cache_key.clone(), id.clone());
        cache.insert(cache_key, id.clone());
        Ok(Some(id))
    }

    async fn find_one_account(
        &self,
        condition: &str,
        name: &str,
    ) -> Result<Option<String>, CrmError> {
        let soql =
            format!("SELECT Id FROM Account WHERE {condition} ORDER BY CreatedDate ASC LIMIT 10");
        let ids: Vec<String> = self
            .query_all(&soql)
            .await?
            .iter()
            .filter_map(|r| r.get("Id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        match ids.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            many => Err(customer_error(
                "AMBIGUOUS_ACCOUNT",
                format!(
                    "several Salesforce accounts match the customer {name:?}: {}; merge them or give the customer a DUNS number",
                    many.join(", ")
                ),
                RetryDirective::Operator,
            )),
        }
    }

    async fn create_account(&self, c: &CustomerRef) -> Result<String, CrmError> {
        let mut body = Map::new();
        body.insert("Name".into(), Value::String(c.name.trim().to_owned()));
        for (field, value) in [
            ("BillingStreet", &c.address_line1),
            ("BillingCity", &c.city),
            ("BillingState", &c.state),
            ("BillingPostalCode", &c.postal_code),
            ("BillingCountry", &c.country),
        ] {
            if let Some(v) = non_empty(value) {
                body.insert(field.into(), Value::String(v.to_owned()));
            }
        }
        if let (Some(duns), false) = (non_empty(&c.duns), self.duns_field.is_empty()) {
            body.insert(self.duns_field.clone(), Value::String(duns.to_owned()));
        }
        let id = self.create("Account", body).await?;
        tracing::info!(account = %id, "created a Salesforce account for the customer");
        Ok(id)
    }

    /// Finds the contact by email on the account, or creates it; returns its Id.
    pub async fn ensure_contact(
        &self,
        account_id: &str,
        contact: &ContactRef,
    ) -> Result<String, CrmError> {
        if contact.last_name.trim().is_empty() {
            return Err(CrmError::Invalid(
                "a Salesforce contact needs a last name".into(),
            ));
        }
        if let Some(email) = non_empty(&contact.email) {
            let soql = format!(
                "SELECT Id FROM Contact WHERE AccountId = {} AND Email = {} ORDER BY CreatedDate ASC LIMIT 1",
                quote(account_id),
                quote(email)
            );
            if let Some(id) = self
                .query_all(&soql)
                .await?
                .first()
                .and_then(|r| r.get("Id").and_then(Value::as_str))
            {
                return Ok(id.to_owned());
            }
        }
        let mut body = Map::new();
        body.insert("AccountId".into(), Value::String(account_id.to_owned()));
        body.insert(
            "LastName".into(),
            Value::String(contact.last_name.trim().to_owned()),
        );
        for (field, value) in [
            ("FirstName", &contact.first_name),
            ("Email", &contact.email),
            ("Phone", &contact.phone),
        ] {
            if let Some(v) = non_empty(value) {
                body.insert(field.into(), Value::String(v.to_owned()));
            }
        }
        self.create("Contact", body).await
    }

    /// `POST sobjects/<type>` → the new record's Id.
    async fn create(&self, object: &str, body: Map<String, Value>) -> Result<String, CrmError> {
        let path = self.path(&format!("sobjects/{object}"));
        let reply = match self
            .send(Method::POST, &path, &[], Some(&Value::Object(body)))
            .await
        {
            Ok(r) => r,
            Err(CrmError::Http(crate::http::HttpError::Status { status, body, .. }))
                if (400..500).contains(&status) =>
            {
                let errors = ApiError::parse_body(body.as_bytes()).unwrap_or_default();
                let first = errors.first().cloned().unwrap_or_default();
                return Err(customer_error(
                    &first.code,
                    format!("creating the {object} failed: {}", first.message),
                    super::api::classify_code(&first.code),
                ));
            }
            Err(e) => return Err(e),
        };
        let saved: SaveResult = decode(&reply.body, object)?;
        saved
            .id
            .filter(|_| saved.success != Some(false))
            .ok_or_else(|| protocol(format!("creating the {object} returned no id")))
    }
}
