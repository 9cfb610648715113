//! # piratebay-sync
//!
//! Peer-to-peer file sharing for a local network, in synchronous Rust.
//!
//! Every peer shares a directory and is a client and a server at once. Peers
//! register their addresses in etcd under a lease that a dedicated thread
//! renews; clients list the peers, learn which peers hold which files, and
//! download a file by its SHA1 from several peers at once, verifying every
//! piece and the whole file. The SHA1 the caller gives is the root of trust:
//! the piece list a peer sends is checked against it, and every piece
//! against the piece list, so a lying peer costs time, never a wrong byte.
//!
//! The library has no async runtime: every call blocks, every thread it
//! starts is named, owned by a handle that stops and joins it (on drop
//! too), so it embeds in any ordinary program. It needs Linux and an etcd
//! (v3.4 or later) reachable over its HTTP/JSON gateway.
//!
//! ## Run a peer
//!
//! [`Peer::start`] indexes a directory (in the background), serves it over
//! HTTP/1.1 and registers in etcd; dropping the [`Peer`] (or
//! [`Peer::shutdown`]) unregisters and stops it.
//!
//! ```no_run
//! use std::time::Duration;
//! use piratebay_sync::{etcd, Peer, PeerConfig};
//!
//! let mut cfg = PeerConfig::new("/srv/share", "/var/lib/piratebay-sync");
//! cfg.etcd = etcd::Config::new(["http://10.0.0.5:2379"]);
//! cfg.listen = "0.0.0.0:7070".parse()?;
//! let peer = Peer::start(cfg)?;
//! peer.wait_registered(Duration::from_secs(5));
//! println!("peer {} at {:?}", peer.id(), peer.advertised_addrs());
//! // ... serve for as long as the program wants, then:
//! peer.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## List the peers
//!
//! ```no_run
//! use piratebay_sync::etcd::{Client, Config};
//! use piratebay_sync::{list_peers, DEFAULT_NAMESPACE};
//!
//! let client = Client::new(Config::new(["http://127.0.0.1:2379"]))?;
//! for peer in list_peers(&client, DEFAULT_NAMESPACE)? {
//!     println!("{} at {:?}", peer.record.id, peer.record.addrs);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## List the files of the network
//!
//! Every peer's file list, asked in parallel and merged by SHA1
//! ([`Catalog`]); names come from peers and are untrusted
//! ([`text::escape`] before printing them).
//!
//! ```no_run
//! use piratebay_sync::etcd::{Client, Config};
//! use piratebay_sync::{text, Catalog, CatalogOptions, NetworkHolders, DEFAULT_NAMESPACE};
//!
//! let client = Client::new(Config::new(["http://127.0.0.1:2379"]))?;
//! let network = NetworkHolders::new(client, DEFAULT_NAMESPACE, Catalog::new(CatalogOptions::default()));
//! let refresh = network.refresh()?;
//! for file in &refresh.files {
//!     println!("{} {:>12} {} ({} peers)", file.sha1, file.size, text::escape(&file.name), file.peers);
//! }
//! if !refresh.failed.is_empty() {
//!     eprintln!("{} peers could not be asked: the list may be short", refresh.failed.len());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Download a file
//!
//! A [`Downloader`] fetches from every holder at once, resumes from
//! `<output>.part`, and renames the verified file into place; build it once
//! (from [`DownloadOptions`]) and call it for each file.
//!
//! ```no_run
//! use piratebay_sync::etcd::{Client, Config};
//! use piratebay_sync::{Catalog, CatalogOptions, Downloader, NetworkHolders, Progress};
//!
//! let client = Client::new(Config::new(["http://127.0.0.1:2379"]))?;
//! let holders = NetworkHolders::new(client, "piratebay", Catalog::new(CatalogOptions::default()));
//! let sha1 = "79c9d9035a15697674dfcb213cbf6223e5cb27ac".parse()?;
//! let report = |p: &Progress| eprintln!("{}/{} bytes", p.done, p.size);
//! // Built once: its options, rate limit and connection pool serve every call.
//! let downloader = Downloader::default();
//! let summary = downloader.download(sha1, "big.bin", &holders, Some(&report))?;
//! println!("{} bytes from {} peers", summary.bytes, summary.peers_used.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Many files at once: [`Downloader::download_many`]. Holders from elsewhere: any
//! [`HolderSource`] (a `Vec<Holder>` is one).
//!
//! ## The rest of the API
//!
//! - [`Index`]: the hashed, persisted, live index of a directory, without
//!   a server or etcd ([`Peer::index`] is the peer's own).
//! - [`Server`] and [`FileSource`]: the peer's HTTP server over files of
//!   your own; with a [`Registration`] the network finds them.
//! - [`PeerCache`]: the peers, kept current by an etcd watch.
//! - [`etcd`]: the small synchronous etcd client all of this uses.
//! - [`protocol`]: the peer API's routes and JSON bodies.
//! - [`status`]: what a running peer reports ([`Peer::status`], `/v1/status`).
//!
//! `ARCHITECTURE.md` explains how it works inside; `SECURITY.md` what a
//! hostile peer or etcd user can and cannot do.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Every type reachable from the public API can be named from the crate
// root or a public module.
#![deny(unnameable_types)]

mod catalog;
mod chain;
mod client;
mod cursor;
mod digest;
mod discovery;
pub mod etcd;
mod fanout;
mod fetch;
mod hex;
mod holders;
mod http;
mod index;
mod kept;
mod metrics;
mod partial;
mod peer;
mod policy;
pub mod protocol;
mod seeding;
mod server;
#[cfg(test)]
mod sim;
pub mod status;
pub mod text;
mod version;
mod wake;

// Run a peer.
pub use peer::{Peer, PeerConfig, PeerError};
// The peers of the network.
pub use discovery::{
    list_peers, parse_advertise, DiscoveryError, PeerCache, PeerInfo, PeerRecord, Registration,
    RegistrationConfig, DEFAULT_NAMESPACE, DEFAULT_TTL,
};
// The files of the network.
pub use catalog::{
    Catalog, CatalogOptions, Lookup, NetworkFile, NetworkHolders, NotFound, ProbeOptions,
    ProbedHolders, Refresh, CACHE_FILE,
};
// Downloads.
pub use fetch::{
    parse_rate, resolve_output, BatchItem, BatchOptions, BatchProgress, DownloadOptions,
    Downloader, FetchError, HolderFailure, HolderFault, HolderFaultKind, ParseRateError, Progress,
    ProgressFn, Summary, DEFAULT_CONCURRENCY,
};
// Who holds a file: what the download asks, what the catalog answers.
pub use holders::{Holder, HolderSource, HoldersError};
// The index of a shared directory.
pub use index::{
    Index, IndexError, IndexEvent, IndexEvents, IndexOptions, IndexStats, IndexedFile,
};
// Serving files of your own.
pub use server::{
    FileSource, HaveNotifier, OpenedFile, Page, PageBody, Server, ServerConfig, ServerError,
    UploadCounter,
};
// Names of files.
pub use digest::{ParseDigestError, Sha1Digest};
// Verifying pieces.
pub use chain::ChainValue;
// The version peers publish.
pub use version::VERSION;

/// The README's Rust examples, compiled and checked by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
