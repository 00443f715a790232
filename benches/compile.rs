//! Compiler benchmark at cluster scale: 10,000 pods in 500 namespaces, 1,000 policies (the
//! shared cluster of `tests/support/scale_cluster.rs`), compiled for a node running 110 of
//! those pods (Kubernetes' default pod limit per node).
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

#[path = "../tests/support/scale_cluster.rs"]
mod scale_cluster;

use scale_cluster::{POD_PORTS, ScaleCluster};

const NODE: &str = "node-0";

/// The shared cluster at scale ([`scale_cluster`]) as a model snapshot; `node-0` holds 110 of
/// its pods.
fn cluster() -> Snapshot {
    let scale = ScaleCluster::full(Ipv4Addr::new(10, 244, 0, 2));
    let mut snapshot = Snapshot::new();
    for n in 0..scale.namespaces {
        let labels: Labels = ScaleCluster::namespace_labels(n).into_iter().collect();
        snapshot.upsert_namespace(Namespace::new(&ScaleCluster::namespace_name(n), labels));
        for policy in ScaleCluster::policies(n) {
            let policy: NetworkPolicy = serde_json::from_value(policy).expect("policy JSON");
            snapshot.upsert_network_policy(&policy).expect("named");
        }
    }
    for pod in scale.pods() {
        snapshot.upsert_pod(Pod {
            key: ObjectKey::new(&pod.namespace, &pod.name),
            labels: pod.labels.into_iter().collect(),
            node: Some(pod.node),
            ips: vec![IpAddr::V4(pod.ip)],
            phase: PodPhase::Active,
            host_network: false,
            terminating: false,
            ports: POD_PORTS
                .iter()
                .map(|(name, port)| ContainerPort {
                    name: Some((*name).into()),
                    port: *port,
                    protocol: Protocol::Tcp,
                })
                .collect(),
            owner: None,
        });
    }
    snapshot
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
