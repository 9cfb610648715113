//! The status page as a memory lever (issue 23 item 5): a hostile peer
//! registered in etcd serves a 3 MB catalog of names full of `<`, one
//! name of 200,000 characters and one with a right-to-left override; then
//! one client opens 120 connections that ask `GET /` (or `/v1/status`)
//! and read nothing. The page shows names cut, escaped as the terminal
//! shows them, at most `MAX_FILES` of them with "and N more", and every
//! connection shares one body: the serving peer's RSS rise stays bounded.
//! A real `serve`, a real etcd; the hostile peer is written here.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fetch_support::*;
use crate::support::*;

/// Names in the hostile catalog, each of `NAME_LEN` `<` (3 MB in all);
/// two more (a long one, a bidi one) start with `!` to be listed first.
const NAMES: usize = 2000;
const NAME_LEN: usize = 1400;
/// What the test allows the serving peer's RSS to rise by while 120
/// connections of one address hold `/` (then `/v1/status`) unread
/// (before: about 1.1 GiB for `/`).
const RSS_RISE_MIB: u64 = 64;

fn catalog_body() -> Vec<u8> {
    let mut files: Vec<Value> = (0..NAMES)
        .map(|i| {
            json!({"sha1": format!("{i:040x}"), "size": 1, "piece_size": 1,
                   "name": "<".repeat(NAME_LEN)})
        })
        .collect();
    files.push(json!({"sha1": "e".repeat(40), "size": 1, "piece_size": 1,
                      "name": format!("!{}", "y".repeat(200_000))}));
    files.push(json!({"sha1": "f".repeat(40), "size": 1, "piece_size": 1,
                      "name": "!holiday\u{202e}gnp.exe"}));
    serde_json::to_vec(&json!({"generation": 1, "files": files})).unwrap()
}

/// A peer that answers its catalog, its health, and 404 to the rest.
fn hostile_catalog_peer(body: Vec<u8>) -> RawPeer {
    RawPeer::start("catalog", move |mut s: TcpStream, stop: &AtomicBool| {
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = Vec::new();
        while let Some(head) = next_request_head(&mut s, &mut buf, stop) {
            let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let (status, body): (&str, &[u8]) = match target.as_str() {
                "/v1/files" => ("200 OK", &body),
                "/v1/health" => ("200 OK", br#"{"status":"ok"}"#),
                _ => ("404 Not Found", b""),
            };
            let h = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            if s.write_all(h.as_bytes()).is_err() || s.write_all(body).is_err() {
                return;
            }
        }
    })
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A connection whose receive buffer is tiny (set before the connect, so
/// the window stays small): what the server sends it stays in the
/// server's memory, not in the kernel's buffers.
fn small_window(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

fn get_body(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    all.split_off(end)
}

#[test]
fn hostile_names_and_unread_pages_leave_the_peer_bounded_in_memory() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let hostile = hostile_catalog_peer(catalog_body());
    let id = "0hostilecatalog";
    let record = json!({
        "id": id, "addr": hostile.addr.to_string(), "addrs": [hostile.addr.to_string()],
        "name": "<".repeat(200), "version": "0", "started_at": 0, "index_gen": 1,
    });
    etcd.put(&format!("/piratebay/peers/{id}"), &record.to_string());
    let peer = Serve::new(&ep).start();
    let addr = peer.bound_addr();
    // The peer's monitor lists the network's files.
    let status: Value = wait_for(Duration::from_secs(30), "the hostile files listed", || {
        let v: Value = serde_json::from_slice(&get_body(addr, "/v1/status")).ok()?;
        (v["files"]["total"].as_u64()? >= NAMES as u64).then_some(v)
    });
    let page = String::from_utf8(get_body(addr, "/")).unwrap();
    let json = get_body(addr, "/v1/status");
    eprintln!(
        "page {} bytes, /v1/status {} bytes (catalog {} bytes)",
        page.len(),
        json.len(),
        catalog_body().len()
    );
    // Names cut, at most MAX_FILES shown, the rest counted.
    let shown = status["files"]["list"].as_array().unwrap();
    assert!(shown.len() <= 1000, "{} files in the report", shown.len());
    assert!(shown
        .iter()
        .all(|f| f["name"].as_str().unwrap().chars().count() <= 101));
    assert!(
        !page.contains(&"y".repeat(1000)),
        "the long name reached the page whole"
    );
    assert!(page.contains(" more files"), "no 'and N more'");
    // The right-to-left override is shown escaped, as in the terminal.
    assert!(!page.contains('\u{202e}'), "a raw U+202E reached the page");
    assert!(page.contains("holiday\\u{202e}gnp.exe"));
    assert!(page.len() < 2 << 20, "a {} byte page", page.len());

    // 120 connections from one address ask `/` (then `/v1/status`), none
    // reads a byte.
    let pid = peer.proc.pid();
    for path in ["/", "/v1/status"] {
        let before = rss_kib(pid);
        let held: Vec<TcpStream> = (0..120)
            .map(|_| {
                let mut s = small_window(addr);
                write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                s
            })
            .collect();
        // Answered in order per client: once a health check from the same
        // address answers, the 120 answers have started.
        let health = get_body(addr, "/v1/health");
        assert!(String::from_utf8_lossy(&health).contains("ok"));
        let mut peak = before;
        for _ in 0..10 {
            peak = peak.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(100));
        }
        let rise_mib = peak.saturating_sub(before) / 1024;
        eprintln!(
            "{path}: RSS {} MiB before, {} MiB with 120 unread answers: rise {rise_mib} MiB",
            before / 1024,
            peak / 1024
        );
        assert!(
            rise_mib <= RSS_RISE_MIB,
            "{path}: RSS rose by {rise_mib} MiB (bound {RSS_RISE_MIB} MiB)"
        );
        drop(held);
    }
    drop(hostile);
}
