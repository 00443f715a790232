//! Which established connections a policy change takes away.
//!
//! The ruleset accepts the packets of established connections before any pod chain, so a
//! connection opened while it was allowed outlives the change that denies it. The agent lists
//! its node's connections (conntrack) after each change and ends those [`revocations`] names:
//! the connections that the snapshot now in the kernel denies on a side this node polices
//! (the egress of a pod of this node, the ingress of one), with that side enforced (an
//! audited namespace only logs). Everything else is left alone: not one allowed connection is
//! ended.
//!
//! A connection is judged as its first packet was: from the original source (before SNAT,
//! which happens after the ruleset) to the reply's source and port (the pod and port behind a
//! Service, after DNAT), with [`crate::policy::evaluate`], the semantics the ruleset is tested
//! to agree with. [`Connection::revoked_headers`] gives the packet headers the kernel then
//! answers with a reset or an ICMP error (`compile`'s `revoked4`/`6` sets).
//!
//! Pure: conntrack entries as [`Connection`]s in, decisions out. The agent reads and deletes
//! the entries (`dataplane::conntrack`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use crate::compile::{Family, SetElement};
use crate::model::{Direction, Enforcement, ObjectKey, Protocol, Snapshot};
use crate::policy::{DirectionVerdict, Endpoint, Flow, evaluate};

/// Source and destination of a connection's packets in one direction, as conntrack records
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    /// The packets' source.
    pub source: SocketAddr,
    /// The packets' destination.
    pub destination: SocketAddr,
}

/// A tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Connection {
    /// Its protocol: TCP, UDP or SCTP (the protocols with ports).
    pub protocol: Protocol,
    /// The first packet as it arrived: the client and the address it asked for (a Service's).
    pub original: Tuple,
    /// The answers as they arrive: from the pod that serves (after DNAT) to the client (or the
    /// address it was translated to).
    pub reply: Tuple,
    /// Its conntrack zone (0 unless the CNI uses zones).
    pub zone: u16,
}

impl Connection {
    /// The sender of the first packet.
    pub fn client(&self) -> SocketAddr {
        self.original.source
    }

    /// Who serves it: the pod behind the Service and its port.
    pub fn server(&self) -> SocketAddr {
        self.reply.source
    }

    /// What the `revoked` sets must hold for the kernel to answer the connection's packets
    /// once its entry is gone (`ct original ip saddr . ct original ip daddr . meta l4proto .
    /// th sport . th dport`, see `compile`). Whichever end sends first, conntrack makes a new
    /// entry of that packet (the entry the answer confirms): from the client, its original
    /// destination is the address the client asked for and the packet's destination port the
    /// server's after DNAT; from the server, the reply tuple as it arrives. The other end's
    /// packets then belong to that entry, with its original addresses and their own ports,
    /// reversed: four elements. The family of the set they go in is [`Connection::family`].
    pub fn revoked_headers(&self) -> [SetElement; 4] {
        let element = |(source, destination): (IpAddr, IpAddr), (from, to): (u16, u16)| {
            SetElement::Connection(source, destination, self.protocol, from, to)
        };
        let client = (self.original.source.ip(), self.original.destination.ip());
        let client_ports = (self.original.source.port(), self.reply.source.port());
        let server = (self.reply.source.ip(), self.reply.destination.ip());
        let server_ports = (self.reply.source.port(), self.reply.destination.port());
        [
            element(client, client_ports),
            element(client, (client_ports.1, client_ports.0)),
            element(server, server_ports),
            element(server, (server_ports.1, server_ports.0)),
        ]
    }

    /// The family of the connection's addresses.
    pub fn family(&self) -> Family {
        Family::of(self.original.source.ip())
    }
}

/// A connection to end, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The connection.
    pub connection: Connection,
    /// The side that denies it now.
    pub direction: Direction,
    /// The pod of this node on that side.
    pub pod: ObjectKey,
}

/// The node whose connections are judged.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    /// Its name (pods' `spec.nodeName`).
    pub name: &'a str,
    /// Its own addresses: connections from them are the node's (kubelet probes), which the
    /// ruleset always accepts.
    pub local_addresses: &'a HashSet<IpAddr>,
    /// Every namespace audited (`agent --audit`): nothing is ended.
    pub audit_all: bool,
}

/// What judging one flow gave: the sides to end it on.
type Decision = Vec<(Direction, ObjectKey)>;

/// The connections among `connections` that `snapshot` denies on a side `node` polices and
/// enforces, each once per denying side, in the order given.
pub fn revocations<'c>(
    snapshot: &Snapshot,
    node: &Node<'_>,
    connections: impl IntoIterator<Item = &'c Connection>,
) -> Vec<Revocation> {
    let mut decided: HashMap<(IpAddr, IpAddr, Protocol, u16), Decision> = HashMap::new();
    let mut revocations = Vec::new();
    for connection in connections {
        let client = connection.client().ip();
        let server = connection.server();
        if node.local_addresses.contains(&client) {
            continue;
        }
        let key = (client, server.ip(), connection.protocol, server.port());
        let sides = decided
            .entry(key)
            .or_insert_with(|| denying_sides(snapshot, node, key));
        revocations.extend(sides.iter().map(|(direction, pod)| Revocation {
            connection: *connection,
            direction: *direction,
            pod: pod.clone(),
        }));
    }
    revocations
}

/// The sides of this node that deny the flow and are enforced.
fn denying_sides(
    snapshot: &Snapshot,
    node: &Node<'_>,
    (client, server, protocol, port): (IpAddr, IpAddr, Protocol, u16),
) -> Decision {
    let policed_here = |ip: IpAddr| {
        snapshot
            .pod_by_ip(ip)
            .filter(|pod| pod.node.as_deref() == Some(node.name))
    };
    let egress_pod = policed_here(client);
    let ingress_pod = policed_here(server);
    if egress_pod.is_none() && ingress_pod.is_none() {
        return Vec::new();
    }
    let flow = Flow {
        source: Endpoint::Ip(client),
        destination: Endpoint::Ip(server),
        protocol,
        port,
    };
    // Both ends are addresses, which evaluate resolves and never rejects.
    let Ok(verdict) = evaluate(snapshot, &flow) else {
        return Vec::new();
    };
    let mut sides = Vec::new();
    for (direction, pod, side) in [
        (Direction::Egress, egress_pod, &verdict.egress),
        (Direction::Ingress, ingress_pod, &verdict.ingress),
    ] {
        let Some(pod) = pod else { continue };
        let enforced =
            !node.audit_all && snapshot.enforcement(&pod.key.namespace) == Enforcement::Enforce;
        if enforced && matches!(side, DirectionVerdict::Denied { .. }) {
            sides.push((direction, pod.key.clone()));
        }
    }
    sides
}

#[cfg(test)]
mod tests;
