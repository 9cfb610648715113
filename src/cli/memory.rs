//! How the command's process uses glibc's allocator.
//!
//! glibc serves an allocation of more than `M_MMAP_THRESHOLD` (128 KiB at
//! start) with its own `mmap`, returned to the system when freed. By
//! default the threshold then rises to the size of the largest such block
//! freed: after `serve` frees its first 10 MB catalog body, every later
//! body, listing or cache buffer comes from the heap, and its pages stay
//! resident once freed (a 100,000-file `serve` sat at 77 MB instead of
//! 46 MB). A fixed threshold of 4 MiB keeps the piece-sized buffers (1 MiB)
//! on the heap, reused, and gives big transient blocks back.

/// The fixed threshold.
const MMAP_THRESHOLD: libc::c_int = 4 << 20;

/// Fixes the mmap threshold (and with it the trim threshold) of glibc's
/// allocator for this process. Does nothing elsewhere.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called once,
    // at start, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
