//! [`Downloader::download_many`]: many files in one call (`get SHA1 SHA1
//! ...`, `get --search`, `get --all`).
//!
//! Each file is a whole download of the one [`Downloader`] (verified,
//! resumable, atomic rename); up to `concurrency` of them run at once on
//! scoped, named threads (`pbs-batch<n>`), so many small files overlap their
//! round trips instead of paying them one after another.
//!
//! - Holders: the caller found every file's holders once for the whole
//!   batch (one catalog refresh); each download's first query is answered
//!   from that snapshot ([`BatchItem::holders`]) and only its later
//!   re-queries (a download still running after `requery_interval`) go to
//!   the `requery` source, so a batch of 1,000 small files reads etcd once.
//! - One connection per holder and file (`target_connections = 1`): the
//!   files running at once are the batch's parallelism.
//! - Memory: each download gets `memory_budget / concurrency` of piece
//!   buffers (at least one piece, which `round` always allows), so the
//!   batch stays within about the budget of one download.
//! - Connections: the downloader's pool of idle connections: a file's
//!   piece-list request and its workers take an idle kept-alive connection
//!   to the peer and give it back, so a batch from one peer runs on about
//!   one connection per download at once (24 files, 4 at once: 4
//!   connections instead of 48).
//! - Durability: each file is fsynced before its rename as always; the
//!   directories are fsynced once at the end instead of after every rename.
//! - Rate: the downloader's `max_rate` is one limiter shared by every
//!   download, so the cap is the batch's total.
//! - Cancel: once the options' `cancel` is set no new download starts; the
//!   running ones save their state and return [`FetchError::Interrupted`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::job::{Job, Mode};
use super::{Downloader, FetchError, Progress, Summary};
use crate::digest::Sha1Digest;
use crate::holders::{Holder, HolderSource, HoldersError};

/// Default number of downloads running at once.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// One file of a batch.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// The file.
    pub sha1: Sha1Digest,
    /// Its final path.
    pub output: PathBuf,
    /// Its size as the catalog gives it (for the batch's progress only).
    pub size: u64,
    /// Its holders, found once for the batch (empty: none known).
    pub holders: Vec<Holder>,
}

/// Where a running batch is, for one progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchProgress {
    /// Files in the batch.
    pub files: usize,
    /// Files finished (saved, already present or failed).
    pub finished: usize,
    /// Sum of the sizes of every file.
    pub size: u64,
    /// Bytes done: finished files in full, running ones so far.
    pub done: u64,
}

/// How a batch runs (every download's options are its [`Downloader`]'s).
pub struct BatchOptions<'a> {
    /// Downloads at once (at least 1).
    pub concurrency: usize,
    /// Asked for the holders of a file whose download re-queries.
    pub requery: &'a dyn HolderSource,
}

/// The result of one file: `None` if it was never started (cancelled).
pub type ItemResult = Option<Result<Summary, FetchError>>;

impl Downloader {
    /// Downloads every item, `opts.concurrency` at once. `on_done` is called
    /// (from a batch thread) as soon as each file is finished; `progress` about
    /// ten times a second per running download. Returns the results in the
    /// items' order.
    pub fn download_many(
        &self,
        items: &[BatchItem],
        opts: &BatchOptions<'_>,
        progress: Option<&(dyn Fn(&BatchProgress) + Sync)>,
        on_done: &(dyn Fn(&BatchItem, &Result<Summary, FetchError>) + Sync),
    ) -> Vec<ItemResult> {
        let concurrency = opts.concurrency.max(1);
        let source = FirstFromSnapshot {
            snapshot: Mutex::new(
                items
                    .iter()
                    .map(|it| (it.sha1, it.holders.clone()))
                    .collect(),
            ),
            requery: opts.requery,
        };
        let size: u64 = items.iter().map(|it| it.size).sum();
        let done = AtomicU64::new(0);
        let finished = AtomicUsize::new(0);
        let report = || {
            if let Some(p) = progress {
                p(&BatchProgress {
                    files: items.len(),
                    finished: finished.load(Ordering::Relaxed),
                    size,
                    done: done.load(Ordering::Relaxed),
                });
            }
        };
        let memory_budget = (self.options().memory_budget / concurrency as u64).max(1);
        let results = crate::fanout::map(items, concurrency - 1, "pbs-batch", |item| {
            if self.options().cancelled() {
                return None;
            }
            let job = Job {
                sha1: item.sha1,
                output: &item.output,
                mode: Mode::Batch { memory_budget },
            };
            // Bytes of this file counted into `done` so far.
            let counted = AtomicU64::new(0);
            let on_progress = |p: &Progress| {
                let before = counted.swap(p.done, Ordering::Relaxed);
                add_delta(&done, before, p.done);
                report();
            };
            let result = self.run(&job, &source, Some(&on_progress));
            let full = match &result {
                Ok(s) => s.bytes,
                Err(_) => item.size,
            };
            add_delta(&done, counted.swap(full, Ordering::Relaxed), full);
            finished.fetch_add(1, Ordering::Relaxed);
            on_done(item, &result);
            report();
            Some(result)
        });
        sync_dirs(items);
        results
    }
}

/// fsync every output directory once (each file was fsynced before its
/// rename; this makes the renames durable).
fn sync_dirs(items: &[BatchItem]) {
    let dirs: std::collections::BTreeSet<&std::path::Path> = items
        .iter()
        .map(|it| match it.output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        })
        .collect();
    for dir in dirs {
        if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
            log::warn!("cannot fsync {}: {e}", dir.display());
        }
    }
}

/// Moves `total` by `after - before` (either way).
fn add_delta(total: &AtomicU64, before: u64, after: u64) {
    if after >= before {
        total.fetch_add(after - before, Ordering::Relaxed);
    } else {
        total.fetch_sub(before - after, Ordering::Relaxed);
    }
}

/// Answers each file's first holder query from the batch's snapshot, the
/// later ones from `requery`.
struct FirstFromSnapshot<'a> {
    snapshot: Mutex<HashMap<Sha1Digest, Vec<Holder>>>,
    requery: &'a dyn HolderSource,
}

impl HolderSource for FirstFromSnapshot<'_> {
    fn holders(&self, sha1: &Sha1Digest) -> Result<Vec<Holder>, HoldersError> {
        let first = self.snapshot.lock().remove(sha1);
        match first {
            Some(holders) => Ok(holders),
            None => self.requery.holders(sha1),
        }
    }
}
