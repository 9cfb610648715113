//! Argument parsing (argh), environment merging and error printing.
//!
//! Two stages, as in ripgrep: argh parses what the user typed into the
//! `*Args` structs; each command's `run` merges the environment variables
//! (flags win) and builds the library objects from the result.

mod advice;
mod env;
mod files;
mod get;
mod get_batch;
mod index;
mod list;
mod memory;
mod serve;

use std::process::ExitCode;

use argh::FromArgs;

/// The error type of the binary: any library error, printed on one line
/// with its advice ([`advice::line`]).
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
    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
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
    memory::tune();
    let command = match parse_args() {
        Ok(command) => command,
        Err(code) => return code,
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .format_timestamp_millis()
        .init();
    let result = match command {
        Command::Serve(a) => serve::run(a),
        Command::List(a) => list::run(a),
        Command::Index(a) => index::run(a),
        Command::Files(a) => files::run(a),
        Command::Get(a) if get::is_one(&a) => get::run(a),
        Command::Get(a) => get_batch::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("piratebay-sync: {}", advice::line(e.as_ref()));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The version line `--version` prints and every `--help` ends with.
fn version_line() -> String {
    format!("piratebay-sync {}", piratebay_sync::VERSION)
}

/// The command to run, parsed. `--help` prints the usage (ending with the
/// version) and `--version` the version, and both exit 0; a usage error
/// (unknown flag, bad value, non-UTF-8 argument, no command) prints one
/// line and exits 2 like every other error (argh's own `from_env` exits 1,
/// the code of a partial result here).
///
/// argh has no version flag of its own: `--version` is a switch of the top
/// level, whose command is therefore optional, and a missing command is
/// refused here as argh would.
fn parse_args() -> Result<Command, ExitCode> {
    let mut args = Vec::new();
    for a in std::env::args_os() {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(bad) => {
                eprintln!(
                    "piratebay-sync: argument {:?} is not valid UTF-8: rename the path or pass another one",
                    bad.to_string_lossy()
                );
                return Err(ExitCode::from(EXIT_ERROR));
            }
        }
    }
    let name = "piratebay-sync";
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let cli = Cli::from_args(&[name], &rest).map_err(|early| match early.status {
        Ok(()) => {
            println!("{}\n\nVersion: {}", early.output.trim_end(), version_line());
            ExitCode::SUCCESS
        }
        Err(()) => {
            let command = rest
                .first()
                .filter(|c| COMMANDS.contains(c))
                .map(|c| format!(" {c}"))
                .unwrap_or_default();
            eprintln!(
                "{name}: {}; run `{name}{command} --help`",
                usage_line(&early.output)
            );
            ExitCode::from(EXIT_ERROR)
        }
    })?;
    if cli.version {
        println!("{}", version_line());
        return Err(ExitCode::SUCCESS);
    }
    cli.command.ok_or_else(|| {
        eprintln!(
            "{name}: no command given: expected one of {}; run `{name} --help`",
            COMMANDS.join(", ")
        );
        ExitCode::from(EXIT_ERROR)
    })
}

/// The subcommands, to point a usage error at the right `--help`.
const COMMANDS: [&str; 5] = ["serve", "list", "index", "files", "get"];

/// argh's usage error on one line: lowercase start, no final period, the
/// lines of a list (after a colon) joined with commas.
fn usage_line(output: &str) -> String {
    let mut lines = output.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut line = lines
        .next()
        .unwrap_or("bad arguments")
        .trim_end_matches('.')
        .to_string();
    let rest: Vec<&str> = lines.collect();
    if !rest.is_empty() {
        line = format!("{line} {}", rest.join(", "));
    }
    let mut chars = line.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => line,
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

/// Longest cell shown in a table, in characters (the `--json` output
/// keeps the whole value).
const MAX_CELL: usize = 120;

/// Untrusted text as a table cell: escaped for the terminal
/// ([`piratebay_sync::text::escape`]) and cut to [`MAX_CELL`] characters.
pub fn cell(s: &str) -> String {
    let escaped = piratebay_sync::text::escape(s);
    if escaped.chars().count() <= MAX_CELL {
        return escaped.into_owned();
    }
    let mut cut: String = escaped.chars().take(MAX_CELL - 1).collect();
    cut.push('…');
    cut
}

/// Prints rows as left-aligned columns separated by two spaces. Cells are
/// printed as given: pass untrusted text through [`cell`] first.
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
            line.push_str(cell);
            if i + 1 < N {
                // Padded by hand: `format!("{:<w$}")` panics for widths over u16::MAX.
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_take_any_cell_width() {
        let long = "x".repeat(70_000);
        let mut out = Vec::new();
        print_table(
            &mut out,
            &[[long.clone(), "b".into()], ["a".into(), "c".into()]],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("{long}  b"));
        assert_eq!(lines[1], format!("a{}c", " ".repeat(70_001)));
        assert_eq!(cell(&long).chars().count(), MAX_CELL);
        assert_eq!(cell("a\u{1b}[2J"), "a\\u{1b}[2J");
        assert_eq!(cell("a\u{202e}"), "a\\u{202e}");
    }
}
