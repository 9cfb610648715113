//! A small synchronous client for etcd's v3 HTTP/JSON gateway.
//!
//! Built on one `ureq::Agent`. Several endpoints may be given: a connection
//! error or timeout moves on to the next one.

mod config;

pub use config::Config;
