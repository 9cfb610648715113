//! `piratebay-sync list`: the registered peers.

use argh::FromArgs;

use super::CliResult;

/// List the peers registered in etcd.
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
pub struct ListArgs {
    /// etcd endpoints, comma-separated (env PIRATEBAY_ETCD, default http://127.0.0.1:2379)
    #[argh(option)]
    pub etcd: Option<String>,
    /// key namespace (env PIRATEBAY_NAMESPACE, default piratebay)
    #[argh(option)]
    pub namespace: Option<String>,
    /// etcd user name (env PIRATEBAY_ETCD_USER)
    #[argh(option)]
    pub etcd_user: Option<String>,
    /// etcd password (env PIRATEBAY_ETCD_PASSWORD)
    #[argh(option)]
    pub etcd_password: Option<String>,
    /// PEM file of CA certificates for https endpoints (env PIRATEBAY_ETCD_CA)
    #[argh(option)]
    pub etcd_ca: Option<String>,
    /// print a JSON array instead of a table
    #[argh(switch)]
    pub json: bool,
}

pub fn run(_args: ListArgs) -> CliResult {
    Err("list: not implemented yet".into())
}
