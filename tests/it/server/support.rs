//! Private helpers of the server tests: a `FileSource` over a temp dir, a
//! server started on 127.0.0.1:0, and a raw HTTP/1.1 client on `TcpStream`
//! (so malformed requests can be sent and answers read byte for byte).

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use piratebay_sync::protocol::{CatalogEntry, FileList, Health, PieceList};
use piratebay_sync::{ChainValue, FileSource, OpenedFile, Server, ServerConfig, Sha1Digest};

/// Piece size of the test source: small, so files have several pieces.
pub const PIECE_SIZE: u64 = 64 * 1024;
/// How long a test client waits for an answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

pub fn init_test_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Deterministic pseudo-random bytes (xorshift64*), no crate needed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

struct Entry {
    path: PathBuf,
    size: u64,
    name: String,
    pieces: Option<Vec<ChainValue>>,
}

/// A `FileSource` over files the test chooses. `open` trusts the entry
/// (no change check), so tests can make a file lie about its size.
pub struct DirSource {
    entries: RwLock<HashMap<Sha1Digest, Entry>>,
    generation: AtomicU64,
    /// Successful `open` calls (one per file request).
    pub opens: AtomicU64,
}

impl DirSource {
    pub fn new() -> Arc<Self> {
        Arc::new(DirSource {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(1),
            opens: AtomicU64::new(0),
        })
    }

    /// Hashes `path` (its SHA1 and chain) and serves it.
    pub fn add(&self, path: &Path) -> Sha1Digest {
        let list = PieceList::of_content(&fs::read(path).unwrap());
        self.insert(list.sha1, path, list.size, Some(list.chain));
        list.sha1
    }

    /// Serves `path` under `sha1` with `size`, without hashing (big files,
    /// and files that lie about their size).
    pub fn add_unhashed(&self, sha1: Sha1Digest, path: &Path, size: u64) {
        self.insert(sha1, path, size, None);
    }

    fn insert(&self, sha1: Sha1Digest, path: &Path, size: u64, pieces: Option<Vec<ChainValue>>) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        self.entries.write().insert(
            sha1,
            Entry {
                path: path.to_owned(),
                size,
                name,
                pieces,
            },
        );
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl FileSource for DirSource {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn file_list(&self) -> FileList {
        let entries = self.entries.read();
        FileList {
            generation: self.generation(),
            files: entries
                .iter()
                .map(|(sha1, e)| CatalogEntry {
                    sha1: *sha1,
                    size: e.size,
                    name: e.name.clone(),
                    piece_size: piratebay_sync::protocol::piece_size(e.size),
                })
                .collect(),
        }
    }

    fn pieces(&self, sha1: &Sha1Digest) -> Option<PieceList> {
        let entries = self.entries.read();
        let e = entries.get(sha1)?;
        Some(PieceList::new(*sha1, e.size, e.pieces.clone()?))
    }

    fn open(&self, sha1: &Sha1Digest) -> std::io::Result<Option<OpenedFile>> {
        let (path, size, name) = match self.entries.read().get(sha1) {
            Some(e) => (e.path.clone(), e.size, e.name.clone()),
            None => return Ok(None),
        };
        let file = fs::File::open(path)?;
        self.opens.fetch_add(1, Ordering::SeqCst);
        Ok(Some(OpenedFile {
            file: file.into(),
            size,
            name,
            held: None,
        }))
    }

    fn health(&self) -> Health {
        Health {
            status: "ok".into(),
            id: Some("test-peer".into()),
            version: piratebay_sync::VERSION.into(),
            index_gen: self.generation(),
            files: self.entries.read().len() as u64,
        }
    }
}

/// A running server over a temp dir of files.
pub struct Fixture {
    pub server: Server,
    pub source: Arc<DirSource>,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn start(config: ServerConfig) -> Fixture {
        init_test_log();
        let dir = tempfile::tempdir().unwrap();
        let source = DirSource::new();
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), config, source.clone()).unwrap();
        Fixture {
            server,
            source,
            dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Writes `data` to `name` in the temp dir and serves it.
    pub fn add_file(&self, name: &str, data: &[u8]) -> (Sha1Digest, PathBuf) {
        let path = self.dir.path().join(name);
        fs::write(&path, data).unwrap();
        (self.source.add(&path), path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }
}

/// A test config: small pool, short timeouts, a thread name for the test.
pub fn test_config(name: &str) -> ServerConfig {
    ServerConfig {
        workers: 4,
        thread_name: name.to_owned(),
        ..ServerConfig::default()
    }
}

/// One parsed answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses one answer at the start of `bytes`; `head_only` for HEAD and 304.
/// Returns it and the bytes after it, or `None` if `bytes` is not a whole answer.
pub fn parse_answer(bytes: &[u8], head_only: bool) -> Option<(Answer, &[u8])> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut slots);
    let httparse::Status::Complete(n) = resp.parse(bytes).ok()? else {
        return None;
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let status = resp.code?;
    let len: usize = if head_only || status == 304 {
        0
    } else {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))?
            .1
            .parse()
            .ok()?
    };
    let rest = &bytes[n..];
    if rest.len() < len {
        return None;
    }
    Some((
        Answer {
            status,
            headers,
            body: rest[..len].to_vec(),
        },
        &rest[len..],
    ))
}

/// Connects with a client timeout.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream
}

/// Connects from `from` (a loopback address standing for one host), with
/// a client timeout.
pub fn connect_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> TcpStream {
    try_connect_from(from, addr).unwrap_or_else(|e| panic!("cannot connect from {from}: {e}"))
}

/// [`connect_from`] that reports a failure.
pub fn try_connect_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from.into(), 0).into())?;
    socket.connect_timeout(&addr.into(), CLIENT_TIMEOUT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(stream)
}

/// Reads until the server closes (or an error, e.g. a reset); returns all bytes.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("server neither answered nor closed within {CLIENT_TIMEOUT:?}")
            }
            Err(_) => return out,
        }
    }
}

/// Sends raw bytes on a new connection and reads everything until close.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    // The server may refuse and close before reading it all.
    let _ = stream.write_all(request);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    read_to_close(&mut stream)
}

/// One request with `Connection: close` and extra header lines; the answer.
pub fn request(addr: SocketAddr, method: &str, path: &str, extra: &[&str]) -> Answer {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    let bytes = raw(addr, text.as_bytes());
    let (answer, rest) = parse_answer(&bytes, method == "HEAD").unwrap_or_else(|| {
        panic!(
            "no whole answer to {method} {path}: {:?}",
            bytes.escape_ascii().to_string()
        )
    });
    assert!(rest.is_empty(), "bytes after the answer to {method} {path}");
    answer
}

pub fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, &[])
}

/// Threads of this process whose name starts with `prefix` (Linux).
pub fn threads_named(prefix: &str) -> usize {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end().starts_with(prefix))
        .count()
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `len` deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}
