//! Across hosts: real `serve` processes on LAN lab hosts (network
//! namespaces on one bridge, see `support/lab.rs`), etcd on the bridge or
//! on the hosts, and faults of the network rather than of processes:
//! unreachable holders, cut links, packet loss, partitions from etcd.
//!
//! Every test builds its own lab (its own /24, its own names), so they run
//! in parallel with each other and with other test processes. They need
//! root and CAP_NET_ADMIN and fail with one line saying so without them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::fetch_support::{random_file, sha1_of_file};
use crate::support::*;

/// Piece size of the peers here: several pieces per file, so a download
/// is spread over the holders.
const MIB: u64 = 1024 * 1024;
/// Limit for a `get` or `list` that should succeed.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// The client's connect timeout (`DownloadOptions::connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A dataset directory holding one random file; its SHA1 as hex.
struct Dataset {
    dir: TempDir,
    file: PathBuf,
    sha1: String,
}

impl Dataset {
    fn new(name: &str, size: u64, seed: u64) -> Dataset {
        let dir = tempfile::Builder::new()
            .prefix("pbs-lan-data-")
            .tempdir()
            .unwrap();
        let file = dir.path().join(name);
        let sha1 = random_file(&file, size, seed).to_string();
        Dataset { dir, file, sha1 }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A peer on `host` sharing `data`, registering at `etcd`.
fn holder(host: &Host, etcd: &str, data: &Dataset) -> ServePeer {
    Serve::new(etcd).on_host(host).dataset(data.path()).start()
}

/// `piratebay-sync list --json` on `host` (`None`: this namespace).
#[track_caller]
fn list_on(host: Option<&Host>, etcd: &str) -> Vec<Value> {
    let out = cli_on(
        host.map(|h| h.netns.as_str()),
        &["list", "--json", "--etcd", etcd],
        &[],
        CLI_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "list failed: {}",
        stderr_text(&out).trim()
    );
    serde_json::from_str(&stdout_text(&out))
        .unwrap_or_else(|e| panic!("list --json is not JSON ({e}): {}", stdout_text(&out)))
}

/// Waits until `ids` are all registered.
#[track_caller]
fn wait_registered(etcd: &str, ids: &[String]) {
    wait_until(Duration::from_secs(30), "peers registered", || {
        let peers = list_on(None, etcd);
        ids.iter()
            .all(|id| peers.iter().any(|p| p["id"] == id.as_str()))
    });
}

/// Waits until the peer on `host` lists `sha1` in its catalog (its index
/// is built), asking it from this namespace.
#[track_caller]
fn wait_serving(host: &Host, sha1: &str) {
    let url = format!("http://{}:{LAB_PORT}/v1/files", host.ip);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    wait_until(
        Duration::from_secs(30),
        &format!("{url} to list {sha1}"),
        || {
            agent
                .get(&url)
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .is_some_and(|body| body.contains(sha1))
        },
    );
}

/// Waits until the peers on `hosts` are registered and serve `sha1`.
#[track_caller]
fn wait_indexed(etcd: &str, peers: &[(&Host, &ServePeer)], sha1: &str) {
    let ids: Vec<String> = peers.iter().map(|(_, p)| p.id()).collect();
    wait_registered(etcd, &ids);
    for (h, _) in peers {
        wait_serving(h, sha1);
    }
}

/// `get <sha1> -o <out> --json` arguments.
fn get_args(etcd: &str, sha1: &str, out: &Path, state: &Path) -> Vec<String> {
    vec![
        "get".into(),
        sha1.into(),
        "-o".into(),
        out.display().to_string(),
        "--json".into(),
        "--etcd".into(),
        etcd.into(),
        "--state-dir".into(),
        state.display().to_string(),
    ]
}

/// Runs `get` on `host` to completion.
#[track_caller]
fn get_on(host: &Host, etcd: &str, sha1: &str, out: &Path, state: &Path) -> Output {
    cli_on(
        Some(&host.netns),
        &get_args(etcd, sha1, out, state),
        &[],
        CLI_TIMEOUT,
    )
}

/// Asserts a `get` succeeded and wrote a file with SHA1 `sha1`; returns
/// its JSON summary.
#[track_caller]
fn assert_got(out: &Output, path: &Path, sha1: &str) -> Value {
    assert!(
        out.status.success(),
        "get failed ({}): {}",
        out.status,
        stderr_text(out).trim()
    );
    assert_eq!(
        sha1_of_file(path).to_string(),
        sha1,
        "downloaded bytes differ"
    );
    serde_json::from_str(stdout_text(out).trim())
        .unwrap_or_else(|e| panic!("get --json summary is not JSON ({e}): {}", stdout_text(out)))
}

/// A `get` running in the background on a lab host; killed on drop.
struct GetRun {
    child: Option<Child>,
    logs: TempDir,
}

impl GetRun {
    fn spawn(host: &Host, etcd: &str, sha1: &str, out: &Path, state: &Path) -> GetRun {
        let logs = tempfile::tempdir().unwrap();
        let stdout = std::fs::File::create(logs.path().join("out")).unwrap();
        let stderr = std::fs::File::create(logs.path().join("err")).unwrap();
        let child = command_on(Some(&host.netns))
            .args(get_args(etcd, sha1, out, state))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start get: {e}"));
        GetRun {
            child: Some(child),
            logs,
        }
    }

    /// Waits for the exit; panics (the process is killed) after `timeout`.
    #[track_caller]
    fn wait(&mut self, timeout: Duration) -> Output {
        let mut child = self.child.take().expect("get already waited for");
        let Some(status) = wait_timeout(&mut child, timeout) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "get did not exit within {timeout:?}; stderr:\n{}",
                self.read("err")
            );
        };
        self.output(status)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default()
    }

    fn output(&self, status: ExitStatus) -> Output {
        Output {
            status,
            stdout: self.read("out").into_bytes(),
            stderr: self.read("err").into_bytes(),
        }
    }
}

impl Drop for GetRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `host` has received `bytes` more than `from` on its link
/// (a transfer to it is under way).
#[track_caller]
fn wait_received(host: &Host, from: u64, bytes: u64) {
    wait_until(
        Duration::from_secs(30),
        &format!("{} to receive {bytes} bytes", host.netns),
        || host.rx_bytes().saturating_sub(from) >= bytes,
    );
}

// ---------------------------------------------------------------------------
// Starting as README says

/// README's two-machine start: host A runs what `make run` runs
/// (scripts/ensure-etcd.sh, then `serve` with the defaults), host B
/// points `PIRATEBAY_ETCD` at A as `make run` printed it. Each lists the
/// other and downloads the other's file.
#[test]
fn two_machines_started_as_readme_says() {
    let mut lab = Lab::new();
    let a = lab.add_host();
    let b = lab.add_host();
    let data_a = Dataset::new("from-a.bin", 2 * MIB, 1);
    let data_b = Dataset::new("from-b.bin", 2 * MIB, 2);
    let state_a = tempfile::tempdir().unwrap();
    let state_b = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ensure-etcd.sh");

    // Host A: `make run` = ensure-etcd.sh, then `serve` with the defaults.
    let env_a = [
        ("PIRATEBAY_STATE_DIR", state_a.path().display().to_string()),
        ("PIRATEBAY_DATASET", data_a.path().display().to_string()),
    ];
    let out = run_script_on(&a, &script, &env_a);
    assert!(
        out.status.success(),
        "ensure-etcd.sh on host A failed: {}{}",
        stdout_text(&out),
        stderr_text(&out)
    );
    let printed = stdout_text(&out);
    let line = printed
        .lines()
        .find(|l| l.contains("PIRATEBAY_ETCD=") && l.contains("make run"))
        .unwrap_or_else(|| {
            panic!("make run (ensure-etcd.sh) printed no line for the other machines:\n{printed}")
        });
    let etcd_a = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("PIRATEBAY_ETCD="))
        .unwrap_or_else(|| panic!("no PIRATEBAY_ETCD=... in {line:?}"))
        .to_string();
    assert_eq!(
        etcd_a,
        format!("http://{}:2379", a.ip),
        "the printed line must name host A's LAN address: {line:?}"
    );
    let env_a: Vec<(&str, &str)> = env_a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let peer_a = PeerProcess::spawn_on(Some(&a.netns), &[] as &[&str], &env_a);

    // Host B: the printed line.
    let env_b = [
        ("PIRATEBAY_ETCD", etcd_a.clone()),
        ("PIRATEBAY_STATE_DIR", state_b.path().display().to_string()),
        ("PIRATEBAY_DATASET", data_b.path().display().to_string()),
    ];
    let out = run_script_on(&b, &script, &env_b);
    assert!(
        out.status.success(),
        "ensure-etcd.sh on host B (PIRATEBAY_ETCD={etcd_a}) failed: {}{}",
        stdout_text(&out),
        stderr_text(&out)
    );
    let env_b: Vec<(&str, &str)> = env_b.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let peer_b = PeerProcess::spawn_on(Some(&b.netns), &[] as &[&str], &env_b);

    let id_of = |state: &Path| {
        wait_for(Duration::from_secs(10), "peer id file", || {
            std::fs::read_to_string(state.join("peer-id"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
    };
    let (id_a, id_b) = (id_of(state_a.path()), id_of(state_b.path()));
    wait_registered(&etcd_a, &[id_a.clone(), id_b.clone()]);
    wait_serving(&a, &data_a.sha1);
    wait_serving(&b, &data_b.sha1);

    // Each lists the other, from its own host with its own settings.
    for (host, env, other) in [(&a, &env_a, &id_b), (&b, &env_b, &id_a)] {
        let out = cli_on(Some(&host.netns), &["list", "--json"], env, CLI_TIMEOUT);
        assert!(out.status.success(), "list: {}", stderr_text(&out));
        let peers: Vec<Value> = serde_json::from_str(&stdout_text(&out)).unwrap();
        assert!(
            peers.iter().any(|p| p["id"] == other.as_str()),
            "{} does not list {other}: {peers:?}",
            host.netns
        );
    }

    // Each downloads the other's file.
    for (host, env, data, dir) in [
        (&a, &env_a, &data_b, state_a.path()),
        (&b, &env_b, &data_a, state_b.path()),
    ] {
        let dest = dir.join("got.bin");
        let out = cli_on(
            Some(&host.netns),
            &["get", &data.sha1, "-o", &dest.display().to_string()],
            env,
            CLI_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "{} cannot download {}: {}",
            host.netns,
            data.sha1,
            stderr_text(&out).trim()
        );
        assert_eq!(sha1_of_file(&dest).to_string(), data.sha1);
    }
    drop((peer_a, peer_b));
}

/// Runs scripts/ensure-etcd.sh on `host` with only `envs` (and PATH) set.
fn run_script_on(host: &Host, script: &Path, envs: &[(&str, String)]) -> Output {
    let mut cmd: Command = host.command("bash");
    cmd.arg(script).env_clear();
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // HOME under the state dir: nothing of the developer's is reused.
    if let Some((_, state)) = envs.iter().find(|(k, _)| *k == "PIRATEBAY_STATE_DIR") {
        cmd.env("HOME", state);
    }
    run_with_timeout(&mut cmd, Duration::from_secs(60))
}

/// A peer on the etcd host, started as `make run` starts it (etcd on
/// 127.0.0.1, listening on 0.0.0.0), is downloadable from another host.
#[test]
fn peer_on_the_etcd_host_is_downloadable_from_another_host() {
    let mut lab = Lab::new();
    let a = lab.add_host();
    let b = lab.add_host();
    let etcd = EtcdServer::on_host(&a);
    let data = Dataset::new("f.bin", 3 * MIB, 3);
    let peer = holder(&a, "http://127.0.0.1:2379", &data);
    let etcd_lan = format!("http://{}:2379", a.ip);
    wait_indexed(&etcd_lan, &[(&a, &peer)], &data.sha1);

    let peers = list_on(Some(&b), &etcd_lan);
    let addr = peers[0]["addr"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        addr,
        format!("{}:{LAB_PORT}", a.ip),
        "the peer's first address must be its LAN address, not loopback: {peers:?}"
    );
    let state = tempfile::tempdir().unwrap();
    let dest = state.path().join("got.bin");
    let out = get_on(&b, &etcd_lan, &data.sha1, &dest, state.path());
    assert_got(&out, &dest, &data.sha1);
    drop(etcd);
}

/// A browser on a third LAN host opens one peer's status page: the row of
/// a file only the other peer holds links it at that peer's LAN address
/// (not its loopback one, which it also advertises), the row of the page
/// peer's own file links it on the page's origin; a click on each row in
/// that browser downloads the file, SHA1 checked.
#[test]
fn status_page_links_download_from_a_browser_on_another_host() {
    let mut lab = Lab::new();
    let a = lab.add_host();
    let b = lab.add_host();
    let c = lab.add_host();
    let etcd = EtcdServer::on_host(&a);
    let etcd_lan = format!("http://{}:2379", a.ip);
    let mine = Dataset::new("mine.bin", 200_000, 21);
    let theirs = Dataset::new("theirs.bin", 300_000, 22);
    let page_peer = holder(&a, "http://127.0.0.1:2379", &mine);
    let other = holder(&b, &etcd_lan, &theirs);
    wait_indexed(&etcd_lan, &[(&a, &page_peer)], &mine.sha1);
    wait_indexed(&etcd_lan, &[(&b, &other)], &theirs.sha1);
    let page = format!("http://{}:{LAB_PORT}/", a.ip);
    wait_until(Duration::from_secs(30), "the page lists both files", || {
        ureq::get(format!("{page}v1/status"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .is_some_and(|s| s.contains(&mine.sha1) && s.contains(&theirs.sha1))
    });
    let mut browser = crate::support::devtools::Browser::open_with(c.command("chromium"), &page);
    browser.wait_true(
        "document.querySelectorAll('#files a.dl').length === 2",
        Duration::from_secs(30),
    );
    let mut href = |name: &str| {
        browser.eval(&format!(
            "Array.from(document.querySelectorAll('#files a.dl'))\
             .filter(function(a){{return a.textContent==={name:?};}})\
             .map(function(a){{return a.getAttribute('href');}})[0]"
        ))
    };
    assert_eq!(
        href("theirs.bin"),
        format!("http://{}:{LAB_PORT}/v1/files/{}", b.ip, theirs.sha1).as_str()
    );
    assert_eq!(
        href("mine.bin"),
        format!("/v1/files/{}", mine.sha1).as_str()
    );
    for data in [&mine, &theirs] {
        let name = data.file.file_name().unwrap().to_str().unwrap();
        let clicked = browser.eval(&format!(
            "(function(){{var a=Array.from(document.querySelectorAll('#files a.dl'))\
             .find(function(x){{return x.textContent==={name:?};}});\
             if(!a){{return false;}}a.click();return true;}})()"
        ));
        assert_eq!(clicked, Value::Bool(true), "{name}");
        let saved = browser.downloaded(name, Duration::from_secs(30));
        assert_eq!(sha1_of_file(&saved).to_string(), data.sha1, "{name}");
    }
    drop(browser);
    drop((page_peer, other, etcd));
}

/// A host with two interfaces, the first (with the default route) on a
/// network nobody else reaches, etcd reached through the other: the peer
/// advertises the address on etcd's side first and is downloadable.
#[test]
fn host_with_two_interfaces_is_reachable_through_etcds_side() {
    let mut lab = Lab::new();
    let etcd = EtcdServer::on_bridge(&mut lab);
    let (h, other_ip) = lab.add_two_interface_host();
    let c = lab.add_host();
    let data = Dataset::new("f.bin", 3 * MIB, 4);
    let peer = holder(&h, &etcd.endpoint(), &data);
    wait_indexed(&etcd.endpoint(), &[(&h, &peer)], &data.sha1);

    let peers = list_on(Some(&c), &etcd.endpoint());
    assert_eq!(
        peers[0]["addr"].as_str(),
        Some(format!("{}:{LAB_PORT}", h.ip).as_str()),
        "first address must be the LAN one, not {other_ip}: {peers:?}"
    );
    let state = tempfile::tempdir().unwrap();
    let dest = state.path().join("got.bin");
    let out = get_on(&c, &etcd.endpoint(), &data.sha1, &dest, state.path());
    assert_got(&out, &dest, &data.sha1);
}

// ---------------------------------------------------------------------------
// Holders the client cannot use

/// Three holders of an 8 MiB file and a client host; etcd on the bridge.
struct Three {
    etcd: EtcdServer,
    holders: Vec<Host>,
    client: Host,
    data: Dataset,
    peers: Vec<ServePeer>,
    state: TempDir,
    /// Last: torn down after the processes in it are stopped.
    lab: Lab,
}

impl Three {
    /// Holders' links capped at `holder_mbit`, the client's at `client_mbit`.
    fn new(size: u64, holder_mbit: Option<u32>, client_mbit: Option<u32>) -> Three {
        let mut lab = Lab::new();
        let etcd = EtcdServer::on_bridge(&mut lab);
        let holders = lab.add_hosts(3, holder_mbit);
        let client = lab.add_host();
        if let Some(m) = client_mbit {
            client.set_rate(m);
        }
        let data = Dataset::new("f.bin", size, 5);
        let peers: Vec<ServePeer> = holders
            .iter()
            .map(|h| holder(h, &etcd.endpoint(), &data))
            .collect();
        let pairs: Vec<(&Host, &ServePeer)> = holders.iter().zip(&peers).collect();
        wait_indexed(&etcd.endpoint(), &pairs, &data.sha1);
        Three {
            etcd,
            holders,
            client,
            data,
            peers,
            state: tempfile::tempdir().unwrap(),
            lab,
        }
    }

    fn dest(&self, name: &str) -> PathBuf {
        self.state.path().join(name)
    }

    fn get(&self, dest: &Path) -> Output {
        get_on(
            &self.client,
            &self.etcd.endpoint(),
            &self.data.sha1,
            dest,
            self.state.path(),
        )
    }

    fn spawn_get(&self, dest: &Path) -> GetRun {
        GetRun::spawn(
            &self.client,
            &self.etcd.endpoint(),
            &self.data.sha1,
            dest,
            self.state.path(),
        )
    }
}

/// A holder that etcd sees but the client cannot reach (its SYNs are
/// dropped) costs at most the connect timeout; the download completes
/// from the other two.
#[test]
fn unreachable_holder_costs_at_most_the_connect_timeout() {
    let t = Three::new(8 * MIB, None, None);
    let first = t.dest("baseline.bin");
    let start = Instant::now();
    assert_got(&t.get(&first), &first, &t.data.sha1);
    let baseline = start.elapsed();

    t.holders[0].drop_tcp_from(t.client.ip, LAB_PORT);
    let dest = t.dest("got.bin");
    let start = Instant::now();
    let out = t.get(&dest);
    let took = start.elapsed();
    let summary = assert_got(&out, &dest, &t.data.sha1);
    let unreachable = t.peers[0].id();
    assert!(
        !summary["peers_used"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == unreachable.as_str())),
        "the unreachable holder cannot have delivered: {summary}"
    );
    // One connect timeout, plus slack for a debug build on a busy machine;
    // without a connect timeout the kernel retries SYNs for minutes.
    let slack = Duration::from_millis(1500);
    assert!(
        took <= baseline + CONNECT_TIMEOUT + slack,
        "get with an unreachable holder took {took:.2?}, without it {baseline:.2?}: \
         more than the {CONNECT_TIMEOUT:?} connect timeout (+{slack:?} slack)"
    );
}

/// A holder whose link goes down mid-transfer: the download completes
/// from the other two, correct.
#[test]
fn holder_link_down_mid_transfer() {
    // 3 x 24 Mbit/s: 12 MiB take about 4 s, enough to cut one mid-way.
    let t = Three::new(12 * MIB, Some(24), None);
    let dest = t.dest("got.bin");
    let before = t.client.rx_bytes();
    let mut run = t.spawn_get(&dest);
    wait_received(&t.client, before, 3 * MIB);
    t.holders[0].link_down();
    let out = run.wait(CLI_TIMEOUT);
    assert_got(&out, &dest, &t.data.sha1);
}

/// 1 % packet loss both ways on every link (holders, client, etcd): the
/// download completes, correct.
#[test]
fn one_percent_loss_on_every_link() {
    let t = Three::new(8 * MIB, None, None);
    // Holders, client and etcd's host.
    for h in t.lab.hosts() {
        h.set_loss(1.0);
    }
    let dest = t.dest("got.bin");
    let out = t.get(&dest);
    assert_got(&out, &dest, &t.data.sha1);
}

/// `get` whose own link goes down mid-transfer fails with one clear line
/// (no hang, no panic) and resumes from its `.part` once the link is back.
#[test]
fn get_whose_link_goes_down_fails_clearly_and_resumes() {
    // The client's link at 24 Mbit/s: 12 MiB take about 4 s.
    let t = Three::new(12 * MIB, None, Some(24));
    let dest = t.dest("got.bin");
    let sha1: piratebay_sync::Sha1Digest = t.data.sha1.parse().unwrap();
    let mut run = t.spawn_get(&dest);
    // A verified piece in the state, not a byte count: 3 MiB received
    // from 3 holders at once is 3 pieces of 1 MiB each nearly done, and
    // now and then none was whole (nothing to resume).
    wait_until(
        Duration::from_secs(30),
        "a verified piece in the first get's state",
        || verified_in_state(&dest, &sha1) >= 1,
    );
    t.client.link_down();
    let out = run.wait(CLI_TIMEOUT);
    let err = stderr_text(&out);
    assert!(
        !out.status.success(),
        "get succeeded with its link down: {}",
        stdout_text(&out)
    );
    assert!(!err.contains("panicked"), "get panicked: {err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("piratebay-sync:"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "want exactly one error line, got stderr:\n{err}"
    );
    eprintln!("get with its link down said: {}", errors[0]);
    assert!(!dest.exists(), "a failed get must not leave the final file");

    t.client.link_up();
    let out = t.get(&dest);
    let summary = assert_got(&out, &dest, &t.data.sha1);
    assert!(
        summary["resumed_bytes"].as_u64().unwrap_or(0) > 0,
        "the second run must resume from the first one's pieces: {summary}"
    );
}

// ---------------------------------------------------------------------------
// etcd across the network

/// A host cut off from etcd for longer than the TTL disappears from
/// `list`, keeps serving the hosts it can still reach, and registers again
/// within a second of its link to etcd coming back.
#[test]
fn host_cut_off_from_etcd_disappears_keeps_serving_and_returns() {
    let mut lab = Lab::new();
    let etcd = EtcdServer::on_bridge(&mut lab);
    let h = lab.add_host();
    let c = lab.add_host();
    let data = Dataset::new("f.bin", MIB, 6);
    let peer = Serve::new(&etcd.endpoint())
        .on_host(&h)
        .dataset(data.path())
        .ttl(2)
        .start();
    let id = peer.id();
    wait_indexed(&etcd.endpoint(), &[(&h, &peer)], &data.sha1);

    h.partition_from(etcd.ip());
    wait_until(
        Duration::from_secs(15),
        "the cut-off peer to leave list",
        || {
            !list_on(None, &etcd.endpoint())
                .iter()
                .any(|p| p["id"] == id.as_str())
        },
    );

    // Still serving: host C fetches the file straight from it.
    let url = format!("http://{}:{LAB_PORT}/v1/files/{}", h.ip, data.sha1);
    let got = c.command("curl").args(["-fsS", "-m", "10", &url]).output();
    let got = got.unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    assert!(
        got.status.success(),
        "the cut-off peer stopped serving: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.stdout, std::fs::read(&data.file).unwrap());

    // The renewal that was in flight when the link went down hangs until
    // the etcd client's request timeout (3 s, longer than this TTL of 2 s,
    // shorter than the default 10 s): heal once the peer has noticed, as
    // any cut longer than a default TTL does.
    // "registration of": the lease thread's own warning (the watches on
    // the peers prefix and on the peer's own key say "retrying" sooner).
    peer.proc
        .wait_log_contains(Duration::from_secs(15), "registration of");
    h.heal();
    let healed = Instant::now();
    // Polled on etcd's gateway in-process (a `list` process per poll costs
    // a few hundred ms on a busy machine and blurs the measure).
    let key = peer_key("piratebay", &id);
    wait_until(
        Duration::from_secs(15),
        "the peer to register again",
        || gateway_get(&etcd.endpoint(), &key).is_ok_and(|v| v.is_some()),
    );
    let took = healed.elapsed();
    eprintln!("registered again {took:.2?} after the link to etcd came back");
    assert!(
        took <= Duration::from_millis(1300),
        "the peer registered again {took:.2?} after its link to etcd came back (want <= 1 s)"
    );
    assert!(list_on(None, &etcd.endpoint())
        .iter()
        .any(|p| p["id"] == id.as_str()));
}

/// A 3-member etcd cluster on 3 lab hosts; the client cannot reach the
/// first endpoint it is given: `list` and `get` work through the others.
#[test]
fn cluster_with_the_clients_first_endpoint_cut_off() {
    let mut lab = Lab::new();
    let members = lab.add_hosts(3, None);
    let h = lab.add_host();
    let c = lab.add_host();
    let cluster = EtcdCluster::on_hosts(&members);
    let endpoints = cluster.endpoints_csv();
    let data = Dataset::new("f.bin", 3 * MIB, 7);
    let peer = holder(&h, &endpoints, &data);
    wait_indexed(&endpoints, &[(&h, &peer)], &data.sha1);

    c.partition_from(members[0].ip);
    let peers = list_on(Some(&c), &endpoints);
    assert!(
        peers.iter().any(|p| p["id"] == peer.id().as_str()),
        "list through the other members misses the peer: {peers:?}"
    );
    let state = tempfile::tempdir().unwrap();
    let dest = state.path().join("got.bin");
    let out = get_on(&c, &endpoints, &data.sha1, &dest, state.path());
    assert_got(&out, &dest, &data.sha1);
}

/// The lab itself: hosts reach each other, a partition and a cut link
/// stop traffic, and everything is gone after the drop.
#[test]
fn lab_partitions_cut_links_and_cleans_up() {
    let mut lab = Lab::new();
    let a = lab.add_host();
    let b = lab.add_host();
    // `bash` opens a TCP connection; `timeout` ends a connect that hangs.
    let reach = |from: &Host, to: &Host| {
        let out = from
            .command("timeout")
            .args([
                "2",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{}/{LAB_PORT}", to.ip),
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run timeout/bash: {e}"));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Nothing listens on B: a reachable host refuses at once.
    let (_, err) = reach(&a, &b);
    assert!(err.contains("refused"), "B unreachable from A: {err}");
    b.partition_from(a.ip);
    assert_eq!(reach(&a, &b).0, Some(124), "a partitioned host answered");
    b.heal();
    assert!(reach(&a, &b).1.contains("refused"), "no reach after heal");
    a.link_down();
    assert!(
        !reach(&a, &b).1.contains("refused"),
        "a cut link still carries"
    );
    a.link_up();
    assert!(
        reach(&a, &b).1.contains("refused"),
        "no reach after link up"
    );

    let names = [a.netns.clone(), b.netns.clone(), lab.bridge()];
    drop(lab);
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let mut left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    left.extend(
        String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string()),
    );
    for n in names {
        assert!(!left.contains(&n), "{n} left behind: {left:?}");
    }
}
