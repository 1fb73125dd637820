//! The co-sell domain and the CRM mappings of cosell-sync: Partner Center's
//! Referral model, lifecycle and deal rules, deadlines, and the field and
//! stage mappings CRM admins own. Pure functions of their inputs: no I/O, no
//! async runtime.

pub mod domain;
pub mod mapping;
