//! Compiler benchmark at cluster scale: 10,000 pods in 500 namespaces, 1,000 policies, compiled
//! for a node running 110 of those pods (Kubernetes' default pod limit per node).
//!
//! `cargo bench --bench compile` prints criterion's timing for `compile` alone, for `compile`
//! plus rendering to nft text, for `compile` of the snapshot that follows one peer pod's label
//! change (the case the programming latency target is about: a pod in another namespace starts or
//! stops matching a cluster-wide selector), and for the Kubernetes source's copy of the
//! snapshot after one pod event, and for the linter behind the agent's posture metric on the
//! whole cluster; then the process's peak resident memory (VmHWM) after building the snapshot
//! and after the measurements.

use std::hint::black_box;

use criterion::{BatchSize, Criterion};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher::Event;
use kube_nftpol::compile::{self, Options, render_text};
use kube_nftpol::lint;
use kube_nftpol::model::{Namespace, Pod, Snapshot};
use kube_nftpol::source::kubernetes::Cache;
use kube_nftpol_test_support::scale_cluster::ScaleCluster;
use serde_json::{Value, from_value, json};

const NODE: &str = "node-0";

/// The pod whose label changes in the "after one label change" cases: in `ns-250`, on
/// `node-45`, far from [`NODE`].
const RELABELLED: (&str, &str) = ("ns-250", "app-1-6");

/// The shared 10,000-pod cluster (`ScaleCluster::plain`, in the test-support crate); `node-0` holds 110 of
/// its pods. Objects are converted as they come, so the peak memory measured after this is
/// the snapshot's, not the generator's.
fn cluster() -> Snapshot {
    let mut snapshot = Snapshot::new();
    for object in ScaleCluster::plain().objects() {
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

/// A policy in each of [`NODE`]'s namespaces admitting pods labelled `role: scraper` from any
/// namespace: the selector the relabelled pod starts or stops matching.
fn scraper_policies(snapshot: &Snapshot) -> Vec<NetworkPolicy> {
    let namespaces: std::collections::BTreeSet<&str> = snapshot
        .pods()
        .filter(|p| p.node.as_deref() == Some(NODE))
        .map(|p| p.key.namespace.as_str())
        .collect();
    namespaces
        .into_iter()
        .map(|ns| {
            from_value(json!({
                "metadata": {"name": "allow-scraper", "namespace": ns},
                "spec": {"podSelector": {}, "ingress": [{"from": [
                    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "scraper"}}}
                ]}]}
            }))
            .expect("policy JSON")
        })
        .collect()
}

/// The generator's JSON of the [`RELABELLED`] pod, with `role: scraper` when `scraper`.
fn relabelled(scraper: bool) -> core::Pod {
    let (ns, name) = RELABELLED;
    let mut object: Value = ScaleCluster::plain()
        .objects()
        .find(|o| {
            o["kind"] == "Pod" && o["metadata"]["namespace"] == ns && o["metadata"]["name"] == name
        })
        .expect("the generator makes the relabelled pod");
    if scraper {
        object["metadata"]["labels"]["role"] = json!("scraper");
    }
    from_value(object).expect("pod JSON")
}

/// The Kubernetes source's cache after listing the whole cluster, one kind at a time as the
/// watches do; objects are converted as they come (as in [`cluster`]), so the peak memory
/// stays the snapshot's.
fn listed_cache() -> Cache {
    let mut cache = Cache::new();
    let of_kind = |kind: &'static str| {
        ScaleCluster::plain()
            .objects()
            .filter(move |o| o["kind"] == kind)
    };
    cache.apply_pod(Event::Init);
    for pod in of_kind("Pod") {
        cache.apply_pod(Event::InitApply(from_value(pod).expect("pod JSON")));
    }
    cache.apply_pod(Event::InitDone);
    cache.apply_namespace(Event::Init);
    for namespace in of_kind("Namespace") {
        cache.apply_namespace(Event::InitApply(
            from_value(namespace).expect("namespace JSON"),
        ));
    }
    cache.apply_namespace(Event::InitDone);
    cache.apply_policy(Event::Init);
    for policy in of_kind("NetworkPolicy") {
        cache.apply_policy(Event::InitApply(from_value(policy).expect("policy JSON")));
    }
    cache.apply_policy(Event::InitDone);
    cache
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

    // The agent compiles each new snapshot once; the one before it was compiled already.
    let mut changing = snapshot.clone();
    for policy in scraper_policies(&snapshot) {
        changing.upsert_network_policy(&policy).expect("named");
    }
    let _warm = compile::compile(&changing, NODE, &options);
    let relabelled_pods =
        [true, false].map(|scraper| Pod::from_k8s(&relabelled(scraper)).expect("a valid pod").0);
    let mut flip = 0usize;
    criterion.bench_function("compile after one peer pod's label change", |b| {
        b.iter_batched(
            || {
                flip += 1;
                let mut next = changing.clone();
                next.upsert_pod(relabelled_pods[flip % 2].clone());
                next
            },
            |next| compile::compile(black_box(&next), NODE, &options),
            BatchSize::SmallInput,
        )
    });

    let mut cache = listed_cache();
    let events = [true, false].map(relabelled);
    let mut flip = 0usize;
    criterion.bench_function(
        "source: one pod event, then the snapshot copy (10k pods)",
        |b| {
            b.iter(|| {
                flip += 1;
                cache.apply_pod(Event::Apply(events[flip % 2].clone()));
                cache.snapshot()
            })
        },
    );
    let lint_config = lint::Config::default();
    println!(
        "lint: {} findings on the cluster",
        lint::lint(&snapshot, &lint_config).len()
    );
    criterion.bench_function("lint 10k pods / 1k policies (the posture metric)", |b| {
        b.iter(|| lint::lint(black_box(&snapshot), &lint_config))
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
