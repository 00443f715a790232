//! The command line: the [`Cli`] arguments (clap derive, each field's `///` is its help) and
//! [`run`], which dispatches to one module per subcommand.
//!
//! Parsing only checks values: a flow end is an IP or `NS/POD`, a port is in range. Everything
//! that touches the outside (reading manifests, logging, printing) happens in the `run`
//! functions, after parsing. Exit codes: see [`Outcome`] and [`EXIT_ERROR`].
//!
//! - [`agent`]: `kube-nftpol agent`, the node daemon.
//! - [`compile`]: `kube-nftpol compile`, a node's ruleset from manifests.
//! - [`explain`]: `kube-nftpol explain`, the verdict for one flow with its reasons.
//! - [`suggest`]: `kube-nftpol suggest`, NetworkPolicies for the denied flows of a drop log.
//! - [`flow`]: the values `--from`, `--to` and `--port` take.
//! - [`drop_line`]: drop-log lines as flows, for `explain --drop-log`.
//! - [`uninstall`]: `kube-nftpol uninstall`, removes the agent's table from a node.
//! - [`load`]: loads manifests for both and reports warnings and invalid policies on stderr.
//! - [`logging`]: `-v` and `--log-level` to a tracing subscriber on stderr.
//! - [`malloc`]: the agent's glibc mmap threshold, fixed so large buffers go back when freed.

pub mod agent;
pub mod compile;
pub mod drop_line;
pub mod explain;
pub mod flow;
pub mod load;
pub mod logging;
pub mod malloc;
pub mod suggest;
pub mod uninstall;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit status for errors: bad arguments (clap uses 2 too), unreadable or malformed manifests,
/// unknown pods.
pub const EXIT_ERROR: u8 = 2;

/// kube-nftpol: Kubernetes NetworkPolicy enforcement with nftables.
///
/// On a node, `agent` enforces NetworkPolicies with nftables. Offline, from a directory of
/// manifests: compile the nftables ruleset a node would get, or explain why a flow is allowed
/// or denied.
#[derive(Debug, Parser)]
#[command(name = "kube-nftpol", version, propagate_version = true)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Log more to stderr: -v info, -vv debug, -vvv trace (the default is warn)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log level for stderr; overrides -v. RUST_LOG adds per-module directives
    #[arg(
        long,
        value_name = "LEVEL",
        value_enum,
        global = true,
        conflicts_with = "verbose"
    )]
    pub log_level: Option<logging::Level>,
}

impl GlobalArgs {
    /// The level the flags ask for; `None` leaves it to RUST_LOG (default warn).
    pub fn log_level(&self) -> Option<logging::Level> {
        self.log_level.or(match self.verbose {
            0 => None,
            1 => Some(logging::Level::Info),
            2 => Some(logging::Level::Debug),
            _ => Some(logging::Level::Trace),
        })
    }
}

const COMPILE_EXAMPLE: &str = "\
Example (deploy/examples is a demo cluster with example policies):
  kube-nftpol compile --manifests deploy/examples --node node-1 > node-1.nft";

const EXPLAIN_EXAMPLES: &str = "\
Examples (deploy/examples is a demo cluster with example policies):
  kube-nftpol explain --manifests deploy/examples \\
    --from shop/frontend-7d4f9-hk2mn --to shop/backend-5c8b6-qx2lp --port 9090
  kube-nftpol explain --manifests deploy/examples \\
    --from payments/payments-api-0 --to kube-system/coredns-6f6b7-xm4tp --port 53/udp";

const SUGGEST_EXAMPLE: &str = "\
Example (the agents' drop logs, checked against the cluster, applied after review; NS is
the agents' namespace):
  kubectl get ns,pods,netpol -A -o yaml > cluster.yaml
  kubectl logs -n NS -l app.kubernetes.io/name=kube-nftpol --tail=-1 --max-log-requests=100 \\
    | kube-nftpol suggest --manifests cluster.yaml > hints.yaml
  kubectl apply -f hints.yaml";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: enforce the cluster's NetworkPolicies on this node with nftables
    ///
    /// Needs CAP_NET_ADMIN in the node's network namespace. Serves /healthz, /readyz and
    /// /metrics on --metrics-addr. Stopping it leaves the table enforcing.
    Agent(agent::AgentArgs),
    /// Print the nftables ruleset a node would get
    #[command(after_help = COMPILE_EXAMPLE)]
    Compile(compile::CompileArgs),
    /// Explain whether a flow is allowed, and which policies and rules decide it
    ///
    /// Exit status: 0 allowed, 1 denied, 2 bad input.
    #[command(after_help = EXPLAIN_EXAMPLES)]
    Explain(explain::ExplainArgs),
    /// Remove the agent's nftables table from this node, after the DaemonSet is gone
    ///
    /// Needs CAP_NET_ADMIN in the node's network namespace. Other tables are never touched.
    Uninstall(uninstall::UninstallArgs),
    /// Suggest NetworkPolicies that allow the denied flows of drop-log lines read on stdin
    ///
    /// Exit status: 0 suggestions printed, 1 nothing to suggest, 2 bad input.
    #[command(after_help = SUGGEST_EXAMPLE)]
    Suggest(suggest::SuggestArgs),
}

/// How a run that did not fail ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (for `explain`: the flow is allowed). Exit status 0.
    Success,
    /// `explain` found the flow denied. Exit status 1.
    Denied,
    /// `suggest` found nothing to suggest. Exit status 1.
    NothingFound,
}

impl Outcome {
    /// The process exit status.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Self::Success => ExitCode::SUCCESS,
            Self::Denied | Self::NothingFound => ExitCode::from(1),
        }
    }
}

/// Runs a parsed command line. Errors are for the user: print them with `{:#}` and exit with
/// [`EXIT_ERROR`].
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Agent(args) => agent::run(&args),
        Command::Compile(args) => compile::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Uninstall(args) => uninstall::run(&args),
        Command::Suggest(args) => suggest::run(&args),
    }
}

/// Writes the command's result to stdout. A closed pipe (`| head`) is not an error: the reader
/// has what it wanted.
fn write_stdout(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    let result = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    match result {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    const COMPILE: [&str; 6] = ["kube-nftpol", "compile", "--manifests", "m", "--node", "n"];

    fn parse(extra: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(COMPILE.iter().chain(extra))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_verbosity_flag_leaves_the_level_to_rust_log() {
        assert_eq!(parse(&[]).unwrap().global.log_level(), None);
    }

    #[test]
    fn verbose_is_repeatable_and_raises_the_level() {
        let level = |flags: &[&str]| parse(flags).unwrap().global.log_level();
        assert_eq!(level(&["-v"]), Some(logging::Level::Info));
        assert_eq!(
            level(&["--verbose", "--verbose"]),
            Some(logging::Level::Debug)
        );
        assert_eq!(level(&["-vvv"]), Some(logging::Level::Trace));
        assert_eq!(level(&["-vvvvv"]), Some(logging::Level::Trace));
    }

    #[test]
    fn verbose_is_accepted_before_the_subcommand() {
        let args = [
            "kube-nftpol",
            "-v",
            "compile",
            "--manifests",
            "m",
            "--node",
            "n",
        ];
        let cli = Cli::try_parse_from(args).unwrap();
        assert_eq!(cli.global.verbose, 1);
    }

    #[test]
    fn log_level_takes_a_level_name() {
        let cli = parse(&["--log-level", "debug"]).unwrap();
        assert_eq!(cli.global.log_level(), Some(logging::Level::Debug));
        let cli = parse(&["--log-level", "off"]).unwrap();
        assert_eq!(cli.global.log_level(), Some(logging::Level::Off));
    }

    #[test]
    fn log_level_rejects_unknown_levels() {
        let error = parse(&["--log-level", "loud"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn log_level_and_verbose_conflict() {
        let error = parse(&["-v", "--log-level", "info"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn missing_subcommand_is_a_usage_error() {
        let error = Cli::try_parse_from(["kube-nftpol"]).unwrap_err();
        assert_eq!(
            error.kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(error.exit_code(), i32::from(EXIT_ERROR));
    }

    #[test]
    fn usage_errors_exit_with_the_error_status() {
        let error = Cli::try_parse_from(["kube-nftpol", "frobnicate"]).unwrap_err();
        assert_eq!(error.exit_code(), i32::from(EXIT_ERROR));
    }

    #[test]
    fn help_and_version_are_displayed_not_errors() {
        for (flag, kind) in [
            ("--help", ErrorKind::DisplayHelp),
            ("--version", ErrorKind::DisplayVersion),
        ] {
            let error = Cli::try_parse_from(["kube-nftpol", flag]).unwrap_err();
            assert_eq!(error.kind(), kind);
            assert_eq!(error.exit_code(), 0);
        }
    }

    #[test]
    fn outcomes_map_to_exit_statuses() {
        assert_eq!(Outcome::Success.exit_code(), ExitCode::SUCCESS);
        assert_eq!(Outcome::Denied.exit_code(), ExitCode::from(1));
        assert_eq!(Outcome::NothingFound.exit_code(), ExitCode::from(1));
    }
}
