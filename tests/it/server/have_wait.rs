//! `have?wait=<ms>&want=<hex>`: a partial holder's bitmap asked by a
//! download that wants pieces it does not hold yet. The answer waits in
//! the parking lot (no worker) until the holder gets a wanted piece (the
//! server is told by its `HaveNotifier`), the client sends more or closes,
//! or the wait ends; a wanted piece already held, a complete file or a
//! request without the query is answered at once.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use piratebay_sync::protocol::{Bitfield, FileList, Health, PieceList, MAX_HAVE_WAIT};
use piratebay_sync::{FileSource, HaveNotifier, OpenedFile, Server, Sha1Digest};

use super::support::{connect, connect_from, init_test_log, parse_answer, test_config, Rng};
use crate::support::wait_for;

/// A source of one partial file whose held pieces the test sets (served
/// from `path`: ranges inside held pieces).
struct PartialSource {
    list: PieceList,
    have: Mutex<Bitfield>,
    path: std::path::PathBuf,
}

impl FileSource for PartialSource {
    fn generation(&self) -> u64 {
        1
    }
    fn file_list(&self) -> FileList {
        FileList {
            generation: 1,
            files: Vec::new(),
        }
    }
    fn pieces(&self, sha1: &Sha1Digest) -> Option<PieceList> {
        (*sha1 == self.list.sha1).then(|| self.list.clone())
    }
    fn have(&self, sha1: &Sha1Digest) -> Option<Bitfield> {
        (*sha1 == self.list.sha1).then(|| self.have.lock().clone())
    }
    fn open(&self, sha1: &Sha1Digest) -> std::io::Result<Option<OpenedFile>> {
        if *sha1 != self.list.sha1 {
            return Ok(None);
        }
        Ok(Some(OpenedFile {
            file: Arc::new(std::fs::File::open(&self.path)?),
            size: self.list.size,
            name: "partial.bin".into(),
            held: Some((self.have.lock().clone(), self.list.piece_size)),
        }))
    }
    fn health(&self) -> Health {
        Health {
            status: "ok".into(),
            id: Some("test-peer".into()),
            version: piratebay_sync::VERSION.into(),
            index_gen: 1,
            files: 0,
        }
    }
}

struct Fixture {
    source: Arc<PartialSource>,
    server: Server,
    notifier: HaveNotifier,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A server (of `workers` workers) of a 4-piece partial file holding
    /// piece 0.
    fn start(workers: usize) -> Fixture {
        Fixture::with_slots(workers, 5)
    }

    /// [`Fixture::start`] with `slots` upload slots.
    fn with_slots(workers: usize, slots: usize) -> Fixture {
        init_test_log();
        let data = Rng::new(7).bytes(3 * 64 * 1024 + 100);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial.bin");
        std::fs::write(&path, &data).unwrap();
        let list = PieceList::of_content(&data);
        let mut have = Bitfield::empty(list.len());
        have.set(0);
        let source = Arc::new(PartialSource {
            list,
            have: Mutex::new(have),
            path,
        });
        let mut config = test_config("pbs-t-wait");
        config.workers = workers;
        config.upload_slots = slots;
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), config, source.clone()).unwrap();
        let notifier = server.have_notifier();
        Fixture {
            source,
            server,
            notifier,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The path of `have?wait=<ms>&want=<pieces>`.
    fn path(&self, wait_ms: u64, want: &[usize]) -> String {
        let mut bits = Bitfield::empty(self.source.list.len());
        for &i in want {
            bits.set(i);
        }
        format!(
            "/v1/files/{}/have?wait={wait_ms}&want={}",
            self.source.list.sha1,
            bits.to_hex()
        )
    }

    /// Sends `have?wait=<ms>&want=<pieces>` on a new connection.
    fn ask(&self, wait_ms: u64, want: &[usize]) -> (TcpStream, Instant) {
        let mut stream = connect(self.addr());
        let path = self.path(wait_ms, want);
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        (stream, Instant::now())
    }

    /// The holder gets piece `i`, and the server is told.
    fn gets(&self, i: usize) {
        self.source.have.lock().set(i);
        self.notifier.notify();
    }

    /// A plain `have` on its own connection, answered at once: the pieces held.
    fn held_now(&self) -> Vec<usize> {
        let mut stream = connect(self.addr());
        let path = format!("/v1/files/{}/have", self.source.list.sha1);
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        held(&read_answer(&mut stream))
    }
}

/// Reads one whole answer (keep-alive: the connection stays open).
fn read_answer(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((answer, _)) = parse_answer(&bytes, false) {
            assert_eq!(answer.status, 200, "{}", answer.text());
            return answer.body;
        }
        let n = stream.read(&mut chunk).expect("an answer");
        assert!(n > 0, "closed before a whole answer");
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// The pieces a bitmap body holds (4 pieces).
fn held(body: &[u8]) -> Vec<usize> {
    let bits = Bitfield::from_bytes(body, 4).expect("a 4-piece bitmap");
    (0..4).filter(|&i| bits.get(i)).collect()
}

/// True if nothing of an answer arrived on `stream` yet.
fn unanswered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let pending = matches!(stream.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    pending
}

#[test]
fn a_waiting_have_is_answered_when_a_wanted_piece_comes_and_not_at_another() {
    let f = Fixture::start(2);
    let (mut waiting, asked) = f.ask(60_000, &[2, 3]);
    // Another piece comes: no answer (the plain request shows the server
    // has it, and was served meanwhile).
    f.gets(1);
    assert_eq!(f.held_now(), vec![0, 1]);
    assert!(unanswered(&waiting), "answered at a piece it does not want");
    // A wanted one: the answer, with it.
    f.gets(2);
    assert_eq!(held(&read_answer(&mut waiting)), vec![0, 1, 2]);
    // At the piece, not at the end of the wait (capped at MAX_HAVE_WAIT).
    assert!(
        asked.elapsed() < MAX_HAVE_WAIT,
        "answered after {:?}: at the wait's end, not at the piece",
        asked.elapsed()
    );
    // The connection goes on: a wanted piece already held is answered at once.
    let path = f.path(60_000, &[2]);
    write!(waiting, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    assert_eq!(held(&read_answer(&mut waiting)), vec![0, 1, 2]);
}

#[test]
fn a_waiting_have_is_answered_after_its_wait_with_what_is_held() {
    let f = Fixture::start(2);
    let (mut waiting, asked) = f.ask(300, &[3]);
    assert_eq!(held(&read_answer(&mut waiting)), vec![0]);
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "answered before its wait ended"
    );
}

#[test]
fn waiting_haves_hold_no_worker_and_close_with_their_client() {
    // One worker, twenty waiting requests: the others are still served.
    let f = Fixture::start(1);
    let waiting: Vec<(TcpStream, Instant)> = (0..20).map(|_| f.ask(60_000, &[3])).collect();
    for _ in 0..3 {
        assert_eq!(f.held_now(), vec![0]);
    }
    for (w, _) in &waiting {
        assert!(
            unanswered(w),
            "a waiting request was answered without its piece"
        );
    }
    let open = f.server.open_connections();
    assert!(open >= 20, "{open} connections open, 20 waiting");
    // Clients that leave free their connections (they are not answered).
    drop(waiting);
    wait_for(
        Duration::from_secs(20),
        "the gone clients' connections closed",
        || (f.server.open_connections() == 0).then_some(()),
    );
    // And the piece they waited for is no event for anyone.
    f.gets(3);
    assert_eq!(f.held_now(), vec![0, 3]);
}

/// Reads one whole answer on a kept-alive connection: its status.
fn status_of(stream: &mut TcpStream) -> u16 {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some((answer, _)) = parse_answer(&bytes, false) {
            return answer.status;
        }
        let n = stream.read(&mut chunk).expect("an answer");
        assert!(n > 0, "closed before a whole answer");
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// A download that asks a partial holder's bitmap while it holds the
/// holder's upload slot, with no answer in progress, has nothing to ask
/// there now: the slot goes to the next download at once, not after the
/// slot's idle time.
#[test]
fn a_bitmap_asked_by_a_slot_holder_with_nothing_in_progress_frees_its_slot() {
    let f = Fixture::with_slots(2, 1);
    let sha1 = f.source.list.sha1;
    let piece = format!("GET /v1/files/{sha1} HTTP/1.1\r\nHost: t\r\nRange: bytes=0-65535\r\n\r\n");
    let released = || {
        let mut s = connect(f.addr());
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut bytes = Vec::new();
        let _ = s.read_to_end(&mut bytes);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("pbs_upload_slots_released_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = released();
    let mut a = connect_from(crate::support::next_loopback_ip(), f.addr());
    a.write_all(piece.as_bytes()).unwrap();
    assert_eq!(status_of(&mut a), 206, "A gets the only slot");
    assert_eq!(released(), before);
    // A asks the bitmap: answered only after its slot was given back.
    write!(a, "GET /v1/files/{sha1}/have HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(status_of(&mut a), 200);
    assert_eq!(released(), before + 1);
    let mut b = connect_from(crate::support::next_loopback_ip(), f.addr());
    b.write_all(piece.as_bytes()).unwrap();
    assert_eq!(status_of(&mut b), 206, "B gets the slot A gave back");
}
