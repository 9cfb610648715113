//! [`FairQueue`]: the connections that have work to do now (a request
//! arrived, a socket can take more of a body), waiting for a worker.
//!
//! Round robin over clients, first in first out within a client: a worker
//! takes the oldest entry of the client whose turn it is, and that client
//! goes to the back of the ring. However many connections one client has
//! ready, another client's connection waits for at most one turn of each
//! client ahead of it, and a connection that has just had its turn (its
//! answer, or a slice of a body) goes behind those already waiting.
//!
//! One lock around the queues and a condition variable for idle workers;
//! the lock is held to push or pop, never while serving.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use parking_lot::{Condvar, Mutex};

/// A fair queue of `T` keyed by client `K`.
pub(crate) struct FairQueue<K, T> {
    state: Mutex<State<K, T>>,
    ready: Condvar,
}

struct State<K, T> {
    by_client: HashMap<K, VecDeque<T>>,
    /// Clients with at least one entry, in turn order.
    ring: VecDeque<K>,
    len: usize,
    closed: bool,
}

impl<K: Copy + Eq + Hash, T> FairQueue<K, T> {
    pub(crate) fn new() -> Self {
        FairQueue {
            state: Mutex::new(State {
                by_client: HashMap::new(),
                ring: VecDeque::new(),
                len: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    /// Queues `item` behind `key`'s other entries; after [`close`] the item
    /// is given back so the caller drops it.
    ///
    /// [`close`]: FairQueue::close
    pub(crate) fn push(&self, key: K, item: T) -> Result<(), T> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(item);
        }
        let queue = state.by_client.entry(key).or_default();
        queue.push_back(item);
        if queue.len() == 1 {
            state.ring.push_back(key);
        }
        state.len += 1;
        crate::metrics::QUEUE_DEPTH.inc();
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// The next entry in turn; blocks while the queue is empty. `None` once
    /// the queue is closed.
    pub(crate) fn pop(&self) -> Option<T> {
        let mut state = self.state.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(item) = state.take() {
                return Some(item);
            }
            self.ready.wait(&mut state);
        }
    }

    /// Entries waiting.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().len
    }

    /// Refuses further entries, wakes every blocked [`pop`](FairQueue::pop)
    /// and returns what was waiting (dropped by the caller, outside the lock).
    pub(crate) fn close(&self) -> Vec<T> {
        let mut state = self.state.lock();
        state.closed = true;
        state.ring.clear();
        crate::metrics::QUEUE_DEPTH.sub(state.len);
        state.len = 0;
        let left = std::mem::take(&mut state.by_client)
            .into_values()
            .flatten()
            .collect();
        drop(state);
        self.ready.notify_all();
        left
    }
}

impl<K: Copy + Eq + Hash, T> State<K, T> {
    fn take(&mut self) -> Option<T> {
        let key = self.ring.pop_front()?;
        let queue = self.by_client.get_mut(&key)?;
        let item = queue.pop_front();
        if queue.is_empty() {
            self.by_client.remove(&key);
        } else {
            self.ring.push_back(key);
        }
        if item.is_some() {
            self.len -= 1;
            crate::metrics::QUEUE_DEPTH.dec();
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_take_turns_and_each_client_is_fifo() {
        let q = FairQueue::new();
        for i in 0..5 {
            q.push('a', format!("a{i}")).unwrap();
        }
        q.push('b', "b0".to_string()).unwrap();
        q.push('c', "c0".to_string()).unwrap();
        q.push('b', "b1".to_string()).unwrap();
        assert_eq!(q.len(), 8);
        let order: Vec<String> = (0..8).map(|_| q.pop().unwrap()).collect();
        assert_eq!(order, ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_requeued_entry_goes_behind_the_waiting_ones() {
        let q = FairQueue::new();
        for i in 0..3 {
            q.push('a', i).unwrap();
        }
        let first = q.pop().unwrap();
        q.push('a', first).unwrap();
        assert_eq!(
            (0..3).map(|_| q.pop().unwrap()).collect::<Vec<_>>(),
            [1, 2, 0]
        );
    }

    #[test]
    fn close_wakes_poppers_and_returns_the_rest() {
        let q = std::sync::Arc::new(FairQueue::<u8, u8>::new());
        let popper = {
            let q = q.clone();
            std::thread::spawn(move || q.pop())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(q.close().is_empty());
        assert_eq!(popper.join().unwrap(), None);
        assert_eq!(q.push(1, 1), Err(1));
    }
}
