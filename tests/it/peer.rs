//! A whole `serve` process: index, server and registration together.

use std::time::Duration;

use piratebay_sync::Sha1Digest;
use serde_json::Value;

use crate::support::*;

fn get(url: &str) -> Option<(u16, Vec<u8>)> {
    let resp = ureq::get(url)
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .ok()?;
    Some((status, body))
}

fn listed_record(ep: &str) -> Option<Value> {
    let out = cli(&["list", "--json", "--etcd", ep]);
    let peers: Vec<Value> = serde_json::from_str(&stdout_text(&out)).ok()?;
    peers.into_iter().next()
}

#[test]
fn serve_shares_its_dataset_and_publishes_the_index_generation() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let dirs = tempfile::tempdir().unwrap();
    let dataset = dirs.path().join("dataset");
    std::fs::create_dir_all(dataset.join("sub")).unwrap();
    let first: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dataset.join("sub/first.bin"), &first).unwrap();
    let peer = Serve::new(&ep).ttl(5).dataset(&dataset).start();
    let rec = wait_for(
        Duration::from_secs(10),
        "peer registered with an index",
        || listed_record(&ep).filter(|r| r["index_gen"].as_u64().unwrap_or(0) > 0),
    );
    let addr = rec["addr"].as_str().unwrap().to_string();
    let sha = Sha1Digest::of(&first);
    let (status, body) = wait_for(Duration::from_secs(10), "file served", || {
        get(&format!("http://{addr}/v1/files/{sha}")).filter(|(s, _)| *s == 200)
    });
    assert_eq!(status, 200);
    assert_eq!(Sha1Digest::of(&body), sha);
    let (_, list) = get(&format!("http://{addr}/v1/files")).unwrap();
    let list: Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(list["files"][0]["name"], "first.bin");
    assert_eq!(list["files"][0]["size"], 300_000);

    // etcd catches up with the generation the peer serves...
    let gen1 = list["generation"].as_u64().unwrap();
    wait_until(
        Duration::from_secs(5),
        "served generation published in etcd",
        || listed_record(&ep).is_some_and(|r| r["index_gen"].as_u64() == Some(gen1)),
    );
    // ...and a new file changes it.
    let second = b"second file".to_vec();
    std::fs::write(dataset.join("second.txt"), &second).unwrap();
    wait_until(Duration::from_secs(5), "new index_gen in etcd", || {
        listed_record(&ep).is_some_and(|r| r["index_gen"].as_u64().unwrap_or(0) > gen1)
    });
    let url = format!("http://{addr}/v1/files/{}", Sha1Digest::of(&second));
    let (status, body) = wait_for(Duration::from_secs(5), "second file served", || {
        get(&url).filter(|(s, _)| *s == 200)
    });
    assert_eq!((status, body), (200, second));
    assert!(
        peer.proc.log_text().contains("GET /v1/files"),
        "access log:\n{}",
        peer.proc.log_text()
    );
}

#[test]
fn serve_refuses_a_missing_dataset_with_one_line() {
    let dirs = tempfile::tempdir().unwrap();
    let missing = dirs.path().join("nope");
    let out = cli(&[
        "serve",
        "--dataset",
        missing.to_str().unwrap(),
        "--state-dir",
        dirs.path().join("s").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_text(&out);
    assert!(err.contains("nope") && err.contains("mkdir -p"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn bad_flags_are_one_clear_line_not_a_panic() {
    for args in [
        vec!["serve", "--listen", "not-an-addr"],
        vec!["serve", "--ttl", "-3"],
        vec!["serve", "--advertise", "0.0.0.0:7070"],
        vec!["list", "--etcd", ","],
    ] {
        let out = cli(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr_text(&out) + &stdout_text(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.trim_end().lines().count() <= 3, "{args:?}: {err}");
        assert!(
            !err.lines().next().unwrap_or_default().is_empty(),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_download_into_a_peers_dataset_becomes_shared_by_that_peer() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let holder = Serve::new(&ep).start();
    let content: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let sha = Sha1Digest::of(&content);
    std::fs::write(holder.dataset.join("shared.bin"), &content).unwrap();
    let receiver = Serve::new(&ep).start();
    let files = || {
        let out = cli(&[
            "files",
            "--json",
            "--etcd",
            &ep,
            "--state-dir",
            receiver.state_dir.join("cli").to_str().unwrap(),
        ]);
        serde_json::from_str::<Vec<Value>>(&stdout_text(&out)).ok()
    };
    wait_until(Duration::from_secs(10), "holder lists the file", || {
        files().is_some_and(|f| {
            f.iter()
                .any(|e| e["sha1"] == sha.to_hex() && e["peers"] == 1)
        })
    });
    let out = cli(&[
        "get",
        &sha.to_hex(),
        "--dir",
        receiver.dataset.to_str().unwrap(),
        "--etcd",
        &ep,
        "--state-dir",
        receiver.state_dir.join("cli").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(
        std::fs::read(receiver.dataset.join("shared.bin")).unwrap(),
        content
    );
    // The receiving peer indexes the finished download and serves it too.
    wait_until(Duration::from_secs(5), "two holders", || {
        files().is_some_and(|f| {
            f.iter()
                .any(|e| e["sha1"] == sha.to_hex() && e["peers"] == 2)
        })
    });
}

/// The etcd `version` of a peer's key: how many puts it has had.
fn key_version(ep: &str, id: &str) -> Option<u64> {
    let key = peer_key("piratebay", id);
    let json = etcdctl_ok(ep, &["get", &key, "-w", "json"]);
    let v: Value = serde_json::from_str(&json).ok()?;
    v["kvs"][0]["version"].as_u64()
}

#[test]
fn index_generations_are_published_at_most_once_a_second() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let peer = Serve::new(&ep).arg("--rescan", "1").start();
    let id = peer.id();
    let before = wait_for(Duration::from_secs(10), "peer registered", || {
        key_version(&ep, &id)
    });
    // 300 files appear one by one for about 3 s: hundreds of generations.
    let started = std::time::Instant::now();
    for i in 0..300 {
        std::fs::write(peer.dataset.join(format!("f{i}")), format!("file {i}")).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    // The last generation is published...
    wait_until(
        Duration::from_secs(10),
        "every file in the published generation",
        || {
            let out = cli(&["files", "--json", "--etcd", &ep]);
            serde_json::from_str::<Vec<Value>>(&stdout_text(&out)).is_ok_and(|f| f.len() == 300)
        },
    );
    let elapsed = started.elapsed().as_secs_f64();
    let puts = key_version(&ep, &id).unwrap() - before;
    // ...with at most one put per second (plus the last one).
    assert!(
        (puts as f64) <= elapsed + 2.0,
        "{puts} puts of the record in {elapsed:.1}s"
    );
    assert!(puts >= 1);
}

#[test]
fn an_idle_serve_keeps_one_watch_stream_on_etcd() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let peer = Serve::new(&ep).start();
    let id = peer.id();
    wait_for(Duration::from_secs(10), "peer registered", || {
        key_version(&ep, &id)
    });
    let open =
        || etcd_metric(&ep, "etcd_debugging_mvcc_watch_stream_total", &[]).expect("etcd metrics");
    wait_until(Duration::from_secs(10), "its watch open", || open() >= 1.0);
    let started = etcd_watch_streams_started(&ep);
    // Polled over 4 s: one stream (the peer cache's, which also guards the
    // own key), never reopened.
    let window = std::time::Instant::now();
    while window.elapsed() < Duration::from_secs(4) {
        assert_eq!(open(), 1.0, "one watch stream per idle peer");
        assert_eq!(etcd_watch_streams_started(&ep), started, "never reopened");
        std::thread::sleep(Duration::from_millis(250));
    }
    // The one watch still guards the own key: deleted, it is put back.
    let key = peer_key("piratebay", &id);
    etcdctl_ok(&ep, &["del", &key]);
    wait_for(Duration::from_secs(5), "the key put back", || {
        key_version(&ep, &id)
    });
}

/// Names in a peer's catalog, sorted.
fn catalog_names(addr: &std::net::SocketAddr) -> Option<Vec<String>> {
    let (status, body) = get(&format!("http://{addr}/v1/files"))?;
    let list: Value = serde_json::from_slice(&body)
        .ok()
        .filter(|_| status == 200)?;
    let mut names: Vec<String> = list["files"]
        .as_array()?
        .iter()
        .filter_map(|f| f["name"].as_str().map(String::from))
        .collect();
    names.sort();
    Some(names)
}

#[test]
fn restart_serves_the_cached_catalog_before_the_rescan_finishes() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let dirs = tempfile::tempdir().unwrap();
    let dataset = dirs.path().join("dataset");
    let state = dirs.path().join("state");
    std::fs::create_dir_all(&dataset).unwrap();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let mut cached: Vec<String> = (0..20).map(|i| format!("f{i:02}.bin")).collect();
    for (i, name) in cached.iter().enumerate() {
        let p = dataset.join(name);
        std::fs::write(&p, format!("content {i}").repeat(100 + i)).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(an_hour_ago).unwrap();
    }
    let peer = Serve::new(&ep).dataset(&dataset).state_dir(&state).start();
    let addr = peer.bound_addr();
    wait_until(Duration::from_secs(20), "first start indexed", || {
        catalog_names(&addr).as_ref() == Some(&cached)
    });
    wait_until(Duration::from_secs(10), "index cache saved", || {
        std::fs::read_dir(&state).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cache")))
        })
    });
    drop(peer);

    // While it is down, a new file arrives. Being new, it has to stay
    // unchanged for the settle time (500 ms) and then be read (32 MiB),
    // so the restarted peer's first scan cannot finish at once.
    let fresh = vec![7u8; 32 << 20];
    std::fs::write(dataset.join("fresh.bin"), &fresh).unwrap();
    let peer = Serve::new(&ep).dataset(&dataset).state_dir(&state).start();
    let addr = peer.bound_addr();
    let first = wait_for(
        Duration::from_secs(20),
        "a catalog after the restart",
        || catalog_names(&addr).filter(|n| !n.is_empty()),
    );
    let log_then = peer.proc.log_text();
    // The first catalog served is the cached one, whole, from before the
    // scan (which has not taken in the new file yet).
    assert_eq!(first, cached, "first catalog after the restart");
    assert!(
        !log_then.contains("index: ready"),
        "served only after the scan finished:\n{log_then}"
    );
    // The background scan then finishes and adds the new file.
    cached.push("fresh.bin".into());
    cached.sort();
    wait_until(Duration::from_secs(20), "new file in the catalog", || {
        catalog_names(&addr).as_ref() == Some(&cached)
    });
    wait_until(Duration::from_secs(5), "scan finished", || {
        peer.proc.log_text().contains("index: ready")
    });
    assert!(
        peer.proc.log_text().contains("20 reused"),
        "cached files were hashed again:\n{}",
        peer.proc.log_text()
    );
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [
        vec!["list", "--bogus"],
        vec!["serve", "--ttl", "soon"],
        vec!["nosuchcommand"],
        vec!["files", "--etcd"],
    ] {
        let out = cli(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr_text(&out)
        );
        let err = stderr_text(&out);
        assert!(err.contains("--help"), "{args:?} says what to do: {err}");
    }
    for args in [vec!["--help"], vec!["get", "--help"]] {
        let out = cli(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(stdout_text(&out).starts_with("Usage:"), "{args:?}");
    }
}

/// The catalog body of a peer: its `files` array, and whether the bytes
/// are what serde_json writes for them.
fn catalog_files(addr: &std::net::SocketAddr) -> Option<(Vec<Value>, bool)> {
    let (status, body) = get(&format!("http://{addr}/v1/files"))?;
    if status != 200 {
        return None;
    }
    let list: piratebay_sync::protocol::FileList = serde_json::from_slice(&body).ok()?;
    let as_serde = serde_json::to_vec(&list).ok()? == body;
    let value: Value = serde_json::from_slice(&body).ok()?;
    Some((value["files"].as_array()?.clone(), as_serde))
}

#[test]
fn the_catalog_served_after_a_restart_equals_the_one_after_a_fresh_index() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let dirs = tempfile::tempdir().unwrap();
    let dataset = dirs.path().join("dataset");
    let state = dirs.path().join("state");
    std::fs::create_dir_all(dataset.join("sub")).unwrap();
    // Names the hand-written body must escape as serde_json does, a
    // content held at two paths, an empty file.
    let names = [
        "a \"quoted\" name.txt",
        "back\\slash",
        "tab\there",
        "ünïcödé €.bin",
        "dup-1",
        "sub/dup-2",
        "sub/plain.bin",
        "empty",
    ];
    for (i, name) in names.iter().enumerate() {
        let body = match *name {
            "dup-1" | "sub/dup-2" => "same content".repeat(50),
            "empty" => String::new(),
            _ => format!("content {i}").repeat(10 + i),
        };
        std::fs::write(dataset.join(name), body).unwrap();
    }
    let files = names.len() - 1;
    let peer = Serve::new(&ep).dataset(&dataset).state_dir(&state).start();
    let addr = peer.bound_addr();
    let (fresh, as_serde) = wait_for(Duration::from_secs(20), "the fresh index", || {
        catalog_files(&addr).filter(|(f, _)| f.len() == files)
    });
    assert!(as_serde, "the body is serde_json's bytes: {fresh:?}");
    wait_until(Duration::from_secs(10), "index cache saved", || {
        std::fs::read_dir(&state).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cache")))
        })
    });
    drop(peer);

    let peer = Serve::new(&ep).dataset(&dataset).state_dir(&state).start();
    let addr = peer.bound_addr();
    let (restarted, as_serde) = wait_for(Duration::from_secs(20), "the cached catalog", || {
        catalog_files(&addr).filter(|(f, _)| !f.is_empty())
    });
    assert!(as_serde, "the body is serde_json's bytes: {restarted:?}");
    assert_eq!(restarted, fresh, "same entries in the same order");
}
