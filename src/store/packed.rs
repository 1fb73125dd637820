//! JSON kept in the store compressed (schema 9): a referral's snapshot and a
//! link's CRM fields. A 2.5 KB referral took a 4 KiB page of its own; packed
//! against a dictionary of the documented field names it takes about 900
//! bytes: the store is about 2.4 times smaller and writes a third less.
//!
//! A packed value is one byte naming its format (the dictionary), the JSON's
//! length (u32, little endian) and an LZ4 block. The dictionaries are part of
//! the store format: a format's bytes never change once released; a new
//! dictionary is a new format byte.

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;

/// What a packed value holds, by the dictionary it was packed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Packing {
    /// A Partner Center referral (`referrals.raw_packed`).
    Referral = 1,
    /// A link's CRM fields (`links.crm_fields_packed`).
    CrmFields = 2,
}

/// Format 1's dictionary: a referral with every documented field, in the
/// order the engine writes them, and no values of any real referral.
const REFERRAL_V1: &[u8] = include_bytes!("dictionaries/referral-v1.json");
/// Format 2's: the CRM field names of the shipped mappings, and common values.
const CRM_FIELDS_V1: &[u8] = include_bytes!("dictionaries/crm-fields-v1.json");

/// The largest JSON a packed value holds: far above any referral, and a
/// bound on what a damaged length can make us allocate. Longer JSON is kept
/// as text.
const MAX_UNPACKED: usize = 16 << 20;
const HEADER: usize = 5;

impl Packing {
    fn dictionary(self) -> &'static [u8] {
        match self {
            Packing::Referral => REFERRAL_V1,
            Packing::CrmFields => CRM_FIELDS_V1,
        }
    }

    fn from_tag(tag: u8) -> Option<Packing> {
        match tag {
            1 => Some(Packing::Referral),
            2 => Some(Packing::CrmFields),
            _ => None,
        }
    }
}

/// Why a packed value could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum UnpackError {
    #[error("packed value of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown packing format {0} (written by a newer cosell-sync?)")]
    UnknownFormat(u8),
    #[error("packed value claims {0} bytes, more than the {MAX_UNPACKED} allowed")]
    TooLarge(usize),
    #[error("damaged packed value: {0}")]
    Damaged(String),
    #[error("packed value holds {got} bytes, its header says {expected}")]
    LengthMismatch { expected: usize, got: usize },
    #[error("packed value is not UTF-8 text")]
    NotText,
}

/// `json` packed against `packing`'s dictionary; `None` when it is longer
/// than a packed value may hold (the caller keeps it as text).
pub(crate) fn pack(packing: Packing, json: &str) -> Option<Vec<u8>> {
    let input = json.as_bytes();
    if input.len() > MAX_UNPACKED {
        return None;
    }
    let block = lz4_flex::block::compress_with_dict(input, packing.dictionary());
    let mut out = Vec::with_capacity(HEADER + block.len());
    out.push(packing as u8);
    // At most MAX_UNPACKED, so it fits.
    out.extend_from_slice(&(input.len() as u32).to_le_bytes());
    out.extend_from_slice(&block);
    Some(out)
}

/// The JSON text a packed value holds, and which format it was.
pub(crate) fn unpack(blob: &[u8]) -> Result<(Packing, String), UnpackError> {
    if blob.len() < HEADER {
        return Err(UnpackError::Short(blob.len()));
    }
    let packing = Packing::from_tag(blob[0]).ok_or(UnpackError::UnknownFormat(blob[0]))?;
    let mut len = [0u8; 4];
    len.copy_from_slice(&blob[1..HEADER]);
    let expected = u32::from_le_bytes(len) as usize;
    if expected > MAX_UNPACKED {
        return Err(UnpackError::TooLarge(expected));
    }
    let mut out = vec![0u8; expected];
    let got =
        lz4_flex::block::decompress_into_with_dict(&blob[HEADER..], &mut out, packing.dictionary())
            .map_err(|e| UnpackError::Damaged(e.to_string()))?;
    if got != expected {
        return Err(UnpackError::LengthMismatch { expected, got });
    }
    String::from_utf8(out)
        .map(|text| (packing, text))
        .map_err(|_| UnpackError::NotText)
}

/// A packed value of the expected format as text.
pub(crate) fn unpack_as(packing: Packing, blob: &[u8]) -> Result<String, UnpackError> {
    match unpack(blob)? {
        (found, text) if found == packing => Ok(text),
        (found, _) => Err(UnpackError::Damaged(format!(
            "format {} where {} was expected",
            found as u8, packing as u8
        ))),
    }
}

/// SQL `unpacked_json(text, packed)`: `packed` unpacked when it is a blob,
/// else `text`. Lets SQL read the JSON of rows of either form
/// (`json_extract(unpacked_json(raw_json, raw_packed), '$.id')`).
pub(crate) fn register_sql_function(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "unpacked_json",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx: &mut Context| -> rusqlite::Result<Option<String>> {
            match ctx.get_raw(1) {
                ValueRef::Blob(b) => unpack(b)
                    .map(|(_, text)| Some(text))
                    .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e))),
                _ => match ctx.get_raw(0) {
                    ValueRef::Text(t) => Ok(Some(String::from_utf8_lossy(t).into_owned())),
                    _ => Ok(None),
                },
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REFERRAL: &str = r#"{"id":"9d2c4bb4-1c53-4d5c-9d0a-6b0f0a1d5e77","engagementId":"0f3b","name":"Northwind - Analytics","status":"New","substatus":"Pending","customerProfile":{"name":"Northwind Traders","address":{"city":"Oslo","country":"NO"}},"details":{"dealValue":12.5,"currency":"NOK"},"unknownField":{"kept":[1,2,3]},"note":"ü €"}"#;

    #[test]
    fn a_referral_comes_back_as_it_went_in_and_smaller() {
        let packed = pack(Packing::Referral, REFERRAL).unwrap();
        assert!(
            packed.len() < REFERRAL.len() * 3 / 4,
            "{} of {}",
            packed.len(),
            REFERRAL.len()
        );
        assert_eq!(
            unpack(&packed),
            Ok((Packing::Referral, REFERRAL.to_string()))
        );
    }

    #[test]
    fn the_dictionaries_never_change() {
        // Packed values of formats 1 and 2 decode only against these exact
        // bytes: change a dictionary and every store written before cannot
        // be read. A new dictionary is a new format.
        fn fnv1a(bytes: &[u8]) -> u64 {
            bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            })
        }
        assert_eq!(
            (REFERRAL_V1.len(), fnv1a(REFERRAL_V1)),
            (2364, 0x6253_828d_bfc7_40bf),
            "referral-v1.json"
        );
        assert_eq!(
            (CRM_FIELDS_V1.len(), fnv1a(CRM_FIELDS_V1)),
            (2230, 0xed00_0c30_a41d_83d4),
            "crm-fields-v1.json"
        );
    }

    #[test]
    fn values_packed_by_the_first_build_still_read() {
        // Bytes this format's first build wrote (not produced here): a newer
        // LZ4 encoder may pack differently, but must read these the same.
        let referral: &[u8] = &[
            1, 113, 0, 0, 0, 3, 174, 4, 16, 120, 220, 7, 4, 85, 8, 48, 78, 101, 119, 15, 0, 7, 103,
            8, 66, 80, 101, 110, 100, 1, 8, 4, 115, 5, 3, 172, 2, 0, 87, 0, 18, 110, 25, 4, 128,
            78, 111, 114, 116, 104, 119, 105, 110, 62, 8, 7, 248, 7, 6, 161, 7, 96, 78, 79, 34,
            125, 125, 125,
        ];
        assert_eq!(
            unpack_as(Packing::Referral, referral).as_deref(),
            Ok(
                r#"{"id":"x","status":"New","substatus":"Pending","customerProfile":{"name":"Northwind","address":{"country":"NO"}}}"#
            )
        );
        let fields: &[u8] = &[
            2, 96, 0, 0, 0, 19, 123, 72, 6, 244, 8, 34, 78, 111, 114, 116, 104, 119, 105, 110, 100,
            32, 45, 32, 65, 110, 97, 108, 121, 116, 105, 99, 115, 34, 45, 5, 13, 153, 5, 8, 136, 0,
            12, 104, 1, 2, 142, 0, 96, 115, 111, 102, 116, 34, 125,
        ];
        assert_eq!(
            unpack_as(Packing::CrmFields, fields).as_deref(),
            Ok(
                r#"{"Name":"Northwind - Analytics","Referral_Direction__c":"Incoming","new_referredby":"Microsoft"}"#
            )
        );
    }

    #[test]
    fn damage_is_an_error_not_a_panic_or_a_huge_allocation() {
        let packed = pack(Packing::CrmFields, r#"{"Name":"Northwind","Amount":5}"#).unwrap();
        assert_eq!(unpack(&packed[..3]), Err(UnpackError::Short(3)));
        let mut unknown = packed.clone();
        unknown[0] = 9;
        assert_eq!(unpack(&unknown), Err(UnpackError::UnknownFormat(9)));
        let mut huge = packed.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(unpack(&huge), Err(UnpackError::TooLarge(_))));
        let mut short = packed.clone();
        short[1..5].copy_from_slice(&3u32.to_le_bytes());
        assert!(unpack(&short).is_err());
        let mut cut = packed.clone();
        cut.truncate(packed.len() - 2);
        assert!(unpack(&cut).is_err());
        assert!(unpack_as(Packing::Referral, &packed).is_err());
    }

    #[test]
    fn json_too_long_to_read_back_is_not_packed() {
        let long = format!("\"{}\"", "x".repeat(MAX_UNPACKED));
        assert_eq!(pack(Packing::Referral, &long), None);
        let longest = "x".repeat(MAX_UNPACKED);
        let packed = pack(Packing::Referral, &longest).unwrap();
        assert_eq!(unpack_as(Packing::Referral, &packed), Ok(longest));
    }

    proptest! {
        #[test]
        fn any_text_round_trips(text in ".{0,3000}", crm in any::<bool>()) {
            let packing = if crm { Packing::CrmFields } else { Packing::Referral };
            prop_assert_eq!(unpack(&pack(packing, &text).unwrap()), Ok((packing, text)));
        }

        #[test]
        fn any_bytes_fail_cleanly(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), tag in 1u8..=2) {
            if let Some(b) = bytes.first_mut() { *b = tag; }
            if bytes.len() >= 5 {
                let n = (bytes.len() as u32 * 3).to_le_bytes();
                bytes[1..5].copy_from_slice(&n);
            }
            // Whatever the bytes, an answer and no panic; text when it says so.
            if let Ok((_, text)) = unpack(&bytes) {
                prop_assert_eq!(text.len(), bytes.len() * 3);
            }
        }
    }
}
