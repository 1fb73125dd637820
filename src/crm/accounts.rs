//! Customer accounts found (or created) recently, shared across write calls,
//! so a backfill looks each customer up once, not once per batch. Entries
//! live a few minutes: an account merged or deleted in the CRM meanwhile is
//! looked up again soon after.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a found account id is trusted.
pub const ACCOUNT_TTL: Duration = Duration::from_secs(5 * 60);
/// Customers remembered at most.
pub const ACCOUNT_CAPACITY: usize = 20_000;

#[derive(Debug)]
pub struct AccountCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, (String, Instant)>>,
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
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(id, _)| id.clone())
    }

    pub fn insert(&self, key: String, account_id: String) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (account_id, Instant::now()));
    }
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
    fn the_cache_stays_bounded() {
        let c = AccountCache::new(Duration::from_secs(60), 2);
        for i in 0..5 {
            c.insert(format!("k{i}"), format!("a{i}"));
        }
        assert!(c.entries.lock().unwrap().len() <= 2);
        assert_eq!(c.get("k4").as_deref(), Some("a4"));
    }
}
