//! The state the server handle, the accept thread, the poll thread and
//! the workers share (`pool.rs` creates it, `accept.rs` admits into it).

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use super::conn::Context;
use super::handler::CatalogCache;
use super::limits::Admission;
use super::park::{Parking, ReadyQueue};
use super::slots::Slots;
use super::{FileSource, ServerConfig};

/// State shared by the server handle and its threads.
pub(crate) struct Shared {
    pub(crate) closing: AtomicBool,
    pub(crate) admission: Arc<Admission>,
    pub(crate) parking: Parking,
    pub(crate) ready: ReadyQueue,
    pub(crate) catalog: CatalogCache,
    pub(crate) slots: Arc<Slots>,
    pub(crate) next_id: AtomicU64,
    pub(crate) panics: AtomicU64,
}

impl Shared {
    pub(crate) fn context<'a>(
        &'a self,
        config: &'a ServerConfig,
        source: &'a dyn FileSource,
    ) -> Context<'a> {
        Context {
            config,
            source,
            catalog: &self.catalog,
            slots: &self.slots,
            closing: &self.closing,
        }
    }
}
