//! One ClusterNetworkPolicy rule for one subject pod, compiled to the match lists of its nft
//! rules, and the named sets it shares with every other subject pod of the node:
//! `cnp_<policy>_<dir><rule>_addrs4` (the addresses of the pods its `namespaces` and `pods`
//! peers select and of the nodes its `nodes` peers select), `..._nets4` (its `networks`, an
//! interval set) and `..._named4` (`address . protocol . port` of the destination pods'
//! named ports, egress), with `6` twins.
//!
//! Owns the matches and the sets. Does not own the verdicts, counters and comments of the rules
//! built from them, nor the order of the tier's rules (`tiers`). Matches what
//! [`crate::policy::evaluate`] does for a rule: pod peers by the pod (every address of a
//! selected pod), `networks` and `nodes` by the packet's address, a named port on the
//! destination pod with the protocol the pod gives it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::rules::{MatchLists, merge_ports};
use super::ruleset::{Expr, Family, ProtocolPorts, Set, SetElement, SetKind};
use super::{MAX_COMMENT, names, ranges, rule_sets, truncate};
use crate::model::{
    ClusterPeer, ClusterPolicy, ClusterPort, ClusterRule, Direction, Labels, Pod, Snapshot,
};

/// Compiles one ClusterNetworkPolicy rule for one subject pod into match lists (one per
/// emitted rule; none when the rule can match nothing on this pod).
pub(super) struct ClusterRuleCompiler<'a> {
    pub(super) snapshot: &'a Snapshot,
    pub(super) policy: &'a ClusterPolicy,
    pub(super) rule: &'a ClusterRule,
    pub(super) direction: Direction,
    /// The subject pod whose chain this is.
    pub(super) target: &'a Pod,
    pub(super) sets: &'a mut BTreeMap<String, Set>,
}

impl ClusterRuleCompiler<'_> {
    pub(super) fn matchers(mut self) -> Vec<Vec<Expr>> {
        let (numbered, named) = self.ports();
        let mut lists = MatchLists::new(self.direction, self.rule.ports.is_some(), numbered);
        if lists.ports_can_match() {
            if self.rule.peers.contains(&ClusterPeer::Any) {
                lists.any_peer();
            } else {
                let selects_addresses = self.rule.peers.iter().any(|p| {
                    matches!(
                        p,
                        ClusterPeer::Namespaces(_)
                            | ClusterPeer::Pods { .. }
                            | ClusterPeer::Nodes(_)
                    )
                });
                if selects_addresses {
                    let sets = self.address_sets();
                    lists.peers_in_each(sets);
                }
                for family in Family::ALL {
                    if let Some(set) = self.network_set(family) {
                        lists.peers_in(family, set);
                    }
                }
            }
        }
        if !named.is_empty() {
            let sets = self.named_port_sets(&named);
            lists.named_ports_in_each(sets);
        }
        lists.finish()
    }

    /// Numbered ports (merged), plus named ports resolved on the subject pod for ingress; and
    /// the names left to resolve on each destination pod (egress).
    fn ports(&self) -> (Vec<ProtocolPorts>, Vec<String>) {
        let mut numbered = Vec::new();
        let mut named = Vec::new();
        for port in self.rule.ports.iter().flatten() {
            match port {
                ClusterPort::Range {
                    protocol,
                    start,
                    end,
                } => numbered.push(ProtocolPorts {
                    protocol: *protocol,
                    start: *start,
                    end: *end,
                }),
                ClusterPort::Named(name) => match self.direction {
                    Direction::Ingress => numbered.extend(
                        self.target
                            .ports
                            .iter()
                            .filter(|p| p.name.as_deref() == Some(name.as_str()))
                            .map(|p| ProtocolPorts {
                                protocol: p.protocol,
                                start: p.port,
                                end: p.port,
                            }),
                    ),
                    Direction::Egress => named.push(name.clone()),
                },
            }
        }
        named.sort();
        named.dedup();
        (merge_ports(numbered), named)
    }

    fn set_name(&self, what: &str, family: Family) -> String {
        let dir = match self.direction {
            Direction::Ingress => "in",
            Direction::Egress => "eg",
        };
        names::object_name(
            "cnp",
            &[&self.policy.name],
            &format!("_{dir}{}_{what}{}", self.rule.index, family.suffix()),
        )
    }

    fn comment(&self, what: &str) -> String {
        truncate(
            format!(
                "cnp {} {}[{}] {what}",
                self.policy.name, self.direction, self.rule.index
            ),
            MAX_COMMENT,
        )
    }

    /// The rule's pod and node peer addresses, IPv4 and IPv6 sets, built once per rule.
    fn address_sets(&mut self) -> [String; 2] {
        let names = Family::ALL.map(|family| self.set_name("addrs", family));
        if self.sets.contains_key(&names[0]) {
            return names;
        }
        let addresses: Vec<SetElement> = peer_pods(self.snapshot, self.rule)
            .into_iter()
            .flat_map(|pod| pod.ips.iter().copied())
            .chain(self.rule.peers.iter().flat_map(|peer| {
                match peer {
                    ClusterPeer::Nodes(selector) => self
                        .snapshot
                        .nodes()
                        .filter(|node| selector.matches(&node.labels))
                        .flat_map(|node| node.addresses.iter().copied())
                        .collect(),
                    _ => Vec::new(),
                }
            }))
            .map(SetElement::Address)
            .collect();
        let comment = self.comment("pod and node peers");
        rule_sets::insert_per_family(self.sets, &names, SetKind::Addresses, addresses, &comment);
        names
    }

    /// The rule's `networks` of one family, merged; `None` when it has none.
    fn network_set(&mut self, family: Family) -> Option<String> {
        let ranges: Vec<ranges::AddrRange> = self
            .rule
            .peers
            .iter()
            .flat_map(|peer| match peer {
                ClusterPeer::Networks(networks) => networks.as_slice(),
                _ => &[],
            })
            .filter(|net| Family::of(net.addr()) == family)
            .map(ranges::AddrRange::of_net)
            .collect();
        if ranges.is_empty() {
            return None;
        }
        let name = self.set_name("nets", family);
        if !self.sets.contains_key(&name) {
            let elements = rule_sets::interval_elements(ranges, family);
            let comment = self.comment("networks");
            rule_sets::insert(
                self.sets,
                &name,
                family,
                SetKind::AddressRanges,
                elements,
                comment,
            );
        }
        Some(name)
    }

    /// `address . protocol . port` of every pod the rule's pod peers select that has one of
    /// the named ports, with the protocol it gives it; IPv4 and IPv6 sets.
    fn named_port_sets(&mut self, named: &[String]) -> [String; 2] {
        let names = Family::ALL.map(|family| self.set_name("named", family));
        if self.sets.contains_key(&names[0]) {
            return names;
        }
        let mut elements = Vec::new();
        for pod in peer_pods(self.snapshot, self.rule) {
            for port in &pod.ports {
                if port.name.as_ref().is_some_and(|n| named.contains(n)) {
                    for ip in &pod.ips {
                        elements.push(SetElement::AddressProtocolPort(
                            *ip,
                            port.protocol,
                            port.port,
                        ));
                    }
                }
            }
        }
        let comment = self.comment("named ports");
        let kind = SetKind::AddressProtocolPort;
        rule_sets::insert_per_family(self.sets, &names, kind, elements, &comment);
        names
    }
}

/// The policy endpoints the rule's `namespaces` and `pods` peers select, anywhere in the
/// cluster, each once, in key order: each namespace's labels are tested once per peer, and the
/// pod selectors go through the namespace's label index ([`Snapshot::pods_selected`]).
fn peer_pods<'a>(snapshot: &'a Snapshot, rule: &ClusterRule) -> Vec<&'a Pod> {
    let peers: Vec<(&crate::model::Selector, Option<&crate::model::Selector>)> = rule
        .peers
        .iter()
        .filter_map(|peer| match peer {
            ClusterPeer::Namespaces(namespaces) => Some((namespaces, None)),
            ClusterPeer::Pods { namespaces, pods } => Some((namespaces, Some(pods))),
            _ => None,
        })
        .collect();
    if peers.is_empty() {
        return Vec::new();
    }
    let mut selected = Vec::new();
    for (namespace, labels) in snapshot.pod_namespaces_with_labels() {
        let labels: Cow<'_, Labels> = labels;
        let covering: Vec<Option<&crate::model::Selector>> = peers
            .iter()
            .filter(|(namespaces, _)| namespaces.matches(&labels))
            .map(|(_, pods)| *pods)
            .collect();
        if covering.is_empty() {
            continue;
        }
        let mut found: Vec<&Pod> = if covering.iter().any(|p| p.is_none_or(|s| s.is_everything())) {
            snapshot.pods_in(namespace).collect()
        } else {
            covering
                .iter()
                .flatten()
                .flat_map(|selector| snapshot.pods_selected(namespace, selector))
                .collect()
        };
        found.sort_by(|a, b| a.key.name.cmp(&b.key.name));
        found.dedup_by(|a, b| a.key.name == b.key.name);
        selected.extend(found.into_iter().filter(|pod| pod.is_policy_endpoint()));
    }
    selected
}
