//! [`FetchError`]: why a download failed, one variant per step, each
//! message saying what to do.

use std::path::PathBuf;

use super::HoldersError;
use crate::Sha1Digest;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Asking who holds the file failed.
    #[error(transparent)]
    Holders(#[from] HoldersError),
    /// Nobody holds the file.
    #[error("no peer holds {sha1}: check the sha1 with `piratebay-sync files`")]
    NoHolders {
        /// The file.
        sha1: Sha1Digest,
    },
    /// No holder gave a usable piece list.
    #[error("no holder of {sha1} gave a usable piece list ({details}): try again later")]
    NoPieceList {
        /// The file.
        sha1: Sha1Digest,
        /// Each holder and what went wrong.
        details: String,
    },
    /// Every holder sent bad data, lied about the pieces, or failed.
    #[error(
        "no peer could supply a correct copy of {sha1}: bad data from {}{}; the .part is kept",
        bad.join(", "),
        others.as_deref().map(|o| format!("; others failed: {o}")).unwrap_or_default()
    )]
    NoCorrectCopy {
        /// The file.
        sha1: Sha1Digest,
        /// Peers that sent bad data or a false piece list (`id (addr)`).
        bad: Vec<String>,
        /// The other holders' failures, if any.
        others: Option<String>,
    },
    /// Every holder failed (died, stalled, refused) before the end.
    #[error("every holder of {sha1} failed ({details}): rerun the same command to resume")]
    HoldersFailed {
        /// The file.
        sha1: Sha1Digest,
        /// Each holder and its last error.
        details: String,
    },
    /// The output exists with other content.
    #[error("{} exists with different content: use --force to overwrite it or -o to save elsewhere", path.display())]
    Exists {
        /// The output path.
        path: PathBuf,
    },
    /// Reading or writing the output, `.part` or state failed.
    #[error("cannot write {}: {source}", path.display())]
    Output {
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A `.part` or state file is a symbolic link: never written through.
    #[error("{} is a symbolic link: remove it (downloads never write through a link)", path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// The `.part` changed on disk after its pieces were verified (another
    /// process wrote to it): it is not renamed into place.
    #[error("{} changed on disk during the download (piece {piece} no longer matches; another process wrote to it): rerun the same command to fetch it again", path.display())]
    Changed {
        /// The `.part`.
        path: PathBuf,
        /// The first piece that no longer matches.
        piece: usize,
    },
    /// The disk of the output is full; the `.part` and its state are kept.
    #[error("no space left on device writing {}: free some space, then rerun the same command to resume", path.display())]
    NoSpace {
        /// The file being written.
        path: PathBuf,
    },
    /// Stopped by the caller (Ctrl-C).
    #[error("interrupted with {done} of {size} bytes in {}: rerun the same command to resume", part.display())]
    Interrupted {
        /// The `.part` file kept.
        part: PathBuf,
        /// Bytes verified so far.
        done: u64,
        /// File size.
        size: u64,
    },
    /// A download thread could not be started.
    #[error("cannot start a download thread: {0}")]
    Thread(std::io::Error),
}

impl FetchError {
    /// An error writing `path`: [`FetchError::NoSpace`] if the disk is
    /// full, else [`FetchError::Output`].
    pub(crate) fn output(path: impl Into<PathBuf>, source: std::io::Error) -> FetchError {
        let path = path.into();
        if is_no_space(&source) {
            FetchError::NoSpace { path }
        } else if source.raw_os_error() == Some(libc::ELOOP) {
            FetchError::Symlink { path }
        } else {
            FetchError::Output { path, source }
        }
    }
}

/// True for "no space left on device" and "disk quota exceeded".
pub(crate) fn is_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded
}
