//! Fault injection: rules that make matching requests fail or slow down.

use serde::{Deserialize, Serialize};

use super::observe::Api;

/// What happens to a request a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// 429 with `Retry-After: <seconds>` and the service's own throttling body.
    TooManyRequests { retry_after_secs: u64 },
    /// 503, with `Retry-After` when given.
    ServiceUnavailable {
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// The request is answered normally, this much later.
    Latency { millis: u64 },
    /// The request is processed, but the JSON body is cut short.
    MalformedJson,
    /// The connection is reset without an answer (the request may or may not
    /// have been processed: it is not).
    ConnectionReset,
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::TooManyRequests { .. } => "too_many_requests",
            FaultKind::ServiceUnavailable { .. } => "service_unavailable",
            FaultKind::Latency { .. } => "latency",
            FaultKind::MalformedJson => "malformed_json",
            FaultKind::ConnectionReset => "connection_reset",
        }
    }
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// The API it applies to; every API when absent.
    #[serde(default)]
    pub api: Option<Api>,
    /// An operation as counted (`GET list`, `POST $batch`) or just a method
    /// (`PATCH`); every operation when absent.
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many matching requests it hits; until cleared when absent.
    #[serde(default)]
    pub times: Option<u32>,
    /// How many matching requests it lets through before it hits (e.g. the
    /// second of two creates).
    #[serde(default)]
    pub after: u32,
}

impl FaultRule {
    pub fn new(api: Api, kind: FaultKind) -> Self {
        FaultRule {
            api: Some(api),
            operation: None,
            kind,
            times: None,
            after: 0,
        }
    }

    pub fn after(mut self, passing: u32) -> Self {
        self.after = passing;
        self
    }

    pub fn operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }

    pub fn times(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }

    fn matches(&self, api: Api, operation: &str) -> bool {
        if self.api.is_some_and(|a| a != api) {
            return false;
        }
        match &self.operation {
            None => true,
            Some(want) => {
                let want = want.trim();
                operation.eq_ignore_ascii_case(want)
                    || (operation.len() > want.len()
                        && operation.is_char_boundary(want.len())
                        && operation[..want.len()].eq_ignore_ascii_case(want)
                        && operation.as_bytes()[want.len()] == b' ')
            }
        }
    }
}

/// An installed rule with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFault {
    pub id: u64,
    #[serde(flatten)]
    pub rule: FaultRule,
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    next_id: u64,
    rules: Vec<InstalledFault>,
}

impl Faults {
    pub(crate) fn add(&mut self, rule: FaultRule) -> u64 {
        self.next_id += 1;
        self.rules.push(InstalledFault {
            id: self.next_id,
            rule,
        });
        self.next_id
    }

    pub(crate) fn remove(&mut self, id: u64) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        before != self.rules.len()
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    pub(crate) fn list(&self) -> Vec<InstalledFault> {
        self.rules.clone()
    }

    /// The faults that hit this request, using up one of each rule's times.
    pub(crate) fn take(&mut self, api: Api, operation: &str) -> Vec<FaultKind> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        let mut hit = Vec::new();
        for r in &mut self.rules {
            if r.rule.matches(api, operation) && r.rule.times != Some(0) {
                if r.rule.after > 0 {
                    r.rule.after -= 1;
                    continue;
                }
                hit.push(r.rule.kind.clone());
                if let Some(t) = r.rule.times.as_mut() {
                    *t -= 1;
                }
            }
        }
        self.rules.retain(|r| r.rule.times != Some(0));
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_by_api_and_operation_and_run_out() {
        let mut f = Faults::default();
        f.add(
            FaultRule::new(Api::PartnerCenter, FaultKind::MalformedJson)
                .operation("GET")
                .times(2),
        );
        assert!(f.take(Api::Dynamics, "GET opportunities").is_empty());
        assert!(f.take(Api::PartnerCenter, "PATCH referral").is_empty());
        assert_eq!(
            f.take(Api::PartnerCenter, "GET list"),
            vec![FaultKind::MalformedJson]
        );
        assert_eq!(
            f.take(Api::PartnerCenter, "GET referral"),
            vec![FaultKind::MalformedJson]
        );
        assert!(f.take(Api::PartnerCenter, "GET list").is_empty());
        assert!(f.list().is_empty());
    }

    #[test]
    fn a_rule_can_let_requests_through_before_it_hits() {
        let mut f = Faults::default();
        f.add(
            FaultRule::new(Api::PartnerCenter, FaultKind::ConnectionReset)
                .operation("POST create")
                .after(1)
                .times(1),
        );
        assert!(f.take(Api::PartnerCenter, "POST create").is_empty());
        assert_eq!(
            f.take(Api::PartnerCenter, "POST create"),
            vec![FaultKind::ConnectionReset]
        );
        assert!(f.take(Api::PartnerCenter, "POST create").is_empty());
    }

    #[test]
    fn rules_read_from_json() {
        let r: FaultRule = serde_json::from_str(
            r#"{"api":"salesforce","operation":"GET query","kind":"too_many_requests","retry_after_secs":7,"times":1}"#,
        )
        .unwrap();
        assert_eq!(
            r.kind,
            FaultKind::TooManyRequests {
                retry_after_secs: 7
            }
        );
        assert_eq!(r.api, Some(Api::Salesforce));
    }
}
