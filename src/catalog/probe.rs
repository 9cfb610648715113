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
//! Finding holders without asking everyone ([`find`]): when the swarm's
//! tracker (`discovery::tracker`: the peers holding pieces of the file,
//! and seeds that uploaded some lately; a sample of at most 32, at most 2
//! per host) announces whole copies on at least [`TRUSTED_HOSTS`] hosts,
//! a lookup first asks a few peers, in parallel, with no second attempt:
//! that sample and [`SAMPLE_HOSTS`] hosts drawn at random among the
//! registered peers (one address each). If peers on at least
//! [`TRUSTED_HOSTS`] distinct hosts (IPs) answer that they hold the whole
//! file, that is the lookup: a few dozen requests whatever the number of
//! peers. Else (and at once when the tracker announces fewer) every
//! registered peer is asked, with patience (as before the tracker). The rule is what keeps the tracker a
//! hint: anyone can announce itself there as a complete holder, and one
//! host (a sybil's thousand ids are one host, in the tracker's sample and
//! in the random draw) never suffices alone, so it cannot hide the real
//! seeds from a download. A file with one seed (the first downloads of a
//! flash crowd) costs the broadcast; once two hosts hold it whole, a
//! lookup asks about 40 peers, at 50 hosts or 1,000. A running download's
//! re-queries read the tracker only. Batches (`Downloader::download_many`)
//! keep the catalog: one refresh answers for every file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
        }
    }

    /// The holders of `sha1`, with patience (see the module doc): the
    /// tracker's sample and a random sample of the registered peers
    /// first, every registered peer unless complete copies turned up on
    /// `TRUSTED_HOSTS` (2) hosts. (Not the tracker alone: what is announced
    /// there is written by anyone, and a host announcing itself as a
    /// complete holder must not hide the real seeds from the lookup.)
    pub fn lookup(&self, sha1: &Sha1Digest) -> Result<Lookup, DiscoveryError> {
        let started = Instant::now();
        let announced = tracker::sample(&self.client, &self.namespace, sha1, TRACKER_SAMPLE)
            .unwrap_or_else(|e| {
                // A hint only: the registered peers are asked anyway.
                log::debug!("cannot read the tracker for {sha1}: {e}");
                Vec::new()
            });
        let (client, ns) = (&self.client, self.namespace.as_str());
        let found = find(
            sha1,
            &announced,
            &self.opts,
            || discovery::sample_peers(client, ns, PEER_WINDOW),
            || discovery::list_peers(client, ns),
        )?;
        log::debug!(
            "{sha1}: {} whole and {} partial holder(s) ({} announced), in {:.2} s",
            found.complete.len(),
            found.partial.len(),
            announced.len(),
            started.elapsed().as_secs_f64()
        );
        *self.last.lock() = Some((*sha1, Some(found.holders())));
        Ok(found)
    }
}

/// Peer records read for the first round's random hosts (one etcd range:
/// the first round's etcd read does not grow with the peers).
const PEER_WINDOW: usize = 64;
/// Hosts of the registered peers a lookup asks first, drawn at random
/// (one address each), beside the tracker's sample.
pub const SAMPLE_HOSTS: usize = 8;
/// Distinct hosts (IPs) whose complete copies end a lookup without
/// asking the other registered peers: one host alone never does.
pub const TRUSTED_HOSTS: usize = 2;

/// A peer to ask: its id and where to dial it.
struct Named {
    id: String,
    addrs: Vec<String>,
}

impl Named {
    fn key(&self) -> String {
        self.addrs.join(",")
    }
}

/// The holders of `sha1` among the tracker's `announced` peers and the
/// registered ones (`window()`: a random sample of them, `all()`: every
/// one), asking everyone only when needed (see the module doc).
pub(crate) fn find(
    sha1: &Sha1Digest,
    announced: &[Announcement],
    opts: &ProbeOptions,
    window: impl FnOnce() -> Result<Vec<PeerInfo>, DiscoveryError>,
    all: impl FnOnce() -> Result<Vec<PeerInfo>, DiscoveryError>,
) -> Result<Lookup, DiscoveryError> {
    let named = |peers: Vec<PeerInfo>| -> Vec<Named> {
        peers
            .into_iter()
            .map(|p| Named {
                addrs: p.record.dial_addrs(),
                id: p.record.id,
            })
            .collect()
    };
    let mut first: Vec<Named> = announced
        .iter()
        .map(|a| Named {
            id: a.id.clone(),
            addrs: a.addrs.clone(),
        })
        .collect();
    let announced_whole: BTreeSet<String> = announced
        .iter()
        .filter(|a| a.complete)
        .map(|a| host_of(&a.addrs))
        .collect();
    if announced_whole.len() < TRUSTED_HOSTS {
        // The first round could not end the lookup (fewer whole copies
        // announced than it needs: a file's first downloads): one round,
        // everyone, with patience (two would only add the first's wait).
        first.extend(named(all()?));
        return Ok(ask_and_count(sha1, &first, Answers::new(), opts));
    }
    let sample = named(window()?);
    let mut keys: BTreeSet<String> = first.iter().map(Named::key).collect();
    for i in sample_hosts(&sample, SAMPLE_HOSTS, discovery::random_u64()) {
        if keys.insert(sample[i].key()) {
            first.push(Named {
                id: sample[i].id.clone(),
                addrs: sample[i].addrs.clone(),
            });
        }
    }
    let quick = ProbeOptions {
        patience: Duration::ZERO,
        ..*opts
    };
    let refs: Vec<&Named> = first.iter().collect();
    let answers = ask_all(sha1, &refs, &quick, false);
    let complete_hosts: BTreeSet<String> = answers
        .iter()
        .filter(|(_, a)| matches!(a, Ok(Answer::Complete { .. })))
        .map(|(k, _)| host_of_key(k))
        .collect();
    if complete_hosts.len() >= TRUSTED_HOSTS {
        log::debug!(
            "{sha1}: whole copies on {} hosts among the {} peer(s) asked first; the others not asked",
            complete_hosts.len(),
            answers.len(),
        );
        return Ok(count(sha1, &first, &answers));
    }
    // Not enough: every registered peer too, and again (with patience)
    // those that could not say.
    let known: Answers = answers
        .into_iter()
        .filter(|(_, a)| match a {
            Ok(_) => true,
            Err(e) => !e.transient(),
        })
        .collect();
    first.extend(named(all()?));
    Ok(ask_and_count(sha1, &first, known, opts))
}

/// Indices of up to `hosts` entries of `peers`, one per host (IP), the
/// hosts and the entry within each drawn by `seed`.
fn sample_hosts(peers: &[Named], hosts: usize, seed: u64) -> Vec<usize> {
    let mut by_host: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, p) in peers.iter().enumerate() {
        by_host.entry(host_of(&p.addrs)).or_default().push(i);
    }
    let rank = |x: &[u8]| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&seed, &mut h);
        std::hash::Hash::hash(x, &mut h);
        std::hash::Hasher::finish(&h)
    };
    let mut order: Vec<(u64, &str)> = by_host
        .keys()
        .map(|h| (rank(h.as_bytes()), h.as_str()))
        .collect();
    order.sort_unstable();
    order
        .into_iter()
        .take(hosts)
        .filter_map(|(_, h)| {
            let ids = &by_host[h];
            ids.iter()
                .copied()
                .min_by_key(|&i| rank(peers[i].id.as_bytes()))
        })
        .collect()
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
        let announced = tracker::sample(&self.client, &self.namespace, sha1, TRACKER_SAMPLE)
            .map_err(HoldersError::new)?;
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

/// The host part of a dial key.
fn host_of_key(key: &str) -> String {
    crate::policy::host::host_group(key.split(',').next().unwrap_or(""))
}

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
    fn a_sample_is_one_peer_per_host_and_a_thousand_ids_on_one_host_are_one_host() {
        let mut peers: Vec<Named> = (0..1000)
            .map(|i| named(&format!("sybil{i:04}"), &format!("10.0.0.66:{}", 1000 + i)))
            .collect();
        for h in 1..=20 {
            peers.push(named(&format!("honest{h}"), &format!("10.0.1.{h}:7070")));
        }
        let mut sybil_drawn = 0;
        for seed in 0..200u64 {
            let picked = sample_hosts(&peers, SAMPLE_HOSTS, seed);
            assert_eq!(picked.len(), SAMPLE_HOSTS);
            let hosts: BTreeSet<String> =
                picked.iter().map(|&i| host_of(&peers[i].addrs)).collect();
            assert_eq!(hosts.len(), SAMPLE_HOSTS, "one peer per host");
            sybil_drawn += usize::from(hosts.contains("10.0.0.66"));
            assert_eq!(
                picked,
                sample_hosts(&peers, SAMPLE_HOSTS, seed),
                "drawn by the seed"
            );
        }
        // 8 of 21 hosts: the sybil's host is drawn like any other (~38 %).
        assert!((40..=120).contains(&sybil_drawn), "{sybil_drawn} of 200");
    }
}
