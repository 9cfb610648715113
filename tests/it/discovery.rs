//! Integration tests: discovery.
