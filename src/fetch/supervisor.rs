//! The supervisor of one round of a download: it runs on the calling
//! thread, starts worker threads (one per connection, `worker.rs`) up to the
//! limits, saves the resume state, re-queries holders, reports progress,
//! and at the end stops the workers (shutting their sockets down so none
//! waits on a stalled peer) and joins every thread (`std::thread::scope`).
//! No thread reads the `.part` back: every piece was verified against the
//! chain as it arrived, and the last one against the file's SHA1.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::round::{Outcome, Round, TICK};
use super::{FetchError, ProgressFn};
use crate::holders::Holder;

/// The syncer flushes the `.part` to disk each time this much more of it
/// is written, so the final fsync only waits for the tail (the writeback
/// overlaps the transfer instead of following it).
const SYNC_EVERY: u64 = 16 * 1024 * 1024;

/// Re-query interval during the first [`FAST_REQUERY_FOR`] of a round
/// (unless `requery_interval` is shorter), when partial holders get
/// their first pieces: in the simulator (1,000 hosts) 50 ms instead of
/// 150 (and holders announced within 50 ms) took the median host from
/// 1.31x to 1.22x one host alone. Once
/// partial holders are known, a re-query that found no one new doubles
/// it (up to `requery_interval`) and one that did sets it back: a swarm of
/// 47 hosts is known within a second, and its downloads then stop reading
/// etcd 20 times a second (in the lab that cost more CPU than the faster
/// discovery saved). A round at [`super::round::MAX_HOLDERS`] asks no
/// more.
pub(crate) const FAST_REQUERY: Duration = Duration::from_millis(50);
/// How long a round re-queries every [`FAST_REQUERY`].
const FAST_REQUERY_FOR: Duration = Duration::from_secs(2);

/// The wait before holders that all failed are asked again for the
/// `n`-th time: 250 ms doubling to 4 s, drawn from half to one and a half
/// of it (so hosts that lost the same seed do not come back in step).
pub(super) fn backoff(n: u32) -> Duration {
    let base = Duration::from_millis(250)
        .saturating_mul(1 << n.saturating_sub(1).min(4))
        .min(Duration::from_secs(4));
    crate::discovery::jittered(base)
}

/// Runs `round` to its end on the calling thread. `requery` returns new
/// holders for this round's piece list (`true`: every holder failed, look
/// further, `HolderSource::more_holders`).
pub(crate) fn run(
    round: &Round<'_>,
    requery: &mut dyn FnMut(bool) -> Vec<Holder>,
    progress: Option<ProgressFn<'_>>,
) -> Outcome {
    std::thread::scope(|scope| {
        // Joined with the scope; it ends with the round (abort or done).
        if let Err(e) = std::thread::Builder::new()
            .name("pbs-get-sync".into())
            .spawn_scoped(scope, || sync_behind(round))
        {
            round.abort.store(true, Ordering::Release);
            return Outcome::Fatal(FetchError::Thread(e));
        }
        // The chain once; the state at once, so a state of the right
        // length exists even if the disk fills before the first periodic
        // save (see `save`).
        round.save_chain();
        round.save_state(&round.sched.done_flags());
        let mut last_query = Instant::now();
        let started = Instant::now();
        // Patience: the last time a piece was written, and how many
        // bytes were done then.
        let mut progress_at = (Instant::now(), round.sched.done_bytes());
        let mut waits = 0u32;
        let mut seq = 0usize;
        let mut fast_every = FAST_REQUERY;
        let mut last_further = Instant::now();
        let ended = loop {
            if let Some(e) = round.fatal.lock().take() {
                break Some(Outcome::Fatal(e));
            }
            if round.sched.remaining() == 0 {
                break None;
            }
            if round.dl.opts().cancelled() {
                break Some(Outcome::Interrupted);
            }
            // Another list waiting (from the start, or found since by
            // looking further): a round that delivers nothing yields.
            let others = round.others_waiting.load(Ordering::Acquire);
            if let Some(turn) = round.yield_turn.or(others.then_some(0)) {
                let patience = round.piece_deadline() * 2u32.saturating_pow(turn.min(4));
                if round.sched.since_progress() > patience {
                    break Some(Outcome::Yielded);
                }
            }
            // No piece for a piece deadline: the holders may all be
            // liars (a lookup stops at its first whole copy), so the
            // source looks further, once per deadline.
            let deadline = round.piece_deadline();
            if round.sched.since_progress() > deadline && last_further.elapsed() > deadline {
                last_further = Instant::now();
                let fresh = requery(true);
                if !fresh.is_empty() {
                    round.add_holders(fresh);
                }
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
            let done = round.sched.done_bytes();
            if done != progress_at.1 {
                progress_at = (Instant::now(), done);
                waits = 0;
            }
            if usable == 0 && active == 0 {
                let fresh = requery(true);
                last_query = Instant::now();
                if !fresh.is_empty() {
                    round.add_holders(fresh);
                    continue;
                }
                // The lookup found holders of another list meanwhile (this
                // one's were a liar's, dripping): their turn now, not this
                // list's patience.
                if round.others_waiting.load(Ordering::Acquire) {
                    break Some(Outcome::Yielded);
                }
                // Patience, not failure: holders that only failed to
                // answer (a full link drops handshakes) are asked again
                // after a randomized backoff, until the patience passes
                // without a piece.
                if progress_at.0.elapsed() >= round.dl.opts().patience {
                    break Some(Outcome::Failed);
                }
                waits += 1;
                let at = Instant::now() + backoff(waits);
                if round.readmit_failing(at) == 0 {
                    break Some(Outcome::Failed);
                }
                log::info!(
                    "every holder failed; asking them again (no piece for {:.1}s)",
                    progress_at.0.elapsed().as_secs_f64()
                );
                continue;
            }
            // Partial holders have their first pieces within a fraction
            // of a second: asked sooner at the start, they join sooner.
            let slow = round.dl.opts().requery_interval;
            let interval = if started.elapsed() < FAST_REQUERY_FOR {
                slow.min(fast_every)
            } else {
                slow
            };
            if (last_query.elapsed() >= interval && round.wants_holders()) || round.has_rechecks() {
                let asked = Instant::now();
                let added = round.add_requeried(requery(false));
                fast_every = if added > 0 {
                    FAST_REQUERY
                } else if round.sched.in_swarm() {
                    (fast_every * 2).min(slow)
                } else {
                    fast_every
                };
                log::trace!(
                    "holders asked again in {:.3}s: {added} new ({usable} usable, {} served, {:.2}s in)",
                    asked.elapsed().as_secs_f64(),
                    round.receiving(),
                    started.elapsed().as_secs_f64()
                );
                last_query = Instant::now();
            }
            round.maybe_save_state();
            // The .part's watch counts the opens by others (see `seal`).
            round.dl.watch.poll();
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
        round.dl.watch.before_last_state();
        round.save_state(&round.sched.done_flags());
        if let Some(cb) = progress {
            cb(&round.progress());
        }
        ended.unwrap_or(Outcome::Complete)
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
    while let Some(i) = round.next_slot() {
        *seq += 1;
        let spawned = std::thread::Builder::new()
            .name(format!("pbs-get-{i}-{seq}"))
            .spawn_scoped(scope, move || super::worker::run(round, i));
        if let Err(e) = spawned {
            round.slots.lock()[i].workers -= 1;
            return Err(e);
        }
    }
    Ok(())
}

/// Flushes the `.part` to disk every [`SYNC_EVERY`] bytes written, on its
/// own thread (an fsync blocks: no worker waits on it), until every piece
/// is written or the round is aborted. A failed flush is left to the final
/// fsync, which reports it.
fn sync_behind(round: &Round<'_>) {
    let mut synced = round.sched.done_bytes();
    loop {
        if round.abort.load(Ordering::Acquire) || round.sched.remaining() == 0 {
            return;
        }
        let done = round.sched.done_bytes();
        if done >= synced + SYNC_EVERY {
            if let Err(e) = round.dl.part.sync_data() {
                log::debug!("flushing {}: {e}", round.dl.part_path.display());
            }
            synced = done;
        }
        round.sched.wait(TICK);
    }
}
