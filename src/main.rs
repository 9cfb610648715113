//! The `piratebay-sync` command: a thin layer over the library.
//!
//! Exit codes: 0 success, 1 partial result (some items failed), 2 error.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
