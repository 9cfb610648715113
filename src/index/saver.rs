//! The persisted cache as the index thread uses it: loaded into the store
//! at start (served at once, no change to save), saved `SAVE_DELAY` after a
//! committed change, or when the index stops.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cache;
use super::store::Delta;
use super::Shared;

/// Delay between a change and the cache save it causes.
const SAVE_DELAY: Duration = Duration::from_secs(2);

/// Where the cache is kept, and when it is next due to be written.
pub struct Saver {
    path: Option<PathBuf>,
    due: Option<Instant>,
}

impl Saver {
    /// A cache at `path` (`None`: no state directory, nothing persisted).
    pub fn new(path: Option<PathBuf>) -> Self {
        Saver { path, due: None }
    }

    /// A change was committed: a save is due `SAVE_DELAY` from now (or
    /// sooner, if one was due already).
    pub fn changed(&mut self) {
        self.due.get_or_insert_with(|| Instant::now() + SAVE_DELAY);
    }

    /// Whether there is a cache file to load.
    pub fn has_cache(&self) -> bool {
        self.path.as_ref().is_some_and(|p| p.exists())
    }

    /// When a save is due, if one is.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Puts the cache's records into the store (`opened`: when the index
    /// opened, for the log line).
    pub fn load(&self, shared: &Shared, root: &Path, opened: Instant) {
        let Some(path) = &self.path else { return };
        let mut store = shared.store.write();
        let mut delta = Delta::default();
        let mut n = 0usize;
        let loaded = cache::load(path, root, |count, rec| {
            if n == 0 {
                store.reserve(count);
            }
            store.load(
                rec.rel,
                rec.sha1,
                rec.stat,
                || rec.entry(),
                || rec.hashed(),
                &mut delta,
            );
            n += 1;
        });
        match loaded {
            Ok(Some(generation)) => {
                store.generation = store.generation.max(generation.saturating_add(1));
                // Not `changed`: serving what the cache holds is no change
                // to save.
                shared.commit(&mut store, delta);
                log::debug!(
                    "index: {n} cached records in {} loaded in {} ms",
                    path.display(),
                    opened.elapsed().as_millis()
                );
            }
            Ok(None) => log::debug!("index: no cache at {} yet", path.display()),
            Err(e) => log::warn!("{e}"),
        }
    }

    /// Writes the store's records now; no save is due any more.
    pub fn save(&mut self, shared: &Shared, root: &Path) {
        self.due = None;
        let Some(path) = &self.path else { return };
        let (generation, entries) = {
            let s = shared.store.read();
            (s.generation, s.entries().cloned().collect::<Vec<_>>())
        };
        match cache::save(path, root, generation, &entries) {
            Ok(n) => log::debug!("index: saved {n} records to {}", path.display()),
            Err(e) => log::warn!("{e}"),
        }
    }
}
