//! Anti-spoofing and the misrouting guard: what ties each local pod address to its veth.
//!
//! Owns base chain `prerouting` ([`super::ANTI_SPOOF_CHAIN`]) and its sets (`pod_ifaces`,
//! `pod_iface_addrs4`/`6`, `pod_addrs4`/`6`), the `(veth, address)` pairs they are built from,
//! the guards against misrouting (the `pod_dests4`/`6` verdict maps' elements, the `to_<veth>`
//! chains and the `postrouting` rule that looks them up) and the `starting_pods` chain for
//! addresses no pod claims yet. Does not own the rest of `postrouting` and `input`
//! (`base_chains`), the pod chains (`pod_chains`), nor creating the maps and putting the
//! ruleset together ([`super::compile_with_interfaces`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::names;
use super::ruleset::{
    AddrField, Chain, Expr, Family, Hook, MapVerdict, Rule, Set, SetElement, SetKind,
};
use super::{ANTI_SPOOF_CHAIN, STARTING_PODS_CHAIN};
use crate::model::{Pod, PodInterfaces, Snapshot};

/// The set of the local pods' veths.
const POD_INTERFACES_SET: &str = "pod_ifaces";

/// `pod_ifaces` (the veths of local pods), `pod_iface_addrs4`/`6` (the addresses behind each:
/// all of its pod's addresses, whichever of them the route named) and `pod_addrs4`/`6` (every
/// address of those pairs, so a paired address is known wherever it shows up).
pub(super) fn anti_spoof_sets(pairs: &[(String, IpAddr)], sets: &mut BTreeMap<String, Set>) {
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
pub(super) fn veth_pairs(local_pods: &[&Pod], interfaces: &PodInterfaces) -> Vec<(String, IpAddr)> {
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
pub(super) fn destination_guards(
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
pub(super) fn destination_map_name(family: Family) -> String {
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
/// isolated pod (a NetworkPolicy or a ClusterNetworkPolicy selects it) still waiting for its
/// IP; `None` otherwise.
///
/// The CNI plugs a pod in (veth, address, route) before the kubelet reports the pod's IP to
/// the API, and its containers may already send. An isolated pod must not get through that
/// window unpoliced, and its address is not known yet: so while such a pod exists on the node,
/// every address behind a local veth that no pod in the snapshot owns is dropped both ways.
/// Pods that are not isolated can lose their first packets in the same window if they start
/// at the same moment (fail closed); once the API names the owner its own chains apply.
pub(super) fn starting_pods_chain(
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
            && (snapshot
                .policies_in(&pod.key.namespace)
                .any(|p| p.selects(pod))
                || snapshot
                    .cluster_policies()
                    .any(|p| p.subject.covers(snapshot, pod)))
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
pub(super) fn anti_spoof_chain() -> Chain {
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
pub(super) fn misrouted_rule(family: Family) -> Rule {
    Rule {
        exprs: vec![Expr::DispatchBy(
            AddrField::Destination,
            family,
            destination_map_name(family),
        )],
        comment: Some("paired pod address: its veth only".into()),
    }
}
