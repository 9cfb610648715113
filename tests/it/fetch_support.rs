//! Fixtures of the download and catalog tests: files of random bytes, a
//! test `FileSource` over real files (honest, serving wrong bytes, or lying
//! in its piece list), in-process peer servers, registration of those peers
//! in a real etcd, and raw TCP peers that stall, drip or cut bodies short.
#![allow(dead_code)] // each test module uses a different part of the fixtures

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use piratebay_sync::etcd::{Client, Config};
use piratebay_sync::protocol::{CatalogEntry, FileList, Health, PieceList};
use piratebay_sync::{
    DownloadOptions, Downloader, FetchError, FileSource, Holder, HolderSource, OpenedFile,
    PeerRecord, ProgressFn, Registration, RegistrationConfig, Server, ServerConfig, Sha1Digest,
    Summary,
};

use crate::support::next_loopback_ip;

/// The piece size of every file of up to 16 MiB (the base block): tests
/// size their files in it.
pub const SMALL_PIECE: u64 = piratebay_sync::protocol::BASE_BLOCK;

/// Library-level download options for tests: short stall timeout, fast
/// re-queries.
pub fn opts() -> DownloadOptions {
    DownloadOptions {
        io_timeout: Duration::from_secs(1),
        requery_interval: Duration::from_millis(300),
        ..DownloadOptions::default()
    }
}

/// Downloads `served`'s file into `out` with a downloader of `opts`.
pub fn download(
    opts: DownloadOptions,
    served: &Served,
    out: &Path,
    source: &dyn HolderSource,
    progress: Option<ProgressFn<'_>>,
) -> Result<Summary, FetchError> {
    Downloader::new(opts).download(served.sha1(), out, source, progress)
}

/// Writes `size` pseudo-random bytes (seeded) to `path`.
pub fn random_file(path: &Path, size: u64, seed: u64) -> Sha1Digest {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(size as usize);
    while (data.len() as u64) < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size as usize);
    std::fs::write(path, &data).unwrap();
    Sha1Digest::of(&data)
}

/// SHA1 of a file's content.
pub fn sha1_of_file(path: &Path) -> Sha1Digest {
    Sha1Digest::of(&std::fs::read(path).unwrap())
}

/// SHA1 of a file by the `sha1sum` tool.
pub fn sha1sum(path: &Path) -> String {
    let out = std::process::Command::new("sha1sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// The piece list of a file's content (its chaining values, cut by the
/// piece size every peer uses for its size).
pub fn piece_list(path: &Path) -> PieceList {
    PieceList::of_content(&std::fs::read(path).unwrap())
}

/// One file a test source serves: what it advertises and where its bytes are.
#[derive(Clone, Debug)]
pub struct Served {
    pub name: String,
    pub pieces: PieceList,
    pub data: PathBuf,
}

impl Served {
    /// The file at `path`, honestly.
    pub fn honest(path: &Path) -> Served {
        Served {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            pieces: piece_list(path),
            data: path.to_path_buf(),
        }
    }

    /// `real`'s sha1 and piece list, but `other`'s bytes.
    pub fn wrong_bytes(real: &Served, other: &Path) -> Served {
        Served {
            data: other.to_path_buf(),
            ..real.clone()
        }
    }

    /// `real`'s sha1 with `other`'s bytes and a chain that matches them
    /// (every piece but the last verifies: that one cannot finish to the
    /// SHA1).
    pub fn lying_list(real: &Served, other: &Path) -> Served {
        let mut pieces = piece_list(other);
        pieces.sha1 = real.pieces.sha1;
        Served {
            name: real.name.clone(),
            pieces,
            data: other.to_path_buf(),
        }
    }

    pub fn sha1(&self) -> Sha1Digest {
        self.pieces.sha1
    }
}

/// A `FileSource` over test files, counting the catalog and piece-list
/// requests.
pub struct TestSource {
    pub files: Vec<Served>,
    pub generation: u64,
    pub lists_served: AtomicU64,
    pub piece_lists_served: AtomicU64,
}

impl TestSource {
    pub fn new(files: Vec<Served>) -> Arc<TestSource> {
        Arc::new(TestSource {
            files,
            generation: 1,
            lists_served: AtomicU64::new(0),
            piece_lists_served: AtomicU64::new(0),
        })
    }

    fn find(&self, sha1: &Sha1Digest) -> Option<&Served> {
        self.files.iter().find(|f| f.sha1() == *sha1)
    }
}

impl FileSource for TestSource {
    fn generation(&self) -> u64 {
        self.generation
    }

    fn file_list(&self) -> FileList {
        self.lists_served.fetch_add(1, Ordering::SeqCst);
        FileList {
            generation: self.generation,
            files: self
                .files
                .iter()
                .map(|f| CatalogEntry {
                    sha1: f.sha1(),
                    size: f.pieces.size,
                    name: f.name.clone(),
                    piece_size: f.pieces.piece_size,
                })
                .collect(),
        }
    }

    fn pieces(&self, sha1: &Sha1Digest) -> Option<PieceList> {
        self.piece_lists_served.fetch_add(1, Ordering::SeqCst);
        self.find(sha1).map(|f| f.pieces.clone())
    }

    /// Every piece (not counted as a piece list served).
    fn have(&self, sha1: &Sha1Digest) -> Option<piratebay_sync::protocol::Bitfield> {
        self.find(sha1)
            .map(|f| piratebay_sync::protocol::Bitfield::full(f.pieces.len()))
    }

    fn open(&self, sha1: &Sha1Digest) -> std::io::Result<Option<OpenedFile>> {
        let Some(f) = self.find(sha1) else {
            return Ok(None);
        };
        let file = std::fs::File::open(&f.data)?;
        let size = file.metadata()?.len();
        Ok(Some(OpenedFile {
            file: file.into(),
            size,
            name: f.name.clone(),
            held: None,
        }))
    }

    fn health(&self) -> Health {
        Health {
            status: "ok".into(),
            id: None,
            version: piratebay_sync::VERSION.into(),
            index_gen: self.generation,
            files: self.files.len() as u64,
        }
    }
}

/// An in-process peer: a real server on its own loopback IP.
pub struct TestPeer {
    pub id: String,
    pub source: Arc<TestSource>,
    pub server: Option<Server>,
    pub addr: SocketAddr,
}

impl TestPeer {
    pub fn start(id: &str, files: Vec<Served>) -> TestPeer {
        let source = TestSource::new(files);
        let server = Server::bind(
            SocketAddr::new(next_loopback_ip().into(), 0),
            ServerConfig {
                workers: 4,
                thread_name: "pbs-test".into(),
                ..ServerConfig::default()
            },
            source.clone(),
        )
        .unwrap();
        TestPeer {
            id: id.to_string(),
            addr: server.local_addr(),
            source,
            server: Some(server),
        }
    }

    pub fn holder(&self) -> Holder {
        Holder::new(&self.id, self.addr.to_string())
    }

    /// Stops the server (connections in progress are cut).
    pub fn kill(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }

    /// Registers this peer in etcd under `namespace` (lease TTL 10 s).
    pub fn register(&self, endpoint: &str, namespace: &str) -> Registration {
        register_at(
            endpoint,
            namespace,
            &self.id,
            self.addr,
            self.source.generation,
        )
    }
}

/// Registers a peer record `id` -> `addr` in etcd under `namespace` (lease
/// TTL 10 s), whatever listens there.
pub fn register_at(
    endpoint: &str,
    namespace: &str,
    id: &str,
    addr: SocketAddr,
    index_gen: u64,
) -> Registration {
    {
        let client = Client::new(Config::new([endpoint])).unwrap();
        let reg = Registration::start(
            client,
            RegistrationConfig {
                namespace: namespace.into(),
                ttl: Duration::from_secs(10),
                record: PeerRecord {
                    id: id.into(),
                    addr: addr.to_string(),
                    addrs: Vec::new(),
                    name: "test".into(),
                    version: piratebay_sync::VERSION.into(),
                    started_at: 0,
                    index_gen,
                },
            },
        )
        .unwrap();
        assert!(reg.wait_registered(Duration::from_secs(10)), "registration");
        reg
    }
}

/// Peers that start `n` servers all holding `files`.
pub fn peers(n: usize, files: &[Served]) -> Vec<TestPeer> {
    (0..n)
        .map(|i| TestPeer::start(&format!("peer{i}"), files.to_vec()))
        .collect()
}

/// How an [`EvilPeer`] misbehaves on file requests (piece lists are honest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evil {
    /// Sends the response head, then nothing.
    Stall,
    /// Sends the body one byte every 50 ms.
    Drip,
    /// Sends half the body, then closes.
    Short,
    /// Sends the body and then junk on the same connection.
    Long,
    /// Accepts and closes at once.
    Hangup,
}

/// A raw TCP peer on its own loopback IP: every connection runs `handle` on
/// its own thread until the peer is dropped (the flag tells it to stop).
pub struct RawPeer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawPeer {
    pub fn start<F>(name: &str, handle: F) -> RawPeer
    where
        F: Fn(TcpStream, &AtomicBool) + Clone + Send + 'static,
    {
        let listener = TcpListener::bind((next_loopback_ip(), 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let conn_name = format!("{name}-conn");
        let thread = std::thread::Builder::new()
            .name(format!("{name}-accept"))
            .spawn(move || {
                let mut conns = Vec::new();
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let (stop3, handle) = (stop2.clone(), handle.clone());
                            conns.push(
                                std::thread::Builder::new()
                                    .name(conn_name.clone())
                                    .spawn(move || handle(s, &stop3))
                                    .unwrap(),
                            );
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            })
            .unwrap();
        RawPeer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn holder(&self, id: &str) -> Holder {
        Holder::new(id, self.addr.to_string())
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw TCP peer that answers piece lists honestly and misbehaves on data.
pub struct EvilPeer;

impl EvilPeer {
    pub fn start(kind: Evil, served: &Served) -> RawPeer {
        let served = served.clone();
        RawPeer::start("evil", move |s, stop| evil_conn(s, kind, &served, stop))
    }
}

/// The next request head sent on `s` (bytes after it stay in `buf`); `None`
/// once the client closed or `stop` is set. Reads poll `stop` via the
/// socket's read timeout.
pub fn next_request_head(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    stop: &AtomicBool,
) -> Option<String> {
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        if let Some(end) = find_head_end(buf) {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            return Some(head);
        }
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    None
}

fn evil_conn(mut s: TcpStream, kind: Evil, served: &Served, stop: &AtomicBool) {
    if kind == Evil::Hangup {
        return;
    }
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = Vec::new();
    while let Some(head) = next_request_head(&mut s, &mut buf, stop) {
        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
        if target.ends_with("/pieces") {
            let body = serde_json::to_vec(&served.pieces).unwrap();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
            continue;
        }
        let (a, b) = range_of(&head).unwrap_or((0, served.pieces.size.saturating_sub(1)));
        let len = b - a + 1;
        let _ = write!(
            s,
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {len}\r\nContent-Range: bytes {a}-{b}/{}\r\n\r\n",
            served.pieces.size
        );
        let data = std::fs::read(&served.data).unwrap();
        let body = &data[a as usize..=b as usize];
        match kind {
            Evil::Stall => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Evil::Drip => {
                for byte in body {
                    if stop.load(Ordering::Relaxed) || s.write_all(&[*byte]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Evil::Short => {
                let _ = s.write_all(&body[..body.len() / 2]);
                return;
            }
            Evil::Long => {
                let _ = s.write_all(body);
                let _ = s.write_all(b"junk after the body\r\n\r\n");
            }
            Evil::Hangup => return,
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn range_of(head: &str) -> Option<(u64, u64)> {
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("range:"))?;
    let spec = line.split_once('=')?.1.trim();
    let (a, b) = spec.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}
