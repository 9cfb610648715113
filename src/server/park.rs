//! The parking lot: connections waiting for their socket (a request to
//! arrive, room for more of a body) or for a deadline, watched by one
//! `epoll` instance on the `<name>-poll` thread. A parked connection holds
//! no thread: a file descriptor and a few hundred bytes.
//!
//! Each socket is registered once and armed one-shot for what it waits
//! for; when it fires, the connection leaves the lot for the
//! [`FairQueue`]. Every [`TICK`] the thread also expires connections whose
//! deadline passed ([`Conn::expire`]: a `408`, or a silent close).
//!
//! `have` requests waiting for a piece (see `handler::PartialHave::wait`) wait here
//! too, for their socket (a close) and their deadline; an `eventfd` in the
//! same epoll set ([`Parking::have_changed`], raised when a partial file
//! gets pieces) makes the thread look which of them hold a wanted piece
//! now, and those leave for the queue at once.
//!
//! One lock around the map of parked connections, held to insert, remove
//! or pick a connection, across the `epoll_ctl` that arms a socket (so an
//! event can never fire for a connection not yet in the map), and across
//! the non-blocking `peek`s that check candidates for eviction; never
//! across a read or write of client data.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::event::epoll;

use super::conn::{Conn, Context, Next, Want};
use super::fair::FairQueue;
use super::limits::ClientKey;

/// How often deadlines are checked (and the stop flag).
const TICK: Duration = Duration::from_millis(100);
/// Events taken from the kernel per wait.
const EVENTS: usize = 256;
/// The epoll data of the `have` change eventfd (connection ids count up
/// from 0).
const HAVE_CHANGED: u64 = u64::MAX;

/// The ready queue connections leave the lot for.
pub(crate) type ReadyQueue = FairQueue<ClientKey, Box<Conn>>;

struct Parked {
    conn: Box<Conn>,
    until: Instant,
}

/// Parked connections and their epoll instance.
pub(crate) struct Parking {
    epoll: OwnedFd,
    parked: Mutex<HashMap<u64, Parked>>,
    /// Raised when a partial file's pieces change (level-triggered in the
    /// epoll set until read).
    have_changed: OwnedFd,
}

impl Parking {
    pub(crate) fn new() -> std::io::Result<Parking> {
        use rustix::event::{eventfd, EventfdFlags};
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let have_changed = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &epoll,
            &have_changed,
            epoll::EventData::new_u64(HAVE_CHANGED),
            epoll::EventFlags::IN,
        )?;
        Ok(Parking {
            epoll,
            parked: Mutex::new(HashMap::new()),
            have_changed,
        })
    }

    /// A partial file got pieces: the poll thread looks which waiting
    /// `have` requests can be answered (cheap; never blocks).
    pub(crate) fn have_changed(&self) {
        // Only fails if the counter is at its maximum: raised anyway.
        let _ = rustix::io::write(&self.have_changed, &1u64.to_ne_bytes());
    }

    /// Puts `conn` where `next` says: the lot, the ready queue, or nowhere
    /// (closed). After shutdown began, the connection is closed.
    pub(crate) fn place(
        &self,
        conn: Box<Conn>,
        next: Next,
        ready: &ReadyQueue,
        closing: &AtomicBool,
    ) {
        match next {
            Next::Park(want, until) => self.park(conn, want, until, closing),
            Next::Again => {
                // Refused only after shutdown: the connection is dropped.
                let _ = ready.push(conn.key(), conn);
            }
            Next::Close => drop(conn),
        }
    }

    fn park(&self, mut conn: Box<Conn>, want: Want, until: Instant, closing: &AtomicBool) {
        use epoll::EventFlags;
        let flags = EventFlags::ONESHOT
            | match want {
                Want::Read => EventFlags::IN | EventFlags::RDHUP,
                Want::Write => EventFlags::OUT,
            };
        let data = epoll::EventData::new_u64(conn.id());
        let mut parked = self.parked.lock();
        // Checked under the lock: the poll thread empties the map under it
        // after the flag is set, so nothing parks after that.
        if closing.load(Ordering::Acquire) {
            drop(parked);
            return;
        }
        let armed = if conn.registered {
            epoll::modify(&self.epoll, conn.stream(), data, flags)
        } else {
            epoll::add(&self.epoll, conn.stream(), data, flags)
        };
        match armed {
            Ok(()) => {
                conn.registered = true;
                parked.insert(conn.id(), Parked { conn, until });
            }
            Err(e) => {
                drop(parked);
                log::warn!(
                    "{}: cannot watch the connection: {e}; closing it",
                    conn.peer()
                );
            }
        }
    }

    /// Closes one parked connection (of `client` only, if given) to make
    /// room for a new one; says whether there was one to close. First the
    /// one that has waited longest for a request of which nothing arrived,
    /// then the one whose partial head has been silent longest (see
    /// [`Conn::evictable`]). A connection with bytes in its socket buffer,
    /// unread, is neither.
    pub(crate) fn make_room(&self, client: Option<ClientKey>) -> bool {
        let now = Instant::now();
        let victim = {
            let mut parked = self.parked.lock();
            let mut candidates: Vec<((u8, Instant), u64)> = parked
                .iter()
                .filter(|(_, p)| client.is_none_or(|k| p.conn.key() == k))
                .filter_map(|(id, p)| Some((p.conn.evictable(now)?, *id)))
                .collect();
            candidates.sort_unstable();
            let mut peek = [0u8; 1];
            let id = candidates.into_iter().map(|(_, id)| id).find(|id| {
                parked.get(id).is_some_and(|p| {
                    // Ok(0): the client closed; WouldBlock: nothing new.
                    match p.conn.stream().peek(&mut peek) {
                        Ok(n) => n == 0,
                        Err(e) => e.kind() != std::io::ErrorKind::Interrupted,
                    }
                })
            });
            id.and_then(|id| parked.remove(&id))
        };
        match victim {
            Some(p) => {
                log::debug!(
                    "{}: closing a waiting connection to make room",
                    p.conn.peer()
                );
                true
            }
            None => false,
        }
    }

    /// The `<name>-poll` thread: hands connections whose socket is ready
    /// to `ready`, expires the overdue, until `closing`; then closes every
    /// parked connection.
    pub(crate) fn run(
        &self,
        ready: &ReadyQueue,
        ctx: &Context<'_>,
        closing: &AtomicBool,
        panics: &AtomicU64,
    ) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS);
        let tick = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: i64::from(TICK.subsec_nanos()),
        };
        let mut next_scan = Instant::now() + TICK;
        while !closing.load(Ordering::Acquire) {
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&tick),
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    log::error!("cannot wait for connection events: {e}");
                    std::thread::sleep(TICK);
                }
            }
            let changed = events.iter().any(|e| e.data.u64() == HAVE_CHANGED);
            if changed {
                let mut count = [0u8; 8];
                let _ = rustix::io::read(&self.have_changed, &mut count);
            }
            let woken: Vec<Box<Conn>> = {
                let mut parked = self.parked.lock();
                let mut woken: Vec<Box<Conn>> = events
                    .iter()
                    .filter_map(|event| {
                        let data = event.data;
                        parked.remove(&data.u64())
                    })
                    .map(|p| p.conn)
                    .collect();
                if changed {
                    let ready: Vec<u64> = parked
                        .iter()
                        .filter(|(_, p)| {
                            p.conn.waits_for().is_some_and(|w| w.satisfied(ctx.source))
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    woken.extend(
                        ready
                            .iter()
                            .filter_map(|id| parked.remove(id))
                            .map(|p| p.conn),
                    );
                }
                woken
            };
            for conn in woken {
                // Refused only after shutdown: the connection is dropped.
                let _ = ready.push(conn.key(), conn);
            }
            let now = Instant::now();
            if now >= next_scan {
                next_scan = now + TICK;
                self.expire(now, ready, ctx, closing, panics);
            }
        }
        let left = std::mem::take(&mut *self.parked.lock());
        drop(left);
    }

    fn expire(
        &self,
        now: Instant,
        ready: &ReadyQueue,
        ctx: &Context<'_>,
        closing: &AtomicBool,
        panics: &AtomicU64,
    ) {
        let overdue: Vec<Box<Conn>> = {
            let mut parked = self.parked.lock();
            let ids: Vec<u64> = parked
                .iter()
                .filter(|(_, p)| p.until <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| parked.remove(id))
                .map(|p| p.conn)
                .collect()
        };
        for mut conn in overdue {
            let next = catch_unwind(AssertUnwindSafe(|| conn.expire(ctx))).unwrap_or_else(|_| {
                panics.fetch_add(1, Ordering::Relaxed);
                log::error!("bug: expiring the connection of {} panicked", conn.peer());
                Next::Close
            });
            self.place(conn, next, ready, closing);
        }
    }
}
