//! The etcd gateway client against a real etcd: kv, paging, leases, watch,
//! endpoint failover, a three-member cluster losing its leader.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use piratebay_sync::etcd::{Client, Config, Error, WatchEvent};

use crate::support::*;

fn client(endpoints: &[String]) -> Client {
    Client::new(Config::new(endpoints.iter().cloned())).unwrap()
}

#[test]
fn put_get_delete_round_trip() {
    let etcd = EtcdServer::new();
    let c = client(&[etcd.endpoint()]);
    let rev = c.put(b"/t/a", b"hello", None).unwrap();
    assert!(rev > 1);
    let kv = c.get(b"/t/a").unwrap().expect("key just put");
    assert_eq!(kv.value, b"hello");
    assert_eq!(kv.mod_revision, rev);
    assert_eq!(kv.lease, 0);
    // Cross-check with the reference tool.
    assert_eq!(
        etcdctl_ok(&etcd.endpoint(), &["get", "/t/a", "--print-value-only"]).trim(),
        "hello"
    );
    assert_eq!(c.delete(b"/t/a").unwrap(), 1);
    assert_eq!(c.get(b"/t/a").unwrap(), None);
    assert_eq!(c.delete(b"/t/a").unwrap(), 0);
}

#[test]
fn prefix_listing_is_exact_and_paged() {
    let etcd = EtcdServer::new();
    let c = client(&[etcd.endpoint()]);
    // 1,201 keys: more than two pages of 500.
    for i in 0..1201 {
        c.put(format!("/pfx/{i:05}").as_bytes(), b"v", None)
            .unwrap();
    }
    // Neighbours that a sloppy range end would include.
    c.put(b"/pfx0", b"outside", None).unwrap();
    c.put(b"/pf", b"outside", None).unwrap();
    let listing = c.get_prefix(b"/pfx/").unwrap();
    assert_eq!(listing.kvs.len(), 1201);
    assert!(listing.kvs.iter().all(|kv| kv.key.starts_with(b"/pfx/")));
    assert_eq!(listing.kvs[0].key, b"/pfx/00000");
    assert_eq!(listing.kvs[1200].key, b"/pfx/01200");
    assert!(c.get_prefix(b"/nothing-here/").unwrap().kvs.is_empty());
}

#[test]
fn prefix_with_trailing_0xff_bytes() {
    let etcd = EtcdServer::new();
    let c = client(&[etcd.endpoint()]);
    c.put(&[b'a', 0xff], b"1", None).unwrap();
    c.put(&[b'a', 0xff, 0x01], b"2", None).unwrap();
    c.put(&[b'a', 0xff, 0xff], b"3", None).unwrap();
    c.put(b"b", b"outside", None).unwrap();
    c.put(&[b'a', 0xfe], b"outside", None).unwrap();
    let got = c.get_prefix(&[b'a', 0xff]).unwrap();
    let values: Vec<_> = got.kvs.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(values, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    // An all-0xff prefix reaches to the end of the keyspace.
    c.put(&[0xff, 0xff, 0x05], b"top", None).unwrap();
    let top = c.get_prefix(&[0xff, 0xff]).unwrap();
    assert_eq!(top.kvs.len(), 1);
    assert_eq!(top.kvs[0].value, b"top");
}

#[test]
fn lease_grant_keepalive_ttl_revoke() {
    let etcd = EtcdServer::new();
    let c = client(&[etcd.endpoint()]);
    let lease = c.lease_grant(30).unwrap();
    assert_eq!(lease.ttl, 30);
    c.put(b"/leased", b"x", Some(lease.id)).unwrap();
    assert_eq!(c.get(b"/leased").unwrap().unwrap().lease, lease.id.0);
    // etcdctl prints lease IDs in hex; ours must name the same lease.
    let out = etcdctl_ok(&etcd.endpoint(), &["lease", "timetolive", &lease.id.hex()]);
    assert!(out.contains("granted with TTL(30s)"), "etcdctl says: {out}");
    assert_eq!(c.lease_keepalive(lease.id).unwrap(), Some(30));
    let ttl = c.lease_ttl(lease.id).unwrap().unwrap();
    assert_eq!(ttl.granted_ttl, 30);
    assert!(ttl.ttl > 0 && ttl.ttl <= 30);
    c.lease_revoke(lease.id).unwrap();
    assert_eq!(
        c.get(b"/leased").unwrap(),
        None,
        "revoke deletes attached keys"
    );
    assert_eq!(
        c.lease_keepalive(lease.id).unwrap(),
        None,
        "a gone lease says so"
    );
    assert_eq!(c.lease_ttl(lease.id).unwrap(), None);
    c.lease_revoke(lease.id)
        .expect("revoking a gone lease is not an error");
}

#[test]
fn watch_snapshots_then_streams_puts_deletes_and_expiry() {
    let etcd = EtcdServer::new();
    let c = client(&[etcd.endpoint()]);
    c.put(b"/w/before", b"0", None).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let watcher = c
        .watch_prefix(b"/w/", move |ev| sink.lock().unwrap().push(ev))
        .unwrap();
    wait_until(Duration::from_secs(5), "snapshot", || {
        !events.lock().unwrap().is_empty()
    });
    match &events.lock().unwrap()[0] {
        WatchEvent::Snapshot { kvs, revision } => {
            assert_eq!(kvs.len(), 1);
            assert_eq!(kvs[0].key, b"/w/before");
            assert!(*revision > 0);
        }
        other => panic!("first event should be a snapshot, got {other:?}"),
    }
    c.put(b"/w/a", b"1", None).unwrap();
    c.put(b"/other", b"not watched", None).unwrap();
    c.delete(b"/w/a").unwrap();
    let lease = c.lease_grant(2).unwrap();
    c.put(b"/w/leased", b"2", Some(lease.id)).unwrap();
    // Idle a while: events after it still arrive.
    std::thread::sleep(Duration::from_millis(1500));
    // The lease expiry arrives as a DELETE event.
    wait_until(
        Duration::from_secs(8),
        "lease expiry as a delete event",
        || {
            events
                .lock()
                .unwrap()
                .iter()
                .any(|e| matches!(e, WatchEvent::Delete { key, .. } if key == b"/w/leased"))
        },
    );
    let evs = events.lock().unwrap().clone();
    let kinds: Vec<String> = evs[1..]
        .iter()
        .map(|e| match e {
            WatchEvent::Put(kv) => format!("put {}", kv.key_str()),
            WatchEvent::Delete { key, .. } => format!("delete {}", String::from_utf8_lossy(key)),
            WatchEvent::Snapshot { .. } => "snapshot".into(),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "put /w/a",
            "delete /w/a",
            "put /w/leased",
            "delete /w/leased"
        ],
        "events in order, nothing outside the prefix, nothing lost or repeated across reopens"
    );
    let started = Instant::now();
    drop(watcher);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "dropping a watcher joins its thread promptly"
    );
}

#[test]
fn watch_survives_etcd_restart() {
    let mut etcd = EtcdServer::new();
    let c = client(&[etcd.endpoint()]);
    let seen = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let sink = seen.clone();
    let _w = c
        .watch_prefix(b"/r/", move |ev| match ev {
            WatchEvent::Put(kv) => sink.lock().unwrap().push(kv.key),
            WatchEvent::Snapshot { kvs, .. } => sink
                .lock()
                .unwrap()
                .extend(kvs.into_iter().map(|kv| kv.key)),
            WatchEvent::Delete { .. } => {}
        })
        .unwrap();
    // The put may land before the first snapshot or after it: either way it is seen.
    c.put(b"/r/1", b"", None).unwrap();
    wait_until(Duration::from_secs(5), "first put", || {
        seen.lock().unwrap().iter().any(|k| k == b"/r/1")
    });
    etcd.restart();
    c.put(b"/r/2", b"", None).unwrap();
    wait_until(Duration::from_secs(10), "put after restart", || {
        seen.lock().unwrap().iter().any(|k| k == b"/r/2")
    });
}

#[test]
fn an_idle_watch_stays_one_stream_and_stops_at_once() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let c = client(std::slice::from_ref(&ep));
    let puts = Arc::new(Mutex::new(0usize));
    let sink = puts.clone();
    let watcher = c
        .watch_prefix(b"/idle/", move |ev| {
            if let WatchEvent::Put(_) = ev {
                *sink.lock().unwrap() += 1;
            }
        })
        .unwrap();
    wait_until(Duration::from_secs(5), "the stream open", || {
        etcd_watch_streams_started(&ep) >= 1.0
    });
    let opened = etcd_watch_streams_started(&ep);
    // Polled over 4 s (the stream was reopened every second before): no
    // new stream, and events still flow on the one open.
    let window = Instant::now();
    let mut n = 0;
    while window.elapsed() < Duration::from_secs(4) {
        if n < 3 {
            c.put(format!("/idle/{n}").as_bytes(), b"", None).unwrap();
            n += 1;
        }
        assert_eq!(
            etcd_watch_streams_started(&ep),
            opened,
            "an idle watch keeps its one stream"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_until(Duration::from_secs(5), "the puts seen", || {
        *puts.lock().unwrap() == 3
    });
    assert_eq!(etcd_watch_streams_started(&ep), opened);
    let started = Instant::now();
    drop(watcher);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopping interrupts the open stream ({:?})",
        started.elapsed()
    );
}

#[test]
fn watch_opens_on_the_endpoint_that_answered_not_a_dead_first_one() {
    // A first endpoint that accepts and closes at once, counting attempts.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = tries.clone();
    std::thread::spawn(move || {
        for s in dead.incoming() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    let etcd = EtcdServer::new();
    let c = client(&[dead_url, etcd.endpoint()]);
    c.put(b"/pref/a", b"", None).unwrap();
    let after_put = tries.load(std::sync::atomic::Ordering::SeqCst);
    assert!(after_put >= 1, "the first endpoint was tried");
    let seen = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let sink = seen.clone();
    let _w = c
        .watch_prefix(b"/pref/", move |ev| match ev {
            // The put may land before the first snapshot or after it.
            WatchEvent::Put(kv) => sink.lock().unwrap().push(kv.key),
            WatchEvent::Snapshot { kvs, .. } => sink
                .lock()
                .unwrap()
                .extend(kvs.into_iter().map(|kv| kv.key)),
            WatchEvent::Delete { .. } => {}
        })
        .unwrap();
    c.put(b"/pref/b", b"", None).unwrap();
    wait_until(Duration::from_secs(10), "the put seen", || {
        seen.lock().unwrap().iter().any(|k| k == b"/pref/b")
    });
    assert_eq!(
        tries.load(std::sync::atomic::Ordering::SeqCst),
        after_put,
        "the watch opened on the endpoint that answered (reopens take the same path)"
    );
}

#[test]
fn dead_endpoint_is_skipped() {
    let etcd = EtcdServer::new();
    let dead = format!("http://127.0.0.1:{}", free_port([127, 0, 0, 1]));
    let c = client(&[dead.clone(), etcd.endpoint()]);
    let started = Instant::now();
    c.put(b"/k", b"v", None).unwrap();
    assert_eq!(c.get(b"/k").unwrap().unwrap().value, b"v");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn unreachable_names_every_endpoint_quickly() {
    let a = format!("http://127.0.0.1:{}", free_port([127, 0, 0, 1]));
    // A hung endpoint: the kernel completes the connection, nobody ever answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = format!("http://{}", hung.local_addr().unwrap());
    let c = client(&[a.clone(), b.clone()]);
    let started = Instant::now();
    let err = c.get(b"/k").unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.is_unreachable(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&a) && msg.contains(&b), "{msg}");
    // What to do is the binary's advice, not the library's message.
    assert!(
        !msg.contains("--etcd"),
        "no flag in a library message: {msg}"
    );
    assert!(!msg.contains('\n'));
}

#[test]
fn not_an_etcd_is_a_clear_error() {
    // A plain HTTP server that answers 404 to everything.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found");
        }
    });
    let c = client(&[format!("http://{addr}")]);
    let err = c.get(b"/k").unwrap_err();
    assert!(matches!(err, Error::Status { status: 404, .. }), "{err}");
    t.join().unwrap();
}

#[test]
fn cluster_keeps_working_when_the_leader_dies() {
    let mut cluster = EtcdCluster::new();
    let c = client(&cluster.endpoints());
    c.put(b"/c/before", b"1", None).unwrap();
    let killed = cluster.kill_leader();
    // Writes and reads go on through the other members once a leader is elected.
    let started = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "a write after the leader died",
        || c.put(b"/c/after", b"2", None).is_ok(),
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(c.get(b"/c/before").unwrap().unwrap().value, b"1");
    assert_eq!(c.get_prefix(b"/c/").unwrap().kvs.len(), 2);
    cluster.restart(killed);
    cluster.wait_for_quorum(Duration::from_secs(10));
}

#[test]
fn compacted_watch_resyncs_with_a_snapshot() {
    let mut etcd = EtcdServer::new();
    let c = client(&[etcd.endpoint()]);
    c.put(b"/cw/a", b"1", None).unwrap();
    let state = Arc::new(Mutex::new(
        std::collections::BTreeMap::<Vec<u8>, Vec<u8>>::new(),
    ));
    let snapshots = Arc::new(Mutex::new(0usize));
    // While `gate` is held by the test, the watch thread blocks in its callback.
    let gate = Arc::new(Mutex::new(()));
    let (st, sn, g) = (state.clone(), snapshots.clone(), gate.clone());
    let _w = c
        .watch_prefix(b"/cw/", move |ev| {
            let _pass = g.lock().unwrap();
            let mut st = st.lock().unwrap();
            match ev {
                WatchEvent::Snapshot { kvs, .. } => {
                    *sn.lock().unwrap() += 1;
                    st.clear();
                    st.extend(kvs.into_iter().map(|kv| (kv.key, kv.value)));
                }
                WatchEvent::Put(kv) => {
                    st.insert(kv.key, kv.value);
                }
                WatchEvent::Delete { key, .. } => {
                    st.remove(&key);
                }
            }
        })
        .unwrap();
    wait_until(Duration::from_secs(5), "first snapshot", || {
        *snapshots.lock().unwrap() == 1
    });
    let held = gate.lock().unwrap();
    c.put(b"/cw/b", b"2", None).unwrap(); // the watch thread blocks on this event
    etcd.restart(); // the stream dies while the thread is blocked
    c.put(b"/cw/c", b"3", None).unwrap();
    c.delete(b"/cw/a").unwrap();
    let rev = c.put(b"/cw/d", b"4", None).unwrap();
    gateway_post(
        &etcd.endpoint(),
        "/v3/kv/compaction",
        &serde_json::json!({ "revision": rev.to_string(), "physical": true }),
    )
    .unwrap();
    drop(held);
    // The reopened watch finds its revision compacted and takes a snapshot.
    wait_until(Duration::from_secs(10), "resync snapshot", || {
        *snapshots.lock().unwrap() >= 2
    });
    let expected: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = c
        .get_prefix(b"/cw/")
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    wait_until(Duration::from_secs(5), "watch state equals etcd", || {
        *state.lock().unwrap() == expected
    });
    assert_eq!(expected.len(), 3, "b, c, d");
}

/// An etcd with auth enabled: root, and a `piratebay` user whose role is
/// limited to the `/piratebay/` prefix. Simple tokens expire after `ttl` s.
fn etcd_with_auth(token_ttl: u64) -> EtcdServer {
    let etcd = EtcdServer::with_args(&["--auth-token-ttl", &token_ttl.to_string()]);
    let ep = etcd.endpoint();
    etcdctl_ok(&ep, &["user", "add", "root:rootpw"]);
    etcdctl_ok(&ep, &["user", "add", "piratebay:pbpw"]);
    etcdctl_ok(&ep, &["role", "add", "pbrole"]);
    etcdctl_ok(
        &ep,
        &[
            "role",
            "grant-permission",
            "pbrole",
            "--prefix=true",
            "readwrite",
            "/piratebay/",
        ],
    );
    etcdctl_ok(&ep, &["user", "grant-role", "piratebay", "pbrole"]);
    etcdctl_ok(&ep, &["auth", "enable"]);
    etcd
}

fn auth_client(ep: &str, password: &str) -> Client {
    let mut cfg = Config::new([ep.to_string()]);
    cfg.user = Some("piratebay".into());
    cfg.password = Some(password.into());
    Client::new(cfg).unwrap()
}

#[test]
fn auth_user_works_within_its_prefix_and_renews_expired_tokens() {
    let etcd = etcd_with_auth(2);
    let ep = etcd.endpoint();
    let anonymous = client(std::slice::from_ref(&ep));
    assert!(anonymous.get(b"/piratebay/x").is_err(), "auth is on");
    let c = auth_client(&ep, "pbpw");
    c.put(b"/piratebay/x", b"1", None).unwrap();
    assert_eq!(c.get(b"/piratebay/x").unwrap().unwrap().value, b"1");
    let denied = c.put(b"/elsewhere", b"1", None).unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    // Outlive the token (2 s simple-token TTL): nothing to poll, the token
    // expires on the server's clock.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        c.get(b"/piratebay/x").unwrap().unwrap().value,
        b"1",
        "token renewed silently"
    );
    let lease = c.lease_grant(5).unwrap();
    c.put(b"/piratebay/leased", b"", Some(lease.id)).unwrap();
}

#[test]
fn auth_wrong_password_is_one_clear_line() {
    let etcd = etcd_with_auth(300);
    let c = auth_client(&etcd.endpoint(), "wrong");
    let err = c.get(b"/piratebay/x").unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("authentication") && !msg.contains("--etcd") && !msg.contains('\n'),
        "{msg}"
    );
}

#[test]
fn auth_peer_registers_and_lists_with_user_and_password() {
    let etcd = etcd_with_auth(2);
    let ep = etcd.endpoint();
    let peer = Serve::new(&ep)
        .ttl(3)
        .env("PIRATEBAY_ETCD_USER", "piratebay")
        .env("PIRATEBAY_ETCD_PASSWORD", "pbpw")
        .start();
    let listed = || {
        let out = cli(&[
            "list",
            "--json",
            "--etcd",
            &ep,
            "--etcd-user",
            "piratebay",
            "--etcd-password",
            "pbpw",
        ]);
        out.status.success() && stdout_text(&out).contains("\"addr\"")
    };
    wait_until(Duration::from_secs(10), "peer listed with auth", listed);
    // Several token lifetimes later the peer is still registered (renewals re-authenticate).
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        listed(),
        "peer lost after token expiry:\n{}",
        peer.proc.log_text()
    );
    let out = cli(&[
        "list",
        "--etcd",
        &ep,
        "--etcd-user",
        "piratebay",
        "--etcd-password",
        "nope",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_text(&out);
    assert!(
        err.contains("authentication")
            && err.contains("--etcd-password")
            && err.trim_end().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn https_endpoint_with_the_test_ca() {
    let certs = TestCerts::generate();
    let etcd = EtcdServer::with_tls(&certs);
    let ep = etcd.endpoint();
    assert!(ep.starts_with("https://"));
    let mut cfg = Config::new([ep.clone()]);
    cfg.ca_file = Some(certs.ca.clone());
    let c = Client::new(cfg).unwrap();
    c.put(b"/piratebay/tls", b"ok", None).unwrap();
    assert_eq!(c.get(b"/piratebay/tls").unwrap().unwrap().value, b"ok");

    // A peer and `list` given the CA work end to end.
    let ca = certs.ca.display().to_string();
    let _peer = Serve::new(&ep).arg("--etcd-ca", &ca).start();
    wait_until(Duration::from_secs(10), "peer listed over https", || {
        let out = cli(&["list", "--json", "--etcd", &ep, "--etcd-ca", &ca]);
        out.status.success() && stdout_text(&out).contains("\"addr\"")
    });
}

#[test]
fn https_endpoint_with_an_untrusted_certificate_is_refused_clearly() {
    let certs = TestCerts::generate();
    let etcd = EtcdServer::with_tls(&certs);
    let ep = etcd.endpoint();
    for ca in [None, Some(certs.other_ca.display().to_string())] {
        let mut args = vec!["list", "--etcd", &ep];
        if let Some(ca) = &ca {
            args.extend(["--etcd-ca", ca]);
        }
        let out = cli(&args);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr_text(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("certificate") && err.contains("--etcd-ca"),
            "{err}"
        );
    }
    // A CA file that is not PEM is a configuration error, named.
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), "not a certificate").unwrap();
    let out = cli(&[
        "list",
        "--etcd",
        &ep,
        "--etcd-ca",
        junk.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_text(&out).contains("holds no certificate"),
        "{}",
        stderr_text(&out)
    );
}
