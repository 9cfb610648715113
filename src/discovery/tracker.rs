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
//! or completeness changes (at most [`PUTS_PER_TICK`] puts per tick of
//! [`ANNOUNCE_EVERY`]),
//! deleted when the file is neither.
//!
//! Readers ([`sample`]): a random window, not the whole prefix. A random
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
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::DiscoveryError;
use crate::digest::Sha1Digest;
use crate::etcd::{Client, LeaseId};
use crate::policy::host::host_of_addrs;

/// Most files one peer announces at once.
pub const MAX_ANNOUNCED: usize = 64;
/// Most puts (and deletes) per announcer tick (64 a second).
pub const PUTS_PER_TICK: usize = 16;
/// How often the announcer looks at what it holds (a download is
/// announced within this of its first piece). A look costs a snapshot of
/// the partial files and the upload counts, no etcd request unless
/// something changed. In the simulator (1,000 hosts) 50 ms instead of
/// 250 ms took the median host from 1.31x to 1.22x one host alone (with
/// re-queries every 50 ms at the start): a holder found sooner passes its
/// pieces on sooner.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(50);
/// Keys per etcd range of a sample.
pub const PAGE: usize = 32;
/// Ranges of one sample at most.
pub const MAX_READS: usize = 4;
/// Announcements of one host (IP) kept in one sample at most.
pub const PER_HOST: usize = 2;
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

/// Up to `want` announcements of `sha1`'s swarm, a random window of the
/// prefix (see the module doc): at most [`MAX_READS`] etcd ranges, at
/// most [`PER_HOST`] per host.
pub fn sample(
    client: &Client,
    namespace: &str,
    sha1: &Sha1Digest,
    want: usize,
) -> Result<Vec<Announcement>, DiscoveryError> {
    let prefix = swarm_prefix(namespace, sha1);
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

/// The `pbs-announce` thread of a peer (see the module doc). Stopped and
/// joined by [`Announcer::stop`] or drop.
pub struct Announcer {
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Announcer {
    /// Starts announcing what `holdings` returns, as the peer `id` dialled
    /// at `addrs`, under the lease `lease` returns.
    pub fn start(
        client: Client,
        namespace: String,
        id: String,
        addrs: Vec<String>,
        lease: LeaseOf,
        holdings: Holdings,
    ) -> Result<Announcer, DiscoveryError> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("pbs-announce".into())
            .spawn(move || {
                let me = Me {
                    client,
                    namespace,
                    id,
                    addrs,
                };
                me.run(&lease, &holdings, &stopped)
            })
            .map_err(DiscoveryError::Thread)?;
        Ok(Announcer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and joins it (the keys die with the lease).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
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

struct Me {
    client: Client,
    namespace: String,
    id: String,
    addrs: Vec<String>,
}

impl Me {
    fn run(&self, lease: &LeaseOf, holdings: &Holdings, stopped: &Receiver<()>) {
        // What is in etcd now: sha1 -> (lease, complete).
        let mut announced: HashMap<Sha1Digest, (LeaseId, bool)> = HashMap::new();
        loop {
            if !matches!(
                stopped.recv_timeout(ANNOUNCE_EVERY),
                Err(crossbeam_channel::RecvTimeoutError::Timeout)
            ) {
                return;
            }
            let Some(l) = lease() else {
                // Gone with the lease (or about to be).
                announced.clear();
                continue;
            };
            let mut want = holdings();
            want.truncate(MAX_ANNOUNCED);
            let mut budget = PUTS_PER_TICK;
            let gone: Vec<Sha1Digest> = announced
                .keys()
                .filter(|s| !want.iter().any(|(w, _)| w == *s))
                .copied()
                .collect();
            for sha1 in gone {
                if budget == 0 {
                    break;
                }
                budget -= 1;
                let key = announce_key(&self.namespace, &sha1, &self.id, &self.addrs);
                match self.client.delete(key.as_bytes()) {
                    Ok(_) => {
                        announced.remove(&sha1);
                    }
                    Err(e) => log::debug!("cannot withdraw the announcement of {sha1}: {e}"),
                }
            }
            for (sha1, complete) in want {
                if budget == 0 {
                    break;
                }
                if announced.get(&sha1) == Some(&(l, complete)) {
                    continue;
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
                match self.client.put(key.as_bytes(), &json, Some(l)) {
                    Ok(_) => {
                        crate::metrics::SWARM_ANNOUNCES.add(1);
                        announced.insert(sha1, (l, complete));
                    }
                    Err(e) => log::debug!("cannot announce {sha1}: {e}"),
                }
            }
        }
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
}
