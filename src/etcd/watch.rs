//! Watching a prefix: the streaming `/v3/watch`, read line by line on its own thread.
//!
//! The thread first reads the whole prefix (a [`WatchEvent::Snapshot`]),
//! then watches from the next revision on one stream that stays open
//! while nothing changes: an idle peer costs etcd one watch stream, not a
//! request a second. The stream is read with a long idle timeout
//! ([`WATCH_IDLE`]), so a connection that died silently (a host gone
//! without a reset) is noticed and the watch reopened from the next unseen
//! revision, so no event is lost. The gateway cannot cancel a watch (etcd
//! #12333): stopping shuts the stream's own `ureq` agent down, which
//! interrupts the blocked read at once. A stream that ends otherwise
//! (closed, an error line) is reopened after a backoff that grows while
//! streams keep failing. A watch that etcd cancels because the revision
//! was compacted, or any error that may have lost events, is followed by a
//! fresh snapshot instead.
//!
//! Streams open on the endpoint the client used last
//! ([`Client::endpoint_order`]) and record the one that answered, so a
//! dead endpoint costs one connect timeout, not one per reopen. Every
//! watch sends `Grpc-Metadata-hasleader: true`, so a member that lost
//! quorum closes the stream instead of staying silent (etcd #10819).

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use serde_json::json;

use super::client::is_token_error;
use super::codec::{b64, prefix_range_end, KeyValue, WatchLine};
use super::{Client, EndpointError, Error, Result};

/// How long a watch stream may stay silent before it is reopened: how late
/// a connection that died without a reset is noticed. An idle watch costs
/// etcd one request per this (the lease renewals cost one per TTL/3).
/// Stopping does not wait for it.
pub const WATCH_IDLE: Duration = Duration::from_secs(30);

/// Longest line accepted from a watch stream.
const MAX_LINE: u64 = 8 * 1024 * 1024;

/// Backoff after a failed attempt, doubled up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Everything under the prefix at `revision`: replace what you had. Sent
    /// first, and again whenever continuity was lost (compaction).
    Snapshot {
        /// The key-value pairs under the prefix.
        kvs: Vec<KeyValue>,
        /// The revision they were read at.
        revision: i64,
    },
    /// A key was created or changed.
    Put(KeyValue),
    /// A key was deleted (or its lease expired).
    Delete {
        /// The key.
        key: Vec<u8>,
        /// The revision of the deletion.
        revision: i64,
    },
}

/// A running watch. Dropping it stops and joins its thread.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    wake: Sender<()>,
    /// The stream's agent: shutting it down interrupts a blocked read.
    agent: ureq::Agent,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Stops the watch and waits for its thread: at once, unless it is
    /// taking a snapshot (at most the client's request timeout).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.try_send(());
        self.agent.clone().shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Client {
    /// Watches every key under `prefix`, calling `on_event` on a dedicated
    /// thread for each change, starting with a snapshot.
    pub fn watch_prefix<F>(&self, prefix: &[u8], on_event: F) -> Result<Watcher>
    where
        F: FnMut(WatchEvent) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, woken) = crossbeam_channel::bounded(1);
        let agent = self.stream_agent(WATCH_IDLE);
        let state = WatchLoop {
            client: self.clone(),
            agent: agent.clone(),
            prefix: prefix.to_vec(),
            stop: stop.clone(),
            woken,
            on_event,
        };
        let thread = std::thread::Builder::new()
            .name("pbs-etcd-watch".into())
            .spawn(move || state.run())
            .map_err(|source| Error::Thread {
                name: "watch",
                source,
            })?;
        Ok(Watcher {
            stop,
            wake,
            agent,
            thread: Some(thread),
        })
    }
}

struct WatchLoop<F> {
    client: Client,
    agent: ureq::Agent,
    prefix: Vec<u8>,
    stop: Arc<AtomicBool>,
    woken: Receiver<()>,
    on_event: F,
}

/// Why a stream ended.
enum StreamEnd {
    /// Silent for [`WATCH_IDLE`] (or stopping): reopen from the next
    /// revision at once.
    Idle,
    /// Closed, or an error from etcd: reopen from the next revision after
    /// a backoff.
    Closed,
    /// Continuity lost: take a fresh snapshot.
    Resync,
}

impl<F: FnMut(WatchEvent)> WatchLoop<F> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps for `d` unless told to stop. Returns true when stopping.
    fn pause(&self, d: Duration) -> bool {
        let _ = self.woken.recv_timeout(d);
        self.stopped()
    }

    fn run(mut self) {
        let mut next: Option<i64> = None;
        let mut backoff = BACKOFF_MIN;
        let mut failing = false;
        // Backoff between streams that end early (closed, refused).
        let mut reopen_backoff = BACKOFF_MIN;
        while !self.stopped() {
            let from = match next {
                Some(rev) => rev,
                None => match self.client.get_prefix(&self.prefix) {
                    Ok(listing) => {
                        let rev = listing.revision;
                        (self.on_event)(WatchEvent::Snapshot {
                            kvs: listing.kvs,
                            revision: rev,
                        });
                        next = Some(rev + 1);
                        rev + 1
                    }
                    Err(e) => {
                        if self.failed(&e, &mut failing, &mut backoff) {
                            return;
                        }
                        continue;
                    }
                },
            };
            match self.open(from) {
                Ok(reader) => {
                    if failing {
                        log::info!("watch on {} resumed", self.prefix_str());
                        failing = false;
                    }
                    backoff = BACKOFF_MIN;
                    let opened = std::time::Instant::now();
                    match self.read_stream(reader, &mut next) {
                        StreamEnd::Idle => reopen_backoff = BACKOFF_MIN,
                        StreamEnd::Resync => next = None,
                        StreamEnd::Closed => {
                            // A stream that lasted is a normal end (a
                            // member restarting); streams that keep ending
                            // at once must not hammer etcd.
                            if opened.elapsed() >= WATCH_IDLE {
                                reopen_backoff = BACKOFF_MIN;
                            }
                            if self.pause(reopen_backoff) {
                                return;
                            }
                            reopen_backoff = (reopen_backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                }
                Err(e) => {
                    if self.failed(&e, &mut failing, &mut backoff) {
                        return;
                    }
                }
            }
        }
    }

    /// Logs the first failure of a run, waits out the backoff and doubles
    /// it. Returns true when the watch is being stopped.
    fn failed(&self, e: &Error, failing: &mut bool, backoff: &mut Duration) -> bool {
        if !*failing {
            log::warn!("watch on {}: {e}; retrying", self.prefix_str());
            *failing = true;
        }
        if self.pause(*backoff) {
            return true;
        }
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        false
    }

    fn prefix_str(&self) -> String {
        String::from_utf8_lossy(&self.prefix).into_owned()
    }

    /// Opens a watch stream from revision `from` on the first endpoint that
    /// answers, the one that answered last first.
    fn open(&self, from: i64) -> Result<impl Read + use<F>> {
        let body = json!({ "create_request": {
            "key": b64(&self.prefix),
            "range_end": b64(&prefix_range_end(&self.prefix)),
            "start_revision": from.to_string(),
        }});
        let token = self.client.token_for("/v3/watch")?;
        let mut last = None;
        crate::metrics::ETCD_WATCH_OPENS.inc();
        for (i, ep) in self.client.endpoint_order() {
            let mut req = self
                .agent
                .post(format!("{ep}/v3/watch"))
                .header("Content-Type", "application/json")
                .header("Grpc-Metadata-hasleader", "true");
            if let Some(t) = &token {
                req = req.header("Authorization", t.as_str());
            }
            match req.send(body.to_string().as_bytes()) {
                Ok(resp) if resp.status() == 200 => {
                    self.client.set_preferred(i);
                    return Ok(resp.into_body().into_reader());
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.into_body().read_to_string().unwrap_or_default();
                    if is_token_error(&body) {
                        self.client.invalidate_token();
                    }
                    last = Some(EndpointError::Status {
                        endpoint: ep.to_string(),
                        status: status.as_u16(),
                        body: body.trim().to_string(),
                    });
                }
                Err(e) => {
                    last = Some(EndpointError::Transport {
                        endpoint: ep.to_string(),
                        source: Box::new(e),
                    })
                }
            }
        }
        match last {
            Some(last) => Err(Error::Unreachable {
                endpoints: self.client.endpoints().join(","),
                last,
            }),
            None => Err(Error::NoEndpoint),
        }
    }

    fn read_stream(&mut self, reader: impl Read, next: &mut Option<i64>) -> StreamEnd {
        let mut lines = BufReader::new(reader.take(u64::MAX));
        let mut line = Vec::new();
        loop {
            if self.stopped() {
                return StreamEnd::Idle;
            }
            line.clear();
            match (&mut lines).take(MAX_LINE).read_until(b'\n', &mut line) {
                Ok(0) => return StreamEnd::Closed,
                Err(e) if is_idle_timeout(&e) => return StreamEnd::Idle,
                Err(e) => {
                    log::debug!("watch on {}: {e}", self.prefix_str());
                    return StreamEnd::Closed;
                }
                Ok(_) => {}
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed: WatchLine = match serde_json::from_slice(&line) {
                Ok(p) => p,
                Err(e) => {
                    log::warn!(
                        "watch on {}: undecodable line ({e}); resyncing",
                        self.prefix_str()
                    );
                    return StreamEnd::Resync;
                }
            };
            if let Some(err) = parsed.error {
                if is_token_error(&err.message) {
                    self.client.invalidate_token();
                }
                log::debug!(
                    "watch on {}: {} (code {})",
                    self.prefix_str(),
                    err.message,
                    err.grpc_code
                );
                return StreamEnd::Closed;
            }
            let Some(result) = parsed.result else {
                continue;
            };
            if result.created {
                log::debug!(
                    "watch on {} open from revision {:?}",
                    self.prefix_str(),
                    next
                );
            }
            if result.canceled {
                if result.compact_revision > 0 {
                    log::info!(
                        "watch on {}: revision compacted to {}; resyncing",
                        self.prefix_str(),
                        result.compact_revision
                    );
                    return StreamEnd::Resync;
                }
                log::debug!(
                    "watch on {} cancelled: {}",
                    self.prefix_str(),
                    result.cancel_reason
                );
                return StreamEnd::Closed;
            }
            for ev in result.events {
                let rev = ev.kv.mod_revision;
                if ev.kind.as_deref() == Some("DELETE") {
                    (self.on_event)(WatchEvent::Delete {
                        key: ev.kv.key,
                        revision: rev,
                    });
                } else {
                    (self.on_event)(WatchEvent::Put(ev.kv));
                }
                if rev > 0 {
                    *next = Some(rev + 1);
                }
            }
        }
    }
}

/// Whether a read error is the stream's idle timeout (ureq wraps its
/// timeouts in an `io::Error` of kind `Other`).
fn is_idle_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}
