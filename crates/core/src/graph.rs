//! The flow graph: observed flow lines as a picture of which workloads talk to which, what was
//! denied, and what candidate policies would change. Pure: lines and snapshots in, a [`Graph`]
//! and its text out. `kube-nftpol graph` prints it; `kube-nftpol ui` draws it in a page.
//!
//! - Namespaces are [`Group`]s and workloads ([`crate::hints::Workload`], the unit suggestions are
//!   about) are [`Node`]s; addresses that are no pod share one group, `external`.
//! - An [`Edge`] is one [`WorkloadFlow`](crate::hints::WorkloadFlow) (sender, receiver, protocol, port; its id is what
//!   `suggest --exclude flow=ID` and the page's checkboxes take), with the flows between pods
//!   it stands for ([`PodFlow`], both sides' lines of one connection merged) and their verdict:
//!   allowed, audited or denied, the worst of its flows.
//! - [`Graph::preview`] adds, for candidate policies, what they change: each flow evaluated
//!   ([`crate::policy::evaluate`]) on the cluster as it is and with the candidates added, and
//!   the edges marked newly denied, newly allowed, still denied or kept ([`Change`]).
//! - With a snapshot, the workloads of observed namespaces that sent and received nothing are
//!   nodes too (idle): observed suggestions isolate them entirely.
//!
//! Rendered as Graphviz DOT ([`to_dot`]), Mermaid ([`to_mermaid`], which GitHub renders in
//! markdown) or JSON ([`to_json`], the serde form of [`Graph`]). The same lines give the same
//! bytes, whatever their order.
//!
//! Not here: reading lines or manifests (the CLI), the suggestions themselves
//! ([`crate::hints`]).

mod build;
mod dot;
mod mermaid;
mod preview;
mod style;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::flow_line::Action;
use crate::hints::FlowEnd;
use crate::model::{IpProtocol, ObjectKey};

pub use build::build;
pub use dot::to_dot;
pub use mermaid::to_mermaid;
pub use preview::cluster_of;

/// The workload graph of a set of flow lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Graph {
    /// The namespaces with a node, by name, then the external addresses' group.
    pub groups: Vec<Group>,
    /// Every workload and address with a flow (and, with a snapshot, the observed workloads
    /// without one), by group.
    pub nodes: Vec<Node>,
    /// One per distinct flow between workloads, sorted by sender, receiver, protocol and port.
    pub edges: Vec<Edge>,
    /// After [`Graph::preview`]: how many edges each [`Change`] marks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewSummary>,
}

/// What a group holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupKind {
    /// The workloads of one namespace.
    Namespace,
    /// Addresses that are no pod: outside the cluster, nodes, hostNetwork pods, pods the agent
    /// did not know.
    External,
}

/// A box around nodes: a namespace, or the external addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// A stable identifier, safe in DOT and Mermaid (`g` and hex digits).
    pub id: String,
    /// What it holds.
    pub kind: GroupKind,
    /// The namespace, or `external`.
    pub name: String,
    /// Whether the namespace's traffic was observed (observe mode), so that its workloads are
    /// what observed suggestions isolate.
    pub observed: bool,
}

/// A workload or an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// A stable identifier, safe in DOT and Mermaid (`n` and hex digits of its name's hash).
    pub id: String,
    /// Its [`Group::id`].
    pub group: String,
    /// The workload or address, as [`WorkloadFlow`](crate::hints::WorkloadFlow)s name it.
    pub end: FlowEnd,
    /// The first line of its label: the workload's name, or the address.
    pub name: String,
    /// The second line: the workload's kind (`Deployment`, `Pod`; for pods grouped by labels,
    /// the label they are named after and how many more define them: `pods app=web +1`);
    /// empty for an address.
    pub kind: String,
    /// An observed workload with no flow: observed suggestions isolate it entirely.
    pub idle: bool,
}

/// One flow between workloads, with the flows between pods it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// The flow's id ([`WorkloadFlow::id`](crate::hints::WorkloadFlow::id)): `suggest --exclude flow=ID`.
    pub id: String,
    /// The sender's [`Node::id`].
    pub source: String,
    /// The receiver's [`Node::id`].
    pub destination: String,
    /// The flow in words: `pods shop/{app=web} -> Deployment shop/api tcp/8080`.
    pub text: String,
    /// The transport protocol.
    pub protocol: IpProtocol,
    /// The destination port, when the protocol has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The worst verdict of its flows: `deny` if one was denied, else `audit` if one was
    /// audited, else `allow`.
    pub verdict: Action,
    /// How many of its flows got each verdict (verdicts no flow got are left out).
    pub verdicts: BTreeMap<Action, usize>,
    /// How many distinct flows between pods (or a pod and an address) it stands for.
    pub flows: usize,
    /// How many connections were logged for them (the lines' counts, each connection once
    /// even when both ends logged it).
    pub connections: u64,
    /// The flows, sorted by sender and receiver.
    pub pods: Vec<PodFlow>,
    /// After [`Graph::preview`]: the most telling change among its flows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<Change>,
}

/// One flow between two pods (or a pod and an address), as both ends' lines tell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodFlow {
    /// The sender.
    pub source: PodEnd,
    /// The receiver.
    pub destination: PodEnd,
    /// The worst verdict of its lines.
    pub verdict: Action,
    /// Connections logged (the larger of the two ends' counts).
    pub connections: u64,
    /// What each end's lines said: `egress: allowed by shop/web-egress egress[0]`, `ingress:
    /// not isolated`, `egress: denied (policies: shop/default-deny)`.
    pub sides: Vec<String>,
    /// After [`Graph::preview`]: what the candidates change for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<Change>,
}

/// One end of a [`PodFlow`]: a pod (with its address when a line had it) or an address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PodEnd {
    /// The pod, when the end is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectKey>,
    /// The address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
}

/// What candidate policies change for a flow, by [`crate::policy::evaluate`] on the cluster as
/// it is and with the candidates. Ordered from the least to the most telling: an edge shows
/// the greatest change among its flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Cannot be evaluated: a protocol without ports, no port, a pod neither the cluster nor
    /// the line gives an address for.
    Unknown,
    /// Allowed today and with the candidates.
    Kept,
    /// Denied today and with the candidates.
    StillDenied,
    /// Denied today, allowed with the candidates.
    NewlyAllowed,
    /// Allowed today, denied with the candidates: what applying them would break.
    NewlyDenied,
}

/// How many edges each [`Change`] marks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PreviewSummary {
    /// Edges with a flow the candidates would deny.
    pub newly_denied: usize,
    /// Edges with a flow the candidates would allow (and none they would deny).
    pub newly_allowed: usize,
    /// Edges denied today and still.
    pub still_denied: usize,
    /// Edges allowed today and still.
    pub kept: usize,
    /// Edges whose flows cannot be evaluated.
    pub unknown: usize,
}

impl Graph {
    /// The node of a workload or address.
    pub fn node(&self, end: &FlowEnd) -> Option<&Node> {
        self.nodes.iter().find(|node| node.end == *end)
    }

    /// The edge of a flow id.
    pub fn edge(&self, id: &str) -> Option<&Edge> {
        self.edges.iter().find(|edge| edge.id == id)
    }
}

/// The JSON form: the [`Graph`], pretty-printed, ending with a newline.
pub fn to_json(graph: &Graph) -> serde_json::Result<String> {
    let mut text = serde_json::to_string_pretty(graph)?;
    text.push('\n');
    Ok(text)
}

/// `prefix` and 10 hex digits of the SHA-256 of `text`: an identifier that DOT and Mermaid
/// take unquoted and that stays the same when other nodes come and go.
fn id(prefix: char, text: &str) -> String {
    let hash = Sha256::digest(text.as_bytes());
    let mut id = String::from(prefix);
    id.extend(hash.iter().take(5).map(|b| format!("{b:02x}")));
    id
}

/// The group a flow end belongs in.
fn group_of(end: &FlowEnd) -> (GroupKind, &str) {
    match end {
        FlowEnd::Workload(workload) => (GroupKind::Namespace, workload.namespace.as_str()),
        FlowEnd::Address(_) => (GroupKind::External, "external"),
    }
}

#[cfg(test)]
mod tests;
