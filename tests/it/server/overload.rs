//! A real `serve` process (8 workers) under load from one hostile host,
//! and under many honest downloads. The hostile clients here stand for one
//! machine: every socket is bound to one 127.0.0.x address before it
//! connects; the honest client connects from 127.0.0.1 (the kernel's
//! choice for loopback), another host as far as the peer can tell.
//!
//! The bound checked is the one SECURITY.md states: a new client from
//! another host gets its answer within [`RESPONSIVE`], whatever the number
//! of slow or idle connections from one host.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use piratebay_sync::Sha1Digest;

use super::support::{connect_from, parse_answer, read_to_close, try_connect_from};
use crate::fetch_support::random_file;
use crate::support::{
    cli_with, next_loopback_ip, stderr_text, wait_for, EtcdServer, Serve, ServePeer,
};

/// The bound SECURITY.md promises for a new client from another host.
const RESPONSIVE: Duration = Duration::from_secs(2);
/// Workers of the `serve` process (the count of the reproduction).
const WORKERS: &str = "8";
/// Size of the served file.
const FILE_SIZE: u64 = 16 * 1024 * 1024;
/// Resident memory the `serve` process may reach under the load here.
const SERVE_RSS_KIB: u64 = 100 * 1024;
/// Deadline of one honest `get`.
const GET_TIMEOUT: Duration = Duration::from_secs(60);

/// An etcd, a `serve` process sharing one file, and its address.
struct Seed {
    etcd: EtcdServer,
    peer: ServePeer,
    addr: SocketAddr,
    sha1: Sha1Digest,
    _dataset: tempfile::TempDir,
}

impl Seed {
    fn start(size: u64) -> Seed {
        crate::support::init_test_log();
        let etcd = EtcdServer::new();
        let dataset = tempfile::tempdir().unwrap();
        let sha1 = random_file(&dataset.path().join("only-here.bin"), size, 14);
        let peer = Serve::new(&etcd.endpoint())
            .dataset(dataset.path())
            .arg("--workers", WORKERS)
            .start();
        let addr = wait_for(Duration::from_secs(10), "the peer's bound address", || {
            let log = peer.proc.log_text();
            let line = log.lines().find(|l| l.contains(" sharing "))?;
            let addr = line.split(" on ").nth(1)?.split_whitespace().next()?;
            addr.trim_end_matches(',').parse().ok()
        });
        let seed = Seed {
            etcd,
            peer,
            addr,
            sha1,
            _dataset: dataset,
        };
        wait_for(Duration::from_secs(20), "the file served", || {
            let path = format!("/v1/files/{}", seed.sha1);
            (probe(seed.addr, "HEAD", &path).ok()?.0 == 200).then_some(())
        });
        seed
    }

    /// `get` of the file into `out` by a real client process, from
    /// 127.0.0.1; its stderr, as the error on failure.
    fn get(&self, out: &Path, state: &Path) -> Result<String, String> {
        let args = [
            "get".to_string(),
            self.sha1.to_hex(),
            "-o".into(),
            out.display().to_string(),
            "--etcd".into(),
            self.etcd.endpoint(),
            "--state-dir".into(),
            state.display().to_string(),
        ];
        let output = cli_with(&args, &[], GET_TIMEOUT);
        if output.status.success() {
            Ok(stderr_text(&output))
        } else {
            Err(stderr_text(&output))
        }
    }
}

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Threads of process `pid`.
fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// The peer kept its threads (give or take its etcd client's) and stayed
/// under [`SERVE_RSS_KIB`].
fn assert_bounded(seed: &Seed, threads_before: usize, what: &str) {
    let pid = seed.peer.proc.pid();
    let threads = threads_of(pid);
    assert!(
        threads <= threads_before + 4,
        "{what}: threads grew from {threads_before} to {threads}"
    );
    let rss = status_kib(pid, "VmHWM");
    assert!(rss < SERVE_RSS_KIB, "{what}: peak RSS {rss} KiB");
}

/// One request with `Connection: close` from 127.0.0.1: the status and how
/// long the whole answer took.
fn probe(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, Duration)> {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )?;
    let bytes = read_to_close(&mut s);
    let (answer, _) = parse_answer(&bytes, method == "HEAD")
        .ok_or_else(|| std::io::Error::other(format!("no whole answer to {method} {path}")))?;
    Ok((answer.status, started.elapsed()))
}

/// Asks for health and a 1 MiB range of the file `rounds` times from
/// 127.0.0.1; each must come back whole, 200/206, within [`RESPONSIVE`].
fn assert_responsive(seed: &Seed, rounds: usize, what: &str) {
    let range_path = format!("/v1/files/{}", seed.sha1);
    for round in 0..rounds {
        let (status, took) = probe(seed.addr, "GET", "/v1/health")
            .unwrap_or_else(|e| panic!("{what}: health probe {round} failed: {e}"));
        assert_eq!(status, 200, "{what}: health probe {round}");
        assert!(
            took < RESPONSIVE,
            "{what}: health probe {round} took {took:?}"
        );
        let started = Instant::now();
        let mut s = TcpStream::connect_timeout(&seed.addr, Duration::from_secs(10)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {range_path} HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1048575\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let bytes = read_to_close(&mut s);
        let took = started.elapsed();
        let (answer, _) = parse_answer(&bytes, false)
            .unwrap_or_else(|| panic!("{what}: no whole answer to the range {round}"));
        assert_eq!(answer.status, 206, "{what}: range {round}");
        assert_eq!(answer.body.len(), 1 << 20);
        assert!(took < RESPONSIVE, "{what}: range {round} took {took:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The honest `get` of the file completes and the result is the file.
fn assert_get_completes(seed: &Seed, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.bin");
    if let Err(stderr) = seed.get(&out, &dir.path().join("state")) {
        panic!("{what}: get failed: {stderr}");
    }
    assert_eq!(
        crate::fetch_support::sha1_of_file(&out),
        seed.sha1,
        "{what}: the copy differs"
    );
}

/// What a slow reader's read found.
#[derive(Debug, PartialEq, Eq)]
enum Read16 {
    Data,
    Nothing,
    Gone,
}

/// Reads up to 16 KiB from `s` if some come within its read timeout.
fn read_16k(s: &mut TcpStream) -> Read16 {
    let mut buf = vec![0u8; 16 * 1024];
    match s.read(&mut buf) {
        Ok(0) => Read16::Gone,
        Ok(_) => Read16::Data,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Read16::Nothing
        }
        Err(_) => Read16::Gone,
    }
}

#[test]
fn slow_readers_from_one_host_leave_a_serve_process_responsive() {
    let seed = Seed::start(FILE_SIZE);
    let threads_before = threads_of(seed.peer.proc.pid());
    let host: Ipv4Addr = next_loopback_ip();
    let request = format!("GET /v1/files/{} HTTP/1.1\r\nHost: t\r\n\r\n", seed.sha1);
    // 120 slow readers (the per-client cap is 128), each reading 16 KiB
    // every few seconds, plus 200 connections that never send anything.
    let mut slow: Vec<TcpStream> = (0..120)
        .map(|_| {
            let mut s = connect_from(host, seed.addr);
            s.write_all(request.as_bytes()).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            s
        })
        .collect();
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| try_connect_from(host, seed.addr).ok())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, gone) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (stop, reads, gone) = (stop.clone(), reads.clone(), gone.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for s in &mut slow {
                    match read_16k(s) {
                        Read16::Data => reads.fetch_add(1, Ordering::Relaxed),
                        Read16::Gone => gone.fetch_add(1, Ordering::Relaxed),
                        Read16::Nothing => 0,
                    };
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            slow
        })
    };
    assert_responsive(&seed, 5, "beside 120 slow readers");
    assert_get_completes(&seed, "beside 120 slow readers");
    assert_responsive(&seed, 2, "after a get beside 120 slow readers");
    wait_for(
        Duration::from_secs(20),
        "a read on every slow reader",
        || (reads.load(Ordering::Relaxed) >= 120).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let slow = reader.join().unwrap();
    assert_eq!(
        gone.load(Ordering::Relaxed),
        0,
        "slow readers are served slowly, not cut off"
    );
    assert_bounded(&seed, threads_before, "beside 120 slow readers");
    drop((slow, idle));
}

#[test]
fn a_reconnect_flood_from_one_host_leaves_a_serve_process_responsive() {
    let seed = Seed::start(FILE_SIZE);
    let threads_before = threads_of(seed.peer.proc.pid());
    let host: Ipv4Addr = next_loopback_ip();
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicU64::new(0));
    // 8 threads each keep 60 connections open, replacing the oldest by a
    // new one in a loop; a third of them send a partial head.
    let flooders: Vec<_> = (0..8)
        .map(|t| {
            let (stop, connects, addr) = (stop.clone(), connects.clone(), seed.addr);
            std::thread::spawn(move || {
                let mut open = std::collections::VecDeque::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if let Ok(mut s) = try_connect_from(host, addr) {
                        connects.fetch_add(1, Ordering::Relaxed);
                        if (i + t) % 3 == 0 {
                            let _ = s.write_all(b"GET /v1/health HTTP/1.1\r\nX-Slow: ");
                        }
                        open.push_back(s);
                    }
                    if open.len() > 60 {
                        open.pop_front();
                    }
                    // The flooding host has CPUs of its own: here it shares
                    // the peer's, so it pauses a little (up to 8,000
                    // connects a second) rather than starve the peer of CPU.
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    wait_for(Duration::from_secs(20), "the flood to start", || {
        (connects.load(Ordering::Relaxed) > 500).then_some(())
    });
    assert_responsive(&seed, 8, "during a reconnect flood");
    assert_get_completes(&seed, "during a reconnect flood");
    assert_responsive(&seed, 2, "after a get during a reconnect flood");
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    assert!(connects.load(Ordering::Relaxed) > 1000, "the flood ran");
    assert_bounded(&seed, threads_before, "during a reconnect flood");
}

#[test]
fn twenty_concurrent_gets_from_one_peer_never_stall_five_runs_in_a_row() {
    let seed = Seed::start(8 * 1024 * 1024);
    for run in 0..5 {
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let gets: Vec<_> = (0..20)
                .map(|i| {
                    let seed = &seed;
                    s.spawn(move || {
                        let dir = tempfile::tempdir().unwrap();
                        let out = dir.path().join(format!("copy{i}.bin"));
                        let stderr = seed.get(&out, &dir.path().join("state"))?;
                        if stderr.contains("stalled") {
                            return Err(format!("a connection stalled: {stderr}"));
                        }
                        let got = crate::fetch_support::sha1_of_file(&out);
                        (got == seed.sha1)
                            .then_some(())
                            .ok_or_else(|| format!("copy {i} differs"))
                    })
                })
                .collect();
            gets.into_iter().map(|g| g.join().unwrap()).collect()
        });
        for (i, r) in results.iter().enumerate() {
            if let Err(e) = r {
                panic!("run {run}, get {i} failed: {e}");
            }
        }
    }
    assert!(!seed.peer.proc.log_text().contains("panicked"));
}
