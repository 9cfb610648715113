//! Reconciliation: what goes into the store. A listing of some scopes
//! (the initial scan, a debounced batch of events, a rescan) is compared
//! with the store and the files waiting or in flight: what is gone or
//! changed is removed, known hashes are reused (a rename, a cache record),
//! settled files are queued for hashing and the rest wait to settle. Files
//! due to settle are stat'ed again, and hashing results are folded in
//! (dropped when superseded, sent back to settle when the file changed
//! while being read).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::dispatch::HashResult;
use super::entry::{FileStat, Hashed};
use super::hasher::{HashedFile, Outcome};
use super::settle::Waiting;
use super::store::{Delta, Store};
use super::walk::{Kind, Stat};
use super::worker::Worker;

/// Fewer listed files than this are looked up in the store on the index
/// thread, more on the hashing pool.
const PARALLEL_LOOKUPS: usize = 4096;

/// How a listed file compares with what the store holds at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The same stat: nothing to do.
    Same,
    /// The same size, mtime and inode (another device number: the path's
    /// record is updated, the content not read again).
    SameContent,
    /// Nothing there, or another content.
    Other,
}

impl Worker {
    /// Brings the store in line with the disk under each scope (relative
    /// paths; empty = everything): removes what is gone or changed, reuses
    /// known hashes, queues the rest.
    pub(super) fn reconcile(
        &mut self,
        pool: &rayon::ThreadPool,
        res: &Sender<Vec<HashResult>>,
        scopes: &[PathBuf],
    ) {
        let started = Instant::now();
        let mut files: Vec<(PathBuf, FileStat)> = Vec::new();
        let mut errors = Vec::new();
        for scope in scopes {
            let listing = self.rules.list_in(scope, Some(pool), Stat::Now);
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
    pub(super) fn apply_listing(
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
        // What the store holds for each listed file, looked up once (on the
        // hashing pool): a file found exactly as indexed needs nothing more
        // below (100,000 of them on a warm start). The common cases (first
        // scan, nothing changed) need no map of what was found either: only
        // when some indexed path was not confirmed by the listing, or other
        // state needs lookups, is one built.
        let (seen, hits, store_under) = {
            use rayon::prelude::*;
            let store = self.shared.store.read();
            let look = |(p, st): &(PathBuf, FileStat)| match store.lookup(p) {
                Some((_, s)) if s == *st => Seen::Same,
                Some((_, s)) if s.same_content_key(st) => Seen::SameContent,
                _ => Seen::Other,
            };
            // A few paths (a batch of events) are looked up here: handing
            // them to the pool woke its threads, which spin and yield
            // before they sleep again, for every batch.
            let seen: Vec<Seen> = if files.len() < PARALLEL_LOOKUPS {
                files.iter().map(look).collect()
            } else {
                pool.install(|| files.par_iter().map(look).collect())
            };
            let hits = seen.iter().filter(|s| **s != Seen::Other).count();
            let store_under = if full {
                store.path_count()
            } else {
                store.paths().filter(|(p, _)| under(p)).count()
            };
            (seen, hits, store_under)
        };
        let need_map = hits != store_under
            || !self.settling.is_empty()
            || !self.inflight.is_empty()
            || !self.failed.is_empty();
        let mut stale: Vec<PathBuf> = Vec::new();
        if need_map {
            let found: HashMap<&Path, &FileStat> =
                files.iter().map(|(p, s)| (p.as_path(), s)).collect();
            // Forget what is gone; a failure is kept (and not warned again) while it lasts.
            self.settling.retain(|p| !under(p) || found.contains_key(p));
            self.inflight.retain(|p| !under(p) || found.contains_key(p));
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
                    .paths()
                    .filter(|(p, st)| {
                        under(p) && !found.get(p).is_some_and(|f| f.same_content_key(st))
                    })
                    .map(|(p, _)| p.to_path_buf())
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
            for ((rel, stat), seen) in files.into_iter().zip(seen) {
                if seen == Seen::Same {
                    if initial {
                        self.shared
                            .counters
                            .files_reused
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                if let Some((sha1, s)) = store.lookup(&rel) {
                    if s.same_content_key(&stat) {
                        if initial {
                            // A cache record confirmed by the first scan.
                            self.shared
                                .counters
                                .files_reused
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        if s != stat {
                            if let Some(h) = store.get(&sha1).map(|e| Arc::new(e.hashed())) {
                                self.insert_path(&mut store, &rel, stat, h, &mut delta);
                            }
                        }
                        continue;
                    }
                }
                if self.inflight.stat(&rel) == Some(stat) {
                    continue;
                }
                if self.failed.get(&rel).is_some_and(|s| *s == Some(stat)) {
                    continue;
                }
                self.inflight.remove(&rel);
                if self.reuse_known(&mut store, &rel, stat, &mut delta) {
                    continue;
                }
                let settled = stat.settled(self.opts.settle);
                match self.settling.get(&rel) {
                    Some(w) if w.stat == stat => {}
                    Some(_) => self.settling.insert(
                        rel,
                        Waiting {
                            stat,
                            due: now + self.opts.settle,
                            initial: false,
                        },
                    ),
                    None if settled => to_hash.push((rel, stat)),
                    None => self.settling.insert(
                        rel,
                        Waiting {
                            stat,
                            due: now + self.opts.settle,
                            initial: !self.ready,
                        },
                    ),
                }
            }
            // Room for what is about to be hashed (100,000 files on a
            // first start), so the tables do not grow step by step.
            store.reserve(to_hash.len());
            self.commit(&mut store, delta);
        }
        self.start_hashing(pool, res, to_hash);
    }

    /// Indexes `rel` with hashes already known for its exact stat (a
    /// rename's, or a landed download's, `Renames`) instead of reading it:
    /// true if there were some.
    fn reuse_known(
        &mut self,
        store: &mut Store,
        rel: &Path,
        stat: FileStat,
        delta: &mut Delta,
    ) -> bool {
        let Some(h) = self.renames.reuse(&stat, rel) else {
            return false;
        };
        self.settling.remove(rel);
        self.insert_path(store, rel, stat, h, delta);
        self.shared
            .counters
            .files_reused
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    fn commit(&mut self, store: &mut Store, delta: Delta) {
        if !delta.is_empty() {
            self.saver.changed();
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
        store.insert_with(rel, stat, h.sha1, || Arc::unwrap_or_clone(h), delta);
        self.renames.forget(&stat);
    }

    fn remove_path(&mut self, store: &mut Store, rel: &Path, delta: &mut Delta, now: Instant) {
        if let Some((stat, entry)) = store.remove(rel, delta) {
            self.renames
                .remember(stat, Some(rel), Arc::new(entry.hashed()), now);
        }
    }

    /// Stats the files due to settle again: hashes those whose stat has not
    /// changed since it was last seen changed (`settle` ago); one that
    /// changed waits `settle` more; one that is gone is dropped.
    pub(super) fn check_settling(
        &mut self,
        pool: &rayon::ThreadPool,
        res: &Sender<Vec<HashResult>>,
    ) {
        let now = Instant::now();
        let mut to_hash = Vec::new();
        for (rel, w) in self.settling.take_due(now) {
            if let Ok(Kind::File(st)) = self.rules.classify(&rel) {
                if st != w.stat {
                    let due = now + self.opts.settle;
                    self.settling.insert(
                        rel,
                        Waiting {
                            stat: st,
                            due,
                            initial: false,
                        },
                    );
                } else {
                    to_hash.push((rel, st));
                }
            }
        }
        // Hashes that became known while the file settled (a download that
        // landed, `Index::adopt`) are taken instead of reading it.
        if !to_hash.is_empty() {
            let shared = self.shared.clone();
            let mut store = shared.store.write();
            let mut delta = Delta::default();
            let mut rest = Vec::with_capacity(to_hash.len());
            for (rel, st) in to_hash {
                if !self.reuse_known(&mut store, &rel, st, &mut delta) {
                    rest.push((rel, st));
                }
            }
            to_hash = rest;
            self.commit(&mut store, delta);
        }
        self.start_hashing(pool, res, to_hash);
    }

    /// Folds hashing results into the store.
    pub(super) fn fold_results(&mut self, batch: Vec<HashResult>) {
        if self.shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let shared = self.shared.clone();
        let mut store = shared.store.write();
        let mut delta = Delta::default();
        for r in batch {
            let Some(listed) = self.inflight.take_current(&r) else {
                continue; // superseded by a newer look at this path
            };
            match r.outcome {
                Ok(Outcome::Unsettled(stat)) => {
                    // Listed without its stat, and modified lately (or
                    // while read): it waits to settle like any new file.
                    self.settling.insert(
                        r.rel,
                        Waiting {
                            stat,
                            due: now + self.opts.settle,
                            initial: !self.ready,
                        },
                    );
                }
                Ok(Outcome::Hashed(HashedFile {
                    hashed,
                    stat: opened,
                })) => {
                    // Without a listed stat, the hasher compared the stats
                    // before and after its read.
                    let stable = listed.is_none_or(|l| opened.same_content_key(&l))
                        && hashed.size == opened.size;
                    if !stable {
                        // Written to while we read it: wait for it to settle.
                        self.settling.insert(
                            r.rel,
                            Waiting {
                                stat: opened,
                                due: now + self.opts.settle,
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
                    self.failed.insert(r.rel, listed);
                }
            }
        }
        self.commit(&mut store, delta);
    }
}
