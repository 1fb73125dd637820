//! Lifecycle stage ↔ CRM field values, and the reading of CRM values
//! relative to a deal's current stage.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::domain::Stage;

use super::value::scalar_text;

/// The CRM values that represent one stage. Each field lists the values that
/// read as this stage; the first is the one written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StagePattern {
    pub fields: Vec<(String, Vec<Value>)>,
}

use super::value::loosely_same as value_matches;

impl StagePattern {
    /// Whether a CRM record shows these values.
    pub fn matches(&self, record: &Map<String, Value>) -> bool {
        !self.fields.is_empty()
            && self.fields.iter().all(|(field, values)| {
                let actual = record.get(field).unwrap_or(&Value::Null);
                values.iter().any(|v| value_matches(v, actual))
            })
    }

    /// Whether one record could show both patterns (they cannot be told apart).
    pub fn overlaps(&self, other: &StagePattern) -> bool {
        self.fields.iter().all(|(field, values)| {
            match other.fields.iter().find(|(f, _)| f == field) {
                None => true,
                Some((_, theirs)) => values
                    .iter()
                    .any(|v| theirs.iter().any(|w| value_matches(v, w))),
            }
        })
    }

    /// The values written for this stage.
    pub fn written(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields
            .iter()
            .filter_map(|(f, vs)| vs.first().map(|v| (f.as_str(), v)))
    }
}

/// `[stages]` of a mapping file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StageRules {
    pub received: Option<StagePattern>,
    pub accepted: Option<StagePattern>,
    pub won: Option<StagePattern>,
    pub lost: Option<StagePattern>,
    pub declined: Option<StagePattern>,
    pub expired: Option<StagePattern>,
    /// Optional: values every open deal shows (Dynamics `statecode = 0`).
    /// When given, a record that is neither open nor a mapped closed stage reads as unknown.
    pub open: Option<StagePattern>,
    /// CRM field holding the reason of a decline or loss.
    pub reason_field: Option<String>,
}

/// What the CRM's stage values mean for the deal, relative to its current stage.
#[derive(Debug, Clone, PartialEq)]
pub enum StageReading {
    /// The CRM shows the deal's current stage.
    Unchanged,
    Accept,
    Decline {
        reason: Option<String>,
    },
    Win,
    Lose {
        reason: Option<String>,
    },
    /// The CRM shows a stage the lifecycle cannot reach from the current one
    /// (e.g. back to on-hold after acceptance, or won while still received).
    NotAllowed {
        from: Stage,
        to: Stage,
    },
    /// The stage fields match no mapped stage; their values are given.
    Unknown(Map<String, Value>),
}

impl StageRules {
    pub fn pattern(&self, stage: Stage) -> Option<&StagePattern> {
        match stage {
            Stage::Received => self.received.as_ref(),
            Stage::Accepted => self.accepted.as_ref(),
            Stage::Won => self.won.as_ref(),
            Stage::Lost => self.lost.as_ref(),
            Stage::Declined => self.declined.as_ref(),
            Stage::Expired => self.expired.as_ref(),
        }
    }

    /// Every CRM field the stage rules read or write, in order, without duplicates.
    pub fn fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let patterns = Stage::ALL
            .iter()
            .filter_map(|s| self.pattern(*s))
            .chain(self.open.as_ref());
        for p in patterns {
            for (f, _) in &p.fields {
                if !out.contains(&f.as_str()) {
                    out.push(f);
                }
            }
        }
        if let Some(r) = &self.reason_field
            && !out.contains(&r.as_str())
        {
            out.push(r);
        }
        out
    }

    /// The stages a record's values stand for, without context. Closed stages
    /// first; an open record that is not on hold reads as accepted.
    pub fn candidates(&self, record: &Map<String, Value>) -> BTreeSet<Stage> {
        // A record without any stage value (not selected, or blank) shows no stage.
        let reason = self.reason_field.as_deref();
        let any_value = self
            .fields()
            .into_iter()
            .filter(|f| Some(*f) != reason)
            .any(|f| record.get(f).is_some_and(|v| !v.is_null()));
        if !any_value {
            return BTreeSet::new();
        }
        let closed: BTreeSet<Stage> = [Stage::Won, Stage::Lost, Stage::Declined, Stage::Expired]
            .into_iter()
            .filter(|s| self.pattern(*s).is_some_and(|p| p.matches(record)))
            .collect();
        if !closed.is_empty() {
            return closed;
        }
        if self.received.as_ref().is_some_and(|p| p.matches(record)) {
            return BTreeSet::from([Stage::Received]);
        }
        if self.open.as_ref().is_some_and(|p| !p.matches(record)) {
            return BTreeSet::new();
        }
        if self.accepted.is_none() {
            return BTreeSet::new();
        }
        BTreeSet::from([Stage::Accepted])
    }

    fn stage_values(&self, record: &Map<String, Value>) -> Map<String, Value> {
        self.fields()
            .into_iter()
            .filter(|f| Some(*f) != self.reason_field.as_deref())
            .map(|f| (f.to_owned(), record.get(f).cloned().unwrap_or(Value::Null)))
            .collect()
    }

    fn reason(&self, record: &Map<String, Value>) -> Option<String> {
        let field = self.reason_field.as_deref()?;
        let text = scalar_text(record.get(field)?)?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }

    /// Reads the CRM's stage values relative to the deal's current stage:
    /// closed-lost on a received deal declines it, on an accepted deal loses
    /// it; any open stage other than on-hold counts as accepted.
    pub fn read(&self, record: &Map<String, Value>, current: Stage) -> StageReading {
        let shown = self.candidates(record);
        if shown.is_empty() {
            return StageReading::Unknown(self.stage_values(record));
        }
        if shown.contains(&current) {
            return StageReading::Unchanged;
        }
        let closed_lost = shown.contains(&Stage::Lost) || shown.contains(&Stage::Declined);
        let first = shown.iter().next().copied().unwrap_or(current);
        match current {
            Stage::Received => {
                if shown.contains(&Stage::Accepted) {
                    StageReading::Accept
                } else if closed_lost {
                    StageReading::Decline {
                        reason: self.reason(record),
                    }
                } else {
                    StageReading::NotAllowed {
                        from: current,
                        to: first,
                    }
                }
            }
            Stage::Accepted => {
                if shown.contains(&Stage::Won) {
                    StageReading::Win
                } else if closed_lost {
                    StageReading::Lose {
                        reason: self.reason(record),
                    }
                } else {
                    StageReading::NotAllowed {
                        from: current,
                        to: first,
                    }
                }
            }
            _ => StageReading::NotAllowed {
                from: current,
                to: first,
            },
        }
    }

    /// Whether the record already shows `stage` (so its stage fields need no write).
    pub fn shows(&self, record: &Map<String, Value>, stage: Stage) -> bool {
        self.candidates(record).contains(&stage)
    }
}
