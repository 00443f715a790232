//! The pods a policy rule's pod peers select, anywhere in the cluster: the peer lists behind
//! the `..._pods` and `..._named` sets.
//!
//! The same test as [`crate::model::Peer::selects_pod`], asked namespace by namespace instead
//! of pod by pod: a namespace scope is decided once per namespace holding pods (only the
//! policy's own namespace when no peer has a namespaceSelector; [`NamespaceScope::covers`] is
//! [`crate::policy::namespace_in_scope`] with the labels at hand), and the pod selectors go
//! through [`Snapshot::pods_selected`], which uses the namespace's label index. At 10,000 pods
//! a rule's peers no longer cost a test of every pod. Pure; it builds no set.

use std::borrow::Cow;

use crate::model::{Labels, NamespaceScope, PeerKind, Pod, Rule, Selector, Snapshot};

/// The policy endpoints (active, non-hostNetwork, addressed pods) selected by any pod peer of
/// `rule`, a rule of a policy in `policy_namespace`; each once, ordered by namespace then name.
pub(super) fn peer_pods<'a>(
    snapshot: &'a Snapshot,
    policy_namespace: &str,
    rule: &Rule,
) -> Vec<&'a Pod> {
    let peers: Vec<(&NamespaceScope, &Selector)> = rule
        .peers
        .iter()
        .flatten()
        .filter_map(|p| match &p.kind {
            PeerKind::Pods { namespaces, pods } => Some((namespaces, pods)),
            PeerKind::IpBlock { .. } => None,
        })
        .collect();
    if peers.is_empty() {
        return Vec::new();
    }
    let any_namespace = peers
        .iter()
        .any(|(scope, _)| matches!(scope, NamespaceScope::Matching(_)));
    let namespaces: Vec<(&str, Cow<'_, Labels>)> = if any_namespace {
        snapshot.pod_namespaces_with_labels().collect()
    } else {
        vec![(
            policy_namespace,
            snapshot.namespace_labels(policy_namespace),
        )]
    };
    let mut selected = Vec::new();
    for (namespace, labels) in namespaces {
        let selectors: Vec<&Selector> = peers
            .iter()
            .filter(|(scope, _)| scope.covers(policy_namespace, namespace, &labels))
            .map(|(_, pods)| *pods)
            .collect();
        let found: Vec<&Pod> = match selectors.as_slice() {
            [] => continue,
            [selector] => snapshot.pods_selected(namespace, selector),
            several if several.iter().any(|s| s.is_everything()) => {
                snapshot.pods_in(namespace).collect()
            }
            several => {
                let mut found: Vec<&Pod> = several
                    .iter()
                    .flat_map(|selector| snapshot.pods_selected(namespace, selector))
                    .collect();
                // Two peers can pick the same pod: back to name order, each pod once.
                found.sort_by(|a, b| a.key.name.cmp(&b.key.name));
                found.dedup_by(|a, b| a.key.name == b.key.name);
                found
            }
        };
        selected.extend(found.into_iter().filter(|pod| pod.is_policy_endpoint()));
    }
    selected
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::peer_pods;
    use crate::model::{
        Direction, Labels, Namespace, ObjectKey, PeerKind, Pod, PodPhase, Policy, Snapshot,
    };
    use kube_nftpol_test_support::rng::Rng;

    const VALUES: [&str; 3] = ["a", "b", "c"];

    fn labels(rng: &mut Rng) -> Labels {
        let mut labels = Labels::new();
        labels.insert("app".into(), (*rng.pick(&VALUES)).into());
        if rng.chance(40) {
            labels.insert("tier".into(), "x".into());
        }
        labels
    }

    fn selector(rng: &mut Rng) -> Value {
        match rng.below(6) {
            0 => json!({}),
            1 => json!({"matchLabels": {"app": rng.pick(&VALUES)}}),
            2 => json!({"matchLabels": {"app": rng.pick(&VALUES), "tier": "x"}}),
            3 => {
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": [rng.pick(&VALUES), rng.pick(&VALUES)]}]})
            }
            4 => {
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": [rng.pick(&VALUES)]}]})
            }
            _ => {
                json!({"matchLabels": {"kubernetes.io/metadata.name": format!("n{}", rng.below(5))}})
            }
        }
    }

    fn peer(rng: &mut Rng) -> Value {
        match rng.below(4) {
            0 => json!({"podSelector": selector(rng)}),
            1 => json!({"namespaceSelector": selector(rng)}),
            2 => json!({"namespaceSelector": selector(rng), "podSelector": selector(rng)}),
            _ => json!({"ipBlock": {"cidr": "10.1.0.0/16"}}),
        }
    }

    /// A cluster of five namespaces (one of them with no object, one with its object removed
    /// later) with pods of every phase, and a policy per namespace with random peers.
    fn cluster(rng: &mut Rng) -> (Snapshot, Vec<Policy>) {
        let mut snapshot = Snapshot::new();
        for ns in 0..4 {
            snapshot.upsert_namespace(Namespace::new(&format!("n{ns}"), labels(rng)));
        }
        for i in 0..60 {
            let ns = rng.below(5);
            let ip = format!("10.1.{ns}.{i}")
                .parse()
                .ok()
                .filter(|_| !rng.one_in(10));
            let mut pod = Pod::running(
                ObjectKey::new(format!("n{ns}"), format!("p{i}")),
                labels(rng),
                "node-1",
                ip,
            );
            if rng.one_in(10) {
                pod.phase = PodPhase::Finished;
            }
            pod.host_network = rng.one_in(12);
            snapshot.upsert_pod(pod);
        }
        if rng.chance(50) {
            snapshot.remove_namespace("n3");
        }
        let policies = (0..5)
            .map(|ns| {
                let peers: Vec<Value> = (0..1 + rng.below(3)).map(|_| peer(rng)).collect();
                let object = json!({
                    "metadata": {"name": "p", "namespace": format!("n{ns}")},
                    "spec": {"podSelector": {}, "ingress": [{"from": peers}]},
                });
                Policy::from_k8s(&serde_json::from_value(object).unwrap()).unwrap()
            })
            .collect();
        (snapshot, policies)
    }

    #[test]
    fn peer_pods_are_the_pods_some_pod_peer_selects_in_key_order() {
        let mut selected = 0;
        for seed in 1..=150u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let (snapshot, policies) = cluster(&mut rng);
            for policy in &policies {
                let namespace = &policy.key.namespace;
                let rule = &policy.rules(Direction::Ingress).unwrap()[0];
                let found: Vec<&ObjectKey> = peer_pods(&snapshot, namespace, rule)
                    .into_iter()
                    .map(|p| &p.key)
                    .collect();
                let scanned: Vec<&ObjectKey> = snapshot
                    .pods()
                    .filter(|pod| {
                        rule.peers.iter().flatten().any(|peer| {
                            matches!(peer.kind, PeerKind::Pods { .. })
                                && peer.selects_pod(&snapshot, namespace, pod)
                        })
                    })
                    .map(|p| &p.key)
                    .collect();
                assert_eq!(found, scanned, "seed {seed}, policy in {namespace}");
                selected += found.len();
            }
        }
        assert!(
            selected > 1000,
            "the generated peers select something: {selected}"
        );
    }
}
