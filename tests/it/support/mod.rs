//! Test fixtures: real etcd processes, temp dirs, the real binary.
#![allow(dead_code)] // each test module uses a different part of the fixtures
