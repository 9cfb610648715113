//! The status as the peer's server sends it: the page at `GET /`, the
//! JSON of `GET /v1/status`, and `GET /metrics` with the peer's values.
//! The server asks its `FileSource` for these ([`Page`]); the peer's
//! source answers from its [`Monitor`]'s report here, so the server
//! renders none of it. The page and the JSON are rendered at most once a
//! second and that one body is shared by every answer sending it
//! ([`Monitor::body`]); `/metrics` (a few KiB) is rendered per request.

use std::sync::Arc;

use super::{page, Body, Monitor};
use crate::metrics;
use crate::server::{Page, PageBody};

const CONTENT_TYPE_HTML: &str = "text/html; charset=utf-8";
const CONTENT_TYPE_JSON: &str = "application/json";

/// `monitor`'s report as `page`.
pub(crate) fn answer(page: Page, monitor: &Monitor) -> Result<PageBody, serde_json::Error> {
    Ok(match page {
        Page::Status => PageBody {
            content_type: CONTENT_TYPE_HTML,
            // (`X-Content-Type-Options: nosniff` the server puts on every answer.)
            headers: vec![(
                "Content-Security-Policy",
                page::CONTENT_SECURITY_POLICY.into(),
            )],
            body: monitor.body(Body::Page)?,
        },
        Page::StatusJson => PageBody {
            content_type: CONTENT_TYPE_JSON,
            headers: Vec::new(),
            body: monitor.body(Body::Json)?,
        },
        Page::Metrics => PageBody {
            content_type: metrics::CONTENT_TYPE,
            headers: Vec::new(),
            body: Arc::new({
                let report = monitor.report();
                metrics::render_with(&report.gauges(), &report.download_sources()).into_bytes()
            }),
        },
    })
}
