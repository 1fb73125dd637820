//! Partner Center Referrals API (`/v1.0/engagements/referrals`): OData list
//! with `$filter`/`$orderby`/`$top` and keyset `$skiptoken` paging, get by id,
//! create, JSON Patch (replace/add) and PUT with If-Match, the documented
//! status transition table, and archiving of unanswered referrals.
//!
//! Written from shared/reference/partner-center-api.md alone; nothing here
//! comes from the engine. Layers, each using only those below it:
//! `control`, `write`, `list` → `http`, `store` → `model`, `patch`, `country`.

mod control;
mod country;
mod http;
mod list;
mod model;
mod patch;
mod store;
mod write;

pub(crate) use http::error;
pub(crate) use list::{get_one, list};
pub use patch::{PatchOp, PatchOpKind};
pub(crate) use store::{PARTNER_MPN_ID, PARTNER_ORG_ID, PARTNER_ORG_NAME, PcState, fmt_time};
pub(crate) use write::{create, patch, put};
