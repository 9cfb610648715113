//! What a running peer shows of itself: the [`StatusReport`] that
//! [`Peer::status`](crate::Peer::status) returns and `GET /v1/status`
//! serves as JSON, drawn by the page at `GET /` (`page.rs`), and the
//! peer's part of `GET /metrics`.
//!
//! Inside, the `Monitor` gathers it. Most of the report is read when asked
//! (index, registration, peer cache, partial files, upload sessions); what
//! needs time or the network is kept by the `pbs-status` thread
//! (`Monitor::run`, owned by the peer), which every `TICK` (1 s):
//! - samples the upload sessions (`uploads.rs`), the partial files (bytes
//!   held) and the bytes served and received (`crate::metrics`) into
//!   rates and a rate history of `HISTORY_LEN` (300) ticks;
//!
//! and, only while someone looks (the page, `/v1/status`, `/metrics` or
//! [`Peer::status`](crate::Peer::status) asked within `WATCHED_FOR`,
//! 60 s; the first look after a quiet spell is answered from what was
//! kept, and the next tick asks the network again):
//! - every `PROBE_EVERY` (5 s) asks every registered peer's `/v1/health`
//!   (at most `MAX_PROBED` (64), 8 at once, 1 s each): "which answer";
//! - every `CATALOG_EVERY` (3 s) refreshes the network's file list through
//!   [`crate::Catalog`] (cached per peer generation, so an
//!   unchanged peer is not asked again) if a peer came, went, moved or
//!   changed its index generation, else every `RELIST_EVERY` (30 s): the
//!   merge of a 50-peer network's lists (100,000 files) every 3 s on every
//!   peer kept two cores busy. The peer's own files come from its index,
//!   never from its own catalog over HTTP.
//!
//! Nobody looking, a peer asks no other peer anything: with every peer
//! probing every other one, a room of N peers made N x N health requests
//! every 5 s and N x N catalog fetches each time one peer's index changed
//! (47 idle peers: 0.23 CPU-s a second; a 47-host swarm: 18,800 health
//! probes and 4,600 catalog fetches, a sixth of its CPU).
//!
//! Locks: one `Mutex` around the sampled state and one `RwLock` around the
//! parts wired in after start; each held for copies only, never across
//! the probes or the catalog refresh, never both at once. The upload
//! sessions' lock is taken inside the sampled state's (never the reverse),
//! the peer cache's inside the wired parts'.

mod answer;
pub(crate) mod page;
pub(crate) mod uploads;
mod window;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::catalog::{Catalog, CatalogOptions};
use crate::client::{get_small, Timeouts};
use crate::digest::Sha1Digest;
use crate::discovery::{PeerCache, PeerInfo, RegistrationView};
use crate::index::Index;
use crate::metrics;
use crate::partial::Partials;
use crate::protocol::HEALTH_PATH;
use window::Window;

pub(crate) use answer::answer;
pub(crate) use uploads::Upload;
pub use uploads::UploadRow;

/// How often the monitor samples.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// How long after the status was last asked for the monitor keeps asking
/// the network (health probes, catalog).
pub(crate) const WATCHED_FOR: Duration = Duration::from_secs(60);
/// Samples kept for the rate picture (5 minutes).
pub(crate) const HISTORY_LEN: usize = 300;
/// How often the other peers' health is asked.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How often the network's file list is refreshed.
pub(crate) const CATALOG_EVERY: Duration = Duration::from_secs(3);
/// How often the network's file list is refreshed when no peer changed
/// (peers that failed are asked again, and the list's age stays bounded).
const RELIST_EVERY: Duration = Duration::from_secs(30);
/// Most peers probed.
pub(crate) const MAX_PROBED: usize = 64;
/// Most network files in a report (the page filters them in the browser;
/// it says how many more there are).
pub(crate) const MAX_FILES: usize = 1000;
/// Most registered peers in a report (this one always among them).
pub(crate) const MAX_PEERS: usize = 256;
/// Most peer ids shown per download.
const MAX_DOWNLOAD_PEERS: usize = 8;
/// Longest name (file, host, version) in a report, in characters; a
/// longer one is cut and ends with `…`. Names come from other peers: a
/// 200,000-character one took a browser 35 s to lay out.
pub(crate) const NAME_CHARS: usize = 100;
/// How long a rendered page or JSON body is sent to every request (one
/// body per refresh, shared by the connections sending it).
const BODY_FRESH: Duration = Duration::from_secs(1);

/// `s` cut to [`NAME_CHARS`] characters (`…` marking the cut).
pub(crate) fn clip(s: String) -> String {
    match s.char_indices().nth(NAME_CHARS) {
        None => s,
        Some((end, _)) => {
            let mut cut = s;
            cut.truncate(end);
            cut.push('…');
            cut
        }
    }
}

/// Holders named per file on the page (and in `/v1/status`).
pub const MAX_HOLDER_IDS: usize = 4;

/// Everything the status page shows, as `GET /v1/status` sends it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// This peer.
    pub peer: PeerStatus,
    /// Its index.
    pub index: IndexStatus,
    /// Its registration in etcd.
    pub registration: RegistrationStatus,
    /// Registered peers (this one included), by id: at most 256.
    pub peers: Vec<PeerRow>,
    /// Registered peers in all (`peers` may show fewer).
    pub peers_total: usize,
    /// The network's files.
    pub files: FilesStatus,
    /// Uploads from this peer, busiest first.
    pub uploads: Vec<UploadRow>,
    /// Downloads into this peer's dataset.
    pub downloads: Vec<DownloadRow>,
    /// Upload and download rates over the last minutes.
    pub history: History,
}

impl StatusReport {
    /// This peer's values for `GET /metrics` (after the process counters,
    /// see [`metrics::render`]).
    /// Per download into the dataset: its sha1 and the bytes it took from
    /// seeds and from partial holders (`/metrics`).
    pub(crate) fn download_sources(&self) -> Vec<metrics::DownloadSources> {
        self.downloads
            .iter()
            .map(|d| metrics::DownloadSources {
                sha1: d.sha1.to_hex(),
                from_seeds: d.from_seeds,
                from_partials: d.from_partials,
            })
            .collect()
    }

    pub(crate) fn gauges(&self) -> Vec<metrics::PeerGauge> {
        let g = |name, help, value: usize| metrics::PeerGauge {
            name,
            help,
            value: value as u64,
        };
        let n = |name, help, value: u64| metrics::PeerGauge { name, help, value };
        vec![
            n(
                "pbs_uptime_seconds",
                "Seconds since the peer started.",
                self.peer.uptime_secs,
            ),
            n("pbs_index_files", "Files in the index.", self.index.files),
            n(
                "pbs_index_bytes",
                "Bytes of the files in the index.",
                self.index.bytes,
            ),
            n(
                "pbs_index_generation",
                "Current index generation.",
                self.index.generation,
            ),
            n(
                "pbs_index_hash_backlog_files",
                "Files waiting to settle or being hashed.",
                self.index.queued_files,
            ),
            n(
                "pbs_index_hash_backlog_bytes",
                "Bytes of the files waiting to settle or being hashed.",
                self.index.queued_bytes,
            ),
            n(
                "pbs_registered",
                "1 if this peer's key is in etcd, else 0.",
                u64::from(self.registration.registered),
            ),
            g(
                "pbs_peers",
                "Registered peers, this one included.",
                self.peers.len(),
            ),
            g(
                "pbs_peers_answering",
                "Registered peers whose last health probe answered.",
                self.peers
                    .iter()
                    .filter(|p| p.answers == Some(true))
                    .count(),
            ),
            g(
                "pbs_downloads_active",
                "Downloads into the dataset in progress.",
                self.downloads.iter().filter(|d| !d.finished).count(),
            ),
            g(
                "pbs_uploads_active",
                "Uploads (client, file) sending now.",
                self.uploads.iter().filter(|u| u.active).count(),
            ),
        ]
    }
}

/// This peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Its id.
    pub id: String,
    /// Its host name.
    pub name: String,
    /// The crate version.
    pub version: String,
    /// The addresses it publishes, best first.
    pub addrs: Vec<String>,
    /// The shared directory.
    pub dataset: String,
    /// Seconds since it started.
    pub uptime_secs: u64,
}

/// The index.
#[derive(Debug, Clone, Serialize)]
pub struct IndexStatus {
    /// Whether the first scan finished.
    pub ready: bool,
    /// Files indexed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Current generation.
    pub generation: u64,
    /// Files hashed since start.
    pub hashed_files: u64,
    /// Files waiting to settle or being hashed.
    pub queued_files: u64,
    /// Their bytes.
    pub queued_bytes: u64,
}

/// The registration.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrationStatus {
    /// Whether the key is in etcd.
    pub registered: bool,
    /// The lease, in hex as etcdctl prints it.
    pub lease: Option<String>,
    /// The lease TTL in seconds.
    pub ttl_secs: u64,
    /// Seconds since the last renewal or put.
    pub last_renewal_secs_ago: Option<f64>,
    /// The etcd endpoint in use (the one that answered last).
    pub endpoint: String,
    /// The last failure, while failing.
    pub error: Option<String>,
}

/// One registered peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRow {
    /// Its id (untrusted: escape it).
    pub id: String,
    /// Its host name (untrusted).
    pub name: String,
    /// Its version (untrusted).
    pub version: String,
    /// Its addresses, best first (untrusted).
    pub addrs: Vec<String>,
    /// Seconds since it started, by its own clock.
    pub age_secs: u64,
    /// Its published index generation.
    pub index_gen: u64,
    /// Whether its last health probe answered (`None`: not probed yet).
    pub answers: Option<bool>,
    /// How long that probe took.
    pub latency_ms: Option<u64>,
    /// Whether this is the peer showing the page.
    pub this: bool,
}

/// The network's files.
#[derive(Debug, Clone, Serialize)]
pub struct FilesStatus {
    /// Files in the network (at the last refresh).
    pub total: usize,
    /// Seconds since that refresh (`None`: not yet).
    pub refreshed_secs_ago: Option<f64>,
    /// The first 2000 by name.
    pub list: Vec<FileRow>,
}

/// One file of the network.
#[derive(Debug, Clone, Serialize)]
pub struct FileRow {
    /// SHA1.
    pub sha1: Sha1Digest,
    /// The most common name (untrusted).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Peers holding it whole.
    pub holders: usize,
    /// Whether this peer holds it whole (the page links its own copy).
    pub here: bool,
    /// The ids of some other peers holding it (at most [`MAX_HOLDER_IDS`]):
    /// the page names them and links the file on one when it is not here.
    pub holder_ids: Vec<String>,
}

/// One download into the dataset.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadRow {
    /// The file.
    pub sha1: Sha1Digest,
    /// Its name in the dataset (untrusted).
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Pieces verified and written.
    pub pieces_held: usize,
    /// Pieces in all.
    pub pieces_total: usize,
    /// `pieces_held / pieces_total` (1 for an empty file).
    pub progress: f64,
    /// Bytes per second over the last few ticks.
    pub rate: f64,
    /// Renamed into place: waiting for the index, or one of the last 16
    /// downloads that landed and were indexed (still listed, so where
    /// their bytes came from stays visible).
    pub finished: bool,
    /// Ids of the peers it fetches from (untrusted).
    pub peers: Vec<String>,
    /// Bytes it took from complete holders (seeds), at its last save.
    pub from_seeds: u64,
    /// Bytes it took from partial holders (the swarm), at its last save.
    pub from_partials: u64,
}

/// Rates over time, oldest first, one point per second (each the rate
/// over the few seconds before it).
#[derive(Debug, Clone, Serialize)]
pub struct History {
    /// Seconds between points.
    pub interval_secs: u64,
    /// Upload bytes per second.
    pub upload: Vec<f64>,
    /// Download bytes per second (into the dataset).
    pub download: Vec<f64>,
}

/// Parts of the peer that exist only once it has started.
#[derive(Default)]
struct Wired {
    advertised: Vec<SocketAddr>,
    registration: Option<RegistrationView>,
    cache: Option<Arc<PeerCache>>,
}

/// What the monitor thread measured.
struct Sampled {
    /// Bytes served and received (the process counters) over the last ticks.
    up: Window,
    down: Window,
    history: VecDeque<(f64, f64)>,
    /// Per partial file: bytes held over the last ticks.
    partials: HashMap<Sha1Digest, Window>,
    /// Per peer id: answered, latency.
    probes: HashMap<String, (bool, Duration)>,
    files: Vec<FileRow>,
    files_total: usize,
    files_at: Option<Instant>,
}

/// Gathers a peer's status. Shared by the server (reports) and the
/// `pbs-status` thread (samples).
pub(crate) struct Monitor {
    started: Instant,
    id: String,
    name: String,
    dataset: PathBuf,
    index: Arc<Index>,
    partials: Arc<Partials>,
    etcd: crate::etcd::Client,
    wired: RwLock<Wired>,
    sampled: Mutex<Sampled>,
    /// The last page and JSON bodies, each sent to every request for
    /// [`BODY_FRESH`] (held while one is rendered: a burst renders once).
    bodies: Mutex<Bodies>,
    /// When the report was last asked for, in milliseconds after
    /// `started`, plus one (0: never).
    looked_at: AtomicU64,
}

/// Rendered bodies, each with when it was rendered.
#[derive(Default)]
struct Bodies {
    page: Option<(Instant, Arc<Vec<u8>>)>,
    json: Option<(Instant, Arc<Vec<u8>>)>,
}

/// Which body of the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// The HTML page (`GET /`).
    Page,
    /// The JSON report (`GET /v1/status`).
    Json,
}

impl Monitor {
    /// A monitor for the peer `id` sharing `dataset`.
    pub fn new(
        id: String,
        dataset: PathBuf,
        index: Arc<Index>,
        partials: Arc<Partials>,
        etcd: crate::etcd::Client,
    ) -> Arc<Monitor> {
        Arc::new(Monitor {
            started: Instant::now(),
            id,
            name: crate::discovery::host_name(),
            dataset,
            index,
            partials,
            etcd,
            wired: RwLock::new(Wired::default()),
            bodies: Mutex::new(Bodies::default()),
            looked_at: AtomicU64::new(0),
            sampled: Mutex::new(Sampled {
                up: Window::default(),
                down: Window::default(),
                history: VecDeque::with_capacity(HISTORY_LEN),
                partials: HashMap::new(),
                probes: HashMap::new(),
                files: Vec::new(),
                files_total: 0,
                files_at: None,
            }),
        })
    }

    /// Wires in what exists once the peer listens and registers.
    pub fn wire(
        &self,
        advertised: Vec<SocketAddr>,
        registration: RegistrationView,
        cache: Arc<PeerCache>,
    ) {
        *self.wired.write() = Wired {
            advertised,
            registration: Some(registration),
            cache: Some(cache),
        };
    }

    /// Lets go of the registration and the peer cache (the peer stops).
    pub fn unwire(&self) {
        let old = std::mem::take(&mut *self.wired.write());
        drop(old);
    }

    fn peer_list(&self) -> Vec<PeerInfo> {
        self.wired
            .read()
            .cache
            .as_ref()
            .map(|c| c.peers())
            .unwrap_or_default()
    }

    /// The `pbs-status` thread's loop: samples every [`TICK`] until `stop`
    /// receives or disconnects.
    pub fn run(&self, stop: &Receiver<()>) {
        // Short bounds: a stopping peer waits for the tick in progress.
        let mut catalog = Catalog::new(CatalogOptions {
            connect_timeout: Duration::from_millis(300),
            io_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(2),
            fan_out: 8,
            budget: 16 * 1024 * 1024,
        });
        let mut probed: Option<Instant> = None;
        let mut listed: Option<Instant> = None;
        let mut listed_for: Vec<(String, u64, Vec<String>)> = Vec::new();
        loop {
            match stop.recv_timeout(TICK) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            self.sample();
            if !self.watched() {
                // Asked again at once when someone looks.
                probed = None;
                listed = None;
                continue;
            }
            if probed.is_none_or(|t| t.elapsed() >= PROBE_EVERY) {
                probed = Some(Instant::now());
                self.probe();
            }
            if listed.is_none_or(|t| t.elapsed() >= CATALOG_EVERY) {
                let peers = self.peer_list();
                let now: Vec<(String, u64, Vec<String>)> = peers
                    .iter()
                    .map(|p| {
                        (
                            p.record.id.clone(),
                            p.record.index_gen,
                            p.record.dial_addrs(),
                        )
                    })
                    .collect();
                let stale = listed.is_none_or(|t| t.elapsed() >= RELIST_EVERY);
                if stale || now != listed_for {
                    listed = Some(Instant::now());
                    listed_for = now;
                    self.list_files(&mut catalog, &peers);
                }
            }
        }
    }

    /// Notes that someone asked for the report.
    fn looked_at_now(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.looked_at
            .store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// Whether the report was asked for within [`WATCHED_FOR`].
    fn watched(&self) -> bool {
        match self.looked_at.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let at = self.started + Duration::from_millis(at - 1);
                at.elapsed() < WATCHED_FOR
            }
        }
    }

    /// One sample: upload sessions, partial files and the byte counters
    /// into rates.
    pub fn sample(&self) {
        let views = self.partials.snapshot();
        let now = Instant::now();
        let mut s = self.sampled.lock();
        uploads::sample(now);
        let mut seen = HashMap::with_capacity(views.len());
        for v in &views {
            let held_bytes = (v.held as u64 * v.piece_size).min(v.size);
            let mut window = s.partials.remove(&v.sha1).unwrap_or_default();
            window.push(now, held_bytes);
            seen.insert(v.sha1, window);
        }
        s.partials = seen;
        s.up.push(now, metrics::SERVED_BYTES.get());
        s.down.push(now, metrics::RECEIVED_BYTES.get());
        if s.history.len() == HISTORY_LEN {
            s.history.pop_front();
        }
        let point = (s.up.rate(), s.down.rate());
        s.history.push_back(point);
    }

    /// Asks every registered peer's health (outside any lock).
    fn probe(&self) {
        let peers: Vec<PeerInfo> = self.peer_list().into_iter().take(MAX_PROBED).collect();
        let timeouts = Timeouts {
            connect: Duration::from_millis(300),
            io: Duration::from_millis(700),
        };
        let results = crate::fanout::map(&peers, 8, "pbs-status-probe", |p| {
            let started = Instant::now();
            let answered = get_small(
                &p.record.dial_addrs(),
                HEALTH_PATH,
                timeouts,
                16 * 1024,
                Duration::from_secs(1),
            )
            .is_ok_and(|(head, _)| head.status == 200);
            (p.record.id.clone(), (answered, started.elapsed()))
        });
        self.sampled.lock().probes = results.into_iter().collect();
    }

    /// Refreshes the network's file list (outside any lock). This peer's
    /// own files come from its index, not over HTTP (its whole catalog
    /// would be serialized, compressed, fetched and parsed back, and a
    /// 100,000-file one does not fit the refresh's budget).
    fn list_files(&self, catalog: &mut Catalog, peers: &[PeerInfo]) {
        let others: Vec<PeerInfo> = peers
            .iter()
            .filter(|p| p.record.id != self.id)
            .cloned()
            .collect();
        let (_, own) = self.index.snapshot();
        if others.is_empty() && own.is_empty() {
            return;
        }
        let mut rows: Vec<FileRow> = if others.is_empty() {
            Vec::new()
        } else {
            catalog
                .refresh(&others)
                .files
                .into_iter()
                .map(|f| FileRow {
                    sha1: f.sha1,
                    name: clip(f.name),
                    size: f.size,
                    holders: f.peers,
                    here: false,
                    holder_ids: f
                        .holders
                        .into_iter()
                        .take(MAX_HOLDER_IDS)
                        .map(|h| h.id)
                        .collect(),
                })
                .collect()
        };
        let at: HashMap<Sha1Digest, usize> =
            rows.iter().enumerate().map(|(i, r)| (r.sha1, i)).collect();
        let mut added = false;
        for f in &own {
            match at.get(&f.sha1) {
                Some(&i) => {
                    rows[i].holders += 1;
                    rows[i].here = true;
                }
                None => {
                    added = true;
                    rows.push(FileRow {
                        sha1: f.sha1,
                        name: clip(f.name()),
                        size: f.size,
                        holders: 1,
                        here: true,
                        holder_ids: Vec::new(),
                    });
                }
            }
        }
        if added {
            rows.sort_by(|a, b| (&a.name, a.sha1).cmp(&(&b.name, b.sha1)));
        }
        let total = rows.len();
        rows.truncate(MAX_FILES);
        // The list had room for every file (100,000 rows are 6 MB).
        rows.shrink_to_fit();
        let files = rows;
        let mut s = self.sampled.lock();
        s.files = files;
        s.files_total = total;
        s.files_at = Some(Instant::now());
    }

    /// The page or JSON body of the report, one per [`BODY_FRESH`] shared
    /// by every request: a connection that reads nothing holds a share of
    /// one body, not a body of its own.
    pub fn body(&self, which: Body) -> Result<Arc<Vec<u8>>, serde_json::Error> {
        let mut bodies = self.bodies.lock();
        let slot = match which {
            Body::Page => &mut bodies.page,
            Body::Json => &mut bodies.json,
        };
        if let Some((at, body)) = slot {
            if at.elapsed() < BODY_FRESH {
                return Ok(body.clone());
            }
        }
        let report = self.report();
        let body = Arc::new(match which {
            Body::Page => page::render(&report).into_bytes(),
            Body::Json => serde_json::to_vec(&report)?,
        });
        *slot = Some((Instant::now(), body.clone()));
        Ok(body)
    }

    /// The report now. Asking for it counts as a look: the monitor asks
    /// the network for [`WATCHED_FOR`] after it (see the module doc).
    pub fn report(&self) -> StatusReport {
        self.looked_at_now();
        let (advertised, registration, peers) = {
            let w = self.wired.read();
            (
                w.advertised.clone(),
                w.registration.as_ref().map(RegistrationView::state),
                w.cache.as_ref().map(|c| c.peers()).unwrap_or_default(),
            )
        };
        let stats = self.index.stats();
        let (generation, files) = self.index.snapshot();
        let mut views = self.partials.snapshot();
        // Then the downloads that landed lately: where their bytes came
        // from stays visible once the index has the file.
        let mut landed = self.partials.landed();
        landed.retain(|l| !views.iter().any(|v| v.sha1 == l.sha1));
        views.extend(landed);
        let mut uploads = uploads::rows();
        for u in &mut uploads {
            u.name = clip(std::mem::take(&mut u.name));
        }
        let s = self.sampled.lock();
        let now_unix = unix_secs(SystemTime::now());
        let peers_total = peers.len();
        // At most MAX_PEERS, this peer among them.
        let mut peers = peers;
        if let Some(me) = peers.iter().position(|p| p.record.id == self.id) {
            if me >= MAX_PEERS {
                peers.swap(me, MAX_PEERS - 1);
            }
        }
        peers.truncate(MAX_PEERS);
        let peers = peers
            .into_iter()
            .map(|p| {
                let probe = s.probes.get(&p.record.id);
                let addrs = if p.record.addrs.is_empty() {
                    vec![p.record.addr.clone()]
                } else {
                    p.record.addrs.clone()
                };
                PeerRow {
                    this: p.record.id == self.id,
                    age_secs: now_unix.saturating_sub(p.record.started_at),
                    index_gen: p.record.index_gen,
                    answers: probe.map(|(ok, _)| *ok),
                    latency_ms: probe
                        .filter(|(ok, _)| *ok)
                        .map(|(_, d)| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    id: p.record.id,
                    name: clip(p.record.name),
                    version: clip(p.record.version),
                    addrs,
                }
            })
            .collect();
        let downloads = views
            .into_iter()
            .map(|v| DownloadRow {
                rate: s.partials.get(&v.sha1).map_or(0.0, Window::rate),
                progress: if v.total == 0 {
                    1.0
                } else {
                    v.held as f64 / v.total as f64
                },
                sha1: v.sha1,
                name: clip(v.name),
                size: v.size,
                pieces_held: v.held,
                pieces_total: v.total,
                finished: !v.downloading,
                peers: v.peers.into_iter().take(MAX_DOWNLOAD_PEERS).collect(),
                from_seeds: v.from_seeds,
                from_partials: v.from_partials,
            })
            .collect();
        let registration = match registration {
            Some(r) => RegistrationStatus {
                registered: r.registered,
                lease: r.lease.map(|l| l.hex()),
                ttl_secs: r.ttl.as_secs(),
                last_renewal_secs_ago: r
                    .last_ok
                    .and_then(|t| t.elapsed().ok())
                    .map(|d| d.as_secs_f64()),
                endpoint: self.etcd.preferred_endpoint(),
                error: r.last_error,
            },
            None => RegistrationStatus {
                registered: false,
                lease: None,
                ttl_secs: 0,
                last_renewal_secs_ago: None,
                endpoint: self.etcd.preferred_endpoint(),
                error: None,
            },
        };
        StatusReport {
            peer: PeerStatus {
                id: self.id.clone(),
                name: self.name.clone(),
                version: crate::version::VERSION.into(),
                addrs: advertised.iter().map(SocketAddr::to_string).collect(),
                dataset: self.dataset.display().to_string(),
                uptime_secs: self.started.elapsed().as_secs(),
            },
            index: IndexStatus {
                ready: self.index.is_ready(),
                files: files.len() as u64,
                bytes: files.iter().map(|f| f.size).sum(),
                generation,
                hashed_files: stats.files_hashed,
                queued_files: stats.files_queued,
                queued_bytes: stats.bytes_queued,
            },
            registration,
            peers,
            peers_total,
            files: FilesStatus {
                total: s.files_total,
                refreshed_secs_ago: s.files_at.map(|t| t.elapsed().as_secs_f64()),
                list: s.files.clone(),
            },
            uploads,
            downloads,
            history: History {
                interval_secs: TICK.as_secs(),
                upload: s.history.iter().map(|h| h.0).collect(),
                download: s.history.iter().map(|h| h.1).collect(),
            },
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
