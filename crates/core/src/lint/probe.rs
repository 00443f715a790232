//! Flows evaluated for the rules that ask what isolated pods can reach (`egress-without-dns`,
//! `dns-udp-only`, `metadata-reachable`), with [`crate::policy::evaluate`] itself, so they
//! judge exactly as the engine enforces.
//!
//! The subjects of a policy that isolates egress are the pods it selects, one per distinct set
//! of labels (pods of a namespace with the same labels get the same egress verdict). When it
//! selects none (a directory of policies without pods, or a policy for a workload not deployed
//! yet) a witness stands in: a pod carrying exactly the labels the policy's podSelector
//! requires, so every other policy of the namespace that would select such a pod is taken into
//! account too. The resolver is the configured DNS pods, or one made up with the configured
//! labels and ports when the input has none. Made-up pods carry names no Kubernetes object can
//! have (they contain spaces) and addresses from TEST-NET-1 (RFC 5737), and live only in this
//! module's copy of the snapshot.

use std::collections::{BTreeMap, BTreeSet};
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

/// The pods whose egress a policy's findings are about.
pub(super) enum Subjects {
    /// Pods it selects, one per distinct set of labels.
    Pods(Vec<ObjectKey>),
    /// It selects none; a witness stands in.
    Witness(ObjectKey),
    /// It selects none and no pod can carry labels its podSelector matches.
    Nobody,
}

impl Subjects {
    /// The pods to evaluate flows from.
    pub fn keys(&self) -> &[ObjectKey] {
        match self {
            Self::Pods(keys) => keys,
            Self::Witness(key) => std::slice::from_ref(key),
            Self::Nobody => &[],
        }
    }
}

impl Probes {
    pub fn build(context: &Context<'_>) -> Self {
        let mut snapshot = context.snapshot.clone();
        let mut subjects = BTreeMap::new();
        for policy in context.snapshot.policies() {
            if policy.egress.is_none() {
                continue;
            }
            let mut seen = BTreeSet::new();
            let pods: Vec<ObjectKey> = context
                .selected(policy)
                .into_iter()
                .filter(|pod| seen.insert(&pod.labels))
                .map(|pod| pod.key.clone())
                .collect();
            let chosen = if !pods.is_empty() {
                Subjects::Pods(pods)
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
        let mut resolvers: Vec<ObjectKey> = context
            .snapshot
            .pods_selected(&dns.namespace, &selector)
            .into_iter()
            .filter(|pod| pod.is_policy_endpoint())
            .map(|pod| pod.key.clone())
            .collect();
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
