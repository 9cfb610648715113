//! Peer registration and discovery with real `serve` processes and a real etcd.

use std::time::{Duration, Instant};

use piratebay_sync::etcd::{Client, Config};
use piratebay_sync::{list_peers, PeerCache, PeerRecord, Registration, RegistrationConfig};
use serde_json::Value;

use crate::support::*;

fn serve(endpoints: &str, ttl: u64) -> ServePeer {
    Serve::new(endpoints).ttl(ttl).start()
}

/// `piratebay-sync list --json` parsed; panics with stderr on failure.
fn list_json(endpoints: &str) -> Vec<Value> {
    let out = cli(&["list", "--json", "--etcd", endpoints]);
    assert!(out.status.success(), "list failed: {}", stderr_text(&out));
    serde_json::from_str(&stdout_text(&out)).expect("list --json prints a JSON array")
}

fn listed(endpoints: &str, id: &str) -> Option<Value> {
    let out = cli(&["list", "--json", "--etcd", endpoints]);
    if !out.status.success() {
        return None;
    }
    let peers: Vec<Value> = serde_json::from_str(&stdout_text(&out)).ok()?;
    peers.into_iter().find(|p| p["id"] == id)
}

fn wait_listed(endpoints: &str, id: &str, timeout: Duration) -> Value {
    wait_for(timeout, &format!("peer {id} listed"), || {
        listed(endpoints, id)
    })
}

fn wait_gone(endpoints: &str, id: &str, timeout: Duration) {
    wait_until(timeout, &format!("peer {id} gone from list"), || {
        let out = cli(&["list", "--json", "--etcd", endpoints]);
        out.status.success() && !stdout_text(&out).contains(id)
    });
}

#[test]
fn registration_is_visible_to_list_and_etcdctl_with_the_lease_ttl() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let peer = serve(&ep, 7);
    let id = peer.id();
    let rec = wait_listed(&ep, &id, Duration::from_secs(10));
    let addr = rec["addr"].as_str().unwrap();
    assert!(addr.starts_with("127.0."), "advertised {addr}");
    assert!(!addr.ends_with(":0") && !addr.starts_with("0.0.0.0"));
    assert_eq!(rec["version"], env!("CARGO_PKG_VERSION"));
    assert!(rec["started_at"].as_u64().unwrap() > 1_600_000_000);
    assert!(rec["name"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(rec.get("index_gen").is_some());
    // The advertised address answers the health check with the same id.
    let health: Value = serde_json::from_str(
        &ureq::get(format!("http://{addr}/v1/health"))
            .call()
            .expect("health answers")
            .into_body()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["id"], id.as_str());

    // The reference tool sees the same key, attached to a lease of the configured TTL.
    let key = peer_key("piratebay", &id);
    let json = etcdctl_ok(&ep, &["get", &key, "-w", "json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let lease = v["kvs"][0]["lease"].as_i64().expect("key has a lease");
    assert_eq!(rec["lease"].as_i64(), Some(lease));
    let ttl = etcdctl_ok(&ep, &["lease", "timetolive", &format!("{lease:x}")]);
    assert!(ttl.contains("granted with TTL(7s)"), "etcdctl: {ttl}");

    // The table form names it too.
    let out = cli(&["list", "--etcd", &ep]);
    assert!(out.status.success());
    let table = stdout_text(&out);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains(addr), "{table}");
}

#[test]
fn renewal_keeps_a_peer_alive_past_three_ttls() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let peer = serve(&ep, 2);
    let id = peer.id();
    let first = wait_listed(&ep, &id, Duration::from_secs(10));
    // Nothing to poll for: the claim is that the key stays for 3 x TTL.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        assert!(
            listed(&ep, &id).is_some(),
            "peer vanished while renewing:\n{}",
            peer.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        listed(&ep, &id).unwrap()["lease"],
        first["lease"],
        "same lease renewed, not re-granted"
    );
}

#[test]
fn sigkill_disappears_within_ttl_plus_two_seconds() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let mut peer = serve(&ep, 3);
    let id = peer.id();
    wait_listed(&ep, &id, Duration::from_secs(10));
    peer.proc.kill9();
    let killed = Instant::now();
    wait_gone(&ep, &id, Duration::from_secs(5));
    assert!(killed.elapsed() <= Duration::from_secs(5));
}

#[test]
fn sigterm_disappears_within_one_second_and_exits_cleanly() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let mut peer = serve(&ep, 30);
    let id = peer.id();
    wait_listed(&ep, &id, Duration::from_secs(10));
    peer.proc.sigterm();
    wait_gone(&ep, &id, Duration::from_secs(1));
    let status = peer.proc.wait_exit(Duration::from_secs(5));
    assert!(
        status.success(),
        "exit {status:?}\n{}",
        peer.proc.log_text()
    );
}

#[test]
fn sigint_also_unregisters() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let mut peer = serve(&ep, 30);
    let id = peer.id();
    wait_listed(&ep, &id, Duration::from_secs(10));
    peer.proc.sigint();
    wait_gone(&ep, &id, Duration::from_secs(1));
    assert!(peer.proc.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn peer_id_is_stable_across_restarts() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let dirs = tempfile::tempdir().unwrap();
    let (dataset, state) = (dirs.path().join("d"), dirs.path().join("s"));
    let start = || {
        Serve::new(&ep)
            .ttl(30)
            .dataset(&dataset)
            .state_dir(&state)
            .start()
    };
    let mut first = start();
    let id = first.id();
    wait_listed(&ep, &id, Duration::from_secs(10));
    first.proc.sigterm();
    assert!(first.proc.wait_exit(Duration::from_secs(5)).success());
    let second = start();
    assert_eq!(second.id(), id);
    wait_listed(&ep, &id, Duration::from_secs(10));
    assert_eq!(list_json(&ep).len(), 1);
    assert!(state.join("peer-id").exists());
}

#[test]
fn etcd_wiped_and_restarted_peer_registers_again_within_ttl() {
    let mut etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let peer = serve(&ep, 4);
    let id = peer.id();
    wait_listed(&ep, &id, Duration::from_secs(10));
    etcd.wipe_and_restart();
    assert!(
        etcd.get(&peer_key("piratebay", &id)).is_none(),
        "the wipe lost the key"
    );
    let back = Instant::now();
    wait_listed(&ep, &id, Duration::from_secs(4));
    assert!(back.elapsed() <= Duration::from_secs(4));
    assert!(
        peer.proc.log_text().contains("registering again"),
        "the peer logs that it registered again:\n{}",
        peer.proc.log_text()
    );
}

#[test]
fn cluster_leader_killed_registration_and_list_keep_working() {
    let mut cluster = EtcdCluster::new();
    let eps = cluster.endpoints_csv();
    let peer = serve(&eps, 3);
    let id = peer.id();
    wait_listed(&eps, &id, Duration::from_secs(10));
    cluster.kill_leader();
    cluster.wait_for_leader(Duration::from_secs(10));
    // Stay registered across several TTLs with the old leader down.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        wait_listed(&eps, &id, Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = cli(&["list", "--json", "--etcd", &eps]);
    assert!(out.status.success(), "{}", stderr_text(&out));
}

#[test]
fn a_peer_that_joins_later_appears_in_the_cache_within_a_second() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let client = Client::new(Config::new([ep.clone()])).unwrap();
    let cache = PeerCache::start(&client, "piratebay").unwrap();
    assert!(cache.wait_synced(Duration::from_secs(5)));
    assert!(cache.peers().is_empty());
    let version = cache.version();

    let late = serve(&ep, 5);
    let id = late.id();
    // Once the key exists in etcd, the cache has it within a second.
    wait_until(Duration::from_secs(10), "key in etcd", || {
        etcd.get(&peer_key("piratebay", &id)).is_some()
    });
    let seen_by = Instant::now() + Duration::from_secs(1);
    wait_until(Duration::from_secs(1), "peer in cache", || {
        cache.get(&id).is_some()
    });
    assert!(Instant::now() <= seen_by);
    assert!(cache.version() > version);
    // And it leaves the cache as fast.
    late.proc.sigterm();
    wait_until(Duration::from_secs(2), "peer left the cache", || {
        cache.get(&id).is_none()
    });
}

#[test]
fn registration_library_api_and_index_gen_updates() {
    let etcd = EtcdServer::new();
    let client = Client::new(Config::new([etcd.endpoint()])).unwrap();
    let record = PeerRecord {
        id: "libpeer".into(),
        addr: "127.0.0.9:7070".into(),
        addrs: Vec::new(),
        name: "test".into(),
        version: "0".into(),
        started_at: 1,
        index_gen: 0,
    };
    let reg = Registration::start(
        client.clone(),
        RegistrationConfig {
            namespace: "ns-lib".into(),
            ttl: Duration::from_secs(5),
            record,
        },
    )
    .unwrap();
    assert!(reg.wait_registered(Duration::from_secs(5)));
    reg.set_index_gen(42);
    wait_until(Duration::from_secs(5), "index_gen published", || {
        list_peers(&client, "ns-lib")
            .map(|p| p.first().is_some_and(|p| p.record.index_gen == 42))
            .unwrap_or(false)
    });
    // Other namespaces do not see it.
    assert!(list_peers(&client, "piratebay").unwrap().is_empty());
    let lease = reg.lease().unwrap();
    reg.stop();
    assert!(list_peers(&client, "ns-lib").unwrap().is_empty());
    assert_eq!(
        client.lease_ttl(lease).unwrap(),
        None,
        "stop revoked the lease"
    );
}

#[test]
fn list_without_etcd_fails_fast_with_one_line() {
    let port = free_port([127, 0, 0, 1]);
    let started = Instant::now();
    let out = cli(&["list", "--etcd", &format!("127.0.0.1:{port}")]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_text(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("docker compose up -d etcd"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn env_vars_configure_list_and_flags_win() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    etcd.put(
        "/envns/peers/x",
        r#"{"id":"x","addr":"127.0.0.1:1","name":"n","version":"v","started_at":1}"#,
    );
    let out = cli_with(
        &["list", "--json"],
        &[
            ("PIRATEBAY_ETCD", ep.as_str()),
            ("PIRATEBAY_NAMESPACE", "envns"),
        ],
        DEFAULT_TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert!(stdout_text(&out).contains("\"x\""));
    // A flag beats the variable.
    let out = cli_with(
        &["list", "--json", "--namespace", "piratebay"],
        &[
            ("PIRATEBAY_ETCD", ep.as_str()),
            ("PIRATEBAY_NAMESPACE", "envns"),
        ],
        DEFAULT_TIMEOUT,
    );
    assert!(out.status.success());
    assert_eq!(stdout_text(&out).trim(), "[]");
}

#[test]
fn garbage_records_are_skipped_not_fatal() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    etcd.put("/piratebay/peers/bad", "not json {");
    etcd.put(
        "/piratebay/peers/good",
        r#"{"id":"good","addr":"127.0.0.1:1","name":"n","version":"v","started_at":1}"#,
    );
    let peers = list_json(&ep);
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["id"], "good");
}

#[test]
fn serve_without_etcd_keeps_retrying_and_registers_when_it_appears() {
    let mut etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    etcd.stop();
    let peer = serve(&ep, 3);
    let id = peer.id();
    peer.proc
        .wait_log_contains(Duration::from_secs(10), "retrying");
    etcd.start();
    wait_listed(&ep, &id, Duration::from_secs(10));
}

#[test]
fn cluster_leader_killed_then_another_member_restarted_peer_stays_registered() {
    let mut cluster = EtcdCluster::new();
    let eps = cluster.endpoints_csv();
    let peer = serve(&eps, 5);
    let id = peer.id();
    wait_listed(&eps, &id, Duration::from_secs(10));
    let leader = cluster.kill_leader();
    cluster.wait_for_leader(Duration::from_secs(10));
    // With two of three members up there is a quorum: list answers and has the peer.
    wait_listed(&eps, &id, Duration::from_secs(3));
    // Restart another member: a short loss of quorum, then two members again.
    let other = (0..3).find(|&i| i != leader).unwrap();
    cluster.restart(other);
    cluster.wait_for_leader(Duration::from_secs(10));
    wait_listed(&eps, &id, Duration::from_secs(3));
    // The old leader comes back too; the peer is still there, on its first lease.
    cluster.restart(leader);
    cluster.wait_for_quorum(Duration::from_secs(10));
    let rec = wait_listed(&eps, &id, Duration::from_secs(3));
    assert!(
        !peer.proc.log_text().contains("registering again"),
        "the lease survived the member restarts:\n{}",
        peer.proc.log_text()
    );
    assert!(rec["lease"].as_i64().unwrap_or(0) != 0);
}

#[test]
fn a_wildcard_listener_registers_every_address_loopback_last_and_logs_why() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let peer = Serve::new(&ep).arg("--listen", "0.0.0.0:0").start();
    let id = peer.id();
    let rec = wait_listed(&ep, &id, Duration::from_secs(10));
    let addrs: Vec<&str> = rec["addrs"]
        .as_array()
        .expect("record has addrs")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        rec["addr"].as_str(),
        addrs.first().copied(),
        "addr is the first of addrs"
    );
    let last = addrs.last().unwrap();
    assert!(last.starts_with("127.0.0.1:"), "loopback last: {addrs:?}");
    let port = last.rsplit(':').next().unwrap();
    assert_ne!(port, "0");
    for a in &addrs {
        assert!(
            !a.starts_with("0.0.0.0") && a.ends_with(&format!(":{port}")),
            "{addrs:?}"
        );
    }
    assert_eq!(
        addrs.iter().filter(|a| a.starts_with("127.")).count(),
        1,
        "{addrs:?}"
    );
    // serve says what it advertised and why.
    peer.proc
        .wait_log_contains(Duration::from_secs(5), "advertised as");
    let log = peer.proc.log_text();
    assert!(log.contains("loopback, this machine only"), "{log}");
    // The table shows every address.
    let out = cli(&["list", "--etcd", &ep]);
    assert!(
        stdout_text(&out).contains(&addrs.join(",")),
        "{}",
        stdout_text(&out)
    );
}

#[test]
fn advertise_takes_a_comma_separated_list_and_rejects_a_wildcard() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let given = "198.18.255.1:7070,127.0.0.1:7070";
    let peer = Serve::new(&ep).arg("--advertise", given).start();
    let rec = wait_listed(&ep, &peer.id(), Duration::from_secs(10));
    assert_eq!(rec["addr"], "198.18.255.1:7070");
    assert_eq!(
        rec["addrs"],
        serde_json::json!(["198.18.255.1:7070", "127.0.0.1:7070"])
    );

    let dir = tempfile::tempdir().unwrap();
    let out = cli(&[
        "serve",
        "--etcd",
        &ep,
        "--advertise",
        "10.0.0.1:7070,0.0.0.0:7070",
        "--state-dir",
        dir.path().to_str().unwrap(),
        "--dataset",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_text(&out);
    assert!(err.contains("--advertise \"0.0.0.0:7070\""), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
