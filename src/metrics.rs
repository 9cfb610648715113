//! Process-wide counters for `GET /metrics` (Prometheus text format 0.0.4).
//!
//! Counters and gauges are plain atomics in statics, so a hook in the
//! server, the etcd client or the registration thread is one line
//! (`metrics::SERVED_BYTES.add(n)`) and costs one atomic add. They count
//! for the whole process: a `serve` process runs one peer, so they are that
//! peer's; a program that runs several peers in one process sees their sum.
//! Values that belong to one peer (index, registration, peers, downloads
//! into the dataset) are read from its `StatusReport` when scraped and
//! passed to [`render`] as [`PeerGauge`]s.
//!
//! The metric names are listed in the README; [`render`] writes them all,
//! each with `# HELP` and `# TYPE`, checked by `promtool check metrics` in
//! the tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{const_mutex, Mutex};

/// A monotonic counter.
#[derive(Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// A value that goes up and down.
#[derive(Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Self {
        Gauge(AtomicI64::new(0))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes `n` away.
    pub fn sub(&self, n: usize) {
        self.0
            .fetch_sub(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// The current value (never below zero when printed).
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed).max(0)
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Gauge::new()
    }
}

/// Upper bounds (seconds) of the etcd latency histogram's buckets.
const LATENCY_BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram with fixed buckets (1 ms to 5 s).
#[derive(Debug)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; summed when printed).
    buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        #[allow(clippy::declare_interior_mutable_const)] // only used to build the array
        const ZERO: AtomicU64 = AtomicU64::new(0);
        Histogram {
            buckets: [ZERO; LATENCY_BOUNDS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// Bytes of file bodies sent (uploads, whole files and ranges).
pub static SERVED_BYTES: Counter = Counter::new();
/// Bytes of verified pieces that downloads wrote into this peer's dataset
/// (seen through their `.part.state`).
pub static RECEIVED_BYTES: Counter = Counter::new();
/// Client connections open now.
pub static CONNECTIONS_OPEN: Gauge = Gauge::new();
/// Connections ready and waiting for a worker.
pub static QUEUE_DEPTH: Gauge = Gauge::new();
/// Connections refused with `503` because the server was full.
pub static REFUSED_BUSY: Counter = Counter::new();
/// Connections refused with `503` because their client was at its cap.
pub static REFUSED_CLIENT_CAP: Counter = Counter::new();
/// Piece requests turned away at once because every upload slot was taken.
pub static SLOTS_REFUSED: Counter = Counter::new();
/// Upload slots freed at once because their download asked this partial
/// holder's bitmap with no answer in progress.
pub static SLOTS_RELEASED: Counter = Counter::new();
/// Piece requests of downloads in this process that a holder turned away
/// (its upload slots full): they asked another holder.
pub static SLOTS_TURNED_AWAY: Counter = Counter::new();
/// Lease keepalives that etcd accepted.
pub static LEASE_RENEWALS: Counter = Counter::new();
/// Registration attempts (grant, put or keepalive) that failed.
pub static LEASE_FAILURES: Counter = Counter::new();
/// Latency of requests to etcd (one logical request, failover included).
pub static ETCD_LATENCY: Histogram = Histogram::new();
/// Requests to etcd that failed.
pub static ETCD_ERRORS: Counter = Counter::new();
/// Watch streams opened on etcd (first opens and reopens).
pub static ETCD_WATCH_OPENS: Counter = Counter::new();
/// Swarm announcements this peer put in etcd (`discovery::tracker`).
pub static SWARM_ANNOUNCES: Counter = Counter::new();
/// Downloads into the dataset that finished (renamed into place).
pub static DOWNLOADS_COMPLETED: Counter = Counter::new();
/// Downloads into the dataset whose state vanished unfinished.
pub static DOWNLOADS_FAILED: Counter = Counter::new();
/// Pieces that downloads into the dataset verified and wrote.
pub static PIECES_VERIFIED: Counter = Counter::new();
/// Pieces that downloads run by this process rejected (bad SHA1).
pub static PIECES_REJECTED: Counter = Counter::new();

/// Requests answered, by route label and status code.
static REQUESTS: Mutex<BTreeMap<(&'static str, u16), u64>> = const_mutex(BTreeMap::new());

/// Counts one answered request (`route`: a label from
/// [`crate::http::route::label`]).
pub fn request(route: &'static str, status: u16) {
    *REQUESTS.lock().entry((route, status)).or_insert(0) += 1;
}

/// One value of one peer, written as a gauge after the process counters
/// (the peer's values come from its `StatusReport::gauges`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerGauge {
    /// The metric name (`pbs_...`).
    pub name: &'static str,
    /// Its `# HELP` text.
    pub help: &'static str,
    /// Its value now.
    pub value: u64,
}

/// Where one download into the peer's dataset got its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadSources {
    /// The file (hex).
    pub sha1: String,
    /// Bytes from complete holders (seeds).
    pub from_seeds: u64,
    /// Bytes from partial holders (the swarm).
    pub from_partials: u64,
}

/// The `Content-Type` of the `/metrics` body.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The whole `/metrics` body: the process counters, then `peer`'s gauges
/// (empty when there is no peer behind the server).
pub fn render(peer: &[PeerGauge]) -> String {
    render_with(peer, &[])
}

/// [`render`], plus one `pbs_download_source_bytes` sample per download
/// and source (`from="seed"` or `from="partial"`): whether the swarm was
/// used at all.
pub fn render_with(peer: &[PeerGauge], downloads: &[DownloadSources]) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let mut w = Writer { out: &mut out };
    w.one(
        "pbs_served_bytes_total",
        "counter",
        "Bytes of file bodies sent to clients.",
        SERVED_BYTES.get(),
    );
    w.one(
        "pbs_received_bytes_total",
        "counter",
        "Bytes of verified pieces written into this peer's dataset by downloads.",
        RECEIVED_BYTES.get(),
    );
    w.head(
        "pbs_http_requests_total",
        "counter",
        "HTTP requests answered, by route and status code.",
    );
    for ((route, code), n) in REQUESTS.lock().iter() {
        w.sample(
            "pbs_http_requests_total",
            &format!("route=\"{route}\",code=\"{code}\""),
            *n,
        );
    }
    w.one(
        "pbs_http_connections_open",
        "gauge",
        "Client connections open now.",
        CONNECTIONS_OPEN.get(),
    );
    w.one(
        "pbs_http_queue_depth",
        "gauge",
        "Connections ready and waiting for a worker thread.",
        QUEUE_DEPTH.get(),
    );
    w.head(
        "pbs_http_refused_total",
        "counter",
        "Connections refused with 503, by reason.",
    );
    w.sample(
        "pbs_http_refused_total",
        "reason=\"busy\"",
        REFUSED_BUSY.get(),
    );
    w.sample(
        "pbs_http_refused_total",
        "reason=\"client_cap\"",
        REFUSED_CLIENT_CAP.get(),
    );
    w.sample(
        "pbs_http_refused_total",
        "reason=\"upload_slots\"",
        SLOTS_REFUSED.get(),
    );
    w.one(
        "pbs_upload_slots_released_total",
        "counter",
        "Upload slots freed at once because their download asked this partial holder's bitmap instead of a piece.",
        SLOTS_RELEASED.get(),
    );
    w.one(
        "pbs_lease_renewals_total",
        "counter",
        "Lease keepalives accepted by etcd.",
        LEASE_RENEWALS.get(),
    );
    w.one(
        "pbs_lease_failures_total",
        "counter",
        "Registration attempts (lease grant, put, keepalive) that failed.",
        LEASE_FAILURES.get(),
    );
    w.histogram(
        "pbs_etcd_request_duration_seconds",
        "Latency of requests to etcd, endpoint failover included.",
        &ETCD_LATENCY,
    );
    w.one(
        "pbs_etcd_request_errors_total",
        "counter",
        "Requests to etcd that failed.",
        ETCD_ERRORS.get(),
    );
    w.one(
        "pbs_etcd_watch_opens_total",
        "counter",
        "Watch streams opened on etcd (an idle peer keeps one open).",
        ETCD_WATCH_OPENS.get(),
    );
    w.one(
        "pbs_swarm_announces_total",
        "counter",
        "Swarm announcements put in etcd (a file this peer downloads or seeds to a swarm).",
        SWARM_ANNOUNCES.get(),
    );
    w.one(
        "pbs_downloads_completed_total",
        "counter",
        "Downloads into the dataset that finished.",
        DOWNLOADS_COMPLETED.get(),
    );
    w.one(
        "pbs_downloads_failed_total",
        "counter",
        "Downloads into the dataset whose state vanished before they finished.",
        DOWNLOADS_FAILED.get(),
    );
    w.one(
        "pbs_pieces_verified_total",
        "counter",
        "Pieces verified and written by downloads into the dataset.",
        PIECES_VERIFIED.get(),
    );
    w.one(
        "pbs_download_slots_turned_away_total",
        "counter",
        "Piece requests of downloads in this process turned away by a holder whose upload slots were full.",
        SLOTS_TURNED_AWAY.get(),
    );
    w.one(
        "pbs_pieces_rejected_total",
        "counter",
        "Pieces rejected for a bad SHA1 by downloads run in this process.",
        PIECES_REJECTED.get(),
    );
    for g in peer {
        w.one(g.name, "gauge", g.help, g.value);
    }
    if !downloads.is_empty() {
        let name = "pbs_download_source_bytes";
        w.head(
            name,
            "gauge",
            "Bytes a download into the dataset took from seeds (complete holders) and from partial holders.",
        );
        for d in downloads {
            for (from, v) in [("seed", d.from_seeds), ("partial", d.from_partials)] {
                w.sample(name, &format!("sha1=\"{}\",from=\"{from}\"", d.sha1), v);
            }
        }
    }
    out
}

/// Writes metric families into a string.
struct Writer<'a> {
    out: &'a mut String,
}

impl Writer<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        self.sample(name, "", value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.head(name, "histogram", help);
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BOUNDS.iter().zip(&h.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            self.sample(
                &format!("{name}_bucket"),
                &format!("le=\"{bound}\""),
                cumulative,
            );
        }
        let count = h.count();
        self.sample(&format!("{name}_bucket"), "le=\"+Inf\"", count);
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        self.sample(&format!("{name}_sum"), "", sum);
        self.sample(&format!("{name}_count"), "", count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_the_count() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        Writer { out: &mut out }.histogram("x_seconds", "help", &h);
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.05\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n"), "{out}");
    }

    #[test]
    fn every_family_has_help_and_type() {
        request("health", 200);
        let out = render(&[]);
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                out.contains(&format!("# TYPE {family} ")),
                "no TYPE for {name}"
            );
        }
        assert!(out.contains("pbs_http_requests_total{route=\"health\",code=\"200\"}"));
    }

    #[test]
    fn each_download_shows_its_bytes_from_seeds_and_from_partial_holders() {
        let out = render_with(
            &[],
            &[DownloadSources {
                sha1: "ab".repeat(20),
                from_seeds: 7,
                from_partials: 9,
            }],
        );
        let sha1 = "ab".repeat(20);
        assert!(
            out.contains("# TYPE pbs_download_source_bytes gauge"),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "pbs_download_source_bytes{{sha1=\"{sha1}\",from=\"seed\"}} 7\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "pbs_download_source_bytes{{sha1=\"{sha1}\",from=\"partial\"}} 9\n"
            )),
            "{out}"
        );
    }
}
