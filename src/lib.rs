//! cosell-sync: keeps Microsoft Partner Center co-sell referrals and CRM
//! opportunities (Dynamics 365, Salesforce) in step, both ways.
//!
//! The daemon's layers, bottom up: `http` (shared client plumbing), the
//! clients (`partner_center`, `crm`), `store` (SQLite), `sync` (the engine),
//! `ops` (daemon loop, health, metrics), `config` and `commands` (the CLI's
//! verbs). No layer imports one above it; `metrics` (names and recording
//! functions) is a leaf every layer calls with its own labels. The domain and
//! the mappings are the pure `cosell-core` crate; the simulator is the
//! `cosell-sim` crate, which shares no code with us.

pub use cosell_core::{domain, mapping};

#[cfg(feature = "sim")]
pub mod bench;
pub mod commands;
pub mod config;
pub mod crm;
#[cfg(feature = "sim")]
pub mod demo;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod partner_center;
#[cfg(feature = "sim")]
pub use cosell_sim as sim;
#[cfg(feature = "sim")]
pub mod simulate;
pub mod store;
pub mod sync;
pub mod telemetry;
