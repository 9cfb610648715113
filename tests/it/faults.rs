//! Faults and hostile input (issue 5): etcd absent or wiped, holders whose
//! catalog or piece list is garbage or endless, a full disk, dataset files
//! deleted or truncated while served, and slow or flooding clients against
//! a real `serve` process. Real etcd, real processes, real sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use piratebay_sync::etcd::{Client, Config};
use piratebay_sync::{PeerRecord, Registration, RegistrationConfig, Sha1Digest};
use serde_json::Value;

use crate::fetch_support::*;
use crate::support::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `<cmd> --etcd EP --namespace NS --state-dir DIR <extra>`.
pub(crate) fn client_args(
    cmd: &str,
    ep: &str,
    ns: &str,
    state: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut v: Vec<String> = vec![
        cmd.into(),
        "--etcd".into(),
        ep.into(),
        "--namespace".into(),
        ns.into(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Runs the binary to completion and returns its output and its peak
/// resident set size in KiB (from `wait4`, exact for this one child).
#[track_caller]
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which clippy does not see
pub(crate) fn run_measured(args: &[String], timeout: Duration) -> (Output, u64) {
    let mut child = command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let started = Instant::now();
    let (status, maxrss) = loop {
        let mut raw = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes only into the two valid pointers given.
        let r = unsafe { libc::wait4(pid, &mut raw, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (ExitStatus::from_raw(raw), usage.ru_maxrss.max(0) as u64);
        }
        assert!(r == 0, "wait4({pid}): {}", std::io::Error::last_os_error());
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{args:?} did not exit within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&err.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    (output, maxrss)
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::Builder::new()
        .name("faults-drain".into())
        .spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        stderr_text(out)
    );
    serde_json::from_str(&stdout_text(out))
        .unwrap_or_else(|e| panic!("bad json ({e}): {}", stdout_text(out)))
}

/// A `/proc/<pid>/status` field in kB (VmRSS, VmHWM).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Threads of process `pid`.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// One `GET` with `Connection: close`: status and body, `None` on any error.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).ok()?;
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, bytes[end..].to_vec()))
}

/// The sha1s in a peer's `/v1/files`, if it answers 200 with a file list.
fn catalog_sha1s(addr: SocketAddr) -> Option<Vec<String>> {
    let (status, body) = http_get(addr, "/v1/files")?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    Some(
        v["files"]
            .as_array()?
            .iter()
            .filter_map(|f| f["sha1"].as_str().map(str::to_string))
            .collect(),
    )
}

/// Waits until `list --json` shows every id in `ids`.
fn wait_all_listed(ep: &str, ns: &str, ids: &[String], timeout: Duration) {
    wait_until(timeout, &format!("{} peers listed", ids.len()), || {
        let out = cli(&["list", "--json", "--etcd", ep, "--namespace", ns]);
        let Ok(peers) = serde_json::from_str::<Vec<Value>>(&stdout_text(&out)) else {
            return false;
        };
        ids.iter()
            .all(|id| peers.iter().any(|p| p["id"].as_str() == Some(id.as_str())))
    });
}

/// Waits until `files --json` lists `sha1` with at least `holders` holders.
fn wait_files_lists(ep: &str, ns: &str, state: &Path, sha1: &Sha1Digest, holders: u64) {
    wait_until(
        Duration::from_secs(30),
        &format!("{sha1} listed by {holders} peers"),
        || {
            let out = cli(&client_args("files", ep, ns, state, &["--json"]));
            serde_json::from_str::<Vec<Value>>(&stdout_text(&out)).is_ok_and(|a| {
                a.iter()
                    .any(|f| f["sha1"] == sha1.to_hex() && f["peers"].as_u64() >= Some(holders))
            })
        },
    );
}

// ---------------------------------------------------------------------------
// 1. No etcd at start
// ---------------------------------------------------------------------------

#[test]
fn files_and_get_without_etcd_fail_fast_naming_every_endpoint() {
    let a = format!("127.0.0.1:{}", free_port([127, 0, 0, 1]));
    let b = format!("127.0.0.1:{}", free_port([127, 0, 0, 1]));
    let eps = format!("{a},{b}");
    let state = tempfile::tempdir().unwrap();
    let sha1 = Sha1Digest::of(b"anything").to_hex();
    for args in [
        client_args("files", &eps, "piratebay", state.path(), &[]),
        client_args("get", &eps, "piratebay", state.path(), &[&sha1]),
    ] {
        let started = Instant::now();
        let out = cli(&args);
        let took = started.elapsed();
        let err = stderr_text(&out);
        assert!(took < Duration::from_secs(5), "{} took {took:?}", args[0]);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", args[0]);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(&a) && err.contains(&b), "names both: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(stdout_text(&out).is_empty());
    }
}

#[test]
fn serve_without_etcd_serves_a_client_that_knows_its_address() {
    let mut etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    etcd.stop();
    let dataset = tempfile::tempdir().unwrap();
    let sha1 = random_file(&dataset.path().join("f.bin"), 300_000, 1);
    let peer = Serve::new(&ep).ttl(3).dataset(dataset.path()).start();
    let addr = peer.bound_addr();
    let (status, body) = wait_for(Duration::from_secs(10), "the file served", || {
        http_get(addr, &format!("/v1/files/{sha1}")).filter(|(s, _)| *s == 200)
    });
    assert_eq!(status, 200);
    assert_eq!(Sha1Digest::of(&body), sha1);
    assert!(catalog_sha1s(addr).is_some_and(|s| s == vec![sha1.to_hex()]));
    peer.proc
        .wait_log_contains(Duration::from_secs(10), "retrying");
    // Still unregistered, still serving; it registers once etcd answers.
    etcd.start();
    wait_all_listed(&ep, "piratebay", &[peer.id()], Duration::from_secs(10));
    assert!(http_get(addr, "/v1/health").is_some_and(|(s, _)| s == 200));
}

// ---------------------------------------------------------------------------
// 2. etcd wiped while three peers run
// ---------------------------------------------------------------------------

#[test]
fn etcd_wiped_while_three_peers_run_every_peer_registers_again_within_its_ttl() {
    let mut etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ttl = 4;
    let peers: Vec<ServePeer> = (0..3).map(|_| Serve::new(&ep).ttl(ttl).start()).collect();
    let ids: Vec<String> = peers.iter().map(ServePeer::id).collect();
    wait_all_listed(&ep, "piratebay", &ids, Duration::from_secs(10));
    etcd.wipe_and_restart();
    assert!(
        etcd.get(&format!("/piratebay/peers/{}", ids[0])).is_none(),
        "the wipe lost the keys"
    );
    let back = Instant::now();
    wait_all_listed(&ep, "piratebay", &ids, Duration::from_secs(ttl));
    assert!(back.elapsed() <= Duration::from_secs(ttl));
    for p in &peers {
        assert!(
            p.proc.log_text().contains("registering again"),
            "{}",
            p.proc.log_text()
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Holders with garbage or gigantic catalogs and piece lists
// ---------------------------------------------------------------------------

/// How a [`HostilePeer`] answers a JSON request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// The true JSON.
    Honest,
    /// 200 with 4 KiB of binary junk.
    Garbage,
    /// 200 without a length, then valid-looking JSON that never ends.
    Endless,
    /// 200 announcing a terabyte body.
    Huge,
}

/// A raw TCP peer: its catalog and piece list answers as configured, file
/// bytes honest.
struct HostilePeer(RawPeer);

impl HostilePeer {
    fn start(served: &Served, catalog: Answer, pieces: Answer) -> HostilePeer {
        let served = served.clone();
        HostilePeer(RawPeer::start("hostile", move |s, stop| {
            hostile_conn(s, &served, catalog, pieces, stop)
        }))
    }

    fn register(&self, id: &str, ep: &str, ns: &str) -> Registration {
        let client = Client::new(Config::new([ep])).unwrap();
        let reg = Registration::start(
            client,
            RegistrationConfig {
                namespace: ns.into(),
                ttl: Duration::from_secs(10),
                record: PeerRecord {
                    id: id.into(),
                    addr: self.0.addr.to_string(),
                    addrs: Vec::new(),
                    name: "hostile".into(),
                    version: piratebay_sync::VERSION.into(),
                    started_at: 0,
                    index_gen: 1,
                },
            },
        )
        .unwrap();
        assert!(reg.wait_registered(Duration::from_secs(10)));
        reg
    }
}

fn hostile_conn(
    mut s: TcpStream,
    served: &Served,
    catalog: Answer,
    pieces: Answer,
    stop: &AtomicBool,
) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::new();
    while let Some(head) = next_request_head(&mut s, &mut buf, stop) {
        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let sent = if target == "/v1/files" {
            let honest = serde_json::json!({
                "generation": 1,
                "files": [{
                    "sha1": served.sha1(),
                    "size": served.pieces.size,
                    "name": served.name,
                    "piece_size": served.pieces.piece_size,
                }],
            });
            let entry = format!(
                r#"{{"sha1":"{}","size":1,"name":"endless","piece_size":1}},"#,
                served.sha1()
            );
            json_answer(
                &mut s,
                catalog,
                &honest.to_string(),
                r#"{"generation":1,"files":["#,
                &entry,
                stop,
            )
        } else if target.ends_with("/pieces") {
            let honest = serde_json::to_string(&served.pieces).unwrap();
            let open = format!(
                r#"{{"sha1":"{}","size":{},"piece_size":1,"pieces":["#,
                served.sha1(),
                served.pieces.size
            );
            let entry = format!(r#""{}","#, served.sha1());
            json_answer(&mut s, pieces, &honest, &open, &entry, stop)
        } else {
            let size = served.pieces.size;
            let (a, b) = range_of(&head).unwrap_or((0, size.saturating_sub(1)));
            let data = std::fs::read(&served.data).unwrap();
            let body = &data[a as usize..=b as usize];
            write!(
                s,
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{size}\r\n\r\n",
                body.len()
            )
            .and_then(|()| s.write_all(body))
            .is_ok()
        };
        if !sent {
            return;
        }
    }
}

/// Writes a JSON answer of kind `how`; false if the connection is done.
fn json_answer(
    s: &mut TcpStream,
    how: Answer,
    honest: &str,
    open: &str,
    entry: &str,
    stop: &AtomicBool,
) -> bool {
    match how {
        Answer::Honest => write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{honest}",
            honest.len()
        )
        .is_ok(),
        Answer::Garbage => {
            let junk: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                junk.len()
            )
            .and_then(|()| s.write_all(&junk));
            true
        }
        Answer::Endless => {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{open}"
            );
            let block = entry.repeat(64 * 1024 / entry.len());
            while !stop.load(Ordering::Relaxed) && s.write_all(block.as_bytes()).is_ok() {}
            false
        }
        Answer::Huge => {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n{open}"
            );
            let block = entry.repeat(64 * 1024 / entry.len());
            while !stop.load(Ordering::Relaxed) && s.write_all(block.as_bytes()).is_ok() {}
            false
        }
    }
}

fn range_of(head: &str) -> Option<(u64, u64)> {
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("range:"))?;
    let (a, b) = line.split_once('=')?.1.trim().split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Peak RSS allowed to a `files` or `get` facing hostile holders.
const CLIENT_PEAK_RSS_KIB: u64 = 160 * 1024;

#[test]
fn hostile_catalogs_and_piece_lists_do_not_stop_files_or_get_and_memory_stays_bounded() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ns = "hostile-json";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wanted.bin");
    random_file(&path, 4 << 20, 51);
    let served = Served::honest(&path);
    let sha1 = served.sha1();

    let honest: Vec<TestPeer> = (0..2)
        .map(|i| TestPeer::start(&format!("honest{i}"), vec![served.clone()]))
        .collect();
    let mut regs: Vec<Registration> = honest.iter().map(|p| p.register(&ep, ns)).collect();
    let kinds = [
        ("cat-garbage", Answer::Garbage, Answer::Honest),
        ("cat-endless", Answer::Endless, Answer::Honest),
        ("cat-huge", Answer::Huge, Answer::Honest),
        ("pieces-garbage", Answer::Honest, Answer::Garbage),
        ("pieces-endless", Answer::Honest, Answer::Endless),
        ("pieces-huge", Answer::Honest, Answer::Huge),
    ];
    let hostile: Vec<HostilePeer> = kinds
        .iter()
        .map(|(id, catalog, pieces)| {
            let p = HostilePeer::start(&served, *catalog, *pieces);
            regs.push(p.register(id, &ep, ns));
            p
        })
        .collect();
    assert_eq!(hostile.len(), kinds.len());

    let state = dir.path().join("state");
    let (out, files_rss) = run_measured(
        &client_args("files", &ep, ns, &state, &["--json"]),
        Duration::from_secs(30),
    );
    // The hostile catalogs are left out: a partial list (exit 1), still JSON.
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let v: Value = serde_json::from_str(&stdout_text(&out)).expect("a JSON list");
    let entry = v
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["sha1"] == sha1.to_hex())
        .unwrap_or_else(|| panic!("{sha1} not listed: {v}"));
    // Two honest peers and the three whose catalogs are honest.
    assert_eq!(entry["peers"], 5, "{entry}");
    let err = stderr_text(&out);
    for id in ["cat-garbage", "cat-endless", "cat-huge"] {
        assert!(err.contains(id), "{id} reported: {err}");
    }
    assert!(v.as_array().unwrap().len() == 1, "no junk entries: {v}");

    let out_path = dir.path().join("out.bin");
    let o = out_path.display().to_string();
    let (out, get_rss) = run_measured(
        &client_args(
            "get",
            &ep,
            ns,
            &state,
            &[&sha1.to_hex(), "-o", &o, "--json"],
        ),
        Duration::from_secs(30),
    );
    let summary = json_of(&out);
    assert_eq!(sha1sum(&out_path), sha1.to_hex());
    let used: Vec<&str> = summary["peers_used"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        used.iter().all(|id| id.starts_with("honest")),
        "only honest peers deliver: {summary}"
    );
    eprintln!("peak RSS: files {files_rss} KiB, get {get_rss} KiB");
    assert!(
        files_rss < CLIENT_PEAK_RSS_KIB,
        "files peaked at {files_rss} KiB"
    );
    assert!(get_rss < CLIENT_PEAK_RSS_KIB, "get peaked at {get_rss} KiB");
}

/// A peer whose catalog is a gzip bomb: 40 KiB of gzip on the wire that
/// inflates to 40 MiB of valid-looking JSON entries (the limit is 16 MiB).
fn gzip_bomb_peer(served: &Served) -> RawPeer {
    use std::sync::OnceLock;
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    let bomb = BOMB.get_or_init(|| {
        let entry = format!(
            r#"{{"sha1":"{}","size":1,"name":"bomb","piece_size":1}},"#,
            served.sha1()
        );
        let block = entry.repeat((1 << 20) / entry.len());
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(br#"{"generation":1,"files":["#).unwrap();
        for _ in 0..40 {
            enc.write_all(block.as_bytes()).unwrap();
        }
        enc.finish().unwrap()
    });
    RawPeer::start("gzip-bomb", move |mut s, stop| {
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = Vec::new();
        while next_request_head(&mut s, &mut buf, stop).is_some() {
            let sent = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                bomb.len()
            )
            .and_then(|()| s.write_all(bomb));
            if sent.is_err() {
                return;
            }
        }
    })
}

#[test]
fn a_gzip_bomb_catalog_is_refused_with_a_clear_error_and_memory_stays_bounded() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ns = "gzip-bomb";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wanted.bin");
    random_file(&path, 100_000, 52);
    let served = Served::honest(&path);
    let honest = TestPeer::start("honest", vec![served.clone()]);
    let bomb = HostilePeer(gzip_bomb_peer(&served));
    let _regs = [honest.register(&ep, ns), bomb.register("bomber", &ep, ns)];

    let state = dir.path().join("state");
    let (out, rss) = run_measured(
        &client_args("files", &ep, ns, &state, &["--json"]),
        Duration::from_secs(30),
    );
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bomber") && err.contains("gzip file list that inflates past"),
        "the bomb named with its reason: {err}"
    );
    let v: Value = serde_json::from_str(&stdout_text(&out)).expect("a JSON list");
    let files = v.as_array().unwrap();
    assert_eq!(files.len(), 1, "{v}");
    assert_eq!(files[0]["sha1"], served.sha1().to_hex());
    assert_eq!(files[0]["peers"], 1, "only the honest peer holds it");
    eprintln!("files peak RSS {rss} KiB");
    assert!(rss < CLIENT_PEAK_RSS_KIB, "files peaked at {rss} KiB");
}

// ---------------------------------------------------------------------------
// 4. Disk full
// ---------------------------------------------------------------------------

/// A tmpfs mounted by the test (as root), unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) when not root or mount fails.
    fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "skipped: mount -t tmpfs failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

#[test]
fn disk_full_stops_get_with_a_clear_error_and_the_same_command_resumes() {
    init_test_log();
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ns = "disk-full";
    let dir = tempfile::tempdir().unwrap();
    let size = 16u64 << 20;
    let path = dir.path().join("big.bin");
    random_file(&path, size, 61);
    let served = Served::honest(&path);
    let sha1 = served.sha1();
    let peers: Vec<TestPeer> = (0..2)
        .map(|i| TestPeer::start(&format!("p{i}"), vec![served.clone()]))
        .collect();
    let _regs: Vec<Registration> = peers.iter().map(|p| p.register(&ep, ns)).collect();

    let state = dir.path().join("state");
    let out_path = fs.path().join("big.bin");
    let o = out_path.display().to_string();
    let args = client_args(
        "get",
        &ep,
        ns,
        &state,
        &[&sha1.to_hex(), "-o", &o, "--json"],
    );
    let out = cli(&args);
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.to_lowercase().contains("no space"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out_path.exists(), "nothing under the final name");
    assert!(part_path(&out_path).exists(), "the .part is kept");
    assert!(state_path(&out_path).exists(), "its state is kept");
    let kept = verified_in_state(&out_path, &sha1);
    assert!(kept > 0, "some pieces were verified before the disk filled");

    fs.resize("64m");
    let summary = json_of(&cli(&args));
    assert_eq!(sha1sum(&out_path), sha1.to_hex());
    let received = summary["bytes_received"].as_u64().unwrap();
    assert!(received < size, "resumed: fetched {received} of {size}");
    assert!(summary["resumed_bytes"].as_u64().unwrap() > 0, "{summary}");
    assert!(!part_path(&out_path).exists() && !state_path(&out_path).exists());
}

// ---------------------------------------------------------------------------
// 5. Dataset files deleted or truncated while served
// ---------------------------------------------------------------------------

#[test]
fn files_deleted_or_truncated_while_served_fail_over_and_the_index_follows() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ns = "dataset-faults";
    let dir = tempfile::tempdir().unwrap();
    let size = 8u64 << 20;
    let mut datasets = Vec::new();
    let (mut gone, mut cut) = (Sha1Digest::of(b""), Sha1Digest::of(b""));
    for i in 0..2 {
        let d = dir.path().join(format!("dataset{i}"));
        std::fs::create_dir_all(&d).unwrap();
        gone = random_file(&d.join("gone.bin"), size, 71);
        cut = random_file(&d.join("cut.bin"), size, 72);
        datasets.push(d);
    }
    let peers: Vec<ServePeer> = datasets
        .iter()
        .map(|d| {
            Serve::new(&ep)
                .arg("--namespace", ns)
                .arg("--rescan", "1")
                .dataset(d)
                .start()
        })
        .collect();
    let a_addr = peers[0].bound_addr();
    let state = dir.path().join("state");
    wait_files_lists(&ep, ns, &state, &gone, 2);
    wait_files_lists(&ep, ns, &state, &cut, 2);

    let spawn_get = |sha1: &Sha1Digest, out: &Path| {
        command()
            .args(client_args(
                "get",
                &ep,
                ns,
                &state,
                &[
                    &sha1.to_hex(),
                    "-o",
                    &out.display().to_string(),
                    "--max-rate",
                    "2M",
                    "--json",
                ],
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let gone_out = dir.path().join("gone.out");
    let cut_out = dir.path().join("cut.out");
    let mut gets = [spawn_get(&gone, &gone_out), spawn_get(&cut, &cut_out)];
    wait_until(Duration::from_secs(30), "both downloads under way", || {
        verified_in_state(&gone_out, &gone) >= 4 && verified_in_state(&cut_out, &cut) >= 4
    });
    let served_by_a = |sha1: &Sha1Digest| {
        peers[0]
            .proc
            .log_text()
            .lines()
            .any(|l| l.contains(&format!("/v1/files/{sha1}\" 206")))
    };
    assert!(served_by_a(&gone) && served_by_a(&cut), "peer A took part");
    std::fs::remove_file(datasets[0].join("gone.bin")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(datasets[0].join("cut.bin"))
        .unwrap();
    f.set_len(size / 2).unwrap();
    drop(f);
    let truncated = Sha1Digest::of(&std::fs::read(datasets[0].join("cut.bin")).unwrap());

    for (child, (out, sha1)) in gets.iter_mut().zip([(&gone_out, gone), (&cut_out, cut)]) {
        let status = wait_timeout(child, Duration::from_secs(60)).expect("get finishes");
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "get {sha1}: {err}");
        assert_eq!(sha1sum(out), sha1.to_hex());
    }
    wait_until(
        Duration::from_secs(10),
        "peer A drops the deleted file and rehashes the truncated one",
        || {
            catalog_sha1s(a_addr).is_some_and(|s| {
                !s.contains(&gone.to_hex())
                    && !s.contains(&cut.to_hex())
                    && s.contains(&truncated.to_hex())
            })
        },
    );
}

// ---------------------------------------------------------------------------
// 6. and 7. Slow clients and connection floods against a real `serve`
// ---------------------------------------------------------------------------

/// Resident memory a `serve` process may reach under hostile clients.
const SERVE_RSS_KIB: u64 = 100 * 1024;

/// A real `serve` sharing `file` (`size` random bytes), registered in
/// `etcd` under `ns`, with its address once the file is listed.
fn serve_one_file(
    etcd: &EtcdServer,
    ns: &str,
    dir: &Path,
    size: u64,
    seed: u64,
) -> (ServePeer, SocketAddr, Sha1Digest) {
    let dataset = dir.join("dataset");
    std::fs::create_dir_all(&dataset).unwrap();
    let sha1 = random_file(&dataset.join("big.bin"), size, seed);
    let peer = Serve::new(&etcd.endpoint())
        .arg("--namespace", ns)
        .dataset(&dataset)
        .state_dir(dir.join("serve-state"))
        .start();
    let addr = peer.bound_addr();
    wait_files_lists(&etcd.endpoint(), ns, &dir.join("probe-state"), &sha1, 1);
    (peer, addr, sha1)
}

/// `get` into `out`, timed; panics with stderr if it fails.
fn timed_get(ep: &str, ns: &str, state: &Path, sha1: &Sha1Digest, out: &Path) -> Duration {
    let started = Instant::now();
    let o = out.display().to_string();
    let output = cli_with(
        &client_args("get", ep, ns, state, &[&sha1.to_hex(), "-o", &o]),
        &[],
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    assert!(output.status.success(), "get: {}", stderr_text(&output));
    assert_eq!(sha1sum(out), sha1.to_hex());
    took
}

#[test]
fn stalled_clients_do_not_stop_a_real_get_and_the_peer_stays_bounded() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ns = "stalled";
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, addr, sha1) = serve_one_file(&etcd, ns, dir.path(), 64 << 20, 81);
    let pid = peer.proc.pid();
    let threads_before = thread_count(pid);

    let stall = || -> Vec<TcpStream> {
        let conns: Vec<TcpStream> = (0..300)
            .filter_map(|_| {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
                let _ = s.write_all(b"GET /v1/files HTTP/1.1\r\nHost: t\r\nX-Stall: ");
                Some(s)
            })
            .collect();
        assert!(conns.len() >= 290, "{} connected", conns.len());
        conns
    };
    let state = dir.path().join("client-state");
    let mut stalled = Vec::new();
    for i in 0..2 {
        // Fresh stalled connections before each download.
        stalled.extend(stall());
        let out = dir.path().join(format!("out{i}.bin"));
        let took = timed_get(&ep, ns, &state, &sha1, &out);
        eprintln!("get {i} of 64 MiB with 300 stalled connections: {took:?}");
        assert!(
            took < Duration::from_secs(30),
            "get {i} took {took:?} with 300 stalled connections"
        );
        std::fs::remove_file(&out).unwrap();
    }
    let threads = thread_count(pid);
    let rss = proc_kib(pid, "VmRSS");
    eprintln!("serve: {threads_before} -> {threads} threads, VmRSS {rss} KiB");
    assert!(
        threads <= threads_before + 4,
        "threads grew from {threads_before} to {threads}"
    );
    assert!(rss < SERVE_RSS_KIB, "VmRSS {rss} KiB");
    drop(stalled);
    assert!(peer.proc.is_running());
}

#[test]
fn a_flood_of_5000_connects_leaves_a_real_peer_up_bounded_and_serving() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ns = "flood";
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, addr, sha1) = serve_one_file(&etcd, ns, dir.path(), 8 << 20, 91);
    let pid = peer.proc.pid();
    let threads_before = thread_count(pid);

    let flooders: Vec<JoinHandle<(usize, usize)>> = (0..4u64)
        .map(|t| {
            std::thread::Builder::new()
                .name(format!("flood{t}"))
                .spawn(move || {
                    let (mut ok, mut max_threads) = (0, 0);
                    for i in 0..1250u64 {
                        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                        else {
                            continue;
                        };
                        ok += 1;
                        match i % 4 {
                            0 => {}
                            1 => {
                                let junk: Vec<u8> =
                                    (0..200).map(|k| (k * 31 + i * 7 + t) as u8).collect();
                                let _ = s.write_all(&junk);
                            }
                            2 => {
                                let _ = s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n");
                            }
                            _ => {
                                let _ = s.write_all(b"\r\n\r\nGARBAGE \x00\xff / HTTP/9.9\r\n\r\n");
                            }
                        }
                        if i % 100 == 0 {
                            max_threads = max_threads.max(thread_count(pid));
                        }
                    }
                    (ok, max_threads)
                })
                .unwrap()
        })
        .collect();
    let (mut connected, mut max_threads) = (0, 0);
    for f in flooders {
        let (ok, m) = f.join().unwrap();
        connected += ok;
        max_threads = max_threads.max(m);
    }
    assert!(
        connected > 4000,
        "only {connected} of 5000 connects succeeded"
    );
    assert!(peer.proc.is_running(), "the peer survived the flood");
    let rss = proc_kib(pid, "VmRSS");
    eprintln!(
        "serve: {threads_before} threads, at most {max_threads} in the flood, VmRSS {rss} KiB"
    );
    assert!(
        max_threads <= threads_before + 4,
        "threads grew from {threads_before} to {max_threads}"
    );
    assert!(rss < SERVE_RSS_KIB, "VmRSS {rss} KiB");

    let state = dir.path().join("client-state");
    let out = dir.path().join("after-flood.bin");
    timed_get(&ep, ns, &state, &sha1, &out);
    assert!(peer.proc.is_running());
}
