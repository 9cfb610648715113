//! Patience, not failure (issue 19), and a lookup no host can starve
//! (issue 23, item 4): a peer that could not be asked yet, or is still
//! indexing, is asked again (randomized backoff, bounded by lack of
//! progress); silent records on one host cost that host's turns only;
//! a seed over its upload slots turns a download away at once.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

use piratebay_sync::etcd::{Client, Config};

use crate::fetch_support::{random_file, sha1_of_file};
use crate::support::*;

const MIB: u64 = 1024 * 1024;

#[track_caller]
fn assert_finished(child: Child, out: &Path, sha1: &str, timeout: Duration) {
    let mut child = child;
    if wait_timeout(&mut child, timeout).is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("get output");
    assert!(
        output.status.success(),
        "get failed ({}): {}",
        output.status,
        stderr_text(&output).trim()
    );
    assert_eq!(sha1_of_file(out).to_string(), sha1);
}

/// A seed whose handshakes are dropped (its link full, a switch dropping
/// SYNs) for 3 s while two downloads start: they wait for it and finish.
/// Before, the lookup gave up within a second: "no peer holds".
#[test]
fn downloads_wait_for_a_seed_that_drops_handshakes_for_3_seconds() {
    let mut lab = Lab::new();
    let etcd = EtcdServer::on_bridge(&mut lab);
    let seed_host = lab.add_host();
    let hosts = lab.add_hosts(2, None);
    let data = tempfile::tempdir().unwrap();
    let sha1 = random_file(&data.path().join("f.bin"), 2 * MIB, 19).to_string();
    let _seed = Serve::new(&etcd.endpoint())
        .on_host(&seed_host)
        .dataset(data.path())
        .start();
    wait_until(Duration::from_secs(30), "the seed serves the file", || {
        let out = cli(&["files", "--json", "--etcd", &etcd.endpoint()]);
        stdout_text(&out).contains(&sha1)
    });
    for h in &hosts {
        seed_host.drop_tcp_from(h.ip, LAB_PORT);
    }
    let state = tempfile::tempdir().unwrap();
    let outs: Vec<_> = (0..2)
        .map(|i| state.path().join(format!("got{i}.bin")))
        .collect();
    let started = Instant::now();
    let mut gets: Vec<Child> = hosts
        .iter()
        .zip(&outs)
        .enumerate()
        .map(|(i, (h, out))| {
            spawn_get(
                Some(&h.netns),
                &etcd.endpoint(),
                &sha1,
                out,
                &state.path().join(format!("state{i}")),
            )
        })
        .collect();
    // The fault lasts 3 s (a duration, not a condition to poll).
    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));
    for g in &mut gets {
        assert!(
            g.try_wait().unwrap().is_none(),
            "a get gave up while the seed dropped its handshakes"
        );
    }
    seed_host.heal();
    for (g, out) in gets.into_iter().zip(&outs) {
        assert_finished(g, out, &sha1, Duration::from_secs(60));
    }
}

/// A peer registered while its index is not ready: the file is being
/// written (its mtime moves) when `get` starts, so the peer answers "not
/// indexed yet" (`X-Indexing`), not "not here"; the get asks again and
/// finishes once the file settles and is hashed.
#[test]
fn a_get_started_before_the_peers_index_is_ready_waits_and_finishes() {
    let etcd = EtcdServer::new();
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("new.bin");
    let sha1 = random_file(&path, MIB, 23).to_string();
    let touch = || {
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now()).unwrap();
    };
    touch();
    let peer = Serve::new(&etcd.endpoint()).dataset(data.path()).start();
    let id = peer.id();
    wait_until(Duration::from_secs(30), "the peer registered", || {
        let out = cli(&["list", "--json", "--etcd", &etcd.endpoint()]);
        stdout_text(&out).contains(&id)
    });
    touch();
    let dest = tempfile::tempdir().unwrap();
    let out = dest.path().join("got.bin");
    let get = spawn_get(None, &etcd.endpoint(), &sha1, &out, &dest.path().join("s"));
    // Still being written for 1.5 s after the get started: it cannot be
    // indexed before then (it must stay still for the settle time).
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        touch();
        std::thread::sleep(Duration::from_millis(100));
    }
    let head = ureq::head(format!("http://{}/v1/files/{sha1}", peer.bound_addr()))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(head.status(), 404, "not indexed while it was being written");
    assert!(
        head.headers().get("x-indexing").is_some(),
        "a peer with files still to index says so"
    );
    assert_finished(get, &out, &sha1, Duration::from_secs(30));
}

/// Issue 23, item 4: 100 records on 100 silent ports of one IP, their ids
/// sorting before the honest one, must not starve the one-file lookup:
/// probes go one host at a time, at most 4 to one host. Before: `no peer
/// holds ... (101 peer(s) could not be asked)`, exit 2, every run.
#[test]
fn one_hundred_silent_records_on_one_host_do_not_starve_the_lookup() {
    let etcd = EtcdServer::new();
    let data = tempfile::tempdir().unwrap();
    let sha1 = random_file(&data.path().join("f.bin"), 4 * MIB, 29).to_string();
    let seed = Serve::new(&etcd.endpoint()).dataset(data.path()).start();
    wait_until(Duration::from_secs(30), "the seed serves the file", || {
        let out = cli(&["files", "--json", "--etcd", &etcd.endpoint()]);
        stdout_text(&out).contains(&sha1)
    });
    // Listeners that accept (the kernel does) and never answer.
    let ip = next_loopback_ip();
    let silent: Vec<std::net::TcpListener> = (0..100)
        .map(|_| std::net::TcpListener::bind((ip, 0)).unwrap())
        .collect();
    let client = Client::new(Config::new([etcd.endpoint().as_str()])).unwrap();
    let lease = client.lease_grant(120).unwrap();
    for (i, l) in silent.iter().enumerate() {
        let id = format!("0000-silent-{i:03}");
        let addr = l.local_addr().unwrap().to_string();
        let record = serde_json::json!({
            "id": id, "addr": addr, "addrs": [addr], "name": "sybil",
            "version": "0", "started_at": 1, "index_gen": 1,
        });
        client
            .put(
                peer_key("piratebay", &id).as_bytes(),
                record.to_string().as_bytes(),
                Some(lease.id),
            )
            .unwrap();
    }
    let dest = tempfile::tempdir().unwrap();
    let out = dest.path().join("got.bin");
    let started = Instant::now();
    let get = spawn_get(None, &etcd.endpoint(), &sha1, &out, &dest.path().join("s"));
    assert_finished(get, &out, &sha1, Duration::from_secs(30));
    let took = started.elapsed();
    println!("get with 100 silent records on one host: {took:.2?}");
    assert!(took < Duration::from_secs(10), "took {took:.2?}");
    drop(seed);
}

/// Upload slots: a seed serving pieces to one download (`--upload-slots
/// 1`) turns the second away at once (`503` with `X-Slots`, no body, no
/// timeout), and that download finishes from the other holder.
#[test]
fn the_download_over_the_seeds_upload_slots_is_turned_away_at_once_and_finishes_elsewhere() {
    let mut lab = Lab::new();
    let etcd = EtcdServer::on_bridge(&mut lab);
    let seed_host = lab.add_host();
    let other_host = lab.add_host();
    seed_host.set_rate(16);
    other_host.set_rate(16);
    let hosts = lab.add_hosts(2, None);
    // Host A is slow (8 s for the file): it holds the seed's slot while B
    // starts.
    hosts[0].set_rate(8);
    let data = tempfile::tempdir().unwrap();
    let sha1 = random_file(&data.path().join("f.bin"), 8 * MIB, 31).to_string();
    let seed = Serve::new(&etcd.endpoint())
        .on_host(&seed_host)
        .dataset(data.path())
        .arg("--upload-slots", "1")
        .start();
    let other_data = tempfile::tempdir().unwrap();
    std::fs::copy(data.path().join("f.bin"), other_data.path().join("f.bin")).unwrap();
    let other = Serve::new(&etcd.endpoint())
        .on_host(&other_host)
        .dataset(other_data.path())
        .start();
    let other_id = other.id();
    wait_until(
        Duration::from_secs(30),
        "both holders serve the file",
        || {
            let out = cli(&["files", "--json", "--etcd", &etcd.endpoint()]);
            let v: serde_json::Value = serde_json::from_str(&stdout_text(&out)).unwrap_or_default();
            v.as_array().is_some_and(|files| {
                files
                    .iter()
                    .any(|f| f["sha1"] == sha1.as_str() && f["peers"] == 2)
            })
        },
    );
    let state = tempfile::tempdir().unwrap();
    let out_a = state.path().join("a.bin");
    let out_b = state.path().join("b.bin");
    let etcd_ep = etcd.endpoint();
    let a = spawn_get(
        Some(&hosts[0].netns),
        &etcd_ep,
        &sha1,
        &out_a,
        &state.path().join("sa"),
    );
    // The first download holds the seed's only slot.
    let piece_to = |ip: std::net::Ipv4Addr, status: &str| {
        let log = seed.proc.log_text();
        log.lines()
            .any(|l| l.contains(&format!("{ip}:")) && l.contains(&format!("\" {status} ")))
    };
    wait_until(
        Duration::from_secs(30),
        "the seed serves a piece to host A",
        || piece_to(hosts[0].ip, "206"),
    );
    let b = spawn_get(
        Some(&hosts[1].netns),
        &etcd_ep,
        &sha1,
        &out_b,
        &state.path().join("sb"),
    );
    let output = wait_output(b, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "get B failed: {}",
        stderr_text(&output).trim()
    );
    assert_eq!(sha1_of_file(&out_b).to_string(), sha1);
    assert!(
        piece_to(hosts[1].ip, "503"),
        "the seed turned host B away with a 503:\n{}",
        seed.proc.log_text()
    );
    let summary: serde_json::Value = serde_json::from_str(stdout_text(&output).trim()).unwrap();
    assert!(
        summary["peers_used"]
            .as_array()
            .is_some_and(|p| p.iter().any(|id| id == other_id.as_str())),
        "host B got pieces from the other holder: {summary}"
    );
    assert_finished(a, &out_a, &sha1, Duration::from_secs(60));
}

/// Reads (and drops) one request head from an accepted connection, in
/// blocking mode, waiting at most 2 s for each read.
fn read_request_head(s: &mut std::net::TcpStream) {
    use std::io::Read;
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// Registered peers that answer `404` to anything, each on its own
/// loopback IP (its own host), counting the connections made to them.
pub(crate) struct Bystanders {
    asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Bystanders {
    pub(crate) fn start(client: &Client, n: usize) -> Bystanders {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lease = client.lease_grant(120).unwrap();
        let mut threads = Vec::new();
        for i in 0..n {
            let listener = std::net::TcpListener::bind((next_loopback_ip(), 0)).unwrap();
            listener.set_nonblocking(true).unwrap();
            let id = format!("bystander-{i:02}");
            let addr = listener.local_addr().unwrap().to_string();
            let record = serde_json::json!({
                "id": id, "addr": addr, "addrs": [addr], "name": "bystander",
                "version": "0", "started_at": 1, "index_gen": 1,
            });
            client
                .put(
                    peer_key("piratebay", &id).as_bytes(),
                    record.to_string().as_bytes(),
                    Some(lease.id),
                )
                .unwrap();
            let (asked, stop) = (asked.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    asked.fetch_add(1, Ordering::Relaxed);
                    read_request_head(&mut s);
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }));
        }
        Bystanders {
            asked,
            stop,
            threads,
        }
    }

    pub(crate) fn asked(&self) -> usize {
        self.asked.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Bystanders {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Finding holders without asking everyone (issue 19): a `get` reads the
/// tracker, then asks the registered peers a wave of 8 at a time (in a
/// random order, the tracker read again between waves) and stops at the
/// first whole copy. Among 24 registered bystanders (each on a host of its
/// own) and one seed: the first `get` finds the lone seed (nobody
/// announced it yet); the seed, found by that lookup's `HEAD`, announces
/// itself in the tracker, so the second `get` asks it and one wave, at
/// most 8 bystanders (before: all 24, one `HEAD` each). A SHA1 nobody
/// holds is still "no peer holds", after every bystander was asked once.
#[test]
fn a_lookup_asks_a_wave_of_peers_not_every_peer_and_still_finds_a_lone_seed() {
    let etcd = EtcdServer::new();
    let data = tempfile::tempdir().unwrap();
    let sha1 = random_file(&data.path().join("f.bin"), 4 * MIB, 31).to_string();
    let seed = Serve::new(&etcd.endpoint()).dataset(data.path()).start();
    let url = format!("http://{}/v1/files", seed.bound_addr());
    wait_until(Duration::from_secs(30), "the seed serves the file", || {
        ureq::get(&url)
            .call()
            .ok()
            .and_then(|r| r.into_body().read_to_string().ok())
            .is_some_and(|b| b.contains(&sha1))
    });
    let client = Client::new(Config::new([etcd.endpoint().as_str()])).unwrap();
    let bystanders = Bystanders::start(&client, 24);
    let swarm = format!("/piratebay/swarm/{sha1}/");
    assert!(
        client
            .get_prefix(swarm.as_bytes())
            .is_ok_and(|l| l.kvs.is_empty()),
        "nobody announced the file yet"
    );
    // The lone seed, not in the tracker: found by the waves.
    let dest = tempfile::tempdir().unwrap();
    let first = dest.path().join("first.bin");
    let get = spawn_get(
        None,
        &etcd.endpoint(),
        &sha1,
        &first,
        &dest.path().join("s1"),
    );
    assert_finished(get, &first, &sha1, Duration::from_secs(60));
    let by_first = bystanders.asked();
    wait_until(
        Duration::from_secs(20),
        "the seed in the tracker, found by a lookup",
        || {
            client.get_prefix(swarm.as_bytes()).is_ok_and(|l| {
                l.kvs
                    .iter()
                    .any(|kv| String::from_utf8_lossy(&kv.value).contains("\"complete\":true"))
            })
        },
    );
    let second = dest.path().join("second.bin");
    let get = spawn_get(
        None,
        &etcd.endpoint(),
        &sha1,
        &second,
        &dest.path().join("s2"),
    );
    assert_finished(get, &second, &sha1, Duration::from_secs(60));
    let by_second = bystanders.asked() - by_first;
    println!("bystanders asked: {by_first} by the first get, {by_second} by the second");
    assert!(
        by_second <= 8,
        "the second lookup asked {by_second} of the 24 bystanders (one wave is at most 8)"
    );
    // Nobody holds it: every bystander asked, once.
    let before = bystanders.asked();
    let nobody = "0123456789abcdef0123456789abcdef01234567";
    let out = cli(&[
        "get",
        nobody,
        "-o",
        dest.path().join("none.bin").to_str().unwrap(),
        "--etcd",
        &etcd.endpoint(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr_text(&out).contains("no peer holds"),
        "{}",
        stderr_text(&out)
    );
    assert_eq!(
        bystanders.asked() - before,
        24,
        "every bystander asked once before 'no peer holds'"
    );
    drop(seed);
}

fn wait_output(mut child: Child, timeout: Duration) -> std::process::Output {
    if wait_timeout(&mut child, timeout).is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().expect("get output")
}

/// A seed the tracker names that could not answer a lookup's first
/// `HEAD` (its full uplink dropped the handshake; here it cuts its first
/// connection) is asked again by the next wave: the lookup finds it in the
/// second wave, asking at most two waves of the 24 bystanders, instead of
/// asking every one and then waiting for the patience at the end (seconds
/// in the 47-host lab).
#[test]
fn an_announced_seed_that_could_not_answer_is_asked_again_by_the_next_wave() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let etcd = EtcdServer::new();
    let client = Client::new(Config::new([etcd.endpoint().as_str()])).unwrap();
    let bystanders = Bystanders::start(&client, 24);
    let sha1 = piratebay_sync::Sha1Digest::of(b"the seed's file");
    // The seed: cuts its first connection, then answers HEAD 200.
    let listener = std::net::TcpListener::bind((next_loopback_ip(), 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (conns, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (conns2, stop2) = (conns.clone(), stop.clone());
    let seed = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            if conns2.fetch_add(1, Ordering::SeqCst) == 0 {
                drop(s);
                continue;
            }
            read_request_head(&mut s);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nETag: \"{sha1}\"\r\nConnection: close\r\n\r\n"
            );
        }
    });
    // Announced as a complete holder (another lookup's HEAD found it).
    let id = "flaky-seed";
    let bucket =
        &piratebay_sync::Sha1Digest::of(addr.split(':').next().unwrap().as_bytes()).to_hex()[..8];
    let announced = serde_json::json!({ "id": id, "addrs": [addr], "complete": true });
    client
        .put(
            format!("/piratebay/swarm/{sha1}/{bucket}/{id}").as_bytes(),
            announced.to_string().as_bytes(),
            None,
        )
        .unwrap();
    let lookup = piratebay_sync::ProbedHolders::new(
        client,
        "piratebay",
        piratebay_sync::ProbeOptions::default(),
    )
    .lookup(&sha1)
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let _ = seed.join();
    assert_eq!(lookup.size, Some(1000), "the seed found");
    assert!(conns.load(Ordering::SeqCst) >= 2, "the seed asked again");
    let asked = bystanders.asked();
    assert!(
        asked <= 16,
        "{asked} of the 24 bystanders asked: the seed waited for the end of the waves"
    );
}
