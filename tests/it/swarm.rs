//! The swarm on loopback: hosts downloading into the dataset their own
//! `serve` shares serve every verified piece meanwhile, and other
//! downloads use them. Real `serve` and `get` processes, a real etcd.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use piratebay_sync::protocol::PieceList;
use piratebay_sync::Sha1Digest;
use serde_json::Value;

use piratebay_sync::Holder;

use crate::fetch_support::*;
use crate::support::*;

/// The piece size of every file of up to 16 MiB: tests size files in it.
const PIECE: u64 = piratebay_sync::protocol::BASE_BLOCK;

fn http(url: &str, range: Option<(u64, u64)>) -> Option<(u16, Vec<u8>)> {
    let mut req = ureq::get(url).config().http_status_as_error(false).build();
    if let Some((a, b)) = range {
        req = req.header("Range", &format!("bytes={a}-{b}"));
    }
    let resp = req.call().ok()?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .ok()?;
    Some((status, body))
}

/// A `get` process writing its JSON summary to stdout.
fn spawn_get(ep: &str, sha: &Sha1Digest, out: &Path, state: &Path, rate: &str) -> Child {
    command()
        .args(["get", &sha.to_hex(), "-o"])
        .arg(out)
        .args(["--json", "--max-rate", rate, "--etcd", ep, "--state-dir"])
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("get starts")
}

fn summary_of(child: Child) -> Value {
    let out = child.wait_with_output().expect("get runs");
    assert!(
        out.status.success(),
        "get failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("get --json prints a summary")
}

/// A seed serving one random file of `size` bytes; returns it and the sha1.
fn seed(ep: &str, dir: &Path, size: u64) -> (ServePeer, Sha1Digest) {
    let data = dir.join("seed-data");
    std::fs::create_dir_all(&data).unwrap();
    let sha = random_file(&data.join("big.bin"), size, 42);
    let peer = Serve::new(ep).dataset(&data).start();
    wait_until(Duration::from_secs(20), "seed lists its file", || {
        let out = cli(&["files", "--json", "--etcd", ep]);
        stdout_text(&out).contains(&sha.to_hex())
    });
    (peer, sha)
}

fn addr_of(ep: &str, id: &str) -> String {
    wait_for(Duration::from_secs(10), "peer listed", || {
        let out = cli(&["list", "--json", "--etcd", ep]);
        let peers: Vec<Value> = serde_json::from_str(&stdout_text(&out)).ok()?;
        peers
            .iter()
            .find(|p| p["id"] == id)
            .and_then(|p| p["addr"].as_str())
            .map(str::to_string)
    })
}

#[test]
fn hosts_fetching_at_once_trade_verified_pieces_and_all_finish_correct() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let size = 48 * PIECE + 1000;
    let (seed, sha) = seed(&ep, dir.path(), size);
    let seed_id = seed.id();
    // Four hosts: each a serve sharing the directory its get writes into.
    let hosts: Vec<ServePeer> = (0..4).map(|_| Serve::new(&ep).start()).collect();
    for h in &hosts {
        let id = h.id();
        wait_until(Duration::from_secs(10), "host registered", || {
            stdout_text(&cli(&["list", "--etcd", &ep])).contains(&id)
        });
    }
    // Paced so that the pieces are on the hosts for a while (3 s alone).
    let rate = (size / 3).to_string();
    let outs: Vec<PathBuf> = hosts.iter().map(|h| h.dataset.join("big.bin")).collect();
    let gets: Vec<Child> = hosts
        .iter()
        .zip(&outs)
        .map(|(h, out)| spawn_get(&ep, &sha, out, &h.state_dir.join("get"), &rate))
        .collect();
    let summaries: Vec<Value> = gets.into_iter().map(summary_of).collect();
    let host_ids: Vec<String> = hosts.iter().map(ServePeer::id).collect();
    let mut from_hosts = 0;
    for (s, out) in summaries.iter().zip(&outs) {
        assert_eq!(sha1_of_file(out), sha);
        assert!(s["bad_peers"].as_array().unwrap().is_empty(), "{s}");
        let used: Vec<&str> = s["peers_used"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        from_hosts += used
            .iter()
            .filter(|u| host_ids.iter().any(|h| h == *u))
            .count();
        assert!(used.contains(&seed_id.as_str()) || !used.is_empty(), "{s}");
    }
    assert!(
        from_hosts >= 2,
        "downloads should take pieces from other downloading hosts: {summaries:?}"
    );
    // Every host now serves the whole file from its dataset.
    for h in &hosts {
        let addr = addr_of(&ep, &h.id());
        let (status, body) = wait_for(Duration::from_secs(10), "host serves the file", || {
            http(&format!("http://{addr}/v1/files/{sha}"), None).filter(|(s, _)| *s == 200)
        });
        assert_eq!(status, 200);
        assert_eq!(Sha1Digest::of(&body), sha);
    }
    // Once landed and indexed, each host's /metrics still says where its
    // download's bytes came from, and the sum is the file (a download
    // that landed before its peer read a state with counters shows 0).
    for h in &hosts {
        let addr = addr_of(&ep, &h.id());
        wait_for(
            Duration::from_secs(10),
            "the file in the host's index",
            || {
                let (_, body) = http(&format!("http://{addr}/v1/files"), None)?;
                String::from_utf8_lossy(&body)
                    .contains(&sha.to_hex())
                    .then_some(())
            },
        );
        let sample = |from: &str| -> Option<u64> {
            let (_, body) = http(&format!("http://{addr}/metrics"), None)?;
            let text = String::from_utf8(body).ok()?;
            let head = format!("pbs_download_source_bytes{{sha1=\"{sha}\",from=\"{from}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(head.as_str()))
                .and_then(|v| v.trim().parse().ok())
        };
        let (seeds, partials) = wait_for(
            Duration::from_secs(10),
            "the landed download in /metrics",
            || Some((sample("seed")?, sample("partial")?)),
        );
        assert!(seeds + partials <= size, "{seeds} + {partials} of {size}");
    }
}

#[test]
fn a_killed_get_keeps_its_verified_pieces_shared_and_only_those() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let size = 40 * PIECE + 7;
    let (seed, sha) = seed(&ep, dir.path(), size);
    let host = Serve::new(&ep).start();
    let addr = addr_of(&ep, &host.id());
    let out = host.dataset.join("half.bin");
    // 8 pieces a second: some are done, most are not, when it is killed.
    let mut get = spawn_get(
        &ep,
        &sha,
        &out,
        &host.state_dir.join("get"),
        &(8 * PIECE).to_string(),
    );
    let have_url = format!("http://{addr}/v1/files/{sha}/have");
    let have = wait_for(Duration::from_secs(20), "host serves some pieces", || {
        http(&have_url, None).filter(|(s, b)| *s == 200 && b.iter().any(|x| *x != 0))
    })
    .1;
    get.kill().unwrap();
    let _ = get.wait();
    drop(seed);
    // The bitmap may have grown before the kill: read it once more.
    let (status, have) = http(&have_url, None).unwrap_or((0, have));
    assert_eq!(status, 200);
    let n = size.div_ceil(PIECE) as usize;
    assert_eq!(have.len(), n.div_ceil(8));
    let held: Vec<usize> = (0..n)
        .filter(|i| have[i / 8] & (1 << (i % 8)) != 0)
        .collect();
    let missing: Vec<usize> = (0..n).filter(|i| !held.contains(i)).collect();
    assert!(!held.is_empty() && !missing.is_empty(), "held {held:?}");
    // The piece list is the seed's; a held piece is served and right...
    let (status, list) = http(&format!("http://{addr}/v1/files/{sha}/pieces"), None).unwrap();
    assert_eq!(status, 200);
    let list: PieceList = serde_json::from_slice(&list).unwrap();
    let i = held[0] as u64;
    let (status, bytes) = http(
        &format!("http://{addr}/v1/files/{sha}"),
        Some((i * PIECE, (i + 1) * PIECE - 1)),
    )
    .unwrap();
    assert_eq!(status, 206);
    assert!(list.verify(i as usize, &bytes), "piece {i} verifies");
    // ...a missing one, or the whole file, is not.
    let j = missing[0] as u64;
    let (status, _) = http(
        &format!("http://{addr}/v1/files/{sha}"),
        Some((j * PIECE, j * PIECE)),
    )
    .unwrap();
    assert_eq!(status, 416);
    let (status, _) = http(&format!("http://{addr}/v1/files/{sha}"), None).unwrap();
    assert_eq!(status, 416);
    // The catalog never lists the partial file.
    let (_, catalog) = http(&format!("http://{addr}/v1/files"), None).unwrap();
    assert!(!String::from_utf8_lossy(&catalog).contains(&sha.to_hex()));
}

/// Writes one HTTP response on a raw peer's connection.
fn respond(s: &mut std::net::TcpStream, status: &str, headers: &str, body: &[u8]) -> bool {
    use std::io::Write;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).is_ok() && s.write_all(body).is_ok()
}

/// The byte range (first, last) a request head asks for; the whole file
/// of `size` bytes without a `Range`.
fn asked_range(head: &str, size: u64) -> (u64, u64) {
    let spec = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("range: bytes=")
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("0-{}", size - 1));
    let (a, b) = spec.split_once('-').unwrap();
    (a.trim().parse().unwrap(), b.trim().parse().unwrap())
}

/// A raw peer: `answer` (given the request head) answers each request of
/// each connection, which closes when it returns false.
fn raw_requests<F>(name: &str, answer: F) -> RawPeer
where
    F: Fn(&mut std::net::TcpStream, &str) -> bool + Clone + Send + 'static,
{
    RawPeer::start(name, move |mut s, stop| {
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = Vec::new();
        while let Some(head) = next_request_head(&mut s, &mut buf, stop) {
            if !answer(&mut s, &head) {
                return;
            }
        }
    })
}

/// The target of a request head.
fn target_of(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap_or("")
}

/// A raw peer answering the honest piece list, and `rest` (given the
/// request head) for everything else.
fn raw_partial<F>(name: &str, served: &Served, rest: F) -> RawPeer
where
    F: Fn(&mut std::net::TcpStream, &str) -> bool + Clone + Send + 'static,
{
    let list = serde_json::to_vec(&served.pieces).unwrap();
    raw_requests(name, move |s, head| {
        if target_of(head).ends_with("/pieces") {
            respond(s, "200 OK", "Content-Type: application/json\r\n", &list)
        } else {
            rest(s, head)
        }
    })
}

#[test]
fn hostile_partial_holders_beside_an_honest_one_cannot_stop_the_download() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    random_file(&src, 12 * SMALL_PIECE + 3, 21);
    let served = Served::honest(&src);
    let n = served.pieces.len();
    let full = vec![0xffu8; n.div_ceil(8)];
    let mut full_bits = full.clone();
    if n % 8 != 0 {
        *full_bits.last_mut().unwrap() = (1u8 << (n % 8)) - 1;
    }
    let honest = TestPeer::start("honest", vec![served.clone()]);
    // Claims every piece, serves none.
    let bits = full_bits.clone();
    let refuses = raw_partial("refuses", &served, move |s, t| {
        if t.contains("/have ") {
            respond(s, "200 OK", "", &bits)
        } else {
            respond(s, "416 Range Not Satisfiable", "", b"no\n")
        }
    });
    // Claims every piece, serves garbage of the right length.
    let bits = full_bits.clone();
    let size = served.pieces.size;
    let garbage = raw_partial("garbage", &served, move |s, t| {
        if t.contains("/have ") {
            return respond(s, "200 OK", "", &bits);
        }
        // The range asked, with bytes of the right length and wrong content.
        let (a, b) = asked_range(t, size);
        let range = format!("Content-Range: bytes {a}-{b}/{size}\r\n");
        respond(
            s,
            "206 Partial Content",
            &range,
            &vec![0x5a; (b - a + 1) as usize],
        )
    });
    // A bitmap of the wrong length.
    let bad_map = raw_partial("badmap", &served, move |s, _| {
        respond(s, "200 OK", "", &[1, 2, 3, 4, 5, 6, 7])
    });
    let holders = vec![
        refuses.holder("refuses"),
        garbage.holder("garbage"),
        bad_map.holder("badmap"),
        honest.holder(),
    ];
    let out = dir.path().join("out");
    // Paced (about 1.5 s), so every liar's worker is asked something before
    // the honest holder alone could finish, however busy the machine is.
    let mut o = opts();
    o.max_rate = Some(2 << 20);
    let summary = download(o, &served, &out, &holders, None).unwrap();
    assert_eq!(sha1_of_file(&out), served.sha1());
    for liar in ["refuses", "garbage", "badmap"] {
        assert!(
            summary.bad_peers.iter().any(|b| b.starts_with(liar)),
            "{liar} not named: {:?}",
            summary.bad_peers
        );
    }
    assert!(!summary.bad_peers.iter().any(|b| b.starts_with("honest")));
}

#[test]
fn sybil_records_that_answer_503_or_stall_do_not_starve_the_honest_holders() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    random_file(&src, 16 * SMALL_PIECE, 22);
    let served = Served::honest(&src);
    let honest: Vec<TestPeer> = (0..2)
        .map(|i| TestPeer::start(&format!("honest{i}"), vec![served.clone()]))
        .collect();
    let busy = raw_partial("busy", &served, |s, _| {
        respond(
            s,
            "503 Service Unavailable",
            "Retry-After: 1\r\n",
            b"busy\n",
        )
    });
    let staller = EvilPeer::start(Evil::Stall, &served);
    for (sybil, count) in [(&busy, 8), (&staller, 16)] {
        // Many records, ids sorting before the honest ones, one listener.
        let mut holders: Vec<Holder> = (0..count)
            .map(|k| sybil.holder(&format!("0sybil{k:02}")))
            .collect();
        holders.extend(honest.iter().map(TestPeer::holder));
        let out = dir.path().join(format!("out{count}"));
        let summary = download(opts(), &served, &out, &holders, None)
            .unwrap_or_else(|e| panic!("{count} sybils: {e}"));
        assert_eq!(sha1_of_file(&out), served.sha1());
        assert!(
            summary.peers_used.iter().all(|p| p.starts_with("honest")),
            "{summary:?}"
        );
    }
}

/// Status, one header's value, and the body of a GET.
fn http_header(
    url: &str,
    range: Option<(u64, u64)>,
    header: &str,
) -> (u16, Option<String>, Vec<u8>) {
    let mut req = ureq::get(url).config().http_status_as_error(false).build();
    if let Some((a, b)) = range {
        req = req.header("Range", &format!("bytes={a}-{b}"));
    }
    let resp = req.call().expect("the peer answers");
    let status = resp.status().as_u16();
    let value = resp
        .headers()
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .expect("a body");
    (status, value, body)
}

fn bits(bytes: &[u8], n: usize) -> Vec<usize> {
    (0..n)
        .filter(|i| bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// Super-seeding offers and the bitmaps that ride on piece answers: two
/// downloaders asking a seed are offered different pieces, a seed's piece
/// answer carries its next offer (`X-Fresh`), and a partial holder's piece
/// answer carries what it holds now (`X-Have`), equal to its `/have`.
#[test]
fn a_seed_offers_downloaders_different_pieces_and_piece_answers_carry_bitmaps() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let size = 40 * PIECE + 7;
    let n = size.div_ceil(PIECE) as usize;
    let (seed, sha) = seed(&ep, dir.path(), size);
    let seed_addr = addr_of(&ep, &seed.id());
    let have_url = format!("http://{seed_addr}/v1/files/{sha}/have");
    let offer = |body: &[u8]| bits(&body[n.div_ceil(8)..], n);
    let (status, _, first) = http_header(&have_url, None, "x-fresh");
    assert_eq!(status, 200);
    assert_eq!(
        first.len(),
        2 * n.div_ceil(8),
        "a seed's /have has its offer"
    );
    assert_eq!(
        bits(&first[..n.div_ceil(8)], n).len(),
        n,
        "a seed has every piece"
    );
    let (_, _, second) = http_header(&have_url, None, "x-fresh");
    let (a, b) = (offer(&first), offer(&second));
    assert_eq!((a.len(), b.len()), (4, 4), "{a:?} {b:?}");
    assert!(
        a.iter().all(|i| !b.contains(i)),
        "offers overlap: {a:?} {b:?}"
    );
    // A piece answer carries the next offer.
    let i = a[0] as u64;
    let file_url = format!("http://{seed_addr}/v1/files/{sha}");
    let (status, fresh, body) =
        http_header(&file_url, Some((i * PIECE, (i + 1) * PIECE - 1)), "x-fresh");
    assert_eq!((status, body.len() as u64), (206, PIECE));
    let fresh = unhex(&fresh.expect("X-Fresh on a seed's piece"));
    assert_eq!(bits(&fresh, n).len(), 4);
    assert!(
        !bits(&fresh, n).contains(&(i as usize)),
        "the piece just sent is offered again"
    );

    // A partial holder: pieces 0 and 2 of the file, verified, in a host's dataset.
    let host = Serve::new(&ep).start();
    let host_addr = addr_of(&ep, &host.id());
    let whole = std::fs::read(dir.path().join("seed-data/big.bin")).unwrap();
    let list = piece_list(&dir.path().join("seed-data/big.bin"));
    let out = host.dataset.join("partial.bin");
    let mut data = vec![0u8; size as usize];
    for p in [0usize, 2] {
        let r = p * PIECE as usize..(p + 1) * PIECE as usize;
        data[r.clone()].copy_from_slice(&whole[r]);
    }
    std::fs::write(part_path(&out), &data).unwrap();
    let done: Vec<bool> = (0..n).map(|p| p == 0 || p == 2).collect();
    write_state(&out, &list, &done);
    let host_have = format!("http://{host_addr}/v1/files/{sha}/have");
    let have = wait_for(
        Duration::from_secs(20),
        "the host serves its pieces",
        || http(&host_have, None).filter(|(s, b)| *s == 200 && bits(b, n) == vec![0, 2]),
    )
    .1;
    let (status, x_have, body) = http_header(
        &format!("http://{host_addr}/v1/files/{sha}"),
        Some((2 * PIECE, 3 * PIECE - 1)),
        "x-have",
    );
    assert_eq!(status, 206);
    assert!(list.verify(2, &body), "piece 2 verifies against the chain");
    assert_eq!(
        unhex(&x_have.expect("X-Have on a partial holder's piece")),
        have
    );
    // Its piece list too (a download starts from it), and not the seed's.
    let (status, x_have, _) = http_header(
        &format!("http://{host_addr}/v1/files/{sha}/pieces"),
        None,
        "x-have",
    );
    assert_eq!(status, 200);
    assert_eq!(
        unhex(&x_have.expect("X-Have on a partial holder's piece list")),
        have
    );
    let (_, x_have, _) = http_header(
        &format!("http://{seed_addr}/v1/files/{sha}/pieces"),
        None,
        "x-have",
    );
    assert_eq!(x_have, None, "a seed's piece list has no bitmap");
}

/// A worker asks for its next run of pieces while the current one's body
/// is still coming (pipelining): a holder that holds each body back until
/// the next request is in its socket (at most 300 ms) sees it nearly every
/// time, and the download is whole and correct. Adjacent pieces go in one
/// request (a run of at most `RUN_BYTES`): 13 pieces of 64 KiB take 4
/// requests, not 13.
#[test]
fn a_worker_asks_for_the_next_piece_before_the_current_body_is_read() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    random_file(&src, 12 * SMALL_PIECE + 3, 22);
    let served = Served::honest(&src);
    let data = std::fs::read(&src).unwrap();
    let size = served.pieces.size;
    let (ahead, alone) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (ahead2, alone2) = (ahead.clone(), alone.clone());
    let peer = raw_partial("pipelined", &served, move |s, t| {
        use std::io::Write;
        if t.contains("/have ") {
            return respond(s, "404 Not Found", "", b"complete\n");
        }
        let (a, b) = asked_range(t, size);
        let (a, b) = (a as usize, b as usize);
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{size}\r\n\r\n",
            b - a + 1
        );
        if s.write_all(head.as_bytes()).is_err() {
            return false;
        }
        // The body waits until the next request is here, or 300 ms (well
        // within the download's 1 s stall timeout).
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        let mut probe = [0u8; 1];
        match s.peek(&mut probe) {
            Ok(n) if n > 0 => ahead2.fetch_add(1, Ordering::SeqCst),
            _ => alone2.fetch_add(1, Ordering::SeqCst),
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        s.write_all(&data[a..=b]).is_ok()
    });
    let out = dir.path().join("out");
    let holders = vec![peer.holder("pipelined")];
    let summary = download(opts(), &served, &out, &holders, None).unwrap();
    assert_eq!(sha1_of_file(&out), served.sha1());
    assert!(summary.bad_peers.is_empty(), "{:?}", summary.bad_peers);
    let (ahead, alone) = (ahead.load(Ordering::SeqCst), alone.load(Ordering::SeqCst));
    // Runs of 4 pieces: [0, 4), [4, 8), [8, 12), [12]; only the last
    // request of a connection has nothing to ask after it (a loaded
    // machine may be late once).
    assert!(
        ahead + alone <= 5 && ahead >= 2,
        "pipelined {ahead}, alone {alone}"
    );
}

/// A partial holder's piece list comes with its bitmap (`X-Have`), and
/// the download's first worker there goes on on that list's connection
/// with a piece request: no second connect, no `/have` first.
#[test]
fn a_partial_holders_first_piece_request_rides_its_piece_list_connection() {
    use std::sync::Arc;
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    random_file(&src, 12 * SMALL_PIECE + 3, 23);
    let served = Served::honest(&src);
    let data = std::fs::read(&src).unwrap();
    let size = served.pieces.size;
    let n = served.pieces.len();
    // Holds (and says it holds) every piece but the last.
    let mut bits = piratebay_sync::protocol::Bitfield::empty(n);
    for i in 0..n - 1 {
        bits.set(i);
    }
    let (have, have_hex) = (bits.as_bytes().to_vec(), bits.to_hex());
    let list = serde_json::to_vec(&served.pieces).unwrap();
    // What was asked, in order, with the client's port (one per connection).
    let asked: Arc<parking_lot::Mutex<Vec<(u16, &'static str)>>> = Arc::default();
    let asked2 = asked.clone();
    let peer = raw_requests("welcoming", move |s, head| {
        let target = target_of(head);
        let (kind, ok) = if target.ends_with("/pieces") {
            let extra = format!("Content-Type: application/json\r\nX-Have: {have_hex}\r\n");
            ("pieces", respond(s, "200 OK", &extra, &list))
        } else if target.contains("/have") {
            ("have", respond(s, "200 OK", "", &have))
        } else {
            let (a, b) = asked_range(head, size);
            let (a, b) = (a as usize, b as usize);
            let last_piece = (n - 1) * SMALL_PIECE as usize;
            let ok = if b < last_piece {
                respond_range(s, a, b, size, &data)
            } else {
                respond(s, "416 Range Not Satisfiable", "", b"no\n")
            };
            ("piece", ok)
        };
        let port = s.peer_addr().map_or(0, |a| a.port());
        asked2.lock().push((port, kind));
        ok
    });
    let seed = TestPeer::start("seed", vec![served.clone()]);
    let out = dir.path().join("out");
    let holders = vec![peer.holder("welcoming"), seed.holder()];
    download(opts(), &served, &out, &holders, None).unwrap();
    assert_eq!(sha1_of_file(&out), served.sha1());
    let asked = asked.lock().clone();
    let (port, _) = *asked
        .iter()
        .find(|(_, kind)| *kind == "pieces")
        .unwrap_or_else(|| panic!("no piece list asked: {asked:?}"));
    let on_it: Vec<&str> = asked
        .iter()
        .filter(|(p, _)| *p == port)
        .map(|(_, kind)| *kind)
        .collect();
    assert_eq!(
        on_it.get(1),
        Some(&"piece"),
        "the piece list's connection went on with {:?} (all: {asked:?})",
        on_it.get(1)
    );
}

/// Piece lists are asked in gzip; one that does not inflate (or inflates
/// past the limit) is a bad list, and the download goes on with the
/// holders whose lists are good.
#[test]
fn piece_lists_come_in_gzip_and_a_bad_gzip_list_is_refused() {
    use std::sync::Arc;
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    random_file(&src, 6 * SMALL_PIECE + 5, 24);
    let served = Served::honest(&src);
    let asked_gzip: Arc<parking_lot::Mutex<Vec<bool>>> = Arc::default();
    let asked2 = asked_gzip.clone();
    let liar = raw_requests("badgzip", move |s, head| {
        if target_of(head).ends_with("/pieces") {
            asked2
                .lock()
                .push(head.to_ascii_lowercase().contains("accept-encoding: gzip"));
            let extra = "Content-Type: application/json\r\nContent-Encoding: gzip\r\n";
            respond(s, "200 OK", extra, b"\x1f\x8b\x08\x00 not gzip at all")
        } else {
            respond(s, "404 Not Found", "", b"")
        }
    });
    let honest = TestPeer::start("honest", vec![served.clone()]);
    let out = dir.path().join("out");
    let holders = vec![liar.holder("badgzip"), honest.holder()];
    let summary = download(opts(), &served, &out, &holders, None).unwrap();
    assert_eq!(sha1_of_file(&out), served.sha1());
    assert_eq!(summary.peers_used, vec!["honest".to_string()]);
    let asked = asked_gzip.lock().clone();
    assert!(
        !asked.is_empty() && asked.iter().all(|g| *g),
        "piece lists asked in gzip: {asked:?}"
    );
}

/// Answers bytes `a..=b` of `data` (a file of `size` bytes) as a `206`.
fn respond_range(s: &mut std::net::TcpStream, a: usize, b: usize, size: u64, data: &[u8]) -> bool {
    use std::io::Write;
    let head = format!(
        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{size}\r\n\r\n",
        b - a + 1
    );
    s.write_all(head.as_bytes()).is_ok() && s.write_all(&data[a..=b]).is_ok()
}

/// The index of `addr`'s peer, from `/v1/status`.
fn index_status(addr: &str) -> Option<Value> {
    let (status, body) = http(&format!("http://{addr}/v1/status"), None)?;
    let v: Value = serde_json::from_slice(&body).ok()?;
    (status == 200).then(|| v["index"].clone())
}

/// A download the way `get` leaves it just before its rename, in the
/// dataset of a new serving peer: `<name>.part` holds `size` random bytes
/// (`seed`) and its last state claims every piece verified. Returns the
/// peer, its address, the final path and the content's SHA1, once the
/// peer serves the partial (its registry has read that state).
fn host_with_complete_part(
    ep: &str,
    name: &str,
    size: u64,
    seed: u64,
) -> (ServePeer, String, PathBuf, Sha1Digest) {
    let host = Serve::new(ep).start();
    let addr = addr_of(ep, &host.id());
    let out = host.dataset.join(name);
    let content = host.state_dir.join(format!("{name}.content"));
    let sha = random_file(&content, size, seed);
    let list = piece_list(&content);
    std::fs::copy(&content, part_path(&out)).unwrap();
    write_state(&out, &list, &vec![true; list.len()]);
    wait_until(
        Duration::from_secs(10),
        "the host serves the partial",
        || http(&format!("http://{addr}/v1/files/{sha}/have"), None).is_some_and(|(s, _)| s == 200),
    );
    (host, addr, out, sha)
}

/// The index of `addr`'s peer once it holds one file and nothing is queued.
fn one_file_indexed(addr: &str) -> Value {
    wait_for(Duration::from_secs(20), "the host indexes the file", || {
        index_status(addr).filter(|i| i["files"] == 1 && i["queued_files"] == 0)
    })
}

/// A download that lands in the dataset of a serving peer is indexed from
/// the hashes it verified: the peer does not read the file again (in a
/// swarm every host would, just as the others need the CPU). The download's
/// files are written here as `get` writes them (its last state claims every
/// piece, then the `.part` is renamed and the state removed), the peer's
/// registry having read that last state before the rename (a real `get`
/// waits for that read, up to 250 ms).
#[test]
fn a_landed_download_is_indexed_from_its_verified_hashes_without_reading_it() {
    init_test_log();
    let etcd = EtcdServer::new();
    let (_host, addr, out, sha) =
        host_with_complete_part(&etcd.endpoint(), "landed.bin", 3 * PIECE + 100, 9);
    std::fs::rename(part_path(&out), &out).unwrap();
    std::fs::remove_file(state_path(&out)).unwrap();
    let index = one_file_indexed(&addr);
    assert_eq!(index["hashed_files"], 0, "taken from the download: {index}");
    let (status, catalog) = http(&format!("http://{addr}/v1/files"), None).unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&catalog).contains(&sha.to_hex()));
    let (status, body) = http(&format!("http://{addr}/v1/files/{sha}"), None).unwrap();
    assert_eq!((status, Sha1Digest::of(&body)), (200, sha));
}

/// The index may settle the final file before the peer's partials thread
/// sees the state removed (a loaded machine): the hashes were handed over
/// when the state first said every piece was verified, so the index takes
/// them at the rename whenever the state goes.
#[test]
fn a_landed_download_is_adopted_even_when_its_state_goes_after_the_index_looked() {
    init_test_log();
    let etcd = EtcdServer::new();
    let (_host, addr, out, sha) =
        host_with_complete_part(&etcd.endpoint(), "late.bin", 3 * PIECE + 100, 10);
    std::fs::rename(part_path(&out), &out).unwrap();
    // The state stays until the index has the file.
    let index = one_file_indexed(&addr);
    assert_eq!(index["hashed_files"], 0, "taken from the download: {index}");
    std::fs::remove_file(state_path(&out)).unwrap();
    let (status, body) = http(&format!("http://{addr}/v1/files/{sha}"), None).unwrap();
    assert_eq!((status, Sha1Digest::of(&body)), (200, sha));
}

/// A state that claims every piece of one content, beside a final file
/// that is not its `.part` (another inode, other bytes of the same size):
/// the peer hashes the file and indexes what it really holds.
#[test]
fn a_claimed_download_whose_file_is_not_the_part_is_hashed_not_adopted() {
    init_test_log();
    let etcd = EtcdServer::new();
    let (host, addr, out, _claimed) =
        host_with_complete_part(&etcd.endpoint(), "claimed.bin", 3 * PIECE, 7);
    // Other bytes under the final name, in a new file; the .part goes.
    let other = host.state_dir.join("other-content");
    let sha_other = random_file(&other, 3 * PIECE, 8);
    std::fs::copy(&other, &out).unwrap();
    std::fs::remove_file(part_path(&out)).unwrap();
    std::fs::remove_file(state_path(&out)).unwrap();
    let index = one_file_indexed(&addr);
    assert_eq!(index["hashed_files"], 1, "read, not adopted: {index}");
    let (status, _) = http(&format!("http://{addr}/v1/files/{sha_other}"), None).unwrap();
    assert_eq!(status, 200, "indexed under what it holds");
}

/// A download's state save is served and announced at once by the peer
/// sharing its directory: the save goes from the file-system watch
/// straight to the partial files (not through the index thread), and the
/// tracker's announcer is woken by the first piece (it no longer looks
/// every 50 ms; its own look is a second apart). The states are written
/// here as `get` writes them (see `support::part`).
#[test]
fn a_state_save_is_served_and_announced_by_the_peer_sharing_it_promptly() {
    use piratebay_sync::etcd::{Client, Config};
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let client = Client::new(Config::new([ep.as_str()])).unwrap();
    let host = Serve::new(&ep).start();
    let addr = addr_of(&ep, &host.id());
    let out = host.dataset.join("p.bin");
    let content = host.state_dir.join("p.content");
    let sha = random_file(&content, 3 * PIECE + 100, 4);
    let list = piece_list(&content);
    std::fs::copy(&content, part_path(&out)).unwrap();
    let held = |n: usize| {
        http(&format!("http://{addr}/v1/files/{sha}/have"), None)
            .is_some_and(|(s, body)| s == 200 && bits(&body, 4) == (0..n).collect::<Vec<_>>())
    };
    let swarm = format!("/piratebay/swarm/{sha}/");
    let announced = || {
        client.get_prefix(swarm.as_bytes()).is_ok_and(|l| {
            l.kvs
                .iter()
                .any(|kv| String::from_utf8_lossy(&kv.value).contains("\"complete\":false"))
        })
    };
    // Nothing verified yet: served (an empty bitmap), not announced.
    write_state(&out, &list, &[false; 4]);
    wait_until(Duration::from_secs(10), "the partial served", || held(0));
    assert!(!announced(), "announced before its first piece");
    let saved = std::time::Instant::now();
    write_state(&out, &list, &[true, false, false, false]);
    wait_until(Duration::from_secs(10), "the first piece served", || {
        held(1)
    });
    wait_until(Duration::from_secs(10), "announced", announced);
    let took = saved.elapsed();
    write_state(&out, &list, &[true, true, false, false]);
    wait_until(Duration::from_secs(10), "the second piece served", || {
        held(2)
    });
    // A second and more would be the announcer's own look, not its wake.
    assert!(
        took < Duration::from_millis(900),
        "served and announced {took:?} after the save"
    );
}
