//! The compiled ruleset means what `evaluate` says, for every upstream conformance probe.
//!
//! Each case is compiled for two nodes with the pods spread over both (and for one node
//! holding them all); every probe's first packet is run through the source node's and the
//! destination node's `postrouting` chain by the reference interpreter in support/interpret.rs
//! and compared with `evaluate`. The root suites repeat this with real packets in the kernel.

mod support;

use kube_nftpol::compile::{self, Options, Ruleset};
use kube_nftpol::evaluate;
use kube_nftpol::model::{ObjectKey, Protocol, Snapshot};
use kube_nftpol::policy::Endpoint;
use support::conformance::{self, Case};
use support::interpret::{Packet, postrouting_accepts};

fn node_of(snapshot: &Snapshot, endpoint: &Endpoint) -> (String, std::net::IpAddr) {
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
    let rulesets: std::collections::BTreeMap<String, Ruleset> = ["node-1", "node-2"]
        .into_iter()
        .map(|n| {
            (
                n.to_owned(),
                compile::compile(&snapshot, n, &Options::default()),
            )
        })
        .collect();
    for probe in &case.probes {
        let flow = probe.flow();
        let expected = evaluate(&snapshot, &flow).expect("probe").allowed;
        let (src_node, source) = node_of(&snapshot, &flow.source);
        let (dst_node, destination) = node_of(&snapshot, &flow.destination);
        let packet = Packet {
            source,
            destination,
            protocol: flow.protocol,
            port: flow.port,
            from_node: false,
        };
        let mut accepted = postrouting_accepts(&rulesets[&src_node], &packet);
        if accepted && dst_node != src_node {
            accepted = postrouting_accepts(&rulesets[&dst_node], &packet);
        }
        if accepted != expected || expected != probe.expect {
            mismatches.push(format!(
                "{} [{layout}]: {} -> {} {}/{}: upstream {}, evaluate {}, ruleset {}",
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
    let ruleset = compile::compile(&snapshot, "node-1", &Options::default());
    let pod = snapshot.pod(&ObjectKey::new("x", "a")).unwrap();
    let from = |source: &str, from_node| Packet {
        source: source.parse().unwrap(),
        destination: pod.ips[0],
        protocol: Protocol::Tcp,
        port: 80,
        from_node,
    };
    assert!(
        postrouting_accepts(&ruleset, &from(&file.node_ip, true)),
        "kubelet probes"
    );
    assert!(
        !postrouting_accepts(&ruleset, &from("172.18.0.3", false)),
        "another node"
    );
}

/// A small deterministic generator (xorshift64*), so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
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
    use kube_nftpol::model::{ContainerPort, Namespace, Pod, PodPhase};
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
    use kube_nftpol::policy::Flow;
    let mut mismatches = Vec::new();
    let mut compared = 0usize;
    let mut allowed = 0usize;
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let snapshot = random_cluster(&mut rng);
        let rulesets: std::collections::BTreeMap<String, Ruleset> = ["node-1", "node-2"]
            .into_iter()
            .map(|n| {
                (
                    n.to_owned(),
                    compile::compile(&snapshot, n, &Options::default()),
                )
            })
            .collect();
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
                            let packet = Packet {
                                source: *source,
                                destination: *destination,
                                protocol,
                                port,
                                from_node: false,
                            };
                            let src_node = src.node.clone().unwrap();
                            let dst_node = dst.node.clone().unwrap();
                            let mut accepted = postrouting_accepts(&rulesets[&src_node], &packet);
                            if accepted && src_node != dst_node {
                                accepted = postrouting_accepts(&rulesets[&dst_node], &packet);
                            }
                            compared += 1;
                            allowed += usize::from(expected);
                            if accepted != expected {
                                mismatches.push(format!(
                                    "seed {seed}: {} ({source}) -> {} ({destination}) {protocol}/{port}: evaluate {expected}, ruleset {accepted}",
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
