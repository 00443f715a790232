//! One NetworkPolicy rule for one target pod, compiled to the match lists of its nft rules:
//! numbered and named ports, and the named peer sets (`np_<ns>_<policy>_<dir><rule>_pods4`,
//! `..._cidr4`, `..._named4` and their `6` twins) it creates in the shared set map.
//!
//! Owns the matches and the sets. Does not own the verdicts, counters and comments of the
//! rules built from them (`pod_chains`), which pods a peer selects (`peers`), nor the range
//! arithmetic of ipBlocks (`ranges`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::ruleset::{AddrField, Expr, Family, ProtocolPorts, Set, SetElement, SetKind};
use super::{MAX_COMMENT, names, peers, ranges, rule_sets, truncate};
use crate::model::{
    Direction, PeerKind, Pod, Policy, PortSpec, Protocol, Rule as PolicyRule, Snapshot,
};

/// Compiles one policy rule for one target pod into match lists (one per emitted rule).
pub(super) struct RuleCompiler<'a> {
    pub(super) snapshot: &'a Snapshot,
    pub(super) policy: &'a Policy,
    pub(super) rule: &'a PolicyRule,
    pub(super) direction: Direction,
    /// The pod whose chain this is.
    pub(super) target: &'a Pod,
    pub(super) sets: &'a mut BTreeMap<String, Set>,
    /// The rule's pod peers once looked up: the pods set and the named-port set share them.
    pub(super) peers: Option<Vec<&'a Pod>>,
}

impl<'a> RuleCompiler<'a> {
    pub(super) fn matchers(mut self) -> Vec<Vec<Expr>> {
        // Ports: `None` means any protocol and port.
        let (numbered, named) = self.ports();
        let mut lists = MatchLists::new(self.direction, self.rule.ports.is_some(), numbered);
        if lists.ports_can_match() {
            match &self.rule.peers {
                None => lists.any_peer(),
                Some(peers) => {
                    if peers
                        .iter()
                        .any(|p| matches!(p.kind, PeerKind::Pods { .. }))
                    {
                        let sets = self.pod_sets();
                        lists.peers_in_each(sets);
                    }
                    for family in Family::ALL {
                        if let Some(set) = self.cidr_set(family) {
                            lists.peers_in(family, set);
                        }
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

    /// Numbered ports (merged per protocol), plus named ports resolved on the target for
    /// ingress; and the named ports left to resolve per destination pod (egress).
    fn ports(&self) -> (Vec<ProtocolPorts>, Vec<(String, Protocol)>) {
        let mut numbered = Vec::new();
        let mut named = Vec::new();
        for port in self.rule.ports.iter().flatten() {
            match &port.port {
                None => numbered.push(ProtocolPorts {
                    protocol: port.protocol,
                    start: 0,
                    end: u16::MAX,
                }),
                Some(PortSpec::Range { start, end }) => numbered.push(ProtocolPorts {
                    protocol: port.protocol,
                    start: *start,
                    end: *end,
                }),
                Some(PortSpec::Named(name)) => match self.direction {
                    Direction::Ingress => {
                        if let Some(p) = self.target.named_port(name, port.protocol) {
                            numbered.push(ProtocolPorts {
                                protocol: port.protocol,
                                start: p,
                                end: p,
                            });
                        }
                    }
                    Direction::Egress => named.push((name.clone(), port.protocol)),
                },
            }
        }
        (merge_ports(numbered), named)
    }

    fn set_name(&self, what: &str, family: Family) -> String {
        let dir = match self.direction {
            Direction::Ingress => "in",
            Direction::Egress => "eg",
        };
        names::object_name(
            "np",
            &[&self.policy.key.namespace, &self.policy.key.name],
            &format!("_{dir}{}_{what}{}", self.rule.index, family.suffix()),
        )
    }

    fn comment(&self, what: &str) -> String {
        truncate(
            format!(
                "{} {}[{}] {what}",
                self.policy.key, self.direction, self.rule.index
            ),
            MAX_COMMENT,
        )
    }

    fn insert_set(
        &mut self,
        name: &str,
        family: Family,
        kind: SetKind,
        elements: Vec<SetElement>,
        what: &str,
    ) {
        let comment = self.comment(what);
        rule_sets::insert(self.sets, name, family, kind, elements, comment);
    }

    /// Pods selected by any pod peer of the rule, anywhere in the cluster (see [`peers`]),
    /// looked up once per rule compiler.
    fn peer_pods(&mut self) -> &[&'a Pod] {
        let (snapshot, namespace, rule) = (self.snapshot, &self.policy.key.namespace, self.rule);
        self.peers
            .get_or_insert_with(|| peers::peer_pods(snapshot, namespace, rule))
    }

    /// The rule's pod-peer sets, IPv4 and IPv6, built together from one peer lookup.
    fn pod_sets(&mut self) -> [String; 2] {
        let names = Family::ALL.map(|family| self.set_name("pods", family));
        if !self.sets.contains_key(&names[0]) {
            let elements = (self.peer_pods().iter())
                .flat_map(|pod| pod.ips.iter().copied())
                .map(SetElement::Address)
                .collect();
            let comment = self.comment("pod peers");
            rule_sets::insert_per_family(self.sets, &names, SetKind::Addresses, elements, &comment);
        }
        names
    }

    /// The rule's ipBlocks of one family, `None` when it has none.
    fn cidr_set(&mut self, family: Family) -> Option<String> {
        let mut ranges = Vec::new();
        for peer in self.rule.peers.iter().flatten() {
            if let PeerKind::IpBlock { cidr, except } = &peer.kind
                && Family::of(cidr.addr()) == family
            {
                ranges.extend(ranges::subtract(cidr, except));
            }
        }
        if ranges.is_empty() {
            return None;
        }
        let name = self.set_name("cidr", family);
        if !self.sets.contains_key(&name) {
            let elements = rule_sets::interval_elements(ranges, family);
            self.insert_set(&name, family, SetKind::AddressRanges, elements, "ipBlocks");
        }
        Some(name)
    }

    /// `address . protocol . port` of every destination pod the rule's peers select (any pod
    /// when the rule has no peers) that defines one of the named ports; IPv4 and IPv6 sets.
    fn named_port_sets(&mut self, named: &[(String, Protocol)]) -> [String; 2] {
        let names = Family::ALL.map(|family| self.set_name("named", family));
        if self.sets.contains_key(&names[0]) {
            return names;
        }
        let snapshot = self.snapshot;
        let rule = self.rule;
        let mut elements = Vec::new();
        // The addresses of `pod` that `covered` accepts, with each named port it defines.
        let mut add = |pod: &Pod, covered: &dyn Fn(IpAddr) -> bool| {
            for (port_name, protocol) in named {
                let Some(port) = pod.named_port(port_name, *protocol) else {
                    continue;
                };
                for ip in pod.ips.iter().filter(|ip| covered(**ip)) {
                    elements.push(SetElement::AddressProtocolPort(*ip, *protocol, port));
                }
            }
        };
        match rule.peers.as_deref() {
            // No peers: every destination pod, all of its addresses.
            None => {
                for pod in snapshot.pods().filter(|p| p.is_policy_endpoint()) {
                    add(pod, &|_| true);
                }
            }
            Some(peers) => {
                // A selector match covers all of the pod's addresses...
                for pod in self.peer_pods() {
                    add(pod, &|_| true);
                }
                // ... an ipBlock only the addresses it contains, on any pod. Only rules with
                // both an ipBlock and a named egress port walk every pod.
                if peers
                    .iter()
                    .any(|p| matches!(p.kind, PeerKind::IpBlock { .. }))
                {
                    let in_block = |ip: IpAddr| peers.iter().any(|p| p.contains_ip(ip));
                    for pod in snapshot.pods().filter(|p| p.is_policy_endpoint()) {
                        add(pod, &in_block);
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

/// The match lists of one rule (NetworkPolicy or ClusterNetworkPolicy), one per nft rule: its
/// numbered ports with each peer lookup, then each named-port lookup. One protocol's ports are
/// compares (or one small lookup): they go first, so a packet to another port skips the peer
/// lookup. Ports of several protocols are a concatenated set lookup, left after the peer.
pub(super) struct MatchLists {
    peer_field: AddrField,
    /// `None` when the rule has ports but none of them is numbered or resolves here: its peers
    /// then match nothing; `Some(None)` for any port.
    ports: Option<Option<Expr>>,
    lists: Vec<Vec<Expr>>,
}

impl MatchLists {
    /// For a rule in `direction` with (`ports_given`) or without a port list, whose numbered
    /// ports (named ones resolved on the subject pod included) are `numbered`.
    pub(super) fn new(
        direction: Direction,
        ports_given: bool,
        numbered: Vec<ProtocolPorts>,
    ) -> Self {
        let peer_field = match direction {
            Direction::Ingress => AddrField::Source,
            Direction::Egress => AddrField::Destination,
        };
        let ports = match (ports_given, numbered.is_empty()) {
            (false, _) => Some(None),
            (true, false) => Some(Some(port_expr(numbered))),
            (true, true) => None,
        };
        Self {
            peer_field,
            ports,
            lists: Vec::new(),
        }
    }

    /// Whether the numbered ports can match anything, so the peers need lookups.
    pub(super) fn ports_can_match(&self) -> bool {
        self.ports.is_some()
    }

    /// The rule's numbered ports from any peer.
    pub(super) fn any_peer(&mut self) {
        self.push_with_ports(Vec::new());
    }

    /// The rule's numbered ports from (ingress) or to (egress) the addresses in `set`.
    pub(super) fn peers_in(&mut self, family: Family, set: String) {
        self.push_with_ports(vec![Expr::AddressInSet(self.peer_field, family, set)]);
    }

    /// [`Self::peers_in`] the IPv4 and the IPv6 set.
    pub(super) fn peers_in_each(&mut self, sets: [String; 2]) {
        for (family, set) in Family::ALL.into_iter().zip(sets) {
            self.peers_in(family, set);
        }
    }

    /// The destination's address, protocol and port in the IPv4 or the IPv6 set (named ports
    /// resolved on each destination pod).
    pub(super) fn named_ports_in_each(&mut self, sets: [String; 2]) {
        for (family, set) in Family::ALL.into_iter().zip(sets) {
            self.lists
                .push(vec![Expr::DestinationProtocolPortInSet(family, set)]);
        }
    }

    pub(super) fn finish(self) -> Vec<Vec<Expr>> {
        self.lists
    }

    fn push_with_ports(&mut self, peer: Vec<Expr>) {
        let list = match &self.ports {
            None => return,
            Some(Some(ports @ Expr::PortIn(..))) => {
                std::iter::once(ports.clone()).chain(peer).collect()
            }
            Some(other) => peer.into_iter().chain(other.clone()).collect(),
        };
        self.lists.push(list);
    }
}

/// The match for merged numbered ports: [`Expr::PortIn`] when they are all of one protocol,
/// [`Expr::ProtocolPortIn`] otherwise.
pub(super) fn port_expr(ports: Vec<ProtocolPorts>) -> Expr {
    match ports.first().map(|p| p.protocol) {
        Some(protocol) if ports.iter().all(|p| p.protocol == protocol) => {
            Expr::PortIn(protocol, ports.iter().map(|p| (p.start, p.end)).collect())
        }
        _ => Expr::ProtocolPortIn(ports),
    }
}

/// Sorts port ranges and merges overlapping or adjacent ones of the same protocol.
pub(super) fn merge_ports(mut ports: Vec<ProtocolPorts>) -> Vec<ProtocolPorts> {
    ports.sort();
    let mut out: Vec<ProtocolPorts> = Vec::with_capacity(ports.len());
    for p in ports {
        match out.last_mut() {
            Some(last)
                if last.protocol == p.protocol && u32::from(p.start) <= u32::from(last.end) + 1 =>
            {
                last.end = last.end.max(p.end);
            }
            _ => out.push(p),
        }
    }
    out
}
