//! From a ClusterNetworkPolicy object ([`super::api`]) to a [`ClusterPolicy`]: validation, and
//! the fail-closed form of an invalid policy.
//!
//! Validation follows the CRD's schema and its CEL rules (which API servers before 1.25 do not
//! run): a tier and a priority from 0 to 1000, exactly one subject field, at most 25 rules per
//! direction, an action, 1 to 25 peers of exactly one field each (ingress: `namespaces` or
//! `pods`), CIDRs, label selectors, 1 to 25 protocol entries of exactly one field each, port
//! numbers 1 to 65535, ranges with `start < end`, port names, rule names of at most 100
//! characters, no named port beside a `networks`, `nodes` or `domainNames` peer, and
//! `domainNames` only in Accept rules.
//!
//! Fail closed: a policy with any error never accepts and never passes. Its Accept rules are
//! left out (they match nothing, as the API says of an Accept rule it cannot read), its Pass
//! rules deny what they match, a Deny or Pass rule that is itself invalid denies everything in
//! its direction, and an invalid subject, tier or priority becomes every pod, the Admin tier
//! and priority 0. So an invalid policy only ever takes access away: the cluster never allows
//! more than it did before the object existed. The errors name the field
//! (`spec.egress[2].to[0].networks[1]`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::api::{self, NamespacedPodSpec, PeerSpec, ProtocolSpec, RuleSpec};
use crate::model::{
    ClusterAction, ClusterPeer, ClusterPolicy, ClusterPort, ClusterRule, Direction, FieldError,
    MAX_ITEMS, MAX_PRIORITY, MAX_RULE_NAME, Protocol, Selector, Subject, Tier,
};
use crate::policy::parse::{is_port_name, parse_cidr, port_number};

impl ClusterPolicy {
    /// Validates a ClusterNetworkPolicy object. `None` only when it has no name.
    pub fn from_api(object: &api::ClusterNetworkPolicy) -> Option<Self> {
        let name = object.metadata.name.clone()?;
        let mut errors = Vec::new();
        let mut unsupported = Vec::new();
        let Some(spec) = &object.spec else {
            // No rules to keep: it selects and does nothing.
            return Some(Self {
                name,
                tier: Tier::Admin,
                priority: 0,
                subject: Subject::Namespaces(Selector::everything()),
                ingress: Vec::new(),
                egress: Vec::new(),
                errors: vec![FieldError::new(
                    "spec",
                    "a ClusterNetworkPolicy needs a spec",
                )],
                unsupported,
            });
        };
        let tier = match spec.tier.as_deref() {
            None => {
                errors.push(FieldError::new("spec.tier", "required (Admin or Baseline)"));
                None
            }
            Some(text) => Tier::from_k8s(text).or_else(|| {
                errors.push(FieldError::new(
                    "spec.tier",
                    format!("unknown tier {text:?} (use Admin or Baseline)"),
                ));
                None
            }),
        };
        let priority = match spec.priority {
            None => {
                errors.push(FieldError::new("spec.priority", "required (0 to 1000)"));
                None
            }
            Some(value) => match u16::try_from(value) {
                Ok(priority) if priority <= MAX_PRIORITY => Some(priority),
                _ => {
                    errors.push(FieldError::new(
                        "spec.priority",
                        format!("{value} is outside 0-{MAX_PRIORITY}"),
                    ));
                    None
                }
            },
        };
        let subject = subject(spec.subject.as_ref(), &mut errors);
        let directions = [
            (Direction::Ingress, &spec.ingress),
            (Direction::Egress, &spec.egress),
        ]
        .map(|(direction, rules)| {
            let section = direction.as_str();
            let rules = rules.as_deref().unwrap_or_default();
            if rules.len() > MAX_ITEMS {
                errors.push(FieldError::new(
                    format!("spec.{section}"),
                    format!("{} rules, at most {MAX_ITEMS} are allowed", rules.len()),
                ));
            }
            rules
                .iter()
                .enumerate()
                .map(|(index, spec)| {
                    let mut rule_errors = Vec::new();
                    let rule = rule(index, direction, spec, &mut rule_errors, &mut unsupported);
                    let failed = !rule_errors.is_empty();
                    errors.append(&mut rule_errors);
                    (rule, failed)
                })
                .collect::<Vec<_>>()
        });
        let invalid = !errors.is_empty();
        let [ingress, egress] = directions.map(|rules| {
            rules
                .into_iter()
                .filter_map(|(rule, failed)| fail_closed(rule, failed, invalid))
                .collect()
        });
        Some(Self {
            name,
            tier: tier.unwrap_or(Tier::Admin),
            priority: priority.unwrap_or(0),
            subject: subject.unwrap_or_else(|| Subject::Namespaces(Selector::everything())),
            ingress,
            egress,
            errors,
            unsupported,
        })
    }
}

/// What becomes of a rule: as written in a valid policy; in an invalid one, never an Accept or
/// a Pass (see the module documentation). `failed`: the rule itself has errors.
fn fail_closed(rule: ClusterRule, failed: bool, policy_invalid: bool) -> Option<ClusterRule> {
    if !policy_invalid {
        return Some(rule);
    }
    match (rule.action, failed) {
        (ClusterAction::Accept, _) => None,
        (_, true) => Some(ClusterRule {
            action: ClusterAction::Deny,
            peers: vec![ClusterPeer::Any],
            ports: None,
            ..rule
        }),
        (_, false) => Some(ClusterRule {
            action: ClusterAction::Deny,
            ..rule
        }),
    }
}

fn subject(spec: Option<&api::SubjectSpec>, errors: &mut Vec<FieldError>) -> Option<Subject> {
    let Some(spec) = spec else {
        errors.push(FieldError::new(
            "spec.subject",
            "required (namespaces or pods)",
        ));
        return None;
    };
    match (&spec.namespaces, &spec.pods) {
        (Some(namespaces), None) => {
            selector(namespaces, "spec.subject.namespaces", errors).map(Subject::Namespaces)
        }
        (None, Some(pods)) => {
            let (namespaces, pods) = namespaced_pods(pods, "spec.subject.pods", errors)?;
            Some(Subject::Pods { namespaces, pods })
        }
        _ => {
            errors.push(FieldError::new(
                "spec.subject",
                "set exactly one of namespaces and pods",
            ));
            None
        }
    }
}

fn selector(
    selector: &LabelSelector,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Selector> {
    Selector::from_k8s(selector, field)
        .map_err(|mut e| errors.append(&mut e))
        .ok()
}

fn namespaced_pods(
    spec: &NamespacedPodSpec,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<(Selector, Selector)> {
    let namespaces = match &spec.namespace_selector {
        None => Some(Selector::everything()),
        Some(s) => selector(s, &format!("{field}.namespaceSelector"), errors),
    };
    let pods = match &spec.pod_selector {
        None => {
            errors.push(FieldError::new(
                format!("{field}.podSelector"),
                "required ({} selects every pod)",
            ));
            None
        }
        Some(s) => selector(s, &format!("{field}.podSelector"), errors),
    };
    Some((namespaces?, pods?))
}

fn rule(
    index: usize,
    direction: Direction,
    spec: &RuleSpec,
    errors: &mut Vec<FieldError>,
    unsupported: &mut Vec<FieldError>,
) -> ClusterRule {
    let section = direction.as_str();
    let base = format!("spec.{section}[{index}]");
    if let Some(name) = &spec.name
        && name.chars().count() > MAX_RULE_NAME
    {
        errors.push(FieldError::new(
            format!("{base}.name"),
            format!("longer than {MAX_RULE_NAME} characters"),
        ));
    }
    let action = match spec.action.as_deref() {
        None => {
            errors.push(FieldError::new(
                format!("{base}.action"),
                "required (Accept, Deny or Pass)",
            ));
            None
        }
        Some(text) => ClusterAction::from_k8s(text).or_else(|| {
            errors.push(FieldError::new(
                format!("{base}.action"),
                format!("unknown action {text:?} (use Accept, Deny or Pass)"),
            ));
            None
        }),
    };
    let (peers_field, peers, wrong) = match direction {
        Direction::Ingress => ("from", &spec.from, spec.to.as_ref().map(|_| "to")),
        Direction::Egress => ("to", &spec.to, spec.from.as_ref().map(|_| "from")),
    };
    if let Some(wrong) = wrong {
        errors.push(FieldError::new(
            format!("{base}.{wrong}"),
            format!("{section} rules list their peers in {peers_field}"),
        ));
    }
    let peers_path = format!("{base}.{peers_field}");
    let peer_specs = peers.as_deref().unwrap_or_default();
    if peer_specs.is_empty() {
        errors.push(FieldError::new(&peers_path, "required: at least one peer"));
    } else if peer_specs.len() > MAX_ITEMS {
        errors.push(FieldError::new(
            &peers_path,
            format!(
                "{} peers, at most {MAX_ITEMS} are allowed",
                peer_specs.len()
            ),
        ));
    }
    let mut peers = Vec::new();
    for (i, peer_spec) in peer_specs.iter().enumerate() {
        let field = format!("{peers_path}[{i}]");
        if let Some(p) = peer(peer_spec, direction, &field, action, errors, unsupported) {
            peers.push(p);
        }
    }
    let ports = spec.protocols.as_ref().map(|entries| {
        let field = format!("{base}.protocols");
        if entries.is_empty() {
            errors.push(FieldError::new(
                &field,
                "at least one entry (leave protocols out for every port)",
            ));
        } else if entries.len() > MAX_ITEMS {
            errors.push(FieldError::new(
                &field,
                format!("{} entries, at most {MAX_ITEMS} are allowed", entries.len()),
            ));
        }
        entries
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| protocol(entry, &format!("{field}[{i}]"), errors))
            .collect::<Vec<_>>()
    });
    let named = ports
        .iter()
        .flatten()
        .any(|p| matches!(p, ClusterPort::Named(_)));
    let addresses_only = peers.iter().any(|p| {
        matches!(
            p,
            ClusterPeer::Networks(_) | ClusterPeer::Nodes(_) | ClusterPeer::DomainNames(_)
        )
    });
    if named && addresses_only {
        errors.push(FieldError::new(
            format!("{base}.protocols"),
            "a destinationNamedPort cannot go with networks, nodes or domainNames peers, which \
             have no named ports",
        ));
    }
    ClusterRule {
        index,
        name: spec.name.clone().filter(|n| !n.is_empty()),
        // A rule without a valid action is invalid, so its policy too: the fail-closed form
        // makes it a deny (see `fail_closed`).
        action: action.unwrap_or(ClusterAction::Deny),
        peers,
        ports,
    }
}

fn peer(
    spec: &PeerSpec,
    direction: Direction,
    field: &str,
    action: Option<ClusterAction>,
    errors: &mut Vec<FieldError>,
    unsupported: &mut Vec<FieldError>,
) -> Option<ClusterPeer> {
    let set = [
        spec.namespaces.is_some(),
        spec.pods.is_some(),
        spec.nodes.is_some(),
        spec.networks.is_some(),
        spec.domain_names.is_some(),
    ];
    let count = set.iter().filter(|s| **s).count();
    let kinds = match direction {
        Direction::Ingress => "namespaces or pods",
        Direction::Egress => "namespaces, pods, nodes, networks or domainNames",
    };
    if count != 1 {
        errors.push(FieldError::new(
            field,
            format!("set exactly one of {kinds} (a peer with none known here fails closed)"),
        ));
        return None;
    }
    if direction == Direction::Ingress
        && (spec.nodes.is_some() || spec.networks.is_some() || spec.domain_names.is_some())
    {
        errors.push(FieldError::new(
            field,
            "ingress peers are namespaces or pods",
        ));
        return None;
    }
    if let Some(namespaces) = &spec.namespaces {
        return selector(namespaces, &format!("{field}.namespaces"), errors)
            .map(ClusterPeer::Namespaces);
    }
    if let Some(pods) = &spec.pods {
        let (namespaces, pods) = namespaced_pods(pods, &format!("{field}.pods"), errors)?;
        return Some(ClusterPeer::Pods { namespaces, pods });
    }
    if let Some(nodes) = &spec.nodes {
        return selector(nodes, &format!("{field}.nodes"), errors).map(ClusterPeer::Nodes);
    }
    if let Some(networks) = &spec.networks {
        let path = format!("{field}.networks");
        if networks.is_empty() || networks.len() > MAX_ITEMS {
            errors.push(FieldError::new(
                &path,
                format!("{} networks, 1 to {MAX_ITEMS} are allowed", networks.len()),
            ));
        }
        let mut parsed = Vec::new();
        for (i, text) in networks.iter().enumerate() {
            let before = errors.len();
            if let Some(net) = parse_cidr(text, &format!("{path}[{i}]"), errors) {
                parsed.push(net);
            }
            if errors.len() > before {
                return None;
            }
        }
        parsed.sort();
        parsed.dedup();
        return Some(ClusterPeer::Networks(parsed));
    }
    let names = spec.domain_names.as_deref().unwrap_or_default();
    let path = format!("{field}.domainNames");
    let before = errors.len();
    if action.is_some_and(|a| a != ClusterAction::Accept) {
        errors.push(FieldError::new(
            &path,
            "domainNames peers are only supported in Accept rules",
        ));
    }
    if names.is_empty() || names.len() > MAX_ITEMS {
        errors.push(FieldError::new(
            &path,
            format!("{} domain names, 1 to {MAX_ITEMS} are allowed", names.len()),
        ));
    }
    for (i, name) in names.iter().enumerate() {
        if !is_domain_name(name) {
            errors.push(FieldError::new(
                format!("{path}[{i}]"),
                format!("{name:?} is not a domain name (an optional \"*.\" then DNS labels)"),
            ));
        }
    }
    if errors.len() > before {
        return None;
    }
    unsupported.push(FieldError::new(
        path,
        "domainNames peers are not enforced: this peer matches nothing, so the rule accepts \
         only what its other peers select",
    ));
    Some(ClusterPeer::DomainNames(names.to_vec()))
}

fn protocol(spec: &ProtocolSpec, field: &str, errors: &mut Vec<FieldError>) -> Option<ClusterPort> {
    let entries = [
        (Protocol::Tcp, "tcp", &spec.tcp),
        (Protocol::Udp, "udp", &spec.udp),
        (Protocol::Sctp, "sctp", &spec.sctp),
    ];
    let count = entries.iter().filter(|(_, _, e)| e.is_some()).count()
        + usize::from(spec.destination_named_port.is_some());
    if count != 1 {
        errors.push(FieldError::new(
            field,
            "set exactly one of tcp, udp, sctp and destinationNamedPort",
        ));
        return None;
    }
    if let Some(name) = &spec.destination_named_port {
        if !is_port_name(name) {
            errors.push(FieldError::new(
                format!("{field}.destinationNamedPort"),
                format!(
                    "{name:?} is not a valid port name (at most 15 lowercase alphanumerics and \
                     '-', with at least one letter)"
                ),
            ));
            return None;
        }
        return Some(ClusterPort::Named(name.clone()));
    }
    let (protocol, key, ports) = entries
        .into_iter()
        .find_map(|(protocol, key, e)| e.as_ref().map(|e| (protocol, key, e)))?;
    let field = format!("{field}.{key}.destinationPort");
    let Some(port) = &ports.destination_port else {
        errors.push(FieldError::new(field, "required: a number or a range"));
        return None;
    };
    match (port.number, &port.range) {
        (Some(number), None) => {
            let number = port_number(number, &format!("{field}.number"), errors)?;
            Some(ClusterPort::Range {
                protocol,
                start: number,
                end: number,
            })
        }
        (None, Some(range)) => {
            let bound = |value: Option<i64>, name: &str, errors: &mut Vec<FieldError>| {
                let path = format!("{field}.range.{name}");
                match value {
                    None => {
                        errors.push(FieldError::new(path, "required"));
                        None
                    }
                    Some(value) => port_number(value, &path, errors),
                }
            };
            let start = bound(range.start, "start", errors);
            let end = bound(range.end, "end", errors);
            let (start, end) = (start?, end?);
            if start >= end {
                errors.push(FieldError::new(
                    format!("{field}.range"),
                    format!("start {start} must be below end {end}"),
                ));
                return None;
            }
            Some(ClusterPort::Range {
                protocol,
                start,
                end,
            })
        }
        _ => {
            errors.push(FieldError::new(
                field,
                "set exactly one of number and range",
            ));
            None
        }
    }
}

/// The API's pattern for a domain name: an optional `*.`, then labels of alphanumerics, `-`
/// and `_` (starting and ending alphanumeric) joined by dots, at least two, and an optional
/// trailing dot.
fn is_domain_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
                && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
                && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        })
}

#[cfg(test)]
mod tests;
