//! The simulated org's tables: columns and their types, option sets,
//! navigation properties and alternate keys (crm-apis.md, Dataverse).

use serde_json::Value;

use crate::SimOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColType {
    Guid,
    Text(usize),
    Money,
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    DateTime,
    DateOnly,
    Choice(&'static [(i64, &'static str)]),
    /// A lookup's `_x_value` column (read-only; written through a navigation property).
    Lookup,
}

impl ColType {
    pub(super) fn attribute_type(self) -> &'static str {
        match self {
            ColType::Guid => "Uniqueidentifier",
            ColType::Text(n) if n > 4000 => "Memo",
            ColType::Text(_) => "String",
            ColType::Money => "Money",
            ColType::Int { .. } => "Integer",
            ColType::Bool => "Boolean",
            ColType::DateTime | ColType::DateOnly => "DateTime",
            ColType::Choice(_) => "Picklist",
            ColType::Lookup => "Lookup",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) ty: ColType,
    /// Set by the system only (ignored when sent).
    pub(crate) system: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct NavProp {
    /// e.g. `parentaccountid` or `customerid_account`.
    pub(super) name: &'static str,
    /// The `_x_value` column it sets.
    pub(super) column: &'static str,
    pub(super) target_set: &'static str,
    pub(super) target_logical: &'static str,
}

#[derive(Debug, Clone)]
pub(crate) struct TableDef {
    pub(crate) logical: &'static str,
    pub(crate) set: &'static str,
    pub(crate) pk: &'static str,
    pub(super) primary_name: &'static str,
    pub(crate) columns: Vec<Column>,
    /// Alternate keys: (key name, column).
    pub(super) keys: Vec<(String, String)>,
    /// Text columns whose `eq` look-ups are answered from an index (the
    /// columns an account look-up names: DUNS number, name).
    pub(super) indexed: Vec<&'static str>,
    pub(super) nav: Vec<NavProp>,
    pub(super) change_tracking: bool,
}

impl TableDef {
    pub(super) fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

pub(super) const STATE_OPP: &[(i64, &str)] = &[(0, "Open"), (1, "Won"), (2, "Lost")];

pub(super) const STATUS_OPP: &[(i64, &str)] = &[
    (1, "In Progress"),
    (2, "On Hold"),
    (3, "Won"),
    (4, "Canceled"),
    (5, "Out-Sold"),
];

/// "How can Microsoft help?" (the `new_` publisher's option values).
pub(crate) const HELP_OPP: &[(i64, &str)] = &[
    (100_000_000, "Workload specific value proposition"),
    (100_000_001, "Customer technical architecture"),
    (100_000_002, "Proof of concept or demo"),
    (100_000_003, "Quotes or licensing"),
    (100_000_004, "Post sales customer success"),
    (100_000_005, "General or other"),
];

pub(super) const SALES_STAGE: &[(i64, &str)] =
    &[(0, "Qualify"), (1, "Develop"), (2, "Propose"), (3, "Close")];

pub(super) const RATING: &[(i64, &str)] = &[(1, "Hot"), (2, "Warm"), (3, "Cold")];

pub(super) const STATE_ACTIVE: &[(i64, &str)] = &[(0, "Active"), (1, "Inactive")];

pub(super) const STATUS_ACTIVE: &[(i64, &str)] = &[(1, "Active"), (2, "Inactive")];

/// The state a statuscode of an opportunity belongs to.
pub(super) fn opp_state_of_status(status: i64) -> Option<i64> {
    match status {
        1 | 2 => Some(0),
        3 => Some(1),
        4 | 5 => Some(2),
        _ => None,
    }
}

pub(super) fn col(name: &str, ty: ColType) -> Column {
    Column {
        name: name.to_owned(),
        ty,
        system: false,
    }
}

pub(super) fn sys(name: &str, ty: ColType) -> Column {
    Column {
        name: name.to_owned(),
        ty,
        system: true,
    }
}

pub(super) fn audit_columns() -> Vec<Column> {
    vec![
        sys("createdon", ColType::DateTime),
        sys("modifiedon", ColType::DateTime),
        sys(
            "versionnumber",
            ColType::Int {
                min: 0,
                max: i64::MAX,
            },
        ),
        sys("_ownerid_value", ColType::Lookup),
    ]
}

pub(crate) fn table_defs(opts: &SimOptions) -> Vec<TableDef> {
    let key = opts.dynamics_referral_key.clone();
    let mut opp = vec![
        col("opportunityid", ColType::Guid),
        col("name", ColType::Text(300)),
        col("description", ColType::Text(2000)),
        col("estimatedvalue", ColType::Money),
        col("actualvalue", ColType::Money),
        col("estimatedclosedate", ColType::DateOnly),
        col("actualclosedate", ColType::DateOnly),
        col("closeprobability", ColType::Int { min: 0, max: 100 }),
        col("statecode", ColType::Choice(STATE_OPP)),
        col("statuscode", ColType::Choice(STATUS_OPP)),
        col("salesstage", ColType::Choice(SALES_STAGE)),
        col("opportunityratingcode", ColType::Choice(RATING)),
        col("stepname", ColType::Text(200)),
        sys("_parentaccountid_value", ColType::Lookup),
        sys("_parentcontactid_value", ColType::Lookup),
        sys("_customerid_value", ColType::Lookup),
        sys("_transactioncurrencyid_value", ColType::Lookup),
        col(&key, ColType::Text(100)),
        col("new_referrallink", ColType::Text(255)),
        col("new_syncwithpartnercenter", ColType::Bool),
        col("new_howcanmicrosofthelp", ColType::Choice(HELP_OPP)),
        col("new_currencycode", ColType::Text(3)),
        col("new_customername", ColType::Text(160)),
        col("new_customeraddressline1", ColType::Text(250)),
        col("new_customercity", ColType::Text(80)),
        col("new_customerstate", ColType::Text(50)),
        col("new_customerpostalcode", ColType::Text(20)),
        col("new_customercountry", ColType::Text(100)),
        col("new_customercontactfirstname", ColType::Text(50)),
        col("new_customercontactlastname", ColType::Text(50)),
        col("new_customercontactemail", ColType::Text(100)),
        col("new_customercontactphone", ColType::Text(50)),
        col("new_customerconsenttoshare", ColType::Bool),
        col("new_partnercontactfirstname", ColType::Text(50)),
        col("new_partnercontactlastname", ColType::Text(50)),
        col("new_partnercontactemail", ColType::Text(100)),
        col("new_partnercontactphone", ColType::Text(50)),
        col("new_referralvisibility", ColType::Bool),
        col("new_microsoftsolutions", ColType::Text(1000)),
        col("new_closereason", ColType::Text(500)),
        col("new_microsoftcrmidentifier", ColType::Text(100)),
        col("new_partnercentersyncerror", ColType::Text(4000)),
        col("new_answerby", ColType::DateTime),
        col("new_referredby", ColType::Text(160)),
        col("new_referralnotes", ColType::Text(4000)),
        col("new_microsofthelprequested", ColType::Text(60)),
        col("new_referraldirection", ColType::Text(20)),
        col("new_partnerteam", ColType::Text(1000)),
        col("new_partnercenterfavorite", ColType::Bool),
        col("new_marketingcampaignid", ColType::Text(100)),
        col("new_registrationstatus", ColType::Text(40)),
        col("new_microsoftengagement", ColType::Text(20)),
        col("new_audit", ColType::Text(100_000)),
    ];
    for extra in &opts.dynamics_extra_columns {
        if !opp.iter().any(|c| &c.name == extra) {
            opp.push(col(extra, ColType::Text(4000)));
        }
    }
    opp.extend(audit_columns());
    let mut account = vec![
        col("accountid", ColType::Guid),
        col("name", ColType::Text(160)),
        col("accountnumber", ColType::Text(20)),
        col("address1_line1", ColType::Text(250)),
        col("address1_city", ColType::Text(80)),
        col("address1_stateorprovince", ColType::Text(50)),
        col("address1_postalcode", ColType::Text(20)),
        col("address1_country", ColType::Text(80)),
        col("telephone1", ColType::Text(50)),
        col("emailaddress1", ColType::Text(100)),
        col("websiteurl", ColType::Text(200)),
        col(
            "numberofemployees",
            ColType::Int {
                min: 0,
                max: 1_000_000_000,
            },
        ),
        col("statecode", ColType::Choice(STATE_ACTIVE)),
        col("statuscode", ColType::Choice(STATUS_ACTIVE)),
        col("new_dunsnumber", ColType::Text(20)),
    ];
    account.extend(audit_columns());
    let mut contact = vec![
        col("contactid", ColType::Guid),
        col("firstname", ColType::Text(50)),
        col("lastname", ColType::Text(50)),
        sys("fullname", ColType::Text(160)),
        col("emailaddress1", ColType::Text(100)),
        col("telephone1", ColType::Text(50)),
        col("jobtitle", ColType::Text(100)),
        sys("_parentcustomerid_value", ColType::Lookup),
        col("statecode", ColType::Choice(STATE_ACTIVE)),
        col("statuscode", ColType::Choice(STATUS_ACTIVE)),
    ];
    contact.extend(audit_columns());
    let currency = vec![
        col("transactioncurrencyid", ColType::Guid),
        col("isocurrencycode", ColType::Text(5)),
        col("currencyname", ColType::Text(100)),
        col("currencysymbol", ColType::Text(10)),
        sys("modifiedon", ColType::DateTime),
        sys("createdon", ColType::DateTime),
        sys(
            "versionnumber",
            ColType::Int {
                min: 0,
                max: i64::MAX,
            },
        ),
    ];
    vec![
        TableDef {
            logical: "opportunity",
            set: "opportunities",
            pk: "opportunityid",
            primary_name: "name",
            columns: opp,
            keys: vec![(format!("{key}_key"), key.clone())],
            indexed: vec![],
            nav: vec![
                NavProp {
                    name: "parentaccountid",
                    column: "_parentaccountid_value",
                    target_set: "accounts",
                    target_logical: "account",
                },
                NavProp {
                    name: "customerid_account",
                    column: "_customerid_value",
                    target_set: "accounts",
                    target_logical: "account",
                },
                NavProp {
                    name: "customerid_contact",
                    column: "_customerid_value",
                    target_set: "contacts",
                    target_logical: "contact",
                },
                NavProp {
                    name: "parentcontactid",
                    column: "_parentcontactid_value",
                    target_set: "contacts",
                    target_logical: "contact",
                },
                NavProp {
                    name: "transactioncurrencyid",
                    column: "_transactioncurrencyid_value",
                    target_set: "transactioncurrencies",
                    target_logical: "transactioncurrency",
                },
            ],
            change_tracking: true,
        },
        TableDef {
            logical: "account",
            set: "accounts",
            pk: "accountid",
            primary_name: "name",
            columns: account,
            keys: vec![("accountnumber_key".into(), "accountnumber".into())],
            indexed: vec!["name", "new_dunsnumber"],
            nav: vec![NavProp {
                name: "primarycontactid",
                column: "_primarycontactid_value",
                target_set: "contacts",
                target_logical: "contact",
            }],
            change_tracking: true,
        },
        TableDef {
            logical: "contact",
            set: "contacts",
            pk: "contactid",
            primary_name: "fullname",
            columns: contact,
            keys: vec![],
            indexed: vec![],
            nav: vec![
                NavProp {
                    name: "parentcustomerid_account",
                    column: "_parentcustomerid_value",
                    target_set: "accounts",
                    target_logical: "account",
                },
                NavProp {
                    name: "parentcustomerid_contact",
                    column: "_parentcustomerid_value",
                    target_set: "contacts",
                    target_logical: "contact",
                },
            ],
            change_tracking: true,
        },
        TableDef {
            logical: "transactioncurrency",
            set: "transactioncurrencies",
            pk: "transactioncurrencyid",
            primary_name: "currencyname",
            columns: currency,
            keys: vec![],
            indexed: vec![],
            nav: vec![],
            change_tracking: false,
        },
    ]
}

pub(super) fn formatted(def: &TableDef, name: &str, v: &Value) -> Option<String> {
    let c = def.column(name)?;
    match (c.ty, v) {
        (ColType::Choice(opts), Value::Number(n)) => opts
            .iter()
            .find(|(k, _)| Some(*k) == n.as_i64())
            .map(|(_, l)| (*l).to_owned()),
        (ColType::Money, Value::Number(n)) => n.as_f64().map(|x| format!("${x:.2}")),
        _ => None,
    }
}
