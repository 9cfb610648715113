//! `--max-rate`: parsing a rate (`200M`, `800K`, `1G`, plain bytes; 1024-based)
//! and a token bucket shared by every connection of a download.
//!
//! The bucket lets callers reserve ahead: a reservation may drive the
//! balance negative, and the caller then sleeps (outside the lock) until
//! the debt is paid, so the long-run rate is exact and no caller spins.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Why a rate does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate {input:?}: expected bytes per second such as 800K, 5M, 1G or 1048576")]
pub struct ParseRateError {
    /// The input, cut to 32 characters.
    pub input: String,
}

/// Parses `200M`, `5m`, `800K`, `1G`, `1048576` (also with a trailing `B`
/// or `/s`) into bytes per second. K, M and G are 1024-based. Zero is refused.
pub fn parse_rate(s: &str) -> Result<u64, ParseRateError> {
    let err = || ParseRateError {
        input: s.chars().take(32).collect(),
    };
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t
        .strip_suffix(['B', 'b'])
        .filter(|r| !r.is_empty())
        .unwrap_or(t);
    let (digits, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = digits.trim().parse().map_err(|_| err())?;
    match n.checked_mul(mult) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(err()),
    }
}

/// A token bucket: `rate` bytes per second, bursts up to `burst` bytes.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A bucket of `rate` bytes per second with a burst of a tenth of a
    /// second (at least 16 KiB).
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        let burst = (rate / 10.0).max(16.0 * 1024.0);
        RateLimiter {
            rate,
            burst,
            state: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    /// The largest read worth reserving at once (keeps connections fair).
    pub fn chunk(&self) -> usize {
        (self.burst as usize).clamp(4 * 1024, 256 * 1024)
    }

    /// Reserves `n` bytes and returns how long to wait before using them.
    pub fn reserve(&self, n: usize) -> Duration {
        let mut b = self.state.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.tokens -= n as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes_1024_based() {
        assert_eq!(parse_rate("800K"), Ok(800 * 1024));
        assert_eq!(parse_rate("5M"), Ok(5 * 1024 * 1024));
        assert_eq!(parse_rate("200m"), Ok(200 * 1024 * 1024));
        assert_eq!(parse_rate("1G"), Ok(1 << 30));
        assert_eq!(parse_rate("1048576"), Ok(1048576));
        assert_eq!(parse_rate("5MB"), Ok(5 * 1024 * 1024));
        assert_eq!(parse_rate("5M/s"), Ok(5 * 1024 * 1024));
    }

    #[test]
    fn refuses_garbage_zero_and_overflow() {
        for bad in [
            "",
            "M",
            "fast",
            "-5M",
            "0",
            "0K",
            "1.5M",
            "99999999999999999999G",
            "5T",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_rate("x").unwrap_err().to_string().contains("800K"));
    }

    #[test]
    fn reservations_beyond_the_burst_must_wait_in_proportion() {
        let r = RateLimiter::new(1024 * 1024);
        let wait = r.reserve(512 * 1024);
        // Half a second of debt, minus whatever accrued since creation.
        assert!(wait > Duration::from_millis(300), "{wait:?}");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        let more = r.reserve(512 * 1024);
        assert!(more > wait, "debt accumulates: {more:?} after {wait:?}");
    }
}
