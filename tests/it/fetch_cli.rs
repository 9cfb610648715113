//! CLI-level tests of `files` and `get` (real processes).
