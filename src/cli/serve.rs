//! `piratebay-sync serve`: run a peer in the foreground.

use argh::FromArgs;

use super::CliResult;

/// Share a directory: index it, serve it, register in etcd.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// directory to share (env PIRATEBAY_DATASET, default /tmp/dataset)
    #[argh(option)]
    pub dataset: Option<String>,
    /// address to listen on (env PIRATEBAY_LISTEN, default 0.0.0.0:7070)
    #[argh(option)]
    pub listen: Option<String>,
    /// address other peers dial, ip:port (env PIRATEBAY_ADVERTISE, default detected)
    #[argh(option)]
    pub advertise: Option<String>,
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
    /// lease TTL in seconds (env PIRATEBAY_TTL, default 10)
    #[argh(option)]
    pub ttl: Option<u64>,
    /// directory for the peer id and index cache (env PIRATEBAY_STATE_DIR)
    #[argh(option)]
    pub state_dir: Option<String>,
    /// piece size in bytes (env PIRATEBAY_PIECE_SIZE, default 4194304)
    #[argh(option)]
    pub piece_size: Option<u64>,
    /// worker threads serving files (env PIRATEBAY_WORKERS, default 4 x cores)
    #[argh(option)]
    pub workers: Option<usize>,
    /// seconds between stat rescans of the dataset (env PIRATEBAY_RESCAN, default 30)
    #[argh(option)]
    pub rescan: Option<u64>,
}

pub fn run(_args: ServeArgs) -> CliResult {
    Err("serve: not implemented yet".into())
}
