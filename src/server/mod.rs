//! The peer server: HTTP/1.1 with keep-alive and `Range` over non-blocking
//! sockets, served fairly by a fixed pool of worker threads.
//!
//! The server does not know about the index, the status page or the
//! network: it serves whatever a [`FileSource`] gives it, asks it for the
//! pages beside the files ([`Page`]: the peer renders its status page
//! there), and tells it which file bodies it sends
//! ([`FileSource::start_upload`], [`UploadCounter`]). The running peer
//! implements it over the index; tests implement it over plain files. It
//! sits below everything but the wire code (`crate::http`), the protocol's
//! bodies and the process counters (`crate::metrics`).
//!
//! How a connection moves: the accept thread admits it under the caps
//! (total and per client address) and parks it; the poll thread's epoll
//! set watches every parked connection and, when its socket is ready,
//! queues it in the fair queue (round robin over client addresses, FIFO
//! within one); a worker takes it and runs one step (read the head and
//! answer, or send up to a slice of a body), after which the connection
//! parks again, goes to the back of the queue, or closes. No thread ever
//! waits on one client, so slow readers, dripping heads and idle
//! keep-alive connections cost a socket each, never a worker, and a new
//! client waits for at most one step per client ahead of it.
//!
//! - `pool`: [`Server`], its threads, start and shutdown.
//! - `accept`: the accept loop, the caps, the `503` refusals.
//! - `limits`: client keys and open-connection counts, the fd limit.
//! - `park`: the parking lot (epoll) and the deadlines.
//! - `fair`: the fair queue of connections ready to run.
//! - `conn`: one connection's state machine (deadlines, keep-alive, access log).
//! - `handler`: request to response, through the [`FileSource`].
//! - `body`: file bodies by `sendfile`.
//!
//! Threads: `<thread_name>-accept`, `<thread_name>-poll` and
//! `<thread_name>-w<i>`, all joined by [`Server::shutdown`] or drop.
//! Locks, each held only to insert, remove or pick (never across client
//! I/O) and never two at once: the parking map (also across the
//! `epoll_ctl` that arms a socket), the fair queue, the admission counts.
//! The catalog cache's build lock is the one held with others: while one
//! new catalog body is serialized, the source's own locks and then the
//! cache's `current` or `gzip` are taken under it.
//!
//! Zero-copy: file bodies leave by `sendfile(2)`; `strace -f -e
//! trace=sendfile,read,sendto` on the test binary shows
//! `sendfile(<sock>, <file>, [off], n)` and no `read` of the file (details
//! and why `std::io::copy` is not used in `body`).

mod accept;
mod body;
mod config;
mod conn;
mod error;
mod fair;
mod handler;
mod limits;
mod park;
mod pool;
mod shared;
mod slots;

pub use config::ServerConfig;
pub use error::ServerError;
pub use pool::{HaveNotifier, Server};

use std::net::IpAddr;
use std::sync::Arc;

use crate::digest::Sha1Digest;
use crate::protocol::{Bitfield, FileList, Health, PieceList};

/// What the server serves.
pub trait FileSource: Send + Sync + 'static {
    /// The current index generation (cheap: used for `ETag` and `304`).
    fn generation(&self) -> u64;
    /// The whole catalog at the current generation.
    fn file_list(&self) -> FileList;
    /// The JSON of [`file_list`](Self::file_list) and its generation (the
    /// catalog body); a source may write it faster than serde does.
    fn file_list_json(&self) -> Result<(u64, Vec<u8>), serde_json::Error> {
        let list = self.file_list();
        Ok((list.generation, serde_json::to_vec(&list)?))
    }
    /// The piece hashes of a served file; `None` if it is not served.
    fn pieces(&self, sha1: &Sha1Digest) -> Option<PieceList>;
    /// The pieces held of a served file (all of them unless the file is
    /// still being downloaded); `None` if it is not served.
    fn have(&self, sha1: &Sha1Digest) -> Option<Bitfield> {
        self.pieces(sha1).map(|p| Bitfield::full(p.len()))
    }
    /// A hint for a downloader of a file this peer holds whole: the pieces
    /// it offers that downloader (a few of the least uploaded, different
    /// from those just offered to others; sent after the `have` bitmap and
    /// with each piece). `None`: no hint, and for a file of more than
    /// `max_pieces` pieces (nothing is marked offered then).
    fn fresh(&self, _sha1: &Sha1Digest, _max_pieces: usize) -> Option<Bitfield> {
        None
    }
    /// For a file still being downloaded here: the id of that download
    /// (sent with `/have`, so the download recognizes itself).
    fn download_id(&self, _sha1: &Sha1Digest) -> Option<String> {
        None
    }
    /// While the first scan of the index runs: the files indexed so far
    /// (a `404` then says "not yet", so a lookup asks again). `None`: ready.
    fn indexing(&self) -> Option<u64> {
        None
    }
    /// Bytes `[start, start + len)` of a complete file are about to be sent.
    fn note_upload(&self, _sha1: &Sha1Digest, _start: u64, _len: u64) {}
    /// A `HEAD` of a complete file was answered `200`: a lookup found this
    /// peer holding it (the peer announces it in the swarm's tracker).
    fn note_asked(&self, _sha1: &Sha1Digest) {}
    /// Opens a file to send its bytes, after checking that it did not change
    /// on disk since it was indexed. `Ok(None)`: not served (unknown, or
    /// changed and dropped from the index).
    fn open(&self, sha1: &Sha1Digest) -> std::io::Result<Option<OpenedFile>>;
    /// The health report.
    fn health(&self) -> Health;
    /// A page beside the files (the status page, its JSON, `/metrics`),
    /// rendered by the source. `Ok(None)` (the default): no status page
    /// (`404`), and only the process counters in `/metrics`. An error is
    /// a bug (a body that does not encode): `500`.
    fn page(&self, _page: Page) -> Result<Option<PageBody>, serde_json::Error> {
        Ok(None)
    }
    /// A body of file `sha1` (named `name` here) starts going to `client`:
    /// what counts its bytes as they leave (dropped when the response
    /// ends). `None` (the default): not counted.
    fn start_upload(
        &self,
        _client: IpAddr,
        _sha1: &Sha1Digest,
        _name: &str,
    ) -> Option<Box<dyn UploadCounter>> {
        None
    }
}

/// The pages a [`FileSource`] may answer beside the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Page {
    /// `GET /`: the status page.
    Status,
    /// `GET /v1/status`: the status as JSON.
    StatusJson,
    /// `GET /metrics`: the process counters and the source's own values.
    Metrics,
}

/// A page rendered by a [`FileSource`]: sent with `Cache-Control:
/// no-store` and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageBody {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// More header fields (for HTML, a `Content-Security-Policy`).
    pub headers: Vec<(&'static str, String)>,
    /// The body: shared by the answers sending it (a source that renders
    /// a page once for many requests keeps one copy in memory, however
    /// slowly each connection reads).
    pub body: Arc<Vec<u8>>,
}

/// Counts the bytes of one file body as they leave the server (the
/// peer's upload sessions on its status page); dropped when the response
/// ends.
pub trait UploadCounter: Send {
    /// `n` more bytes sent.
    fn add(&self, n: u64);
}

/// A file opened for serving.
#[derive(Debug)]
pub struct OpenedFile {
    /// The open file, shared: a source may keep it open for the next
    /// requests, so its bytes are read at an offset (`sendfile` with an
    /// offset, `pread`), never by its position.
    pub file: Arc<std::fs::File>,
    /// Its size as indexed (and checked against the file).
    pub size: u64,
    /// The name to offer in `Content-Disposition`.
    pub name: String,
    /// For a file still being downloaded: the pieces held and the piece
    /// size. Only ranges inside held pieces are served. `None`: complete.
    pub held: Option<(Bitfield, u64)>,
}
