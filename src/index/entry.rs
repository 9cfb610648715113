//! What the index knows about one file: its content hashes, where it lives,
//! and the stat fingerprint that says whether those hashes still hold.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::chain::ChainValue;
use crate::digest::Sha1Digest;
use crate::protocol::{piece_count, piece_size, CatalogEntry, PieceList};

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
    /// Status change time in nanoseconds since the epoch (saturating):
    /// an in-place write whose mtime was put back still moves it, and
    /// nobody but the kernel can set it.
    pub ctime_ns: i64,
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
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
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

    /// True if the file was last modified `settle` or longer ago: not
    /// being written (a file modified in the future is not).
    pub fn settled(&self, settle: Duration) -> bool {
        SystemTime::now()
            .duration_since(self.mtime())
            .is_ok_and(|age| age >= settle)
    }

    /// Same size, mtime, ctime and inode (the device is ignored, as in the
    /// cache): the hashes still hold. The ctime catches an in-place edit
    /// whose mtime was put back (`touch -r`, `cp -p` over the file).
    pub fn same_content_key(&self, other: &FileStat) -> bool {
        self.same_moved_key(other) && self.ctime_ns == other.ctime_ns
    }

    /// Same size, mtime and inode, whatever the ctime: the same file after
    /// a rename (which moves the ctime). Only for a file known to have been
    /// renamed by a writer the index trusts (a rename seen in one batch, a
    /// download's own `.part`), never to decide that a path is unchanged.
    pub fn same_moved_key(&self, other: &FileStat) -> bool {
        self.size == other.size
            && self.mtime_sec == other.mtime_sec
            && self.mtime_nsec == other.mtime_nsec
            && self.ino == other.ino
    }
}

/// The hashes of one content, computed in one read: its SHA1 and the
/// SHA-1 chaining values at its piece boundaries ([`piece_size`] of its
/// size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    /// SHA1 of the whole content.
    pub sha1: Sha1Digest,
    /// Bytes hashed.
    pub size: u64,
    /// The chaining values `c_1 .. c_(n-1)` of its `n` pieces; none for a
    /// content of one piece or empty.
    pub chain: Vec<ChainValue>,
}

/// One place a content lives: a path relative to the index root, and its
/// stat fingerprint when it was hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    /// Relative path.
    pub path: Box<Path>,
    /// Stat fingerprint when hashed.
    pub stat: FileStat,
}

/// One distinct content in the index, with every path that holds it.
///
/// Immutable: a change (a path added or removed) replaces the whole `Arc`.
/// Compact, because the index holds one per file (100,000 of them take
/// about 20 MB): three allocations for a file of one piece (this, its
/// location list, its path), which has no chaining values to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedFile {
    /// SHA1 of the whole content.
    pub sha1: Sha1Digest,
    /// Size in bytes.
    pub size: u64,
    /// The chaining values at the piece boundaries (none for one piece).
    chain: Box<[ChainValue]>,
    /// Every path holding this content, sorted by path; never empty.
    locations: Box<[Location]>,
}

impl IndexedFile {
    /// An entry for `hashed` with the given locations (sorted here; at least one).
    #[cfg(test)]
    pub(crate) fn new(hashed: &Hashed, locations: Vec<(std::path::PathBuf, FileStat)>) -> Self {
        Self::from_hashed(hashed.clone(), locations)
    }

    /// [`new`](Self::new), taking the hashes (no copy of the chain).
    #[cfg(test)]
    pub(crate) fn from_hashed(
        hashed: Hashed,
        locations: Vec<(std::path::PathBuf, FileStat)>,
    ) -> Self {
        let locations = locations
            .into_iter()
            .map(|(path, stat)| Location {
                path: path.into_boxed_path(),
                stat,
            })
            .collect();
        Self::with_locations(hashed, locations)
    }

    /// An entry for `hashed` at `locations` (sorted here).
    pub(crate) fn with_locations(hashed: Hashed, mut locations: Vec<Location>) -> Self {
        locations.sort_by(|a, b| a.path.cmp(&b.path));
        IndexedFile {
            sha1: hashed.sha1,
            size: hashed.size,
            chain: hashed.chain.into_boxed_slice(),
            locations: locations.into_boxed_slice(),
        }
    }

    /// An entry of one location whose content is one piece or empty (no
    /// chain to allocate): what most cache records are.
    pub(crate) fn single(sha1: Sha1Digest, path: Box<Path>, stat: FileStat) -> Self {
        IndexedFile {
            sha1,
            size: stat.size,
            chain: Box::default(),
            locations: Box::new([Location { path, stat }]),
        }
    }

    /// The piece size: [`piece_size`](crate::protocol::piece_size) of the size.
    pub fn piece_size(&self) -> u64 {
        piece_size(self.size)
    }

    /// Number of pieces (none for an empty file).
    pub fn piece_count(&self) -> usize {
        usize::try_from(piece_count(self.size, self.piece_size())).unwrap_or(usize::MAX)
    }

    /// The SHA-1 chaining values at the piece boundaries, `c_1 .. c_(n-1)`
    /// (see [`PieceList`]).
    pub fn chain(&self) -> &[ChainValue] {
        &self.chain
    }

    /// Every path holding this content, relative to the index root, sorted.
    pub fn paths(&self) -> impl ExactSizeIterator<Item = &Path> {
        self.locations.iter().map(|l| &*l.path)
    }

    /// The first of [`paths`](Self::paths).
    pub fn path(&self) -> &Path {
        self.locations
            .first()
            .map(|l| &*l.path)
            .unwrap_or(Path::new(""))
    }

    /// Modification time of the first path.
    pub fn mtime(&self) -> SystemTime {
        self.locations
            .first()
            .map(|l| l.stat.mtime())
            .unwrap_or(UNIX_EPOCH)
    }

    /// The hashes of this entry, without its locations.
    pub(crate) fn hashed(&self) -> Hashed {
        Hashed {
            sha1: self.sha1,
            size: self.size,
            chain: self.chain.to_vec(),
        }
    }

    /// Each location (path and stat fingerprint), sorted by path.
    pub(crate) fn locations(&self) -> &[Location] {
        &self.locations
    }

    /// The base name of the first path (the sha1 if it has none).
    pub fn name(&self) -> String {
        self.path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.sha1.to_hex())
    }

    /// The chain in the wire format of `GET /v1/files/<sha1>/pieces`.
    pub fn piece_list(&self) -> PieceList {
        PieceList::new(self.sha1, self.size, self.chain.to_vec())
    }
}

impl From<&IndexedFile> for CatalogEntry {
    fn from(e: &IndexedFile) -> Self {
        CatalogEntry {
            sha1: e.sha1,
            size: e.size,
            name: e.name(),
            piece_size: e.piece_size(),
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
            ctime_ns: 0,
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
        let data = vec![3u8; 200_000];
        let list = PieceList::of_content(&data);
        let h = Hashed {
            sha1: list.sha1,
            size: list.size,
            chain: list.chain.clone(),
        };
        let st = FileStat {
            size: 200_000,
            mtime_sec: 0,
            mtime_nsec: 0,
            ino: 1,
            dev: 1,
            ctime_ns: 0,
        };
        let e = IndexedFile::new(&h, vec![("b/z.txt".into(), st), ("a/y.txt".into(), st)]);
        assert_eq!(e.name(), "y.txt");
        assert_eq!(
            e.paths().collect::<Vec<_>>(),
            [Path::new("a/y.txt"), Path::new("b/z.txt")]
        );
        assert_eq!(e.piece_count(), 4);
        assert_eq!(e.chain().len(), 3);
        let c = CatalogEntry::from(&e);
        assert_eq!(
            (c.size, c.piece_size, c.name.as_str()),
            (200_000, 65536, "y.txt")
        );
        assert_eq!(e.piece_list(), list);
        assert_eq!(e.hashed(), h);
        let empty = Hashed {
            sha1: Sha1Digest::of(b""),
            size: 0,
            chain: vec![],
        };
        let e = IndexedFile::new(&empty, vec![("e".into(), FileStat { size: 0, ..st })]);
        assert_eq!(e.piece_count(), 0);
    }
}
