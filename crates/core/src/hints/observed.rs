//! Observed flows (observe mode's flow lines, of every action) to the flows the suggested
//! policies must allow, both ends at once, and the user's exclusions.
//!
//! Each line is one side of one flow: the policed pod's direction. The flow needs that side
//! (when it was denied, or its namespace is in scope), and the other end's side too when the other end is a pod whose traffic is in scope (its
//! namespace is observed, so its policies are being written now) or whose own policies would
//! deny it today (the sender's drop hides the receiver's: without this, a flow denied at both
//! ends takes two rounds). A pod in a namespace that nobody observes gets no policy from
//! someone else's flows: its unobserved traffic would be cut.
//!
//! [`WorkloadFlow`] names one flow between workloads (or addresses) with a stable id, as
//! `kube-nftpol flows` lists them; [`Exclude`] is what `suggest --exclude` leaves out.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{FlowPeer, FlowToAllow, Options, Suggestions, Workload};
use crate::flow_line::{self, Action, FlowLine, PodInfo};
use crate::model::{Direction, IpProtocol, ObjectKey, Protocol, Snapshot};
use crate::policy::{self, DirectionVerdict, Endpoint, Flow};

/// One end of a flow between workloads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowEnd {
    /// A pod's workload.
    Workload(Workload),
    /// An address that is no pod.
    Address(IpAddr),
}

impl fmt::Display for FlowEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Workload(workload) => workload.fmt(f),
            Self::Address(ip) => ip.fmt(f),
        }
    }
}

/// One flow between workloads: who sends to whom, on which protocol and destination port.
/// Flows of different pods of the same workloads are one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct WorkloadFlow {
    /// The sender.
    pub source: FlowEnd,
    /// The receiver (the pod behind a Service, not the Service).
    pub destination: FlowEnd,
    /// The transport protocol.
    pub protocol: IpProtocol,
    /// The destination port, when the protocol has one.
    pub port: Option<u16>,
}

impl WorkloadFlow {
    /// The flow of a line, with workloads named from the labels and owners the line carries.
    pub fn of(line: &FlowLine) -> Self {
        let pod = FlowEnd::Workload(workload(&line.pod));
        let peer = match &line.peer {
            flow_line::Peer::Pod(peer) => FlowEnd::Workload(workload(peer)),
            flow_line::Peer::External { ip } => FlowEnd::Address(*ip),
        };
        let (source, destination) = match line.direction {
            Direction::Egress => (pod, peer),
            Direction::Ingress => (peer, pod),
        };
        Self {
            source,
            destination,
            protocol: line.protocol,
            port: line.port,
        }
    }

    /// A short stable id (12 hex digits of the SHA-256 of the flow's text), the same on every
    /// run and every agent: what `--exclude flow=ID` takes.
    pub fn id(&self) -> String {
        let hash = Sha256::digest(self.to_string().as_bytes());
        hash.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for WorkloadFlow {
    /// `Deployment shop/web -> Deployment shop/api tcp/8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} {}",
            self.source, self.destination, self.protocol
        )?;
        match self.port {
            Some(port) => write!(f, "/{port}"),
            None => Ok(()),
        }
    }
}

fn workload(pod: &PodInfo) -> Workload {
    Workload::of(
        &ObjectKey::new(pod.namespace.as_str(), pod.name.as_str()),
        &pod.labels,
        pod.owner.as_ref(),
    )
}

/// What `--exclude` leaves out of the suggestions: `flow=ID` (a [`WorkloadFlow::id`]),
/// `workload=NS/NAME` (every flow to or from that workload), `peer=ADDRESS`, `peer=CIDR` or
/// `peer=NS/NAME` (every flow with that other end), `port=PROTOCOL/PORT` or `port=PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclude {
    /// One flow, by id.
    Flow(String),
    /// Every flow with an end in this workload (`namespace`, workload name).
    Workload(String, String),
    /// Every flow with an end in this block of addresses.
    Addresses(IpNet),
    /// Every flow to this port, of this protocol or any.
    Port(Option<Protocol>, u16),
}

/// Why an `--exclude` value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--exclude {value:?}: {problem} (use flow=ID, workload=NS/NAME, peer=ADDRESS|CIDR|NS/NAME or \
     port=[PROTOCOL/]PORT)"
)]
pub struct ExcludeError {
    value: String,
    problem: &'static str,
}

impl FromStr for Exclude {
    type Err = ExcludeError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let error = |problem| ExcludeError {
            value: value.to_owned(),
            problem,
        };
        let (kind, what) = value.split_once('=').ok_or_else(|| error("no KIND="))?;
        let workload = |what: &str| {
            let (namespace, name) = what.split_once('/')?;
            (!namespace.is_empty() && !name.is_empty() && !name.contains('/'))
                .then(|| Self::Workload(namespace.to_owned(), name.to_owned()))
        };
        match kind {
            "flow" if !what.is_empty() && what.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Self::Flow(what.to_ascii_lowercase()))
            }
            "flow" => Err(error("a flow id is hexadecimal")),
            "workload" => workload(what).ok_or_else(|| error("a workload is NS/NAME")),
            "peer" => {
                if let Ok(ip) = what.parse::<IpAddr>() {
                    return Ok(Self::Addresses(IpNet::from(ip)));
                }
                if let Ok(net) = what.parse::<IpNet>() {
                    return Ok(Self::Addresses(net.trunc()));
                }
                workload(what).ok_or_else(|| error("a peer is an address, a CIDR or NS/NAME"))
            }
            "port" => {
                let (protocol, port) = match what.split_once('/') {
                    Some((protocol, port)) => (
                        Some(
                            Protocol::parse_any_case(protocol)
                                .ok_or_else(|| error("a protocol is tcp, udp or sctp"))?,
                        ),
                        port,
                    ),
                    None => (None, what),
                };
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| error("a port is 1 to 65535"))?;
                Ok(Self::Port(protocol, port))
            }
            _ => Err(error("unknown kind")),
        }
    }
}

impl Exclude {
    /// Whether this leaves out `flow`.
    pub fn matches(&self, flow: &WorkloadFlow) -> bool {
        let ends = [&flow.source, &flow.destination];
        match self {
            Self::Flow(id) => flow.id() == *id,
            Self::Workload(namespace, name) => ends.iter().any(|end| {
                matches!(end, FlowEnd::Workload(w) if w.namespace == *namespace && w.name == *name)
            }),
            Self::Addresses(net) => ends
                .iter()
                .any(|end| matches!(end, FlowEnd::Address(ip) if net.contains(ip))),
            Self::Port(protocol, port) => {
                flow.port == Some(*port)
                    && protocol.is_none_or(|p| flow.protocol.policy_protocol() == Some(p))
            }
        }
    }
}

/// An external address an observed flow talked to, left out of the suggestions (allow it with
/// `--include-external`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ExternalPeer {
    /// The flow.
    pub flow: WorkloadFlow,
    /// Its id.
    pub id: String,
}

/// What [`to_allow`] keeps and leaves out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The flows the suggestions must allow: each flow's sides in scope.
    pub flows: Vec<FlowToAllow>,
    /// Distinct flows seen.
    pub seen: BTreeSet<WorkloadFlow>,
    /// Distinct flows an `--exclude` left out.
    pub excluded: BTreeSet<WorkloadFlow>,
    /// Flows with addresses outside the cluster, left out.
    pub external: BTreeSet<ExternalPeer>,
    /// The namespaces whose traffic was observed (for [`super::Options::observed`]).
    pub scope: BTreeSet<String>,
}

/// The sides of the observed flows that suggestions must allow. `scope` says whose traffic is
/// in scope (namespaces that are observed); `include_external` keeps flows with addresses
/// outside the cluster, which are otherwise listed apart.
pub fn to_allow<'l>(
    lines: impl IntoIterator<Item = &'l FlowLine>,
    snapshot: Option<&Snapshot>,
    exclude: &[Exclude],
    include_external: bool,
) -> Observed {
    let lines: Vec<&FlowLine> = lines.into_iter().collect();
    let scope = Scope::of(lines.iter().copied(), snapshot);
    let mut observed = Observed {
        scope: scope.0.clone(),
        ..Observed::default()
    };
    for line in lines {
        let flow = WorkloadFlow::of(line);
        observed.seen.insert(flow.clone());
        if exclude.iter().any(|e| e.matches(&flow)) {
            observed.excluded.insert(flow);
            continue;
        }
        if let flow_line::Peer::External { .. } = &line.peer
            && !include_external
        {
            let id = flow.id();
            observed.external.insert(ExternalPeer { flow, id });
            continue;
        }
        let own = FlowToAllow::from_line(line);
        // A denied side needs a rule wherever it is; an allowed one when its namespace's
        // policies are being written.
        if line.action.is_denied() || scope.contains(&own.pod.key.namespace) {
            if let Some(other) = other_end(&own) {
                let needed = scope.contains(&other.pod.key.namespace)
                    || snapshot.is_some_and(|s| denies(s, &other));
                if needed {
                    observed.flows.push(other);
                }
            }
            observed.flows.push(own);
        }
    }
    observed
}

/// The namespaces whose traffic was observed ([`Observed::scope`]): those of pods with lines
/// of observe mode, and those the snapshot says are observed. Their workloads are the ones
/// observed suggestions isolate.
pub fn observed_namespaces<'l>(
    lines: impl IntoIterator<Item = &'l FlowLine>,
    snapshot: Option<&Snapshot>,
) -> BTreeSet<String> {
    Scope::of(lines, snapshot).0
}

/// What `suggest --observed` prints, and what the `ui` page shows for its ticked flows: the
/// policies that allow exactly the observed flows of `lines`, both ends at once ([`to_allow`]
/// then [`super::suggest`] in observe mode), with the flows `exclude` left out and the external
/// ones left out unless `include_external`, both listed in the result.
pub fn suggest_observed<'l>(
    lines: impl IntoIterator<Item = &'l FlowLine>,
    snapshot: Option<&Snapshot>,
    namespace: Option<&str>,
    exclude: &[Exclude],
    include_external: bool,
) -> Suggestions {
    let observed = to_allow(lines, snapshot, exclude, include_external);
    let mut suggestions = super::suggest(
        &observed.flows,
        &Options {
            snapshot,
            namespace,
            observed: Some(&observed.scope),
        },
    );
    suggestions.excluded = observed.excluded.into_iter().collect();
    suggestions.external_left_out = observed.external.into_iter().collect();
    suggestions
}

/// Whose traffic is in scope: the namespaces of pods the agents observed (a line allowed by a
/// policy or of a pod no policy isolates comes only from observe mode), and the namespaces the
/// snapshot says are observed.
struct Scope(BTreeSet<String>);

impl Scope {
    fn of<'l>(lines: impl IntoIterator<Item = &'l FlowLine>, snapshot: Option<&Snapshot>) -> Self {
        let mut namespaces: BTreeSet<String> = lines
            .into_iter()
            .filter(|line| line.action == Action::Allow)
            .map(|line| line.pod.namespace.clone())
            .collect();
        if let Some(snapshot) = snapshot {
            namespaces.extend(
                snapshot
                    .namespaces()
                    .filter(|ns| ns.observe)
                    .map(|ns| ns.name.clone()),
            );
        }
        Self(namespaces)
    }

    fn contains(&self, namespace: &str) -> bool {
        self.0.contains(namespace)
    }
}

/// The other end's side of a flow whose other end is a pod.
fn other_end(flow: &FlowToAllow) -> Option<FlowToAllow> {
    let FlowPeer::Pod(peer) = &flow.peer else {
        return None;
    };
    Some(FlowToAllow {
        direction: match flow.direction {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        },
        pod: peer.clone(),
        peer: FlowPeer::Pod(flow.pod.clone()),
        protocol: flow.protocol,
        port: flow.port,
        // Nothing was logged on this side.
        drops: 0,
        tier: None,
        cluster_policy: None,
    })
}

/// Whether the snapshot's policies deny the flow on its pod's side today.
fn denies(snapshot: &Snapshot, flow: &FlowToAllow) -> bool {
    matches!(
        side_today(snapshot, flow),
        Some(DirectionVerdict::Denied { .. })
    )
}

/// The pod's side of the flow as the snapshot decides it today; `None` when it cannot tell (a
/// pod it does not know, a protocol without ports).
pub(super) fn side_today(snapshot: &Snapshot, flow: &FlowToAllow) -> Option<DirectionVerdict> {
    let protocol = flow.protocol.policy_protocol()?;
    let port = flow.port?;
    snapshot.pod(&flow.pod.key)?;
    let policed = Endpoint::Pod(flow.pod.key.clone());
    let peer = match &flow.peer {
        FlowPeer::Pod(peer) => {
            snapshot.pod(&peer.key)?;
            Endpoint::Pod(peer.key.clone())
        }
        FlowPeer::External(ip) => Endpoint::Ip(*ip),
    };
    let (source, destination) = match flow.direction {
        Direction::Egress => (policed, peer),
        Direction::Ingress => (peer, policed),
    };
    let verdict = policy::evaluate(
        snapshot,
        &Flow {
            source,
            destination,
            protocol,
            port,
        },
    )
    .ok()?;
    Some(match flow.direction {
        Direction::Egress => verdict.egress,
        Direction::Ingress => verdict.ingress,
    })
}
