//! The Kubernetes objects of a suggestion: its name, pod and address peers, ports, the DNS
//! rule and the NetworkPolicy with its label and annotations. No decisions: [`super::build`]
//! says what goes in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::workload::Workload;
use super::{ANNOTATION_DENIED_FLOWS, ANNOTATION_EXTERNAL, HINT_LABEL};
use crate::model::{Direction, Labels, NAMESPACE_NAME_LABEL, ObjectKey, Protocol};

/// The namespace of the cluster DNS.
pub const DNS_NAMESPACE: &str = "kube-system";
/// The label (key and value) of the cluster DNS pods, CoreDNS included.
pub const DNS_LABEL: (&str, &str) = ("k8s-app", "kube-dns");

/// Kubernetes' limit on a NetworkPolicy name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// One rule: peers and ports (`None`: all, as in a Kubernetes rule without `from`/`to` or
/// `ports`; suggested rules always list both).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleParts {
    /// `from` or `to`.
    pub peers: Option<Vec<NetworkPolicyPeer>>,
    /// `ports`.
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

/// Whether a pod is the cluster DNS.
pub fn is_dns(key: &ObjectKey, labels: &Labels) -> bool {
    key.namespace == DNS_NAMESPACE
        && labels.get(DNS_LABEL.0).map(String::as_str) == Some(DNS_LABEL.1)
}

/// `allow-<workload>-<direction>-hint`, or `allow-<kind>-<workload>-...` when `qualify`; made
/// a valid name (a DNS subdomain) whatever the workload name holds, and cut to Kubernetes'
/// limit.
pub fn policy_name(workload: &Workload, direction: Direction, qualify: bool) -> String {
    let suffix = format!("-{direction}-hint");
    let middle = if qualify {
        format!("{}-{}", workload.kind, workload.name)
    } else {
        workload.name.clone()
    };
    // Lowercase letters, digits and single dashes: a valid name whatever the workload's name
    // holds (dots too become dashes, since `a.-b` would not be valid).
    let mut name = String::with_capacity(middle.len());
    for c in middle.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let budget = MAX_NAME - "allow-".len() - suffix.len();
    name.truncate(budget);
    let middle = name.trim_matches('-');
    let middle = if middle.is_empty() { "pod" } else { middle };
    format!("allow-{middle}{suffix}")
}

fn selector(labels: Labels) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    }
}

/// Pods by labels; in another namespace, also the namespace by name.
pub fn pod_peer(policy_namespace: &str, namespace: &str, labels: Labels) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: None,
        namespace_selector: (namespace != policy_namespace).then(|| {
            selector(Labels::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                namespace.to_owned(),
            )]))
        }),
        pod_selector: Some(selector(labels)),
    }
}

/// One address: `/32` or `/128`.
pub fn ip_peer(ip: IpAddr) -> NetworkPolicyPeer {
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: format!("{ip}/{bits}"),
            except: None,
        }),
        namespace_selector: None,
        pod_selector: None,
    }
}

pub fn port(protocol: Protocol, number: u16) -> NetworkPolicyPort {
    let protocol = match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    };
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(i32::from(number))),
        end_port: None,
    }
}

/// kube-dns in kube-system, on UDP and TCP for each denied port.
pub fn dns_rule(denied: &BTreeSet<(Protocol, u16)>) -> RuleParts {
    let numbers: BTreeSet<u16> = denied.iter().map(|(_, n)| *n).collect();
    let peer = NetworkPolicyPeer {
        ip_block: None,
        namespace_selector: Some(selector(Labels::from([(
            NAMESPACE_NAME_LABEL.to_owned(),
            DNS_NAMESPACE.to_owned(),
        )]))),
        pod_selector: Some(selector(Labels::from([(
            DNS_LABEL.0.to_owned(),
            DNS_LABEL.1.to_owned(),
        )]))),
    };
    RuleParts {
        peers: Some(vec![peer]),
        ports: Some(
            numbers
                .iter()
                .flat_map(|n| [port(Protocol::Udp, *n), port(Protocol::Tcp, *n)])
                .collect(),
        ),
    }
}

pub fn network_policy(
    name: String,
    namespace: &str,
    pod_labels: Labels,
    direction: Direction,
    rules: Vec<RuleParts>,
    flows: usize,
    external: bool,
) -> NetworkPolicy {
    let mut annotations = BTreeMap::from([(ANNOTATION_DENIED_FLOWS.to_owned(), flows.to_string())]);
    if external {
        annotations.insert(ANNOTATION_EXTERNAL.to_owned(), "true".to_owned());
    }
    let (policy_type, ingress, egress) = match direction {
        Direction::Ingress => (
            "Ingress",
            Some(
                rules
                    .into_iter()
                    .map(|r| NetworkPolicyIngressRule {
                        from: r.peers,
                        ports: r.ports,
                    })
                    .collect(),
            ),
            None,
        ),
        Direction::Egress => (
            "Egress",
            None,
            Some(
                rules
                    .into_iter()
                    .map(|r| NetworkPolicyEgressRule {
                        to: r.peers,
                        ports: r.ports,
                    })
                    .collect(),
            ),
        ),
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(HINT_LABEL.to_owned(), "true".to_owned())])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(pod_labels)),
            // Only this direction: a policy with egress rules and no policyTypes would also
            // isolate ingress.
            policy_types: Some(vec![policy_type.to_owned()]),
            ingress,
            egress,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(kind: &str, name: &str) -> Workload {
        Workload {
            namespace: "ns".into(),
            kind: kind.into(),
            name: name.into(),
            labels: Labels::new(),
        }
    }

    #[test]
    fn names_say_workload_and_direction() {
        let w = workload("Deployment", "backend");
        assert_eq!(
            policy_name(&w, Direction::Ingress, false),
            "allow-backend-ingress-hint"
        );
        assert_eq!(
            policy_name(&w, Direction::Egress, true),
            "allow-deployment-backend-egress-hint"
        );
    }

    #[test]
    fn names_are_valid_whatever_the_workload_is_called() {
        let w = workload("Pod", "Weird_Name!");
        assert_eq!(
            policy_name(&w, Direction::Egress, false),
            "allow-weird-name-egress-hint"
        );
        let w = workload("Pod", "a.-b..c");
        assert_eq!(
            policy_name(&w, Direction::Egress, false),
            "allow-a-b-c-egress-hint"
        );
        let w = workload("Pod", &"a".repeat(300));
        let name = policy_name(&w, Direction::Ingress, false);
        assert_eq!(name.len(), MAX_NAME);
        assert!(name.ends_with("a-ingress-hint"), "{name}");
        let w = workload("Pod", "--");
        assert_eq!(
            policy_name(&w, Direction::Ingress, false),
            "allow-pod-ingress-hint"
        );
    }

    #[test]
    fn dns_is_kube_dns_in_kube_system_only() {
        let labels = Labels::from([("k8s-app".to_owned(), "kube-dns".to_owned())]);
        assert!(is_dns(&ObjectKey::new("kube-system", "coredns-1"), &labels));
        assert!(!is_dns(&ObjectKey::new("default", "coredns-1"), &labels));
        assert!(!is_dns(
            &ObjectKey::new("kube-system", "coredns-1"),
            &Labels::new()
        ));
    }

    #[test]
    fn external_peers_are_single_addresses() {
        let v4 = ip_peer("203.0.113.7".parse().unwrap());
        assert_eq!(v4.ip_block.unwrap().cidr, "203.0.113.7/32");
        let v6 = ip_peer("2001:db8::7".parse().unwrap());
        assert_eq!(v6.ip_block.unwrap().cidr, "2001:db8::7/128");
    }

    #[test]
    fn the_dns_rule_has_udp_and_tcp_for_each_denied_port() {
        let rule = dns_rule(&BTreeSet::from([
            (Protocol::Udp, 53),
            (Protocol::Udp, 5353),
        ]));
        let ports: Vec<String> = rule
            .ports
            .unwrap()
            .iter()
            .map(|p| format!("{}/{:?}", p.protocol.as_deref().unwrap(), p.port))
            .collect();
        assert_eq!(
            ports,
            [
                "UDP/Some(Int(53))",
                "TCP/Some(Int(53))",
                "UDP/Some(Int(5353))",
                "TCP/Some(Int(5353))"
            ]
        );
    }
}
