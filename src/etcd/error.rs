//! The etcd client's one error type, and [`Refusal`]: what etcd's own
//! refusals mean, read once from the gRPC code and etcd's message.
//!
//! Messages are one lowercase line saying what failed and why, in the
//! library's terms (the cause is both in the text, so that a log line is
//! whole, and the `source`); what a user should do about it (a flag, a
//! command) is the binary's business (`src/cli/advice.rs`).

use std::path::PathBuf;

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No endpoint answered (connection refused, timeout, no leader...).
    #[error("no etcd answered at {endpoints} ({last})")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The last endpoint's failure.
        #[source]
        last: EndpointError,
    },
    /// A TLS handshake failed: the certificate is not trusted or not valid
    /// for the endpoint.
    #[error("tls handshake with {endpoint} failed: {source}")]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// The transport error (rustls' reason, e.g. invalid peer
        /// certificate: UnknownIssuer).
        #[source]
        source: Box<ureq::Error>,
    },
    /// etcd answered with an error of its own.
    #[error("etcd at {endpoint} refused {path}: {message} (code {code})")]
    Etcd {
        /// The endpoint that answered.
        endpoint: String,
        /// The gateway path requested.
        path: String,
        /// etcd's gRPC status code.
        code: i64,
        /// etcd's message.
        message: String,
    },
    /// Authentication failed: wrong user or password.
    #[error("etcd authentication as {user:?} failed: {message}")]
    Auth {
        /// The user name given.
        user: String,
        /// etcd's message.
        message: String,
    },
    /// An HTTP status without an etcd error body (a proxy, or not an etcd at all).
    #[error("{endpoint}{path} answered HTTP {status} without an etcd error")]
    Status {
        /// The endpoint that answered.
        endpoint: String,
        /// The gateway path requested.
        path: String,
        /// The HTTP status.
        status: u16,
    },
    /// The answer could not be decoded.
    #[error("undecodable answer from {endpoint}{path}: {source}")]
    Decode {
        /// The endpoint that answered.
        endpoint: String,
        /// The gateway path requested.
        path: String,
        /// What was wrong with it.
        #[source]
        source: serde_json::Error,
    },
    /// The answer was larger than the client reads (8 MiB).
    #[error("answer from {endpoint}{path} is over the {limit}-byte limit")]
    TooLarge {
        /// The endpoint that answered.
        endpoint: String,
        /// The gateway path requested.
        path: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The configuration lists no endpoint.
    #[error("no etcd endpoint given")]
    NoEndpoint,
    /// An endpoint is not an `http://` or `https://` URL.
    #[error("etcd endpoint {0:?} is not an http:// or https:// URL")]
    BadEndpoint(String),
    /// The CA file could not be read.
    #[error("cannot read the CA file {}: {source}", path.display())]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA file is not PEM, or holds no certificate.
    #[error("CA file {} {problem}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it: "is not valid PEM: ..." or "holds no certificate".
        problem: String,
    },
    /// A client thread (the watch) could not be started.
    #[error("cannot start the etcd {name} thread: {source}")]
    Thread {
        /// What the thread does.
        name: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why one endpoint gave no answer (the next one was tried); the last one
/// is the source of [`Error::Unreachable`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Connecting or the request failed (refused, timed out...).
    #[error("{endpoint}: {source}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// ureq's error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The member answered that it cannot serve now (no leader, leader
    /// changed, timed out).
    #[error("{endpoint}: {message}")]
    Unavailable {
        /// The endpoint.
        endpoint: String,
        /// etcd's message.
        message: String,
    },
    /// The watch request was answered with an HTTP error.
    #[error("{endpoint}: HTTP {status}: {body}")]
    Status {
        /// The endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The answer's body, trimmed.
        body: String,
    },
}

/// What an etcd refusal ([`Error::Etcd`]) means, from its gRPC code and,
/// where etcd gives several meanings one code, its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The member cannot serve now (no leader, leader changed, timed out):
    /// another endpoint may.
    Unavailable,
    /// The lease does not exist (expired, revoked, or etcd lost its data).
    LeaseNotFound,
    /// The auth token is invalid or expired: authenticate again.
    InvalidToken,
    /// The answer is over the gateway's message limit.
    TooLarge,
    /// Anything else.
    Other,
}

/// gRPC status codes the gateway reports.
const GRPC_DEADLINE_EXCEEDED: i64 = 4;
const GRPC_NOT_FOUND: i64 = 5;
const GRPC_RESOURCE_EXHAUSTED: i64 = 8;
const GRPC_UNAVAILABLE: i64 = 14;
const GRPC_UNAUTHENTICATED: i64 = 16;

impl Refusal {
    /// Classifies one refusal. etcd's messages are checked too because
    /// some meanings share a code (a missing user name is `InvalidArgument`
    /// like a wrong password) and the gateway of older releases reports
    /// some refusals with code 2 (`Unknown`).
    pub fn of(code: i64, message: &str) -> Refusal {
        let says = |text: &str| message.contains(text);
        if code == GRPC_UNAVAILABLE
            || code == GRPC_DEADLINE_EXCEEDED
            || says("no leader")
            || says("leader changed")
            || says("request timed out")
        {
            Refusal::Unavailable
        } else if says("lease not found") {
            Refusal::LeaseNotFound
        } else if code == GRPC_UNAUTHENTICATED
            || says("invalid auth token")
            || says("user name is empty")
        {
            Refusal::InvalidToken
        } else if code == GRPC_RESOURCE_EXHAUSTED || says("larger than max") {
            Refusal::TooLarge
        } else if code == GRPC_NOT_FOUND && says("lease") {
            Refusal::LeaseNotFound
        } else {
            Refusal::Other
        }
    }
}

impl Error {
    /// True when no endpoint could be reached (as opposed to etcd refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Tls { .. })
    }

    /// What etcd's refusal means; `None` when etcd did not refuse.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::Etcd { code, message, .. } => Some(Refusal::of(*code, message)),
            _ => None,
        }
    }

    /// True when the answer was too large to read: over 8 MiB here,
    /// or over the gateway's own message limit (gRPC `RESOURCE_EXHAUSTED`).
    pub fn is_too_large(&self) -> bool {
        matches!(self, Error::TooLarge { .. }) || self.refusal() == Some(Refusal::TooLarge)
    }

    /// True when etcd says the lease does not exist.
    pub fn is_lease_not_found(&self) -> bool {
        self.refusal() == Some(Refusal::LeaseNotFound)
    }
}

/// Result alias of the etcd client.
pub type Result<T, E = Error> = std::result::Result<T, E>;
