//! The verified multi-source download (library level): in-process peer
//! servers over real files on loopback, faulty peers, resume, and holders
//! found through a real etcd. CLI-level tests are in `fetch_cli`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use piratebay_sync::etcd::{Client, Config};
use piratebay_sync::{
    Catalog, CatalogOptions, FetchError, Holder, HolderFaultKind, NetworkHolders, PeerInfo,
    PeerRecord, Progress, Summary,
};

use crate::fetch_support::*;
use crate::support::*;

fn holders(peers: &[TestPeer]) -> Vec<Holder> {
    peers.iter().map(TestPeer::holder).collect()
}

#[track_caller]
fn assert_downloaded(summary: &Summary, served: &Served) {
    assert_eq!(sha1_of_file(&summary.path), served.sha1());
    assert_eq!(summary.bytes, served.pieces.size);
    assert!(!part_path(&summary.path).exists(), ".part left behind");
    assert!(
        !state_path(&summary.path).exists(),
        ".part.state left behind"
    );
    assert!(
        !chain_path(&summary.path).exists(),
        ".part.chain left behind"
    );
}

#[test]
fn sizes_from_one_three_and_eight_holders() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let p = SMALL_PIECE;
    for (k, size) in [0, 1, p, p + 1, 5 * p + 17].into_iter().enumerate() {
        let src = dir.path().join(format!("src{k}"));
        random_file(&src, size, k as u64);
        let served = Served::honest(&src);
        for n in [1, 3, 8] {
            let peers = peers(n, std::slice::from_ref(&served));
            let out = dir.path().join(format!("out{k}-{n}"));
            let summary = download(opts(), &served, &out, &holders(&peers), None)
                .unwrap_or_else(|e| panic!("size {size} from {n} holders: {e}"));
            assert_downloaded(&summary, &served);
            // With several holders the endgame may fetch a slow last piece twice.
            let slack = if n == 1 { 0 } else { p };
            assert!(
                summary.bytes_received >= size && summary.bytes_received <= size + slack,
                "size {size} from {n}: received {}",
                summary.bytes_received
            );
            assert!(summary.bad_peers.is_empty());
            // One SHA-1 pass per byte: nothing opened the .part, so
            // nothing was read back.
            assert_eq!(summary.rechecked_bytes, 0, "size {size} from {n}");
        }
    }
}

#[test]
fn two_hundred_mib_in_pieces_of_1_mib_from_three_holders() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    random_file(&src, 200 << 20, 42);
    let served = Served::honest(&src);
    let peers = peers(3, std::slice::from_ref(&served));
    let out = dir.path().join("big.out");
    let summary = download(opts(), &served, &out, &holders(&peers), None).unwrap();
    assert_downloaded(&summary, &served);
    assert_eq!(sha1sum(&out), served.sha1().to_hex());
    assert!(
        summary.peers_used.len() >= 2,
        "pieces come from several holders: {:?}",
        summary.peers_used
    );
}

#[test]
fn a_holder_shut_down_mid_download_leaves_the_others_to_finish() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 48 * SMALL_PIECE, 7);
    let served = Served::honest(&src);
    let mut all = peers(3, std::slice::from_ref(&served));
    let list = holders(&all);
    let victim = Mutex::new(Some(all.remove(0)));
    let out = dir.path().join("out");
    let mut o = opts();
    o.max_rate = Some(6 << 20); // about 2 s: the kill lands mid-way
    let killed = AtomicBool::new(false);
    let on_progress = |p: &Progress| {
        if p.done > p.size / 3 {
            if let Some(mut v) = victim.lock().take() {
                v.kill();
                killed.store(true, Ordering::SeqCst);
            }
        }
    };
    let summary = download(o, &served, &out, &list, Some(&on_progress)).unwrap();
    assert!(
        killed.load(Ordering::SeqCst),
        "the victim was killed mid-way"
    );
    assert_downloaded(&summary, &served);
    assert!(summary.peers_used.len() >= 2, "{:?}", summary.peers_used);
}

#[test]
fn a_holder_serving_wrong_bytes_is_dropped_and_named() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let (src, other) = (dir.path().join("real"), dir.path().join("other"));
    random_file(&src, 12 * SMALL_PIECE + 5, 1);
    random_file(&other, 12 * SMALL_PIECE + 5, 2);
    let served = Served::honest(&src);
    let liar = TestPeer::start("liar", vec![Served::wrong_bytes(&served, &other)]);
    let honest = peers(2, std::slice::from_ref(&served));
    let mut list = vec![liar.holder()];
    list.extend(holders(&honest));
    let out = dir.path().join("out");
    // Paced (about 2 s): on a loaded machine the honest holders could
    // otherwise deliver every piece before the liar's connection asks.
    let paced = piratebay_sync::DownloadOptions {
        max_rate: Some(SMALL_PIECE * 6),
        ..opts()
    };
    let summary = download(paced, &served, &out, &list, None).unwrap();
    assert_downloaded(&summary, &served);
    assert_eq!(summary.bad_peers, vec![liar.holder().to_string()]);
    assert!(!summary.peers_used.contains(&"liar".to_string()));
}

#[test]
fn a_false_chain_is_caught_when_its_last_piece_arrives_and_its_holders_named() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let (src, other) = (dir.path().join("real"), dir.path().join("other"));
    random_file(&src, 9 * SMALL_PIECE + 3, 3);
    std::fs::copy(&src, &other).unwrap();
    // The lie differs in two pieces only: the rest is kept across the switch.
    let mut bytes = std::fs::read(&other).unwrap();
    bytes[10] ^= 1;
    bytes[5 * SMALL_PIECE as usize] ^= 1;
    std::fs::write(&other, bytes).unwrap();
    let served = Served::honest(&src);
    let lie = Served::lying_list(&served, &other);
    // Two liars agree, so their list is tried first.
    let liars = [
        TestPeer::start("liar-a", vec![lie.clone()]),
        TestPeer::start("liar-b", vec![lie]),
    ];
    let honest = TestPeer::start("honest", vec![served.clone()]);
    let mut list = holders(&liars);
    list.push(honest.holder());
    let out = dir.path().join("out");
    let summary = download(opts(), &served, &out, &list, None).unwrap();
    assert_downloaded(&summary, &served);
    let mut bad = summary.bad_peers.clone();
    bad.sort();
    assert_eq!(
        bad,
        vec![liars[0].holder().to_string(), liars[1].holder().to_string()]
    );
    assert!(summary.peers_used.contains(&"honest".to_string()));
    assert!(
        summary.bytes_received < 12 * SMALL_PIECE,
        "only the differing pieces are fetched again: {}",
        summary.bytes_received
    );
}

#[test]
fn only_bad_holders_fail_cleanly_naming_them() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let (src, other) = (dir.path().join("real"), dir.path().join("other"));
    random_file(&src, 4 * SMALL_PIECE, 4);
    random_file(&other, 4 * SMALL_PIECE, 5);
    let served = Served::honest(&src);
    let bad_bytes = TestPeer::start("bad-bytes", vec![Served::wrong_bytes(&served, &other)]);
    let bad_list = TestPeer::start("bad-list", vec![Served::lying_list(&served, &other)]);
    let out = dir.path().join("out");
    let err = download(
        opts(),
        &served,
        &out,
        &vec![bad_bytes.holder(), bad_list.holder()],
        None,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FetchError::NoCorrectCopy { .. }), "{text}");
    assert!(
        text.contains("bad-bytes") && text.contains("bad-list"),
        "{text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(!out.exists(), "nothing under the final name");
    assert!(part_path(&out).exists(), "the .part stays for resume");
    // Each bad holder keeps its typed cause: a piece that failed its
    // check (the lying list's last piece does not finish to the file's SHA1).
    let FetchError::NoCorrectCopy { bad, .. } = &err else {
        unreachable!()
    };
    let causes: Vec<(String, HolderFaultKind, String)> = bad
        .iter()
        .map(|f| (f.holder.id.clone(), f.reason.kind(), f.reason.to_string()))
        .collect();
    assert_eq!(causes.len(), 2, "{causes:?}");
    assert!(
        causes
            .iter()
            .all(|(_, kind, _)| *kind == HolderFaultKind::BadData),
        "{causes:?}"
    );
    assert!(
        causes
            .iter()
            .any(|(id, _, why)| id == "bad-bytes" && why.contains("failed verification")),
        "{causes:?}"
    );
    assert!(
        causes
            .iter()
            .any(|(id, _, why)| id == "bad-list" && why.contains("failed verification")),
        "{causes:?}"
    );
}

#[test]
fn stalling_dripping_short_long_and_hanging_up_peers_are_survived() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 16 * SMALL_PIECE + 9, 6);
    let served = Served::honest(&src);
    let evil: Vec<RawPeer> = [
        Evil::Stall,
        Evil::Drip,
        Evil::Short,
        Evil::Hangup,
        Evil::Long,
    ]
    .iter()
    .map(|k| EvilPeer::start(*k, &served))
    .collect();
    let honest = TestPeer::start("honest", vec![served.clone()]);
    let mut list: Vec<Holder> = evil
        .iter()
        .enumerate()
        .map(|(i, e)| e.holder(&format!("evil{i}")))
        .collect();
    list.push(honest.holder());
    let out = dir.path().join("out");
    // Paced (about 2 s): the honest peer, asked for runs of 4 pieces on
    // loopback, could otherwise deliver all 17 before a faulty peer's
    // fault shows (a fresh-clone CI run saw none retried).
    let paced = piratebay_sync::DownloadOptions {
        max_rate: Some(SMALL_PIECE * 8),
        ..opts()
    };
    let summary = download(paced, &served, &out, &list, None).unwrap();
    assert_downloaded(&summary, &served);
    assert!(summary.peers_used.contains(&"honest".to_string()));
    assert!(
        summary.pieces_retried > 0,
        "the faulty peers' pieces were retried"
    );
    assert!(summary.bad_peers.is_empty(), "faults are not lies");
}

#[test]
fn every_holder_dead_is_a_clean_error() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 3 * SMALL_PIECE, 8);
    let served = Served::honest(&src);
    let evil = EvilPeer::start(Evil::Short, &served);
    let out = dir.path().join("out");
    let err = download(opts(), &served, &out, &vec![evil.holder("cut")], None).unwrap_err();
    assert!(matches!(err, FetchError::HoldersFailed { .. }), "{err}");
    assert!(err.to_string().contains("cut"), "{err}");
    assert!(!out.exists());
}

#[test]
fn cancel_then_resume_fetches_only_the_missing_pieces() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    let size = 40 * SMALL_PIECE;
    random_file(&src, size, 9);
    let served = Served::honest(&src);
    let peers = peers(2, std::slice::from_ref(&served));
    let out = dir.path().join("out");
    let cancel = Arc::new(AtomicBool::new(false));
    let mut o = opts();
    o.max_rate = Some(4 << 20);
    o.cancel = Some(cancel.clone());
    let on_progress = |p: &Progress| {
        if p.done >= p.size / 2 {
            cancel.store(true, Ordering::SeqCst);
        }
    };
    let err = download(o, &served, &out, &holders(&peers), Some(&on_progress)).unwrap_err();
    assert!(matches!(err, FetchError::Interrupted { .. }), "{err}");
    // The library names the kept .part; "rerun" is the binary's advice.
    assert!(err.to_string().contains(".part"), "{err}");
    assert!(!err.to_string().contains("rerun"), "{err}");
    assert!(state_path(&out).exists() && part_path(&out).exists());
    assert!(!out.exists());

    let summary = download(opts(), &served, &out, &holders(&peers), None).unwrap();
    assert_downloaded(&summary, &served);
    assert!(summary.resumed_bytes >= size / 2, "{summary:?}");
    // Only the pieces the state claimed are read back and verified.
    assert_eq!(
        summary.rechecked_bytes, summary.resumed_bytes,
        "{summary:?}"
    );
    assert!(
        summary.bytes_received < size * 6 / 10,
        "only the missing half is fetched: {summary:?}"
    );
}

#[test]
fn a_corrupted_part_is_not_trusted_on_resume() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    let size = 8 * SMALL_PIECE;
    random_file(&src, size, 10);
    let served = Served::honest(&src);
    let peer = TestPeer::start("p", vec![served.clone()]);
    let out = dir.path().join("out");
    // A .part claiming every piece verified, with one byte flipped.
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[3 * SMALL_PIECE as usize + 1] ^= 0xff;
    std::fs::write(part_path(&out), &bytes).unwrap();
    write_state(&out, &served.pieces, &[true; 8]);
    let summary = download(opts(), &served, &out, &vec![peer.holder()], None).unwrap();
    assert_downloaded(&summary, &served);
    assert_eq!(summary.resumed_bytes, 7 * SMALL_PIECE);
    assert_eq!(summary.bytes_received, SMALL_PIECE);
    assert_eq!(
        summary.rechecked_bytes,
        8 * SMALL_PIECE,
        "the claimed pieces, once"
    );
}

#[test]
fn a_state_of_the_previous_form_still_saves_its_verified_bytes() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    let size = 10 * SMALL_PIECE + 5;
    random_file(&src, size, 12);
    let served = Served::honest(&src);
    let peer = TestPeer::start("p", vec![served.clone()]);
    let out = dir.path().join("out");
    // The previous version cut it in pieces of 4 base blocks and verified
    // its first two (8 base blocks); the .part holds them.
    let bytes = std::fs::read(&src).unwrap();
    let old_piece = 4 * SMALL_PIECE;
    std::fs::write(part_path(&out), &bytes[..2 * old_piece as usize]).unwrap();
    write_old_state(&out, &bytes, old_piece, &[true, true, false]);
    let summary = download(opts(), &served, &out, &vec![peer.holder()], None).unwrap();
    assert_downloaded(&summary, &served);
    assert_eq!(summary.resumed_bytes, 8 * SMALL_PIECE);
    assert_eq!(summary.rechecked_bytes, 8 * SMALL_PIECE);
    assert_eq!(summary.bytes_received, size - 8 * SMALL_PIECE);
}

/// Patience, not failure: the only holder cuts its first three
/// connections without an answer (a seed whose full link drops handshakes
/// as a flash crowd starts), so its piece list cannot be had at first.
/// The download asks again after a backoff and completes; with no
/// patience it fails at once, naming the holder it could not ask.
#[test]
fn a_holder_that_cannot_be_asked_for_its_piece_list_at_first_is_asked_again() {
    use std::sync::atomic::AtomicUsize;
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 5 * SMALL_PIECE + 7, 31);
    let served = Served::honest(&src);
    let honest = TestPeer::start("honest", vec![served.clone()]);
    let upstream = honest.addr;
    let cut = Arc::new(AtomicUsize::new(0));
    let cut2 = cut.clone();
    // Cuts its first 3 connections, then relays to the honest peer.
    let flaky = RawPeer::start("flaky", move |client, _stop| {
        if cut2.fetch_add(1, Ordering::SeqCst) < 3 {
            return;
        }
        let Ok(server) = std::net::TcpStream::connect(upstream) else {
            return;
        };
        let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let back = std::thread::spawn(move || {
            let (mut s_in, mut c_out) = (server, client);
            let _ = std::io::copy(&mut s_in, &mut c_out);
            let _ = c_out.shutdown(std::net::Shutdown::Both);
        });
        let _ = std::io::copy(&mut c_in, &mut s_out);
        let _ = s_out.shutdown(std::net::Shutdown::Both);
        let _ = back.join();
    });
    let holder = Holder::new("flaky", flaky.addr.to_string());
    let impatient = piratebay_sync::DownloadOptions {
        patience: Duration::ZERO,
        ..opts()
    };
    let out = dir.path().join("out");
    let err = download(impatient, &served, &out, &vec![holder.clone()], None).unwrap_err();
    let FetchError::NoPieceList { failures, .. } = err else {
        panic!("not a piece-list failure: {err}");
    };
    assert_eq!(failures[0].holder.id, "flaky");
    assert_eq!(cut.load(Ordering::SeqCst), 1, "asked once without patience");
    let summary = download(opts(), &served, &out, &vec![holder], None).unwrap();
    assert_downloaded(&summary, &served);
    assert!(cut.load(Ordering::SeqCst) > 3, "asked again after the cuts");
}

#[test]
fn a_holder_of_the_previous_piece_list_form_is_never_mixed_in() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 6 * SMALL_PIECE + 1, 13);
    let served = Served::honest(&src);
    // What a peer of the previous version answers: no form, no chain
    // (its per-piece SHA1s are not read).
    let mut old = served.clone();
    old.pieces.form.clear();
    old.pieces.chain.clear();
    let elder = TestPeer::start("elder", vec![old]);
    let out = dir.path().join("out");
    let err = download(opts(), &served, &out, &vec![elder.holder()], None).unwrap_err();
    assert!(
        err.to_string().contains("previous piece-list form"),
        "{err}"
    );
    let FetchError::NoPieceList { failures, .. } = err else {
        panic!("not a piece-list failure: {err}");
    };
    assert_eq!(
        failures[0].reason.kind(),
        piratebay_sync::HolderFaultKind::OtherVersion
    );
    let honest = TestPeer::start("honest", vec![served.clone()]);
    let summary = download(
        opts(),
        &served,
        &out,
        &vec![elder.holder(), honest.holder()],
        None,
    )
    .unwrap();
    assert_downloaded(&summary, &served);
    assert_eq!(summary.peers_used, vec!["honest".to_string()]);
    assert!(summary.bad_peers.is_empty(), "skipped, not bad");

    // Re-queries find the elder again and again: its list is asked once
    // per download (so it is warned about once), not at every re-query.
    std::fs::remove_file(&out).unwrap();
    let asked = elder.source.piece_lists_served.load(Ordering::SeqCst);
    let slow = piratebay_sync::DownloadOptions {
        max_rate: Some(SMALL_PIECE * 3), // ~2 s: several re-queries
        requery_interval: Duration::from_millis(100),
        ..opts()
    };
    let summary = download(
        slow,
        &served,
        &out,
        &vec![elder.holder(), honest.holder()],
        None,
    )
    .unwrap();
    assert_downloaded(&summary, &served);
    assert!(
        summary.seconds >= 1.0,
        "too fast for re-queries: {} s",
        summary.seconds
    );
    assert_eq!(
        elder.source.piece_lists_served.load(Ordering::SeqCst) - asked,
        1,
        "the previous version's list is asked once per download"
    );
}

#[test]
fn existing_output_same_content_is_success_different_needs_force() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 3 * SMALL_PIECE, 11);
    let served = Served::honest(&src);
    let peer = TestPeer::start("p", vec![served.clone()]);
    let out = dir.path().join("out");
    std::fs::copy(&src, &out).unwrap();
    let s = download(opts(), &served, &out, &vec![peer.holder()], None).unwrap();
    assert!(s.already_present && s.bytes_received == 0);
    std::fs::write(&out, b"different").unwrap();
    let err = download(opts(), &served, &out, &vec![peer.holder()], None).unwrap_err();
    assert!(matches!(err, FetchError::Exists { .. }), "{err}");
    // The library says what failed; `--force` is the binary's advice.
    assert!(!err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"different");
    let mut o = opts();
    o.force = true;
    let s = download(o, &served, &out, &vec![peer.holder()], None).unwrap();
    assert_downloaded(&s, &served);
}

#[test]
fn holders_found_through_etcd_and_a_holder_joining_mid_download() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ns = "fetch-join";
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 32 * SMALL_PIECE, 12);
    let served = Served::honest(&src);
    let first = TestPeer::start("first", vec![served.clone()]);
    let late = TestPeer::start("late", vec![served.clone()]);
    let _reg1 = first.register(&etcd.endpoint(), ns);
    let client = Client::new(Config::new([etcd.endpoint()])).unwrap();
    let source = NetworkHolders::new(client, ns, Catalog::new(CatalogOptions::default()));
    let out = dir.path().join("out");
    let mut o = opts();
    o.max_rate = Some(3 << 20); // about 3 s
    let late_reg = Mutex::new(None);
    let on_progress = |p: &Progress| {
        if p.done > 0 && late_reg.lock().is_none() {
            *late_reg.lock() = Some(late.register(&etcd.endpoint(), ns));
        }
    };
    let summary = download(o, &served, &out, &source, Some(&on_progress)).unwrap();
    assert_downloaded(&summary, &served);
    assert_eq!(
        summary.peers_used,
        vec!["first".to_string(), "late".to_string()]
    );
}

#[test]
fn a_peer_claiming_a_huge_size_costs_no_disk_space() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 3 * SMALL_PIECE, 14);
    let served = Served::honest(&src);
    let size = 100u64 << 30; // 100 GiB, a chain of 102,399 values
    let n = piratebay_sync::protocol::piece_count(size, piratebay_sync::protocol::piece_size(size));
    let huge = Served {
        name: "huge".into(),
        pieces: piratebay_sync::protocol::PieceList::new(
            served.sha1(),
            size,
            vec![piratebay_sync::ChainValue([7; 20]); n as usize - 1],
        ),
        data: src.clone(),
    };
    // Two hosts vouch for the huge list, so it goes first (ties between
    // lists are broken at random).
    let liar = TestPeer::start("huge", vec![huge.clone()]);
    let liar2 = TestPeer::start("huge2", vec![huge]);
    let honest = TestPeer::start("honest", vec![served.clone()]);
    let out = dir.path().join("out");
    // The liar's piece list is ~7 MB of JSON: give a debug build on a busy
    // machine time to produce it (this test is about disk space, not stalls).
    let mut o = opts();
    o.io_timeout = Duration::from_secs(10);
    let holders = vec![liar.holder(), liar2.holder(), honest.holder()];
    let summary = download(o, &served, &out, &holders, None).unwrap();
    assert_downloaded(&summary, &served);
    let mut bad = summary.bad_peers.clone();
    bad.sort();
    assert_eq!(
        bad,
        vec![liar.holder().to_string(), liar2.holder().to_string()]
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 3 * SMALL_PIECE);
}

#[test]
fn max_rate_caps_the_total_rate_across_holders() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    let size = 12 * SMALL_PIECE; // 3 MiB
    random_file(&src, size, 15);
    let served = Served::honest(&src);
    let peers = peers(3, std::slice::from_ref(&served));
    let out = dir.path().join("out");
    let mut o = opts();
    let rate = 2u64 << 20;
    o.max_rate = Some(rate);
    let summary = download(o, &served, &out, &holders(&peers), None).unwrap();
    assert_downloaded(&summary, &served);
    // A lower bound only: 3 MiB at 2 MiB/s, minus the bucket's 0.1 s burst.
    let floor = size as f64 / rate as f64 - 0.1;
    assert!(
        summary.seconds >= floor,
        "{:.2}s for {size} bytes at {rate} B/s",
        summary.seconds
    );
}

fn peer_info(id: &str, addr: &str, generation: u64) -> PeerInfo {
    PeerInfo {
        record: PeerRecord {
            id: id.into(),
            addr: addr.into(),
            addrs: Vec::new(),
            name: "test".into(),
            version: piratebay_sync::VERSION.into(),
            started_at: 0,
            index_gen: generation,
        },
        lease: 0,
        mod_revision: 0,
    }
}

#[test]
fn catalog_asks_a_peer_again_only_when_its_generation_changes() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.txt");
    random_file(&src, 100, 16);
    let served = Served::honest(&src);
    let peer = TestPeer::start("p", vec![served.clone()]);
    let dead = free_addr().to_string();
    let mut catalog = Catalog::new(CatalogOptions::default());
    let asked = || peer.source.lists_served.load(Ordering::SeqCst);

    let r = catalog.refresh(&[
        peer_info("p", &peer.addr.to_string(), 1),
        peer_info("dead", &dead, 1),
    ]);
    assert_eq!(asked(), 1);
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].0.id, "dead");
    let f = r.find(&served.sha1()).unwrap();
    assert_eq!((f.peers, f.name.as_str(), f.size), (1, "a.txt", 100));

    let r = catalog.refresh(&[peer_info("p", &peer.addr.to_string(), 1)]);
    assert_eq!(asked(), 1, "same generation: served from the cache");
    assert!(r.asked.is_empty());
    assert_eq!(r.files.len(), 1);

    // (Counted on the client: the peer may answer from the catalog body it
    // still shares with the previous response, without building a new one.)
    let r = catalog.refresh(&[peer_info("p", &peer.addr.to_string(), 2)]);
    assert_eq!(
        r.asked,
        vec!["p".to_string()],
        "a new generation is asked for"
    );

    catalog.refresh(&[]);
    let r = catalog.refresh(&[peer_info("p", &peer.addr.to_string(), 2)]);
    assert_eq!(
        r.asked,
        vec!["p".to_string()],
        "peers gone are forgotten: the same generation is asked for again"
    );
}

#[test]
fn a_holder_whose_first_addresses_refuse_is_dialled_on_the_next() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    random_file(&src, 3 * SMALL_PIECE + 5, 11);
    let served = Served::honest(&src);
    let peer = TestPeer::start("multi", vec![served.clone()]);
    let closed = |ip: &str| {
        let l = std::net::TcpListener::bind((ip, 0)).unwrap();
        l.local_addr().unwrap().to_string()
    };
    let holder = Holder::with_addrs(
        "multi",
        vec![
            closed("127.0.0.1"),
            closed("127.0.0.1"),
            peer.addr.to_string(),
        ],
    );
    let out = dir.path().join("out");
    let summary = download(opts(), &served, &out, &vec![holder], None).unwrap();
    assert_downloaded(&summary, &served);
    assert!(summary.bad_peers.is_empty());
}
