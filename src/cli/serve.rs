//! `piratebay-sync serve`: run a peer in the foreground.

use std::net::SocketAddr;
use std::time::Duration;

use argh::FromArgs;
use piratebay_sync::{parse_advertise, Peer, PeerConfig};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::env::{
    dataset, etcd_config, etcd_opts, flag_or_env, named, namespace, parsed_flag_or_env, state_dir,
    with_etcd_flags,
};
use super::CliResult;

with_etcd_flags! {
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
        /// addresses other peers dial, comma-separated ip:port, best first (env PIRATEBAY_ADVERTISE, default detected: see `list`)
        #[argh(option)]
        pub advertise: Option<String>,
        @etcd_flags
        /// lease TTL in seconds (env PIRATEBAY_TTL, default 10)
        #[argh(option)]
        pub ttl: Option<u64>,
        /// directory for the peer id and index cache (env PIRATEBAY_STATE_DIR)
        #[argh(option)]
        pub state_dir: Option<String>,
        /// worker threads serving files (env PIRATEBAY_WORKERS, default 4 x cores)
        #[argh(option)]
        pub workers: Option<usize>,
        /// downloads served pieces at once, rotated every 250 ms; others are told to come back (env PIRATEBAY_UPLOAD_SLOTS, default 5, 0 = no limit)
        #[argh(option)]
        pub upload_slots: Option<usize>,
        /// seconds between stat rescans of the dataset (env PIRATEBAY_RESCAN, default 30)
        #[argh(option)]
        pub rescan: Option<u64>,
    }
}

pub fn run(args: ServeArgs) -> CliResult {
    let cfg = config(args)?;
    // Install the handlers before starting anything, so a signal during
    // start-up still ends in a graceful stop.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    // The dataset first: its error is clearer than one of what starts before the index.
    piratebay_sync::Index::check_dataset(&cfg.dataset)?;
    let peer = Peer::start(cfg)?;
    if let Some(sig) = signals.forever().next() {
        let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
        log::info!("{name}: unregistering and stopping");
    }
    peer.shutdown();
    Ok(std::process::ExitCode::SUCCESS)
}

fn config(args: ServeArgs) -> Result<PeerConfig, super::CliError> {
    let listen_name = named(&args.listen, "--listen", "PIRATEBAY_LISTEN");
    let advertise_name = named(&args.advertise, "--advertise", "PIRATEBAY_ADVERTISE");
    let mut cfg = PeerConfig::new(dataset(args.dataset), state_dir(args.state_dir));
    cfg.etcd = etcd_config(etcd_opts!(args))?;
    cfg.namespace = namespace(args.namespace);
    if let Some(l) = flag_or_env(args.listen, "PIRATEBAY_LISTEN") {
        cfg.listen = parse_addr(&l, listen_name)?;
    }
    if let Some(a) = flag_or_env(args.advertise, "PIRATEBAY_ADVERTISE") {
        cfg.advertise = parse_advertise(&a).map_err(|bad| {
            format!(
                "{advertise_name} {bad:?}: give comma-separated ip:port that other peers can dial, not 0.0.0.0 or port 0"
            )
        })?;
    }
    if let Some(ttl) = parsed_flag_or_env(args.ttl, "PIRATEBAY_TTL")? {
        cfg.ttl = Duration::from_secs(ttl);
    }
    cfg.workers = parsed_flag_or_env(args.workers, "PIRATEBAY_WORKERS")?;
    cfg.upload_slots = parsed_flag_or_env(args.upload_slots, "PIRATEBAY_UPLOAD_SLOTS")?;
    if let Some(r) = parsed_flag_or_env(args.rescan, "PIRATEBAY_RESCAN")? {
        cfg.rescan_interval = Duration::from_secs(r.max(1));
    }
    Ok(cfg)
}

fn parse_addr(s: &str, flag: &str) -> Result<SocketAddr, super::CliError> {
    s.parse()
        .map_err(|_| format!("{flag} {s:?}: expected ip:port such as 0.0.0.0:7070").into())
}
