//! Argument parsing (argh), environment merging and error printing.
//!
//! Two stages, as in ripgrep: argh parses what the user typed into the
//! `*Args` structs; each command's `run` merges the environment variables
//! (flags win) and builds the library objects from the result.

mod env;
mod files;
mod get;
mod index;
mod list;
mod serve;

use std::process::ExitCode;

use argh::FromArgs;

/// The error type of the binary: any library error, printed on one line.
pub type CliError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result of a command: the exit code to use.
pub type CliResult = Result<ExitCode, CliError>;

/// Exit code for a partial result.
pub const EXIT_PARTIAL: u8 = 1;
/// Exit code for an error.
pub const EXIT_ERROR: u8 = 2;

/// Peer-to-peer file sharing for a local network, found through etcd.
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(serve::ServeArgs),
    List(list::ListArgs),
    Index(index::IndexArgs),
    Files(files::FilesArgs),
    Get(get::GetArgs),
}

/// Parses the command line, runs the command and turns its result into an exit code.
pub fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let result = match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::List(a) => list::run(a),
        Command::Index(a) => index::run(a),
        Command::Files(a) => files::run(a),
        Command::Get(a) => get::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("piratebay-sync: {}", error_chain(e.as_ref()));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `err: cause: cause`, on one line, without repeating a cause already in the message.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::BrokenPipe;
        }
        cur = err.source();
    }
    false
}

/// Prints rows as left-aligned columns separated by two spaces.
pub fn print_table<const N: usize>(
    out: &mut impl std::io::Write,
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
