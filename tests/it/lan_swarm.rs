//! The swarm across LAN lab hosts (issue 10): hosts downloading into the
//! dataset their own `serve` shares trade verified pieces, a seed's upload
//! stays well under one copy per host, and the swarm survives a partial
//! holder killed mid-way, a late joiner and a resumed host. Links are
//! capped so that transfers take seconds, not milliseconds.

use std::path::PathBuf;
use std::process::{Child, Output};
use std::time::Duration;

use crate::fetch_support::{random_file, sha1_of_file};
use crate::support::*;

const MIB: u64 = 1024 * 1024;
const GET_TIMEOUT: Duration = Duration::from_secs(120);

/// A seed and `n` hosts on one lab, each host a `serve` on its own dataset.
struct Swarm {
    etcd: EtcdServer,
    seed_host: Host,
    _seed: ServePeer,
    hosts: Vec<Host>,
    peers: Vec<ServePeer>,
    sha1: String,
    size: u64,
    _data: tempfile::TempDir,
    state: tempfile::TempDir,
    /// Last: torn down after the processes in it.
    _lab: Lab,
}

impl Swarm {
    fn new(n: usize, size: u64, mbit: u32) -> Swarm {
        let mut lab = Lab::new();
        let etcd = EtcdServer::on_bridge(&mut lab);
        let seed_host = lab.add_host();
        seed_host.set_rate(mbit);
        let hosts = lab.add_hosts(n, Some(mbit));
        let data = tempfile::tempdir().unwrap();
        let sha1 = random_file(&data.path().join("swarm.bin"), size, 77).to_string();
        let seed = Serve::new(&etcd.endpoint())
            .on_host(&seed_host)
            .dataset(data.path())
            .start();
        let peers: Vec<ServePeer> = hosts
            .iter()
            .map(|h| Serve::new(&etcd.endpoint()).on_host(h).start())
            .collect();
        let ids: Vec<String> = std::iter::once(&seed)
            .chain(&peers)
            .map(ServePeer::id)
            .collect();
        wait_until(
            Duration::from_secs(30),
            "every peer registered and the seed indexed",
            || {
                let out = cli(&["files", "--json", "--etcd", &etcd.endpoint()]);
                let listed = stdout_text(&cli(&["list", "--json", "--etcd", &etcd.endpoint()]));
                stdout_text(&out).contains(&sha1)
                    && ids.iter().all(|id| listed.contains(id.as_str()))
            },
        );
        Swarm {
            etcd,
            seed_host,
            _seed: seed,
            hosts,
            peers,
            sha1,
            size,
            _data: data,
            state: tempfile::tempdir().unwrap(),
            _lab: lab,
        }
    }

    /// Where host `i`'s get writes: into the dataset its serve shares.
    fn out(&self, i: usize) -> PathBuf {
        self.peers[i].dataset.join("swarm.bin")
    }

    /// Starts `get` on host `i` into its dataset (JSON summary on stdout).
    fn spawn_get(&self, i: usize) -> Child {
        spawn_get(
            Some(&self.hosts[i].netns),
            &self.etcd.endpoint(),
            &self.sha1,
            &self.out(i),
            &self.state.path().join(format!("get{i}")),
        )
    }

    #[track_caller]
    fn assert_done(&self, i: usize, child: Child) -> Output {
        let out = wait_child(child, GET_TIMEOUT);
        assert!(
            out.status.success(),
            "get on host {i} failed ({}): {}",
            out.status,
            stderr_text(&out).trim()
        );
        assert_eq!(
            sha1_of_file(&self.out(i)).to_string(),
            self.sha1,
            "host {i}"
        );
        out
    }

    /// Pieces of the file host `i`'s peer serves now (0 if none).
    fn pieces_held(&self, i: usize) -> usize {
        let url = format!(
            "http://{}:{LAB_PORT}/v1/files/{}/have",
            self.hosts[i].ip, self.sha1
        );
        ureq::get(&url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_vec().ok())
            // The have bitmap only: a complete holder appends a second one.
            .map_or(0, |b| {
                let n = self
                    .size
                    .div_ceil(piratebay_sync::protocol::piece_size(self.size))
                    .div_ceil(8) as usize;
                b.iter().take(n).map(|x| x.count_ones() as usize).sum()
            })
    }
}

/// Waits for `child` with a timeout (killed and reported after it).
fn wait_child(mut child: Child, timeout: Duration) -> Output {
    if wait_timeout(&mut child, timeout).is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().expect("get output")
}

#[test]
fn six_hosts_fetching_at_once_all_finish_correct_and_the_seed_uploads_far_less_than_six_copies() {
    let s = Swarm::new(6, 12 * MIB, 80);
    let tx0 = s.seed_host.tx_bytes();
    let gets: Vec<Child> = (0..6).map(|i| s.spawn_get(i)).collect();
    for (i, g) in gets.into_iter().enumerate() {
        s.assert_done(i, g);
    }
    let uploaded = s.seed_host.tx_bytes() - tx0;
    println!(
        "the seed uploaded {:.2}x the file to 6 hosts",
        uploaded as f64 / s.size as f64
    );
    // Without the swarm every host fetches its copy from the seed: 6x.
    assert!(
        uploaded < 4 * s.size,
        "the seed uploaded {:.1}x the file to 6 hosts",
        uploaded as f64 / s.size as f64
    );
    // Every host now serves the whole file.
    for i in 0..6 {
        wait_until(Duration::from_secs(10), "host serves every piece", || {
            s.pieces_held(i)
                == s.size
                    .div_ceil(piratebay_sync::protocol::piece_size(s.size))
                    as usize
        });
    }
}

#[test]
fn a_partial_holder_killed_a_late_joiner_and_a_resumed_host_all_end_correct() {
    let mut s = Swarm::new(4, 12 * MIB, 40);
    let g0 = s.spawn_get(0);
    let g1 = s.spawn_get(1);
    let mut g2 = s.spawn_get(2);
    // Once host 1 serves some pieces, kill its peer (a partial holder dies).
    wait_until(Duration::from_secs(60), "host 1 serves some pieces", || {
        s.pieces_held(1) > 0
    });
    let _ = s.peers[1].proc.kill9();
    // Host 2's get is killed mid-way: its verified pieces stay shared.
    wait_until(Duration::from_secs(60), "host 2 holds some pieces", || {
        s.pieces_held(2) > 0
    });
    let _ = g2.kill();
    let _ = g2.wait();
    assert!(s.pieces_held(2) > 0, "a killed get's pieces stay shared");
    // A late joiner, then host 2 resumes.
    let g3 = s.spawn_get(3);
    let g2 = s.spawn_get(2);
    s.assert_done(0, g0);
    s.assert_done(3, g3);
    let resumed = s.assert_done(2, g2);
    let summary: serde_json::Value = serde_json::from_str(stdout_text(&resumed).trim()).unwrap();
    assert!(
        summary["resumed_bytes"].as_u64().unwrap_or(0) > 0,
        "host 2 resumed: {summary}"
    );
    // Host 1's get lost its own peer, not the swarm: it completes too.
    s.assert_done(1, g1);
}

/// A room of machines (issue 19): 24 hosts fetch one file from one seed at
/// once over 20 Mbit/s links. Every host ends correct, no get fails, and
/// the seed's upload stays bounded (upload slots, offers of fresh pieces):
/// without the swarm it would send 24 copies.
#[test]
fn twenty_four_hosts_at_once_all_finish_correct_and_the_seed_upload_is_bounded() {
    const N: usize = 24;
    let s = Swarm::new(N, 8 * MIB, 20);
    let tx0 = s.seed_host.tx_bytes();
    let gets: Vec<Child> = (0..N).map(|i| s.spawn_get(i)).collect();
    let mut from_partials = 0;
    for (i, g) in gets.into_iter().enumerate() {
        let out = s.assert_done(i, g);
        let summary: serde_json::Value = serde_json::from_str(stdout_text(&out).trim()).unwrap();
        let seeds = summary["bytes_from_seeds"].as_u64().unwrap_or(0);
        let partials = summary["bytes_from_partials"].as_u64().unwrap_or(0);
        assert_eq!(
            seeds + partials,
            s.size,
            "host {i}: every byte came from somewhere: {summary}"
        );
        from_partials += partials;
    }
    let uploaded = s.seed_host.tx_bytes() - tx0;
    let copies = uploaded as f64 / s.size as f64;
    println!(
        "{:.2}x the file came from partial holders",
        from_partials as f64 / s.size as f64
    );
    assert!(from_partials > 0, "the hosts traded pieces");
    println!("the seed uploaded {copies:.2}x the file to {N} hosts");
    assert!(
        copies <= 2.0,
        "the seed uploaded {copies:.2}x the file to {N} hosts"
    );
}
