//! Which holders a download talks to: a bounded pseudo-random subset
//! (Kraken's pseudo-random regular graph), so that a download's requests
//! do not grow with the swarm and no holder is asked by everyone.
//!
//! Each download ranks the candidates with a keyed hash: first by host
//! (an IPv4 address, an IPv6 /64: what one machine on the LAN can hold),
//! then by id within a host, and keeps the best `want`, at most
//! `per_host` from one host. The key is random per download and kept for
//! its lifetime, so
//!
//! - downloads pick different holders (each holder is in about `want`
//!   subsets, whatever the swarm's size);
//! - a re-query gives the same subset plus the holders that rank in (no
//!   churn of connections);
//! - a flood of records from one host (sybils on many ports or ids) is one
//!   host: it gets at most `per_host` places, and where it ranks is set by
//!   the download's secret key, not by ids or key order it chooses.

use std::net::IpAddr;

use super::host::Host;

/// A holder as the subset sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'a> {
    /// The address it is dialled at (its host).
    pub host: IpAddr,
    /// Its id (any stable name: the record's id).
    pub id: &'a str,
}

/// The indices (into `candidates`) of the holders this download talks to,
/// best ranked first: at most `want`, at most `per_host` per host.
/// `key` is the download's own random key.
pub(crate) fn choose(
    key: u64,
    candidates: &[Candidate<'_>],
    want: usize,
    per_host: usize,
) -> Vec<usize> {
    if want == 0 || per_host == 0 {
        return Vec::new();
    }
    // The best `want` hosts (a host's rank is the same for all its
    // records), kept sorted; `want` is small.
    let mut hosts: Vec<(u64, u64)> = Vec::with_capacity(want + 1);
    for c in candidates {
        let h = host_bits(c.host);
        let r = mix(key ^ mix(h));
        if hosts.iter().any(|&(_, x)| x == h) {
            continue;
        }
        if hosts.len() == want && r >= hosts[want - 1].0 {
            continue;
        }
        let at = hosts.partition_point(|&(q, _)| q < r);
        hosts.insert(at, (r, h));
        hosts.truncate(want);
    }
    // Within each chosen host, its best `per_host` records.
    let mut picked: Vec<(u64, u64, usize)> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let h = host_bits(c.host);
        let Some(&(hr, _)) = hosts.iter().find(|&&(_, x)| x == h) else {
            continue;
        };
        let r = mix(key.rotate_left(17) ^ fnv(c.id.as_bytes()));
        picked.push((hr, r, i));
    }
    picked.sort_unstable();
    let mut out = Vec::with_capacity(want);
    let mut run: Option<(u64, usize)> = None;
    for (hr, _, i) in picked {
        let n = match run {
            Some((h, n)) if h == hr => n + 1,
            _ => 1,
        };
        run = Some((hr, n));
        if n <= per_host && out.len() < want {
            out.push(i);
        }
    }
    out
}

/// The bits that name a host (see [`Host::bits`]).
fn host_bits(ip: IpAddr) -> u64 {
    Host::of(ip).bits()
}

/// splitmix64's finalizer: a bijection that spreads every input bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn a_bounded_subset_stable_across_requeries() {
        let ids: Vec<String> = (0..200).map(|i| format!("peer{i}")).collect();
        let c: Vec<Candidate> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Candidate {
                host: v4(i as u32),
                id,
            })
            .collect();
        let a = choose(7, &c, 10, 1);
        assert_eq!(a.len(), 10);
        // Same key, candidates in another order plus newcomers: the old
        // ones that still rank stay.
        let mut shuffled = c.clone();
        shuffled.reverse();
        let b: Vec<&str> = choose(7, &shuffled, 10, 1)
            .into_iter()
            .map(|i| shuffled[i].id)
            .collect();
        let a_ids: Vec<&str> = a.iter().map(|&i| c[i].id).collect();
        assert_eq!(a_ids, b);
        // Another download, another subset.
        assert_ne!(choose(8, &c, 10, 1), a);
        // Fewer candidates than wanted: all of them.
        assert_eq!(choose(7, &c[..3], 10, 1).len(), 3);
    }

    #[test]
    fn each_holder_is_in_about_want_subsets() {
        let ids: Vec<String> = (0..500).map(|i| format!("p{i}")).collect();
        let c: Vec<Candidate> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Candidate {
                host: v4(i as u32),
                id,
            })
            .collect();
        let mut indegree = vec![0u32; c.len()];
        for key in 0..500u64 {
            for i in choose(key.wrapping_mul(0x9e37), &c, 10, 1) {
                indegree[i] += 1;
            }
        }
        let max = *indegree.iter().max().unwrap();
        assert!(max <= 30, "a holder in {max} of 500 subsets of 10");
    }

    #[test]
    fn a_sybil_flood_from_one_host_is_one_host() {
        let honest: Vec<String> = (0..20).map(|i| format!("h{i}")).collect();
        let sybils: Vec<String> = (0..5000).map(|i| format!("s{i}")).collect();
        let mut c: Vec<Candidate> = sybils
            .iter()
            .map(|id| Candidate { host: v4(999), id })
            .collect();
        // An IPv6 attacker with many addresses in its /64 too.
        c.extend(sybils.iter().enumerate().map(|(i, id)| Candidate {
            host: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, i as u16)),
            id,
        }));
        c.extend(honest.iter().enumerate().map(|(i, id)| Candidate {
            host: v4(i as u32),
            id,
        }));
        for key in 0..50 {
            let got = choose(key, &c, 10, 1);
            let bad = got.iter().filter(|&&i| c[i].id.starts_with('s')).count();
            assert_eq!(got.len(), 10);
            assert!(bad <= 2, "{bad} sybils of 10");
        }
    }

    #[test]
    fn per_host_takes_several_records_of_one_host() {
        let ids = ["a", "b", "c"];
        let c: Vec<Candidate> = ids.iter().map(|id| Candidate { host: v4(1), id }).collect();
        assert_eq!(choose(1, &c, 10, 2).len(), 2);
        assert!(choose(1, &c, 0, 2).is_empty());
    }
}
