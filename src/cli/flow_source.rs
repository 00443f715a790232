//! Where the commands that read flow lines get them, and how the lines are read: `suggest`
//! reads stdin with [`read_lines`]; `graph` and `ui` take an [`Observation`] from a
//! [`SourceArgs`]: the flow lines ([`FlowSource`]: stdin or a file) and, with `--manifests`,
//! the cluster they were seen in.
//!
//! Lines that are not flow lines (other logs, other containers, kubectl's prefixes) are
//! skipped; flow lines that do not parse are counted and the first few reported; repeats of a
//! flow are merged with their counts added up. What the user should know about the input (bad
//! lines, no flows at all, a cluster without pods) comes back as [`Observation::problems`],
//! one sentence each, for stderr or the page: never a silent empty result.
//!
//! With `--cluster` ([`read_cluster`]) the lines are every agent's recent flows, read through
//! the API server's pod proxy ([`super::cluster_flows`]), and the cluster is the API server's
//! (or `--manifests`); the agents that did not answer become [`Input::problems`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::io::{self, BufRead, BufReader, IsTerminal as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use super::cluster_flows::{self, ClusterArgs};
use super::{load, reader_token};
use crate::flow_line::{Action, AllowedBy, FlowLine};
use crate::model::{Direction, IpProtocol, Snapshot};

/// Distinct flows kept from the input; beyond this new flows are left out (and the user told).
/// A flow takes a few hundred bytes.
const MAX_FLOWS: usize = 1_000_000;

/// Malformed flow lines reported one by one before only counting them.
const MAX_REPORTED_LINES: usize = 10;

/// Where `graph` and `ui` read the cluster and its flows, flattened into their arguments.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// The cluster the flows were seen in: Kubernetes manifests, a directory or one file
    /// (e.g. `kubectl get ns,pods,netpol -A -o yaml`). Without it, what the lines say
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Flow lines (the agents' JSON lines, as `kubectl logs` prints them) from this file
    /// instead of stdin
    #[arg(long, value_name = "FILE", conflicts_with = "cluster")]
    pub flows: Option<PathBuf>,
    /// Read every agent's recent flows (through the API server's pod proxy, as `kube-nftpol
    /// flows`) instead of stdin, and the cluster from the API server (unless --manifests)
    #[arg(long)]
    pub cluster: bool,
    /// Where the agents are and how to read them, with --cluster.
    #[command(flatten, next_help_heading = "Reading the agents (with --cluster)")]
    pub agents: ClusterArgs,
}

/// Where flow lines come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowSource {
    /// Standard input (`kubectl logs ... | kube-nftpol graph`).
    Stdin,
    /// A file of lines.
    File(PathBuf),
}

impl FlowSource {
    /// The source the arguments name.
    pub fn of(args: &SourceArgs) -> Self {
        match &args.flows {
            Some(path) => Self::File(path.clone()),
            None => Self::Stdin,
        }
    }

    /// Where the lines come from, for messages: `stdin`, the file's path.
    pub fn origin(&self) -> String {
        match self {
            Self::Stdin => "stdin".to_owned(),
            Self::File(path) => path.display().to_string(),
        }
    }

    /// Reads every line to the end.
    pub fn read(&self) -> anyhow::Result<Input> {
        match self {
            Self::Stdin => {
                let stdin = io::stdin();
                if stdin.is_terminal() {
                    eprintln!("reading flow-log lines from stdin (end with Ctrl-D)");
                }
                read_lines(stdin.lock()).context("reading flow-log lines from stdin")
            }
            Self::File(path) => {
                let file = File::open(path)
                    .with_context(|| format!("opening the flow lines {}", path.display()))?;
                read_lines(BufReader::new(file))
                    .with_context(|| format!("reading the flow lines {}", path.display()))
            }
        }
    }
}

/// What `graph` and `ui` show: the flows, the cluster they were seen in, and what is wrong
/// with either.
#[derive(Debug)]
pub struct Observation {
    /// The distinct flow lines, their counts added up.
    pub lines: Vec<FlowLine>,
    /// The cluster from `--manifests`; `None` when only the lines are known.
    pub snapshot: Option<Snapshot>,
    /// Where the flows and the cluster came from, for people: `flows.jsonl, manifests DIR`.
    pub origin: String,
    /// What the user should know, one sentence each: bad lines, no flows, an empty cluster.
    pub problems: Vec<String>,
}

impl Observation {
    /// Reads the source the arguments name. Diagnostics of the manifests go to stderr as for
    /// every command; an unreadable file or bad manifests are errors.
    pub fn load(args: &SourceArgs) -> anyhow::Result<Self> {
        if args.cluster {
            let cluster = read_cluster(&args.agents, None, args.manifests.as_deref())?;
            let mut problems = cluster.input.warnings();
            if cluster.input.flows.is_empty() {
                problems.push("no recent flows in the agents' windows".to_owned());
            }
            return Ok(Self {
                lines: cluster.input.flows.into_values().collect(),
                snapshot: Some(cluster.snapshot),
                origin: match &args.manifests {
                    Some(path) => format!(
                        "flows from the agents of the cluster, cluster from {}",
                        path.display()
                    ),
                    None => "flows and cluster from the API server".to_owned(),
                },
                problems,
            });
        }
        refuse_kubeconfig_without_cluster(&args.agents)?;
        let snapshot = args.manifests.as_deref().map(load::load).transpose()?;
        let source = FlowSource::of(args);
        let input = source.read()?;
        let mut problems = input.warnings();
        if input.flows.is_empty() {
            problems.push(format!(
                "no flow lines in {}: {} lines read, {} of them malformed flow lines; expected \
                 the agents' JSON lines (kubectl logs of the kube-nftpol pods)",
                source.origin(),
                input.lines,
                input.malformed
            ));
        }
        let mut origin = format!("flows from {}", source.origin());
        if let Some(path) = &args.manifests {
            origin.push_str(&format!(", cluster from {}", path.display()));
        }
        if let (Some(snapshot), Some(path)) = (&snapshot, &args.manifests)
            && snapshot.pods().next().is_none()
        {
            problems.push(format!(
                "the cluster in {} has no pods: the flows are drawn as the lines name them, and \
                 nothing can be checked against it",
                path.display()
            ));
        }
        Ok(Self {
            lines: input.flows.into_values().collect(),
            snapshot,
            origin,
            problems,
        })
    }
}

/// Every agent's recent flows and the cluster they were seen in ([`read_cluster`]).
#[derive(Debug)]
pub struct ClusterRead {
    /// The agents' flows, merged as lines read from text are; the agents that did not answer
    /// in [`Input::problems`], one sentence each.
    pub input: Input,
    /// The cluster: `--manifests` when given, else the API server's.
    pub snapshot: Snapshot,
    /// The agents that did not answer, as `POD (node NODE)`.
    pub missing_agents: Vec<String>,
}

/// Reads every agent's recent flows (of the pods of `namespace`, or all) through the API
/// server's pod proxy, and the cluster: `manifests`, or the API server's namespaces, pods and
/// NetworkPolicies (their diagnostics on stderr, as for `--manifests`). Errors are what keeps
/// any agent from being asked; an agent that does not answer is a problem of the input.
pub fn read_cluster(
    agents: &ClusterArgs,
    namespace: Option<&str>,
    manifests: Option<&Path>,
) -> anyhow::Result<ClusterRead> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = crate::agent::kube_config(agents.kubeconfig.as_deref()).await?;
        let token = reader_token::resolve(agents.token.as_deref(), &config.auth_info)?;
        let client = kube::Client::try_from(config).context("creating the Kubernetes client")?;
        let snapshot = match manifests {
            Some(path) => load::load(path)?,
            None => {
                let loaded = crate::source::kubernetes::snapshot_once(&client)
                    .await
                    .context("listing pods, namespaces, nodes, NetworkPolicies and ClusterNetworkPolicies")?;
                let mut stderr = io::stderr().lock();
                for line in load::diagnostics(&loaded) {
                    // Nothing useful to do when stderr is gone.
                    let _ = writeln!(stderr, "{line}");
                }
                loaded.snapshot
            }
        };
        let flows = cluster_flows::fetch_with(&client, &token, agents, namespace).await?;
        let mut input = Input::from_lines(flows.flows);
        let mut missing_agents = Vec::new();
        for agent in flows.unanswered {
            let name = match &agent.node {
                Some(node) => format!("{} (node {node})", agent.pod),
                None => agent.pod,
            };
            input
                .problems
                .push(format!("agent {name} did not answer: {}", agent.error));
            missing_agents.push(name);
        }
        Ok(ClusterRead {
            input,
            snapshot,
            missing_agents,
        })
    })
}

/// `--kubeconfig` (and the other agent flags) are for `--cluster`: refused without it rather
/// than ignored.
pub fn refuse_kubeconfig_without_cluster(agents: &ClusterArgs) -> anyhow::Result<()> {
    match &agents.kubeconfig {
        Some(kubeconfig) => anyhow::bail!(
            "--kubeconfig {} is for --cluster (flow lines from stdin or a file are checked \
             against --manifests)",
            kubeconfig.display()
        ),
        None => Ok(()),
    }
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

/// What was read: distinct flow lines, their packets added up, and what was wrong.
#[derive(Debug, Default)]
pub struct Input {
    /// The distinct flow lines.
    pub flows: BTreeMap<LineKey, FlowLine>,
    /// Distinct flows left out beyond the bound (a million).
    pub overflow: usize,
    /// Lines read.
    pub lines: usize,
    /// Flow lines that did not parse.
    pub malformed: usize,
    /// The first ten of those: `line N: what is wrong`.
    pub malformed_lines: Vec<String>,
    /// What the source itself reports, one sentence each (from the cluster: the agents that
    /// did not answer).
    pub problems: Vec<String>,
}

impl Input {
    /// The input of lines read elsewhere (every agent's window, already parsed), merged as
    /// lines read from text are.
    pub fn from_lines(lines: impl IntoIterator<Item = FlowLine>) -> Self {
        let mut input = Self::default();
        for line in lines {
            input.lines += 1;
            input.add(line);
        }
        input
    }

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

    /// The distinct flow lines.
    pub fn flow_lines(&self) -> impl Iterator<Item = &FlowLine> {
        self.flows.values()
    }

    /// What the user should be told about the input, one sentence each (for stderr after
    /// `warning: `, or the page): the source's problems, the first malformed lines, flows left
    /// out, the total of malformed lines.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = self.problems.clone();
        warnings.extend(self.malformed_lines.iter().cloned());
        if self.overflow > 0 {
            warnings.push(format!(
                "more than {MAX_FLOWS} distinct flows; {} more were left out",
                self.overflow
            ));
        }
        if self.malformed > MAX_REPORTED_LINES {
            warnings.push(format!(
                "{} malformed drop records skipped in all",
                self.malformed
            ));
        }
        warnings
    }
}

/// Reads lines until the end, keeping the distinct flow lines. Bytes that are not UTF-8 (binary
/// output of another container) are replaced, not fatal.
pub fn read_lines(mut reader: impl BufRead) -> io::Result<Input> {
    let mut input = Input::default();
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
                    input
                        .malformed_lines
                        .push(format!("line {}: {error}", input.lines));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    const LINE: &str = r#"{"action":"deny","direction":"egress","pod":{"namespace":"a","name":"p","labels":{"app":"p"}},"peer":{"ip":"203.0.113.1"},"protocol":"tcp","port":443}"#;

    #[test]
    fn reading_keeps_distinct_flow_lines_and_counts_the_rest() {
        let mut text = format!("starting\n{LINE}\n{LINE}\n").into_bytes();
        text.extend_from_slice(b"\xff\xfe binary\n");
        text.extend_from_slice(format!("{}\n{LINE}\n", LINE.replace("egress", "up")).as_bytes());
        // The same flow allowed (observe mode) is another flow.
        text.extend_from_slice(LINE.replace("deny", "allow").as_bytes());
        let input = read_lines(text.as_slice()).unwrap();
        assert_eq!(input.lines, 7);
        assert_eq!(input.malformed, 1);
        assert_eq!(input.flows.len(), 2);
        let counts: Vec<u64> = input.flow_lines().map(|l| l.count).collect();
        assert_eq!(counts, [3, 1]);
        assert_eq!(input.warnings().len(), 1);
        assert!(
            input.warnings()[0].starts_with("line 5: malformed drop record: direction"),
            "{:?}",
            input.warnings()
        );
    }

    #[test]
    fn many_malformed_lines_are_reported_a_few_then_counted() {
        let bad = LINE.replace("egress", "up");
        let text = format!("{bad}\n").repeat(12);
        let warnings = read_lines(text.as_bytes()).unwrap().warnings();
        assert_eq!(warnings.len(), MAX_REPORTED_LINES + 1);
        assert_eq!(
            warnings.last().unwrap(),
            "12 malformed drop records skipped in all"
        );
    }

    #[test]
    fn lines_read_elsewhere_are_merged_as_read_ones_and_keep_their_problems() {
        let line = FlowLine::parse(LINE).unwrap().unwrap();
        let mut input = Input::from_lines([line.clone(), line]);
        input
            .problems
            .push("agent kube-system/kube-nftpol-x did not answer".into());
        assert_eq!((input.lines, input.flows.len()), (2, 1));
        assert_eq!(input.flow_lines().next().map(|l| l.count), Some(2));
        assert_eq!(
            input.warnings(),
            ["agent kube-system/kube-nftpol-x did not answer"]
        );
    }

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        source: SourceArgs,
    }

    #[test]
    fn flows_come_from_stdin_unless_a_file_is_named() {
        let args = Command::try_parse_from(["x"]).unwrap().source;
        assert_eq!(FlowSource::of(&args), FlowSource::Stdin);
        assert_eq!(args.manifests, None);
        let args = Command::try_parse_from(["x", "--flows", "f.jsonl", "--manifests", "m"])
            .unwrap()
            .source;
        assert_eq!(
            FlowSource::of(&args),
            FlowSource::File(PathBuf::from("f.jsonl"))
        );
        assert_eq!(FlowSource::of(&args).origin(), "f.jsonl");
        assert_eq!(args.manifests, Some(PathBuf::from("m")));
    }
}
