//! [`ProbedHolders`]: the holders of one file, found by asking every
//! registered peer about that file alone, without any catalog.
//!
//! One `HEAD /v1/files/<sha1>` per peer address, in parallel (at most
//! [`ProbeOptions::fan_out`] at once), each address asked once however
//! many records name it, all within one overall deadline: a dead or silent
//! peer costs at most the deadline, and the others' answers are used. The
//! answer says what the peer has: `200` with `ETag: "<sha1>"` the whole
//! file (its size in `Content-Length`, its name in `Content-Disposition`),
//! `416` some pieces of it (a partial holder, still downloading it; then
//! `GET /v1/files/<sha1>/have` on the same connection must show at least
//! one piece), `404` nothing. A server that answers anything else (a `200`
//! without the file's tag, say) is not a holder.
//!
//! Nothing a peer says is trusted here: the size and name shown are the
//! ones the most distinct addresses give, and the download groups the
//! holders by the piece list each one sends, the group vouched for by the
//! most distinct addresses first, so a lying peer (another size, other
//! pieces) is outvoted and never trusted with a byte that does not verify.
//!
//! A `get` of one small file therefore costs one etcd range and one tiny
//! request per peer, instead of every peer's whole catalog. Batches
//! (`download_many`) keep the catalog: one refresh answers for every file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::peer_list::FailureKind;
use crate::digest::Sha1Digest;
use crate::discovery::{self, DiscoveryError, PeerInfo};
use crate::etcd::Client;
use crate::fetch::client::{self, ClientError, Timeouts};
use crate::fetch::{Holder, HolderSource, HoldersError};
use crate::http::response::disposition_filename;
use crate::protocol::{Bitfield, FILES_PATH, HAVE_SEGMENT};

/// How peers are asked about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Longest wait for a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// Longest a single read from a peer may block.
    pub io_timeout: Duration,
    /// Longest asking all peers may take.
    pub deadline: Duration,
    /// Peers asked at once.
    pub fan_out: usize,
}

impl Default for ProbeOptions {
    /// 500 ms connect, 1 s read, 3 s for all peers, 32 at once.
    fn default() -> Self {
        ProbeOptions {
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(3),
            fan_out: 32,
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
    /// Peers that could not be asked, with the reason.
    pub failed: Vec<(Holder, String)>,
}

impl Lookup {
    /// Every holder: the complete ones, then the partial ones.
    pub fn holders(&self) -> Vec<Holder> {
        self.complete.iter().chain(&self.partial).cloned().collect()
    }
}

/// The holders of one file, by asking the peers registered under a
/// namespace about it (see the module doc). A lookup is reused by
/// [`HolderSource::holders`] while it is under 100 ms old, so a `get` asks
/// the network once to start; a running download's re-queries (every
/// 150 ms for its first 2 s, when partial holders get their first pieces,
/// then every 500 ms) each probe, so partial holders join within one.
pub struct ProbedHolders {
    client: Client,
    namespace: String,
    opts: ProbeOptions,
    last: Mutex<Option<(Instant, Sha1Digest, Vec<Holder>)>>,
}

/// How long a lookup is reused by `holders` calls.
const REUSE: Duration = Duration::from_millis(100);

impl ProbedHolders {
    /// Holders among the peers registered under `namespace`.
    pub fn new(client: Client, namespace: impl Into<String>, opts: ProbeOptions) -> Self {
        ProbedHolders {
            client,
            namespace: namespace.into(),
            opts,
            last: Mutex::new(None),
        }
    }

    /// Reads the peers from etcd and asks each about `sha1`.
    pub fn lookup(&self, sha1: &Sha1Digest) -> Result<Lookup, DiscoveryError> {
        let peers = discovery::list_peers(&self.client, &self.namespace)?;
        let found = probe(sha1, &peers, &self.opts);
        *self.last.lock() = Some((Instant::now(), *sha1, found.holders()));
        Ok(found)
    }
}

impl HolderSource for ProbedHolders {
    fn holders(&self, sha1: &Sha1Digest) -> Result<Vec<Holder>, HoldersError> {
        if let Some((at, s, holders)) = self.last.lock().as_ref() {
            if s == sha1 && at.elapsed() < REUSE {
                return Ok(holders.clone());
            }
        }
        self.lookup(sha1)
            .map(|l| l.holders())
            .map_err(HoldersError::new)
    }
}

/// Why one address could not say.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    /// The request failed (connect, timeout, bad head...).
    #[error(transparent)]
    Request(#[from] ClientError),
    /// The overall deadline passed before this address was asked.
    #[error("not asked: the deadline for asking peers passed")]
    NotAsked,
    /// An answer no peer gives.
    #[error("bad answer: {0}")]
    BadAnswer(&'static str),
    /// Neither holds, partial nor absent.
    #[error("refused: status {0}")]
    Status(u16),
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
            ProbeError::Status(_) => FailureKind::Refused,
        }
    }
}

/// What one address said.
enum Answer {
    Complete { size: u64, name: Option<String> },
    Partial,
    Absent,
}

/// Asks every distinct address of `peers` about `sha1` (see the module doc).
pub(crate) fn probe(sha1: &Sha1Digest, peers: &[PeerInfo], opts: &ProbeOptions) -> Lookup {
    let path = format!("{FILES_PATH}/{sha1}");
    let mut keys: Vec<Vec<String>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for p in peers {
        let addrs = p.record.dial_addrs();
        let key = addrs.join(",");
        if let std::collections::hash_map::Entry::Vacant(e) = index.entry(key) {
            e.insert(keys.len());
            keys.push(addrs);
        }
    }
    let deadline = Instant::now() + opts.deadline;
    let answers = crate::fanout::map(&keys, opts.fan_out.max(1), "pbs-probe", |addrs| {
        ask(addrs, &path, opts, deadline)
    });

    let mut found = Lookup::default();
    // size -> the distinct addresses that give it; (size, name) claims.
    let mut vouched: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    let mut claims: Vec<(u64, String)> = Vec::new();
    let mut sizes: Vec<u64> = Vec::new();
    let mut failures: BTreeMap<FailureKind, usize> = BTreeMap::new();
    let mut examples: Vec<String> = Vec::new();
    for p in peers {
        let addrs = p.record.dial_addrs();
        let k = index[&addrs.join(",")];
        let holder = Holder::with_addrs(&p.record.id, addrs);
        match &answers[k] {
            Ok(Answer::Complete { size, name }) => {
                vouched.entry(*size).or_default().insert(k);
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
            peers.len()
        );
    }
    found
}

/// One `HEAD` to one peer before `deadline` (a busy peer's `503` is asked
/// again while the deadline allows).
fn ask(
    addrs: &[String],
    path: &str,
    opts: &ProbeOptions,
    deadline: Instant,
) -> Result<Answer, ProbeError> {
    loop {
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
        return match head.status {
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
            404 => Ok(Answer::Absent),
            503 if Instant::now() + client::BUSY_RETRY < deadline => {
                std::thread::sleep(client::BUSY_RETRY);
                continue;
            }
            s => Err(ProbeError::Status(s)),
        };
    }
}
