//! Customer accounts found (or created) recently, shared across write calls,
//! so a backfill looks each customer up once, not once per batch. Entries
//! live a few minutes: an account merged or deleted in the CRM meanwhile is
//! looked up again soon after.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{CrmError, CustomerRef, RecordWrite};

/// How long a found account id is trusted.
pub const ACCOUNT_TTL: Duration = Duration::from_secs(5 * 60);
/// Customers remembered at most: a table of 16,384 slots of 48 bytes
/// (0.75 MiB). When it is full the stale entries go, or all of them: a
/// customer seen again after that costs a share of one more look-up query.
pub const ACCOUNT_CAPACITY: usize = 10_000;

/// The account id (or the error) of each customer of a call, by cache key.
pub type AccountResults = HashMap<String, Result<String, CrmError>>;

#[derive(Debug)]
pub struct AccountCache {
    ttl: Duration,
    capacity: usize,
    /// When the cache was made: entries keep their age in whole seconds.
    epoch: Instant,
    entries: Mutex<HashMap<KeyDigest, (StoredId, u32)>>,
}

/// A customer's [`cache_key`] as 128 bits of its SHA-256: 16 bytes per
/// entry instead of the text; two customers would need a 128-bit collision
/// to share an entry.
type KeyDigest = [u8; 16];

fn digest(key: &str) -> KeyDigest {
    use sha2::Digest;
    let full = sha2::Sha256::digest(key.as_bytes());
    let mut d = [0; 16];
    d.copy_from_slice(&full[..16]);
    d
}

/// A remembered account id: a GUID (Dataverse) in 16 bytes, else its text.
#[derive(Debug)]
enum StoredId {
    Guid(u128),
    Text(Box<str>),
}

impl StoredId {
    fn new(id: String) -> StoredId {
        let mut buf = [0; uuid::fmt::Hyphenated::LENGTH];
        match uuid::Uuid::try_parse(&id) {
            Ok(u) if *u.hyphenated().encode_lower(&mut buf) == *id => StoredId::Guid(u.as_u128()),
            _ => StoredId::Text(id.into_boxed_str()),
        }
    }

    fn text(&self) -> String {
        match self {
            StoredId::Guid(g) => uuid::Uuid::from_u128(*g).hyphenated().to_string(),
            StoredId::Text(t) => t.to_string(),
        }
    }
}

impl Default for AccountCache {
    fn default() -> Self {
        AccountCache::new(ACCOUNT_TTL, ACCOUNT_CAPACITY)
    }
}

impl AccountCache {
    pub fn new(ttl: Duration, capacity: usize) -> AccountCache {
        AccountCache {
            ttl,
            capacity,
            epoch: Instant::now(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn age_now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn fresh(&self, now: u32, at: u32) -> bool {
        u64::from(now.saturating_sub(at)) < self.ttl.as_secs()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let now = self.age_now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&digest(key))
            .filter(|(_, at)| self.fresh(now, *at))
            .map(|(id, _)| id.text())
    }

    /// Splits the customers of a call's writes (each [`cache_key`] once):
    /// those answered already — remembered, or without a name to match
    /// (`nameless` says why) — and those still to look up.
    pub fn partition(
        &self,
        writes: &[RecordWrite],
        nameless: &str,
    ) -> (AccountResults, Vec<(String, CustomerRef)>) {
        let mut answered = HashMap::new();
        let mut seen = HashSet::new();
        let mut pending = Vec::new();
        for c in writes.iter().filter_map(|w| w.customer.as_ref()) {
            let key = cache_key(c);
            if !seen.insert(key.clone()) {
                continue;
            }
            if c.name.trim().is_empty() {
                answered.insert(key, Err(CrmError::Invalid(nameless.to_owned())));
            } else if let Some(id) = self.get(&key) {
                answered.insert(key, Ok(id));
            } else {
                pending.push((key, c.clone()));
            }
        }
        (answered, pending)
    }

    pub fn insert(&self, key: String, account_id: String) {
        let now = self.age_now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            entries.retain(|_, (_, at)| self.fresh(now, *at));
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(digest(&key), (StoredId::new(account_id), now));
    }
}

/// Identifies a customer, so each is resolved once per call and remembered.
pub fn cache_key(c: &CustomerRef) -> String {
    let part = |v: Option<&str>| v.map(str::trim).unwrap_or_default().to_owned();
    format!(
        "{}\u{0}{}\u{0}{}",
        part(c.duns.as_deref()),
        c.name.trim(),
        part(c.postal_code.as_deref())
    )
}

/// Text as Dataverse and SOQL string equality compares it: trimmed and
/// case-insensitive; an empty value is no value.
pub fn folded(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_lowercase)
}

/// How a customer without a postal code matches by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingPostal {
    /// Only accounts without a postal code (Dataverse `address1_postalcode eq null`).
    MatchesNone,
    /// Any account of that name (Salesforce `Name = '…'` alone).
    MatchesAny,
}

/// What a customer, or an account, is matched by: folded values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub duns: Option<String>,
    pub name: Option<String>,
    pub postal: Option<String>,
}

impl Identity {
    /// The customer's identity; its DUNS only when DUNS matching is on.
    pub fn of(c: &CustomerRef, use_duns: bool) -> Identity {
        Identity {
            duns: folded(c.duns.as_deref()).filter(|_| use_duns),
            name: folded(Some(&c.name)),
            postal: folded(c.postal_code.as_deref()),
        }
    }

    /// Whether `account` carries this customer's DUNS number.
    pub fn duns_matches(&self, account: &Identity) -> bool {
        self.duns.is_some() && self.duns == account.duns
    }

    /// Whether `account` has this customer's name and postal code.
    pub fn name_matches(&self, account: &Identity, missing: MissingPostal) -> bool {
        self.name.is_some()
            && self.name == account.name
            && (self.postal == account.postal
                || (self.postal.is_none() && missing == MissingPostal::MatchesAny))
    }
}

/// Which account each customer still without one gets, so that no two
/// accounts are created for customers that would have found each other's:
/// a customer reuses an account planned earlier in the call that it matches
/// by DUNS or by name and postal code. Returns, per customer, the index of
/// the customer whose account it shares (itself for a new account).
pub fn plan_creations(missing: &[Identity], rule: MissingPostal) -> Vec<usize> {
    let mut plan: Vec<usize> = Vec::with_capacity(missing.len());
    for (i, who) in missing.iter().enumerate() {
        let planned = |j: &&usize| **j == plan[**j];
        let shared = plan
            .iter()
            .filter(planned)
            .find(|j| who.duns_matches(&missing[**j]))
            .or_else(|| {
                plan.iter()
                    .filter(planned)
                    .find(|j| who.name_matches(&missing[**j], rule))
            })
            .copied();
        plan.push(shared.unwrap_or(i));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_remembered_until_it_is_stale() {
        let c = AccountCache::new(Duration::from_secs(60), 2);
        c.insert("contoso".into(), "a1".into());
        assert_eq!(c.get("contoso").as_deref(), Some("a1"));
        assert_eq!(c.get("fabrikam"), None);
        let stale = AccountCache::new(Duration::ZERO, 2);
        stale.insert("contoso".into(), "a1".into());
        assert_eq!(stale.get("contoso"), None);
    }

    #[test]
    fn a_calls_customers_split_into_answered_and_to_look_up() {
        let c = AccountCache::new(Duration::from_secs(60), 10);
        let named = |n: &str| CustomerRef {
            name: n.into(),
            ..Default::default()
        };
        let write = |c: CustomerRef| RecordWrite {
            key: crate::crm::RecordKey::Referral("r".into()),
            fields: Default::default(),
            if_match: None,
            customer: Some(c),
        };
        c.insert(cache_key(&named("Contoso")), "a1".into());
        let writes = [
            write(named("Contoso")),
            write(named("  ")),
            write(named("Fabrikam")),
            write(named(" Fabrikam ")),
        ];
        let (answered, pending) = c.partition(&writes, "no name");
        let known = cache_key(&named("Contoso"));
        let blank = cache_key(&named("  "));
        assert_eq!(answered[&known].as_deref().ok(), Some("a1"));
        assert!(matches!(&answered[&blank], Err(CrmError::Invalid(m)) if m == "no name"));
        assert_eq!(pending.len(), 1, "each customer once");
        assert_eq!(pending[0].1.name, "Fabrikam");
    }

    #[test]
    fn account_ids_come_back_exactly_as_stored() {
        let c = AccountCache::new(Duration::from_secs(60), 10);
        let ids = [
            "49b0be2e-d01c-ed11-b83e-000d3a572421",
            "49B0BE2E-D01C-ED11-B83E-000D3A572421",
            "{49b0be2e-d01c-ed11-b83e-000d3a572421}",
            "0015g00000N1abcAAB",
            "",
        ];
        for (i, id) in ids.iter().enumerate() {
            c.insert(format!("k{i}"), (*id).to_owned());
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(c.get(&format!("k{i}")).as_deref(), Some(*id));
        }
        assert!(matches!(StoredId::new(ids[0].into()), StoredId::Guid(_)));
        assert!(matches!(StoredId::new(ids[1].into()), StoredId::Text(_)));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let c = AccountCache::new(Duration::from_secs(60), 2);
        for i in 0..5 {
            c.insert(format!("k{i}"), format!("a{i}"));
        }
        assert!(c.entries.lock().unwrap().len() <= 2);
        assert_eq!(c.get("k3"), None, "cleared when full");
        assert_eq!(c.get("k4").as_deref(), Some("a4"));
    }

    fn customer(name: &str, duns: Option<&str>, postal: Option<&str>) -> CustomerRef {
        CustomerRef {
            name: name.into(),
            duns: duns.map(Into::into),
            postal_code: postal.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn identities_compare_trimmed_and_case_insensitively() {
        let a = Identity::of(&customer(" Contoso Ltd ", Some("12"), Some("98052 ")), true);
        let b = Identity::of(&customer("CONTOSO LTD", Some(" 12"), Some("98052")), true);
        assert!(a.duns_matches(&b));
        assert!(a.name_matches(&b, MissingPostal::MatchesNone));
        let no_duns = Identity::of(&customer("Contoso Ltd", Some("12"), None), false);
        assert_eq!(no_duns.duns, None);
        assert!(!no_duns.duns_matches(&a));
        // Without a postal code: Dataverse wants none, Salesforce takes any.
        assert!(!no_duns.name_matches(&a, MissingPostal::MatchesNone));
        assert!(no_duns.name_matches(&a, MissingPostal::MatchesAny));
        let blank = Identity::of(&customer("Contoso Ltd", Some(" "), Some("")), true);
        assert_eq!((blank.duns, blank.postal), (None, None));
    }

    #[test]
    fn customers_that_would_find_each_other_share_one_new_account() {
        let ids: Vec<Identity> = [
            customer("Contoso", Some("1"), Some("98052")),
            customer("contoso ", None, Some("98052")),
            customer("Other name", Some("1"), None),
            customer("Contoso", None, Some("10115")),
            customer("Fabrikam", None, None),
            customer("FABRIKAM", None, None),
        ]
        .iter()
        .map(|c| Identity::of(c, true))
        .collect();
        assert_eq!(
            plan_creations(&ids, MissingPostal::MatchesNone),
            vec![0, 0, 0, 3, 4, 4]
        );
        // Salesforce: a name without a postal code finds any of that name.
        let sf: Vec<Identity> = [customer("A", None, Some("1")), customer("a", None, None)]
            .iter()
            .map(|c| Identity::of(c, true))
            .collect();
        assert_eq!(plan_creations(&sf, MissingPostal::MatchesAny), vec![0, 0]);
        assert_eq!(plan_creations(&sf, MissingPostal::MatchesNone), vec![0, 1]);
    }
}
