//! The etcd client's one error type.

/// What went wrong talking to etcd. Messages are one line and say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No endpoint answered (connection refused, timeout, TLS failure...).
    #[error(
        "no etcd answered at {endpoints} ({last}); start one (`make run` starts a local etcd, \
         or `docker compose up -d etcd`) or point --etcd / PIRATEBAY_ETCD at your cluster"
    )]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The last transport error.
        last: String,
    },
    /// A TLS handshake failed: the certificate is not trusted or not valid
    /// for the endpoint.
    #[error(
        "TLS to {endpoint} failed ({reason}); if etcd uses its own CA, pass its certificate \
         with --etcd-ca FILE (PIRATEBAY_ETCD_CA)"
    )]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// rustls' reason (e.g. invalid peer certificate: UnknownIssuer).
        reason: String,
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
    #[error(
        "etcd authentication as {user:?} failed: {message}; check --etcd-user / --etcd-password"
    )]
    Auth {
        /// The user name given.
        user: String,
        /// etcd's message.
        message: String,
    },
    /// An HTTP status without an etcd error body (a proxy, or not an etcd at all).
    #[error("{endpoint}{path} answered HTTP {status}; is this an etcd v3 endpoint?")]
    Status {
        /// The endpoint that answered.
        endpoint: String,
        /// The gateway path requested.
        path: String,
        /// The HTTP status.
        status: u16,
    },
    /// The answer could not be decoded.
    #[error("undecodable answer from {endpoint}{path}: {reason}")]
    Decode {
        /// The endpoint that answered.
        endpoint: String,
        /// The gateway path requested.
        path: String,
        /// What was wrong with it.
        reason: String,
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
    /// The client configuration is unusable (bad URL, unreadable CA file...).
    #[error("etcd client configuration: {0}")]
    Config(String),
}

impl Error {
    /// True when no endpoint could be reached (as opposed to etcd refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Tls { .. })
    }

    /// True when the answer was too large to read: over 8 MiB here,
    /// or over the gateway's own message limit (gRPC `RESOURCE_EXHAUSTED`).
    pub fn is_too_large(&self) -> bool {
        match self {
            Error::TooLarge { .. } => true,
            Error::Etcd { code, message, .. } => *code == 8 || message.contains("larger than max"),
            _ => false,
        }
    }
}

/// Result alias of the etcd client.
pub type Result<T, E = Error> = std::result::Result<T, E>;
