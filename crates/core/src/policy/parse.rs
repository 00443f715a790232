//! From a Kubernetes NetworkPolicy to a [`Policy`]: defaulting and validation.
//!
//! Defaulting follows the API: policyTypes is `[Ingress]` plus `Egress` when egress rules
//! exist; a missing protocol is TCP. Validation follows the API server's checks that matter for
//! enforcement (CIDRs, except inside cidr, selector operators and label syntax, port ranges,
//! endPort rules, protocols, empty peers). A policy with any error allows nothing but keeps
//! isolating what it declares: fail closed.

use ipnet::IpNet;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{
    DEFAULT_NAMESPACE, Error, FieldError, NamespaceScope, ObjectKey, Peer, PeerKind, Policy,
    PortMatch, PortSpec, Protocol, Rule, Selector, Snapshot,
};

impl Snapshot {
    /// Adds or replaces a Kubernetes NetworkPolicy, validating it. Invalid policies are kept in
    /// their fail-closed form; their errors are in [`Policy::errors`].
    pub fn upsert_network_policy(
        &mut self,
        policy: &networking::NetworkPolicy,
    ) -> Result<(), Error> {
        let policy = Policy::from_k8s(policy).ok_or(Error::MissingName {
            kind: "NetworkPolicy",
        })?;
        self.upsert_policy(policy);
        Ok(())
    }
}

impl Policy {
    /// Validates a Kubernetes NetworkPolicy. `None` only when it has no name.
    pub fn from_k8s(policy: &networking::NetworkPolicy) -> Option<Self> {
        let name = policy.metadata.name.clone()?;
        let namespace = policy
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let key = ObjectKey::new(namespace, name);
        let mut errors = Vec::new();
        let Some(spec) = policy.spec.as_ref() else {
            // No spec at all: an empty podSelector with defaulted policyTypes (Ingress) and no
            // rules, which is what the API server would store.
            return Some(Self {
                key,
                pod_selector: Selector::everything(),
                ingress: Some(Vec::new()),
                egress: None,
                errors,
            });
        };

        let pod_selector = match &spec.pod_selector {
            None => Selector::everything(),
            Some(selector) => {
                Selector::from_k8s(selector, "spec.podSelector").unwrap_or_else(|mut e| {
                    // Fail closed: which pods the author meant is unknown, so isolate them all.
                    errors.append(&mut e);
                    Selector::everything()
                })
            }
        };

        let (isolates_ingress, isolates_egress) = policy_types(spec, &mut errors);
        let ingress = isolates_ingress.then(|| {
            let rules = spec.ingress.iter().flatten().enumerate();
            rules
                .map(|(i, r)| {
                    rule(
                        i,
                        "ingress",
                        "from",
                        r.from.as_deref(),
                        r.ports.as_deref(),
                        &mut errors,
                    )
                })
                .collect::<Vec<_>>()
        });
        let egress = isolates_egress.then(|| {
            let rules = spec.egress.iter().flatten().enumerate();
            rules
                .map(|(i, r)| {
                    rule(
                        i,
                        "egress",
                        "to",
                        r.to.as_deref(),
                        r.ports.as_deref(),
                        &mut errors,
                    )
                })
                .collect::<Vec<_>>()
        });

        let mut policy = Self {
            key,
            pod_selector,
            ingress,
            egress,
            errors,
        };
        if policy.is_invalid() {
            // Not half-installed: nothing this policy meant to allow is allowed.
            for rules in [&mut policy.ingress, &mut policy.egress]
                .into_iter()
                .flatten()
            {
                rules.clear();
            }
        }
        Some(policy)
    }
}

/// Which directions the policy isolates, with the API's defaulting. Unknown entries are errors
/// and make the policy isolate both directions (fail closed).
fn policy_types(
    spec: &networking::NetworkPolicySpec,
    errors: &mut Vec<FieldError>,
) -> (bool, bool) {
    let Some(types) = spec.policy_types.as_ref().filter(|t| !t.is_empty()) else {
        let has_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        return (true, has_egress);
    };
    let (mut ingress, mut egress) = (false, false);
    for (i, t) in types.iter().enumerate() {
        match t.as_str() {
            "Ingress" => ingress = true,
            "Egress" => egress = true,
            other => {
                errors.push(FieldError::new(
                    format!("spec.policyTypes[{i}]"),
                    format!("unknown policy type {other:?} (use Ingress or Egress)"),
                ));
                return (true, true);
            }
        }
    }
    (ingress, egress)
}

fn rule(
    index: usize,
    section: &str,
    peers_field: &str,
    peers: Option<&[networking::NetworkPolicyPeer]>,
    ports: Option<&[networking::NetworkPolicyPort]>,
    errors: &mut Vec<FieldError>,
) -> Rule {
    let base = format!("spec.{section}[{index}]");
    let peers = peers.filter(|p| !p.is_empty()).map(|peers| {
        peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| peer(i, p, &format!("{base}.{peers_field}[{i}]"), errors))
            .collect()
    });
    let ports = ports.filter(|p| !p.is_empty()).map(|ports| {
        ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| port(p, &format!("{base}.ports[{i}]"), errors))
            .collect()
    });
    Rule {
        index,
        peers,
        ports,
    }
}

fn peer(
    index: usize,
    peer: &networking::NetworkPolicyPeer,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Peer> {
    let has_selector = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
    let kind = match (&peer.ip_block, has_selector) {
        (Some(_), true) => {
            errors.push(FieldError::new(
                field,
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            ));
            return None;
        }
        (None, false) => {
            errors.push(FieldError::new(
                field,
                "a peer needs podSelector, namespaceSelector or ipBlock",
            ));
            return None;
        }
        (Some(block), false) => ip_block(block, &format!("{field}.ipBlock"), errors)?,
        (None, true) => {
            let pods = match &peer.pod_selector {
                None => Selector::everything(),
                Some(s) => Selector::from_k8s(s, &format!("{field}.podSelector"))
                    .map_err(|mut e| errors.append(&mut e))
                    .ok()?,
            };
            let namespaces = match &peer.namespace_selector {
                None => NamespaceScope::PolicyNamespace,
                Some(s) => NamespaceScope::Matching(
                    Selector::from_k8s(s, &format!("{field}.namespaceSelector"))
                        .map_err(|mut e| errors.append(&mut e))
                        .ok()?,
                ),
            };
            PeerKind::Pods { namespaces, pods }
        }
    };
    Some(Peer { index, kind })
}

fn ip_block(
    block: &networking::IPBlock,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<PeerKind> {
    let cidr = parse_cidr(&block.cidr, &format!("{field}.cidr"), errors)?;
    let mut except = Vec::new();
    for (i, text) in block.except.iter().flatten().enumerate() {
        let path = format!("{field}.except[{i}]");
        let Some(net) = parse_cidr(text, &path, errors) else {
            continue;
        };
        // The API server requires each except to lie strictly inside the cidr.
        if !cidr.contains(&net) || net == cidr {
            errors.push(FieldError::new(
                path,
                format!("{net} is not strictly inside the cidr {cidr}"),
            ));
            continue;
        }
        except.push(net);
    }
    except.sort();
    except.dedup();
    Some(PeerKind::IpBlock { cidr, except })
}

/// Parses a CIDR and masks host bits (`10.0.0.1/24` is `10.0.0.0/24`, Antrea #1764).
/// IPv4-mapped IPv6 CIDRs (`::ffff:10.0.0.0/104`) are rejected: Go reads them as IPv4 CIDRs
/// and other engines as IPv6 ones, and no packet carries such an address (Kubernetes 1.33
/// rejects them too, with StrictIPCIDRValidation).
pub(super) fn parse_cidr(text: &str, field: &str, errors: &mut Vec<FieldError>) -> Option<IpNet> {
    match text.trim().parse::<IpNet>() {
        Ok(IpNet::V6(net)) if net.prefix_len() >= 96 && net.addr().to_ipv4_mapped().is_some() => {
            errors.push(FieldError::new(
                field,
                format!(
                    "{text:?} is an IPv4-mapped IPv6 CIDR, which is ambiguous (write the IPv4 CIDR)"
                ),
            ));
            None
        }
        Ok(net) => Some(net.trunc()),
        Err(_) => {
            errors.push(FieldError::new(
                field,
                format!("{text:?} is not a CIDR (write it as 10.0.0.0/8 or fd00::/64)"),
            ));
            None
        }
    }
}

fn port(
    port: &networking::NetworkPolicyPort,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<PortMatch> {
    let protocol_text = port.protocol.as_deref().unwrap_or("TCP");
    let Some(protocol) = Protocol::from_k8s(protocol_text) else {
        errors.push(FieldError::new(
            format!("{field}.protocol"),
            format!("unknown protocol {protocol_text:?} (use TCP, UDP or SCTP)"),
        ));
        return None;
    };
    let spec = match (&port.port, port.end_port) {
        (None, None) => None,
        (None, Some(_)) => {
            errors.push(FieldError::new(
                format!("{field}.endPort"),
                "endPort needs a numeric port",
            ));
            return None;
        }
        (Some(IntOrString::String(name)), end) => {
            if end.is_some() {
                errors.push(FieldError::new(
                    format!("{field}.endPort"),
                    format!("endPort cannot be used with the named port {name:?}"),
                ));
                return None;
            }
            if !is_port_name(name) {
                errors.push(FieldError::new(
                    format!("{field}.port"),
                    format!(
                        "{name:?} is not a port number or a valid port name (at most 15 \
                         lowercase alphanumerics and '-', with at least one letter)"
                    ),
                ));
                return None;
            }
            Some(PortSpec::Named(name.clone()))
        }
        (Some(IntOrString::Int(start)), end) => {
            let start = port_number(i64::from(*start), &format!("{field}.port"), errors)?;
            let end = match end {
                None => start,
                Some(end) => {
                    let end = port_number(i64::from(end), &format!("{field}.endPort"), errors)?;
                    if end < start {
                        errors.push(FieldError::new(
                            format!("{field}.endPort"),
                            format!("endPort {end} is below port {start}"),
                        ));
                        return None;
                    }
                    end
                }
            };
            Some(PortSpec::Range { start, end })
        }
    };
    Some(PortMatch {
        protocol,
        port: spec,
    })
}

/// A port number field (`port`, `endPort`; ClusterNetworkPolicy's `number`, `range`): 1 to
/// 65535, or an error naming the field.
pub(in crate::policy) fn port_number(
    value: i64,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<u16> {
    match u16::try_from(value) {
        Ok(port) if port >= 1 => Some(port),
        _ => {
            errors.push(FieldError::new(
                field,
                format!("{value} is outside 1-65535"),
            ));
            None
        }
    }
}

/// An IANA service name as Kubernetes validates it: 1-15 characters, lowercase alphanumerics
/// and `-`, at least one letter, no leading, trailing or double `-`.
pub(super) fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}
