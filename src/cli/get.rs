//! `piratebay-sync get`: download a file by its SHA1 from every peer that has it.

use argh::FromArgs;

use super::CliResult;

/// Download a file by its SHA1 from every peer that holds it, verified.
#[derive(FromArgs)]
#[argh(subcommand, name = "get")]
pub struct GetArgs {
    /// SHA1 of the file (40 hex digits)
    #[argh(positional)]
    pub sha1: String,
    /// output path
    #[argh(option, short = 'o')]
    pub output: Option<String>,
    /// directory to save into under the catalog name (default: current directory)
    #[argh(option)]
    pub dir: Option<String>,
    /// cap on the total rate in bytes per second, e.g. 200M, 5M, 800K (env PIRATEBAY_MAX_RATE)
    #[argh(option)]
    pub max_rate: Option<String>,
    /// overwrite an existing different file
    #[argh(switch)]
    pub force: bool,
    /// print one JSON summary at the end
    #[argh(switch)]
    pub json: bool,
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
}

pub fn run(_args: GetArgs) -> CliResult {
    Err("get: not implemented yet".into())
}
