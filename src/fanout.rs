//! A scoped fan-out: run one blocking function over many items on a few
//! named threads, results in the items' order. Used wherever peers are
//! asked something in parallel (catalogs, piece lists, availability
//! probes, health probes, a batch's downloads) and for a download's piece
//! checks (`fetch::state::salvage`). Every name starts with `pbs-`.
//!
//! Threads are scoped (joined before returning); if a thread cannot be
//! started, fewer do the work, and the calling thread always helps. A
//! panic in `f` is not caught: it reaches the caller (as
//! `std::thread::scope` does), so every item that returns has its result.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `f` over every item, on at most `threads` threads named `<name><n>`
/// (plus the caller).
pub(crate) fn map<T, R, F>(items: &[T], threads: usize, name: &str, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    map_with(items, threads, name, || (), |(), item| f(item))
}

/// [`map`] where each thread first makes its own state with `init` (a
/// buffer, say) and hands it to `f` with every item it takes.
pub(crate) fn map_with<T, S, R, F>(
    items: &[T],
    threads: usize,
    name: &str,
    init: impl Fn() -> S + Sync,
    f: F,
) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&mut S, &T) -> R + Sync,
{
    let next = AtomicUsize::new(0);
    // Each thread's results with their items' places.
    let work = || {
        let mut state = init();
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            done.push((i, f(&mut state, item)));
        }
        done
    };
    let mut done = std::thread::scope(|s| {
        let mut helpers = Vec::new();
        for t in 0..threads.min(items.len().saturating_sub(1)) {
            let spawned = std::thread::Builder::new()
                .name(format!("{name}{t}"))
                .spawn_scoped(s, work);
            match spawned {
                Ok(h) => helpers.push(h),
                Err(_) => break,
            }
        }
        let mut done = work();
        for h in helpers {
            match h.join() {
                Ok(mut theirs) => done.append(&mut theirs),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        done
    });
    // Every item was taken by exactly one thread, and every thread
    // returned: one result per item.
    done.sort_unstable_by_key(|&(i, _)| i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_the_items_order() {
        let items: Vec<u32> = (0..100).collect();
        let out = super::map(&items, 4, "pbs-test", |x| x * 2);
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        let none: Vec<u32> = Vec::new();
        assert!(super::map(&none, 4, "pbs-test", |x| *x).is_empty());
    }

    #[test]
    fn each_thread_keeps_its_own_state() {
        let items: Vec<u32> = (0..50).collect();
        // The state counts the items a thread took: never more than all.
        let out = super::map_with(
            &items,
            3,
            "pbs-test",
            || 0usize,
            |seen, x| {
                *seen += 1;
                (*seen, x + 1)
            },
        );
        assert!(out.iter().all(|(seen, _)| (1..=50).contains(seen)));
        assert_eq!(
            out.iter().map(|(_, x)| *x).collect::<Vec<_>>(),
            (1..=50).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_panic_on_any_thread_reaches_the_caller() {
        let items: Vec<u32> = (0..40).collect();
        // Item 7 panics on whichever thread takes it: no result is made
        // up for it, the caller sees the panic.
        let caught = std::panic::catch_unwind(|| {
            super::map(&items, 3, "pbs-test", |&x| {
                assert_ne!(x, 7, "item 7");
                x
            })
        });
        assert!(caught.is_err());
    }
}
