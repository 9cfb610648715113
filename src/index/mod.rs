//! The dataset index: whole-file and piece SHA1s of every shared file,
//! hashed in parallel, persisted, and kept live.
