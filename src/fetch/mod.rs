//! The verified multi-source download: piece scheduling over every holder,
//! per-piece and whole-file SHA1 checks, failover, resume, atomic rename.
//!
//! A [`Downloader`], built once from its [`DownloadOptions`], owns the rate
//! limit and the idle connections its downloads share;
//! [`Downloader::download`] runs one file's download on the calling thread
//! (plus threads it owns and joins before returning): no async runtime, no
//! global state.
//!
//! ```text
//! download ── existing output? ── holders (HolderSource) ── piece lists of
//!   every holder, grouped by identical list, biggest group first
//!   └─ round (one piece list): salvage verified pieces of the .part,
//!      workers (one per connection, ≤ connections_per_holder per holder)
//!      pull pieces from the scheduler, verify each on arrival, write it
//!      with write_at; a hasher thread hashes the verified prefix of the
//!      .part meanwhile; the calling thread saves state, re-queries holders,
//!      reports progress
//!      └─ whole-file SHA1 == requested? fsync, rename into place.
//!         else that group's piece list lied: next group, keep what matches.
//! ```
//!
//! - `downloader`: [`Downloader`], its options, pool and rate limit.
//! - `batch`: many files in one call, a bounded number of downloads at once.
//! - `pieces`: fetching and checking a piece list.
//! - `scheduler`: which piece each connection fetches (endgame included).
//! - `job`: one file's download as its rounds share it (`Download`: the
//!   downloader, the file, its `.part` and counters).
//! - `download`: [`Downloader::download`]: piece lists, then the rounds;
//!   the whole-file check and the rename.
//! - `round`: the state one piece list's download shares between its threads.
//! - `worker`: one connection's `Worker`: fetch, verify, write, fail over.
//! - `supervisor`: that download's calling thread: starts workers and the
//!   hasher, saves state, re-queries holders, joins everything.
//! - `state`: the `.part.state` resume file and the salvage of a `.part`.
//! - `rate`: `--max-rate` parsing and the shared token bucket.
//! - `output`: output paths and peer-supplied names made safe.
//!
//! Memory: each connection holds one piece buffer, and connections are
//! capped so that `connections x piece size <= memory_budget`.
//!
//! Threads (all named `pbs-get-*`, all joined before
//! [`Downloader::download`] returns): one per connection (`supervisor.rs`
//! starts them), the syncer, the piece lists' fan-out, and at most
//! `state::VERIFY_THREADS` checking a `.part`'s pieces (on resume, and
//! before the rename when another process opened the `.part`).

pub mod batch;
mod direct;
mod download;
mod downloader;
mod error;
mod fault;
mod job;
pub mod output;
mod pieces;
pub mod rate;
mod round;
pub(crate) mod scheduler;
mod seal;
pub mod state;
mod supervisor;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use batch::{BatchItem, BatchOptions, BatchProgress, DEFAULT_CONCURRENCY};
// The download's constants the simulator uses.
pub use downloader::Downloader;
pub use error::{FetchError, HolderFailure};
pub use fault::{HolderFault, HolderFaultKind};
pub use output::resolve_output;
pub use rate::{parse_rate, ParseRateError};
#[cfg(test)]
pub(crate) use {
    round::{requery_wanted, MAX_HOLDERS, SLOTS_ENOUGH},
    supervisor::FAST_REQUERY,
    worker::{HAVE_WAIT, MAX_PARKED, RUN_BYTES},
};

use crate::digest::Sha1Digest;

/// What a [`Downloader`] does, as its user sets it. `DownloadOptions::default()`
/// gives the defaults; change a field or two with
/// `DownloadOptions { force: true, ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Overwrite an existing output with different content.
    pub force: bool,
    /// Total rate cap in bytes per second, across every download of the
    /// [`Downloader`] and all their connections.
    pub max_rate: Option<u64>,
    /// Longest wait for a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// Longest a read from a peer may block: a stall.
    pub io_timeout: Duration,
    /// Deadline of a piece-list request.
    pub request_timeout: Duration,
    /// Connections opened to each holder at most.
    pub connections_per_holder: usize,
    /// Every holder gets one connection; more per holder (up to
    /// `connections_per_holder`) are opened only while the total is below
    /// this. With pipelined requests one connection keeps a holder's link
    /// busy, and in a swarm a seed shares its uplink among more
    /// downloaders (docs/benchmarks.md has the measurements).
    pub target_connections: usize,
    /// Connections in total.
    pub max_connections: usize,
    /// Bytes of piece buffers allowed in total (caps the connections; a
    /// batch splits it among the files running at once).
    pub memory_budget: u64,
    /// Consecutive failures of a holder before it is dropped.
    pub max_retries: u32,
    /// Patience, not failure: while every holder only failed to answer
    /// (could not be reached for its piece list, or dropped after
    /// failures with no piece coming), they are asked again after a
    /// randomized backoff until this long passes without progress (a seed
    /// whose full link drops handshakes as a flash crowd starts is
    /// reachable a moment later). Zero: fail at once.
    pub patience: Duration,
    /// How often the holders are asked again (new peers join the download).
    pub requery_interval: Duration,
    /// How often the resume state is saved at most (each save rewrites its
    /// bitmap in place: 2.5 KiB for a 10 GiB file).
    pub state_interval: Duration,
    /// Copies of one piece fetched at once in the endgame.
    pub endgame_copies: usize,
    /// Set to stop the downloads (Ctrl-C): the state is saved and
    /// [`FetchError::Interrupted`] returned; a batch starts no new file.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl DownloadOptions {
    /// True once [`DownloadOptions::cancel`] is set.
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

impl Default for DownloadOptions {
    /// 500 ms connect, 5 s stall, 10 s for a piece list; one connection per
    /// holder (`connections_per_holder` 2 allows a second, but it opens only
    /// while fewer than `target_connections`, 1, are open in total: with
    /// these defaults, never), at most 8, 48 MiB of buffers, 3 retries, 15 s
    /// of patience while holders only fail to answer; holders
    /// re-queried every 500 ms (every 50 ms for the first 2 s, backing off
    /// once nobody new is found: partial holders join quickly; none once
    /// 128 are known); state saved every 50 ms at most (a peer sharing the
    /// output's directory serves the pieces it marks); 2 copies in the
    /// endgame.
    fn default() -> Self {
        DownloadOptions {
            force: false,
            max_rate: None,
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            connections_per_holder: 2,
            target_connections: 1,
            max_connections: 8,
            memory_budget: 48 * 1024 * 1024,
            max_retries: 3,
            patience: Duration::from_secs(15),
            requery_interval: Duration::from_millis(500),
            state_interval: Duration::from_millis(50),
            endgame_copies: 2,
            cancel: None,
        }
    }
}

/// Where a running download is, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// File size.
    pub size: u64,
    /// Bytes verified and on disk (resumed ones included).
    pub done: u64,
    /// Bytes received from the network in this run.
    pub received: u64,
    /// Holders with a connection working right now.
    pub peers_active: usize,
}

/// A progress callback, called from the download's calling thread about
/// ten times a second.
pub type ProgressFn<'a> = &'a (dyn Fn(&Progress) + Sync);

/// What a finished download did (the `--json` summary).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The file.
    pub sha1: Sha1Digest,
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Bytes fetched over the network in this run.
    pub bytes_received: u64,
    /// Bytes of verified pieces from complete holders (seeds) in this run.
    pub bytes_from_seeds: u64,
    /// Bytes of verified pieces from partial holders (peers still
    /// downloading the file: the swarm) in this run.
    pub bytes_from_partials: u64,
    /// Wall time of this run.
    pub seconds: f64,
    /// Ids of the peers that delivered at least one verified piece.
    pub peers_used: Vec<String>,
    /// Pieces fetched again after a failure or bad data.
    pub pieces_retried: u64,
    /// Bytes kept from an earlier run's `.part`.
    pub resumed_bytes: u64,
    /// Bytes read back from the `.part` and verified again: the pieces an
    /// earlier run's state claimed, and every piece when another process
    /// opened the `.part` for writing during the download, or had it open
    /// at its end (see SECURITY.md). The pieces received were each hashed
    /// once, as they arrived.
    pub rechecked_bytes: u64,
    /// Peers dropped for bad data or a false piece list (`id (addr)`).
    pub bad_peers: Vec<String>,
    /// Peers that held a piece past its deadline (dripping or stalled
    /// bodies; `id (addr)`): their claims stopped counting.
    pub slow_peers: Vec<String>,
    /// The output already had this content: nothing was downloaded.
    pub already_present: bool,
}
