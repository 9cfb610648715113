//! # piratebay-sync
//!
//! Peer-to-peer file sharing for a local network, in synchronous Rust.
//!
//! Every peer shares a directory and is a client and a server at once. Peers
//! register their address in etcd under a lease that a dedicated thread
//! renews; clients list the peers, learn which peers hold which files, and
//! download a file by its SHA1 from several peers at once, verifying every
//! piece and the whole file.
//!
//! The library has no async runtime: every call blocks, every thread it starts
//! is owned by a handle that stops and joins it on drop, so it embeds in any
//! ordinary program.
//!
//! Downloading a file from a program, no runtime needed:
//!
//! ```no_run
//! use piratebay_sync::catalog::{Catalog, CatalogOptions, NetworkHolders};
//! use piratebay_sync::etcd::{Client, Config};
//! use piratebay_sync::fetch::{self, DownloadOptions};
//!
//! let client = Client::new(Config::new(["http://127.0.0.1:2379"]))?;
//! let holders = NetworkHolders::new(client, "piratebay", Catalog::new(CatalogOptions::default()));
//! let sha1 = "79c9d9035a15697674dfcb213cbf6223e5cb27ac".parse()?;
//! let report = |p: &fetch::Progress| eprintln!("{}/{} bytes", p.done, p.size);
//! let summary = fetch::download(&DownloadOptions::new(sha1, "big.bin"), &holders, Some(&report))?;
//! println!("{} bytes from {} peers", summary.bytes, summary.peers_used.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Code map (see `ARCHITECTURE.md`):
//!
//! - [`digest`]: the SHA1 value type that names files and pieces.
//! - [`etcd`]: a small synchronous client for etcd's v3 JSON gateway.
//! - [`discovery`]: peer registration under a renewed lease and the peer cache.
//! - [`index`]: the hashed, persisted, live index of the shared directory.
//! - [`http`]: the peer wire format (HTTP/1.1 parsing and writing, no I/O policy).
//! - [`server`]: the accept loop and worker pool that serve files.
//! - [`catalog`]: the network-wide file list, merged from every peer.
//! - [`fetch`]: the verified multi-source download.
//! - [`protocol`]: JSON bodies and routes of the peer API, shared by both sides.
//! - [`peer`]: a whole running peer (index + server + registration).
//! - [`status`]: what a peer shows of itself (the page at `/`, `/v1/status`).
//! - [`metrics`]: process-wide counters and the `/metrics` text.
//! - [`text`]: untrusted names escaped for a terminal.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod catalog;
pub mod digest;
pub mod discovery;
pub mod etcd;
mod fanout;
pub mod fetch;
pub mod http;
pub mod index;
pub mod metrics;
pub mod partial;
pub mod peer;
pub mod protocol;
pub mod seeding;
pub mod server;
pub mod status;
pub mod text;

pub use digest::Sha1Digest;

/// The version string peers publish in their etcd record.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
