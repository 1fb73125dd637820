//! What a seller sees of the two 14-day windows: the time left to answer a
//! received referral, and Microsoft's answer to a co-sell request.

use std::fmt;

use chrono::{DateTime, Duration, Utc};

use super::lifecycle::Stage;

/// Microsoft's answer to a co-sell request, read from the Microsoft-targeted
/// referral of the deal's engagement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MicrosoftEngagement {
    /// Invited; Microsoft's sellers have not answered yet.
    Requested,
    /// Microsoft's sellers accepted their referral (and may have won or lost it since).
    Engaged,
    /// Microsoft's sellers declined.
    Declined,
    /// No answer within Microsoft's decision window.
    NoAnswer,
}

impl MicrosoftEngagement {
    pub const ALL: [MicrosoftEngagement; 4] = [
        MicrosoftEngagement::Requested,
        MicrosoftEngagement::Engaged,
        MicrosoftEngagement::Declined,
        MicrosoftEngagement::NoAnswer,
    ];

    /// The value written to the CRM (`Requested`, `Engaged`, `Declined`, `No answer`).
    pub fn label(self) -> &'static str {
        match self {
            MicrosoftEngagement::Requested => "Requested",
            MicrosoftEngagement::Engaged => "Engaged",
            MicrosoftEngagement::Declined => "Declined",
            MicrosoftEngagement::NoAnswer => "No answer",
        }
    }

    /// A metric label (`requested`, `engaged`, `declined`, `no_answer`).
    pub fn metric_label(self) -> &'static str {
        match self {
            MicrosoftEngagement::Requested => "requested",
            MicrosoftEngagement::Engaged => "engaged",
            MicrosoftEngagement::Declined => "declined",
            MicrosoftEngagement::NoAnswer => "no_answer",
        }
    }

    pub fn parse(s: &str) -> Option<MicrosoftEngagement> {
        Self::ALL.into_iter().find(|e| e.label() == s)
    }

    /// Microsoft's answer from the stage of its referral; `None` while the
    /// stage is unknown.
    pub fn of_microsoft_stage(stage: Option<Stage>) -> Option<MicrosoftEngagement> {
        Some(match stage? {
            Stage::Received => MicrosoftEngagement::Requested,
            Stage::Accepted | Stage::Won | Stage::Lost => MicrosoftEngagement::Engaged,
            Stage::Declined => MicrosoftEngagement::Declined,
            Stage::Expired => MicrosoftEngagement::NoAnswer,
        })
    }

    /// Whether Microsoft has answered (a later reading never goes back to
    /// `Requested` or `No answer`).
    pub fn is_answer(self) -> bool {
        matches!(
            self,
            MicrosoftEngagement::Engaged | MicrosoftEngagement::Declined
        )
    }
}

impl fmt::Display for MicrosoftEngagement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How long a received referral has left, as a metric bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeLeft {
    /// Less than 48 hours (or already due).
    Under48Hours,
    /// Less than 7 days.
    Under7Days,
    /// 7 days or more.
    AtLeast7Days,
}

impl TimeLeft {
    pub const ALL: [TimeLeft; 3] = [
        TimeLeft::Under48Hours,
        TimeLeft::Under7Days,
        TimeLeft::AtLeast7Days,
    ];

    /// When a warning is logged: this much before the deadline.
    pub const WARN_BEFORE: Duration = Duration::hours(48);

    /// Where `Under7Days` ends.
    pub const WEEK: Duration = Duration::days(7);

    pub fn of(deadline: DateTime<Utc>, now: DateTime<Utc>) -> TimeLeft {
        let left = deadline - now;
        if left < Self::WARN_BEFORE {
            TimeLeft::Under48Hours
        } else if left < Self::WEEK {
            TimeLeft::Under7Days
        } else {
            TimeLeft::AtLeast7Days
        }
    }

    /// The metric label: `lt_48h`, `lt_7d`, `ge_7d`.
    pub fn label(self) -> &'static str {
        match self {
            TimeLeft::Under48Hours => "lt_48h",
            TimeLeft::Under7Days => "lt_7d",
            TimeLeft::AtLeast7Days => "ge_7d",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn microsoft_s_answer_follows_its_referral() {
        use MicrosoftEngagement as E;
        assert_eq!(
            E::of_microsoft_stage(Some(Stage::Received)),
            Some(E::Requested)
        );
        assert_eq!(
            E::of_microsoft_stage(Some(Stage::Accepted)),
            Some(E::Engaged)
        );
        assert_eq!(E::of_microsoft_stage(Some(Stage::Won)), Some(E::Engaged));
        assert_eq!(
            E::of_microsoft_stage(Some(Stage::Declined)),
            Some(E::Declined)
        );
        assert_eq!(
            E::of_microsoft_stage(Some(Stage::Expired)),
            Some(E::NoAnswer)
        );
        assert_eq!(E::of_microsoft_stage(None), None);
        for e in E::ALL {
            assert_eq!(E::parse(e.label()), Some(e));
        }
        assert_eq!(E::NoAnswer.label(), "No answer");
    }

    #[test]
    fn time_left_buckets() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            TimeLeft::of(now - Duration::hours(1), now),
            TimeLeft::Under48Hours
        );
        assert_eq!(
            TimeLeft::of(now + Duration::hours(47), now),
            TimeLeft::Under48Hours
        );
        assert_eq!(
            TimeLeft::of(now + Duration::hours(48), now),
            TimeLeft::Under7Days
        );
        assert_eq!(
            TimeLeft::of(now + Duration::days(7), now),
            TimeLeft::AtLeast7Days
        );
    }
}
