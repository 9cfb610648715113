//! Upload slots in the server: the pure policy (`policy::slots`: how many
//! downloads one holder serves at once, rotated) behind one lock per
//! server, which is one uplink. Only piece requests (a `Range` `GET` of a
//! file) take a slot; the catalog, `HEAD`, `/have`, `/pieces` and the
//! status never wait. A download is one client host ([`ClientKey`]: an
//! IPv4 address or an IPv6 /64), whatever its connections and files.
//!
//! A request turned away is answered at once, without a body: `503` with
//! `Retry-After` (whole seconds, for any HTTP client) and `X-Slots: <ms>`
//! (the time to the next rotation, for the downloader, which gives the
//! piece back and asks another holder meanwhile), and `X-Slots-Next: 1`
//! when the downloader is next in line (it waits for the rotation here). An admitted answer holds
//! its slot through a [`SlotGuard`] until its body ends (sent or cut). A
//! client that asks a partial holder's bitmap (`/have`) with no answer in
//! progress has nothing to ask there now: its slot is given back at once
//! ([`Slots::idle`]) instead of held unused for `SlotConfig::idle`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::limits::ClientKey;
use crate::policy::slots::{Admit, SlotConfig, UploadSlots};

/// A piece request turned away: the time to the next rotation, and
/// whether this client is next in line then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Turned {
    pub retry_after: Duration,
    pub next: bool,
}

/// The upload slots of one server.
pub(crate) struct Slots {
    inner: Mutex<UploadSlots<ClientKey>>,
    /// No limit (0 slots configured).
    open: bool,
}

impl Slots {
    /// `total` slots: one of them optimistic (rotated to the longest
    /// waiter) when there are at least 2; 0 means no limit.
    pub(crate) fn new(total: usize) -> Arc<Slots> {
        let optimistic = usize::from(total >= 2);
        let cfg = SlotConfig {
            regular: total.saturating_sub(optimistic).max(1),
            optimistic,
            ..SlotConfig::default()
        };
        Arc::new(Slots {
            inner: Mutex::new(UploadSlots::new(cfg)),
            open: total == 0,
        })
    }

    /// A slot for `key` now, or the time until the slots rotate.
    pub(crate) fn admit(self: &Arc<Self>, key: ClientKey) -> Result<SlotGuard, Turned> {
        if self.open {
            return Ok(SlotGuard {
                slots: None,
                key,
                sent: 0,
            });
        }
        match self.inner.lock().admit(&key, Instant::now()) {
            Admit::Serve => Ok(SlotGuard {
                slots: Some(self.clone()),
                key,
                sent: 0,
            }),
            Admit::Busy { retry_after, next } => {
                crate::metrics::SLOTS_REFUSED.inc();
                Err(Turned { retry_after, next })
            }
        }
    }
}

impl Slots {
    /// `key` asked this partial holder's bitmap instead of a piece: the
    /// slot it holds with no answer in progress is free at once (see
    /// [`UploadSlots::idle`]).
    pub(crate) fn idle(&self, key: ClientKey) {
        if !self.open && self.inner.lock().idle(&key) {
            crate::metrics::SLOTS_RELEASED.inc();
        }
    }
}

/// An admitted answer's hold on its slot: counts the bytes sent and
/// returns the slot (with them, which rank the next rotation) when dropped.
pub(crate) struct SlotGuard {
    slots: Option<Arc<Slots>>,
    key: ClientKey,
    sent: u64,
}

impl SlotGuard {
    /// `n` more body bytes sent.
    pub(crate) fn add(&mut self, n: u64) {
        self.sent += n;
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(s) = &self.slots {
            s.inner
                .lock()
                .finished(&self.key, self.sent, Instant::now());
        }
    }
}

impl std::fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotGuard")
            .field("key", &self.key)
            .field("sent", &self.sent)
            .finish()
    }
}
