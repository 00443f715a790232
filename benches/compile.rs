//! Compiler benchmark at cluster scale: 10,000 pods in 500 namespaces, 1,000 policies, compiled
//! for a node running 110 of those pods (Kubernetes' default pod limit per node).
//!
//! `cargo bench --bench compile` prints criterion's timing for `compile` alone and for
//! `compile` plus rendering to nft text, then the process's peak resident memory (VmHWM) after
//! building the snapshot and after the measurements.

#[path = "../integration/bench/scale_cluster.rs"]
mod scale_cluster;

use std::hint::black_box;

use criterion::Criterion;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube_nftpol::compile::{self, Options, render_text};
use kube_nftpol::model::{Namespace, Pod, Snapshot};
use serde_json::from_value;

const NODE: &str = "node-0";

/// The shared 10,000-pod cluster (`integration/bench/scale_cluster.rs`); `node-0` holds 110 of
/// its pods. Objects are converted as they come, so the peak memory measured after this is
/// the snapshot's, not the generator's.
fn cluster() -> Snapshot {
    let mut snapshot = Snapshot::new();
    for object in scale_cluster::objects() {
        match object["kind"].as_str() {
            Some("Namespace") => {
                let namespace: core::Namespace = from_value(object).expect("namespace JSON");
                snapshot.upsert_namespace(Namespace::from_k8s(&namespace).expect("named"));
            }
            Some("Pod") => {
                let pod: core::Pod = from_value(object).expect("pod JSON");
                snapshot.upsert_pod(Pod::from_k8s(&pod).expect("a valid pod").0);
            }
            Some("NetworkPolicy") => {
                let policy: NetworkPolicy = from_value(object).expect("policy JSON");
                snapshot.upsert_network_policy(&policy).expect("named");
            }
            other => panic!("the generator made a {other:?}"),
        }
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
