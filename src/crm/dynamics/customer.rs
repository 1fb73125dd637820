//! The customer accounts of a write call: found by DUNS number or by name +
//! postal code (as configured) in as few queries as the Web API's longest
//! URL (32 KB) allows, created when missing (up to 1,000 per `$batch`, each
//! in its own change set), then bound to the opportunities with
//! `customerid_account@odata.bind`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::{Map, Value};

use super::batch::{BatchOperation, OperationResponse};
use super::client::Call;
use super::{DynamicsCrm, MAX_BATCH_OPERATIONS, odata, protocol};
use crate::config::AccountMatch;
use crate::crm::accounts::{
    AccountResults, Identity, MissingPostal, cache_key, folded, plan_creations,
};
use crate::crm::{CrmError, CustomerRef, RecordWrite};
use crate::http::HttpError;

/// The account table's entity set (a standard table).
pub const ACCOUNT_SET: &str = "accounts";
/// The longest URL the Web API accepts: 32 KB (Microsoft, "Compose HTTP
/// requests and handle errors"; 64 KB only inside a `$batch` body).
pub const MAX_URL_CHARS: usize = 32 * 1024;
/// Most customers looked up in one query, whatever the URL allows: each
/// brings up to three parameters to the SQL query behind it, which SQL
/// Server caps at 2,100.
pub const LOOKUP_CUSTOMERS: usize = 500;
/// Room left in a lookup URL for what the client or a proxy may add.
const URL_MARGIN: usize = 256;

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// An account a lookup returned.
struct Found {
    id: String,
    who: Identity,
}

impl DynamicsCrm {
    fn use_duns(&self) -> bool {
        self.account_match == AccountMatch::DunsThenNamePostalCode
            && self.duns_usable.load(Ordering::Relaxed)
    }

    /// The `accountid` of each customer, by [`cache_key`](crate::crm::accounts::cache_key): remembered from
    /// an earlier call, found (DUNS first, then name + postal code; the
    /// oldest account wins), or created. A failure concerns only the
    /// customers it names.
    ///
    /// With `defer`, a missing account whose customer has one write in the
    /// call is not created here but returned in the second map (by cache
    /// key): its write creates it in its own change set.
    pub(super) async fn resolve_accounts(
        &self,
        writes: &[RecordWrite],
        defer: bool,
    ) -> (AccountResults, HashMap<String, CustomerRef>) {
        let (mut out, pending) = self.accounts.partition(
            writes,
            "the customer has no name to find or create its account by",
        );

        let mut found: Vec<Option<Result<String, CrmError>>> = vec![None; pending.len()];
        let mut start = 0;
        while start < pending.len() {
            let use_duns = self.use_duns();
            let fixed = self
                .lookup_url(String::new(), use_duns)
                .map_or(0, |u| u.as_str().len());
            let budget = MAX_URL_CHARS
                .saturating_sub(fixed)
                .saturating_sub(URL_MARGIN);
            let (count, filter) = self.lookup_filter(&pending[start..], use_duns, budget);
            let end = start + count;
            match self.find_accounts(filter, use_duns).await {
                Ok(rows) => {
                    for (slot, (_, c)) in found[start..end].iter_mut().zip(&pending[start..end]) {
                        let who = Identity::of(c, use_duns);
                        *slot = rows
                            .iter()
                            .find(|r| who.duns_matches(&r.who))
                            .or_else(|| {
                                rows.iter()
                                    .find(|r| who.name_matches(&r.who, MissingPostal::MatchesNone))
                            })
                            .map(|r| Ok(r.id.clone()));
                    }
                }
                Err(CrmError::Http(e))
                    if use_duns
                        && e.status() == Some(400)
                        && e.to_string().contains(&self.duns_column) =>
                {
                    // Once per run: from now on the column is neither read nor written.
                    if self.duns_usable.swap(false, Ordering::Relaxed) {
                        tracing::warn!(
                            crm = "dynamics",
                            column = %self.duns_column,
                            "the account DUNS column does not exist; matching by name and postal code"
                        );
                    }
                    // The same customers again, without the DUNS column.
                    continue;
                }
                Err(e) => {
                    for slot in &mut found[start..end] {
                        *slot = Some(Err(e.clone()));
                    }
                }
            }
            start = end;
        }

        let use_duns = self.use_duns();
        let missing: Vec<usize> = (0..pending.len()).filter(|i| found[*i].is_none()).collect();
        let identities: Vec<Identity> = missing
            .iter()
            .map(|i| Identity::of(&pending[*i].1, use_duns))
            .collect();
        let plan = plan_creations(&identities, MissingPostal::MatchesNone);
        // Writes per account to create: one alone is deferred to its change set.
        let mut writes_of: HashMap<String, usize> = HashMap::new();
        for c in writes.iter().filter_map(|w| w.customer.as_ref()) {
            *writes_of.entry(cache_key(c)).or_default() += 1;
        }
        let mut per_group = vec![0usize; plan.len()];
        for (m, shared) in plan.iter().enumerate() {
            per_group[*shared] += writes_of.get(&pending[missing[m]].0).copied().unwrap_or(0);
        }
        let mut deferred = HashMap::new();
        let creators: Vec<usize> = (0..plan.len())
            .filter(|m| plan[*m] == *m)
            .filter(|m| {
                let alone = defer && per_group[*m] == 1;
                if alone {
                    let (key, c) = &pending[missing[*m]];
                    deferred.insert(key.clone(), c.clone());
                }
                !alone
            })
            .collect();
        let customers: Vec<&CustomerRef> =
            creators.iter().map(|m| &pending[missing[*m]].1).collect();
        for (m, result) in creators.iter().zip(self.create_accounts(&customers).await) {
            found[missing[*m]] = Some(result);
        }
        for (m, shared) in plan.into_iter().enumerate() {
            if shared != m {
                found[missing[m]] = Some(
                    found[missing[shared]]
                        .clone()
                        .unwrap_or_else(|| Err(protocol("a shared account was not created"))),
                );
            }
        }

        for ((key, _), result) in pending.into_iter().zip(found) {
            if result.is_none() && deferred.contains_key(&key) {
                continue;
            }
            let result = result.unwrap_or_else(|| Err(protocol("no account was resolved")));
            if let Ok(id) = &result {
                self.accounts.insert(key.clone(), id.clone());
            }
            out.insert(key, result);
        }
        (out, deferred)
    }

    /// The `$filter` finding the first customers of `customers` whose terms
    /// fit in `budget` percent-encoded bytes, and how many they are (at
    /// least one).
    fn lookup_filter(
        &self,
        customers: &[(String, CustomerRef)],
        use_duns: bool,
        budget: usize,
    ) -> (usize, String) {
        const OR: &str = " or ";
        let or_len = odata::encoded_len(OR);
        let mut parts: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let (mut len, mut count) = (0, 0);
        for (_, c) in customers.iter().take(LOOKUP_CUSTOMERS) {
            let mut mine = Vec::new();
            if use_duns && let Some(duns) = non_empty(&c.duns) {
                mine.push(format!(
                    "{} eq {}",
                    self.duns_column,
                    odata::string_literal(duns)
                ));
            }
            let postal = match non_empty(&c.postal_code) {
                Some(p) => format!("address1_postalcode eq {}", odata::string_literal(p)),
                None => "address1_postalcode eq null".into(),
            };
            mine.push(format!(
                "(name eq {} and {postal})",
                odata::string_literal(c.name.trim())
            ));
            mine.retain(|p| !seen.contains(p));
            let added: usize = mine.iter().map(|p| odata::encoded_len(p) + or_len).sum();
            if count > 0 && len + added > budget {
                break;
            }
            len += added;
            count += 1;
            for p in mine {
                seen.insert(p.clone());
                parts.push(p);
            }
        }
        (count, parts.join(OR))
    }

    /// The lookup URL for `filter`.
    fn lookup_url(&self, filter: String, use_duns: bool) -> Result<url::Url, CrmError> {
        let mut select = String::from("accountid,name,address1_postalcode");
        if use_duns {
            select.push(',');
            select.push_str(&self.duns_column);
        }
        select.push_str(",createdon");
        self.url(
            ACCOUNT_SET,
            &[
                ("$select", select),
                ("$filter", filter),
                ("$orderby", "createdon asc".into()),
            ],
        )
    }

    /// Every account matching `filter`, oldest first, following `@odata.nextLink`.
    async fn find_accounts(&self, filter: String, use_duns: bool) -> Result<Vec<Found>, CrmError> {
        let mut url = self.lookup_url(filter, use_duns)?;
        let mut rows = Vec::new();
        loop {
            let call = Call::get(url);
            let v = self.api.call(&call).await?.json(&call)?;
            let page = v
                .get("value")
                .and_then(Value::as_array)
                .ok_or_else(|| protocol("an account lookup has no `value` array"))?;
            for row in page {
                let Some(id) = row.get("accountid").and_then(Value::as_str) else {
                    continue;
                };
                let text = |column: &str| folded(row.get(column).and_then(Value::as_str));
                rows.push(Found {
                    id: id.to_owned(),
                    who: Identity {
                        duns: if use_duns {
                            text(&self.duns_column)
                        } else {
                            None
                        },
                        name: text("name"),
                        postal: text("address1_postalcode"),
                    },
                });
            }
            match v.get("@odata.nextLink").and_then(Value::as_str) {
                Some(next) => url = self.follow_link(next)?,
                None => break,
            }
        }
        Ok(rows)
    }

    /// Creates the accounts, one result per customer in order: one POST for
    /// a single account, else `$batch` calls of up to 1,000 creates (the most
    /// one `$batch` carries), each in its own change set, so one refused
    /// account fails only its own customer's deals.
    async fn create_accounts(&self, customers: &[&CustomerRef]) -> Vec<Result<String, CrmError>> {
        if let [one] = customers {
            return vec![self.create_account(one).await];
        }
        let path = self.account_create_path();
        let mut results = Vec::with_capacity(customers.len());
        for chunk in customers.chunks(MAX_BATCH_OPERATIONS) {
            let ops: Vec<BatchOperation> =
                chunk.iter().map(|c| self.account_create_op(c)).collect();
            // A create is not idempotent: an unknown outcome is not resent.
            match self.batch_call(&ops, false).await {
                Ok(responses) => {
                    for (c, response) in chunk.iter().zip(responses) {
                        results.push(match response {
                            Some(r) => account_from_response(&path, r, c),
                            None => Err(protocol(
                                "the $batch answer has no response for an account create",
                            )),
                        });
                    }
                }
                Err(e) => results.extend(chunk.iter().map(|_| Err(e.clone()))),
            }
        }
        results
    }

    fn account_create_path(&self) -> String {
        format!("{}{ACCOUNT_SET}?$select=accountid", self.api_root.path())
    }

    /// The `$batch` operation creating the account of `c`.
    pub(super) fn account_create_op(&self, c: &CustomerRef) -> BatchOperation {
        BatchOperation {
            method: Method::POST,
            path_and_query: self.account_create_path(),
            headers: vec![("Prefer", "return=representation".to_owned())],
            body: Some(Value::Object(self.account_body(c)).to_string().into_bytes()),
        }
    }

    fn account_body(&self, c: &CustomerRef) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("name".into(), Value::String(c.name.trim().to_owned()));
        for (column, value) in [
            ("address1_line1", &c.address_line1),
            ("address1_city", &c.city),
            ("address1_stateorprovince", &c.state),
            ("address1_postalcode", &c.postal_code),
            ("address1_country", &c.country),
        ] {
            if let Some(v) = non_empty(value) {
                body.insert(column.into(), Value::String(v.to_owned()));
            }
        }
        if self.use_duns()
            && let Some(duns) = non_empty(&c.duns)
        {
            body.insert(self.duns_column.clone(), Value::String(duns.to_owned()));
        }
        body
    }

    async fn create_account(&self, c: &CustomerRef) -> Result<String, CrmError> {
        let body = self.account_body(c);
        let url = self.url(ACCOUNT_SET, &[("$select", "accountid".into())])?;
        let call = Call::json(Method::POST, url, &Value::Object(body), false)
            .prefer("return=representation");
        let answer = self.api.call(&call).await?;
        created_account_id(&answer.body, answer.header("odata-entityid"))
    }
}

/// The new account's id from one `$batch` response, or the error it carries.
fn account_from_response(
    path: &str,
    r: OperationResponse,
    c: &CustomerRef,
) -> Result<String, CrmError> {
    if !(200..300).contains(&r.status) {
        let e = HttpError::from_parts(
            "POST",
            path,
            r.status,
            &r.headers,
            &r.body,
            std::time::SystemTime::now(),
        );
        tracing::warn!(crm = "dynamics", customer = %c.name.trim(), error = %e, "creating a customer account failed");
        return Err(CrmError::Http(e));
    }
    let entity_id = r
        .headers
        .get("odata-entityid")
        .and_then(|v| v.to_str().ok());
    created_account_id(&r.body, entity_id)
}

/// The id of a created account: from the body (`return=representation`),
/// else from the `OData-EntityId` header.
pub(super) fn created_account_id(body: &[u8], entity_id: Option<&str>) -> Result<String, CrmError> {
    let id = odata::created_id(body, "accountid", entity_id)
        .ok_or_else(|| protocol("an account was created but its id was not returned"))?;
    tracing::info!(crm = "dynamics", account_id = %id, "customer account created");
    Ok(id)
}
