//! One peer's `GET /v1/files`, with a connect timeout, a whole-request
//! deadline (a busy peer's `503` is asked again within it) and a body size
//! limit.

use std::time::Duration;

use crate::fetch::client::{self, ClientError, Timeouts};
use crate::protocol::{FileList, FILES_PATH};

/// Largest catalog body accepted from a peer: about 100,000 files. With
/// `CatalogOptions::fan_out` peers asked at once this bounds what hostile
/// peers streaming endless catalogs can make a client hold (8 x 16 MiB).
pub const MAX_CATALOG_BODY: u64 = 16 * 1024 * 1024;

/// Why a peer's file list could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerListError {
    /// The request failed (connect, timeout, size limit...).
    #[error(transparent)]
    Request(#[from] ClientError),
    /// Not `200`.
    #[error("peer answered status {0} to GET /v1/files")]
    Status(u16),
    /// Not a file list.
    #[error("peer sent a bad file list: {0}")]
    Json(String),
}

/// Fetches a peer's file list.
pub fn fetch_file_list(
    addrs: &[String],
    timeouts: Timeouts,
    deadline: Duration,
) -> Result<FileList, PeerListError> {
    let (head, body) = client::get_small(addrs, FILES_PATH, timeouts, MAX_CATALOG_BODY, deadline)?;
    if head.status != 200 {
        return Err(PeerListError::Status(head.status));
    }
    serde_json::from_slice(&body).map_err(|e| PeerListError::Json(e.to_string()))
}
