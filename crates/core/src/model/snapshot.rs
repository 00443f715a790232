//! [`Snapshot`]: the cluster as the agent knows it at one moment, with the lookups the compiler
//! and the evaluator need. Storage by namespace, with its label index, is the private
//! `namespaced` module.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use super::namespaced::{Keyed, Labelled, NamespacedMap};
use super::{
    ClusterPolicy, Enforcement, Labels, Namespace, Node, ObjectKey, Pod, Policy, Selector, Tier,
};

/// The cluster as the agent knows it at one moment.
///
/// Objects are held behind `Arc`s, pods and policies grouped by namespace: the Kubernetes
/// source publishes a copy of the snapshot after every batch of watch events, and at 10,000
/// pods in 500 namespaces that copy costs a reference count per namespace, not a copy of every
/// pod's key, labels, ports and names.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    namespaces: BTreeMap<String, Arc<Namespace>>,
    pods: NamespacedMap<Pod>,
    policies: NamespacedMap<Policy>,
    /// ClusterNetworkPolicies by name (cluster-scoped; a few hundred at most).
    cluster_policies: BTreeMap<String, Arc<ClusterPolicy>>,
    /// Nodes by name, for ClusterNetworkPolicy node peers.
    nodes: BTreeMap<String, Arc<Node>>,
    /// Which pod owns an address, built on the first lookup after the pods changed (a change
    /// drops it) and shared by the clones made after.
    addresses: OnceLock<Arc<AddressIndex>>,
}

/// The pods by address ([`Snapshot::pod_by_ip`], [`Snapshot::host_network_pod_by_ip`]).
#[derive(Debug, Default)]
struct AddressIndex {
    /// Policy endpoints: the first by key, for an address several claim.
    endpoints: HashMap<IpAddr, ObjectKey>,
    /// hostNetwork pods (their addresses are their nodes'): the first by key.
    host_network: HashMap<IpAddr, ObjectKey>,
}

impl Keyed for Pod {
    fn key(&self) -> &ObjectKey {
        &self.key
    }
}

impl Keyed for Policy {
    fn key(&self) -> &ObjectKey {
        &self.key
    }
}

impl Labelled for Pod {
    fn labels(&self) -> &Labels {
        &self.labels
    }
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a namespace.
    pub fn upsert_namespace(&mut self, namespace: Namespace) {
        self.namespaces
            .insert(namespace.name.clone(), Arc::new(namespace));
    }

    /// Adds or replaces a pod. Its namespace is created implicitly when unknown.
    pub fn upsert_pod(&mut self, pod: Pod) {
        self.ensure_namespace(&pod.key.namespace);
        self.pods.insert(pod);
        self.addresses = OnceLock::new();
    }

    /// Adds or replaces a policy (already validated into its enforceable form).
    pub fn upsert_policy(&mut self, policy: Policy) {
        self.ensure_namespace(&policy.key.namespace);
        self.policies.insert(policy);
    }

    /// Creates a namespace implied by an object when it is unknown.
    fn ensure_namespace(&mut self, name: &str) {
        if !self.namespaces.contains_key(name) {
            self.namespaces
                .insert(name.to_owned(), Arc::new(Namespace::implicit(name)));
        }
    }

    /// Removes a namespace.
    pub fn remove_namespace(&mut self, name: &str) -> Option<Namespace> {
        self.namespaces.remove(name).map(Arc::unwrap_or_clone)
    }

    /// Removes a pod.
    pub fn remove_pod(&mut self, key: &ObjectKey) -> Option<Pod> {
        self.addresses = OnceLock::new();
        self.pods
            .remove(&key.namespace, &key.name)
            .map(Arc::unwrap_or_clone)
    }

    /// Removes a policy.
    pub fn remove_policy(&mut self, key: &ObjectKey) -> Option<Policy> {
        self.policies
            .remove(&key.namespace, &key.name)
            .map(Arc::unwrap_or_clone)
    }

    /// A namespace by name.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name).map(|ns| &**ns)
    }

    /// All namespaces, by name.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values().map(|ns| &**ns)
    }

    /// A pod by key.
    pub fn pod(&self, key: &ObjectKey) -> Option<&Pod> {
        self.pods.get(&key.namespace, &key.name)
    }

    /// All pods, ordered by namespace then name.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter()
    }

    /// The pods of one namespace, ordered by name.
    pub fn pods_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Pod> + use<'a> {
        self.pods.iter_in(namespace)
    }

    /// The namespaces that hold at least one pod, in order (a namespace object may be gone
    /// while its pods are still listed).
    pub fn pod_namespaces(&self) -> impl Iterator<Item = &str> {
        self.pods.namespaces()
    }

    /// [`Snapshot::pod_namespaces`], each with its labels as [`Snapshot::namespace_labels`]
    /// gives them, found by walking the namespaces alongside instead of a lookup for each.
    pub fn pod_namespaces_with_labels(&self) -> impl Iterator<Item = (&str, Cow<'_, Labels>)> {
        let mut objects = self.namespaces.iter().peekable();
        self.pods.namespaces().map(move |name| {
            while objects
                .next_if(|(other, _)| other.as_str() < name)
                .is_some()
            {}
            match objects.next_if(|(other, _)| other.as_str() == name) {
                Some((_, namespace)) => (name, Cow::Borrowed(&namespace.labels)),
                None => (name, Cow::Owned(Namespace::implicit(name).labels)),
            }
        })
    }

    /// The pods of one namespace whose labels `selector` matches, ordered by name: the same
    /// pods as `pods_in(namespace)` filtered by [`Selector::matches`], found through the
    /// namespace's label index when it is large (the private `namespaced` module).
    pub fn pods_selected(&self, namespace: &str, selector: &Selector) -> Vec<&Pod> {
        self.pods.selected(namespace, selector)
    }

    /// All policies, ordered by namespace then name.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.iter()
    }

    /// A policy by key.
    pub fn policy(&self, key: &ObjectKey) -> Option<&Policy> {
        self.policies.get(&key.namespace, &key.name)
    }

    /// The policies of one namespace, ordered by name.
    pub fn policies_in<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = &'a Policy> + use<'a> {
        self.policies.iter_in(namespace)
    }

    /// The policy endpoint (active, non-hostNetwork pod) that owns an IP, if any. When a reused
    /// IP is claimed by several pods (a finished one is never an endpoint), the first by key wins.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.address_index()
            .endpoints
            .get(&ip)
            .and_then(|key| self.pod(key))
    }

    /// The hostNetwork pod whose (node) address this is, if any; the first by key.
    pub fn host_network_pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.address_index()
            .host_network
            .get(&ip)
            .and_then(|key| self.pod(key))
    }

    fn address_index(&self) -> &AddressIndex {
        self.addresses.get_or_init(|| {
            let mut index = AddressIndex::default();
            for pod in self.pods.iter() {
                let map = if pod.is_policy_endpoint() {
                    &mut index.endpoints
                } else if pod.host_network {
                    &mut index.host_network
                } else {
                    continue;
                };
                for ip in &pod.ips {
                    map.entry(*ip).or_insert_with(|| pod.key.clone());
                }
            }
            Arc::new(index)
        })
    }

    /// The enforcement mode of a namespace; enforce when the namespace is unknown.
    pub fn enforcement(&self, namespace: &str) -> Enforcement {
        self.namespaces
            .get(namespace)
            .map_or(Enforcement::Enforce, |ns| ns.enforcement)
    }

    /// Whether a namespace is in observe mode; not when the namespace is unknown.
    pub fn observed(&self, namespace: &str) -> bool {
        self.namespaces.get(namespace).is_some_and(|ns| ns.observe)
    }

    /// Labels of a namespace; the name label alone when the namespace is unknown.
    pub fn namespace_labels(&self, name: &str) -> Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(ns) => Cow::Borrowed(&ns.labels),
            None => Cow::Owned(Namespace::implicit(name).labels),
        }
    }

    /// Adds or replaces a ClusterNetworkPolicy (already validated).
    pub fn upsert_cluster_policy(&mut self, policy: ClusterPolicy) {
        self.cluster_policies
            .insert(policy.name.clone(), Arc::new(policy));
    }

    /// Removes a ClusterNetworkPolicy.
    pub fn remove_cluster_policy(&mut self, name: &str) -> Option<ClusterPolicy> {
        self.cluster_policies.remove(name).map(Arc::unwrap_or_clone)
    }

    /// A ClusterNetworkPolicy by name.
    pub fn cluster_policy(&self, name: &str) -> Option<&ClusterPolicy> {
        self.cluster_policies.get(name).map(|p| &**p)
    }

    /// Every ClusterNetworkPolicy, by name.
    pub fn cluster_policies(&self) -> impl Iterator<Item = &ClusterPolicy> {
        self.cluster_policies.values().map(|p| &**p)
    }

    /// The ClusterNetworkPolicies of one tier in the order they are evaluated: by priority,
    /// then by name (the API lets an implementation order equal priorities as it likes; name
    /// order makes the choice stable and visible).
    pub fn tier_policies(&self, tier: Tier) -> Vec<&ClusterPolicy> {
        let mut policies: Vec<&ClusterPolicy> =
            self.cluster_policies().filter(|p| p.tier == tier).collect();
        // Already in name order: a stable sort by priority keeps it among equals.
        policies.sort_by_key(|p| p.priority);
        policies
    }

    /// Adds or replaces a node.
    pub fn upsert_node(&mut self, node: Node) {
        self.nodes.insert(node.name.clone(), Arc::new(node));
    }

    /// Removes a node.
    pub fn remove_node(&mut self, name: &str) -> Option<Node> {
        self.nodes.remove(name).map(Arc::unwrap_or_clone)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().map(|n| &**n)
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name).map(|n| &**n)
    }

    /// Names of all namespaces, including those only implied by pods and policies.
    pub fn namespace_names(&self) -> BTreeSet<&str> {
        self.namespaces.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PodPhase;

    fn pod(name: &str, ip: &str, host_network: bool) -> Pod {
        Pod {
            key: ObjectKey::new("ns", name),
            labels: Labels::new(),
            node: Some("n1".into()),
            ips: vec![ip.parse().unwrap()],
            phase: PodPhase::Active,
            host_network,
            terminating: false,
            ports: Vec::new(),
            owner: None,
        }
    }

    fn name_at(snapshot: &Snapshot, ip: &str) -> Option<String> {
        snapshot
            .pod_by_ip(ip.parse().unwrap())
            .map(|p| p.key.name.clone())
    }

    #[test]
    fn the_address_index_follows_every_change_of_the_pods_and_clones_share_it() {
        let mut s = Snapshot::new();
        s.upsert_pod(pod("b", "10.0.0.1", false));
        assert_eq!(name_at(&s, "10.0.0.1").as_deref(), Some("b"));
        // A pod first by key claiming the same address wins, once added.
        s.upsert_pod(pod("a", "10.0.0.1", false));
        assert_eq!(name_at(&s, "10.0.0.1").as_deref(), Some("a"));
        let clone = s.clone();
        s.remove_pod(&ObjectKey::new("ns", "a"));
        assert_eq!(name_at(&s, "10.0.0.1").as_deref(), Some("b"));
        assert_eq!(name_at(&clone, "10.0.0.1").as_deref(), Some("a"));
        // A finished pod is no endpoint; a hostNetwork pod's address is its node's.
        let mut finished = pod("c", "10.0.0.2", false);
        finished.phase = PodPhase::Finished;
        s.upsert_pod(finished);
        s.upsert_pod(pod("node-agent", "192.168.0.1", true));
        assert_eq!(name_at(&s, "10.0.0.2"), None);
        assert_eq!(name_at(&s, "192.168.0.1"), None);
        assert_eq!(
            s.host_network_pod_by_ip("192.168.0.1".parse().unwrap())
                .map(|p| p.key.name.as_str()),
            Some("node-agent")
        );
    }
}
