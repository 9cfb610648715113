//! Polling with a deadline: the replacement for `sleep` in tests.

use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `cond` every ~20 ms until it returns true; panics naming `what`
/// and the elapsed time if `timeout` passes first.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(timeout, what, || cond().then_some(()))
}

/// Polls `f` every ~20 ms until it returns `Some`, and returns that value;
/// panics naming `what` and the elapsed time if `timeout` passes first.
#[track_caller]
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            panic!("timed out after {elapsed:.2?} (limit {timeout:?}) waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL.min(timeout - elapsed));
    }
}

/// Like [`wait_for`] but returns `None` on timeout instead of panicking.
pub fn try_wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL.min(timeout - elapsed));
    }
}
