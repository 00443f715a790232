//! The catalogue of lint rules: each rule's stable id, its default severity and the words that
//! describe it (what it finds, why that matters), which the text, JSON and SARIF outputs and
//! `docs/lint.md` share. What each rule checks is in the module that implements it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Severity;

/// A lint rule, by its stable id (`missing-default-deny-ingress`). Ids never change meaning;
/// a rule that changes what it finds gets a new id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleId {
    /// The validator rejects a field of the policy.
    InvalidPolicy,
    /// A namespace without a policy that isolates all its pods for ingress.
    MissingDefaultDenyIngress,
    /// A namespace without a policy that isolates all its pods for egress.
    MissingDefaultDenyEgress,
    /// A pod no policy selects.
    UnprotectedPod,
    /// Pods isolated for egress that cannot reach the cluster's DNS resolver.
    EgressWithoutDns,
    /// Pods that reach the resolver on UDP but not on TCP.
    DnsUdpOnly,
    /// A podSelector that selects none of its namespace's pods.
    SelectsNoPods,
    /// A pod peer that selects no pod of the cluster.
    PeerSelectsNoPods,
    /// A namespaceSelector that matches no namespace.
    NamespaceSelectorMatchesNothing,
    /// A named port no destination pod declares.
    NamedPortNotDeclared,
    /// `0.0.0.0/0` or `::/0` without `except`.
    AnyAddressPeer,
    /// `namespaceSelector: {}` in an ingress rule.
    AllNamespacesIngress,
    /// A rule with peers and no ports.
    AllPortsOpen,
    /// A rule with neither peers nor ports.
    AllowAllRule,
    /// A rule another policy already allows in full.
    ShadowedRule,
    /// The cloud metadata address reachable from pods whose egress is restricted.
    MetadataReachable,
}

impl RuleId {
    /// Every rule, in the order the docs list them.
    pub const ALL: [Self; 16] = [
        Self::InvalidPolicy,
        Self::MissingDefaultDenyIngress,
        Self::MissingDefaultDenyEgress,
        Self::UnprotectedPod,
        Self::EgressWithoutDns,
        Self::DnsUdpOnly,
        Self::SelectsNoPods,
        Self::PeerSelectsNoPods,
        Self::NamespaceSelectorMatchesNothing,
        Self::NamedPortNotDeclared,
        Self::AnyAddressPeer,
        Self::AllNamespacesIngress,
        Self::AllPortsOpen,
        Self::AllowAllRule,
        Self::ShadowedRule,
        Self::MetadataReachable,
    ];

    /// The id as written in configs, flags and every output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPolicy => "invalid-policy",
            Self::MissingDefaultDenyIngress => "missing-default-deny-ingress",
            Self::MissingDefaultDenyEgress => "missing-default-deny-egress",
            Self::UnprotectedPod => "unprotected-pod",
            Self::EgressWithoutDns => "egress-without-dns",
            Self::DnsUdpOnly => "dns-udp-only",
            Self::SelectsNoPods => "selects-no-pods",
            Self::PeerSelectsNoPods => "peer-selects-no-pods",
            Self::NamespaceSelectorMatchesNothing => "namespace-selector-matches-nothing",
            Self::NamedPortNotDeclared => "named-port-not-declared",
            Self::AnyAddressPeer => "any-address-peer",
            Self::AllNamespacesIngress => "all-namespaces-ingress",
            Self::AllPortsOpen => "all-ports-open",
            Self::AllowAllRule => "allow-all-rule",
            Self::ShadowedRule => "shadowed-rule",
            Self::MetadataReachable => "metadata-reachable",
        }
    }

    /// The rule with this id; `None` for an unknown id.
    pub fn parse(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|rule| rule.as_str() == id)
    }

    /// Every id, comma-separated, for error messages.
    pub fn known_ids() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    /// The severity a finding of this rule has unless the config changes it.
    pub fn default_severity(self) -> Severity {
        match self {
            Self::InvalidPolicy | Self::EgressWithoutDns => Severity::Error,
            Self::MissingDefaultDenyIngress
            | Self::UnprotectedPod
            | Self::DnsUdpOnly
            | Self::SelectsNoPods
            | Self::NamespaceSelectorMatchesNothing
            | Self::NamedPortNotDeclared
            | Self::AnyAddressPeer
            | Self::AllNamespacesIngress
            | Self::AllowAllRule
            | Self::MetadataReachable => Severity::Warning,
            Self::MissingDefaultDenyEgress
            | Self::PeerSelectsNoPods
            | Self::AllPortsOpen
            | Self::ShadowedRule => Severity::Info,
        }
    }

    /// What the rule finds, in one line (SARIF's `shortDescription`).
    pub fn summary(self) -> &'static str {
        match self {
            Self::InvalidPolicy => "A field of the NetworkPolicy is invalid",
            Self::MissingDefaultDenyIngress => "Namespace without a default deny for ingress",
            Self::MissingDefaultDenyEgress => "Namespace without a default deny for egress",
            Self::UnprotectedPod => "Pod selected by no NetworkPolicy",
            Self::EgressWithoutDns => "Egress isolation without DNS to the cluster's resolver",
            Self::DnsUdpOnly => "DNS allowed on UDP only",
            Self::SelectsNoPods => "podSelector selects none of the namespace's pods",
            Self::PeerSelectsNoPods => "Peer selects no pod of the cluster",
            Self::NamespaceSelectorMatchesNothing => "namespaceSelector matches no namespace",
            Self::NamedPortNotDeclared => "Named port that no destination pod declares",
            Self::AnyAddressPeer => "ipBlock 0.0.0.0/0 or ::/0 without except",
            Self::AllNamespacesIngress => "Ingress from every namespace (namespaceSelector: {})",
            Self::AllPortsOpen => "Rule open on every port of every protocol",
            Self::AllowAllRule => "Rule that allows every peer on every port",
            Self::ShadowedRule => "Rule already allowed in full by another policy",
            Self::MetadataReachable => "Cloud metadata address reachable from restricted egress",
        }
    }

    /// Why a finding of this rule matters (SARIF's `fullDescription`).
    pub fn why(self) -> &'static str {
        match self {
            Self::InvalidPolicy => {
                "The API server rejects the policy. kube-nftpol enforces an invalid policy \
                 fail-closed: it isolates the pods it selects and allows nothing, so their \
                 traffic stops."
            }
            Self::MissingDefaultDenyIngress => {
                "A pod that no policy isolates for ingress accepts connections from every pod \
                 of the cluster and from outside it. A default deny (podSelector: {} with \
                 policyTypes [Ingress]) makes every other policy an allow list."
            }
            Self::MissingDefaultDenyEgress => {
                "A pod that no policy isolates for egress can connect anywhere: other \
                 namespaces, the node, the cloud metadata service, the internet."
            }
            Self::UnprotectedPod => {
                "A pod that no NetworkPolicy selects is not isolated in either direction: it \
                 accepts and opens any connection."
            }
            Self::EgressWithoutDns => {
                "Pods isolated for egress need a rule allowing DNS to the cluster's resolver; \
                 without it every name lookup fails and most applications stop working."
            }
            Self::DnsUdpOnly => {
                "DNS falls back to TCP for answers that do not fit a UDP datagram; with UDP \
                 only, those lookups time out."
            }
            Self::SelectsNoPods => {
                "A policy that selects no pod protects nothing: usually a typo in a label, or \
                 labels that changed."
            }
            Self::PeerSelectsNoPods => {
                "A peer that selects no pod allows nothing today: usually a typo in a label, or \
                 a workload that was renamed."
            }
            Self::NamespaceSelectorMatchesNothing => {
                "A namespaceSelector that matches no namespace can never allow anything; \
                 `name: X` is a common mistake for `kubernetes.io/metadata.name: X`."
            }
            Self::NamedPortNotDeclared => {
                "A named port resolves on each destination pod; when none declares it (with \
                 that protocol) the port entry matches nothing."
            }
            Self::AnyAddressPeer => {
                "0.0.0.0/0 and ::/0 take in the whole internet, every pod and node of the \
                 cluster and the cloud metadata service."
            }
            Self::AllNamespacesIngress => {
                "An empty namespaceSelector admits every namespace, including ones created \
                 later and by other teams; anyone who can create a pod anywhere can match it."
            }
            Self::AllPortsOpen => {
                "A rule without ports opens every TCP, UDP and SCTP port of the pods it \
                 protects to its peers, including debug and admin ports."
            }
            Self::AllowAllRule => {
                "A rule without peers and ports allows everything: the policy isolates its \
                 pods in name only."
            }
            Self::ShadowedRule => {
                "Another policy selecting at least the same pods already allows everything this \
                 rule allows: the rule has no effect, or the other policy is broader than meant."
            }
            Self::MetadataReachable => {
                "The cloud metadata service hands out the node's credentials; pods whose egress \
                 is restricted should not reach it."
            }
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_parses_back_and_matches_its_serde_name() {
        for rule in RuleId::ALL {
            assert_eq!(RuleId::parse(rule.as_str()), Some(rule));
            let json = serde_json::to_value(rule).unwrap();
            assert_eq!(json, rule.as_str());
            assert!(!rule.summary().is_empty() && rule.why().ends_with('.'));
        }
        assert_eq!(RuleId::parse("no-such-rule"), None);
        assert!(RuleId::known_ids().starts_with("invalid-policy, missing-default-deny-ingress"));
    }
}
