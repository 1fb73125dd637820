//! Property tests: referral → CRM → referral is the identity on mapped
//! `both` fields; dates keep their calendar day whatever the offset.

use chrono::{FixedOffset, NaiveDate, TimeZone};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::tests::apply_patch;
use super::transform::Conversion;
use super::value::same_opt;
use super::{FieldDirection, Mapping};
use crate::domain::Stage;
use crate::domain::country::COUNTRIES;

fn text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9 .,'-]{0,24}"
}

fn date() -> impl Strategy<Value = NaiveDate> {
    (0i64..36_500)
        .prop_map(|d| NaiveDate::from_ymd_opt(2000, 1, 1).unwrap() + chrono::Days::new(d as u64))
}

prop_compose! {
    fn referral()(
        name in text(),
        cents in 1i64..10_000_000_000,
        currency in "[A-Z]{3}",
        close in date(),
        notes in proptest::option::of(text()),
        customer in text(), street in text(), city in text(), state in proptest::option::of(text()),
        postal in "[0-9]{4,6}",
        country in proptest::sample::select(COUNTRIES.iter().map(|c| c.0).collect::<Vec<_>>()),
        contact in proptest::option::of((text(), text(), "[a-z]{1,8}@[a-z]{1,8}\\.com", "[0-9]{6,12}")),
        share in any::<bool>(),
        solutions in proptest::collection::vec("SOL-[0-9]{5}-[A-Z]{3}", 1..5),
    ) -> Value {
        let mut r = json!({
            "id": "8d1c2f3e-0001", "status": "Active", "substatus": "Accepted", "name": name,
            "customerProfile": {"name": customer, "address": {"addressLine1": street, "city": city,
                "postalCode": postal, "country": country}},
            "consent": {"consentToShareReferralWithMicrosoftSellers": share},
            "details": {"dealValue": cents as f64 / 100.0, "currency": currency,
                "closingDateTime": format!("{close}T00:00:00Z"),
                "requirements": {"solutions": solutions.iter().map(|s| json!({"id": s})).collect::<Vec<_>>()}},
        });
        if let Some(n) = notes { r["details"]["notes"] = json!(n); }
        if let Some(s) = state { r["customerProfile"]["address"]["state"] = json!(s); }
        if let Some((first, last, email, phone)) = contact {
            r["customerProfile"]["team"] = json!([{"firstName": first, "lastName": last, "email": email, "phoneNumber": phone}]);
        }
        r
    }
}

fn mappings() -> Vec<Mapping> {
    vec![
        Mapping::default_salesforce().unwrap(),
        Mapping::default_dynamics().unwrap(),
    ]
}

fn assert_both_fields_equal(
    m: &Mapping,
    original: &Value,
    back: &Value,
    create: bool,
) -> Result<(), TestCaseError> {
    for rule in m
        .fields
        .iter()
        .filter(|r| r.direction == FieldDirection::Both && (create || !r.create_only))
    {
        let (a, b) = (rule.path.read(original), rule.path.read(back));
        prop_assert!(
            same_opt(a.as_ref(), b.as_ref()),
            "{}: {}: {:?} became {:?}",
            m.file,
            rule.path,
            a,
            b
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn referral_to_crm_to_new_deal_is_the_identity_on_both_fields(r in referral()) {
        for m in mappings() {
            let crm = m.to_crm(&r, Stage::Accepted);
            let deal = m.new_deal(&crm);
            assert_both_fields_equal(&m, &r, &deal.referral.to_json(), true)?;
        }
    }

    #[test]
    fn referral_to_crm_to_patch_is_the_identity_on_both_fields(r in referral()) {
        for m in mappings() {
            let crm = m.to_crm(&r, Stage::Accepted);
            let mut base = json!({"id": "8d1c2f3e-0001", "status": "Active", "substatus": "Accepted"});
            let p = m.proposed_changes(&crm, &base, Stage::Accepted);
            prop_assert!(p.problems.is_empty(), "{:?}", p.problems);
            apply_patch(&mut base, &p.patch);
            assert_both_fields_equal(&m, &r, &base, false)?;
            prop_assert_eq!(m.proposed_changes(&crm, &base, Stage::Accepted).patch, vec![]);
        }
    }

    #[test]
    fn a_referral_in_step_with_its_crm_record_proposes_and_writes_nothing(r in referral()) {
        for m in mappings() {
            let crm = m.to_crm(&r, Stage::Accepted);
            let p = m.proposed_changes(&crm, &r, Stage::Accepted);
            prop_assert_eq!(p.patch, vec![]);
            prop_assert_eq!(p.withheld, vec![]);
            prop_assert!(m.crm_update(&r, Stage::Accepted, &crm).record.is_empty());
            prop_assert_eq!(m.pc_projection_hash(&r), m.pc_projection_hash(&r.clone()));
        }
    }

    /// Mapped once for a new deal, the record and its hash are what mapping
    /// and hashing apart give, whichever stage the write asks for.
    #[test]
    fn a_record_and_its_hash_mapped_once_are_those_mapped_apart(r in referral(), s in prop::sample::select(Stage::ALL.to_vec())) {
        for m in mappings() {
            let (record, hash) = m.to_crm_with_pc_hash(&r, s);
            prop_assert_eq!(&record, &m.to_crm(&r, s));
            prop_assert_eq!(&hash, &m.pc_projection_hash(&r));
        }
    }

    /// A local midnight in any real offset, written with that offset or in
    /// UTC, is read as its own calendar date; a CRM date comes back unchanged.
    #[test]
    fn dates_keep_their_day_in_every_offset(day in date(), quarters in -48i32..=56, utc in any::<bool>()) {
        let date = Conversion { transform: super::Transform::Date, join: None };
        let offset = FixedOffset::east_opt(quarters * 15 * 60).unwrap();
        let local_midnight = offset.from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap()).unwrap();
        let text = if utc {
            local_midnight.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        } else {
            local_midnight.to_rfc3339()
        };
        let crm_date = date.to_crm(&json!(text)).unwrap();
        let expected = day.format("%Y-%m-%d").to_string();
        // Written with its offset: always. Written in UTC: from UTC−10:45 (Hawaii is −10)
        // to UTC+13 (New Zealand summer, Tonga), the range the reading covers.
        if !utc || (-43..=52).contains(&quarters) {
            prop_assert_eq!(&crm_date, &json!(expected), "{}", text);
        }
        let pc = date.to_pc(&json!(expected), None).unwrap();
        prop_assert_eq!(pc, json!(format!("{day}T00:00:00Z")));
        prop_assert_eq!(date.to_crm(&json!(format!("{day}T00:00:00Z"))).unwrap(), json!(expected));
    }

    /// A stage pattern's value matches a record's value when both are the
    /// same or print the same; the comparison that skips printing two
    /// scalars of one kind agrees with printing them.
    #[test]
    fn loose_equality_is_equality_or_the_same_printed_text(a in scalar(), b in scalar()) {
        use super::value::{loosely_same, same, scalar_text};
        let printed = matches!((scalar_text(&a), scalar_text(&b)), (Some(x), Some(y)) if x == y);
        prop_assert_eq!(loosely_same(&a, &b), same(&a, &b) || printed, "{} against {}", a, b);
        prop_assert_eq!(loosely_same(&a, &b), loosely_same(&b, &a));
    }
}

/// Scalars as CRMs and mapping files write them, close enough to collide:
/// small integers as integers, floats and text, big integers, booleans.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..3).prop_map(Value::from),
        (-3i64..3).prop_map(|i| json!(i as f64)),
        (-6i64..6).prop_map(|i| json!(i as f64 / 4.0)),
        (9_007_199_254_740_990u64..9_007_199_254_740_995).prop_map(Value::from),
        prop_oneof![
            Just(1e16),
            Just(9.0e15),
            Just(0.5),
            Just(-0.0),
            Just(100000000.0)
        ]
        .prop_map(|f| json!(f)),
        proptest::sample::select(vec![
            "0",
            "1",
            "-1",
            "0.5",
            "-0.5",
            "1.5",
            "true",
            "false",
            "",
            " 1",
            "1.0",
            "9007199254740992",
            "9007199254740993",
            "10000000000000000",
            "1e16",
            "100000000",
            "Won"
        ])
        .prop_map(Value::from),
    ]
}
