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

use super::support::{connect, init_test_log, parse_answer, test_config, Rng};
use crate::support::wait_for;

/// A source of one partial file whose held pieces the test sets.
struct PartialSource {
    list: PieceList,
    have: Mutex<Bitfield>,
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
    fn open(&self, _: &Sha1Digest) -> std::io::Result<Option<OpenedFile>> {
        Ok(None)
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
}

impl Fixture {
    /// A server (of `workers` workers) of a 4-piece partial file holding
    /// piece 0.
    fn start(workers: usize) -> Fixture {
        init_test_log();
        let data = Rng::new(7).bytes(3 * 64 * 1024 + 100);
        let list = PieceList::of_content(&data);
        let mut have = Bitfield::empty(list.len());
        have.set(0);
        let source = Arc::new(PartialSource {
            list,
            have: Mutex::new(have),
        });
        let mut config = test_config("pbs-t-wait");
        config.workers = workers;
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), config, source.clone()).unwrap();
        let notifier = server.have_notifier();
        Fixture {
            source,
            server,
            notifier,
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
