//! The verified multi-source download: piece scheduling over every holder,
//! per-piece and whole-file SHA1 checks, failover, resume, atomic rename.
