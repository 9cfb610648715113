//! The peer server: HTTP/1.1 with keep-alive and `Range` over non-blocking
//! sockets, served fairly by a fixed pool of worker threads.
//!
//! The server does not know about the index: it serves whatever a
//! [`FileSource`] gives it. The running peer implements it over the index;
//! tests implement it over plain files.
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
//! `epoll_ctl` that arms a socket), the fair queue, the admission counts,
//! and the catalog cache (its build lock is held while one new catalog
//! body is serialized).
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
pub use pool::Server;

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
        self.pieces(sha1).map(|p| Bitfield::full(p.pieces.len()))
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
    /// Opens a file to send its bytes, after checking that it did not change
    /// on disk since it was indexed. `Ok(None)`: not served (unknown, or
    /// changed and dropped from the index).
    fn open(&self, sha1: &Sha1Digest) -> std::io::Result<Option<OpenedFile>>;
    /// The health report.
    fn health(&self) -> Health;
    /// What the status page, `/v1/status` and the peer's part of
    /// `/metrics` show; `None` (the default): no status page, and only the
    /// process counters in `/metrics`.
    fn status(&self) -> Option<crate::status::StatusReport> {
        None
    }
}

/// A file opened for serving.
#[derive(Debug)]
pub struct OpenedFile {
    /// The open file, positioned at 0.
    pub file: std::fs::File,
    /// Its size as indexed (and checked against the file).
    pub size: u64,
    /// The name to offer in `Content-Disposition`.
    pub name: String,
    /// For a file still being downloaded: the pieces held and the piece
    /// size. Only ranges inside held pieces are served. `None`: complete.
    pub held: Option<(Bitfield, u64)>,
}
