//! Integration tests: etcd.
