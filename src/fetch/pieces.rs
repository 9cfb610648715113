//! Getting a file's piece list from a holder and checking it is usable:
//! for the requested sha1, a piece size in `1..=MAX_PIECE_SIZE`, and exactly
//! `ceil(size / piece_size)` hashes. Whether its hashes are *true* is only
//! known at the end (the whole-file SHA1), see `download`.

use std::time::Duration;

use crate::client::{self, ClientError, ConnPool, Timeouts};
use crate::digest::Sha1Digest;
use crate::holders::Holder;
use crate::protocol::{piece_count, PieceList, FILES_PATH};

/// Largest piece size accepted from a peer (bounds memory per connection).
pub const MAX_PIECE_SIZE: u64 = 64 * 1024 * 1024;
/// Largest piece-list body accepted: about 390,000 piece hashes, a 390 GiB
/// file at the default 1 MiB pieces.
pub const MAX_PIECE_LIST_BODY: u64 = 16 * 1024 * 1024;

/// Why a holder's piece list was not usable.
#[derive(Debug, thiserror::Error)]
pub enum PieceListError {
    /// The request failed.
    #[error(transparent)]
    Request(#[from] ClientError),
    /// Not `200`.
    #[error("status {0}")]
    Status(u16),
    /// Not a piece list.
    #[error("bad piece list json: {0}")]
    Json(#[source] serde_json::Error),
    /// A piece list that contradicts itself or the request.
    #[error("inconsistent piece list: {0}")]
    Inconsistent(String),
}

/// Fetches and checks `holder`'s piece list for `sha1`, on a connection
/// of `pool` if given (a batch).
pub(crate) fn fetch_piece_list_with(
    pool: Option<&ConnPool>,
    holder: &Holder,
    sha1: &Sha1Digest,
    timeouts: Timeouts,
    deadline: Duration,
) -> Result<PieceList, PieceListError> {
    let path = format!("{FILES_PATH}/{sha1}/pieces");
    let addrs = holder.dial_addrs();
    let (head, body) = match pool {
        Some(pool) => {
            client::get_small_pooled(pool, addrs, &path, timeouts, MAX_PIECE_LIST_BODY, deadline)?
        }
        None => client::get_small(addrs, &path, timeouts, MAX_PIECE_LIST_BODY, deadline)?,
    };
    if head.status != 200 {
        return Err(PieceListError::Status(head.status));
    }
    let list: PieceList = serde_json::from_slice(&body).map_err(PieceListError::Json)?;
    check_piece_list(&list, sha1)?;
    Ok(list)
}

/// Checks that `list` is self-consistent and for `sha1`.
pub fn check_piece_list(list: &PieceList, sha1: &Sha1Digest) -> Result<(), PieceListError> {
    let bad = |s: String| Err(PieceListError::Inconsistent(s));
    if list.sha1 != *sha1 {
        return bad(format!("it is for {} instead", list.sha1));
    }
    if list.piece_size == 0 || list.piece_size > MAX_PIECE_SIZE {
        return bad(format!(
            "piece size {} not in 1..={MAX_PIECE_SIZE}",
            list.piece_size
        ));
    }
    let want = piece_count(list.size, list.piece_size);
    if list.pieces.len() as u64 != want {
        return bad(format!(
            "{} hashes for {} bytes in pieces of {} (want {want})",
            list.pieces.len(),
            list.size,
            list.piece_size
        ));
    }
    if list.size == 0 && *sha1 != Sha1Digest::of(b"") {
        return bad("size 0 but the sha1 is not the empty file's".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inconsistent_lists_are_refused() {
        let sha1 = Sha1Digest::of(b"abc");
        let ok = PieceList {
            sha1,
            size: 3,
            piece_size: 2,
            pieces: vec![Sha1Digest::of(b"ab"), Sha1Digest::of(b"c")],
        };
        assert!(check_piece_list(&ok, &sha1).is_ok());
        let mut l = ok.clone();
        l.piece_size = 0;
        assert!(check_piece_list(&l, &sha1).is_err());
        let mut l = ok.clone();
        l.pieces.pop();
        assert!(check_piece_list(&l, &sha1).is_err());
        let mut l = ok.clone();
        l.size = 0;
        l.pieces.clear();
        assert!(check_piece_list(&l, &sha1).is_err());
        assert!(check_piece_list(&ok, &Sha1Digest::of(b"x")).is_err());
        let mut l = ok;
        l.piece_size = MAX_PIECE_SIZE + 1;
        l.pieces = vec![Sha1Digest::of(b"abc")];
        assert!(check_piece_list(&l, &sha1).is_err());
    }
}
