//! The simulated network: every host has an upload and a download
//! capacity; a piece in transit is a flow from its holder to its
//! downloader. A holder's uplink is shared max-min among its flows, each
//! flow capped by its downloader's fair share of its downlink (the
//! downlink's count of flows). Rates change only when a flow starts or
//! ends at one of its two hosts, so the simulator recomputes those hosts'
//! flows and reschedules their ends (a fluid model: no packets).

/// One piece in transit.
#[derive(Debug, Clone)]
pub(super) struct Flow {
    pub src: u32,
    pub dst: u32,
    /// The downloader's holder slot (its index in the download's subset).
    pub slot: u32,
    pub piece: u32,
    pub bytes: f64,
    pub left: f64,
    /// Bytes per second now.
    pub rate: f64,
    /// When `left` was last brought up to date (ns).
    pub at: u64,
    /// Bumped whenever its end is rescheduled; stale end events are ignored.
    pub version: u32,
    pub live: bool,
}

/// The flows and per-host link state.
#[derive(Debug, Default)]
pub(super) struct Net {
    pub up: Vec<f64>,
    pub down: Vec<f64>,
    pub flows: Vec<Flow>,
    free: Vec<usize>,
    /// Flows out of / into each host.
    pub out: Vec<Vec<usize>>,
    pub inn: Vec<Vec<usize>>,
}

impl Net {
    pub fn new(up: Vec<f64>, down: Vec<f64>) -> Self {
        let n = up.len();
        Net {
            up,
            down,
            flows: Vec::new(),
            free: Vec::new(),
            out: vec![Vec::new(); n],
            inn: vec![Vec::new(); n],
        }
    }

    pub fn add(&mut self, f: Flow) -> usize {
        let (src, dst) = (f.src as usize, f.dst as usize);
        let id = match self.free.pop() {
            Some(id) => {
                // Versions go on across reuse, so an end event of the
                // flow that had this id never matches the new one.
                let version = self.flows[id].version;
                self.flows[id] = Flow { version, ..f };
                id
            }
            None => {
                self.flows.push(f);
                self.flows.len() - 1
            }
        };
        self.out[src].push(id);
        self.inn[dst].push(id);
        id
    }

    pub fn remove(&mut self, id: usize) {
        let (src, dst) = (self.flows[id].src as usize, self.flows[id].dst as usize);
        self.flows[id].live = false;
        self.out[src].retain(|&x| x != id);
        self.inn[dst].retain(|&x| x != id);
        self.free.push(id);
    }

    /// Brings the flows of `host` (both ways) and of the uplinks feeding it
    /// up to `now`, gives them their new rates, and returns the flows whose
    /// end moved.
    pub fn rerate(&mut self, hosts: &[u32], now: u64, moved: &mut Vec<usize>) {
        let mut srcs: Vec<u32> = Vec::new();
        for &h in hosts {
            srcs.push(h);
            for &id in &self.inn[h as usize] {
                srcs.push(self.flows[id].src);
            }
        }
        srcs.sort_unstable();
        srcs.dedup();
        for s in srcs {
            self.share_uplink(s as usize, now, moved);
        }
    }

    /// Max-min share of `src`'s uplink among its flows, each capped by its
    /// downloader's fair share of its downlink.
    fn share_uplink(&mut self, src: usize, now: u64, moved: &mut Vec<usize>) {
        let ids = self.out[src].clone();
        let mut caps: Vec<(f64, usize)> = ids
            .iter()
            .map(|&id| {
                let dst = self.flows[id].dst as usize;
                (self.down[dst] / self.inn[dst].len().max(1) as f64, id)
            })
            .collect();
        caps.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut left = self.up[src];
        let mut n = caps.len();
        for (cap, id) in caps {
            let rate = cap.min(left / n as f64);
            left -= rate;
            n -= 1;
            let f = &mut self.flows[id];
            let dt = now.saturating_sub(f.at) as f64 / 1e9;
            f.left = (f.left - f.rate * dt).max(0.0);
            f.at = now;
            if (f.rate - rate).abs() > f.rate * 1e-9 {
                f.rate = rate;
                f.version += 1;
                moved.push(id);
            }
        }
    }

    /// When flow `id` ends at its current rate (ns).
    pub fn end(&self, id: usize) -> u64 {
        let f = &self.flows[id];
        if f.rate <= 0.0 {
            return u64::MAX / 2;
        }
        f.at + (f.left / f.rate * 1e9).ceil() as u64
    }

    /// Bytes of flow `id` sent by `now`.
    pub fn sent(&self, id: usize, now: u64) -> f64 {
        let f = &self.flows[id];
        let dt = now.saturating_sub(f.at) as f64 / 1e9;
        (f.bytes - (f.left - f.rate * dt).max(0.0)).max(0.0)
    }

    /// Total rate of today's flows if both ends shared max-min
    /// (progressive filling over every uplink and downlink): a
    /// diagnostic, not the model.
    pub fn max_min_total(&self) -> f64 {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let n = self.up.len();
        // Links 0..n uplinks, n..2n downlinks.
        let live: Vec<usize> = (0..self.flows.len())
            .filter(|&i| self.flows[i].live)
            .collect();
        let mut cap: Vec<f64> = self.up.iter().chain(&self.down).copied().collect();
        let mut count = vec![0usize; 2 * n];
        for &i in &live {
            count[self.flows[i].src as usize] += 1;
            count[n + self.flows[i].dst as usize] += 1;
        }
        let mut frozen = vec![false; self.flows.len()];
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
        let level = |cap: f64, c: usize| cap / c as f64;
        for l in 0..2 * n {
            if count[l] > 0 {
                heap.push(Reverse((level(cap[l], count[l]).to_bits(), l)));
            }
        }
        let mut total = 0.0;
        while let Some(Reverse((bits, l))) = heap.pop() {
            if count[l] == 0 || level(cap[l], count[l]).to_bits() != bits {
                continue;
            }
            let r = f64::from_bits(bits);
            let ids: Vec<usize> = if l < n {
                self.out[l].clone()
            } else {
                self.inn[l - n].clone()
            };
            for id in ids {
                if frozen[id] {
                    continue;
                }
                frozen[id] = true;
                total += r;
                let f = &self.flows[id];
                for m in [f.src as usize, n + f.dst as usize] {
                    cap[m] = (cap[m] - r).max(0.0);
                    count[m] -= 1;
                    if m != l && count[m] > 0 {
                        heap.push(Reverse((level(cap[m], count[m]).to_bits(), m)));
                    }
                }
            }
        }
        total
    }
}
