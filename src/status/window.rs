//! A rate over a sliding window of cumulative byte counts, so that a
//! transfer moving piece by piece (one piece every second or two) shows a
//! steady rate instead of bursts and zeros.

use std::collections::VecDeque;
use std::time::Instant;

/// Samples kept: the rate is taken over the last `WINDOW - 1` ticks.
pub const WINDOW: usize = 6;

/// Cumulative counts at successive instants.
#[derive(Debug, Clone, Default)]
pub struct Window {
    samples: VecDeque<(Instant, u64)>,
}

impl Window {
    /// Records the cumulative count `total` at `at`.
    pub fn push(&mut self, at: Instant, total: u64) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back((at, total));
    }

    /// Units per second between the oldest and the newest sample (0 with
    /// fewer than two).
    pub fn rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, a)), Some((t1, b))) if t1 > t0 => {
                b.saturating_sub(*a) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_average_out_over_the_window() {
        let t = Instant::now();
        let mut w = Window::default();
        assert_eq!(w.rate(), 0.0);
        // 100 bytes every other second: 50 B/s, whatever the phase.
        for i in 0..10u64 {
            w.push(t + Duration::from_secs(i), i.div_ceil(2) * 100);
        }
        assert!((w.rate() - 50.0).abs() <= 10.0, "{}", w.rate());
        assert_eq!(w.samples.len(), WINDOW);
    }
}
