//! CLI-level tests of `files` and `get`: the real binary against in-process
//! peer servers registered in a real etcd, and (once `serve` is wired on
//! this branch) against real `serve` processes.

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use piratebay_sync::Registration;
use serde_json::Value;

use crate::fetch_support::*;
use crate::support::*;

/// An etcd, a namespace, and in-process peers registered in it.
struct Net {
    etcd: EtcdServer,
    ns: String,
    peers: Vec<TestPeer>,
    regs: Vec<Registration>,
    state: tempfile::TempDir,
}

impl Net {
    fn new(ns: &str) -> Net {
        Net {
            etcd: EtcdServer::new(),
            ns: ns.into(),
            peers: Vec::new(),
            regs: Vec::new(),
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn add(&mut self, id: &str, files: Vec<Served>) -> usize {
        let peer = TestPeer::start(id, files);
        self.regs
            .push(peer.register(&self.etcd.endpoint(), &self.ns));
        self.peers.push(peer);
        self.peers.len() - 1
    }

    /// `piratebay-sync <cmd> --etcd .. --namespace .. --state-dir .. <args>`.
    fn args(&self, cmd: &str, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            cmd.to_string(),
            "--etcd".into(),
            self.etcd.endpoint(),
            "--namespace".into(),
            self.ns.clone(),
            "--state-dir".into(),
            self.state.path().display().to_string(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    fn spawn_get(&self, args: &[&str]) -> Child {
        command()
            .args(self.args("get", args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        stderr_text(out)
    );
    serde_json::from_str(&stdout_text(out)).unwrap_or_else(|e| {
        panic!("bad json ({e}): {}", stdout_text(out));
    })
}

fn file_in(dir: &Path, name: &str, size: u64, seed: u64) -> Served {
    let path = dir.join(name);
    random_file(&path, size, seed);
    Served::honest(&path)
}

#[test]
fn files_merges_holders_caches_by_generation_and_searches() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let shared = file_in(dir.path(), "Shared.iso", 3 * SMALL_PIECE, 1);
    let only_a = file_in(dir.path(), "notes.txt", 10, 2);
    let mut net = Net::new("files-cli");
    let a = net.add("peer-a", vec![shared.clone(), only_a.clone()]);
    let b = net.add("peer-b", vec![shared.clone()]);
    let dead = net.add("peer-dead", vec![shared.clone()]);
    net.peers[dead].kill();

    let out = cli(&net.args("files", &["--json"]));
    // A dead peer: the list may be short, so the exit code is 1 (partial).
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let v: Value = serde_json::from_str(&stdout_text(&out)).unwrap();
    let files = v.as_array().unwrap();
    assert_eq!(files.len(), 2, "{v}");
    let iso = files
        .iter()
        .find(|f| f["sha1"] == shared.sha1().to_hex())
        .unwrap();
    assert_eq!(iso["name"], "Shared.iso");
    assert_eq!(iso["size"], 3 * SMALL_PIECE);
    assert_eq!(iso["peers"], 2, "the dead peer is not a holder: {iso}");
    let ids: Vec<&str> = iso["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["peer-a", "peer-b"]);
    assert_eq!(
        iso["holders"][0]["addr"],
        net.peers[a].addr.to_string().as_str()
    );
    assert!(
        stderr_text(&out).contains("peer-dead"),
        "the dead peer is reported: {}",
        stderr_text(&out)
    );
    let asked = |i: usize| net.peers[i].source.lists_served.load(Ordering::SeqCst);
    assert_eq!((asked(a), asked(b)), (1, 1));

    // Second run: unchanged peers are not asked again.
    let out = cli(&net.args("files", &["--search", "SHARED"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    assert_eq!((asked(a), asked(b)), (1, 1), "cached by generation");
    let table = stdout_text(&out);
    assert!(table.contains(&shared.sha1().to_hex()), "{table}");
    assert!(
        !table.contains(&only_a.sha1().to_hex()),
        "filtered: {table}"
    );
    assert!(table.contains("192.0 KiB"), "human size: {table}");

    // A corrupt cache is ignored (and the peers asked again).
    std::fs::write(net.state.path().join("catalog-cache.bin"), b"{nope").unwrap();
    let out = cli(&net.args("files", &["--json", "--search", "notes"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let v: Value = serde_json::from_str(&stdout_text(&out)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    // Asked again (counted by the cache written back: the peer answers
    // from the gzip body it keeps for its generation, without listing).
    let cache = std::fs::read(net.state.path().join("catalog-cache.bin")).unwrap();
    assert!(
        cache.windows(6).any(|w| w == b"peer-a"),
        "the cache rewritten: {}",
        String::from_utf8_lossy(&cache)
    );
}

#[test]
fn get_saves_under_the_sanitized_catalog_name_with_a_json_summary() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let mut served = file_in(dir.path(), "f.bin", 5 * SMALL_PIECE + 1, 3);
    served.name = "../../escape\u{7}.bin".into();
    let mut net = Net::new("get-cli");
    net.add("p1", vec![served.clone()]);
    net.add("p2", vec![served.clone()]);
    let dest = tempfile::tempdir().unwrap();
    let sha1 = served.sha1().to_hex();
    let dest_s = dest.path().display().to_string();
    let v = json(&cli(&net.args("get", &[&sha1, "--dir", &dest_s, "--json"])));
    let path = dest.path().join("escape.bin");
    assert_eq!(v["path"], path.display().to_string().as_str());
    assert_eq!(sha1sum(&path), sha1);
    assert_eq!(v["sha1"], sha1.as_str());
    assert_eq!(v["bytes"], 5 * SMALL_PIECE + 1);
    assert_eq!(v["bytes_received"], 5 * SMALL_PIECE + 1);
    assert_eq!(v["resumed_bytes"], 0);
    assert!(v["seconds"].as_f64().is_some() && v["pieces_retried"] == 0);
    assert!(!v["peers_used"].as_array().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 1);
}

#[test]
fn get_asks_each_peer_about_the_file_outvotes_a_liar_and_skips_dead_and_silent_peers() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let wanted = file_in(dir.path(), "wanted.bin", 3 * SMALL_PIECE + 7, 21);
    let other = file_in(dir.path(), "other.bin", 5 * SMALL_PIECE, 22);
    let mut liar = Served::lying_list(&wanted, &other.data);
    liar.name = "evil.bin".into();
    let mut net = Net::new("get-probe");
    let a = net.add("peer-a", vec![wanted.clone(), other.clone()]);
    let b = net.add("peer-b", vec![wanted.clone()]);
    let l = net.add("peer-liar", vec![liar]);
    let c = net.add("peer-c", vec![other.clone()]);
    let dead = net.add("peer-dead", vec![wanted.clone()]);
    net.peers[dead].kill();
    // Accepts (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind((next_loopback_ip(), 0)).unwrap();
    let _silent_reg = register_at(
        &net.etcd.endpoint(),
        &net.ns,
        "peer-silent",
        silent.local_addr().unwrap(),
        1,
    );

    let dest = tempfile::tempdir().unwrap();
    let dest_s = dest.path().display().to_string();
    let sha1 = wanted.sha1().to_hex();
    let started = std::time::Instant::now();
    let out = cli(&net.args("get", &[&sha1, "--dir", &dest_s, "--json"]));
    let took = started.elapsed();
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let v = json(&out);
    let path = dest.path().join("wanted.bin");
    assert_eq!(
        v["path"],
        path.display().to_string().as_str(),
        "the majority's name, not the liar's"
    );
    assert_eq!(sha1sum(&path), sha1);
    assert_eq!(v["bytes"], 3 * SMALL_PIECE + 7);
    let used: Vec<&str> = v["peers_used"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !used.is_empty() && used.iter().all(|id| ["peer-a", "peer-b"].contains(id)),
        "only the honest holders deliver: {v}"
    );
    // Dead and silent peers: one summary line, within the probe deadline.
    assert!(
        err.contains("2 of 6 peer(s) not asked about") && err.contains("peer-dead"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // No catalog was asked for.
    for i in [a, b, l, c] {
        assert_eq!(
            net.peers[i].source.lists_served.load(Ordering::SeqCst),
            0,
            "{} listed its catalog",
            net.peers[i].id
        );
    }
}

#[test]
fn get_refuses_to_overwrite_a_different_file_without_force() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let served = file_in(dir.path(), "f.bin", 2 * SMALL_PIECE, 4);
    let mut net = Net::new("get-force");
    net.add("p1", vec![served.clone()]);
    let out_path = dir.path().join("existing");
    std::fs::write(&out_path, b"mine").unwrap();
    let sha1 = served.sha1().to_hex();
    let o = out_path.display().to_string();
    let out = cli(&net.args("get", &[&sha1, "-o", &o]));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_text(&out);
    assert!(err.contains("--force") && err.contains("-o"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(std::fs::read(&out_path).unwrap(), b"mine");

    let out = cli(&net.args("get", &[&sha1, "-o", &o, "--force"]));
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(sha1_of_file(&out_path), served.sha1());
    // Same content already there: success without a download.
    let v = json(&cli(&net.args("get", &[&sha1, "-o", &o, "--json"])));
    assert_eq!(v["already_present"], true);
    assert_eq!(v["bytes_received"], 0);
}

#[test]
fn get_rejects_a_bad_rate_and_an_unknown_sha1_in_one_line() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let served = file_in(dir.path(), "f.bin", 10, 5);
    let mut net = Net::new("get-errors");
    net.add("p1", vec![served.clone()]);
    let sha1 = served.sha1().to_hex();
    let out = cli(&net.args("get", &[&sha1, "--max-rate", "fast"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_text(&out).contains("invalid rate"),
        "{}",
        stderr_text(&out)
    );
    let unknown = piratebay_sync::Sha1Digest::of(b"nobody has this").to_hex();
    let out = cli(&net.args("get", &[&unknown]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_text(&out).contains("no peer holds"),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn get_killed_half_way_resumes_with_only_the_missing_half() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let size = 32 * SMALL_PIECE;
    let served = file_in(dir.path(), "f.bin", size, 6);
    let mut net = Net::new("get-resume");
    net.add("p1", vec![served.clone()]);
    net.add("p2", vec![served.clone()]);
    let out_path = dir.path().join("out.bin");
    let o = out_path.display().to_string();
    let sha1 = served.sha1().to_hex();
    let mut child = net.spawn_get(&[&sha1, "-o", &o, "--max-rate", "2M"]);
    let half = served.pieces.len() / 2;
    wait_until(Duration::from_secs(30), "half the pieces verified", || {
        verified_in_state(&out_path, &served.sha1()) >= half
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!out_path.exists());

    let v = json(&cli(&net.args("get", &[&sha1, "-o", &o, "--json"])));
    assert_eq!(sha1_of_file(&out_path), served.sha1());
    let received = v["bytes_received"].as_u64().unwrap();
    assert!(received < size * 6 / 10, "fetched {received} of {size}");
    assert!(v["resumed_bytes"].as_u64().unwrap() >= size / 2, "{v}");
}

#[test]
fn get_interrupted_by_ctrl_c_saves_state_and_says_how_to_resume() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let served = file_in(dir.path(), "f.bin", 32 * SMALL_PIECE, 7);
    let mut net = Net::new("get-sigint");
    net.add("p1", vec![served.clone()]);
    let out_path = dir.path().join("out.bin");
    let o = out_path.display().to_string();
    let sha1 = served.sha1().to_hex();
    let mut child = net.spawn_get(&[&sha1, "-o", &o, "--max-rate", "1M"]);
    wait_until(Duration::from_secs(30), "some pieces verified", || {
        verified_in_state(&out_path, &served.sha1()) >= 2
    });
    send_signal(child.id(), libc::SIGINT);
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("get exits on SIGINT");
    assert_eq!(status.code(), Some(2));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("rerun"), "{err}");
    assert!(part_path(&out_path).exists() && state_path(&out_path).exists());
    assert!(!out_path.exists());

    // The rerun resumes, and its line says what it kept and read back.
    let out = cli(&net.args("get", &[&sha1, "-o", &o]));
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(sha1_of_file(&out_path), served.sha1());
    let line = stdout_text(&out);
    assert!(line.starts_with("saved "), "{line}");
    assert!(line.contains("kept from an earlier run"), "{line}");
    assert!(line.contains("read back and checked again"), "{line}");
}

// With real `serve` processes.

#[test]
fn get_from_serve_processes_survives_a_sigkilled_holder() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ns = "serve-get";
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("dataset");
    std::fs::create_dir_all(&dataset).unwrap();
    let sha1 = random_file(&dataset.join("big.bin"), 24 << 20, 13);
    let mut peers = Vec::new();
    for i in 0..3 {
        peers.push(
            Serve::new(&etcd.endpoint())
                .arg("--namespace", ns)
                .dataset(&dataset)
                .state_dir(dir.path().join(format!("s{i}")))
                .start(),
        );
    }
    let state = dir.path().join("client-state");
    let base = |cmd: &str| {
        vec![
            cmd.to_string(),
            "--etcd".into(),
            etcd.endpoint(),
            "--namespace".into(),
            ns.into(),
            "--state-dir".into(),
            state.display().to_string(),
        ]
    };
    wait_until(Duration::from_secs(30), "3 peers list the file", || {
        let out = cli(&[base("files"), vec!["--json".into()]].concat());
        serde_json::from_str::<Value>(&stdout_text(&out))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|a| {
                a.iter()
                    .any(|f| f["sha1"] == sha1.to_hex() && f["peers"] == 3)
            })
    });
    let out_path = dir.path().join("out.bin");
    let mut args = base("get");
    args.extend([
        sha1.to_hex(),
        "-o".into(),
        out_path.display().to_string(),
        "--max-rate".into(),
        "8M".into(),
        "--json".into(),
    ]);
    let mut child = command()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "a quarter verified", || {
        verified_in_state(&out_path, &sha1) >= 2
    });
    peers[0].proc.kill9();
    let status = wait_timeout(&mut child, Duration::from_secs(60)).expect("get finishes");
    assert!(status.success());
    assert_eq!(sha1sum(&out_path), sha1.to_hex());
}
