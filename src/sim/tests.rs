//! The simulator's cases: 200 hosts in `make test` (the targets asserted),
//! the curve for 100, 1,000 and 10,000 hosts in `make bench-sim`
//! (`cargo test --release --lib sim::tests::curve -- --ignored --nocapture`).

use super::*;

fn row(label: &str, cfg: &Config, took: Duration) -> Outcome {
    let _ = took;
    let t = Instant::now();
    let out = run(cfg);
    let alone = cfg.alone();
    let fast = |q| out.quantile(false, q, alone).unwrap_or(f64::NAN);
    let slow_max = out.quantile(true, 1.0, alone);
    let req = out.requests.iter().sum::<u64>() as f64 / out.requests.len().max(1) as f64;
    println!(
        "{label:<28} {:>6} {:>5} | {:>5.2} {:>5.2} {:>5.2} {:>5.2} | {:>6} | {:>5.2} | {:>6.0} {:>8} {:>7.0} | {:>6.1}s",
        cfg.hosts,
        crate::protocol::piece_count(cfg.file, cfg.piece),
        fast(0.5),
        fast(0.9),
        fast(0.99),
        fast(1.0),
        slow_max.map_or("-".to_string(), |s| format!("{s:.2}")),
        out.seed_bytes / cfg.file as f64,
        req,
        out.busy_answers,
        out.events as f64 / cfg.hosts as f64,
        t.elapsed().as_secs_f64(),
    );
    for s in out.stuck.iter().take(5) {
        println!("  not done: {s}");
    }
    out
}

fn header() {
    println!(
        "{:<28} {:>6} {:>5} | {:>5} {:>5} {:>5} {:>5} | {:>6} | {:>5} | {:>6} {:>8} {:>7} | {:>7}",
        "case",
        "hosts",
        "pcs",
        "p50",
        "p90",
        "p99",
        "max",
        "slow",
        "seed",
        "req/dl",
        "busy",
        "ev/dl",
        "wall"
    );
}

/// The 200-host case of `make test`, in 128 KiB pieces (128 pieces: a few
/// seconds in a debug build). Issue 19's target is all hosts <= 1.3x one
/// host alone: NOT met here. Since the simulator models runs of adjacent
/// pieces, pipelining and bitmaps riding on answers' heads (not a fresh
/// bitmap handed over at the end of every piece, as before: that made
/// every choice on a view no worker has), the last host is at
/// 1.44-1.47x (seeds 1-4), p50 1.40-1.45x, the seed uploads 1.25-1.30
/// files (the model before: 1.36-1.43x, 1.29-1.30x, 1.09-1.17: the
/// bounds were 1.55, 1.35 and 1.25, and p50 and the seed's were raised
/// for the model, not for the code). With a worker that asks a holder's
/// bitmap again when a piece came since (`worker.rs`, `next_step`): last
/// 1.43-1.45x, p50 1.39-1.41x, seed 1.23-1.28 files; with the bitmap
/// that waits at the holder (`have?wait`, modelled since 22:30) and is
/// asked at once on a stale view before the connection leaves or waits:
/// 1.42-1.47x, 1.39-1.42x, 1.20-1.28; with a partial holder that frees
/// the slot of a download asking its bitmap with nothing in progress
/// (`UploadSlots::idle`): 1.41-1.45x, 1.38-1.42x, 1.22-1.29. The bounds
/// asserted are those that hold with a margin, so a regression fails.
#[test]
fn two_hundred_hosts_finish_within_bounds() {
    header();
    let cfg = Config {
        piece: 128 << 10,
        ..Config::lan(200)
    };
    let out = row("200 equal", &cfg, Duration::ZERO);
    let alone = cfg.alone();
    assert!(
        out.stuck.is_empty(),
        "downloads never ended: {:#?}",
        out.stuck
    );
    let max = out.quantile(false, 1.0, alone).unwrap();
    assert!(max <= 1.48, "all done at {max:.2}x one host alone");
    let p50 = out.quantile(false, 0.5, alone).unwrap();
    assert!(p50 <= 1.45, "half done at {p50:.2}x one host alone");
    let seed = out.seed_bytes / cfg.file as f64;
    assert!(seed <= 1.32, "the seed uploaded {seed:.2}x the file");
}

#[test]
fn a_download_that_cannot_end_is_reported_and_the_run_ends() {
    // Two hosts of 20 have no link at all: they never finish, and poll
    // for ever; the cap ends the run and names them.
    let cfg = Config {
        piece: 1 << 20,
        slow_fraction: 0.1,
        slow_factor: 0.0,
        time_cap: Duration::from_secs(60),
        ..Config::lan(20)
    };
    let out = run(&cfg);
    assert_eq!(out.stuck.len(), 2, "{:#?}", out.stuck);
    assert!(
        out.stuck[0].contains(" missing, pieces "),
        "{}",
        out.stuck[0]
    );
    let done = out.finish.iter().filter(|t| t.is_finite()).count();
    assert_eq!(done, 18);
}

#[test]
fn a_run_is_a_function_of_its_config() {
    let cfg = Config {
        piece: 256 << 10,
        ..Config::lan(30)
    };
    let a = run(&cfg);
    let b = run(&cfg);
    assert_eq!(a.finish, b.finish);
    assert_eq!(a.events, b.events);
    let c = run(&Config { seed: 2, ..cfg });
    assert_ne!(a.finish, c.finish);
}

/// `make bench-sim`: the curve at 100, 1,000 and 10,000 hosts, equal
/// links and 10 % of the hosts at 1/10 of the speed; by default 10,000
/// with equal links only (9 minutes of wall time alone: the whole curve
/// takes about 11), all of the counts in `SIM_CURVE` (comma-separated)
/// both ways.
#[test]
#[ignore = "make bench-sim: release build, minutes"]
fn curve() {
    header();
    let (counts, both_up_to): (Vec<usize>, usize) = match std::env::var("SIM_CURVE") {
        Ok(v) => (
            v.split(',').filter_map(|c| c.trim().parse().ok()).collect(),
            usize::MAX,
        ),
        Err(_) => (vec![100, 1_000, 10_000], 1_000),
    };
    for hosts in counts {
        row("equal links", &Config::lan(hosts), Duration::ZERO);
        if hosts > both_up_to {
            continue;
        }
        row(
            "10 % at 1/10",
            &Config {
                slow_fraction: 0.1,
                ..Config::lan(hosts)
            },
            Duration::ZERO,
        );
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One case from the environment, for choosing the constants:
/// `SIM_HOSTS SIM_PIECE_KIB SIM_SUBSET SIM_CONNS SIM_SWARM_CONNS SIM_REGULAR
/// SIM_OPTIMISTIC SIM_RECHOKE_MS SIM_IDLE_MS SIM_GRANT_MS SIM_SLOW SIM_SEED
/// SIM_FILE_MIB SIM_ANNOUNCE_MS SIM_FAST_REQUERY_MS SIM_MAX_HOLDERS SIM_MAX_WAITING
/// SIM_PARK` (0 never, 1 always, 2 when next in line: the default),
/// `SIM_HUNT_BELOW` (slots held that stop a download looking for more;
/// a large number: never), `SIM_ROTATE` (`false`: free holders tried
/// from the first known), `SIM_RUN_KIB` (a run's bytes; the piece size:
/// one piece a request), `SIM_PIPELINE` (`false`: the next request only
/// after an answer), `SIM_POLL_AFTER_PIECE` (a worker with nothing to
/// ask asks the bitmap again when a piece came since the last one) and
/// `SIM_HAVE_WAIT_MS` (0: a bitmap request never waits at the holder),
/// `SIM_RELEASE_POLL` (`false`: a download that asks a partial holder's
/// bitmap keeps its slot there until it lapses), `SIM_RELEASE` (not the
/// code: a worker that rotates away closes its connection and the
/// holder frees its slot, as for a download that ended) and
/// `SIM_HUNT_RATE` (an oracle, not the code: a
/// download hunts for slots while its rate is below this share of its
/// link). Besides the swarm's rate it prints the ramp per hundredth, the
/// downlinks' use, the model's rate against max-min of the same flows,
/// busy uplinks by flows out, holders by slots held and why a held slot
/// carries nothing.
#[test]
#[ignore = "by hand: cargo test --release --lib sim::tests::explore -- --ignored --nocapture"]
fn explore() {
    let mut cfg = Config::lan(env("SIM_HOSTS", 1000));
    cfg.file = env("SIM_FILE_MIB", 16u64) << 20;
    cfg.piece = env("SIM_PIECE_KIB", 64u64) << 10;
    cfg.subset = env("SIM_SUBSET", cfg.subset);
    cfg.connections = env("SIM_CONNS", cfg.connections);
    cfg.swarm_connections = env("SIM_SWARM_CONNS", cfg.swarm_connections);
    cfg.slots.regular = env("SIM_REGULAR", cfg.slots.regular);
    cfg.slots.optimistic = env("SIM_OPTIMISTIC", cfg.slots.optimistic);
    cfg.slots.rechoke = Duration::from_millis(env("SIM_RECHOKE_MS", 250));
    cfg.slots.max_waiting = env("SIM_MAX_WAITING", cfg.slots.max_waiting);
    cfg.slots.idle = Duration::from_millis(env("SIM_IDLE_MS", 300));
    cfg.slow_fraction = env("SIM_SLOW", 0.0);
    cfg.seed = env("SIM_SEED", 1);
    let ms = |d: Duration| d.as_millis() as u64;
    cfg.announce_after = Duration::from_millis(env("SIM_ANNOUNCE_MS", ms(cfg.announce_after)));
    cfg.run_bytes = env("SIM_RUN_KIB", cfg.run_bytes >> 10) << 10;
    cfg.pipeline = env("SIM_PIPELINE", cfg.pipeline);
    cfg.poll_after_piece = env("SIM_POLL_AFTER_PIECE", cfg.poll_after_piece);
    cfg.have_wait = Duration::from_millis(env("SIM_HAVE_WAIT_MS", ms(cfg.have_wait)));
    cfg.fast_requery = Duration::from_millis(env("SIM_FAST_REQUERY_MS", ms(cfg.fast_requery)));
    cfg.slots.grant = Duration::from_millis(env("SIM_GRANT_MS", ms(cfg.slots.grant)));
    cfg.max_holders = env("SIM_MAX_HOLDERS", cfg.max_holders);
    cfg.park = match env("SIM_PARK", 2u8) {
        0 => Park::Never,
        1 => Park::Always,
        _ => Park::Next,
    };
    cfg.hunt_below = env("SIM_HUNT_BELOW", cfg.hunt_below);
    cfg.rotate_holders = env("SIM_ROTATE", cfg.rotate_holders);
    cfg.sample = true;
    cfg.hunt_rate = env("SIM_HUNT_RATE", 0.0);
    cfg.release = env("SIM_RELEASE", cfg.release);
    cfg.release_on_poll = env("SIM_RELEASE_POLL", cfg.release_on_poll);

    header();
    let out = row("explore", &cfg, Duration::ZERO);
    let alone = cfg.alone() * 1e9;
    println!(
        "the seed sent every piece once by {:.2}x one host alone; {:.2} files of its upload went to slow hosts",
        out.seed_spread * 1e9 / alone,
        out.seed_to_slow / cfg.file as f64
    );
    println!(
        "turn-aways by the seed: {} of {}",
        out.seed_busy, out.busy_answers
    );
    let q = &out.queries;
    println!(
        "tracker reads per download: mean {:.1}, max {}",
        q.iter().map(|&x| f64::from(x)).sum::<f64>() / q.len().max(1) as f64,
        q.iter().max().copied().unwrap_or(0)
    );
    // The swarm's download rate over time: pieces arriving per tenth of
    // one host alone, against what the unfinished hosts' links could take.
    let bucket = alone / 10.0;
    let end = out.finish.iter().copied().fold(0.0, f64::max) * 1e9;
    let nb = (end / bucket).ceil() as usize + 1;
    let mut arrived = vec![0u64; nb];
    for st in &out.stats {
        for &t in &st.got {
            arrived[(t as f64 / bucket) as usize] += 1;
        }
    }
    let pieces_per_bucket = cfg.link * bucket / 1e9 / cfg.piece as f64;
    {
        let fine = alone / 100.0;
        let mut a = vec![0u64; 40];
        let mut holders = vec![0u64; 40];
        for st in &out.stats {
            for &t in &st.got {
                let b = (t as f64 / fine) as usize;
                if b < 40 {
                    a[b] += 1;
                }
            }
            if let Some(&t) = st.got.first() {
                let b = (t as f64 / fine) as usize;
                for h in holders.iter_mut().skip(b) {
                    *h += 1;
                }
            }
        }
        let ppb = cfg.link * fine / 1e9 / cfg.piece as f64 * cfg.hosts as f64;
        print!("ramp per 0.01x: rate (hosts holding a piece):");
        for b in 0..40 {
            if b % 10 == 0 {
                print!("\n  {:>4.2}x:", b as f64 / 100.0);
            }
            print!(" {:.2}({})", a[b] as f64 / ppb, holders[b]);
        }
        println!();
    }
    print!("swarm download rate per 0.1x (share of the unfinished fast hosts' links):");
    for (b, &a) in arrived.iter().enumerate() {
        let t0 = b as f64 * bucket / 1e9;
        let active = out
            .finish
            .iter()
            .zip(&out.slow)
            .filter(|(f, s)| !**s && **f > t0)
            .count()
            .max(1);
        if b % 10 == 0 {
            print!("\n  {:>4.1}x:", b as f64 / 10.0);
        }
        print!(" {:>4.2}", a as f64 / (active as f64 * pieces_per_bucket));
    }
    println!();
    let mut order: Vec<usize> = (0..out.finish.len()).collect();
    order.sort_by(|&a, &b| out.finish[a].total_cmp(&out.finish[b]));
    // The fast hosts' median, 90th percentile and last 8, then the last
    // 2 slow hosts.
    let fast: Vec<usize> = order.iter().copied().filter(|&h| !out.slow[h]).collect();
    let slow: Vec<usize> = order.iter().copied().filter(|&h| out.slow[h]).collect();
    let n = fast.len();
    let show: Vec<usize> = [n / 2, n * 9 / 10]
        .into_iter()
        .chain(n.saturating_sub(8)..n)
        .map(|k| fast[k])
        .chain(slow.iter().rev().take(2).rev().copied())
        .collect();
    println!();
    print!("idle uplinks per 0.1x (hosts: complete / partial holders):");
    for (b, idle) in out.up_idle.iter().enumerate() {
        if b % 10 == 0 {
            print!("\n  {:>4.1}x:", b as f64 / 10.0);
        }
        print!(" {:>4.0}/{:<4.0}", idle[0], idle[1]);
    }
    println!();
    print!("unfinished downloads per 0.1x: downlink use, flows in:");
    for (b, e) in out.link_use.iter().enumerate() {
        if b % 10 == 0 {
            print!("\n  {:>4.1}x:", b as f64 / 10.0);
        }
        let samples = e[4].max(1.0);
        print!(" {:>4.2} {:<4.1}", e[2] / samples, e[3] / samples);
    }
    println!();
    print!("model's total rate vs max-min of the same flows, per 0.1x (links):");
    for (b, e) in out.link_use.iter().enumerate() {
        if b % 10 == 0 {
            print!("\n  {:>4.1}x:", b as f64 / 10.0);
        }
        let samples = e[4].max(1.0);
        print!(" {:>4.2}/{:<4.2}", e[5] / samples, e[6] / samples);
    }
    println!();
    print!("busy uplinks by flows out (share of samples, mean use):");
    let total: f64 = out.out_hist.iter().map(|x| x[0]).sum();
    for (k, x) in out.out_hist.iter().enumerate() {
        if x[0] > 0.0 {
            print!(" {k}: {:.2} {:.2}", x[0] / total, x[1] / x[0]);
        }
    }
    println!();
    print!("hosts by slots held (share of samples, mean flows out):");
    let total: f64 = out.held_hist.iter().map(|x| x[0]).sum();
    for (k, x) in out.held_hist.iter().enumerate() {
        if x[0] > 0.0 {
            print!(" {k}: {:.2} {:.2}", x[0] / total, x[1] / x[0]);
        }
    }
    println!();
    let samples = out.link_use.iter().map(|e| e[4]).sum::<f64>().max(1.0) / cfg.hosts as f64;
    let w = out.quiet_why.map(|x| x / samples / cfg.hosts as f64);
    println!(
        "quiet slots per host: granted {:.2} done {:.2} unlisted {:.2} closed {:.2} idle {:.2} asking {:.2} flowing {:.2}",
        w[0], w[1], w[2], w[3], w[4], w[5], w[6]
    );
    let slots = |h: usize| {
        let st = &out.stats[h];
        let took = out.finish[h] * 1e9 - st.start as f64;
        st.slot_ns as f64 / took
    };
    // Slots held on average by the hosts in order of finishing, by tenths.
    print!("slots held on average, fast hosts by tenth of finishing order:");
    for c in fast.chunks(fast.len().div_ceil(10).max(1)) {
        let m = c.iter().map(|&h| slots(h)).sum::<f64>() / c.len() as f64;
        let r = c.iter().map(|&h| out.stats[h].refused as f64).sum::<f64>() / c.len() as f64;
        print!(" {m:.2} ({r:.0})");
    }
    println!("  (mean slots, mean turn-aways)");
    println!(
        "host   slow start |  25%   50%   75%   90%   99%  100% | idle refused seed cmpl slots | holders/complete/refused at 1/4 1/2 3/4 1"
    );
    for h in show {
        let st = &out.stats[h];
        let q = |f: f64| {
            let i = ((st.got.len() as f64 * f).ceil() as usize).clamp(1, st.got.len().max(1)) - 1;
            st.got.get(i).map_or(f64::NAN, |&t| t as f64 / alone)
        };
        let quarters: Vec<String> = st
            .at_quarter
            .iter()
            .map(|(k, c, r)| format!("{k}/{c}/{r}"))
            .collect();
        println!(
            "{h:>5} {:>5} {:>5.2} | {:>5.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2} | {:>4.2} {:>7} {:>4} {:>4} {:>5.2} | {}",
            out.slow[h],
            st.start as f64 / alone,
            q(0.25),
            q(0.5),
            q(0.75),
            q(0.9),
            q(0.99),
            q(1.0),
            st.idle as f64 / alone,
            st.refused,
            st.from_seed,
            st.from_complete,
            slots(h),
            quarters.join(" ")
        );
    }
}
