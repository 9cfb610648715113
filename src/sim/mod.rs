//! A deterministic simulator of one swarm: one seed, N downloaders, no
//! sockets. It drives the real policies: the piece choice
//! ([`crate::fetch::scheduler::Scheduler`], one per download), the upload
//! slots ([`crate::policy::slots::UploadSlots`], one per holder), the holder
//! subset ([`crate::policy::subset::choose`], at the first lookup and at
//! every re-query) and the seeds' offers ([`crate::seeding::Offers`], one
//! per complete holder). What it models itself: the links ([`net`]:
//! per-host upload and download capacity, max-min shared, latency one way
//! per message), the tracker (a host is announced 10 ms after its first
//! piece: the announcer is woken by it; a re-query reads a window of 32 announcements from a
//! random place, every 50 ms for the first 2 s (doubled after one that
//! found no one new, once in a swarm), then every 500 ms, and adds the
//! download's subset of it, up to 128 holders), and a download's connections the
//! way `fetch/worker.rs` and the supervisor's `fill` use the scheduler
//! (one connection per holder, at most `connections` at once, none more
//! in a swarm while `hunt_below` of them hold an upload slot, a holder
//! that may have something first, looked for from the download's own
//! place in its list; the bitmap asked first, then riding on the head of
//! each answer, asked again while a holder has nothing to give (at once
//! when a piece came since, else 100 ms after the last; with a wait at
//! the holder, `have?wait`, when a fresh one showed nothing); each request
//! a run of adjacent pieces through the real
//! [`Scheduler::extend_at`], up to 256 KiB, sent whole by the holder one
//! piece after the other, each kept as it arrives, and the next run asked
//! as soon as an answer's head came (pipelining: its pieces are handed
//! out then, and the holder serves it right after the answer before;
//! the round trip between them is not modelled); a connection
//! leaves a partial holder that has nothing when another may have
//! something; a partial holder asked its bitmap by a download that
//! holds a slot there with no answer in progress frees the slot at once;
//! "come back later" sends it to another holder at once, and
//! that one is asked again after its rotation, unless the holder says it
//! is next in line: then it waits there for the rotation).
//!
//! Event-driven on a simulated clock (ns), seeded randomness, so a run is a
//! function of its [`Config`]. It lives in the crate (the policies are
//! private), compiled for tests only: the 200-host case runs in
//! `make test`, `make bench-sim` runs the larger ones in release
//! (`tests.rs`).

mod net;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::fetch::scheduler::{Next, Scheduler};
use crate::policy::slots::{Admit, SlotConfig, UploadSlots};
use crate::policy::subset::{self, Candidate};
use crate::protocol::Bitfield;
use crate::seeding::Offers;

use net::{Flow, Net};

/// One simulated swarm.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Downloaders (the seed is one more host).
    pub hosts: usize,
    /// File size, bytes.
    pub file: u64,
    /// Piece size, bytes.
    pub piece: u64,
    /// Every host's upload and download capacity, bytes/s.
    pub link: f64,
    /// Share of downloaders whose links are `slow_factor` of `link`.
    pub slow_fraction: f64,
    pub slow_factor: f64,
    /// One-way latency of every message.
    pub latency: Duration,
    /// Downloads start within this window (uniformly).
    pub start_spread: Duration,
    /// Holders a download talks to ([`subset::choose`]'s `want`).
    pub subset: usize,
    /// Connections a download has open at once.
    pub connections: usize,
    /// ... once partial holders are known (explore only: the real
    /// download keeps `connections`). 5, a holder's slots, was far better
    /// here (1,000 hosts: last host 1.34x one host alone against 1.70x)
    /// and far worse in the lab (32 and 47 hosts: docs/benchmarks.md).
    pub swarm_connections: usize,
    /// Every holder's upload slots.
    pub slots: SlotConfig,
    /// Endgame copies of a piece at once.
    pub max_dup: usize,
    pub seed: u64,
    /// A host is in the tracker this long after its first piece: the
    /// announcer is woken by the partial file's first state (the state is
    /// saved at once, the peer's watch batches 5 ms, one etcd put).
    pub announce_after: Duration,
    /// Most bytes of adjacent pieces one request asks for
    /// (`fetch::worker::RUN_BYTES`; a piece's size or less: one piece a
    /// request).
    pub run_bytes: u64,
    /// The next request goes out as soon as an answer's head is good
    /// (`worker.rs`'s pipelining, depth 1): its pieces are handed out
    /// then, and the holder serves it as soon as the answer before is sent.
    pub pipeline: bool,
    /// A worker with nothing to ask of a holder asks its bitmap again
    /// when a piece came since the last one (`worker.rs`'s `next_step`;
    /// false: only `HAVE_POLL` after the last, as before 2026-12-07 21:40).
    pub poll_after_piece: bool,
    /// A bitmap request to a partial holder with nothing this download
    /// lacks waits at the holder this long at most for a piece it wants
    /// (`worker.rs`'s `HAVE_WAIT`; zero: answered at once, as before
    /// 2026-12-07 22:15).
    pub have_wait: Duration,
    /// A download re-queries the tracker this often in its first 2 s
    /// (`supervisor.rs`).
    pub fast_requery: Duration,
    /// Most holders a download takes from its re-queries
    /// (`fetch::round::MAX_HOLDERS`; it stops asking at that many).
    pub max_holders: usize,
    /// When a connection turned away ("come back later") waits at that
    /// holder for its rotation instead of moving to another.
    pub park: Park,
    /// In a swarm a download opens no connection (to look for a free
    /// upload slot) while this many of its connections hold one
    /// (`fetch::SLOTS_ENOUGH`; `usize::MAX`: always up to `connections`).
    pub hunt_below: usize,
    /// A download's free holders are tried from a place of its own, not
    /// from the first known (`Round::rotate`).
    pub rotate_holders: bool,
    /// The run stops at this simulated time even if downloads are left
    /// (they are reported in [`Outcome::stuck`]): a download that never
    /// completes polls for ever, and the event queue never empties.
    pub time_cap: Duration,
    /// Oracle (explore only): a download hunts for slots while its
    /// incoming rate is below this share of its downlink, whatever its
    /// slots (0: never).
    pub hunt_rate: f64,
    /// Not the code (explore only): a worker that leaves a holder
    /// (`Step::Rotate`) closes its connection, and a download that ends
    /// closes all of them, and the holder frees the slot at once
    /// ([`UploadSlots::left`]). Better here, worse in the lab
    /// (docs/benchmarks.md).
    pub release: bool,
    /// A partial holder frees the slot of a download that asks its
    /// bitmap with no answer in progress (`server::slots`,
    /// [`UploadSlots::idle`]; false: the slot lapses after
    /// `SlotConfig::idle`, as before 2026-12-08 00:50).
    pub release_on_poll: bool,
    /// Sample the links' use every 10 ms ([`Outcome::link_use`]).
    pub sample: bool,
}

impl Config {
    /// `hosts` downloaders of a 16 MiB file in 64 KiB pieces over 25 Mbit/s
    /// links (the LAN bench's case), today's policies.
    pub fn lan(hosts: usize) -> Self {
        Config {
            hosts,
            file: 16 << 20,
            piece: 64 << 10,
            link: 25e6 / 8.0,
            slow_fraction: 0.0,
            slow_factor: 0.1,
            latency: Duration::from_micros(250),
            start_spread: Duration::from_millis(50),
            subset: 10,
            connections: 8,
            swarm_connections: 8,
            slots: SlotConfig::default(),
            max_dup: 2,
            seed: 1,
            announce_after: ANNOUNCE_AFTER,
            run_bytes: crate::fetch::RUN_BYTES,
            pipeline: true,
            poll_after_piece: true,
            have_wait: crate::fetch::HAVE_WAIT,
            fast_requery: crate::fetch::FAST_REQUERY,
            max_holders: crate::fetch::MAX_HOLDERS,
            park: Park::Next,
            hunt_below: crate::fetch::SLOTS_ENOUGH,
            rotate_holders: true,
            time_cap: Duration::from_secs(600),
            sample: false,
            hunt_rate: 0.0,
            release: false,
            release_on_poll: true,
        }
    }

    /// One host alone at full speed: F / u.
    pub fn alone(&self) -> f64 {
        self.file as f64 / self.link
    }
}

/// When a turned-away connection stays ([`Config::park`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Park {
    Never,
    Always,
    /// When the holder says it is next in line (`Admit::Busy::next`).
    Next,
}

/// What a run gave.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Seconds to the last verified piece, per downloader (host 1..); NaN
    /// for one not done by [`Config::time_cap`].
    pub finish: Vec<f64>,
    /// The downloads not done by the cap: what each was waiting for.
    pub stuck: Vec<String>,
    /// True for the downloaders on slow links.
    pub slow: Vec<bool>,
    /// Bytes the seed uploaded.
    pub seed_bytes: f64,
    /// ... to the slow hosts.
    pub seed_to_slow: f64,
    /// Seconds until the seed had sent every piece once.
    pub seed_spread: f64,
    /// Requests per download: pieces asked, bitmaps asked, turned away.
    pub requests: Vec<u64>,
    /// Tracker reads (re-queries) per download.
    pub queries: Vec<u32>,
    /// Per downloader.
    pub stats: Vec<HostStats>,
    pub busy_answers: u64,
    /// ... by the seed.
    pub seed_busy: u64,
    pub events: u64,
    /// Per tenth of one host alone: the idle uplinks (in hosts, time
    /// averaged) of complete holders and of partial ones.
    pub up_idle: Vec<[f64; 2]>,
    /// Per tenth of one host alone, sums over samples taken every 10 ms
    /// ([`Config::sample`]): busy uplinks' use and flows out, unfinished
    /// downloads' downlink use and flows in, unfinished downloads
    /// sampled, and the swarm's total rate (in links) in the model and
    /// if the same flows shared both ends max-min
    /// ([`net::Net::max_min_total`]).
    pub link_use: Vec<[f64; 7]>,
    /// Histogram: busy uplinks by flows out (0..=8), and their mean use.
    pub out_hist: Vec<[f64; 2]>,
    /// Histogram: hosts by slots held (0..=8), and their mean flows out.
    pub held_hist: Vec<[f64; 2]>,
    /// Slots held with nothing in progress, summed over samples, by the
    /// download's state: granted and not yet used, download done, holder
    /// not in its list, connection closed, idle, waiting for an answer
    /// (bitmap or request), receiving from it (between pieces).
    pub quiet_why: [f64; 7],
}

impl Outcome {
    /// The `q` quantile (0..=1) of the finish times of the fast (`slow` =
    /// false) or slow hosts, relative to `alone`.
    pub fn quantile(&self, slow: bool, q: f64, alone: f64) -> Option<f64> {
        let mut t: Vec<f64> = self
            .finish
            .iter()
            .zip(&self.slow)
            .filter(|(_, s)| **s == slow)
            .map(|(t, _)| *t / alone)
            .collect();
        if t.is_empty() {
            return None;
        }
        t.sort_by(f64::total_cmp);
        let k = ((t.len() - 1) as f64 * q).round() as usize;
        Some(t[k])
    }
}

/// A worker's wait before asking the scheduler again (`worker.rs`).
const IDLE_WAIT: u64 = 100_000_000;
/// A partial holder's bitmap is asked again this often while it has
/// nothing to give.
const HAVE_POLL: u64 = 100_000_000;
/// A seed's offer is asked again when older than this.
const HINT_POLL: u64 = 300_000_000;
/// A holder left for having nothing is asked again after this.
const ROTATE_AWAY: u64 = 500_000_000;
/// The supervisor's tick (`round::TICK`).
const TICK: u64 = 100_000_000;
/// Re-queries: every [`Config::fast_requery`] for the first 2 s, then
/// every 500 ms (`supervisor.rs`, the default `requery_interval`).
const FAST_REQUERY_FOR: u64 = 2_000_000_000;
const REQUERY: u64 = 500_000_000;
/// Announcements a tracker sample reads (`catalog/probe.rs`).
const TRACKER_SAMPLE: usize = 32;
/// Bounds on the wait a holder whose slots are full asks for (`worker.rs`).
const SLOTS_RETRY_MIN: u64 = 100_000_000;
const SLOTS_RETRY_MAX: u64 = 2_000_000_000;

/// From a host's first piece to its announcement in the tracker
/// (`discovery::tracker`: the announcer is woken, not polling): the
/// download saves its state at once (its last save was at its start,
/// more than `state_interval` before), the peer's watch batches
/// events for 5 ms (`index::watch::BATCH`), reads the state, and the
/// announcer puts one key (about 1.5 ms through etcd's JSON gateway).
const ANNOUNCE_AFTER: Duration = Duration::from_millis(10);

/// Bits of a queue entry's order that name its event's place.
const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    /// Download `d`'s download starts.
    Start { d: u32 },
    /// The connection of `d` to its holder slot `j` decides what next.
    Ready { d: u32, j: u32, gen: u32 },
    /// `d`'s request for the `n` pieces from `i` (a run) arrives at its
    /// holder slot `j`.
    Ask { d: u32, j: u32, i: u32, n: u32 },
    /// The holder turned it away; `d` hears it (unless its connection
    /// was cut since: `epoch`).
    Refused {
        d: u32,
        j: u32,
        i: u32,
        n: u32,
        epoch: u32,
        retry: u64,
        next: bool,
    },
    /// `d`'s bitmap request arrives at slot `j`'s holder, answered to `d`.
    Have { d: u32, j: u32 },
    /// A waiting bitmap request of `d` (slot `j`, its `token`) at its
    /// holder reaches its wait's end.
    HaveWaited { d: u32, j: u32, token: u32 },
    /// A flow may have ended.
    FlowEnd { id: u32, version: u32 },
    /// The supervisor's tick: `fill`.
    Tick { d: u32 },
    /// The supervisor asks the tracker again.
    Requery { d: u32 },
    /// Host `h`'s peer announces it in the tracker (its first piece).
    Announce { h: u32 },
    /// The links' use is sampled (explore only).
    Sample,
    /// The last byte of a piece reached `d`; `last` of its run (unless the
    /// connection was cut since: `epoch`).
    Arrived {
        d: u32,
        j: u32,
        i: u32,
        epoch: u32,
        last: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// No connection to this holder.
    Closed,
    /// Connected, between requests.
    Idle,
    /// A request or its answer in flight.
    Busy,
}

struct Conn {
    holder: u32,
    state: ConnState,
    /// Timers older than this generation are stale.
    gen: u32,
    retry_at: u64,
    last_poll: Option<u64>,
    /// The flow of the piece in transit (to cancel a losing endgame copy).
    flow: Option<usize>,
    /// Rotations waited for in a row at this holder (`worker.rs`).
    parked: u32,
    /// The holder served its last piece request (it holds a slot there).
    served: bool,
    /// The run being sent ends before this piece.
    run_end: u32,
    /// Bytes of it sent so far (the holder's slots count them when it ends).
    run_sent: u64,
    /// The run asked for ahead (pipelined): first piece, count.
    ahead: Option<(u32, u32)>,
    /// The holder went on to the run asked ahead: the last piece of the
    /// run before does not leave the connection idle.
    chained: bool,
    /// Bumped when a run is cut: its answers still on the way are stale.
    epoch: u32,
    /// When its last piece arrived.
    last_piece: u64,
    /// Its waiting bitmap requests, counted (one in flight at most).
    wait_token: u32,
}

struct Download {
    sched: Scheduler,
    /// Its holders (the scheduler's holder slots), growing with re-queries.
    conns: Vec<Conn>,
    /// Its subset key.
    key: u64,
    open: usize,
    requests: u64,
    /// Re-queries of the tracker.
    queries: u32,
    /// The re-query interval in the first 2 s (`supervisor.rs`: doubled
    /// by a re-query that found no one new once in a swarm).
    fast_every: u64,
    stats: HostStats,
}

/// Where one download's time went.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostStats {
    pub start: u64,
    /// Time with no piece coming in (ns), while not done.
    pub idle: u64,
    idle_since: Option<u64>,
    /// Answers "come back later".
    pub refused: u64,
    /// Pieces kept from the seed.
    pub from_seed: u32,
    /// When each piece arrived (ns), in arrival order.
    pub got: Vec<u64>,
    /// Pieces kept from complete holders (the seed's among them).
    pub from_complete: u32,
    /// Sum over time of the pieces coming in at once (ns x flows): over
    /// the download's time, the upload slots it held on average.
    pub slot_ns: u128,
    slot_since: u64,
    /// At each quarter of its pieces (and at the end): holders known,
    /// complete holders among them, "come back later" answers so far.
    pub at_quarter: [(u32, u32, u64); 4],
}

struct Host {
    have: Bitfield,
    complete: bool,
    offers: Option<Offers>,
    slots: UploadSlots<u32>,
    /// Bitmap requests parked here until this host gets a piece in their
    /// `want` (`have?wait`): download, slot, token, want.
    have_waiters: Vec<(u32, u32, u32, Bitfield)>,
}

struct Sim {
    cfg: Config,
    n: usize,
    base: Instant,
    now: u64,
    seq: u64,
    /// Pending events by (time, order): the order's high 40 bits are a
    /// sequence number (first pushed, first out), its low 24 bits the
    /// event's place in `pending`. 16 bytes an entry, not 48: at 10,000
    /// hosts the heap's moves were a quarter of the run.
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    pending: Vec<Ev>,
    free_events: Vec<u32>,
    net: Net,
    hosts: Vec<Host>,
    downloads: Vec<Option<Download>>,
    finish: Vec<f64>,
    seed_bytes: f64,
    seed_to_slow: f64,
    busy_answers: u64,
    seed_busy: u64,
    events: u64,
    rng: u64,
    moved: Vec<usize>,
    seed_sent: Bitfield,
    seed_unique: usize,
    seed_spread: f64,
    /// Each host's place in the tracker's key order.
    perm_pos: Vec<u32>,
    /// The hosts announced in the tracker, by place.
    announced: std::collections::BTreeSet<(u32, u32)>,
    /// Since when each host's uplink is idle while it holds a piece.
    up_idle_since: Vec<Option<u64>>,
    /// Per tenth of one host alone: idle uplinks' time (ns), of complete
    /// and of partial holders.
    up_idle: Vec<[f64; 2]>,
    bucket: u64,
    link_use: Vec<[f64; 7]>,
    out_hist: Vec<[f64; 2]>,
    held_hist: Vec<[f64; 2]>,
    quiet_why: [f64; 7],
}

/// Runs one swarm to the end (every download verified).
pub(crate) fn run(cfg: &Config) -> Outcome {
    let n = usize::try_from(crate::protocol::piece_count(cfg.file, cfg.piece)).unwrap_or(0);
    let total = cfg.hosts + 1;
    let mut rng = cfg.seed ^ 0x5eed;
    let mut slow = vec![false; total];
    let slow_count = (cfg.hosts as f64 * cfg.slow_fraction).round() as usize;
    let mut order: Vec<usize> = (1..total).collect();
    for k in (1..order.len()).rev() {
        let r = (next_rand(&mut rng) % (k as u64 + 1)) as usize;
        order.swap(k, r);
    }
    for &h in order.iter().take(slow_count) {
        slow[h] = true;
    }
    let link = |h: usize| {
        if slow[h] {
            cfg.link * cfg.slow_factor
        } else {
            cfg.link
        }
    };
    let up: Vec<f64> = (0..total).map(link).collect();
    let down = up.clone();
    let hosts: Vec<Host> = (0..total)
        .map(|h| Host {
            have: if h == 0 {
                Bitfield::full(n)
            } else {
                Bitfield::empty(n)
            },
            complete: h == 0,
            offers: (h == 0).then(|| Offers::new(n)),
            slots: UploadSlots::new(cfg.slots.clone()),
            have_waiters: Vec::new(),
        })
        .collect();
    let mut sim = Sim {
        cfg: cfg.clone(),
        n,
        base: Instant::now(),
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        pending: Vec::new(),
        free_events: Vec::new(),
        net: Net::new(up, down),
        hosts,
        downloads: (0..total).map(|_| None).collect(),
        finish: vec![f64::NAN; total],
        seed_bytes: 0.0,
        seed_to_slow: 0.0,
        busy_answers: 0,
        seed_busy: 0,
        events: 0,
        rng,
        moved: Vec::new(),
        seed_sent: Bitfield::empty(n),
        seed_unique: 0,
        seed_spread: f64::NAN,
        perm_pos: Vec::new(),
        announced: std::collections::BTreeSet::new(),
        up_idle_since: (0..total).map(|h| (h == 0).then_some(0)).collect(),
        up_idle: Vec::new(),
        bucket: ((cfg.alone() * 1e8) as u64).max(1),
        link_use: Vec::new(),
        out_hist: vec![[0.0; 2]; 9],
        held_hist: vec![[0.0; 2]; 9],
        quiet_why: [0.0; 7],
    };
    if cfg.sample {
        sim.push(0, Ev::Sample);
    }
    let mut perm: Vec<u32> = (0..total as u32).collect();
    for k in (1..perm.len()).rev() {
        let r = (next_rand(&mut sim.rng) % (k as u64 + 1)) as usize;
        perm.swap(k, r);
    }
    sim.perm_pos = vec![0; total];
    for (pos, &h) in perm.iter().enumerate() {
        sim.perm_pos[h as usize] = pos as u32;
    }
    sim.announced.insert((sim.perm_pos[0], 0));
    let spread = cfg.start_spread.as_nanos() as u64;
    for d in 1..total {
        let at = if spread == 0 {
            0
        } else {
            next_rand(&mut sim.rng) % spread
        };
        sim.push(at, Ev::Start { d: d as u32 });
    }
    let cap = u64::try_from(cfg.time_cap.as_nanos()).unwrap_or(u64::MAX);
    while let Some(Reverse((t, key))) = sim.queue.pop() {
        let slot = (key & SLOT_MASK) as u32;
        let ev = sim.pending[slot as usize];
        sim.free_events.push(slot);
        if t > cap {
            break;
        }
        sim.now = t;
        sim.events += 1;
        sim.handle(ev);
    }
    let end = sim.finish[1..]
        .iter()
        .copied()
        .filter(|t| t.is_finite())
        .fold(0.0, f64::max);
    for h in 0..total {
        sim.up_busy(h, (end * 1e9) as u64);
    }
    let requests = sim
        .downloads
        .iter()
        .skip(1)
        .map(|d| d.as_ref().map_or(0, |d| d.requests))
        .collect();
    let queries = sim
        .downloads
        .iter()
        .skip(1)
        .map(|d| d.as_ref().map_or(0, |d| d.queries))
        .collect();
    let stats = sim
        .downloads
        .iter()
        .skip(1)
        .map(|d| d.as_ref().map(|d| d.stats.clone()).unwrap_or_default())
        .collect();
    Outcome {
        stats,
        stuck: sim.stuck(),
        finish: sim.finish[1..].to_vec(),
        slow: slow[1..].to_vec(),
        seed_bytes: sim.seed_bytes,
        seed_to_slow: sim.seed_to_slow,
        seed_spread: sim.seed_spread,
        requests,
        queries,
        busy_answers: sim.busy_answers,
        seed_busy: sim.seed_busy,
        events: sim.events,
        up_idle: sim.up_idle,
        link_use: sim.link_use,
        out_hist: sim.out_hist,
        held_hist: sim.held_hist,
        quiet_why: sim.quiet_why,
    }
}

fn next_rand(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn host_ip(h: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + h as u32))
}

impl Sim {
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let slot = match self.free_events.pop() {
            Some(slot) => {
                self.pending[slot as usize] = ev;
                slot
            }
            None => {
                self.pending.push(ev);
                (self.pending.len() - 1) as u32
            }
        };
        assert!(u64::from(slot) <= SLOT_MASK, "too many pending events");
        self.queue
            .push(Reverse((at, self.seq << SLOT_BITS | u64::from(slot))));
    }

    /// Host `h`'s uplink is busy from `now` (or the run ends): its idle
    /// time so far goes to the buckets it spans.
    fn up_busy(&mut self, h: usize, now: u64) {
        let Some(mut t) = self.up_idle_since[h].take() else {
            return;
        };
        let class = usize::from(!self.hosts[h].complete);
        while t < now {
            let b = (t / self.bucket) as usize;
            let until = now.min((b as u64 + 1) * self.bucket);
            if self.up_idle.len() <= b {
                self.up_idle.resize(b + 1, [0.0; 2]);
            }
            self.up_idle[b][class] += (until - t) as f64 / self.bucket as f64;
            t = until;
        }
    }

    /// Samples the links' use (explore's detail), every 10 ms while
    /// downloads are left.
    fn sample(&mut self) {
        let b = (self.now / self.bucket) as usize;
        if self.link_use.len() <= b {
            self.link_use.resize(b + 1, [0.0; 7]);
        }
        let rate =
            |ids: &Vec<usize>, flows: &Vec<Flow>| ids.iter().map(|&i| flows[i].rate).sum::<f64>();
        let mut left = 0;
        let when = self.instant();
        for h in 0..self.hosts.len() {
            for (d, granted) in self.hosts[h].slots.quiet_at(when) {
                let k = if granted {
                    0
                } else if !self.finish[d as usize].is_nan() {
                    1
                } else {
                    let dl = self.downloads[d as usize].as_ref().expect("started");
                    match dl.conns.iter().find(|c| c.holder as usize == h) {
                        None => 2,
                        Some(c) => match c.state {
                            ConnState::Closed => 3,
                            ConnState::Idle => 4,
                            ConnState::Busy if c.flow.is_some() => 6,
                            ConnState::Busy => 5,
                        },
                    }
                };
                self.quiet_why[k] += 1.0;
            }
            let held = self.hosts[h].slots.busy_at(when);
            if held > 0 {
                let k = held.min(8);
                self.held_hist[k][0] += 1.0;
                self.held_hist[k][1] += self.net.out[h].len() as f64;
            }
            let out = &self.net.out[h];
            if !out.is_empty() {
                let u = rate(out, &self.net.flows) / self.net.up[h];
                let e = &mut self.link_use[b];
                e[0] += u;
                e[1] += out.len() as f64;
                let k = out.len().min(8);
                self.out_hist[k][0] += 1.0;
                self.out_hist[k][1] += u;
            }
            if h > 0 && self.finish[h].is_nan() && self.downloads[h].is_some() {
                left += 1;
                let inn = &self.net.inn[h];
                let e = &mut self.link_use[b];
                e[2] += rate(inn, &self.net.flows) / self.net.down[h];
                e[3] += inn.len() as f64;
                e[4] += 1.0;
            }
        }
        let now_total: f64 = self
            .net
            .flows
            .iter()
            .filter(|f| f.live)
            .map(|f| f.rate)
            .sum();
        let mm = self.net.max_min_total();
        let e = &mut self.link_use[b];
        e[5] += now_total / self.cfg.link;
        e[6] += mm / self.cfg.link;
        if left > 0 || self.now == 0 {
            let at = self.now + 10_000_000;
            self.push(at, Ev::Sample);
        }
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.now)
    }

    fn lat(&self) -> u64 {
        self.cfg.latency.as_nanos() as u64
    }

    fn piece_len(&self, i: usize) -> u64 {
        let start = i as u64 * self.cfg.piece;
        (self.cfg.file - start).min(self.cfg.piece)
    }

    fn handle(&mut self, ev: Ev) {
        // A finished download asks nothing more (its copies in flight
        // were cancelled).
        let done = |d: u32| !self.finish[d as usize].is_nan();
        match ev {
            Ev::Ready { d, .. }
            | Ev::Ask { d, .. }
            | Ev::Refused { d, .. }
            | Ev::Have { d, .. }
            | Ev::Arrived { d, .. }
                if done(d) =>
            {
                return
            }
            _ => {}
        }
        match ev {
            Ev::Tick { d } | Ev::Requery { d } if done(d) => return,
            _ => {}
        }
        match ev {
            Ev::Tick { d } => {
                self.fill(d as usize);
                let at = self.now + TICK;
                self.push(at, Ev::Tick { d });
            }
            Ev::Requery { d } => self.requery(d as usize),
            Ev::Sample => self.sample(),
            Ev::Announce { h } => {
                let pos = self.perm_pos[h as usize];
                self.announced.insert((pos, h));
            }
            Ev::Start { d } => self.start(d as usize),
            Ev::Ready { d, j, gen } => {
                let dl = self.downloads[d as usize].as_ref();
                if dl.is_some_and(|dl| dl.conns[j as usize].gen == gen) {
                    self.ready(d as usize, j as usize);
                }
            }
            Ev::Ask { d, j, i, n } => self.ask(d as usize, j as usize, i as usize, n as usize),
            Ev::Refused {
                d,
                j,
                i,
                n,
                epoch,
                retry,
                next,
            } => {
                if self.dl(d as usize).conns[j as usize].epoch == epoch {
                    let (d, j, i, n) = (d as usize, j as usize, i as usize, n as usize);
                    self.refused(d, j, i, n, retry, next);
                }
            }
            Ev::Have { d, j } => self.have_answer(d as usize, j as usize),
            Ev::HaveWaited { d, j, token } => {
                let h = self.dl(d as usize).conns[j as usize].holder as usize;
                let w = &mut self.hosts[h].have_waiters;
                if let Some(k) = w
                    .iter()
                    .position(|&(wd, wj, wt, _)| (wd, wj, wt) == (d, j, token))
                {
                    w.swap_remove(k);
                    let at = self.now + self.lat();
                    self.push(at, Ev::Have { d, j });
                }
            }
            Ev::FlowEnd { id, version } => {
                let f = &self.net.flows[id as usize];
                if f.live && f.version == version {
                    self.flow_end(id as usize);
                }
            }
            Ev::Arrived {
                d,
                j,
                i,
                epoch,
                last,
            } => {
                if self.dl(d as usize).conns[j as usize].epoch == epoch {
                    self.arrived(d as usize, j as usize, i as usize, last);
                }
            }
        }
    }

    fn start(&mut self, d: usize) {
        let key = next_rand(&mut self.rng);
        let offset = (next_rand(&mut self.rng) % self.n.max(1) as u64) as usize;
        let sched = Scheduler::with_offset_at(
            &vec![false; self.n],
            0,
            self.cfg.max_dup,
            offset,
            self.instant(),
        );
        let now = self.now;
        self.downloads[d] = Some(Download {
            sched,
            conns: Vec::new(),
            key,
            open: 0,
            requests: 0,
            queries: 0,
            fast_every: self.cfg.fast_requery.as_nanos() as u64,
            stats: HostStats {
                start: now,
                idle_since: Some(now),
                ..HostStats::default()
            },
        });
        // The first lookup asks every peer: the holders announced now.
        let all: Vec<u32> = self.announced.iter().map(|&(_, h)| h).collect();
        self.add_holders(d, &all, usize::MAX);
        self.fill(d);
        self.push(now + TICK, Ev::Tick { d: d as u32 });
        let fast_requery = self.cfg.fast_requery.as_nanos() as u64;
        self.push(now + fast_requery, Ev::Requery { d: d as u32 });
    }

    /// Adds this download's subset ([`subset::choose`] with its key) of
    /// `sample` to its holders, as `Round::add_holders` does.
    fn add_holders(&mut self, d: usize, sample: &[u32], max: usize) {
        let ids: Vec<String> = sample.iter().map(|h| format!("h{h}")).collect();
        let candidates: Vec<Candidate> = sample
            .iter()
            .zip(&ids)
            .filter(|(&h, _)| h as usize != d)
            .map(|(&h, id)| Candidate {
                host: host_ip(h as usize),
                id,
            })
            .collect();
        let dl = self.downloads[d].as_mut().expect("started");
        let chosen = subset::choose(dl.key, &candidates, self.cfg.subset, 1);
        for c in chosen {
            let h = u32::from(match candidates[c].host {
                IpAddr::V4(v4) => v4,
                IpAddr::V6(_) => continue,
            }) - 0x0a00_0000;
            if dl.conns.iter().any(|c| c.holder == h) {
                continue;
            }
            if dl.conns.len() >= max {
                break;
            }
            dl.conns.push(Conn {
                holder: h,
                state: ConnState::Closed,
                gen: 0,
                retry_at: 0,
                last_poll: None,
                flow: None,
                parked: 0,
                served: false,
                run_end: 0,
                run_sent: 0,
                ahead: None,
                chained: false,
                epoch: 0,
                last_piece: 0,
                wait_token: 0,
            });
        }
    }

    /// A re-query of the tracker: a window of [`TRACKER_SAMPLE`]
    /// announced hosts from a random place (`discovery::tracker::sample`),
    /// this download's subset of it added.
    fn requery(&mut self, d: usize) {
        // At `max_holders`, or served on enough connections in a swarm,
        // the supervisor asks no more (`Round::wants_holders`).
        let (max_holders, hunt_below) = (self.cfg.max_holders, self.cfg.hunt_below);
        let rate: f64 = self.net.inn[d]
            .iter()
            .map(|&i| self.net.flows[i].rate)
            .sum();
        let slow = rate < self.cfg.hunt_rate * self.net.down[d];
        let wanted = {
            let dl = self.dl(d);
            let served = dl.conns.iter().filter(|c| c.served).count();
            dl.conns.len() < max_holders
                && (hunt_below == usize::MAX
                    || slow
                    || crate::fetch::requery_wanted(0, served, dl.sched.in_swarm()))
        };
        if wanted {
            let before = self.dl(d).conns.len();
            let start = (next_rand(&mut self.rng) % self.hosts.len() as u64) as u32;
            let sample: Vec<u32> = self
                .announced
                .range((start, 0)..)
                .chain(self.announced.range(..(start, 0)))
                .take(TRACKER_SAMPLE)
                .map(|&(_, h)| h)
                .collect();
            self.add_holders(d, &sample, self.cfg.max_holders);
            self.fill(d);
            let fast = self.cfg.fast_requery.as_nanos() as u64;
            let dl = self.dl(d);
            dl.queries += 1;
            dl.fast_every = if dl.conns.len() > before {
                fast
            } else if dl.sched.in_swarm() {
                (dl.fast_every * 2).min(REQUERY)
            } else {
                dl.fast_every
            };
        }
        let now = self.now;
        let dl = self.dl(d);
        let fast = now - dl.stats.start < FAST_REQUERY_FOR;
        let at = now + if fast { dl.fast_every } else { REQUERY };
        self.push(at, Ev::Requery { d: d as u32 });
    }

    /// The supervisor's `fill`: connections up to `connections`, to a
    /// holder without one that is not waiting out a turn-away or a
    /// rotation, one that may have something this download lacks first.
    fn fill(&mut self, d: usize) {
        let now = self.now;
        let max = self.cfg.connections;
        loop {
            let dl = self.downloads[d].as_ref().expect("started");
            let max = if self.cfg.swarm_connections < max && dl.sched.in_swarm() {
                self.cfg.swarm_connections
            } else {
                max
            };
            if dl.open >= max {
                return;
            }
            let served = dl.conns.iter().filter(|c| c.served).count();
            let rate: f64 = self.net.inn[d]
                .iter()
                .map(|&i| self.net.flows[i].rate)
                .sum();
            let slow = rate < self.cfg.hunt_rate * self.net.down[d];
            if served >= self.cfg.hunt_below && dl.sched.in_swarm() && !slow {
                return;
            }
            let free = |c: &Conn| c.state == ConnState::Closed && c.retry_at <= now;
            let len = dl.conns.len();
            let off = if self.cfg.rotate_holders {
                (dl.key >> 32) as usize % len.max(1)
            } else {
                0
            };
            let order = || (0..len).map(move |k| (k + off) % len);
            let pick = order()
                .find(|&k| free(&dl.conns[k]) && dl.sched.useful(k))
                .or_else(|| order().find(|&k| free(&dl.conns[k])));
            match pick {
                Some(k) => self.open(d, k),
                None => return,
            }
        }
    }

    fn dl(&mut self, d: usize) -> &mut Download {
        self.downloads[d].as_mut().expect("started")
    }

    /// Opens a connection to slot `j` and asks its bitmap first.
    fn open(&mut self, d: usize, j: usize) {
        let dl = self.dl(d);
        dl.open += 1;
        dl.conns[j].state = ConnState::Idle;
        dl.conns[j].last_poll = None;
        self.poll(d, j);
    }

    /// A bitmap request of `d` reaches holder `h`: a partial holder frees
    /// the slot `d` holds there with nothing in progress
    /// ([`Config::release_on_poll`]).
    fn polled(&mut self, d: usize, j: usize) {
        if !self.cfg.release_on_poll {
            return;
        }
        let h = self.dl(d).conns[j].holder as usize;
        if !self.hosts[h].complete {
            let _ = self.hosts[h].slots.idle(&(d as u32));
        }
    }

    /// Asks slot `j`'s bitmap (and a seed's offer).
    fn poll(&mut self, d: usize, j: usize) {
        self.polled(d, j);
        let at = self.now + 2 * self.lat();
        let now = self.now;
        let dl = self.dl(d);
        dl.conns[j].state = ConnState::Busy;
        dl.conns[j].last_poll = Some(now);
        dl.requests += 1;
        self.push(
            at,
            Ev::Have {
                d: d as u32,
                j: j as u32,
            },
        );
    }

    /// Asks slot `j`'s bitmap with a wait (`worker.rs`'s `PollWaiting`):
    /// the holder answers when it gets a piece this download wants, or
    /// at the wait's end (`HAVE_WAIT`).
    fn poll_waiting(&mut self, d: usize, j: usize) {
        let now = self.now;
        let lat = self.lat();
        let wait = self.cfg.have_wait.as_nanos() as u64;
        let dl = self.dl(d);
        let Some(want) = dl.sched.wanted_from(j) else {
            self.poll(d, j);
            return;
        };
        self.polled(d, j);
        let dl = self.dl(d);
        dl.conns[j].state = ConnState::Busy;
        dl.conns[j].last_poll = Some(now);
        dl.conns[j].wait_token += 1;
        dl.requests += 1;
        let (h, token) = (dl.conns[j].holder as usize, dl.conns[j].wait_token);
        self.hosts[h]
            .have_waiters
            .push((d as u32, j as u32, token, want));
        self.push(
            now + lat + wait,
            Ev::HaveWaited {
                d: d as u32,
                j: j as u32,
                token,
            },
        );
    }

    fn holder_view(&mut self, h: usize) -> (Option<Bitfield>, Option<Bitfield>) {
        let now = self.instant();
        let host = &mut self.hosts[h];
        if host.complete {
            let offer = host.offers.as_mut().map(|o| o.offer(now));
            (None, offer)
        } else {
            (Some(host.have.clone()), None)
        }
    }

    fn have_answer(&mut self, d: usize, j: usize) {
        let h = self.dl(d).conns[j].holder as usize;
        let (have, fresh) = self.holder_view(h);
        let at = self.instant();
        let dl = self.dl(d);
        dl.sched.set_have_at(j, have, fresh, at);
        dl.conns[j].state = ConnState::Idle;
        self.ready(d, j);
    }

    /// Wakes the idle connections of `d` (the scheduler's condvar) when a
    /// piece went back to the queue; other changes give no idle
    /// connection new work before its next look (every `IDLE_WAIT`).
    fn wake(&mut self, d: usize) {
        let now = self.now;
        let mut evs = Vec::new();
        {
            let dl = self.dl(d);
            for (j, c) in dl.conns.iter_mut().enumerate() {
                // One told to come back later sleeps (`Round::sleep`).
                if c.state == ConnState::Idle && c.retry_at <= now {
                    c.gen += 1;
                    evs.push(Ev::Ready {
                        d: d as u32,
                        j: j as u32,
                        gen: c.gen,
                    });
                }
            }
        }
        for ev in evs {
            self.push(now, ev);
        }
    }

    fn sleep(&mut self, d: usize, j: usize, until: u64) {
        let dl = self.dl(d);
        let c = &mut dl.conns[j];
        c.gen += 1;
        let ev = Ev::Ready {
            d: d as u32,
            j: j as u32,
            gen: c.gen,
        };
        self.push(until, ev);
    }

    /// The worker's step on an idle connection.
    fn ready(&mut self, d: usize, j: usize) {
        if !self.finish[d].is_nan() {
            return;
        }
        let now = self.now;
        let at = self.instant();
        let dl = self.downloads[d].as_mut().expect("started");
        if dl.conns[j].state != ConnState::Idle || dl.conns[j].retry_at > now {
            return;
        }
        let stale_hint = dl.conns[j].last_poll.is_none_or(|t| now - t >= HINT_POLL);
        if dl.sched.has_hint(j) && stale_hint {
            self.poll(d, j);
            return;
        }
        match dl.sched.next_at(j, at) {
            Next::Stop => {}
            Next::Piece(i) => {
                let n = 1 + self.extend(d, j, i);
                let dl = self.dl(d);
                dl.requests += 1;
                dl.conns[j].state = ConnState::Busy;
                let arrive = now + self.lat();
                self.push(
                    arrive,
                    Ev::Ask {
                        d: d as u32,
                        j: j as u32,
                        i: i as u32,
                        n: n as u32,
                    },
                );
            }
            Next::Wait => {
                let c = &dl.conns[j];
                let stale =
                    self.cfg.poll_after_piece && c.last_poll.is_some_and(|t| t < c.last_piece);
                let polled_long_ago = c.last_poll.is_none_or(|t| now - t >= HAVE_POLL) || stale;
                if dl.sched.needs_poll(j) && polled_long_ago {
                    let nothing = !dl.sched.is_complete_holder(j) && !dl.sched.useful(j);
                    if !nothing || stale {
                        self.poll(d, j);
                    } else if self.better_holder(d, j).is_some() {
                        self.leave(d, j, now + ROTATE_AWAY);
                        self.fill(d);
                    } else if self.cfg.have_wait > Duration::ZERO {
                        self.poll_waiting(d, j);
                    } else {
                        self.poll(d, j);
                    }
                } else if !dl.sched.is_complete_holder(j) && !dl.sched.useful(j) {
                    if self.better_holder(d, j).is_some() {
                        self.leave(d, j, now + ROTATE_AWAY);
                        self.fill(d);
                    } else {
                        self.idle(d, j);
                    }
                } else {
                    self.idle(d, j);
                }
            }
        }
    }

    /// Nothing to fetch on this connection now (`Step::Idle`): it holds
    /// no slot worth counting, and looks again after `IDLE_WAIT`.
    fn idle(&mut self, d: usize, j: usize) {
        let now = self.now;
        self.dl(d).conns[j].served = false;
        self.sleep(d, j, now + IDLE_WAIT);
    }

    /// A holder slot without a connection, not resting, that may have
    /// something this download lacks (`Round::better_holder_waits`).
    fn better_holder(&mut self, d: usize, except: usize) -> Option<usize> {
        let now = self.now;
        let dl = self.dl(d);
        (0..dl.conns.len()).find(|&k| {
            k != except
                && dl.conns[k].state == ConnState::Closed
                && dl.conns[k].retry_at <= now
                && dl.sched.useful(k)
        })
    }

    /// The worker leaves its holder (`Step::Rotate`).
    fn leave(&mut self, d: usize, j: usize, retry_at: u64) {
        if self.cfg.release {
            let h = self.dl(d).conns[j].holder as usize;
            let _ = self.hosts[h].slots.left(&(d as u32));
        }
        self.close(d, j, retry_at);
    }

    fn close(&mut self, d: usize, j: usize, retry_at: u64) {
        let dl = self.dl(d);
        dl.conns[j].state = ConnState::Closed;
        dl.conns[j].served = false;
        dl.conns[j].retry_at = retry_at;
        dl.conns[j].gen += 1;
        dl.open -= 1;
    }

    /// The pieces after `first` that its request takes too (a run,
    /// `worker.rs`'s `extend`: [`Scheduler::extend_at`] up to
    /// [`Config::run_bytes`]).
    fn extend(&mut self, d: usize, j: usize, first: usize) -> usize {
        let max = (self.cfg.run_bytes / self.cfg.piece.max(1)).saturating_sub(1) as usize;
        let at = self.instant();
        self.dl(d).sched.extend_at(j, first, max, at)
    }

    /// A request for the `n` pieces from `i` at the holder: a slot, or
    /// "come back later".
    fn ask(&mut self, d: usize, j: usize, i: usize, n: usize) {
        let h = self.dl(d).conns[j].holder as usize;
        let now = self.instant();
        match self.hosts[h].slots.admit(&(d as u32), now) {
            Admit::Busy { retry_after, next } => {
                self.busy_answers += 1;
                if h == 0 {
                    self.seed_busy += 1;
                }
                let at = self.now + self.lat();
                let retry = self.now + retry_after.as_nanos() as u64;
                let epoch = self.dl(d).conns[j].epoch;
                self.push(
                    at,
                    Ev::Refused {
                        d: d as u32,
                        j: j as u32,
                        i: i as u32,
                        n: n as u32,
                        epoch,
                        retry,
                        next,
                    },
                );
            }
            Admit::Serve => self.serve(d, j, h, i, n),
        }
    }

    /// Holder `h` answers the run of `n` pieces from `i`: its pieces go
    /// out one after the other, and the answer's head carries the
    /// holder's bitmap or offer; with pipelining the worker asks its next
    /// run as soon as that head is good.
    fn serve(&mut self, d: usize, j: usize, h: usize, i: usize, n: usize) {
        if let Some(o) = self.hosts[h].offers.as_mut() {
            o.note(i, i + n - 1);
        }
        if h == 0 {
            for p in i..i + n {
                if !self.seed_sent.get(p) {
                    self.seed_sent.set(p);
                    self.seed_unique += 1;
                    if self.seed_unique == self.n {
                        self.seed_spread = self.now as f64 / 1e9;
                    }
                }
            }
        }
        let c = &mut self.dl(d).conns[j];
        c.run_end = (i + n) as u32;
        c.run_sent = 0;
        self.start_flow(d, j, h, i);
        let (have, fresh) = self.holder_view(h);
        let now = self.now;
        let at = self.instant();
        let pipeline = self.cfg.pipeline;
        let dl = self.dl(d);
        // `X-Have` (a partial holder) or `X-Fresh` (a counting seed): the
        // worker's view is fresh, no `/have` before HAVE_POLL.
        if have.is_some() || fresh.is_some() {
            dl.conns[j].last_poll = Some(now);
        }
        dl.sched.set_have_at(j, have, fresh, at);
        if pipeline && dl.conns[j].ahead.is_none() {
            if let Next::Piece(f) = dl.sched.next_at(j, at) {
                let m = 1 + self.extend(d, j, f);
                let dl = self.dl(d);
                dl.requests += 1;
                dl.conns[j].ahead = Some((f as u32, m as u32));
            }
        }
    }

    /// Piece `i` starts from holder `h` to `d` (slot `j`).
    fn start_flow(&mut self, d: usize, j: usize, h: usize, i: usize) {
        let bytes = self.piece_len(i) as f64;
        let id = self.net.add(Flow {
            src: h as u32,
            dst: d as u32,
            slot: j as u32,
            piece: i as u32,
            bytes,
            left: bytes,
            rate: 0.0,
            at: self.now,
            version: 0,
            live: true,
        });
        let now = self.now;
        let inn = self.net.inn[d].len() as u128 - 1;
        self.up_busy(h, now);
        let dl = self.dl(d);
        dl.conns[j].flow = Some(id);
        dl.stats.slot_ns += inn * u128::from(now - dl.stats.slot_since);
        dl.stats.slot_since = now;
        if let Some(t) = dl.stats.idle_since.take() {
            dl.stats.idle += now - t;
        }
        self.rerate(&[h as u32, d as u32]);
    }

    /// The run on slot `j` of `d` ended at its holder (sent whole or cut):
    /// the slot counts its bytes (`SlotGuard`'s drop).
    fn run_over(&mut self, d: usize, j: usize) {
        let now = self.instant();
        let c = &mut self.dl(d).conns[j];
        let (h, bytes) = (c.holder as usize, c.run_sent);
        c.run_sent = 0;
        self.hosts[h].slots.finished(&(d as u32), bytes, now);
    }

    /// Turned away: the pieces go back, the connection leaves this
    /// holder until `retry` and goes to another (`worker.rs`'s
    /// `SlotsFull`, then the supervisor's `fill`).
    fn refused(&mut self, d: usize, j: usize, i: usize, n: usize, retry: u64, next: bool) {
        let now = self.now;
        let parked = self.dl(d).conns[j].parked;
        let park = match self.cfg.park {
            Park::Never => false,
            Park::Always => true,
            Park::Next => next && parked < crate::fetch::MAX_PARKED,
        };
        let dl = self.dl(d);
        dl.stats.refused += 1;
        dl.conns[j].served = false;
        for p in i..i + n {
            dl.sched.release(p, j);
        }
        let retry = retry.clamp(now + SLOTS_RETRY_MIN, now + SLOTS_RETRY_MAX);
        dl.conns[j].state = ConnState::Idle;
        dl.conns[j].parked = if park { parked + 1 } else { 0 };
        if park {
            dl.conns[j].retry_at = retry;
            self.sleep(d, j, retry);
            self.wake(d);
            return;
        }
        self.close(d, j, retry);
        self.fill(d);
        self.wake(d);
    }

    fn rerate(&mut self, hosts: &[u32]) {
        let mut moved = std::mem::take(&mut self.moved);
        moved.clear();
        self.net.rerate(hosts, self.now, &mut moved);
        for &id in &moved {
            let end = self.net.end(id);
            let version = self.net.flows[id].version;
            self.push(
                end,
                Ev::FlowEnd {
                    id: id as u32,
                    version,
                },
            );
        }
        self.moved = moved;
    }

    /// A piece left its holder whole: it reaches the downloader one
    /// latency later; the run's next piece follows at once, or after the
    /// run's last the holder answers the request asked ahead, if any.
    fn flow_end(&mut self, id: usize) {
        let f = self.net.flows[id].clone();
        self.end_flow(id, f.bytes);
        let (d, j, i, h) = (
            f.dst as usize,
            f.slot as usize,
            f.piece as usize,
            f.src as usize,
        );
        let c = &mut self.dl(d).conns[j];
        c.run_sent += f.bytes as u64;
        let last = i + 1 >= c.run_end as usize;
        let epoch = c.epoch;
        let at = self.now + self.lat();
        self.push(
            at,
            Ev::Arrived {
                d: d as u32,
                j: j as u32,
                i: i as u32,
                epoch,
                last,
            },
        );
        if !last {
            self.start_flow(d, j, h, i + 1);
            return;
        }
        self.run_over(d, j);
        if let Some((first, n)) = self.dl(d).conns[j].ahead.take() {
            self.dl(d).conns[j].chained = true;
            self.ask(d, j, first as usize, n as usize);
        }
    }

    /// Takes flow `id` off the links after `bytes` were sent.
    fn end_flow(&mut self, id: usize, bytes: f64) {
        let f = self.net.flows[id].clone();
        let (src, dst) = (f.src as usize, f.dst as usize);
        if src == 0 {
            self.seed_bytes += bytes;
            if self.net.down[dst] < self.cfg.link {
                self.seed_to_slow += bytes;
            }
        }
        // The id goes back to the free list: the connection forgets it
        // now, or a flow that reuses it would be taken for this one (and
        // ended as a losing endgame copy: 2 of 480 downloads then waited
        // for ever on a flow that was no longer theirs).
        let inn = self.net.inn[dst].len() as u128;
        let t = self.now;
        if let Some(dl) = self.downloads[dst].as_mut() {
            let c = &mut dl.conns[f.slot as usize];
            if c.flow == Some(id) {
                c.flow = None;
            }
            dl.stats.slot_ns += inn * u128::from(t - dl.stats.slot_since);
            dl.stats.slot_since = t;
        }
        self.net.remove(id);
        if self.net.out[src].is_empty() {
            self.up_idle_since[src] = Some(self.now);
        }
        if self.net.inn[dst].is_empty() && self.finish[dst].is_nan() {
            let now = self.now;
            if let Some(dl) = self.downloads[dst].as_mut() {
                dl.stats.idle_since = Some(now);
            }
        }
        self.rerate(&[src as u32, dst as u32]);
    }

    /// Stops the run slot `k` of `d` is receiving, if any: its flow ends
    /// where it is, the holder's slot counts what was sent. Its answers
    /// still on the way are stale. Returns the piece it was sending.
    fn stop_run(&mut self, d: usize, k: usize) -> Option<usize> {
        let f = self.dl(d).conns[k].flow.take()?;
        let flow = &self.net.flows[f];
        if !(flow.live && flow.dst as usize == d && flow.slot as usize == k) {
            return None;
        }
        let piece = flow.piece as usize;
        let sent = self.net.sent(f, self.now);
        self.end_flow(f, sent);
        let c = &mut self.dl(d).conns[k];
        c.run_sent += sent as u64;
        c.epoch += 1;
        c.chained = false;
        self.run_over(d, k);
        Some(piece)
    }

    /// Cuts the run slot `k` of `d` receives when every piece left in it
    /// is done here (the worker's read gives up: `is_done` of the rest of
    /// the run), and the run asked ahead with it: their pieces go back,
    /// the connection looks for work at once.
    fn cut_if_done(&mut self, d: usize, k: usize) {
        let dl = self.downloads[d].as_ref().expect("started");
        let c = &dl.conns[k];
        let Some(f) = c.flow else { return };
        let flow = &self.net.flows[f];
        if !(flow.live && flow.dst as usize == d && flow.slot as usize == k) {
            return;
        }
        let (cur, end) = (flow.piece as usize, c.run_end as usize);
        if !(cur..end).all(|p| dl.sched.is_done(p)) {
            return;
        }
        self.stop_run(d, k);
        let dl = self.dl(d);
        for p in cur..end {
            dl.sched.release(p, k);
        }
        if let Some((first, n)) = dl.conns[k].ahead.take() {
            for p in first..first + n {
                dl.sched.release(p as usize, k);
            }
        }
        dl.conns[k].served = false;
        dl.conns[k].state = ConnState::Idle;
        let now = self.now;
        self.sleep(d, k, now);
    }

    fn arrived(&mut self, d: usize, j: usize, i: usize, last: bool) {
        let t_ns = self.now;
        let now = self.instant();
        let len = self.piece_len(i);
        let n = self.n;
        let hosts = &self.hosts;
        let dl = self.downloads[d].as_mut().expect("started");
        let epoch = dl.conns[j].epoch;
        dl.conns[j].parked = 0;
        dl.conns[j].last_piece = t_ns;
        // The worker's `settle`: a piece served, the connection holds a slot.
        dl.conns[j].served = true;
        let h = dl.conns[j].holder as usize;
        if dl.sched.claim(i) {
            dl.sched.written_at(i, len, j, now);
            dl.stats.got.push(t_ns);
            if h == 0 {
                dl.stats.from_seed += 1;
            }
            if hosts[h].complete {
                dl.stats.from_complete += 1;
            }
            let got = dl.stats.got.len();
            let q = got * 4 / n;
            if got * 4 % n == 0 && (1..=4).contains(&q) {
                let complete = dl
                    .conns
                    .iter()
                    .filter(|c| hosts[c.holder as usize].complete)
                    .count() as u32;
                dl.stats.at_quarter[q - 1] = (dl.conns.len() as u32, complete, dl.stats.refused);
            }
            self.hosts[d].have.set(i);
            // Parked bitmap requests that want this piece are answered.
            let mut k = 0;
            while k < self.hosts[d].have_waiters.len() {
                if self.hosts[d].have_waiters[k].3.get(i) {
                    let (wd, wj, _, _) = self.hosts[d].have_waiters.swap_remove(k);
                    let at = self.now + self.lat();
                    self.push(at, Ev::Have { d: wd, j: wj });
                } else {
                    k += 1;
                }
            }
            if self.hosts[d].have.count() == 1 {
                self.up_idle_since[d] = Some(self.now);
                let at = self.now + self.cfg.announce_after.as_nanos() as u64;
                self.push(at, Ev::Announce { h: d as u32 });
            }
            if self.dl(d).sched.remaining() == 0 {
                self.complete(d);
                return;
            }
            // Runs left with nothing but done pieces stop (the workers'
            // `is_done` checks): losing endgame copies among them.
            for k in 0..self.dl(d).conns.len() {
                self.cut_if_done(d, k);
            }
        } else {
            dl.sched.release(i, j);
        }
        let c = &mut self.dl(d).conns[j];
        if !last || c.epoch != epoch {
            return;
        }
        if c.chained {
            // The holder already answers the run asked ahead.
            c.chained = false;
            return;
        }
        c.state = ConnState::Idle;
        self.ready(d, j);
    }

    /// What each unfinished download waits for: its missing pieces
    /// (at most 4), their state in its scheduler, and its connections.
    fn stuck(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in 1..self.hosts.len() {
            if !self.finish[d].is_nan() {
                continue;
            }
            let Some(dl) = self.downloads[d].as_ref() else {
                out.push(format!("host {d}: not started"));
                continue;
            };
            let missing: Vec<usize> = (0..self.n)
                .filter(|&i| !self.hosts[d].have.get(i))
                .collect();
            let pieces: Vec<String> = missing
                .iter()
                .take(4)
                .map(|&i| format!("{i} ({})", dl.sched.describe_piece(i)))
                .collect();
            let conns: Vec<String> = dl
                .conns
                .iter()
                .map(|c| {
                    let holder = &self.hosts[c.holder as usize];
                    let held = missing.iter().filter(|&&i| holder.have.get(i)).count();
                    format!("h{} {:?} holds {held}", c.holder, c.state)
                })
                .collect();
            out.push(format!(
                "host {d}: {} missing, pieces {}; holders {}",
                missing.len(),
                pieces.join(", "),
                conns.join(", ")
            ));
        }
        out
    }

    fn complete(&mut self, d: usize) {
        self.finish[d] = self.now as f64 / 1e9;
        if self.up_idle_since[d].is_some() {
            self.up_busy(d, self.now);
            self.up_idle_since[d] = Some(self.now);
        }
        let host = &mut self.hosts[d];
        host.complete = true;
        host.offers = Some(Offers::new(self.n));
        for k in 0..self.dl(d).conns.len() {
            self.stop_run(d, k);
        }
        // The download ends: its connections close (those kept after a
        // turn-away too), each holder frees its slot or forgets it waits.
        if self.cfg.release {
            let holders: Vec<usize> = self.dl(d).conns.iter().map(|c| c.holder as usize).collect();
            for h in holders {
                let _ = self.hosts[h].slots.left(&(d as u32));
            }
        }
        let dl = self.dl(d);
        for c in &mut dl.conns {
            c.gen += 1;
            c.epoch += 1;
            c.flow = None;
            c.ahead = None;
            c.state = ConnState::Closed;
        }
        dl.open = 0;
    }
}
