//! `piratebay-sync list`: the registered peers.

use std::io::Write;

use argh::FromArgs;
use piratebay_sync::list_peers;

use super::env::{etcd_client, etcd_opts, namespace, with_etcd_flags};
use super::CliResult;

with_etcd_flags! {
    /// List the peers registered in etcd.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "list")]
    pub struct ListArgs {
        @etcd_flags
        /// print a JSON array instead of a table
        #[argh(switch)]
        pub json: bool,
    }
}

pub fn run(args: ListArgs) -> CliResult {
    let client = etcd_client(etcd_opts!(args))?;
    let peers = list_peers(&client, &namespace(args.namespace))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &peers)?;
        writeln!(out)?;
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut rows = vec![[
            "ID".to_string(),
            "ADDRESSES".to_string(),
            "NAME".to_string(),
            "AGE".to_string(),
            "FILES GEN".to_string(),
        ]];
        for p in &peers {
            let r = &p.record;
            rows.push([
                super::cell(&r.id),
                super::cell(&r.dial_addrs().join(",")),
                super::cell(&r.name),
                format_age(now.saturating_sub(r.started_at)),
                r.index_gen.to_string(),
            ]);
        }
        super::print_table(&mut out, &rows)?;
    }
    out.flush()?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `42s`, `5m03s`, `3h07m`, `2d04h`.
fn format_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}
