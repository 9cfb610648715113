//! [`Downloader`]: built once from its [`DownloadOptions`], it owns what
//! its downloads share (the rate limit and a pool of idle connections to
//! peers) and runs one call per file ([`Downloader::download`]) or per
//! batch ([`Downloader::download_many`]). Like ureq's `Agent`: build one,
//! call it many times, from many threads.

use std::path::Path;

use super::download::{Job, Mode};
use super::rate::RateLimiter;
use super::{DownloadOptions, FetchError, ProgressFn, Summary};
use crate::client::ConnPool;
use crate::digest::Sha1Digest;
use crate::holders::HolderSource;

/// Downloads files, verified, from the holders a [`HolderSource`] names.
///
/// Every download it runs shares its rate limit (`max_rate` is a total
/// across them) and, for the files of a batch, its idle connections. It is
/// `Send + Sync`: share it by reference between threads.
#[derive(Debug)]
pub struct Downloader {
    opts: DownloadOptions,
    pool: ConnPool,
    rate: Option<RateLimiter>,
}

impl Downloader {
    /// A downloader with `opts`.
    pub fn new(opts: DownloadOptions) -> Self {
        Downloader {
            rate: opts.max_rate.map(RateLimiter::new),
            pool: ConnPool::new(),
            opts,
        }
    }

    /// Its options.
    pub fn options(&self) -> &DownloadOptions {
        &self.opts
    }

    /// Downloads `sha1` from the holders `source` names into `output`
    /// (`<output>.part` and `<output>.part.state` beside it meanwhile).
    ///
    /// Blocks until the file is in place (verified), or fails; `progress`
    /// is called about ten times a second from this thread.
    pub fn download(
        &self,
        sha1: Sha1Digest,
        output: impl AsRef<Path>,
        source: &dyn HolderSource,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<Summary, FetchError> {
        let job = Job {
            sha1,
            output: output.as_ref(),
            mode: Mode::Alone,
        };
        self.run(&job, source, progress)
    }

    /// The idle connections a batch's downloads share.
    pub(super) fn pool(&self) -> &ConnPool {
        &self.pool
    }

    /// The limit every download shares, if `max_rate` is set.
    pub(super) fn rate(&self) -> Option<&RateLimiter> {
        self.rate.as_ref()
    }
}

impl Default for Downloader {
    /// A downloader with the default options.
    fn default() -> Self {
        Downloader::new(DownloadOptions::default())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_downloader_is_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::Downloader>();
    }
}
