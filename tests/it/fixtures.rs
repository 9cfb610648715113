//! Tests of the test fixtures themselves: if these fail, every other
//! module's failures are suspect.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

#[test]
fn wait_for_returns_the_first_some() {
    let mut n = 0;
    let v = wait_for(Duration::from_secs(5), "counter to reach 3", || {
        n += 1;
        (n >= 3).then_some(n * 10)
    });
    assert_eq!(v, 30);
}

#[test]
#[should_panic(expected = "waiting for the impossible")]
fn wait_until_panics_with_what_on_timeout() {
    wait_until(Duration::from_millis(100), "the impossible", || false);
}

#[test]
fn loopback_ips_are_distinct_bindable_and_in_range() {
    let mut seen = HashSet::new();
    for _ in 0..50 {
        let ip = next_loopback_ip();
        let o = ip.octets();
        assert_eq!((o[0], o[1]), (127, 0), "{ip} outside 127.0/16");
        assert!(
            ip != Ipv4Addr::new(127, 0, 0, 1) && ip != Ipv4Addr::new(127, 0, 255, 255),
            "{ip}"
        );
        assert!(seen.insert(ip), "{ip} returned twice");
        let port = free_port(ip);
        let l = TcpListener::bind((ip, port)).expect("free port is bindable");
        assert_eq!(l.local_addr().unwrap().ip(), ip);
    }
}

#[test]
#[should_panic(expected = "did not exit within")]
fn run_with_timeout_kills_a_hang() {
    run_with_timeout(Command::new("sleep").arg("30"), Duration::from_millis(300));
}

#[test]
fn cli_runs_the_binary_without_piratebay_env() {
    let out = cli(&["--help"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let text = stdout_text(&out);
    for cmd in ["serve", "list", "get"] {
        assert!(text.contains(cmd), "--help lacks {cmd}: {text}");
    }
    // The fixture must strip the caller's PIRATEBAY_* variables.
    let cmd = command();
    let removed: Vec<_> = cmd
        .get_envs()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.to_owned())
        .collect();
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PIRATEBAY_") {
            assert!(removed.contains(&k), "{k:?} not removed");
        }
    }
}

#[test]
fn peer_process_captures_output_and_exit_status() {
    let mut peer = PeerProcess::spawn(&["--no-such-flag"]);
    let status = peer.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "an unknown flag must fail");
    peer.wait_log_contains(Duration::from_secs(5), "no-such-flag");
    assert!(!peer.is_running());
}

#[test]
fn single_etcd_put_get_through_gateway_and_etcdctl() {
    init_test_log();
    let etcd = EtcdServer::new();
    assert!(
        etcd.endpoint().starts_with("http://127.0."),
        "{}",
        etcd.endpoint()
    );
    etcd.put("/fixtures/a", "one");
    assert_eq!(etcd.get("/fixtures/a").as_deref(), Some("one"));
    assert_eq!(etcd.get("/fixtures/missing"), None);
    let out = etcdctl_ok(
        &etcd.endpoint(),
        &["get", "/fixtures/a", "--print-value-only"],
    );
    assert_eq!(out.trim(), "one");
    etcdctl_ok(&etcd.endpoint(), &["put", "/fixtures/b", "two"]);
    assert_eq!(etcd.get("/fixtures/b").as_deref(), Some("two"));
}

#[test]
fn single_etcd_restart_keeps_data_and_wipe_loses_it() {
    init_test_log();
    let mut etcd = EtcdServer::new();
    let endpoint = etcd.endpoint();
    etcd.put("/fixtures/kept", "yes");
    let old_pid = etcd.pid().expect("running");

    etcd.kill();
    assert!(!is_healthy(&endpoint));
    assert!(
        gateway_get(&endpoint, "/fixtures/kept").is_err(),
        "a killed etcd must not answer"
    );
    etcd.start();
    assert_eq!(etcd.endpoint(), endpoint, "same ports after restart");
    assert_ne!(etcd.pid(), Some(old_pid));
    assert_eq!(etcd.get("/fixtures/kept").as_deref(), Some("yes"));

    etcd.restart();
    assert_eq!(etcd.get("/fixtures/kept").as_deref(), Some("yes"));

    etcd.wipe_and_restart();
    assert_eq!(etcd.endpoint(), endpoint);
    assert_eq!(etcd.get("/fixtures/kept"), None, "wipe must lose all data");
}

#[test]
fn cluster_elects_a_new_leader_when_the_leader_dies() {
    init_test_log();
    let mut cluster = EtcdCluster::new();
    assert_eq!(cluster.endpoints().len(), 3);
    assert_eq!(cluster.endpoints_csv().split(',').count(), 3);
    let first = cluster.wait_for_leader(Duration::from_secs(10));
    gateway_put(&cluster.endpoints()[first], "/fixtures/c", "before").unwrap();

    let killed = cluster.kill_leader();
    assert_eq!(killed, first);
    let second = cluster.wait_for_leader(Duration::from_secs(10));
    assert_ne!(second, killed, "a dead member cannot be the leader");
    cluster.wait_for_quorum(Duration::from_secs(10));
    let other = (0..3).find(|i| *i != killed && *i != second).unwrap();
    gateway_put(&cluster.endpoints()[other], "/fixtures/c", "after").unwrap();
    assert_eq!(
        cluster.member(second).get("/fixtures/c").as_deref(),
        Some("after")
    );

    cluster.restart(killed);
    cluster.wait_for_quorum(Duration::from_secs(10));
    wait_until(
        Duration::from_secs(10),
        "restarted member to catch up",
        || {
            gateway_get(&cluster.endpoints()[killed], "/fixtures/c")
                .ok()
                .flatten()
                .as_deref()
                == Some("after")
        },
    );
    let members = etcdctl_ok(&cluster.endpoints_csv(), &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
}
