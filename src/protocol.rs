//! The JSON bodies and paths of the peer-to-peer HTTP API.
//!
//! Shared by the server (which produces them) and by the catalog and fetch
//! clients (which consume them), so the two sides cannot drift apart. Only
//! data types and constants live here; no I/O.
//!
//! | request                         | answer                                  |
//! |---------------------------------|-----------------------------------------|
//! | `GET /v1/health`                | [`Health`]                              |
//! | `GET /v1/files`                 | [`FileList`], `ETag` = generation       |
//! | `HEAD/GET /v1/files/<sha1>`     | the bytes, `Range` supported            |
//! | `GET /v1/files/<sha1>/pieces`   | [`PieceList`]                           |

use serde::{Deserialize, Serialize};

use crate::Sha1Digest;

/// Path prefix of every API route.
pub const API_PREFIX: &str = "/v1";
/// Health route.
pub const HEALTH_PATH: &str = "/v1/health";
/// Catalog route; a file is `FILES_PATH/<sha1>`, its pieces `FILES_PATH/<sha1>/pieces`.
pub const FILES_PATH: &str = "/v1/files";

/// Default piece size: 4 MiB.
pub const DEFAULT_PIECE_SIZE: u64 = 4 * 1024 * 1024;

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
    /// The index generation this list was taken at (also the `ETag`).
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

/// Number of pieces of a file of `size` bytes cut in pieces of `piece_size`.
pub fn piece_count(size: u64, piece_size: u64) -> u64 {
    if piece_size == 0 {
        return 0;
    }
    size.div_ceil(piece_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_count_edges() {
        let p = DEFAULT_PIECE_SIZE;
        assert_eq!(piece_count(0, p), 0);
        assert_eq!(piece_count(1, p), 1);
        assert_eq!(piece_count(p, p), 1);
        assert_eq!(piece_count(p + 1, p), 2);
    }
}
