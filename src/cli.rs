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
//! - [`lint`]: `kube-nftpol lint`, NetworkPolicy mistakes and gaps in the isolation.
//! - [`suggest`]: `kube-nftpol suggest`, NetworkPolicies for the denied flows of a drop log.
//! - [`flows`]: `kube-nftpol flows`, every agent's recent flows merged by workload.
//! - [`cluster_flows`]: reads every agent's `/flows` through the API server's pod proxy.
//! - [`reader_token`]: the bearer token sent to the agents.
//! - [`graph`]: `kube-nftpol graph`, the workload graph of flow lines (DOT, Mermaid, JSON).
//! - [`ui`]: `kube-nftpol ui`, the local page: the graph, the flows to tick, their policies.
//! - [`flow_source`]: where `suggest`, `graph` and `ui` read flow lines and the cluster.
//! - [`flow`]: the values `--from`, `--to` and `--port` take.
//! - [`drop_line`]: drop-log lines as flows, for `explain --drop-log`.
//! - [`uninstall`]: `kube-nftpol uninstall`, removes the agent's table from a node.
//! - [`load`]: loads manifests for both and reports warnings and invalid policies on stderr.
//! - [`logging`]: `-v` and `--log-level` to a tracing subscriber on stderr.
//! - [`malloc`]: the agent's glibc mmap threshold, fixed so large buffers go back when freed.

pub mod agent;
pub mod cluster_flows;
pub mod compile;
pub mod drop_line;
pub mod explain;
pub mod flow;
pub mod flow_source;
pub mod flows;
pub mod graph;
pub mod lint;
pub mod load;
pub mod logging;
pub mod malloc;
pub mod reader_token;
pub mod ruleset_flags;
pub mod suggest;
pub mod ui;
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

const LINT_EXAMPLES: &str = "\
Examples (deploy/examples is a demo cluster with example policies):
  kube-nftpol lint --manifests deploy/examples
  kube-nftpol lint --manifests deploy/examples --format sarif > lint.sarif
  kube-nftpol lint --kubeconfig ~/.kube/config --severity warning";

const SUGGEST_EXAMPLE: &str = "\
Example (the agents' drop logs, checked against the cluster, applied after review; NS is
the agents' namespace):
  kubectl get ns,pods,netpol -A -o yaml > cluster.yaml
  kubectl logs -n NS -l app.kubernetes.io/name=kube-nftpol --tail=-1 --max-log-requests=100 \\
    | kube-nftpol suggest --manifests cluster.yaml > hints.yaml
  kubectl apply -f hints.yaml";

const FLOWS_EXAMPLES: &str = "\
Examples (the token's user needs the ClusterRole kube-nftpol-flow-reader, the kubeconfig's user
the Role kube-nftpol-flow-reader in the agents' namespace: deploy/flow-reader.yaml):
  kube-nftpol flows
  kube-nftpol flows -n shop --format json --token \"$(kubectl create token flow-reader)\"";
const GRAPH_EXAMPLE: &str = "\
Examples (deploy/examples is a demo cluster with flows observed in it):
  kube-nftpol graph --manifests deploy/examples --flows deploy/examples/observed-flows.jsonl \\
    | dot -Tsvg > flows.svg
  kube-nftpol graph --manifests deploy/examples --flows deploy/examples/observed-flows.jsonl \\
    --policy docs/graph/dns-from-payments-only.yaml --format mermaid";

const UI_EXAMPLE: &str = "\
Example (deploy/examples is a demo cluster with flows observed in it):
  kube-nftpol ui --manifests deploy/examples --flows deploy/examples/observed-flows.jsonl
  # then open http://127.0.0.1:9641/";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: enforce the cluster's NetworkPolicies on this node with nftables
    ///
    /// Needs CAP_NET_ADMIN in the node's network namespace. Serves /healthz, /readyz, /metrics,
    /// /flows and /hints on --metrics-addr. Stopping it leaves the table enforcing.
    Agent(agent::AgentArgs),
    /// Print the nftables ruleset a node would get
    #[command(after_help = COMPILE_EXAMPLE)]
    Compile(compile::CompileArgs),
    /// Explain whether a flow is allowed, and which policies and rules decide it
    ///
    /// Exit status: 0 allowed, 1 denied, 2 bad input.
    #[command(after_help = EXPLAIN_EXAMPLES)]
    Explain(explain::ExplainArgs),
    /// Find NetworkPolicy mistakes and gaps in the isolation, in manifests or the live cluster
    ///
    /// Exit status: 0 no finding at or above --severity, 1 findings, 2 bad input.
    #[command(after_help = LINT_EXAMPLES)]
    Lint(lint::LintArgs),
    /// Remove the agent's nftables table from this node, after the DaemonSet is gone
    ///
    /// Needs CAP_NET_ADMIN in the node's network namespace. Other tables are never touched.
    Uninstall(uninstall::UninstallArgs),
    /// Suggest NetworkPolicies that allow the denied flows of drop-log lines read on stdin
    ///
    /// Exit status: 0 suggestions printed, 1 nothing to suggest, 2 bad input.
    #[command(after_help = SUGGEST_EXAMPLE)]
    Suggest(suggest::SuggestArgs),
    /// Show every agent's recent flows, merged by workload, read through the API server
    ///
    /// Exit status: 0 every agent answered, 1 some did not (named on stderr, or in JSON), 2
    /// no agent could be asked.
    #[command(after_help = FLOWS_EXAMPLES)]
    Flows(flows::FlowsArgs),
    /// Draw the workload graph of flow lines (stdin or --flows): DOT, Mermaid or JSON
    ///
    /// Namespaces as groups, workloads as nodes, one edge per flow between workloads with its
    /// protocol, port and number of flows; allowed, audited and denied drawn apart. --policy
    /// previews what candidate policies would newly deny. Exit status: 0 printed, 1 no flows,
    /// 2 bad input.
    #[command(after_help = GRAPH_EXAMPLE)]
    Graph(graph::GraphArgs),
    /// Serve a local page: the flow graph, the flows to tick, the policies that allow them
    ///
    /// Reads the flows (stdin or --flows) and the cluster (--manifests) once, then serves on
    /// loopback until Ctrl-C; prints the page's address on stdout.
    #[command(after_help = UI_EXAMPLE)]
    Ui(ui::UiArgs),
}

impl Command {
    /// Per-module log directives that keep the default log from repeating what the command
    /// reports itself ([`logging::init`]): `flows` names each agent that did not answer, so
    /// kube's client does not also log each failed request as an error.
    pub fn quiet_logs(&self) -> &'static [&'static str] {
        match self {
            Self::Flows(_) => &["kube_client::client::builder=off"],
            _ => &[],
        }
    }
}

/// How a run that did not fail ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (for `explain`: the flow is allowed). Exit status 0.
    Success,
    /// `explain` found the flow denied. Exit status 1.
    Denied,
    /// `suggest` found nothing to suggest, `graph` no flows to draw. Exit status 1.
    NothingFound,
    /// `flows`: some agents did not answer (the others' flows were printed). Exit status 1.
    Incomplete,
    /// `lint` found something at or above the chosen severity. Exit status 1.
    Findings,
}

impl Outcome {
    /// The process exit status.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Self::Success => ExitCode::SUCCESS,
            Self::Denied | Self::NothingFound | Self::Incomplete | Self::Findings => {
                ExitCode::from(1)
            }
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
        Command::Lint(args) => lint::run(&args),
        Command::Uninstall(args) => uninstall::run(&args),
        Command::Suggest(args) => suggest::run(&args),
        Command::Flows(args) => flows::run(&args),
        Command::Graph(args) => graph::run(&args),
        Command::Ui(args) => ui::run(&args),
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

/// Parses `kube-nftpol COMMAND ARGS...` to its [`Command`], for the subcommands' flag tests.
#[cfg(test)]
fn parse_command(command: &str, args: &[&str]) -> Result<Command, clap::Error> {
    let words = ["kube-nftpol", command]
        .into_iter()
        .chain(args.iter().copied());
    Cli::try_parse_from(words).map(|cli| cli.command)
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
        assert_eq!(Outcome::Incomplete.exit_code(), ExitCode::from(1));
        assert_eq!(Outcome::Findings.exit_code(), ExitCode::from(1));
    }
}
