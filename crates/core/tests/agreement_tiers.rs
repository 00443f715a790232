//! The compiled tier chains mean what `evaluate` says, on clusters that mix
//! ClusterNetworkPolicies (both tiers) with NetworkPolicies.
//!
//! Like `agreement.rs`, each flow's first packet goes through the nodes' chains in the
//! reference interpreter (`support::topology`) and is compared with `evaluate`; here the flows
//! also go to node addresses (the `input` chain when the node is the sender's own) and out of
//! the cluster, and the log prefixes on the way must be exactly those the verdict implies,
//! with audited and observed namespaces. First every probe of the network-policy-api
//! conformance suite, then 300 generated clusters.

use kube_nftpol_test_support as support;

use std::net::IpAddr;

use kube_nftpol_core::compile::Options;
use kube_nftpol_core::evaluate;
use kube_nftpol_core::model::{
    ClusterAction, ContainerPort, Enforcement, Namespace, Node, ObjectKey, Pod, PodPhase, Protocol,
    Snapshot, Tier,
};
use kube_nftpol_core::policy::cluster::api::ClusterNetworkPolicy;
use kube_nftpol_core::policy::{DirectionVerdict, Endpoint, Flow, Verdict};
use serde_json::{Value, json};
use support::cnp_conformance::{self, Placement, Suite};
use support::rng::Rng;
use support::topology::{Wiring, compile_nodes, trace_flow};

/// The log prefixes the ruleset must write for a flow `evaluate` judged `verdict`, and whether
/// it gets through: a side a NetworkPolicy denies logs `knp:deny:` (audited: `knp:audit:`),
/// one a ClusterNetworkPolicy Deny rule denies `knp:adeny:` / `knp:bdeny:` (audited:
/// `knp:aaudit:` / `knp:baudit:`), and an enforced deny stops the packet; an observed pod's
/// side logs `knp:allow:` when a rule of any tier accepts it and `knp:open:` when no tier
/// decides.
fn expected_logs(
    verdict: &Verdict,
    audited: impl Fn(&ObjectKey) -> bool,
    observed: impl Fn(&ObjectKey) -> bool,
) -> (bool, Vec<String>) {
    let mut logs = Vec::new();
    for (direction, side) in [("egress", &verdict.egress), ("ingress", &verdict.ingress)] {
        let denied = match side {
            DirectionVerdict::Denied { pod, .. } => Some((pod, "deny", "audit")),
            DirectionVerdict::Cluster { pod, rule, .. } if rule.action == ClusterAction::Deny => {
                Some(match rule.tier {
                    Tier::Admin => (pod, "adeny", "aaudit"),
                    Tier::Baseline => (pod, "bdeny", "baudit"),
                })
            }
            DirectionVerdict::Allowed { pod, .. } | DirectionVerdict::Cluster { pod, .. }
                if observed(pod) =>
            {
                logs.push(format!("knp:allow:{direction}:{pod}"));
                None
            }
            DirectionVerdict::NotIsolated { pod, .. } if observed(pod) => {
                logs.push(format!("knp:open:{direction}:{pod}"));
                None
            }
            _ => None,
        };
        if let Some((pod, deny, audit)) = denied {
            if audited(pod) {
                logs.push(format!("knp:{audit}:{direction}:{pod}"));
            } else {
                logs.push(format!("knp:{deny}:{direction}:{pod}"));
                return (false, logs);
            }
        }
    }
    (true, logs)
}

#[test]
fn every_cluster_network_policy_conformance_probe_agrees_between_the_ruleset_and_evaluate() {
    let suite = Suite::load();
    let placement = Placement::simulated(&suite.base_pods());
    let ip_of = |pod: &str| placement.ip_of(pod);
    let base = suite.base_objects(&placement);
    let (mut mismatches, mut probes) = (Vec::new(), 0);
    for test in &suite.tests {
        for checkpoint in suite.checkpoints(test, &ip_of).expect("replay") {
            let objects: Vec<_> = base.iter().chain(&checkpoint.policies).cloned().collect();
            let snapshot = cnp_conformance::load(&objects).expect("load").snapshot;
            for wiring in [Wiring::Routed, Wiring::Bridged] {
                let nodes = compile_nodes(&snapshot, wiring, &Options::default());
                for probe in &checkpoint.probes {
                    probes += 1;
                    let flow = cnp_conformance::flow(&suite, probe, &ip_of).expect("flow");
                    let (Endpoint::Ip(source), Endpoint::Ip(destination)) =
                        (&flow.source, &flow.destination)
                    else {
                        unreachable!("probes are address to address")
                    };
                    let verdict = evaluate(&snapshot, &flow).expect("probe");
                    let got = trace_flow(&nodes, *source, *destination, flow.protocol, flow.port);
                    let expected = expected_logs(&verdict, |_| false, |_| false);
                    let accepted = got.dropped_by.is_none();
                    if accepted != verdict.allowed
                        || verdict.allowed != probe.connect
                        || (accepted, &got.logged) != (expected.0, &expected.1)
                    {
                        mismatches.push(format!(
                            "{} / {} [{wiring:?}]: {} -> {} {}/{}: upstream {}, evaluate {}, ruleset {got:?}",
                            test.name,
                            checkpoint.subtest.name,
                            probe.from,
                            probe.to,
                            probe.protocol,
                            flow.port,
                            probe.connect,
                            verdict.allowed
                        ));
                    }
                }
            }
        }
    }
    assert_eq!(probes, 2 * 289);
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

// --- Generated clusters ---------------------------------------------------------------------

const LABEL_VALUES: [&str; 3] = ["a", "b", "c"];
const PORT_NAMES: [&str; 2] = ["web", "alt"];
const NODES: [(&str, &str, &str); 2] =
    [("node-1", "172.18.0.2", "a"), ("node-2", "172.18.0.3", "b")];

fn selector(rng: &mut Rng) -> Value {
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

fn np_peer(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!({"podSelector": selector(rng)}),
        1 => json!({"namespaceSelector": selector(rng)}),
        2 => json!({"namespaceSelector": selector(rng), "podSelector": selector(rng)}),
        _ => {
            json!({"ipBlock": {"cidr": "10.1.0.0/16", "except": [format!("10.1.{}.0/24", rng.below(3))]}})
        }
    }
}

fn network_policy(rng: &mut Rng, i: usize) -> Value {
    let types = *rng.pick(&[&["Ingress"][..], &["Egress"], &["Ingress", "Egress"]]);
    let mut spec = json!({"podSelector": selector(rng), "policyTypes": types});
    for (section, key) in [("ingress", "from"), ("egress", "to")] {
        if types.iter().any(|t| t.to_lowercase() == section) && rng.chance(80) {
            let rules: Vec<Value> = (0..rng.below(3))
                .map(|_| {
                    let mut rule = json!({});
                    if rng.chance(70) {
                        rule[key] = json!([np_peer(rng)]);
                    }
                    if rng.chance(60) {
                        rule["ports"] = json!([{"port": 80 + rng.below(2), "protocol": rng.pick(&["TCP", "UDP"])}]);
                    }
                    rule
                })
                .collect();
            spec[section] = json!(rules);
        }
    }
    json!({"metadata": {"name": format!("np{i}"), "namespace": format!("n{}", rng.below(3))}, "spec": spec})
}

fn cnp_peer(rng: &mut Rng, egress: bool, accept: bool) -> Value {
    match rng.below(if egress { 8 } else { 3 }) {
        0 => json!({"namespaces": selector(rng)}),
        1 | 2 => {
            json!({"pods": {"namespaceSelector": selector(rng), "podSelector": selector(rng)}})
        }
        3 => {
            json!({"networks": [*rng.pick(&["10.1.0.0/16", "10.1.1.0/24", "0.0.0.0/0", "172.18.0.0/24", "8.8.8.0/24"]), *rng.pick(&["fd00:1::/48", "::/0", "10.1.2.0/25"])]})
        }
        4 | 5 => json!({"nodes": selector_for_nodes(rng)}),
        6 if accept => json!({"domainNames": ["*.example.com"]}),
        _ => json!({"networks": [format!("10.1.{}.{}/32", rng.below(3), 1 + rng.below(6))]}),
    }
}

fn selector_for_nodes(rng: &mut Rng) -> Value {
    match rng.below(3) {
        0 => json!({}),
        1 => json!({"matchLabels": {"zone": rng.pick(&["a", "b"])}}),
        _ => json!({"matchLabels": {"kubernetes.io/os": "linux"}}),
    }
}

fn cnp_protocols(rng: &mut Rng) -> Option<Value> {
    let entry = |rng: &mut Rng| match rng.below(5) {
        0 => json!({"tcp": {"destinationPort": {"number": 80}}}),
        1 => json!({"udp": {"destinationPort": {"range": {"start": 80, "end": 82}}}}),
        2 => json!({"sctp": {"destinationPort": {"number": 81}}}),
        3 => json!({"tcp": {"destinationPort": {"range": {"start": 81, "end": 443}}}}),
        _ => json!({"destinationNamedPort": rng.pick(&PORT_NAMES)}),
    };
    rng.chance(60).then(|| {
        json!(
            (0..1 + rng.below(2))
                .map(|_| entry(rng))
                .collect::<Vec<_>>()
        )
    })
}

fn cluster_policy(rng: &mut Rng, i: usize) -> Value {
    let subject = if rng.chance(50) {
        json!({"namespaces": selector(rng)})
    } else {
        json!({"pods": {"namespaceSelector": selector(rng), "podSelector": selector(rng)}})
    };
    let mut spec = json!({
        "tier": if rng.chance(55) { "Admin" } else { "Baseline" },
        "priority": *rng.pick(&[0, 5, 5, 10, 1000]),
        "subject": subject,
    });
    for (section, key, egress) in [("ingress", "from", false), ("egress", "to", true)] {
        if rng.chance(75) {
            let rules: Vec<Value> = (0..1 + rng.below(3))
                .map(|r| {
                    let action = *rng.pick(&["Accept", "Deny", "Pass"]);
                    let accept = action == "Accept";
                    let peers: Vec<Value> = (0..1 + rng.below(2))
                        .map(|_| cnp_peer(rng, egress, accept))
                        .collect();
                    let mut rule = json!({"name": format!("r{r}"), "action": action, key: peers});
                    let addresses = peers
                        .iter()
                        .any(|p| p.get("pods").is_none() && p.get("namespaces").is_none());
                    if let Some(protocols) = cnp_protocols(rng) {
                        // Named ports never go with address peers (a validation error).
                        let named = protocols.to_string().contains("destinationNamedPort");
                        if !(named && addresses) {
                            rule["protocols"] = protocols;
                        }
                    }
                    rule
                })
                .collect();
            spec[section] = json!(rules);
        }
    }
    if rng.one_in(12) {
        // An invalid policy: it must only ever deny.
        spec["egress"] = json!([{"action": "Accept", "to": [{"networks": ["10.0.0.0/33"]}]},
                                {"action": "Pass", "to": [{"namespaces": selector(rng)}]}]);
    }
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
           "metadata": {"name": format!("cnp{i}")}, "spec": spec})
}

fn random_cluster(rng: &mut Rng) -> Snapshot {
    let mut snapshot = Snapshot::new();
    for (i, ns) in ["n0", "n1", "n2"].iter().enumerate() {
        let mut labels = support::cluster::labels(&[("app", LABEL_VALUES[i])]);
        if rng.chance(50) {
            labels.insert("tier".into(), "x".into());
        }
        snapshot.upsert_namespace(Namespace::new(ns, labels));
    }
    for (name, ip, zone) in NODES {
        let labels = support::cluster::labels(&[("kubernetes.io/os", "linux"), ("zone", zone)]);
        snapshot.upsert_node(Node::new(name, labels, [ip.parse().unwrap()]));
    }
    for i in 0..7u16 {
        let ns = i % 3;
        let mut labels = support::cluster::labels(&[("app", *rng.pick(&LABEL_VALUES))]);
        if rng.chance(40) {
            labels.insert("tier".into(), "x".into());
        }
        let node = (i % 2) as usize;
        let host_network = i == 6;
        let mut ips: Vec<IpAddr> = if host_network {
            vec![NODES[1].1.parse().unwrap()]
        } else {
            vec![format!("10.1.{ns}.{}", i + 1).parse().unwrap()]
        };
        if !host_network && rng.chance(40) {
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
            node: Some(NODES[if host_network { 1 } else { node }].0.to_owned()),
            ips,
            phase: PodPhase::Active,
            host_network,
            terminating: false,
            ports,
            owner: None,
        });
    }
    for i in 0..rng.below(3) {
        let policy = network_policy(rng, i);
        snapshot
            .upsert_network_policy(&support::cluster::policy(policy))
            .unwrap();
    }
    for i in 0..1 + rng.below(5) {
        let object: ClusterNetworkPolicy = serde_json::from_value(cluster_policy(rng, i)).unwrap();
        snapshot.upsert_cluster_network_policy(&object).unwrap();
    }
    snapshot
}

#[test]
fn generated_mixed_clusters_agree_between_the_ruleset_and_evaluate_with_their_logs() {
    let mut mismatches = Vec::new();
    let (mut compared, mut allowed, mut tier_decided, mut logged) =
        (0usize, 0usize, 0usize, 0usize);
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut snapshot = random_cluster(&mut rng);
        // Audited and observed namespaces from the seed (the clusters stay as they were).
        let audited = format!("n{}", seed % 4);
        let observed = format!("n{}", (seed / 4) % 4);
        support::cluster::set_namespace_modes(&mut snapshot, &observed, &audited);
        let wiring = if seed % 2 == 0 {
            Wiring::Bridged
        } else {
            Wiring::Routed
        };
        let nodes = compile_nodes(&snapshot, wiring, &Options::default());
        let pods: Vec<Pod> = snapshot.pods().cloned().collect();
        let mut destinations: Vec<IpAddr> = pods.iter().flat_map(|p| p.ips.clone()).collect();
        destinations.extend(NODES.iter().map(|(_, ip, _)| ip.parse::<IpAddr>().unwrap()));
        destinations.extend(["8.8.8.8", "2001:db8::1"].map(|ip| ip.parse::<IpAddr>().unwrap()));
        destinations.sort();
        destinations.dedup();
        for src in &pods {
            for source in &src.ips {
                for destination in &destinations {
                    if source.is_ipv4() != destination.is_ipv4() {
                        continue;
                    }
                    for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                        for port in [80, 81, 82, 443] {
                            let flow = Flow {
                                source: Endpoint::Ip(*source),
                                destination: Endpoint::Ip(*destination),
                                protocol,
                                port,
                            };
                            let verdict = evaluate(&snapshot, &flow).unwrap();
                            let expected = expected_logs(
                                &verdict,
                                |pod| snapshot.enforcement(&pod.namespace) == Enforcement::Audit,
                                |pod| snapshot.observed(&pod.namespace),
                            );
                            let got = trace_flow(&nodes, *source, *destination, protocol, port);
                            compared += 1;
                            allowed += usize::from(verdict.allowed);
                            tier_decided += usize::from(
                                verdict.egress.cluster_rule().is_some()
                                    || verdict.ingress.cluster_rule().is_some(),
                            );
                            logged += usize::from(!got.logged.is_empty());
                            if (got.dropped_by.is_none(), &got.logged) != (expected.0, &expected.1)
                            {
                                mismatches.push(format!(
                                    "seed {seed} ({wiring:?}, audited {audited}, observed {observed}): {} ({source}) -> {destination} {protocol}/{port}: evaluate {}, expected {expected:?}, ruleset {got:?}\n  egress: {:?}\n  ingress: {:?}",
                                    src.key, verdict.allowed, verdict.egress, verdict.ingress
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    println!(
        "{compared} flows compared, {allowed} allowed, {tier_decided} decided by a tier, {logged} logged"
    );
    assert!(
        allowed > compared / 10 && allowed < compared * 9 / 10,
        "the generator should mix verdicts: {allowed}/{compared}"
    );
    assert!(
        tier_decided > compared / 5,
        "tiers decide often: {tier_decided}/{compared}"
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
}
