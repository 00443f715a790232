//! Flows evaluated for the rules that ask what isolated pods can reach (`egress-without-dns`,
//! `dns-udp-only`, `metadata-reachable`), with [`crate::policy::evaluate`] itself, so they
//! judge exactly as the engine enforces.
//!
//! The subjects of a policy that isolates egress are the pods it selects, in groups: pods of a
//! namespace that the same egress-isolating policies select get the same egress verdict, so one
//! pod of each group is evaluated for all of them. When a policy selects none (a directory of
//! policies without pods, or a policy for a workload not deployed yet) a witness stands in: a
//! pod carrying exactly the labels the policy's podSelector requires, so every other policy of
//! the namespace that would select such a pod is taken into account too. The resolver is the
//! configured DNS pods, or one made up with the configured labels and ports when the input has
//! none. Made-up pods carry names no Kubernetes object can have (they contain spaces) and
//! addresses from TEST-NET-1 (RFC 5737).
//!
//! Flows are evaluated in a snapshot of their own: every namespace and policy, but only the
//! groups' pods and the resolvers as pods. The egress side of a flow from a pod depends on
//! nothing else (the policies that select the source, and whether their peers take in the
//! destination), and looking up an address that no pod owns (the cloud metadata address) scans
//! the snapshot's pods: a few hundred at most instead of the cluster's thousands.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use super::context::Context;
use crate::model::{
    ContainerPort, Labels, ObjectKey, Operator, Pod, Policy, Protocol, Selector, Snapshot,
};
use crate::policy::{self, DirectionVerdict, Endpoint, Flow};

/// The address of every witness pod (only their labels and namespace matter for egress).
const WITNESS_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// The address of a made-up resolver.
const RESOLVER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53));

/// The snapshot with witnesses, and who stands for each egress-isolating policy's pods.
pub(super) struct Probes {
    snapshot: Snapshot,
    subjects: BTreeMap<ObjectKey, Subjects>,
    resolvers: Vec<ObjectKey>,
}

/// Pods of one namespace that the same egress-isolating policies select.
#[derive(Debug, Clone)]
pub(super) struct Group {
    /// The one whose flows are evaluated.
    pub representative: ObjectKey,
    /// All of them, by name.
    pub members: Vec<ObjectKey>,
}

/// The pods whose egress a policy's findings are about.
pub(super) enum Subjects {
    /// Pods it selects, by group.
    Pods(Vec<Group>),
    /// It selects none; a witness stands in.
    Witness(ObjectKey),
    /// It selects none and no pod can carry labels its podSelector matches.
    Nobody,
}

impl Subjects {
    /// The pods to evaluate flows from.
    pub fn keys(&self) -> Vec<&ObjectKey> {
        match self {
            Self::Pods(groups) => groups.iter().map(|g| &g.representative).collect(),
            Self::Witness(key) => vec![key],
            Self::Nobody => Vec::new(),
        }
    }

    /// The pods `key` stands for: its group's, or the witness alone.
    pub fn members_of<'a>(&'a self, key: &'a ObjectKey) -> &'a [ObjectKey] {
        match self {
            Self::Pods(groups) => groups
                .iter()
                .find(|g| &g.representative == key)
                .map_or(std::slice::from_ref(key), |g| &g.members),
            Self::Witness(_) | Self::Nobody => std::slice::from_ref(key),
        }
    }
}

impl Probes {
    pub fn build(context: &Context<'_>) -> Self {
        let source = context.snapshot;
        let mut snapshot = Snapshot::new();
        for namespace in source.namespaces() {
            snapshot.upsert_namespace(namespace.clone());
        }
        for policy in source.policies() {
            snapshot.upsert_policy(policy.clone());
        }
        // Pods by namespace and the egress-isolating policies that select them.
        let mut groups: BTreeMap<(&str, Vec<&ObjectKey>), Group> = BTreeMap::new();
        for pod in source.pods().filter(|pod| pod.is_policy_endpoint()) {
            let namespace = pod.key.namespace.as_str();
            let isolating: Vec<&ObjectKey> = source
                .policies_in(namespace)
                .filter(|p| p.egress.is_some() && p.selects(pod))
                .map(|p| &p.key)
                .collect();
            if isolating.is_empty() {
                continue;
            }
            let group = groups.entry((namespace, isolating)).or_insert_with(|| {
                snapshot.upsert_pod(pod.clone());
                Group {
                    representative: pod.key.clone(),
                    members: Vec::new(),
                }
            });
            group.members.push(pod.key.clone());
        }
        let mut by_policy: BTreeMap<&ObjectKey, Vec<Group>> = BTreeMap::new();
        for ((_, policies), group) in groups {
            for policy in policies {
                by_policy.entry(policy).or_default().push(group.clone());
            }
        }
        let mut subjects = BTreeMap::new();
        for policy in source.policies().filter(|p| p.egress.is_some()) {
            let chosen = if let Some(groups) = by_policy.remove(&policy.key) {
                Subjects::Pods(groups)
            } else if let Some(labels) = witness_labels(&policy.pod_selector) {
                let key = ObjectKey::new(
                    &policy.key.namespace,
                    format!("witness of {}", policy.key.name),
                );
                snapshot.upsert_pod(made_up_pod(key.clone(), labels, WITNESS_IP, Vec::new()));
                Subjects::Witness(key)
            } else {
                Subjects::Nobody
            };
            subjects.insert(policy.key.clone(), chosen);
        }
        let dns = &context.config.dns;
        let selector = Selector {
            match_labels: dns.pod_labels.clone(),
            expressions: Vec::new(),
        };
        let mut resolvers = Vec::new();
        for pod in source.pods_selected(&dns.namespace, &selector) {
            if pod.is_policy_endpoint() {
                snapshot.upsert_pod(pod.clone());
                resolvers.push(pod.key.clone());
            }
        }
        if resolvers.is_empty() {
            let key = ObjectKey::new(&dns.namespace, "made-up resolver");
            let port = |name: &str, protocol| ContainerPort {
                name: Some(name.to_owned()),
                port: dns.port,
                protocol,
            };
            let ports = vec![port("dns", Protocol::Udp), port("dns-tcp", Protocol::Tcp)];
            let labels = dns.pod_labels.clone();
            snapshot.upsert_pod(made_up_pod(key.clone(), labels, RESOLVER_IP, ports));
            resolvers.push(key);
        }
        Self {
            snapshot,
            subjects,
            resolvers,
        }
    }

    /// Who stands for the pods of `policy` (which isolates egress).
    pub fn subjects(&self, policy: &Policy) -> &Subjects {
        self.subjects.get(&policy.key).unwrap_or(&Subjects::Nobody)
    }

    /// The resolver pods.
    pub fn resolvers(&self) -> &[ObjectKey] {
        &self.resolvers
    }

    /// The egress side of the verdict for a flow from `source` (a pod of this snapshot).
    pub fn egress(
        &self,
        source: &ObjectKey,
        destination: Endpoint,
        protocol: Protocol,
        port: u16,
    ) -> Option<DirectionVerdict> {
        let flow = Flow {
            source: Endpoint::Pod(source.clone()),
            destination,
            protocol,
            port,
        };
        // The only error is an unknown pod, and every subject is in this snapshot.
        policy::evaluate(&self.snapshot, &flow)
            .ok()
            .map(|verdict| verdict.egress)
    }
}

/// Labels a pod needs for `selector` to select it, with nothing else; `None` when no labels
/// satisfy it (`app=a` and `app notin (a)`).
fn witness_labels(selector: &Selector) -> Option<Labels> {
    let mut labels = selector.match_labels.clone();
    for requirement in &selector.expressions {
        match &requirement.operator {
            Operator::In(values) => {
                if let Some(value) = values.first() {
                    labels
                        .entry(requirement.key.clone())
                        .or_insert_with(|| value.clone());
                }
            }
            Operator::Exists => {
                labels.entry(requirement.key.clone()).or_default();
            }
            Operator::NotIn(_) | Operator::DoesNotExist => {}
        }
    }
    selector.matches(&labels).then_some(labels)
}

fn made_up_pod(key: ObjectKey, labels: Labels, ip: IpAddr, ports: Vec<ContainerPort>) -> Pod {
    let mut pod = Pod::running(key, labels, "", [ip]);
    pod.node = None;
    pod.ports = ports;
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Requirement;

    #[test]
    fn a_witness_carries_what_the_selector_requires_and_nothing_it_excludes() {
        let selector = Selector {
            match_labels: [("app".to_owned(), "web".to_owned())].into(),
            expressions: vec![
                Requirement {
                    key: "tier".into(),
                    operator: Operator::In(["b".into(), "a".into()].into()),
                },
                Requirement {
                    key: "canary".into(),
                    operator: Operator::DoesNotExist,
                },
                Requirement {
                    key: "team".into(),
                    operator: Operator::Exists,
                },
            ],
        };
        let labels = witness_labels(&selector).unwrap();
        assert_eq!(labels.len(), 3, "{labels:?}");
        assert_eq!(labels["tier"], "a");
        assert!(selector.matches(&labels));
        let impossible = Selector {
            match_labels: [("app".to_owned(), "web".to_owned())].into(),
            expressions: vec![Requirement {
                key: "app".into(),
                operator: Operator::NotIn(["web".into()].into()),
            }],
        };
        assert_eq!(witness_labels(&impossible), None);
    }
}
