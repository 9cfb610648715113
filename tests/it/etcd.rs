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
    // Idle longer than the stream's idle timeout: events after a reopen still arrive.
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
        .watch_prefix(b"/r/", move |ev| {
            if let WatchEvent::Put(kv) = ev {
                sink.lock().unwrap().push(kv.key)
            }
        })
        .unwrap();
    c.put(b"/r/1", b"", None).unwrap();
    wait_until(Duration::from_secs(5), "first put", || {
        seen.lock().unwrap().len() == 1
    });
    etcd.restart();
    c.put(b"/r/2", b"", None).unwrap();
    wait_until(Duration::from_secs(10), "put after restart", || {
        seen.lock().unwrap().iter().any(|k| k == b"/r/2")
    });
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
    assert!(msg.contains("--etcd"), "the message says what to do: {msg}");
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
