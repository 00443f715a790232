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

use std::collections::BTreeMap;
use std::io::{self, BufRead, IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::cluster_flows::{self, ClusterArgs};
use super::flows::namespace_name;
use super::{Outcome, load, write_stdout};
use crate::flow_line::{Action, AllowedBy, FlowLine};
use crate::hints::{self, Exclude, Options, render};
use crate::model::{Direction, IpProtocol, Snapshot};

/// Distinct flows kept from stdin; beyond this new flows are left out (and the user told). A
/// flow takes a few hundred bytes.
const MAX_FLOWS: usize = 1_000_000;

/// Malformed flow lines reported one by one before only counting them.
const MAX_REPORTED_LINES: usize = 10;

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

/// What makes two lines one flow: the policed pod and direction, the other end, protocol,
/// port, what happened and which rule allowed it.
type LineKey = (
    String,
    String,
    Direction,
    String,
    IpProtocol,
    Option<u16>,
    Action,
    Option<AllowedBy>,
);

/// What was read from stdin: distinct flow lines, their packets added up.
struct Read {
    flows: BTreeMap<LineKey, FlowLine>,
    /// Distinct flows left out for [`MAX_FLOWS`].
    overflow: usize,
    lines: usize,
    malformed: usize,
}

/// The flow lines to suggest from, the cluster to check against, and what the reader should
/// know about how they were read.
struct Input {
    /// Distinct flow lines.
    lines: Vec<FlowLine>,
    snapshot: Option<Snapshot>,
    /// Lines read (stdin); zero from the agents.
    read: usize,
    /// Distinct flows left out for [`MAX_FLOWS`] (stdin).
    overflow: usize,
    /// Malformed flow lines skipped (stdin).
    malformed: usize,
    /// Agents that did not answer (`--cluster`), as `POD (node NODE): ERROR`.
    unanswered: Vec<(String, String)>,
}

/// Runs `suggest`.
pub fn run(args: &SuggestArgs) -> anyhow::Result<Outcome> {
    let input = if args.cluster {
        from_cluster(args)?
    } else {
        if let Some(kubeconfig) = &args.agents.kubeconfig {
            anyhow::bail!(
                "--kubeconfig {} is for --cluster (stdin's flows are checked against --manifests)",
                kubeconfig.display()
            );
        }
        from_stdin(args)?
    };
    let lines: Vec<&FlowLine> = input.lines.iter().collect();
    let snapshot = input.snapshot;
    let suggestions = if args.observed {
        let observed = hints::to_allow(
            lines,
            snapshot.as_ref(),
            &args.exclude,
            args.include_external,
        );
        let mut suggestions = hints::suggest(
            &observed.flows,
            &Options {
                snapshot: snapshot.as_ref(),
                namespace: args.namespace.as_deref(),
                observed: Some(&observed.scope),
            },
        );
        suggestions.excluded = observed.excluded.into_iter().collect();
        suggestions.external_left_out = observed.external.into_iter().collect();
        suggestions
    } else {
        // The denied sides, and with --manifests the other end of each flow when its own
        // policies deny it too (the sender's drop hides the receiver's): one round.
        let denied = lines.into_iter().filter(|l| l.action.is_denied());
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
    suggestions.missing_agents = input
        .unanswered
        .iter()
        .map(|(agent, _)| agent.clone())
        .collect();
    let text = match args.format {
        Format::Yaml => render::to_yaml(&suggestions),
        Format::Json => render::to_json(&suggestions),
    }
    .context("encoding the suggestions")?;
    write_stdout(&text).context("writing the suggestions to stdout")?;

    let mut stderr = io::stderr().lock();
    // Nothing useful to do when stderr is gone.
    if input.overflow > 0 {
        let _ = writeln!(
            stderr,
            "warning: more than {MAX_FLOWS} distinct flows; {} more were left out",
            input.overflow
        );
    }
    for (agent, error) in &input.unanswered {
        let _ = writeln!(stderr, "kube-nftpol: agent {agent} did not answer: {error}");
    }
    if !args.observed {
        let allowed = input
            .lines
            .iter()
            .filter(|l| l.action == Action::Allow)
            .count();
        if allowed > 0 {
            let _ = writeln!(
                stderr,
                "note: {allowed} allowed flow{} of observed namespaces left out: --observed suggests the policies that allow every flow seen",
                if allowed == 1 { "" } else { "s" }
            );
        }
    }
    if input.malformed > MAX_REPORTED_LINES {
        let _ = writeln!(
            stderr,
            "warning: {} malformed drop records skipped in all",
            input.malformed
        );
    }
    for issue in &suggestions.issues {
        let _ = writeln!(stderr, "warning: not suggested: {issue}");
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
                    format!("in {} lines", input.read)
                }
            )
        } else {
            format!("no policy can allow the {what} flows (see the warnings)")
        };
        let _ = writeln!(stderr, "kube-nftpol: nothing to suggest: {why}");
        return Ok(Outcome::NothingFound);
    }
    if !input.unanswered.is_empty() {
        let _ = writeln!(
            stderr,
            "kube-nftpol: {} agent{} did not answer: the suggestions lack {} flows",
            input.unanswered.len(),
            if input.unanswered.len() == 1 { "" } else { "s" },
            if input.unanswered.len() == 1 {
                "its node's"
            } else {
                "their nodes'"
            }
        );
        return Ok(Outcome::Incomplete);
    }
    Ok(Outcome::Success)
}

/// The lines on stdin, checked against --manifests.
fn from_stdin(args: &SuggestArgs) -> anyhow::Result<Input> {
    let snapshot = args.manifests.as_deref().map(load::load).transpose()?;
    let stdin = io::stdin();
    if stdin.is_terminal() {
        eprintln!("reading flow-log lines from stdin (end with Ctrl-D)");
    }
    let read = read_lines(stdin.lock()).context("reading flow-log lines from stdin")?;
    Ok(Input {
        lines: read.flows.into_values().collect(),
        snapshot,
        read: read.lines,
        overflow: read.overflow,
        malformed: read.malformed,
        unanswered: Vec::new(),
    })
}

/// Every agent's recent flows (of --namespace), checked against the live cluster, or
/// --manifests when given.
fn from_cluster(args: &SuggestArgs) -> anyhow::Result<Input> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = crate::agent::kube_config(args.agents.kubeconfig.as_deref()).await?;
        let token = super::reader_token::resolve(args.agents.token.as_deref(), &config.auth_info)?;
        let client = kube::Client::try_from(config).context("creating the Kubernetes client")?;
        let snapshot = match &args.manifests {
            Some(path) => load::load(path)?,
            None => {
                let loaded = crate::source::kubernetes::snapshot_once(&client)
                    .await
                    .context("listing pods, namespaces and networkpolicies")?;
                let mut stderr = io::stderr().lock();
                for line in load::diagnostics(&loaded) {
                    // Nothing useful to do when stderr is gone.
                    let _ = writeln!(stderr, "{line}");
                }
                loaded.snapshot
            }
        };
        let flows =
            cluster_flows::fetch_with(&client, &token, &args.agents, args.namespace.as_deref())
                .await?;
        let unanswered = flows
            .unanswered
            .into_iter()
            .map(|agent| {
                let name = match &agent.node {
                    Some(node) => format!("{} (node {node})", agent.pod),
                    None => agent.pod,
                };
                (name, agent.error)
            })
            .collect();
        Ok(Input {
            lines: flows.flows,
            snapshot: Some(snapshot),
            read: 0,
            overflow: 0,
            malformed: 0,
            unanswered,
        })
    })
}

/// Reads lines until the end, keeping the distinct flow lines. Bytes that are not UTF-8 (binary
/// output of another container) are replaced, not fatal.
fn read_lines(mut reader: impl BufRead) -> io::Result<Read> {
    let mut input = Read {
        flows: BTreeMap::new(),
        overflow: 0,
        lines: 0,
        malformed: 0,
    };
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        if reader.read_until(b'\n', &mut buffer)? == 0 {
            return Ok(input);
        }
        input.lines += 1;
        match FlowLine::parse(&String::from_utf8_lossy(&buffer)) {
            Ok(Some(line)) => input.add(line),
            Ok(None) => {}
            Err(error) => {
                input.malformed += 1;
                if input.malformed <= MAX_REPORTED_LINES {
                    eprintln!("warning: line {}: {error}", input.lines);
                }
            }
        }
    }
}

impl Read {
    /// Adds a line: a repeat adds its packets to its flow's and brings the newer labels.
    fn add(&mut self, line: FlowLine) {
        let key = (
            line.pod.namespace.clone(),
            line.pod.name.clone(),
            line.direction,
            line.peer.to_string(),
            line.protocol,
            line.port,
            line.action,
            line.allowed_by.clone(),
        );
        if let Some(seen) = self.flows.get_mut(&key) {
            let count = seen.count.saturating_add(line.count);
            *seen = line;
            seen.count = count;
        } else if self.flows.len() < MAX_FLOWS {
            self.flows.insert(key, line);
        } else {
            self.overflow += 1;
        }
    }
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
    fn reading_keeps_distinct_flow_lines_and_counts_the_rest() {
        let line = r#"{"action":"deny","direction":"egress","pod":{"namespace":"a","name":"p","labels":{"app":"p"}},"peer":{"ip":"203.0.113.1"},"protocol":"tcp","port":443}"#;
        let mut text = format!("starting\n{line}\n{line}\n").into_bytes();
        text.extend_from_slice(b"\xff\xfe binary\n");
        text.extend_from_slice(format!("{}\n{line}\n", line.replace("egress", "up")).as_bytes());
        // The same flow allowed (observe mode) is another flow.
        text.extend_from_slice(line.replace("deny", "allow").as_bytes());
        let input = read_lines(text.as_slice()).unwrap();
        assert_eq!(input.lines, 7);
        assert_eq!(input.malformed, 1);
        assert_eq!(input.flows.len(), 2);
        let counts: Vec<u64> = input.flows.values().map(|l| l.count).collect();
        assert_eq!(counts, [3, 1]);
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
