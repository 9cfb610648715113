//! The server under hostile input: generated garbage, stalled clients,
//! connection bursts and a full queue. After each, the workers are all
//! alive, nothing panicked, and a good request is answered.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use crate::support::next_loopback_ip;
use std::time::{Duration, Instant};

use piratebay_sync::{ServerConfig, Sha1Digest};

use super::support::*;

/// Generated requests in the fuzz test.
const FUZZ_CASES: usize = 3000;
/// Client threads sending them.
const FUZZ_THREADS: usize = 4;

/// What a generated request deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A valid request: 200 with the right body.
    Good { head: bool, file: bool },
    /// A valid file request with a generated `Range`: 200, a correct 206, or 416.
    Ranged,
    /// A valid request followed by garbage: 200, then never a 2xx.
    Pipelined,
    /// Anything else: never a 2xx (a 4xx/5xx, or a close without answer).
    Bad,
}

struct Gen<'a> {
    rng: Rng,
    sha1: &'a str,
}

impl Gen<'_> {
    fn good_target(&mut self) -> (String, bool) {
        match self.rng.below(4) {
            0 => ("/v1/health".into(), false),
            1 => ("/v1/files".into(), false),
            2 => (format!("/v1/files/{}/pieces", self.sha1), false),
            _ => (format!("/v1/files/{}", self.sha1), true),
        }
    }

    fn bad_method(&mut self) -> Vec<u8> {
        let fixed: &[&[u8]] = &[
            b"G\xffT", b"", b"get", b"POST", b"BREW", b"GET GET", b"\x00", b"PUT", b"CONNECT",
        ];
        self.rng.pick(fixed).to_vec()
    }

    fn bad_target(&mut self) -> Vec<u8> {
        let sha1 = self.sha1;
        match self.rng.below(12) {
            0 => b"/v1/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_vec(),
            1 => b"/../../etc/passwd".to_vec(),
            2 => format!("/v1/files/{sha1}/../../../etc/passwd").into_bytes(),
            3 => format!("/v1/files/{sha1}%00").into_bytes(),
            4 => b"/v1/files/\xff\xfe".to_vec(),
            5 => "/".repeat(self.rng.below(20_000) as usize + 1).into_bytes(),
            6 => "A".repeat(self.rng.below(30_000) as usize).into_bytes(),
            7 => format!("/v1/files/{}", &sha1[..39]).into_bytes(),
            8 => b"/v1/files/..%2f..%2f".to_vec(),
            9 => b"*".to_vec(),
            10 => format!("/v1/files/{sha1}/pieces/../../x").into_bytes(),
            _ => {
                let len = self.rng.below(60) as usize;
                let mut t = vec![b'/'];
                t.extend(
                    self.rng
                        .bytes(len)
                        .iter()
                        .map(|b| b'!' + b % 94)
                        .filter(|&b| b != b'?'),
                );
                t
            }
        }
    }

    fn bad_version(&mut self) -> Vec<u8> {
        let fixed: &[&[u8]] = &[
            b"HTTP/0.9",
            b"HTTP/2.0",
            b"",
            b"HTTP/1.1x",
            b"http/1.1",
            b"HTTP/1.10",
            b"HTTP/1.1 extra",
            b"HTTP/3",
        ];
        self.rng.pick(fixed).to_vec()
    }

    fn bad_headers(&mut self) -> Vec<u8> {
        match self.rng.below(12) {
            0 => (0..self.rng.below(5000) + 65)
                .flat_map(|i| format!("X-{i}: v\r\n").into_bytes())
                .chain(b"Host: t\r\n".iter().copied())
                .collect(),
            1 => format!(
                "Host: t\r\nX-Big: {}\r\n",
                "v".repeat(17 * 1024 + self.rng.below(50_000) as usize)
            )
            .into_bytes(),
            2 => b"Host: t\r\nNo colon here\r\n".to_vec(),
            3 => b"Host: t\r\nX: a\x00b\r\n".to_vec(),
            4 => b"Host: t\r\nTransfer-Encoding: chunked\r\n".to_vec(),
            5 => b"Host: t\r\nContent-Length: -1\r\n".to_vec(),
            6 => b"Host: t\r\nContent-Length: 5\r\n".to_vec(),
            7 => b"Host: a\r\nHost: b\r\n".to_vec(),
            8 => b"X-No-Host: 1\r\n".to_vec(),
            9 => b"Host: t\r\nBad Name: x\r\n".to_vec(),
            10 => b"Host: t\r\n: empty\r\n".to_vec(),
            _ => b"Host: t\r\nContent-Length: 99999999999999999999999\r\n".to_vec(),
        }
    }

    fn range_value(&mut self) -> String {
        let numbers = [
            "0",
            "1",
            "99",
            "5000",
            "-1",
            "99999999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "",
            "abc",
            "+5",
            "0x10",
        ];
        let a = *self.rng.pick(&numbers);
        let b = *self.rng.pick(&numbers);
        match self.rng.below(6) {
            0 => format!("bytes={a}-{b}"),
            1 => format!("bytes={a}-"),
            2 => format!("bytes=-{b}"),
            3 => format!("bytes={a}-{b},{b}-{a}"),
            4 => format!(
                "{}={a}-{b}",
                self.rng.pick(&["items", "BYTES", "bytes ", ""])
            ),
            _ => format!("bytes={}-{}", self.rng.below(3000), self.rng.below(3000)),
        }
    }

    /// One generated request and what it deserves.
    fn case(&mut self) -> (Vec<u8>, Expect) {
        let good_line =
            |target: &str, method: &str| format!("{method} {target} HTTP/1.1\r\nHost: t\r\n");
        match self.rng.below(10) {
            0 => {
                let (target, file) = self.good_target();
                let head = self.rng.below(4) == 0;
                let line = good_line(&target, if head { "HEAD" } else { "GET" });
                (
                    format!("{line}\r\n").into_bytes(),
                    Expect::Good { head, file },
                )
            }
            1 => {
                let line = good_line(&format!("/v1/files/{}", self.sha1), "GET");
                let range = self.range_value();
                (
                    format!("{line}Range: {range}\r\n\r\n").into_bytes(),
                    Expect::Ranged,
                )
            }
            2 => {
                let len = self.rng.below(400) as usize;
                (self.rng.bytes(len), Expect::Bad)
            }
            3 => {
                // Printable junk with line breaks: looks more like HTTP.
                let len = self.rng.below(400) as usize;
                let junk = self
                    .rng
                    .bytes(len)
                    .iter()
                    .map(|b| match b % 16 {
                        0 => b'\r',
                        1 => b'\n',
                        2 => b' ',
                        _ => b'!' + b % 94,
                    })
                    .collect();
                (junk, Expect::Bad)
            }
            4 => {
                let (target, _) = self.good_target();
                let mut req = self.bad_method();
                req.extend_from_slice(format!(" {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                (req, Expect::Bad)
            }
            5 => {
                let mut req = b"GET ".to_vec();
                req.extend(self.bad_target());
                req.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\n\r\n");
                (req, Expect::Bad)
            }
            6 => {
                let (target, _) = self.good_target();
                let mut req = format!("GET {target} ").into_bytes();
                req.extend(self.bad_version());
                req.extend_from_slice(b"\r\nHost: t\r\n\r\n");
                (req, Expect::Bad)
            }
            7 => {
                let (target, _) = self.good_target();
                let mut req = format!("GET {target} HTTP/1.1\r\n").into_bytes();
                req.extend(self.bad_headers());
                req.extend_from_slice(b"\r\n");
                (req, Expect::Bad)
            }
            8 => {
                // HTTP/0.9, or a head cut short.
                let (target, _) = self.good_target();
                let req = if self.rng.below(2) == 0 {
                    format!("GET {target}\r\n")
                } else {
                    let full = format!("GET {target} HTTP/1.1\r\nHost: t\r\n");
                    full[..self.rng.below(full.len() as u64) as usize].to_owned()
                };
                (req.into_bytes(), Expect::Bad)
            }
            _ => {
                let mut req = b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
                let (garbage, _) = match self.rng.below(3) {
                    0 => (self.rng.bytes(200), ()),
                    1 => {
                        let mut g = self.bad_method();
                        g.extend_from_slice(b" /v1/health HTTP/1.1\r\nHost: t\r\n\r\n");
                        (g, ())
                    }
                    _ => {
                        let mut g = b"GET ".to_vec();
                        g.extend(self.bad_target());
                        g.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\n\r\n");
                        (g, ())
                    }
                };
                req.extend(garbage);
                (req, Expect::Pipelined)
            }
        }
    }
}

/// Checks the server's answer `bytes` to a request that deserved `expect`.
fn judge(request: &[u8], bytes: &[u8], expect: Expect, content: &[u8]) {
    let show = || {
        let r = &request[..request.len().min(200)];
        format!(
            "request {:?} got {:?}",
            r.escape_ascii().to_string(),
            bytes[..bytes.len().min(300)].escape_ascii().to_string()
        )
    };
    match expect {
        Expect::Good { head, file } => {
            let (answer, _) =
                parse_answer(bytes, head).unwrap_or_else(|| panic!("no answer: {}", show()));
            assert_eq!(answer.status, 200, "{}", show());
            if file && !head {
                assert!(answer.body == content, "wrong body: {}", show());
            }
        }
        Expect::Ranged => {
            let (answer, _) =
                parse_answer(bytes, false).unwrap_or_else(|| panic!("no answer: {}", show()));
            match answer.status {
                200 => assert!(answer.body == content, "{}", show()),
                206 => {
                    let range = answer
                        .header("content-range")
                        .unwrap_or_else(|| panic!("{}", show()));
                    let spec = range
                        .strip_prefix("bytes ")
                        .and_then(|r| r.split_once('/'))
                        .unwrap();
                    let (a, b) = spec.0.split_once('-').unwrap();
                    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                    assert_eq!(spec.1, content.len().to_string());
                    assert!(a <= b && b < content.len(), "{}", show());
                    assert!(
                        answer.body == content[a..=b],
                        "wrong range bytes: {}",
                        show()
                    );
                }
                416 => assert_eq!(
                    answer.header("content-range"),
                    Some(format!("bytes */{}", content.len()).as_str())
                ),
                other => panic!("status {other}: {}", show()),
            }
        }
        Expect::Pipelined => {
            let (first, rest) =
                parse_answer(bytes, false).unwrap_or_else(|| panic!("no answer: {}", show()));
            assert_eq!(first.status, 200, "{}", show());
            if let Some((second, _)) = parse_answer(rest, false) {
                assert!(
                    second.status >= 400,
                    "a 2xx to pipelined garbage: {}",
                    show()
                );
            }
        }
        Expect::Bad => {
            if bytes.is_empty() {
                return;
            }
            assert!(
                bytes.starts_with(b"HTTP/1.1 "),
                "not an HTTP answer: {}",
                show()
            );
            let status: u16 = std::str::from_utf8(&bytes[9..12]).unwrap().parse().unwrap();
            assert!(status >= 400, "a {status} to a bad request: {}", show());
            if let Some((answer, _)) = parse_answer(bytes, false) {
                assert!(answer.text().trim_end().lines().count() == 1, "{}", show());
            }
        }
    }
}

fn assert_still_serving(fx: &Fixture, prefix: &str, workers: usize) {
    assert_eq!(fx.server.caught_panics(), 0, "a worker panicked");
    assert_eq!(
        threads_named(&format!("{prefix}-w")),
        workers,
        "every worker is alive"
    );
    assert_eq!(
        threads_named(&format!("{prefix}-accept")),
        1,
        "the accept thread is alive"
    );
    let answer = get(fx.addr(), "/v1/health");
    assert_eq!(answer.status, 200);
}

#[test]
fn generated_garbage_never_gets_a_2xx_and_never_kills_a_worker() {
    let config = ServerConfig {
        header_deadline: Duration::from_secs(3),
        ..test_config("tf")
    };
    let workers = config.workers;
    let fx = Fixture::start(config);
    let content = data(3000, 20);
    let (sha1, _) = fx.add_file("f.bin", &content);
    let sha1 = sha1.to_hex();
    let addr = fx.addr();
    std::thread::scope(|s| {
        for t in 0..FUZZ_THREADS {
            let (sha1, content) = (&sha1, &content);
            s.spawn(move || {
                let mut gen = Gen {
                    rng: Rng::new(0x5eed + t as u64),
                    sha1,
                };
                for _ in 0..FUZZ_CASES / FUZZ_THREADS {
                    let (request, expect) = gen.case();
                    let bytes = raw(addr, &request);
                    judge(&request, &bytes, expect, content);
                }
            });
        }
    });
    assert_still_serving(&fx, "tf", workers);
}

/// Downloads `path`, retrying while the server is busy (503 or a close).
fn download_with_retry(addr: SocketAddr, path: &str, expected_len: usize) -> (Answer, usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let bytes = raw(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        if let Some((answer, _)) = parse_answer(&bytes, false) {
            if answer.status == 200 && answer.body.len() == expected_len {
                return (answer, attempts);
            }
            assert_eq!(
                answer.status,
                503,
                "only a busy server may refuse: {}",
                answer.text()
            );
            assert_eq!(answer.header("retry-after"), Some("1"));
        }
        assert!(
            Instant::now() < deadline,
            "download did not complete after {attempts} attempts"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stalled_clients_do_not_stop_a_big_download() {
    let config = ServerConfig {
        header_deadline: Duration::from_secs(1),
        ..test_config("tstall")
    };
    let workers = config.workers;
    let fx = Fixture::start(config);
    let content = data(64 * 1024 * 1024, 21);
    let path = fx.dir.path().join("big.bin");
    std::fs::write(&path, &content).unwrap();
    let sha1 = Sha1Digest::of(b"big test file");
    fx.source.add_unhashed(sha1, &path, content.len() as u64);

    let mut stalled: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = connect(fx.addr());
            // A partial head, then silence (a write error means already refused).
            let _ = s.write_all(b"GET /v1/files HTTP/1.1\r\nHost: t\r\nX-Stall: ");
            s
        })
        .collect();
    let (answer, attempts) =
        download_with_retry(fx.addr(), &format!("/v1/files/{sha1}"), content.len());
    assert!(
        answer.body == content,
        "the 64 MiB body differs (after {attempts} attempts)"
    );

    for (i, s) in stalled.iter_mut().enumerate() {
        // Panics if the server neither answers nor closes in CLIENT_TIMEOUT.
        let bytes = read_to_close(s);
        if let Some((answer, _)) = parse_answer(&bytes, false) {
            assert!(
                [408, 503].contains(&answer.status),
                "stalled connection {i} got {}",
                answer.status
            );
        }
    }
    assert_still_serving(&fx, "tstall", workers);
}

#[test]
fn a_burst_of_connections_leaves_the_server_serving() {
    let config = ServerConfig {
        header_deadline: Duration::from_secs(1),
        ..test_config("tburst")
    };
    let workers = config.workers;
    let fx = Fixture::start(config);
    let conns: Vec<TcpStream> = (0..2000)
        .filter_map(|_| TcpStream::connect_timeout(&fx.addr(), Duration::from_secs(10)).ok())
        .collect();
    assert!(
        conns.len() > 1000,
        "only {} of 2000 connects succeeded",
        conns.len()
    );
    drop(conns);
    let ok = wait_until(Duration::from_secs(30), || {
        let bytes = raw(fx.addr(), b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n");
        parse_answer(&bytes, false).is_some_and(|(a, _)| a.status == 200)
    });
    assert!(ok, "the server does not answer after the burst");
    assert_still_serving(&fx, "tburst", workers);
}

/// A file too big for the socket buffers, served by `fx`: its path.
fn big_file(fx: &Fixture) -> String {
    let (sha1, _) = fx.add_file("big.bin", &data(32 * 1024 * 1024, 31));
    format!("/v1/files/{sha1}")
}

/// A connection from `from` that asked for `path` and reads nothing more
/// after the first bytes: a slow reader, never closed to make room.
fn slow_reader(from: std::net::Ipv4Addr, addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = connect_from(from, addr);
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut s, &mut first).unwrap();
    assert_eq!(&first[..12], b"HTTP/1.1 200");
    s
}

/// Sends a partial head on a new connection from `from`.
fn partial_head(from: std::net::Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let mut s = connect_from(from, addr);
    s.write_all(b"GET /v1/health HTTP/1.1\r\nX-Slow: ").unwrap();
    s
}

/// Whether the server closed `s` (EOF or reset within 100 ms).
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut b = [0u8; 1];
    match std::io::Read::read(s, &mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// The single answer on a fresh connection from `from`.
fn answer_from(from: std::net::Ipv4Addr, addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = connect_from(from, addr);
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let bytes = read_to_close(&mut s);
    parse_answer(&bytes, false)
        .unwrap_or_else(|| panic!("no whole answer: {:?}", bytes.escape_ascii().to_string()))
        .0
}

const HEALTH: &[u8] = b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n";

#[test]
fn a_client_at_its_cap_gets_503_and_other_clients_are_served() {
    let config = ServerConfig {
        max_connections_per_client: 4,
        header_deadline: Duration::from_secs(60),
        ..test_config("tcap")
    };
    let fx = Fixture::start(config);
    let path = big_file(&fx);
    let (greedy, other) = (next_loopback_ip(), next_loopback_ip());
    let held: Vec<TcpStream> = (0..4)
        .map(|_| slow_reader(greedy, fx.addr(), &path))
        .collect();
    assert!(wait_until(Duration::from_secs(10), || fx
        .server
        .open_connections()
        == 4));

    let refused = answer_from(greedy, fx.addr(), HEALTH);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused
        .text()
        .contains("too many connections from your address"));
    assert_eq!(answer_from(other, fx.addr(), HEALTH).status, 200);

    // A connection that closes gives its place back.
    drop(held);
    assert!(wait_until(Duration::from_secs(10), || fx
        .server
        .open_connections()
        == 0));
    assert_eq!(answer_from(greedy, fx.addr(), HEALTH).status, 200);
}

#[test]
fn idle_connections_of_a_client_at_its_cap_make_room() {
    let config = ServerConfig {
        max_connections_per_client: 4,
        keepalive_idle: Duration::from_secs(600),
        header_deadline: Duration::from_secs(600),
        ..test_config("tevict")
    };
    let fx = Fixture::start(config);
    let host = next_loopback_ip();
    // Four connections that sent nothing: the oldest goes first.
    let mut idle: Vec<TcpStream> = (0..4).map(|_| connect_from(host, fx.addr())).collect();
    assert!(wait_until(Duration::from_secs(10), || fx
        .server
        .open_connections()
        == 4));
    assert_eq!(answer_from(host, fx.addr(), HEALTH).status, 200);
    assert_eq!(
        read_to_close(&mut idle[0]),
        b"",
        "the oldest idle connection is closed"
    );
    assert!(wait_until(Duration::from_secs(10), || fx
        .server
        .open_connections()
        == 3));
}

#[test]
fn a_full_server_answers_503_with_retry_after() {
    let config = ServerConfig {
        max_connections: 2,
        max_connections_per_client: 2,
        header_deadline: Duration::from_secs(60),
        ..test_config("tbusy")
    };
    let fx = Fixture::start(config);
    let path = big_file(&fx);
    let first = slow_reader(next_loopback_ip(), fx.addr(), &path);
    let _second = slow_reader(next_loopback_ip(), fx.addr(), &path);
    assert!(wait_until(Duration::from_secs(10), || fx
        .server
        .open_connections()
        == 2));

    let answer = answer_from(next_loopback_ip(), fx.addr(), HEALTH);
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.text(), "server busy: retry in one second\n");

    // A connection that closes makes room.
    drop(first);
    assert!(wait_until(Duration::from_secs(10), || fx
        .server
        .open_connections()
        == 1));
    assert_eq!(
        answer_from(next_loopback_ip(), fx.addr(), HEALTH).status,
        200
    );
}

#[test]
fn stalled_heads_of_a_client_at_its_cap_make_room() {
    let config = ServerConfig {
        max_connections_per_client: 4,
        header_deadline: Duration::from_secs(600),
        ..test_config("tstallcap")
    };
    let fx = Fixture::start(config);
    let host = next_loopback_ip();
    let mut stalled: Vec<TcpStream> = (0..4).map(|_| partial_head(host, fx.addr())).collect();
    assert!(wait_until(Duration::from_secs(10), || fx
        .server
        .open_connections()
        == 4));
    // Once the heads have been silent a moment, a new request from the
    // same host is served and a stalled connection is closed for it.
    let served = wait_until(Duration::from_secs(10), || {
        answer_from(host, fx.addr(), HEALTH).status == 200
    });
    assert!(served, "a stalled head never made room");
    let closed = stalled
        .iter_mut()
        .map(closed_by_server)
        .filter(|c| *c)
        .count();
    assert!(closed >= 1, "no stalled connection was closed");
}

#[test]
fn idle_keep_alive_connections_hold_no_worker() {
    let config = ServerConfig {
        workers: 1,
        keepalive_idle: Duration::from_secs(600),
        ..test_config("tyield")
    };
    let fx = Fixture::start(config);
    let mut idle: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect(fx.addr());
            s.write_all(HEALTH).unwrap();
            let mut received = Vec::new();
            let mut chunk = [0u8; 4096];
            while parse_answer(&received, false).is_none() {
                let n = std::io::Read::read(&mut s, &mut chunk).unwrap();
                assert!(n > 0);
                received.extend_from_slice(&chunk[..n]);
            }
            s
        })
        .collect();
    // The only worker is free for a new client, and every idle connection
    // is still open and served when it asks again.
    assert_eq!(get(fx.addr(), "/v1/health").status, 200);
    for s in &mut idle {
        s.write_all(HEALTH).unwrap();
        let mut chunk = [0u8; 4096];
        let n = std::io::Read::read(s, &mut chunk).unwrap();
        assert!(chunk[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
}

#[test]
fn an_answer_nobody_reads_is_abandoned_after_the_write_timeout() {
    let config = ServerConfig {
        write_timeout: Duration::from_millis(500),
        ..test_config("tstallw")
    };
    let fx = Fixture::start(config);
    let path = big_file(&fx);
    let reader = slow_reader(next_loopback_ip(), fx.addr(), &path);
    assert_eq!(fx.server.open_connections(), 1);
    // The client reads nothing more: the server gives up on it.
    assert!(
        wait_until(Duration::from_secs(10), || fx.server.open_connections()
            == 0),
        "a reader that stopped still holds its connection"
    );
    assert_eq!(
        answer_from(next_loopback_ip(), fx.addr(), HEALTH).status,
        200
    );
    drop(reader);
}
