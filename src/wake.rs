//! A flag one thread sleeps on until another raises it: for a background
//! thread that should act when something changes rather than look every
//! few milliseconds (the swarm's announcer, `discovery::tracker`).
//!
//! Waiting parks at once (a `parking_lot` condition variable, no spurious
//! wake-ups). A blocking receive on a crossbeam channel (`recv`,
//! `recv_timeout`) spins and calls `sched_yield` a few times before it
//! parks: per wait, on a machine whose cores are busy, that costs more
//! than the work the thread wakes for.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// A raised-or-not flag and the thread waiting for it.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    raised: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    /// Lowered.
    pub fn new() -> Self {
        Wake::default()
    }

    /// Raises the flag: the waiting thread (or the next to wait) returns.
    /// Cheap when already raised; never blocks for long (one lock).
    pub fn raise(&self) {
        let mut raised = self.raised.lock();
        if !*raised {
            *raised = true;
            self.cv.notify_one();
        }
    }

    /// Waits until the flag is raised or `timeout` passes; returns whether
    /// it was raised, and lowers it.
    pub fn wait(&self, timeout: Duration) -> bool {
        let until = Instant::now().checked_add(timeout);
        let mut raised = self.raised.lock();
        while !*raised {
            match until {
                Some(t) => {
                    if self.cv.wait_until(&mut raised, t).timed_out() {
                        break;
                    }
                }
                None => self.cv.wait(&mut raised),
            }
        }
        std::mem::take(&mut *raised)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_raise_wakes_the_waiter_and_is_taken_once() {
        let w = Arc::new(Wake::new());
        assert!(!w.wait(Duration::from_millis(1)), "not raised");
        w.raise();
        w.raise();
        assert!(w.wait(Duration::from_secs(3600)), "raised before the wait");
        assert!(!w.wait(Duration::ZERO), "taken by the last wait");
        let waiter = {
            let w = w.clone();
            std::thread::spawn(move || w.wait(Duration::from_secs(3600)))
        };
        // Raised while (or before) the other thread waits: it returns
        // long before its hour.
        w.raise();
        assert!(waiter.join().unwrap());
    }
}
