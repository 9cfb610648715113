//! One file's download as its rounds share it: the file and how it runs
//! ([`Job`], [`Mode`]) and [`Download`]: the downloader it runs on, its
//! `.part`, state file and counters, and what the job's mode makes of the
//! downloader's options. Read by `round`, `supervisor` and `worker`
//! through [`Round::dl`](super::round::Round); the steps that use it are in
//! `download`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use super::downloader::Downloader;
use super::error::{FetchError, Step};
use super::output::{chain_path, part_path, state_path};
use super::rate::RateLimiter;
use super::seal::Watch;
use super::state::ResumeState;
use super::DownloadOptions;
use crate::client::ConnPool;
use crate::digest::Sha1Digest;

/// One file a call on a [`Downloader`] fetches, and how.
pub(crate) struct Job<'a> {
    /// The file.
    pub sha1: Sha1Digest,
    /// Its final path.
    pub output: &'a Path,
    /// Alone, or one file of a batch.
    pub mode: Mode,
}

/// How a file's download shares the [`Downloader`] with others.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// The only one: pipelined connections of its own, the options'
    /// memory budget and connection target, the directory fsynced after
    /// the rename.
    Alone,
    /// One file of a batch: `memory_budget` of piece buffers (its share),
    /// one connection per holder taken from and given back to the
    /// downloader's pool (nothing pipelined, so nothing is pending when it
    /// goes back), the directories fsynced once at the batch's end.
    Batch {
        /// This file's share of the batch's piece buffers.
        memory_budget: u64,
    },
}

impl Job<'_> {
    /// The downloader's idle connections for a file of a batch; `None` for
    /// a download alone (its connections are its own, and pipelined).
    pub fn pool<'d>(&self, by: &'d Downloader) -> Option<&'d ConnPool> {
        match self.mode {
            Mode::Alone => None,
            Mode::Batch { .. } => Some(by.pool()),
        }
    }
}

/// One file's download, the same through its rounds: the downloader (its
/// options, pool and rate limit), the file asked for, its `.part` and state
/// file, and its counters. Its steps after the piece lists are known
/// (`rounds`, `salvage`, `finish`) are in `download`.
pub(crate) struct Download<'a> {
    /// The downloader running it.
    by: &'a Downloader,
    /// The file and how it shares the downloader.
    pub job: &'a Job<'a>,
    /// The `.part`, open for reading and writing: created by this run and
    /// watched (see `seal`).
    pub part: File,
    /// The watch on the `.part`: whether another process opened it for
    /// writing.
    pub watch: Watch,
    pub part_path: PathBuf,
    /// The `.part.state` saved as pieces verify.
    pub state_path: PathBuf,
    /// The `.part.chain` written once a round, before its first state.
    pub chain_path: PathBuf,
    /// The byte ranges the state of an earlier run claimed verified (copied
    /// into the new `.part`, verified again before use).
    pub claimed: Vec<(u64, u64)>,
    /// Whether pieces go straight to the disk (see `direct`).
    pub direct: super::direct::Direct,
    /// Bytes read back from the `.part` and verified again.
    pub rechecked: AtomicU64,
    /// Bytes received from the network in this run.
    pub received: AtomicU64,
    /// Pieces fetched again after a failure or bad data.
    pub retried: AtomicU64,
    /// Bytes of verified pieces kept in this run from complete holders
    /// (seeds) and from partial holders (other downloads): whether the
    /// swarm was used at all, shown by the status page of a peer sharing
    /// the output's directory (through the state) and in the summary.
    pub from_seeds: AtomicU64,
    /// See `from_seeds`.
    pub from_partials: AtomicU64,
}

impl<'a> Download<'a> {
    /// Creates the `.part` of `job` anew and watched (see `seal`), with the
    /// ranges an earlier run's state claims copied from the old one; never
    /// through a link: a `.part` planted as a symlink is refused.
    pub fn open(by: &'a Downloader, job: &'a Job<'a>) -> Result<Self, FetchError> {
        let part_path = part_path(job.output);
        let open_err = |source| FetchError::io(Step::Open, &part_path, source);
        if std::fs::symlink_metadata(&part_path).is_ok_and(|m| m.is_symlink()) {
            return Err(open_err(std::io::Error::from_raw_os_error(libc::ELOOP)));
        }
        let state_path = state_path(job.output);
        // The state is only a hint: every piece it claims is verified
        // again, from the new `.part` (see `Download::salvage`).
        let claimed = ResumeState::load(&state_path, &job.sha1)
            .map(|state| state.verified_ranges())
            .unwrap_or_default();
        let old = match claimed.is_empty() {
            true => None,
            false => OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&part_path)
                .ok(),
        };
        let (part, watch) = Watch::create(&part_path, old.as_ref(), &claimed).map_err(open_err)?;
        Ok(Download {
            by,
            job,
            part,
            watch,
            part_path,
            state_path,
            chain_path: chain_path(job.output),
            claimed,
            direct: Default::default(),
            rechecked: AtomicU64::new(0),
            received: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            from_seeds: AtomicU64::new(0),
            from_partials: AtomicU64::new(0),
        })
    }

    /// The downloader's options.
    pub fn opts(&self) -> &'a DownloadOptions {
        self.by.options()
    }

    /// The batch's idle connections; `None` for a download alone (its
    /// connections are its own, and pipelined).
    pub fn pool(&self) -> Option<&'a ConnPool> {
        self.job.pool(self.by)
    }

    /// The cap on the bytes per second received, shared by every download
    /// of the downloader.
    pub fn rate(&self) -> Option<&'a RateLimiter> {
        self.by.rate()
    }

    /// Bytes of piece buffers this download may hold.
    pub fn memory_budget(&self) -> u64 {
        match self.job.mode {
            Mode::Alone => self.opts().memory_budget,
            Mode::Batch { memory_budget } => memory_budget,
        }
    }

    /// More connections per holder open only while the total is below this
    /// (see [`DownloadOptions::target_connections`]). One per holder in a
    /// batch: its concurrency comes from its files (a second connection to
    /// a one-piece file's only holder would only ask it for its bitmap).
    pub fn target_connections(&self) -> usize {
        match self.job.mode {
            Mode::Alone => self.opts().target_connections,
            Mode::Batch { .. } => 1,
        }
    }
}
