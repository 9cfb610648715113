//! The catalog's byte budget: one counter shared by every peer's request,
//! so what a client holds is bounded in total, whatever the number of peers.
//!
//! A request reserves the bytes of a body before reading it (the announced
//! `Content-Length`, or up to the per-peer limit for a body without one)
//! and gives back what it did not use; a body kept in the catalog keeps its
//! reservation. Cached lists count from the start.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes left to reserve.
#[derive(Debug)]
pub(crate) struct Budget {
    left: AtomicU64,
}

impl Budget {
    /// `total` bytes, of which `used` are already taken.
    pub fn new(total: u64, used: u64) -> Budget {
        Budget {
            left: AtomicU64::new(total.saturating_sub(used)),
        }
    }

    /// Takes exactly `n` bytes, or nothing (false) if fewer are left.
    pub fn take(&self, n: u64) -> bool {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    /// Takes up to `n` bytes; returns how many.
    pub fn take_up_to(&self, n: u64) -> u64 {
        match self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                Some(left - left.min(n))
            }) {
            Ok(before) | Err(before) => before.min(n),
        }
    }

    /// Gives back `n` bytes.
    pub fn give_back(&self, n: u64) {
        self.left.fetch_add(n, Ordering::AcqRel);
    }

    /// Bytes left.
    #[cfg(test)]
    pub fn left(&self) -> u64 {
        self.left.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_exceed_the_total() {
        let b = Budget::new(100, 30);
        assert!(!b.take(71));
        assert!(b.take(50));
        assert_eq!(b.take_up_to(50), 20);
        assert_eq!(b.take_up_to(5), 0);
        b.give_back(10);
        assert_eq!(b.left(), 10);
    }
}
