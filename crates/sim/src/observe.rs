//! What the simulator saw: calls per API and per operation, and a bounded
//! log of requests. Tests and benchmarks assert on these.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The four simulated services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    Entra,
    PartnerCenter,
    Dynamics,
    Salesforce,
}

impl Api {
    pub const ALL: [Api; 4] = [
        Api::Entra,
        Api::PartnerCenter,
        Api::Dynamics,
        Api::Salesforce,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Api::Entra => "entra",
            Api::PartnerCenter => "partner_center",
            Api::Dynamics => "dynamics",
            Api::Salesforce => "salesforce",
        }
    }

    pub fn parse(s: &str) -> Option<Api> {
        let s = s.trim().replace('-', "_");
        Api::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(&s))
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Calls received: per API, and per API + operation (e.g. `GET list`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub per_api: BTreeMap<Api, u64>,
    pub per_operation: BTreeMap<Api, BTreeMap<String, u64>>,
}

impl Counters {
    pub(crate) fn record(&mut self, api: Api, operation: &str) {
        *self.per_api.entry(api).or_default() += 1;
        let ops = self.per_operation.entry(api).or_default();
        match ops.get_mut(operation) {
            Some(n) => *n += 1,
            None => {
                ops.insert(operation.to_owned(), 1);
            }
        }
    }

    /// Calls to one API.
    pub fn api(&self, api: Api) -> u64 {
        self.per_api.get(&api).copied().unwrap_or(0)
    }

    /// Calls to one operation of one API, e.g. `(Api::Dynamics, "POST $batch")`.
    pub fn operation(&self, api: Api, operation: &str) -> u64 {
        self.per_operation
            .get(&api)
            .and_then(|ops| ops.get(operation))
            .copied()
            .unwrap_or(0)
    }

    /// Calls to every API together.
    pub fn total(&self) -> u64 {
        self.per_api.values().sum()
    }
}

/// One request as the simulator saw it. Bodies and credentials are never kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub seq: u64,
    /// Simulated time the request arrived.
    pub at: DateTime<Utc>,
    pub api: Api,
    pub method: String,
    /// Path and query string.
    pub uri: String,
    pub operation: String,
    pub status: u16,
    /// A fault the simulator injected into this request, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// Bounded in-memory request log (oldest entries drop first).
#[derive(Debug)]
pub(crate) struct RequestLog {
    capacity: usize,
    next_seq: u64,
    entries: VecDeque<LoggedRequest>,
}

impl RequestLog {
    pub(crate) fn new(capacity: usize) -> Self {
        RequestLog {
            capacity,
            next_seq: 1,
            entries: VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, mut entry: LoggedRequest) {
        entry.seq = self.next_seq;
        self.next_seq += 1;
        if self.capacity == 0 {
            return;
        }
        while self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    pub(crate) fn snapshot(&self) -> Vec<LoggedRequest> {
        self.entries.iter().cloned().collect()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_per_api_and_operation() {
        let mut c = Counters::default();
        c.record(Api::PartnerCenter, "GET list");
        c.record(Api::PartnerCenter, "GET list");
        c.record(Api::Dynamics, "POST $batch");
        assert_eq!(c.api(Api::PartnerCenter), 2);
        assert_eq!(c.operation(Api::PartnerCenter, "GET list"), 2);
        assert_eq!(c.operation(Api::Dynamics, "POST $batch"), 1);
        assert_eq!(c.operation(Api::Salesforce, "GET query"), 0);
        assert_eq!(c.total(), 3);
    }

    #[test]
    fn the_log_is_bounded() {
        let mut log = RequestLog::new(2);
        for i in 0..3 {
            log.push(LoggedRequest {
                seq: 0,
                at: Utc::now(),
                api: Api::Entra,
                method: "POST".into(),
                uri: format!("/{i}"),
                operation: "POST token".into(),
                status: 200,
                fault: None,
            });
        }
        let s = log.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].uri, "/1");
        assert_eq!(s[1].seq, 3);
        assert_eq!(Api::parse("partner-center"), Some(Api::PartnerCenter));
    }
}
