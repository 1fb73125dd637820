//! cosell-sync: keeps Microsoft Partner Center co-sell referrals and CRM
//! opportunities (Dynamics 365, Salesforce) in step, both ways.

pub mod domain;
pub mod sim;
