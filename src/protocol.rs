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

use crate::chain::ChainValue;
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
/// Longest a `have` request may wait for a piece it wants
/// (`have?wait=<ms>&want=<hex bitmap>`): a partial holder that holds none
/// of the wanted pieces answers when it gets one, or after the wait
/// (capped at this). A peer that does not know the query answers at once.
pub const MAX_HAVE_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);
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
/// Response header beside [`SLOTS_HEADER`] (value `1`) when the
/// downloader turned away is next in line: asking again at the rotation,
/// it gets a slot then, so it waits for it there instead of asking
/// another holder meanwhile.
pub const SLOTS_NEXT_HEADER: &str = "X-Slots-Next";
/// Files of more pieces than this get no [`HAVE_HEADER`] or
/// [`FRESH_HEADER`] (at most 1 KiB of hex per header); their downloaders
/// ask `have`.
pub const MAX_HEADER_PIECES: usize = 4096;

/// Every piece size is a multiple of this base block (and so of SHA-1's
/// 64-byte block, which chaining values need), and no piece is smaller
/// unless it is a file's last.
pub const BASE_BLOCK: u64 = 64 * 1024;
/// Pieces double from [`BASE_BLOCK`] until a file has at most this many.
pub const TARGET_PIECES: u64 = 256;
/// ... but never grow past 1 MiB: larger files get more pieces.
pub const LARGEST_PIECE: u64 = 1024 * 1024;

/// The piece size of every file of `size` bytes: the smallest power of two
/// from [`BASE_BLOCK`] to [`LARGEST_PIECE`] that cuts it in at most
/// [`TARGET_PIECES`] pieces (the largest for larger files). Every peer cuts
/// a file the same way, so their `have` bitmaps and piece lists always
/// agree: up to 16 MiB, 64 KiB pieces (a 16 MiB file has 256: enough to
/// trade in a swarm of 47 hosts); 128 MiB, 512 KiB; above 256 MiB, 1 MiB
/// (10 GiB: 10,240 pieces). A pure function of the size, part of the wire
/// format: changing it is a new piece-list form.
pub fn piece_size(size: u64) -> u64 {
    size.div_ceil(TARGET_PIECES)
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(LARGEST_PIECE)
        .clamp(BASE_BLOCK, LARGEST_PIECE)
}

/// The piece-list form this version speaks and accepts (see [`PieceList`]).
/// A list without it comes from a version before chaining values (one SHA1
/// per piece) and is not used.
pub const PIECE_LIST_FORM: &str = "sha1-chain";

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

/// `GET /v1/files/<sha1>/pieces`: how to verify each piece of one file on
/// its own: the SHA-1 chaining values at its piece boundaries.
///
/// Piece `i` (0-based, of `n`) is verified by running SHA-1's compression
/// function from `c_i` over its bytes and comparing with `c_(i+1)`, where
/// `c_0` is SHA-1's initial value and `c_1 .. c_(n-1)` are [`chain`](Self::chain);
/// the last piece by finishing from `c_(n-1)` with the padding of the
/// whole file's length and comparing with [`sha1`](Self::sha1) itself.
/// So the list needs no trust: a piece that passes is the file's, and the
/// last one proves the whole chain.
///
/// JSON: `{"sha1", "size", "piece_size", "form": "sha1-chain", "chain":
/// "<40 hex digits per value, concatenated>"}`. A list from a peer of the
/// previous version has no `form` (it carried `pieces`, one SHA1 each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceList {
    /// SHA1 of the whole content.
    pub sha1: Sha1Digest,
    /// Size in bytes.
    pub size: u64,
    /// Piece size ([`piece_size`] of the size); the last piece may be
    /// shorter. An empty file has no pieces.
    pub piece_size: u64,
    /// The form of the list: [`PIECE_LIST_FORM`]; empty when the peer did
    /// not say (a version before chaining values).
    #[serde(default)]
    pub form: String,
    /// The chaining values `c_1 .. c_(n-1)` at the piece boundaries (none
    /// for a file of one piece or empty).
    #[serde(default, with = "chain_hex")]
    pub chain: Vec<ChainValue>,
}

/// [`PieceList::chain`] on the wire: one string of 40 hex digits per value.
mod chain_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::chain::ChainValue;

    pub fn serialize<S: Serializer>(chain: &[ChainValue], s: S) -> Result<S::Ok, S::Error> {
        let mut out = vec![0u8; chain.len() * 40];
        for (v, hex) in chain.iter().zip(out.chunks_exact_mut(40)) {
            crate::hex::encode_to(&v.0, hex);
        }
        s.serialize_str(std::str::from_utf8(&out).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChainValue>, D::Error> {
        let hex = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bad = || serde::de::Error::custom("chain: not 40 hex digits per value");
        if hex.len() % 40 != 0 {
            return Err(bad());
        }
        hex.as_bytes()
            .chunks_exact(40)
            .map(|c| {
                let mut v = [0u8; 20];
                for (b, pair) in v.iter_mut().zip(c.chunks_exact(2)) {
                    *b = crate::hex::byte(pair).ok_or_else(bad)?;
                }
                Ok(ChainValue(v))
            })
            .collect()
    }
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
    /// The list of `sha1`, `size` bytes, with chaining values `chain`, cut
    /// by [`piece_size`], in this version's form.
    pub fn new(sha1: Sha1Digest, size: u64, chain: Vec<ChainValue>) -> Self {
        PieceList {
            sha1,
            size,
            piece_size: piece_size(size),
            form: PIECE_LIST_FORM.to_string(),
            chain,
        }
    }

    /// The list of `data`, computed in one SHA-1 pass.
    pub fn of_content(data: &[u8]) -> Self {
        let (sha1, chain) = crate::chain::chain_of(data, piece_size(data.len() as u64));
        Self::new(sha1, data.len() as u64, chain)
    }

    /// Number of pieces.
    pub fn len(&self) -> usize {
        usize::try_from(piece_count(self.size, self.piece_size)).unwrap_or(usize::MAX)
    }

    /// True for an empty file (no pieces).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first byte and length of piece `i` (see [`piece_bounds`]).
    pub(crate) fn piece_range(&self, i: usize) -> (u64, usize) {
        let (start, end) = piece_bounds(self.size, self.piece_size, i);
        (start, (end - start) as usize)
    }

    /// `c_i`, the chaining value where piece `i` starts (`None` past the
    /// chain).
    fn chain_at(&self, i: usize) -> Option<ChainValue> {
        match i {
            0 => Some(ChainValue::INITIAL),
            i => self.chain.get(i - 1).copied(),
        }
    }

    /// True if `data` is piece `i`: compressed from `c_i` it ends at
    /// `c_(i+1)`, or, for the last piece, it finishes to the file's SHA1.
    /// Each piece alone, in any order, one SHA-1 pass over its bytes.
    pub fn verify(&self, i: usize, data: &[u8]) -> bool {
        let n = self.len();
        if i >= n || self.piece_range(i).1 != data.len() {
            return false;
        }
        let Some(from) = self.chain_at(i) else {
            return false;
        };
        if i + 1 == n {
            crate::chain::verify_last(&from, data, self.size, &self.sha1)
        } else {
            self.chain_at(i + 1)
                .is_some_and(|to| crate::chain::verify_piece(&from, data, &to))
        }
    }

    /// A check of piece `i` fed as its bytes arrive ([`Self::check_done`]
    /// says whether they were the piece); `None` past the last piece.
    pub(crate) fn check_piece(&self, i: usize) -> Option<crate::chain::PieceCheck> {
        let from = self.chain_at(i).filter(|_| i < self.len())?;
        Some(crate::chain::PieceCheck::new(&from, self.piece_range(i).0))
    }

    /// True if the bytes fed to `check` (from [`Self::check_piece`]`(i)`)
    /// are piece `i` (whole: the length is the caller's to check).
    pub(crate) fn check_done(&self, i: usize, check: &crate::chain::PieceCheck) -> bool {
        if i + 1 == self.len() {
            check.finishes_to(self.size, &self.sha1)
        } else {
            self.chain_at(i + 1).is_some_and(|to| check.ends_at(&to))
        }
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

    /// True if a piece is held in both (a byte at a time: a holder's
    /// bitmap against the pieces a download still lacks).
    pub fn intersects(&self, other: &Bitfield) -> bool {
        self.bytes.iter().zip(&other.bytes).any(|(a, b)| a & b != 0)
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
        let list = PieceList::of_content(&[7u8; 150_000]);
        assert_eq!(list.piece_size, BASE_BLOCK);
        assert_eq!(list.len(), 3);
        assert_eq!(list.piece_range(2), (2 * BASE_BLOCK, 150_000 - 2 * 65536));
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
    fn piece_size_rule() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(piece_size(0), BASE_BLOCK);
        assert_eq!(piece_size(1), BASE_BLOCK);
        assert_eq!(piece_size(16 * MIB), BASE_BLOCK);
        assert_eq!(piece_count(16 * MIB, piece_size(16 * MIB)), 256);
        assert_eq!(piece_size(16 * MIB + 1), 2 * BASE_BLOCK);
        assert_eq!(piece_size(128 * MIB), 512 * 1024);
        assert_eq!(piece_size(256 * MIB), LARGEST_PIECE);
        assert_eq!(piece_size(10 * 1024 * MIB), LARGEST_PIECE);
        assert_eq!(piece_size(u64::MAX), LARGEST_PIECE);
        for size in [0, 1, 5 * MIB + 3, 100 * MIB, 1 << 40] {
            let p = piece_size(size);
            assert_eq!(p % BASE_BLOCK, 0);
            assert!(piece_count(size, p) <= TARGET_PIECES || p == LARGEST_PIECE);
        }
    }

    #[test]
    fn piece_lists_verify_each_piece_and_round_trip_as_json() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let list = PieceList::of_content(&data);
        assert_eq!(list.len(), 5);
        assert_eq!(list.chain.len(), 4);
        for i in 0..5 {
            let (start, len) = list.piece_range(i);
            let piece = &data[start as usize..start as usize + len];
            assert!(list.verify(i, piece), "piece {i}");
            assert!(!list.verify(i, &piece[1..]), "short piece {i}");
            let mut bad = piece.to_vec();
            bad[len / 2] ^= 1;
            assert!(!list.verify(i, &bad), "bad piece {i}");
        }
        assert!(!list.verify(5, &[]));
        let json = serde_json::to_string(&list).unwrap();
        assert!(json.contains(r#""form":"sha1-chain""#), "{json}");
        assert_eq!(serde_json::from_str::<PieceList>(&json).unwrap(), list);
        // The previous form parses, without a form or a chain.
        let old = r#"{"sha1":"a9993e364706816aba3e25717850c26c9cd0d89d","size":3,"piece_size":1048576,"pieces":["a9993e364706816aba3e25717850c26c9cd0d89d"]}"#;
        let old: PieceList = serde_json::from_str(old).unwrap();
        assert!(old.form.is_empty() && old.chain.is_empty());
        assert!(serde_json::from_str::<PieceList>(r#"{"sha1":"a9993e364706816aba3e25717850c26c9cd0d89d","size":3,"piece_size":1,"chain":"abc"}"#).is_err());
    }

    #[test]
    fn piece_count_edges() {
        let p = LARGEST_PIECE;
        assert_eq!(piece_count(0, p), 0);
        assert_eq!(piece_count(1, p), 1);
        assert_eq!(piece_count(p, p), 1);
        assert_eq!(piece_count(p + 1, p), 2);
    }
}
