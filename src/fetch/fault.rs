//! Why a holder's request failed ([`Transfer`]), why its data is provably
//! wrong ([`BadData`]), and why it was dropped from a download
//! ([`Dropped`]): typed, so the worker decides by variant and the final
//! error lists each holder's reason in the same words as before. The
//! public [`HolderFault`] carries one of them (or the piece list's
//! failure) to the caller, with its [`HolderFaultKind`] to act on.

use std::time::Duration;

use super::pieces::PieceListError;
use crate::client::ClientError;

/// Why one holder could not be used for a download: its piece list could
/// not be had, or it was dropped during the download. Its message names
/// the cause; [`HolderFault::kind`] classifies it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct HolderFault(Cause);

/// What [`HolderFault`] holds.
#[derive(Debug, thiserror::Error)]
enum Cause {
    #[error(transparent)]
    PieceList(PieceListError),
    #[error(transparent)]
    Dropped(Dropped),
}

/// The class of a [`HolderFault`]: what the user can do about it differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HolderFaultKind {
    /// None of its addresses accepted a connection (refused, unreachable).
    Unreachable,
    /// It stopped sending, or was slower than the deadline.
    Stalled,
    /// It answered busy (`503`): its upload queue was full.
    Busy,
    /// It answered with another error status (`404`: it no longer has
    /// the file).
    Refused,
    /// It sent provably wrong data or an unusable piece list.
    BadData,
    /// It is this very download's own peer (serving the `.part`).
    Ourselves,
    /// It speaks another piece-list form (a peer of the version before
    /// SHA-1 chaining values): it is never mixed into a download.
    OtherVersion,
    /// Any other transfer failure (a reset, a short body, a bad head...).
    Other,
}

impl HolderFault {
    /// The class of this fault.
    pub fn kind(&self) -> HolderFaultKind {
        use HolderFaultKind as K;
        match &self.0 {
            Cause::PieceList(PieceListError::Request(e)) => client_kind(e),
            Cause::PieceList(PieceListError::Status(503)) => K::Busy,
            Cause::PieceList(PieceListError::Status(_)) => K::Refused,
            Cause::PieceList(
                PieceListError::Json(_) | PieceListError::Inconsistent(_) | PieceListError::Gzip(_),
            ) => K::BadData,
            Cause::PieceList(PieceListError::Form(_)) => K::OtherVersion,
            Cause::Dropped(Dropped::Ourselves) => K::Ourselves,
            Cause::Dropped(Dropped::Bad(_) | Dropped::OtherList(_)) => K::BadData,
            Cause::Dropped(Dropped::Failing { last, .. }) => match last {
                Transfer::Client(e) => client_kind(e),
                Transfer::Busy(_) => K::Busy,
                Transfer::Late { .. } => K::Stalled,
                Transfer::Status { .. } => K::Refused,
                Transfer::ContentRange { .. }
                | Transfer::ContentLength { .. }
                | Transfer::NoConnection => K::Other,
            },
        }
    }
}

// Not `From`: a public impl would make the internal types public.
impl HolderFault {
    /// Its piece list could not be had.
    pub(crate) fn piece_list(e: PieceListError) -> Self {
        HolderFault(Cause::PieceList(e))
    }

    /// It was dropped during the download.
    pub(crate) fn dropped(e: Dropped) -> Self {
        HolderFault(Cause::Dropped(e))
    }
}

/// The class of a failed request.
fn client_kind(e: &ClientError) -> HolderFaultKind {
    match e {
        ClientError::Connect { .. } => HolderFaultKind::Unreachable,
        ClientError::Stalled { .. } | ClientError::Deadline { .. } => HolderFaultKind::Stalled,
        _ => HolderFaultKind::Other,
    }
}

/// What a request answered instead of the piece or bitmap asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Asked {
    /// Piece `i`.
    Piece(usize),
    /// The holder's piece bitmap.
    Bitmap,
}

impl std::fmt::Display for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asked::Piece(i) => write!(f, "piece {i}"),
            Asked::Bitmap => f.write_str("its piece bitmap"),
        }
    }
}

/// A request to a holder failed (it may succeed again: retried with backoff).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Transfer {
    /// Connecting, sending or reading failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An HTTP status other than the ones expected.
    #[error("status {status} for {asked}")]
    Status {
        /// The status.
        status: u16,
        /// What was asked.
        asked: Asked,
    },
    /// A `206` for other bytes than asked.
    #[error("asked bytes {}-{}, got content-range {got:?}", asked.0, asked.1)]
    ContentRange {
        /// The range asked (inclusive).
        asked: (u64, u64),
        /// The range answered (first, last, total), if any.
        got: Option<(u64, u64, u64)>,
    },
    /// A body length other than the piece's.
    #[error("content-length {got:?} for a {len}-byte piece")]
    ContentLength {
        /// The length announced.
        got: Option<u64>,
        /// The piece's length.
        len: usize,
    },
    /// `503` too many times in a row.
    #[error("busy (503) {0} times in a row")]
    Busy(u32),
    /// A piece not done by its deadline (set by the download's progress:
    /// a body dripped byte by byte never trips the per-read timeout).
    #[error("piece {piece} not done within {limit:?} ({got} of {len} bytes)")]
    Late {
        /// The piece.
        piece: usize,
        /// Its deadline.
        limit: Duration,
        /// Bytes received.
        got: usize,
        /// The piece's length.
        len: usize,
    },
    /// A worker without a connection after opening one.
    #[error("bug: no connection")]
    NoConnection,
}

/// The holder sent data that is provably wrong: it is dropped as bad.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadData {
    /// A range answer for a file of another size.
    #[error("it serves {total} bytes for a {size}-byte file (bytes {first}-{last})")]
    RangeOfOtherSize {
        /// The total it announced.
        total: u64,
        /// The file's size.
        size: u64,
        /// First byte answered.
        first: u64,
        /// Last byte answered.
        last: u64,
    },
    /// A whole-file answer of another size.
    #[error("it serves {got} bytes for a {size}-byte file")]
    OtherSize {
        /// The length it announced.
        got: u64,
        /// The file's size.
        size: u64,
    },
    /// A piece that does not verify against the chaining values of the
    /// piece list its holder gave: its bytes are false, or the list is.
    #[error("piece {piece} failed verification against the chaining values{}", if *.last { " (the last piece: it does not finish to the file's SHA1, so the chain or the bytes are false)" } else { "" })]
    Piece {
        /// The piece.
        piece: usize,
        /// It is the file's last piece.
        last: bool,
    },
    /// A piece bitmap of the wrong length.
    #[error("its piece bitmap has {len} bytes for {pieces} pieces")]
    Bitmap {
        /// Bytes received.
        len: usize,
        /// Pieces of the file.
        pieces: usize,
    },
    /// A complete holder that refused a piece with `416`.
    #[error("it claims the whole file but refused piece {0} (416): not the size it announced")]
    RefusedPiece(usize),
    /// A partial holder that keeps refusing pieces its bitmap claims.
    #[error("it claimed {0} pieces it then refused to serve (416)")]
    ClaimedNotServed(u32),
}

impl BadData {
    /// True if a holder whose piece list is another than the round's
    /// would send this (another size, another chain): not so for a claim
    /// it does not keep.
    pub(crate) fn may_be_other_list(&self) -> bool {
        !matches!(
            self,
            BadData::RefusedPiece(_) | BadData::ClaimedNotServed(_)
        )
    }
}

/// Why a holder was dropped from a download.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Dropped {
    /// It serves this very download's `.part` (our own peer).
    #[error("it is this download's own peer")]
    Ourselves,
    /// It sent provably wrong data.
    #[error(transparent)]
    Bad(#[from] BadData),
    /// It joined on trust of the round's piece list (a holder a re-query
    /// found: every honest holder of a file has the same list) and its
    /// data does not fit that list: its own list is asked, and it joins
    /// the download again with the group of that list (or the round's
    /// list is the false one).
    #[error("its data does not fit this round's piece list ({0}); its own list is asked")]
    OtherList(BadData),
    /// Too many consecutive failures.
    #[error("{failures} failures in a row, the last: {last}")]
    Failing {
        /// Consecutive failures.
        failures: u32,
        /// The last one.
        last: Transfer,
    },
}
