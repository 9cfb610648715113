//! [`Server`]: owns the accept, poll and worker threads, and stops and
//! joins them all on [`Server::shutdown`] or drop.
//!
//! Threads: `<name>-accept` admits connections and parks them;
//! `<name>-poll` watches parked connections and moves those whose socket is
//! ready to the fair queue; `<name>-w<i>` workers take connections from the
//! queue in turn and run one bounded step each (see `conn`).
//!
//! Shutdown: set the close flag, connect to the listener so the blocking
//! `accept` returns and the accept thread exits, close the fair queue
//! (waking every idle worker and closing the connections in it); the poll
//! thread sees the flag within a tick and closes every parked connection;
//! a worker in a step finishes it (steps never block on a client) and
//! closes its connection. Then every thread is joined.

use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::accept;
use super::conn::Next;
use super::handler::CatalogCache;
use super::limits::{fit_fd_limit, Admission};
use super::park::{Parking, ReadyQueue};
use super::shared::Shared;
use super::slots::Slots;
use super::{FileSource, ServerConfig, ServerError};

/// Connections the kernel queues before the accept thread takes them
/// (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;
/// Times [`Server::shutdown`] tries to wake the accept loop before giving up
/// on a prompt stop (the loop still stops at its next connection).
const WAKE_ATTEMPTS: usize = 3;

/// Tells a running server that a partial file's pieces changed (see
/// [`Server::have_notifier`]).
#[derive(Clone)]
pub struct HaveNotifier {
    shared: std::sync::Weak<Shared>,
}

impl HaveNotifier {
    /// A partial file got pieces.
    pub fn notify(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.parking.have_changed();
        }
    }
}

impl std::fmt::Debug for HaveNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HaveNotifier")
    }
}

/// A running peer server. Dropping it stops it.
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

// The server handle can be shared and moved between threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Server>();
};

impl Server {
    /// Listens on `addr` and starts the accept thread, the poll thread and
    /// `config.workers` workers serving `source`. Port 0 picks a free
    /// port: see [`Server::local_addr`]. The process's open-file limit is
    /// raised to fit `config.max_connections` where the hard limit allows
    /// (otherwise the cap is lowered, with a warning).
    pub fn bind(
        addr: SocketAddr,
        config: ServerConfig,
        source: Arc<dyn FileSource>,
    ) -> Result<Server, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let listener =
            TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
        // std listens with a backlog of 128: a connect flood could fill it
        // and drop other clients' SYNs (each drop costs them a 1 s retry).
        if let Err(e) = rustix::net::listen(&listener, LISTEN_BACKLOG) {
            log::warn!("cannot raise the listen backlog of {local_addr}: {e}");
        }
        let max_connections = fit_fd_limit(config.max_connections);
        let server = Server {
            local_addr,
            shared: Arc::new(Shared {
                closing: AtomicBool::new(false),
                admission: Admission::new(max_connections, config.max_connections_per_client),
                parking: Parking::new().map_err(ServerError::Poll)?,
                ready: ReadyQueue::new(),
                catalog: CatalogCache::default(),
                slots: Slots::new(config.upload_slots),
                next_id: AtomicU64::new(0),
                panics: AtomicU64::new(0),
            }),
            threads: Mutex::new(Vec::new()),
        };
        let config = Arc::new(config);
        for i in 0..config.workers {
            let name = format!("{}-w{i}", config.thread_name);
            let (shared, config, source) = (
                Arc::clone(&server.shared),
                Arc::clone(&config),
                Arc::clone(&source),
            );
            // On error, dropping `server` stops the threads already started.
            server.spawn(name, move || work(&shared, &config, source.as_ref()))?;
        }
        let (shared, poll_config) = (Arc::clone(&server.shared), Arc::clone(&config));
        let name = format!("{}-poll", config.thread_name);
        server.spawn(name, move || {
            let ctx = shared.context(&poll_config, source.as_ref());
            shared
                .parking
                .run(&shared.ready, &ctx, &shared.closing, &shared.panics);
        })?;
        log::info!(
            "serving on {local_addr} ({} workers, at most {max_connections} connections, \
             {} per client)",
            config.workers,
            config.max_connections_per_client
        );
        let shared = Arc::clone(&server.shared);
        let name = format!("{}-accept", config.thread_name);
        server.spawn(name, move || accept::run(listener, &shared, &config))?;
        Ok(server)
    }

    fn spawn(&self, name: String, body: impl FnOnce() + Send + 'static) -> Result<(), ServerError> {
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(body)
            .map_err(|source| ServerError::SpawnThread { name, source })?;
        self.threads.lock().push(handle);
        Ok(())
    }

    /// The address the server listens on (with the real port if bound to 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many times a worker caught a panic while serving a connection
    /// (each is also logged as a `bug:`); 0 in a correct server.
    pub fn caught_panics(&self) -> u64 {
        self.shared.panics.load(Ordering::Relaxed)
    }

    /// What tells the server that a partial file it serves got pieces
    /// ([`FileSource::have`](super::FileSource::have) changed): `have`
    /// requests waiting for a piece are then answered at once. Cheap to
    /// call from any thread; does nothing once the server is gone.
    pub fn have_notifier(&self) -> HaveNotifier {
        HaveNotifier {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Client connections open now (being served, waiting for a worker,
    /// or parked).
    pub fn open_connections(&self) -> usize {
        self.shared.admission.total()
    }

    /// Stops accepting, closes every connection, and joins every thread. Idempotent; also done on drop.
    pub fn shutdown(&self) {
        let threads = std::mem::take(&mut *self.threads.lock());
        if threads.is_empty() {
            return;
        }
        self.shared.closing.store(true, Ordering::Release);
        let mut woken = false;
        for _ in 0..WAKE_ATTEMPTS {
            match accept::wake(self.local_addr) {
                Ok(()) => {
                    woken = true;
                    break;
                }
                Err(e) => log::debug!("cannot wake the accept loop: {e}"),
            }
        }
        if !woken {
            log::warn!(
                "cannot wake the accept loop on {}: shutdown waits for its next connection",
                self.local_addr
            );
        }
        drop(self.shared.ready.close());
        for handle in threads {
            let name = handle.thread().name().unwrap_or("?").to_owned();
            if handle.join().is_err() {
                log::error!("bug: server thread {name} panicked");
            }
        }
        log::info!("server on {} stopped", self.local_addr);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("closing", &self.shared.closing.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A worker: takes connections from the fair queue and runs their steps,
/// until the queue closes. A connection with more to do at once keeps the
/// worker while nobody else waits; otherwise it goes to the back.
fn work(shared: &Shared, config: &ServerConfig, source: &dyn FileSource) {
    let ctx = shared.context(config, source);
    while let Some(mut conn) = shared.ready.pop() {
        loop {
            let next = catch_unwind(AssertUnwindSafe(|| conn.step(&ctx))).unwrap_or_else(|_| {
                shared.panics.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "bug: a worker panicked serving {}; the connection is closed",
                    conn.peer()
                );
                Next::Close
            });
            if next == Next::Again
                && shared.ready.len() == 0
                && !shared.closing.load(Ordering::Acquire)
            {
                continue;
            }
            // A waiting `have` decided on the bitmap before it parked: a
            // piece that came in between raised the lot's eventfd before
            // the connection was there to be found. Looked at again once
            // it is parked (a later piece finds it there).
            let wait = conn.waits_for().cloned();
            shared
                .parking
                .place(conn, next, &shared.ready, &shared.closing);
            if wait.is_some_and(|w| w.satisfied(source)) {
                shared.parking.have_changed();
            }
            break;
        }
    }
}
