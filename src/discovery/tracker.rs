//! The swarm's tracker in etcd: who is downloading (or seeding to a
//! swarm) which file, found without asking every registered peer.
//!
//! Key layout: `/<ns>/swarm/<sha1>/<bucket>/<peer-id>` -> JSON
//! [`Announcement`] `{id, addrs, complete}`, attached to the announcing
//! peer's lease (the key dies with the peer). `<bucket>` is the first 8
//! hex digits of the SHA1 of the host (IP) of the record's first address,
//! so every announcement of one host sits in one run of keys.
//!
//! Writers ([`Announcer`], one thread per `serve`): a peer announces the
//! files it holds some pieces of (its downloads in progress) and the
//! complete files it uploaded pieces of lately (a seed of a swarm); at
//! most [`MAX_ANNOUNCED`] keys at once, each put again only when its lease
//! or completeness changes, deleted when the file is neither (at most
//! [`PUTS_PER_TICK`] puts and deletes per look, the rest
//! [`ANNOUNCE_EVERY`] later). The announcer looks when it is woken (the
//! peer's partial files and upload counts raise its [`Wake`] when what
//! they would announce changes: a download's first piece, its landing, a
//! seed's first upload) and every [`ANNOUNCE_RECHECK`] otherwise (a new
//! lease, uploads gone quiet); it polled every 50 ms before.
//!
//! Readers ([`sample`]): the whole prefix in one range when it holds at
//! most [`WHOLE`] keys (a room of machines; tried first until a read
//! finds more), else a random window, not the whole prefix. A random
//! bucket is drawn and keys are read from there (one etcd range of
//! [`PAGE`] keys, wrapping round at the end, at most [`MAX_READS`] ranges),
//! keeping at most [`PER_HOST`] announcements of one host; a host with
//! more keys than that is skipped past in the next read. A download
//! therefore costs the same few etcd reads whatever the number of peers,
//! and a flood of announcements from one host (a sybil's thousand ids)
//! is at most [`PER_HOST`] of any sample, and in a sample only as often as
//! any other host. Nothing announced is trusted: the key must be the one
//! its record's id and first address give, and the download still checks
//! every piece against the SHA1 the user asked for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::DiscoveryError;
use crate::digest::Sha1Digest;
use crate::etcd::{Client, LeaseId};
use crate::policy::host::host_of_addrs;
use crate::wake::Wake;

/// Most files one peer announces at once.
pub const MAX_ANNOUNCED: usize = 64;
/// Most puts (and deletes) per announcer tick (64 a second).
pub const PUTS_PER_TICK: usize = 16;
/// The longest a download waits to be announced after its first piece
/// (the simulator's model; the announcer is woken at once, so it is
/// usually one etcd put), and the announcer's next look when puts were
/// left over or failed. In the simulator (1,000 hosts) 50 ms instead of
/// 250 ms took the median host from 1.31x to 1.22x one host alone (with
/// re-queries every 50 ms at the start): a holder found sooner passes its
/// pieces on sooner.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(50);
/// The announcer's look when nothing woke it: a lease granted anew (its
/// keys went with the old one), a seed's uploads gone quiet for
/// 60 s (its key deleted). A look costs a snapshot
/// of the partial files and the upload counts, no etcd request unless
/// something changed. (It looked every 50 ms: 48 idle peers spent 0.013
/// CPU-s a second on it, and a 47-host swarm 0.6 CPU-s.)
pub const ANNOUNCE_RECHECK: Duration = Duration::from_secs(1);
/// Keys per etcd range of a sample.
pub const PAGE: usize = 32;
/// Ranges of one sample at most.
pub const MAX_READS: usize = 4;
/// Announcements of one host (IP) kept in one sample at most.
pub const PER_HOST: usize = 2;
/// Keys of the first range of a sample that reads a small swarm whole
/// (`sample`'s `whole_first`): a room of machines (47 hosts, each
/// announcing the file once) fits, at about 150 bytes a key.
pub const WHOLE: usize = 64;
/// Largest announcement read, in bytes.
const MAX_VALUE: usize = 4096;

/// What a peer announces under a file's swarm prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The peer id (also the key's last segment).
    pub id: String,
    /// The addresses to dial it at, best first.
    pub addrs: Vec<String>,
    /// Whether it holds the whole file (else some pieces).
    pub complete: bool,
}

/// `/<ns>/swarm/<sha1>/`.
pub fn swarm_prefix(namespace: &str, sha1: &Sha1Digest) -> String {
    format!("/{}/swarm/{sha1}/", namespace.trim_matches('/'))
}

/// The bucket of a peer dialled at `addrs`: 8 hex digits of the SHA1 of
/// its first address's host.
fn bucket(addrs: &[String]) -> String {
    let digest = Sha1::digest(host_of_addrs(addrs).as_bytes());
    crate::hex::encode(&digest[..4])
}

/// `/<ns>/swarm/<sha1>/<bucket>/<id>`.
pub fn announce_key(namespace: &str, sha1: &Sha1Digest, id: &str, addrs: &[String]) -> String {
    format!("{}{}/{id}", swarm_prefix(namespace, sha1), bucket(addrs))
}

/// The announcement under `key`, if it is a valid one: the key must be
/// the one its id and first address give.
fn check(namespace: &str, sha1: &Sha1Digest, key: &[u8], value: &[u8]) -> Option<Announcement> {
    let a: Announcement = serde_json::from_slice(value).ok()?;
    let addrs_ok = !a.addrs.is_empty()
        && a.addrs.len() <= super::MAX_ADDRS
        && a.addrs.iter().all(|x| super::check::is_plain_addr(x));
    if !super::identity::is_valid_id(&a.id) || !addrs_ok {
        return None;
    }
    (announce_key(namespace, sha1, &a.id, &a.addrs).as_bytes() == key).then_some(a)
}

/// The host of an announcement (its first address's IP, or IPv6 /64),
/// for the per-host cap.
fn host(a: &Announcement) -> String {
    host_of_addrs(&a.addrs)
}

/// A sample of a file's swarm ([`sample`]).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// The announcements kept.
    pub announced: Vec<Announcement>,
    /// The whole prefix fit in one range of [`WHOLE`] keys (worth reading
    /// whole first next time).
    pub small: bool,
}

/// Up to `want` announcements of `sha1`'s swarm, a random window of the
/// prefix (see the module doc): at most [`MAX_READS`] etcd ranges, at
/// most [`PER_HOST`] per host. `whole_first` (the last sample was
/// [`Sample::small`], or none was taken yet): one range of [`WHOLE`] keys
/// from the prefix's start first, the whole swarm when it fits (one read
/// where a random window takes two, one from its place and one from the
/// start), else the random window as without it.
pub fn sample(
    client: &Client,
    namespace: &str,
    sha1: &Sha1Digest,
    want: usize,
    whole_first: bool,
) -> Result<Sample, DiscoveryError> {
    let prefix = swarm_prefix(namespace, sha1);
    if whole_first {
        let listing =
            match client.get_window(prefix.as_bytes(), prefix.as_bytes(), None, WHOLE, MAX_VALUE) {
                Ok(l) => Some(l),
                // Values too large for one answer: the window's smaller reads.
                Err(e) if e.is_too_large() => None,
                Err(e) => return Err(e.into()),
            };
        if let Some(listing) = listing.filter(|l| !l.more) {
            // Every key: from a random one round, at most PER_HOST a host.
            let n = listing.kvs.len();
            let from = if n == 0 {
                0
            } else {
                (super::random_u64() % n as u64) as usize
            };
            let mut out: Vec<Announcement> = Vec::new();
            let mut per_host: HashMap<String, usize> = HashMap::new();
            for k in 0..n {
                let kv = &listing.kvs[(from + k) % n];
                let Some(a) = check(namespace, sha1, &kv.key, &kv.value) else {
                    continue;
                };
                let c = per_host.entry(host(&a)).or_default();
                if *c >= PER_HOST || out.iter().any(|o| o.id == a.id) {
                    continue;
                }
                *c += 1;
                out.push(a);
            }
            out.truncate(want);
            return Ok(Sample {
                announced: out,
                small: true,
            });
        }
    }
    Ok(Sample {
        announced: window(client, namespace, sha1, want, &prefix)?,
        small: false,
    })
}

/// The random window of [`sample`].
fn window(
    client: &Client,
    namespace: &str,
    sha1: &Sha1Digest,
    want: usize,
    prefix: &str,
) -> Result<Vec<Announcement>, DiscoveryError> {
    let prefix = prefix.to_string();
    let start = format!(
        "{prefix}{}",
        crate::hex::encode(&(super::random_u64() as u32).to_be_bytes())
    );
    let mut out: Vec<Announcement> = Vec::new();
    let mut per_host: HashMap<String, usize> = HashMap::new();
    let mut from = start.clone().into_bytes();
    let mut wrapped = false;
    for _ in 0..MAX_READS {
        let until = wrapped.then_some(start.as_bytes());
        let listing = client.get_window(prefix.as_bytes(), &from, until, PAGE, MAX_VALUE)?;
        let full = listing.kvs.len() + listing.oversized >= PAGE;
        let mut next: Option<Vec<u8>> = None;
        for kv in &listing.kvs {
            let mut after = kv.key.clone();
            after.push(0);
            next = Some(after);
            let Some(a) = check(namespace, sha1, &kv.key, &kv.value) else {
                continue;
            };
            let n = per_host.entry(host(&a)).or_default();
            if *n >= PER_HOST {
                // Skip the rest of this bucket: `<bucket>0` sorts after
                // every `<bucket>/<id>`.
                let b = kv.key.len() - a.id.len() - 1;
                let mut skip = kv.key[..b].to_vec();
                skip.push(b'0');
                next = Some(skip);
                continue;
            }
            *n += 1;
            if !out.iter().any(|o| o.id == a.id) {
                out.push(a);
            }
        }
        if out.len() >= want {
            break;
        }
        match next {
            Some(k) if full => from = k,
            _ if !wrapped => {
                wrapped = true;
                from = prefix.clone().into_bytes();
            }
            _ => break,
        }
    }
    out.truncate(want);
    Ok(out)
}

/// What an announcer announces: each file with whether it is held whole.
pub type Holdings = Box<dyn Fn() -> Vec<(Sha1Digest, bool)> + Send>;
/// The lease to attach announcements to (the peer's registration's).
pub type LeaseOf = Box<dyn Fn() -> Option<LeaseId> + Send>;

/// Where announcements go: etcd (the [`Client`]), or a test's record.
trait Store: Send + 'static {
    fn put(&self, key: &str, value: &[u8], lease: LeaseId) -> Result<(), String>;
    fn delete(&self, key: &str) -> Result<(), String>;
}

impl Store for Client {
    fn put(&self, key: &str, value: &[u8], lease: LeaseId) -> Result<(), String> {
        Client::put(self, key.as_bytes(), value, Some(lease))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        Client::delete(self, key.as_bytes())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The `pbs-announce` thread of a peer (see the module doc). Stopped and
/// joined by [`Announcer::stop`] or drop.
pub struct Announcer {
    wake: Arc<Wake>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Announcer {
    /// Starts announcing what `holdings` returns, as the peer `id` dialled
    /// at `addrs`, under the lease `lease` returns. It looks when `wake`
    /// is raised (the peer's partial files and upload counts raise it when
    /// what they would announce changes) and every [`ANNOUNCE_RECHECK`].
    pub fn start(
        client: Client,
        namespace: String,
        id: String,
        addrs: Vec<String>,
        lease: LeaseOf,
        holdings: Holdings,
        wake: Arc<Wake>,
    ) -> Result<Announcer, DiscoveryError> {
        let me = Me {
            store: client,
            namespace,
            id,
            addrs,
        };
        Self::spawn(me, lease, holdings, wake, ANNOUNCE_RECHECK)
    }

    fn spawn<S: Store>(
        me: Me<S>,
        lease: LeaseOf,
        holdings: Holdings,
        wake: Arc<Wake>,
        recheck: Duration,
    ) -> Result<Announcer, DiscoveryError> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (wake, stop) = (wake.clone(), stop.clone());
            std::thread::Builder::new()
                .name("pbs-announce".into())
                .spawn(move || me.run(&lease, &holdings, &wake, &stop, recheck))
                .map_err(DiscoveryError::Thread)?
        };
        Ok(Announcer {
            wake,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and joins it (the keys die with the lease).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.raise();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Me<S> {
    store: S,
    namespace: String,
    id: String,
    addrs: Vec<String>,
}

impl<S: Store> Me<S> {
    /// Looks at once, then each time `wake` is raised, at the latest
    /// `recheck` after the last look ([`ANNOUNCE_EVERY`] while puts are
    /// left over or failed).
    fn run(
        &self,
        lease: &LeaseOf,
        holdings: &Holdings,
        wake: &Wake,
        stop: &AtomicBool,
        recheck: Duration,
    ) {
        // What is in etcd now: sha1 -> (lease, complete).
        let mut announced: HashMap<Sha1Digest, (LeaseId, bool)> = HashMap::new();
        let mut wait = Duration::ZERO;
        loop {
            wake.wait(wait);
            if stop.load(Ordering::SeqCst) {
                return;
            }
            wait = recheck;
            let Some(l) = lease() else {
                // Gone with the lease (or about to be).
                announced.clear();
                continue;
            };
            if !self.look(l, holdings(), &mut announced) {
                wait = ANNOUNCE_EVERY;
            }
        }
    }

    /// Puts and deletes what changed between `announced` and `want` (at
    /// most [`PUTS_PER_TICK`]); false if some are left for the next look
    /// (over the budget, or failed).
    fn look(
        &self,
        l: LeaseId,
        mut want: Vec<(Sha1Digest, bool)>,
        announced: &mut HashMap<Sha1Digest, (LeaseId, bool)>,
    ) -> bool {
        want.truncate(MAX_ANNOUNCED);
        let mut budget = PUTS_PER_TICK;
        let mut done = true;
        let gone: Vec<Sha1Digest> = announced
            .keys()
            .filter(|s| !want.iter().any(|(w, _)| w == *s))
            .copied()
            .collect();
        for sha1 in gone {
            if budget == 0 {
                return false;
            }
            budget -= 1;
            let key = announce_key(&self.namespace, &sha1, &self.id, &self.addrs);
            match self.store.delete(&key) {
                Ok(()) => {
                    announced.remove(&sha1);
                }
                Err(e) => {
                    log::debug!("cannot withdraw the announcement of {sha1}: {e}");
                    done = false;
                }
            }
        }
        for (sha1, complete) in want {
            if announced.get(&sha1) == Some(&(l, complete)) {
                continue;
            }
            if budget == 0 {
                return false;
            }
            budget -= 1;
            let key = announce_key(&self.namespace, &sha1, &self.id, &self.addrs);
            let value = Announcement {
                id: self.id.clone(),
                addrs: self.addrs.clone(),
                complete,
            };
            let Ok(json) = serde_json::to_vec(&value) else {
                continue;
            };
            match self.store.put(&key, &json, l) {
                Ok(()) => {
                    crate::metrics::SWARM_ANNOUNCES.add(1);
                    announced.insert(sha1, (l, complete));
                }
                Err(e) => {
                    log::debug!("cannot announce {sha1}: {e}");
                    done = false;
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_record_and_host() {
        let sha1 = Sha1Digest::of(b"x");
        let addrs = vec!["10.0.0.7:7070".to_string()];
        let key = announce_key("piratebay", &sha1, "abc", &addrs);
        assert!(key.starts_with(&format!("/piratebay/swarm/{sha1}/")));
        assert!(key.ends_with("/abc"));
        let a = Announcement {
            id: "abc".into(),
            addrs: addrs.clone(),
            complete: false,
        };
        let v = serde_json::to_vec(&a).unwrap();
        assert_eq!(check("piratebay", &sha1, key.as_bytes(), &v), Some(a));
        // Another host's bucket, another id, or another file: refused.
        let other = announce_key("piratebay", &sha1, "abc", &["10.0.0.8:7070".to_string()]);
        assert_eq!(check("piratebay", &sha1, other.as_bytes(), &v), None);
        let other = announce_key("piratebay", &sha1, "abd", &addrs);
        assert_eq!(check("piratebay", &sha1, other.as_bytes(), &v), None);
        let other = announce_key("piratebay", &Sha1Digest::of(b"y"), "abc", &addrs);
        assert_eq!(check("piratebay", &sha1, other.as_bytes(), &v), None);
        // Ports of one host share a bucket.
        assert_eq!(
            bucket(&addrs),
            bucket(&["10.0.0.7:9999".to_string()]),
            "one host, one bucket"
        );
        // An IPv6 /64 is one host: one bucket, one per-host cap.
        let v6 = |a: &str| {
            let addrs = vec![a.to_string()];
            let a = Announcement {
                id: "abc".into(),
                addrs: addrs.clone(),
                complete: true,
            };
            (bucket(&addrs), host(&a))
        };
        assert_eq!(v6("[2001:db8:1:2::5]:7070"), v6("[2001:db8:1:2:ffff::9]:1"));
        assert_ne!(v6("[2001:db8:1:2::5]:7070"), v6("[2001:db8:1:3::5]:7070"));
    }

    /// A record of what the announcer asked of etcd.
    struct Record(crossbeam_channel::Sender<String>);

    impl Store for Record {
        fn put(&self, key: &str, value: &[u8], lease: LeaseId) -> Result<(), String> {
            let a: Announcement = serde_json::from_slice(value).map_err(|e| e.to_string())?;
            let _ = self.0.send(format!("put {key} {} {}", a.complete, lease.0));
            Ok(())
        }

        fn delete(&self, key: &str) -> Result<(), String> {
            let _ = self.0.send(format!("delete {key}"));
            Ok(())
        }
    }

    /// The announcer looks when woken, not on a clock: with an hour
    /// between its own looks, a download's first piece, its landing and
    /// its end are each announced as soon as the wake is raised, and a
    /// change nobody raised for is not.
    #[test]
    fn the_announcer_acts_when_woken_without_polling() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let held: Arc<parking_lot::Mutex<Vec<(Sha1Digest, bool)>>> = Arc::default();
        let wake = Arc::new(Wake::new());
        let addrs = vec!["10.0.0.7:7070".to_string()];
        let me = Me {
            store: Record(tx),
            namespace: "piratebay".into(),
            id: "abc".into(),
            addrs: addrs.clone(),
        };
        let holdings: Holdings = {
            let held = held.clone();
            Box::new(move || held.lock().clone())
        };
        let announcer = Announcer::spawn(
            me,
            Box::new(|| Some(LeaseId(7))),
            holdings,
            wake.clone(),
            Duration::from_secs(3600),
        )
        .unwrap();
        let (a, b) = (Sha1Digest::of(b"a"), Sha1Digest::of(b"b"));
        let key = |s: &Sha1Digest| announce_key("piratebay", s, "abc", &addrs);
        let next = || {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("an etcd request")
        };
        *held.lock() = vec![(a, false)];
        wake.raise();
        assert_eq!(next(), format!("put {} false 7", key(&a)));
        *held.lock() = vec![(a, true)];
        wake.raise();
        assert_eq!(next(), format!("put {} true 7", key(&a)));
        // A raise still pending (the second one can land while the look
        // the first one started is under way) is taken by a look that
        // finds nothing new: it writes nothing, and the announcer then
        // waits with its flag lowered.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        // Not raised: nothing happens (the next look is an hour away).
        *held.lock() = vec![(a, true), (b, false)];
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        *held.lock() = vec![(b, false)];
        wake.raise();
        let mut got = vec![next(), next()];
        got.sort();
        assert_eq!(
            got,
            [
                format!("delete {}", key(&a)),
                format!("put {} false 7", key(&b))
            ]
        );
        // Stopping does not wait for the hour either.
        announcer.stop();
        assert!(rx.try_recv().is_err());
    }
}
