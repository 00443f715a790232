//! The `kube-nftpol` binary: parses the command line, starts logging, runs the subcommand and
//! turns the result into an exit status. Everything else lives in the library ([`kube_nftpol`]).
//!
//! Exit statuses: 0 success (for `explain`: allowed), 1 `explain` found the flow denied,
//! `suggest` nothing to suggest or `lint` findings, 2 bad input (clap's usage errors use 2 too) or any other error.

use std::process::ExitCode;

use clap::Parser as _;
use kube_nftpol::cli::{self, Cli};

fn main() -> ExitCode {
    // On a usage error clap prints it and exits with 2; `--help` and `--version` exit with 0.
    let cli = Cli::parse();
    cli::logging::init(cli.global.log_level(), cli.command.quiet_logs());
    match cli::run(cli) {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            // `{:#}` prints the whole chain on one line: `context: cause: root cause`.
            eprintln!("kube-nftpol: {error:#}");
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
