//! The catalog cache on disk: each peer's last file list, keyed by peer id
//! and index generation, as one binary file in the state directory.
//! Written atomically (temp file + rename); a missing or corrupt file is an
//! empty cache (with a warning for corrupt), never an error. Neither read
//! nor written past the catalog's byte budget.
//!
//! Format (version 2, little-endian): the line `piratebay-sync catalog
//! cache v2`, the peer count (u32), per peer its id and address (u32
//! length, UTF-8 bytes), generation (u64) and file count (u32), per file
//! its SHA1 (20 bytes), size and piece size (u64 each) and name (u32
//! length, UTF-8); then the bytes `END!`. Version 1 was JSON: 10 MB for
//! 100,000 files took longer to parse (~45 ms) than `files` took for the
//! rest; this one is ~60 bytes a file and loads in a few ms. A version 1
//! file left by an older release is ignored (and removed when the new one
//! is written).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cursor::Reader;
use crate::protocol::CatalogEntry;

/// File name of the catalog's cache inside the state directory (for
/// [`Catalog::load`](crate::Catalog::load) and [`Catalog::save`](crate::Catalog::save)).
pub const CACHE_FILE: &str = "catalog-cache.bin";
/// The version 1 cache (JSON) of older releases, removed on save.
const OLD_CACHE_FILE: &str = "catalog-cache.json";
/// First line of a cache file of the current version.
const MAGIC: &[u8] = b"piratebay-sync catalog cache v2\n";
/// Last bytes of a complete cache file.
const TRAILER: &[u8; 4] = b"END!";
/// Bytes a file record takes at least (SHA1, size, piece size, name length).
const MIN_RECORD: usize = 20 + 8 + 8 + 4;

/// One peer's cached list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedList {
    /// The index generation the list was taken at.
    pub generation: u64,
    /// The addresses the list was fetched from, joined by `,` ("" in
    /// caches written before they were recorded: such a list is fetched
    /// again).
    #[serde(default)]
    pub addr: String,
    /// The files.
    pub files: Vec<CatalogEntry>,
}

/// Peer id -> its cached list.
pub type ListCache = BTreeMap<String, CachedList>;

/// What one file entry costs in the catalog budget at least, whatever its
/// JSON length: about what it takes in memory once parsed, cached and
/// merged over the network (entry, name, holder, merged entry).
pub const ENTRY_COST: u64 = 256;

/// What `files` costs in the catalog budget: per entry, its JSON length
/// (about the name plus 110 bytes) but at least [`ENTRY_COST`].
pub fn list_bytes(files: &[CatalogEntry]) -> u64 {
    files
        .iter()
        .map(|f| (f.name.len() as u64 + 110).max(ENTRY_COST))
        .sum()
}

/// Reads the cache; empty if missing, unusable or over `max_bytes`.
pub fn load(path: &Path, max_bytes: u64) -> ListCache {
    let bytes = match std::fs::metadata(path) {
        Ok(m) if m.len() > max_bytes => {
            log::warn!(
                "ignoring catalog cache {}: {} bytes, over the {max_bytes}-byte budget",
                path.display(),
                m.len()
            );
            return ListCache::new();
        }
        _ => std::fs::read(path),
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ListCache::new(),
        Err(e) => {
            log::warn!("ignoring catalog cache {}: {e}", path.display());
            return ListCache::new();
        }
    };
    match parse(&bytes) {
        Some(peers) => peers,
        None => {
            log::warn!(
                "ignoring corrupt or truncated catalog cache {}",
                path.display()
            );
            ListCache::new()
        }
    }
}

/// The peers of a version 2 cache; `None` if anything does not parse.
fn parse(bytes: &[u8]) -> Option<ListCache> {
    let body = bytes.strip_prefix(MAGIC)?.strip_suffix(TRAILER)?;
    let mut r = Reader { buf: body };
    let mut peers = ListCache::new();
    for _ in 0..r.count(4 + 4 + 8 + 4)? {
        let id = r.string()?;
        let addr = r.string()?;
        let generation = r.u64()?;
        let n = r.count(MIN_RECORD)?;
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            let sha1 = r.sha1()?;
            let size = r.u64()?;
            let piece_size = r.u64()?;
            let name = r.string()?;
            files.push(CatalogEntry {
                sha1,
                size,
                name,
                piece_size,
            });
        }
        peers.insert(
            id,
            CachedList {
                generation,
                addr,
                files,
            },
        );
    }
    r.buf.is_empty().then_some(peers)
}

fn write_str(out: &mut impl Write, s: &str) -> std::io::Result<()> {
    let n = u32::try_from(s.len()).map_err(|_| std::io::Error::other("string too long"))?;
    out.write_all(&n.to_le_bytes())?;
    out.write_all(s.as_bytes())
}

fn write_count(out: &mut impl Write, n: usize) -> std::io::Result<()> {
    let n = u32::try_from(n).map_err(|_| std::io::Error::other("too many entries"))?;
    out.write_all(&n.to_le_bytes())
}

/// Writes the cache atomically, creating the directory if needed; the
/// largest lists are left out until it fits in `max_bytes`.
pub fn save(path: &Path, peers: &ListCache, max_bytes: u64) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut kept: Vec<(&String, &CachedList, u64)> = peers
        .iter()
        .map(|(id, c)| (id, c, list_bytes(&c.files)))
        .collect();
    kept.sort_by_key(|(_, _, n)| *n);
    let mut total = 0u64;
    kept.retain(|(_, _, n)| {
        total += n;
        total <= max_bytes
    });
    kept.sort_by_key(|(id, _, _)| *id);
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    out.write_all(MAGIC)?;
    write_count(&mut out, kept.len())?;
    for (id, c, _) in &kept {
        write_str(&mut out, id)?;
        write_str(&mut out, &c.addr)?;
        out.write_all(&c.generation.to_le_bytes())?;
        write_count(&mut out, c.files.len())?;
        for f in &c.files {
            out.write_all(&f.sha1.0)?;
            out.write_all(&f.size.to_le_bytes())?;
            out.write_all(&f.piece_size.to_le_bytes())?;
            write_str(&mut out, &f.name)?;
        }
    }
    out.write_all(TRAILER)?;
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::remove_file(dir.join(OLD_CACHE_FILE));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha1Digest;

    #[test]
    fn round_trips_and_ignores_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(CACHE_FILE);
        assert!(load(&path, 1 << 20).is_empty());
        let mut peers = ListCache::new();
        peers.insert(
            "p1".into(),
            CachedList {
                generation: 3,
                addr: "10.0.0.1:7070".into(),
                files: vec![CatalogEntry {
                    sha1: Sha1Digest::of(b"a"),
                    size: 1,
                    name: "a".into(),
                    piece_size: 4,
                }],
            },
        );
        save(&path, &peers, 1 << 20).unwrap();
        assert_eq!(load(&path, 1 << 20), peers);
        assert!(load(&path, 10).is_empty(), "over the budget");
        save(&path, &peers, 10).unwrap();
        assert!(load(&path, 1 << 20).is_empty(), "nothing fits in 10 bytes");
        std::fs::write(&path, b"{\"version\":1,\"peers\":{\"p1\":").unwrap();
        assert!(load(&path, 1 << 20).is_empty());
    }

    #[test]
    fn truncated_or_corrupt_binary_caches_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CACHE_FILE);
        let old = dir.path().join(OLD_CACHE_FILE);
        std::fs::write(&old, b"{}").unwrap();
        let list = |id: &str, names: &[&str]| {
            let files = names
                .iter()
                .map(|n| CatalogEntry {
                    sha1: Sha1Digest::of(n.as_bytes()),
                    size: n.len() as u64,
                    name: n.to_string(),
                    piece_size: 1 << 20,
                })
                .collect();
            let c = CachedList {
                generation: 9,
                addr: format!("10.0.0.1:{}", id.len()),
                files,
            };
            (id.to_string(), c)
        };
        let peers: ListCache = [list("p1", &["a", "ünï \"b\""]), list("peer-2", &[])]
            .into_iter()
            .collect();
        save(&path, &peers, 1 << 20).unwrap();
        assert!(!old.exists(), "the version 1 cache is removed");
        assert_eq!(load(&path, 1 << 20), peers);
        let full = std::fs::read(&path).unwrap();
        for cut in 0..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            assert!(load(&path, 1 << 20).is_empty(), "cut at {cut}");
        }
        // A count far past the file's end, a name that is not UTF-8.
        let mut huge = full.clone();
        huge[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut bad_utf8 = full.clone();
        let name = "ünï".as_bytes();
        let at = full.windows(name.len()).position(|w| w == name).unwrap();
        bad_utf8[at] = 0xff;
        let mut extra = full[..full.len() - TRAILER.len()].to_vec();
        extra.extend_from_slice(b"xEND!");
        for bad in [huge, bad_utf8, extra] {
            std::fs::write(&path, &bad).unwrap();
            assert!(load(&path, 1 << 20).is_empty());
        }
    }
}
