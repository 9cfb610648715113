//! What the index knows about one file: its content hashes, where it lives,
//! and the stat fingerprint that says whether those hashes still hold.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::protocol::{CatalogEntry, PieceList};
use crate::Sha1Digest;

/// The stat fingerprint of a file: if any part of it changed, its hashes are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, whole seconds since the epoch (may be negative).
    pub mtime_sec: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: i64,
    /// Inode number.
    pub ino: u64,
    /// Device number (persisted; one that changed across a reboot updates
    /// the path without rehashing it, see [`same_content_key`](Self::same_content_key)).
    pub dev: u64,
}

impl FileStat {
    /// The fingerprint of `meta`.
    pub fn of(meta: &Metadata) -> Self {
        FileStat {
            size: meta.len(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// The modification time as a `SystemTime` (the epoch if unrepresentable).
    pub fn mtime(&self) -> SystemTime {
        let nsec = u32::try_from(self.mtime_nsec.clamp(0, 999_999_999)).unwrap_or(0);
        if self.mtime_sec >= 0 {
            let d = Duration::new(self.mtime_sec.unsigned_abs(), nsec);
            UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
        } else {
            let d = Duration::new(self.mtime_sec.unsigned_abs(), 0);
            UNIX_EPOCH
                .checked_sub(d)
                .and_then(|t| t.checked_add(Duration::new(0, nsec)))
                .unwrap_or(UNIX_EPOCH)
        }
    }

    /// Same size, mtime and inode (the device is ignored, as in the cache).
    pub fn same_content_key(&self, other: &FileStat) -> bool {
        self.size == other.size
            && self.mtime_sec == other.mtime_sec
            && self.mtime_nsec == other.mtime_nsec
            && self.ino == other.ino
    }
}

/// The hashes of one content, computed in one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    /// SHA1 of the whole content.
    pub sha1: Sha1Digest,
    /// Bytes hashed.
    pub size: u64,
    /// Piece size the pieces were cut at.
    pub piece_size: u64,
    /// SHA1 of each piece; none for an empty file.
    pub pieces: Vec<Sha1Digest>,
}

/// One distinct content in the index, with every path that holds it.
///
/// Immutable: a change (a path added or removed) replaces the whole `Arc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedFile {
    /// SHA1 of the whole content.
    pub sha1: Sha1Digest,
    /// Size in bytes.
    pub size: u64,
    /// Piece size of `pieces`.
    pub piece_size: u64,
    /// SHA1 of each piece, in order; the last piece may be shorter; none for an empty file.
    pub pieces: Vec<Sha1Digest>,
    /// Every path holding this content, relative to the index root, sorted.
    pub paths: Vec<PathBuf>,
    /// Modification time of the first path.
    pub mtime: SystemTime,
    /// Stat fingerprint of each path, parallel to `paths`.
    pub(crate) stats: Vec<FileStat>,
}

impl IndexedFile {
    /// An entry for `hashed` with the given locations (sorted here).
    pub(crate) fn new(hashed: &Hashed, locations: Vec<(PathBuf, FileStat)>) -> Self {
        Self::from_hashed(hashed.clone(), locations)
    }

    /// [`new`](Self::new), taking the hashes (no copy of the piece list).
    pub(crate) fn from_hashed(hashed: Hashed, mut locations: Vec<(PathBuf, FileStat)>) -> Self {
        locations.sort_by(|a, b| a.0.cmp(&b.0));
        let mtime = locations
            .first()
            .map(|(_, s)| s.mtime())
            .unwrap_or(UNIX_EPOCH);
        // Exact capacities: `unzip` reserves 4 slots at least, which made
        // these two vectors most of an entry's memory.
        let mut paths = Vec::with_capacity(locations.len());
        let mut stats = Vec::with_capacity(locations.len());
        for (p, s) in locations {
            paths.push(p);
            stats.push(s);
        }
        IndexedFile {
            sha1: hashed.sha1,
            size: hashed.size,
            piece_size: hashed.piece_size,
            pieces: hashed.pieces,
            paths,
            mtime,
            stats,
        }
    }

    /// The hashes of this entry, without its locations.
    pub(crate) fn hashed(&self) -> Hashed {
        Hashed {
            sha1: self.sha1,
            size: self.size,
            piece_size: self.piece_size,
            pieces: self.pieces.clone(),
        }
    }

    /// Each path with its stat fingerprint.
    pub(crate) fn locations(&self) -> impl Iterator<Item = (&Path, &FileStat)> {
        self.paths
            .iter()
            .map(PathBuf::as_path)
            .zip(self.stats.iter())
    }

    /// The base name of the first path (the sha1 if it has none).
    pub fn name(&self) -> String {
        self.paths
            .first()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.sha1.to_hex())
    }

    /// The piece hashes in the wire format of `GET /v1/files/<sha1>/pieces`.
    pub fn piece_list(&self) -> PieceList {
        PieceList {
            sha1: self.sha1,
            size: self.size,
            piece_size: self.piece_size,
            pieces: self.pieces.clone(),
        }
    }
}

impl From<&IndexedFile> for CatalogEntry {
    fn from(e: &IndexedFile) -> Self {
        CatalogEntry {
            sha1: e.sha1,
            size: e.size,
            name: e.name(),
            piece_size: e.piece_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_round_trips_before_and_after_epoch() {
        let s = FileStat {
            size: 1,
            mtime_sec: 10,
            mtime_nsec: 5,
            ino: 1,
            dev: 1,
        };
        assert_eq!(s.mtime(), UNIX_EPOCH + Duration::new(10, 5));
        let old = FileStat {
            mtime_sec: -10,
            ..s
        };
        assert_eq!(
            old.mtime(),
            UNIX_EPOCH - Duration::new(10, 0) + Duration::new(0, 5)
        );
    }

    #[test]
    fn name_and_wire_conversions() {
        let h = Hashed {
            sha1: Sha1Digest::of(b"x"),
            size: 1,
            piece_size: 4,
            pieces: vec![Sha1Digest::of(b"x")],
        };
        let st = FileStat {
            size: 1,
            mtime_sec: 0,
            mtime_nsec: 0,
            ino: 1,
            dev: 1,
        };
        let e = IndexedFile::new(&h, vec![("b/z.txt".into(), st), ("a/y.txt".into(), st)]);
        assert_eq!(e.name(), "y.txt");
        let c = CatalogEntry::from(&e);
        assert_eq!((c.size, c.piece_size, c.name.as_str()), (1, 4, "y.txt"));
        assert_eq!(e.piece_list().pieces, h.pieces);
    }
}
