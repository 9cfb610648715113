//! Fair service: more downloading keep-alive connections than workers, each
//! sending its next range request as soon as it has the previous answer
//! (as `get` does), all make progress at once; none waits for another to
//! finish its whole download.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use piratebay_sync::ServerConfig;

use super::support::*;

/// Downloading connections, four times the workers.
const CONNECTIONS: usize = 32;
const WORKERS: usize = 8;
/// Range requests per connection and their size.
const REQUESTS: usize = 48;
const RANGE: usize = 256 * 1024;
/// Pause between an answer and the next request (a client hashing the
/// piece): each connection downloads for over 2 s, so connections that
/// waited for a free worker would wait longer than the bound.
const THINK: Duration = Duration::from_millis(50);
/// Longest any connection may wait for its next byte.
const BOUND: Duration = Duration::from_secs(2);

/// Downloads `REQUESTS` ranges on one keep-alive connection; returns the
/// longest wait for a byte (from a request, or between two reads).
fn download(addr: SocketAddr, path: &str, content: &[u8], seed: u64) -> Duration {
    let mut s = connect(addr);
    let mut rng = Rng::new(seed);
    let mut longest = Duration::ZERO;
    let mut chunk = vec![0u8; 64 * 1024];
    for i in 0..REQUESTS {
        let start = rng.below((content.len() - RANGE) as u64) as usize;
        let end = start + RANGE - 1;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nRange: bytes={start}-{end}\r\n\r\n"
        )
        .unwrap();
        let mut received = Vec::with_capacity(RANGE + 1024);
        let mut last = Instant::now();
        let answer = loop {
            if let Some((answer, rest)) = parse_answer(&received, false) {
                assert!(rest.is_empty(), "bytes past the answer");
                break answer;
            }
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "request {i}: the server closed the connection");
            longest = longest.max(last.elapsed());
            last = Instant::now();
            received.extend_from_slice(&chunk[..n]);
        };
        assert_eq!(answer.status, 206, "request {i}");
        assert_eq!(answer.header("connection"), Some("keep-alive"));
        assert!(
            answer.body == content[start..=end],
            "request {i}: wrong bytes"
        );
        std::thread::sleep(THINK);
    }
    longest
}

#[test]
fn thirty_two_downloading_connections_share_eight_workers_fairly() {
    let config = ServerConfig {
        workers: WORKERS,
        ..test_config("tfair")
    };
    let fx = Fixture::start(config);
    let content = data(16 * 1024 * 1024, 40);
    let (sha1, _) = fx.add_file("shared.bin", &content);
    let (path, addr) = (format!("/v1/files/{sha1}"), fx.addr());
    let waits: Vec<Duration> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CONNECTIONS)
            .map(|i| {
                let (path, content) = (&path, &content);
                s.spawn(move || download(addr, path, content, i as u64 + 1))
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let worst = waits.iter().max().copied().unwrap_or_default();
    assert!(
        worst < BOUND,
        "a connection waited {worst:?} for its next byte (all waits: {waits:?})"
    );
    assert_eq!(
        fx.source.opens.load(std::sync::atomic::Ordering::SeqCst),
        (CONNECTIONS * REQUESTS) as u64
    );
}
