//! The JSON bodies and paths of the peer-to-peer HTTP API.
//!
//! Shared by the server (which produces them) and by the catalog and fetch
//! clients (which consume them), so the two sides cannot drift apart. Only
//! data types and constants live here; no I/O.
//!
//! | request                         | answer                                  |
//! |---------------------------------|-----------------------------------------|
//! | `GET /v1/health`                | [`Health`]                              |
//! | `GET /v1/files`                 | [`FileList`], `ETag` = generation (`-gzip` appended for the gzip body) |
//! | `HEAD/GET /v1/files/<sha1>`     | the bytes, `Range` supported            |
//! | `GET /v1/files/<sha1>/pieces`   | [`PieceList`]                           |
//! | `GET /v1/files/<sha1>/have`     | [`Bitfield`] bytes, `X-Pieces` = count  |
//! | `GET /`                         | the status page (HTML)                  |
//! | `GET /v1/status`                | [`StatusReport`](crate::status::StatusReport) (JSON) |
//! | `GET /metrics`                  | Prometheus text format                  |
//!
//! `Cache-Control`: file bytes `public, max-age=31536000, immutable` (named
//! by their SHA1); the catalog `no-cache` (revalidate with its `ETag`);
//! health, `/have`, the page, status and metrics `no-store`.
//!
//! A peer holding the whole file may append a second bitmap of the same
//! length to `/have`: the pieces it has uploaded the fewest times lately (a hint, as
//! BitTorrent's super-seeding: while partial holders exist, downloaders ask
//! it only for those, and get the others from each other).
//!
//! A peer answers for complete files (its index) and for files it is still
//! downloading into its dataset (partial: the pieces verified so far). For
//! a partial file, `have` lists the pieces held and range requests are
//! answered only inside them (`416` otherwise).

use serde::{Deserialize, Serialize};

use crate::digest::Sha1Digest;

/// Health route.
pub const HEALTH_PATH: &str = "/v1/health";
/// The status page (HTML).
pub const PAGE_PATH: &str = "/";
/// The peer's status as JSON (what the page shows).
pub const STATUS_PATH: &str = "/v1/status";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Catalog route; a file is `FILES_PATH/<sha1>`, its pieces `FILES_PATH/<sha1>/pieces`.
pub const FILES_PATH: &str = "/v1/files";

/// Last path segment of the availability route, `FILES_PATH/<sha1>/have`.
pub const HAVE_SEGMENT: &str = "have";
/// Response header of the availability route: the number of pieces.
pub const PIECES_HEADER: &str = "X-Pieces";
/// Response header of the availability route for a partial file: the id
/// of the download writing it (so that download does not ask itself).
pub const DOWNLOAD_ID_HEADER: &str = "X-Download-Id";
/// Response header of a range answered from a partial file: the pieces
/// the peer holds now (the `have` bitmap, hex), so a downloader's view
/// of it stays fresh without asking `have` between pieces.
pub const HAVE_HEADER: &str = "X-Have";
/// Response header of a range answered by a seed that counts its uploads:
/// its least-uploaded pieces (hex bitmap), as the second bitmap of `have`.
pub const FRESH_HEADER: &str = "X-Fresh";
/// Response header of a `404` from a peer whose index is still being
/// built (its first scan): the number of files indexed so far. The file
/// may yet be found there; a lookup asks again.
pub const INDEXING_HEADER: &str = "X-Indexing";
/// Response header of a `503` to a piece request while every upload slot
/// of the peer is taken: milliseconds until the slots rotate. The
/// downloader gives the piece back and asks another holder meanwhile.
pub const SLOTS_HEADER: &str = "X-Slots";
/// Files of more pieces than this get no [`HAVE_HEADER`] or
/// [`FRESH_HEADER`] (at most 1 KiB of hex per header); their downloaders
/// ask `have`.
pub const MAX_HEADER_PIECES: usize = 4096;

/// Default piece size: 1 MiB. A piece is passed on only once verified, so
/// smaller pieces spread through a swarm sooner (see ARCHITECTURE.md, the
/// swarm); much smaller ones cost a request each.
pub const DEFAULT_PIECE_SIZE: u64 = 1024 * 1024;

/// One file a peer serves, as listed by `GET /v1/files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// SHA1 of the whole content.
    pub sha1: Sha1Digest,
    /// Size in bytes.
    pub size: u64,
    /// A file name for it (the base name of one of its paths).
    pub name: String,
    /// Piece size used for its piece hashes.
    pub piece_size: u64,
}

/// `GET /v1/files`: a peer's whole catalog at one index generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    /// The index generation this list was taken at (also the `ETag`:
    /// `"<generation>"`, or `"<generation>-gzip"` for the gzip body). A
    /// catalog client keys its cache on this field, not on the `ETag`.
    pub generation: u64,
    /// The files, in no particular order.
    pub files: Vec<CatalogEntry>,
}

/// `GET /v1/files/<sha1>/pieces`: the piece hashes of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceList {
    /// SHA1 of the whole content.
    pub sha1: Sha1Digest,
    /// Size in bytes.
    pub size: u64,
    /// Piece size; the last piece may be shorter. An empty file has no pieces.
    pub piece_size: u64,
    /// SHA1 of each piece, in order.
    pub pieces: Vec<Sha1Digest>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"` when the peer answers.
    pub status: String,
    /// The peer's id (as registered in etcd), if it has one.
    pub id: Option<String>,
    /// The crate version.
    pub version: String,
    /// The current index generation.
    pub index_gen: u64,
    /// Number of files indexed.
    pub files: u64,
}

/// The bytes `[start, end)` of piece `i` of a file of `size` bytes cut in
/// pieces of `piece_size`: the last piece may be shorter, and a piece past
/// the end is empty (at `size`). The crate's one piece-range arithmetic.
pub(crate) fn piece_bounds(size: u64, piece_size: u64, i: usize) -> (u64, u64) {
    let start = (i as u64).saturating_mul(piece_size).min(size);
    (start, start.saturating_add(piece_size).min(size))
}

/// The pieces that bytes `[start, end)` touch, as `first..=last`, cut in
/// pieces of `piece_size`; `None` for no bytes (or a zero piece size).
pub(crate) fn pieces_touching(piece_size: u64, start: u64, end: u64) -> Option<(u64, u64)> {
    (piece_size > 0 && end > start).then(|| (start / piece_size, (end - 1) / piece_size))
}

impl PieceList {
    /// The first byte and length of piece `i` (see [`piece_bounds`]).
    pub(crate) fn piece_range(&self, i: usize) -> (u64, usize) {
        let (start, end) = piece_bounds(self.size, self.piece_size, i);
        (start, (end - start) as usize)
    }
}

/// Number of pieces of a file of `size` bytes cut in pieces of `piece_size`.
pub fn piece_count(size: u64, piece_size: u64) -> u64 {
    if piece_size == 0 {
        return 0;
    }
    size.div_ceil(piece_size)
}

/// Which pieces of a file a peer holds: bit `i` is bit `i % 8` (least
/// significant first) of byte `i / 8`, the layout of `.part.state`. On the
/// wire (`/have`) it is the raw bytes, `ceil(n / 8)` of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: usize,
}

impl Bitfield {
    /// `len` pieces, none held.
    pub fn empty(len: usize) -> Self {
        Bitfield {
            bytes: vec![0; len.div_ceil(8)],
            len,
        }
    }

    /// `len` pieces, all held.
    pub fn full(len: usize) -> Self {
        let mut b = Self::empty(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// From one flag per piece.
    pub fn from_flags(flags: &[bool]) -> Self {
        let mut b = Self::empty(flags.len());
        for (i, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
            b.set(i);
        }
        b
    }

    /// Decodes `len` pieces from wire bytes: `None` unless there are
    /// exactly `ceil(len / 8)` bytes and no bit is set past `len`.
    pub fn from_bytes(bytes: &[u8], len: usize) -> Option<Self> {
        if bytes.len() != len.div_ceil(8) {
            return None;
        }
        let b = Bitfield {
            bytes: bytes.to_vec(),
            len,
        };
        let tail_clean = (len..bytes.len() * 8).all(|i| !b.bit(i));
        tail_clean.then_some(b)
    }

    fn bit(&self, i: usize) -> bool {
        self.bytes
            .get(i / 8)
            .is_some_and(|byte| byte & (1 << (i % 8)) != 0)
    }

    /// True if piece `i` is held (false past the end).
    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.bit(i)
    }

    /// Marks piece `i` held (ignored past the end).
    pub fn set(&mut self, i: usize) {
        if i < self.len {
            self.bytes[i / 8] |= 1 << (i % 8);
        }
    }

    /// Marks piece `i` not held.
    pub fn clear(&mut self, i: usize) {
        if i < self.len {
            self.bytes[i / 8] &= !(1 << (i % 8));
        }
    }

    /// Number of pieces.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a file without pieces.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pieces held.
    pub fn count(&self) -> usize {
        self.bytes.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// True if every piece is held.
    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The wire bytes as lowercase hex (for a header).
    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.bytes)
    }

    /// Decodes `len` pieces from [`Bitfield::to_hex`]'s form; `None` if it
    /// is not exactly that.
    pub fn from_hex(hex: &str, len: usize) -> Option<Self> {
        Self::from_bytes(&crate::hex::decode(hex)?, len)
    }

    /// True if every piece overlapping bytes `[start, end)` of a file cut
    /// in `piece_size` pieces is held.
    pub fn covers(&self, piece_size: u64, start: u64, end: u64) -> bool {
        if end <= start {
            return true;
        }
        let Some((first, last)) = pieces_touching(piece_size, start, end) else {
            return false;
        };
        (first..=last).all(|i| usize::try_from(i).is_ok_and(|i| self.get(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_bounds_cut_the_last_piece_short_and_are_empty_past_the_end() {
        assert_eq!(piece_bounds(10, 4, 0), (0, 4));
        assert_eq!(piece_bounds(10, 4, 2), (8, 10));
        assert_eq!(piece_bounds(10, 4, 3), (10, 10));
        assert_eq!(piece_bounds(u64::MAX, u64::MAX, 5), (u64::MAX, u64::MAX));
        let list = PieceList {
            sha1: Sha1Digest::of(b""),
            size: 10,
            piece_size: 4,
            pieces: vec![Sha1Digest::of(b""); 3],
        };
        assert_eq!(list.piece_range(2), (8, 2));
        assert_eq!(pieces_touching(4, 3, 9), Some((0, 2)));
        assert_eq!(pieces_touching(4, 4, 8), Some((1, 1)));
        assert_eq!(pieces_touching(4, 4, 4), None);
        assert_eq!(pieces_touching(0, 0, 4), None);
    }

    #[test]
    fn bitfield_layout_and_wire_checks() {
        let mut b = Bitfield::empty(10);
        b.set(0);
        b.set(9);
        assert_eq!(b.as_bytes(), &[0b0000_0001, 0b0000_0010]);
        assert_eq!(b.count(), 2);
        assert_eq!(b.to_hex(), "0102");
        assert_eq!(Bitfield::from_hex("0102", 10), Some(b.clone()));
        assert_eq!(Bitfield::from_hex("0106", 10), None, "a bit past the end");
        assert_eq!(Bitfield::from_hex("010", 10), None);
        assert_eq!(Bitfield::from_hex("01zz", 10), None);
        assert!(!b.is_full());
        assert_eq!(Bitfield::from_bytes(b.as_bytes(), 10), Some(b.clone()));
        // Wrong length, or bits set past the end: refused.
        assert_eq!(Bitfield::from_bytes(&[1], 10), None);
        assert_eq!(Bitfield::from_bytes(&[0, 0b0000_0100], 10), None);
        assert!(Bitfield::full(10).is_full());
        assert_eq!(Bitfield::full(10).as_bytes(), &[0xff, 0b11]);
        assert_eq!(Bitfield::from_flags(&[false, true]).as_bytes(), &[0b10]);
        // Byte ranges map to pieces of 4 bytes.
        assert!(b.covers(4, 0, 4));
        assert!(!b.covers(4, 0, 5));
        assert!(b.covers(4, 36, 38));
        assert!(!b.covers(4, 35, 38));
        b.clear(0);
        assert!(!b.get(0));
    }

    #[test]
    fn piece_count_edges() {
        let p = DEFAULT_PIECE_SIZE;
        assert_eq!(piece_count(0, p), 0);
        assert_eq!(piece_count(1, p), 1);
        assert_eq!(piece_count(p, p), 1);
        assert_eq!(piece_count(p + 1, p), 2);
    }
}
