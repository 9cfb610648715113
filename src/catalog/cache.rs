//! The catalog cache on disk: each peer's last file list, keyed by peer id
//! and index generation, as one small JSON file in the state directory.
//! Written atomically (temp file + rename); a missing or corrupt file is an
//! empty cache (with a warning for corrupt), never an error.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::protocol::CatalogEntry;

/// File name of the cache inside the state directory.
pub const CACHE_FILE: &str = "catalog-cache.json";

/// One peer's cached list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedList {
    /// The index generation the list was taken at.
    pub generation: u64,
    /// The files.
    pub files: Vec<CatalogEntry>,
}

/// Peer id -> its cached list.
pub type ListCache = BTreeMap<String, CachedList>;

#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    peers: ListCache,
}

const VERSION: u32 = 1;

/// Reads the cache; empty if missing or unusable.
pub fn load(path: &Path) -> ListCache {
    let bytes = match std::fs::read(path) {
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

/// Writes the cache atomically, creating the directory if needed.
pub fn save(path: &Path, peers: &ListCache) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec(&CacheFile {
        version: VERSION,
        peers: peers.clone(),
    })
    .map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".tmp{}", std::process::id()));
    std::fs::write(&tmp, json)?;
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
        assert!(load(&path).is_empty());
        let mut peers = ListCache::new();
        peers.insert(
            "p1".into(),
            CachedList {
                generation: 3,
                files: vec![CatalogEntry {
                    sha1: Sha1Digest::of(b"a"),
                    size: 1,
                    name: "a".into(),
                    piece_size: 4,
                }],
            },
        );
        save(&path, &peers).unwrap();
        assert_eq!(load(&path), peers);
        std::fs::write(&path, b"{\"version\":1,\"peers\":{\"p1\":").unwrap();
        assert!(load(&path).is_empty());
    }
}
