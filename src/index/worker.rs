//! The index's background thread: it owns the hashing pool and is the only
//! code that decides what to hash. This file is its loop: it waits for the
//! next thing due (hash results, file-system events, control messages, the
//! debounce, the periodic rescan, files due to settle, the cache save, a
//! progress line) and keeps the counters and readiness up to date. The
//! jobs are in their own modules: `debounce` (events), `settle` (files
//! waiting to be stable, by due time), `dispatch` (hashing tasks, tokens),
//! `reconcile` (what goes into the store), `renames` (removed files'
//! hashes), `saver` (the persisted cache), `progress` (log lines).
//!
//! State kept here, outside any lock (only this thread touches it): the
//! files settling, in flight, `failed` (unreadable, warned once per stat),
//! and recently removed.
//!
//! Start: the cache's records go into the store at once, before the dataset
//! is listed, so a restarted peer serves its last catalog immediately; the
//! initial scan then checks every path in the background (anything changed
//! is dropped before it could be served: `open_file` checks the stat too).
//! The cache is written again only after a change was committed.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use super::cache;
use super::debounce::Debounce;
use super::dispatch::{HashResult, Inflight};
use super::entry::FileStat;
use super::progress::Progress;
use super::renames::Renames;
use super::saver::Saver;
use super::settle::Settling;
use super::walk::{Stat, WalkRules};
use super::watch::{watch, Watch};
use super::{IndexOptions, Shared};

/// Messages from the handle.
pub enum Ctl {
    /// A path was found changed when opened: look at it again.
    Recheck(PathBuf),
    /// Rescan everything now.
    Rescan,
    /// A file with this stat holds these hashes; with a path, under that
    /// path still, to be renamed (see `Index::adopt`, `Index::adopt_part`).
    Adopt(FileStat, Option<PathBuf>, Arc<super::entry::Hashed>),
    /// Stop the thread.
    Stop,
}

/// The index thread's state.
pub struct Worker {
    pub(super) opts: IndexOptions,
    pub(super) rules: WalkRules,
    pub(super) shared: Arc<Shared>,
    ctl: Receiver<Ctl>,
    watch: Option<Watch>,
    debounce: Debounce,
    /// Files waiting to be stable.
    pub(super) settling: Settling,
    /// Files being hashed.
    pub(super) inflight: Inflight,
    /// Unreadable files (with the stat they failed at; `None`: listing
    /// failed), warned about once.
    pub(super) failed: HashMap<PathBuf, Option<FileStat>>,
    pub(super) renames: Renames,
    pub(super) saver: Saver,
    next_rescan: Instant,
    /// The initial scan is done.
    pub(super) ready: bool,
    progress: Progress,
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
        Worker {
            next_rescan: Instant::now() + opts.rescan_interval,
            debounce: Debounce::new(opts.debounce),
            opts,
            rules,
            shared,
            ctl,
            watch: None,
            settling: Settling::default(),
            inflight: Inflight::default(),
            failed: HashMap::new(),
            renames: Renames::default(),
            saver: Saver::new(cache_path),
            ready: false,
            progress: Progress::new(),
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
        let partial_events = self.opts.partial_events.clone();
        // Nothing to compare the listing with (no cache): the files are
        // listed by name and stat'ed once opened for hashing.
        let stat = if self.saver.has_cache() {
            Stat::Now
        } else {
            Stat::Later
        };
        let ((), (watched, listing)) = pool.join(
            || {
                self.saver
                    .load(&self.shared, &self.rules.root, self.progress.opened)
            },
            || {
                let watched = live.then(|| watch(&rules.root, partial_events));
                (watched, rules.list_in(Path::new(""), Some(pool), stat))
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
        self.start_hashing_unlisted(pool, &res_tx, listing.unstated);
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
                        self.debounce.note(ev, &self.rules.root);
                        for ev in events.try_iter() {
                            self.debounce.note(ev, &self.rules.root);
                        }
                    }
                }
                recv(self.ctl) -> c => match c {
                    Ok(Ctl::Recheck(rel)) => self.debounce.mark(rel),
                    Ok(Ctl::Rescan) => self.debounce.mark_full(),
                    Ok(Ctl::Adopt(stat, part, hashed)) => {
                        let now = Instant::now();
                        self.renames.remember(stat, part.as_deref(), hashed, now);
                    }
                    Ok(Ctl::Stop) | Err(_) => break,
                },
                default(timeout) => {}
            }
            let now = Instant::now();
            if let Some(scopes) = self.debounce.take_due(now) {
                self.reconcile(pool, &res_tx, &scopes);
            }
            if self.opts.live && now >= self.next_rescan {
                self.next_rescan = now + self.opts.rescan_interval;
                self.reconcile(pool, &res_tx, &[PathBuf::new()]);
                self.shared.counters.scans.fetch_add(1, Ordering::Relaxed);
            }
            if !self.settling.is_empty() {
                self.check_settling(pool, &res_tx);
            }
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        if self.saver.due().is_some() {
            self.saver.save(&self.shared, &self.rules.root);
        }
    }

    /// The earliest moment something is due.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut t = now + Duration::from_secs(3600);
        if let Some(d) = self.debounce.due() {
            t = t.min(d);
        }
        if self.opts.live {
            t = t.min(self.next_rescan);
        }
        if let Some(d) = self.settling.next_due() {
            t = t.min(d);
        }
        if let Some(s) = self.saver.due() {
            t = t.min(s);
        }
        if !self.inflight.is_empty() {
            t = t.min(self.progress.due());
        }
        t
    }

    /// Bookkeeping after each loop step: counters, readiness, saves,
    /// progress, expired renames. Constant work, whatever is queued.
    fn after_step(&mut self) {
        let c = &self.shared.counters;
        let queued = self.settling.len() + self.inflight.len();
        c.files_queued.store(queued as u64, Ordering::Relaxed);
        c.bytes_queued.store(
            self.settling.bytes() + self.inflight.bytes(),
            Ordering::Relaxed,
        );
        c.unreadable
            .store(self.failed.len() as u64, Ordering::Relaxed);
        let now = Instant::now();
        if !self.ready && self.inflight.is_empty() && !self.settling.has_initial() {
            self.ready = true;
            self.progress.log(&self.shared, true, queued);
            // Ready first: the caller's use of the index (`index` printing
            // its table) runs while the cache is written.
            self.shared.set_ready();
            if self.saver.due().is_some() {
                self.saver.save(&self.shared, &self.rules.root);
            }
        } else if !self.inflight.is_empty() && now >= self.progress.due() {
            self.progress.log(&self.shared, false, queued);
        }
        if self.ready && self.saver.due().is_some_and(|t| now >= t) {
            self.saver.save(&self.shared, &self.rules.root);
        }
        self.renames.expire(now);
    }

    /// Queues `files` for hashing.
    pub(super) fn start_hashing(
        &mut self,
        pool: &rayon::ThreadPool,
        res: &Sender<Vec<HashResult>>,
        files: Vec<(PathBuf, FileStat)>,
    ) {
        let files = files.into_iter().map(|(p, s)| (p, Some(s))).collect();
        self.start_queued(pool, res, files);
    }

    /// Queues `files` (listed without their stat, `walk::Stat::Later`)
    /// for hashing; each is read only once settled.
    pub(super) fn start_hashing_unlisted(
        &mut self,
        pool: &rayon::ThreadPool,
        res: &Sender<Vec<HashResult>>,
        files: Vec<PathBuf>,
    ) {
        let files = files.into_iter().map(|p| (p, None)).collect();
        self.start_queued(pool, res, files);
    }

    fn start_queued(
        &mut self,
        pool: &rayon::ThreadPool,
        res: &Sender<Vec<HashResult>>,
        files: Vec<(PathBuf, Option<FileStat>)>,
    ) {
        if files.is_empty() {
            return;
        }
        if self.inflight.is_empty() {
            self.progress.restart(&self.shared.counters);
        }
        let settle = self.opts.settle;
        self.inflight.start(&self.shared, settle, pool, res, files);
    }
}
