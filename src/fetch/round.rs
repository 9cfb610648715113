//! The shared state of one round of a download: every piece of one piece
//! list, the holders (slots), the scheduler, the socket table and the fatal
//! error cell, read and updated by the worker threads (`worker.rs`) and the
//! supervisor (`supervisor.rs`).
//!
//! Locks: the scheduler's state, the slot table, the socket table and the
//! fatal-error cell, each held for a lookup or an update, never across I/O
//! and never two at once; and the two of the state file. Saving it takes
//! `last_save` (only tried: a thread that finds it taken skips the save),
//! then `saving`, the open state file held across its write (a worker's
//! periodic save and the supervisor's last one share it); under them the
//! scheduler's state, then the slot table, are each taken for a moment.

use std::collections::{HashMap, HashSet};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::fault::Dropped;
use super::job::Download;
use super::scheduler::Scheduler;
use super::state::{ResumeState, StateFile};
use super::{FetchError, Progress};
use crate::client::{PeerConn, Timeouts};
use crate::digest::Sha1Digest;
use crate::holders::Holder;
use crate::policy::host::Host;
use crate::protocol::{Bitfield, PieceList};

/// How often the supervisor wakes up when nothing happens.
pub(super) const TICK: Duration = Duration::from_millis(100);

/// Most usable holders a round takes from its re-queries: at this many
/// the supervisor stops asking the tracker, so a download's cost (its
/// holder scans, piece lists, etcd reads) does not grow with the swarm
/// or with time. Not fewer: in the simulator (1,000 hosts) a download
/// that stopped at 32 or 64 knew only the holders announced first, the
/// same few for everyone, and the swarm ran at 25 % (32) or 86 % (64) of
/// its links where 128 did as well as no bound.
pub(crate) const MAX_HOLDERS: usize = 128;
/// Most usable holders of one host (an IP, an IPv6 /64) a re-query adds:
/// sybil records of one host, announced one by one, cannot fill a round.
pub(crate) const MAX_PER_HOST: usize = 4;

/// In a swarm a round opens no further connection while this many of its
/// connections hold an upload slot (their last piece request was served
/// and they go on asking): one fewer than a holder's slots
/// (`SlotConfig::default`, 4 + 1). A download that kept 8 connections
/// looking for slots while it held 5 or more took slots that others
/// lacked: the demand exceeded the slots by 60 %, each download was
/// turned away about 2,600 times, and the last tenth of the hosts held
/// 3.7 slots on average against 4.7 for the first (in the simulator,
/// 1,000 hosts: the last host 1.62x one host alone). Stopping at 4
/// leaves about one slot in five free, so a download that holds fewer
/// finds one soon: the last host 1.34x, a third of the requests per
/// download (turn-aways about 680). Stopping at 5 left no slack (1.46x,
/// 3,750 requests), at 3 too few slots were used (1.53x). In the lab
/// (32 and 47 hosts) the slowest and the median host were faster too
/// (docs/benchmarks.md).
pub(crate) const SLOTS_ENOUGH: usize = 4;

/// Whether a round re-queries its holders (reads the tracker) at its next
/// interval: while it has fewer than [`MAX_HOLDERS`] usable holders, and,
/// in a swarm, only while fewer than [`SLOTS_ENOUGH`] of its connections
/// hold an upload slot. A download served on as many connections as it
/// would open has nothing to do with more holders (it opens no further
/// connection, `Round::next_slot`); it asks again as soon as one of them
/// loses its slot. In the lab (47 hosts, one seed) the downloads re-read
/// the tracker about 15 times each for holders they never used: etcd's
/// CPU was 8 % of the machine. Shared with the simulator.
pub(crate) fn requery_wanted(usable: usize, receiving: usize, in_swarm: bool) -> bool {
    usable < MAX_HOLDERS && !(in_swarm && receiving >= SLOTS_ENOUGH)
}

/// The shortest deadline of one piece (see [`Round::piece_deadline`]).
pub(super) const PIECE_DEADLINE_MIN: Duration = Duration::from_secs(3);

/// The usable slots that may get another worker at `level` (a holder has
/// fewer than `level` workers, counted by address: records that point at
/// one listener share its workers) and are not waiting out a `503` or a
/// rotation, in slot order.
pub(super) fn open_slots(slots: &[Slot], level: usize, now: Instant) -> Vec<usize> {
    let mut per_addr: HashMap<&str, usize> = HashMap::new();
    for s in slots {
        *per_addr.entry(s.holder.addr.as_str()).or_default() += s.workers;
    }
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.dropped.is_none()
                && s.workers < level
                && per_addr.get(s.holder.addr.as_str()).copied().unwrap_or(0) < level
                && s.retry_at.is_none_or(|t| t <= now)
        })
        .map(|(j, _)| j)
        .collect()
}

/// The host a holder is dialled at first (see [`Host`]).
fn host_of(h: &Holder) -> Option<Host> {
    Host::of_addr(h.dial_addrs().first()?)
}

/// One holder in a round.
#[derive(Debug)]
pub(crate) struct Slot {
    pub holder: Holder,
    /// Consecutive failures.
    pub failures: u32,
    /// Why it was dropped, if it was.
    pub dropped: Option<Dropped>,
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
    /// Pieces it held past their deadline (named in the summary).
    pub late: u32,
    /// Its bitmap came with its piece list, just now: the first worker
    /// sent there need not ask it (taken by that worker).
    pub welcomed: bool,
    /// It joined on trust of this round's piece list, its own never
    /// fetched (see [`Round::trust`]).
    pub on_trust: bool,
}

/// What the fetch of a holder's piece list leaves for the round: its
/// connection, still open, and the partial holder's bitmap that rode on
/// the answer (`X-Have`).
#[derive(Debug, Default)]
pub(crate) struct Welcome {
    pub conn: Option<PeerConn>,
    pub have: Option<Bitfield>,
}

/// How a round ended.
pub(crate) enum Outcome {
    /// Every piece is on disk, each verified against the chain, the last
    /// one finishing to the requested SHA1: the file is the one asked for.
    Complete,
    /// Every holder of this round was dropped and no new one came.
    Failed,
    /// No piece arrived for [`Round::yield_after`] while another piece
    /// list waits: its holders get their turn (this list may come back).
    Yielded,
    /// The caller cancelled.
    Interrupted,
    /// A local error (disk, threads).
    Fatal(FetchError),
}

/// The state a round's threads share.
pub(crate) struct Round<'a> {
    /// The download this round is part of: its options, files, counters.
    pub dl: &'a Download<'a>,
    pub list: &'a PieceList,
    /// The id of `list`'s chain, in every state saved.
    chain_id: Sha1Digest,
    /// When the state was last saved (by a worker or the supervisor).
    last_save: Mutex<Instant>,
    /// The state file, held while it is written: a worker's periodic save
    /// and the supervisor's last one share it.
    saving: Mutex<StateFile>,
    pub sched: Scheduler,
    pub slots: Mutex<Vec<Slot>>,
    pub timeouts: Timeouts,
    /// Workers stop (set at the end of the round, or on abort).
    stop_workers: AtomicBool,
    /// The round is over early (failure, cancel).
    pub(super) abort: AtomicBool,
    pub(super) fatal: Mutex<Option<FetchError>>,
    /// The workers' connections, shut down at the end of the round.
    sockets: Sockets,
    /// Connections workers left between requests (turned away by a full
    /// set of upload slots or a busy queue, or rotated away), by holder
    /// slot, still in the socket table: the next worker sent to that holder
    /// takes it instead of dialling.
    idle: Mutex<HashMap<usize, (PeerConn, Option<u64>)>>,
    /// What the fetch of a holder's piece list left for its first worker,
    /// by holder id, until the holder joins ([`Round::expect`]).
    welcome: Mutex<HashMap<String, Welcome>>,
    /// Holders to join on trust of this round's list ([`Round::trust`]),
    /// by id, until they join.
    trusting: Mutex<HashSet<String>>,
    /// Holders that joined on trust and sent data that does not fit this
    /// round's list: their own lists are to be fetched
    /// ([`Round::take_rechecks`]).
    rechecks: Mutex<Vec<Holder>>,
    pub(super) max_workers: usize,
    /// Set when another piece list waits: the round yields (ends
    /// [`Outcome::Yielded`]) once no piece arrived for its piece deadline
    /// times 2 to this power (its earlier turns).
    pub yield_turn: Option<u32>,
    /// This round's id in the state file (a peer serving our `.part`
    /// answers it: that holder is ourselves).
    pub download_id: String,
    /// Connections holding an upload slot (see [`SLOTS_ENOUGH`]).
    receiving: AtomicUsize,
    /// Where this round starts looking for a holder (see [`Round::rotate`]).
    rotation: usize,
    /// A re-query found holders of another piece list: when every holder
    /// of this one has failed, the round yields to it instead of asking
    /// its failed holders again.
    pub others_waiting: AtomicBool,
}

/// Clones of the workers' sockets, so the end of a round can shut down
/// every connection (none waits on a stalled peer).
#[derive(Default)]
struct Sockets {
    table: Mutex<HashMap<u64, TcpStream>>,
    next: AtomicU64,
}

impl<'a> Round<'a> {
    /// A round of `dl` over `list` with the pieces flagged in `done`
    /// already on disk.
    pub fn new(dl: &'a Download<'a>, list: &'a PieceList, done: &[bool]) -> Self {
        let opts = dl.opts();
        let done_bytes = done
            .iter()
            .enumerate()
            .filter(|(_, d)| **d)
            .map(|(i, _)| list.piece_range(i).1 as u64)
            .sum();
        let by_memory = (dl.memory_budget() / list.piece_size.max(1)).max(1) as usize;
        Round {
            dl,
            list,
            chain_id: super::state::chain_id(list),
            last_save: Mutex::new(Instant::now()),
            saving: Mutex::new(StateFile::new(&dl.state_path)),
            sched: Scheduler::new(done, done_bytes, opts.endgame_copies),
            slots: Mutex::new(Vec::new()),
            timeouts: Timeouts {
                connect: opts.connect_timeout,
                io: opts.io_timeout,
            },
            stop_workers: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            fatal: Mutex::new(None),
            sockets: Sockets::default(),
            idle: Mutex::new(HashMap::new()),
            welcome: Mutex::new(HashMap::new()),
            trusting: Mutex::new(HashSet::new()),
            rechecks: Mutex::new(Vec::new()),
            max_workers: opts.max_connections.max(1).min(by_memory),
            yield_turn: None,
            download_id: crate::discovery::random_id(),
            receiving: AtomicUsize::new(0),
            rotation: crate::discovery::random_u64() as usize,
            others_waiting: AtomicBool::new(false),
        }
    }

    /// Writes the chain beside the `.part` (once a round, before its first
    /// state; not for a file of one piece, which has no state).
    pub(super) fn save_chain(&self) {
        if self.list.len() <= 1 {
            return;
        }
        if let Err(e) = super::state::save_chain(&self.dl.chain_path, self.list) {
            log::warn!("cannot save {}: {e}", self.dl.chain_path.display());
        }
    }

    /// Adds holders (ignoring ids already present).
    pub fn add_holders(&self, holders: Vec<Holder>) {
        self.add_some(holders, usize::MAX, usize::MAX);
    }

    /// True while a re-query is worth its etcd reads
    /// ([`requery_wanted`]: fewer than [`MAX_HOLDERS`] usable holders, and
    /// in a swarm fewer than [`SLOTS_ENOUGH`] connections served).
    pub fn wants_holders(&self) -> bool {
        let usable = {
            let slots = self.slots.lock();
            slots.iter().filter(|s| s.dropped.is_none()).count()
        };
        requery_wanted(usable, self.receiving(), self.sched.in_swarm())
    }

    /// Adds the holders a re-query found, up to [`MAX_HOLDERS`] usable
    /// ones in all and [`MAX_PER_HOST`] of one host; returns how many.
    pub fn add_requeried(&self, holders: Vec<Holder>) -> usize {
        self.add_some(holders, MAX_HOLDERS, MAX_PER_HOST)
    }

    fn add_some(&self, holders: Vec<Holder>, max: usize, per_host: usize) -> usize {
        let mut slots = self.slots.lock();
        let before = slots.len();
        for holder in holders {
            if slots.iter().any(|s| s.holder.id == holder.id) {
                continue;
            }
            let usable = || slots.iter().filter(|s| s.dropped.is_none());
            if usable().count() >= max {
                break;
            }
            if let Some(host) = host_of(&holder).filter(|_| per_host < usize::MAX) {
                let same = usable().filter(|s| host_of(&s.holder) == Some(host));
                if same.count() >= per_host {
                    continue;
                }
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
                late: 0,
                welcomed: false,
                on_trust: false,
            });
        }
        let added = slots.len() - before;
        // The new holders' piece-list connections and bitmaps, for their
        // first workers (after the slots' lock: the scheduler's is taken
        // alone).
        let welcomed: Vec<(usize, Welcome)> = {
            let mut welcome = self.welcome.lock();
            slots
                .iter()
                .enumerate()
                .skip(before)
                .filter_map(|(i, s)| Some((i, welcome.remove(&s.holder.id)?)))
                .collect()
        };
        for (i, _) in welcomed.iter().filter(|(_, w)| w.have.is_some()) {
            slots[*i].welcomed = true;
        }
        {
            let mut trusting = self.trusting.lock();
            for s in slots.iter_mut().skip(before) {
                s.on_trust = trusting.remove(&s.holder.id);
            }
        }
        drop(slots);
        for (i, w) in welcomed {
            if let Some(have) = w.have {
                self.sched.set_have(i, Some(have), None);
            }
            if let Some(conn) = w.conn {
                let socket = self.register(&conn);
                self.keep_conn(i, conn, socket);
            }
        }
        self.sched.wake_all();
        added
    }

    /// Keeps what the fetch of holder `id`'s piece list left (see
    /// [`Welcome`]) until that holder joins the round; dropped (the
    /// connection closed) with the round otherwise.
    pub fn expect(&self, id: String, welcome: Welcome) {
        self.welcome.lock().insert(id, welcome);
    }

    /// Holder `id` joins on trust of this round's piece list: its own was
    /// never fetched. Every honest holder of a file has the same list (the
    /// piece size is a function of the size, the chaining values are
    /// SHA-1's), so a holder a re-query finds serves at once, with no
    /// list fetched first on the supervisor's thread; if its data does
    /// not fit this list, it goes back to have its list fetched
    /// ([`Round::recheck`]) instead of being dropped as a liar.
    pub fn trust(&self, id: String) {
        self.trusting.lock().insert(id);
    }

    /// A holder that joined on trust sent data that does not fit this
    /// round's list (dropped from the round meanwhile).
    pub(super) fn recheck(&self, holder: Holder) {
        self.rechecks.lock().push(holder);
    }

    /// The holders to recheck (see [`Round::recheck`]), taken.
    pub fn take_rechecks(&self) -> Vec<Holder> {
        std::mem::take(&mut *self.rechecks.lock())
    }

    /// Holders rechecked whose own list is this round's: their data was
    /// false (counted as bad, as if they had not joined on trust).
    pub fn confirm_bad(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let mut slots = self.slots.lock();
        for s in slots.iter_mut().filter(|s| ids.contains(&s.holder.id)) {
            if let Some(Dropped::OtherList(reason)) = s.dropped.take() {
                s.dropped = Some(Dropped::Bad(reason));
                s.bad = true;
            }
        }
    }

    /// True while holders wait to be rechecked.
    pub fn has_rechecks(&self) -> bool {
        !self.rechecks.lock().is_empty()
    }

    /// Patience: the holders dropped for failures that may pass (refused,
    /// timed out, busy: not bad data, not ourselves) are asked again from
    /// `at`. Returns how many.
    pub(super) fn readmit_failing(&self, at: Instant) -> usize {
        let back: Vec<usize> = {
            let mut slots = self.slots.lock();
            slots
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| !s.bad && matches!(s.dropped, Some(Dropped::Failing { .. })))
                .map(|(i, s)| {
                    s.dropped = None;
                    s.failures = 0;
                    s.busy = 0;
                    s.retry_at = Some(at);
                    i
                })
                .collect()
        };
        for &i in &back {
            self.sched.holder_back(i);
        }
        if !back.is_empty() {
            self.sched.wake_all();
        }
        back.len()
    }

    /// Usable holders other than `except` without a connection, free to
    /// get one now (not waiting out a `503` or a rotation), in slot order
    /// from this round's own place ([`Round::rotate`]).
    pub(super) fn idle_holders(&self, except: Option<usize>) -> Vec<usize> {
        let slots = self.slots.lock();
        let mut idle = open_slots(&slots, 1, Instant::now());
        let len = slots.len();
        drop(slots);
        idle.retain(|&j| Some(j) != except);
        self.rotate(&mut idle, len);
        idle
    }

    /// Reorders `open` (slot numbers in order, of `len` slots) to start at
    /// this round's own place and wrap round: every download would
    /// otherwise try its holders in the order they were found, the seed
    /// first (the first lookup's), so in the simulator (1,000 hosts, 10 %
    /// at 1/10 of the speed) the slow hosts, the last ones still
    /// downloading, kept the seed's slots after the others were done: it
    /// uploaded 1.65 files, 0.62 of them to them (1.28 and 0.22 so).
    fn rotate(&self, open: &mut [usize], len: usize) {
        if len > 0 {
            let from = self.rotation % len;
            let k = open.partition_point(|&j| j < from);
            open.rotate_left(k);
        }
    }

    /// The holder the next worker goes to, its place taken (`workers`
    /// counted), if one may get one: one per usable holder, then more per
    /// holder (up to `connections_per_holder`) while the total is below
    /// `target_connections`; never more than the cap. Holders are counted
    /// by address, not by id: records that point at one listener (sybils
    /// of one host) share its workers. A holder that answered `503` waits
    /// for its `retry_at`. Among the holders without a connection, one that
    /// may have a piece this download lacks goes first, each looked for
    /// from this round's own place ([`Round::rotate`]). In a swarm, none
    /// while [`SLOTS_ENOUGH`] connections hold an upload slot.
    pub(super) fn next_slot(&self) -> Option<usize> {
        if self.receiving.load(Ordering::Relaxed) >= SLOTS_ENOUGH && self.sched.in_swarm() {
            return None;
        }
        let per_holder = self.dl.opts().connections_per_holder.max(1);
        for level in 1..=per_holder {
            // Looked up before the slot table is locked: never two locks
            // at once.
            let preferred = if level == 1 {
                self.idle_holders(None)
                    .into_iter()
                    .find(|&j| self.sched.useful(j))
            } else {
                None
            };
            let mut slots = self.slots.lock();
            let total: usize = slots.iter().map(|s| s.workers).sum();
            if total >= self.max_workers || (level > 1 && total >= self.dl.target_connections()) {
                return None;
            }
            let mut open = open_slots(&slots, level, Instant::now());
            self.rotate(&mut open, slots.len());
            let pick = preferred
                .filter(|j| open.contains(j))
                .or_else(|| open.first().copied());
            if let Some(i) = pick {
                slots[i].workers += 1;
                return Some(i);
            }
        }
        None
    }

    /// Connections holding an upload slot now (see [`SLOTS_ENOUGH`]).
    pub(super) fn receiving(&self) -> usize {
        self.receiving.load(Ordering::Relaxed)
    }

    /// A connection starts (`true`) or stops holding an upload slot
    /// (see [`SLOTS_ENOUGH`]); each call changes the count by one.
    pub(super) fn set_receiving(&self, on: bool) {
        if on {
            self.receiving.fetch_add(1, Ordering::Relaxed);
        } else {
            self.receiving.fetch_sub(1, Ordering::Relaxed);
        }
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
        self.list.piece_range(i)
    }

    /// How long a piece of `len` bytes may take once its answer's head
    /// came, not counting waits for the rate cap: 4 times the round's
    /// average piece time, at least the read timeout and
    /// [`PIECE_DEADLINE_MIN`]. Set by progress, so a holder that drips a
    /// byte just within every read timeout still ends.
    pub fn piece_deadline(&self) -> Duration {
        let by_progress = self.sched.piece_time().map_or(Duration::ZERO, |t| t * 4);
        by_progress.max(self.timeouts.io).max(PIECE_DEADLINE_MIN)
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
        let id = self.sockets.next.fetch_add(1, Ordering::Relaxed);
        self.sockets.table.lock().insert(id, clone);
        Some(id)
    }

    /// Forgets a registered connection; true if it was still registered
    /// (so the end of the round has not shut it down and will not).
    pub fn take_registration(&self, id: Option<u64>) -> bool {
        id.is_some_and(|id| self.sockets.table.lock().remove(&id).is_some())
    }

    /// Keeps a worker's connection to the holder in `slot`, clean between
    /// requests, for the next worker sent there (one per holder: another
    /// one already kept is closed).
    pub fn keep_conn(&self, slot: usize, conn: PeerConn, socket: Option<u64>) {
        let replaced = self.idle.lock().insert(slot, (conn, socket));
        if let Some((_, socket)) = replaced {
            self.unregister(socket);
        }
    }

    /// The connection kept for the holder in `slot`, if any (see
    /// [`Round::keep_conn`]).
    pub fn take_conn(&self, slot: usize) -> Option<(PeerConn, Option<u64>)> {
        self.idle.lock().remove(&slot)
    }

    /// Forgets a registered connection.
    pub fn unregister(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.sockets.table.lock().remove(&id);
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

    pub(super) fn stop_all_workers(&self) {
        self.stop_workers.store(true, Ordering::Release);
        let sockets: Vec<TcpStream> = self.sockets.table.lock().drain().map(|(_, s)| s).collect();
        for s in sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.sched.wake_all();
    }

    pub(super) fn progress(&self) -> Progress {
        let slots = self.slots.lock();
        Progress {
            size: self.list.size,
            done: self.sched.done_bytes(),
            received: self.dl.received.load(Ordering::Relaxed),
            peers_active: slots.iter().filter(|s| s.workers > 0).count(),
        }
    }

    /// Saves the state if pieces were verified since the last save and
    /// `state_interval` has passed. Called by workers after each piece (so
    /// a peer sharing the directory serves it soon, whatever the supervisor
    /// is busy with) and by the supervisor; skipped if another thread saves.
    /// A save writes the bitmap (a 10 GiB file's: 2.5 KiB of hex), never
    /// the chain, which went to `.part.chain` once.
    fn state_interval(&self) -> Duration {
        self.dl.opts().state_interval
    }

    pub fn maybe_save_state(&self) {
        let Some(mut last) = self.last_save.try_lock() else {
            return;
        };
        if last.elapsed() < self.state_interval() {
            return;
        }
        if let Some(flags) = self.sched.take_changes() {
            self.save_state(&flags);
        }
        *last = Instant::now();
    }

    /// Writes the resume state. Not for a file of one piece: there is
    /// nothing to resume inside a piece, and skipping the file keeps a
    /// batch of small files from creating and deleting two files each
    /// (ext4's inode allocator made that most of the batch's system time).
    pub(super) fn save_state(&self, flags: &[bool]) {
        let state_path = &self.dl.state_path;
        if self.list.len() <= 1 {
            return;
        }
        let mut saving = self.saving.lock();
        let mut state = ResumeState::with_chain_id(self.list, self.chain_id, flags)
            .with_download(&self.download_id);
        state.peers = self
            .slots
            .lock()
            .iter()
            .filter(|s| s.workers > 0)
            .map(|s| s.holder.id.clone())
            .collect();
        state.from_seeds = self.dl.from_seeds.load(Ordering::Relaxed);
        state.from_partials = self.dl.from_partials.load(Ordering::Relaxed);
        match saving.save(&state) {
            Ok(()) => {}
            // A full disk fails the piece writes too, and their error says
            // so in one line (the state saved before is kept).
            Err(e) if super::error::is_no_space(&e) => {
                log::debug!("cannot save resume state {}: {e}", state_path.display())
            }
            Err(e) => log::warn!("cannot save resume state {}: {e}", state_path.display()),
        }
    }
}
