//! The index cache on disk: what was hashed, keyed by (path, size, mtime,
//! ctime, inode), so a restart rehashes only the files that changed.
//!
//! Format (version 4, binary, little-endian): the line
//! `piratebay-sync index cache v4`, then the root path (u32 length, bytes),
//! the generation (u64), the record count (u64), and per record: the
//! relative path (u32 length, bytes), size, mtime seconds (i64), mtime
//! nanoseconds (u32), ctime in nanoseconds (i64), inode, device (u64
//! each), the whole-file SHA1 (20 bytes), the number of chaining values
//! (u32: the piece count less one, the pieces cut by `protocol::piece_size`
//! of the size) and the values, 20 bytes each. Then the bytes `END!`.
//! Version 1 (JSON, hex) cost 24 MB and a second to parse for 100,000
//! files; version 2 (one SHA1 per piece, at a configured piece size) is
//! rebuilt once, with a log line saying why; version 3 had no ctime (an
//! edit with its mtime put back went unseen) and is rebuilt too.
//! ~80 bytes a file of one piece (100,000 files load in about 50 ms).
//!
//! One file per dataset root in the state directory, named after the SHA1 of
//! the root path. Written to a temporary file in the same directory, then
//! renamed over the old one. Not fsynced: it is a cache, and what a crash
//! can leave (the old file, or a torn or zeroed new one) is either checked
//! record by record against the disk's stat at start or fails to parse
//! (end marker, counts, piece counts) and is rebuilt; the two fsyncs cost
//! 10-30 ms before `index` could finish. Anything that does not parse
//! (missing, truncated, corrupt, another version, another root) is
//! reported as a [`CacheError`] and the caller starts from nothing.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::entry::{FileStat, Hashed, IndexedFile, Location};
use crate::chain::ChainValue;
use crate::cursor::Reader;
use crate::digest::Sha1Digest;
use crate::protocol::{piece_count, piece_size};

/// First line of a cache file of the current version.
pub const MAGIC: &str = "piratebay-sync index cache v4\n";
/// First line of a cache of version 2 (piece SHA1s).
const MAGIC_V2: &str = "piratebay-sync index cache v2\n";
/// Last bytes of a complete cache file.
const TRAILER: &[u8; 4] = b"END!";

/// Why the cache could not be used or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading the file failed.
    #[error("cannot read index cache {path}: {source}")]
    Read {
        /// The cache file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The header is not the current version's.
    #[error("index cache {path} is not a version 4 cache; rebuilding it")]
    Version {
        /// The cache file.
        path: PathBuf,
    },
    /// The cache is of the previous version, which kept one SHA1 per piece.
    #[error("index cache {path} holds piece SHA1s of the previous version, not SHA-1 chaining values; hashing the dataset again, once, to rebuild it")]
    PieceHashes {
        /// The cache file.
        path: PathBuf,
    },
    /// The body does not parse (truncated or corrupt).
    #[error("index cache {path} is corrupt ({reason}); rebuilding it")]
    Corrupt {
        /// The cache file.
        path: PathBuf,
        /// What did not parse.
        reason: String,
    },
    /// The cache belongs to another dataset root.
    #[error("index cache {path} is for another dataset; rebuilding it")]
    OtherRoot {
        /// The cache file.
        path: PathBuf,
    },
    /// Writing the cache failed.
    #[error("cannot write index cache {path}: {source}")]
    Write {
        /// The cache file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Where the cache of `root` (canonical) lives in `state_dir`.
pub fn cache_path(state_dir: &Path, root: &Path) -> PathBuf {
    let id = Sha1Digest::of(root.as_os_str().as_bytes()).to_hex();
    state_dir.join(format!("index-{}.cache", &id[..16]))
}

/// One record of the cache, borrowed from the file's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Relative path.
    pub rel: &'a Path,
    /// Stat when hashed.
    pub stat: FileStat,
    /// Whole-file SHA1.
    pub sha1: Sha1Digest,
    /// The chaining values, 20 bytes each (empty for one piece or none).
    chain: &'a [u8],
}

impl Record<'_> {
    /// The record's hashes.
    pub fn hashed(&self) -> Hashed {
        Hashed {
            sha1: self.sha1,
            size: self.stat.size,
            chain: self
                .chain
                .chunks_exact(20)
                .filter_map(|c| c.try_into().ok().map(ChainValue))
                .collect(),
        }
    }

    /// The record as an index entry of one location.
    pub fn entry(&self) -> IndexedFile {
        if self.chain.is_empty() {
            IndexedFile::single(self.sha1, self.rel.into(), self.stat)
        } else {
            IndexedFile::with_locations(
                self.hashed(),
                vec![Location {
                    path: self.rel.into(),
                    stat: self.stat,
                }],
            )
        }
    }
}

/// Reads the cache at `path` for `root`: checks all of it, then hands each
/// record to `each` (with the number of records in the file, to reserve
/// room), and returns the saved generation. `Ok(None)`: there is none yet.
pub fn load(
    path: &Path,
    root: &Path,
    mut each: impl FnMut(usize, Record<'_>),
) -> Result<Option<u64>, CacheError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Read {
                path: path.into(),
                source,
            })
        }
    };
    if bytes.starts_with(MAGIC_V2.as_bytes()) {
        return Err(CacheError::PieceHashes { path: path.into() });
    }
    let body = bytes
        .strip_prefix(MAGIC.as_bytes())
        .ok_or_else(|| CacheError::Version { path: path.into() })?;
    let corrupt = |reason: &str| CacheError::Corrupt {
        path: path.into(),
        reason: reason.into(),
    };
    let body = body
        .strip_suffix(TRAILER)
        .ok_or_else(|| corrupt("truncated: no end marker"))?;
    let mut r = Reader { buf: body };
    let file_root = r.bytes().ok_or_else(|| corrupt("truncated header"))?;
    if file_root != root.as_os_str().as_bytes() {
        return Err(CacheError::OtherRoot { path: path.into() });
    }
    let generation = r.u64().ok_or_else(|| corrupt("truncated header"))?;
    let count = r.u64().ok_or_else(|| corrupt("truncated header"))?;
    // Each record takes at least 73 bytes: a count beyond that is corrupt.
    let count = usize::try_from(count)
        .ok()
        .filter(|c| c.saturating_mul(73) <= body.len())
        .ok_or_else(|| corrupt("record count"))?;
    // A first pass checks the whole file, so a corrupt one gives nothing.
    let start = Reader { buf: r.buf };
    for _ in 0..count {
        if read_record(&mut r)
            .ok_or_else(|| corrupt("truncated record"))?
            .is_none()
        {
            return Err(corrupt("bad chain length or path in a record"));
        }
    }
    if !r.buf.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    let mut r = start;
    for _ in 0..count {
        let rec = read_record(&mut r)
            .flatten()
            .ok_or_else(|| corrupt("truncated record"))?;
        each(count, rec);
    }
    Ok(Some(generation))
}

/// Reads one record: `None` if truncated, `Some(None)` if its chain
/// length or path is wrong.
fn read_record<'a>(r: &mut Reader<'a>) -> Option<Option<Record<'a>>> {
    let rel = r.bytes()?;
    let size = r.u64()?;
    let mtime_sec = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let mtime_nsec = i64::from(r.u32()?);
    let ctime_ns = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let ino = r.u64()?;
    let dev = r.u64()?;
    let sha1 = r.sha1()?;
    let n = usize::try_from(r.u32()?).ok()?;
    let chain = r.take(n.checked_mul(20)?)?;
    let want = piece_count(size, piece_size(size)).saturating_sub(1);
    if n as u64 != want || rel.is_empty() {
        return Some(None);
    }
    Some(Some(Record {
        rel: Path::new(std::ffi::OsStr::from_bytes(rel)),
        stat: FileStat {
            size,
            mtime_sec,
            mtime_nsec,
            ino,
            dev,
            ctime_ns,
        },
        sha1,
        chain,
    }))
}

fn write_bytes(w: &mut impl Write, b: &[u8]) -> io::Result<()> {
    let n = u32::try_from(b.len()).map_err(|_| io::Error::other("path too long"))?;
    w.write_all(&n.to_le_bytes())?;
    w.write_all(b)
}

fn write_record(w: &mut impl Write, rel: &Path, st: &FileStat, e: &IndexedFile) -> io::Result<()> {
    write_bytes(w, rel.as_os_str().as_bytes())?;
    w.write_all(&st.size.to_le_bytes())?;
    w.write_all(&st.mtime_sec.to_le_bytes())?;
    let nsec = u32::try_from(st.mtime_nsec).unwrap_or(0);
    w.write_all(&nsec.to_le_bytes())?;
    w.write_all(&st.ctime_ns.to_le_bytes())?;
    w.write_all(&st.ino.to_le_bytes())?;
    w.write_all(&st.dev.to_le_bytes())?;
    w.write_all(&e.sha1.0)?;
    let chain = e.chain();
    let n = u32::try_from(chain.len()).map_err(|_| io::Error::other("too many pieces"))?;
    w.write_all(&n.to_le_bytes())?;
    chain.iter().try_for_each(|c| w.write_all(&c.0))
}

/// Writes the cache of `entries` (every location of each) atomically;
/// returns the number of records written.
pub fn save(
    path: &Path,
    root: &Path,
    generation: u64,
    entries: &[Arc<IndexedFile>],
) -> Result<usize, CacheError> {
    let werr = |source| CacheError::Write {
        path: path.into(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(werr)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let count: usize = entries.iter().map(|e| e.locations().len()).sum();
    let write = || -> io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, fs::File::create(&tmp)?);
        w.write_all(MAGIC.as_bytes())?;
        write_bytes(&mut w, root.as_os_str().as_bytes())?;
        w.write_all(&generation.to_le_bytes())?;
        w.write_all(&(count as u64).to_le_bytes())?;
        for e in entries {
            for l in e.locations() {
                write_record(&mut w, &l.path, &l.stat, e)?;
            }
        }
        w.write_all(TRAILER)?;
        w.into_inner().map_err(|e| e.into_error())?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        werr(e)
    })?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new("/data/set");
        let path = cache_path(dir.path(), root);
        let records = || {
            let mut v = Vec::new();
            let g = load(&path, root, |_, r| {
                v.push((r.rel.to_path_buf(), r.stat, r.hashed()));
                assert_eq!(r.entry().hashed(), r.hashed());
            })?;
            Ok::<_, CacheError>(g.map(|g| (g, v)))
        };
        assert!(records().unwrap().is_none());
        let data = vec![5u8; 200_000];
        let list = crate::protocol::PieceList::of_content(&data);
        let st = FileStat {
            size: 200_000,
            mtime_sec: 7,
            mtime_nsec: 9,
            ino: 11,
            dev: 13,
            ctime_ns: 0,
        };
        let four = Hashed {
            sha1: list.sha1,
            size: list.size,
            chain: list.chain,
        };
        assert_eq!(four.chain.len(), 3);
        let one = Hashed {
            sha1: Sha1Digest::of(b"hi"),
            size: 2,
            chain: vec![],
        };
        let empty = Hashed {
            sha1: Sha1Digest::of(b""),
            size: 0,
            chain: vec![],
        };
        let st0 = FileStat { size: 0, ..st };
        let st2 = FileStat { size: 2, ..st };
        let entries: Vec<Arc<IndexedFile>> = vec![
            Arc::new(IndexedFile::new(&four, vec![("a/b.txt".into(), st)])),
            Arc::new(IndexedFile::new(
                &one,
                vec![("one".into(), st2), ("z/one".into(), st2)],
            )),
            Arc::new(IndexedFile::new(&empty, vec![("e".into(), st0)])),
        ];
        assert_eq!(save(&path, root, 42, &entries).unwrap(), 4);
        let (generation, mut got) = records().unwrap().unwrap();
        assert_eq!(generation, 42);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let want = vec![
            (PathBuf::from("a/b.txt"), st, four),
            (PathBuf::from("e"), st0, empty),
            (PathBuf::from("one"), st2, one.clone()),
            (PathBuf::from("z/one"), st2, one),
        ];
        assert_eq!(got, want);

        assert!(matches!(
            load(&path, Path::new("/other"), |_, _| ()),
            Err(CacheError::OtherRoot { .. })
        ));
        let full = fs::read(&path).unwrap();
        for cut in [full.len() / 2, full.len() - 1, MAGIC.len() + 3] {
            fs::write(&path, &full[..cut]).unwrap();
            assert!(
                matches!(records(), Err(CacheError::Corrupt { .. })),
                "cut at {cut}"
            );
        }
        fs::write(&path, b"piratebay-sync index cache v1\n{}").unwrap();
        assert!(matches!(records(), Err(CacheError::Version { .. })));
        // A cache of piece SHA1s is rebuilt, and the error says why.
        fs::write(&path, b"piratebay-sync index cache v2\nEND!").unwrap();
        let err = records().unwrap_err();
        assert!(matches!(err, CacheError::PieceHashes { .. }));
        assert!(err.to_string().contains("chaining values"), "{err}");
    }
}
