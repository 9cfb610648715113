//! One round of a download: every piece of one piece list, fetched by
//! worker threads (one per connection), verified, written; a hasher thread
//! hashes the verified prefix of the `.part` as it grows so the whole-file
//! SHA1 is ready almost as soon as the last piece lands.
//!
//! The calling thread supervises: it opens connections up to the limits,
//! saves the resume state, re-queries holders, reports progress, and at the
//! end stops the workers (shutting their sockets down so none waits on a
//! stalled peer) and joins every thread (`std::thread::scope`).
//!
//! Locks: the scheduler's state, the slot table, the socket table and the
//! fatal-error cell; each is held for a lookup or an update, never across
//! I/O, and never two at once.

use std::collections::HashMap;
use std::fs::File;
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha1::{Digest, Sha1};

use super::client::{PeerConn, Timeouts};
use super::rate::RateLimiter;
use super::scheduler::Scheduler;
use super::state::ResumeState;
use super::{DownloadOptions, FetchError, Holder, Progress, ProgressFn};
use crate::protocol::PieceList;
use crate::Sha1Digest;

/// How often the supervisor wakes up when nothing happens.
const TICK: Duration = Duration::from_millis(100);
/// Read size of the whole-file hasher.
const HASH_CHUNK: usize = 1024 * 1024;
/// The syncer flushes the `.part` to disk each time this much more of it
/// is written, so the final fsync only waits for the tail (the writeback
/// overlaps the transfer instead of following it).
const SYNC_EVERY: u64 = 16 * 1024 * 1024;

/// One holder in a round.
#[derive(Debug)]
pub(crate) struct Slot {
    pub holder: Holder,
    /// Consecutive failures.
    pub failures: u32,
    /// Why it was dropped, if it was.
    pub dropped: Option<String>,
    /// Dropped for bad data.
    pub bad: bool,
    /// Worker threads running for it.
    pub workers: usize,
    /// Verified pieces it delivered.
    pub pieces: u64,
    /// No worker is started for it before this (it answered `503`).
    pub retry_at: Option<Instant>,
    /// Consecutive `503` answers.
    pub busy: u32,
}

/// How a round ended.
pub(crate) enum Outcome {
    /// Every piece is on disk; the whole-file SHA1 of the `.part`, and how
    /// many pieces (from the first) it read before the round's last write
    /// (to be checked again before the rename: see [`super::state::changed_piece`]).
    Complete(Sha1Digest, usize),
    /// Every holder of this round was dropped and no new one came.
    Failed,
    /// The caller cancelled.
    Interrupted,
    /// A local error (disk, threads).
    Fatal(FetchError),
}

/// The state a round's threads share.
pub(crate) struct Round<'a> {
    pub opts: &'a DownloadOptions,
    pub list: &'a PieceList,
    pub part: &'a File,
    pub part_path: &'a Path,
    /// The `.part.state` saved as pieces verify.
    pub state_path: &'a Path,
    /// When the state was last saved (by a worker or the supervisor).
    last_save: Mutex<Instant>,
    /// Held while the state file is written: a worker's periodic save and
    /// the supervisor's last one share the `.tmp` name.
    saving: Mutex<()>,
    pub sched: Scheduler,
    pub slots: Mutex<Vec<Slot>>,
    pub received: &'a AtomicU64,
    pub retried: &'a AtomicU64,
    pub rate: Option<&'a RateLimiter>,
    pub timeouts: Timeouts,
    /// Workers stop (set at the end of the round, or on abort).
    stop_workers: AtomicBool,
    /// The hasher stops too (failure, cancel).
    abort: AtomicBool,
    fatal: Mutex<Option<FetchError>>,
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_socket: AtomicU64,
    max_workers: usize,
    /// This round's id in the state file (a peer serving our `.part`
    /// answers it: that holder is ourselves).
    pub download_id: String,
}

impl<'a> Round<'a> {
    /// A round over `list` with the pieces flagged in `done` already on disk.
    #[allow(clippy::too_many_arguments)] // the round's context, passed once
    pub fn new(
        opts: &'a DownloadOptions,
        list: &'a PieceList,
        part: &'a File,
        part_path: &'a Path,
        state_path: &'a Path,
        done: &[bool],
        received: &'a AtomicU64,
        retried: &'a AtomicU64,
        rate: Option<&'a RateLimiter>,
    ) -> Self {
        let done_bytes = done
            .iter()
            .enumerate()
            .filter(|(_, d)| **d)
            .map(|(i, _)| piece_range(list, i).1 as u64)
            .sum();
        let by_memory = (opts.memory_budget / list.piece_size.max(1)).max(1) as usize;
        Round {
            opts,
            list,
            part,
            part_path,
            state_path,
            last_save: Mutex::new(Instant::now()),
            saving: Mutex::new(()),
            sched: Scheduler::new(done, done_bytes, opts.endgame_copies),
            slots: Mutex::new(Vec::new()),
            received,
            retried,
            rate,
            timeouts: Timeouts {
                connect: opts.connect_timeout,
                io: opts.io_timeout,
            },
            stop_workers: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            fatal: Mutex::new(None),
            sockets: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(0),
            max_workers: opts.max_connections.max(1).min(by_memory),
            download_id: crate::discovery::random_id(),
        }
    }

    /// Adds holders (ignoring ids already present).
    pub fn add_holders(&self, holders: Vec<Holder>) {
        let mut slots = self.slots.lock();
        for holder in holders {
            if slots.iter().any(|s| s.holder.id == holder.id) {
                continue;
            }
            slots.push(Slot {
                holder,
                failures: 0,
                dropped: None,
                bad: false,
                workers: 0,
                pieces: 0,
                retry_at: None,
                busy: 0,
            });
        }
        drop(slots);
        self.sched.wake_all();
    }

    /// Usable holders other than `except` without a connection, free to
    /// get one now (not waiting out a `503` or a rotation), in slot order.
    fn idle_holders(&self, except: Option<usize>) -> Vec<usize> {
        let now = Instant::now();
        let slots = self.slots.lock();
        let mut per_addr: HashMap<&str, usize> = HashMap::new();
        for s in slots.iter() {
            *per_addr.entry(s.holder.addr.as_str()).or_default() += s.workers;
        }
        slots
            .iter()
            .enumerate()
            .filter(|(j, s)| {
                Some(*j) != except
                    && s.dropped.is_none()
                    && s.workers == 0
                    && per_addr.get(s.holder.addr.as_str()).copied().unwrap_or(0) == 0
                    && s.retry_at.is_none_or(|t| t <= now)
            })
            .map(|(j, _)| j)
            .collect()
    }

    /// True if a holder without a connection may have a piece this
    /// download lacks: a connection whose (partial) holder has nothing to
    /// give had better go there (see [`super::worker`]).
    pub fn better_holder_waits(&self, slot: usize) -> bool {
        self.idle_holders(Some(slot))
            .into_iter()
            .any(|j| self.sched.useful(j))
    }

    /// The first byte and length of piece `i`.
    pub fn piece_range(&self, i: usize) -> (u64, usize) {
        piece_range(self.list, i)
    }

    /// True once workers must stop.
    pub fn stopping(&self) -> bool {
        self.stop_workers.load(Ordering::Acquire)
    }

    /// Records a local error that ends the round.
    pub fn set_fatal(&self, e: FetchError) {
        self.fatal.lock().get_or_insert(e);
        self.sched.wake_all();
    }

    /// Registers a worker's connection so the supervisor can shut it down.
    pub fn register(&self, conn: &PeerConn) -> Option<u64> {
        let clone = conn.try_clone_stream().ok()?;
        let id = self.next_socket.fetch_add(1, Ordering::Relaxed);
        self.sockets.lock().insert(id, clone);
        Some(id)
    }

    /// Forgets a registered connection; true if it was still registered
    /// (so the end of the round has not shut it down and will not).
    pub fn take_registration(&self, id: Option<u64>) -> bool {
        id.is_some_and(|id| self.sockets.lock().remove(&id).is_some())
    }

    /// Forgets a registered connection.
    pub fn unregister(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.sockets.lock().remove(&id);
        }
    }

    /// Sleeps `d` in short slices, returning early once workers must stop.
    pub fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopping() {
            let now = Instant::now();
            if now >= end {
                return;
            }
            std::thread::sleep((end - now).min(TICK));
        }
    }

    fn stop_all_workers(&self) {
        self.stop_workers.store(true, Ordering::Release);
        let sockets: Vec<TcpStream> = self.sockets.lock().drain().map(|(_, s)| s).collect();
        for s in sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.sched.wake_all();
    }

    fn progress(&self) -> Progress {
        let slots = self.slots.lock();
        Progress {
            size: self.list.size,
            done: self.sched.done_bytes(),
            received: self.received.load(Ordering::Relaxed),
            peers_active: slots.iter().filter(|s| s.workers > 0).count(),
        }
    }

    /// Saves the state if pieces were verified since the last save and
    /// `state_interval` has passed. Called by workers after each piece (so
    /// a peer sharing the directory serves it soon, whatever the supervisor
    /// is busy with) and by the supervisor; skipped if another thread saves.
    pub fn maybe_save_state(&self) {
        let Some(mut last) = self.last_save.try_lock() else {
            return;
        };
        if last.elapsed() < self.opts.state_interval {
            return;
        }
        if let Some(flags) = self.sched.take_changes() {
            self.save_state(&flags, self.state_path);
        }
        *last = Instant::now();
    }

    /// Writes the resume state. Not for a file of one piece: there is
    /// nothing to resume inside a piece, and skipping the file keeps a
    /// batch of small files from creating and deleting two files each
    /// (ext4's inode allocator made that most of the batch's system time).
    fn save_state(&self, flags: &[bool], state_path: &Path) {
        if self.list.pieces.len() <= 1 {
            return;
        }
        let _saving = self.saving.lock();
        let mut state = ResumeState::new(self.list, flags).with_download(&self.download_id);
        state.peers = self
            .slots
            .lock()
            .iter()
            .filter(|s| s.workers > 0)
            .map(|s| s.holder.id.clone())
            .collect();
        if let Err(e) = state.save(state_path) {
            log::warn!("cannot save resume state {}: {e}", state_path.display());
        }
    }
}

/// The first byte and length of piece `i` of `list`.
pub(crate) fn piece_range(list: &PieceList, i: usize) -> (u64, usize) {
    let start = i as u64 * list.piece_size;
    let end = (start + list.piece_size).min(list.size);
    (start, (end - start) as usize)
}

/// Runs `round` to its end on the calling thread. `requery` returns new
/// holders for this round's piece list.
pub(crate) fn run(
    round: &Round<'_>,
    requery: &mut dyn FnMut() -> Vec<Holder>,
    progress: Option<ProgressFn<'_>>,
) -> Outcome {
    let state_path = round.state_path;
    std::thread::scope(|scope| {
        let hasher = match std::thread::Builder::new()
            .name("pb-get-hash".into())
            .spawn_scoped(scope, || hash_prefix(round))
        {
            Ok(h) => h,
            Err(e) => return Outcome::Fatal(FetchError::Thread(e)),
        };
        // Joined with the scope; it ends with the round (abort or done).
        if let Err(e) = std::thread::Builder::new()
            .name("pb-get-sync".into())
            .spawn_scoped(scope, || sync_behind(round))
        {
            round.abort.store(true, Ordering::Release);
            return Outcome::Fatal(FetchError::Thread(e));
        }
        // Written at once, so a state of the right length exists even if
        // the disk fills before the first periodic save (see `save`).
        round.save_state(&round.sched.done_flags(), state_path);
        let mut last_query = Instant::now();
        let mut seq = 0usize;
        let ended = loop {
            if let Some(e) = round.fatal.lock().take() {
                break Some(Outcome::Fatal(e));
            }
            if round.sched.remaining() == 0 {
                break None;
            }
            if round
                .opts
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                break Some(Outcome::Interrupted);
            }
            if let Err(e) = fill(scope, round, &mut seq) {
                break Some(Outcome::Fatal(FetchError::Thread(e)));
            }
            let (usable, active) = {
                let slots = round.slots.lock();
                (
                    slots.iter().filter(|s| s.dropped.is_none()).count(),
                    slots.iter().map(|s| s.workers).sum::<usize>(),
                )
            };
            if usable == 0 && active == 0 {
                let fresh = requery();
                last_query = Instant::now();
                if fresh.is_empty() {
                    break Some(Outcome::Failed);
                }
                round.add_holders(fresh);
                continue;
            }
            if last_query.elapsed() >= round.opts.requery_interval {
                let asked = Instant::now();
                round.add_holders(requery());
                log::trace!(
                    "holders asked again in {:.3}s",
                    asked.elapsed().as_secs_f64()
                );
                last_query = Instant::now();
            }
            round.maybe_save_state();
            if let Some(cb) = progress {
                cb(&round.progress());
            }
            round.sched.wait(TICK);
        };
        log::debug!("round: every piece verified and written");
        round.stop_all_workers();
        if ended.is_some() {
            round.abort.store(true, Ordering::Release);
        }
        let hashed = hasher.join();
        log::debug!("round: whole-file hash done");
        round.save_state(&round.sched.done_flags(), state_path);
        if let Some(cb) = progress {
            cb(&round.progress());
        }
        if let Some(outcome) = ended {
            return outcome;
        }
        match hashed {
            Ok(Ok(Some((digest, early)))) => Outcome::Complete(digest, early),
            Ok(Ok(None)) => Outcome::Interrupted,
            Ok(Err(source)) => Outcome::Fatal(FetchError::output(round.part_path, source)),
            Err(_) => Outcome::Fatal(FetchError::Thread(std::io::Error::other(
                "bug: the hasher thread panicked",
            ))),
        }
    })
}

/// Starts workers: one per usable holder, then more per holder (up to
/// `connections_per_holder`) while the total is below `target_connections`;
/// never more than the cap. Holders are counted by address, not by id:
/// records that point at one listener (sybils of one host) share its
/// workers. A holder that answered `503` waits for its `retry_at`.
fn fill<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    round: &'env Round<'env>,
    seq: &mut usize,
) -> std::io::Result<()> {
    let per_holder = round.opts.connections_per_holder.max(1);
    for level in 1..=per_holder {
        loop {
            // Among the holders without a connection, one that may have a
            // piece this download lacks goes first (looked up before the
            // slot table is locked: never two locks at once).
            let preferred = if level == 1 {
                round
                    .idle_holders(None)
                    .into_iter()
                    .find(|&j| round.sched.useful(j))
            } else {
                None
            };
            let pick = {
                let mut slots = round.slots.lock();
                let total: usize = slots.iter().map(|s| s.workers).sum();
                if total >= round.max_workers
                    || (level > 1 && total >= round.opts.target_connections)
                {
                    return Ok(());
                }
                let now = Instant::now();
                let mut per_addr: HashMap<&str, usize> = HashMap::new();
                for s in slots.iter() {
                    *per_addr.entry(s.holder.addr.as_str()).or_default() += s.workers;
                }
                let eligible = |s: &Slot| {
                    s.dropped.is_none()
                        && s.workers < level
                        && per_addr.get(s.holder.addr.as_str()).copied().unwrap_or(0) < level
                        && s.retry_at.is_none_or(|t| t <= now)
                };
                let pick = preferred
                    .filter(|&j| slots.get(j).is_some_and(eligible))
                    .or_else(|| slots.iter().position(eligible));
                if let Some(i) = pick {
                    slots[i].workers += 1;
                }
                pick
            };
            let Some(i) = pick else { break };
            *seq += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("pb-get-{i}-{seq}"))
                .spawn_scoped(scope, move || super::worker::run(round, i));
            if let Err(e) = spawned {
                round.slots.lock()[i].workers -= 1;
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Flushes the `.part` to disk every [`SYNC_EVERY`] bytes written, on its
/// own thread (an fsync blocks: neither the hasher nor a worker waits on
/// it), until every piece is written or the round is aborted. A failed
/// flush is left to the final fsync, which reports it.
fn sync_behind(round: &Round<'_>) {
    let mut synced = round.sched.done_bytes();
    loop {
        if round.abort.load(Ordering::Acquire) || round.sched.remaining() == 0 {
            return;
        }
        let done = round.sched.done_bytes();
        if done >= synced + SYNC_EVERY {
            if let Err(e) = round.part.sync_data() {
                log::debug!("flushing {}: {e}", round.part_path.display());
            }
            synced = done;
        }
        round.sched.wait(TICK);
    }
}

/// Hashes the `.part` piece by piece as pieces are done, in order: the
/// whole-file SHA1 and the number of pieces read before every piece was
/// written. `None` if the round was aborted first.
fn hash_prefix(round: &Round<'_>) -> std::io::Result<Option<(Sha1Digest, usize)>> {
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; HASH_CHUNK.min(round.list.size as usize)];
    let mut early = round.list.pieces.len();
    for i in 0..round.list.pieces.len() {
        while !round.sched.is_done(i) {
            if round.abort.load(Ordering::Acquire) {
                return Ok(None);
            }
            round.sched.wait(TICK);
        }
        if early > i && round.sched.remaining() == 0 {
            // Every write is done: what is read from here on is final.
            early = i;
        }
        let (start, len) = round.piece_range(i);
        let mut off = 0usize;
        while off < len {
            let n = (len - off).min(buf.len());
            round
                .part
                .read_exact_at(&mut buf[..n], start + off as u64)?;
            hasher.update(&buf[..n]);
            off += n;
        }
    }
    Ok(Some((Sha1Digest::from_hasher(hasher), early)))
}
