//! `customer_contact = "record"` in either CRM: a referral's customer
//! contact lands as a Contact under the deal's account, linked to the
//! opportunity (Salesforce: primary OpportunityContactRole; Dynamics:
//! `parentcontactid`); the same contact on a second referral is reused, not
//! created again; and a co-sell deal created in the CRM takes its customer
//! contact from the Contact linked to the opportunity.

mod sync_support;

use cosell_sync::mapping::{ContactMode, DEFAULT_DYNAMICS, DEFAULT_SALESFORCE, Mapping};
use cosell_sync::sim::{Api, FaultKind, FaultRule, PatchOp};
use serde_json::{Value, json};
use sync_support::*;

/// Both shipped mappings with `customer_contact = "record"`, written where
/// the simulator's config looks for them.
fn record_mappings(h: &Harness) {
    let dir = h.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in [
        ("salesforce.toml", DEFAULT_SALESFORCE),
        ("dynamics.toml", DEFAULT_DYNAMICS),
    ] {
        // `[status]` is the last table of both shipped mappings.
        let text = format!("{text}\ncustomer_contact = \"record\"\n");
        let m = Mapping::load(&text, file).unwrap_or_else(|p| panic!("{p:#?}"));
        assert_eq!(m.status.customer_contact, ContactMode::Record, "{file}");
        std::fs::write(dir.join(file), text).unwrap();
    }
}

async fn record_harness() -> Harness {
    let h = harness(options(0, 0)).await;
    record_mappings(&h);
    h.settle(3).await;
    h
}

fn sf_records(h: &Harness, object: &str) -> Vec<Value> {
    h.sim.state().salesforce_records(object)
}

fn dv_rows(h: &Harness, set: &str) -> Vec<Value> {
    h.sim.state().dynamics_rows(set)
}

fn same_text(a: &Value, b: &Value) -> bool {
    a.as_str().map(str::to_lowercase) == b.as_str().map(str::to_lowercase)
}

/// The Salesforce Contacts and the Dynamics contacts with this email.
fn contacts_with(h: &Harness, email: &Value) -> (Vec<Value>, Vec<Value>) {
    (
        sf_records(h, "Contact")
            .into_iter()
            .filter(|c| same_text(&c["Email"], email))
            .collect(),
        dv_rows(h, "contacts")
            .into_iter()
            .filter(|c| same_text(&c["emailaddress1"], email))
            .collect(),
    )
}

/// Asserts the referral's opportunities in both CRMs are linked to one
/// contact with the referral's customer contact under the opportunity's
/// account; returns (Salesforce Contact Id, Dynamics contactid).
fn assert_linked(h: &Harness, id: &str, context: &str) -> (String, String) {
    let r = h.referral(id);
    let person = &r["customerProfile"]["team"][0];
    assert!(person["email"].is_string(), "{context}: {r}");
    let (sf, dv) = contacts_with(h, &person["email"]);

    // Salesforce: one Contact under the opportunity's account, the primary role.
    assert_eq!(sf.len(), 1, "{context}: one Salesforce contact: {sf:?}");
    let contact = &sf[0];
    let opp = h.sf(id).expect("in Salesforce");
    assert!(opp["AccountId"].is_string(), "{context}: {opp}");
    assert_eq!(contact["AccountId"], opp["AccountId"], "{context}");
    assert_eq!(contact["LastName"], person["lastName"], "{context}");
    assert_eq!(contact["FirstName"], person["firstName"], "{context}");
    assert_eq!(contact["Phone"], person["phoneNumber"], "{context}");
    let roles: Vec<Value> = sf_records(h, "OpportunityContactRole")
        .into_iter()
        .filter(|r| r["OpportunityId"] == opp["Id"])
        .collect();
    assert_eq!(roles.len(), 1, "{context}: one contact role: {roles:?}");
    assert_eq!(roles[0]["ContactId"], contact["Id"], "{context}");
    assert_eq!(roles[0]["IsPrimary"], true, "{context}");

    // Dynamics: one contact under the opportunity's account, its parentcontactid.
    assert_eq!(dv.len(), 1, "{context}: one Dynamics contact: {dv:?}");
    let row = &dv[0];
    let opp = h.dv(id).expect("in Dynamics");
    assert!(opp["_customerid_value"].is_string(), "{context}: {opp}");
    assert_eq!(
        row["_parentcustomerid_value"], opp["_customerid_value"],
        "{context}"
    );
    assert_eq!(opp["_parentcontactid_value"], row["contactid"], "{context}");
    assert_eq!(row["lastname"], person["lastName"], "{context}");
    assert_eq!(row["firstname"], person["firstName"], "{context}");
    assert_eq!(row["telephone1"], person["phoneNumber"], "{context}");
    (
        contact["Id"].as_str().unwrap().to_owned(),
        row["contactid"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referrals_contact_is_a_crm_contact_under_the_account_and_reused_by_email() {
    let h = record_harness().await;
    let first = h.sim.state().insert_referrals(1).remove(0);
    h.settle(3).await;
    let (sf_contact, dv_contact) = assert_linked(&h, &first, "first referral");

    // A second referral for the same customer, with the same contact (the
    // email in another case): the contact is found, not created again.
    let second = h.sim.state().insert_referrals(1).remove(0);
    let mut profile = h.referral(&first)["customerProfile"].clone();
    let email = profile["team"][0]["email"].as_str().unwrap().to_uppercase();
    profile["team"][0]["email"] = json!(email);
    h.sim
        .state()
        .edit_referral(&second, &[PatchOp::replace("/customerProfile", profile)])
        .unwrap();
    h.settle(3).await;
    let (sf_again, dv_again) = assert_linked(&h, &second, "second referral");
    assert_eq!(sf_again, sf_contact, "the Salesforce contact is reused");
    assert_eq!(dv_again, dv_contact, "the Dynamics contact is reused");
    assert_eq!(
        h.sf(&second).unwrap()["AccountId"],
        h.sf(&first).unwrap()["AccountId"]
    );

    // Cycles after that create nothing more.
    h.settle(2).await;
    assert_linked(&h, &first, "after more cycles");
    assert_eq!(sf_records(&h, "OpportunityContactRole").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contacts_of_many_referrals_are_created_in_one_call_each_linked() {
    let h = record_harness().await;
    let ids = h.sim.state().insert_referrals(4);
    let before = h.counters();
    h.cycle().await;
    let after = h.counters();
    for id in &ids {
        assert_linked(&h, id, id);
    }
    let calls = |c: &cosell_sync::sim::Counters, api: Api, op: &str| {
        c.per_operation
            .get(&api)
            .and_then(|ops| ops.get(op))
            .copied()
            .unwrap_or_default()
    };
    // Salesforce: the missing accounts (if any), the contacts and the
    // contact roles, one collection call each, not one per referral.
    let collections = calls(&after, Api::Salesforce, "POST composite/sobjects")
        - calls(&before, Api::Salesforce, "POST composite/sobjects");
    assert!((2..=3).contains(&collections), "{collections} calls");
    // Dynamics: no contact created one by one.
    assert_eq!(calls(&after, Api::Dynamics, "POST contacts"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_reuses_the_contact_it_created_before_failing() {
    let h = record_harness().await;
    // The opportunity writes fail (both CRMs pause for an hour) after the
    // contacts are created.
    let faults: Vec<u64> = [(Api::Salesforce, "PATCH"), (Api::Dynamics, "POST $batch")]
        .into_iter()
        .map(|(api, operation)| {
            h.sim.state().add_fault(
                FaultRule::new(
                    api,
                    FaultKind::ServiceUnavailable {
                        retry_after_secs: Some(3600),
                    },
                )
                .operation(operation),
            )
        })
        .collect();
    let id = h.sim.state().insert_referrals(1).remove(0);
    h.cycle().await;
    h.cycle().await;
    assert!(h.sf(&id).is_none(), "not written yet");
    assert!(h.dv(&id).is_none(), "not written yet");
    let email = h.referral(&id)["customerProfile"]["team"][0]["email"].clone();
    let (sf, dv) = contacts_with(&h, &email);
    assert_eq!((sf.len(), dv.len()), (1, 1), "created once: {sf:?} {dv:?}");

    for f in faults {
        h.sim.state().remove_fault(f);
    }
    // Past the pause the CRMs asked for.
    let clock = h.sim.clock();
    clock.advance_to(clock.now() + chrono::Duration::hours(2));
    h.settle(4).await;
    let (sf_contact, dv_contact) = assert_linked(&h, &id, "after the retry");
    assert_eq!(sf_contact, sf[0]["Id"].as_str().unwrap());
    assert_eq!(dv_contact, dv[0]["contactid"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_validation_checks_the_contact_objects_the_record_mode_writes() {
    let h = record_harness().await;
    let sides = cosell_sync::sync::setup::build_crms(&h.settings).unwrap();
    assert_eq!(sides.len(), 2);
    for side in &sides {
        let problems = side.crm.check_metadata().await.unwrap();
        let errors: Vec<_> = problems.iter().filter(|p| p.is_error()).collect();
        assert!(errors.is_empty(), "{:?}: {errors:?}", side.kind);
    }
    // A Salesforce org without the contact's email field is told so.
    h.sim
        .state()
        .remove_salesforce_field("Contact", "Email")
        .unwrap();
    let sides = cosell_sync::sync::setup::build_crms(&h.settings).unwrap();
    let mut named = false;
    for side in &sides {
        let problems = side.crm.check_metadata().await.unwrap();
        named |= problems
            .iter()
            .any(|p| p.is_error() && p.item == "Contact.Email");
    }
    assert!(named, "the missing Contact.Email is named");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fields_mode_creates_no_contact_records() {
    let h = harness(options(0, 0)).await;
    h.settle(3).await;
    let id = h.sim.state().insert_referrals(1).remove(0);
    h.settle(3).await;
    assert!(h.sf(&id).is_some() && h.dv(&id).is_some());
    assert!(sf_records(&h, "Contact").is_empty());
    assert!(sf_records(&h, "OpportunityContactRole").is_empty());
    assert!(dv_rows(&h, "contacts").is_empty());
    assert!(h.dv(&id).unwrap()["_parentcontactid_value"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_co_sell_deal_from_the_crm_takes_the_contact_linked_to_the_opportunity() {
    let h = record_harness().await;
    let st = h.sim.state();

    // Salesforce: no customer contact fields filled, a primary contact role instead.
    let account = st
        .create_salesforce_record(
            "Account",
            json!({"Name": "Fabrikam Ltd", "BillingPostalCode": "D02"}),
        )
        .unwrap()["Id"]
        .clone();
    let contact = st
        .create_salesforce_record(
            "Contact",
            json!({"AccountId": account, "FirstName": "Sean", "LastName": "Murphy",
                   "Email": "sean@fabrikam.example", "Phone": "+353 1 555 0199"}),
        )
        .unwrap()["Id"]
        .clone();
    let opp = st
        .create_salesforce_opportunity(json!({
            "Name": "Fabrikam rollout", "Amount": 125000, "CloseDate": "2027-03-31",
            "StageName": "Qualification", "Sync_with_Partner_Center__c": true, "AccountId": account,
            "Customer_Name__c": "Fabrikam Ltd", "Customer_Street__c": "1 Main Street",
            "Customer_City__c": "Dublin", "Customer_Postal_Code__c": "D02", "Customer_Country__c": "IE",
            "Partner_Contact_First_Name__c": "Ada", "Partner_Contact_Last_Name__c": "Lovelace",
            "Partner_Contact_Email__c": "ada@contoso-partner.example", "Partner_Contact_Phone__c": "+353 1 555 0100",
            "Microsoft_Solutions__c": "SOL-12345-ABC",
            "How_can_Microsoft_help__c": "Proof of concept or demo",
            "Description": "Customer wants a pilot with Microsoft's help",
            "Customer_Consent_To_Share__c": true
        }))
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    st.create_salesforce_record(
        "OpportunityContactRole",
        json!({"OpportunityId": opp, "ContactId": contact, "IsPrimary": true}),
    )
    .unwrap();

    // Dynamics: the opportunity's parentcontactid.
    let row = st
        .create_dynamics_row(
            "contacts",
            json!({"firstname": "Aoife", "lastname": "Byrne",
                   "emailaddress1": "aoife@tailspin.example", "telephone1": "+353 21 555 0199"}),
        )
        .unwrap();
    let dv_contact = row["contactid"].as_str().unwrap().to_owned();
    let created = st
        .create_dynamics_opportunity(json!({
            "name": "Tailspin data platform", "estimatedvalue": 90000, "new_currencycode": "EUR",
            "estimatedclosedate": "2027-02-28", "new_syncwithpartnercenter": true,
            "new_customername": "Tailspin Toys", "new_customeraddressline1": "5 Harbour Road",
            "new_customercity": "Cork", "new_customerpostalcode": "T12", "new_customercountry": "IE",
            "new_partnercontactfirstname": "Grace", "new_partnercontactlastname": "Hopper",
            "new_partnercontactemail": "grace@contoso-partner.example", "new_partnercontactphone": "+353 21 555 0100",
            "new_microsoftsolutions": "SOL-12345-ABC",
            "new_howcanmicrosofthelp": 100000002, "description": "Customer wants a pilot with Microsoft's help",
            "new_customerconsenttoshare": true,
            "parentcontactid@odata.bind": format!("/contacts({dv_contact})")
        }))
        .unwrap();
    let dv_opp = created["opportunityid"].as_str().unwrap().to_owned();

    h.settle(5).await;
    let sf_rid =
        h.sim.state().salesforce_opportunity(&opp).unwrap()["Referral_Identifier__c"].clone();
    let dv_rid = h.sim.state().dynamics_opportunity(&dv_opp).unwrap()["new_referralid"].clone();
    for (rid, first, last, email, phone) in [
        (
            &sf_rid,
            "Sean",
            "Murphy",
            "sean@fabrikam.example",
            "+353 1 555 0199",
        ),
        (
            &dv_rid,
            "Aoife",
            "Byrne",
            "aoife@tailspin.example",
            "+353 21 555 0199",
        ),
    ] {
        let rid = rid.as_str().expect("the co-sell deal was created");
        let own = h.referral(rid);
        assert_eq!(own["type"], "Shared", "{own}");
        let person = &own["customerProfile"]["team"][0];
        assert_eq!(person["firstName"], first, "{own}");
        assert_eq!(person["lastName"], last, "{own}");
        assert_eq!(person["email"], email, "{own}");
        assert_eq!(person["phoneNumber"], phone, "{own}");
    }
}

/// The Microsoft-targeted referral of a deal's engagement.
fn microsoft_referral(h: &Harness, own: &Value) -> Value {
    let st = h.sim.state();
    let found: Vec<Value> = st
        .referral_ids()
        .into_iter()
        .filter_map(|i| st.referral(&i))
        .filter(|r| {
            r["engagementId"] == own["engagementId"]
                && r["target"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x["id"] == "msft"))
        })
        .collect();
    assert_eq!(found.len(), 1, "Microsoft invited once: {found:?}");
    found[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_deal_upgraded_to_co_sell_takes_the_linked_contact() {
    let h = record_harness().await;
    let st = h.sim.state();
    let contact = st
        .create_salesforce_record(
            "Contact",
            json!({"FirstName": "Sean", "LastName": "Murphy", "Email": "sean@fabrikam.example",
                   "Phone": "+353 1 555 0199"}),
        )
        .unwrap()["Id"]
        .clone();
    let opp = st
        .create_salesforce_opportunity(json!({
            "Name": "Fabrikam rollout", "Amount": 125000, "CloseDate": "2027-03-31",
            "StageName": "Qualification", "Sync_with_Partner_Center__c": true,
            "Customer_Name__c": "Fabrikam Ltd", "Customer_Street__c": "1 Main Street",
            "Customer_City__c": "Dublin", "Customer_Postal_Code__c": "D02", "Customer_Country__c": "IE",
            "Partner_Contact_First_Name__c": "Ada", "Partner_Contact_Last_Name__c": "Lovelace",
            "Partner_Contact_Email__c": "ada@contoso-partner.example", "Partner_Contact_Phone__c": "+353 1 555 0100",
            "Microsoft_Solutions__c": "SOL-12345-ABC"
        }))
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    st.create_salesforce_record(
        "OpportunityContactRole",
        json!({"OpportunityId": opp, "ContactId": contact, "IsPrimary": true}),
    )
    .unwrap();
    let dv_contact = st
        .create_dynamics_row(
            "contacts",
            json!({"firstname": "Aoife", "lastname": "Byrne", "emailaddress1": "aoife@tailspin.example",
                   "telephone1": "+353 21 555 0199"}),
        )
        .unwrap()["contactid"]
        .as_str()
        .unwrap()
        .to_owned();
    let dv_opp = st
        .create_dynamics_opportunity(json!({
            "name": "Tailspin data platform", "estimatedvalue": 90000, "new_currencycode": "EUR",
            "estimatedclosedate": "2027-02-28", "new_syncwithpartnercenter": true,
            "new_customername": "Tailspin Toys", "new_customeraddressline1": "5 Harbour Road",
            "new_customercity": "Cork", "new_customerpostalcode": "T12", "new_customercountry": "IE",
            "new_partnercontactfirstname": "Grace", "new_partnercontactlastname": "Hopper",
            "new_partnercontactemail": "grace@contoso-partner.example", "new_partnercontactphone": "+353 21 555 0100",
            "new_microsoftsolutions": "SOL-12345-ABC",
            "parentcontactid@odata.bind": format!("/contacts({dv_contact})")
        }))
        .unwrap()["opportunityid"]
        .as_str()
        .unwrap()
        .to_owned();
    h.settle(4).await;
    let sf_rid = st.salesforce_opportunity(&opp).unwrap()["Referral_Identifier__c"].clone();
    let dv_rid = st.dynamics_opportunity(&dv_opp).unwrap()["new_referralid"].clone();
    for rid in [&sf_rid, &dv_rid] {
        let rid = rid.as_str().unwrap_or_else(|| {
            panic!(
                "the private deal was created: {}",
                st.salesforce_opportunity(&opp).unwrap()["Partner_Center_Sync_Error__c"]
            )
        });
        assert_eq!(h.referral(rid)["type"], "Independent");
    }

    // The sellers ask Microsoft for help, with consent, no contact fields.
    st.edit_salesforce(
        &opp,
        json!({"How_can_Microsoft_help__c": "Proof of concept or demo",
               "Description": "Customer wants a pilot", "Customer_Consent_To_Share__c": true}),
    )
    .unwrap();
    st.edit_dynamics(
        &dv_opp,
        json!({"new_howcanmicrosofthelp": 100000002, "description": "Customer wants a pilot",
               "new_customerconsenttoshare": true}),
    )
    .unwrap();
    h.settle(5).await;
    for (rid, email) in [
        (&sf_rid, "sean@fabrikam.example"),
        (&dv_rid, "aoife@tailspin.example"),
    ] {
        let own = h.referral(rid.as_str().unwrap());
        assert_eq!(own["type"], "Shared", "upgraded: {own}");
        let microsoft = microsoft_referral(&h, &own);
        assert_eq!(
            microsoft["customerProfile"]["team"][0]["email"], email,
            "{microsoft}"
        );
    }
}
