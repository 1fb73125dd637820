//! Tests of the mapping as a whole: broken files, shipped defaults, applying
//! both ways, stage readings, hashes, conflicts.

use super::*;
use crate::domain::{DealKind, PatchOp, Stage};
use serde_json::{Value, json};

const HEAD: &str = "object = \"Opportunity\"\nexternal_id = \"Referral_Identifier__c\"\n";

const STAGES: &str = "[stages]
received = { StageName = \"On Hold\" }
accepted = { StageName = \"Qualification\" }
won      = { StageName = \"Closed Won\" }
lost     = { StageName = \"Closed Lost\" }
declined = { StageName = \"Closed Lost\" }
expired  = { StageName = \"Closed Lost\" }
reason_field = \"Loss_Reason__c\"
";

fn sf() -> Mapping {
    Mapping::default_salesforce().unwrap_or_else(|p| panic!("{p:#?}"))
}

fn dyn365() -> Mapping {
    Mapping::default_dynamics().unwrap_or_else(|p| panic!("{p:#?}"))
}

fn record(v: Value) -> CrmRecord {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

/// Applies add/replace operations the way Partner Center does.
pub(crate) fn apply_patch(doc: &mut Value, ops: &[PatchOp]) {
    for op in ops {
        if op.path.is_empty() {
            *doc = op.value.clone();
            continue;
        }
        let (parent, last) = op.path.rsplit_once('/').unwrap();
        let last = last.replace("~1", "/").replace("~0", "~");
        let target = if parent.is_empty() {
            &mut *doc
        } else {
            doc.pointer_mut(parent).expect("parent exists")
        };
        match target {
            Value::Object(m) => {
                if op.op == crate::domain::PatchOpKind::Replace {
                    assert!(m.contains_key(&last), "replace of a missing {}", op.path);
                }
                m.insert(last, op.value.clone());
            }
            Value::Array(a) => {
                let i: usize = last.parse().unwrap();
                if op.op == crate::domain::PatchOpKind::Add {
                    a.insert(i, op.value.clone());
                } else {
                    a[i] = op.value.clone();
                }
            }
            _ => panic!("bad parent for {}", op.path),
        }
    }
}

fn inbound() -> Value {
    json!({
        "id": "8d1c2f3e-0001", "name": "Contoso - Azure migration", "status": "Active", "substatus": "Accepted",
        "direction": "Incoming", "type": "Shared", "statusReason": null, "externalReferenceId": null,
        "customerProfile": {"name": "Contoso Ltd", "address": {"addressLine1": "1 Way", "city": "Redmond",
            "state": "WA", "postalCode": "98052", "country": "US"}},
        "consent": {"consentToShareReferralWithMicrosoftSellers": true},
        "details": {"dealValue": 125000, "currency": "USD", "closingDateTime": "2025-06-30T00:00:00Z", "notes": "Hi",
            "requirements": {"solutions": [{"id": "SOL-1", "name": "One", "type": "Name"}]}},
        "trackingInfo": {"microsoftMsxId": "7-ABC"},
        "inviteContext": {"assistanceRequestCode": "Unknown", "invitedBy": {"organizationId": "msft"}},
        "isSpam": false, "updatedDateTime": "2025-03-04T10:15:22Z"
    })
}

// ---------- broken files: one test per message ----------

fn assert_err(text: &str, line: Option<usize>, key: Option<&str>, message: &str) {
    let e = Mapping::parse(text, "mappings/salesforce.toml").unwrap_err();
    assert_eq!(e.file, "mappings/salesforce.toml");
    assert_eq!((e.line, e.key.as_deref()), (line, key), "{e}");
    assert!(
        e.message.contains(message),
        "{e}\nexpected to contain: {message}"
    );
}

#[test]
fn a_misspelt_field_key_names_file_line_key_and_the_keys_allowed() {
    let text = format!("{HEAD}[fields]\n\"name\" = {{ crm = \"Name\", directon = \"both\" }}\n");
    assert_err(
        &text,
        Some(4),
        Some("fields.name.directon"),
        "unknown key; expected one of crm, direction, owner, transform",
    );
    let e = Mapping::parse(&text, "mappings/salesforce.toml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "mappings/salesforce.toml:4: key \"fields.name.directon\": unknown key; expected one of crm, direction, owner, transform, default, empty, create_only"
    );
}

#[test]
fn an_unknown_top_level_key_is_rejected() {
    assert_err(
        &format!("{HEAD}objekt = 1\n"),
        Some(3),
        Some("objekt"),
        "unknown key; expected one of object, external_id",
    );
}

#[test]
fn a_missing_required_key_is_named() {
    assert_err(
        "object = \"Opportunity\"\n",
        Some(1),
        Some("external_id"),
        "required key is missing",
    );
}

#[test]
fn an_unknown_direction_lists_the_three_directions() {
    let text = format!("{HEAD}[fields]\n\"name\" = {{ crm = \"Name\", direction = \"tocrm\" }}\n");
    assert_err(
        &text,
        Some(4),
        Some("fields.name.direction"),
        "unknown value \"tocrm\"; expected one of both, to_crm, to_partner_center",
    );
}

#[test]
fn an_unknown_owner_lists_the_owners() {
    let text = format!("{HEAD}[fields.\"details.notes\"]\ncrm = \"Description\"\nowner = \"me\"\n");
    assert_err(
        &text,
        Some(5),
        Some("fields.\"details.notes\".owner"),
        "expected one of partner_center, crm, newest",
    );
}

#[test]
fn a_wrong_type_says_what_was_expected() {
    let text = format!("{HEAD}[fields]\n\"name\" = {{ crm = 3 }}\n");
    assert_err(
        &text,
        Some(4),
        Some("fields.name.crm"),
        "wrong type: found integer 3; expected a string",
    );
}

#[test]
fn a_misspelt_stage_lists_the_stages() {
    let text = format!("{HEAD}[stages]\nrecieved = {{ StageName = \"On Hold\" }}\n");
    assert_err(
        &text,
        Some(4),
        Some("stages.recieved"),
        "expected one of received, accepted, won, lost, declined, expired, open, reason_field",
    );
}

#[test]
fn invalid_toml_gives_the_line() {
    assert_err(
        "object = \"Opportunity\"\nexternal_id = \n",
        Some(2),
        None,
        "not valid TOML",
    );
}

#[test]
fn a_bad_path_says_how_paths_are_written() {
    let text = format!("{HEAD}[fields]\n\"team[x].email\" = {{ crm = \"E\" }}\n");
    assert_err(
        &text,
        Some(4),
        Some("fields.\"team[x].email\""),
        "is not an index; expected [0], [1], … or [*]",
    );
}

#[test]
fn an_unknown_transform_lists_the_transforms() {
    let text = format!(
        "{HEAD}[fields]\n\"details.closingDateTime\" = {{ crm = \"CloseDate\", transform = \"dte\" }}\n"
    );
    assert_err(
        &text,
        Some(4),
        Some("fields.\"details.closingDateTime\".transform"),
        "unknown transform \"dte\"; expected one of date, datetime, decimal, currency, country",
    );
}

#[test]
fn an_unknown_transform_table_key_is_named() {
    let text = format!(
        "{HEAD}[fields]\n\"details.notes\" = {{ crm = \"D\", transform = {{ tempalte = \"{{name}}\" }} }}\n"
    );
    assert_err(
        &text,
        Some(4),
        Some("fields.\"details.notes\".transform.tempalte"),
        "unknown key; expected one of type, format, values, template, join",
    );
}

#[test]
fn a_value_table_must_hold_single_values() {
    let text = format!(
        "{HEAD}[fields]\n\"inviteContext.assistanceRequestCode\" = {{ crm = \"H\", transform = {{ values = {{ GeneralOrOther = [1, 2] }} }} }}\n"
    );
    assert_err(
        &text,
        Some(4),
        Some("fields.\"inviteContext.assistanceRequestCode\".transform.values.GeneralOrOther"),
        "expected a single CRM value",
    );
}

#[test]
fn a_template_without_fields_is_refused() {
    let text = format!(
        "{HEAD}[fields]\n\"details.notes\" = {{ crm = \"D\", direction = \"to_crm\", transform = {{ template = \"static\" }} }}\n"
    );
    assert_err(
        &text,
        Some(4),
        Some("fields.\"details.notes\".transform.template"),
        "names no field",
    );
}

#[test]
fn an_empty_stage_says_what_it_needs() {
    let text = format!("{HEAD}[stages]\nwon = {{}}\n");
    assert_err(
        &text,
        Some(4),
        Some("stages.won"),
        "no CRM values; expected e.g. { StageName = \"Closed Won\" }",
    );
}

#[test]
fn a_stage_value_must_be_a_crm_value() {
    let text = format!("{HEAD}[stages]\nwon = {{ StageName = {{ a = 1 }} }}\n");
    assert_err(
        &text,
        Some(4),
        Some("stages.won.StageName"),
        "expected a CRM value (text, number, true/false)",
    );
}

#[test]
fn a_constant_must_be_a_value() {
    let text = format!("{HEAD}[constants]\n\"qualification\" = {{ a = 1 }}\n");
    assert_err(
        &text,
        Some(4),
        Some("constants.qualification"),
        "expected a single value",
    );
}

// ---------- validation: one test per problem ----------

fn problems(body: &str) -> Vec<MappingProblem> {
    let text = format!("{HEAD}{body}");
    Mapping::parse(&text, "m.toml")
        .unwrap_or_else(|e| panic!("{e}"))
        .validate()
}

fn assert_problem(body: &str, key: &str, message: &str) {
    let ps = problems(body);
    assert!(
        ps.iter().any(|p| p.key.as_deref() == Some(key)
            && p.message.contains(message)
            && p.line.is_some()),
        "no problem at {key} containing {message:?} in {ps:#?}"
    );
}

#[test]
fn a_complete_small_mapping_has_no_problems() {
    assert_eq!(
        problems(&format!(
            "[fields]\n\"name\" = {{ crm = \"Name\" }}\n{STAGES}"
        )),
        vec![]
    );
}

#[test]
fn an_unknown_path_gets_a_suggestion() {
    assert_problem(
        &format!("[fields]\n\"details.dealvalue\" = {{ crm = \"Amount\" }}\n{STAGES}"),
        "fields.\"details.dealvalue\"",
        "not a field of the Partner Center Referral; did you mean details.dealValue",
    );
}

#[test]
fn a_transform_must_fit_the_field_type() {
    assert_problem(
        &format!("[fields]\n\"details.notes\" = {{ crm = \"D\", transform = \"date\" }}\n{STAGES}"),
        "fields.\"details.notes\".transform",
        "a date transform does not fit details.notes, which is text",
    );
    assert_problem(
        &format!("[fields]\n\"name\" = {{ crm = \"N\", transform = \"decimal\" }}\n{STAGES}"),
        "fields.name.transform",
        "decimal does not fit name",
    );
}

#[test]
fn a_value_table_must_use_partner_center_values() {
    assert_problem(
        &format!(
            "[fields]\n\"inviteContext.assistanceRequestCode\" = {{ crm = \"H\", direction = \"to_partner_center\", transform = {{ values = {{ ProofOfConcept = \"PoC\" }} }} }}\n{STAGES}"
        ),
        "fields.\"inviteContext.assistanceRequestCode\".transform.values.ProofOfConcept",
        "is not a Partner Center value of inviteContext.assistanceRequestCode; expected one of Unknown, GeneralOrOther",
    );
}

#[test]
fn a_value_table_read_back_must_be_unambiguous() {
    assert_problem(
        &format!(
            "[fields]\n\"inviteContext.assistanceRequestCode\" = {{ crm = \"H\", direction = \"to_partner_center\", transform = {{ values = {{ GeneralOrOther = \"X\", QuotesOrLicensing = \"X\" }} }} }}\n{STAGES}"
        ),
        "fields.\"inviteContext.assistanceRequestCode\".transform.values",
        "share the CRM value",
    );
}

#[test]
fn read_only_paths_are_never_written_to_partner_center() {
    assert_problem(
        &format!("[fields]\n\"trackingInfo.microsoftMsxId\" = {{ crm = \"M\" }}\n{STAGES}"),
        "fields.\"trackingInfo.microsoftMsxId\".direction",
        "Partner Center sets trackingInfo.microsoftMsxId itself",
    );
    assert_problem(
        &format!("[fields]\n\"status\" = {{ crm = \"S\" }}\n{STAGES}"),
        "fields.status.direction",
        "the lifecycle is mapped in [stages]",
    );
}

#[test]
fn a_wildcard_path_needs_a_join() {
    assert_problem(
        &format!(
            "[fields]\n\"details.requirements.solutions[*].id\" = {{ crm = \"S\" }}\n{STAGES}"
        ),
        "fields.\"details.requirements.solutions[*].id\".transform",
        "is a list; give transform = { join = \";\" }",
    );
    assert_problem(
        &format!(
            "[fields]\n\"name\" = {{ crm = \"N\", transform = {{ join = \";\" }} }}\n{STAGES}"
        ),
        "fields.name.transform",
        "join applies to [*] paths only",
    );
}

#[test]
fn a_crm_name_must_be_an_api_name() {
    assert_problem(
        &format!("[fields]\n\"name\" = {{ crm = \"Opportunity Name\" }}\n{STAGES}"),
        "fields.name.crm",
        "is not a CRM API name (it has spaces)",
    );
    assert_problem(
        &format!("[fields]\n\"name\" = {{ }}\n{STAGES}"),
        "fields.name.crm",
        "required key is missing",
    );
}

#[test]
fn a_template_must_go_one_way() {
    assert_problem(
        &format!(
            "[fields]\n\"details.notes\" = {{ crm = \"D\", transform = {{ template = \"{{name}}\" }} }}\n{STAGES}"
        ),
        "fields.\"details.notes\".transform",
        "cannot be read back; use direction = \"to_crm\" or \"to_partner_center\"",
    );
    assert_problem(
        &format!(
            "[fields]\n\"details.notes\" = {{ crm = \"D\", direction = \"to_crm\", transform = {{ template = \"{{nmae}}\" }} }}\n{STAGES}"
        ),
        "fields.\"details.notes\".transform",
        "template field {nmae}",
    );
    assert_problem(
        &format!(
            "[fields]\n\"details.notes\" = {{ crm = \"D\", direction = \"to_partner_center\", transform = {{ template = \"{{A}} {{B}}\" }} }}\n{STAGES}"
        ),
        "fields.\"details.notes\".crm",
        "remove crm",
    );
}

#[test]
fn owner_is_for_fields_going_both_ways() {
    assert_problem(
        &format!(
            "[fields]\n\"details.notes\" = {{ crm = \"D\", direction = \"to_crm\", owner = \"crm\" }}\n{STAGES}"
        ),
        "fields.\"details.notes\".owner",
        "applies to direction = \"both\" only",
    );
}

#[test]
fn create_only_is_for_fields_sent_to_partner_center() {
    assert_problem(
        &format!(
            "[fields]\n\"details.notes\" = {{ crm = \"D\", direction = \"to_crm\", create_only = true }}\n{STAGES}"
        ),
        "fields.\"details.notes\".create_only",
        "applies to fields sent to Partner Center",
    );
}

#[test]
fn a_default_must_fit_the_field() {
    assert_problem(
        &format!(
            "[fields]\n\"details.dealValue\" = {{ crm = \"Amount\", default = \"lots\" }}\n{STAGES}"
        ),
        "fields.\"details.dealValue\".default",
        "does not fit details.dealValue, which is a number",
    );
}

#[test]
fn a_crm_field_is_written_by_one_entry_only() {
    assert_problem(
        &format!(
            "[fields]\n\"name\" = {{ crm = \"Name\" }}\n\"details.notes\" = {{ crm = \"Name\" }}\n{STAGES}"
        ),
        "fields.\"details.notes\".crm",
        "CRM field Name is already written by fields.name.crm; each CRM field may be written by one entry only",
    );
    assert_problem(
        &format!("[fields]\n\"details.notes\" = {{ crm = \"Referral_Identifier__c\" }}\n{STAGES}"),
        "fields.\"details.notes\".crm",
        "already written by external_id",
    );
}

#[test]
fn constants_must_exist_and_fit() {
    assert_problem(
        &format!("[constants]\n\"qualifikation\" = \"X\"\n{STAGES}"),
        "constants.qualifikation",
        "did you mean qualification",
    );
    assert_problem(
        &format!("[constants]\n\"details.dealValue\" = \"lots\"\n{STAGES}"),
        "constants.\"details.dealValue\"",
        "does not fit",
    );
    assert_problem(
        &format!("[constants]\n\"id\" = \"x\"\n{STAGES}"),
        "constants.id",
        "Partner Center sets id itself",
    );
}

#[test]
fn every_stage_must_be_mapped() {
    let ps = problems(
        "[stages]\nreceived = { StageName = \"On Hold\" }\naccepted = { StageName = \"Q\" }\n",
    );
    assert!(
        ps.iter().any(|p| p.key.as_deref() == Some("stages")
            && p.message
                .starts_with("stages won, lost, declined, expired not mapped")
            && p.line == Some(3)),
        "{ps:#?}"
    );
    let ps = problems("");
    assert!(
        ps.iter()
            .any(|p| p.key.as_deref() == Some("stages") && p.line.is_none()),
        "{ps:#?}"
    );
}

#[test]
fn stages_that_matter_must_be_told_apart() {
    let same_open = STAGES.replace(
        "accepted = { StageName = \"Qualification\" }",
        "accepted = { StageName = \"On Hold\" }",
    );
    assert_problem(
        &same_open,
        "stages.accepted",
        "received and accepted cannot be told apart",
    );
    let won_lost = STAGES.replace(
        "lost     = { StageName = \"Closed Lost\" }",
        "lost     = { StageName = \"Closed Won\" }",
    );
    assert_problem(
        &won_lost,
        "stages.lost",
        "won and lost cannot be told apart",
    );
    let open_closed = STAGES.replace(
        "accepted = { StageName = \"Qualification\" }",
        "accepted = { StageName = [\"Qualification\", \"Closed Lost\"] }",
    );
    assert_problem(
        &open_closed,
        "stages.declined",
        "accepted and declined cannot be told apart",
    );
    // Lost, declined and expired may share values: they are read relative to the current stage.
    assert_eq!(problems(STAGES), vec![]);
}

#[test]
fn open_stages_must_fit_the_open_values() {
    let body = "[stages]\nreceived = { statecode = 0, statuscode = 2 }\naccepted = { statecode = 1, statuscode = 1 }\nwon = { statecode = 1, statuscode = 3 }\nlost = { statecode = 2, statuscode = 5 }\ndeclined = { statecode = 2, statuscode = 4 }\nexpired = { statecode = 2, statuscode = 4 }\nopen = { statecode = 0 }\n";
    assert_problem(body, "stages.accepted", "accepted does not fit stages.open");
}

#[test]
fn a_stage_field_is_not_also_a_field() {
    assert_problem(
        &format!("[fields]\n\"salesStage\" = {{ crm = \"StageName\" }}\n{STAGES}"),
        "fields.salesStage.crm",
        "StageName holds the stage ([stages]); it cannot also be a field",
    );
}

#[test]
fn a_link_needs_both_keys() {
    let text = format!("{HEAD}link_field = \"Referral_Link__c\"\n{STAGES}");
    let ps = Mapping::parse(&text, "m.toml").unwrap().validate();
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0].line, Some(3));
    assert!(ps[0].message.contains("needs link_url"));
}

// ---------- shipped defaults ----------

#[test]
fn the_shipped_defaults_validate() {
    for m in [sf(), dyn365()] {
        assert_eq!(m.validate(), vec![], "{}", m.file);
        assert!(m.sync_flag.is_some() && m.error_field.is_some() && m.link_field.is_some());
    }
}

#[test]
fn the_shipped_defaults_cover_the_connector_fields() {
    let m = sf();
    let paths: Vec<&str> = m.fields.iter().map(|r| r.path.as_str()).collect();
    for p in [
        "name",
        "details.dealValue",
        "details.currency",
        "details.closingDateTime",
        "details.notes",
        "customerProfile.name",
        "customerProfile.address.country",
        "inviteContext.assistanceRequestCode",
        "consent.consentToShareReferralWithMicrosoftSellers",
        "trackingInfo.microsoftMsxId",
        "details.requirements.solutions[*].id",
        "externalReferenceId",
    ] {
        assert!(paths.contains(&p), "{p} is not mapped");
    }
    assert_eq!(m.external_id, "Referral_Identifier__c");
    assert_eq!(
        m.stages.received.as_ref().unwrap().fields[0].1[0],
        json!("On Hold")
    );
    let d = dyn365();
    assert_eq!(d.object, "opportunity");
    assert_eq!(
        d.stages.won.as_ref().unwrap().fields,
        vec![
            ("statecode".into(), vec![json!(1)]),
            ("statuscode".into(), vec![json!(3)])
        ]
    );
}

#[test]
fn crm_fields_lists_everything_to_select_once_with_case_kept() {
    let m = sf();
    let fields = m.crm_fields();
    assert_eq!(
        &fields[..5],
        &[
            "Referral_Identifier__c",
            "Sync_with_Partner_Center__c",
            "Partner_Center_Sync_Error__c",
            "Referral_Link__c",
            "Name"
        ]
    );
    for f in [
        "StageName",
        "Loss_Reason__c",
        "CloseDate",
        "Description",
        "Id",
        "How_can_Microsoft_help__c",
    ] {
        assert_eq!(fields.iter().filter(|x| **x == f).count(), 1, "{f}");
    }
    let dm = dyn365();
    let d = dm.crm_fields();
    assert!(
        d.contains(&"statecode") && d.contains(&"statuscode") && d.contains(&"estimatedclosedate")
    );
}

// ---------- referral → CRM ----------

#[test]
fn a_referral_becomes_crm_fields() {
    let rec = sf().to_crm(&inbound(), Stage::Received);
    assert_eq!(rec["Referral_Identifier__c"], "8d1c2f3e-0001");
    assert_eq!(rec["Sync_with_Partner_Center__c"], true);
    assert_eq!(
        rec["Referral_Link__c"],
        "https://partner.microsoft.com/dashboard/referrals/v2/opportunities/8d1c2f3e-0001"
    );
    assert_eq!(rec["Name"], "Contoso - Azure migration");
    assert_eq!(rec["Amount"], 125000);
    assert_eq!(rec["CurrencyIsoCode"], "USD");
    assert_eq!(rec["CloseDate"], "2025-06-30");
    assert_eq!(rec["Customer_Country__c"], "US");
    assert_eq!(rec["Microsoft_Solutions__c"], "SOL-1");
    assert_eq!(rec["Microsoft_CRM_Identifier__c"], "7-ABC");
    assert_eq!(rec["Microsoft_Referral_Visibility__c"], true);
    assert_eq!(rec["StageName"], "On Hold");
    // Only mapped fields; to_partner_center fields are not written.
    assert!(!rec.contains_key("Id") && !rec.contains_key("How_can_Microsoft_help__c"));
    assert!(!rec.contains_key("isSpam"));
    // Explicit nulls for mapped fields the referral lacks.
    assert_eq!(rec["Customer_Contact_Email__c"], Value::Null);
}

#[test]
fn closed_stages_carry_the_reason() {
    let mut r = inbound();
    r["statusReason"] = json!("No budget");
    let rec = sf().to_crm(&r, Stage::Declined);
    assert_eq!(rec["StageName"], "Closed Lost");
    assert_eq!(rec["Loss_Reason__c"], "No budget");
    let rec = dyn365().to_crm(&r, Stage::Won);
    assert_eq!(
        (&rec["statecode"], &rec["statuscode"]),
        (&json!(1), &json!(3))
    );
    assert!(!rec.contains_key("new_closereason"));
}

#[test]
fn unconvertible_values_are_left_out_and_reported() {
    let mut r = inbound();
    r["details"]["currency"] = json!("Euro");
    let w = sf().to_crm_report(&r, Stage::Accepted);
    assert!(!w.record.contains_key("CurrencyIsoCode"));
    assert_eq!(w.problems.len(), 1);
    assert_eq!(w.problems[0].path, "details.currency");
    assert!(
        w.problems[0]
            .reason
            .contains("not written to CurrencyIsoCode")
    );
}

#[test]
fn a_crm_update_is_empty_when_in_step_and_leaves_the_sellers_stage_alone() {
    let m = sf();
    let r = inbound();
    let mut current = m.to_crm(&r, Stage::Accepted);
    current.insert("Amount".into(), json!(125000.0));
    current.insert("StageName".into(), json!("Proposal/Price Quote"));
    current.insert(
        "LastModifiedDate".into(),
        json!("2025-03-04T10:15:22.000+0000"),
    );
    assert_eq!(
        m.crm_update(&r, Stage::Accepted, &current).record,
        CrmRecord::new()
    );
    let mut r2 = r.clone();
    r2["details"]["dealValue"] = json!(130000);
    let upd = m.crm_update(&r2, Stage::Won, &current).record;
    assert_eq!(
        upd,
        record(json!({"Amount": 130000, "StageName": "Closed Won"}))
    );
}

#[test]
fn a_close_date_stored_as_local_midnight_is_not_a_change() {
    let m = sf();
    let mut r = inbound();
    r["details"]["closingDateTime"] = json!("2022-06-29T23:00:00Z");
    let crm = m.to_crm(&r, Stage::Accepted);
    assert_eq!(crm["CloseDate"], "2022-06-30");
    let p = m.proposed_changes(&crm, &r, Stage::Accepted);
    assert_eq!(p.patch, vec![]);
}

// ---------- CRM → referral ----------

#[test]
fn crm_edits_become_patches_on_mapped_paths_only() {
    let m = sf();
    let r = inbound();
    let mut crm = m.to_crm(&r, Stage::Accepted);
    crm.insert("Amount".into(), json!(150000.5));
    crm.insert("CloseDate".into(), json!("2025-07-15"));
    crm.insert("Id".into(), json!("006J9000003abcdIAA"));
    crm.insert("Partner_Contact_Email__c".into(), json!("ann@partner.com"));
    crm.insert("Unmapped__c".into(), json!("noise"));
    let p = m.proposed_changes(&crm, &r, Stage::Accepted);
    assert_eq!(p.stage, StageReading::Unchanged);
    assert_eq!(
        p.patch,
        vec![
            PatchOp::replace("/details/dealValue", 150000.5),
            PatchOp::replace("/details/closingDateTime", "2025-07-15T00:00:00Z"),
            PatchOp::replace("/externalReferenceId", "006J9000003abcdIAA"),
            PatchOp::add("/team", json!([{"email": "ann@partner.com"}])),
        ]
    );
    assert_eq!(p.withheld, vec![]);
    let mut applied = r.clone();
    apply_patch(&mut applied, &p.patch);
    assert_eq!(
        m.proposed_changes(&crm, &applied, Stage::Accepted).patch,
        vec![]
    );
}

#[test]
fn a_cleared_crm_field_clears_or_keeps_by_rule() {
    let m = sf();
    let r = inbound();
    let mut crm = m.to_crm(&r, Stage::Accepted);
    crm.insert("Description".into(), Value::Null);
    crm.insert("Amount".into(), Value::Null);
    let p = m.proposed_changes(&crm, &r, Stage::Accepted);
    assert_eq!(
        p.patch,
        vec![PatchOp::replace("/details/notes", Value::Null)]
    );
}

#[test]
fn edits_on_a_received_deal_go_only_with_its_acceptance() {
    let m = sf();
    let mut r = inbound();
    r["status"] = json!("New");
    r["substatus"] = json!("Pending");
    let mut crm = m.to_crm(&r, Stage::Received);
    crm.insert("Amount".into(), json!(1));
    let p = m.proposed_changes(&crm, &r, Stage::Received);
    assert_eq!(
        (p.stage.clone(), p.patch.len(), p.withheld.len()),
        (StageReading::Unchanged, 0, 1)
    );
    crm.insert("StageName".into(), json!("Needs Analysis"));
    let p = m.proposed_changes(&crm, &r, Stage::Received);
    assert_eq!(p.stage, StageReading::Accept);
    assert_eq!(p.patch, vec![PatchOp::replace("/details/dealValue", 1)]);
}

#[test]
fn archived_deals_take_no_edit() {
    let m = sf();
    let r = inbound();
    let mut crm = m.to_crm(&r, Stage::Won);
    crm.insert("Name".into(), json!("Renamed"));
    let p = m.proposed_changes(&crm, &r, Stage::Won);
    assert_eq!(
        (p.stage, p.patch.len(), p.withheld.len()),
        (StageReading::Unchanged, 0, 1)
    );
}

#[test]
fn stages_are_read_relative_to_the_current_stage() {
    let m = sf();
    let rec = |stage: &str, reason: Option<&str>| {
        record(json!({"StageName": stage, "Loss_Reason__c": reason}))
    };
    let s = &m.stages;
    use StageReading as R;
    assert_eq!(s.read(&rec("On Hold", None), Stage::Received), R::Unchanged);
    assert_eq!(
        s.read(&rec("Qualification", None), Stage::Received),
        R::Accept
    );
    assert_eq!(
        s.read(&rec("Negotiation/Review", None), Stage::Received),
        R::Accept
    );
    assert_eq!(
        s.read(&rec("Closed Lost", Some("No budget")), Stage::Received),
        R::Decline {
            reason: Some("No budget".into())
        }
    );
    assert_eq!(
        s.read(&rec("Closed Lost", Some(" ")), Stage::Accepted),
        R::Lose { reason: None }
    );
    assert_eq!(s.read(&rec("Closed Won", None), Stage::Accepted), R::Win);
    assert_eq!(
        s.read(&rec("Closed Won", None), Stage::Received),
        R::NotAllowed {
            from: Stage::Received,
            to: Stage::Won
        }
    );
    assert_eq!(
        s.read(&rec("Proposal/Price Quote", None), Stage::Accepted),
        R::Unchanged
    );
    assert_eq!(
        s.read(&rec("On Hold", None), Stage::Accepted),
        R::NotAllowed {
            from: Stage::Accepted,
            to: Stage::Received
        }
    );
    assert_eq!(
        s.read(&rec("Closed Lost", None), Stage::Declined),
        R::Unchanged
    );
    assert_eq!(
        s.read(&rec("Closed Lost", None), Stage::Expired),
        R::Unchanged
    );
    assert_eq!(
        s.read(&rec("Closed Won", None), Stage::Lost),
        R::NotAllowed {
            from: Stage::Lost,
            to: Stage::Won
        }
    );
    assert!(matches!(
        s.read(&record(json!({"Name": "x"})), Stage::Accepted),
        R::Unknown(_)
    ));
}

#[test]
fn dynamics_stages_read_with_status_codes() {
    let s = dyn365().stages;
    let rec = |state: i64, status: i64| record(json!({"statecode": state, "statuscode": status}));
    use StageReading as R;
    assert_eq!(s.read(&rec(0, 2), Stage::Received), R::Unchanged);
    assert_eq!(s.read(&rec(0, 1), Stage::Received), R::Accept);
    assert_eq!(s.read(&rec(0, 100000007), Stage::Received), R::Accept);
    assert_eq!(
        s.read(&rec(2, 4), Stage::Received),
        R::Decline { reason: None }
    );
    assert_eq!(
        s.read(&rec(2, 5), Stage::Accepted),
        R::Lose { reason: None }
    );
    assert_eq!(s.read(&rec(1, 3), Stage::Accepted), R::Win);
    match s.read(&rec(2, 100000009), Stage::Accepted) {
        R::Unknown(values) => assert_eq!(
            values,
            record(json!({"statecode": 2, "statuscode": 100000009}))
        ),
        other => panic!("{other:?}"),
    }
}

/// A complete private deal as Partner Center holds it (created from `flagged_opportunity`).
fn private_deal() -> Value {
    let m = sf();
    let mut j = m.new_deal(&flagged_opportunity()).referral.to_json();
    j["id"] = json!("r1");
    j["status"] = json!("Active");
    j["substatus"] = json!("Accepted");
    j["engagementId"] = json!("e1");
    j
}

#[test]
fn asking_microsoft_for_help_upgrades_a_private_deal_but_never_back() {
    let m = sf();
    let private = private_deal();
    assert_eq!(private["type"], "Independent");
    let mut crm = flagged_opportunity();
    crm.insert("Referral_Identifier__c".into(), json!("r1"));
    crm.insert(
        "How_can_Microsoft_help__c".into(),
        json!("Proof of concept or demo"),
    );
    crm.insert("Customer_Contact_First_Name__c".into(), json!("Sean"));
    crm.insert("Customer_Contact_Last_Name__c".into(), json!("Murphy"));
    crm.insert(
        "Customer_Contact_Email__c".into(),
        json!("sean@fabrikam.example"),
    );
    crm.insert("Customer_Contact_Phone__c".into(), json!("+49 30 5555"));
    crm.insert("Customer_Consent_To_Share__c".into(), json!(true));
    let p = m.proposed_changes(&crm, &private, Stage::Accepted);
    assert_eq!(p.kind_change, Some(DealKind::CoSell), "{:?}", p.problems);
    // `target` is read-only: Microsoft is invited by a referral of its own.
    assert_eq!(
        p.patch,
        vec![
            PatchOp::add(
                "/inviteContext",
                json!({"assistanceRequestCode": "ProofOfConceptOrDemo"})
            ),
            PatchOp::add("/inviteContext/notes", "Needs a PoC"),
            PatchOp::replace("/type", "Shared"),
            PatchOp::replace("/consent/consentToShareReferralWithMicrosoftSellers", true),
        ]
    );
    let invitation = p
        .invitation
        .expect("the Microsoft referral's draft")
        .to_json();
    assert_eq!(
        invitation["customerProfile"]["team"][0]["email"],
        "sean@fabrikam.example"
    );
    assert_eq!(
        invitation["consent"]["consentToToShareInfoWithOthers"],
        true
    );
    assert_eq!(invitation["inviteContext"]["notes"], "Needs a PoC");

    let mut co_sell = private.clone();
    apply_patch(&mut co_sell, &p.patch);
    let mut crm2 = crm.clone();
    crm2.insert(
        "How_can_Microsoft_help__c".into(),
        json!("General or other"),
    );
    crm2.insert("Microsoft_Referral_Visibility__c".into(), json!(false));
    let p = m.proposed_changes(&crm2, &co_sell, Stage::Accepted);
    assert_eq!(p.kind_change, None);
    assert_eq!(
        p.patch,
        vec![PatchOp::replace(
            "/inviteContext/assistanceRequestCode",
            "GeneralOrOther"
        )]
    );
    assert_eq!(
        p.withheld,
        vec![PatchOp::replace(
            "/consent/consentToShareReferralWithMicrosoftSellers",
            false
        )]
    );
}

#[test]
fn an_upgrade_without_customer_contact_is_refused_whole_with_the_problem() {
    let m = sf();
    let private = private_deal();
    let mut crm = flagged_opportunity();
    crm.insert("Referral_Identifier__c".into(), json!("r1"));
    crm.insert(
        "How_can_Microsoft_help__c".into(),
        json!("Quotes or licensing"),
    );
    crm.insert("Name".into(), json!("Renamed"));
    let p = m.proposed_changes(&crm, &private, Stage::Accepted);
    assert_eq!(p.kind_change, None);
    assert_eq!(p.invitation, None);
    assert!(
        p.problems
            .iter()
            .any(|x| x.path == "customerProfile.team"
                && x.reason.contains("asking Microsoft for help")),
        "{:?}",
        p.problems
    );
    // Nothing of the upgrade is sent; other edits are.
    assert_eq!(p.patch, vec![PatchOp::replace("/name", "Renamed")]);
}

#[test]
fn an_unknown_crm_value_is_reported_not_sent() {
    let m = sf();
    let r = inbound();
    let mut crm = m.to_crm(&r, Stage::Accepted);
    crm.insert("How_can_Microsoft_help__c".into(), json!("Free lunch"));
    let p = m.proposed_changes(&crm, &r, Stage::Accepted);
    assert_eq!(p.patch, vec![]);
    assert_eq!(p.problems[0].path, "inviteContext.assistanceRequestCode");
    assert!(
        p.problems[0]
            .reason
            .contains("\"Free lunch\" has no entry in the value table")
    );
}

// ---------- new deals ----------

fn flagged_opportunity() -> CrmRecord {
    record(json!({
        "Id": "006J9000003abcdIAA", "Name": "Fabrikam rollout", "Amount": 40000.0, "CurrencyIsoCode": "EUR",
        "CloseDate": "2025-09-15", "Description": "Needs a PoC", "StageName": "Qualification",
        "Sync_with_Partner_Center__c": true, "Referral_Identifier__c": null,
        "Customer_Name__c": "Fabrikam", "Customer_Street__c": "1 Main St", "Customer_City__c": "Berlin",
        "Customer_Country__c": "Germany", "Customer_Postal_Code__c": "10115",
        "Partner_Contact_First_Name__c": "Ann", "Partner_Contact_Last_Name__c": "Lee",
        "Partner_Contact_Email__c": "ann@partner.com", "Partner_Contact_Phone__c": "+49 30 1234",
        "Microsoft_Solutions__c": "SOL-15974-MQF;SOL-2", "How_can_Microsoft_help__c": null,
        "Microsoft_Referral_Visibility__c": null
    }))
}

#[test]
fn a_flagged_record_becomes_a_private_deal() {
    let m = sf();
    let crm = flagged_opportunity();
    assert!(m.wants_new_deal(&crm));
    let deal = m.new_deal(&crm);
    assert_eq!(deal.problems, vec![]);
    assert_eq!(deal.kind, DealKind::Private);
    let j = deal.referral.to_json();
    assert_eq!(j["type"], "Independent");
    assert_eq!(j["qualification"], "SalesQualified");
    assert_eq!(j["externalReferenceId"], "006J9000003abcdIAA");
    assert_eq!(j["details"]["closingDateTime"], "2025-09-15T00:00:00Z");
    assert_eq!(j["details"]["dealValue"], 40000);
    assert_eq!(j["customerProfile"]["address"]["country"], "DE");
    assert_eq!(
        j["consent"]["consentToShareReferralWithMicrosoftSellers"],
        false
    );
    assert_eq!(
        j["details"]["requirements"]["solutions"],
        json!([{"id": "SOL-15974-MQF", "type": "Name"}, {"id": "SOL-2", "type": "Name"}])
    );
    assert!(j.get("inviteContext").is_none());
}

#[test]
fn the_help_field_makes_a_co_sell_deal_with_its_rules() {
    let m = sf();
    let mut crm = flagged_opportunity();
    crm.insert(
        "How_can_Microsoft_help__c".into(),
        json!("Quotes or licensing"),
    );
    let deal = m.new_deal(&crm);
    assert_eq!(deal.kind, DealKind::CoSell);
    let j = deal.referral.to_json();
    assert_eq!(j["type"], "Shared");
    assert!(
        j.get("target").is_none(),
        "Microsoft is invited by its own referral, not a target of ours: {j}"
    );
    assert_eq!(j["inviteContext"]["notes"], "Needs a PoC");
    let paths: Vec<&str> = deal.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, vec!["customerProfile.team"]);
}

#[test]
fn a_new_deal_lists_every_problem() {
    let m = sf();
    let crm = record(
        json!({"Id": "006X", "Sync_with_Partner_Center__c": "true", "Customer_Country__c": "Atlantis"}),
    );
    assert!(m.wants_new_deal(&crm));
    let deal = m.new_deal(&crm);
    let paths: Vec<&str> = deal.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths[0], "customerProfile.address.country");
    assert!(deal.problems[0].reason.contains("Atlantis"));
    for p in [
        "name",
        "details.dealValue",
        "details.closingDateTime",
        "team",
        "details.requirements.solutions",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    let err = m.error_update(&deal.problems).unwrap();
    assert!(
        err["Partner_Center_Sync_Error__c"]
            .as_str()
            .unwrap()
            .starts_with("customerProfile.address.country: ")
    );
    assert_eq!(
        m.error_update(&[]).unwrap()["Partner_Center_Sync_Error__c"],
        Value::Null
    );
    let mut linked = crm.clone();
    linked.insert("Referral_Identifier__c".into(), json!("r-1"));
    assert!(!m.wants_new_deal(&linked));
    assert_eq!(m.referral_id(&linked), Some("r-1"));
}

// ---------- hashes ----------

#[test]
fn unmapped_noise_never_changes_a_projection_hash() {
    let m = sf();
    let r = inbound();
    let h = m.pc_projection_hash(&r);
    let mut noisy = r.clone();
    noisy["updatedDateTime"] = json!("2026-01-01T00:00:00Z");
    noisy["eTag"] = json!("\"abc\"");
    noisy["customerProfile"]["isMatchingComplete"] = json!(true);
    noisy["details"]["closingDateTime"] = json!("2025-06-29T22:00:00Z"); // same calendar date
    assert_eq!(m.pc_projection_hash(&noisy), h);
    noisy["details"]["dealValue"] = json!(1);
    assert_ne!(m.pc_projection_hash(&noisy), h);
    let mut closed = r.clone();
    closed["status"] = json!("Closed");
    closed["substatus"] = json!("Won");
    assert_ne!(m.pc_projection_hash(&closed), h);

    let crm = flagged_opportunity();
    let h = m.crm_projection_hash(&crm);
    let mut noisy = crm.clone();
    noisy.insert(
        "SystemModstamp".into(),
        json!("2025-03-04T10:15:22.000+0000"),
    );
    noisy.insert("Amount".into(), json!(40000));
    noisy.insert("Microsoft_CRM_Identifier__c".into(), json!("written by us"));
    assert_eq!(m.crm_projection_hash(&noisy), h);
    noisy.insert("StageName".into(), json!("Closed Won"));
    assert_ne!(m.crm_projection_hash(&noisy), h);
    // The hash is that of the projection, computed without copying it.
    for record in [&crm, &noisy] {
        assert_eq!(
            m.crm_projection_hash(record),
            crate::mapping::value::stable_hash(&Value::Object(m.crm_projection(record)))
        );
    }
}

// ---------- conflicts ----------

#[test]
fn conflicting_edits_follow_the_owner() {
    let text = format!(
        "{HEAD}[fields]\n\"name\" = {{ crm = \"Name\", owner = \"partner_center\" }}\n\"details.notes\" = {{ crm = \"Description\", owner = \"crm\" }}\n\"details.dealValue\" = {{ crm = \"Amount\", transform = \"decimal\" }}\n{STAGES}"
    );
    let m = Mapping::load(&text, "m.toml").unwrap();
    let r =
        json!({"id": "r", "name": "PC name", "details": {"notes": "PC notes", "dealValue": 10}});
    let crm = record(json!({"Name": "CRM name", "Description": "CRM notes", "Amount": 20}));
    let t = |s: &str| Some(s.parse::<chrono::DateTime<chrono::Utc>>().unwrap());

    let res = m.resolve_conflict(
        &r,
        Stage::Accepted,
        &crm,
        t("2025-01-01T00:00:00Z"),
        t("2025-01-02T00:00:00Z"),
    );
    assert_eq!(res.crm_updates, record(json!({"Name": "PC name"})));
    assert_eq!(
        res.patch,
        vec![
            PatchOp::replace("/details/notes", "CRM notes"),
            PatchOp::replace("/details/dealValue", 20)
        ]
    );
    let winners: Vec<Side> = res.decisions.iter().map(|d| d.winner).collect();
    assert_eq!(winners, vec![Side::PartnerCenter, Side::Crm, Side::Crm]);

    let res = m.resolve_conflict(
        &r,
        Stage::Accepted,
        &crm,
        t("2025-01-03T00:00:00Z"),
        t("2025-01-02T00:00:00Z"),
    );
    assert_eq!(
        res.crm_updates,
        record(json!({"Name": "PC name", "Amount": 10}))
    );
    let res = m.resolve_conflict(&r, Stage::Accepted, &crm, None, None);
    assert_eq!(res.crm_updates.get("Amount"), Some(&json!(10)));
    // An unknown edit time counts as Partner Center's; an archived deal takes no patch.
    let res = m.resolve_conflict(&r, Stage::Won, &crm, None, t("2025-01-02T00:00:00Z"));
    assert_eq!(
        res.crm_updates,
        record(json!({"Name": "PC name", "Amount": 10}))
    );
    assert_eq!(res.patch, vec![]);
    assert_eq!(
        res.withheld,
        vec![PatchOp::replace("/details/notes", "CRM notes")]
    );
}

#[test]
fn templates_join_fields_one_way() {
    let text = format!(
        "{HEAD}[fields]\n\"customerProfile.address.addressLine1\" = {{ crm = \"Customer_Address__c\", direction = \"to_crm\", transform = {{ template = \"{{customerProfile.address.addressLine1}}, {{customerProfile.address.city}}\" }} }}\n\"details.notes\" = {{ direction = \"to_partner_center\", transform = {{ template = \"{{Description}} (next: {{NextStep}})\" }} }}\n{STAGES}"
    );
    let m = Mapping::load(&text, "m.toml").unwrap_or_else(|p| panic!("{p:#?}"));
    let r = json!({"id": "r", "customerProfile": {"address": {"addressLine1": "1 Way", "city": "Redmond"}}});
    assert_eq!(
        m.to_crm(&r, Stage::Accepted)["Customer_Address__c"],
        "1 Way, Redmond"
    );
    assert!(m.crm_fields().contains(&"NextStep"));
    let crm = record(
        json!({"Description": "Call back", "NextStep": "demo", "StageName": "Qualification"}),
    );
    let p = m.proposed_changes(&crm, &r, Stage::Accepted);
    assert_eq!(
        p.patch,
        vec![PatchOp::add(
            "/details",
            json!({"notes": "Call back (next: demo)"})
        )]
    );
}

#[test]
fn defaults_fill_empty_values() {
    let text = format!(
        "{HEAD}[fields]\n\"details.currency\" = {{ crm = \"Currency__c\", transform = \"currency\", default = \"USD\" }}\n{STAGES}"
    );
    let m = Mapping::load(&text, "m.toml").unwrap();
    let crm = record(json!({"Currency__c": null}));
    let p = m.proposed_changes(&crm, &json!({"id": "r", "details": {}}), Stage::Accepted);
    assert_eq!(p.patch, vec![PatchOp::add("/details/currency", "USD")]);
    assert_eq!(
        m.to_crm(&json!({"id": "r"}), Stage::Accepted)["Currency__c"],
        "USD"
    );
}

#[test]
fn the_guide_examples_parse() {
    let guide = include_str!("../../../../docs/mapping-guide.md");
    let mut blocks = 0;
    for block in guide.split("```toml\n").skip(1) {
        let body = block.split("```").next().unwrap();
        let mut text = String::new();
        if !body.contains("object =") {
            text.push_str(HEAD);
        }
        let needs_fields = !body.contains('[') || body.trim_start().starts_with('"');
        if needs_fields {
            text.push_str("[fields]\n");
        }
        text.push_str(body);
        Mapping::parse(&text, "guide").unwrap_or_else(|e| panic!("{e}\n{text}"));
        blocks += 1;
    }
    assert!(blocks >= 8, "{blocks}");
}

#[test]
fn status_fields_are_written_only_by_the_daemon_and_cleared_when_answered() {
    let text = format!(
        "{HEAD}{STAGES}\n[status]\nanswer_by = \"Answer_By__c\"\nmicrosoft_engagement = \"Microsoft_Engagement__c\"\ncustomer_contact = \"fields\"\n"
    );
    let m = Mapping::load(&text, "m.toml").unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(m.status.answer_by.as_deref(), Some("Answer_By__c"));
    assert_eq!(m.status.customer_contact, ContactMode::Fields);
    // "record": a CRM Contact linked to the opportunity, accepted as is.
    let record = text.replace("\"fields\"", "\"record\"");
    let with_contact = Mapping::load(&record, "m.toml").unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(with_contact.status.customer_contact, ContactMode::Record);
    assert!(m.crm_fields().contains(&"Answer_By__c"));
    let mut r = json!({"id": "r1", "status": "New", "substatus": "Pending"});
    r[ANSWER_BY_KEY] = json!("2026-12-17T06:00:00Z");
    r[ENGAGEMENT_KEY] = json!("Engaged");
    let on_hold = m.to_crm(&r, Stage::Received);
    assert_eq!(on_hold["Answer_By__c"], "2026-12-17T06:00:00Z");
    assert_eq!(on_hold["Microsoft_Engagement__c"], "Engaged");
    assert_eq!(m.to_crm(&r, Stage::Accepted)["Answer_By__c"], Value::Null);
    assert_eq!(m.to_crm(&r, Stage::Declined)["Answer_By__c"], Value::Null);
    // Nothing the daemon has not said is written.
    let plain = m.to_crm(&json!({"id": "r1"}), Stage::Accepted);
    assert!(!plain.contains_key("Microsoft_Engagement__c"));
    // Never read back into the referral.
    assert!(!m.crm_projection(&on_hold).contains_key("Answer_By__c"));
}

#[test]
fn status_fields_are_checked_like_other_field_names() {
    let bad = format!("{HEAD}{STAGES}\n[status]\nanswer_by = \"Answer By\"\nanswered = \"X\"\n");
    let e = Mapping::parse(&bad, "m.toml").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("status.answered"), "{e}");
    let bad = format!("{HEAD}{STAGES}\n[status]\nanswer_by = \"Answer By\"\n");
    let problems = Mapping::load(&bad, "m.toml").unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.to_string().contains("status.answer_by")),
        "{problems:#?}"
    );
    let twice = format!("{HEAD}{STAGES}\n[status]\nanswer_by = \"Loss_Reason__c\"\n");
    let problems = Mapping::load(&twice, "m.toml").unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.to_string().contains("Loss_Reason__c")),
        "{problems:#?}"
    );
}

#[test]
fn a_path_mapped_twice_is_shown_in_a_second_field_and_never_sent_from_it() {
    let text = format!(
        "{HEAD}{STAGES}\n[fields]\n\"inviteContext.notes\" = {{ crm = \"Description\", direction = \"to_partner_center\", create_only = true }}\n\"inviteContext.notes#received\" = {{ crm = \"Referral_Notes__c\", direction = \"to_crm\" }}\n"
    );
    let m = Mapping::load(&text, "m.toml").unwrap_or_else(|p| panic!("{p:#?}"));
    let r = json!({"id": "r1", "status": "Active", "substatus": "Accepted",
                   "inviteContext": {"notes": "Hi, a customer for you"}});
    let crm = m.to_crm(&r, Stage::Accepted);
    assert_eq!(crm["Referral_Notes__c"], "Hi, a customer for you");
    assert!(!crm.contains_key("Description"));
    let mut edited = crm.clone();
    edited.insert("Referral_Notes__c".into(), json!("changed here"));
    let p = m.proposed_changes(&edited, &r, Stage::Accepted);
    assert!(p.patch.is_empty(), "{:?}", p.patch);

    let both = text.replace(
        "\"Referral_Notes__c\", direction = \"to_crm\"",
        "\"Referral_Notes__c\"",
    );
    let problems = Mapping::load(&both, "m.toml").unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.to_string().contains("inviteContext.notes#received")
                && p.to_string().contains("to_crm")),
        "{problems:#?}"
    );
}

#[test]
fn a_linked_contact_is_the_customer_contact_of_a_co_sell_request_only_in_record_mode() {
    let text = format!(
        "{HEAD}[fields]\n\"inviteContext.assistanceRequestCode\" = {{ crm = \"Help__c\", direction = \"to_partner_center\" }}\n{STAGES}\n[status]\ncustomer_contact = \"record\"\n"
    );
    let m = Mapping::load(&text, "m.toml").unwrap_or_else(|p| panic!("{p:#?}"));
    let mut crm = CrmRecord::new();
    crm.insert(
        crate::mapping::CONTACT_KEY.into(),
        json!({"firstName": "Sean", "lastName": "Murphy", "email": "sean@fabrikam.example", "phoneNumber": ""}),
    );
    // A private deal does not need it.
    let json = m.new_deal(&crm).referral.to_json();
    assert!(json["customerProfile"]["team"].is_null(), "{json}");

    crm.insert("Help__c".into(), json!("ProofOfConceptOrDemo"));
    let json = m.new_deal(&crm).referral.to_json();
    assert_eq!(
        json["customerProfile"]["team"][0]["email"], "sean@fabrikam.example",
        "{json}"
    );
    assert_eq!(json["customerProfile"]["team"][0]["lastName"], "Murphy");
    assert!(
        json["customerProfile"]["team"][0]
            .get("phoneNumber")
            .is_none_or(Value::is_null),
        "{json}"
    );
    let fields = Mapping::load(&text.replace("\"record\"", "\"fields\""), "m.toml").unwrap();
    let json = fields.new_deal(&crm).referral.to_json();
    assert!(
        json["customerProfile"]["team"][0]["email"].is_null(),
        "{json}"
    );
}
