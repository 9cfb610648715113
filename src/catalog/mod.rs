//! The network-wide file catalog: every registered peer's `/v1/files`,
//! fetched in parallel, cached per (peer id, index generation), merged by sha1.
//!
//! A [`Catalog`] lives across calls and keeps each peer's last list with
//! the generation it was taken at; a peer whose registered `index_gen`
//! still equals that generation is not asked again (generation 0, "no
//! index yet", is never trusted). The CLI persists that cache in the state
//! directory between runs ([`cache`]). Peers are asked by at most 16
//! threads at once, each request with a 500 ms connect timeout, a per-read
//! timeout and a deadline, and a 64 MiB body limit: a dead peer costs its
//! connect timeout, is reported (warn and [`Refresh::failed`]), and is not
//! listed as a holder.
//!
//! - `peer_list`: one peer's `GET /v1/files`.
//! - [`cache`]: the on-disk cache.
//! - `network`: [`NetworkHolders`], the download's holder source over etcd.

pub mod cache;
mod network;
mod peer_list;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

pub use cache::{CachedList, ListCache, CACHE_FILE};
pub use network::NetworkHolders;
pub use peer_list::{fetch_file_list, PeerListError, MAX_CATALOG_BODY};

use crate::discovery::PeerInfo;
use crate::fetch::client::Timeouts;
use crate::fetch::Holder;
use crate::protocol::CatalogEntry;
use crate::Sha1Digest;

/// How the catalog asks peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogOptions {
    /// Longest wait for a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// Longest a single read from a peer may block.
    pub io_timeout: Duration,
    /// Longest a whole `GET /v1/files` may take.
    pub request_timeout: Duration,
    /// Peers asked at once.
    pub fan_out: usize,
}

impl Default for CatalogOptions {
    fn default() -> Self {
        CatalogOptions {
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            fan_out: 8,
        }
    }
}

/// One file of the network, merged over its holders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// SHA1 of the content.
    pub sha1: Sha1Digest,
    /// Size in bytes.
    pub size: u64,
    /// The most common name among the holders (untrusted: sanitize before use).
    pub name: String,
    /// Every name the holders give it, sorted.
    pub names: Vec<String>,
    /// The peers that hold it, by id.
    pub holders: Vec<Holder>,
    /// Number of holders.
    pub peers: usize,
}

/// What a [`Catalog::refresh`] found.
#[derive(Debug, Clone, Default)]
pub struct Refresh {
    /// Every file, sorted by name then sha1.
    pub files: Vec<FileEntry>,
    /// Ids of the peers asked over the network (the others came from the cache).
    pub asked: Vec<String>,
    /// Peers that could not be asked, with the reason.
    pub failed: Vec<(Holder, String)>,
}

impl Refresh {
    /// The entry for `sha1`, if any peer holds it.
    pub fn find(&self, sha1: &Sha1Digest) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.sha1 == *sha1)
    }
}

/// The catalog and its per-peer cache.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    opts: CatalogOptions,
    cache: ListCache,
}

impl Catalog {
    /// An empty catalog.
    pub fn new(opts: CatalogOptions) -> Self {
        Catalog {
            opts,
            cache: ListCache::new(),
        }
    }

    /// A catalog whose cache is read from `path` (empty if missing or corrupt).
    pub fn load(opts: CatalogOptions, path: &Path) -> Self {
        Catalog {
            opts,
            cache: cache::load(path),
        }
    }

    /// Writes the cache to `path` atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        cache::save(path, &self.cache)
    }

    /// The cached lists by peer id.
    pub fn cache(&self) -> &ListCache {
        &self.cache
    }

    /// Asks every peer in `peers` whose list is not cached at its current
    /// generation, and merges all lists.
    pub fn refresh(&mut self, peers: &[PeerInfo]) -> Refresh {
        let stale: Vec<&PeerInfo> = peers
            .iter()
            .filter(|p| {
                let r = &p.record;
                r.index_gen == 0
                    || self
                        .cache
                        .get(&r.id)
                        .is_none_or(|c| c.generation != r.index_gen)
            })
            .collect();
        let results = self.fetch_all(&stale);
        let mut refresh = Refresh::default();
        let mut failed_ids = Vec::new();
        for (peer, result) in stale.iter().zip(results) {
            let r = &peer.record;
            refresh.asked.push(r.id.clone());
            match result {
                Ok(list) => {
                    self.cache.insert(
                        r.id.clone(),
                        CachedList {
                            generation: list.generation,
                            files: list.files,
                        },
                    );
                }
                Err(e) => {
                    log::warn!("peer {} ({}) left out of the catalog: {e}", r.id, r.addr);
                    refresh
                        .failed
                        .push((Holder::with_addrs(&r.id, r.dial_addrs()), e.to_string()));
                    failed_ids.push(r.id.clone());
                }
            }
        }
        // Forget peers that are gone; keep a failed peer's old list for next time.
        let registered: HashMap<&str, &PeerInfo> =
            peers.iter().map(|p| (p.record.id.as_str(), p)).collect();
        self.cache
            .retain(|id, _| registered.contains_key(id.as_str()));
        let lists: Vec<(Holder, &[CatalogEntry])> = peers
            .iter()
            .filter(|p| !failed_ids.contains(&p.record.id))
            .filter_map(|p| {
                let c = self.cache.get(&p.record.id)?;
                Some((
                    Holder::with_addrs(&p.record.id, p.record.dial_addrs()),
                    c.files.as_slice(),
                ))
            })
            .collect();
        refresh.files = merge(&lists);
        refresh
    }

    fn fetch_all(
        &self,
        peers: &[&PeerInfo],
    ) -> Vec<Result<crate::protocol::FileList, PeerListError>> {
        let timeouts = Timeouts {
            connect: self.opts.connect_timeout,
            io: self.opts.io_timeout,
        };
        let slots: Vec<Mutex<Option<Result<_, PeerListError>>>> =
            peers.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(p) = peers.get(i) else { break };
            let r = fetch_file_list(&p.record.dial_addrs(), timeouts, self.opts.request_timeout);
            *slots[i].lock() = Some(r);
        };
        std::thread::scope(|s| {
            for t in 0..self.opts.fan_out.max(1).min(peers.len()) {
                let spawned = std::thread::Builder::new()
                    .name(format!("pb-catalog{t}"))
                    .spawn_scoped(s, work);
                if spawned.is_err() {
                    break; // fewer threads; this one helps below
                }
            }
            work();
        });
        slots
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|| Err(PeerListError::Json("bug: peer not asked".into())))
            })
            .collect()
    }
}

/// Merges per-peer lists by sha1. Holders that disagree on a file's size
/// all stay its holders (no claim by one holder removes another: the
/// download groups holders by piece list and tries each group); the entry
/// shows the size most holders give (the smallest on a tie).
pub fn merge(lists: &[(Holder, &[CatalogEntry])]) -> Vec<FileEntry> {
    struct Acc {
        sizes: BTreeMap<u64, usize>,
        names: BTreeMap<String, usize>,
        holders: Vec<Holder>,
    }
    let mut by_sha1: BTreeMap<Sha1Digest, Acc> = BTreeMap::new();
    for (holder, files) in lists {
        for f in files.iter() {
            let acc = by_sha1.entry(f.sha1).or_insert_with(|| Acc {
                sizes: BTreeMap::new(),
                names: BTreeMap::new(),
                holders: Vec::new(),
            });
            if acc.holders.iter().any(|h| h.id == holder.id) {
                continue;
            }
            *acc.sizes.entry(f.size).or_default() += 1;
            *acc.names.entry(f.name.clone()).or_default() += 1;
            acc.holders.push(holder.clone());
        }
    }
    let mut out: Vec<FileEntry> = by_sha1
        .into_iter()
        .map(|(sha1, acc)| {
            let name = acc
                .names
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(n, _)| n.clone())
                .unwrap_or_default();
            let mut holders = acc.holders;
            holders.sort();
            let size = acc
                .sizes
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map_or(0, |(s, _)| *s);
            if acc.sizes.len() > 1 {
                log::warn!("holders of {sha1} disagree on its size: {:?}", acc.sizes);
            }
            FileEntry {
                sha1,
                size,
                name,
                names: acc.names.into_keys().collect(),
                peers: holders.len(),
                holders,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.sha1.cmp(&b.sha1)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(data: &[u8], name: &str) -> CatalogEntry {
        CatalogEntry {
            sha1: Sha1Digest::of(data),
            size: data.len() as u64,
            name: name.into(),
            piece_size: 4,
        }
    }

    #[test]
    fn merge_groups_by_sha1_and_picks_the_common_name() {
        let a = [entry(b"one", "x.txt"), entry(b"two", "b")];
        let b = [entry(b"one", "y.txt")];
        let c = [entry(b"one", "y.txt"), entry(b"two", "b")];
        let mut liar = entry(b"two", "b");
        liar.size = 99;
        let d = [liar];
        let merged = merge(&[
            (Holder::new("a", "1:1"), &a),
            (Holder::new("b", "1:2"), &b),
            (Holder::new("c", "1:3"), &c),
            (Holder::new("d", "1:4"), &d),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].name, "b");
        assert_eq!(
            merged[0].peers, 3,
            "a holder with another size stays a holder: the download sorts them out"
        );
        assert_eq!(merged[0].size, 3, "the size most holders give");
        let one = &merged[1];
        assert_eq!(one.name, "y.txt");
        assert_eq!(one.names, vec!["x.txt", "y.txt"]);
        assert_eq!(
            one.holders
                .iter()
                .map(|h| h.id.as_str())
                .collect::<Vec<_>>(),
            vec!["a", "b", "c"]
        );
    }

    #[test]
    fn a_liar_sorted_first_removes_no_honest_holder() {
        let honest = [entry(b"real", "f")];
        let mut lie = entry(b"real", "f");
        lie.size = 1 << 30;
        let lie = [lie];
        let merged = merge(&[
            (Holder::new("0000-sybil", "1:9"), &lie),
            (Holder::new("a", "1:1"), &honest),
            (Holder::new("b", "1:2"), &honest),
        ]);
        assert_eq!(merged[0].peers, 3);
        assert_eq!(merged[0].size, 4);
    }
}
