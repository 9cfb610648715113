//! Test fixtures: real etcd processes, temp dirs, the real binary.
//!
//! Everything a test module needs is re-exported here:
//! `use crate::support::*;` or name the items one by one.
#![allow(dead_code)] // each test module uses a different part of the fixtures
#![allow(unused_imports)] // the re-exports below are for the other test modules

pub mod bin;
pub mod devtools;
pub mod etcd;
pub mod lab;
pub mod log;
pub mod net;
pub mod part;
pub mod process;
pub mod serve;
pub mod tls;
pub mod wait;

pub use bin::{
    bin_path, cli, cli_on, cli_with, command, command_on, spawn_get, stderr_text, stdout_text,
    PeerProcess,
};
pub use etcd::{
    etcd_bin, etcd_metric, etcd_watch_streams_started, etcdctl, etcdctl_bin, etcdctl_ok,
    gateway_get, gateway_post, gateway_put, is_healthy, member_status, peer_key, EtcdCluster,
    EtcdServer,
};
pub use lab::{command_in, Host, Lab};
pub use log::init_test_log;
pub use net::{free_addr, free_port, next_loopback_ip};
pub use part::{
    chain_path, part_path, state_path, verified_in_state, write_old_state, write_state,
};
pub use process::{run_with_timeout, send_signal, tail, wait_timeout, DEFAULT_TIMEOUT};
pub use serve::{Serve, ServePeer, LAB_PORT};
pub use tls::TestCerts;
pub use wait::{try_wait_for, wait_for, wait_until};
