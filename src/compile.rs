//! The compiler: a snapshot and a node name in, the node's desired nftables state out.
//!
//! Deterministic and pure: the same snapshot gives a byte-identical ruleset whatever order the
//! objects arrived in. The layout (one `inet` table, see [`ruleset::TABLE_NAME`]):
//!
//! - Base chain `prerouting` (priority raw, before connection tracking) is the anti-spoofing
//!   chain, fed by [`PodInterfaces`] (which host-side veth each local pod address sits behind,
//!   from the node's routes). Set `pod_ifaces` holds the local pods' veths, `pod_iface_addrs4`/
//!   `6` the `veth . address` pairs (each veth with every address of its pod) and
//!   `pod_addrs4`/`6` the addresses of those pairs. It drops a packet that enters from a pod
//!   veth with a source address not paired with that veth (IPv6 link-local and `::` sources
//!   excepted: neighbour discovery and DAD use them), and a packet whose source is a paired
//!   address but which enters through any other interface: a pod that got a reused address
//!   behind a new veth before the agent heard of it cannot send as the address's previous
//!   owner, nor match the peer sets that still hold it. A pod's packet from its own address
//!   and veth is accepted first, after one set lookup (accept ends only this chain); the drops
//!   come after, each testing what the accepts left to decide (see `anti_spoof_chain`).
//! - Base chain `postrouting` (priority srcnat - 5: after Service DNAT, before SNAT) first drops
//!   packets to a paired address that leave through an interface not paired with it (the same
//!   reused address: nothing addressed to the previous owner, not even its established
//!   connections, reaches the new pod): `ip daddr vmap @pod_dests4` jumps to the address's
//!   guard chain `to_<veth>`, `oifname != "<veth>" counter drop`. Then it accepts established
//!   and related packets, neighbour discovery, and packets from the node itself (kubelet
//!   probes); then dispatches on the source address through the `egress4`/`egress6` verdict
//!   maps and on the destination through `ingress4`/`ingress6`. Base chain `input` does the
//!   egress dispatch for packets from pods to the node's own addresses.
//!   With no interface known (`kube-nftpol compile`, bridge CNIs) the anti-spoofing sets are
//!   empty and none of these drops can match; on a bridge, `starting_pods` still covers the
//!   bridge's addresses ([`compile_with_bridged`]).
//! - One chain per isolated pod and direction (`in_<ns>_<pod>`, `eg_<ns>_<pod>`) on this node:
//!   traffic to itself first, then one rule per policy rule and address set (counted, commented
//!   with the policy), then a rate-limited NFLOG rule and a counted drop. Egress chains `return`
//!   on allow so the destination's ingress chain still runs; ingress chains `accept`. A pod of
//!   an audited namespace ([`crate::model::Enforcement::Audit`], or [`Options::audit_all`])
//!   ends its chains with the NFLOG rule under the audit prefix and a counted allow instead.
//! - Peers live in named sets shared by every pod a policy rule applies to:
//!   `np_<ns>_<policy>_<dir><rule>_pods4` (pod IPs), `..._cidr4` (ipBlocks, interval set) and
//!   `..._named4` (`address . protocol . port` for egress named ports, resolved per destination
//!   pod), with `6` twins. Port lists are anonymous `protocol . port` sets in the rule.
//!
//! Per packet: one verdict-map lookup per direction, then only the rules of the policies that
//! select that pod, each one set lookup. Nothing walks the cluster's pods or policies.

mod names;
mod peers;
pub mod ranges;
pub mod render_json;
pub mod render_text;
pub mod ruleset;

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{Enforcement, Pod, Protocol, Snapshot};
use crate::policy::{Direction, PeerKind, Policy, PortSpec, Rule as PolicyRule};

pub use ruleset::{
    AddrField, Chain, Expr, Family, Hook, MapVerdict, ProtocolPorts, Rule, Ruleset, Set,
    SetElement, SetKind, TABLE_FAMILY, TABLE_NAME, VerdictMap,
};

/// Knobs that change the emitted ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// NFLOG group the default-deny rules log to.
    pub nflog_group: u16,
    /// Logged denied packets per second, per pod and direction (the kernel drops the rest from
    /// the log, never from the drop counter).
    pub log_rate_per_second: u32,
    /// Burst allowed above the rate, in packets.
    pub log_burst_packets: u32,
    /// Audit every namespace, whatever its annotation (`agent --audit`): default deny logs
    /// and accepts instead of dropping.
    pub audit_all: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nflog_group: 100,
            log_rate_per_second: 10,
            log_burst_packets: 20,
            audit_all: false,
        }
    }
}

/// The NFLOG prefix of default-deny drops: `knp:deny:<direction>:<namespace>/<pod>`.
pub const LOG_PREFIX: &str = "knp:deny:";
/// The NFLOG prefix of packets an audited pod's default deny let through:
/// `knp:audit:<direction>:<namespace>/<pod>`.
pub const AUDIT_LOG_PREFIX: &str = "knp:audit:";
/// The comment of the counted drop that ends an enforced pod chain
/// (`default deny ingress <ns>/<pod>`).
pub const DENY_COMMENT: &str = "default deny";
/// The comment of the counted accept (or return) that ends an audited pod chain
/// (`audit ingress <ns>/<pod>`).
pub const AUDIT_COMMENT: &str = "audit";
/// nftables caps log prefixes at 127 bytes.
const MAX_LOG_PREFIX: usize = 127;
/// nftables caps rule comments at 128 bytes.
const MAX_COMMENT: usize = 128;

/// The verdict-map name for a direction and family (`ingress4`, `egress6`, ...).
pub fn dispatch_map_name(direction: Direction, family: Family) -> String {
    format!("{}{}", direction.as_str(), family.suffix())
}

/// The chain name of a pod's direction (`in_<ns>_<pod>`, `eg_<ns>_<pod>`).
pub fn pod_chain_name(pod: &Pod, direction: Direction) -> String {
    let dir = match direction {
        Direction::Ingress => "in",
        Direction::Egress => "eg",
    };
    names::object_name(dir, &[&pod.key.namespace, &pod.key.name], "")
}

/// The host-side interface of each local pod address, as the node's routes say
/// (`10.244.1.5 dev veth1a2b3c4d`). Learned by [`crate::dataplane::interfaces`].
pub type PodInterfaces = BTreeMap<IpAddr, String>;

/// Names of the anti-spoofing chain and sets.
pub const ANTI_SPOOF_CHAIN: &str = "prerouting";
const POD_INTERFACES_SET: &str = "pod_ifaces";

/// Compiles the desired ruleset of `node`, without anti-spoofing entries (no interface is
/// known): what `kube-nftpol compile` prints.
pub fn compile(snapshot: &Snapshot, node: &str, options: &Options) -> Ruleset {
    compile_with_interfaces(snapshot, node, &PodInterfaces::new(), options)
}

/// Compiles the desired ruleset of `node`; `interfaces` says which veth each local pod sits
/// behind, so packets entering from that veth with another source address are dropped.
pub fn compile_with_interfaces(
    snapshot: &Snapshot,
    node: &str,
    interfaces: &PodInterfaces,
    options: &Options,
) -> Ruleset {
    compile_with_bridged(snapshot, node, interfaces, &[], options)
}

/// [`compile_with_interfaces`], with `bridged`: the addresses behind the node's bridges (a
/// bridge CNI's pod range, [`crate::dataplane::interfaces::State::bridged_addresses`]). No
/// veth names those pods, so anti-spoofing and the reused-address guards cannot cover them;
/// `starting_pods` does, by address: while an isolated pod of the node waits for its IP, the
/// bridged addresses no pod owns are dropped both ways, as the unclaimed veths' are.
pub fn compile_with_bridged(
    snapshot: &Snapshot,
    node: &str,
    interfaces: &PodInterfaces,
    bridged: &[IpAddr],
    options: &Options,
) -> Ruleset {
    let mut sets = BTreeMap::new();
    let mut maps: BTreeMap<String, Vec<(IpAddr, MapVerdict)>> = BTreeMap::new();
    for direction in [Direction::Ingress, Direction::Egress] {
        for family in Family::ALL {
            maps.insert(dispatch_map_name(direction, family), Vec::new());
        }
    }
    for family in Family::ALL {
        maps.insert(destination_map_name(family), Vec::new());
    }

    let local_pods: Vec<&Pod> = snapshot
        .pods()
        .filter(|p| p.node.as_deref() == Some(node) && p.is_policy_endpoint())
        .collect();
    let pairs = veth_pairs(&local_pods, interfaces);
    anti_spoof_sets(&pairs, &mut sets);
    let mut pod_chains = destination_guards(&pairs, &mut maps);
    for pod in local_pods {
        for direction in [Direction::Ingress, Direction::Egress] {
            let isolating: Vec<&Policy> = snapshot
                .policies_in(&pod.key.namespace)
                .filter(|p| p.rules(direction).is_some() && p.selects(pod))
                .collect();
            if isolating.is_empty() {
                continue;
            }
            let chain = pod_chain(snapshot, pod, direction, &isolating, options, &mut sets);
            for ip in &pod.ips {
                let verdict = match direction {
                    Direction::Ingress => MapVerdict::Goto(chain.name.clone()),
                    Direction::Egress => MapVerdict::Jump(chain.name.clone()),
                };
                if let Some(map) = maps.get_mut(&dispatch_map_name(direction, Family::of(*ip))) {
                    map.push((*ip, verdict));
                }
            }
            pod_chains.push(chain);
        }
    }
    if let Some((chain, unclaimed)) = starting_pods_chain(snapshot, node, interfaces, bridged) {
        for ip in unclaimed {
            for (direction, verdict) in [
                (Direction::Ingress, MapVerdict::Goto(chain.name.clone())),
                (Direction::Egress, MapVerdict::Jump(chain.name.clone())),
            ] {
                if let Some(map) = maps.get_mut(&dispatch_map_name(direction, Family::of(ip))) {
                    map.push((ip, verdict));
                }
            }
        }
        pod_chains.push(chain);
    }

    pod_chains.sort_by(|a, b| a.name.cmp(&b.name));
    let mut chains = vec![anti_spoof_chain()];
    chains.extend(base_chains());
    chains.extend(pod_chains);
    let maps = maps
        .into_iter()
        .map(|(name, mut elements)| {
            elements.sort_by_key(|(ip, _)| *ip);
            // Two pods claiming one IP: keep the first by key (already first in the list).
            elements.dedup_by(|a, b| a.0 == b.0);
            let family = if name.ends_with('4') {
                Family::V4
            } else {
                Family::V6
            };
            VerdictMap {
                name,
                family,
                elements,
            }
        })
        .collect();
    Ruleset {
        maps,
        sets: sets.into_values().collect(),
        chains,
    }
}

/// `pod_ifaces` (the veths of local pods), `pod_iface_addrs4`/`6` (the addresses behind each:
/// all of its pod's addresses, whichever of them the route named) and `pod_addrs4`/`6` (every
/// address of those pairs, so a paired address is known wherever it shows up).
fn anti_spoof_sets(pairs: &[(String, IpAddr)], sets: &mut BTreeMap<String, Set>) {
    let mut veths: Vec<SetElement> = pairs
        .iter()
        .map(|(veth, _)| SetElement::Interface(veth.clone()))
        .collect();
    veths.dedup();
    let mut add = |name: String, family, kind, elements, comment: &str| {
        let set = Set {
            name: name.clone(),
            family,
            kind,
            elements,
            comment: comment.into(),
        };
        sets.insert(name, set);
    };
    add(
        POD_INTERFACES_SET.into(),
        Family::V4,
        SetKind::Interfaces,
        veths,
        "veths of this node's pods",
    );
    for family in Family::ALL {
        let family_pairs: Vec<(&String, IpAddr)> = pairs
            .iter()
            .filter(|(_, ip)| Family::of(*ip) == family)
            .map(|(veth, ip)| (veth, *ip))
            .collect();
        // Link-scoped IPv6 addresses are unique per link only (and the spoofing rule lets
        // them through anyway): they say nothing about which veth a packet must use.
        let mut addresses: Vec<SetElement> = family_pairs
            .iter()
            .map(|(_, ip)| *ip)
            .filter(|ip| !is_link_scoped(*ip))
            .map(SetElement::Address)
            .collect();
        addresses.sort();
        addresses.dedup();
        add(
            pod_addresses_set_name(family),
            family,
            SetKind::Addresses,
            addresses,
            "pod addresses paired with a veth",
        );
        let pairs = family_pairs
            .into_iter()
            .map(|(veth, ip)| SetElement::InterfaceAddress(veth.clone(), ip))
            .collect();
        add(
            anti_spoof_set_name(family),
            family,
            SetKind::InterfaceAddresses,
            pairs,
            "addresses behind each pod veth",
        );
    }
}

/// Every `(veth, address)` pair of the local pods, sorted: each veth a pod's addresses sit
/// behind (the routes say which), with every address of that pod. Veths with names `nft`
/// could not read quoted are left out.
fn veth_pairs(local_pods: &[&Pod], interfaces: &PodInterfaces) -> Vec<(String, IpAddr)> {
    let mut pairs = Vec::new();
    for pod in local_pods {
        let mut pod_veths: Vec<&String> = pod
            .ips
            .iter()
            .filter_map(|ip| interfaces.get(ip))
            .filter(|name| is_safe_interface_name(name))
            .collect();
        pod_veths.sort();
        pod_veths.dedup();
        for veth in pod_veths {
            for ip in &pod.ips {
                pairs.push((veth.clone(), *ip));
            }
        }
    }
    pairs.sort();
    pairs.dedup();
    pairs
}

/// The guards of `postrouting` against misrouting: each paired address (link-scoped ones
/// excepted, as in `pod_addrs4`/`6`) maps in `pod_dests4`/`6` to a chain `to_<veth>` that
/// drops the packet unless it leaves through that veth (through one of them, for an address
/// paired with several). One map lookup per packet on its destination address, then one
/// compare for packets to a local pod: the packets of every connection of a node's pods pass
/// here, established ones included.
fn destination_guards(
    pairs: &[(String, IpAddr)],
    maps: &mut BTreeMap<String, Vec<(IpAddr, MapVerdict)>>,
) -> Vec<Chain> {
    let mut veths_of: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for (veth, ip) in pairs.iter().filter(|(_, ip)| !is_link_scoped(*ip)) {
        veths_of.entry(*ip).or_default().push(veth.clone());
    }
    let mut chains: BTreeMap<String, Chain> = BTreeMap::new();
    for (ip, veths) in veths_of {
        let parts: Vec<&str> = veths.iter().map(String::as_str).collect();
        let name = names::object_name("to", &parts, "");
        if let Some(map) = maps.get_mut(&destination_map_name(Family::of(ip))) {
            map.push((ip, MapVerdict::Jump(name.clone())));
        }
        chains.entry(name.clone()).or_insert_with(|| Chain {
            name,
            hook: None,
            rules: vec![Rule {
                exprs: vec![Expr::OutputInterfaceNotIn(veths), Expr::Counter, Expr::Drop],
                comment: Some(MISROUTED_COMMENT.into()),
            }],
        });
    }
    chains.into_values().collect()
}

/// The comment of the guards' drops.
const MISROUTED_COMMENT: &str = "pod address behind another interface";

/// `pod_dests4`/`6`: paired pod addresses to their guard chain.
fn destination_map_name(family: Family) -> String {
    format!("pod_dests{}", family.suffix())
}

fn anti_spoof_set_name(family: Family) -> String {
    format!("pod_iface_addrs{}", family.suffix())
}

fn pod_addresses_set_name(family: Family) -> String {
    format!("pod_addrs{}", family.suffix())
}

/// `::` and `fe80::/10`, the sources `prerouting` lets through whatever their interface.
fn is_link_scoped(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => false,
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_unicast_link_local(),
    }
}

/// Interface names go into nft scripts quoted; anything beyond the usual characters is left
/// out rather than escaped (Linux names are at most 15 bytes).
fn is_safe_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// The chain that drops the traffic of pod veths no pod claims yet, and those veths' addresses
/// (and the addresses behind the node's bridges that no pod claims), when the node has an
/// isolated pod still waiting for its IP; `None` otherwise.
///
/// The CNI plugs a pod in (veth, address, route) before the kubelet reports the pod's IP to
/// the API, and its containers may already send. An isolated pod must not get through that
/// window unpoliced, and its address is not known yet: so while such a pod exists on the node,
/// every address behind a local veth that no pod in the snapshot owns is dropped both ways.
/// Pods that are not isolated can lose their first packets in the same window if they start
/// at the same moment (fail closed); once the API names the owner its own chains apply.
fn starting_pods_chain(
    snapshot: &Snapshot,
    node: &str,
    interfaces: &PodInterfaces,
    bridged: &[IpAddr],
) -> Option<(Chain, Vec<IpAddr>)> {
    // Cheap test first: most nodes have no isolated pod waiting for its IP.
    let isolated_pod_waits = snapshot.pods().any(|pod| {
        pod.node.as_deref() == Some(node)
            && pod.phase == crate::model::PodPhase::Active
            && !pod.host_network
            && pod.ips.is_empty()
            && snapshot
                .policies_in(&pod.key.namespace)
                .any(|p| p.selects(pod))
    });
    if !isolated_pod_waits {
        return None;
    }
    let owned: std::collections::HashSet<IpAddr> = snapshot
        .pods()
        .filter(|p| p.is_policy_endpoint())
        .flat_map(|p| p.ips.iter().copied())
        .collect();
    let mut unclaimed: Vec<IpAddr> = interfaces
        .keys()
        .chain(bridged)
        .filter(|ip| !owned.contains(ip))
        .copied()
        .collect();
    unclaimed.sort();
    unclaimed.dedup();
    if unclaimed.is_empty() {
        return None;
    }
    let chain = Chain {
        name: STARTING_PODS_CHAIN.into(),
        hook: None,
        rules: vec![Rule {
            exprs: vec![Expr::Counter, Expr::Drop],
            comment: Some("pod without a reported IP while an isolated pod starts".into()),
        }],
    };
    Some((chain, unclaimed))
}

/// The chain of [`starting_pods_chain`].
pub const STARTING_PODS_CHAIN: &str = "starting_pods";

/// Drops packets that enter from a pod's veth with a source address that is not the pod's,
/// and packets from a pod's address that enter through anything but its veth.
///
/// Every packet that enters the node walks this chain, so the common case comes first: a pod
/// sending from its own address through its own veth is accepted after one set lookup
/// (`iifname . ip saddr @pod_iface_addrs4`). `accept` in a base chain only ends that chain
/// (`man nft`, VERDICT STATEMENT: the packet goes on to the next base chain or hook, here
/// connection tracking, `postrouting` and `input`), and the chain's policy is accept anyway,
/// so accepting a packet no drop rule below would match changes nothing for it. The rules
/// below see only packets whose `interface . source` pair is not paired, which is the second
/// half of each drop condition, so they test the first half alone:
///
/// 1. `iifname . ip saddr @pod_iface_addrs4 accept`, and the IPv6 twin: a paired source from
///    its veth. A rule with `ip saddr` tests the family first (nft adds `meta nfproto ipv4`
///    before the concatenation), so the other family never does this lookup.
/// 2. `ip6 saddr :: accept`, `ip6 saddr fe80::/10 accept`: link-scoped IPv6 sources, which
///    neighbour discovery and DAD use and which no rule below may drop (`pod_addrs6` never
///    holds one). Prefix compares, no lookup.
/// 3. `meta nfproto ipv4 iifname @pod_ifaces counter drop` ("spoofed source address"), and
///    the IPv6 twin: anything else from a pod veth (an IPv6 packet here is not link-scoped).
///    The explicit family keeps one counter per family as before, and keeps the lookup
///    behind it; nothing after it in the rule reads the IP header, so nft lists it as
///    written (see [`Expr::FamilyIs`]).
/// 4. `ip saddr @pod_addrs4 counter drop` ("pod address from another interface"), and the
///    IPv6 twin: a paired address through any other interface. Any input interface, not
///    only pod veths: the reused address arrives through a veth the agent has not paired yet
///    (or, forged, through the uplink).
///
/// A packet is counted by the same drop rule as when each rule tested both halves (the rules
/// keep their order and comments), and the same packets are dropped.
fn anti_spoof_chain() -> Chain {
    let paired = |family: Family| Rule {
        exprs: vec![
            Expr::InterfaceSourceInSet(family, anti_spoof_set_name(family)),
            Expr::Accept,
        ],
        comment: Some("own address from own veth".into()),
    };
    let link_scoped = |matches: Expr| Rule {
        exprs: vec![matches, Expr::Accept],
        comment: Some("link-scoped source".into()),
    };
    let spoofed = |family: Family| Rule {
        exprs: vec![
            Expr::FamilyIs(family),
            Expr::InputInterfaceInSet(POD_INTERFACES_SET.into()),
            Expr::Counter,
            Expr::Drop,
        ],
        comment: Some("spoofed source address".into()),
    };
    let elsewhere = |family: Family| Rule {
        exprs: vec![
            Expr::AddressInSet(AddrField::Source, family, pod_addresses_set_name(family)),
            Expr::Counter,
            Expr::Drop,
        ],
        comment: Some("pod address from another interface".into()),
    };
    let mut rules: Vec<Rule> = Family::ALL.map(paired).into();
    rules.extend([
        link_scoped(Expr::AddressIs(
            AddrField::Source,
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        )),
        link_scoped(Expr::Ip6SourceLinkLocal),
    ]);
    rules.extend(Family::ALL.map(spoofed));
    rules.extend(Family::ALL.map(elsewhere));
    Chain {
        name: ANTI_SPOOF_CHAIN.into(),
        hook: Some(Hook::Prerouting),
        rules,
    }
}

/// Sends packets to a paired pod address to its guard ([`destination_guards`]), which drops
/// them unless they leave through the veth paired with it: the address moved to a veth the
/// agent has not paired yet.
///
/// First in `postrouting`, before `ct state established,related accept`: the previous
/// owner's connections outlive it in conntrack (connections to it, and replies to the ones it
/// opened, masqueraded or not), and their packets must not reach whoever holds the address
/// now. Before "from this node" too, so the node's own packets (kubelet probes) do not reach
/// a pod the agent has not paired either (its sockets get EPERM); that lasts until the agent
/// pairs the new veth. Nothing else is affected: packets to a correctly paired pod leave
/// through its veth, whether routed or generated by the node (postrouting sees both,
/// `oifname` is the veth); replies to the node and to hostNetwork pods go to node addresses;
/// packets to pods of other nodes leave through the uplink with addresses never paired here.
fn misrouted_rule(family: Family) -> Rule {
    Rule {
        exprs: vec![Expr::DispatchBy(
            AddrField::Destination,
            family,
            destination_map_name(family),
        )],
        comment: Some("paired pod address: its veth only".into()),
    }
}

fn base_chains() -> Vec<Chain> {
    let dispatch = |field, direction| {
        Family::ALL.map(|family| Rule {
            exprs: vec![Expr::DispatchBy(
                field,
                family,
                dispatch_map_name(direction, family),
            )],
            comment: None,
        })
    };
    let always = |comment: &str, exprs: Vec<Expr>| Rule {
        exprs,
        comment: Some(comment.into()),
    };
    let established = always("replies", vec![Expr::CtEstablishedOrRelated, Expr::Accept]);
    let nd = always(
        "neighbour discovery",
        vec![Expr::Icmpv6NeighborDiscovery, Expr::Accept],
    );
    let from_node = always("from this node", vec![Expr::SourceIsLocal, Expr::Accept]);

    let mut postrouting: Vec<Rule> = Family::ALL.map(misrouted_rule).into();
    postrouting.extend([established.clone(), nd.clone(), from_node]);
    postrouting.extend(dispatch(AddrField::Source, Direction::Egress));
    postrouting.extend(dispatch(AddrField::Destination, Direction::Ingress));
    let mut input = vec![established, nd];
    input.extend(dispatch(AddrField::Source, Direction::Egress));
    vec![
        Chain {
            name: "postrouting".into(),
            hook: Some(Hook::Postrouting),
            rules: postrouting,
        },
        Chain {
            name: "input".into(),
            hook: Some(Hook::Input),
            rules: input,
        },
    ]
}

fn pod_chain(
    snapshot: &Snapshot,
    pod: &Pod,
    direction: Direction,
    isolating: &[&Policy],
    options: &Options,
    sets: &mut BTreeMap<String, Set>,
) -> Chain {
    let (peer_field, allow) = match direction {
        Direction::Ingress => (AddrField::Source, Expr::Accept),
        Direction::Egress => (AddrField::Destination, Expr::Return),
    };
    let mut rules: Vec<Rule> = pod
        .ips
        .iter()
        .map(|ip| Rule {
            exprs: vec![Expr::AddressIs(peer_field, *ip), allow.clone()],
            comment: Some("to itself".into()),
        })
        .collect();

    for policy in isolating {
        for rule in policy.rules(direction).unwrap_or_default() {
            let comment = truncate(
                format!("{} {}[{}]", policy.key, direction, rule.index),
                MAX_COMMENT,
            );
            let compiled = RuleCompiler {
                snapshot,
                policy,
                rule,
                direction,
                target: pod,
                sets: &mut *sets,
                peers: None,
            };
            for exprs in compiled.matchers() {
                let mut exprs = exprs;
                exprs.push(Expr::Counter);
                exprs.push(allow.clone());
                rules.push(Rule {
                    exprs,
                    comment: Some(comment.clone()),
                });
            }
        }
    }

    let audited =
        options.audit_all || snapshot.enforcement(&pod.key.namespace) == Enforcement::Audit;
    rules.extend(default_deny(pod, direction, audited, options));
    Chain {
        name: pod_chain_name(pod, direction),
        hook: None,
        rules,
    }
}

/// The end of a pod chain, for packets no policy rule allowed: a rate-limited NFLOG rule and a
/// counted drop; for an audited pod, an NFLOG rule with the audit prefix and a counted accept
/// instead (`return` for egress, so the destination's ingress chain still decides, as for an
/// allowed packet).
fn default_deny(pod: &Pod, direction: Direction, audited: bool, options: &Options) -> [Rule; 2] {
    let (log_prefix, comment, verdict) = match (audited, direction) {
        (false, _) => (LOG_PREFIX, DENY_COMMENT, Expr::Drop),
        (true, Direction::Ingress) => (AUDIT_LOG_PREFIX, AUDIT_COMMENT, Expr::Accept),
        (true, Direction::Egress) => (AUDIT_LOG_PREFIX, AUDIT_COMMENT, Expr::Return),
    };
    let prefix = truncate(
        format!(
            "{log_prefix}{}:{}/{}",
            direction, pod.key.namespace, pod.key.name
        ),
        MAX_LOG_PREFIX,
    );
    [
        Rule {
            exprs: vec![
                Expr::Limit {
                    rate_per_second: options.log_rate_per_second,
                    burst_packets: options.log_burst_packets,
                },
                Expr::Log {
                    prefix,
                    group: options.nflog_group,
                },
            ],
            comment: Some(format!("log {comment}")),
        },
        Rule {
            exprs: vec![Expr::Counter, verdict],
            comment: Some(truncate(
                format!("{comment} {direction} {}", pod.key),
                MAX_COMMENT,
            )),
        },
    ]
}

/// Compiles one policy rule for one target pod into match lists (one per emitted rule).
struct RuleCompiler<'a> {
    snapshot: &'a Snapshot,
    policy: &'a Policy,
    rule: &'a PolicyRule,
    direction: Direction,
    /// The pod whose chain this is.
    target: &'a Pod,
    sets: &'a mut BTreeMap<String, Set>,
    /// The rule's pod peers once looked up: the pods set and the named-port set share them.
    peers: Option<Vec<&'a Pod>>,
}

impl<'a> RuleCompiler<'a> {
    fn matchers(mut self) -> Vec<Vec<Expr>> {
        let peer_field = match self.direction {
            Direction::Ingress => AddrField::Source,
            Direction::Egress => AddrField::Destination,
        };
        // Ports: `None` means any protocol and port.
        let (numbered, named) = self.ports();
        let mut out = Vec::new();

        let port_match = match (&self.rule.ports, numbered.is_empty()) {
            (None, _) => Some(None),
            (Some(_), false) => Some(Some(port_expr(numbered))),
            (Some(_), true) => None,
        };
        if let Some(port_match) = port_match {
            // One protocol's ports are compares (or one small lookup): they go first, so a
            // packet to another port skips the peer lookup. Ports of several protocols are a
            // concatenated set lookup, left after the peer.
            let with_ports = |peer: Vec<Expr>| match &port_match {
                Some(ports @ Expr::PortIn(..)) => {
                    std::iter::once(ports.clone()).chain(peer).collect()
                }
                other => peer.into_iter().chain(other.clone()).collect::<Vec<_>>(),
            };
            match &self.rule.peers {
                None => out.push(with_ports(Vec::new())),
                Some(peers) => {
                    let has_pods = peers
                        .iter()
                        .any(|p| matches!(p.kind, PeerKind::Pods { .. }));
                    if has_pods {
                        let sets = self.pod_sets();
                        for (family, set) in Family::ALL.into_iter().zip(sets) {
                            out.push(with_ports(vec![Expr::AddressInSet(
                                peer_field, family, set,
                            )]));
                        }
                    }
                    for family in Family::ALL {
                        if let Some(set) = self.cidr_set(family) {
                            out.push(with_ports(vec![Expr::AddressInSet(
                                peer_field, family, set,
                            )]));
                        }
                    }
                }
            }
        }
        if !named.is_empty() {
            let sets = self.named_port_sets(&named);
            for (family, set) in Family::ALL.into_iter().zip(sets) {
                out.push(vec![Expr::DestinationProtocolPortInSet(family, set)]);
            }
        }
        out
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
        let set = Set {
            name: name.to_owned(),
            family,
            kind,
            elements,
            comment,
        };
        self.sets.insert(name.to_owned(), set);
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
            let peers = self.peer_pods();
            let elements = Family::ALL.map(|family| {
                let mut elements: Vec<SetElement> = peers
                    .iter()
                    .flat_map(|pod| pod.ips.iter().copied())
                    .filter(|ip| Family::of(*ip) == family)
                    .map(SetElement::Address)
                    .collect();
                elements.sort();
                elements.dedup();
                elements
            });
            for ((family, name), elements) in Family::ALL.into_iter().zip(&names).zip(elements) {
                self.insert_set(name, family, SetKind::Addresses, elements, "pod peers");
            }
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
            let elements = ranges::merge(ranges)
                .into_iter()
                .map(|r| {
                    let (start, end) = r.bounds(family);
                    SetElement::Range(start, end)
                })
                .collect();
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
        elements.sort();
        elements.dedup();
        for (family, name) in Family::ALL.into_iter().zip(&names) {
            let elements = elements
                .iter()
                .filter(|e| matches!(e, SetElement::AddressProtocolPort(ip, ..) if Family::of(*ip) == family))
                .cloned()
                .collect();
            let kind = SetKind::AddressProtocolPort;
            self.insert_set(name, family, kind, elements, "named ports");
        }
        names
    }
}

/// The match for merged numbered ports: [`Expr::PortIn`] when they are all of one protocol,
/// [`Expr::ProtocolPortIn`] otherwise.
fn port_expr(ports: Vec<ProtocolPorts>) -> Expr {
    match ports.first().map(|p| p.protocol) {
        Some(protocol) if ports.iter().all(|p| p.protocol == protocol) => {
            Expr::PortIn(protocol, ports.iter().map(|p| (p.start, p.end)).collect())
        }
        _ => Expr::ProtocolPortIn(ports),
    }
}

/// Sorts port ranges and merges overlapping or adjacent ones of the same protocol.
fn merge_ports(mut ports: Vec<ProtocolPorts>) -> Vec<ProtocolPorts> {
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

/// Truncates at a char boundary to at most `max` bytes.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests;
