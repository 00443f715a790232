//! What every rule reads: the snapshot, the config, the pods each policy selects, and the
//! field paths findings name (`spec.egress[0].to[1]`, as the validator names fields). The
//! paths come from the validated policy's indexes, which are the positions in the object the
//! user wrote: rules and peers keep their index, and a valid policy keeps every port entry in
//! order (only an invalid policy drops entries, and the rules that use ports skip those).

use std::cell::OnceCell;

use super::probe::Probes;
use super::{Config, Finding, RuleId};
use crate::model::{Direction, Labels, ObjectKind, ObjectRef, Pod, Policy, Selector, Snapshot};

/// The input of one lint run.
pub(super) struct Context<'a> {
    /// The cluster.
    pub snapshot: &'a Snapshot,
    /// The parameters.
    pub config: &'a Config,
    /// Whether the input holds pods at all (see [`Context::knows_pods`]).
    has_pods: bool,
    /// The snapshot with witness pods, built on first use.
    probes: OnceCell<Probes>,
}

impl<'a> Context<'a> {
    pub fn new(snapshot: &'a Snapshot, config: &'a Config) -> Self {
        Self {
            snapshot,
            config,
            has_pods: snapshot.pods().any(Pod::is_policy_endpoint),
            probes: OnceCell::new(),
        }
    }

    /// Whether the input describes the cluster's pods (and with them its namespaces): rules that
    /// judge selectors by what they select today run only then, since a directory of policies
    /// alone says nothing about which pods and namespace labels exist.
    pub fn knows_pods(&self) -> bool {
        self.has_pods
    }

    /// Whether `rule` runs (the config may turn it off).
    pub fn enabled(&self, rule: RuleId) -> bool {
        self.config.severity(rule).is_some()
    }

    /// The policies that passed validation, by namespace and name (an invalid policy allows
    /// nothing and is reported by `invalid-policy` alone).
    pub fn valid_policies(&self) -> impl Iterator<Item = &'a Policy> + use<'a> {
        self.snapshot.policies().filter(|p| !p.is_invalid())
    }

    /// The pods policy can govern in `namespace`, by name.
    pub fn endpoints_in(&self, namespace: &str) -> Vec<&'a Pod> {
        let pods = self.snapshot.pods_in(namespace);
        pods.filter(|p| p.is_policy_endpoint()).collect()
    }

    /// The pods `policy` selects that policy can govern, by name.
    pub fn selected(&self, policy: &Policy) -> Vec<&'a Pod> {
        let pods = self
            .snapshot
            .pods_selected(&policy.key.namespace, &policy.pod_selector);
        pods.into_iter()
            .filter(|p| p.is_policy_endpoint())
            .collect()
    }

    /// The snapshot with a witness pod for each policy that selects none, for the rules that
    /// evaluate flows.
    pub fn probes(&self) -> &Probes {
        self.probes.get_or_init(|| Probes::build(self))
    }
}

/// A finding at the rule's default severity; the runner applies the config's.
pub(super) fn finding(
    rule: RuleId,
    object: ObjectRef,
    field: Option<String>,
    message: String,
    fix: String,
) -> Finding {
    Finding {
        rule,
        severity: rule.default_severity(),
        object,
        field,
        message,
        fix,
    }
}

/// The policy as a finding's object.
pub(super) fn policy_ref(policy: &Policy) -> ObjectRef {
    ObjectRef::namespaced(ObjectKind::NetworkPolicy, &policy.key)
}

/// `spec.ingress[0]`.
pub(super) fn rule_field(direction: Direction, rule: usize) -> String {
    format!("spec.{direction}[{rule}]")
}

/// `spec.ingress[0].from[1]`, `spec.egress[0].to[1]`.
pub(super) fn peer_field(direction: Direction, rule: usize, peer: usize) -> String {
    format!(
        "{}.{}[{peer}]",
        rule_field(direction, rule),
        peers_key(direction)
    )
}

/// `spec.ingress[0].ports[2]`.
pub(super) fn port_field(direction: Direction, rule: usize, port: usize) -> String {
    format!("{}.ports[{port}]", rule_field(direction, rule))
}

/// `from` for ingress, `to` for egress.
pub(super) fn peers_key(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    }
}

/// Labels as a selector reads: `app=web,tier=front`.
pub(super) fn labels_text(labels: &Labels) -> String {
    let selector = Selector {
        match_labels: labels.clone(),
        expressions: Vec::new(),
    };
    selector.to_string()
}

/// `a, b, c` for at most `shown` names, then `and N more`.
pub(super) fn list<T: std::fmt::Display>(items: &[T], shown: usize) -> String {
    let mut names: Vec<String> = items.iter().take(shown).map(ToString::to_string).collect();
    if items.len() > shown {
        names.push(format!("and {} more", items.len() - shown));
    }
    names.join(", ")
}
