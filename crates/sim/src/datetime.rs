//! Date-times as the simulated services read them on the wire.
//!
//! Partner Center writes UTC with 7 fractional digits
//! (`2018-11-06T18:40:42.6178337Z`, partner-center-api §2.8), and also whole
//! seconds (`2018-11-14T00:00:00Z`) and fewer digits (`…08.267Z`, §2.10);
//! webhook payloads carry an offset (`…39.5485487+00:00`, §6). Dataverse and
//! Salesforce accept ISO 8601 date-times with an offset too. Every reader here
//! is tolerant: 0–9 fractional digits, `Z` or a numeric offset, a missing
//! offset read as UTC, and a bare date read as its midnight UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Reads a wire date-time; `None` when the text is not one.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn seven_fractional_digits_with_z() {
        let t = parse("2018-11-06T18:40:42.6178337Z").unwrap();
        assert_eq!(
            t.timestamp_nanos_opt(),
            Some(
                Utc.with_ymd_and_hms(2018, 11, 6, 18, 40, 42)
                    .unwrap()
                    .timestamp_nanos_opt()
                    .unwrap()
                    + 617_833_700
            )
        );
    }

    #[test]
    fn zero_to_seven_digits_all_read() {
        let base = Utc.with_ymd_and_hms(2022, 2, 25, 17, 54, 36).unwrap();
        assert_eq!(parse("2022-02-25T17:54:36Z"), Some(base));
        assert_eq!(
            parse("2022-02-25T17:54:36.2Z").unwrap() - base,
            chrono::TimeDelta::milliseconds(200)
        );
        assert_eq!(
            parse("2022-02-25T17:54:36.267Z").unwrap() - base,
            chrono::TimeDelta::milliseconds(267)
        );
        assert_eq!(
            parse("2022-02-25T17:54:36.1961744Z").unwrap() - base,
            chrono::TimeDelta::nanoseconds(196_174_400)
        );
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        let t = parse("2018-02-17T00:05:39.5485487+00:00").unwrap();
        assert_eq!(t, parse("2018-02-17T00:05:39.5485487Z").unwrap());
        assert_eq!(
            parse("2025-01-01T02:00:00+02:00"),
            Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap())
        );
        assert_eq!(
            parse("2024-12-31T19:00:00-05:00"),
            Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap())
        );
    }

    #[test]
    fn missing_offset_and_bare_date_are_utc() {
        assert_eq!(
            parse("2022-02-25T18:08:51"),
            Some(Utc.with_ymd_and_hms(2022, 2, 25, 18, 8, 51).unwrap())
        );
        assert_eq!(
            parse("2018-11-14"),
            Some(Utc.with_ymd_and_hms(2018, 11, 14, 0, 0, 0).unwrap())
        );
    }

    #[test]
    fn garbage_is_refused() {
        for s in [
            "",
            "tomorrow",
            "2018-13-01T00:00:00Z",
            "2018-11-06 18:40",
            "12345",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
    }
}
