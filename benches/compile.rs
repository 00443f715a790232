//! Compiler benchmark at cluster scale: 10,000 pods in 500 namespaces, 1,000 policies, compiled
//! for a node running 110 of those pods (Kubernetes' default pod limit per node).
//!
//! `cargo bench --bench compile` prints criterion's timing for `compile` alone and for
//! `compile` plus rendering to nft text, then the process's peak resident memory (VmHWM) after
//! building the snapshot and after the measurements.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::Criterion;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube_nftpol::compile::{self, Options, render_text};
use kube_nftpol::model::{
    ContainerPort, Labels, Namespace, ObjectKey, Pod, PodPhase, Protocol, Snapshot,
};
use serde_json::json;

const NAMESPACES: usize = 500;
const PODS_PER_NAMESPACE: usize = 20;
const PODS_PER_NODE: usize = 110;
const NODE: &str = "node-0";

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// 10,000 pods: namespace `ns-N` has pods `app-A-I` with app labels `app-0..app-4`, spread over
/// nodes so that `node-0` holds 110 of them; two policies per namespace.
fn cluster() -> Snapshot {
    let mut snapshot = Snapshot::new();
    let mut index = 0usize;
    for n in 0..NAMESPACES {
        let ns = format!("ns-{n}");
        snapshot.upsert_namespace(Namespace::new(
            &ns,
            labels(&[("team", format!("team-{}", n % 50))]),
        ));
        for i in 0..PODS_PER_NAMESPACE {
            let app = format!("app-{}", i % 5);
            let ip = IpAddr::V4(Ipv4Addr::from(0x0af4_0000u32 + index as u32 + 2));
            snapshot.upsert_pod(Pod {
                key: ObjectKey::new(&ns, format!("{app}-{i}")),
                labels: labels(&[("app", app.clone()), ("pod-template-hash", format!("h{i}"))]),
                node: Some(format!("node-{}", index / PODS_PER_NODE)),
                ips: vec![ip],
                phase: PodPhase::Active,
                host_network: false,
                terminating: false,
                ports: vec![
                    ContainerPort {
                        name: Some("http".into()),
                        port: 8080,
                        protocol: Protocol::Tcp,
                    },
                    ContainerPort {
                        name: Some("metrics".into()),
                        port: 9090,
                        protocol: Protocol::Tcp,
                    },
                ],
                owner: None,
            });
            index += 1;
        }
        for policy in policies(&ns, n) {
            snapshot.upsert_network_policy(&policy).expect("named");
        }
    }
    snapshot
}

fn policies(ns: &str, n: usize) -> [NetworkPolicy; 2] {
    let deny = json!({
        "metadata": {"name": "default-deny", "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                 "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns-0"}}}],
                             "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]}
    });
    let allow = json!({
        "metadata": {"name": "allow-app", "namespace": ns},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["app-0", "app-1", "app-2"]}]},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "app-3"}}},
                          {"namespaceSelector": {"matchLabels": {"team": format!("team-{}", (n + 1) % 50)}}}],
                 "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]},
                {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}]}
            ],
            "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}]
        }
    });
    [deny, allow].map(|v| serde_json::from_value(v).expect("policy JSON"))
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let before = peak_rss_kib();
    let snapshot = cluster();
    let after_snapshot = peak_rss_kib();
    let options = Options::default();
    let ruleset = compile::compile(&snapshot, NODE, &options);
    let local = snapshot
        .pods()
        .filter(|p| p.node.as_deref() == Some(NODE))
        .count();
    let elements: usize = ruleset.sets.iter().map(|s| s.elements.len()).sum();
    let rules: usize = ruleset.chains.iter().map(|c| c.rules.len()).sum();
    println!(
        "cluster: {} pods, {} namespaces, {} policies; {NODE}: {local} pods -> {} chains, {rules} rules, {} sets, {elements} set elements, {} bytes of nft text",
        snapshot.pods().count(),
        snapshot.namespaces().count(),
        snapshot.policies().count(),
        ruleset.chains.len(),
        ruleset.sets.len(),
        render_text::render(&ruleset).len(),
    );

    let mut criterion = Criterion::default().configure_from_args().sample_size(20);
    criterion.bench_function("compile 10k pods / 1k policies for a 110-pod node", |b| {
        b.iter(|| compile::compile(black_box(&snapshot), NODE, &options))
    });
    criterion.bench_function("compile + render nft text", |b| {
        b.iter(|| render_text::render(&compile::compile(black_box(&snapshot), NODE, &options)))
    });
    criterion.final_summary();

    let fmt = |v: Option<u64>| {
        v.map_or("unknown".to_string(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    println!(
        "peak RSS: {} at start, {} with the snapshot built, {} after compiling",
        fmt(before),
        fmt(after_snapshot),
        fmt(peak_rss_kib())
    );
}
