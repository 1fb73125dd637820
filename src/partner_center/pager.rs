//! Page-by-page listing over any [`PartnerCenter`], following each page's
//! continuation until it is absent.

use chrono::{DateTime, Utc};

use super::api::{PartnerCenter, ReferralPage};
use super::error::PartnerCenterError;
use super::query::ListFilter;

/// Streams a listing one page at a time; only the current page is held.
/// After an error the same page is requested again by the next call.
pub struct ReferralPager<'a> {
    pc: &'a dyn PartnerCenter,
    since: DateTime<Utc>,
    filter: ListFilter,
    /// The continuation of the next page (`None` before the first page).
    next: Option<String>,
    done: bool,
    pages: u32,
}

impl std::fmt::Debug for ReferralPager<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferralPager")
            .field("since", &self.since)
            .field("filter", &self.filter)
            .field("pages", &self.pages)
            .field("done", &self.done)
            .finish()
    }
}

impl<'a> ReferralPager<'a> {
    /// The referrals updated at or after `since`, page by page.
    pub fn new(pc: &'a dyn PartnerCenter, since: DateTime<Utc>, filter: ListFilter) -> Self {
        ReferralPager {
            pc,
            since,
            filter,
            next: None,
            done: false,
            pages: 0,
        }
    }

    /// The next page, or `None` once the listing is exhausted.
    pub async fn next_page(&mut self) -> Result<Option<ReferralPage>, PartnerCenterError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .pc
            .list_page(self.since, &self.filter, self.next.as_deref())
            .await?;
        self.pages += 1;
        self.done = page.next.is_none();
        self.next = page.next.clone();
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
        self.done
    }

    /// Reads every remaining page into one list (for small listings only).
    pub async fn collect_all(mut self) -> Result<ReferralPage, PartnerCenterError> {
        let mut all = ReferralPage {
            referrals: Vec::new(),
            failures: Vec::new(),
            has_more: false,
            next: None,
        };
        while let Some(page) = self.next_page().await? {
            all.referrals.extend(page.referrals);
            all.failures.extend(page.failures);
        }
        Ok(all)
    }
}
