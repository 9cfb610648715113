//! [`ProbedHolders`]: the holders of one file, found by asking every
//! registered peer about that file alone, without any catalog.
//!
//! One `HEAD /v1/files/<sha1>` per peer address, each address asked once
//! however many records name it. The answer says what the peer has: `200`
//! with `ETag: "<sha1>"` the whole file (its size in `Content-Length`, its
//! name in `Content-Disposition`), `416` some pieces of it (a partial
//! holder, still downloading it; then `GET /v1/files/<sha1>/have` on the
//! same connection must show at least one piece), `404` nothing (with
//! `X-Indexing`: nothing *yet*, its index is still being built). A server
//! that answers anything else (a `200` without the file's tag, say) is not
//! a holder.
//!
//! Patience, not failure: a peer that could not be asked is not a peer
//! that lacks the file. A seed whose link is full drops handshakes (so
//! does a busy switch), and a peer started a moment ago may still be
//! indexing. Such a peer is asked again after a randomized backoff (so 47
//! hosts started together do not retry in step: 200 ms doubling to 2 s,
//! each wait drawn from half to one and a half of it) until some holder is
//! found, or until [`ProbeOptions::patience`] passes without progress (an
//! answer from a peer not heard before, or an indexing peer that indexed
//! more files), and at most [`ProbeOptions::max_wait`] in all.
//! [`Lookup::not_found`] then tells "no peer holds it" (every peer
//! answered) from "no reachable peer holds it (N could not be asked:
//! ...)".
//!
//! Spread over hosts, most promising first: at most
//! [`ProbeOptions::per_host`] requests in flight to one host (IP), the next
//! request going to the host with the fewest failures so far and, among
//! those, the fewest asked (round robin). 100 silent records on one IP
//! whose ids sort first therefore cost that host's slots and at most one
//! read timeout of the lookup, never the other hosts' turn: the order of
//! etcd keys, which an attacker chooses through its id, decides nothing.
//! Once a holder is found, the lookup ends as soon as every host that has
//! not failed has answered (or at [`ProbeOptions::deadline`]).
//!
//! Nothing a peer says is trusted here: the size and name shown are the
//! ones the most distinct addresses give, and the download groups the
//! holders by the piece list each one sends, the group vouched for by the
//! most distinct addresses first, so a lying peer (another size, other
//! pieces) is outvoted and never trusted with a byte that does not verify.
//!
//! Finding holders without asking everyone ([`find`]): a lookup reads the
//! swarm's tracker (`discovery::tracker`: the peers holding pieces of the
//! file, and seeds that uploaded some or answered a lookup's `HEAD`
//! lately; a sample of at most 32, at most 2 per host), then asks, in
//! waves with no second attempt, the tracker's peers and [`WAVE`]
//! registered peers at a time in a random order (each host's first
//! address before any host's second, so a thousand sybil ids on one host
//! are one host of a wave), reading the tracker again between waves,
//! and stops after the first wave in which a peer answers that it holds
//! the whole file. That peer then announces itself in the tracker, so
//! the lookups after it find it in their first wave: a few dozen
//! requests whatever the number of peers. Only if no registered peer
//! holds the whole file is every one asked, and those that could not say
//! asked again with patience (so "no peer holds" and "could not be asked"
//! keep their meaning). A lookup that stops at the first whole copy may
//! stop at a liar's (anyone can answer `200`, and announce itself): the
//! peers it did not ask are kept, and when every holder the download
//! knew fails (a false piece list, refused or missed pieces) or none
//! gives a usable list, [`HolderSource::more_holders`] goes on with the
//! next waves. A running download's re-queries read the tracker only.
//! Batches (`Downloader::download_many`) keep the catalog: one refresh
//! answers for every file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::peer_list::FailureKind;
use crate::client::{self, ClientError, Timeouts};
use crate::digest::Sha1Digest;
use crate::discovery::tracker::Announcement;
use crate::discovery::{self, tracker, DiscoveryError, PeerInfo};
use crate::etcd::Client;
use crate::holders::{Holder, HolderSource, HoldersError};
use crate::http::response::disposition_filename;
use crate::policy::subset::{self, Candidate};
use crate::protocol::{Bitfield, FILES_PATH, HAVE_SEGMENT};

/// How peers are asked about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Longest wait for a TCP connection to a peer (one attempt).
    pub connect_timeout: Duration,
    /// Longest a single read from a peer may block.
    pub io_timeout: Duration,
    /// Once a holder is known, the longest the lookup waits for the other
    /// peers' answers.
    pub deadline: Duration,
    /// While no holder is known, how long the lookup keeps asking again
    /// the peers that could not be asked (or are still indexing) without
    /// progress before it gives up. Zero: no second attempt.
    pub patience: Duration,
    /// The longest a lookup without a holder lasts in all, progress or
    /// not (a peer indexing 100,000 files makes progress for minutes).
    pub max_wait: Duration,
    /// Peers asked at once.
    pub fan_out: usize,
    /// Requests in flight to one host (IP) at most.
    pub per_host: usize,
}

impl Default for ProbeOptions {
    /// 500 ms connect, 1 s read, 3 s for all peers once a holder is known,
    /// 10 s of patience without progress (60 s in all), 32 at once, 4 per
    /// host.
    fn default() -> Self {
        ProbeOptions {
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(3),
            patience: Duration::from_secs(10),
            max_wait: Duration::from_secs(60),
            fan_out: 32,
            per_host: 4,
        }
    }
}

/// What the peers said about one file.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// The size the most distinct addresses give (the smallest on a tie);
    /// `None` if no peer holds the whole file.
    pub size: Option<u64>,
    /// The most common name among the holders of that size (untrusted:
    /// sanitize before use).
    pub name: Option<String>,
    /// Peers that hold the whole file, those of the majority size first.
    pub complete: Vec<Holder>,
    /// Peers that hold some of its pieces (downloading it), in a random
    /// rotation.
    pub partial: Vec<Holder>,
    /// Peers that could not be asked (or were still indexing at the end),
    /// with the reason.
    pub failed: Vec<(Holder, String)>,
}

impl Lookup {
    /// Every holder: the complete ones, then the partial ones.
    pub fn holders(&self) -> Vec<Holder> {
        self.complete.iter().chain(&self.partial).cloned().collect()
    }

    /// Why no holder was found, if none was: every peer answered that it
    /// lacks the file, or some could not be asked.
    pub fn not_found(&self, sha1: &Sha1Digest) -> Option<NotFound> {
        if !self.complete.is_empty() || !self.partial.is_empty() {
            return None;
        }
        if self.failed.is_empty() {
            return Some(NotFound::NoPeerHolds { sha1: *sha1 });
        }
        let mut why: Vec<String> = self
            .failed
            .iter()
            .take(MAX_EXAMPLES)
            .map(|(h, e)| format!("{h}: {e}"))
            .collect();
        if self.failed.len() > MAX_EXAMPLES {
            why.push(format!("and {} more", self.failed.len() - MAX_EXAMPLES));
        }
        Some(NotFound::NoReachablePeerHolds {
            sha1: *sha1,
            unasked: self.failed.len(),
            why: why.join("; "),
        })
    }
}

/// Failed peers named in [`NotFound`] (the others are counted).
const MAX_EXAMPLES: usize = 3;

/// Why the one-file lookup found no holder.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NotFound {
    /// Every registered peer answered, and none holds the file.
    #[error("no peer holds {sha1}")]
    NoPeerHolds {
        /// The file.
        sha1: Sha1Digest,
    },
    /// Some peers could not be asked (unreachable, silent, busy or still
    /// indexing until the lookup's patience ran out); those that answered
    /// do not hold the file.
    #[error("no reachable peer holds {sha1} ({unasked} peer(s) could not be asked: {why})")]
    NoReachablePeerHolds {
        /// The file.
        sha1: Sha1Digest,
        /// Peers that could not be asked.
        unasked: usize,
        /// A few of them with the reason (escaped).
        why: String,
    },
}

/// The holders of one file, by asking the peers registered under a
/// namespace about it (see the module doc). A lookup is handed to the
/// next [`HolderSource::holders`] call for that file, so a `get` asks the
/// network once to start; a running download's re-queries (every
/// 50 ms for its first 2 s, when partial holders get their first pieces,
/// then every 500 ms; none once it knows 128 holders) each read a random sample of the swarm's tracker
/// (`discovery::tracker`), so partial holders join within one, and a
/// re-query costs a few etcd reads, not a request to every peer.
pub struct ProbedHolders {
    client: Client,
    namespace: String,
    opts: ProbeOptions,
    /// The last file looked up, with its holders until a `holders` call
    /// takes them.
    last: Mutex<Option<(Sha1Digest, Option<Vec<Holder>>)>>,
    /// This download's secret key for its subset of holders.
    key: u64,
    /// The registered peers the last lookup did not ask (see
    /// [`HolderSource::more_holders`]).
    waves: Mutex<Option<(Sha1Digest, Waves)>>,
    /// The last tracker sample read the whole swarm in one range.
    tracker_small: AtomicBool,
}

impl ProbedHolders {
    /// Holders among the peers registered under `namespace`.
    pub fn new(client: Client, namespace: impl Into<String>, opts: ProbeOptions) -> Self {
        ProbedHolders {
            client,
            namespace: namespace.into(),
            opts,
            last: Mutex::new(None),
            key: crate::discovery::random_u64(),
            waves: Mutex::new(None),
            tracker_small: AtomicBool::new(true),
        }
    }

    /// The holders of `sha1`, with patience (see the module doc): the
    /// tracker's sample and a first wave of registered peers drawn at
    /// random, then further waves (the tracker read again before each)
    /// until a peer answers that it holds the whole file, every
    /// registered peer only if none does. The peers not asked yet are
    /// kept for [`HolderSource::more_holders`].
    pub fn lookup(&self, sha1: &Sha1Digest) -> Result<Lookup, DiscoveryError> {
        let started = Instant::now();
        let (client, ns) = (&self.client, self.namespace.as_str());
        let mut reads = 0usize;
        let mut tracker = || {
            reads += 1;
            self.sample(sha1).unwrap_or_else(|e| {
                // A hint only: the registered peers are asked anyway.
                log::debug!("cannot read the tracker for {sha1}: {e}");
                Vec::new()
            })
        };
        let mut waves = Waves::new(discovery::random_u64());
        let found = find(
            sha1,
            &self.opts,
            &mut waves,
            &mut tracker,
            &mut || discovery::sample_peers(client, ns, PEER_WINDOW),
            &mut || discovery::list_peers(client, ns),
        )?;
        log::debug!(
            "{sha1}: {} whole and {} partial holder(s) after {} peer(s) asked ({} tracker read(s)), in {:.2} s",
            found.complete.len(),
            found.partial.len(),
            waves.asked.len(),
            reads,
            started.elapsed().as_secs_f64()
        );
        *self.last.lock() = Some((*sha1, Some(found.holders())));
        *self.waves.lock() = Some((*sha1, waves));
        Ok(found)
    }

    /// A sample of the tracker's announcements of `sha1` (one etcd range
    /// while the swarm fits in one, see `tracker::sample`).
    fn sample(&self, sha1: &Sha1Digest) -> Result<Vec<Announcement>, DiscoveryError> {
        let whole_first = self.tracker_small.load(Ordering::Relaxed);
        let got = tracker::sample(
            &self.client,
            &self.namespace,
            sha1,
            TRACKER_SAMPLE,
            whole_first,
        )?;
        self.tracker_small.store(got.small, Ordering::Relaxed);
        Ok(got.announced)
    }

    /// The next waves of the lookup of `sha1` (see [`ProbedHolders::lookup`]),
    /// until one finds a holder (whole or partial) or every registered
    /// peer was asked: the holders found.
    fn further(&self, sha1: &Sha1Digest) -> Result<Vec<Holder>, DiscoveryError> {
        let mut state = self.waves.lock();
        let waves = match state.as_mut() {
            Some((s, w)) if s == sha1 => w,
            _ => return Ok(Vec::new()),
        };
        let (client, ns) = (&self.client, self.namespace.as_str());
        let quick = ProbeOptions {
            patience: Duration::ZERO,
            ..self.opts
        };
        loop {
            let wave = waves.next_wave(&mut || discovery::list_peers(client, ns))?;
            if wave.is_empty() {
                return Ok(Vec::new());
            }
            let refs: Vec<&Named> = wave.iter().collect();
            let answers = ask_all(sha1, &refs, &quick, false);
            let found = count(sha1, &wave, &answers);
            if !found.complete.is_empty() || !found.partial.is_empty() {
                log::info!(
                    "{sha1}: looking further, {} more holder(s) found",
                    found.complete.len() + found.partial.len()
                );
                return Ok(found.holders());
            }
        }
    }
}

/// Peer records read for the first wave's random hosts (one etcd range:
/// the first wave's etcd read does not grow with the peers); the whole
/// list is read only when a lookup goes past them.
const PEER_WINDOW: usize = 64;
/// Registered peers asked per wave (one address each, drawn at random,
/// each host's first address before any host's second), beside the
/// tracker's sample (in the first wave, and whoever it names anew before
/// each next one).
pub const WAVE: usize = 8;
/// Times a peer the tracker names is asked again by the waves after it
/// could not say (once per wave).
const ANNOUNCED_AGAIN: u32 = 3;

/// A peer to ask: its id and where to dial it.
#[derive(Clone)]
struct Named {
    id: String,
    addrs: Vec<String>,
}

impl Named {
    fn key(&self) -> String {
        self.addrs.join(",")
    }
}

/// The registered peers of one lookup not asked yet, in the order the
/// waves take them, and the addresses asked.
struct Waves {
    /// Not asked yet, next first.
    pool: Vec<Named>,
    /// Dial keys asked (each address is asked once by the waves).
    asked: BTreeSet<String>,
    /// Addresses asked per host.
    hosts: HashMap<String, usize>,
    /// The whole list of registered peers was read (else the pool is a
    /// random window of it).
    all_read: bool,
    /// Draws the order.
    seed: u64,
}

impl Waves {
    fn new(seed: u64) -> Self {
        Waves {
            pool: Vec::new(),
            asked: BTreeSet::new(),
            hosts: HashMap::new(),
            all_read: false,
            seed,
        }
    }

    /// Puts `peers` (those not asked yet) in the pool, in wave order: the
    /// hosts asked least first.
    fn fill(&mut self, peers: Vec<Named>) {
        let mut fresh: Vec<Named> = Vec::new();
        let mut keys = BTreeSet::new();
        for p in peers {
            let key = p.key();
            if !self.asked.contains(&key) && keys.insert(key) {
                fresh.push(p);
            }
        }
        self.pool = wave_order(fresh, &self.hosts, self.seed);
    }

    /// The next wave: up to [`WAVE`] peers of the pool, each host's first
    /// before any host's second; the whole list is read (once) before a
    /// host is asked a second time, so a window of one host's records
    /// (a thousand sybil ids) never holds the waves on that host. Empty
    /// once every registered peer was asked. Marked asked.
    fn next_wave(
        &mut self,
        all: &mut dyn FnMut() -> Result<Vec<PeerInfo>, DiscoveryError>,
    ) -> Result<Vec<Named>, DiscoveryError> {
        let mut wave: Vec<Named> = Vec::new();
        while wave.len() < WAVE {
            self.pool.retain(|p| !self.asked.contains(&p.key()));
            let again = self
                .pool
                .first()
                .is_none_or(|p| self.hosts.contains_key(&host_of(&p.addrs)));
            if again && !self.all_read {
                self.all_read = true;
                let everyone = named(all()?);
                self.fill(everyone);
                continue;
            }
            if self.pool.is_empty() {
                break;
            }
            let p = self.pool.remove(0);
            self.mark(std::slice::from_ref(&p));
            wave.push(p);
        }
        Ok(wave)
    }

    fn mark(&mut self, asked: &[Named]) {
        for p in asked {
            if self.asked.insert(p.key()) {
                *self.hosts.entry(host_of(&p.addrs)).or_default() += 1;
            }
        }
    }
}

/// Peer records as peers to ask.
fn named(peers: Vec<PeerInfo>) -> Vec<Named> {
    peers
        .into_iter()
        .map(|p| Named {
            addrs: p.record.dial_addrs(),
            id: p.record.id,
        })
        .collect()
}

/// Announcements as peers to ask.
fn named_announced(announced: &[Announcement]) -> Vec<Named> {
    announced
        .iter()
        .map(|a| Named {
            id: a.id.clone(),
            addrs: a.addrs.clone(),
        })
        .collect()
}

/// The holders of `sha1`: the tracker's sample (`tracker()`) and the
/// first wave of registered peers (`window()`: a random sample of them;
/// `all()`: every one, read when the sample is used up), then a wave at
/// a time with the tracker read again before each, until a peer answers
/// that it holds the whole file; every registered peer, and those that
/// could not say asked again with patience, only if none does (see the
/// module doc). `waves` keeps the peers not asked.
fn find(
    sha1: &Sha1Digest,
    opts: &ProbeOptions,
    waves: &mut Waves,
    tracker: &mut (dyn FnMut() -> Vec<Announcement> + Send),
    window: &mut dyn FnMut() -> Result<(Vec<PeerInfo>, bool), DiscoveryError>,
    all: &mut dyn FnMut() -> Result<Vec<PeerInfo>, DiscoveryError>,
) -> Result<Lookup, DiscoveryError> {
    let quick = ProbeOptions {
        patience: Duration::ZERO,
        ..*opts
    };
    // The tracker and the registered peers at once: two etcd ranges
    // (50-250 ms each under the burst of a 47-host flash crowd) in
    // parallel, not in series.
    let started = Instant::now();
    let (read, first) = std::thread::scope(|s| {
        let first = std::thread::Builder::new()
            .name("pbs-tracker".into())
            .spawn_scoped(s, &mut *tracker);
        let read = window();
        // A hint only (as a tracker that cannot be read): the
        // registered peers are asked anyway.
        let first = first.ok().and_then(|t| t.join().ok()).unwrap_or_default();
        (read, first)
    });
    let (sample, everyone) = read?;
    log::debug!(
        "{sha1}: {} peer record(s) and {} announcement(s) read in {:.3} s",
        sample.len(),
        first.len(),
        started.elapsed().as_secs_f64()
    );
    waves.all_read = everyone;
    waves.fill(named(sample));
    // Everyone asked, in order, and what they said.
    let mut asked: Vec<Named> = Vec::new();
    let mut answers = Answers::new();
    let mut announced = named_announced(&first);
    // Peers the tracker names that could not say when asked, and how
    // often they were asked again.
    let mut again: HashMap<String, u32> = HashMap::new();
    loop {
        let mut wave: Vec<Named> = Vec::new();
        for a in announced.drain(..) {
            let key = a.key();
            // A peer the tracker names (a seed announced by another
            // lookup's `HEAD`) that could not say (its full uplink dropped
            // the handshake) is asked again, a few times: else the waves
            // skipped the one seed and the lookup found it only in the
            // patience after every wave (4-5 s in the 47-host lab).
            let failed = answers
                .get(&key)
                .is_some_and(|r| matches!(r, Err(e) if e.transient()));
            let retry = failed && {
                let n = again.entry(key.clone()).or_default();
                *n += 1;
                *n <= ANNOUNCED_AGAIN
            };
            if (retry || !waves.asked.contains(&key)) && !wave.iter().any(|w| w.key() == key) {
                wave.push(a);
            }
        }
        waves.mark(&wave);
        wave.extend(waves.next_wave(all)?);
        if wave.is_empty() {
            break;
        }
        let refs: Vec<&Named> = wave.iter().collect();
        let asking = Instant::now();
        answers.extend(ask_all(sha1, &refs, &quick, false));
        log::debug!(
            "{sha1}: a wave of {} asked in {:.3} s",
            refs.len(),
            asking.elapsed().as_secs_f64()
        );
        asked.extend(wave);
        if answers
            .values()
            .any(|a| matches!(a, Ok(Answer::Complete { .. })))
        {
            log::debug!(
                "{sha1}: a whole copy among the {} peer(s) asked; {} registered peer(s) not asked",
                answers.len(),
                waves.pool.len()
            );
            return Ok(count(sha1, &asked, &answers));
        }
        let reading = Instant::now();
        announced = named_announced(&tracker());
        log::debug!(
            "{sha1}: the tracker read again in {:.3} s",
            reading.elapsed().as_secs_f64()
        );
    }
    // Every registered peer was asked once and none holds the whole file:
    // those that could not say are asked again, with patience.
    let known: Answers = answers
        .into_iter()
        .filter(|(_, a)| match a {
            Ok(_) => true,
            Err(e) => !e.transient(),
        })
        .collect();
    Ok(ask_and_count(sha1, &asked, known, opts))
}

/// `peers` in the order the waves take them: each host's first peer (the
/// hosts in an order drawn by `seed`) before any host's second, and so
/// on (counting the addresses of each host `asked` already), the peers of
/// one host in an order drawn by `seed`: a thousand ids on one host are
/// one host of every wave until every host was asked.
fn wave_order(peers: Vec<Named>, asked: &HashMap<String, usize>, seed: u64) -> Vec<Named> {
    let rank = |x: &[u8]| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&seed, &mut h);
        std::hash::Hash::hash(x, &mut h);
        std::hash::Hasher::finish(&h)
    };
    let mut by_host: BTreeMap<String, Vec<Named>> = BTreeMap::new();
    for p in peers {
        by_host.entry(host_of(&p.addrs)).or_default().push(p);
    }
    let mut keyed: Vec<((usize, u64), Named)> = Vec::new();
    for (host, mut ps) in by_host {
        let h = rank(host.as_bytes());
        let before = asked.get(&host).copied().unwrap_or(0);
        ps.sort_by_cached_key(|p| rank(p.key().as_bytes()));
        keyed.extend(
            ps.into_iter()
                .enumerate()
                .map(|(i, p)| ((before + i, h), p)),
        );
    }
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, p)| p).collect()
}

/// Holders a re-query hands the download at most (its subset of the
/// tracker's sample, one per host).
const SUBSET: usize = 10;
/// Announcements read from the tracker per lookup or re-query at most.
const TRACKER_SAMPLE: usize = 32;

impl HolderSource for ProbedHolders {
    /// The first call takes the lookup made to start (or makes one); later
    /// ones (a running download's re-queries) read a random
    /// sample of the tracker (the peers that announced the file, at most
    /// 32: a few etcd reads whatever the number of peers) and hand the
    /// download its own subset of it: at most 10, one per host, ranked by
    /// this download's secret key (`policy::subset`).
    fn holders(&self, sha1: &Sha1Digest) -> Result<Vec<Holder>, HoldersError> {
        {
            let mut last = self.last.lock();
            match last.as_mut() {
                Some((s, taken)) if s == sha1 => {
                    if let Some(holders) = taken.take() {
                        return Ok(holders);
                    }
                }
                _ => {
                    drop(last);
                    let found = self.lookup(sha1).map_err(HoldersError::new)?;
                    *self.last.lock() = Some((*sha1, None));
                    return Ok(found.holders());
                }
            }
        }
        let announced = self.sample(sha1).map_err(HoldersError::new)?;
        // This download's own subset of them (`policy::subset`): ranked by
        // its secret key, one per host, so no holder is everyone's.
        let hosts: Vec<Option<std::net::IpAddr>> = announced
            .iter()
            .map(|a| {
                let first = a.addrs.first()?;
                first.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())
            })
            .collect();
        let candidates: Vec<(usize, Candidate<'_>)> = announced
            .iter()
            .zip(&hosts)
            .enumerate()
            .filter_map(|(i, (a, h))| {
                Some((
                    i,
                    Candidate {
                        host: (*h)?,
                        id: &a.id,
                    },
                ))
            })
            .collect();
        let only: Vec<Candidate<'_>> = candidates.iter().map(|(_, c)| *c).collect();
        let chosen: Vec<usize> = subset::choose(self.key, &only, SUBSET, 1)
            .into_iter()
            .map(|k| candidates[k].0)
            .collect();
        Ok(chosen
            .into_iter()
            .map(|i| {
                let a = &announced[i];
                Holder::with_addrs(a.id.clone(), a.addrs.clone())
            })
            .collect())
    }

    /// Every holder the download had failed: the tracker's subset as
    /// [`HolderSource::holders`] gives it, and the lookup goes on (a wave
    /// of registered peers at a time, until one holds the file or every
    /// one was asked). A lookup ends at the first whole copy, which may
    /// be a liar's (anyone can answer `200` and announce itself); its
    /// false list or its missed deadlines bring the download here.
    fn more_holders(&self, sha1: &Sha1Digest) -> Result<Vec<Holder>, HoldersError> {
        let mut out = self.holders(sha1)?;
        out.extend(self.further(sha1).map_err(HoldersError::new)?);
        Ok(out)
    }
}

/// Why one address could not say.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    /// The request failed (connect, timeout, bad head...).
    #[error(transparent)]
    Request(#[from] ClientError),
    /// The lookup ended before this address was asked.
    #[error("not asked: the lookup ended first")]
    NotAsked,
    /// An answer no peer gives.
    #[error("bad answer: {0}")]
    BadAnswer(&'static str),
    /// Neither holds, partial nor absent.
    #[error("refused: status {0}")]
    Status(u16),
    /// Too busy to answer (`503`) when last asked.
    #[error("busy (status 503)")]
    Busy,
    /// Its index was still being built when last asked.
    #[error("still indexing ({0} files so far)")]
    Indexing(u64),
}

impl ProbeError {
    /// The class of this failure, for the summary warning.
    fn kind(&self) -> FailureKind {
        match self {
            ProbeError::Request(ClientError::Connect { .. }) => FailureKind::Unreachable,
            ProbeError::Request(ClientError::Stalled { .. }) => FailureKind::Stalled,
            ProbeError::Request(ClientError::Deadline { .. }) => FailureKind::TooSlow,
            ProbeError::Request(_) => FailureKind::Other,
            ProbeError::NotAsked => FailureKind::NotAsked,
            ProbeError::BadAnswer(_) => FailureKind::BadList,
            ProbeError::Status(_) | ProbeError::Busy => FailureKind::Refused,
            ProbeError::Indexing(_) => FailureKind::Indexing,
        }
    }

    /// Whether asking again later may give an answer.
    fn transient(&self) -> bool {
        match self {
            ProbeError::Request(_) | ProbeError::Busy | ProbeError::Indexing(_) => true,
            ProbeError::NotAsked | ProbeError::BadAnswer(_) | ProbeError::Status(_) => false,
        }
    }
}

/// What one address said.
enum Answer {
    Complete { size: u64, name: Option<String> },
    Partial,
    Absent,
}

/// First backoff before a peer is asked again; doubles per attempt.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// Longest backoff.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The wait before attempt `attempt + 1` (`attempt` >= 1): the doubling
/// backoff, drawn from half to one and a half of it.
fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_FIRST
        .saturating_mul(1 << attempt.saturating_sub(1).min(8))
        .min(BACKOFF_MAX);
    crate::discovery::jittered(base)
}

/// Where one address is.
enum Step {
    /// To be asked at (or after) this time.
    Waiting(Instant),
    Asking,
    Answered(Answer),
    /// Not to be asked again.
    Failed,
}

struct Target {
    addrs: Vec<String>,
    host: usize,
    step: Step,
    attempts: u32,
    last_error: Option<ProbeError>,
    /// Files indexed at its last "still indexing" answer.
    indexed: Option<u64>,
}

#[derive(Default)]
struct HostLoad {
    in_flight: usize,
    asked: usize,
    failures: usize,
}

/// The lookup's shared state (one lock, held to pick or record).
struct Sched {
    targets: Vec<Target>,
    hosts: Vec<HostLoad>,
    started: Instant,
    last_progress: Instant,
    found: bool,
}

impl Sched {
    /// Whether the lookup is over at `now`.
    fn over(&self, now: Instant, opts: &ProbeOptions) -> bool {
        let settled = |t: &Target| matches!(t.step, Step::Answered(_) | Step::Failed);
        if self.targets.iter().all(settled) {
            return true;
        }
        if self.found {
            return now >= self.started + opts.deadline
                || self
                    .targets
                    .iter()
                    .filter(|t| self.hosts[t.host].failures == 0)
                    .all(settled);
        }
        now >= self.give_up_at(opts)
    }

    /// When a lookup without a holder gives up: `patience` after the last
    /// progress, not before the deadline, and not after `max_wait`.
    fn give_up_at(&self, opts: &ProbeOptions) -> Instant {
        (self.last_progress + opts.patience)
            .max(self.started + opts.deadline)
            .min(self.started + opts.max_wait.max(opts.deadline))
    }

    /// The next address to ask now, if any: a waiting one whose time has
    /// come on a host below its cap, the host with the fewest failures
    /// first, then the fewest asked, then listing order.
    fn pick(&self, now: Instant, opts: &ProbeOptions) -> Option<usize> {
        let per_host = opts.per_host.max(1);
        self.targets
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t.step, Step::Waiting(at) if at <= now))
            .filter(|(_, t)| self.hosts[t.host].in_flight < per_host)
            .min_by_key(|(i, t)| {
                let h = &self.hosts[t.host];
                (h.failures, h.asked, *i)
            })
            .map(|(i, _)| i)
    }

    /// When a worker with nothing to ask should look again: the next
    /// retry on a host below its cap (a host at its cap is taken on by
    /// the worker that frees it), or the end.
    fn wake_at(&self, opts: &ProbeOptions) -> Instant {
        let per_host = opts.per_host.max(1);
        let retry = self
            .targets
            .iter()
            .filter(|t| self.hosts[t.host].in_flight < per_host)
            .filter_map(|t| match t.step {
                Step::Waiting(at) => Some(at),
                _ => None,
            })
            .min();
        let end = if self.found {
            self.started + opts.deadline
        } else {
            self.give_up_at(opts)
        };
        retry.map_or(end, |r| r.min(end))
    }

    fn record(&mut self, i: usize, result: Result<Answer, ProbeError>, opts: &ProbeOptions) {
        let now = Instant::now();
        let host = self.targets[i].host;
        self.hosts[host].in_flight -= 1;
        let t = &mut self.targets[i];
        match result {
            Ok(answer) => {
                if !matches!(answer, Answer::Absent) {
                    self.found = true;
                }
                t.step = Step::Answered(answer);
                self.last_progress = now;
            }
            Err(e) => {
                if let ProbeError::Indexing(files) = e {
                    if t.indexed.is_some_and(|n| n != files) {
                        // It is getting on: worth waiting for.
                        self.last_progress = now;
                    }
                    t.indexed = Some(files);
                } else {
                    self.hosts[host].failures += 1;
                }
                t.step = if e.transient() && !self.found && !opts.patience.is_zero() {
                    Step::Waiting(now + backoff(t.attempts))
                } else {
                    Step::Failed
                };
                t.last_error = Some(e);
            }
        }
        if self.found {
            // With a holder known, nobody is asked a second time.
            for t in &mut self.targets {
                if t.attempts > 0 && matches!(t.step, Step::Waiting(_)) {
                    t.step = Step::Failed;
                }
            }
        }
    }
}

/// The host part of a dial key's first address (`ip` of `ip:port`).
fn host_of(addrs: &[String]) -> String {
    crate::policy::host::host_of_addrs(addrs)
}

/// Answers by dial key (addresses joined by `,`).
type Answers = HashMap<String, Result<Answer, ProbeError>>;

/// Asks the peers of `named` not answered in `known` (each address once),
/// and tells what all of them hold.
fn ask_and_count(
    sha1: &Sha1Digest,
    named: &[Named],
    mut known: Answers,
    opts: &ProbeOptions,
) -> Lookup {
    let mut seen = BTreeSet::new();
    let rest: Vec<&Named> = named
        .iter()
        .filter(|n| !known.contains_key(&n.key()) && seen.insert(n.key()))
        .collect();
    let found = known
        .values()
        .any(|a| matches!(a, Ok(Answer::Complete { .. } | Answer::Partial)));
    known.extend(ask_all(sha1, &rest, opts, found));
    count(sha1, named, &known)
}

/// Asks every distinct address of `named` about `sha1` (see the module
/// doc): the answer or the last error of each. `found`: a holder is known
/// already (nobody is asked twice, and the lookup ends at the deadline or
/// when every host that has not failed has answered).
fn ask_all(sha1: &Sha1Digest, named: &[&Named], opts: &ProbeOptions, found: bool) -> Answers {
    let path = format!("{FILES_PATH}/{sha1}");
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut host_ids: HashMap<String, usize> = HashMap::new();
    let started = Instant::now();
    let mut sched = Sched {
        targets: Vec::new(),
        hosts: Vec::new(),
        started,
        last_progress: started,
        found,
    };
    let mut keys: Vec<String> = Vec::new();
    for p in named {
        let addrs = p.addrs.clone();
        let key = p.key();
        if let std::collections::hash_map::Entry::Vacant(e) = index.entry(key.clone()) {
            e.insert(sched.targets.len());
            keys.push(key);
            let n = host_ids.len();
            let host = *host_ids.entry(host_of(&addrs)).or_insert(n);
            if host == sched.hosts.len() {
                sched.hosts.push(HostLoad::default());
            }
            sched.targets.push(Target {
                addrs,
                host,
                step: Step::Waiting(started),
                attempts: 0,
                last_error: None,
                indexed: None,
            });
        }
    }
    let workers = opts.fan_out.max(1).min(sched.targets.len());
    let shared = (Mutex::new(sched), Condvar::new());
    std::thread::scope(|s| {
        for n in 0..workers {
            let shared = &shared;
            let path = path.as_str();
            let spawned = std::thread::Builder::new()
                .name(format!("pbs-probe{n}"))
                .spawn_scoped(s, move || work(shared, path, opts));
            if let Err(e) = spawned {
                // The others (at least the calling thread's share) go on.
                log::warn!("cannot start a probe thread: {e}");
                if n == 0 {
                    work(shared, path, opts);
                }
                break;
            }
        }
    });
    let sched = shared.0.into_inner();
    keys.into_iter()
        .zip(sched.targets)
        .map(|(key, t)| {
            let r = match (t.step, t.last_error) {
                (Step::Answered(a), _) => Ok(a),
                (_, Some(e)) => Err(e),
                (_, None) => Err(ProbeError::NotAsked),
            };
            (key, r)
        })
        .collect()
}

/// What the peers of `named` hold, from their `answers`: sizes voted by
/// distinct address, the majority's holders first.
fn count(sha1: &Sha1Digest, named: &[Named], answers: &Answers) -> Lookup {
    let mut found = Lookup::default();
    // size -> the distinct addresses that give it; (size, name) claims.
    let mut vouched: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    let mut claims: Vec<(u64, String)> = Vec::new();
    let mut sizes: Vec<u64> = Vec::new();
    let mut failures: BTreeMap<FailureKind, usize> = BTreeMap::new();
    let mut examples: Vec<String> = Vec::new();
    let mut seen: BTreeSet<(&str, String)> = BTreeSet::new();
    for p in named {
        let key = p.key();
        if !seen.insert((p.id.as_str(), key.clone())) {
            continue;
        }
        let Some((k, answer)) = answers.get_key_value(&key) else {
            continue;
        };
        let holder = Holder::with_addrs(&p.id, p.addrs.clone());
        match answer {
            Ok(Answer::Complete { size, name }) => {
                vouched.entry(*size).or_default().insert(k.as_str());
                claims.push((*size, name.clone().unwrap_or_default()));
                sizes.push(*size);
                found.complete.push(holder);
            }
            Ok(Answer::Partial) => found.partial.push(holder),
            Ok(Answer::Absent) => {}
            Err(e) => {
                *failures.entry(e.kind()).or_default() += 1;
                // The error may quote what the peer sent.
                let e = crate::text::escape(&e.to_string()).into_owned();
                if examples.len() < 3 {
                    examples.push(format!("{holder}: {e}"));
                }
                found.failed.push((holder, e));
            }
        }
    }
    found.size = vouched
        .iter()
        .max_by_key(|(size, addrs)| (addrs.len(), std::cmp::Reverse(**size)))
        .map(|(size, _)| *size);
    if let Some(size) = found.size {
        let mut names: Vec<&str> = claims
            .iter()
            .filter(|(s, _)| *s == size)
            .map(|(_, n)| n.as_str())
            .filter(|n| !n.is_empty())
            .collect();
        names.sort_unstable();
        found.name = super::most_common(&names).map(str::to_string);
        // The majority's holders first (stable: the others keep their order).
        let mut order: Vec<(bool, Holder)> = found
            .complete
            .drain(..)
            .zip(&sizes)
            .map(|(h, s)| (*s != size, h))
            .collect();
        order.sort_by_key(|(other, _)| *other);
        found.complete = order.into_iter().map(|(_, h)| h).collect();
    }
    super::rotate_randomly(&mut found.partial);
    if let Some((total, why)) = super::failure_summary(&failures, &examples) {
        log::warn!(
            "{total} of {} peer(s) not asked about {sha1} {why}",
            seen.len()
        );
    }
    found
}

/// One probe worker: asks the address [`Sched::pick`] gives, records the
/// answer, until the lookup is over.
fn work(shared: &(Mutex<Sched>, Condvar), path: &str, opts: &ProbeOptions) {
    let (lock, cv) = shared;
    let mut g = lock.lock();
    loop {
        let now = Instant::now();
        if g.over(now, opts) {
            cv.notify_all();
            return;
        }
        let Some(i) = g.pick(now, opts) else {
            let wake = g.wake_at(opts);
            cv.wait_until(&mut g, wake);
            continue;
        };
        let end = if g.found {
            g.started + opts.deadline
        } else {
            g.give_up_at(opts)
        };
        let host = g.targets[i].host;
        g.hosts[host].in_flight += 1;
        g.hosts[host].asked += 1;
        let t = &mut g.targets[i];
        t.step = Step::Asking;
        t.attempts += 1;
        let addrs = t.addrs.clone();
        drop(g);
        let result = ask(&addrs, path, opts, end);
        g = lock.lock();
        let found = g.found;
        g.record(i, result, opts);
        // This worker asks next whatever the answer made possible (the
        // slot it freed on that host): the others, asleep until their
        // next retry or the end, are woken only when the end moved (the
        // first holder found) or came (the top of the loop). Waking all
        // of them after every answer (32 threads, 48 answers) was 1,500
        // context switches per lookup.
        if g.found != found {
            cv.notify_all();
        }
    }
}

/// One `HEAD` to one peer, all before `deadline`.
fn ask(
    addrs: &[String],
    path: &str,
    opts: &ProbeOptions,
    deadline: Instant,
) -> Result<Answer, ProbeError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ProbeError::NotAsked);
    }
    let timeouts = Timeouts {
        connect: opts.connect_timeout.min(left),
        io: opts.io_timeout.min(left),
    };
    let mut conn = client::connect(addrs, timeouts)?;
    let head = conn.head(path)?;
    let tag = format!("\"{}\"", &path[FILES_PATH.len() + 1..]);
    match head.status {
        200 if head.etag.as_deref() != Some(tag.as_str()) => {
            Err(ProbeError::BadAnswer("status 200 without the file's ETag"))
        }
        200 => match head.content_length {
            Some(size) => Ok(Answer::Complete {
                size,
                name: head.disposition.as_deref().and_then(disposition_filename),
            }),
            None => Err(ProbeError::BadAnswer("status 200 without a length")),
        },
        416 => {
            // Some pieces, says the peer: it must show one.
            let have = format!("{path}/{HAVE_SEGMENT}");
            let started = Instant::now();
            let head = conn.get(&have, None)?;
            let body = conn.read_body_to_vec(&head, 1 << 20, started, left)?;
            let holds = head.status == 200
                && Bitfield::from_bytes(&body, body.len() * 8).is_some_and(|b| b.count() > 0);
            Ok(if holds {
                Answer::Partial
            } else {
                Answer::Absent
            })
        }
        404 => match head.indexing {
            Some(files) => {
                log::debug!("{}: still indexing ({files} files so far)", addrs.join(","));
                Err(ProbeError::Indexing(files))
            }
            None => Ok(Answer::Absent),
        },
        503 => Err(ProbeError::Busy),
        s => Err(ProbeError::Status(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(id: &str, addr: &str) -> Named {
        Named {
            id: id.into(),
            addrs: vec![addr.into()],
        }
    }

    #[test]
    fn a_lookup_without_a_holder_gives_up_after_patience_and_at_max_wait() {
        let opts = ProbeOptions::default();
        let now = Instant::now();
        let at = |started_ago: u64, progress_ago: u64| {
            let g = Sched {
                targets: Vec::new(),
                hosts: Vec::new(),
                started: now - Duration::from_secs(started_ago),
                last_progress: now - Duration::from_secs(progress_ago),
                found: false,
            };
            g.give_up_at(&opts)
        };
        // Patience after the last progress...
        assert_eq!(at(20, 5), now + Duration::from_secs(5));
        // ... not before the deadline ...
        assert_eq!(at(0, 0), now + Duration::from_secs(10));
        // ... and never past max_wait, however much progress (an
        // indexing peer indexing for minutes).
        assert_eq!(at(100, 0), now - Duration::from_secs(40));
        assert_eq!(at(55, 0), now + Duration::from_secs(5));
    }

    #[test]
    fn waves_take_every_host_once_before_a_second_peer_of_any_host() {
        let mut peers: Vec<Named> = (0..1000)
            .map(|i| named(&format!("sybil{i:04}"), &format!("10.0.0.66:{}", 1000 + i)))
            .collect();
        for h in 1..=20 {
            peers.push(named(&format!("honest{h}"), &format!("10.0.1.{h}:7070")));
        }
        let mut sybil_first_wave = 0;
        for seed in 0..200u64 {
            let order = wave_order(peers.clone(), &HashMap::new(), seed);
            assert_eq!(order.len(), peers.len());
            let hosts: BTreeSet<String> = order[..21].iter().map(|p| host_of(&p.addrs)).collect();
            assert_eq!(hosts.len(), 21, "every host once first");
            sybil_first_wave += usize::from(
                order[..WAVE]
                    .iter()
                    .any(|p| host_of(&p.addrs) == "10.0.0.66"),
            );
            let again: Vec<String> = wave_order(peers.clone(), &HashMap::new(), seed)
                .iter()
                .map(Named::key)
                .collect();
            let keys: Vec<String> = order.iter().map(Named::key).collect();
            assert_eq!(keys, again, "drawn by the seed");
        }
        // 8 of 21 hosts: the sybil's host is drawn like any other (~38 %).
        assert!(
            (40..=120).contains(&sybil_first_wave),
            "{sybil_first_wave} of 200"
        );
    }

    /// The lookup reads the tracker and the registered peers at once: each
    /// read here waits (up to 5 s) for the other to have started, which
    /// read in series would not.
    #[test]
    fn the_tracker_and_the_peer_records_are_read_at_once() {
        let (to_window, window_hears) = crossbeam_channel::bounded::<()>(1);
        let (to_tracker, tracker_hears) = crossbeam_channel::bounded::<()>(1);
        let wait = Duration::from_secs(5);
        let mut tracker_saw = false;
        let mut window_saw = false;
        let mut tracker = || {
            let _ = to_window.send(());
            tracker_saw = tracker_hears.recv_timeout(wait).is_ok();
            Vec::new()
        };
        let mut window = || {
            let _ = to_tracker.send(());
            window_saw = window_hears.recv_timeout(wait).is_ok();
            Ok((Vec::new(), true))
        };
        let mut waves = Waves::new(7);
        let opts = ProbeOptions {
            patience: Duration::ZERO,
            ..ProbeOptions::default()
        };
        let found = find(
            &Sha1Digest::of(b"x"),
            &opts,
            &mut waves,
            &mut tracker,
            &mut window,
            &mut || Ok(Vec::new()),
        )
        .expect("a lookup of nobody");
        assert!(found.holders().is_empty());
        assert!(tracker_saw && window_saw, "read one after the other");
    }
}
