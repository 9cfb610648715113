//! [`FetchError`]: why a download failed, one variant per step that
//! failed. Messages say what failed and why; what to do about it is the
//! binary's business (`src/cli/advice.rs`).

use std::path::PathBuf;

use super::fault::HolderFault;
use crate::digest::Sha1Digest;
use crate::holders::{Holder, HoldersError};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Asking who holds the file failed.
    #[error(transparent)]
    Holders(#[from] HoldersError),
    /// Nobody holds the file.
    #[error("no peer holds {sha1}")]
    NoHolders {
        /// The file.
        sha1: Sha1Digest,
    },
    /// No holder gave a usable piece list.
    #[error("no holder of {sha1} gave a usable piece list ({})", Joined(failures))]
    NoPieceList {
        /// The file.
        sha1: Sha1Digest,
        /// Each holder and what went wrong.
        failures: Vec<HolderFailure>,
    },
    /// Every holder sent bad data, lied about the pieces, or failed.
    #[error(
        "no peer could supply a correct copy of {sha1}: bad data from {}{} (the .part is kept)",
        Names(bad),
        if others.is_empty() { String::new() } else { format!("; others failed: {}", Joined(others)) }
    )]
    NoCorrectCopy {
        /// The file.
        sha1: Sha1Digest,
        /// Peers that sent bad data or a false piece list, and what was
        /// wrong (the message names them only).
        bad: Vec<HolderFailure>,
        /// The other holders' failures, if any.
        others: Vec<HolderFailure>,
    },
    /// Every holder failed (died, stalled, refused) before the end.
    #[error("every holder of {sha1} failed ({})", Joined(failures))]
    HoldersFailed {
        /// The file.
        sha1: Sha1Digest,
        /// Each holder and why it was dropped.
        failures: Vec<HolderFailure>,
    },
    /// The output exists with other content.
    #[error("{} exists with different content", path.display())]
    Exists {
        /// The output path.
        path: PathBuf,
    },
    /// Opening the `.part` (or the existing output, to check it) failed.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the existing output (to compare it) or the `.part` (to hash
    /// or check it) failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a piece into the `.part` failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Flushing the `.part` to disk before the rename failed.
    #[error("cannot sync {} to disk: {source}", path.display())]
    Sync {
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Renaming the verified `.part` into place failed.
    #[error("cannot rename {} to {}: {source}", from.display(), to.display())]
    Rename {
        /// The `.part`.
        from: PathBuf,
        /// The output path.
        to: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The output path exists and is not a regular file (a directory...).
    #[error("{} exists and is not a regular file", path.display())]
    NotAFile {
        /// The output path.
        path: PathBuf,
    },
    /// A `.part` or state file is a symbolic link: never written through.
    #[error("{} is a symbolic link (downloads never write through one)", path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// The `.part` changed on disk after its pieces were verified (another
    /// process wrote to it): it is not renamed into place (or, if the
    /// change came just before the rename, it is put back as the `.part`).
    #[error("{} changed on disk during the download (piece {piece} no longer matches; another process wrote to it)", path.display())]
    Changed {
        /// The `.part`.
        path: PathBuf,
        /// The first piece that no longer matches.
        piece: usize,
    },
    /// The disk of the output is full; the `.part` and its state are kept.
    #[error("no space left on device writing {} (the .part and its state are kept)", path.display())]
    NoSpace {
        /// The file being written.
        path: PathBuf,
    },
    /// Stopped by the caller (Ctrl-C).
    #[error("interrupted with {done} of {size} bytes in {}", part.display())]
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
    Thread(#[source] std::io::Error),
}

/// One holder that could not be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{holder}: {reason}")]
pub struct HolderFailure {
    /// The holder.
    pub holder: Holder,
    /// Why (its piece list could not be read, it failed too often...).
    #[source]
    pub reason: HolderFault,
}

impl HolderFailure {
    pub(crate) fn new(holder: Holder, reason: HolderFault) -> Self {
        HolderFailure { holder, reason }
    }
}

/// The holders of failures joined with `, `.
struct Names<'a>(&'a [HolderFailure]);

impl std::fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, h) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", h.holder)?;
        }
        Ok(())
    }
}

/// Holder failures joined with `; `.
struct Joined<'a>(&'a [HolderFailure]);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, h) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{h}")?;
        }
        Ok(())
    }
}

/// The step of an I/O error on the download's files.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    Open,
    Read,
    Write,
    Sync,
}

impl FetchError {
    /// An I/O error of `step` on `path`: [`FetchError::NoSpace`] if the
    /// disk is full, [`FetchError::Symlink`] for a link refused by
    /// `O_NOFOLLOW`, else the step's variant.
    pub(crate) fn io(step: Step, path: impl Into<PathBuf>, source: std::io::Error) -> FetchError {
        let path = path.into();
        if is_no_space(&source) {
            return FetchError::NoSpace { path };
        }
        if source.raw_os_error() == Some(libc::ELOOP) {
            return FetchError::Symlink { path };
        }
        match step {
            Step::Open => FetchError::Open { path, source },
            Step::Read => FetchError::Read { path, source },
            Step::Write => FetchError::Write { path, source },
            Step::Sync => FetchError::Sync { path, source },
        }
    }

    /// [`FetchError::io`] of a write.
    pub(crate) fn write(path: impl Into<PathBuf>, source: std::io::Error) -> FetchError {
        FetchError::io(Step::Write, path, source)
    }

    /// [`FetchError::io`] of a read.
    pub(crate) fn read(path: impl Into<PathBuf>, source: std::io::Error) -> FetchError {
        FetchError::io(Step::Read, path, source)
    }
}

/// True for "no space left on device" and "disk quota exceeded".
pub(crate) fn is_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded
}
