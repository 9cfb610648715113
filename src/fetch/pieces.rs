//! Getting a file's piece list from a holder and checking it is usable:
//! this version's form (SHA-1 chaining values), for the requested sha1,
//! the piece size every peer uses for that size (`protocol::piece_size`),
//! and exactly one chaining value per piece boundary. Whether its values
//! are *true* is known piece by piece: a false one fails the pieces on both
//! sides of it, and a false chain of forged bytes fails at the last piece,
//! which must finish to the requested SHA1 (see `crate::chain`).

use std::time::Duration;

use crate::client::{self, ClientError, ConnPool, Timeouts};
use crate::digest::Sha1Digest;
use crate::holders::Holder;
use crate::protocol::{piece_count, piece_size, Bitfield, PieceList, FILES_PATH, PIECE_LIST_FORM};

/// Largest piece-list body accepted: about 420,000 chaining values, a
/// 410 GiB file at 1 MiB pieces.
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
    /// A piece list of another form: an empty one is the previous
    /// version's (one SHA1 per piece), never mixed into a download.
    #[error("{}", form_message(.0))]
    Form(String),
    /// A piece list that contradicts itself or the request.
    #[error("inconsistent piece list: {0}")]
    Inconsistent(String),
    /// A gzip body that does not inflate, or inflates past
    /// [`MAX_PIECE_LIST_BODY`].
    #[error("bad gzip piece list: {0}")]
    Gzip(String),
}

/// A holder's piece list, and what its fetch leaves for the download's
/// first worker there (see `round::Welcome`).
pub(crate) struct Fetched {
    pub list: PieceList,
    /// The connection, open for the next request (not with a pool: a
    /// batch's connections go back to it).
    pub conn: Option<client::PeerConn>,
    /// A partial holder's bitmap (`X-Have` on the answer).
    pub have: Option<Bitfield>,
}

/// Fetches and checks `holder`'s piece list for `sha1`, on a connection
/// of `pool` if given (a batch), within `deadline`; a busy holder (`503`)
/// is asked again meanwhile when `retry_busy`.
pub(crate) fn fetch_piece_list_with(
    pool: Option<&ConnPool>,
    holder: &Holder,
    sha1: &Sha1Digest,
    timeouts: Timeouts,
    deadline: Duration,
    retry_busy: bool,
) -> Result<Fetched, PieceListError> {
    let path = format!("{FILES_PATH}/{sha1}/pieces");
    let addrs = holder.dial_addrs();
    let (head, body, conn) = match pool {
        Some(pool) => {
            let (head, body) = client::get_small_pooled(
                pool,
                addrs,
                &path,
                timeouts,
                MAX_PIECE_LIST_BODY,
                deadline,
                retry_busy,
            )?;
            (head, body, None)
        }
        None => client::get_small_keep(
            addrs,
            &path,
            timeouts,
            MAX_PIECE_LIST_BODY,
            deadline,
            retry_busy,
        )?,
    };
    if head.status != 200 {
        return Err(PieceListError::Status(head.status));
    }
    let body = if head.gzip { inflate(&body)? } else { body };
    let list: PieceList = serde_json::from_slice(&body).map_err(PieceListError::Json)?;
    check_piece_list(&list, sha1)?;
    let have = head
        .have
        .as_deref()
        .and_then(|h| Bitfield::from_hex(h, list.len()));
    Ok(Fetched { list, conn, have })
}

/// A gzip body inflated, at most [`MAX_PIECE_LIST_BODY`] bytes of it.
fn inflate(gz: &[u8]) -> Result<Vec<u8>, PieceListError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .take(MAX_PIECE_LIST_BODY + 1)
        .read_to_end(&mut out)
        .map_err(|e| PieceListError::Gzip(e.to_string()))?;
    if out.len() as u64 > MAX_PIECE_LIST_BODY {
        return Err(PieceListError::Gzip(format!(
            "it inflates past {MAX_PIECE_LIST_BODY} bytes"
        )));
    }
    Ok(out)
}

fn form_message(form: &str) -> String {
    if form.is_empty() {
        "it speaks the previous piece-list form (one SHA1 per piece, a version before SHA-1 chaining values); not used".into()
    } else {
        format!(
            "piece-list form {:?} is not {PIECE_LIST_FORM:?}; not used",
            form.chars().take(32).collect::<String>()
        )
    }
}

/// Checks that `list` is of this version's form, self-consistent and for `sha1`.
pub fn check_piece_list(list: &PieceList, sha1: &Sha1Digest) -> Result<(), PieceListError> {
    let bad = |s: String| Err(PieceListError::Inconsistent(s));
    if list.form != PIECE_LIST_FORM {
        return Err(PieceListError::Form(list.form.clone()));
    }
    if list.sha1 != *sha1 {
        return bad(format!("it is for {} instead", list.sha1));
    }
    if list.piece_size != piece_size(list.size) {
        return bad(format!(
            "piece size {} for {} bytes (every peer uses {})",
            list.piece_size,
            list.size,
            piece_size(list.size)
        ));
    }
    let want = piece_count(list.size, list.piece_size).saturating_sub(1);
    if list.chain.len() as u64 != want {
        return bad(format!(
            "{} chaining values for {} bytes in pieces of {} (want {want})",
            list.chain.len(),
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
        let data = vec![9u8; 200_000];
        let ok = PieceList::of_content(&data);
        let sha1 = ok.sha1;
        assert!(check_piece_list(&ok, &sha1).is_ok());
        let mut l = ok.clone();
        l.piece_size *= 2;
        assert!(check_piece_list(&l, &sha1).is_err());
        let mut l = ok.clone();
        l.chain.pop();
        assert!(check_piece_list(&l, &sha1).is_err());
        let mut l = ok.clone();
        l.size = 0;
        l.chain.clear();
        assert!(check_piece_list(&l, &sha1).is_err());
        assert!(check_piece_list(&ok, &Sha1Digest::of(b"x")).is_err());
        let mut l = ok.clone();
        l.form.clear();
        let e = check_piece_list(&l, &sha1).unwrap_err();
        assert!(matches!(e, PieceListError::Form(_)));
        assert!(e.to_string().contains("previous piece-list form"), "{e}");
        let empty = PieceList::of_content(b"");
        assert!(check_piece_list(&empty, &Sha1Digest::of(b"")).is_ok());
    }
}
