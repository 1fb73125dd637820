//! OData query options for the referral list: `$filter` on documented fields
//! only, `$orderby`, `$top`, and percent-encoding that keeps spaces as `%20`.

use chrono::{DateTime, SecondsFormat, Utc};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use url::Url;

use crate::domain::{Direction, ReferralStatus, ReferralSubstatus, ReferralType};

/// Optional narrowing of a change listing, on documented filter fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub direction: Option<Direction>,
    pub status: Option<ReferralStatus>,
    pub substatus: Option<ReferralSubstatus>,
    pub referral_type: Option<ReferralType>,
}

impl ListFilter {
    pub fn incoming() -> Self {
        ListFilter {
            direction: Some(Direction::Incoming),
            ..Self::default()
        }
    }

    pub fn outgoing() -> Self {
        ListFilter {
            direction: Some(Direction::Outgoing),
            ..Self::default()
        }
    }

    /// `… and direction eq 'Incoming' and status eq 'New'`, in a fixed order.
    fn clauses(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = &self.direction {
            out.push(format!("direction eq {}", odata_string(d.as_str())));
        }
        if let Some(t) = &self.referral_type {
            out.push(format!("type eq {}", odata_string(t.as_str())));
        }
        if let Some(s) = &self.status {
            out.push(format!("status eq {}", odata_string(s.as_str())));
        }
        if let Some(s) = &self.substatus {
            out.push(format!("substatus eq {}", odata_string(s.as_str())));
        }
        out
    }
}

/// An OData string literal: single-quoted, inner quotes doubled.
pub fn odata_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A timestamp as an OData DateTimeOffset literal: RFC 3339, UTC, `Z`, whole
/// seconds (truncated, so a `ge` filter never skips a change).
pub fn odata_datetime(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `updatedDateTime ge <since>` plus the filter's clauses.
pub fn changes_filter(since: DateTime<Utc>, filter: &ListFilter) -> String {
    let mut clauses = vec![format!("updatedDateTime ge {}", odata_datetime(since))];
    clauses.extend(filter.clauses());
    clauses.join(" and ")
}

/// `engagementId eq '<id>'`: every referral of one engagement.
pub fn engagement_filter(engagement_id: &str) -> String {
    format!("engagementId eq {}", odata_string(engagement_id))
}

/// Characters escaped in a query value: controls, space (as `%20`, never
/// `+`), and the ones that would end or split the value. Note that the URL
/// standard itself writes `'` as `%27` in http(s) queries.
const QUERY_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Builds `?name=value&…` with each value percent-encoded.
pub fn set_query(url: &mut Url, params: &[(&str, &str)]) {
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
        .collect::<Vec<_>>()
        .join("&");
    url.set_query(Some(&query));
}

/// The list request: filter, ascending by `updatedDateTime`, page size.
pub fn list_url(referrals_url: &Url, filter: &str, page_size: u32) -> Url {
    let mut url = referrals_url.clone();
    let top = page_size.to_string();
    set_query(
        &mut url,
        &[
            ("$filter", filter),
            ("$orderby", "updatedDateTime asc"),
            ("$top", &top),
        ],
    );
    url
}

/// Resolves an `@odata.nextLink` against the API base. It is followed as
/// given, except that the bearer token is only ever sent to the API's own
/// host and port, and never over plain http when the base is https.
pub fn resolve_next_link(base: &Url, link: &str) -> Result<Url, String> {
    let mut next = base
        .join(link.trim())
        .map_err(|e| format!("@odata.nextLink {link:?} is not a URL: {e}"))?;
    if base.scheme() == "https" && next.scheme() == "http" {
        // The documentation's own sample nextLink says http.
        next.set_scheme("https")
            .map_err(|_| format!("@odata.nextLink {link:?} cannot be upgraded to https"))?;
        if next.port() == Some(80) {
            let _ = next.set_port(None);
        }
    }
    let same_origin = next.scheme() == base.scheme()
        && next.host_str().map(str::to_ascii_lowercase)
            == base.host_str().map(str::to_ascii_lowercase)
        && next.port_or_known_default() == base.port_or_known_default();
    if !same_origin {
        return Err(format!(
            "@odata.nextLink points at {}, not at the configured Partner Center host; refusing to send the token there",
            next.origin().ascii_serialization()
        ));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ts() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()
            + chrono::Duration::nanoseconds(123_456_789)
    }

    #[test]
    fn change_filters_use_documented_fields_and_utc_z_timestamps() {
        assert_eq!(
            changes_filter(ts(), &ListFilter::default()),
            "updatedDateTime ge 2024-05-01T10:00:00Z"
        );
        let f = ListFilter {
            direction: Some(Direction::Incoming),
            status: Some(ReferralStatus::New),
            substatus: Some(ReferralSubstatus::Pending),
            referral_type: Some(ReferralType::Shared),
        };
        assert_eq!(
            changes_filter(ts(), &f),
            "updatedDateTime ge 2024-05-01T10:00:00Z and direction eq 'Incoming' and type eq 'Shared' \
             and status eq 'New' and substatus eq 'Pending'"
        );
        assert_eq!(engagement_filter("o'brien"), "engagementId eq 'o''brien'");
    }

    #[test]
    fn query_values_encode_spaces_as_percent_20() {
        let base =
            Url::parse("https://api.partner.microsoft.com/v1.0/engagements/referrals").unwrap();
        let url = list_url(&base, &changes_filter(ts(), &ListFilter::outgoing()), 100);
        assert_eq!(
            url.as_str(),
            "https://api.partner.microsoft.com/v1.0/engagements/referrals?\
             $filter=updatedDateTime%20ge%202024-05-01T10:00:00Z%20and%20direction%20eq%20%27Outgoing%27\
             &$orderby=updatedDateTime%20asc&$top=100"
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs[0].1,
            "updatedDateTime ge 2024-05-01T10:00:00Z and direction eq 'Outgoing'"
        );
        let mut u = base.clone();
        set_query(&mut u, &[("$filter", "a eq 'x&y=z+1'")]);
        let pairs: Vec<(String, String)> = u.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            vec![("$filter".to_owned(), "a eq 'x&y=z+1'".to_owned())]
        );
    }

    #[test]
    fn next_links_are_followed_on_the_api_host_only() {
        let base = Url::parse("https://api.partner.microsoft.com/").unwrap();
        let next = resolve_next_link(
            &base,
            "http://api.partner.microsoft.com/v1.0/referrals?$skiptoken=k181pEdP0ykypkieJfcxX",
        )
        .unwrap();
        assert_eq!(
            next.as_str(),
            "https://api.partner.microsoft.com/v1.0/referrals?$skiptoken=k181pEdP0ykypkieJfcxX"
        );
        let rel = resolve_next_link(&base, "/v1.0/engagements/referrals?$skiptoken=abc").unwrap();
        assert_eq!(
            rel.as_str(),
            "https://api.partner.microsoft.com/v1.0/engagements/referrals?$skiptoken=abc"
        );
        assert!(resolve_next_link(&base, "https://evil.example/v1.0/referrals").is_err());
        let local = Url::parse("http://127.0.0.1:8080/").unwrap();
        assert!(resolve_next_link(&local, "http://127.0.0.1:9090/x").is_err());
        assert!(resolve_next_link(&local, "http://127.0.0.1:8080/x?$skiptoken=1").is_ok());
    }
}
