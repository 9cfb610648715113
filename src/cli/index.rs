//! `piratebay-sync index`: build or refresh the dataset index and print it.

use argh::FromArgs;

use super::CliResult;

/// Build or refresh the index of a dataset (no etcd needed) and print it.
#[derive(FromArgs)]
#[argh(subcommand, name = "index")]
pub struct IndexArgs {
    /// directory to index (env PIRATEBAY_DATASET, default /tmp/dataset)
    #[argh(option)]
    pub dataset: Option<String>,
    /// directory holding the index cache (env PIRATEBAY_STATE_DIR)
    #[argh(option)]
    pub state_dir: Option<String>,
    /// piece size in bytes (env PIRATEBAY_PIECE_SIZE, default 4194304)
    #[argh(option)]
    pub piece_size: Option<u64>,
    /// print a JSON array instead of a table
    #[argh(switch)]
    pub json: bool,
}

pub fn run(_args: IndexArgs) -> CliResult {
    Err("index: not implemented yet".into())
}
