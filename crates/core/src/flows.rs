//! Recent distinct flows: what makes two flow lines the same flow ([`FlowKey`]), an agent's
//! bounded [`Window`] of them, what its `/flows` serves ([`NodeFlows`]), and flows of many
//! agents merged by workload ([`by_workload`]) for `kube-nftpol flows`.
//!
//! Pure, no I/O. The agent feeds its window with every line its flow log writes; the HTTP
//! endpoint and the command line only read. Reading the line itself is [`crate::flow_line`]'s,
//! naming a pod's workload is [`crate::hints::Workload`]'s.

mod window;
mod workloads;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::flow_line::{Action, AllowedBy, ClusterPolicyRule, FlowLine, Peer};
use crate::model::{Direction, IpProtocol, ObjectKey, Tier};

pub use window::Window;
pub use workloads::{WorkloadFlow, WorkloadPeer, by_workload};

/// What an agent's `GET /flows` answers: its node, how full its window is, and the flows kept
/// (all of them, or those of one namespace's pods). The agent writes it, `kube-nftpol flows`
/// reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFlows {
    /// The node whose pods' flows these are.
    pub node: String,
    /// The most distinct flows the window keeps.
    pub capacity: usize,
    /// Distinct flows kept now, of every namespace (`flows` may be filtered).
    pub kept: usize,
    /// Distinct flows evicted to make room since the agent started.
    pub evicted: u64,
    /// The flows, one line each, in [`FlowKey`] order: the latest line of the flow, with
    /// `count` the packets of every line of it and `first_ts` and `last_ts` when it was first
    /// and last seen (see [`Window`]).
    pub flows: Vec<FlowLine>,
}

/// What makes two flow lines the same flow: the policed pod, the direction, the peer (a pod, or
/// an address), the protocol, the destination port, the action and the rule that decided them
/// (for allowed flows, the NetworkPolicy rule; a ClusterNetworkPolicy rule, with its tier). Not the source port, the addresses of a pod peer, the labels or the
/// isolating policies: those are the latest line's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    /// The policed pod.
    pub pod: ObjectKey,
    /// Ingress or egress.
    pub direction: Direction,
    /// The other end.
    pub peer: PeerKey,
    /// The transport protocol.
    pub protocol: IpProtocol,
    /// The destination port.
    pub port: Option<u16>,
    /// Allowed, denied or audited.
    pub action: Action,
    /// For allowed flows, the rule that allowed them.
    pub allowed_by: Option<AllowedBy>,
    /// The ClusterNetworkPolicy tier that decided them, if one did.
    pub tier: Option<Tier>,
    /// Its rule.
    pub cluster_policy: Option<ClusterPolicyRule>,
}

/// The other end of a flow, as [`FlowKey`] tells flows apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKey {
    /// A pod, by `namespace/name`.
    Pod(ObjectKey),
    /// Anything else, by address.
    Ip(IpAddr),
}

impl FlowKey {
    /// The flow a line belongs to.
    pub fn of(line: &FlowLine) -> Self {
        Self {
            pod: ObjectKey::new(line.pod.namespace.as_str(), line.pod.name.as_str()),
            direction: line.direction,
            peer: match &line.peer {
                Peer::Pod(pod) => {
                    PeerKey::Pod(ObjectKey::new(pod.namespace.as_str(), pod.name.as_str()))
                }
                Peer::External { ip } => PeerKey::Ip(*ip),
            },
            protocol: line.protocol,
            port: line.port,
            action: line.action,
            allowed_by: line.allowed_by.clone(),
            tier: line.tier,
            cluster_policy: line.cluster_policy.clone(),
        }
    }
}

/// When a line's flow was first seen: a summary's `first_ts`, else its `ts`.
fn first_seen(line: &FlowLine) -> &str {
    line.first_ts.as_deref().unwrap_or(&line.ts)
}

/// When a line's flow was last seen: a summary's `last_ts`, else its `ts`.
fn last_seen(line: &FlowLine) -> &str {
    line.last_ts.as_deref().unwrap_or(&line.ts)
}

/// Two lines of one flow as one: the later line's fields, the packets of both, the earlier
/// first time and the later last time. Times compare as text, which orders the agent's
/// timestamps (RFC 3339 in UTC with milliseconds, [`crate::flow_line::rfc3339_millis`]).
fn combine(old: FlowLine, new: FlowLine) -> FlowLine {
    let first = first_seen(&old).min(first_seen(&new)).to_owned();
    let count = old.count.max(1).saturating_add(new.count.max(1));
    let mut line = if last_seen(&new) >= last_seen(&old) {
        new
    } else {
        old
    };
    line.count = count;
    line.first_ts = Some(first);
    normalize(line)
}

/// A line as a window keeps it: `first_ts` and `last_ts` always set, `ts` the last time, the
/// source port only while the line stands for one packet (repeats come from many).
fn normalize(mut line: FlowLine) -> FlowLine {
    line.count = line.count.max(1);
    let last = last_seen(&line).to_owned();
    if line.first_ts.is_none() {
        line.first_ts = Some(line.ts.clone());
    }
    line.ts.clone_from(&last);
    line.last_ts = Some(last);
    if line.count > 1 {
        line.source_port = None;
    }
    line
}
