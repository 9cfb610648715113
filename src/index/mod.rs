//! The dataset index: whole-file and piece SHA1s of every shared file,
//! hashed in parallel, persisted, and kept live.
//!
//! [`Index::open`] returns at once; a background thread (`pbs-index`) owns a
//! rayon pool (`pbs-hash-N`) and keeps the in-memory [`Store`](store) in step
//! with the disk:
//!
//! 1. it loads the cache of the state directory ([`cache`]) straight into the
//!    store, so the last catalog is served at once; a file whose (path,
//!    size, mtime, inode) still matches its record is not read again;
//! 2. it lists the dataset ([`walk`]), drops what changed or went missing,
//!    and hashes what is new or changed, largest first, small files in
//!    tasks of up to 64 ([`hasher`]: whole file and pieces in one read);
//!    every file becomes visible as soon as it is hashed;
//! 3. live (`IndexOptions::live`): inotify events ([`watch`]), debounced, plus a
//!    periodic stat rescan, feed the same reconciliation. A file is hashed
//!    only once its (size, mtime) has been stable for `settle` (or its mtime
//!    is older than that), and its stat is checked again after hashing, so a
//!    half-written file is never announced. A file that reappears elsewhere
//!    with the same (device, inode, size, mtime) (a rename) reuses its hashes.
//!
//! Locks: one `parking_lot::RwLock` around the store (the maps and the
//! generation) and, inside it, a `Mutex` around the subscriber list (lock
//! order: store, then subscribers). Only lookups and map updates happen
//! under them, never file I/O or hashing: readers are never blocked by
//! hashing. The `ready` mutex is independent. The index never does network I/O.
//!
//! Every committed batch of changes raises the generation by one and sends an
//! [`IndexEvent`] to subscribers. The generation starts above both the saved
//! one and the current time in milliseconds, so it never repeats across
//! restarts of the same peer.

mod cache;
mod catalog_json;
mod debounce;
mod dispatch;
mod entry;
mod hasher;
mod progress;
mod reconcile;
mod renames;
mod saver;
mod settle;
mod store;
mod walk;
mod watch;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex, RwLock};

pub use entry::IndexedFile;
pub(crate) use entry::{FileStat, Hashed};
pub use walk::{PART_CHAIN_SUFFIX, PART_STATE_SUFFIX, PART_SUFFIX};

use crate::digest::Sha1Digest;
use store::{Delta, Store};

/// How to build and maintain an index.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// The dataset directory.
    pub root: PathBuf,
    /// Where the cache is kept; `None`: no persistence.
    pub state_dir: Option<PathBuf>,
    /// Watch the directory and rescan periodically after the initial scan.
    pub live: bool,
    /// Time between stat rescans when live (default 30 s).
    pub rescan_interval: Duration,
    /// How long a new or changed file must be unchanged before it is announced (default 500 ms).
    pub settle: Duration,
    /// How long to wait after a file-system event for more before acting (default 100 ms).
    pub debounce: Duration,
    /// Index names starting with `.` too (default false).
    pub include_hidden: bool,
    /// Hashing threads; 0: one per core, at least 2 (default 0).
    pub hash_threads: usize,
    /// When live: the absolute path of every `*.part.state` file that a
    /// file-system event names is sent here, from the watch's own thread
    /// (never blocking; dropped when full). The index itself never lists
    /// downloads in progress, and such events do not wake its thread.
    pub partial_events: Option<crossbeam_channel::Sender<PathBuf>>,
}

impl IndexOptions {
    /// Defaults for `root`: no state dir, not live.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        IndexOptions {
            root: root.into(),
            state_dir: None,
            live: false,
            rescan_interval: Duration::from_secs(30),
            settle: Duration::from_millis(500),
            debounce: Duration::from_millis(100),
            include_hidden: false,
            hash_threads: 0,
            partial_events: None,
        }
    }
}

/// Why an index could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The dataset directory cannot be opened: missing, or a parent
    /// directory not searchable (the source says which).
    #[error("cannot open dataset directory {}: {source}", path.display())]
    OpenDataset {
        /// The directory given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The dataset directory exists but cannot be listed.
    #[error("cannot list dataset directory {}: {source}", path.display())]
    ListDataset {
        /// The directory given.
        path: PathBuf,
        /// Why (permission denied...).
        #[source]
        source: std::io::Error,
    },
    /// The dataset path is not a directory.
    #[error("dataset {} is not a directory", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The file-system watcher could not be started. (No longer returned:
    /// the watch is set up on the index thread, after the cache is served,
    /// because a recursive watch stats the whole tree; a failure is logged
    /// and the periodic rescan keeps the index current.)
    #[error("cannot watch {} for changes: {source}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The background thread could not be started.
    #[error("cannot start the index thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// One committed batch of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEvent {
    /// The generation after this batch.
    pub generation: u64,
    /// Contents that appeared.
    pub added: Vec<Sha1Digest>,
    /// Contents that disappeared.
    pub removed: Vec<Sha1Digest>,
    /// Contents whose paths changed.
    pub updated: Vec<Sha1Digest>,
}

/// The change notifications of one subscriber ([`Index::subscribe`]): one
/// [`IndexEvent`] per committed batch, in order. A subscriber that falls
/// 4096 events behind misses the next ones (the generation stays exact).
/// Ends when the index is dropped.
#[derive(Debug)]
pub struct IndexEvents(Receiver<IndexEvent>);

impl IndexEvents {
    /// The next event; `None` once the index is dropped.
    pub fn recv(&self) -> Option<IndexEvent> {
        self.0.recv().ok()
    }

    /// The next event within `timeout`; `None` if none came (or the index
    /// is dropped).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<IndexEvent> {
        self.0.recv_timeout(timeout).ok()
    }

    /// The events already there, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = IndexEvent> + '_ {
        self.0.try_iter()
    }

    /// The channel, for `select!` in the crate.
    pub(crate) fn receiver(&self) -> &Receiver<IndexEvent> {
        &self.0
    }
}

/// What the index has done since it opened ([`Index::stats`]): files hashed,
/// reused and queued, unreadable ones, scans; for progress displays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Files whose content was read and hashed since open.
    pub files_hashed: u64,
    /// Bytes of those files.
    pub bytes_hashed: u64,
    /// Bytes read so far, including files still being hashed.
    pub bytes_read: u64,
    /// Files taken from the cache or from a rename without reading them.
    pub files_reused: u64,
    /// Files waiting to settle or being hashed.
    pub files_queued: u64,
    /// Their bytes.
    pub bytes_queued: u64,
    /// Files and directories that could not be read (each warned about once).
    pub unreadable: u64,
    /// Completed full scans (the initial one and each periodic rescan).
    pub scans: u64,
}

#[derive(Default)]
struct Counters {
    files_hashed: AtomicU64,
    bytes_hashed: AtomicU64,
    bytes_read: AtomicU64,
    files_reused: AtomicU64,
    files_queued: AtomicU64,
    bytes_queued: AtomicU64,
    unreadable: AtomicU64,
    scans: AtomicU64,
}

/// What the handle and the background thread share.
struct Shared {
    root: PathBuf,
    store: RwLock<Store>,
    subscribers: Mutex<Vec<Sender<IndexEvent>>>,
    ready: Mutex<bool>,
    ready_cv: Condvar,
    stop: AtomicBool,
    counters: Counters,
    /// Descriptors of served files kept open (by absolute path), dropped
    /// when their path leaves the store.
    kept: crate::kept::KeptFiles,
}

/// Capacity of each subscriber's channel; a subscriber that falls this far
/// behind misses events (the generation stays authoritative).
const SUBSCRIBER_BACKLOG: usize = 4096;

impl Shared {
    /// Commits a batch; must be called with the store write-locked.
    fn commit(&self, store: &mut Store, delta: Delta) {
        if let Some(ev) = store.commit(delta) {
            // A removed or changed file's kept descriptor goes now (a
            // removed file's space is freed by its last close).
            self.kept.retain(|abs| {
                abs.strip_prefix(&self.root)
                    .is_ok_and(|rel| store.lookup(rel).is_some())
            });
            let mut subs = self.subscribers.lock();
            subs.retain(|s| match s.try_send(ev.clone()) {
                Ok(()) => true,
                Err(crossbeam_channel::TrySendError::Full(_)) => {
                    log::debug!("index: a subscriber is behind; event dropped");
                    true
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
            });
        }
    }

    fn set_ready(&self) {
        *self.ready.lock() = true;
        self.ready_cv.notify_all();
    }
}

/// A running index of one dataset directory. `Send + Sync`; dropping it
/// stops and joins its threads (and saves the cache if it changed).
pub struct Index {
    shared: Arc<Shared>,
    ctl: Sender<worker::Ctl>,
    thread: Option<JoinHandle<()>>,
}

/// The order of `Vec<PathBuf>::cmp` (component by component), computed on
/// the bytes with `/` ranked lowest: the same order for the relative,
/// normalized paths of the index, without `Path::components` (which made
/// sorting 100,000 entries cost more than listing them).
fn paths_order<'a>(
    a: impl ExactSizeIterator<Item = &'a Path>,
    b: impl ExactSizeIterator<Item = &'a Path>,
) -> std::cmp::Ordering {
    use std::os::unix::ffi::OsStrExt;
    let key = |c: &u8| if *c == b'/' { 0 } else { u16::from(*c) + 1 };
    let (na, nb) = (a.len(), b.len());
    for (x, y) in a.zip(b) {
        let (x, y) = (x.as_os_str().as_bytes(), y.as_os_str().as_bytes());
        let o = match x.iter().zip(y).find(|(p, q)| p != q) {
            Some((p, q)) => key(p).cmp(&key(q)),
            None => x.len().cmp(&y.len()),
        };
        if o.is_ne() {
            return o;
        }
    }
    na.cmp(&nb)
}

/// `files` in [`paths_order`], each compared by its first path first
/// (the paths of two entries never coincide, so that decides). Each entry
/// gets a 16-byte key first: its path's first bytes with `/` written as 0
/// (a path holds no NUL, so the byte order of the keys is the order of
/// [`bytes_order`]); most comparisons are then one `u128` comparison, and
/// only equal keys compare the whole paths (sorting 100,000 entries byte
/// by byte took ~25 ms).
fn sort_by_paths(files: Vec<Arc<IndexedFile>>) -> Vec<Arc<IndexedFile>> {
    use std::os::unix::ffi::OsStrExt;
    let mut keyed: Vec<(u128, &[u8], usize)> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let path = f.path().as_os_str().as_bytes();
            let mut key = [0u8; 16];
            for (k, c) in key.iter_mut().zip(path) {
                *k = if *c == b'/' { 0 } else { *c };
            }
            (u128::from_be_bytes(key), path, i)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| bytes_order(a.1, b.1))
            .then_with(|| paths_order(files[a.2].paths(), files[b.2].paths()))
    });
    keyed.iter().map(|(_, _, i)| files[*i].clone()).collect()
}

/// One path's bytes in the order of [`paths_order`].
fn bytes_order(x: &[u8], y: &[u8]) -> std::cmp::Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { u16::from(c) + 1 };
    match x.iter().zip(y).position(|(p, q)| p != q) {
        Some(i) => key(x[i]).cmp(&key(y[i])),
        None => x.len().cmp(&y.len()),
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2))
        .unwrap_or(0)
}

impl Index {
    /// The canonical path of a dataset directory, after checking that it
    /// exists, is a directory and can be listed: what [`Index::open`]
    /// checks first, for a caller that wants the answer before starting
    /// anything else.
    pub fn check_dataset(root: &Path) -> Result<PathBuf, IndexError> {
        let canonical = std::fs::canonicalize(root).map_err(|source| IndexError::OpenDataset {
            path: root.to_path_buf(),
            source,
        })?;
        if !canonical.is_dir() {
            return Err(IndexError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        std::fs::read_dir(&canonical).map_err(|source| IndexError::ListDataset {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(canonical)
    }

    /// Loads the cache, starts background hashing (and the live watcher if
    /// `opts.live`); returns at once.
    pub fn open(opts: IndexOptions) -> Result<Index, IndexError> {
        let root = Index::check_dataset(&opts.root)?;
        let shared = Arc::new(Shared {
            root: root.clone(),
            store: RwLock::new(Store::new(unix_millis())),
            subscribers: Mutex::new(Vec::new()),
            ready: Mutex::new(false),
            ready_cv: Condvar::new(),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            kept: crate::kept::KeptFiles::bounded(true),
        });
        let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
        let w = worker::Worker::new(opts, root, shared.clone(), ctl_rx);
        let thread = std::thread::Builder::new()
            .name("pbs-index".into())
            .spawn(move || w.run())
            .map_err(IndexError::Spawn)?;
        Ok(Index {
            shared,
            ctl: ctl_tx,
            thread: Some(thread),
        })
    }

    /// Blocks until the initial scan has hashed everything (files still being
    /// written are not waited for). `None`: no time limit. True if ready.
    pub fn wait_ready(&self, timeout: Option<Duration>) -> bool {
        let mut ready = self.shared.ready.lock();
        match timeout {
            None => {
                while !*ready {
                    self.shared.ready_cv.wait(&mut ready);
                }
                true
            }
            Some(t) => {
                let deadline = std::time::Instant::now() + t;
                while !*ready {
                    if self
                        .shared
                        .ready_cv
                        .wait_until(&mut ready, deadline)
                        .timed_out()
                    {
                        break;
                    }
                }
                *ready
            }
        }
    }

    /// True once the initial scan is done.
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.lock()
    }

    /// The current generation: it goes up on every change.
    pub fn generation(&self) -> u64 {
        self.shared.store.read().generation
    }

    /// Number of distinct contents indexed.
    pub fn len(&self) -> usize {
        self.shared.store.read().len()
    }

    /// True if nothing is indexed (yet).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, sorted by first path.
    pub fn files(&self) -> Vec<Arc<IndexedFile>> {
        self.snapshot().1
    }

    /// Every entry, sorted by first path, and the generation they were
    /// taken at: both read under one lock (sorted after it is released).
    pub fn snapshot(&self) -> (u64, Vec<Arc<IndexedFile>>) {
        let (generation, v) = {
            let store = self.shared.store.read();
            let v: Vec<_> = store.entries().cloned().collect();
            (store.generation, v)
        };
        (generation, sort_by_paths(v))
    }

    /// The catalog body (`GET /v1/files`, JSON) at the current generation,
    /// and that generation: [`snapshot`](Self::snapshot) written straight
    /// into one buffer.
    pub fn catalog_json(&self) -> (u64, Vec<u8>) {
        let (generation, files) = self.snapshot();
        let mut out = Vec::new();
        catalog_json::write(generation, &files, &mut out);
        (generation, out)
    }

    /// The entry of a content, if indexed.
    pub fn get(&self, sha1: &Sha1Digest) -> Option<Arc<IndexedFile>> {
        self.shared.store.read().get(sha1).cloned()
    }

    /// The sha1 indexed for a path relative to the root, if any.
    pub fn sha1_of(&self, rel: &Path) -> Option<Sha1Digest> {
        self.shared.store.read().lookup(rel).map(|(s, _)| s)
    }

    /// Opens the file's bytes for serving after checking size, mtime,
    /// ctime and inode (and that it is still a regular file) against the
    /// index; a changed file is dropped from the index, queued for rehash,
    /// and `Ok(None)` is returned. Tries every path holding the content.
    ///
    /// The descriptor is shared and kept open for the next requests (at
    /// most 32 files, each closed after 5 s unused or when its path leaves
    /// the index): read it at an offset (`pread`, `sendfile`), never by
    /// its position. A kept one is handed out only while its path still
    /// names it and the path's stat is the one hashed, checked at every
    /// call as an opened file's is.
    pub fn open_file(
        &self,
        sha1: &Sha1Digest,
    ) -> std::io::Result<Option<(Arc<std::fs::File>, Arc<IndexedFile>)>> {
        let Some(entry) = self.get(sha1) else {
            return Ok(None);
        };
        let mut stale = Vec::new();
        let mut last_err = None;
        for loc in entry.locations() {
            let (rel, indexed) = (&*loc.path, &loc.stat);
            let abs = self.shared.root.join(rel);
            if let Some((file, meta)) = self.shared.kept.get(&abs) {
                if FileStat::of(&meta).same_content_key(indexed) {
                    return Ok(Some((file, entry.clone())));
                }
                // Changed in place: judged by an open of it, below.
                self.shared.kept.forget(&abs);
            }
            match hasher::open_regular(&abs) {
                Ok((file, now)) if now.same_content_key(indexed) => {
                    if !stale.is_empty() {
                        self.drop_stale(sha1, &entry, &stale);
                    }
                    let file = Arc::new(file);
                    if let Ok(meta) = file.metadata() {
                        self.shared.kept.keep(&abs, &file, &meta);
                    }
                    return Ok(Some((file, entry.clone())));
                }
                Ok(_) => stale.push(rel.to_path_buf()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput
                    ) =>
                {
                    stale.push(rel.to_path_buf())
                }
                Err(e) => last_err = Some(e),
            }
        }
        self.drop_stale(sha1, &entry, &stale);
        match last_err {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    fn drop_stale(&self, sha1: &Sha1Digest, entry: &IndexedFile, stale: &[PathBuf]) {
        if stale.is_empty() {
            return;
        }
        {
            let mut store = self.shared.store.write();
            let mut delta = Delta::default();
            for rel in stale {
                let indexed = entry.locations().iter().find(|l| *l.path == **rel);
                let current = store.lookup(rel);
                if let (Some(l), Some((s, cur))) = (indexed, current) {
                    if s == *sha1 && cur == l.stat {
                        store.remove(rel, &mut delta);
                    }
                }
            }
            self.shared.commit(&mut store, delta);
        }
        for rel in stale {
            log::info!(
                "index: {} changed on disk since it was hashed; rehashing it",
                rel.display()
            );
            let _ = self.ctl.send(worker::Ctl::Recheck(rel.clone()));
        }
    }

    /// A file with `stat` is known to hold `hashed` (a download verified
    /// it and renamed it into the dataset): when the index finds a path
    /// with that exact stat within a minute, it takes these hashes instead
    /// of reading the file.
    pub(crate) fn adopt(&self, stat: FileStat, hashed: Hashed) {
        let _ = self
            .ctl
            .send(worker::Ctl::Adopt(stat, None, Arc::new(hashed)));
    }

    /// A download whose every piece is verified against `hashed`, still at
    /// `part` (absolute, in the dataset) with `stat`: when it is renamed
    /// into place (same device, inode, size and mtime, under another path)
    /// the index takes `hashed` instead of reading it, within a minute.
    pub(crate) fn adopt_part(&self, stat: FileStat, part: &Path, hashed: Hashed) {
        let Ok(rel) = part.strip_prefix(&self.shared.root) else {
            return;
        };
        let _ = self.ctl.send(worker::Ctl::Adopt(
            stat,
            Some(rel.to_path_buf()),
            Arc::new(hashed),
        ));
    }

    /// Change notifications: one [`IndexEvent`] per committed batch.
    pub fn subscribe(&self) -> IndexEvents {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_BACKLOG);
        self.shared.subscribers.lock().push(tx);
        IndexEvents(rx)
    }

    /// Asks for a stat rescan of the whole dataset now (live or not).
    pub fn rescan(&self) {
        let _ = self.ctl.send(worker::Ctl::Rescan);
    }

    /// The canonical dataset directory.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Counters for progress and tests.
    pub fn stats(&self) -> IndexStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IndexStats {
            files_hashed: l(&c.files_hashed),
            bytes_hashed: l(&c.bytes_hashed),
            bytes_read: l(&c.bytes_read),
            files_reused: l(&c.files_reused),
            files_queued: l(&c.files_queued),
            bytes_queued: l(&c.bytes_queued),
            unreadable: l(&c.unreadable),
            scans: l(&c.scans),
        }
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = self.ctl.send(worker::Ctl::Stop);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("bug: the index thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_order_is_the_component_order() {
        use std::os::unix::ffi::OsStrExt;
        let names = [
            "a", "a/b", "a-b", "a.b", "a/b/c", "a/bc", "ab", "a b", "b", "\u{ff}x", "a/\u{7f}",
        ];
        let mut paths: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
        paths.push(PathBuf::from(std::ffi::OsStr::from_bytes(b"a/\xff")));
        let lists: Vec<Vec<PathBuf>> = paths
            .iter()
            .flat_map(|p| [vec![p.clone()], vec![p.clone(), PathBuf::from("z")]])
            .collect();
        fn it(v: &[PathBuf]) -> impl ExactSizeIterator<Item = &Path> {
            v.iter().map(PathBuf::as_path)
        }
        for x in &lists {
            for y in &lists {
                assert_eq!(paths_order(it(x), it(y)), x.cmp(y), "{x:?} vs {y:?}");
            }
        }
    }

    #[test]
    fn index_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Index>();
    }
}
