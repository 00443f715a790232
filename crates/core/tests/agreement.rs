//! The compiled ruleset means what `evaluate` says, for every upstream conformance probe.
//!
//! Each case is compiled for two nodes with the pods spread over both (and for one node
//! holding them all); every probe's first packet is run through the source node's and the
//! destination node's `prerouting` and `postrouting` chains by the reference interpreter in
//! support/interpret.rs and compared with `evaluate`. Each layout is wired twice: routed (every
//! pod behind a veth of its own that the agent knows, so the anti-spoofing rules are live and
//! must let correctly wired pods through) and bridged (no veth known, as `kube-nftpol compile`
//! or a bridge CNI). The root suites repeat this with real packets in the kernel.
//!
//! Audit mode: `evaluate` gives the policy's verdict whatever the namespace's mode; the
//! ruleset of an audited pod accepts what its policies deny and logs it with the audit prefix.
//! The audit tests check that mapping exactly: the interpreter reports each side's default
//! deny by its log prefix, and a side is audit-denied (or deny-logged, when enforced) exactly
//! when `evaluate` denies it.

use kube_nftpol_test_support as support;

use std::collections::BTreeMap;
use std::net::IpAddr;

use kube_nftpol_core::compile::{self, Options, Ruleset};

use kube_nftpol_core::evaluate;
use kube_nftpol_core::model::{Enforcement, ObjectKey, PodInterfaces, Protocol, Snapshot};
use kube_nftpol_core::policy::{DirectionVerdict, Endpoint, Verdict};
use support::conformance::{self, Case};
use support::interpret::{Packet, Trace, dropped_by, node_accepts, trace};
use support::rng::Rng;

/// The interface between nodes.
const UPLINK: &str = "eth0";
/// The one bridge every pod of a node sits behind in [`Wiring::Bridged`].
const BRIDGE: &str = "cni0";

/// How a node's pods are plugged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wiring {
    /// A routed veth per pod (kindnet, ptp), named in the agent's [`PodInterfaces`]; with
    /// `v4_route_only`, dual-stack pods' IPv6 routes are left out of it (their veth is still
    /// known through the IPv4 route).
    Routed { v4_route_only: bool },
    /// All pods behind one bridge: the agent knows no veth.
    Bridged,
}

/// A node: its ruleset and the interface each of its pod addresses really sits behind.
struct Node {
    ruleset: Ruleset,
    links: BTreeMap<IpAddr, String>,
}

impl Node {
    /// The interface leading to `ip` from this node: its pod's, or the uplink.
    fn interface(&self, ip: IpAddr) -> String {
        self.links
            .get(&ip)
            .cloned()
            .unwrap_or_else(|| UPLINK.into())
    }
}

/// Every node's ruleset and links; pod `i` of the snapshot is behind `veth<i>` when routed.
fn nodes(snapshot: &Snapshot, names: &[&str], wiring: Wiring) -> BTreeMap<String, Node> {
    nodes_with(snapshot, names, wiring, &Options::default())
}

/// [`nodes`], compiled with `options`.
fn nodes_with(
    snapshot: &Snapshot,
    names: &[&str],
    wiring: Wiring,
    options: &Options,
) -> BTreeMap<String, Node> {
    names
        .iter()
        .map(|name| {
            let mut links = BTreeMap::new();
            let mut interfaces = PodInterfaces::new();
            let local = snapshot
                .pods()
                .enumerate()
                .filter(|(_, p)| p.node.as_deref() == Some(*name));
            for (i, pod) in local {
                let link = match wiring {
                    Wiring::Routed { .. } => format!("veth{i}"),
                    Wiring::Bridged => BRIDGE.to_owned(),
                };
                for ip in &pod.ips {
                    links.insert(*ip, link.clone());
                    let known = match wiring {
                        Wiring::Routed { v4_route_only } => !v4_route_only || ip.is_ipv4(),
                        Wiring::Bridged => false,
                    };
                    if known {
                        interfaces.insert(*ip, link.clone());
                    }
                }
            }
            let ruleset = compile::compile_with_interfaces(snapshot, name, &interfaces, options);
            ((*name).to_owned(), Node { ruleset, links })
        })
        .collect()
}

/// Whether the first packet from pod address `source` on `src_node` to pod address
/// `destination` on `dst_node` gets through: it leaves the source pod through its link,
/// crosses the uplink between the nodes when they differ, and enters the destination pod
/// through its link.
fn pod_to_pod_accepted(
    nodes: &BTreeMap<String, Node>,
    source: (&str, IpAddr),
    destination: (&str, IpAddr),
    protocol: Protocol,
    port: u16,
) -> bool {
    pod_to_pod_trace(nodes, source, destination, protocol, port)
        .dropped_by
        .is_none()
}

/// What the nodes on the way did with the packet: the chain that dropped it, if one did, and
/// the log prefixes it met (source node first).
fn pod_to_pod_trace(
    nodes: &BTreeMap<String, Node>,
    (src_node, source): (&str, IpAddr),
    (dst_node, destination): (&str, IpAddr),
    protocol: Protocol,
    port: u16,
) -> Trace {
    let at = |node: &Node, input: String| Packet {
        source,
        destination,
        protocol,
        port,
        from_node: false,
        input: Some(input),
        output: node.interface(destination),
    };
    let first = &nodes[src_node];
    let mut seen = trace(&first.ruleset, &at(first, first.interface(source)));
    if seen.dropped_by.is_some() || src_node == dst_node {
        return seen;
    }
    let second = &nodes[dst_node];
    let mut then = trace(&second.ruleset, &at(second, UPLINK.into()));
    seen.logged.append(&mut then.logged);
    seen.dropped_by = then.dropped_by;
    seen
}

fn node_of(snapshot: &Snapshot, endpoint: &Endpoint) -> (String, IpAddr) {
    let Endpoint::Pod(key) = endpoint else {
        panic!("conformance probes are pod to pod")
    };
    let pod = snapshot.pod(key).expect("pod");
    (pod.node.clone().expect("node"), pod.ips[0])
}

fn check_case(
    case: &Case,
    layout: &str,
    node_of_pod: impl Fn(usize) -> String,
    mismatches: &mut Vec<String>,
) {
    let snapshot = case.snapshot_with(node_of_pod);
    for wiring in [
        Wiring::Routed {
            v4_route_only: false,
        },
        Wiring::Bridged,
    ] {
        let nodes = nodes(&snapshot, &["node-1", "node-2"], wiring);
        for probe in &case.probes {
            let flow = probe.flow();
            let expected = evaluate(&snapshot, &flow).expect("probe").allowed;
            let (src_node, source) = node_of(&snapshot, &flow.source);
            let (dst_node, destination) = node_of(&snapshot, &flow.destination);
            let accepted = pod_to_pod_accepted(
                &nodes,
                (&src_node, source),
                (&dst_node, destination),
                flow.protocol,
                flow.port,
            );
            if accepted != expected || expected != probe.expect {
                mismatches.push(format!(
                    "{} [{layout}, {wiring:?}]: {} -> {} {}/{}: upstream {}, evaluate {}, ruleset {}",
                    case.name,
                    probe.from,
                    probe.to,
                    probe.protocol,
                    probe.port,
                    probe.expect,
                    expected,
                    accepted
                ));
            }
        }
    }
}

#[test]
fn the_compiled_rulesets_agree_with_evaluate_on_every_upstream_probe() {
    let file = conformance::load();
    let mut mismatches = Vec::new();
    for case in &file.cases {
        check_case(case, "one node", |_| "node-1".into(), &mut mismatches);
        check_case(
            case,
            "two nodes",
            |i| format!("node-{}", 1 + i % 2),
            &mut mismatches,
        );
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn the_node_reaches_its_isolated_pods_and_other_nodes_do_not() {
    let file = conformance::load();
    let case = file
        .cases
        .iter()
        .find(|c| c.name.contains("default-deny-ingress"))
        .expect("case");
    let snapshot = case.snapshot();
    let pod = snapshot.pod(&ObjectKey::new("x", "a")).unwrap();
    for wiring in [
        Wiring::Routed {
            v4_route_only: false,
        },
        Wiring::Bridged,
    ] {
        let node = &nodes(&snapshot, &["node-1"], wiring)["node-1"];
        let from = |source: &str, input: Option<&str>| Packet {
            source: source.parse().unwrap(),
            destination: pod.ips[0],
            protocol: Protocol::Tcp,
            port: 80,
            from_node: input.is_none(),
            input: input.map(str::to_owned),
            output: node.interface(pod.ips[0]),
        };
        assert!(
            node_accepts(&node.ruleset, &from(&file.node_ip, None)),
            "kubelet probes ({wiring:?})"
        );
        assert!(
            !node_accepts(&node.ruleset, &from("172.18.0.3", Some(UPLINK))),
            "another node ({wiring:?})"
        );
    }
}

// --- The anti-spoofing chain, packet by packet -----------------------------------------------

/// Which `prerouting` rule drops a packet entering through `input` from `source`, as the
/// chain was specified before it was reordered for speed, each rule testing both
/// halves of its condition, read from the ruleset's own sets: from a pod veth, a source not
/// paired with it (link-scoped IPv6 excepted) is "spoofed source address"; from any other
/// interface, a paired address is "pod address from another interface".
fn specified_prerouting_drop(ruleset: &Ruleset, input: &str, source: IpAddr) -> Option<String> {
    use kube_nftpol_core::compile::SetElement;
    let has = |set: &str, element: &SetElement| {
        ruleset
            .set(set)
            .unwrap_or_else(|| panic!("no set {set}"))
            .elements
            .contains(element)
    };
    let (suffix, link_scoped) = match source {
        IpAddr::V4(_) => ("4", false),
        IpAddr::V6(v6) => ("6", v6.is_unspecified() || v6.is_unicast_link_local()),
    };
    let paired = has(
        &format!("pod_iface_addrs{suffix}"),
        &SetElement::InterfaceAddress(input.to_owned(), source),
    );
    let from_pod_veth = has("pod_ifaces", &SetElement::Interface(input.to_owned()));
    let guarded = has(&format!("pod_addrs{suffix}"), &SetElement::Address(source));
    if from_pod_veth && !paired && !link_scoped {
        Some("spoofed source address".into())
    } else if guarded && !paired {
        Some("pod address from another interface".into())
    } else {
        None
    }
}

#[test]
fn the_anti_spoofing_chain_drops_and_counts_every_packet_as_specified() {
    // Pods on node-1: a (dual stack, both routes known) behind vetha, b (IPv4) behind vethb,
    // c (dual stack, only its IPv4 route known) behind vethc, d (IPv6 with a link-local
    // address too) behind vethd; e runs on node-2. Packets enter through each veth, the
    // uplink, a veth the agent has not paired and a bridge, from every address there is.
    let snapshot = support::cluster::snapshot(
        &[("web", &[])],
        vec![
            support::cluster::pod("web", "a", &[], "node-1", &["10.244.1.5", "fd00:1::5"]),
            support::cluster::pod("web", "b", &[], "node-1", &["10.244.1.6"]),
            support::cluster::pod("web", "c", &[], "node-1", &["10.244.1.7", "fd00:1::7"]),
            support::cluster::pod("web", "d", &[], "node-1", &["fd00:1::8", "fe80::8"]),
            support::cluster::pod("web", "e", &[], "node-2", &["10.244.2.7", "fd00:2::7"]),
        ],
        vec![],
    );
    let interfaces: PodInterfaces = [
        ("10.244.1.5", "vetha"),
        ("fd00:1::5", "vetha"),
        ("10.244.1.6", "vethb"),
        ("10.244.1.7", "vethc"),
        ("fd00:1::8", "vethd"),
    ]
    .into_iter()
    .map(|(ip, veth)| (ip.parse().unwrap(), veth.to_owned()))
    .collect();
    let ruleset =
        compile::compile_with_interfaces(&snapshot, "node-1", &interfaces, &Options::default());
    let sources = [
        "10.244.1.5",
        "fd00:1::5",
        "10.244.1.6",
        "10.244.1.7",
        "fd00:1::7",
        "fd00:1::8",
        "fe80::8",
        "10.244.2.7",
        "fd00:2::7",
        "8.8.8.8",
        "0.0.0.0",
        "2001:db8::1",
        "fe80::1",
        "::",
        "::1",
        "fec0::1",
    ];
    let inputs = [
        "vetha", "vethb", "vethc", "vethd", UPLINK, "vethnew", BRIDGE,
    ];
    let mut kinds = BTreeMap::new();
    for input in inputs {
        for source in sources {
            let source: IpAddr = source.parse().unwrap();
            let destination: IpAddr = if source.is_ipv4() {
                "10.244.1.9".parse().unwrap()
            } else {
                "fd00:1::9".parse().unwrap()
            };
            let packet = Packet {
                source,
                destination,
                protocol: Protocol::Udp,
                port: 53,
                from_node: false,
                input: Some(input.to_owned()),
                output: UPLINK.to_owned(),
            };
            let expected = specified_prerouting_drop(&ruleset, input, source);
            assert_eq!(
                support::interpret::prerouting_drop(&ruleset, &packet),
                expected,
                "{source} entering through {input}"
            );
            *kinds.entry(expected).or_insert(0) += 1;
        }
    }
    // The grid reaches every outcome.
    assert_eq!(kinds.len(), 3, "{kinds:?}");
}

// --- A reused pod address -------------------------------------------------------------------

/// Pod `web/a` (10.244.1.5, veth `vetha`) was deleted and the CNI gave its address to a new
/// pod behind `vethb` before the agent heard of the new pod: the snapshot still has `a`, and
/// the agent still pairs the address with `vetha`. `a` may talk to `web/peer` (10.244.1.9,
/// `vethpeer`) both ways; `web/other` (10.244.2.7, another node) may reach `a`.
fn reused_address() -> (Snapshot, Ruleset) {
    let snapshot = support::cluster::snapshot(
        &[("web", &[])],
        vec![
            support::cluster::pod("web", "a", &[("app", "a")], "node-1", &["10.244.1.5"]),
            support::cluster::pod("web", "peer", &[("app", "peer")], "node-1", &["10.244.1.9"]),
            support::cluster::pod("web", "other", &[("app", "x")], "node-2", &["10.244.2.7"]),
        ],
        vec![
            serde_json::json!({"metadata": {"name": "deny", "namespace": "web"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
            serde_json::json!({"metadata": {"name": "a-and-peer", "namespace": "web"},
                "spec": {"podSelector": {"matchLabels": {"app": "peer"}},
                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}],
                         "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "a"}}}]}]}}),
            serde_json::json!({"metadata": {"name": "a-talks", "namespace": "web"},
                "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                         "ingress": [{"from": [{"podSelector": {}}]}],
                         "egress": [{"to": [{"podSelector": {}}]}]}}),
        ],
    );
    let sticky: PodInterfaces = [
        ("10.244.1.5".parse().unwrap(), "vetha".to_owned()),
        ("10.244.1.9".parse().unwrap(), "vethpeer".to_owned()),
    ]
    .into();
    let ruleset =
        compile::compile_with_interfaces(&snapshot, "node-1", &sticky, &Options::default());
    (snapshot, ruleset)
}

fn packet(source: &str, destination: &str, input: Option<&str>, output: &str) -> Packet {
    Packet {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
        protocol: Protocol::Tcp,
        port: 80,
        from_node: input.is_none(),
        input: input.map(str::to_owned),
        output: output.to_owned(),
    }
}

#[test]
fn a_reused_address_behind_a_new_veth_inherits_nothing_from_its_previous_pod() {
    let (_, ruleset) = reused_address();
    // The control: from and to the paired veth, `a`'s permissions apply.
    let from_a = packet("10.244.1.5", "10.244.1.9", Some("vetha"), "vethpeer");
    let to_a = packet("10.244.1.9", "10.244.1.5", Some("vethpeer"), "vetha");
    assert!(node_accepts(&ruleset, &from_a));
    assert!(node_accepts(&ruleset, &to_a));

    // The new pod sends as 10.244.1.5 from vethb: dropped before policy sees it.
    let from_b = packet("10.244.1.5", "10.244.1.9", Some("vethb"), "vethpeer");
    assert_eq!(dropped_by(&ruleset, &from_b), Some("prerouting"));
    let from_b_out = packet("10.244.1.5", "10.244.2.7", Some("vethb"), "eth0");
    assert_eq!(dropped_by(&ruleset, &from_b_out), Some("prerouting"));
    // Packets to 10.244.1.5, now routed through vethb: a's ingress chain would accept them,
    // the guard drops them first.
    let to_b = packet("10.244.1.9", "10.244.1.5", Some("vethpeer"), "vethb");
    assert_eq!(dropped_by(&ruleset, &to_b), Some("postrouting"));
    let remote_to_b = packet("10.244.2.7", "10.244.1.5", Some("eth0"), "vethb");
    assert_eq!(dropped_by(&ruleset, &remote_to_b), Some("postrouting"));
    // Also the node's own packets.
    let node_to_b = packet("172.18.0.2", "10.244.1.5", None, "vethb");
    assert_eq!(dropped_by(&ruleset, &node_to_b), Some("postrouting"));
    // And a forged 10.244.1.5 arriving from the uplink.
    let forged = packet("10.244.1.5", "10.244.1.9", Some("eth0"), "vethpeer");
    assert_eq!(dropped_by(&ruleset, &forged), Some("prerouting"));
}

#[test]
fn once_the_new_pod_is_paired_its_own_policy_applies() {
    let (mut snapshot, _) = reused_address();
    // The agent learns the new pod b (same address, its own labels, no policy allowing it)
    // and pairs the address with vethb.
    snapshot.remove_pod(&ObjectKey::new("web", "a"));
    snapshot.upsert_pod(support::cluster::pod(
        "web",
        "b",
        &[("app", "b")],
        "node-1",
        &["10.244.1.5"],
    ));
    let interfaces: PodInterfaces = [
        ("10.244.1.5".parse().unwrap(), "vethb".to_owned()),
        ("10.244.1.9".parse().unwrap(), "vethpeer".to_owned()),
    ]
    .into();
    let ruleset =
        compile::compile_with_interfaces(&snapshot, "node-1", &interfaces, &Options::default());
    // Past the guard, b's traffic meets b's own policies: web/deny isolates it and nothing
    // allows it (a's rules select app=a).
    let from_b = packet("10.244.1.5", "10.244.1.9", Some("vethb"), "vethpeer");
    assert_eq!(
        dropped_by(&ruleset, &from_b),
        Some("postrouting"),
        "b may use its address, and a's permissions are gone"
    );
    let node_to_b = packet("172.18.0.2", "10.244.1.5", None, "vethb");
    assert!(node_accepts(&ruleset, &node_to_b), "kubelet probes reach b");
    let stale = packet("10.244.1.5", "10.244.1.9", Some("vetha"), "vethpeer");
    assert!(
        !node_accepts(&ruleset, &stale),
        "and nothing comes from the old veth's name any more"
    );
}

const LABEL_VALUES: [&str; 3] = ["a", "b", "c"];
const PORT_NAMES: [&str; 2] = ["web", "alt"];

fn random_selector(rng: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    match rng.below(5) {
        0 => json!({}),
        1 => json!({"matchLabels": {"app": rng.pick(&LABEL_VALUES)}}),
        2 => {
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": [rng.pick(&LABEL_VALUES), rng.pick(&LABEL_VALUES)]}]})
        }
        3 => {
            json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": [rng.pick(&LABEL_VALUES)]}]})
        }
        _ => {
            json!({"matchExpressions": [{"key": "tier", "operator": if rng.chance(50) { "Exists" } else { "DoesNotExist" }}]})
        }
    }
}

fn random_peer(rng: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    match rng.below(5) {
        0 => json!({"podSelector": random_selector(rng)}),
        1 => json!({"namespaceSelector": random_selector(rng)}),
        2 => {
            json!({"namespaceSelector": random_selector(rng), "podSelector": random_selector(rng)})
        }
        3 => {
            json!({"ipBlock": {"cidr": "10.1.0.0/16", "except": [format!("10.1.{}.0/24", rng.below(3))]}})
        }
        _ => {
            json!({"ipBlock": {"cidr": format!("fd00:1:{}::/48", rng.below(3)), "except": [format!("fd00:1:{}::{}/128", rng.below(3), 1 + rng.below(3))]}})
        }
    }
}

fn random_port(rng: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    let protocol = *rng.pick(&["TCP", "UDP", "SCTP"]);
    match rng.below(5) {
        0 => json!({"port": 80, "protocol": protocol}),
        1 => json!({"port": 80, "endPort": 81 + rng.below(3) as u16, "protocol": protocol}),
        2 => json!({"port": rng.pick(&PORT_NAMES), "protocol": protocol}),
        3 => json!({"protocol": protocol}),
        _ => json!({}),
    }
}

fn random_rules(rng: &mut Rng, peers_key: &str) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = (0..rng.below(3))
        .map(|_| {
            let mut rule = serde_json::Map::new();
            if rng.chance(70) {
                let peers: Vec<_> = (0..1 + rng.below(2)).map(|_| random_peer(rng)).collect();
                rule.insert(peers_key.into(), peers.into());
            }
            if rng.chance(70) {
                let ports: Vec<_> = (0..1 + rng.below(2)).map(|_| random_port(rng)).collect();
                rule.insert("ports".into(), ports.into());
            }
            serde_json::Value::Object(rule)
        })
        .collect();
    rules.into()
}

fn random_cluster(rng: &mut Rng) -> Snapshot {
    use kube_nftpol_core::model::{ContainerPort, Namespace, Pod, PodPhase};
    use serde_json::json;
    let mut snapshot = Snapshot::new();
    for (i, ns) in ["n0", "n1", "n2"].iter().enumerate() {
        let mut labels = support::cluster::labels(&[("app", LABEL_VALUES[i])]);
        if rng.chance(50) {
            labels.insert("tier".into(), "x".into());
        }
        snapshot.upsert_namespace(Namespace::new(ns, labels));
    }
    for i in 0..6u16 {
        let ns = i % 3;
        let mut labels = support::cluster::labels(&[("app", *rng.pick(&LABEL_VALUES))]);
        if rng.chance(40) {
            labels.insert("tier".into(), "x".into());
        }
        let mut ips = vec![format!("10.1.{ns}.{}", i + 1).parse().unwrap()];
        if rng.chance(50) {
            ips.push(format!("fd00:1:{ns}::{}", i + 1).parse().unwrap());
        }
        let mut ports = Vec::new();
        for name in PORT_NAMES {
            if rng.chance(60) {
                ports.push(ContainerPort {
                    name: Some(name.into()),
                    port: 80 + rng.below(3) as u16,
                    protocol: *rng.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]),
                });
            }
        }
        ports.sort();
        snapshot.upsert_pod(Pod {
            key: ObjectKey::new(format!("n{ns}"), format!("p{i}")),
            labels,
            node: Some(format!("node-{}", 1 + i % 2)),
            ips,
            phase: PodPhase::Active,
            host_network: false,
            terminating: false,
            ports,
            owner: None,
        });
    }
    for i in 0..1 + rng.below(4) {
        let mut spec = serde_json::Map::new();
        spec.insert("podSelector".into(), random_selector(rng));
        let types = *rng.pick(&[&["Ingress"][..], &["Egress"], &["Ingress", "Egress"]]);
        spec.insert("policyTypes".into(), json!(types));
        if types.contains(&"Ingress") && rng.chance(85) {
            spec.insert("ingress".into(), random_rules(rng, "from"));
        }
        if types.contains(&"Egress") && rng.chance(85) {
            spec.insert("egress".into(), random_rules(rng, "to"));
        }
        let ns = format!("n{}", rng.below(3));
        let policy = json!({"metadata": {"name": format!("p{i}"), "namespace": ns}, "spec": spec});
        snapshot
            .upsert_network_policy(&support::cluster::policy(policy))
            .unwrap();
    }
    snapshot
}

#[test]
fn generated_clusters_agree_between_the_ruleset_and_evaluate() {
    use kube_nftpol_core::policy::Flow;
    let mut mismatches = Vec::new();
    let mut compared = 0usize;
    let mut allowed = 0usize;
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let snapshot = random_cluster(&mut rng);
        // Deterministic per seed without drawing from `rng` (the clusters stay as they were).
        let wiring = match seed % 3 {
            0 => Wiring::Routed {
                v4_route_only: false,
            },
            1 => Wiring::Routed {
                v4_route_only: true,
            },
            _ => Wiring::Bridged,
        };
        let nodes = nodes(&snapshot, &["node-1", "node-2"], wiring);
        let pods: Vec<_> = snapshot.pods().cloned().collect();
        for src in &pods {
            for dst in &pods {
                for (si, di) in [(0, 0), (1, 1)] {
                    let (Some(source), Some(destination)) = (src.ips.get(si), dst.ips.get(di))
                    else {
                        continue;
                    };
                    for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                        for port in [80, 81, 82, 443] {
                            let flow = Flow {
                                source: Endpoint::Ip(*source),
                                destination: Endpoint::Ip(*destination),
                                protocol,
                                port,
                            };
                            let expected = evaluate(&snapshot, &flow).unwrap().allowed;
                            let accepted = pod_to_pod_accepted(
                                &nodes,
                                (src.node.as_deref().unwrap(), *source),
                                (dst.node.as_deref().unwrap(), *destination),
                                protocol,
                                port,
                            );
                            compared += 1;
                            allowed += usize::from(expected);
                            if accepted != expected {
                                mismatches.push(format!(
                                    "seed {seed} ({wiring:?}): {} ({source}) -> {} ({destination}) {protocol}/{port}: evaluate {expected}, ruleset {accepted}",
                                    src.key, dst.key
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    println!("{compared} flows compared, {allowed} allowed");
    assert!(
        allowed > compared / 10 && allowed < compared * 9 / 10,
        "the generator should mix verdicts: {allowed}/{compared}"
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(30)].join("\n")
    );
}

// --- Audit mode -----------------------------------------------------------------------------

/// What the ruleset must do with a flow `evaluate` judged `verdict`, given each side's mode and
/// whether its pod is observed: whether it gets through, and the log prefixes on its way. Each
/// side `evaluate` denies hits that pod's default deny: audited, it logs `knp:audit:` and lets
/// the packet on; enforced, it logs `knp:deny:` and drops it (so an egress drop leaves no
/// ingress log). An observed pod's side logs `knp:allow:` when a rule allows it and
/// `knp:open:` when no policy isolates it; traffic to itself is exempt and unlogged.
fn expected_logs(
    verdict: &Verdict,
    mode_of: impl Fn(&ObjectKey) -> Enforcement,
    observed: impl Fn(&ObjectKey) -> bool,
) -> (bool, Vec<String>) {
    let mut logs = Vec::new();
    for (direction, side) in [("egress", &verdict.egress), ("ingress", &verdict.ingress)] {
        match side {
            DirectionVerdict::Denied { pod, .. } => {
                let (prefix, passes) = match mode_of(pod) {
                    Enforcement::Audit => ("knp:audit", true),
                    Enforcement::Enforce => ("knp:deny", false),
                };
                logs.push(format!("{prefix}:{direction}:{pod}"));
                if !passes {
                    return (false, logs);
                }
            }
            DirectionVerdict::Allowed { pod, .. } if observed(pod) => {
                logs.push(format!("knp:allow:{direction}:{pod}"));
            }
            DirectionVerdict::NotIsolated { pod, .. } if observed(pod) => {
                logs.push(format!("knp:open:{direction}:{pod}"));
            }
            _ => {}
        }
    }
    (true, logs)
}

/// [`expected_logs`] with nothing observed.
fn expected_with_audit(
    verdict: &Verdict,
    mode_of: impl Fn(&ObjectKey) -> Enforcement,
) -> (bool, Vec<String>) {
    expected_logs(verdict, mode_of, |_| false)
}

#[test]
fn audit_everywhere_accepts_every_upstream_probe_and_logs_exactly_what_evaluate_denies() {
    let file = conformance::load();
    let options = Options {
        audit_all: true,
        ..Options::default()
    };
    let mut mismatches = Vec::new();
    let (mut probes, mut audit_denied) = (0, 0);
    for case in &file.cases {
        let snapshot = case.snapshot_with(|i| format!("node-{}", 1 + i % 2));
        let wiring = Wiring::Routed {
            v4_route_only: false,
        };
        let nodes = nodes_with(&snapshot, &["node-1", "node-2"], wiring, &options);
        for probe in &case.probes {
            let flow = probe.flow();
            let verdict = evaluate(&snapshot, &flow).expect("probe");
            let expected = expected_with_audit(&verdict, |_| Enforcement::Audit);
            let (src_node, source) = node_of(&snapshot, &flow.source);
            let (dst_node, destination) = node_of(&snapshot, &flow.destination);
            let got = pod_to_pod_trace(
                &nodes,
                (&src_node, source),
                (&dst_node, destination),
                flow.protocol,
                flow.port,
            );
            probes += 1;
            audit_denied += usize::from(!verdict.allowed);
            // Audit-denied (accepted, with an audit log) exactly when evaluate denies, and
            // logged once per denying side.
            if got.audit_denied() == verdict.allowed
                || (got.dropped_by.is_none(), &got.logged) != (expected.0, &expected.1)
            {
                mismatches.push(format!(
                    "{}: {} -> {} {}/{}: evaluate {}, expected {expected:?}, ruleset {got:?}",
                    case.name, probe.from, probe.to, probe.protocol, probe.port, verdict.allowed
                ));
            }
        }
    }
    println!("{probes} probes, {audit_denied} audit-denied");
    assert!(audit_denied > probes / 10, "the cases deny some probes");
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(30)].join("\n")
    );
}

#[test]
fn generated_clusters_with_audited_namespaces_agree_with_evaluate() {
    use kube_nftpol_core::policy::Flow;
    let mut mismatches = Vec::new();
    let (mut compared, mut audit_denied, mut dropped) = (0usize, 0usize, 0usize);
    for seed in 1..=150u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut snapshot = random_cluster(&mut rng);
        // One or two audited namespaces, from the seed (the clusters stay as they were).
        let audited = [format!("n{}", seed % 3), format!("n{}", (seed / 3) % 3)];
        let namespaces: Vec<_> = snapshot.namespaces().cloned().collect();
        for mut namespace in namespaces {
            if audited.contains(&namespace.name) {
                namespace.enforcement = Enforcement::Audit;
                snapshot.upsert_namespace(namespace);
            }
        }
        let wiring = if seed % 2 == 0 {
            Wiring::Bridged
        } else {
            Wiring::Routed {
                v4_route_only: false,
            }
        };
        let nodes = nodes_with(
            &snapshot,
            &["node-1", "node-2"],
            wiring,
            &Options::default(),
        );
        let pods: Vec<_> = snapshot.pods().cloned().collect();
        for src in &pods {
            for dst in &pods {
                let (Some(source), Some(destination)) = (src.ips.first(), dst.ips.first()) else {
                    continue;
                };
                for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                    for port in [80, 81, 443] {
                        let flow = Flow {
                            source: Endpoint::Ip(*source),
                            destination: Endpoint::Ip(*destination),
                            protocol,
                            port,
                        };
                        let verdict = evaluate(&snapshot, &flow).unwrap();
                        let expected = expected_with_audit(&verdict, |pod| {
                            snapshot.enforcement(&pod.namespace)
                        });
                        let got = pod_to_pod_trace(
                            &nodes,
                            (src.node.as_deref().unwrap(), *source),
                            (dst.node.as_deref().unwrap(), *destination),
                            protocol,
                            port,
                        );
                        compared += 1;
                        dropped += usize::from(!expected.0);
                        audit_denied += usize::from(got.audit_denied());
                        if (got.dropped_by.is_none(), &got.logged) != (expected.0, &expected.1) {
                            mismatches.push(format!(
                                "seed {seed} ({wiring:?}, audited {audited:?}): {} ({source}) -> {} ({destination}) {protocol}/{port}: expected {expected:?}, ruleset {got:?}",
                                src.key, dst.key
                            ));
                        }
                    }
                }
            }
        }
    }
    println!("{compared} flows compared, {audit_denied} audit-denied, {dropped} dropped");
    assert!(
        audit_denied > compared / 20 && dropped > compared / 20,
        "the generator should mix audited and enforced denials: {audit_denied} audit-denied, {dropped} dropped of {compared}"
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(30)].join("\n")
    );
}

// --- Observe mode ---------------------------------------------------------------------------

#[test]
fn observing_every_upstream_case_changes_no_verdict_and_logs_each_sides_verdict() {
    let file = conformance::load();
    let options = Options {
        observe_all: true,
        ..Options::default()
    };
    let mut mismatches = Vec::new();
    let (mut probes, mut allowed_logs, mut open_logs) = (0, 0, 0);
    for case in &file.cases {
        let snapshot = case.snapshot_with(|i| format!("node-{}", 1 + i % 2));
        let wiring = Wiring::Routed {
            v4_route_only: false,
        };
        let nodes = nodes_with(&snapshot, &["node-1", "node-2"], wiring, &options);
        for probe in &case.probes {
            let flow = probe.flow();
            let verdict = evaluate(&snapshot, &flow).expect("probe");
            let expected = expected_logs(&verdict, |_| Enforcement::Enforce, |_| true);
            let (src_node, source) = node_of(&snapshot, &flow.source);
            let (dst_node, destination) = node_of(&snapshot, &flow.destination);
            let got = pod_to_pod_trace(
                &nodes,
                (&src_node, source),
                (&dst_node, destination),
                flow.protocol,
                flow.port,
            );
            probes += 1;
            allowed_logs += got
                .logged
                .iter()
                .filter(|p| p.starts_with("knp:allow:"))
                .count();
            open_logs += got
                .logged
                .iter()
                .filter(|p| p.starts_with("knp:open:"))
                .count();
            if (got.dropped_by.is_none(), &got.logged) != (expected.0, &expected.1)
                || expected.0 != verdict.allowed
            {
                mismatches.push(format!(
                    "{}: {} -> {} {}/{}: evaluate {}, expected {expected:?}, ruleset {got:?}",
                    case.name, probe.from, probe.to, probe.protocol, probe.port, verdict.allowed
                ));
            }
        }
    }
    println!("{probes} probes, {allowed_logs} allow logs, {open_logs} open logs");
    assert!(
        allowed_logs > probes / 20 && open_logs > probes / 10,
        "both kinds are logged"
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(30)].join("\n")
    );
}

#[test]
fn generated_clusters_with_observed_and_audited_namespaces_agree_with_evaluate() {
    use kube_nftpol_core::policy::Flow;
    let mut mismatches = Vec::new();
    let (mut compared, mut logged) = (0usize, 0usize);
    for seed in 1..=150u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut snapshot = random_cluster(&mut rng);
        // One observed and one audited namespace, from the seed (the clusters stay as they
        // were); sometimes the same one.
        let observed = format!("n{}", seed % 3);
        let audited = format!("n{}", (seed / 3) % 3);
        support::cluster::set_namespace_modes(&mut snapshot, &observed, &audited);
        let wiring = if seed % 2 == 0 {
            Wiring::Bridged
        } else {
            Wiring::Routed {
                v4_route_only: false,
            }
        };
        let nodes = nodes_with(
            &snapshot,
            &["node-1", "node-2"],
            wiring,
            &Options::default(),
        );
        let pods: Vec<_> = snapshot.pods().cloned().collect();
        for src in &pods {
            for dst in &pods {
                let (Some(source), Some(destination)) = (src.ips.first(), dst.ips.first()) else {
                    continue;
                };
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    for port in [80, 81, 443] {
                        let flow = Flow {
                            source: Endpoint::Ip(*source),
                            destination: Endpoint::Ip(*destination),
                            protocol,
                            port,
                        };
                        let verdict = evaluate(&snapshot, &flow).unwrap();
                        let expected = expected_logs(
                            &verdict,
                            |pod| snapshot.enforcement(&pod.namespace),
                            |pod| snapshot.observed(&pod.namespace),
                        );
                        let got = pod_to_pod_trace(
                            &nodes,
                            (src.node.as_deref().unwrap(), *source),
                            (dst.node.as_deref().unwrap(), *destination),
                            protocol,
                            port,
                        );
                        compared += 1;
                        logged +=
                            usize::from(got.logged.iter().any(|p| {
                                p.starts_with("knp:allow:") || p.starts_with("knp:open:")
                            }));
                        if (got.dropped_by.is_none(), &got.logged) != (expected.0, &expected.1) {
                            mismatches.push(format!(
                                "seed {seed} ({wiring:?}, observed {observed}, audited {audited}): {} ({source}) -> {} ({destination}) {protocol}/{port}: expected {expected:?}, ruleset {got:?}",
                                src.key, dst.key
                            ));
                        }
                    }
                }
            }
        }
    }
    println!("{compared} flows compared, {logged} with an observe log");
    assert!(
        logged > compared / 10,
        "observed flows: {logged} of {compared}"
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(30)].join("\n")
    );
}
