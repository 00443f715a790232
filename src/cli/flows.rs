//! `kube-nftpol flows`: the recent flows of every agent of the cluster, read through the API
//! server's pod proxy ([`super::cluster_flows`]) and merged by workload: a table for people, or
//! JSON for programs.
//!
//! Agents that did not answer are named with why: on stderr after the table, in `unanswered`
//! in JSON. Exit status: 0 when every agent answered, 1 when some did not (the others' flows
//! are printed), 2 when none could be asked (no kubeconfig or token, the agents' pods cannot be
//! listed, none found).

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::cluster_flows::{self, Answered, ClusterArgs, Unanswered};
use super::{Outcome, write_stdout};
use crate::flow_line::Action;
use crate::flows::{WorkloadFlow, WorkloadPeer};
use crate::hints::Workload;

/// Arguments of `flows`.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Where the agents are and how to read them.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Only the flows of pods of this namespace (readers may be allowed in it alone)
    #[arg(long, short = 'n', value_name = "NS", value_parser = namespace_name)]
    pub namespace: Option<String>,
    /// Output: a table for people, or JSON for programs
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// How `flows` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One row per workload flow; agents that did not answer on stderr.
    Table,
    /// `{"complete", "agents", "unanswered", "flows"}`.
    Json,
}

/// What `flows --format json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Whether every agent answered (as the exit status says).
    pub complete: bool,
    /// The agents that answered, with how full their windows are.
    pub agents: Vec<Answered>,
    /// The agents that did not, with why.
    pub unanswered: Vec<Unanswered>,
    /// The flows merged by workload.
    pub flows: Vec<WorkloadFlow>,
}

/// A namespace name (a DNS-1123 label), checked when the flag is parsed.
pub(super) fn namespace_name(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
        ))
    }
}

/// Runs `flows`.
pub fn run(args: &FlowsArgs) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cluster = runtime.block_on(cluster_flows::fetch(
        &args.cluster,
        args.namespace.as_deref(),
    ))?;
    let report = Report {
        complete: cluster.complete(),
        flows: cluster.by_workload(),
        agents: cluster.answered,
        unanswered: cluster.unanswered,
    };
    match args.format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&report).context("encoding the flows")?;
            text.push('\n');
            write_stdout(&text).context("writing the flows to stdout")?;
        }
        Format::Table => {
            if !report.flows.is_empty() {
                write_stdout(&table(&report.flows)).context("writing the flows to stdout")?;
            }
            // Nothing useful to do when stderr is gone.
            let _ =
                std::io::stderr().write_all(notes(&report, args.namespace.as_deref()).as_bytes());
        }
    }
    Ok(if report.complete {
        Outcome::Success
    } else {
        Outcome::Incomplete
    })
}

/// What the table's reader should know: no flows, full windows, agents that did not answer.
fn notes(report: &Report, namespace: Option<&str>) -> String {
    let mut notes = String::new();
    // Writing to a String cannot fail.
    if report.flows.is_empty() {
        let scope = namespace.map_or_else(String::new, |ns| format!(" of namespace {ns}"));
        let _ = writeln!(notes, "no recent flows{scope} in the agents' windows");
    }
    for agent in report.agents.iter().filter(|a| a.evicted > 0) {
        let _ = writeln!(
            notes,
            "note: agent {} (node {}) evicted {} flows to keep its window at {}: older flows of its node are missing",
            agent.pod, agent.node, agent.evicted, agent.capacity
        );
    }
    for agent in &report.unanswered {
        let node = agent
            .node
            .as_deref()
            .map_or_else(String::new, |n| format!(" (node {n})"));
        let _ = writeln!(
            notes,
            "kube-nftpol: agent {}{node} did not answer: {}",
            agent.pod, agent.error
        );
    }
    if !report.unanswered.is_empty() {
        let _ = writeln!(
            notes,
            "kube-nftpol: {} of {} agents did not answer; their nodes' flows are missing",
            report.unanswered.len(),
            report.unanswered.len() + report.agents.len()
        );
    }
    notes
}

/// `Kind/name` (`Pods/web` for pods without a controller, grouped by their labels).
fn workload(workload: &Workload) -> String {
    format!("{}/{}", workload.kind, workload.name)
}

/// The table: one row per workload flow, columns aligned.
fn table(flows: &[WorkloadFlow]) -> String {
    let header = [
        "ID",
        "NAMESPACE",
        "WORKLOAD",
        "DIRECTION",
        "PEER",
        "PORT",
        "ACTION",
        "WHY",
        "PODS",
        "PACKETS",
        "LAST SEEN",
    ]
    .map(str::to_owned);
    let mut rows = vec![header];
    for flow in flows {
        let peer = match &flow.peer {
            WorkloadPeer::Workload(peer) => format!("{}/{}", peer.namespace, workload(peer)),
            WorkloadPeer::Ip(ip) => ip.to_string(),
        };
        let port = match flow.port {
            Some(port) => format!("{}/{port}", flow.protocol),
            None => flow.protocol.to_string(),
        };
        let why = match (&flow.allowed_by, flow.action) {
            (Some(rule), _) => format!("{} {}[{}]", rule.policy, flow.direction, rule.rule),
            (None, Action::Allow) => "not isolated".to_owned(),
            (None, _) if flow.policies.is_empty() => "no isolating policy known".to_owned(),
            (None, _) => format!("isolated by {}", flow.policies.join(",")),
        };
        rows.push([
            flow.id.clone(),
            flow.workload.namespace.clone(),
            workload(&flow.workload),
            flow.direction.to_string(),
            peer,
            port,
            flow.action.as_str().to_owned(),
            why,
            flow.pods.len().to_string(),
            flow.count.to_string(),
            flow.last_ts.clone(),
        ]);
    }
    let mut widths = [0; 11];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::flow_line::AllowedBy;
    use crate::model::{Direction, IpProtocol};

    fn parse(extra: &[&str]) -> Result<FlowsArgs, clap::Error> {
        let cli = Cli::try_parse_from(["kube-nftpol", "flows"].iter().chain(extra))?;
        match cli.command {
            Command::Flows(args) => Ok(args),
            other => panic!("not flows: {other:?}"),
        }
    }

    #[test]
    fn flows_flags_parse_with_their_defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.cluster.kubeconfig, None);
        assert_eq!(args.cluster.agent_namespace, "kube-system");
        assert_eq!(
            args.cluster.agent_selector,
            "app.kubernetes.io/name=kube-nftpol"
        );
        assert_eq!(args.cluster.agent_port, 9640);
        assert_eq!(args.cluster.timeout_secs, 10);
        assert_eq!(args.namespace, None);
        assert_eq!(args.format, Format::Table);
        // KUBE_NFTPOL_TOKEN may be set where the tests run.
        if std::env::var_os(super::super::reader_token::TOKEN_ENV).is_none() {
            assert_eq!(args.cluster.token, None);
        }
    }

    #[test]
    fn every_flows_flag_parses() {
        let args = parse(&[
            "--kubeconfig",
            "/k",
            "--token",
            "t",
            "--agent-namespace",
            "net",
            "--agent-selector",
            "app=agent",
            "--agent-port",
            "9999",
            "--timeout-secs",
            "3",
            "-n",
            "shop",
            "--format",
            "json",
        ])
        .unwrap();
        assert_eq!(
            args.cluster.kubeconfig.as_deref(),
            Some(std::path::Path::new("/k"))
        );
        assert_eq!(args.cluster.token.as_deref(), Some("t"));
        assert_eq!(args.cluster.agent_namespace, "net");
        assert_eq!(args.cluster.agent_selector, "app=agent");
        assert_eq!(args.cluster.agent_port, 9999);
        assert_eq!(args.cluster.timeout_secs, 3);
        assert_eq!(args.namespace.as_deref(), Some("shop"));
        assert_eq!(args.format, Format::Json);
        assert_eq!(
            parse(&["--namespace", "a-1"]).unwrap().namespace.as_deref(),
            Some("a-1")
        );
    }

    #[test]
    fn flows_flags_reject_bad_values() {
        for bad in [
            ["--namespace", "Shop"],
            ["--namespace", "-a"],
            ["--namespace", "a/b"],
            ["--timeout-secs", "0"],
            ["--timeout-secs", "601"],
            ["--agent-port", "70000"],
            ["--format", "yaml"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} accepted");
        }
    }

    fn row(action: Action, allowed_by: Option<AllowedBy>, policies: &[&str]) -> WorkloadFlow {
        WorkloadFlow {
            id: "0a1b2c3d4e5f".to_owned(),
            workload: Workload {
                namespace: "shop".to_owned(),
                kind: "Deployment".to_owned(),
                name: "web".to_owned(),
                labels: Default::default(),
            },
            direction: Direction::Egress,
            peer: WorkloadPeer::Workload(Workload {
                namespace: "shop".to_owned(),
                kind: "StatefulSet".to_owned(),
                name: "db".to_owned(),
                labels: Default::default(),
            }),
            protocol: IpProtocol::Tcp,
            port: Some(5432),
            action,
            allowed_by,
            tier: None,
            cluster_policy: None,
            policies: policies.iter().map(|p| (*p).to_owned()).collect(),
            pods: vec!["web-1".to_owned(), "web-2".to_owned()],
            count: 7,
            first_ts: "2026-01-01T00:00:01.000Z".to_owned(),
            last_ts: "2026-01-01T00:00:09.000Z".to_owned(),
        }
    }

    #[test]
    fn the_table_has_a_row_per_workload_flow_saying_why() {
        let allowed = row(
            Action::Allow,
            Some(AllowedBy {
                policy: "shop/web-egress".to_owned(),
                rule: 1,
            }),
            &["shop/web-egress"],
        );
        let mut external = row(Action::Deny, None, &["shop/deny-all"]);
        external.peer = WorkloadPeer::Ip("203.0.113.9".parse().unwrap());
        external.protocol = IpProtocol::Icmp;
        external.port = None;
        let text = table(&[allowed, row(Action::Allow, None, &[]), external]);
        assert_eq!(
            text,
            "\
ID            NAMESPACE  WORKLOAD        DIRECTION  PEER                 PORT      ACTION  WHY                        PODS  PACKETS  LAST SEEN
0a1b2c3d4e5f  shop       Deployment/web  egress     shop/StatefulSet/db  tcp/5432  allow   shop/web-egress egress[1]  2     7        2026-01-01T00:00:09.000Z
0a1b2c3d4e5f  shop       Deployment/web  egress     shop/StatefulSet/db  tcp/5432  allow   not isolated               2     7        2026-01-01T00:00:09.000Z
0a1b2c3d4e5f  shop       Deployment/web  egress     203.0.113.9          icmp      deny    isolated by shop/deny-all  2     7        2026-01-01T00:00:09.000Z
"
        );
    }

    #[test]
    fn notes_name_each_agent_that_did_not_answer_and_full_windows() {
        let report = Report {
            complete: false,
            agents: vec![Answered {
                pod: "kube-nftpol-a".to_owned(),
                node: "node-1".to_owned(),
                kept: 4096,
                capacity: 4096,
                evicted: 12,
            }],
            unanswered: vec![Unanswered {
                pod: "kube-nftpol-b".to_owned(),
                node: Some("node-2".to_owned()),
                error: "HTTP 403 Forbidden: forbidden: user \"bob\" may not get flows".to_owned(),
            }],
            flows: Vec::new(),
        };
        assert_eq!(
            notes(&report, Some("shop")),
            "\
no recent flows of namespace shop in the agents' windows
note: agent kube-nftpol-a (node node-1) evicted 12 flows to keep its window at 4096: older flows of its node are missing
kube-nftpol: agent kube-nftpol-b (node node-2) did not answer: HTTP 403 Forbidden: forbidden: user \"bob\" may not get flows
kube-nftpol: 1 of 2 agents did not answer; their nodes' flows are missing
"
        );
    }
}
