//! Flow lines to a [`Graph`]: each line is one end's view of one connection; lines are grouped
//! by the flow between workloads they belong to ([`WorkloadFlow::of`], so an edge is exactly
//! what `suggest --exclude flow=ID` names), and within it by the two pods (or pod and address)
//! they connect, so that the sender's egress line and the receiver's ingress line of one
//! connection are one [`PodFlow`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{Edge, Graph, Group, GroupKind, Node, PodEnd, PodFlow, group_of, id};
use crate::flow_line::{Action, FlowLine, Peer, PodInfo};
use crate::hints::{self, FlowEnd, Workload, WorkloadFlow};
use crate::model::{Direction, ObjectKey, Snapshot};

/// The graph of `lines`. With `snapshot` (the cluster the flows were seen in), the workloads
/// of observed namespaces without any flow are added as idle nodes.
pub fn build<'l>(
    lines: impl IntoIterator<Item = &'l FlowLine>,
    snapshot: Option<&Snapshot>,
) -> Graph {
    let lines: Vec<&FlowLine> = lines.into_iter().collect();
    let mut flows: BTreeMap<WorkloadFlow, BTreeMap<(EndKey, EndKey), Sides>> = BTreeMap::new();
    for line in &lines {
        let (source, destination) = ends(line);
        flows
            .entry(WorkloadFlow::of(line))
            .or_default()
            .entry((EndKey::of(&source), EndKey::of(&destination)))
            .or_insert_with(|| Sides::new(source, destination))
            .add(line);
    }

    let observed = hints::observed_namespaces(lines.iter().copied(), snapshot);
    // Every end of a flow, then the observed workloads without one (idle).
    let mut ends: BTreeMap<FlowEnd, bool> = BTreeMap::new();
    for flow in flows.keys() {
        ends.insert(flow.source.clone(), false);
        ends.insert(flow.destination.clone(), false);
    }
    if let Some(snapshot) = snapshot {
        for pod in snapshot
            .pods()
            .filter(|pod| observed.contains(&pod.key.namespace) && hints::may_be_policed(pod))
        {
            ends.entry(FlowEnd::Workload(Workload::of_pod(pod)))
                .or_insert(true);
        }
    }

    let mut groups: BTreeMap<(GroupKind, String), Group> = BTreeMap::new();
    let mut nodes: Vec<Node> = ends
        .into_iter()
        .map(|(end, idle)| {
            let (kind, name) = group_of(&end);
            let group = groups
                .entry((kind, name.to_owned()))
                .or_insert_with(|| Group {
                    id: id('g', &format!("{kind:?} {name}")),
                    kind,
                    name: name.to_owned(),
                    observed: kind == GroupKind::Namespace && observed.contains(name),
                });
            let (label, kind) = label(&end);
            Node {
                id: id('n', &end.to_string()),
                group: group.id.clone(),
                end,
                name: label,
                kind,
                idle,
            }
        })
        .collect();
    let groups: Vec<Group> = groups.into_values().collect();
    let order = |node: &Node| groups.iter().position(|g| g.id == node.group);
    nodes.sort_by(|a, b| order(a).cmp(&order(b)).then_with(|| a.end.cmp(&b.end)));

    let edges = flows
        .into_iter()
        .map(|(flow, pods)| edge(&flow, pods.into_values().map(Sides::finish).collect()))
        .collect();
    Graph {
        groups,
        nodes,
        edges,
        preview: None,
    }
}

/// An edge from its flow and its pod flows.
fn edge(flow: &WorkloadFlow, pods: Vec<PodFlow>) -> Edge {
    let mut verdicts = BTreeMap::new();
    for pod in &pods {
        *verdicts.entry(pod.verdict).or_default() += 1;
    }
    Edge {
        id: flow.id(),
        source: id('n', &flow.source.to_string()),
        destination: id('n', &flow.destination.to_string()),
        text: flow.to_string(),
        protocol: flow.protocol,
        port: flow.port,
        verdict: pods
            .iter()
            .map(|p| p.verdict)
            .max_by_key(|a| severity(*a))
            .unwrap_or(Action::Allow),
        verdicts,
        flows: pods.len(),
        connections: pods
            .iter()
            .fold(0, |sum: u64, p| sum.saturating_add(p.connections)),
        pods,
        preview: None,
    }
}

/// A node's two label lines: the name, and the kind (`pods app=web` for a label group).
fn label(end: &FlowEnd) -> (String, String) {
    match end {
        FlowEnd::Address(ip) => (ip.to_string(), String::new()),
        FlowEnd::Workload(workload) if workload.labels.is_empty() => {
            (workload.name.clone(), workload.kind.clone())
        }
        FlowEnd::Workload(workload) => {
            // The label the group is named after, and how many more define it (the tooltip
            // and the JSON have them all).
            let named = workload
                .labels
                .iter()
                .find(|(_, value)| **value == workload.name)
                .or_else(|| workload.labels.iter().next());
            let kind = match named {
                Some((key, value)) if workload.labels.len() > 1 => {
                    format!("pods {key}={value} +{}", workload.labels.len() - 1)
                }
                Some((key, value)) => format!("pods {key}={value}"),
                None => "pods".to_owned(),
            };
            (workload.name.clone(), kind)
        }
    }
}

/// How bad a verdict is: an edge is as bad as its worst flow.
fn severity(action: Action) -> u8 {
    match action {
        Action::Allow => 0,
        Action::Audit => 1,
        Action::Deny => 2,
        Action::Revoke => 3,
    }
}

/// The sender and receiver of a line's connection.
fn ends(line: &FlowLine) -> (PodEnd, PodEnd) {
    // The pod's own address is the source on egress and the destination on ingress.
    let (pod_address, peer_address) = match line.direction {
        Direction::Egress => (line.source, line.destination),
        Direction::Ingress => (line.destination, line.source),
    };
    let pod = pod_end(&line.pod, pod_address);
    let peer = match &line.peer {
        Peer::Pod(peer) => pod_end(peer, peer_address),
        Peer::External { ip } => PodEnd {
            pod: None,
            ip: Some(*ip),
        },
    };
    match line.direction {
        Direction::Egress => (pod, peer),
        Direction::Ingress => (peer, pod),
    }
}

fn pod_end(pod: &PodInfo, ip: Option<IpAddr>) -> PodEnd {
    PodEnd {
        pod: Some(ObjectKey::new(pod.namespace.as_str(), pod.name.as_str())),
        ip,
    }
}

/// What identifies an end within a flow: the pod, else the address (a line without addresses
/// and one with them name the same pod).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum EndKey {
    Pod(ObjectKey),
    Address(Option<IpAddr>),
}

impl EndKey {
    fn of(end: &PodEnd) -> Self {
        match &end.pod {
            Some(pod) => Self::Pod(pod.clone()),
            None => Self::Address(end.ip),
        }
    }
}

/// The lines of one connection, as they arrive.
struct Sides {
    source: PodEnd,
    destination: PodEnd,
    verdict: Action,
    egress: u64,
    ingress: u64,
    sides: BTreeSet<String>,
}

impl Sides {
    fn new(source: PodEnd, destination: PodEnd) -> Self {
        Self {
            source,
            destination,
            verdict: Action::Allow,
            egress: 0,
            ingress: 0,
            sides: BTreeSet::new(),
        }
    }

    fn add(&mut self, line: &FlowLine) {
        let (source, destination) = ends(line);
        // A line without addresses leaves the other's.
        self.source.ip = self.source.ip.or(source.ip);
        self.destination.ip = self.destination.ip.or(destination.ip);
        if severity(line.action) > severity(self.verdict) {
            self.verdict = line.action;
        }
        let count = match line.direction {
            Direction::Egress => &mut self.egress,
            Direction::Ingress => &mut self.ingress,
        };
        *count = count.saturating_add(line.count);
        self.sides.insert(side(line));
    }

    fn finish(self) -> PodFlow {
        PodFlow {
            source: self.source,
            destination: self.destination,
            verdict: self.verdict,
            connections: self.egress.max(self.ingress),
            sides: self.sides.into_iter().collect(),
            preview: None,
        }
    }
}

/// What one end's line said, for people.
fn side(line: &FlowLine) -> String {
    if let (Some(tier), Some(rule)) = (line.tier, &line.cluster_policy) {
        let decided = match line.action {
            Action::Allow => "allowed",
            Action::Deny => "denied",
            Action::Audit => "audited, would be denied",
            Action::Revoke => "ended by a policy change",
        };
        return format!(
            "{}: {decided} by {tier} ClusterNetworkPolicy {} {}[{}]",
            line.direction, rule.name, line.direction, rule.rule
        );
    }
    let what = match (line.action, &line.allowed_by) {
        (Action::Allow, Some(rule)) => format!(
            "allowed by {} {}[{}]",
            rule.policy, line.direction, rule.rule
        ),
        (Action::Allow, None) => "not isolated".to_owned(),
        (Action::Deny, _) => format!("denied ({})", policies(line)),
        (Action::Audit, _) => format!("audited, would be denied ({})", policies(line)),
        (Action::Revoke, _) => format!("ended by a policy change ({})", policies(line)),
    };
    format!("{}: {what}", line.direction)
}

fn policies(line: &FlowLine) -> String {
    if line.policies.is_empty() {
        "no isolating policy known".to_owned()
    } else {
        format!("policies: {}", line.policies.join(", "))
    }
}
