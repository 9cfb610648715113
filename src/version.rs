//! The crate's version string, in one leaf module so that the etcd client
//! (its user agent), the wire code (the `Server` header) and the peer record
//! name it without reaching up to the crate root.

/// The version string peers publish in their etcd record.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
