//! The desired nftables state of one node: a small typed model of exactly the table, maps, sets,
//! chains and rules the compiler emits.
//!
//! It is the contract between [`crate::compile`](mod@crate::compile) (which builds it) and whoever consumes it: the
//! renderers ([`super::render_text`] for `nft -f`, [`super::render_json`] for `nft -j -f`) and
//! the dataplane, which diffs two rulesets by name (set elements, map elements, chain rules) to
//! update the kernel incrementally. Everything is kept sorted so equal inputs give equal values.

use std::net::IpAddr;

use serde::Serialize;

use crate::model::Protocol;

/// The name of the one table the agent owns (family `inet`).
pub const TABLE_NAME: &str = "kube-nftpol";
/// The nftables family of [`TABLE_NAME`].
pub const TABLE_FAMILY: &str = "inet";

/// The complete desired content of the agent's table for one node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Ruleset {
    /// Verdict maps that dispatch packets to per-pod chains, sorted by name.
    pub maps: Vec<VerdictMap>,
    /// Named sets of peer addresses, sorted by name.
    pub sets: Vec<Set>,
    /// Base chains first (in hook order), then per-pod chains sorted by name.
    pub chains: Vec<Chain>,
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Family {
    /// IPv4 (`ip` payload, `ipv4_addr`).
    V4,
    /// IPv6 (`ip6` payload, `ipv6_addr`).
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    /// The nftables address type (`ipv4_addr`, `ipv6_addr`).
    pub fn addr_type(self) -> &'static str {
        match self {
            Self::V4 => "ipv4_addr",
            Self::V6 => "ipv6_addr",
        }
    }

    /// The nftables payload protocol of the address header (`ip`, `ip6`).
    pub fn payload_protocol(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip6",
        }
    }

    /// The suffix used in set and map names (`4` or `6`).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::V4 => "4",
            Self::V6 => "6",
        }
    }
}

/// Which address of the packet a match reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AddrField {
    /// The source address.
    Source,
    /// The destination address.
    Destination,
}

impl AddrField {
    /// The nftables payload field (`saddr`, `daddr`).
    pub fn payload_field(self) -> &'static str {
        match self {
            Self::Source => "saddr",
            Self::Destination => "daddr",
        }
    }
}

/// A map from an address to a verdict (`type ipv4_addr : verdict`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictMap {
    /// Map name.
    pub name: String,
    /// Key family.
    pub family: Family,
    /// Elements sorted by address.
    pub elements: Vec<(IpAddr, MapVerdict)>,
}

/// A verdict stored in a map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MapVerdict {
    /// Run the chain and come back.
    Jump(String),
    /// Run the chain and do not come back.
    Goto(String),
}

/// What a set's elements are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SetKind {
    /// Single addresses (a hash set; pod IPs).
    Addresses,
    /// Address ranges and prefixes (`flags interval`; ipBlocks).
    AddressRanges,
    /// `address . protocol . port` (named ports resolved per destination pod).
    AddressProtocolPort,
    /// Interface names (`ifname`; the family is irrelevant).
    Interfaces,
    /// `interface . address` (anti-spoofing: which addresses sit behind a pod's veth).
    InterfaceAddresses,
    /// `address . address . inet_proto . inet_service . inet_service`, `flags timeout`: the
    /// connections the agent ended, one element per direction's header
    /// ([`SetElement::Connection`]). The compiler emits these sets empty; the agent adds
    /// elements with a timeout at run time, and nothing compares or removes them.
    Connections,
}

/// A named set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Set {
    /// Set name.
    pub name: String,
    /// Address family of the key.
    pub family: Family,
    /// Element kind.
    pub kind: SetKind,
    /// Elements, sorted and (for ranges) disjoint and merged.
    pub elements: Vec<SetElement>,
    /// What the set holds, for people reading the ruleset.
    pub comment: String,
}

/// One set element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum SetElement {
    /// One address.
    Address(IpAddr),
    /// An inclusive address range, rendered as a prefix when it is one.
    Range(IpAddr, IpAddr),
    /// A destination address with protocol and port.
    AddressProtocolPort(IpAddr, Protocol, u16),
    /// An interface name.
    Interface(String),
    /// An interface name with an address it may send from.
    InterfaceAddress(String, IpAddr),
    /// A connection's packets as they arrive: source address, destination address, protocol,
    /// source port, destination port.
    Connection(IpAddr, IpAddr, Protocol, u16, u16),
}

/// A chain; `hook` is set for base chains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// Where a base chain is attached; `None` for regular chains.
    pub hook: Option<Hook>,
    /// Rules in order.
    pub rules: Vec<Rule>,
}

/// A base chain's attachment (type filter, policy accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Hook {
    /// `hook postrouting priority srcnat - 5`: after Service DNAT, before SNAT, for routed and
    /// node-originated packets: IPVS delivers through input/output and skips forward
    /// (kubernetes-sigs/kube-network-policies#46).
    Postrouting,
    /// `hook input priority filter`: packets from pods to the node's own addresses.
    Input,
    /// `hook prerouting priority raw`: anti-spoofing, before connection tracking sees the
    /// packet.
    Prerouting,
    /// `hook forward priority filter`: where a packet of a connection the agent ended is
    /// answered with a reset or an ICMP error (`reject` is not allowed in postrouting).
    Forward,
}

impl Hook {
    /// The nftables hook name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postrouting => "postrouting",
            Self::Input => "input",
            Self::Prerouting => "prerouting",
            Self::Forward => "forward",
        }
    }

    /// The numeric priority (srcnat is 100, filter is 0).
    pub fn priority(self) -> i32 {
        match self {
            Self::Postrouting => 95,
            Self::Input | Self::Forward => 0,
            Self::Prerouting => -300,
        }
    }

    /// The priority as `nft` writes it.
    pub fn priority_text(self) -> &'static str {
        match self {
            Self::Postrouting => "srcnat - 5",
            Self::Input | Self::Forward => "filter",
            Self::Prerouting => "raw",
        }
    }
}

/// A rule: expressions evaluated left to right, and an optional comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Matches, statements and the final verdict, in order.
    pub exprs: Vec<Expr>,
    /// Attribution (`namespace/policy ingress[0]`), at most 128 bytes.
    pub comment: Option<String>,
}

/// A protocol with an inclusive destination port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ProtocolPorts {
    /// The protocol.
    pub protocol: Protocol,
    /// First port.
    pub start: u16,
    /// Last port, inclusive.
    pub end: u16,
}

/// The expressions the compiler uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Expr {
    /// `ct state established,related`.
    CtEstablishedOrRelated,
    /// `ct status ! assured`: a connection conntrack has not seen established both ways: a
    /// new one, or one whose entry was deleted and that conntrack picked up again mid-stream
    /// (a long-lived connection is assured, so its packets skip what follows at the cost of
    /// one compare).
    CtNotAssured,
    /// `ct original ip saddr . ct original ip daddr . meta l4proto . th sport . th dport @set`:
    /// the connection's original addresses (before DNAT: a Service's address, whichever
    /// endpoint the new entry was sent to), protocol and the packet's ports (either direction's),
    /// in a [`SetKind::Connections`] set.
    ConnectionInSet(Family, String),
    /// `meta l4proto tcp`.
    ProtocolIs(Protocol),
    /// `tcp flags syn / syn,ack` (`tcp flags & (syn | ack) == syn`): the first packet of a
    /// TCP handshake, which opens a new connection rather than continuing an old one.
    TcpInitialSyn,
    /// `icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit,
    /// nd-neighbor-advert }`: neighbour discovery must work for isolated pods.
    Icmpv6NeighborDiscovery,
    /// `fib saddr type local`: the packet comes from this node.
    SourceIsLocal,
    /// `ip saddr 10.0.0.1` (or daddr, ip6).
    AddressIs(AddrField, IpAddr),
    /// `ip saddr @set`.
    AddressInSet(AddrField, Family, String),
    /// `ip daddr . meta l4proto . th dport @set`.
    DestinationProtocolPortInSet(Family, String),
    /// `meta l4proto . th dport { tcp . 80, udp . 53-54 }` (sorted, merged): ports of more
    /// than one protocol. With a range among them the kernel looks it up in a pipapo set,
    /// which saves and restores the FPU state on every lookup.
    ProtocolPortIn(Vec<ProtocolPorts>),
    /// `tcp dport 80`, `tcp dport 80-90` or `tcp dport { 80, 8000-8080 }` (sorted, merged):
    /// ports of one protocol, as `(first, last)` ranges. A single port or range is a compare
    /// in the rule, no set lookup; several are one lookup in a one-field set. Rules put it
    /// before their peer lookup: a packet to another port fails at the compare.
    PortIn(Protocol, Vec<(u16, u16)>),
    /// `iifname @set`: the packet entered through one of the set's interfaces.
    InputInterfaceInSet(String),
    /// `iifname . ip saddr @set`: the input interface may send from this source.
    InterfaceSourceInSet(Family, String),
    /// `oifname != "veth1"` (`oifname != { "veth1", "veth2" }` for several): the packet
    /// leaves through none of these interfaces.
    OutputInterfaceNotIn(Vec<String>),
    /// `ip6 saddr fe80::/10`: a link-local source (neighbour discovery uses those; `::`, which
    /// duplicate address detection uses, is an [`Expr::AddressIs`]). A prefix compare, no set
    /// lookup.
    Ip6SourceLinkLocal,
    /// `meta nfproto ipv4` (or `ipv6`): the packet's family, for a rule whose matches do not
    /// imply it. `nft` lists it as written only when no later match of the rule reads that
    /// family's header (it would take it for the implicit dependency of that match and leave
    /// it out of the listing, one expression short of what was asked for).
    FamilyIs(Family),
    /// `counter`.
    Counter,
    /// `limit rate N/second burst B packets`.
    Limit {
        /// Packets per second.
        rate_per_second: u32,
        /// Burst, in packets.
        burst_packets: u32,
    },
    /// `log prefix "..." group G snaplen 128 queue-threshold 1`.
    Log {
        /// The prefix, at most 127 bytes.
        prefix: String,
        /// The NFLOG group.
        group: u16,
    },
    /// `ip saddr vmap @map`.
    DispatchBy(AddrField, Family, String),
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `return`.
    Return,
    /// `jump CHAIN`: run the chain; its `return`, or its end, comes back to the next rule.
    Jump(String),
    /// `goto CHAIN`: the chain's verdict is this one's (its `return`, or its end, goes back to
    /// whoever jumped here).
    Goto(String),
    /// `reject with tcp reset`: drop, and answer a TCP reset.
    RejectWithTcpReset,
    /// `reject` (`icmpx port-unreachable`): drop, and answer an ICMP or ICMPv6 port
    /// unreachable.
    Reject,
}

/// Bytes of each logged packet copied to userspace (headers are enough).
pub const LOG_SNAPLEN: u32 = 128;
/// Deliver each NFLOG record at once instead of batching up to a second (`man nft`, the log
/// statement's `queue-threshold`).
pub const LOG_QUEUE_THRESHOLD: u32 = 1;

impl Ruleset {
    /// A chain by name.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// A set by name.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// A map by name.
    pub fn map(&self, name: &str) -> Option<&VerdictMap> {
        self.maps.iter().find(|m| m.name == name)
    }
}
