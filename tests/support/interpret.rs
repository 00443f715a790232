//! A reference interpreter of the compiler's ruleset model, for tests that need no kernel.
//!
//! It walks a node's `postrouting` chain for the first packet of a connection the way nftables
//! would (verdict maps, jump/goto/return, set lookups), with connection tracking state `new`.
//! It checks that the compiled structure means what `evaluate` says; the root suites check
//! that the kernel agrees with real packets.

#![allow(dead_code)]

use std::net::IpAddr;

use kube_nftpol::compile::{AddrField, Expr, Family, MapVerdict, Ruleset, SetElement};
use kube_nftpol::model::Protocol;

/// The first packet of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    pub source: IpAddr,
    pub destination: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    /// The packet comes from the node itself (`fib saddr type local`).
    pub from_node: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Accept,
    Drop,
    /// The chain returned (or ended) without a final verdict.
    Continue,
}

/// Whether the node's postrouting chain lets the packet through.
pub fn postrouting_accepts(ruleset: &Ruleset, packet: &Packet) -> bool {
    run_chain(ruleset, "postrouting", packet) != Outcome::Drop
}

fn run_chain(ruleset: &Ruleset, name: &str, packet: &Packet) -> Outcome {
    let chain = ruleset
        .chain(name)
        .unwrap_or_else(|| panic!("no chain {name}"));
    'rules: for rule in &chain.rules {
        for expr in &rule.exprs {
            match expr {
                Expr::CtEstablishedOrRelated | Expr::Icmpv6NeighborDiscovery => continue 'rules,
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
                Expr::InputInterfaceInSet(_)
                | Expr::InterfaceSourceNotInSet(..)
                | Expr::Ip6SourceNotLinkLocal => {
                    panic!("anti-spoofing matches belong to prerouting, not {name}")
                }
                Expr::Counter | Expr::Log { .. } => {}
                // The rate limit only decides whether the drop is logged; never the verdict.
                Expr::Limit { .. } => continue 'rules,
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
                            match run_chain(ruleset, target, packet) {
                                Outcome::Continue => continue 'rules,
                                final_verdict => return final_verdict,
                            }
                        }
                        // goto: the called chain's end is the end of the base chain.
                        Some(MapVerdict::Goto(target)) => {
                            return run_chain(ruleset, target, packet);
                        }
                    }
                }
                Expr::Accept => return Outcome::Accept,
                Expr::Drop => return Outcome::Drop,
                Expr::Return => return Outcome::Continue,
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
        | SetElement::InterfaceAddress(..) => false,
    }
}
