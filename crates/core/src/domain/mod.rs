//! The co-sell domain: the Referral resource, its lifecycle, deal kinds,
//! validation of new deals and deadlines. Pure: no I/O.

pub mod country;
mod crm_kind;
pub mod deadline;
pub mod deal;
pub mod engagement;
pub mod enums;
pub mod lifecycle;
pub mod patch;
pub mod referral;

pub use crm_kind::CrmKind;
pub use deal::{DealKind, Problem, validate_new_deal};
pub use engagement::{MicrosoftEngagement, TimeLeft};
pub use enums::*;
pub use lifecycle::{LifecycleAction, Stage, TransitionError};
pub use patch::{PatchOp, PatchOpKind};
pub use referral::{Referral, ReferralParseError};

#[cfg(test)]
mod proptests;
