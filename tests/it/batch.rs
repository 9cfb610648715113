//! [`Downloader::download_many`](piratebay_sync::Downloader::download_many)
//! (library level): many small files from an in-process peer, through a
//! counting TCP relay that shows the batch's connections are shared.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use piratebay_sync::{
    BatchItem, BatchOptions, BatchProgress, DownloadOptions, Downloader, Holder, Sha1Digest,
};

use crate::fetch_support::*;
use crate::support::*;

/// Relays every connection it accepts to `target`, counting them. Its
/// threads end when both sides close (the test process owns them).
struct CountingRelay {
    addr: String,
    accepted: Arc<AtomicUsize>,
}

impl CountingRelay {
    fn start(target: std::net::SocketAddr) -> CountingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        std::thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { return };
                    count.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                    pipe(server, client);
                }
            })
            .unwrap();
        CountingRelay { addr, accepted }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::Builder::new()
        .name("relay-pipe".into())
        .spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        })
        .unwrap();
}

#[test]
fn a_batch_of_small_files_is_verified_and_shares_its_connections() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<Served> = (0..24u64)
        .map(|i| {
            let src = dir.path().join(format!("src{i}"));
            random_file(&src, 1000 + i * 1500, 300 + i);
            Served::honest(&src)
        })
        .collect();
    let peer = TestPeer::start("batch-peer", files.clone());
    let relay = CountingRelay::start(peer.addr);
    let holder = Holder::new("batch-peer", relay.addr.clone());
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut items: Vec<BatchItem> = files
        .iter()
        .enumerate()
        .map(|(i, f)| BatchItem {
            sha1: f.sha1(),
            output: out.join(format!("f{i}")),
            size: f.pieces.size,
            holders: vec![holder.clone()],
        })
        .collect();
    // One file nobody holds: it fails alone.
    let nobody = Sha1Digest::of(b"nobody");
    items.push(BatchItem {
        sha1: nobody,
        output: out.join("nobody"),
        size: 0,
        holders: Vec::new(),
    });
    let requery: Vec<Holder> = Vec::new();
    let downloader = Downloader::new(DownloadOptions {
        io_timeout: Duration::from_secs(2),
        ..DownloadOptions::default()
    });
    let opts = BatchOptions {
        concurrency: 4,
        requery: &requery,
    };
    let done: Mutex<Vec<Sha1Digest>> = Mutex::new(Vec::new());
    let last: Mutex<Option<BatchProgress>> = Mutex::new(None);
    let results = downloader.download_many(
        &items,
        &opts,
        Some(&|p: &BatchProgress| *last.lock() = Some(p.clone())),
        &|item, _| done.lock().push(item.sha1),
    );
    assert_eq!(results.len(), items.len());
    for (i, f) in files.iter().enumerate() {
        let s = results[i]
            .as_ref()
            .expect("started")
            .as_ref()
            .unwrap_or_else(|e| panic!("file {i}: {e}"));
        assert_eq!(s.sha1, f.sha1());
        assert_eq!(sha1_of_file(&out.join(format!("f{i}"))), f.sha1());
    }
    let err = results[files.len()].as_ref().unwrap().as_ref().unwrap_err();
    assert!(err.to_string().contains("no peer holds"), "{err}");
    assert_eq!(done.lock().len(), items.len());
    let p = last.lock().clone().expect("progress reported");
    assert_eq!((p.finished, p.files), (items.len(), items.len()));
    assert_eq!(p.done, p.size);
    // Without sharing, each file opens two connections (its piece list and
    // its worker): 48. Shared, a file's worker takes its piece list's
    // connection and gives it back for the next file: about one per
    // download running at once (4), twice that allowing for a connection
    // the end of a round shut down first.
    let n = relay.accepted.load(Ordering::SeqCst);
    assert!(
        (1..=8).contains(&n),
        "{n} connections for {} files",
        files.len()
    );
}
