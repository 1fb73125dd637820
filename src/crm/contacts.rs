//! `customer_contact = "record"`, the part both CRMs share: which customer
//! contacts a call's deals need (each account and email once), the oldest
//! match per account and email among looked-up rows, what is left to create,
//! the contact each deal gets, the fields a contact is created with, and the
//! linked contact put on outbound deals. No I/O: the adapters send the
//! lookups and creates.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::accounts::{AccountResults, cache_key, folded};
use super::{ContactRef, CrmChange, CrmError, CustomerRef, RecordWrite};

/// The contact id (or the error) per contact key (see [`AccountIds::key`]).
pub type ContactResults = HashMap<String, Result<String, CrmError>>;

/// How a CRM compares account ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountIds {
    /// As written (Salesforce ids are case-sensitive).
    Exact,
    /// In any case (Dataverse GUIDs).
    AnyCase,
}

impl AccountIds {
    /// Identifies a contact under an account: the account id and folded email.
    pub fn key(self, account_id: &str, email: &str) -> String {
        match self {
            AccountIds::Exact => format!("{account_id}\u{0}{email}"),
            AccountIds::AnyCase => format!("{}\u{0}{email}", account_id.to_ascii_lowercase()),
        }
    }

    /// The contact result of a deal whose customer's account is `account_id`;
    /// `None` when its customer has no contact to match.
    pub fn result_for<'r>(
        self,
        results: &'r ContactResults,
        customer: &CustomerRef,
        account_id: &str,
    ) -> Option<&'r Result<String, CrmError>> {
        let email = customer.contact.as_ref()?.match_email()?;
        results.get(&self.key(account_id, &email))
    }
}

/// A contact to look up (and create when missing) under an account.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted<'a> {
    pub key: String,
    pub account_id: String,
    pub contact: &'a ContactRef,
}

impl Wanted<'_> {
    /// The email as written, trimmed: what the lookup compares.
    pub fn email(&self) -> Option<&str> {
        text(&self.contact.email)
    }
}

/// The contacts a call's writes need, each account and email once, in the
/// order first seen: those of customers whose account is known and whose
/// contact has an email and a last name ([`ContactRef::match_email`]).
pub fn wanted<'a>(
    writes: &'a [RecordWrite],
    accounts: &AccountResults,
    ids: AccountIds,
) -> Vec<Wanted<'a>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for c in writes.iter().filter_map(|w| w.customer.as_ref()) {
        let (Some(contact), Some(Ok(account))) = (&c.contact, accounts.get(&cache_key(c))) else {
            continue;
        };
        let Some(email) = contact.match_email() else {
            continue;
        };
        let key = ids.key(account, &email);
        if seen.insert(key.clone()) {
            out.push(Wanted {
                key,
                account_id: account.clone(),
                contact,
            });
        }
    }
    out
}

/// The oldest contact id per key among `rows` (oldest first); `columns` name
/// the contact id, its account id and its email in the CRM's row. The email
/// matches case-insensitively.
pub fn oldest<'r>(
    rows: impl IntoIterator<Item = &'r Map<String, Value>>,
    columns: [&str; 3],
    ids: AccountIds,
) -> HashMap<String, String> {
    let mut found = HashMap::new();
    for r in rows {
        let (Some(id), Some(account), Some(email)) = (
            r.get(columns[0]).and_then(Value::as_str),
            r.get(columns[1]).and_then(Value::as_str),
            folded(r.get(columns[2]).and_then(Value::as_str)),
        ) else {
            continue;
        };
        found
            .entry(ids.key(account, &email))
            .or_insert_with(|| id.to_owned());
    }
    found
}

/// A call's contacts as they are looked up, then created.
#[derive(Debug, Default)]
pub struct Resolution<'w, 'a> {
    results: ContactResults,
    missing: Vec<&'w Wanted<'a>>,
}

impl<'w, 'a> Resolution<'w, 'a> {
    /// Records one lookup of `chunk`: a found contact is its result, one not
    /// found is to be created; a failed lookup fails the whole chunk.
    pub fn looked_up(
        &mut self,
        chunk: &'w [Wanted<'a>],
        found: Result<HashMap<String, String>, CrmError>,
    ) {
        match found {
            Ok(found) => {
                for w in chunk {
                    match found.get(&w.key) {
                        Some(id) => {
                            self.results.insert(w.key.clone(), Ok(id.clone()));
                        }
                        None => self.missing.push(w),
                    }
                }
            }
            Err(e) => {
                for w in chunk {
                    self.results.insert(w.key.clone(), Err(e.clone()));
                }
            }
        }
    }

    /// The contacts no lookup found, in order.
    pub fn missing(&self) -> &[&'w Wanted<'a>] {
        &self.missing
    }

    /// Every result, given the creates' results (one per missing contact,
    /// in order).
    pub fn created(
        mut self,
        created: impl IntoIterator<Item = Result<String, CrmError>>,
    ) -> ContactResults {
        for (w, r) in self.missing.iter().zip(created) {
            self.results.insert(w.key.clone(), r);
        }
        self.results
    }
}

/// The contact's fields to create it with, in the CRM's `columns` (first
/// name, last name, email, phone): the last name always, the rest when given.
pub fn contact_fields(c: &ContactRef, columns: [&str; 4]) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert(
        columns[1].into(),
        Value::String(c.last_name.trim().to_owned()),
    );
    for (column, value) in [
        (columns[0], &c.first_name),
        (columns[2], &c.email),
        (columns[3], &c.phone),
    ] {
        if let Some(v) = text(value) {
            body.insert(column.into(), Value::String(v.to_owned()));
        }
    }
    body
}

/// A CRM contact row as the Referral's `customerProfile.team[]` entry the
/// mapping falls back on: `columns` name first name, last name, email and
/// phone in the CRM's row.
pub(crate) fn contact_entry(row: &Map<String, Value>, columns: [&str; 4]) -> Value {
    let get = |c: &str| row.get(c).cloned().unwrap_or(Value::Null);
    serde_json::json!({
        "firstName": get(columns[0]),
        "lastName": get(columns[1]),
        "email": get(columns[2]),
        "phoneNumber": get(columns[3]),
    })
}

/// Puts each changed opportunity's linked contact (if any) under
/// [`crate::mapping::CONTACT_KEY`].
pub(crate) fn attach_contacts<'a>(
    changes: &mut [CrmChange],
    contact_of: impl Fn(&str) -> Option<&'a Value>,
) {
    for change in changes.iter_mut() {
        if let CrmChange::Upserted(r) = change
            && let Some(contact) = contact_of(&r.crm_id)
        {
            r.fields
                .insert(crate::mapping::CONTACT_KEY.into(), contact.clone());
        }
    }
}

fn text(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crm::RecordKey;

    fn contact(last: &str, email: Option<&str>) -> ContactRef {
        ContactRef {
            first_name: Some(" Jo ".into()),
            last_name: last.into(),
            email: email.map(Into::into),
            phone: None,
        }
    }

    fn customer(name: &str, contact: Option<ContactRef>) -> CustomerRef {
        CustomerRef {
            name: name.into(),
            contact,
            ..Default::default()
        }
    }

    fn write(customer: CustomerRef) -> RecordWrite {
        RecordWrite {
            key: RecordKey::Referral("r".into()),
            fields: Default::default(),
            if_match: None,
            customer: Some(customer),
        }
    }

    fn row(id: &str, account: &str, email: &str) -> Map<String, Value> {
        match json!({ "Id": id, "AccountId": account, "Email": email }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn account_ids_compare_as_the_crm_does() {
        assert_ne!(
            AccountIds::Exact.key("001a", "jo@x"),
            AccountIds::Exact.key("001A", "jo@x")
        );
        assert_eq!(
            AccountIds::AnyCase.key("AB-12", "jo@x"),
            AccountIds::AnyCase.key("ab-12", "jo@x")
        );
        assert_ne!(
            AccountIds::AnyCase.key("ab-12", "jo@x"),
            AccountIds::AnyCase.key("ab-12", "jo@y")
        );
    }

    #[test]
    fn each_account_and_email_is_wanted_once_and_unusable_contacts_are_skipped() {
        let deal = |name: &str, last: &str, email: &str| {
            write(customer(name, Some(contact(last, Some(email)))))
        };
        let writes = [
            deal("Contoso", "Doe", "Jo@X.example"),
            deal("Contoso", "Doe", " jo@x.example "),
            deal("Contoso", "  ", "no-last@x.example"),
            deal("Contoso", "Doe", " "),
            write(customer("Contoso", None)),
            deal("Fabrikam", "Roe", "jo@x.example"),
            deal("Failed", "Roe", "f@x.example"),
            deal("Unknown", "Roe", "u@x.example"),
        ];
        let mut accounts = AccountResults::new();
        accounts.insert(cache_key(&customer("Contoso", None)), Ok("A1".into()));
        accounts.insert(cache_key(&customer("Fabrikam", None)), Ok("A2".into()));
        accounts.insert(
            cache_key(&customer("Failed", None)),
            Err(CrmError::Invalid("refused".into())),
        );
        let wanted = wanted(&writes, &accounts, AccountIds::Exact);
        let got: Vec<(&str, &str, Option<&str>)> = wanted
            .iter()
            .map(|w| (w.key.as_str(), w.account_id.as_str(), w.email()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("A1\u{0}jo@x.example", "A1", Some("Jo@X.example")),
                ("A2\u{0}jo@x.example", "A2", Some("jo@x.example")),
            ]
        );
    }

    #[test]
    fn the_oldest_row_per_account_and_email_wins_whatever_the_case() {
        let rows = [
            row("003OLD", "001A", "JO@x.example"),
            row("003NEW", "001A", "jo@x.example"),
            row("003OTHER", "001B", "jo@x.example"),
            row("003BLANK", "001A", " "),
        ];
        let found = oldest(&rows, ["Id", "AccountId", "Email"], AccountIds::Exact);
        assert_eq!(found.len(), 2);
        assert_eq!(found["001A\u{0}jo@x.example"], "003OLD");
        assert_eq!(found["001B\u{0}jo@x.example"], "003OTHER");
    }

    #[test]
    fn found_contacts_are_reused_missing_ones_created_and_a_failed_lookup_fails_its_chunk() {
        let (a, b, c) = (
            contact("A", Some("a@x")),
            contact("B", Some("b@x")),
            contact("C", Some("c@x")),
        );
        let want = |key: &str, contact| Wanted {
            key: key.into(),
            account_id: "001".into(),
            contact,
        };
        let first = [want("a", &a), want("b", &b)];
        let second = [want("c", &c)];
        let mut resolution = Resolution::default();
        resolution.looked_up(&first, Ok(HashMap::from([("a".into(), "003A".into())])));
        resolution.looked_up(&second, Err(CrmError::Invalid("lookup failed".into())));
        let missing: Vec<&str> = resolution
            .missing()
            .iter()
            .map(|w| w.key.as_str())
            .collect();
        assert_eq!(missing, vec!["b"]);
        let results = resolution.created([Ok("003B".to_owned())]);
        assert_eq!(results["a"].as_deref().ok(), Some("003A"));
        assert_eq!(results["b"].as_deref().ok(), Some("003B"));
        assert!(matches!(&results["c"], Err(CrmError::Invalid(m)) if m == "lookup failed"));
    }

    #[test]
    fn a_deal_gets_the_result_of_its_customers_contact() {
        let mut results = ContactResults::new();
        results.insert(AccountIds::AnyCase.key("ab", "jo@x"), Ok("c1".into()));
        let with = customer("Contoso", Some(contact("Doe", Some(" JO@x "))));
        let found = AccountIds::AnyCase.result_for(&results, &with, "AB");
        assert_eq!(found.and_then(|r| r.as_deref().ok()), Some("c1"));
        let nameless = customer("Contoso", Some(contact("", Some("jo@x"))));
        assert!(
            AccountIds::AnyCase
                .result_for(&results, &nameless, "ab")
                .is_none()
        );
        assert!(
            AccountIds::AnyCase
                .result_for(&results, &customer("Contoso", None), "ab")
                .is_none()
        );
    }

    #[test]
    fn a_contact_is_created_with_its_last_name_and_the_fields_it_has() {
        let mut c = contact(" Doe ", Some(" jo@x "));
        c.phone = Some(" ".into());
        let body = contact_fields(&c, ["first", "last", "email", "phone"]);
        assert_eq!(
            Value::Object(body),
            json!({ "last": "Doe", "first": "Jo", "email": "jo@x" })
        );
    }
}
