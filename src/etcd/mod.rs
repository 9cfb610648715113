//! A small synchronous client for etcd's v3 HTTP/JSON gateway.
//!
//! Built on `ureq`, like a tiny ureq-style client: a [`Config`] built once,
//! one [`Error`] enum, a handful of methods on a cheap-to-clone [`Client`].
//! Several endpoints may be given: a connection error, a timeout, or a
//! member without a leader moves on to the next one. Every request has a
//! timeout from the config; a dead endpoint costs at most the connect
//! timeout. With a user and password the client authenticates and renews
//! its token when etcd calls it invalid; `https://` endpoints use rustls,
//! trusting `Config::ca_file` when given.
//!
//! This is the only module that speaks to etcd.
//!
//! ```no_run
//! use piratebay_sync::etcd::{Client, Config};
//!
//! let client = Client::new(Config::new(["http://127.0.0.1:2379"]))?;
//! let lease = client.lease_grant(10)?;
//! client.put(b"/piratebay/peers/x", b"{}", Some(lease.id))?;
//! for kv in client.get_prefix(b"/piratebay/peers/")?.kvs {
//!     println!("{}", kv.key_str());
//! }
//! client.lease_revoke(lease.id)?;
//! # Ok::<(), piratebay_sync::etcd::Error>(())
//! ```

mod client;
mod codec;
mod config;
mod error;
mod kv;
mod lease;
mod watch;

pub use client::Client;
pub use codec::KeyValue;
pub use config::{Config, DEFAULT_ENDPOINT};
pub use error::{EndpointError, Error, Refusal, Result};
pub use kv::Listing;
pub use lease::{Lease, LeaseId, LeaseTtl};
pub use watch::{WatchEvent, Watcher, WATCH_IDLE};
