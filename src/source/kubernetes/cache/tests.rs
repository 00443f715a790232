use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as networking;
use kube::runtime::watcher::Event;
use serde_json::json;

use super::Cache;
use crate::events::PolicyKind;
use crate::model::ObjectKey;
use crate::source::kubernetes::{ClusterPolicyObject, NodeFields};

fn pod(namespace: &str, name: &str, app: &str, ip: Option<&str>) -> core::Pod {
    let mut status = json!({ "phase": "Running" });
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
    }
    serde_json::from_value(json!({
        "metadata": { "namespace": namespace, "name": name, "labels": { "app": app } },
        "spec": { "nodeName": "n1", "containers": [{ "name": "c" }] },
        "status": status,
    }))
    .unwrap()
}

fn terminating(mut pod: core::Pod) -> core::Pod {
    pod.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
    pod
}

fn namespace(name: &str, labels: serde_json::Value) -> core::Namespace {
    serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } })).unwrap()
}

fn policy(namespace: &str, name: &str, cidr: &str) -> networking::NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": { "namespace": namespace, "name": name, "uid": "u1", "resourceVersion": "7" },
        "spec": {
            "podSelector": {},
            "ingress": [{ "from": [{ "ipBlock": { "cidr": cidr } }] }],
        },
    }))
    .unwrap()
}

fn synced() -> Cache {
    let mut cache = Cache::new();
    cache.apply_pod(Event::Init);
    cache.apply_pod(Event::InitDone);
    cache.apply_namespace(Event::Init);
    cache.apply_namespace(Event::InitDone);
    cache.apply_policy(Event::Init);
    cache.apply_policy(Event::InitDone);
    cache.apply_node(Event::Init);
    cache.apply_node(Event::InitDone);
    cache.apply_cluster_policy(Event::Init);
    cache.apply_cluster_policy(Event::InitDone);
    cache
}

fn cluster_policy(name: &str, cidr: &str, version: &str) -> ClusterPolicyObject {
    serde_json::from_value(json!({
        "metadata": { "name": name, "uid": "u2", "resourceVersion": version },
        "spec": {
            "tier": "Admin", "priority": 5, "subject": { "namespaces": {} },
            "egress": [{ "action": "Deny", "to": [{ "networks": [cidr] }] }],
        },
    }))
    .unwrap()
}

fn node(name: &str, ip: &str) -> NodeFields {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "kubernetes.io/os": "linux" } },
        "status": { "addresses": [{ "type": "InternalIP", "address": ip }] },
    }))
    .unwrap()
}

fn ips_of(cache: &Cache, namespace: &str, name: &str) -> Vec<IpAddr> {
    cache
        .snapshot()
        .pod(&ObjectKey::new(namespace, name))
        .map(|p| p.ips.clone())
        .unwrap_or_default()
}

#[test]
fn the_cache_is_synced_only_after_every_kind_was_listed() {
    let mut cache = Cache::new();
    assert!(!cache.is_synced());
    cache.apply_pod(Event::Init);
    cache.apply_pod(Event::InitApply(pod("x", "a", "a", Some("10.0.0.1"))));
    cache.apply_pod(Event::InitDone);
    cache.apply_namespace(Event::Init);
    cache.apply_namespace(Event::InitDone);
    assert!(!cache.is_synced());
    assert_eq!(
        cache.waiting_for(),
        ["networkpolicies", "nodes", "clusternetworkpolicies"]
    );
    cache.apply_policy(Event::Init);
    cache.apply_policy(Event::InitDone);
    cache.apply_node(Event::Init);
    cache.apply_node(Event::InitApply(node("n1", "172.18.0.2")));
    cache.apply_node(Event::InitDone);
    assert_eq!(cache.waiting_for(), ["clusternetworkpolicies"]);
    cache.apply_cluster_policy(Event::Init);
    cache.apply_cluster_policy(Event::InitDone);
    assert!(cache.is_synced());
    assert_eq!(cache.snapshot().pods().count(), 1);
    assert_eq!(cache.snapshot().nodes().count(), 1);
}

#[test]
fn without_the_crd_there_are_no_cluster_policies_and_the_cache_syncs() {
    let mut cache = synced();
    cache.apply_cluster_policy(Event::Apply(cluster_policy("a", "10.0.0.0/8", "1")));
    assert_eq!(cache.snapshot().cluster_policies().count(), 1);
    // The CRD is deleted (its objects went first) and the watch answers 404.
    assert!(cache.cluster_policies_absent(), "news the first time");
    assert!(!cache.cluster_policies_absent(), "not the next times");
    assert_eq!(cache.snapshot().cluster_policies().count(), 0);
    assert!(cache.is_synced());
    // A fresh cache that never saw the CRD syncs on the first 404.
    let mut fresh = Cache::new();
    assert!(fresh.cluster_policies_absent());
    assert_eq!(
        fresh.waiting_for(),
        ["pods", "namespaces", "networkpolicies", "nodes"]
    );
}

#[test]
fn an_invalid_cluster_policy_is_kept_fail_closed_listed_once_per_version_and_survives_relists() {
    let mut cache = synced();
    cache.apply_cluster_policy(Event::Apply(cluster_policy("bad", "10.0.0.0/33", "1")));
    cache.apply_policy(Event::Apply(policy("x", "bad", "10.0.0.0/33")));
    let invalid: Vec<_> = cache.invalid_policies().cloned().collect();
    assert_eq!(invalid.len(), 2);
    let cluster = invalid
        .iter()
        .find(|p| p.kind == PolicyKind::ClusterNetworkPolicy)
        .unwrap();
    assert_eq!(cluster.key, ObjectKey::new("", "bad"));
    assert_eq!(cluster.identity.resource_version.as_deref(), Some("1"));
    assert_eq!(cluster.errors[0].field, "spec.egress[0].to[0].networks[0]");
    let enforced = cache.snapshot();
    let enforced = enforced.cluster_policy("bad").unwrap();
    assert!(enforced.is_invalid());
    assert!(matches!(
        enforced.egress[0].peers[..],
        [crate::model::ClusterPeer::Any]
    ));
    // A NetworkPolicy relist keeps the ClusterNetworkPolicy's report, and the other way round.
    cache.apply_policy(Event::Init);
    cache.apply_policy(Event::InitDone);
    assert_eq!(cache.invalid_policies().count(), 1);
    cache.apply_cluster_policy(Event::Init);
    cache.apply_cluster_policy(Event::InitApply(cluster_policy("bad", "10.0.0.0/8", "2")));
    cache.apply_cluster_policy(Event::InitDone);
    assert_eq!(cache.invalid_policies().count(), 0, "fixed");
    cache.apply_cluster_policy(Event::Delete(cluster_policy("bad", "10.0.0.0/8", "2")));
    assert!(cache.snapshot().cluster_policy("bad").is_none());
}

#[test]
fn nodes_follow_their_watch_and_a_relist_replaces_them() {
    let mut cache = synced();
    cache.apply_node(Event::Apply(node("n1", "172.18.0.2")));
    cache.apply_node(Event::Apply(node("n2", "172.18.0.3")));
    cache.apply_node(Event::Delete(node("n1", "172.18.0.2")));
    let names: Vec<String> = cache.snapshot().nodes().map(|n| n.name.clone()).collect();
    assert_eq!(names, ["n2"]);
    cache.apply_node(Event::Init);
    cache.apply_node(Event::InitApply(node("n3", "172.18.0.4")));
    cache.apply_node(Event::InitDone);
    let snapshot = cache.snapshot();
    let nodes: Vec<_> = snapshot.nodes().collect();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        nodes[0].addresses,
        ["172.18.0.4".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn a_relist_is_swapped_in_whole_and_drops_what_was_deleted_meanwhile() {
    let mut cache = synced();
    cache.apply_pod(Event::Apply(pod("x", "a", "a", Some("10.0.0.1"))));
    cache.apply_pod(Event::Apply(pod("x", "b", "b", Some("10.0.0.2"))));
    cache.apply_pod(Event::Init);
    cache.apply_pod(Event::InitApply(pod("x", "b", "b2", Some("10.0.0.2"))));
    // Mid-relist the old state is still what the snapshot shows.
    assert_eq!(cache.snapshot().pods().count(), 2);
    cache.apply_pod(Event::InitDone);
    let snapshot = cache.snapshot();
    let pods: Vec<_> = snapshot.pods().map(|p| p.key.name.clone()).collect();
    assert_eq!(pods, ["b"]);
    assert_eq!(snapshot.pods().next().unwrap().labels["app"], "b2");
}

#[test]
fn namespaces_without_the_name_label_get_it() {
    let mut cache = synced();
    cache.apply_namespace(Event::Apply(namespace("x", json!({ "team": "t" }))));
    let snapshot = cache.snapshot();
    let labels = &snapshot.namespace("x").unwrap().labels;
    assert_eq!(labels["kubernetes.io/metadata.name"], "x");
    assert_eq!(labels["team"], "t");
}

#[test]
fn an_invalid_policy_is_kept_fail_closed_and_listed_until_fixed_or_deleted() {
    let mut cache = synced();
    cache.apply_policy(Event::Apply(policy("x", "bad", "10.0.0.0/33")));
    let invalid: Vec<_> = cache.invalid_policies().collect();
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0].identity.uid.as_deref(), Some("u1"));
    assert!(invalid[0].errors[0].field.contains("ipBlock"));
    assert_eq!(cache.snapshot().policies().count(), 1);
    cache.apply_policy(Event::Apply(policy("x", "bad", "10.0.0.0/24")));
    assert_eq!(cache.invalid_policies().count(), 0);
    cache.apply_policy(Event::Apply(policy("x", "bad", "nonsense")));
    assert_eq!(cache.invalid_policies().count(), 1);
    cache.apply_policy(Event::Delete(policy("x", "bad", "nonsense")));
    assert_eq!(cache.invalid_policies().count(), 0);
    assert_eq!(cache.snapshot().policies().count(), 0);
}

#[test]
fn a_terminating_pod_keeps_its_ip_until_another_pod_claims_it() {
    let mut cache = synced();
    cache.apply_pod(Event::Apply(terminating(pod(
        "x",
        "old",
        "a",
        Some("10.0.0.1"),
    ))));
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(ips_of(&cache, "x", "old"), [ip]);
    assert!(
        cache
            .snapshot()
            .pod(&ObjectKey::new("x", "old"))
            .unwrap()
            .terminating
    );
    cache.apply_pod(Event::Apply(pod("x", "new", "b", Some("10.0.0.1"))));
    assert_eq!(ips_of(&cache, "x", "old"), Vec::<IpAddr>::new());
    assert_eq!(ips_of(&cache, "x", "new"), [ip]);
}

#[test]
fn between_two_live_claims_of_one_ip_the_latest_wins_whatever_the_names() {
    let ip: IpAddr = "10.0.0.9".parse().unwrap();
    for (first, second) in [("a", "z"), ("z", "a")] {
        let mut cache = synced();
        cache.apply_pod(Event::Apply(pod("x", first, "one", Some("10.0.0.9"))));
        cache.apply_pod(Event::Apply(pod("x", second, "two", Some("10.0.0.9"))));
        assert_eq!(ips_of(&cache, "x", second), [ip]);
        assert!(ips_of(&cache, "x", first).is_empty());
        // A status update of the loser that does not change its IPs is no new claim.
        cache.apply_pod(Event::Apply(pod(
            "x",
            first,
            "one-relabelled",
            Some("10.0.0.9"),
        )));
        assert_eq!(ips_of(&cache, "x", second), [ip]);
        // Once the stale pod is deleted the winner is alone.
        cache.apply_pod(Event::Delete(pod("x", first, "one", Some("10.0.0.9"))));
        assert_eq!(ips_of(&cache, "x", second), [ip]);
    }
}

#[test]
fn finished_pods_do_not_compete_for_their_old_ip() {
    let mut cache = synced();
    let mut done = pod("x", "done", "a", Some("10.0.0.3"));
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    cache.apply_pod(Event::Apply(done));
    cache.apply_pod(Event::Apply(pod("x", "new", "b", Some("10.0.0.3"))));
    let snapshot = cache.snapshot();
    let owner = snapshot.pod_by_ip("10.0.0.3".parse().unwrap()).unwrap();
    assert_eq!(owner.key.name, "new");
}

#[test]
fn bad_pod_ips_are_warned_about_and_left_out() {
    let mut cache = synced();
    cache.apply_pod(Event::Apply(pod("x", "a", "a", Some("10.0.0.300"))));
    assert!(ips_of(&cache, "x", "a").is_empty());
    let warnings = cache.take_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(cache.take_warnings().is_empty());
}

/// The contested addresses found by walking every pod of the cache, as `Cache::snapshot` did
/// before the claims were kept as events arrive: the reference for the incremental ones.
fn losers_by_scan(cache: &Cache) -> Vec<(IpAddr, Vec<ObjectKey>)> {
    use crate::model::Pod;
    let mut claimants: std::collections::BTreeMap<IpAddr, Vec<&Pod>> = Default::default();
    for pod in cache.snapshot.pods().filter(|p| p.is_policy_endpoint()) {
        for ip in &pod.ips {
            claimants.entry(*ip).or_default().push(pod);
        }
    }
    claimants
        .into_iter()
        .filter(|(_, pods)| pods.len() > 1)
        .map(|(ip, pods)| {
            let rank = |pod: &Pod| (!pod.terminating, cache.claims.sequence(&pod.key));
            let winner = pods.iter().max_by_key(|pod| rank(pod)).map(|p| &p.key);
            let losers = pods
                .iter()
                .map(|pod| pod.key.clone())
                .filter(|key| Some(key) != winner)
                .collect();
            (ip, losers)
        })
        .collect()
}

#[test]
fn kept_claims_find_the_same_ip_conflicts_as_walking_every_pod() {
    use kube_nftpol_test_support::rng::Rng;
    let random_pod = |rng: &mut Rng| {
        let name = format!("p{}", rng.below(12));
        let ip = format!("10.0.0.{}", rng.below(6));
        let namespace = if rng.chance(50) { "x" } else { "y" };
        let mut pod = pod(
            namespace,
            &name,
            "a",
            Some(&ip).filter(|_| !rng.one_in(8)).map(String::as_str),
        );
        if rng.chance(30) {
            pod.status.as_mut().unwrap().pod_ips = Some(vec![
                serde_json::from_value(json!({"ip": format!("10.0.0.{}", rng.below(6))})).unwrap(),
            ]);
        }
        if rng.one_in(6) {
            pod.status.as_mut().unwrap().phase = Some("Failed".into());
        }
        if rng.one_in(8) {
            pod.spec.as_mut().unwrap().host_network = Some(true);
        }
        if rng.one_in(4) { terminating(pod) } else { pod }
    };
    let mut contested = 0;
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut cache = synced();
        for step in 0..200 {
            match rng.below(10) {
                0..=5 => cache.apply_pod(Event::Apply(random_pod(&mut rng))),
                6..=8 => cache.apply_pod(Event::Delete(random_pod(&mut rng))),
                _ => {
                    cache.apply_pod(Event::Init);
                    for _ in 0..rng.below(10) {
                        cache.apply_pod(Event::InitApply(random_pod(&mut rng)));
                    }
                    cache.apply_pod(Event::InitDone);
                }
            }
            let losers = cache.ip_conflict_losers();
            assert_eq!(losers, losers_by_scan(&cache), "seed {seed} step {step}");
            contested += losers.len();
            // And the snapshot gives each address to one endpoint at most.
            let snapshot = cache.snapshot();
            let mut owners = std::collections::HashSet::new();
            for pod in snapshot.pods().filter(|p| p.is_policy_endpoint()) {
                for ip in &pod.ips {
                    assert!(owners.insert(*ip), "seed {seed} step {step}: {ip} twice");
                }
            }
        }
    }
    assert!(
        contested > 500,
        "the generated pods contest addresses: {contested}"
    );
}
