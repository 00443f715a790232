//! A reference interpreter of the compiler's ruleset model, for tests that need no kernel.
//!
//! It runs the first packet of a connection (connection tracking state `new`) through a node's
//! `prerouting` chain (anti-spoofing) and `postrouting` chain the way nftables would (verdict
//! maps, jump/goto/return, set lookups, `iifname`/`oifname` pairs), and notes the NFLOG
//! prefixes of the log rules it passes ([`trace`]; the rate limit is taken as never reached).
//! It checks that the compiled structure means what `evaluate` says; the root suites check
//! that the kernel agrees with real packets.
//!
//! Audit mode: an audited pod's default deny logs with the audit prefix and accepts, so the
//! node accepts the packet; [`Trace::audit_denied`] tells such packets apart from those a
//! policy allowed.
//!
//! Every packet says which interfaces it crosses on the node, as the node's links and routes
//! would make it: the anti-spoofing rules are decided by them, so a caller cannot leave them
//! out and have those rules pass unnoticed.

use std::net::IpAddr;

use kube_nftpol_core::compile::{
    ANTI_SPOOF_CHAIN, AddrField, Expr, Family, LogKind, MapVerdict, Ruleset, SetElement,
};
use kube_nftpol_core::model::Protocol;

/// The first packet of a connection, as one node sees it.
#[derive(Debug, Clone)]
pub struct Packet {
    pub source: IpAddr,
    pub destination: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    /// The packet comes from the node itself (`fib saddr type local`).
    pub from_node: bool,
    /// `iifname`: the interface the packet entered the node through (a pod's veth, the
    /// uplink); `None` for a packet the node sends itself, which skips `prerouting`.
    pub input: Option<String>,
    /// `oifname`: the interface the node sends it out of (the destination pod's veth, the
    /// uplink).
    pub output: String,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Accept,
    Drop,
    /// The chain returned (or ended) without a final verdict.
    Continue,
}

/// Whether the node lets the packet through: neither its `prerouting` chain (packets that
/// enter the node) nor its `postrouting` chain drops it.
pub fn node_accepts(ruleset: &Ruleset, packet: &Packet) -> bool {
    dropped_by(ruleset, packet).is_none()
}

/// The base chain that drops the packet on this node, if one does.
pub fn dropped_by(ruleset: &Ruleset, packet: &Packet) -> Option<&'static str> {
    trace(ruleset, packet).dropped_by
}

/// What a node did with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The base chain that dropped it, if one did.
    pub dropped_by: Option<&'static str>,
    /// The prefixes of the NFLOG rules it passed, in order.
    pub logged: Vec<String>,
}

impl Trace {
    /// Accepted by an audited pod's default deny: the node let it through, and logged it with
    /// the audit prefix (a default deny would have dropped it).
    pub fn audit_denied(&self) -> bool {
        self.dropped_by.is_none()
            && self
                .logged
                .iter()
                .any(|p| LogKind::split_prefix(p).is_some_and(|(kind, _)| kind.is_audit()))
    }
}

/// Runs the packet through the node's `prerouting` (when it enters the node) and
/// `postrouting` chains.
pub fn trace(ruleset: &Ruleset, packet: &Packet) -> Trace {
    assert!(
        !packet.output.is_empty() && packet.input.as_deref() != Some(""),
        "a packet crosses named interfaces: {packet:?}"
    );
    let mut logged = Vec::new();
    let mut dropped_by = None;
    let mut rule = None;
    if packet.input.is_some()
        && run_chain(ruleset, ANTI_SPOOF_CHAIN, packet, &mut logged, &mut rule) == Outcome::Drop
    {
        dropped_by = Some(ANTI_SPOOF_CHAIN);
    } else if run_chain(ruleset, "postrouting", packet, &mut logged, &mut rule) == Outcome::Drop {
        dropped_by = Some("postrouting");
    }
    Trace { dropped_by, logged }
}

/// Runs a packet addressed to the node itself through the node's `prerouting` (when it enters
/// the node) and `input` chains: a pod talking to its own node's address, or to a
/// host-network pod of it.
pub fn trace_local(ruleset: &Ruleset, packet: &Packet) -> Trace {
    let mut logged = Vec::new();
    let mut dropped_by = None;
    let mut rule = None;
    if packet.input.is_some()
        && run_chain(ruleset, ANTI_SPOOF_CHAIN, packet, &mut logged, &mut rule) == Outcome::Drop
    {
        dropped_by = Some(ANTI_SPOOF_CHAIN);
    } else if run_chain(ruleset, "input", packet, &mut logged, &mut rule) == Outcome::Drop {
        dropped_by = Some("input");
    }
    Trace { dropped_by, logged }
}

/// The comment of the `prerouting` rule that drops a packet entering the node (the rule whose
/// counter counts it), or `None` when `prerouting` lets it through.
pub fn prerouting_drop(ruleset: &Ruleset, packet: &Packet) -> Option<String> {
    assert!(
        packet.input.is_some(),
        "only entering packets walk prerouting"
    );
    let mut rule = None;
    match run_chain(
        ruleset,
        ANTI_SPOOF_CHAIN,
        packet,
        &mut Vec::new(),
        &mut rule,
    ) {
        Outcome::Drop => Some(rule.expect("a drop comes from a rule").unwrap_or_default()),
        Outcome::Accept | Outcome::Continue => None,
    }
}

/// Runs a chain; `final_rule` is set to the comment of the rule that gave a final verdict.
fn run_chain(
    ruleset: &Ruleset,
    name: &str,
    packet: &Packet,
    logged: &mut Vec<String>,
    final_rule: &mut Option<Option<String>>,
) -> Outcome {
    let chain = ruleset
        .chain(name)
        .unwrap_or_else(|| panic!("no chain {name}"));
    'rules: for rule in &chain.rules {
        for expr in &rule.exprs {
            match expr {
                Expr::CtEstablishedOrRelated | Expr::Icmpv6NeighborDiscovery => continue 'rules,
                // The first packet of a connection: not assured.
                Expr::CtNotAssured => {}
                Expr::ConnectionInSet(family, set) => {
                    // The packet has no source port: any of the set's connections between
                    // these ends, protocol and destination port (the sets are filled at run
                    // time, so a compiled ruleset's are empty).
                    let hit = |e: &SetElement| {
                        matches!(e, SetElement::Connection(source, destination, protocol, _, port)
                            if *source == packet.source
                                && *destination == packet.destination
                                && *protocol == packet.protocol
                                && *port == packet.port)
                    };
                    if Family::of(packet.source) != *family || !set_contains(ruleset, set, hit) {
                        continue 'rules;
                    }
                }
                // The first packet of a connection: a TCP one is its SYN.
                Expr::TcpInitialSyn => {
                    if packet.protocol != Protocol::Tcp {
                        continue 'rules;
                    }
                }
                Expr::ProtocolIs(protocol) => {
                    if *protocol != packet.protocol {
                        continue 'rules;
                    }
                }
                Expr::SourceIsLocal => {
                    if !packet.from_node {
                        continue 'rules;
                    }
                }
                Expr::AddressIs(field, ip) => {
                    if address(packet, *field) != *ip {
                        continue 'rules;
                    }
                }
                Expr::AddressInSet(field, family, set) => {
                    let addr = address(packet, *field);
                    if Family::of(addr) != *family
                        || !set_contains(ruleset, set, |e| element_has_address(e, addr))
                    {
                        continue 'rules;
                    }
                }
                Expr::DestinationProtocolPortInSet(family, set) => {
                    let key = SetElement::AddressProtocolPort(
                        packet.destination,
                        packet.protocol,
                        packet.port,
                    );
                    if Family::of(packet.destination) != *family
                        || !set_contains(ruleset, set, |e| *e == key)
                    {
                        continue 'rules;
                    }
                }
                Expr::ProtocolPortIn(ports) => {
                    let hit = ports.iter().any(|p| {
                        p.protocol == packet.protocol && (p.start..=p.end).contains(&packet.port)
                    });
                    if !hit {
                        continue 'rules;
                    }
                }
                Expr::PortIn(protocol, ports) => {
                    let hit = *protocol == packet.protocol
                        && ports
                            .iter()
                            .any(|&(start, end)| (start..=end).contains(&packet.port));
                    if !hit {
                        continue 'rules;
                    }
                }
                Expr::InputInterfaceInSet(set) => {
                    // A packet the node sends itself has no input interface (`iifname ""`).
                    let key = SetElement::Interface(packet.input.clone().unwrap_or_default());
                    if !set_contains(ruleset, set, |e| *e == key) {
                        continue 'rules;
                    }
                }
                Expr::InterfaceSourceInSet(family, set) => {
                    let interface = packet.input.clone().unwrap_or_default();
                    let key = SetElement::InterfaceAddress(interface, packet.source);
                    // `ip saddr` only matches IPv4 packets (`ip6 saddr` IPv6 ones).
                    if Family::of(packet.source) != *family
                        || !set_contains(ruleset, set, |e| *e == key)
                    {
                        continue 'rules;
                    }
                }
                Expr::OutputInterfaceNotIn(names) => {
                    if names.contains(&packet.output) {
                        continue 'rules;
                    }
                }
                Expr::Ip6SourceLinkLocal => {
                    let IpAddr::V6(source) = packet.source else {
                        continue 'rules;
                    };
                    if !source.is_unicast_link_local() {
                        continue 'rules;
                    }
                }
                Expr::FamilyIs(family) => {
                    if Family::of(packet.source) != *family {
                        continue 'rules;
                    }
                }
                Expr::Counter => {}
                Expr::Log { prefix, .. } => logged.push(prefix.clone()),
                // The rate limit only decides whether the drop is logged, never the verdict;
                // the first packet of a connection is taken as within the rate.
                Expr::Limit { .. } => {}
                Expr::DispatchBy(field, family, map) => {
                    let addr = address(packet, *field);
                    if Family::of(addr) != *family {
                        continue 'rules;
                    }
                    let map = ruleset.map(map).unwrap_or_else(|| panic!("no map {map}"));
                    match map
                        .elements
                        .iter()
                        .find(|(ip, _)| *ip == addr)
                        .map(|(_, v)| v)
                    {
                        None => continue 'rules,
                        Some(MapVerdict::Jump(target)) => {
                            match run_chain(ruleset, target, packet, logged, final_rule) {
                                Outcome::Continue => continue 'rules,
                                final_verdict => return final_verdict,
                            }
                        }
                        // goto: the called chain's end is the end of the base chain.
                        Some(MapVerdict::Goto(target)) => {
                            return run_chain(ruleset, target, packet, logged, final_rule);
                        }
                    }
                }
                Expr::Accept => {
                    *final_rule = Some(rule.comment.clone());
                    return Outcome::Accept;
                }
                Expr::Drop | Expr::Reject | Expr::RejectWithTcpReset => {
                    *final_rule = Some(rule.comment.clone());
                    return Outcome::Drop;
                }
                Expr::Return => return Outcome::Continue,
                Expr::Jump(target) => {
                    match run_chain(ruleset, target, packet, logged, final_rule) {
                        Outcome::Continue => continue 'rules,
                        final_verdict => return final_verdict,
                    }
                }
                // goto: the called chain's verdict, its return or end included, is this
                // chain's.
                Expr::Goto(target) => {
                    return run_chain(ruleset, target, packet, logged, final_rule);
                }
            }
        }
    }
    Outcome::Continue
}

fn address(packet: &Packet, field: AddrField) -> IpAddr {
    match field {
        AddrField::Source => packet.source,
        AddrField::Destination => packet.destination,
    }
}

fn set_contains(ruleset: &Ruleset, name: &str, hit: impl Fn(&SetElement) -> bool) -> bool {
    let set = ruleset.set(name).unwrap_or_else(|| panic!("no set {name}"));
    set.elements.iter().any(hit)
}

fn element_has_address(element: &SetElement, addr: IpAddr) -> bool {
    match element {
        SetElement::Address(ip) => *ip == addr,
        SetElement::Range(start, end) => match (start, end, addr) {
            (IpAddr::V4(s), IpAddr::V4(e), IpAddr::V4(a)) => (*s..=*e).contains(&a),
            (IpAddr::V6(s), IpAddr::V6(e), IpAddr::V6(a)) => (*s..=*e).contains(&a),
            _ => false,
        },
        SetElement::AddressProtocolPort(..)
        | SetElement::Interface(_)
        | SetElement::InterfaceAddress(..)
        | SetElement::Connection(..) => false,
    }
}
