//! Keeping what an earlier hint allowed: a suggestion named like a policy that already exists
//! replaces it when applied, so its rules are carried over.
//!
//! Without this, applying a first hint, then suggesting again from logs that now show only the
//! remaining denials (or from an agent restarted since), would produce a policy of the same
//! name with only the new rules, and `kubectl apply` would take the old ones away. The snapshot
//! holds policies in their validated form ([`Policy`]); this module turns their rules back into
//! Kubernetes rules. It merges only when the existing policy selects the same pods and isolates
//! only the same direction; otherwise the suggestion is not made and the caller reports it.

use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::objects::RuleParts;
use crate::model::{
    Direction, Labels, NamespaceScope, Operator, Peer, PeerKind, Policy, PortMatch, PortSpec,
    Protocol, Rule, Selector,
};

/// Why an existing policy cannot be merged into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// It selects other pods than the suggestion.
    #[error("selects pods by {0}, not by the suggested labels")]
    OtherPods(String),
    /// It isolates another direction too, or not this one.
    #[error("does not isolate only {0}")]
    OtherDirection(Direction),
    /// It is invalid (enforced fail-closed).
    #[error("is invalid")]
    Invalid,
}

/// The existing policy's rules for `direction`, as Kubernetes rules, when the suggestion with
/// pod selector `pod_labels` may replace it.
pub fn existing_rules(
    existing: &Policy,
    pod_labels: &Labels,
    direction: Direction,
) -> Result<Vec<RuleParts>, Conflict> {
    if existing.is_invalid() {
        return Err(Conflict::Invalid);
    }
    let wanted = Selector {
        match_labels: pod_labels.clone(),
        expressions: Vec::new(),
    };
    if existing.pod_selector != wanted {
        return Err(Conflict::OtherPods(existing.pod_selector.to_string()));
    }
    let other = match direction {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    };
    let (Some(rules), None) = (existing.rules(direction), existing.rules(other)) else {
        return Err(Conflict::OtherDirection(direction));
    };
    Ok(rules.iter().map(rule).collect())
}

fn rule(rule: &Rule) -> RuleParts {
    RuleParts {
        peers: rule
            .peers
            .as_ref()
            .map(|peers| peers.iter().map(peer).collect()),
        ports: rule
            .ports
            .as_ref()
            .map(|ports| ports.iter().map(port).collect()),
    }
}

fn peer(peer: &Peer) -> NetworkPolicyPeer {
    match &peer.kind {
        PeerKind::Pods { namespaces, pods } => NetworkPolicyPeer {
            ip_block: None,
            namespace_selector: match namespaces {
                NamespaceScope::PolicyNamespace => None,
                NamespaceScope::Matching(selector) => Some(label_selector(selector)),
            },
            pod_selector: Some(label_selector(pods)),
        },
        PeerKind::IpBlock { cidr, except } => NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.to_string(),
                except: (!except.is_empty())
                    .then(|| except.iter().map(ToString::to_string).collect()),
            }),
            namespace_selector: None,
            pod_selector: None,
        },
    }
}

fn label_selector(selector: &Selector) -> LabelSelector {
    let expressions: Vec<LabelSelectorRequirement> = selector
        .expressions
        .iter()
        .map(|r| {
            let (operator, values) = match &r.operator {
                Operator::In(values) => ("In", Some(values.iter().cloned().collect())),
                Operator::NotIn(values) => ("NotIn", Some(values.iter().cloned().collect())),
                Operator::Exists => ("Exists", None),
                Operator::DoesNotExist => ("DoesNotExist", None),
            };
            LabelSelectorRequirement {
                key: r.key.clone(),
                operator: operator.to_owned(),
                values,
            }
        })
        .collect();
    LabelSelector {
        match_labels: (!selector.match_labels.is_empty()).then(|| selector.match_labels.clone()),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    }
}

fn port(port: &PortMatch) -> NetworkPolicyPort {
    let protocol = match port.protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    };
    let (number, end_port) = match &port.port {
        None => (None, None),
        Some(PortSpec::Range { start, end }) => (
            Some(IntOrString::Int(i32::from(*start))),
            (end != start).then_some(i32::from(*end)),
        ),
        Some(PortSpec::Named(name)) => (Some(IntOrString::String(name.clone())), None),
    };
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: number,
        end_port,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use serde_json::json;

    use super::*;

    fn policy(spec: serde_json::Value) -> Policy {
        let object: NetworkPolicy = serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}),
        )
        .unwrap();
        Policy::from_k8s(&object).unwrap()
    }

    fn app(value: &str) -> Labels {
        Labels::from([("app".to_owned(), value.to_owned())])
    }

    #[test]
    fn every_kind_of_rule_comes_back_as_it_was_written() {
        let rules = json!([
            {"from": [
                {"podSelector": {"matchLabels": {"app": "a"}}},
                {"namespaceSelector": {"matchExpressions": [
                    {"key": "team", "operator": "In", "values": ["x", "y"]},
                    {"key": "legacy", "operator": "DoesNotExist"}]},
                 "podSelector": {}},
                {"namespaceSelector": {}},
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
             ],
             "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "UDP", "port": 1000, "endPort": 2000},
                       {"protocol": "SCTP", "port": "named"}, {"protocol": "TCP"}]},
            {},
        ]);
        let original = policy(json!({"podSelector": {"matchLabels": {"app": "web"}},
                                     "policyTypes": ["Ingress"], "ingress": rules}));
        let parts = existing_rules(&original, &app("web"), Direction::Ingress).unwrap();
        // Rebuilt as a policy, they validate to the same rules.
        let rebuilt: Vec<serde_json::Value> = parts
            .into_iter()
            .map(|r| json!({"from": r.peers, "ports": r.ports}))
            .collect();
        let again = policy(json!({"podSelector": {"matchLabels": {"app": "web"}},
                                  "policyTypes": ["Ingress"], "ingress": rebuilt}));
        assert_eq!(again, original);
    }

    #[test]
    fn a_policy_for_other_pods_or_directions_is_a_conflict() {
        let web = policy(json!({"podSelector": {"matchLabels": {"app": "web"}},
                                "policyTypes": ["Egress"], "egress": []}));
        assert!(
            existing_rules(&web, &app("web"), Direction::Egress)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            existing_rules(&web, &app("db"), Direction::Egress).err(),
            Some(Conflict::OtherPods("app=web".into()))
        );
        assert_eq!(
            existing_rules(&web, &app("web"), Direction::Ingress).err(),
            Some(Conflict::OtherDirection(Direction::Ingress))
        );
        let both = policy(json!({"podSelector": {"matchLabels": {"app": "web"}},
                                 "policyTypes": ["Ingress", "Egress"]}));
        assert!(existing_rules(&both, &app("web"), Direction::Egress).is_err());
        let invalid = policy(json!({"podSelector": {"matchLabels": {"app": "web"}},
                                    "policyTypes": ["Egress"],
                                    "egress": [{"to": [{"ipBlock": {"cidr": "nope"}}]}]}));
        assert_eq!(
            existing_rules(&invalid, &app("web"), Direction::Egress).err(),
            Some(Conflict::Invalid)
        );
    }
}
