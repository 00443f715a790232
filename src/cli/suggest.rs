//! `kube-nftpol suggest`: reads flow-log lines on stdin (what `kubectl logs` prints for the
//! agents), and prints the NetworkPolicies that would allow the flows
//! ([`crate::hints::suggest`]): multi-document YAML for `kubectl apply -f -`, or a JSON report.
//!
//! By default the denied (and audited) flows: each suggestion allows what its workload was
//! denied; with `--manifests`, a flow denied at both ends is allowed at both in one round (the
//! receiver's side comes from the cluster's policies: the sender's drop hid it). With `--observed` (observe mode's lines), every flow seen, both ends at once:
//! every workload of the observed namespaces gets a policy for each direction that allows
//! exactly what was seen ([`crate::hints::to_allow`]); `--exclude` leaves flows out, and
//! addresses outside the cluster are listed apart unless `--include-external`.
//!
//! The lines come from stdin, or with `--cluster` from every agent's window of recent flows
//! through the API server's pod proxy ([`super::cluster_flows`], as `kube-nftpol flows` reads
//! them), checked against the live cluster. Lines on stdin that are not flow lines (other logs,
//! other containers) are skipped; flow lines that do not parse are reported on stderr and
//! skipped. With `--manifests` the suggestions are checked against that cluster state. What could
//! not be suggested is listed on stderr (and in the output). Exit status: 0 when something is
//! suggested, 1 when nothing is (no flows, or none a policy can allow) or when an agent did not
//! answer (the suggestions are printed, marked incomplete), 2 for bad input.

use std::io::{self, IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::cluster_flows::ClusterArgs;
use super::flows::namespace_name;
use super::{Outcome, flow_source, load, write_stdout};
use crate::flow_line::Action;
use crate::hints::{self, Exclude, Options, render};

/// Arguments of `suggest`.
#[derive(Debug, Args)]
pub struct SuggestArgs {
    /// Check the suggestions against the cluster in these manifests (a directory or one file,
    /// e.g. `kubectl get ns,pods,netpol -A -o yaml`): current labels, selectors that select
    /// only the workload, flows already allowed left out
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Only suggest policies for pods of this namespace (with --cluster, only its flows are
    /// read: a reader may be allowed in it alone)
    #[arg(long, short = 'n', value_name = "NS", value_parser = namespace_name)]
    pub namespace: Option<String>,
    /// Read the flows from every agent (their windows of recent flows, through the API server's
    /// pod proxy, as `kube-nftpol flows`) instead of stdin, and check the suggestions against the
    /// live cluster (unless --manifests)
    #[arg(long)]
    pub cluster: bool,
    /// Where the agents are and how to read them, with --cluster.
    #[command(flatten, next_help_heading = "Reading the agents (with --cluster)")]
    pub agents: ClusterArgs,
    /// The lines are observe mode's: suggest policies that allow exactly every flow seen, for
    /// both ends, isolating the observed workloads (not only what was denied)
    #[arg(long)]
    pub observed: bool,
    /// Leave flows out: flow=ID (as `kube-nftpol flows` lists them), workload=NS/NAME,
    /// peer=ADDRESS|CIDR|NS/NAME, port=[PROTOCOL/]PORT; repeatable
    #[arg(long, value_name = "KIND=VALUE")]
    pub exclude: Vec<Exclude>,
    /// With --observed: also allow the addresses outside the cluster that were seen (listed
    /// apart and left out otherwise)
    #[arg(long, requires = "observed")]
    pub include_external: bool,
    /// Output format: YAML for `kubectl apply -f -`, or a JSON report for scripts
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    pub format: Format,
}

/// How `suggest` prints the suggestions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// NetworkPolicies as multi-document YAML, with comments.
    Yaml,
    /// `{"denied_flows", "no_longer_denied", "suggestions": [{..., "policy"}], "issues"}`.
    Json,
}

/// Runs `suggest`.
pub fn run(args: &SuggestArgs) -> anyhow::Result<Outcome> {
    let (input, snapshot, missing_agents) = if args.cluster {
        let cluster = flow_source::read_cluster(
            &args.agents,
            args.namespace.as_deref(),
            args.manifests.as_deref(),
        )?;
        (
            cluster.input,
            Some(cluster.snapshot),
            cluster.missing_agents,
        )
    } else {
        flow_source::refuse_kubeconfig_without_cluster(&args.agents)?;
        let snapshot = args.manifests.as_deref().map(load::load).transpose()?;
        let stdin = io::stdin();
        if stdin.is_terminal() {
            eprintln!("reading flow-log lines from stdin (end with Ctrl-D)");
        }
        let input =
            flow_source::read_lines(stdin.lock()).context("reading flow-log lines from stdin")?;
        (input, snapshot, Vec::new())
    };
    let lines = input.flow_lines();
    let suggestions = if args.observed {
        hints::suggest_observed(
            lines,
            snapshot.as_ref(),
            args.namespace.as_deref(),
            &args.exclude,
            args.include_external,
        )
    } else {
        // The denied sides, and with --manifests the other end of each flow when its own
        // policies deny it too (the sender's drop hides the receiver's): one round.
        let denied = lines.filter(|l| l.action.is_denied());
        let observed = hints::to_allow(denied, snapshot.as_ref(), &args.exclude, true);
        let mut suggestions = hints::suggest(
            &observed.flows,
            &Options {
                snapshot: snapshot.as_ref(),
                namespace: args.namespace.as_deref(),
                observed: None,
            },
        );
        suggestions.excluded = observed.excluded.into_iter().collect();
        suggestions
    };
    let mut suggestions = suggestions;
    suggestions.missing_agents = missing_agents;
    let text = match args.format {
        Format::Yaml => render::to_yaml(&suggestions),
        Format::Json => render::to_json(&suggestions),
    }
    .context("encoding the suggestions")?;
    write_stdout(&text).context("writing the suggestions to stdout")?;

    let mut stderr = io::stderr().lock();
    // Nothing useful to do when stderr is gone.
    for warning in input.warnings() {
        let _ = writeln!(stderr, "warning: {warning}");
    }
    for issue in &suggestions.issues {
        let _ = writeln!(stderr, "warning: not suggested: {issue}");
    }
    if !args.observed {
        let allowed = input
            .flow_lines()
            .filter(|l| l.action == Action::Allow)
            .count();
        if allowed > 0 {
            let _ = writeln!(
                stderr,
                "note: {allowed} allowed flow{} of observed namespaces left out: --observed \
                 suggests the policies that allow every flow seen",
                if allowed == 1 { "" } else { "s" }
            );
        }
    }
    if suggestions.suggestions.is_empty() {
        let what = if args.observed { "observed" } else { "denied" };
        let why = if suggestions.denied_flows == suggestions.no_longer_denied {
            format!(
                "no {what} flows{} {}",
                if suggestions.no_longer_denied > 0 {
                    " that are still denied"
                } else {
                    ""
                },
                if args.cluster {
                    "in the agents' windows".to_owned()
                } else {
                    format!("in {} lines", input.lines)
                }
            )
        } else {
            format!("no policy can allow the {what} flows (see the warnings)")
        };
        let _ = writeln!(stderr, "kube-nftpol: nothing to suggest: {why}");
        return Ok(Outcome::NothingFound);
    }
    let missing = suggestions.missing_agents.len();
    if missing > 0 {
        let _ = writeln!(
            stderr,
            "kube-nftpol: {missing} agent{} did not answer: the suggestions lack {} flows",
            if missing == 1 { "" } else { "s" },
            if missing == 1 {
                "its node's"
            } else {
                "their nodes'"
            }
        );
        return Ok(Outcome::Incomplete);
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use clap::error::ErrorKind;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(extra: &[&str]) -> Result<SuggestArgs, clap::Error> {
        let cli = Cli::try_parse_from(["kube-nftpol", "suggest"].iter().chain(extra))?;
        match cli.command {
            Command::Suggest(args) => Ok(args),
            other => panic!("not suggest: {other:?}"),
        }
    }

    #[test]
    fn suggest_needs_no_flags() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.manifests, None);
        assert_eq!(args.namespace, None);
        assert_eq!(args.format, Format::Yaml);
        assert!(!args.observed && !args.include_external && args.exclude.is_empty());
    }

    #[test]
    fn every_suggest_flag_parses() {
        let args = parse(&[
            "--manifests",
            "m",
            "--namespace",
            "shop",
            "--format",
            "json",
        ])
        .unwrap();
        assert_eq!(args.manifests.unwrap().to_str(), Some("m"));
        assert_eq!(args.namespace.as_deref(), Some("shop"));
        assert_eq!(args.format, Format::Json);
        assert_eq!(parse(&["-n", "x"]).unwrap().namespace.as_deref(), Some("x"));
    }

    #[test]
    fn cluster_flags_parse_with_the_agents_defaults() {
        let args = parse(&["--cluster", "--observed", "-n", "shop"]).unwrap();
        assert!(args.cluster && args.observed);
        assert_eq!(args.agents.agent_namespace, "kube-system");
        assert_eq!(args.agents.agent_port, 9640);
        let args = parse(&[
            "--cluster",
            "--kubeconfig",
            "k",
            "--agent-port",
            "9641",
            "--timeout-secs",
            "3",
        ])
        .unwrap();
        assert_eq!(args.agents.kubeconfig.unwrap().to_str(), Some("k"));
        assert_eq!(
            (args.agents.agent_port, args.agents.timeout_secs),
            (9641, 3)
        );
        // A namespace is a name: it goes into the agents' URLs.
        let error = parse(&["--cluster", "-n", "shop&namespace=x"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn a_kubeconfig_without_cluster_is_refused_before_reading_stdin() {
        let args = parse(&["--kubeconfig", "k"]).unwrap();
        let error = run(&args).unwrap_err().to_string();
        assert!(error.contains("--kubeconfig k is for --cluster"), "{error}");
    }

    #[test]
    fn suggest_rejects_unknown_formats() {
        let error = parse(&["--format", "toml"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn observed_mode_flags_parse_and_exclusions_are_checked() {
        let args = parse(&[
            "--observed",
            "--exclude",
            "flow=0a1b2c3d4e5f",
            "--exclude",
            "port=tcp/5432",
            "--include-external",
        ])
        .unwrap();
        assert!(args.observed && args.include_external);
        assert_eq!(args.exclude.len(), 2);
        let error = parse(&["--exclude", "port=seventy"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
        // --include-external is about observed flows.
        let error = parse(&["--include-external"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
    }
}
