//! Writes: upserts by the external id field (sObject Collections, up to 200
//! records a call, `allOrNone: false`), updates by record Id, the
//! single-record upsert, and closing by `StageName`.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{Map, Value};

use super::JsonBody;
use super::api::{
    ApiError, CollectionItem, SaveResult, classify_code, ids_in_message, multiple_choice_ids,
};
use super::contacts::IDS;
use super::schema::{ObjectFields, names_missing_field};
use super::{MULTIPLE_CHOICES, OpportunityStageInfo, SalesforceCrm, decode, protocol};
use crate::config::AccountMatch;
use crate::crm::accounts::cache_key;
use crate::crm::body::BodyFields;
use crate::crm::{
    CloseOutcome, CloseRequest, CrmError, RecordKey, RecordWrite, WriteOk, WriteResult,
};
use crate::http::{RetryDirective, classify_status};

/// Path segment encoding for an external id value in a URL.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Fields never sent as a record's own: the body's `attributes` and the
/// record Id (a key is written by [`CollectionRecord`] or the URL).
const RESERVED: [&str; 3] = ["attributes", "Id", "id"];

/// A write ready to send: its index in the input, its key, and its body
/// (the write's fields borrowed: a batch is not copied to be sent).
struct Prepared<'a> {
    index: usize,
    key: RecordKey,
    body: BodyFields<'a>,
}

/// An sObject Collections body, `{"allOrNone": false, "records": [...]}`:
/// each record is `attributes`, its key (the external id field, or `id`),
/// then its fields, the key field itself not repeated when upserting by it.
struct CollectionBody<'a> {
    object: &'a str,
    external_id_field: &'a str,
    /// Upserting by the external id field (else updating by `id`).
    by_external_id: bool,
    chunk: &'a [Prepared<'a>],
}

impl serde::Serialize for CollectionBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut body = s.serialize_map(Some(2))?;
        body.serialize_entry("allOrNone", &false)?;
        body.serialize_entry("records", &CollectionRecords(self))?;
        body.end()
    }
}

struct CollectionRecords<'a>(&'a CollectionBody<'a>);

impl serde::Serialize for CollectionRecords<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.chunk.iter().map(|p| CollectionRecord {
            body: self.0,
            record: p,
        }))
    }
}

struct CollectionRecord<'a> {
    body: &'a CollectionBody<'a>,
    record: &'a Prepared<'a>,
}

impl serde::Serialize for CollectionRecord<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let b = self.body;
        let mut r = s.serialize_map(None)?;
        r.serialize_entry("attributes", &CollectionAttributes(b.object))?;
        let key = match &self.record.key {
            RecordKey::Referral(id) => {
                r.serialize_entry(b.external_id_field, id)?;
                b.external_id_field
            }
            RecordKey::CrmId(id) => {
                r.serialize_entry("id", id)?;
                "id"
            }
        };
        for (k, v) in self.record.body.iter() {
            // The key is written once, first.
            let is_key =
                k == key || (b.by_external_id && k.eq_ignore_ascii_case(b.external_id_field));
            if !is_key {
                r.serialize_entry(k, v)?;
            }
        }
        r.end()
    }
}

/// `{"type": "<object>"}`.
struct CollectionAttributes<'a>(&'a str);

impl serde::Serialize for CollectionAttributes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut a = s.serialize_map(Some(1))?;
        a.serialize_entry("type", self.0)?;
        a.end()
    }
}

/// The error for one record refused by Salesforce.
fn record_error(key: &RecordKey, errors: &[ApiError], status: Option<u16>) -> CrmError {
    // A record rolled back only because another failed carries that code
    // alone; its own error, if any, comes first otherwise.
    let first = errors
        .iter()
        .find(|e| e.code != "ALL_OR_NONE_OPERATION_ROLLED_BACK")
        .or_else(|| errors.first());
    let Some(first) = first else {
        return CrmError::Record {
            key: key.clone(),
            code: "UNKNOWN".into(),
            message: "Salesforce reported a failure without an error".into(),
            fields: Vec::new(),
            directive: status.map_or(RetryDirective::Backoff, |s| classify_status(s, None)),
        };
    };
    if first.code == "DUPLICATE_EXTERNAL_ID" {
        return CrmError::MultipleMatches {
            key: key.clone(),
            ids: ids_in_message(&first.message),
        };
    }
    let mut fields: Vec<String> = Vec::new();
    for e in errors {
        for f in &e.fields {
            if !fields.contains(f) {
                fields.push(f.clone());
            }
        }
    }
    let directive = match status {
        Some(s) if s >= 500 => classify_status(s, None),
        _ => classify_code(&first.code),
    };
    CrmError::Record {
        key: key.clone(),
        code: first.code.clone(),
        message: errors
            .iter()
            .map(|e| e.message.as_str())
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        fields,
        directive,
    }
}

/// A record error raised before the record's key was known, given its key.
fn rekey(e: CrmError, key: &RecordKey) -> CrmError {
    match e {
        CrmError::Record {
            code,
            message,
            fields,
            directive,
            ..
        } => CrmError::Record {
            key: key.clone(),
            code,
            message,
            fields,
            directive,
        },
        other => other,
    }
}

/// A whole-call failure of a single-record request, as that record's error.
fn as_record_error(key: &RecordKey, e: CrmError) -> CrmError {
    match e {
        CrmError::Http(crate::http::HttpError::Status {
            status, ref body, ..
        }) if (400..500).contains(&status) => match ApiError::parse_body(body.as_bytes()) {
            Some(errors) => record_error(key, &errors, Some(status)),
            None => e,
        },
        other => other,
    }
}

impl SalesforceCrm {
    /// The fields of a write the org lacks, to be left out (each said once
    /// in the log).
    fn absent_fields<'a>(
        &self,
        fields: &'a Map<String, Value>,
        org: &ObjectFields,
    ) -> Vec<&'a str> {
        fields
            .keys()
            .filter(|name| !RESERVED.contains(&name.as_str()) && !org.has(name))
            .map(|name| {
                self.report_missing(&org.object, name);
                name.as_str()
            })
            .collect()
    }

    /// A write's body: its fields less the reserved ones and those the org
    /// lacks, with the customer's Account when one was found.
    fn body<'a>(
        &self,
        w: &'a RecordWrite,
        org: &ObjectFields,
        account: Option<&str>,
    ) -> BodyFields<'a> {
        let mut body = BodyFields::new(&w.fields);
        for name in RESERVED {
            body.leave_out(name);
        }
        for name in self.absent_fields(&w.fields, org) {
            body.leave_out(name);
        }
        if let Some(id) = account {
            // The Account found, even were the org to lack the field.
            body.add("AccountId", Value::String(id.to_owned()));
        }
        body
    }

    /// Upserts every write; one result per input, in order. Fields the org
    /// lacks are left out; records refused for a field the org no longer has
    /// (`INVALID_FIELD`) have the object described again and are sent once
    /// more without it.
    pub(super) async fn write_all(
        &self,
        writes: &[RecordWrite],
    ) -> Result<Vec<WriteResult>, CrmError> {
        let org = self.opportunity_fields().await?;
        let total = writes.len();
        let mut results: Vec<Option<Result<WriteOk, CrmError>>> =
            (0..total).map(|_| None).collect();
        let mut keys = Vec::with_capacity(total);
        let mut ready = Vec::with_capacity(total);
        let mut versions: Vec<(usize, String)> = Vec::new();
        let mut attempted = false;
        let accounts = if self.account_match == AccountMatch::None {
            HashMap::new()
        } else {
            self.resolve_accounts(writes).await
        };
        let contacts = self.resolve_contacts(writes, &accounts).await;
        let mut linking: Vec<(usize, String)> = Vec::new();

        for (index, w) in writes.iter().enumerate() {
            keys.push(w.key.clone());
            let mut account = None;
            if let Some(customer) = &w.customer {
                match accounts.get(&cache_key(customer)) {
                    Some(Ok(account_id)) => {
                        account = Some(account_id.as_str());
                        attempted = true;
                        match IDS.result_for(&contacts, customer, account_id) {
                            Some(Ok(contact_id)) => linking.push((index, contact_id.clone())),
                            Some(Err(e)) => {
                                results[index] = Some(Err(rekey(e.clone(), &w.key)));
                                continue;
                            }
                            None => {}
                        }
                    }
                    None => {}
                    Some(Err(e @ CrmError::Paused { .. })) if !attempted => return Err(e.clone()),
                    Some(Err(e)) => {
                        attempted = true;
                        results[index] = Some(Err(rekey(e.clone(), &w.key)));
                        continue;
                    }
                }
            }
            if let Some(v) = &w.if_match {
                versions.push((index, v.clone()));
            }
            ready.push(Prepared {
                index,
                key: w.key.clone(),
                body: self.body(w, &org, account),
            });
        }

        // Salesforce has no If-Match for opportunities: compare SystemModstamp first.
        if !versions.is_empty() {
            let wanted: Vec<(usize, &RecordKey, &str)> = versions
                .iter()
                .map(|(i, v)| (*i, &keys[*i], v.as_str()))
                .collect();
            match self.current_versions(&wanted).await {
                Ok(stale) => {
                    attempted = true;
                    for i in stale {
                        results[i] = Some(Err(CrmError::Conflict {
                            key: keys[i].clone(),
                        }));
                    }
                    ready.retain(|p| results[p.index].is_none());
                }
                Err(e) if !attempted => return Err(e),
                Err(e) => {
                    for (i, _) in &versions {
                        results[*i] = Some(Err(e.clone()));
                    }
                    ready.retain(|p| results[p.index].is_none());
                }
            }
        }

        let mut sent = Vec::new();
        for (by_external_id, chunk) in self.chunks(ready) {
            match self.send_chunk(by_external_id, &chunk).await {
                Ok(items) => {
                    attempted = true;
                    for (p, r) in chunk.iter().zip(items) {
                        results[p.index] = Some(r);
                    }
                }
                Err(e) if !attempted => return Err(e),
                Err(e) => {
                    for p in &chunk {
                        results[p.index] = Some(Err(e.clone()));
                    }
                }
            }
            sent.extend(chunk);
        }

        // A field removed from the org since it was described: once more without it.
        let refused: Vec<Prepared> = sent
            .into_iter()
            .filter(|p| {
                results[p.index]
                    .as_ref()
                    .is_some_and(|r| r.as_ref().is_err_and(names_missing_field))
            })
            .collect();
        if !refused.is_empty()
            && let Ok(fresh) = self.opportunity_fields_again(&org).await
        {
            let retry: Vec<Prepared> = refused
                .into_iter()
                .filter_map(|mut p| {
                    let mut newly = false;
                    for name in self.absent_fields(p.body.own(), &fresh) {
                        newly |= !p.body.is_left_out(name);
                        p.body.leave_out(name);
                    }
                    newly.then_some(p)
                })
                .collect();
            for (by_external_id, chunk) in self.chunks(retry) {
                match self.send_chunk(by_external_id, &chunk).await {
                    Ok(items) => {
                        for (p, r) in chunk.iter().zip(items) {
                            results[p.index] = Some(r);
                        }
                    }
                    Err(e) => {
                        for p in &chunk {
                            results[p.index] = Some(Err(e.clone()));
                        }
                    }
                }
            }
        }

        // The contacts, once their opportunities are written.
        let links: Vec<(usize, (String, String))> = linking
            .into_iter()
            .filter_map(|(i, contact)| match &results[i] {
                Some(Ok(ok)) => Some((i, (ok.crm_id.clone(), contact))),
                _ => None,
            })
            .collect();
        if !links.is_empty() {
            let pairs: Vec<(String, String)> = links.iter().map(|(_, p)| p.clone()).collect();
            for ((i, _), linked) in links.iter().zip(self.link_contacts(&pairs).await) {
                if let Err(e) = linked {
                    results[*i] = Some(Err(rekey(e, &keys[*i])));
                }
            }
        }

        Ok(keys
            .into_iter()
            .zip(results)
            .map(|(key, r)| WriteResult {
                outcome: r.unwrap_or_else(|| Err(protocol(format!("{key} got no result")))),
                key,
            })
            .collect())
    }

    /// Upserts by referral id, then updates by record Id, in calls of at most
    /// `batch_size` records.
    fn chunks<'a>(&self, ready: Vec<Prepared<'a>>) -> Vec<(bool, Vec<Prepared<'a>>)> {
        let (by_referral, by_id): (Vec<Prepared>, Vec<Prepared>) = ready
            .into_iter()
            .partition(|p| matches!(p.key, RecordKey::Referral(_)));
        let mut chunks: Vec<(bool, Vec<Prepared<'a>>)> = Vec::new();
        let mut by_referral = by_referral.into_iter().peekable();
        while by_referral.peek().is_some() {
            chunks.push((true, by_referral.by_ref().take(self.batch_size).collect()));
        }
        let mut by_id = by_id.into_iter().peekable();
        while by_id.peek().is_some() {
            chunks.push((false, by_id.by_ref().take(self.batch_size).collect()));
        }
        chunks
    }

    /// One call for a chunk: the single-record upsert for a lone record by
    /// referral id, else sObject Collections. One result per record, in order.
    async fn send_chunk(
        &self,
        by_external_id: bool,
        chunk: &[Prepared<'_>],
    ) -> Result<Vec<Result<WriteOk, CrmError>>, CrmError> {
        match chunk {
            [p] if by_external_id => self
                .upsert_body(&p.key, &p.body)
                .await
                .map(|ok| vec![Ok(ok)]),
            _ => self.send_collection(by_external_id, chunk).await,
        }
    }

    /// One sObject Collections call: upsert by the external id field, or
    /// update by Id. One result per record, in order.
    async fn send_collection(
        &self,
        by_external_id: bool,
        chunk: &[Prepared<'_>],
    ) -> Result<Vec<Result<WriteOk, CrmError>>, CrmError> {
        let object = &self.spec.object;
        // Written straight from the prepared records: no tree of the body.
        let body = CollectionBody {
            object,
            external_id_field: &self.spec.external_id_field,
            by_external_id,
            chunk,
        };
        let path = if by_external_id {
            self.path(&format!(
                "composite/sobjects/{object}/{}",
                self.spec.external_id_field
            ))
        } else {
            self.path("composite/sobjects")
        };
        let reply = self
            .send_body(Method::PATCH, &path, JsonBody::of(&body)?)
            .await?;
        let items: Vec<CollectionItem> = decode(&reply.body, "sObject Collections")?;
        if items.len() != chunk.len() {
            tracing::warn!(
                sent = chunk.len(),
                received = items.len(),
                "Salesforce returned a different number of collection results"
            );
        }
        let mut items = items.into_iter();
        Ok(chunk
            .iter()
            .map(|p| match items.next() {
                Some(item) if item.success => match item.id {
                    Some(id) => Ok(WriteOk {
                        crm_id: id,
                        created: item.created.unwrap_or(false),
                        version: None,
                    }),
                    None => Err(protocol(format!("{} succeeded without an id", p.key))),
                },
                Some(item) => Err(record_error(&p.key, &item.errors, None)),
                None => Err(protocol(format!("{} got no collection result", p.key))),
            })
            .collect())
    }

    /// The single-record upsert by external id: `PATCH
    /// sobjects/<Object>/<ExternalIdField>/<referral id>`. 201 created, 200
    /// updated, 204 updated (API before v46), 300 several records match.
    pub async fn upsert_one(
        &self,
        key: &RecordKey,
        fields: &Map<String, Value>,
    ) -> Result<WriteOk, CrmError> {
        self.upsert_body(key, &BodyFields::new(fields)).await
    }

    async fn upsert_body(
        &self,
        key: &RecordKey,
        fields: &BodyFields<'_>,
    ) -> Result<WriteOk, CrmError> {
        let RecordKey::Referral(referral_id) = key else {
            return Err(CrmError::Invalid(format!(
                "{key}: the single-record upsert needs a referral id"
            )));
        };
        let mut body = Map::new();
        for (k, v) in fields.iter() {
            if !k.eq_ignore_ascii_case(&self.spec.external_id_field) && !RESERVED.contains(&k) {
                body.insert(k.to_owned(), v.clone());
            }
        }
        let encoded = percent_encoding::utf8_percent_encode(referral_id, SEGMENT).to_string();
        let path = self.path(&format!(
            "sobjects/{}/{}/{encoded}",
            self.spec.object, self.spec.external_id_field
        ));
        let reply = self
            .send(Method::PATCH, &path, &[], Some(&Value::Object(body)))
            .await
            .map_err(|e| as_record_error(key, e))?;
        match reply.status {
            MULTIPLE_CHOICES => {
                let ids = multiple_choice_ids(&reply.body);
                tracing::warn!(%key, ids = ?ids, "several Salesforce records hold the same referral id");
                Err(CrmError::MultipleMatches {
                    key: key.clone(),
                    ids,
                })
            }
            204 => {
                // Older API versions answer an update with no body: look the record up.
                let record = <Self as crate::crm::Crm>::fetch(self, key).await?;
                let record = record.ok_or_else(|| {
                    protocol(format!("{key} was upserted but cannot be read back"))
                })?;
                Ok(WriteOk {
                    crm_id: record.crm_id,
                    created: false,
                    version: record.version,
                })
            }
            status => {
                let saved: SaveResult = decode(&reply.body, "upsert")?;
                if saved.success == Some(false) {
                    return Err(record_error(key, &saved.errors, Some(status)));
                }
                let id = saved
                    .id
                    .ok_or_else(|| protocol(format!("{key}: the upsert answer has no id")))?;
                Ok(WriteOk {
                    crm_id: id,
                    created: saved.created.unwrap_or(status == 201),
                    version: None,
                })
            }
        }
    }

    /// Indexes (from `wanted`) of records whose SystemModstamp is no longer
    /// the given version, or that no longer exist.
    async fn current_versions(
        &self,
        wanted: &[(usize, &RecordKey, &str)],
    ) -> Result<Vec<usize>, CrmError> {
        let ext = &self.spec.external_id_field;
        let mut current: HashMap<RecordKey, String> = HashMap::new();
        for chunk in wanted.chunks(self.batch_size) {
            let referral_ids: Vec<String> = chunk
                .iter()
                .filter_map(|(_, k, _)| match k {
                    RecordKey::Referral(id) => Some(super::soql::quote(id)),
                    RecordKey::CrmId(_) => None,
                })
                .collect();
            let crm_ids: Vec<String> = chunk
                .iter()
                .filter_map(|(_, k, _)| match k {
                    RecordKey::CrmId(id) => Some(super::soql::quote(id)),
                    RecordKey::Referral(_) => None,
                })
                .collect();
            let mut conditions = Vec::new();
            if !referral_ids.is_empty() {
                conditions.push(format!("{ext} IN ({})", referral_ids.join(", ")));
            }
            if !crm_ids.is_empty() {
                conditions.push(format!("Id IN ({})", crm_ids.join(", ")));
            }
            let soql = format!(
                "SELECT Id, {ext}, SystemModstamp FROM {} WHERE {}",
                self.spec.object,
                conditions.join(" OR ")
            );
            for r in self.query_all(&soql).await? {
                let stamp = r
                    .get("SystemModstamp")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if let Some(id) = r.get("Id").and_then(Value::as_str) {
                    current.insert(RecordKey::CrmId(id.to_owned()), stamp.clone());
                }
                if let Some(rid) = super::field_value(&r, ext).as_str() {
                    current.insert(RecordKey::Referral(rid.to_owned()), stamp);
                }
            }
        }
        let same = |a: &str, b: &str| match (super::parse_datetime(a), super::parse_datetime(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        };
        Ok(wanted
            .iter()
            .filter(|(_, k, v)| !current.get(*k).is_some_and(|c| same(c, v)))
            .map(|(i, _, _)| *i)
            .collect())
    }

    /// Closes opportunities by writing the mapped closed `StageName` (and the
    /// reason field) through the upsert path, after checking the stage is a
    /// closed one of the right outcome.
    pub(super) async fn close_all(
        &self,
        closes: Vec<CloseRequest>,
        stages: &[OpportunityStageInfo],
    ) -> Result<Vec<WriteResult>, CrmError> {
        let mut results: Vec<Option<WriteResult>> = (0..closes.len()).map(|_| None).collect();
        let mut writes = Vec::new();
        let mut positions = Vec::new();
        for (i, c) in closes.into_iter().enumerate() {
            match check_close(&c, stages) {
                Ok(()) => {
                    tracing::debug!(key = %c.key, outcome = ?c.outcome, reason = c.reason.as_deref(), "closing");
                    positions.push(i);
                    writes.push(RecordWrite {
                        key: c.key,
                        fields: c.fields,
                        if_match: None,
                        customer: None,
                    });
                }
                Err(e) => {
                    results[i] = Some(WriteResult {
                        key: c.key,
                        outcome: Err(e),
                    })
                }
            }
        }
        if !writes.is_empty() {
            for (i, r) in positions.into_iter().zip(self.write_all(&writes).await?) {
                results[i] = Some(r);
            }
        }
        Ok(results.into_iter().flatten().collect())
    }
}

/// The close names a `StageName` that is closed, won or lost as asked.
fn check_close(c: &CloseRequest, stages: &[OpportunityStageInfo]) -> Result<(), CrmError> {
    let stage = c
        .fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("StageName"))
        .and_then(|(_, v)| v.as_str())
        .ok_or_else(|| {
            CrmError::Invalid(format!(
                "{}: closing in Salesforce needs the mapped closed StageName",
                c.key
            ))
        })?;
    let info = stages
        .iter()
        .find(|s| s.api_name == stage)
        .or_else(|| stages.iter().find(|s| s.label == stage))
        .ok_or_else(|| {
            CrmError::Invalid(format!(
                "{}: stage {stage:?} does not exist in the org",
                c.key
            ))
        })?;
    let want_won = c.outcome == CloseOutcome::Won;
    if !info.is_closed || info.is_won != want_won {
        return Err(CrmError::Invalid(format!(
            "{}: stage {stage:?} is not a closed-{} stage in the org",
            c.key,
            if want_won { "won" } else { "lost" }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(fields: Value) -> Map<String, Value> {
        let Value::Object(fields) = fields else {
            panic!("fields are an object")
        };
        fields
    }

    fn prepared(key: RecordKey, fields: &Map<String, Value>) -> Prepared<'_> {
        let mut body = BodyFields::new(fields);
        for name in RESERVED {
            body.leave_out(name);
        }
        Prepared {
            index: 0,
            key,
            body,
        }
    }

    fn body_text(by_external_id: bool, chunk: &[Prepared<'_>]) -> String {
        serde_json::to_string(&CollectionBody {
            object: "Opportunity",
            external_id_field: "cosell__ReferralId__c",
            by_external_id,
            chunk,
        })
        .unwrap()
    }

    #[test]
    fn a_collection_body_is_attributes_then_the_key_then_the_fields() {
        let first = object(json!({"Name": "Deal", "Amount": 5000, "COSELL__REFERRALID__C": "r-1"}));
        let second = object(json!({"Name": "Other"}));
        let chunk = [
            prepared(RecordKey::Referral("r-1".into()), &first),
            prepared(RecordKey::Referral("r-2".into()), &second),
        ];
        assert_eq!(
            body_text(true, &chunk),
            r#"{"allOrNone":false,"records":[{"attributes":{"type":"Opportunity"},"cosell__ReferralId__c":"r-1","Amount":5000,"Name":"Deal"},{"attributes":{"type":"Opportunity"},"cosell__ReferralId__c":"r-2","Name":"Other"}]}"#
        );
        let fields =
            object(json!({"StageName": "Closed Won", "id": "other", "Id": "x", "attributes": {}}));
        let chunk = [prepared(RecordKey::CrmId("006A".into()), &fields)];
        assert_eq!(
            body_text(false, &chunk),
            r#"{"allOrNone":false,"records":[{"attributes":{"type":"Opportunity"},"id":"006A","StageName":"Closed Won"}]}"#
        );
    }

    #[test]
    fn the_account_found_replaces_a_mapped_one_and_absent_fields_are_left_out() {
        let fields = object(json!({
            "Amount": 5,
            "AccountId": "001MAPPED",
            "Name": "Deal",
            "cosell__Duns__c": "1",
            "Zeta__c": true
        }));
        let mut p = prepared(RecordKey::Referral("r-1".into()), &fields);
        p.body.add("AccountId", Value::String("001FOUND".into()));
        p.body.leave_out("cosell__Duns__c");
        assert_eq!(
            body_text(true, std::slice::from_ref(&p)),
            r#"{"allOrNone":false,"records":[{"attributes":{"type":"Opportunity"},"cosell__ReferralId__c":"r-1","AccountId":"001FOUND","Amount":5,"Name":"Deal","Zeta__c":true}]}"#
        );
    }
}
