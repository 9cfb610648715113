//! The integration test binary: one module per concern, real etcd, real
//! peers on loopback, real files.

mod support;

mod batch;
mod batch_cli;
mod discovery;
mod env;
mod etcd;
mod exit_codes;
mod faults;
mod fetch;
mod fetch_cli;
mod fetch_support;
mod fixtures;
mod hostile_lan;
mod hostile_status;
mod hostile_swarm;
mod index;
mod lan;
mod lan_swarm;
mod patience;
mod peer;
mod server;
mod status;
mod swarm;
