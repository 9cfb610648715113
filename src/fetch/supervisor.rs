//! The supervisor of one round of a download: it runs on the calling
//! thread, starts worker threads (one per connection, `worker.rs`) up to the
//! limits, runs a hasher thread that hashes the verified prefix of the
//! `.part` as it grows (so the whole-file SHA1 is ready almost as soon as
//! the last piece lands), saves the resume state, re-queries holders,
//! reports progress, and at the end stops the workers (shutting their
//! sockets down so none waits on a stalled peer) and joins every thread
//! (`std::thread::scope`).

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::Instant;

use sha1::{Digest, Sha1};

use super::round::{Outcome, Round, TICK};
use super::{FetchError, Holder, ProgressFn};
use crate::Sha1Digest;

/// Read size of the whole-file hasher.
const HASH_CHUNK: usize = 1024 * 1024;
/// The hasher flushes the `.part` to disk each time it has hashed this
/// much, so the final fsync only waits for the tail (the writeback overlaps
/// the transfer instead of following it).
const SYNC_EVERY: u64 = 16 * 1024 * 1024;

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
            .name("pbs-get-hash".into())
            .spawn_scoped(scope, || hash_prefix(round))
        {
            Ok(h) => h,
            Err(e) => return Outcome::Fatal(FetchError::Thread(e)),
        };
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
            Ok(Ok(Some(digest))) => Outcome::Complete(digest),
            Ok(Ok(None)) => Outcome::Interrupted,
            Ok(Err(source)) => Outcome::Fatal(FetchError::read(round.part_path, source)),
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
                let pick = slots.iter().position(|s| {
                    s.dropped.is_none()
                        && s.workers < level
                        && per_addr.get(s.holder.addr.as_str()).copied().unwrap_or(0) < level
                        && s.retry_at.is_none_or(|t| t <= now)
                });
                if let Some(i) = pick {
                    slots[i].workers += 1;
                }
                pick
            };
            let Some(i) = pick else { break };
            *seq += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("pbs-get-{i}-{seq}"))
                .spawn_scoped(scope, move || super::worker::run(round, i));
            if let Err(e) = spawned {
                round.slots.lock()[i].workers -= 1;
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Hashes the `.part` piece by piece as pieces are done, in order. `None`
/// if the round was aborted first.
fn hash_prefix(round: &Round<'_>) -> std::io::Result<Option<Sha1Digest>> {
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; HASH_CHUNK.min(round.list.size as usize)];
    let mut unsynced = 0u64;
    for i in 0..round.list.pieces.len() {
        while !round.sched.is_done(i) {
            if round.abort.load(Ordering::Acquire) {
                return Ok(None);
            }
            round.sched.wait(TICK);
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
        unsynced += len as u64;
        if unsynced >= SYNC_EVERY {
            round.part.sync_data()?;
            unsynced = 0;
        }
    }
    Ok(Some(Sha1Digest::from_hasher(hasher)))
}
