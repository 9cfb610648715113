//! [`ServerConfig`]: every limit and timeout of the peer server, in one
//! value built once and cloned into each thread.

use std::time::Duration;

/// Default time an answer may make no progress (the client reads nothing)
/// before it is abandoned.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default total time allowed to receive one request head.
pub const DEFAULT_HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// Default time a kept-alive connection may sit idle between requests.
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
/// Default number of requests served on one connection before it is closed.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: usize = 1000;
/// Default cap on open client connections in total.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default cap on open connections from one client address (an IPv4
/// address or an IPv6 /64).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 128;
/// Default upload slots: 4 kept by the fastest downloads, 1 rotated
/// (BitTorrent's 4 unchoked + 1 optimistic; 7 + 1 shortened the tail in
/// the simulator but not in the lab: `policy::slots`).
pub const DEFAULT_UPLOAD_SLOTS: usize = 5;
/// Default prefix of the server's thread names.
pub const DEFAULT_THREAD_NAME: &str = "pbs-http";

/// How the peer server runs. `Default` gives production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Worker threads, each running one step of one connection at a time
    /// (default: 4 x available parallelism). Workers never wait on a
    /// client, so they are busy only while bytes move.
    pub workers: usize,
    /// Open client connections in total; over it, the oldest idle
    /// connection is closed, or the new one gets `503` with
    /// `Retry-After: 1`. Lowered at start if the open-file limit is too low.
    pub max_connections: usize,
    /// Open connections from one client address (IPv4 address, IPv6 /64);
    /// over it, that client's oldest idle connection is closed, or the new
    /// one gets `503`. Keep it well under `max_connections`, so that one
    /// host never fills the server.
    pub max_connections_per_client: usize,
    /// Longest an answer may make no progress (the client reads nothing)
    /// before it is abandoned.
    pub write_timeout: Duration,
    /// Total time to receive a request head, from its first byte (from the
    /// accept for a new connection), however slowly it drips in.
    pub header_deadline: Duration,
    /// Longest a kept-alive connection may wait for its next request.
    pub keepalive_idle: Duration,
    /// Requests served on one connection before closing it.
    pub max_requests_per_connection: usize,
    /// Downloads (client hosts) served pieces at once: upload slots,
    /// rotated every second (the fastest keep theirs, one goes round the
    /// waiting ones); the others are told at once to come back later.
    /// 0: no limit.
    pub upload_slots: usize,
    /// Prefix of thread names: `<prefix>-accept`, `<prefix>-w<i>`. Linux
    /// shows at most 15 bytes of a thread name, so keep it short.
    pub thread_name: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            workers: 4 * cores,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            header_deadline: DEFAULT_HEADER_DEADLINE,
            keepalive_idle: DEFAULT_KEEPALIVE_IDLE,
            max_requests_per_connection: DEFAULT_MAX_REQUESTS_PER_CONNECTION,
            upload_slots: DEFAULT_UPLOAD_SLOTS,
            thread_name: DEFAULT_THREAD_NAME.to_owned(),
        }
    }
}

impl ServerConfig {
    /// Refuses values the server cannot run with.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.workers == 0 {
            return Err("workers must be at least 1");
        }
        if self.max_connections == 0 || self.max_connections_per_client == 0 {
            return Err("connection caps must be at least 1");
        }
        if self.max_requests_per_connection == 0 {
            return Err("max_requests_per_connection must be at least 1");
        }
        let timeouts = [
            self.write_timeout,
            self.header_deadline,
            self.keepalive_idle,
        ];
        if timeouts.iter().any(Duration::is_zero) {
            return Err("timeouts must be longer than zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_scales_with_cores() {
        let config = ServerConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert!(config.workers >= 4);
        assert_eq!(config.workers % 4, 0);
    }

    #[test]
    fn zero_values_are_refused() {
        let zero_workers = ServerConfig {
            workers: 0,
            ..ServerConfig::default()
        };
        assert!(zero_workers.validate().is_err());
        let zero_timeout = ServerConfig {
            write_timeout: Duration::ZERO,
            ..ServerConfig::default()
        };
        assert!(zero_timeout.validate().is_err());
    }
}
