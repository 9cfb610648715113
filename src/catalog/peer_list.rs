//! One peer's `GET /v1/files`, with a connect timeout, a whole-request
//! deadline (a busy peer's `503` is asked again within it), a body size
//! limit per peer and a reservation from the catalog's shared byte budget.
//!
//! The list is asked for with `Accept-Encoding: gzip`. A gzip body is
//! inflated chunk by chunk, each chunk reserved from the budget before it
//! is kept, and never past [`MAX_CATALOG_BODY`] inflated: a small body
//! that inflates to gigabytes (a gzip bomb) fails with
//! [`PeerListError::Inflated`] having held at most the limit.

use std::io::Read;
use std::time::Instant;

use super::budget::Budget;
use crate::client::{self, ClientError, Timeouts};
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
    Json(#[source] serde_json::Error),
    /// A gzip body that inflates past the per-peer limit (a gzip bomb?).
    #[error(
        "peer sent a gzip file list that inflates past the {limit}-byte limit for one peer's list"
    )]
    Inflated {
        /// The limit on the inflated list.
        limit: u64,
    },
    /// A gzip body that does not inflate.
    #[error("peer sent a bad gzip file list: {0}")]
    Gzip(#[source] std::io::Error),
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

/// A short class of a [`PeerListError`], for the catalog's summary warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FailureKind {
    Unreachable,
    Stalled,
    TooSlow,
    NotAsked,
    OverBudget,
    OverLimit,
    BadList,
    Refused,
    Indexing,
    Other,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::Unreachable => "unreachable",
            FailureKind::Stalled => "stalled",
            FailureKind::TooSlow => "too slow",
            FailureKind::NotAsked => "not asked before the deadline",
            FailureKind::OverBudget => "over the catalog budget",
            FailureKind::OverLimit => "over the size limit",
            FailureKind::BadList => "sent a bad list",
            FailureKind::Refused => "refused",
            FailureKind::Indexing => "still indexing",
            FailureKind::Other => "failed otherwise",
        })
    }
}

impl PeerListError {
    /// The class of this failure.
    pub(crate) fn kind(&self) -> FailureKind {
        match self {
            PeerListError::Request(ClientError::Connect { .. }) => FailureKind::Unreachable,
            PeerListError::Request(ClientError::Stalled { .. }) => FailureKind::Stalled,
            PeerListError::Request(ClientError::Deadline { .. }) => FailureKind::TooSlow,
            PeerListError::Request(ClientError::TooLarge { .. })
            | PeerListError::Inflated { .. } => FailureKind::OverLimit,
            PeerListError::Request(_) => FailureKind::Other,
            PeerListError::NotAsked => FailureKind::NotAsked,
            PeerListError::Budget { .. } => FailureKind::OverBudget,
            PeerListError::Json(_) | PeerListError::Gzip(_) => FailureKind::BadList,
            PeerListError::Status(_) => FailureKind::Refused,
        }
    }
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
        let head = conn.get_gzip(FILES_PATH)?;
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
        let (body, reserved) = if head.gzip {
            // The compressed bytes were reserved as a body; what is kept is
            // the inflated JSON, reserved as it grows.
            let inflated = inflate(&body, budget);
            budget.give_back(reserved);
            inflated?
        } else {
            (body, reserved)
        };
        let fail = |e: PeerListError| {
            budget.give_back(reserved);
            Err(e)
        };
        let list: FileList = match serde_json::from_slice(&body) {
            Ok(l) => l,
            Err(e) => return fail(PeerListError::Json(e)),
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

/// Inflates a gzip body of at most [`MAX_CATALOG_BODY`] bytes, taking
/// `PARSE_FACTOR` times each chunk from `budget` before keeping it. Returns
/// the JSON and what it holds of the budget (given back on an error).
fn inflate(gz: &[u8], budget: &Budget) -> Result<(Vec<u8>, u64), PeerListError> {
    const CHUNK: usize = 64 * 1024;
    let mut decoder = flate2::read::GzDecoder::new(gz);
    let mut out: Vec<u8> = Vec::new();
    let mut reserved = 0u64;
    let fail = |reserved: u64, e: PeerListError| {
        budget.give_back(reserved);
        Err(e)
    };
    loop {
        let start = out.len();
        if start as u64 > MAX_CATALOG_BODY {
            return fail(
                reserved,
                PeerListError::Inflated {
                    limit: MAX_CATALOG_BODY,
                },
            );
        }
        let want = CHUNK.min((MAX_CATALOG_BODY + 1) as usize - start);
        if !budget.take(want as u64 * PARSE_FACTOR) {
            return fail(
                reserved,
                PeerListError::Budget {
                    need: reserved + want as u64 * PARSE_FACTOR,
                },
            );
        }
        reserved += want as u64 * PARSE_FACTOR;
        out.resize(start + want, 0);
        let n = match decoder.read(&mut out[start..]) {
            Ok(n) => n,
            Err(e) => return fail(reserved, PeerListError::Gzip(e)),
        };
        out.truncate(start + n);
        // Give back what this chunk did not fill.
        let unused = (want - n) as u64 * PARSE_FACTOR;
        budget.give_back(unused);
        reserved -= unused;
        if n == 0 {
            out.shrink_to_fit();
            return Ok((out, reserved));
        }
    }
}
