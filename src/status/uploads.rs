//! What this process uploads: one session per (client address, file),
//! summed over that client's requests (a download asks piece after piece,
//! each a request of its own), kept while bytes flow and for
//! [`LINGER`] after the last one.
//!
//! The server opens an [`Upload`] for every file body it starts sending
//! and adds the bytes as they leave; the status monitor samples the
//! sessions every second to compute their rates. Process-wide, like
//! [`crate::metrics`]. One lock, held for a map update when a request
//! starts or ends and while sampling; bytes are added without it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{const_mutex, Mutex};

use crate::digest::Sha1Digest;

/// How long a session stays listed after its last byte.
pub const LINGER: Duration = Duration::from_secs(10);
/// A session that sent within this long still counts as active.
const BETWEEN_REQUESTS: Duration = Duration::from_secs(3);
/// Most sessions kept; uploads beyond are sent but not listed.
const MAX_SESSIONS: usize = 256;

type Key = (IpAddr, Sha1Digest);

#[derive(Debug, Clone)]
struct Session {
    name: String,
    bytes: Arc<AtomicU64>,
    /// Requests sending now.
    active: u32,
    last: Instant,
    /// Bytes over the last samples, for the rate.
    window: super::window::Window,
}

static SESSIONS: Mutex<Option<HashMap<Key, Session>>> = const_mutex(None);

/// One file body being sent; dropping it ends the request.
#[derive(Debug)]
pub struct Upload {
    key: Option<Key>,
    bytes: Arc<AtomicU64>,
}

impl Upload {
    /// Starts a request sending `sha1` (named `name`) to `client`.
    pub fn start(client: IpAddr, sha1: Sha1Digest, name: &str) -> Upload {
        let mut guard = SESSIONS.lock();
        let map = guard.get_or_insert_with(HashMap::new);
        let key = (client, sha1);
        if !map.contains_key(&key) && map.len() >= MAX_SESSIONS {
            return Upload {
                key: None,
                bytes: Arc::default(),
            };
        }
        let s = map.entry(key).or_insert_with(|| Session {
            name: name.chars().take(512).collect(),
            bytes: Arc::default(),
            active: 0,
            last: Instant::now(),
            window: super::window::Window::default(),
        });
        s.active += 1;
        s.last = Instant::now();
        Upload {
            key: Some(key),
            bytes: Arc::clone(&s.bytes),
        }
    }

    /// `n` more bytes left.
    pub fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
}

impl crate::server::UploadCounter for Upload {
    fn add(&self, n: u64) {
        Upload::add(self, n);
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        if let Some(s) = SESSIONS.lock().as_mut().and_then(|m| m.get_mut(&key)) {
            s.active = s.active.saturating_sub(1);
            s.last = Instant::now();
        }
    }
}

/// One upload session as shown.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UploadRow {
    /// The client's IP address.
    pub client: String,
    /// The file.
    pub sha1: Sha1Digest,
    /// Its name here (untrusted when shown: escape it).
    pub name: String,
    /// Bytes sent in this session.
    pub bytes: u64,
    /// Bytes per second over the last few seconds.
    pub rate: f64,
    /// Whether a request is sending now or sent in the last few seconds
    /// (a download asks piece after piece).
    pub active: bool,
}

/// Samples every session's bytes (for its rate) and drops the sessions
/// idle for longer than [`LINGER`].
pub(crate) fn sample(now: Instant) {
    let mut guard = SESSIONS.lock();
    let Some(map) = guard.as_mut() else { return };
    for s in map.values_mut() {
        s.window.push(now, s.bytes.load(Ordering::Relaxed));
    }
    map.retain(|_, s| s.active > 0 || s.last.elapsed() < LINGER);
}

/// The sessions, busiest first.
pub fn rows() -> Vec<UploadRow> {
    let guard = SESSIONS.lock();
    let mut rows: Vec<UploadRow> = guard
        .iter()
        .flat_map(|m| m.iter())
        .map(|((ip, sha1), s)| UploadRow {
            client: ip.to_string(),
            sha1: *sha1,
            name: s.name.clone(),
            bytes: s.bytes.load(Ordering::Relaxed),
            rate: s.window.rate(),
            active: s.active > 0 || s.last.elapsed() < BETWEEN_REQUESTS,
        })
        .collect();
    drop(guard);
    rows.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(b.bytes.cmp(&a.bytes)));
    rows
}
