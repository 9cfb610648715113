//! One peer's `GET /v1/files`, with a connect timeout, a whole-request
//! deadline (a busy peer's `503` is asked again within it), a body size
//! limit per peer and a reservation from the catalog's shared byte budget.

use std::time::Instant;

use super::budget::Budget;
use crate::fetch::client::{self, ClientError, Timeouts};
use crate::protocol::{FileList, FILES_PATH};

/// Largest catalog body accepted from one peer: about 100,000 files. The
/// total over all peers is bounded by `CatalogOptions::budget`.
pub const MAX_CATALOG_BODY: u64 = 16 * 1024 * 1024;

/// A body is reserved this many times over while it is read and parsed.
const PARSE_FACTOR: u64 = 3;

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
    /// The catalog's total byte budget is spent.
    #[error("catalog budget spent: {need} more bytes would exceed the total of all peers' lists")]
    Budget {
        /// Bytes the answer needed.
        need: u64,
    },
    /// The overall deadline for asking peers passed before this one was asked.
    #[error("not asked: the deadline for asking peers passed")]
    NotAsked,
}

/// Fetches a peer's file list before `deadline`, reserving its body from
/// `budget` (a body that does not fit is refused, nothing is read). A list
/// returned keeps its reservation; a failed request gives it back.
pub(crate) fn fetch_budgeted(
    addrs: &[String],
    timeouts: Timeouts,
    deadline: Instant,
    budget: &Budget,
) -> Result<FileList, PeerListError> {
    let started = Instant::now();
    let limit = deadline.saturating_duration_since(started);
    let addr = addrs.join(",");
    let addr = addr.as_str();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Deadline {
                addr: addr.to_string(),
                limit,
            }
            .into());
        }
        let t = Timeouts {
            connect: timeouts.connect.min(left),
            io: timeouts.io.min(left),
        };
        let mut conn = client::connect(addrs, t)?;
        let head = conn.get(FILES_PATH, None)?;
        // Reserved: the body and room to parse it (a list takes up to about
        // twice its JSON while it is built), so lists being read and parsed
        // at once never exceed the budget either.
        let reserved = match head.content_length {
            Some(len) if len > MAX_CATALOG_BODY => {
                return Err(ClientError::TooLarge {
                    addr: addr.to_string(),
                    limit: MAX_CATALOG_BODY,
                }
                .into())
            }
            Some(len) if budget.take(len * PARSE_FACTOR) => len * PARSE_FACTOR,
            Some(len) => {
                return Err(PeerListError::Budget {
                    need: len * PARSE_FACTOR,
                })
            }
            None => budget.take_up_to(MAX_CATALOG_BODY * PARSE_FACTOR),
        };
        let body_limit = reserved / PARSE_FACTOR;
        let fail = |e: PeerListError| {
            budget.give_back(reserved);
            Err(e)
        };
        let body = match conn.read_body_to_vec(&head, body_limit, started, limit) {
            Ok(b) => b,
            Err(ClientError::TooLarge { .. }) if body_limit < MAX_CATALOG_BODY => {
                return fail(PeerListError::Budget { need: reserved + 1 })
            }
            Err(e) => return fail(e.into()),
        };
        if head.status == 503 && Instant::now() + client::BUSY_RETRY < deadline {
            budget.give_back(reserved);
            log::debug!("peer {addr} busy (503) for {FILES_PATH}; asking again");
            std::thread::sleep(client::BUSY_RETRY);
            continue;
        }
        if head.status != 200 {
            return fail(PeerListError::Status(head.status));
        }
        let list: FileList = match serde_json::from_slice(&body) {
            Ok(l) => l,
            Err(e) => return fail(PeerListError::Json(e.to_string())),
        };
        // What the list keeps: its JSON, but at least `ENTRY_COST` per entry
        // (many tiny entries take far more memory than their JSON).
        let kept = (body.len() as u64).max(super::cache::list_bytes(&list.files));
        if kept <= reserved {
            budget.give_back(reserved - kept);
        } else if !budget.take(kept - reserved) {
            return fail(PeerListError::Budget { need: kept });
        }
        return Ok(list);
    }
}
