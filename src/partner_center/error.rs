//! Everything that can go wrong talking to Partner Center, each with a retry
//! directive and an operator hint.

use crate::domain::deal::describe_problems;
use crate::domain::{Problem, Referral, ReferralParseError, TransitionError};
use crate::http::{HttpError, RetryDirective, Retryable, TokenError};

/// What a [`RefreshTokenStore`](super::RefreshTokenStore) implementation may fail with.
pub type TokenStoreError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The command an operator runs to sign Partner Center in again.
pub const LOGIN_COMMAND: &str = "cosell-sync login partner-center";

/// A variant whose message includes its cause does not also give it as
/// `source()`, so a chain printer says it once.
#[derive(Debug, thiserror::Error)]
pub enum PartnerCenterError {
    /// No usable refresh token: the sign-in expired, was revoked, or never happened.
    #[error("Partner Center sign-in needed ({reason}): run `cosell-sync login partner-center`")]
    LoginRequired { reason: String },

    /// The outbound deal fails validation; nothing was sent.
    #[error("the deal cannot be created: {}", describe_problems(.0))]
    Invalid(Vec<Problem>),

    /// The lifecycle forbids this stage change; nothing was sent.
    #[error("stage change refused: {0}")]
    Transition(TransitionError),

    #[error("referral {id} is {status}/{substatus}, which is not a known lifecycle stage")]
    UnknownStage {
        id: String,
        status: String,
        substatus: String,
    },

    /// A patch this client will not send (nothing was sent).
    #[error("invalid patch for referral {id}: {reason}")]
    InvalidPatch { id: String, reason: String },

    #[error("referral {id} has no eTag; re-read it before updating")]
    MissingETag { id: String },

    /// 412: someone changed the referral since we read it.
    #[error(
        "referral {id} was modified concurrently (its eTag no longer matches); re-read it and decide again"
    )]
    ModifiedConcurrently { id: String },

    #[error(transparent)]
    Http(#[from] HttpError),

    #[error(transparent)]
    Token(#[from] TokenError),

    /// A referral the service sent could not be read; `raw` is kept for quarantine.
    #[error(transparent)]
    Unreadable(#[from] Box<ReferralParseError>),

    /// A response that is not the documented shape (e.g. a page without `value`).
    #[error("unexpected response from {what}: {reason}")]
    UnexpectedResponse { what: String, reason: String },

    /// The partner's Shared referral exists but the Microsoft-targeted one
    /// was not created; finish with `invite_microsoft` (after checking
    /// `find_microsoft_referral`).
    #[error("co-sell deal {} was created, but inviting Microsoft failed: {source}", .created.id)]
    CoSellIncomplete {
        created: Box<Referral>,
        #[source]
        source: Box<PartnerCenterError>,
    },

    #[error("the refresh token store failed: {0}")]
    Store(TokenStoreError),

    #[error(
        "the sign-in code expired before sign-in was completed; run `cosell-sync login partner-center` again"
    )]
    DeviceCodeExpired,

    #[error("the sign-in was declined ({0})")]
    LoginDeclined(String),

    #[error("invalid Partner Center settings: {0}")]
    Config(String),
}

impl From<TransitionError> for PartnerCenterError {
    fn from(e: TransitionError) -> Self {
        PartnerCenterError::Transition(e)
    }
}

impl PartnerCenterError {
    /// The HTTP status, when the service answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            PartnerCenterError::Http(e) => e.status(),
            PartnerCenterError::CoSellIncomplete { source, .. } => source.status(),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    pub fn is_login_required(&self) -> bool {
        matches!(self, PartnerCenterError::LoginRequired { .. })
    }

    /// Operator-facing advice.
    pub fn hint(&self) -> String {
        use PartnerCenterError as E;
        match self {
            E::LoginRequired { .. } => format!(
                "run `{LOGIN_COMMAND}` with an account that has the Referrals Admin role; Partner Center work is paused until then"
            ),
            E::Invalid(_) => "fix the listed fields on the CRM record; the deal is created once they are valid".into(),
            E::Transition(_) | E::UnknownStage { .. } => {
                "Partner Center owns the referral's status; change the CRM record back or act in Partner Center".into()
            }
            E::InvalidPatch { .. } | E::MissingETag { .. } => "this is a bug in the caller; report it".into(),
            E::ModifiedConcurrently { .. } => "the referral is re-read and the change decided again".into(),
            E::Http(e) => match e.status() {
                Some(403) => "the signed-in account lacks access to this referral; it needs the Referrals Admin role".into(),
                _ => e.hint(),
            },
            E::Token(e) => e.hint(),
            E::Unreadable(_) => "the record is quarantined with its raw JSON; report it so this version can read it".into(),
            E::UnexpectedResponse { .. } => "Partner Center sent an unexpected response; it is retried".into(),
            E::CoSellIncomplete { .. } => {
                "the partner's referral exists; Microsoft is invited on the next attempt (it is looked up first)".into()
            }
            E::Store(_) => "check that the state database is writable".into(),
            E::DeviceCodeExpired => format!("run `{LOGIN_COMMAND}` again and finish signing in before the code expires"),
            E::LoginDeclined(_) => "sign in with an account that has the Referrals Admin role and consent to the app".into(),
            E::Config(_) => "fix the [partner_center] settings".into(),
        }
    }
}

impl Retryable for PartnerCenterError {
    fn directive(&self) -> RetryDirective {
        use PartnerCenterError as E;
        match self {
            E::LoginRequired { .. }
            | E::Store(_)
            | E::DeviceCodeExpired
            | E::LoginDeclined(_)
            | E::Config(_) => RetryDirective::Operator,
            E::Invalid(_)
            | E::Transition(_)
            | E::UnknownStage { .. }
            | E::InvalidPatch { .. }
            | E::MissingETag { .. }
            | E::Unreadable(_) => RetryDirective::Permanent,
            E::ModifiedConcurrently { .. } | E::UnexpectedResponse { .. } => {
                RetryDirective::Backoff
            }
            E::Http(e) => e.directive(),
            E::Token(e) => e.directive(),
            E::CoSellIncomplete { source, .. } => source.directive(),
        }
    }

    fn retry_in_place(&self) -> bool {
        match self {
            PartnerCenterError::Http(e) => e.retry_in_place(),
            PartnerCenterError::Token(e) => e.retry_in_place(),
            PartnerCenterError::ModifiedConcurrently { .. }
            | PartnerCenterError::CoSellIncomplete { .. } => false,
            other => other.directive().is_retriable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_required_tells_the_operator_what_to_run() {
        let e = PartnerCenterError::LoginRequired {
            reason: "invalid_grant".into(),
        };
        assert!(
            e.to_string()
                .contains("run `cosell-sync login partner-center`")
        );
        assert_eq!(e.directive(), RetryDirective::Operator);
        assert!(e.hint().contains(LOGIN_COMMAND));
    }

    #[test]
    fn concurrency_conflicts_are_retried_after_a_re_read_only() {
        let e = PartnerCenterError::ModifiedConcurrently { id: "r".into() };
        assert_eq!(e.directive(), RetryDirective::Backoff);
        assert!(!e.retry_in_place());
    }
}
