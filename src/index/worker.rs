//! The index's background thread: it owns the hashing pool and is the only
//! code that decides what to hash. It lists the dataset, reuses cached
//! hashes, waits for files to settle, spawns hashing tasks, folds their
//! results into the store, reacts to file-system events and periodic
//! rescans, and saves the cache.
//!
//! State kept here, outside any lock (only this thread touches it):
//! `pending` (files waiting to be stable), `inflight` (being hashed, with a
//! token so a result for a file that changed meanwhile is dropped),
//! `failed` (unreadable, warned once per stat), and `removed` (hashes of
//! removed files by device and inode, kept a minute) so renames are not
//! rehashed: a rename's two paths arrive in one batch of events, or one
//! rescan, where removals are applied first. (No table of every indexed
//! file's inode: at 100,000 files it cost more memory than it saved work.)
//!
//! Start: the cache's records go into the store at once, before the dataset
//! is listed, so a restarted peer serves its last catalog immediately; the
//! initial scan then checks every path in the background (anything changed
//! is dropped before it could be served: `open_file` checks the stat too).
//! The cache is written again only after a change was committed.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver, Sender};
use notify::{RecommendedWatcher, Watcher};

use super::cache;
use super::entry::{FileStat, Hashed};
use super::hasher::{self, HashedFile};
use super::store::{Delta, Store};
use super::walk::{Kind, WalkRules, PART_STATE_SUFFIX};
use super::{IndexOptions, Shared};

/// Messages from the handle.
pub enum Ctl {
    /// A path was found changed when opened: look at it again.
    Recheck(PathBuf),
    /// Rescan everything now.
    Rescan,
    /// Stop the thread.
    Stop,
}

/// A running watcher and its event channel.
pub struct Watch {
    _watcher: RecommendedWatcher,
    events: Receiver<notify::Result<notify::Event>>,
}

/// Starts a recursive watch of `root`.
pub fn watch(root: &Path) -> notify::Result<Watch> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut w = notify::recommended_watcher(tx)?;
    w.watch(root, notify::RecursiveMode::Recursive)?;
    Ok(Watch {
        _watcher: w,
        events: rx,
    })
}

struct HashResult {
    rel: PathBuf,
    token: u64,
    outcome: io::Result<HashedFile>,
}

struct Pending {
    stat: FileStat,
    since: Instant,
    /// Part of the initial scan: `wait_ready` waits for it.
    initial: bool,
}

struct Removed {
    stat: FileStat,
    hashed: Arc<Hashed>,
    at: Instant,
}

/// How long hashes of a removed file are kept for a rename to reuse.
const KEEP_REMOVED: Duration = Duration::from_secs(60);
/// How often pending files are stat'ed again.
const SETTLE_TICK: Duration = Duration::from_millis(100);
/// Longest wait for a quiet moment after file-system events.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// Delay between a change and the cache save it causes.
const SAVE_DELAY: Duration = Duration::from_secs(2);
/// Interval of progress log lines while hashing.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// More dirty paths than this and a full rescan is cheaper.
const MAX_DIRTY: usize = 1000;
/// Most files in one hashing task.
const CHUNK_FILES: usize = 64;
/// Most bytes in one hashing task (a larger file is a task of its own).
const CHUNK_BYTES: u64 = 4 << 20;
/// How often the queued-bytes counter is recomputed while hashing (it sums
/// every queued file: doing it after each result made a cold start quadratic).
const COUNTERS_EVERY: Duration = Duration::from_millis(100);

pub struct Worker {
    opts: IndexOptions,
    rules: WalkRules,
    shared: Arc<Shared>,
    ctl: Receiver<Ctl>,
    watch: Option<Watch>,
    cache_path: Option<PathBuf>,
    removed: HashMap<(u64, u64), Removed>,
    next_counters: Instant,
    pending: HashMap<PathBuf, Pending>,
    inflight: HashMap<PathBuf, (FileStat, u64)>,
    next_token: u64,
    failed: HashMap<PathBuf, Option<FileStat>>,
    dirty: HashSet<PathBuf>,
    dirty_full: bool,
    first_dirty: Option<Instant>,
    last_event: Instant,
    save_due: Option<Instant>,
    next_rescan: Instant,
    ready: bool,
    progress: Progress,
}

struct Progress {
    opened: Instant,
    started: Instant,
    last_log: Instant,
    files_at_start: u64,
    bytes_at_start: u64,
}

impl Worker {
    pub fn new(opts: IndexOptions, root: PathBuf, shared: Arc<Shared>, ctl: Receiver<Ctl>) -> Self {
        let state_dir = opts.state_dir.as_ref().map(|d| {
            let abs = std::path::absolute(d).unwrap_or_else(|_| d.clone());
            fs::canonicalize(&abs).unwrap_or(abs)
        });
        let cache_path = state_dir.as_ref().map(|d| cache::cache_path(d, &root));
        let rules = WalkRules {
            root,
            include_hidden: opts.include_hidden,
            exclude: state_dir.into_iter().collect(),
        };
        let now = Instant::now();
        Worker {
            next_rescan: now + opts.rescan_interval,
            opts,
            rules,
            shared,
            ctl,
            watch: None,
            cache_path,
            removed: HashMap::new(),
            next_counters: now,
            pending: HashMap::new(),
            inflight: HashMap::new(),
            next_token: 0,
            failed: HashMap::new(),
            dirty: HashSet::new(),
            dirty_full: false,
            first_dirty: None,
            last_event: now,
            save_due: None,
            ready: false,
            progress: Progress {
                opened: now,
                started: now,
                last_log: now,
                files_at_start: 0,
                bytes_at_start: 0,
            },
        }
    }

    /// The thread body: builds the hashing pool and runs the loop inside it.
    pub fn run(mut self) {
        let threads = match self.opts.hash_threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(2),
            n => n,
        };
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("pbs-hash-{i}"))
            .build_scoped(|t| t.run(), |pool| self.main_loop(pool));
        if let Err(e) = built {
            log::error!("index: cannot start hashing threads: {e}");
            self.shared.set_ready();
        }
    }

    fn main_loop(&mut self, pool: &rayon::ThreadPool) {
        let (res_tx, res_rx) = crossbeam_channel::unbounded::<Vec<HashResult>>();
        // The cache goes into the store (and is served) while the dataset
        // is listed: both take about as long at 100,000 files. The watch is
        // set up before the listing, so no change is missed, and not before
        // the cache is served (a recursive watch lists the whole tree too).
        let rules = self.rules.clone();
        let live = self.opts.live;
        let ((), (watched, listing)) = pool.join(
            || self.load_cache(),
            || {
                let watched = live.then(|| watch(&rules.root));
                (watched, rules.list_in(Path::new(""), Some(pool)))
            },
        );
        match watched {
            Some(Ok(w)) => self.watch = Some(w),
            Some(Err(e)) => log::warn!(
                "index: cannot watch {} for changes ({e}); changes are seen by the rescan every {} s",
                self.rules.root.display(),
                self.opts.rescan_interval.as_secs()
            ),
            None => {}
        }
        self.apply_listing(
            pool,
            &res_tx,
            &[PathBuf::new()],
            listing.files,
            listing.errors,
        );
        self.shared.counters.scans.fetch_add(1, Ordering::Relaxed);
        let events = match &self.watch {
            Some(w) => w.events.clone(),
            None => crossbeam_channel::never(),
        };
        loop {
            self.after_step();
            if self.shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let timeout = self.next_wake().saturating_duration_since(Instant::now());
            select! {
                recv(res_rx) -> r => {
                    if let Ok(mut batch) = r {
                        batch.extend(res_rx.try_iter().flatten());
                        self.fold_results(batch);
                    }
                }
                recv(events) -> ev => {
                    if let Ok(ev) = ev {
                        self.note_event(ev);
                        for ev in events.try_iter() {
                            self.note_event(ev);
                        }
                    }
                }
                recv(self.ctl) -> c => match c {
                    Ok(Ctl::Recheck(rel)) => self.mark_dirty(rel),
                    Ok(Ctl::Rescan) => self.mark_full(),
                    Ok(Ctl::Stop) | Err(_) => break,
                },
                default(timeout) => {}
            }
            let now = Instant::now();
            if self.first_dirty.is_some_and(|first| {
                now >= self.last_event + self.opts.debounce || now >= first + DEBOUNCE_MAX
            }) {
                self.first_dirty = None;
                let scopes: Vec<PathBuf> = if self.dirty_full {
                    vec![PathBuf::new()]
                } else {
                    self.dirty.drain().collect()
                };
                self.dirty.clear();
                self.dirty_full = false;
                self.reconcile(pool, &res_tx, &scopes);
            }
            if self.opts.live && now >= self.next_rescan {
                self.next_rescan = now + self.opts.rescan_interval;
                self.reconcile(pool, &res_tx, &[PathBuf::new()]);
                self.shared.counters.scans.fetch_add(1, Ordering::Relaxed);
            }
            if !self.pending.is_empty() {
                self.check_pending(pool, &res_tx);
            }
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        if self.save_due.is_some() {
            self.save();
        }
    }

    /// The earliest moment something is due.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut t = now + Duration::from_secs(3600);
        if let Some(first) = self.first_dirty {
            t = t.min((self.last_event + self.opts.debounce).min(first + DEBOUNCE_MAX));
        }
        if self.opts.live {
            t = t.min(self.next_rescan);
        }
        if !self.pending.is_empty() {
            t = t.min(now + SETTLE_TICK);
        }
        if let Some(s) = self.save_due {
            t = t.min(s);
        }
        if !self.inflight.is_empty() {
            t = t.min(self.progress.last_log + PROGRESS_EVERY);
        }
        t
    }

    /// Bookkeeping after each loop step: counters, readiness, saves, progress.
    fn after_step(&mut self) {
        let c = &self.shared.counters;
        let queued = self.pending.len() + self.inflight.len();
        c.files_queued.store(queued as u64, Ordering::Relaxed);
        let now = Instant::now();
        if queued == 0 {
            c.bytes_queued.store(0, Ordering::Relaxed);
        } else if now >= self.next_counters {
            self.next_counters = now + COUNTERS_EVERY;
            let bytes: u64 = self.pending.values().map(|p| p.stat.size).sum::<u64>()
                + self.inflight.values().map(|(s, _)| s.size).sum::<u64>();
            c.bytes_queued.store(bytes, Ordering::Relaxed);
        }
        c.unreadable
            .store(self.failed.len() as u64, Ordering::Relaxed);
        if !self.ready && self.inflight.is_empty() && !self.pending.values().any(|p| p.initial) {
            self.ready = true;
            self.log_progress(true);
            if self.save_due.is_some() {
                self.save();
            }
            self.shared.set_ready();
        } else if !self.inflight.is_empty() && now >= self.progress.last_log + PROGRESS_EVERY {
            self.log_progress(false);
        }
        if self.ready && self.save_due.is_some_and(|t| now >= t) {
            self.save();
        }
        if !self.removed.is_empty() {
            self.removed
                .retain(|_, r| now.duration_since(r.at) < KEEP_REMOVED);
        }
    }

    fn log_progress(&mut self, done: bool) {
        let c = &self.shared.counters;
        let files = c.files_hashed.load(Ordering::Relaxed) - self.progress.files_at_start;
        let bytes = c.bytes_read.load(Ordering::Relaxed) - self.progress.bytes_at_start;
        let secs = self.progress.started.elapsed().as_secs_f64().max(1e-6);
        let mbs = bytes as f64 / 1e6 / secs;
        self.progress.last_log = Instant::now();
        if done {
            let files = c.files_hashed.load(Ordering::Relaxed);
            let bytes = c.bytes_hashed.load(Ordering::Relaxed);
            let secs = self.progress.opened.elapsed().as_secs_f64().max(1e-6);
            let mbs = bytes as f64 / 1e6 / secs;
            let (paths, contents) = {
                let s = self.shared.store.read();
                (s.by_path.len(), s.by_sha1.len())
            };
            log::info!(
                "index: ready: {paths} files ({contents} distinct); hashed {files} files, {:.1} MiB in {secs:.2} s ({mbs:.0} MB/s); {} reused",
                bytes as f64 / 1048576.0,
                c.files_reused.load(Ordering::Relaxed),
            );
        } else {
            log::info!(
                "index: hashing: {files} files, {:.1} MiB done, {} files queued ({:.1} MiB), {mbs:.0} MB/s",
                bytes as f64 / 1048576.0,
                self.pending.len() + self.inflight.len(),
                c.bytes_queued.load(Ordering::Relaxed) as f64 / 1048576.0,
            );
        }
    }

    fn load_cache(&mut self) {
        let Some(path) = &self.cache_path else { return };
        let shared = self.shared.clone();
        let mut store = shared.store.write();
        let mut delta = Delta::default();
        let mut n = 0usize;
        let loaded = cache::load(
            path,
            &self.rules.root,
            self.opts.piece_size,
            |count, rel, stat, h| {
                if n == 0 {
                    store.reserve(count);
                }
                store.load(rel, stat, h, &mut delta);
                n += 1;
            },
        );
        match loaded {
            Ok(Some(generation)) => {
                store.generation = store.generation.max(generation.saturating_add(1));
                // Not `self.commit`: serving what the cache holds is no
                // change to save.
                shared.commit(&mut store, delta);
                log::debug!(
                    "index: {n} cached records in {} loaded in {} ms",
                    path.display(),
                    self.progress.opened.elapsed().as_millis()
                );
            }
            Ok(None) => log::debug!("index: no cache at {} yet", path.display()),
            Err(e) => log::warn!("{e}"),
        }
    }

    fn save(&mut self) {
        self.save_due = None;
        let Some(path) = &self.cache_path else { return };
        let (generation, entries) = {
            let s = self.shared.store.read();
            (
                s.generation,
                s.by_sha1.values().cloned().collect::<Vec<_>>(),
            )
        };
        match cache::save(path, &self.rules.root, generation, &entries) {
            Ok(n) => log::debug!("index: saved {n} records to {}", path.display()),
            Err(e) => log::warn!("{e}"),
        }
    }

    fn note_event(&mut self, ev: notify::Result<notify::Event>) {
        use notify::event::{AccessKind, AccessMode, EventKind};
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                log::warn!("index: file-system watch error ({e}); rescanning");
                self.mark_full();
                return;
            }
        };
        if ev.need_rescan() {
            self.mark_full();
            return;
        }
        if let EventKind::Access(a) = ev.kind {
            if a != AccessKind::Close(AccessMode::Write) {
                return;
            }
        }
        if let Some(tx) = &self.opts.partial_events {
            for p in &ev.paths {
                if p.as_os_str()
                    .as_bytes()
                    .ends_with(PART_STATE_SUFFIX.as_bytes())
                {
                    let _ = tx.try_send(p.clone());
                }
            }
        }
        for p in ev.paths {
            match p.strip_prefix(&self.rules.root) {
                Ok(rel) => self.mark_dirty(rel.to_path_buf()),
                Err(_) => self.mark_full(),
            }
        }
    }

    fn mark_dirty(&mut self, rel: PathBuf) {
        if rel.as_os_str().is_empty() || self.dirty.len() >= MAX_DIRTY {
            self.dirty_full = true;
        } else {
            self.dirty.insert(rel);
        }
        self.touch_dirty();
    }

    fn mark_full(&mut self) {
        self.dirty_full = true;
        self.touch_dirty();
    }

    fn touch_dirty(&mut self) {
        let now = Instant::now();
        self.last_event = now;
        self.first_dirty.get_or_insert(now);
    }

    /// Hashes known without reading: a recently removed file with the same
    /// device, inode, size and mtime (a rename).
    fn reuse(&self, stat: &FileStat) -> Option<Arc<Hashed>> {
        let r = self.removed.get(&(stat.dev, stat.ino))?;
        (r.stat == *stat && r.hashed.piece_size == self.opts.piece_size).then(|| r.hashed.clone())
    }

    /// Brings the store in line with the disk under each scope (relative
    /// paths; empty = everything): removes what is gone or changed, reuses
    /// known hashes, queues the rest.
    fn reconcile(
        &mut self,
        pool: &rayon::ThreadPool,
        res: &Sender<Vec<HashResult>>,
        scopes: &[PathBuf],
    ) {
        let started = Instant::now();
        let mut files: Vec<(PathBuf, FileStat)> = Vec::new();
        let mut errors = Vec::new();
        for scope in scopes {
            let listing = self.rules.list_in(scope, Some(pool));
            errors.extend(listing.errors);
            if files.is_empty() {
                files = listing.files; // moved, not copied: it can be 100,000 long
            } else {
                files.extend(listing.files);
            }
        }
        log::debug!(
            "index: listed {} files in {} ms",
            files.len(),
            started.elapsed().as_millis()
        );
        self.apply_listing(pool, res, scopes, files, errors);
    }

    /// The second half of [`reconcile`](Self::reconcile): `files` and
    /// `errors` are what listing `scopes` found.
    fn apply_listing(
        &mut self,
        pool: &rayon::ThreadPool,
        res: &Sender<Vec<HashResult>>,
        scopes: &[PathBuf],
        mut files: Vec<(PathBuf, FileStat)>,
        errors: Vec<(PathBuf, io::Error)>,
    ) {
        let errors: HashMap<PathBuf, io::Error> = errors.into_iter().collect();
        if scopes.len() > 1 {
            // Scopes may overlap (a directory and a file in it).
            files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            files.dedup_by(|a, b| a.0 == b.0);
        }
        let full = scopes.iter().any(|s| s.as_os_str().is_empty());
        let under = |p: &Path| full || scopes.iter().any(|s| p.starts_with(s));
        let now = Instant::now();
        // The common cases (first scan, nothing changed) need no map of what
        // was found: only when some indexed path was not confirmed by the
        // listing, or other state needs lookups, is one built.
        let (hits, store_under) = {
            let store = self.shared.store.read();
            let hits = files
                .iter()
                .filter(|(p, st)| {
                    store
                        .by_path
                        .get(p)
                        .is_some_and(|(_, s)| s.same_content_key(st))
                })
                .count();
            let store_under = if full {
                store.by_path.len()
            } else {
                store.by_path.keys().filter(|p| under(p)).count()
            };
            (hits, store_under)
        };
        let need_map = hits != store_under
            || !self.pending.is_empty()
            || !self.inflight.is_empty()
            || !self.failed.is_empty();
        let mut stale: Vec<PathBuf> = Vec::new();
        if need_map {
            let found: HashMap<&Path, &FileStat> =
                files.iter().map(|(p, s)| (p.as_path(), s)).collect();
            // Forget what is gone; a failure is kept (and not warned again) while it lasts.
            self.pending
                .retain(|p, _| !under(p) || found.contains_key(p.as_path()));
            self.inflight
                .retain(|p, _| !under(p) || found.contains_key(p.as_path()));
            self.failed.retain(|p, s| {
                !under(p)
                    || match s {
                        None => errors.contains_key(p),
                        Some(st) => found.get(p.as_path()) == Some(&&*st),
                    }
            });
            if hits != store_under {
                // A different device number alone (the cache's after a
                // reboot) is no change of content: the path is updated, not
                // rehashed.
                let store = self.shared.store.read();
                stale = store
                    .by_path
                    .iter()
                    .filter(|(p, (_, st))| {
                        under(p)
                            && !found
                                .get(p.as_path())
                                .is_some_and(|f| f.same_content_key(st))
                    })
                    .map(|(p, _)| p.clone())
                    .collect();
            }
        }
        for (rel, e) in errors {
            if !self.failed.contains_key(&rel) {
                log::warn!(
                    "index: skipping unreadable {}: {e}",
                    self.rules.root.join(&rel).display()
                );
                self.failed.insert(rel, None);
            }
        }
        let mut to_hash = Vec::new();
        {
            let shared = self.shared.clone();
            let mut store = shared.store.write();
            let mut delta = Delta::default();
            for p in stale {
                self.remove_path(&mut store, &p, &mut delta, now);
            }
            let initial = !self.ready;
            for (rel, stat) in files {
                if let Some(&(sha1, s)) = store.by_path.get(&rel) {
                    if s.same_content_key(&stat) {
                        if initial {
                            // A cache record confirmed by the first scan.
                            self.shared
                                .counters
                                .files_reused
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        if s != stat {
                            if let Some(h) = store.by_sha1.get(&sha1).map(|e| Arc::new(e.hashed()))
                            {
                                self.insert_path(&mut store, &rel, stat, h, &mut delta);
                            }
                        }
                        continue;
                    }
                }
                if self.inflight.get(&rel).is_some_and(|(s, _)| *s == stat) {
                    continue;
                }
                if self.failed.get(&rel).is_some_and(|s| *s == Some(stat)) {
                    continue;
                }
                self.inflight.remove(&rel);
                if let Some(h) = self.reuse(&stat) {
                    self.pending.remove(&rel);
                    self.insert_path(&mut store, &rel, stat, h, &mut delta);
                    self.shared
                        .counters
                        .files_reused
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let settled = self.settled_by_age(&stat);
                match self.pending.get_mut(&rel) {
                    Some(p) if p.stat == stat => {}
                    Some(p) => {
                        p.stat = stat;
                        p.since = now;
                        p.initial = false;
                    }
                    None if settled => to_hash.push((rel, stat)),
                    None => {
                        self.pending.insert(
                            rel,
                            Pending {
                                stat,
                                since: now,
                                initial: !self.ready,
                            },
                        );
                    }
                }
            }
            self.commit(&mut store, delta);
        }
        self.start_hashing(pool, res, to_hash);
    }

    fn settled_by_age(&self, stat: &FileStat) -> bool {
        SystemTime::now()
            .duration_since(stat.mtime())
            .is_ok_and(|age| age >= self.opts.settle)
    }

    fn commit(&mut self, store: &mut Store, delta: Delta) {
        if !delta.is_empty() {
            self.save_due
                .get_or_insert_with(|| Instant::now() + SAVE_DELAY);
        }
        self.shared.commit(store, delta);
    }

    fn insert_path(
        &mut self,
        store: &mut Store,
        rel: &Path,
        stat: FileStat,
        h: Arc<Hashed>,
        delta: &mut Delta,
    ) {
        store.insert(rel, stat, &h, delta);
        if !self.removed.is_empty() {
            self.removed.remove(&(stat.dev, stat.ino));
        }
    }

    fn remove_path(&mut self, store: &mut Store, rel: &Path, delta: &mut Delta, now: Instant) {
        if let Some((stat, entry)) = store.remove(rel, delta) {
            self.removed.insert(
                (stat.dev, stat.ino),
                Removed {
                    stat,
                    hashed: Arc::new(entry.hashed()),
                    at: now,
                },
            );
        }
    }

    /// Stats pending files again; hashes those that have been stable long enough.
    fn check_pending(&mut self, pool: &rayon::ThreadPool, res: &Sender<Vec<HashResult>>) {
        let now = Instant::now();
        let mut to_hash = Vec::new();
        let mut gone = Vec::new();
        for (rel, p) in self.pending.iter_mut() {
            match self.rules.classify(rel) {
                Ok(Kind::File(st)) => {
                    if st != p.stat {
                        p.stat = st;
                        p.since = now;
                        p.initial = false;
                    } else if now.duration_since(p.since) >= self.opts.settle {
                        to_hash.push((rel.clone(), st));
                    }
                }
                _ => gone.push(rel.clone()),
            }
        }
        for rel in gone {
            self.pending.remove(&rel);
        }
        for (rel, _) in &to_hash {
            self.pending.remove(rel);
        }
        self.start_hashing(pool, res, to_hash);
    }

    fn start_hashing(
        &mut self,
        pool: &rayon::ThreadPool,
        res: &Sender<Vec<HashResult>>,
        mut files: Vec<(PathBuf, FileStat)>,
    ) {
        if files.is_empty() {
            return;
        }
        if self.inflight.is_empty() {
            self.progress.started = Instant::now();
            self.progress.last_log = self.progress.started;
            self.progress.files_at_start =
                self.shared.counters.files_hashed.load(Ordering::Relaxed);
            self.progress.bytes_at_start = self.shared.counters.bytes_read.load(Ordering::Relaxed);
        }
        // Largest first, so one big file does not finish last alone. Small
        // files go to the pool in chunks (one task and one message per
        // chunk, not per file: 100,000 tasks cost more than their hashing).
        files.sort_unstable_by_key(|f| std::cmp::Reverse(f.1.size));
        let mut chunk: Vec<(PathBuf, u64, u64)> = Vec::new();
        let mut chunk_bytes = 0u64;
        let last = files.len().saturating_sub(1);
        for (i, (rel, stat)) in files.into_iter().enumerate() {
            self.next_token += 1;
            let token = self.next_token;
            self.inflight.insert(rel.clone(), (stat, token));
            chunk.push((rel, stat.size, token));
            chunk_bytes += stat.size;
            if i == last || chunk.len() >= CHUNK_FILES || chunk_bytes >= CHUNK_BYTES {
                self.spawn_chunk(pool, res, std::mem::take(&mut chunk));
                chunk_bytes = 0;
            }
        }
    }

    fn spawn_chunk(
        &self,
        pool: &rayon::ThreadPool,
        res: &Sender<Vec<HashResult>>,
        chunk: Vec<(PathBuf, u64, u64)>,
    ) {
        let shared = self.shared.clone();
        let piece_size = self.opts.piece_size;
        let res = res.clone();
        pool.spawn(move || {
            let stop: &AtomicBool = &shared.stop;
            let progress: &AtomicU64 = &shared.counters.bytes_read;
            let mut out = Vec::with_capacity(chunk.len());
            let mut abs = shared.root.clone();
            for (rel, size, token) in chunk {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                abs.push(&rel);
                let outcome = hasher::hash_file(&abs, size, piece_size, stop, progress);
                abs.clone_from(&shared.root);
                out.push(HashResult {
                    rel,
                    token,
                    outcome,
                });
            }
            let _ = res.send(out);
        });
    }

    fn fold_results(&mut self, batch: Vec<HashResult>) {
        if self.shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let shared = self.shared.clone();
        let mut store = shared.store.write();
        let mut delta = Delta::default();
        for r in batch {
            let Some((listed, _)) = self
                .inflight
                .get(&r.rel)
                .filter(|(_, t)| *t == r.token)
                .copied()
            else {
                continue; // superseded by a newer look at this path
            };
            self.inflight.remove(&r.rel);
            match r.outcome {
                Ok(HashedFile {
                    hashed,
                    stat: opened,
                }) => {
                    let stable = opened.same_content_key(&listed) && hashed.size == opened.size;
                    if !stable {
                        // Written to while we read it: wait for it to settle.
                        let stat = opened;
                        self.pending.insert(
                            r.rel,
                            Pending {
                                stat,
                                since: now,
                                initial: false,
                            },
                        );
                        continue;
                    }
                    let c = &self.shared.counters;
                    c.files_hashed.fetch_add(1, Ordering::Relaxed);
                    c.bytes_hashed.fetch_add(hashed.size, Ordering::Relaxed);
                    self.failed.remove(&r.rel);
                    self.insert_path(&mut store, &r.rel, opened, Arc::new(hashed), &mut delta);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    log::warn!(
                        "index: skipping unreadable {}: {e}",
                        self.rules.root.join(&r.rel).display()
                    );
                    self.failed.insert(r.rel, Some(listed));
                }
            }
        }
        self.commit(&mut store, delta);
    }
}
