//! [`Server`]: owns the listener thread and the worker threads, and stops
//! and joins them all on [`Server::shutdown`] or drop.
//!
//! Shutdown: set the close flag, connect to the listener so the blocking
//! `accept` returns and the accept thread exits (dropping the only sender,
//! so workers see the channel close once it is drained), shut down every
//! connection a worker is serving so blocked reads and writes return, then
//! join every thread. Workers register the connection they serve in a map
//! that is locked only to insert, remove or take it, never across I/O.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use parking_lot::Mutex;

use super::accept::{self, Accepted};
use super::connection::{self, Context};
use super::{FileSource, ServerConfig, ServerError};

/// Times [`Server::shutdown`] tries to wake the accept loop before giving up
/// on a prompt stop (the loop still stops at its next connection).
const WAKE_ATTEMPTS: usize = 3;

/// A running peer server. Dropping it stops it.
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// State shared by the server handle and its threads.
struct Shared {
    closing: AtomicBool,
    /// Connections being served, by id, so shutdown can unblock them.
    active: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    panics: AtomicU64,
}

// The server handle can be shared and moved between threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Server>();
};

impl Server {
    /// Listens on `addr` and starts the accept thread and `config.workers`
    /// workers serving `source`. Port 0 picks a free port: see
    /// [`Server::local_addr`].
    pub fn bind(
        addr: SocketAddr,
        config: ServerConfig,
        source: Arc<dyn FileSource>,
    ) -> Result<Server, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let listener =
            TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
        let server = Server {
            local_addr,
            shared: Arc::new(Shared {
                closing: AtomicBool::new(false),
                active: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                panics: AtomicU64::new(0),
            }),
            threads: Mutex::new(Vec::new()),
        };
        let config = Arc::new(config);
        let (tx, rx) = crossbeam_channel::bounded::<Accepted>(config.queue);
        for i in 0..config.workers {
            let name = format!("{}-w{i}", config.thread_name);
            let (rx, shared, config, source) = (
                rx.clone(),
                Arc::clone(&server.shared),
                Arc::clone(&config),
                Arc::clone(&source),
            );
            // On error, dropping `server` stops the threads already started.
            server.spawn(name, move || work(rx, &shared, &config, source.as_ref()))?;
        }
        drop(rx);
        let shared = Arc::clone(&server.shared);
        let name = format!("{}-accept", config.thread_name);
        server.spawn(name, move || accept::run(listener, tx, &shared.closing))?;
        log::info!(
            "serving on {local_addr} with {} workers, queue {}",
            config.workers,
            config.queue
        );
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

    /// Stops accepting, closes the connections being served, and joins every
    /// thread. Idempotent; also done on drop.
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
        let active = std::mem::take(&mut *self.shared.active.lock());
        for stream in active.values() {
            // An error means the connection is already closed.
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
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

/// A worker: serves queued connections until the channel closes.
fn work(
    queue: Receiver<Accepted>,
    shared: &Shared,
    config: &ServerConfig,
    source: &dyn FileSource,
) {
    let waiting = || queue.len();
    let ctx = Context {
        config,
        source,
        closing: &shared.closing,
        waiting: &waiting,
    };
    for Accepted { stream, peer } in queue.iter() {
        if shared.closing.load(Ordering::Acquire) {
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        match stream.try_clone() {
            Ok(clone) => {
                shared.active.lock().insert(id, clone);
            }
            Err(e) => log::debug!("{peer}: cannot register the connection for shutdown: {e}"),
        }
        // Checked after registering: either shutdown saw this connection,
        // or this worker sees the flag.
        if !shared.closing.load(Ordering::Acquire) {
            let served = catch_unwind(AssertUnwindSafe(|| connection::serve(stream, peer, &ctx)));
            if served.is_err() {
                shared.panics.fetch_add(1, Ordering::Relaxed);
                log::error!("bug: a worker panicked serving {peer}; the connection is closed");
            }
        }
        shared.active.lock().remove(&id);
    }
}
