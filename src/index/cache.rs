//! The index cache on disk: what was hashed, keyed by (path, size, mtime, inode),
//! so a restart rehashes only the files that changed.
//!
//! Format (version 1): the line `piratebay-sync index cache v1`, then one JSON
//! object ([`CacheFile`]). One file per dataset root in the state directory,
//! named after the SHA1 of the root path. Written atomically: a temporary file
//! in the same directory, fsync, rename, fsync of the directory. Anything that
//! does not parse (missing, truncated, corrupt, another version, another
//! root) is reported as a [`CacheError`] and the caller starts from nothing.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::entry::{FileStat, Hashed};
use crate::protocol::piece_count;
use crate::Sha1Digest;

/// First line of a cache file of the current version.
pub const MAGIC: &str = "piratebay-sync index cache v1\n";

/// Why the cache could not be used or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading the file failed.
    #[error("cannot read index cache {path}: {source}")]
    Read {
        /// The cache file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The header is not the current version's.
    #[error("index cache {path} is not a version 1 cache; rebuilding it")]
    Version {
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
    #[error("cannot write index cache {path}: {source}; check the state directory")]
    Write {
        /// The cache file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    root: String,
    generation: u64,
    files: Vec<CachedFile>,
}

#[derive(Serialize, Deserialize)]
struct CachedFile {
    /// Relative path, hex of its bytes (paths need not be UTF-8).
    path: String,
    size: u64,
    mtime_sec: i64,
    mtime_nsec: i64,
    ino: u64,
    sha1: Sha1Digest,
    piece_size: u64,
    /// The piece SHA1s, concatenated hex.
    pieces: String,
}

/// One record of a loaded cache.
#[derive(Debug, Clone)]
pub struct CacheRecord {
    /// Stat fingerprint when hashed (`dev` is 0: not persisted).
    pub stat: FileStat,
    /// The hashes.
    pub hashed: Arc<Hashed>,
}

/// A loaded cache.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The generation saved with it.
    pub generation: u64,
    /// Records by relative path.
    pub files: HashMap<PathBuf, CacheRecord>,
}

/// Where the cache of `root` (canonical) lives in `state_dir`.
pub fn cache_path(state_dir: &Path, root: &Path) -> PathBuf {
    let id = Sha1Digest::of(root.as_os_str().as_bytes()).to_hex();
    state_dir.join(format!("index-{}.cache", &id[..16]))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

/// Reads the cache at `path` for `root`. `Ok(None)`: there is none yet.
pub fn load(path: &Path, root: &Path) -> Result<Option<Loaded>, CacheError> {
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
    let body = bytes
        .strip_prefix(MAGIC.as_bytes())
        .ok_or_else(|| CacheError::Version { path: path.into() })?;
    let file: CacheFile = serde_json::from_slice(body).map_err(|e| CacheError::Corrupt {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if file.root.as_bytes() != hex(root.as_os_str().as_bytes()).as_bytes() {
        return Err(CacheError::OtherRoot { path: path.into() });
    }
    let mut files = HashMap::with_capacity(file.files.len());
    for f in file.files {
        let corrupt = |what: &str| CacheError::Corrupt {
            path: path.into(),
            reason: format!("bad {what} in a record"),
        };
        let rel = PathBuf::from(std::ffi::OsString::from_vec(
            unhex(&f.path).ok_or_else(|| corrupt("path"))?,
        ));
        let raw = unhex(&f.pieces).ok_or_else(|| corrupt("pieces"))?;
        if raw.len() % 20 != 0 || (raw.len() / 20) as u64 != piece_count(f.size, f.piece_size) {
            return Err(corrupt("piece count"));
        }
        let pieces = raw
            .chunks_exact(20)
            .map(|c| {
                let mut d = [0u8; 20];
                d.copy_from_slice(c);
                Sha1Digest(d)
            })
            .collect();
        let stat = FileStat {
            size: f.size,
            mtime_sec: f.mtime_sec,
            mtime_nsec: f.mtime_nsec,
            ino: f.ino,
            dev: 0,
        };
        let hashed = Arc::new(Hashed {
            sha1: f.sha1,
            size: f.size,
            piece_size: f.piece_size,
            pieces,
        });
        files.insert(rel, CacheRecord { stat, hashed });
    }
    Ok(Some(Loaded {
        generation: file.generation,
        files,
    }))
}

/// Writes the cache atomically.
pub fn save<'a>(
    path: &Path,
    root: &Path,
    generation: u64,
    records: impl Iterator<Item = (&'a Path, &'a FileStat, &'a Hashed)>,
) -> Result<(), CacheError> {
    let files = records
        .map(|(rel, st, h)| CachedFile {
            path: hex(rel.as_os_str().as_bytes()),
            size: st.size,
            mtime_sec: st.mtime_sec,
            mtime_nsec: st.mtime_nsec,
            ino: st.ino,
            sha1: h.sha1,
            piece_size: h.piece_size,
            pieces: hex(&h.pieces.iter().flat_map(|p| p.0).collect::<Vec<u8>>()),
        })
        .collect();
    let file = CacheFile {
        root: hex(root.as_os_str().as_bytes()),
        generation,
        files,
    };
    let werr = |source| CacheError::Write {
        path: path.into(),
        source,
    };
    let body = serde_json::to_vec(&file).map_err(|e| werr(io::Error::other(e)))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(werr)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(MAGIC.as_bytes())?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        werr(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new("/data/set");
        let path = cache_path(dir.path(), root);
        assert!(load(&path, root).unwrap().is_none());
        let st = FileStat {
            size: 5,
            mtime_sec: 7,
            mtime_nsec: 9,
            ino: 11,
            dev: 0,
        };
        let h = Hashed {
            sha1: Sha1Digest::of(b"hello"),
            size: 5,
            piece_size: 2,
            pieces: vec![
                Sha1Digest::of(b"he"),
                Sha1Digest::of(b"ll"),
                Sha1Digest::of(b"o"),
            ],
        };
        let rel = PathBuf::from("a/b.txt");
        save(&path, root, 42, std::iter::once((rel.as_path(), &st, &h))).unwrap();
        let l = load(&path, root).unwrap().unwrap();
        assert_eq!(l.generation, 42);
        let r = &l.files[&rel];
        assert_eq!((r.stat, &*r.hashed), (st, &h));

        assert!(matches!(
            load(&path, Path::new("/other")),
            Err(CacheError::OtherRoot { .. })
        ));
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() / 2]).unwrap();
        assert!(matches!(load(&path, root), Err(CacheError::Corrupt { .. })));
        fs::write(&path, b"piratebay-sync index cache v0\n{}").unwrap();
        assert!(matches!(load(&path, root), Err(CacheError::Version { .. })));
    }
}
