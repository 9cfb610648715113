//! The swarm's policies as pure code: no I/O, no locks, no clock read
//! inside (the time is passed in), so that the peer's server, the download
//! and the swarm simulator (`src/sim/`, compiled for tests) run the very
//! same decisions.
//!
//! - [`host`]: which host an address is on (an IP, an IPv6 /64), for
//!   every per-host count.
//! - [`slots`]: upload slots, how many downloads a holder serves at once and
//!   which (BitTorrent's choking, without tit-for-tat).
//! - [`subset`]: which holders a download talks to (a bounded random
//!   subset per download, Kraken's pseudo-random regular graph, one vote
//!   per host).
//!
//! What a seed uploads (its super-seeding offers) is `crate::seeding`.

pub(crate) mod host;
pub(crate) mod slots;
pub(crate) mod subset;
