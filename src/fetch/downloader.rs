//! [`Downloader`]: built once from its [`DownloadOptions`], it owns what
//! its downloads share (the rate limit and a pool of idle connections to
//! peers) and runs one call per file ([`Downloader::download`], in
//! `download`) or per batch ([`Downloader::download_many`], in `batch`).
//! Like ureq's `Agent`: build one, call it many times, from many threads.

use super::rate::RateLimiter;
use super::DownloadOptions;
use crate::client::ConnPool;

/// Downloads files, verified, from the holders a
/// [`HolderSource`](crate::holders::HolderSource) names.
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
