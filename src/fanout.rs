//! A scoped fan-out: run one blocking function over many items on a few
//! named threads, results in the items' order. Used wherever peers are
//! asked something in parallel (catalogs, piece lists, availability
//! probes, health probes, a batch's downloads) and for a download's piece
//! checks (`fetch::state::salvage`). Every name starts with `pbs-`.
//!
//! Threads are scoped (joined before returning); if a thread cannot be
//! started, fewer do the work, and the calling thread always helps.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// `f` over every item, on at most `threads` threads named `<name><n>`
/// (plus the caller). `missing` stands in for a result that was never
/// produced (only if `f` panicked on another thread).
pub(crate) fn map<T, R, F>(
    items: &[T],
    threads: usize,
    name: &str,
    f: F,
    missing: impl Fn() -> R,
) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    map_with(items, threads, name, || (), |(), item| f(item), missing)
}

/// [`map`] where each thread first makes its own state with `init` (a
/// buffer, say) and hands it to `f` with every item it takes.
pub(crate) fn map_with<T, S, R, F>(
    items: &[T],
    threads: usize,
    name: &str,
    init: impl Fn() -> S + Sync,
    f: F,
    missing: impl Fn() -> R,
) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&mut S, &T) -> R + Sync,
{
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        let mut state = init();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            let r = f(&mut state, item);
            *results[i].lock() = Some(r);
        }
    };
    std::thread::scope(|s| {
        for t in 0..threads.min(items.len().saturating_sub(1)) {
            let spawned = std::thread::Builder::new()
                .name(format!("{name}{t}"))
                .spawn_scoped(s, work);
            if spawned.is_err() {
                break;
            }
        }
        work();
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(&missing))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_the_items_order() {
        let items: Vec<u32> = (0..100).collect();
        let out = super::map(&items, 4, "pbs-test", |x| x * 2, || 0);
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        let none: Vec<u32> = Vec::new();
        assert!(super::map(&none, 4, "pbs-test", |x| *x, || 0).is_empty());
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
            || (0, 0),
        );
        assert!(out.iter().all(|(seen, _)| (1..=50).contains(seen)));
        assert_eq!(
            out.iter().map(|(_, x)| *x).collect::<Vec<_>>(),
            (1..=50).collect::<Vec<_>>()
        );
    }
}
