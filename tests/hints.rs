//! The closed loop on the evaluator: suggestions allow exactly what was denied.
//!
//! A cluster with default-deny policies, and the flows its workloads need. The needed flows that
//! `evaluate` denies become drop records (through `enrich`, as the agent makes them, printed as
//! JSON lines and read back as `kube-nftpol suggest` reads them); the suggestions are added to
//! the cluster; then, over every pair of pods (and the external addresses) on every port in
//! play, each side of each flow is allowed exactly when it was allowed before or a drop asked
//! for it, for the same workloads on the same protocol and port (the DNS rule adds the other
//! protocol of the denied DNS port). So every denied flow is allowed, nothing allowed is
//! denied, and nothing that no drop asked for is allowed.
//!
//! Three ways of getting the drops: every denying side at once; as the kernel logs them (the
//! sender's egress drop hides the receiver's ingress drop until the first hint is applied), in
//! rounds, with the whole log each time or only the new lines (earlier hints of the same name
//! are merged, not replaced); and 40 generated clusters.

use kube_nftpol_test_support as support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::SystemTime;

use kube_nftpol::evaluate;
use kube_nftpol::flow_line::Format;
use kube_nftpol::flowlog::decode::LoggedPacket;
use kube_nftpol::flowlog::enrich;
use kube_nftpol::hints::{self, FlowPeer, FlowToAllow, Options, Suggestions, Workload};
use kube_nftpol::model::{Direction, IpProtocol, ObjectKey, Owner, Pod, Protocol, Snapshot};
use kube_nftpol::policy::{Endpoint, Flow, Verdict};
use serde_json::json;
use support::cluster;
use support::rng::Rng;

// --- Building clusters ---

fn owned(mut pod: Pod, kind: &str, name: &str) -> Pod {
    pod.owner = Some(Owner {
        kind: kind.into(),
        name: name.into(),
    });
    pod
}

fn key(text: &str) -> ObjectKey {
    let (namespace, name) = text.split_once('/').unwrap();
    ObjectKey::new(namespace, name)
}

fn pod_end(text: &str) -> Endpoint {
    Endpoint::Pod(key(text))
}

fn ip_end(text: &str) -> Endpoint {
    Endpoint::Ip(text.parse().unwrap())
}

fn flow(from: Endpoint, to: Endpoint, protocol: Protocol, port: u16) -> Flow {
    Flow {
        source: from,
        destination: to,
        protocol,
        port,
    }
}

fn tcp(from: Endpoint, to: Endpoint, port: u16) -> Flow {
    flow(from, to, Protocol::Tcp, port)
}

/// shop: frontend (Deployment, 2 pods), api and worker (Deployments whose `app` label is the
/// same), db (StatefulSet), debug (a pod without a controller); payments: pay (StatefulSet),
/// settle (a CronJob's Job); kube-system: CoreDNS; monitoring: Prometheus. shop and payments
/// deny everything by default; payments allows DNS; the api accepts the frontend on 8080.
fn shop_cluster() -> Snapshot {
    let hash = |mut pod: Pod, value: &str| {
        pod.labels.insert("pod-template-hash".into(), value.into());
        pod
    };
    let pods = vec![
        owned(
            hash(
                cluster::pod(
                    "shop",
                    "frontend-7d4f9-a",
                    &[("app", "frontend")],
                    "n1",
                    &["10.1.0.1", "fd00:1::1"],
                ),
                "7d4f9",
            ),
            "ReplicaSet",
            "frontend-7d4f9",
        ),
        owned(
            hash(
                cluster::pod(
                    "shop",
                    "frontend-7d4f9-b",
                    &[("app", "frontend")],
                    "n2",
                    &["10.1.0.2"],
                ),
                "7d4f9",
            ),
            "ReplicaSet",
            "frontend-7d4f9",
        ),
        owned(
            hash(
                cluster::pod(
                    "shop",
                    "api-6c5d-a",
                    &[("app", "backend"), ("tier", "api")],
                    "n1",
                    &["10.1.0.3", "fd00:1::3"],
                ),
                "6c5d",
            ),
            "ReplicaSet",
            "api-6c5d",
        ),
        owned(
            hash(
                cluster::pod(
                    "shop",
                    "api-6c5d-b",
                    &[("app", "backend"), ("tier", "api")],
                    "n2",
                    &["10.1.0.4", "fd00:1::4"],
                ),
                "6c5d",
            ),
            "ReplicaSet",
            "api-6c5d",
        ),
        owned(
            hash(
                cluster::pod(
                    "shop",
                    "worker-5f4e-a",
                    &[("app", "backend"), ("tier", "worker")],
                    "n1",
                    &["10.1.0.5"],
                ),
                "5f4e",
            ),
            "ReplicaSet",
            "worker-5f4e",
        ),
        owned(
            hash(
                cluster::pod(
                    "shop",
                    "worker-5f4e-b",
                    &[("app", "backend"), ("tier", "worker")],
                    "n2",
                    &["10.1.0.6"],
                ),
                "5f4e",
            ),
            "ReplicaSet",
            "worker-5f4e",
        ),
        owned(
            cluster::pod(
                "shop",
                "db-0",
                &[
                    ("app", "db"),
                    ("controller-revision-hash", "db-1"),
                    ("statefulset.kubernetes.io/pod-name", "db-0"),
                ],
                "n1",
                &["10.1.0.7"],
            ),
            "StatefulSet",
            "db",
        ),
        owned(
            cluster::pod(
                "shop",
                "db-1",
                &[
                    ("app", "db"),
                    ("controller-revision-hash", "db-1"),
                    ("statefulset.kubernetes.io/pod-name", "db-1"),
                ],
                "n2",
                &["10.1.0.8"],
            ),
            "StatefulSet",
            "db",
        ),
        cluster::pod("shop", "debug", &[("app", "debug")], "n1", &["10.1.0.9"]),
        owned(
            cluster::pod(
                "payments",
                "pay-0",
                &[("app", "payments")],
                "n1",
                &["10.2.0.1"],
            ),
            "StatefulSet",
            "pay",
        ),
        owned(
            cluster::pod(
                "payments",
                "pay-1",
                &[("app", "payments")],
                "n2",
                &["10.2.0.2"],
            ),
            "StatefulSet",
            "pay",
        ),
        owned(
            cluster::pod(
                "payments",
                "settle-29000000-x",
                &[
                    ("app", "settle"),
                    ("job-name", "settle-29000000"),
                    ("controller-uid", "u1"),
                ],
                "n1",
                &["10.2.0.3"],
            ),
            "Job",
            "settle-29000000",
        ),
        owned(
            hash(
                cluster::pod(
                    "kube-system",
                    "coredns-6f6b7-a",
                    &[("k8s-app", "kube-dns")],
                    "n1",
                    &["10.3.0.1"],
                ),
                "6f6b7",
            ),
            "ReplicaSet",
            "coredns-6f6b7",
        ),
        owned(
            hash(
                cluster::pod(
                    "kube-system",
                    "coredns-6f6b7-b",
                    &[("k8s-app", "kube-dns")],
                    "n2",
                    &["10.3.0.2"],
                ),
                "6f6b7",
            ),
            "ReplicaSet",
            "coredns-6f6b7",
        ),
        owned(
            cluster::pod(
                "monitoring",
                "prometheus-0",
                &[("app", "prometheus")],
                "n1",
                &["10.4.0.1"],
            ),
            "StatefulSet",
            "prometheus",
        ),
    ];
    let deny_all = |ns: &str| {
        json!({"metadata": {"name": "default-deny", "namespace": ns},
               "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}})
    };
    cluster::snapshot(
        &[
            ("shop", &[]),
            ("payments", &[]),
            ("kube-system", &[]),
            ("monitoring", &[]),
        ],
        pods,
        vec![
            deny_all("shop"),
            deny_all("payments"),
            json!({"metadata": {"name": "allow-dns", "namespace": "payments"},
                   "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}}),
            json!({"metadata": {"name": "api-from-frontend", "namespace": "shop"},
                   "spec": {"podSelector": {"matchLabels": {"app": "backend", "tier": "api"}},
                            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
                                         "ports": [{"port": 8080}]}]}}),
        ],
    )
}

/// What the shop's workloads need. Only some replicas try each flow: the suggestions are for
/// whole workloads.
fn shop_needs() -> Vec<Flow> {
    let mut needs = vec![
        tcp(
            pod_end("shop/frontend-7d4f9-a"),
            pod_end("shop/api-6c5d-a"),
            8080,
        ),
        tcp(pod_end("shop/api-6c5d-b"), pod_end("shop/db-0"), 5432),
        tcp(pod_end("shop/worker-5f4e-a"), pod_end("shop/db-1"), 5432),
        tcp(pod_end("shop/worker-5f4e-a"), pod_end("shop/db-1"), 5433),
        tcp(pod_end("shop/api-6c5d-a"), pod_end("payments/pay-0"), 9090),
        tcp(pod_end("payments/pay-1"), pod_end("shop/api-6c5d-b"), 8080),
        flow(
            pod_end("shop/frontend-7d4f9-b"),
            pod_end("kube-system/coredns-6f6b7-a"),
            Protocol::Udp,
            53,
        ),
        tcp(pod_end("shop/api-6c5d-a"), ip_end("203.0.113.7"), 443),
        tcp(pod_end("shop/api-6c5d-b"), ip_end("2001:db8::7"), 443),
        tcp(
            pod_end("payments/settle-29000000-x"),
            pod_end("payments/pay-0"),
            9090,
        ),
        tcp(
            ip_end("198.51.100.10"),
            pod_end("shop/frontend-7d4f9-a"),
            8443,
        ),
        tcp(pod_end("shop/debug"), pod_end("shop/api-6c5d-a"), 8080),
        // Already allowed: asks for nothing.
        flow(
            pod_end("payments/pay-0"),
            pod_end("kube-system/coredns-6f6b7-b"),
            Protocol::Udp,
            53,
        ),
    ];
    for target in [
        "shop/frontend-7d4f9-a",
        "shop/api-6c5d-a",
        "shop/api-6c5d-b",
        "shop/db-0",
        "shop/debug",
    ] {
        needs.push(tcp(
            pod_end("monitoring/prometheus-0"),
            pod_end(target),
            9100,
        ));
    }
    needs
}

/// Addresses outside the cluster besides those in the needs: nothing may allow them.
const DECOY_ADDRESSES: [&str; 3] = ["203.0.113.8", "2001:db8::8", "198.51.100.11"];

// --- Drops ---

/// Which denying sides produce a drop record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logged {
    /// Every side that denies.
    EverySide,
    /// Only the first: the sender's egress if it denies, else the receiver's ingress.
    FirstSide,
}

/// The packet's addresses: the pods' first addresses of the family the flow needs.
fn addresses(snapshot: &Snapshot, flow: &Flow) -> Option<(IpAddr, IpAddr)> {
    let family = [&flow.source, &flow.destination]
        .iter()
        .find_map(|e| match e {
            Endpoint::Ip(ip) => Some(ip.is_ipv4()),
            Endpoint::Pod(_) => None,
        });
    let address = |end: &Endpoint| -> Option<IpAddr> {
        match end {
            Endpoint::Ip(ip) => Some(*ip),
            Endpoint::Pod(key) => {
                let ips = &snapshot.pod(key)?.ips;
                ips.iter()
                    .copied()
                    .find(|ip| family.is_none_or(|v4| ip.is_ipv4() == v4))
            }
        }
    };
    Some((address(&flow.source)?, address(&flow.destination)?))
}

/// The drop-log lines the agent would print for `flow`, read back as `suggest` reads them.
fn drops_of(snapshot: &Snapshot, flow: &Flow, logged: Logged) -> Vec<FlowToAllow> {
    let verdict = evaluate(snapshot, flow).unwrap();
    let Some((source, destination)) = addresses(snapshot, flow) else {
        return Vec::new();
    };
    let mut sides = Vec::new();
    if !verdict.egress.allows() {
        sides.push((Direction::Egress, &flow.source));
    }
    if !verdict.ingress.allows() && (logged == Logged::EverySide || sides.is_empty()) {
        sides.push((Direction::Ingress, &flow.destination));
    }
    sides
        .into_iter()
        .map(|(direction, policed)| {
            let Endpoint::Pod(pod) = policed else {
                panic!("a denying side is a pod: {flow:?}")
            };
            let packet = LoggedPacket {
                direction,
                pod: pod.clone(),
                source,
                destination,
                protocol: match flow.protocol {
                    Protocol::Tcp => IpProtocol::Tcp,
                    Protocol::Udp => IpProtocol::Udp,
                    Protocol::Sctp => IpProtocol::Sctp,
                },
                source_port: Some(40000),
                destination_port: Some(flow.port),
                kind: kube_nftpol::compile::LogKind::Denied,
            };
            let record = enrich::enrich(&packet, snapshot, SystemTime::now());
            let line = format!(
                "[pod/kube-nftpol-abc/agent] {}",
                record.render(Format::Json).unwrap()
            );
            hints::parse_line(&line).unwrap().unwrap()
        })
        .collect()
}

fn suggest(snapshot: &Snapshot, asked: &[FlowToAllow]) -> Suggestions {
    hints::suggest(
        asked,
        &Options {
            snapshot: Some(snapshot),
            namespace: None,
            observed: None,
        },
    )
}

/// The snapshot with the suggested policies applied (a policy of the same name is replaced,
/// as `kubectl apply` does).
fn applied(snapshot: &Snapshot, suggestions: &Suggestions) -> Snapshot {
    let mut next = snapshot.clone();
    for suggestion in &suggestions.suggestions {
        next.upsert_network_policy(&suggestion.policy).unwrap();
    }
    next
}

// --- What the drops asked for ---

/// One end of an asked flow: a workload or an address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Workload(Workload),
    Address(IpAddr),
}

/// The sides the drops asked to open, by workload.
#[derive(Debug, Default)]
struct Asked {
    /// (policed workload, direction, peer, protocol, port).
    sides: BTreeSet<(Workload, Direction, Peer, Protocol, u16)>,
    /// DNS ports asked per workload (egress to kube-dns).
    dns: BTreeMap<Workload, BTreeSet<u16>>,
}

fn is_dns(pod: &Pod) -> bool {
    pod.key.namespace == "kube-system"
        && pod.labels.get("k8s-app").map(String::as_str) == Some("kube-dns")
}

fn protocol_of(protocol: IpProtocol) -> Protocol {
    match protocol {
        IpProtocol::Tcp => Protocol::Tcp,
        IpProtocol::Udp => Protocol::Udp,
        IpProtocol::Sctp => Protocol::Sctp,
        other => panic!("{other}"),
    }
}

impl Asked {
    fn add(&mut self, snapshot: &Snapshot, drops: &[FlowToAllow]) {
        for drop in drops {
            let policed = Workload::of_pod(snapshot.pod(&drop.pod.key).unwrap());
            let protocol = protocol_of(drop.protocol);
            let port = drop.port.unwrap();
            let peer = match &drop.peer {
                FlowPeer::Pod(peer) => {
                    let peer = snapshot.pod(&peer.key).unwrap();
                    if drop.direction == Direction::Egress
                        && is_dns(peer)
                        && protocol != Protocol::Sctp
                    {
                        self.dns.entry(policed).or_default().insert(port);
                        continue;
                    }
                    Peer::Workload(Workload::of_pod(peer))
                }
                FlowPeer::External(ip) => Peer::Address(*ip),
            };
            self.sides
                .insert((policed, drop.direction, peer, protocol, port));
        }
    }

    /// Whether a drop asked to open this side of `flow`.
    fn opens(&self, snapshot: &Snapshot, flow: &Flow, direction: Direction) -> bool {
        let (this, other) = match direction {
            Direction::Egress => (&flow.source, &flow.destination),
            Direction::Ingress => (&flow.destination, &flow.source),
        };
        let Endpoint::Pod(this) = this else {
            return false;
        };
        let this = snapshot.pod(this).unwrap();
        let workload = Workload::of_pod(this);
        let peer = match other {
            Endpoint::Pod(key) => {
                let other = snapshot.pod(key).unwrap();
                if direction == Direction::Egress
                    && is_dns(other)
                    && flow.protocol != Protocol::Sctp
                    && self
                        .dns
                        .get(&workload)
                        .is_some_and(|ports| ports.contains(&flow.port))
                {
                    return true;
                }
                Peer::Workload(Workload::of_pod(other))
            }
            Endpoint::Ip(ip) => Peer::Address(*ip),
        };
        self.sides
            .contains(&(workload, direction, peer, flow.protocol, flow.port))
    }
}

// --- The property ---

/// Every flow between the cluster's pods, and between them and the addresses in play, on every
/// port in play.
fn universe(snapshot: &Snapshot, needs: &[Flow]) -> Vec<Flow> {
    let mut ports: BTreeSet<(Protocol, u16)> = needs.iter().map(|f| (f.protocol, f.port)).collect();
    for port in [53, 9999] {
        ports.insert((Protocol::Tcp, port));
        ports.insert((Protocol::Udp, port));
    }
    let mut addresses: BTreeSet<IpAddr> =
        DECOY_ADDRESSES.iter().map(|a| a.parse().unwrap()).collect();
    for need in needs {
        for end in [&need.source, &need.destination] {
            if let Endpoint::Ip(ip) = end {
                addresses.insert(*ip);
            }
        }
    }
    let pods: Vec<Endpoint> = snapshot
        .pods()
        .filter(|p| p.is_policy_endpoint())
        .map(|p| Endpoint::Pod(p.key.clone()))
        .collect();
    let mut flows = Vec::new();
    for (protocol, port) in &ports {
        for source in &pods {
            for destination in &pods {
                if source != destination {
                    flows.push(flow(source.clone(), destination.clone(), *protocol, *port));
                }
            }
            for address in &addresses {
                flows.push(flow(
                    source.clone(),
                    Endpoint::Ip(*address),
                    *protocol,
                    *port,
                ));
                flows.push(flow(
                    Endpoint::Ip(*address),
                    source.clone(),
                    *protocol,
                    *port,
                ));
            }
        }
    }
    flows
}

fn verdicts(snapshot: &Snapshot, flows: &[Flow]) -> Vec<Verdict> {
    flows
        .iter()
        .map(|f| evaluate(snapshot, f).unwrap())
        .collect()
}

/// How `after` differs from what `before` and the drops allow. With `exact`, allowed flows that
/// the drops asked for but are still denied count too; without, only flows allowed beyond that.
fn mismatches(
    before: &Snapshot,
    after: &Snapshot,
    flows: &[Flow],
    asked: &Asked,
    exact: bool,
) -> Vec<String> {
    let was = verdicts(before, flows);
    let is = verdicts(after, flows);
    let mut out = Vec::new();
    for ((flow, was), is) in flows.iter().zip(&was).zip(&is) {
        let egress = was.egress.allows() || asked.opens(before, flow, Direction::Egress);
        let ingress = was.ingress.allows() || asked.opens(before, flow, Direction::Ingress);
        let expected = egress && ingress;
        if (was.allowed && !is.allowed)
            || (is.allowed && !expected)
            || (exact && expected != is.allowed)
        {
            out.push(format!(
                "{} -> {} {}/{}: was {}, expected {}, is {}",
                flow.source,
                flow.destination,
                flow.protocol,
                flow.port,
                was.allowed,
                expected,
                is.allowed
            ));
        }
    }
    out
}

fn assert_no_issues(suggestions: &Suggestions) {
    assert!(suggestions.issues.is_empty(), "{:#?}", suggestions.issues);
}

fn assert_all_allowed(snapshot: &Snapshot, needs: &[Flow]) {
    for need in needs {
        let verdict = evaluate(snapshot, need).unwrap();
        assert!(verdict.allowed, "still denied: {need:?}\n{verdict:#?}");
    }
}

#[test]
fn hints_for_every_denied_side_allow_exactly_the_denied_flows() {
    let before = shop_cluster();
    let needs = shop_needs();
    let drops: Vec<FlowToAllow> = needs
        .iter()
        .flat_map(|need| drops_of(&before, need, Logged::EverySide))
        .collect();
    assert!(drops.len() > needs.len(), "both sides of some flows deny");
    let suggestions = suggest(&before, &drops);
    assert_no_issues(&suggestions);
    assert_eq!(suggestions.no_longer_denied, 0);
    let after = applied(&before, &suggestions);
    assert_all_allowed(&after, &needs);
    let mut asked = Asked::default();
    asked.add(&before, &drops);
    let flows = universe(&before, &needs);
    let wrong = mismatches(&before, &after, &flows, &asked, true);
    assert!(
        wrong.is_empty(),
        "{} of {} flows:\n{}",
        wrong.len(),
        flows.len(),
        wrong.join("\n")
    );
    // The suggestions, applied again, change nothing: nothing is denied any more.
    let again: Vec<FlowToAllow> = needs
        .iter()
        .flat_map(|n| drops_of(&after, n, Logged::EverySide))
        .collect();
    assert!(again.is_empty(), "{again:#?}");
}

#[test]
fn hints_suggest_the_expected_policies_for_the_shop() {
    let before = shop_cluster();
    let drops: Vec<FlowToAllow> = shop_needs()
        .iter()
        .flat_map(|need| drops_of(&before, need, Logged::EverySide))
        .collect();
    let suggestions = suggest(&before, &drops);
    let mut names: Vec<String> = suggestions
        .suggestions
        .iter()
        .map(|s| {
            let meta = &s.policy.metadata;
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap(),
                meta.name.as_deref().unwrap()
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "payments/allow-pay-ingress-hint",
            "payments/allow-pay-egress-hint",
            "payments/allow-settle-egress-hint",
            "shop/allow-api-egress-hint",
            "shop/allow-api-ingress-hint",
            "shop/allow-db-ingress-hint",
            "shop/allow-debug-egress-hint",
            "shop/allow-debug-ingress-hint",
            "shop/allow-frontend-egress-hint",
            "shop/allow-frontend-ingress-hint",
            "shop/allow-worker-egress-hint",
        ]
        .map(str::to_owned)
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    let policy = |name: &str| {
        let s = suggestions
            .suggestions
            .iter()
            .find(|s| s.policy.metadata.name.as_deref() == Some(name))
            .unwrap();
        serde_json::to_value(&s.policy).unwrap()
    };
    // The api and the worker share `app=backend`: the tier tells them apart.
    assert_eq!(
        policy("allow-api-egress-hint")["spec"]["podSelector"],
        json!({"matchLabels": {"app": "backend", "tier": "api"}})
    );
    // The CronJob's pods are selected by their template's label, not the run's.
    assert_eq!(
        policy("allow-settle-egress-hint")["spec"]["podSelector"],
        json!({"matchLabels": {"app": "settle"}})
    );
    // db's ingress: from the api and the worker, on different ports, and Prometheus from its
    // namespace.
    assert_eq!(
        policy("allow-db-ingress-hint")["spec"]["ingress"],
        json!([
            {"from": [{"podSelector": {"matchLabels": {"app": "backend", "tier": "api"}}}],
             "ports": [{"protocol": "TCP", "port": 5432}]},
            {"from": [{"podSelector": {"matchLabels": {"app": "backend", "tier": "worker"}}}],
             "ports": [{"protocol": "TCP", "port": 5432}, {"protocol": "TCP", "port": 5433}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                       "podSelector": {"matchLabels": {"app": "prometheus"}}}],
             "ports": [{"protocol": "TCP", "port": 9100}]},
        ])
    );
    // The api's egress: the database and payments, then both external addresses on 443.
    let api = policy("allow-api-egress-hint");
    assert_eq!(
        api["metadata"]["annotations"]["kube-nftpol.io/hint-external"],
        "true"
    );
    assert_eq!(
        api["spec"]["egress"][2],
        json!({"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}, {"ipBlock": {"cidr": "2001:db8::7/128"}}],
               "ports": [{"protocol": "TCP", "port": 443}]})
    );
}

/// Suggests in rounds as drops show up in the kernel's order, applying each round, until every
/// need is allowed; `whole_log` feeds every line logged so far (as `kubectl logs` does), else
/// only the new ones. Returns the rounds it took.
fn rounds_until_allowed(whole_log: bool) -> usize {
    let original = shop_cluster();
    let needs = shop_needs();
    let flows = universe(&original, &needs);
    let mut current = original.clone();
    let mut log: Vec<FlowToAllow> = Vec::new();
    let mut asked = Asked::default();
    for round in 1..=4 {
        let new: Vec<FlowToAllow> = needs
            .iter()
            .flat_map(|need| drops_of(&current, need, Logged::FirstSide))
            .collect();
        if new.is_empty() {
            assert_all_allowed(&current, &needs);
            let wrong = mismatches(&original, &current, &flows, &asked, true);
            assert!(wrong.is_empty(), "{}", wrong.join("\n"));
            return round - 1;
        }
        asked.add(&original, &new);
        log.extend(new.iter().cloned());
        let input = if whole_log { &log } else { &new };
        let suggestions = suggest(&current, input);
        assert_no_issues(&suggestions);
        let next = applied(&current, &suggestions);
        // No round takes anything away or opens anything no drop asked for.
        let wrong = mismatches(&original, &next, &flows, &asked, false);
        assert!(wrong.is_empty(), "round {round}:\n{}", wrong.join("\n"));
        current = next;
    }
    panic!("still denied after 4 rounds");
}

#[test]
fn hints_in_rounds_as_the_kernel_logs_with_the_whole_log_allow_exactly_the_denied_flows() {
    assert_eq!(rounds_until_allowed(true), 2);
}

#[test]
fn hints_in_rounds_from_only_the_new_lines_keep_what_earlier_hints_allowed() {
    assert_eq!(rounds_until_allowed(false), 2);
}

// --- Generated clusters ---

/// Three namespaces of 2 to 4 workloads (Deployments, StatefulSets, pods without a controller)
/// of 1 to 3 pods, with labels drawn from a small set so that workloads often share some (and
/// then cannot always be told apart: the suggestions list issues instead of opening more);
/// per namespace a random default deny (ingress, egress, both, none) and sometimes an allow
/// policy; CoreDNS; 6 to 14 needed flows.
fn generated(seed: u64) -> (Snapshot, Vec<Flow>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut pods = Vec::new();
    let mut policies = Vec::new();
    let namespaces = ["ns0", "ns1", "ns2"];
    for (n, ns) in namespaces.iter().enumerate() {
        for w in 0..2 + rng.below(3) {
            let name = format!("w{w}");
            // Shared values make workloads that labels cannot tell apart (issues); the name
            // makes one they can.
            let app = *rng.pick(&["a", "b", name.as_str(), name.as_str()]);
            let mut pairs: Vec<(&str, &str)> = vec![("app", app)];
            if rng.below(2) == 0 {
                pairs.push(("tier", *rng.pick(&["x", "y"])));
            }
            let kind = rng.below(3);
            for r in 0..1 + rng.below(3) {
                let ip = format!("10.{n}.{w}.{}", r + 1);
                let pod_name = format!("{name}-{r}");
                let pod = cluster::pod(ns, &pod_name, &pairs, "n1", &[ip.as_str()]);
                pods.push(match kind {
                    0 => {
                        let mut pod = owned(pod, "ReplicaSet", &format!("{name}-h{w}"));
                        pod.labels
                            .insert("pod-template-hash".into(), format!("h{w}"));
                        pod
                    }
                    1 => owned(pod, "StatefulSet", &name),
                    _ => pod,
                });
            }
        }
        let types: &[&str] =
            rng.pick::<&[&str]>(&[&["Ingress"], &["Egress"], &["Ingress", "Egress"], &[]]);
        if !types.is_empty() {
            policies.push(json!({"metadata": {"name": "deny", "namespace": ns},
                                 "spec": {"podSelector": {}, "policyTypes": types}}));
        }
        if rng.below(3) == 0 {
            policies.push(json!({"metadata": {"name": "allow-80", "namespace": ns},
                                 "spec": {"podSelector": {"matchLabels": {"app": rng.pick(&["a", "b"])}},
                                          "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}]}}));
        }
    }
    for r in 0..2 {
        let mut pod = owned(
            cluster::pod(
                "kube-system",
                &format!("coredns-x-{r}"),
                &[("k8s-app", "kube-dns")],
                "n1",
                &[&format!("10.9.0.{}", r + 1)],
            ),
            "ReplicaSet",
            "coredns-x",
        );
        pod.labels.insert("pod-template-hash".into(), "x".into());
        pods.push(pod);
    }
    let snapshot = cluster::snapshot(
        &[
            ("ns0", &[]),
            ("ns1", &[("team", "t")]),
            ("ns2", &[]),
            ("kube-system", &[]),
        ],
        pods,
        policies,
    );
    let endpoints: Vec<ObjectKey> = snapshot.pods().map(|p| p.key.clone()).collect();
    let mut needs = Vec::new();
    for _ in 0..6 + rng.below(9) {
        let source = rng.pick(&endpoints).clone();
        let roll = rng.below(10);
        let need = if roll == 0 {
            flow(
                Endpoint::Pod(source),
                ip_end(rng.pick::<&str>(&["203.0.113.7", "203.0.113.9"])),
                Protocol::Tcp,
                443,
            )
        } else if roll == 1 {
            flow(
                ip_end("198.51.100.10"),
                Endpoint::Pod(source),
                Protocol::Tcp,
                80,
            )
        } else if roll == 2 {
            let dns = rng.pick(&endpoints[endpoints.len() - 2..]).clone();
            flow(Endpoint::Pod(source), Endpoint::Pod(dns), Protocol::Udp, 53)
        } else {
            let destination = rng.pick(&endpoints).clone();
            if destination == source {
                continue;
            }
            let protocol = *rng.pick(&[Protocol::Tcp, Protocol::Tcp, Protocol::Udp]);
            flow(
                Endpoint::Pod(source),
                Endpoint::Pod(destination),
                protocol,
                *rng.pick(&[80, 443, 5432]),
            )
        };
        needs.push(need);
    }
    (snapshot, needs)
}

#[test]
fn hints_for_generated_clusters_never_open_more_than_asked_and_open_all_they_can() {
    let mut issues = 0;
    let mut suggested = 0;
    let mut exact = 0;
    for seed in 0..40 {
        let (before, needs) = generated(seed);
        let drops: Vec<FlowToAllow> = needs
            .iter()
            .flat_map(|n| drops_of(&before, n, Logged::EverySide))
            .collect();
        let suggestions = suggest(&before, &drops);
        issues += suggestions.issues.len();
        suggested += suggestions.suggestions.len();
        let after = applied(&before, &suggestions);
        let mut asked = Asked::default();
        asked.add(&before, &drops);
        let flows = universe(&before, &needs);
        let wrong = mismatches(&before, &after, &flows, &asked, false);
        assert!(wrong.is_empty(), "seed {seed}: {}", wrong.join("\n"));
        // Every need is allowed unless an issue names the workload and direction that deny it.
        let blocked: BTreeSet<(Workload, Direction)> = suggestions
            .issues
            .iter()
            .map(|i| (i.workload.clone(), i.direction))
            .collect();
        for need in &needs {
            let was = evaluate(&before, need).unwrap();
            let is = evaluate(&after, need).unwrap();
            let explained = [(Direction::Egress, &need.source, &was.egress), (Direction::Ingress, &need.destination, &was.ingress)]
                .iter()
                .any(|(direction, end, side)| {
                    !side.allows()
                        && matches!(end, Endpoint::Pod(key)
                            if blocked.contains(&(Workload::of_pod(before.pod(key).unwrap()), *direction)))
                });
            assert!(
                is.allowed || explained,
                "seed {seed}: {need:?} still denied\n{is:#?}\n{:#?}",
                suggestions.issues
            );
        }
        // With no issue at all, the result is exact.
        if suggestions.issues.is_empty() {
            exact += 1;
            let wrong = mismatches(&before, &after, &flows, &asked, true);
            assert!(wrong.is_empty(), "seed {seed}: {}", wrong.join("\n"));
        }
    }
    println!(
        "{suggested} policies suggested, {issues} issues over 40 clusters ({exact} without issues)"
    );
    assert!(
        suggested > 100,
        "the generated clusters should need policies: {suggested}"
    );
    assert!(
        exact >= 10 && issues > 0,
        "{exact} clusters without issues, {issues} issues"
    );
}
