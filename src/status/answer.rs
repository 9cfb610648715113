//! The status as the peer's server sends it: the page at `GET /`, the
//! JSON of `GET /v1/status`, and `GET /metrics` with the peer's values.
//! The server asks its `FileSource` for these ([`Page`]); the peer's
//! source answers from its [`Monitor`](super::Monitor)'s report here, so
//! the server renders none of it.

use super::{page, StatusReport};
use crate::metrics;
use crate::server::{Page, PageBody};

const CONTENT_TYPE_HTML: &str = "text/html; charset=utf-8";
const CONTENT_TYPE_JSON: &str = "application/json";

/// `report` as `page`.
pub(crate) fn answer(page: Page, report: &StatusReport) -> Result<PageBody, serde_json::Error> {
    Ok(match page {
        Page::Status => PageBody {
            content_type: CONTENT_TYPE_HTML,
            // (`X-Content-Type-Options: nosniff` the server puts on every answer.)
            headers: vec![(
                "Content-Security-Policy",
                page::CONTENT_SECURITY_POLICY.into(),
            )],
            body: page::render(report).into_bytes(),
        },
        Page::StatusJson => PageBody {
            content_type: CONTENT_TYPE_JSON,
            headers: Vec::new(),
            body: serde_json::to_vec(report)?,
        },
        Page::Metrics => PageBody {
            content_type: metrics::CONTENT_TYPE,
            headers: Vec::new(),
            body: metrics::render_with(&report.gauges(), &report.download_sources()).into_bytes(),
        },
    })
}
