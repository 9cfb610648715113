//! The network-wide file catalog: every registered peer's `/v1/files`,
//! fetched in parallel, cached per (peer id, address, index generation),
//! merged by sha1.
//!
//! A [`Catalog`] lives across calls and keeps each peer's last list with
//! the generation and address it was taken at; a peer whose registered
//! `index_gen` and `addr` still match is not asked again (generation 0,
//! "no index yet", is never trusted). The CLI persists that cache in the
//! state directory between runs ([`cache`]).
//!
//! Bounded whatever the number of peers or what they send:
//! - each address is asked once, however many records name it;
//! - at most `fan_out` requests at once, each with a connect and a read
//!   timeout, all within one overall `deadline`: answers that came in time
//!   are used, peers not asked by then are reported, not waited for;
//! - every body is reserved from one total `budget` of bytes (cached lists
//!   included) before it is read, so the lists held, and the cache file
//!   written, never exceed it; one peer's body is also capped at
//!   [`MAX_CATALOG_BODY`];
//! - known-good peers (answered before) are asked first, then the others
//!   one host (IP) at a time, so many records on one host do not push the
//!   other hosts past the deadline;
//! - an address that failed is not asked again for [`RETRY_FAILED`] by the
//!   same `Catalog` (a running download re-queries every few seconds);
//! - failures are logged as one summary warning with counts.
//!
//! - `peer_list`: one peer's `GET /v1/files`.
//! - `budget`: the shared byte budget.
//! - [`cache`]: the on-disk cache.
//! - `network`: [`NetworkHolders`], the download's holder source over etcd.
//! - `probe`: [`ProbedHolders`], the holders of one file without any
//!   catalog (`HEAD /v1/files/<sha1>` to every peer).

mod budget;
pub mod cache;
mod network;
mod peer_list;
mod probe;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use budget::Budget;
pub use cache::{CachedList, ListCache, CACHE_FILE};
pub use network::NetworkHolders;
use peer_list::FailureKind;
pub use peer_list::PeerListError;
pub use probe::{Lookup, NotFound, ProbeOptions, ProbedHolders};

use crate::client::Timeouts;
use crate::digest::Sha1Digest;
use crate::discovery::PeerInfo;
use crate::holders::Holder;
use crate::protocol::{CatalogEntry, FileList};

/// Failed peers named in the summary warning (the others are counted).
const MAX_EXAMPLES: usize = 3;

/// How long an address that failed is left alone by the same [`Catalog`].
pub const RETRY_FAILED: Duration = Duration::from_secs(30);

/// How the catalog asks peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogOptions {
    /// Longest wait for a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// Longest a single read from a peer may block.
    pub io_timeout: Duration,
    /// Longest asking all peers may take (one refresh).
    pub deadline: Duration,
    /// Peers asked at once.
    pub fan_out: usize,
    /// Bytes of catalog bodies held at most, all peers together (cached
    /// lists included).
    pub budget: u64,
}

impl Default for CatalogOptions {
    /// 500 ms connect, 3 s read, 10 s for all peers, 32 at once, 64 MiB in
    /// all. (The deadline was one request's before; a busy peer's `503` is
    /// asked again within it.)
    fn default() -> Self {
        CatalogOptions {
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(10),
            fan_out: 32,
            budget: 64 * 1024 * 1024,
        }
    }
}

/// One file of the network, merged over its holders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkFile {
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
    pub files: Vec<NetworkFile>,
    /// Ids of the peers asked over the network (the others came from the cache).
    pub asked: Vec<String>,
    /// Peers that could not be asked, with the reason.
    pub failed: Vec<(Holder, String)>,
}

impl Refresh {
    /// The entry for `sha1`, if any peer holds it.
    pub fn find(&self, sha1: &Sha1Digest) -> Option<&NetworkFile> {
        self.files.iter().find(|f| f.sha1 == *sha1)
    }
}

/// The network's file list, merged from every peer's, with a per-peer
/// cache: a peer is asked again only when the index generation it
/// publishes in etcd (or its address) changes.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    opts: CatalogOptions,
    cache: ListCache,
    /// Whether `cache` changed since it was loaded (else saving it would
    /// write what the file holds already).
    changed: bool,
    /// Addresses that failed, and when (in memory only).
    failed_at: HashMap<String, Instant>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new(opts: CatalogOptions) -> Self {
        Catalog {
            opts,
            cache: ListCache::new(),
            changed: true,
            failed_at: HashMap::new(),
        }
    }

    /// A catalog whose cache is read from `path` (empty if missing, corrupt
    /// or larger than the budget).
    pub fn load(opts: CatalogOptions, path: &Path) -> Self {
        let cache = cache::load(path, opts.budget);
        Catalog {
            opts,
            // An empty cache (none, or one ignored) is written back.
            changed: cache.is_empty(),
            cache,
            failed_at: HashMap::new(),
        }
    }

    /// Writes the cache to `path` atomically (never more than the budget),
    /// unless it is unchanged since [`Catalog::load`] read it from there.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if !self.changed && path.exists() {
            return Ok(());
        }
        cache::save(path, &self.cache, self.opts.budget)
    }

    /// Asks every peer in `peers` whose list is not cached at its current
    /// generation and address, within the deadline and the budget, and
    /// merges all lists.
    pub fn refresh(&mut self, peers: &[PeerInfo]) -> Refresh {
        let (mut refresh, failed) = self.update(peers);
        refresh.files = merge_refs(&self.lists(peers, &failed, |_| true));
        refresh
    }

    /// Like [`Catalog::refresh`], but merges only the entries of `sha1`
    /// (`files` has at most that one file): no merged copy of the whole
    /// network's catalog is built to find one file's holders.
    pub fn refresh_for(&mut self, peers: &[PeerInfo], sha1: &Sha1Digest) -> Refresh {
        let (mut refresh, failed) = self.update(peers);
        refresh.files = merge_refs(&self.lists(peers, &failed, |e| e.sha1 == *sha1));
        refresh
    }

    /// Like [`Catalog::refresh`], but merges only the files of which some
    /// holder's entry passes `wanted` (every holder of such a file is
    /// kept): `files --search` merges only what it prints.
    pub fn refresh_matching(
        &mut self,
        peers: &[PeerInfo],
        wanted: impl Fn(&CatalogEntry) -> bool,
    ) -> Refresh {
        let (mut refresh, failed) = self.update(peers);
        let found: HashSet<Sha1Digest> = self
            .lists(peers, &failed, wanted)
            .iter()
            .flat_map(|(_, files)| files.iter().map(|e| e.sha1))
            .collect();
        refresh.files = merge_refs(&self.lists(peers, &failed, |e| found.contains(&e.sha1)));
        refresh
    }

    /// Each usable peer's cached entries that pass `keep`.
    fn lists(
        &self,
        peers: &[PeerInfo],
        failed: &HashSet<String>,
        keep: impl Fn(&CatalogEntry) -> bool,
    ) -> Vec<(Holder, Vec<&CatalogEntry>)> {
        peers
            .iter()
            .filter(|p| !failed.contains(&p.record.id))
            .filter_map(|p| {
                let c = self.cache.get(&p.record.id)?;
                let files: Vec<&CatalogEntry> = c.files.iter().filter(|e| keep(e)).collect();
                Some((
                    Holder::with_addrs(&p.record.id, p.record.dial_addrs()),
                    files,
                ))
            })
            .collect()
    }

    /// Fetches what is stale into the cache; the refresh without files and
    /// the ids of the peers that failed.
    fn update(&mut self, peers: &[PeerInfo]) -> (Refresh, HashSet<String>) {
        let registered: HashMap<&str, &PeerInfo> =
            peers.iter().map(|p| (p.record.id.as_str(), p)).collect();
        // Forget peers that are gone or moved; keep a failed peer's old list.
        let before = self.cache.len();
        self.cache.retain(|id, c| {
            registered
                .get(id.as_str())
                .is_some_and(|p| dial_key(&p.record) == c.addr)
        });
        self.changed |= self.cache.len() != before;
        let fresh = |p: &PeerInfo| {
            p.record.index_gen != 0
                && self
                    .cache
                    .get(&p.record.id)
                    .is_some_and(|c| c.generation == p.record.index_gen)
        };
        let stale: Vec<&PeerInfo> = peers.iter().filter(|p| !fresh(p)).collect();
        let now = Instant::now();
        self.failed_at
            .retain(|_, t| now.duration_since(*t) < RETRY_FAILED);
        let (recent, to_ask): (Vec<&PeerInfo>, Vec<&PeerInfo>) = stale
            .into_iter()
            .partition(|p| self.failed_at.contains_key(&dial_key(&p.record)));
        let addrs = ask_order(&to_ask, &self.cache);
        let used: u64 = self
            .cache
            .values()
            .map(|c| cache::list_bytes(&c.files))
            .sum();
        let budget = Budget::new(self.opts.budget, used);
        let results = self.fetch_all(&addrs, &budget);
        let mut by_addr: HashMap<String, Result<FileList, PeerListError>> =
            addrs.into_iter().zip(results).collect();
        let mut uses: HashMap<String, usize> = HashMap::new();
        for p in &to_ask {
            *uses.entry(dial_key(&p.record)).or_default() += 1;
        }

        let mut refresh = Refresh::default();
        let mut failed_ids = HashSet::new();
        let mut reasons: BTreeMap<FailureKind, usize> = BTreeMap::new();
        let mut examples: Vec<String> = Vec::new();
        for peer in &to_ask {
            let r = &peer.record;
            refresh.asked.push(r.id.clone());
            let key = dial_key(r);
            let addr = key.as_str();
            let last_use = uses.get_mut(addr).is_none_or(|n| {
                *n -= 1;
                *n == 0
            });
            // The list moves into the cache at its address's last use (no copy
            // of a big list unless several records share the address).
            let result = match by_addr.get(addr) {
                Some(Ok(_)) if last_use => match by_addr.remove(addr) {
                    Some(Ok(list)) => Ok(list),
                    _ => Err((FailureKind::Other, "bug: list taken twice".to_string())),
                },
                Some(Ok(list)) => Ok(list.clone()),
                Some(Err(e)) => Err((e.kind(), e.to_string())),
                None => Err((FailureKind::Other, "bug: address not asked".to_string())),
            };
            match result {
                Ok(list) => {
                    self.changed = true;
                    self.cache.insert(
                        r.id.clone(),
                        CachedList {
                            generation: list.generation,
                            addr: key.clone(),
                            files: list.files,
                        },
                    );
                }
                Err((kind, e)) => {
                    log::debug!("peer {} ({key}) left out of the catalog: {e}", r.id);
                    *reasons.entry(kind).or_default() += 1;
                    if examples.len() < MAX_EXAMPLES {
                        // The error may quote what the peer sent.
                        let e = crate::text::escape(&e);
                        examples.push(format!("{} ({key}): {e}", r.id));
                    }
                    self.failed_at.insert(key.clone(), now);
                    refresh
                        .failed
                        .push((Holder::with_addrs(&r.id, r.dial_addrs()), e));
                    failed_ids.insert(r.id.clone());
                }
            }
        }
        drop(by_addr);
        for peer in &recent {
            let r = &peer.record;
            refresh.failed.push((
                Holder::with_addrs(&r.id, r.dial_addrs()),
                "failed moments ago; not asked again yet".into(),
            ));
            failed_ids.insert(r.id.clone());
        }
        if let Some((total, why)) = failure_summary(&reasons, &examples) {
            log::warn!(
                "{total} of {} peer(s) left out of the catalog {why}",
                peers.len()
            );
        }
        (refresh, failed_ids)
    }

    /// Asks each address in `addrs`, at most `fan_out` at once, until the
    /// deadline; addresses not asked by then get [`PeerListError::NotAsked`].
    fn fetch_all(&self, addrs: &[String], budget: &Budget) -> Vec<Result<FileList, PeerListError>> {
        let timeouts = Timeouts {
            connect: self.opts.connect_timeout,
            io: self.opts.io_timeout,
        };
        let deadline = Instant::now() + self.opts.deadline;
        crate::fanout::map(addrs, self.opts.fan_out.max(1), "pbs-catalog", |key| {
            if Instant::now() >= deadline {
                return Err(PeerListError::NotAsked);
            }
            let dial: Vec<String> = key.split(',').map(str::to_string).collect();
            peer_list::fetch_budgeted(&dial, timeouts, deadline, budget)
        })
    }
}

/// What a peer is dialled at, as one string: its dial addresses joined
/// by `,` (no address has one: see `discovery::check`). Peers are asked,
/// cached and rested by this, never by the id they claim.
/// The one warning line's tail for peers that failed: `(n kind, ...):
/// example; example; and k more`, and their number; `None` if none failed.
fn failure_summary(
    counts: &BTreeMap<FailureKind, usize>,
    examples: &[String],
) -> Option<(usize, String)> {
    let total: usize = counts.values().sum();
    if total == 0 {
        return None;
    }
    let detail: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let more = total.saturating_sub(examples.len());
    let more = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    Some((
        total,
        format!("({}): {}{more}", detail.join(", "), examples.join("; ")),
    ))
}

/// Rotates `holders` by a random amount: a download connects to at most 8
/// holders, and if every download took the same first ones, those hosts'
/// uplinks would carry the swarm while the others idle.
fn rotate_randomly<T>(holders: &mut [T]) {
    if !holders.is_empty() {
        let n = holders.len() as u64;
        holders.rotate_left((crate::discovery::random_u64() % n) as usize);
    }
}

fn dial_key(r: &crate::discovery::PeerRecord) -> String {
    r.dial_addrs().join(",")
}

/// The distinct dial keys of `peers`, in the order to ask them: those
/// with a cached list (they answered before) first, then the others one
/// host at a time (round robin over the host of the first address, in
/// listing order within a host).
fn ask_order(peers: &[&PeerInfo], cache: &ListCache) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut known = Vec::new();
    let mut hosts: Vec<(String, VecDeque<String>)> = Vec::new();
    for p in peers {
        let key = dial_key(&p.record);
        if !seen.insert(key.clone()) {
            continue;
        }
        if cache.contains_key(&p.record.id) {
            known.push(key);
            continue;
        }
        let first = key.split(',').next().unwrap_or("");
        let host = first.rsplit_once(':').map_or(first, |(h, _)| h).to_string();
        match hosts.iter_mut().find(|(h, _)| *h == host) {
            Some((_, q)) => q.push_back(key),
            None => hosts.push((host, VecDeque::from([key]))),
        }
    }
    let mut order = known;
    while !hosts.is_empty() {
        hosts.retain_mut(|(_, q)| match q.pop_front() {
            Some(a) => {
                order.push(a);
                true
            }
            None => false,
        });
    }
    order
}

/// The most frequent value of a sorted slice; the smallest among equals.
fn most_common<T: PartialEq + Copy>(sorted: &[T]) -> Option<T> {
    let mut best: Option<(T, usize)> = None;
    let mut run: Option<(T, usize)> = None;
    for &v in sorted {
        run = match run {
            Some((r, n)) if r == v => Some((r, n + 1)),
            _ => Some((v, 1)),
        };
        if let Some((r, n)) = run {
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((r, n));
            }
        }
    }
    best.map(|(v, _)| v)
}

/// Merges per-peer lists by sha1. Holders that disagree on a file's size
/// all stay its holders (no claim by one holder removes another: the
/// download groups holders by piece list and tries each group); the entry
/// shows the size most holders give (the smallest on a tie).
#[cfg(test)]
pub fn merge(lists: &[(Holder, &[CatalogEntry])]) -> Vec<NetworkFile> {
    let refs: Vec<(Holder, Vec<&CatalogEntry>)> = lists
        .iter()
        .map(|(h, files)| (h.clone(), files.iter().collect()))
        .collect();
    merge_refs(&refs)
}

fn merge_refs(lists: &[(Holder, Vec<&CatalogEntry>)]) -> Vec<NetworkFile> {
    // Every claim (sha1, list, entry) in one flat vector sorted by sha1 then
    // list: a file's claims are then one run, one claim per holder (its
    // first). No map and no per-file allocation but the output's own
    // (a BTreeMap of per-file vectors made merging 100,000 files ~200 ms).
    let mut claims: Vec<(Sha1Digest, usize, usize)> = lists
        .iter()
        .enumerate()
        .flat_map(|(k, (_, files))| (0..files.len()).map(move |i| (files[i].sha1, k, i)))
        .collect();
    claims.sort_unstable();
    claims.dedup_by(|b, a| a.0 == b.0 && a.1 == b.1);
    let mut out: Vec<NetworkFile> = Vec::with_capacity(claims.len());
    for run in claims.chunk_by(|a, b| a.0 == b.0) {
        let sha1 = run[0].0;
        let entries = || run.iter().map(|&(_, k, i)| lists[k].1[i]);
        let mut holders: Vec<Holder> = run.iter().map(|&(_, k, _)| lists[k].0.clone()).collect();
        let (name, names, size) = if let [(_, k, i)] = run {
            let e = lists[*k].1[*i];
            (e.name.clone(), vec![e.name.clone()], e.size)
        } else {
            let mut names: Vec<&str> = entries().map(|e| e.name.as_str()).collect();
            names.sort_unstable();
            let name = most_common(&names).unwrap_or_default().to_string();
            names.dedup();
            let mut sizes: Vec<u64> = entries().map(|e| e.size).collect();
            sizes.sort_unstable();
            let size = most_common(&sizes).unwrap_or(0);
            if sizes.first() != sizes.last() {
                sizes.dedup();
                log::debug!("holders of {sha1} disagree on its size: {sizes:?}");
            }
            holders.sort();
            let names = names.into_iter().map(str::to_string).collect();
            (name, names, size)
        };
        out.push(NetworkFile {
            sha1,
            size,
            name,
            names,
            peers: holders.len(),
            holders,
        });
    }
    // Sorted through a vector of keys: moving the files themselves, and
    // reaching each name through them, cost more than the comparisons.
    // The first 8 bytes of the name lead the key (big-endian, zero-padded:
    // the same order), so most comparisons do not read the name itself.
    let prefix = |name: &str| {
        let mut b = [0u8; 8];
        let n = name.len().min(8);
        b[..n].copy_from_slice(&name.as_bytes()[..n]);
        u64::from_be_bytes(b)
    };
    let mut order: Vec<(u64, &str, Sha1Digest, usize)> = out
        .iter()
        .enumerate()
        .map(|(i, f)| (prefix(&f.name), f.name.as_str(), f.sha1, i))
        .collect();
    order.sort_unstable();
    let order: Vec<usize> = order.into_iter().map(|(_, _, _, i)| i).collect();
    let mut slots: Vec<Option<NetworkFile>> = out.into_iter().map(Some).collect();
    order.iter().filter_map(|&i| slots[i].take()).collect()
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
    fn an_unchanged_cache_is_not_written_again_and_a_corrupt_one_is() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CACHE_FILE);
        let mut peers = ListCache::new();
        peers.insert(
            "p1".into(),
            CachedList {
                generation: 3,
                addr: "10.0.0.1:7070".into(),
                files: vec![entry(b"one", "x")],
            },
        );
        cache::save(&path, &peers, 1 << 20).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        let catalog = Catalog::load(CatalogOptions::default(), &path);
        catalog.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "rewritten");
        assert_eq!(cache::load(&path, 1 << 20), peers);

        std::fs::write(&path, b"piratebay-sync catalog cache v2\n\x01").unwrap();
        let catalog = Catalog::load(CatalogOptions::default(), &path);
        catalog.save(&path).unwrap();
        let written = std::fs::read(&path).unwrap();
        assert!(
            written.starts_with(b"piratebay-sync catalog cache v2\n"),
            "the corrupt cache replaced"
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
