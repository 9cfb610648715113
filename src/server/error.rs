//! [`ServerError`]: why a server could not start, by the step that failed.

use std::net::SocketAddr;

/// Why [`Server::bind`](super::Server::bind) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration cannot work.
    #[error("invalid server config: {0}")]
    Config(&'static str),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The bound address could not be read back.
    #[error("cannot read the listening address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The epoll instance watching idle connections could not be created.
    #[error("cannot create the epoll instance for connections: {0}")]
    Poll(#[source] std::io::Error),
    /// A thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    SpawnThread {
        /// The thread's name.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
