//! A whole running peer: index, server, registration and peer cache,
//! started together and stopped together.
//!
//! Start order: the index opens (hashing goes on in the background), the
//! server binds and serves whatever is already indexed, then the peer
//! registers in etcd and starts its peer cache. A generation watcher thread
//! publishes every new index generation in the peer's etcd record, and the
//! `pbs-status` thread samples what the status page shows
//! ([`crate::status::Monitor`]). Stop order is the reverse, registration
//! first, so the peer disappears from etcd before it stops answering.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Sender};

use crate::digest::Sha1Digest;
use crate::discovery::tracker::Announcer;
use crate::discovery::{
    self, detect_advertise, host_name, load_or_create_peer_id, unix_now, AdvertiseReason,
    DiscoveryError, PeerCache, PeerInfo, PeerRecord, Registration, RegistrationConfig,
};
use crate::etcd;
use crate::index::{Index, IndexError, IndexOptions};
use crate::partial::{self, Partials};
use crate::protocol::{Bitfield, CatalogEntry, FileList, Health, PieceList};
use crate::seeding::UploadCounts;
use crate::server::{
    FileSource, OpenedFile, Page, PageBody, Server, ServerConfig, ServerError, UploadCounter,
};
use crate::status::{self, Monitor, StatusReport, Upload};
use crate::wake::Wake;

/// Index generations are published in etcd at most this often (a dataset
/// being hashed changes generation many times a second).
pub const GEN_PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Everything a peer needs to start.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The directory to share.
    pub dataset: PathBuf,
    /// Where to listen (port 0 picks one).
    pub listen: SocketAddr,
    /// The addresses to publish, best first ([`parse_advertise`](crate::parse_advertise)
    /// reads them from text); when empty, every address another host could
    /// dial is detected, the source address of the route to etcd first.
    pub advertise: Vec<SocketAddr>,
    /// How to reach etcd.
    pub etcd: etcd::Config,
    /// Key namespace.
    pub namespace: String,
    /// Lease TTL.
    pub ttl: Duration,
    /// Where the peer id and index cache live.
    pub state_dir: PathBuf,
    /// Server worker threads (`None`: 4 x cores).
    pub workers: Option<usize>,
    /// Downloads served pieces at once (upload slots, rotated); `None`:
    /// the server's default (5); 0: no limit.
    pub upload_slots: Option<usize>,
    /// Interval of the fallback stat rescan of the dataset.
    pub rescan_interval: Duration,
}

impl PeerConfig {
    /// Defaults for everything but the dataset and state directory.
    pub fn new(dataset: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        PeerConfig {
            dataset: dataset.into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 7070)),
            advertise: Vec::new(),
            etcd: etcd::Config::default(),
            namespace: discovery::DEFAULT_NAMESPACE.into(),
            ttl: discovery::DEFAULT_TTL,
            state_dir: state_dir.into(),
            workers: None,
            upload_slots: None,
            rescan_interval: Duration::from_secs(30),
        }
    }
}

/// Why a peer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The dataset could not be indexed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The listen address could not be bound.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Registration or the peer cache failed to start.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The etcd client could not be built.
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
    /// A thread could not be started.
    #[error("cannot start the peer's generation thread: {0}")]
    Thread(std::io::Error),
}

/// A running peer. Dropping it stops everything, unregistering first.
pub struct Peer {
    id: String,
    /// Never empty.
    advertised: Vec<SocketAddr>,
    gen_stop: Option<Sender<()>>,
    gen_thread: Option<JoinHandle<()>>,
    partials_stop: Option<Sender<()>>,
    partials_thread: Option<JoinHandle<()>>,
    status_stop: Option<Sender<()>>,
    status_thread: Option<JoinHandle<()>>,
    monitor: Arc<Monitor>,
    registration: Option<Registration>,
    announcer: Option<Announcer>,
    cache: Option<Arc<PeerCache>>,
    server: Option<Server>,
    index: Arc<Index>,
}

impl Peer {
    /// Starts a peer. Returns once it listens; registration and hashing
    /// continue in the background (etcd being down is retried, not fatal).
    pub fn start(cfg: PeerConfig) -> Result<Peer, PeerError> {
        let id = load_or_create_peer_id(&cfg.state_dir)?;
        let mut iopts = IndexOptions::new(&cfg.dataset);
        iopts.state_dir = Some(cfg.state_dir.clone());
        iopts.live = true;
        iopts.rescan_interval = cfg.rescan_interval;
        let (partial_tx, partial_rx) = crossbeam_channel::bounded(4096);
        iopts.partial_events = Some(partial_tx);
        let index = Arc::new(Index::open(iopts)?);

        // Raised when what the peer announces in the swarm's tracker may
        // have changed: the announcer looks then, not every 50 ms.
        let announce = Arc::new(Wake::new());
        let partials = Partials::waking(announce.clone());
        let (partials_stop, partials_stopped) = crossbeam_channel::bounded::<()>(1);
        let partials_thread = {
            let partials = partials.clone();
            let index = index.clone();
            let root = std::fs::canonicalize(&cfg.dataset).unwrap_or_else(|_| cfg.dataset.clone());
            std::thread::Builder::new()
                .name("pbs-partials".into())
                .spawn(move || {
                    let indexed = |sha1: &Sha1Digest| index.get(sha1).is_some();
                    let landed = |l: partial::Landed| match l.part {
                        Some(part) => index.adopt_part(l.stat, &part, l.hashed),
                        None => index.adopt(l.stat, l.hashed),
                    };
                    partial::run(
                        &partials,
                        &root,
                        &partial_rx,
                        &partials_stopped,
                        &indexed,
                        &landed,
                    );
                })
                .map_err(PeerError::Thread)?
        };

        let client = etcd::Client::new(cfg.etcd.clone())?;
        let monitor = Monitor::new(
            id.clone(),
            cfg.dataset.clone(),
            index.clone(),
            partials.clone(),
            client.clone(),
        );
        let mut scfg = ServerConfig::default();
        if let Some(w) = cfg.workers {
            scfg.workers = w.max(1);
        }
        if let Some(s) = cfg.upload_slots {
            scfg.upload_slots = s;
        }
        let uploads = Arc::new(UploadCounts::waking(announce.clone()));
        let source = Arc::new(IndexSource {
            index: index.clone(),
            id: id.clone(),
            partials: partials.clone(),
            uploads: uploads.clone(),
            monitor: monitor.clone(),
        });
        let server = Server::bind(cfg.listen, scfg, source)?;
        let notifier = server.have_notifier();
        partials.on_pieces(Box::new(move || notifier.notify()));
        let bound = server.local_addr();
        let advertised: Vec<(SocketAddr, AdvertiseReason)> = if cfg.advertise.is_empty() {
            detect_advertise(bound, &cfg.etcd.endpoints)
        } else {
            cfg.advertise
                .iter()
                .map(|a| (*a, AdvertiseReason::Configured))
                .collect()
        };
        let why: Vec<String> = advertised
            .iter()
            .map(|(a, r)| format!("{a} ({r})"))
            .collect();
        // The version first, so a bug report's log says which build it is.
        log::info!(
            "piratebay-sync {}: peer {id} sharing {} on {bound} advertised as {}",
            crate::version::VERSION,
            cfg.dataset.display(),
            why.join(", ")
        );
        let advertised: Vec<SocketAddr> = advertised.into_iter().map(|(a, _)| a).collect();
        if let Some(first) = advertised.first() {
            log::info!("status page: http://{first}/ (metrics at /metrics)");
        }
        let addrs: Vec<String> = advertised.iter().map(SocketAddr::to_string).collect();

        let record = PeerRecord {
            id: id.clone(),
            addr: addrs.first().cloned().unwrap_or_else(|| bound.to_string()),
            addrs,
            name: host_name(),
            version: crate::version::VERSION.into(),
            started_at: unix_now(),
            index_gen: index.generation(),
        };
        // One watch on etcd: the peer cache's, which also tells the
        // registration about its own key.
        let (registration, key_feed) = Registration::start_fed(
            client.clone(),
            RegistrationConfig {
                namespace: cfg.namespace.clone(),
                ttl: cfg.ttl,
                record,
            },
        )?;
        let cache = Arc::new(PeerCache::start_observed(
            &client,
            &cfg.namespace,
            move |ev| key_feed.observe(ev),
        )?);
        monitor.wire(advertised.clone(), registration.view(), cache.clone());
        let (status_stop, status_stopped) = crossbeam_channel::bounded::<()>(1);
        let status_thread = {
            let monitor = monitor.clone();
            std::thread::Builder::new()
                .name("pbs-status".into())
                .spawn(move || monitor.run(&status_stopped))
                .map_err(PeerError::Thread)?
        };

        let (gen_stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let events = index.subscribe();
        let gen_index = index.clone();
        let gen_sink = registration.publisher();
        let gen_thread = std::thread::Builder::new()
            .name("pbs-index-gen".into())
            .spawn(move || {
                // Debounced: at most one update per GEN_PUBLISH_EVERY, the
                // last change always published (at the end of the window).
                let mut last: Option<Instant> = None;
                let mut pending = false;
                loop {
                    let wait = match (pending, last) {
                        (true, Some(t)) => GEN_PUBLISH_EVERY.saturating_sub(t.elapsed()),
                        (true, None) => Duration::ZERO,
                        (false, _) => Duration::from_secs(3600),
                    };
                    let changes = events.receiver();
                    select! {
                        recv(changes) -> ev => {
                            if ev.is_err() { return; }
                            while changes.try_recv().is_ok() {}
                            pending = true;
                        }
                        recv(stopped) -> _ => return,
                        default(wait) => {}
                    }
                    if pending && last.is_none_or(|t| t.elapsed() >= GEN_PUBLISH_EVERY) {
                        gen_sink.set_index_gen(gen_index.generation());
                        last = Some(Instant::now());
                        pending = false;
                    }
                }
            })
            .map_err(PeerError::Thread)?;
        registration.set_index_gen(index.generation());
        let announcer = {
            let view = registration.view();
            let index = index.clone();
            let partials = partials.clone();
            Announcer::start(
                client.clone(),
                cfg.namespace.clone(),
                id.clone(),
                advertised.iter().map(SocketAddr::to_string).collect(),
                Box::new(move || view.state().lease),
                Box::new(move || holdings(&index, &partials, &uploads)),
                announce,
            )?
        };

        Ok(Peer {
            id,
            advertised,
            gen_stop: Some(gen_stop),
            gen_thread: Some(gen_thread),
            partials_stop: Some(partials_stop),
            partials_thread: Some(partials_thread),
            status_stop: Some(status_stop),
            status_thread: Some(status_thread),
            monitor,
            registration: Some(registration),
            announcer: Some(announcer),
            cache: Some(cache),
            server: Some(server),
            index,
        })
    }

    /// This peer's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The best address published in etcd (the first of [`Peer::advertised_addrs`]).
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertised[0]
    }

    /// Every address published in etcd, best first.
    pub fn advertised_addrs(&self) -> &[SocketAddr] {
        &self.advertised
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(Server::local_addr)
    }

    /// The dataset index.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The other registered peers, from the watch-fed cache (no etcd request).
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.cache
            .as_ref()
            .map(|c| c.others(&self.id))
            .unwrap_or_default()
    }

    /// The peer cache (every registered peer, this one included).
    pub fn cache(&self) -> Option<&PeerCache> {
        self.cache.as_deref()
    }

    /// What the status page shows now.
    pub fn status(&self) -> StatusReport {
        self.monitor.report()
    }

    /// Whether this peer's key is currently in etcd.
    pub fn is_registered(&self) -> bool {
        self.registration
            .as_ref()
            .is_some_and(Registration::is_registered)
    }

    /// Polls until registered or `timeout` passes.
    pub fn wait_registered(&self, timeout: Duration) -> bool {
        self.registration
            .as_ref()
            .is_some_and(|r| r.wait_registered(timeout))
    }

    /// Unregisters (revoking the lease), then stops serving. Same as drop.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if let Some(tx) = self.gen_stop.take() {
            let _ = tx.try_send(());
        }
        if let Some(t) = self.gen_thread.take() {
            let _ = t.join();
        }
        if let Some(tx) = self.status_stop.take() {
            let _ = tx.try_send(());
        }
        if let Some(a) = self.announcer.take() {
            a.stop();
        }
        if let Some(r) = self.registration.take() {
            r.stop();
        }
        if let Some(t) = self.status_thread.take() {
            let _ = t.join();
        }
        // The monitor (also held by the server) lets go of the peer cache,
        // so dropping it here stops the watch.
        self.monitor.unwire();
        self.cache = None;
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        if let Some(tx) = self.partials_stop.take() {
            let _ = tx.try_send(());
        }
        if let Some(t) = self.partials_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// What the peer announces in the swarm tracker: its downloads in
/// progress with at least one piece, then the complete files it uploaded
/// ranges of or was found holding by a lookup (`HEAD`) lately (seeding a
/// swarm), most recent first.
fn holdings(index: &Index, partials: &Partials, uploads: &UploadCounts) -> Vec<(Sha1Digest, bool)> {
    let mut out = partials.announced();
    for sha1 in uploads.active() {
        if index.get(&sha1).is_some() && !out.iter().any(|(s, _)| *s == sha1) {
            out.push((sha1, true));
        }
    }
    out
}

/// The server's view of the index.
struct IndexSource {
    index: Arc<Index>,
    id: String,
    partials: Arc<Partials>,
    uploads: Arc<UploadCounts>,
    monitor: Arc<Monitor>,
}

impl FileSource for IndexSource {
    fn generation(&self) -> u64 {
        self.index.generation()
    }

    fn file_list(&self) -> FileList {
        let (generation, files) = self.index.snapshot();
        let files = files
            .iter()
            .map(|f| CatalogEntry::from(f.as_ref()))
            .collect();
        FileList { generation, files }
    }

    fn file_list_json(&self) -> Result<(u64, Vec<u8>), serde_json::Error> {
        Ok(self.index.catalog_json())
    }

    fn pieces(&self, sha1: &Sha1Digest) -> Option<PieceList> {
        match self.index.get(sha1) {
            Some(f) => Some(f.piece_list()),
            None => self.partials.pieces(sha1),
        }
    }

    fn have(&self, sha1: &Sha1Digest) -> Option<Bitfield> {
        match self.index.get(sha1) {
            Some(f) => Some(Bitfield::full(f.piece_count())),
            None => self.partials.have(sha1),
        }
    }

    fn fresh(&self, sha1: &Sha1Digest, max_pieces: usize) -> Option<Bitfield> {
        self.index
            .get(sha1)
            .filter(|f| f.piece_count() <= max_pieces)
            .map(|f| self.uploads.offer(sha1, f.piece_size(), f.piece_count()))
    }

    fn download_id(&self, sha1: &Sha1Digest) -> Option<String> {
        if self.index.get(sha1).is_some() {
            return None;
        }
        self.partials.download_id(sha1)
    }

    fn indexing(&self) -> Option<u64> {
        // The first scan, or files waiting to settle or being hashed.
        let busy = !self.index.is_ready() || self.index.stats().files_queued > 0;
        busy.then(|| self.index.len() as u64)
    }

    fn note_upload(&self, sha1: &Sha1Digest, start: u64, len: u64) {
        if let Some(f) = self.index.get(sha1) {
            self.uploads
                .note(sha1, f.piece_size(), f.piece_count(), start, len);
        }
    }

    fn note_asked(&self, sha1: &Sha1Digest) {
        if let Some(f) = self.index.get(sha1) {
            self.uploads.asked(sha1, f.piece_size(), f.piece_count());
        }
    }

    fn open(&self, sha1: &Sha1Digest) -> std::io::Result<Option<OpenedFile>> {
        if let Some((file, entry)) = self.index.open_file(sha1)? {
            return Ok(Some(OpenedFile {
                file,
                size: entry.size,
                name: entry.name(),
                held: None,
            }));
        }
        Ok(self.partials.open(sha1)?.map(|p| OpenedFile {
            file: p.file,
            size: p.size,
            name: p.name,
            held: Some((p.held, p.piece_size)),
        }))
    }

    fn health(&self) -> Health {
        Health {
            status: "ok".into(),
            id: Some(self.id.clone()),
            version: crate::version::VERSION.into(),
            index_gen: self.index.generation(),
            files: self.index.len() as u64,
        }
    }

    fn page(&self, page: Page) -> Result<Option<PageBody>, serde_json::Error> {
        status::answer(page, &self.monitor).map(Some)
    }

    fn start_upload(
        &self,
        client: IpAddr,
        sha1: &Sha1Digest,
        name: &str,
    ) -> Option<Box<dyn UploadCounter>> {
        Some(Box::new(Upload::start(client, *sha1, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_etcd_password() {
        let mut cfg = PeerConfig::new("/tmp/dataset", "/tmp/state");
        cfg.etcd.user = Some("pb-user".into());
        cfg.etcd.password = Some("hunter2-secret".into());
        let shown = format!("{cfg:?} {cfg:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("pb-user"), "{shown}");
    }
}
