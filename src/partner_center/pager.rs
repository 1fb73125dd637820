//! Page-by-page listing that follows `@odata.nextLink` until it is absent.

use serde_json::Value;
use url::Url;

use super::client::{ApiRequest, PartnerCenterClient};
use super::error::PartnerCenterError;
use super::query::resolve_next_link;
use crate::domain::{Referral, ReferralParseError};

/// One page of referrals. A record that could not be read is in `failures`
/// (with its id and raw JSON) while the rest of the page is delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferralPage {
    pub referrals: Vec<Referral>,
    pub failures: Vec<ReferralParseError>,
    /// Whether another page follows.
    pub has_more: bool,
}

/// Streams a listing one page at a time; only the current page is held.
/// After an error the same page is requested again by the next call.
#[derive(Debug)]
pub struct ReferralPager {
    client: PartnerCenterClient,
    next: Option<Url>,
    pages: u32,
}

impl ReferralPager {
    pub(crate) fn new(client: PartnerCenterClient, first: Url) -> Self {
        ReferralPager {
            client,
            next: Some(first),
            pages: 0,
        }
    }

    /// The next page, or `None` once the listing is exhausted.
    pub async fn next_page(&mut self) -> Result<Option<ReferralPage>, PartnerCenterError> {
        let Some(url) = self.next.clone() else {
            return Ok(None);
        };
        let response = self.client.execute(&ApiRequest::get(url.clone())).await?;
        let (values, next_link) = parse_collection(&response.body)?;
        let next = match next_link {
            Some(link) => {
                let next = resolve_next_link(self.client.base_url(), &link).map_err(|reason| {
                    PartnerCenterError::UnexpectedResponse {
                        what: "the referral list".into(),
                        reason,
                    }
                })?;
                if next == url {
                    return Err(PartnerCenterError::UnexpectedResponse {
                        what: "the referral list".into(),
                        reason: "@odata.nextLink repeats the page just read".into(),
                    });
                }
                Some(next)
            }
            None => None,
        };
        let mut page = ReferralPage {
            referrals: Vec::with_capacity(values.len()),
            failures: Vec::new(),
            has_more: next.is_some(),
        };
        for value in values {
            match Referral::from_json(value) {
                Ok(r) => page.referrals.push(r),
                Err(e) => {
                    tracing::warn!(referral_id = e.id.as_deref().unwrap_or(""), reason = %e.reason, "unreadable referral in page");
                    page.failures.push(e);
                }
            }
        }
        self.pages += 1;
        self.next = next;
        tracing::debug!(
            page = self.pages,
            referrals = page.referrals.len(),
            failures = page.failures.len(),
            has_more = page.has_more,
            "referral page read"
        );
        Ok(Some(page))
    }

    /// Pages delivered so far.
    pub fn pages_read(&self) -> u32 {
        self.pages
    }

    pub fn is_done(&self) -> bool {
        self.next.is_none()
    }

    /// Reads every remaining page into one list (for small listings only,
    /// such as one engagement's referrals).
    pub async fn collect_all(mut self) -> Result<ReferralPage, PartnerCenterError> {
        let mut all = ReferralPage {
            referrals: Vec::new(),
            failures: Vec::new(),
            has_more: false,
        };
        while let Some(page) = self.next_page().await? {
            all.referrals.extend(page.referrals);
            all.failures.extend(page.failures);
        }
        Ok(all)
    }
}

/// `{"value": [...], "@odata.nextLink": "..."}`.
fn parse_collection(body: &[u8]) -> Result<(Vec<Value>, Option<String>), PartnerCenterError> {
    let unexpected = |reason: String| PartnerCenterError::UnexpectedResponse {
        what: "the referral list".into(),
        reason,
    };
    let mut doc: serde_json::Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| unexpected(format!("not a JSON object: {e}")))?;
    let values = match doc.remove("value") {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => return Err(unexpected("no `value` array".into())),
        Some(other) => return Err(unexpected(format!("`value` is not an array but {other}"))),
    };
    let next_link = match doc.remove("@odata.nextLink") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        Some(Value::String(_)) | Some(Value::Null) | None => None,
        Some(other) => {
            return Err(unexpected(format!(
                "@odata.nextLink is not a string but {other}"
            )));
        }
    };
    Ok((values, next_link))
}
