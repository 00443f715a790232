//! Nodes wired as a cluster's pods would be, each with its compiled ruleset, and the path of a
//! connection's first packet through them, for tests that check the compiler against
//! `evaluate` with the reference interpreter ([`crate::interpret`]) and no kernel.
//!
//! A packet from a pod leaves through the pod's link on its node (`prerouting`, then
//! `postrouting`, or `input` when it is addressed to the node itself), crosses the uplink to
//! the node that holds the destination (a pod there: `prerouting` and `postrouting`; the node's
//! own address: `prerouting` and `input`), or leaves the cluster. A packet from a node's own
//! address (a host-network pod) starts without an input interface.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kube_nftpol_core::compile::{self, Options, Ruleset};
use kube_nftpol_core::model::{PodInterfaces, Protocol, Snapshot};

use crate::interpret::{Packet, Trace, trace, trace_local};

/// The interface between nodes, and out of the cluster.
pub const UPLINK: &str = "eth0";
/// The one bridge every pod of a node sits behind in [`Wiring::Bridged`].
pub const BRIDGE: &str = "cni0";

/// How a node's pods are plugged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiring {
    /// A routed veth per pod, named in the agent's [`PodInterfaces`].
    Routed,
    /// All pods behind one bridge: the agent knows no veth.
    Bridged,
}

/// A node: its name, addresses, ruleset and the interface each of its pod addresses sits
/// behind.
#[derive(Debug)]
pub struct NodeTables {
    /// The node name.
    pub name: String,
    /// The node's own addresses.
    pub addresses: Vec<IpAddr>,
    /// What the compiler gives it.
    pub ruleset: Ruleset,
    /// Pod address to link.
    pub links: BTreeMap<IpAddr, String>,
}

impl NodeTables {
    fn interface(&self, ip: IpAddr) -> String {
        self.links
            .get(&ip)
            .cloned()
            .unwrap_or_else(|| UPLINK.into())
    }
}

/// The tables of every node of the snapshot (its `Node` objects), pod `i` (in snapshot order)
/// behind `veth<i>` when routed. Host-network pods have no link.
pub fn compile_nodes(snapshot: &Snapshot, wiring: Wiring, options: &Options) -> Vec<NodeTables> {
    snapshot
        .nodes()
        .map(|node| {
            let mut links = BTreeMap::new();
            let mut interfaces = PodInterfaces::new();
            let local = snapshot
                .pods()
                .enumerate()
                .filter(|(_, p)| p.node.as_deref() == Some(node.name.as_str()) && !p.host_network);
            for (i, pod) in local {
                let link = match wiring {
                    Wiring::Routed => format!("veth{i}"),
                    Wiring::Bridged => BRIDGE.to_owned(),
                };
                for ip in &pod.ips {
                    links.insert(*ip, link.clone());
                    if wiring == Wiring::Routed {
                        interfaces.insert(*ip, link.clone());
                    }
                }
            }
            let ruleset =
                compile::compile_with_interfaces(snapshot, &node.name, &interfaces, options);
            NodeTables {
                name: node.name.clone(),
                addresses: node.addresses.clone(),
                ruleset,
                links,
            }
        })
        .collect()
}

/// What the nodes did with the first packet from `source` (a pod address, or a node's own
/// address) to `destination`: the chain that dropped it, if one did, and the log prefixes on
/// its way, source node first.
pub fn trace_flow(
    nodes: &[NodeTables],
    source: IpAddr,
    destination: IpAddr,
    protocol: Protocol,
    port: u16,
) -> Trace {
    let holds = |node: &NodeTables, ip: IpAddr| {
        node.links.contains_key(&ip) || node.addresses.contains(&ip)
    };
    let first = nodes
        .iter()
        .find(|n| holds(n, source))
        .unwrap_or_else(|| panic!("no node holds {source}"));
    let from_node = first.addresses.contains(&source);
    let packet = |node: &NodeTables, input: Option<String>, from_node: bool| Packet {
        source,
        destination,
        protocol,
        port,
        from_node,
        input,
        output: if node.addresses.contains(&destination) {
            "lo".to_owned()
        } else {
            node.interface(destination)
        },
    };
    let input = (!from_node).then(|| first.interface(source));
    let at_first = packet(first, input, from_node);
    let mut seen = if first.addresses.contains(&destination) {
        trace_local(&first.ruleset, &at_first)
    } else {
        trace(&first.ruleset, &at_first)
    };
    if seen.dropped_by.is_some() || holds(first, destination) {
        return seen;
    }
    let Some(second) = nodes.iter().find(|n| holds(n, destination)) else {
        return seen;
    };
    let at_second = packet(second, Some(UPLINK.into()), false);
    let mut then = if second.addresses.contains(&destination) {
        trace_local(&second.ruleset, &at_second)
    } else {
        trace(&second.ruleset, &at_second)
    };
    seen.logged.append(&mut then.logged);
    seen.dropped_by = then.dropped_by;
    seen
}
