//! Observe mode's closed loop on the evaluator, from zero: namespaces without any policy, in
//! observe mode; their workloads' traffic logged as the agent logs it (each observed side's
//! verdict through `enrich`, printed as JSON lines and read back as `suggest` reads them); one
//! flow the user leaves out with `--exclude`; the suggestions applied. Then every observed flow
//! still gets through, and the excluded one and every flow nobody observed are denied, by
//! `evaluate`. And a flow denied at both ends is fixed in one round.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::SystemTime;

use kube_nftpol::compile::LogKind;
use kube_nftpol::flow_line::{Action, FlowLine, Format};
use kube_nftpol::flowlog::decode::LoggedPacket;
use kube_nftpol::flowlog::enrich;
use kube_nftpol::hints::{self, Exclude, FlowEnd, Options, Suggestions, WorkloadFlow};
use kube_nftpol::model::{
    Direction, IpProtocol, Labels, Namespace, ObjectKey, Owner, Pod, Protocol, Snapshot,
};
use kube_nftpol::policy::{DirectionVerdict, Endpoint, Flow, evaluate};
use kube_nftpol_test_support::cluster::labels;

const EXTERNAL: &str = "203.0.113.7";

fn pod(ns: &str, name: &str, app: &[(&str, &str)], owner: (&str, &str), ip: &str) -> Pod {
    let mut pod = Pod::running(
        ObjectKey::new(ns, name),
        labels(app),
        if ip.ends_with(".1") || ip.ends_with(".3") {
            "node-1"
        } else {
            "node-2"
        },
        [ip.parse().unwrap()],
    );
    pod.owner = Some(Owner {
        kind: owner.0.into(),
        name: owner.1.into(),
    });
    pod
}

/// shop and payments observed (the annotation), no policy anywhere; kube-system's DNS and a
/// client in `other`, neither observed.
fn cluster() -> Snapshot {
    let mut s = Snapshot::new();
    for (name, observed) in [
        ("shop", true),
        ("payments", true),
        ("kube-system", false),
        ("other", false),
    ] {
        let mut namespace = Namespace::new(name, Labels::new());
        namespace.observe = observed;
        s.upsert_namespace(namespace);
    }
    let rs = |name: &'static str| ("ReplicaSet", name);
    for pod in [
        pod(
            "shop",
            "frontend-7d4f9-a1",
            &[("app", "frontend"), ("pod-template-hash", "7d4f9")],
            rs("frontend-7d4f9"),
            "10.244.1.1",
        ),
        pod(
            "shop",
            "frontend-7d4f9-b2",
            &[("app", "frontend"), ("pod-template-hash", "7d4f9")],
            rs("frontend-7d4f9"),
            "10.244.2.2",
        ),
        pod(
            "shop",
            "backend-5c8b6-c3",
            &[("app", "backend"), ("pod-template-hash", "5c8b6")],
            rs("backend-5c8b6"),
            "10.244.1.3",
        ),
        pod(
            "shop",
            "db-0",
            &[("app", "db")],
            ("StatefulSet", "db"),
            "10.244.2.4",
        ),
        pod(
            "payments",
            "api-6b7c8-d5",
            &[("app", "api"), ("pod-template-hash", "6b7c8")],
            rs("api-6b7c8"),
            "10.244.2.5",
        ),
        pod(
            "kube-system",
            "coredns-7f89b-e6",
            &[("k8s-app", "kube-dns"), ("pod-template-hash", "7f89b")],
            rs("coredns-7f89b"),
            "10.244.2.6",
        ),
        pod(
            "other",
            "client-1a2b3-f7",
            &[("app", "client"), ("pod-template-hash", "1a2b3")],
            rs("client-1a2b3"),
            "10.244.2.8",
        ),
    ] {
        s.upsert_pod(pod);
    }
    s
}

fn ip(snapshot: &Snapshot, ns: &str, name_start: &str) -> IpAddr {
    snapshot
        .pods_in(ns)
        .find(|p| p.key.name.starts_with(name_start))
        .map(|p| p.ips[0])
        .unwrap_or_else(|| panic!("no pod {ns}/{name_start}"))
}

/// The workloads' traffic, as (source, destination, protocol, port).
fn traffic(s: &Snapshot) -> Vec<(IpAddr, IpAddr, Protocol, u16)> {
    let front1 = ip(s, "shop", "frontend-7d4f9-a1");
    let front2 = ip(s, "shop", "frontend-7d4f9-b2");
    let backend = ip(s, "shop", "backend");
    let db = ip(s, "shop", "db-0");
    vec![
        (front1, backend, Protocol::Tcp, 8080),
        (front2, backend, Protocol::Tcp, 8080),
        (backend, db, Protocol::Tcp, 5432),
        (front1, ip(s, "kube-system", "coredns"), Protocol::Udp, 53),
        (backend, EXTERNAL.parse().unwrap(), Protocol::Tcp, 443),
        (ip(s, "payments", "api"), backend, Protocol::Tcp, 8080),
        (ip(s, "other", "client"), front2, Protocol::Tcp, 80),
        // The one the user unticks.
        (front1, db, Protocol::Tcp, 5432),
    ]
}

fn flow(source: IpAddr, destination: IpAddr, protocol: Protocol, port: u16) -> Flow {
    Flow {
        source: Endpoint::Ip(source),
        destination: Endpoint::Ip(destination),
        protocol,
        port,
    }
}

/// What the agents log for one connection's first packet: each side whose pod is observed, in
/// the order the packet meets them (the sender's egress, then the receiver's ingress), until a
/// default deny drops it. Lines are rendered and read back as `suggest` reads them.
fn logged(
    s: &Snapshot,
    source: IpAddr,
    destination: IpAddr,
    protocol: Protocol,
    port: u16,
) -> Vec<FlowLine> {
    let verdict = evaluate(s, &flow(source, destination, protocol, port)).unwrap();
    let mut lines = Vec::new();
    for (direction, side) in [
        (Direction::Egress, &verdict.egress),
        (Direction::Ingress, &verdict.ingress),
    ] {
        let (pod, kind) = match side {
            DirectionVerdict::Denied { pod, .. } => (pod, LogKind::Denied),
            DirectionVerdict::Allowed { pod, .. } => (pod, LogKind::Allowed),
            DirectionVerdict::NotIsolated { pod, .. } => (pod, LogKind::NotIsolated),
            _ => continue,
        };
        if kind != LogKind::Denied && !s.observed(&pod.namespace) {
            continue;
        }
        let packet = LoggedPacket {
            kind,
            direction,
            pod: pod.clone(),
            source,
            destination,
            protocol: match protocol {
                Protocol::Tcp => IpProtocol::Tcp,
                Protocol::Udp => IpProtocol::Udp,
                Protocol::Sctp => IpProtocol::Sctp,
            },
            source_port: Some(40000),
            destination_port: Some(port),
        };
        let line = enrich::enrich(&packet, s, SystemTime::now());
        let text = format!(
            "[pod/kube-nftpol-x/agent] {}",
            line.render(Format::Json).unwrap()
        );
        lines.push(FlowLine::parse(&text).unwrap().unwrap());
        if kind == LogKind::Denied {
            break;
        }
    }
    lines
}

/// Suggests from `lines` in observe mode against `s`, leaving out `exclude`, and applies every
/// suggestion to `s`.
fn suggest_and_apply(s: &mut Snapshot, lines: &[FlowLine], exclude: &[Exclude]) -> Suggestions {
    let observed = hints::to_allow(lines, Some(s), exclude, true);
    let suggestions = hints::suggest(
        &observed.flows,
        &Options {
            snapshot: Some(s),
            namespace: None,
            observed: Some(&observed.scope),
        },
    );
    assert!(suggestions.issues.is_empty(), "{:#?}", suggestions.issues);
    for suggestion in &suggestions.suggestions {
        s.upsert_network_policy(&suggestion.policy).unwrap();
    }
    suggestions
}

fn workload_flow(
    s: &Snapshot,
    source: IpAddr,
    destination: IpAddr,
    protocol: Protocol,
    port: u16,
) -> WorkloadFlow {
    let end = |ip: IpAddr| match s.pod_by_ip(ip) {
        Some(pod) => FlowEnd::Workload(hints::Workload::of(
            &pod.key,
            &pod.labels,
            pod.owner.as_ref(),
        )),
        None => FlowEnd::Address(ip),
    };
    WorkloadFlow {
        source: end(source),
        destination: end(destination),
        protocol: match protocol {
            Protocol::Tcp => IpProtocol::Tcp,
            Protocol::Udp => IpProtocol::Udp,
            Protocol::Sctp => IpProtocol::Sctp,
        },
        port: Some(port),
    }
}

#[test]
fn from_zero_one_round_of_observed_suggestions_allows_exactly_what_was_seen() {
    let mut s = cluster();
    let traffic = traffic(&s);
    let lines: Vec<FlowLine> = traffic
        .iter()
        .flat_map(|&(src, dst, protocol, port)| logged(&s, src, dst, protocol, port))
        .collect();
    assert!(
        lines.iter().all(|l| l.action == Action::Allow),
        "no policy yet: nothing denied"
    );
    let excluded = *traffic.last().unwrap();
    let excluded_flow = workload_flow(&s, excluded.0, excluded.1, excluded.2, excluded.3);
    let exclude: Exclude = format!("flow={}", excluded_flow.id()).parse().unwrap();
    let before = s.clone();
    let suggestions = suggest_and_apply(&mut s, &lines, &[exclude]);
    // Every observed workload (shop's and payments') gets both directions; nothing outside.
    let mut covered: Vec<String> = suggestions
        .suggestions
        .iter()
        .map(|sug| format!("{} {}", sug.workload, sug.direction))
        .collect();
    covered.sort();
    assert_eq!(
        covered,
        [
            "Deployment payments/api egress",
            "Deployment payments/api ingress",
            "Deployment shop/backend egress",
            "Deployment shop/backend ingress",
            "Deployment shop/frontend egress",
            "Deployment shop/frontend ingress",
            "StatefulSet shop/db egress",
            "StatefulSet shop/db ingress",
        ]
    );
    assert!(
        suggestions.suggestions.iter().all(|sug| sug.isolates),
        "nothing was isolated"
    );
    assert!(suggestions.suggestions.iter().any(|sug| sug.dns));

    // What was observed (and not excluded) passes; the excluded flow does not.
    let observed: BTreeSet<WorkloadFlow> = traffic[..traffic.len() - 1]
        .iter()
        .map(|&(src, dst, protocol, port)| workload_flow(&before, src, dst, protocol, port))
        .collect();
    for &(src, dst, protocol, port) in &traffic[..traffic.len() - 1] {
        assert!(
            evaluate(&s, &flow(src, dst, protocol, port))
                .unwrap()
                .allowed,
            "{src} -> {dst} {protocol}/{port} was observed and must still pass"
        );
    }
    assert!(
        !evaluate(&s, &flow(excluded.0, excluded.1, excluded.2, excluded.3))
            .unwrap()
            .allowed,
        "the excluded flow is denied"
    );

    // Every other flow with an end in an observed namespace is denied: every pair of
    // addresses on every port in play, but the DNS rule's TCP twin (allowed on purpose).
    let mut addresses: Vec<IpAddr> = before.pods().map(|p| p.ips[0]).collect();
    addresses.push(EXTERNAL.parse().unwrap());
    let dns = ip(&before, "kube-system", "coredns");
    let mut checked = 0;
    for &src in &addresses {
        for &dst in &addresses {
            if src == dst {
                continue;
            }
            let in_scope = [src, dst].iter().any(|ip| {
                before
                    .pod_by_ip(*ip)
                    .is_some_and(|p| before.observed(&p.key.namespace))
            });
            if !in_scope || before.pod_by_ip(src).is_none() {
                continue;
            }
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                for port in [53, 80, 443, 5432, 8080, 9090] {
                    let seen = observed.contains(&workload_flow(&before, src, dst, protocol, port));
                    let dns_twin = dst == dns
                        && port == 53
                        && observed.contains(&workload_flow(&before, src, dst, Protocol::Udp, 53));
                    let allowed = evaluate(&s, &flow(src, dst, protocol, port))
                        .unwrap()
                        .allowed;
                    checked += 1;
                    assert_eq!(
                        allowed,
                        seen || dns_twin,
                        "{src} -> {dst} {protocol}/{port}: observed {seen}, allowed {allowed}"
                    );
                }
            }
        }
    }
    assert!(checked > 300, "{checked} flows checked");
}

#[test]
fn external_peers_are_left_out_unless_asked_for_and_exclusions_by_workload_port_and_peer() {
    let s = cluster();
    let lines: Vec<FlowLine> = traffic(&s)
        .iter()
        .flat_map(|&(src, dst, protocol, port)| logged(&s, src, dst, protocol, port))
        .collect();
    let observed = hints::to_allow(&lines, Some(&s), &[], false);
    let external: Vec<String> = observed
        .external
        .iter()
        .map(|e| e.flow.to_string())
        .collect();
    assert_eq!(external, ["Deployment shop/backend -> 203.0.113.7 tcp/443"]);
    assert!(
        observed
            .flows
            .iter()
            .all(|f| !matches!(f.peer, hints::FlowPeer::External(_)))
    );
    let count = |exclude: &str| {
        let exclude: Exclude = exclude.parse().unwrap();
        hints::to_allow(&lines, Some(&s), &[exclude], true)
            .excluded
            .len()
    };
    assert_eq!(count("workload=payments/api"), 1);
    assert_eq!(count("port=tcp/5432"), 2);
    assert_eq!(count("port=53"), 1);
    assert_eq!(count("peer=203.0.113.0/24"), 1);
    assert_eq!(count("peer=shop/db"), 2);
    for bad in [
        "flow=xyz",
        "nothing",
        "port=0",
        "port=icmp/1",
        "workload=shop",
        "peer=x",
    ] {
        assert!(bad.parse::<Exclude>().is_err(), "{bad}");
    }
}

#[test]
fn a_flow_denied_at_both_ends_is_fixed_in_one_round() {
    // Both namespaces isolated already (a default deny each), neither observed: the sender's
    // egress drop is all the log shows, and hides the receiver's ingress drop.
    let mut s = cluster();
    for ns in ["shop", "payments"] {
        let mut namespace = s.namespace(ns).cloned().unwrap();
        namespace.observe = false;
        s.upsert_namespace(namespace);
        let deny = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "default-deny", "namespace": ns},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        }))
        .unwrap();
        s.upsert_network_policy(&deny).unwrap();
    }
    let api = ip(&s, "payments", "api");
    let backend = ip(&s, "shop", "backend");
    let lines = logged(&s, api, backend, Protocol::Tcp, 8080);
    assert_eq!(
        lines.len(),
        1,
        "only the sender's drop is logged: {lines:?}"
    );
    assert_eq!(lines[0].direction, Direction::Egress);
    let suggestions = suggest_and_apply(&mut s, &lines, &[]);
    assert_eq!(suggestions.suggestions.len(), 2, "{suggestions:#?}");
    assert!(
        evaluate(&s, &flow(api, backend, Protocol::Tcp, 8080))
            .unwrap()
            .allowed
    );
    // Nothing else was opened.
    assert!(
        !evaluate(&s, &flow(api, backend, Protocol::Tcp, 8081))
            .unwrap()
            .allowed
    );
    assert!(
        !evaluate(&s, &flow(backend, api, Protocol::Tcp, 8080))
            .unwrap()
            .allowed
    );
}
