//! cosell-sync: keeps Microsoft Partner Center co-sell referrals and CRM
//! opportunities (Dynamics 365, Salesforce) in step, both ways.

pub mod bench;
pub mod commands;
pub mod config;
pub mod crm;
pub mod demo;
pub mod domain;
pub mod http;
pub mod mapping;
pub mod ops;
pub mod partner_center;
pub mod sim;
pub mod store;
pub mod sync;
pub mod telemetry;
