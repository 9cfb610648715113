//! The catalog cache on disk: each peer's last file list, keyed by peer id
//! and index generation, as one small JSON file in the state directory.
//! Written atomically (temp file + rename); a missing or corrupt file is an
//! empty cache (with a warning for corrupt), never an error. Neither read
//! nor written past the catalog's byte budget.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::protocol::CatalogEntry;

/// File name of the catalog's cache inside the state directory (for
/// [`Catalog::load`](crate::Catalog::load) and [`Catalog::save`](crate::Catalog::save)).
pub const CACHE_FILE: &str = "catalog-cache.json";

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

#[derive(Deserialize)]
struct CacheFile {
    version: u32,
    peers: ListCache,
}

/// What is written: borrowed, so saving copies no list.
#[derive(Serialize)]
struct CacheFileRef<'a> {
    version: u32,
    peers: BTreeMap<&'a String, &'a CachedList>,
}

const VERSION: u32 = 1;

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
    match serde_json::from_slice::<CacheFile>(&bytes) {
        Ok(f) if f.version == VERSION => f.peers,
        Ok(_) => ListCache::new(),
        Err(e) => {
            log::warn!("ignoring corrupt catalog cache {}: {e}", path.display());
            ListCache::new()
        }
    }
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
    let doc = CacheFileRef {
        version: VERSION,
        peers: kept.into_iter().map(|(id, c, _)| (id, c)).collect(),
    };
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    let mut out = std::io::BufWriter::new(file);
    serde_json::to_writer(&mut out, &doc).map_err(std::io::Error::other)?;
    std::io::Write::flush(&mut out)?;
    drop(out);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sha1Digest;

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
}
