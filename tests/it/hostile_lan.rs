//! A hostile host on the LAN (issue 14): it writes under the peers prefix
//! without auth (forged, stolen, deleted, oversized and mismatched keys),
//! serves catalogs that are huge, silent or full of terminal escapes, and
//! plays with the files a `get` writes. Real etcd, real `serve` and `get`
//! processes, hostile peers written here.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use piratebay_sync::etcd::{Client, Config};
use piratebay_sync::protocol::PieceList;
use serde_json::{json, Value};

use crate::faults::{client_args, run_measured};
use crate::fetch_support::*;
use crate::support::*;

/// A peer record as a hostile host writes it.
fn record(id: &str, addr: &str, name: &str) -> String {
    json!({
        "id": id, "addr": addr, "name": name, "version": "0",
        "started_at": 0, "index_gen": 1,
    })
    .to_string()
}

fn addr_in(value: &str) -> String {
    serde_json::from_str::<Value>(value).unwrap()["addr"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Lines of `text` that are log warnings.
fn warnings(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains("WARN")).collect()
}

/// Puts every `(key, value)` through the library client, 8 threads at once.
fn put_all(ep: &str, kvs: Vec<(String, String)>) {
    let client = Client::new(Config::new([ep])).unwrap();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((k, v)) = kvs.get(i) else { break };
                client.put(k.as_bytes(), v.as_bytes(), None).unwrap();
            });
        }
    });
}

/// The text written to a terminal must carry no escape, bidi or zero-width character.
#[track_caller]
fn assert_terminal_safe(text: &str) {
    for c in text.chars() {
        assert!(
            c == '\n' || !piratebay_sync::text::is_unsafe_char(c),
            "raw {:?} reached the terminal in:\n{text}",
            c
        );
    }
}

// ---------------------------------------------------------------------------
// Discovery hijack
// ---------------------------------------------------------------------------

#[test]
fn a_stolen_or_deleted_key_is_put_back_within_a_second_and_mismatched_keys_are_ignored() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let mut peer = Serve::new(&ep).start();
    let id = peer.id();
    let key = format!("/piratebay/peers/{id}");
    let honest = wait_for(Duration::from_secs(10), "registered", || etcd.get(&key));
    let honest_addr = addr_in(&honest);
    let is_honest = || etcd.get(&key).is_some_and(|v| addr_in(&v) == honest_addr);

    etcd.put(&key, &record(&id, "127.0.0.1:9", "thief"));
    let stolen = Instant::now();
    wait_until(
        Duration::from_secs(1),
        "the overwritten key put back",
        is_honest,
    );
    eprintln!("overwritten key put back after {:?}", stolen.elapsed());
    peer.proc
        .wait_log_contains(Duration::from_secs(5), "was overwritten by someone else");

    let deleted = gateway_post(
        &ep,
        "/v3/kv/deleterange",
        &json!({ "key": base64_of(key.as_bytes()) }),
    )
    .unwrap();
    assert_eq!(deleted["deleted"], "1");
    let gone = Instant::now();
    wait_until(
        Duration::from_secs(1),
        "the deleted key put back",
        is_honest,
    );
    eprintln!("deleted key put back after {:?}", gone.elapsed());

    // A key naming the honest id from another key, and a forged id: ignored.
    etcd.put(
        "/piratebay/peers/aaaa",
        &record(&id, "127.0.0.1:9", "sybil"),
    );
    etcd.put(
        "/piratebay/peers/a\u{1b}[2J",
        &record("a\u{1b}[2J", "127.0.0.1:9", "escape"),
    );
    let out = cli(&["list", "--json", "--etcd", &ep]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let listed: Vec<Value> = serde_json::from_str(&stdout_text(&out)).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["addr"], honest_addr.as_str());
    let err = stderr_text(&out);
    assert_eq!(warnings(&err).len(), 1, "{err}");
    assert!(
        err.contains("ignored 2 key(s)") && err.contains("1 whose key does not match"),
        "{err}"
    );

    // A graceful stop takes the (re-taken) key with it.
    peer.proc.sigterm();
    peer.proc.wait_exit(Duration::from_secs(10));
    assert!(etcd.get(&key).is_none(), "the key outlived the peer");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---------------------------------------------------------------------------
// Records that break listings; names that drive terminals
// ---------------------------------------------------------------------------

#[test]
fn oversized_records_and_hostile_names_do_not_break_list_files_or_get() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ns = "bigvals";
    let dataset = tempfile::tempdir().unwrap();
    let sha1 = random_file(&dataset.path().join("a.bin"), 300_000, 7);
    let peer = Serve::new(&ep)
        .arg("--namespace", ns)
        .dataset(dataset.path())
        .start();
    let id = peer.id();
    let mut kvs: Vec<(String, String)> = (0..5)
        .map(|i| (format!("/{ns}/peers/big{i}"), "x".repeat(1_400_000)))
        .collect();
    let long = "n".repeat(70_000);
    kvs.push((
        format!("/{ns}/peers/longname"),
        record("longname", "127.0.0.1:9", &long),
    ));
    let nasty = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}gpj.exe\u{200b}";
    kvs.push((
        format!("/{ns}/peers/nasty"),
        record("nasty", "127.0.0.1:9", nasty),
    ));
    put_all(&ep, kvs);
    let state = tempfile::tempdir().unwrap();

    let out = cli(&["list", "--etcd", &ep, "--namespace", ns]);
    let (text, err) = (stdout_text(&out), stderr_text(&out));
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(text.contains(&id) && text.contains("nasty"), "{text}");
    assert!(
        text.contains("\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{202e}"),
        "{text}"
    );
    assert_terminal_safe(&text);
    assert_eq!(warnings(&err).len(), 1, "{err}");
    assert!(
        err.contains("ignored 6 key(s)") && err.contains("6 over"),
        "{err}"
    );

    let out = cli(&client_args("files", &ep, ns, state.path(), &[]));
    // 1: a partial result (the nasty record's address answers nothing).
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    assert!(stdout_text(&out).contains(&sha1.to_hex()));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let out = cli(&client_args(
        "get",
        &ep,
        ns,
        state.path(),
        &[&sha1.to_hex(), "--dir", &d],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(sha1_of_file(&dir.path().join("a.bin")), sha1);
}

#[test]
fn catalog_names_are_escaped_on_screen_and_never_give_hidden_or_bidi_file_names() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ns = "names";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.bin");
    random_file(&path, 200_000, 3);
    let mut served = Served::honest(&path);
    served.name = ".bashrc\u{202e}gpj.exe".into();
    let other = dir.path().join("other.bin");
    random_file(&other, 1000, 4);
    let mut shouting = Served::honest(&other);
    shouting.name = "\u{1b}]0;owned\u{7}\u{1b}[31mred\u{200b}\u{2067}".into();
    let peer = TestPeer::start("names0", vec![served.clone(), shouting]);
    let _reg = peer.register(&ep, ns);
    let state = dir.path().join("state");

    let out = cli(&client_args("files", &ep, ns, &state, &[]));
    let text = stdout_text(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert!(text.contains(".bashrc\\u{202e}gpj.exe"), "{text}");
    assert!(text.contains("\\u{1b}[31mred\\u{200b}\\u{2067}"), "{text}");
    assert_terminal_safe(&text);

    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let d = out_dir.display().to_string();
    let out = cli(&client_args(
        "get",
        &ep,
        ns,
        &state,
        &[&served.sha1().to_hex(), "--dir", &d],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_terminal_safe(&stdout_text(&out));
    let names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["bashrcgpj.exe".to_string()]);
    assert_eq!(sha1_of_file(&out_dir.join(&names[0])), served.sha1());
}

// ---------------------------------------------------------------------------
// Client memory and time against many peers
// ---------------------------------------------------------------------------

/// Entries of each hostile catalog: just under 16 MiB of JSON.
const BIG_CATALOG_ENTRIES: usize = (16 * 1024 * 1024 - 200) / 94;

/// Peak RSS allowed to `files` or `get` against 30 catalogs of 16 MiB.
const PEAK_RSS_KIB: u64 = 256 * 1024;

/// One entry of hostile catalog `peer`, 94 bytes with its comma.
fn big_entry(peer: usize, i: usize) -> String {
    format!(r#"{{"sha1":"{peer:08x}{i:032x}","size":1,"name":"n{i:07}","piece_size":1}},"#)
}

/// Serves a catalog of [`BIG_CATALOG_ENTRIES`] distinct files, streamed.
fn big_catalog_conn(mut s: TcpStream, peer: usize, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = Vec::new();
    if next_request_head(&mut s, &mut buf, stop).is_none() {
        return;
    }
    let open = r#"{"generation":1,"files":["#;
    let close = r#"{"sha1":"ffffffffffffffffffffffffffffffffffffffff","size":1,"name":"end","piece_size":1}]}"#;
    let len = open.len() + BIG_CATALOG_ENTRIES * big_entry(peer, 0).len() + close.len();
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{open}"
    );
    let mut chunk = String::with_capacity(1 << 16);
    for i in 0..BIG_CATALOG_ENTRIES {
        chunk.push_str(&big_entry(peer, i));
        if chunk.len() >= 1 << 16 {
            if stop.load(Ordering::Relaxed) || s.write_all(chunk.as_bytes()).is_err() {
                return;
            }
            chunk.clear();
        }
    }
    chunk.push_str(close);
    let _ = s.write_all(chunk.as_bytes());
}

#[test]
fn thirty_huge_catalogs_leave_files_and_get_bounded_in_memory_and_cache() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ns = "bigcat";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wanted.bin");
    random_file(&path, 1 << 20, 9);
    let served = Served::honest(&path);
    let honest = TestPeer::start("honest", vec![served.clone()]);
    let _reg = honest.register(&ep, ns);
    let hostile: Vec<RawPeer> = (0..30)
        .map(|p| RawPeer::start("bigcat", move |s, stop| big_catalog_conn(s, p, stop)))
        .collect();
    put_all(
        &ep,
        hostile
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let id = format!("big{i:02}");
                (
                    format!("/{ns}/peers/{id}"),
                    record(&id, &h.addr.to_string(), "big"),
                )
            })
            .collect(),
    );
    let state = dir.path().join("state");

    // Searched, so that this process (whose peak RSS a child inherits
    // through fork) never holds the big listing.
    let (out, rss) = run_measured(
        &client_args("files", &ep, ns, &state, &["--search", "wanted"]),
        Duration::from_secs(60),
    );
    let err = stderr_text(&out);
    // 1: a partial result (the peers over the budget were left out).
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(stdout_text(&out).contains(&served.sha1().to_hex()));
    assert!(err.contains("over the catalog budget"), "{err}");
    assert_eq!(warnings(&err).len(), 1, "{err}");
    eprintln!("files: peak RSS {} MiB", rss / 1024);
    assert!(rss < PEAK_RSS_KIB, "files peaked at {rss} KiB");
    let cache = std::fs::metadata(state.join("catalog-cache.bin"))
        .unwrap()
        .len();
    assert!(cache <= 64 << 20, "catalog cache of {cache} bytes");

    let out_path = dir.path().join("got.bin");
    let (out, rss) = run_measured(
        &client_args(
            "get",
            &ep,
            ns,
            &state,
            &[
                &served.sha1().to_hex(),
                "-o",
                &out_path.display().to_string(),
            ],
        ),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(sha1_of_file(&out_path), served.sha1());
    eprintln!("get: peak RSS {} MiB", rss / 1024);
    assert!(rss < PEAK_RSS_KIB, "get peaked at {rss} KiB");
}

#[test]
fn ten_thousand_records_at_silent_or_closed_ports_cost_one_deadline_and_one_warning() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ns = "silent";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wanted.bin");
    random_file(&path, 300_000, 11);
    let served = Served::honest(&path);
    let honest = TestPeer::start("zz-honest", vec![served.clone()]);
    let _reg = honest.register(&ep, ns);
    // 64 listeners on one host that accept (in the kernel) and never answer,
    // and a port where nothing listens.
    let ip = next_loopback_ip();
    let silent: Vec<TcpListener> = (0..64)
        .map(|_| TcpListener::bind((ip, 0)).unwrap())
        .collect();
    let closed = free_addr();
    let kvs: Vec<(String, String)> = (0..10_000)
        .map(|i| {
            let id = format!("s{i:05}");
            let addr = if i % 2 == 0 {
                silent[i % silent.len()].local_addr().unwrap().to_string()
            } else {
                closed.to_string()
            };
            (format!("/{ns}/peers/{id}"), record(&id, &addr, "sybil"))
        })
        .collect();
    put_all(&ep, kvs);
    let state = dir.path().join("state");

    let started = Instant::now();
    let out = cli_with(
        &client_args("files", &ep, ns, &state, &["--json"]),
        &[],
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    eprintln!("files with 10,000 silent or closed peers: {took:?}");
    let err = stderr_text(&out);
    // 1: a partial result (10,000 peers could not be asked).
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(stdout_text(&out).contains(&served.sha1().to_hex()));
    assert_eq!(warnings(&err).len(), 1, "{err}");
    assert!(err.contains("10000 of 10001 peer(s) left out"), "{err}");
    // The 5 s deadline for asking peers, plus reading 10,001 keys.
    assert!(took < Duration::from_secs(20), "files took {took:?}");

    let out_path = dir.path().join("got.bin");
    let out = cli_with(
        &client_args(
            "get",
            &ep,
            ns,
            &state,
            &[
                &served.sha1().to_hex(),
                "-o",
                &out_path.display().to_string(),
            ],
        ),
        &[],
        Duration::from_secs(60),
    );
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(sha1_of_file(&out_path), served.sha1());
    assert!(warnings(&err).len() <= 2, "{err}");
    drop(silent);
}

// ---------------------------------------------------------------------------
// Local files
// ---------------------------------------------------------------------------

#[test]
fn part_and_state_files_planted_as_symlinks_are_never_written_through() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ns = "links";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.bin");
    random_file(&path, 600_000, 5);
    let served = Served::honest(&path);
    let peer = TestPeer::start("links0", vec![served.clone()]);
    let _reg = peer.register(&ep, ns);
    let state = dir.path().join("state");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let output = out_dir.path().join("got.bin");
    let get = || {
        cli(&client_args(
            "get",
            &ep,
            ns,
            &state,
            &[&served.sha1().to_hex(), "-o", &output.display().to_string()],
        ))
    };

    std::os::unix::fs::symlink(&victim, part_path(&output)).unwrap();
    let out = get();
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    std::fs::remove_file(part_path(&output)).unwrap();

    let mut tmp = state_path(&output).into_os_string();
    tmp.push(".tmp");
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    let out = get();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(sha1_of_file(&output), served.sha1());
}

/// A peer serving `served` whose range requests past `gate_at` wait until
/// `open` is set; counts the range requests it got.
fn gated_conn(
    mut s: TcpStream,
    served: &Served,
    gate_at: u64,
    open: &AtomicBool,
    waiting: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = Vec::new();
    while let Some(head) = next_request_head(&mut s, &mut buf, stop) {
        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
        if head.starts_with("HEAD ") {
            // What `get` asks every peer first: do you hold the whole file?
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"{}\"\r\nContent-Disposition: attachment; filename=\"gated.bin\"\r\n\r\n",
                served.pieces.size,
                served.sha1()
            );
            continue;
        }
        let body: Vec<u8> = if target == "/v1/files" {
            json!({"generation": 1, "files": [{
                "sha1": served.sha1(), "size": served.pieces.size,
                "name": "gated.bin", "piece_size": served.pieces.piece_size,
            }]})
            .to_string()
            .into_bytes()
        } else if target.ends_with("/pieces") {
            serde_json::to_vec(&served.pieces).unwrap()
        } else {
            let range = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("range: bytes=")
                        .map(str::to_string)
                })
                .and_then(|r| {
                    let (a, b) = r.trim().split_once('-')?;
                    Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
                });
            let (a, b) = range.unwrap_or((0, served.pieces.size - 1));
            // A request reaching into the last quarter (one range may
            // carry several pieces) waits.
            if b >= gate_at {
                waiting.fetch_add(1, Ordering::SeqCst);
                while !open.load(Ordering::SeqCst) {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let data = std::fs::read(&served.data).unwrap();
            let body = &data[a as usize..=b as usize];
            let _ = write!(
                s,
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{}\r\n\r\n",
                body.len(),
                served.pieces.size
            );
            if s.write_all(body).is_err() {
                return;
            }
            continue;
        };
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if s.write_all(&body).is_err() {
            return;
        }
    }
}

#[test]
fn a_part_changed_by_another_process_during_a_resumed_get_is_never_renamed_into_place() {
    // A small file (written through the page cache), the writer still
    // open when the download ends.
    part_changed_by_another_process("changed", 8 * SMALL_PIECE, true);
}

#[test]
fn a_part_written_directly_and_changed_through_a_second_descriptor_is_never_renamed_into_place() {
    // A file big enough for direct writes, its last piece short; the
    // writer closed before the download ends.
    part_changed_by_another_process("changed-direct", (9 << 20) + 1000, false);
}

/// A resumed `get` of a file of `size` bytes waits at a gate for its last
/// quarter while another process writes one byte of its verified half
/// through a second descriptor (giving the `.part` write permission first
/// when it must: it is read-only while downloading), closed at once or
/// kept open (`keep_open`): the get must refuse to land it; the next run
/// fetches the changed piece again.
fn part_changed_by_another_process(ns: &str, size: u64, keep_open: bool) {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.bin");
    random_file(&path, size, 13);
    let served = Served::honest(&path);
    let sha1 = served.sha1();
    // A resumable .part: the first half of the pieces verified.
    let out_dir = tempfile::tempdir().unwrap();
    let output = out_dir.path().join("got.bin");
    let data = std::fs::read(&path).unwrap();
    let list: &PieceList = &served.pieces;
    let n = list.len();
    let half = (n / 2) * list.piece_size as usize;
    std::fs::write(part_path(&output), &data[..half]).unwrap();
    let done: Vec<bool> = (0..n).map(|i| i < n / 2).collect();
    write_state(&output, list, &done);
    let gate_at = (n * 3 / 4) as u64 * list.piece_size;

    let open = Arc::new(AtomicBool::new(false));
    let waiting = Arc::new(AtomicUsize::new(0));
    let peer = {
        let (served, open, waiting) = (served.clone(), open.clone(), waiting.clone());
        RawPeer::start("gated", move |s, stop| {
            gated_conn(s, &served, gate_at, &open, &waiting, stop)
        })
    };
    put_all(
        &ep,
        vec![(
            format!("/{ns}/peers/gated"),
            record("gated", &peer.addr.to_string(), "gated"),
        )],
    );
    let state = dir.path().join("state");
    let mut child = command()
        .args(client_args(
            "get",
            &ep,
            ns,
            &state,
            &[
                &sha1.to_hex(),
                "-o",
                &output.display().to_string(),
                "--json",
            ],
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Pieces 4 and 5 arrived, 6 waits: the salvaged half was hashed long ago.
    wait_until(
        Duration::from_secs(20),
        "the get waiting at the gate",
        || waiting.load(Ordering::SeqCst) > 0,
    );
    let part_mode = std::fs::metadata(part_path(&output)).unwrap().mode();
    assert_eq!(
        part_mode & 0o222,
        0,
        "the .part is read-only while downloading"
    );
    let part = open_to_write(&part_path(&output));
    std::os::unix::fs::FileExt::write_all_at(&part, &[data[100] ^ 0xff], 100).unwrap();
    let part = keep_open.then_some(part);
    open.store(true, Ordering::SeqCst);
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("get exits");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("changed on disk"), "{err}");
    assert!(!output.exists(), "a wrong file was renamed into place");
    // The next run fetches the changed piece again.
    open.store(true, Ordering::SeqCst);
    let out = cli(&client_args(
        "get",
        &ep,
        ns,
        &state,
        &[&sha1.to_hex(), "-o", &output.display().to_string()],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(sha1_of_file(&output), sha1);
    let meta = std::fs::metadata(&output).unwrap();
    assert_eq!(meta.size(), data.len() as u64);
    drop(part);
}

/// Opens `path` for writing as another process of the user would: if it
/// is refused (no `CAP_DAC_OVERRIDE`), after giving the file write
/// permission.
fn open_to_write(path: &std::path::Path) -> std::fs::File {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::OpenOptions::new().write(true).open(path).unwrap()
        }
    }
}
