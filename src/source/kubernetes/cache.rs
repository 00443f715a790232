//! The cluster as the watch streams describe it, kept as a [`Snapshot`]: the pure half of the
//! Kubernetes source (no I/O, fed with [`watcher::Event`]s). Five kinds: Pods, Namespaces,
//! NetworkPolicies, Nodes and ClusterNetworkPolicies (none when the CRD is not installed:
//! [`Cache::cluster_policies_absent`]).
//!
//! Objects are converted into the model as they arrive, so the agent never holds the API's
//! full Pod objects (a few KiB each, most of it irrelevant to policy). A relist (`Init`,
//! `InitApply`..., `InitDone`) is buffered and swapped in at `InitDone`, so a resync never
//! shows a half-listed cluster and objects deleted while the watch was down disappear.
//! [`Cache::is_synced`] turns true once every kind has been listed once.
//!
//! [`Cache::snapshot`] resolves pod IPs claimed by more than one pod, which happens when an IP
//! is reused while the API still holds the previous owner: a pod that is terminating loses the
//! address to one that is not, and otherwise the latest claim wins. The previous owner's
//! permissions are never granted to the new pod's address. [`claims`] keeps who holds each
//! address as events arrive, so a snapshot costs a copy of the snapshot's `Arc`s per namespace
//! plus the contested addresses, not a walk of every pod.

mod claims;

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as networking;
use kube::runtime::watcher::Event;

use super::cluster_kinds::{ClusterPolicyObject, NodeFields};
use crate::events::{InvalidPolicy, ObjectIdentity, PolicyKind};
use crate::model::{ClusterPolicy, Namespace, Node, ObjectKey, Pod, Policy, Snapshot};
use claims::Claims;

/// One relist in progress, per kind.
#[derive(Debug)]
struct Relist<T> {
    objects: Vec<T>,
}

impl<T> Default for Relist<T> {
    fn default() -> Self {
        Self {
            objects: Vec::new(),
        }
    }
}

/// The three watched kinds' state, merged into one snapshot.
#[derive(Debug, Default)]
pub struct Cache {
    snapshot: Snapshot,
    /// Each pod's latest IP claim (when its IPs last changed), and who holds each address.
    claims: Claims,
    invalid: BTreeMap<ObjectKey, InvalidPolicy>,
    pods_relist: Option<Relist<Pod>>,
    namespaces_relist: Option<Relist<Namespace>>,
    policies_relist: Option<Relist<(Policy, ObjectIdentity)>>,
    cluster_policies_relist: Option<Relist<(ClusterPolicy, ObjectIdentity)>>,
    nodes_relist: Option<Relist<Node>>,
    pods_synced: bool,
    namespaces_synced: bool,
    policies_synced: bool,
    cluster_policies_synced: bool,
    nodes_synced: bool,
    warnings: Vec<String>,
}

impl Cache {
    /// An empty cache; nothing is synced.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether Pods, Namespaces, NetworkPolicies, Nodes and ClusterNetworkPolicies have each
    /// been listed completely (or ClusterNetworkPolicies found not installed).
    pub fn is_synced(&self) -> bool {
        self.pods_synced
            && self.namespaces_synced
            && self.policies_synced
            && self.cluster_policies_synced
            && self.nodes_synced
    }

    /// Which kinds have not completed their first list yet, for logs.
    pub fn waiting_for(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if !self.pods_synced {
            kinds.push("pods");
        }
        if !self.namespaces_synced {
            kinds.push("namespaces");
        }
        if !self.policies_synced {
            kinds.push("networkpolicies");
        }
        if !self.nodes_synced {
            kinds.push("nodes");
        }
        if !self.cluster_policies_synced {
            kinds.push("clusternetworkpolicies");
        }
        kinds
    }

    /// Warnings gathered since the last call (pods with bad IPs or ports, nameless objects).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The policies that failed validation, by key.
    pub fn invalid_policies(&self) -> impl Iterator<Item = &InvalidPolicy> {
        self.invalid.values()
    }

    /// Applies one Pod watch event.
    pub fn apply_pod(&mut self, event: Event<core::Pod>) {
        match event {
            Event::Apply(pod) => {
                if let Some(pod) = self.convert_pod(&pod) {
                    self.upsert_pod(pod);
                }
            }
            Event::Delete(pod) => {
                if let Some(pod) = self.convert_pod(&pod) {
                    self.snapshot.remove_pod(&pod.key);
                    self.claims.forget(&pod.key);
                }
            }
            Event::Init => self.pods_relist = Some(Relist::default()),
            Event::InitApply(pod) => {
                if let Some(pod) = self.convert_pod(&pod) {
                    self.pods_relist
                        .get_or_insert_with(Relist::default)
                        .objects
                        .push(pod);
                }
            }
            Event::InitDone => {
                let listed = self.pods_relist.take().unwrap_or_default().objects;
                let keep: std::collections::HashSet<ObjectKey> =
                    listed.iter().map(|p| p.key.clone()).collect();
                let gone: Vec<ObjectKey> = self
                    .snapshot
                    .pods()
                    .map(|p| p.key.clone())
                    .filter(|k| !keep.contains(k))
                    .collect();
                for key in gone {
                    self.snapshot.remove_pod(&key);
                    self.claims.forget(&key);
                }
                for pod in listed {
                    self.upsert_pod(pod);
                }
                self.pods_synced = true;
            }
        }
    }

    /// Applies one Namespace watch event.
    pub fn apply_namespace(&mut self, event: Event<core::Namespace>) {
        match event {
            Event::Apply(namespace) => {
                if let Some(namespace) = self.convert_namespace(&namespace) {
                    self.snapshot.upsert_namespace(namespace);
                }
            }
            Event::Delete(namespace) => {
                if let Some(name) = namespace.metadata.name.as_deref() {
                    self.snapshot.remove_namespace(name);
                }
            }
            Event::Init => self.namespaces_relist = Some(Relist::default()),
            Event::InitApply(namespace) => {
                if let Some(namespace) = self.convert_namespace(&namespace) {
                    self.namespaces_relist
                        .get_or_insert_with(Relist::default)
                        .objects
                        .push(namespace);
                }
            }
            Event::InitDone => {
                let listed = self.namespaces_relist.take().unwrap_or_default().objects;
                let names: Vec<String> =
                    self.snapshot.namespaces().map(|n| n.name.clone()).collect();
                for name in names {
                    self.snapshot.remove_namespace(&name);
                }
                for namespace in listed {
                    self.snapshot.upsert_namespace(namespace);
                }
                self.namespaces_synced = true;
            }
        }
    }

    /// Applies one NetworkPolicy watch event.
    pub fn apply_policy(&mut self, event: Event<networking::NetworkPolicy>) {
        match event {
            Event::Apply(policy) => {
                if let Some(converted) = self.convert_policy(&policy) {
                    self.upsert_policy(converted);
                }
            }
            Event::Delete(policy) => {
                if let Some((policy, _)) = self.convert_policy(&policy) {
                    self.snapshot.remove_policy(&policy.key);
                    self.invalid.remove(&policy.key);
                }
            }
            Event::Init => self.policies_relist = Some(Relist::default()),
            Event::InitApply(policy) => {
                if let Some(converted) = self.convert_policy(&policy) {
                    self.policies_relist
                        .get_or_insert_with(Relist::default)
                        .objects
                        .push(converted);
                }
            }
            Event::InitDone => {
                let listed = self.policies_relist.take().unwrap_or_default().objects;
                let keys: Vec<ObjectKey> =
                    self.snapshot.policies().map(|p| p.key.clone()).collect();
                for key in keys {
                    self.snapshot.remove_policy(&key);
                }
                self.invalid
                    .retain(|_, policy| policy.kind != PolicyKind::NetworkPolicy);
                for converted in listed {
                    self.upsert_policy(converted);
                }
                self.policies_synced = true;
            }
        }
    }

    /// Applies one ClusterNetworkPolicy watch event. An object whose spec does not even decode
    /// cannot come from an API server with the CRD's schema; it is not read at all.
    pub fn apply_cluster_policy(&mut self, event: Event<ClusterPolicyObject>) {
        match event {
            Event::Apply(object) => {
                if let Some(converted) = self.convert_cluster_policy(&object) {
                    self.upsert_cluster_policy(converted);
                }
            }
            Event::Delete(object) => {
                if let Some(name) = object.0.metadata.name.as_deref() {
                    self.snapshot.remove_cluster_policy(name);
                    self.invalid.remove(&cluster_key(name));
                }
            }
            Event::Init => self.cluster_policies_relist = Some(Relist::default()),
            Event::InitApply(object) => {
                if let Some(converted) = self.convert_cluster_policy(&object) {
                    self.cluster_policies_relist
                        .get_or_insert_with(Relist::default)
                        .objects
                        .push(converted);
                }
            }
            Event::InitDone => {
                let listed = self
                    .cluster_policies_relist
                    .take()
                    .unwrap_or_default()
                    .objects;
                self.clear_cluster_policies();
                for converted in listed {
                    self.upsert_cluster_policy(converted);
                }
                self.cluster_policies_synced = true;
            }
        }
    }

    /// The API server does not serve ClusterNetworkPolicies (the CRD is not installed, or was
    /// deleted, which deletes every object first): there are none, and that is a complete list.
    /// Returns whether that is news (ClusterNetworkPolicies were listed, or were unknown).
    pub fn cluster_policies_absent(&mut self) -> bool {
        let news =
            !self.cluster_policies_synced || self.snapshot.cluster_policies().next().is_some();
        self.cluster_policies_relist = None;
        self.clear_cluster_policies();
        self.cluster_policies_synced = true;
        news
    }

    fn clear_cluster_policies(&mut self) {
        let names: Vec<String> = self
            .snapshot
            .cluster_policies()
            .map(|p| p.name.clone())
            .collect();
        for name in names {
            self.snapshot.remove_cluster_policy(&name);
        }
        self.invalid
            .retain(|_, policy| policy.kind != PolicyKind::ClusterNetworkPolicy);
    }

    /// Applies one Node watch event.
    pub fn apply_node(&mut self, event: Event<NodeFields>) {
        match event {
            Event::Apply(node) => {
                if let Some(node) = self.convert_node(node) {
                    self.snapshot.upsert_node(node);
                }
            }
            Event::Delete(node) => {
                if let Some(node) = self.convert_node(node) {
                    self.snapshot.remove_node(&node.name);
                }
            }
            Event::Init => self.nodes_relist = Some(Relist::default()),
            Event::InitApply(node) => {
                if let Some(node) = self.convert_node(node) {
                    self.nodes_relist
                        .get_or_insert_with(Relist::default)
                        .objects
                        .push(node);
                }
            }
            Event::InitDone => {
                let listed = self.nodes_relist.take().unwrap_or_default().objects;
                let names: Vec<String> = self.snapshot.nodes().map(|n| n.name.clone()).collect();
                for name in names {
                    self.snapshot.remove_node(&name);
                }
                for node in listed {
                    self.snapshot.upsert_node(node);
                }
                self.nodes_synced = true;
            }
        }
    }

    /// The snapshot to enforce: every object, with each pod IP owned by one pod at most.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.snapshot.clone();
        for (ip, losers) in self.ip_conflict_losers() {
            for key in losers {
                if let Some(pod) = snapshot.pod(&key) {
                    let mut pod = pod.clone();
                    pod.ips.retain(|owned| *owned != ip);
                    snapshot.upsert_pod(pod);
                }
            }
        }
        snapshot
    }

    /// For each IP claimed by several policy endpoints, the pods that must give it up: every
    /// claimant but the winner, where a pod that is not terminating beats one that is and
    /// among equals the latest claim wins.
    fn ip_conflict_losers(&self) -> Vec<(IpAddr, Vec<ObjectKey>)> {
        self.claims
            .contested()
            .map(|(ip, holders)| {
                let pods: Vec<&Pod> = holders
                    .into_iter()
                    .filter_map(|key| self.snapshot.pod(key))
                    .collect();
                let rank = |pod: &Pod| (!pod.terminating, self.claims.sequence(&pod.key));
                let winner = pods
                    .iter()
                    .max_by_key(|pod| rank(pod))
                    .map(|pod| pod.key.clone());
                let losers = pods
                    .iter()
                    .map(|pod| pod.key.clone())
                    .filter(|key| Some(key) != winner.as_ref())
                    .collect();
                (ip, losers)
            })
            .collect()
    }

    fn upsert_pod(&mut self, pod: Pod) {
        self.claims.record(&pod);
        self.snapshot.upsert_pod(pod);
    }

    fn upsert_cluster_policy(&mut self, (policy, identity): (ClusterPolicy, ObjectIdentity)) {
        let key = cluster_key(&policy.name);
        if policy.errors.is_empty() {
            self.invalid.remove(&key);
        } else {
            self.invalid.insert(
                key.clone(),
                InvalidPolicy {
                    kind: PolicyKind::ClusterNetworkPolicy,
                    key,
                    identity,
                    errors: policy.errors.clone(),
                },
            );
        }
        for field in &policy.unsupported {
            self.warnings
                .push(format!("ClusterNetworkPolicy {}: {field}", policy.name));
        }
        self.snapshot.upsert_cluster_policy(policy);
    }

    fn upsert_policy(&mut self, (policy, identity): (Policy, ObjectIdentity)) {
        if policy.errors.is_empty() {
            self.invalid.remove(&policy.key);
        } else {
            self.invalid.insert(
                policy.key.clone(),
                InvalidPolicy {
                    kind: PolicyKind::NetworkPolicy,
                    key: policy.key.clone(),
                    identity,
                    errors: policy.errors.clone(),
                },
            );
        }
        self.snapshot.upsert_policy(policy);
    }

    fn convert_pod(&mut self, pod: &core::Pod) -> Option<Pod> {
        match Pod::from_k8s(pod) {
            Ok((pod, problems)) => {
                self.warnings.extend(problems);
                Some(pod)
            }
            Err(error) => {
                self.warnings.push(error.to_string());
                None
            }
        }
    }

    fn convert_namespace(&mut self, namespace: &core::Namespace) -> Option<Namespace> {
        let converted = Namespace::from_k8s(namespace);
        if converted.is_none() {
            self.warnings.push("Namespace without metadata.name".into());
        }
        converted
    }

    fn convert_cluster_policy(
        &mut self,
        object: &ClusterPolicyObject,
    ) -> Option<(ClusterPolicy, ObjectIdentity)> {
        let identity = ObjectIdentity {
            uid: object.0.metadata.uid.clone(),
            resource_version: object.0.metadata.resource_version.clone(),
        };
        let converted = ClusterPolicy::from_api(&object.0);
        if converted.is_none() {
            self.warnings
                .push("ClusterNetworkPolicy without metadata.name".into());
        }
        converted.map(|p| (p, identity))
    }

    fn convert_node(&mut self, node: NodeFields) -> Option<Node> {
        match Node::from_k8s(&node.into_node()) {
            Ok((node, problems)) => {
                self.warnings.extend(problems);
                Some(node)
            }
            Err(error) => {
                self.warnings.push(error.to_string());
                None
            }
        }
    }

    fn convert_policy(
        &mut self,
        policy: &networking::NetworkPolicy,
    ) -> Option<(Policy, ObjectIdentity)> {
        let identity = ObjectIdentity {
            uid: policy.metadata.uid.clone(),
            resource_version: policy.metadata.resource_version.clone(),
        };
        let converted = Policy::from_k8s(policy);
        if converted.is_none() {
            self.warnings
                .push("NetworkPolicy without metadata.name".into());
        }
        converted.map(|p| (p, identity))
    }
}

/// The key invalid ClusterNetworkPolicies are kept under (no namespace).
fn cluster_key(name: &str) -> ObjectKey {
    ObjectKey::new("", name)
}

#[cfg(test)]
mod tests;
