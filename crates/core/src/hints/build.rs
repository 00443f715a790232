//! From grouped denied flows to suggestions: choosing and checking selectors, one rule per
//! port set (the DNS rule, then pod peers, then addresses), keeping an earlier hint's rules,
//! validating the result. What cannot be suggested becomes an [`Issue`].
//!
//! Rules come in a fixed order, each kind grouped by identical port sets (sorted), so the output
//! is the same for the same flows whatever order they arrived in. The objects themselves are
//! made in [`super::objects`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;

use super::labels::{self, Chosen, selector_text};
use super::merge;
use super::objects::{self, RuleParts};
use super::workload::{Workload, may_be_policed};
use super::{Group, Issue, IssueKind, Suggestion};
use crate::model::{Direction, Labels, ObjectKey, Pod, Policy, Protocol, Snapshot};

/// One group's rules and what they were made from.
struct Rules {
    rules: Vec<RuleParts>,
    flows: usize,
    drops: u64,
    external: Vec<IpAddr>,
    notes: Vec<String>,
}

/// Builds the policies for `groups`; what cannot be built goes to `issues`.
pub(super) fn policies(
    groups: BTreeMap<(Workload, Direction), Group>,
    snapshot: Option<&Snapshot>,
    observed: bool,
    issues: &mut BTreeSet<Issue>,
) -> Vec<Suggestion> {
    // Workloads of different kinds with the same name in one namespace get the kind in their
    // policy names.
    let mut kinds: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for (workload, _) in groups.keys() {
        kinds
            .entry((&workload.namespace, &workload.name))
            .or_default()
            .insert(&workload.kind);
    }
    let mut suggestions = Vec::new();
    for ((workload, direction), group) in &groups {
        let qualify = kinds
            .get(&(workload.namespace.as_str(), workload.name.as_str()))
            .is_some_and(|k| k.len() > 1);
        let mut report = |kind, message: String| {
            issues.insert(Issue {
                kind,
                workload: workload.clone(),
                direction: *direction,
                message,
            });
        };
        match suggestion(
            workload,
            *direction,
            group,
            snapshot,
            observed,
            qualify,
            &mut report,
        ) {
            Ok(suggestion) => suggestions.push(suggestion),
            Err((kind, message)) => report(kind, format!("not suggested: {message}")),
        }
    }
    suggestions
}

/// The suggestion for one workload and direction, or why there is none. Peers left out go to
/// `report`.
fn suggestion(
    workload: &Workload,
    direction: Direction,
    group: &Group,
    snapshot: Option<&Snapshot>,
    observed: bool,
    qualify: bool,
    report: &mut dyn FnMut(IssueKind, String),
) -> Result<Suggestion, (IssueKind, String)> {
    let seen: Vec<&Labels> = group.pods.iter().collect();
    let chosen = labels::choose(workload, &seen, snapshot)
        .map_err(|problem| (IssueKind::NoSelector, problem.to_string()))?;
    let newly = snapshot
        .map(|snapshot| newly_isolated(snapshot, workload, &chosen.labels, direction))
        .unwrap_or_default();
    let isolates = !newly.is_empty();
    if isolates && !observed {
        return Err(would_isolate(&newly, &chosen.labels, direction));
    }
    let Rules {
        mut rules,
        flows,
        drops,
        external,
        mut notes,
    } = rules(workload, group, &chosen, snapshot, report);
    let saw_nothing =
        group.dns.flows == 0 && group.pod_peers.is_empty() && group.ip_peers.is_empty();
    if observed && saw_nothing {
        notes.push(format!(
            "no {direction} flow was observed: the policy allows none"
        ));
    }
    if isolates {
        notes.push(format!(
            "{} (selected by {}) {} not isolated for {direction} today: applying this policy \
             isolates {}, and everything else {} in that direction is then denied",
            newly.join(", "),
            selector_text(&chosen.labels),
            if newly.len() == 1 { "is" } else { "are" },
            if newly.len() == 1 { "it" } else { "them" },
            if newly.len() == 1 {
                "it does"
            } else {
                "they do"
            },
        ));
    }
    if rules.is_empty() && !(observed && saw_nothing) {
        return Err((
            IssueKind::NoPeerSelector,
            "every peer was left out".to_owned(),
        ));
    }
    let name = objects::policy_name(workload, direction, qualify);
    let key = ObjectKey::new(workload.namespace.as_str(), name.as_str());
    if let Some(existing) = snapshot.and_then(|s| s.policy(&key)) {
        let mut kept =
            merge::existing_rules(existing, &chosen.labels, direction).map_err(|conflict| {
                (
                    IssueKind::NameTaken,
                    format!(
                        "policy {key} exists and {conflict}: applying would replace it (rename \
                         or delete it first)"
                    ),
                )
            })?;
        notes.push(format!(
            "replaces the existing {key} and keeps its {}",
            plural(kept.len(), "rule", "rules")
        ));
        for rule in rules {
            if !kept.contains(&rule) {
                kept.push(rule);
            }
        }
        rules = kept;
    }
    let policy = objects::network_policy(
        name,
        &workload.namespace,
        chosen.labels,
        direction,
        rules,
        flows,
        !external.is_empty(),
    );
    // A last check with the engine's own validation: labels from a drop log that no API server
    // wrote could make a policy the API server would refuse.
    let errors = Policy::from_k8s(&policy)
        .map(|p| p.errors)
        .unwrap_or_default();
    if !errors.is_empty() {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err((
            IssueKind::Invalid,
            format!("the policy would be invalid: {}", errors.join("; ")),
        ));
    }
    Ok(Suggestion {
        workload: workload.clone(),
        direction,
        denied_flows: flows,
        logged_drops: drops,
        dns: !group.dns.ports.is_empty(),
        external,
        notes,
        isolates,
        policy,
    })
}

/// The pods the selector picks that nothing isolates for `direction` now: the policy would
/// isolate them.
fn newly_isolated(
    snapshot: &Snapshot,
    workload: &Workload,
    labels: &Labels,
    direction: Direction,
) -> Vec<String> {
    snapshot
        .pods_in(&workload.namespace)
        .filter(|p| may_be_policed(p) && selects(labels, p))
        .filter(|p| !isolated(snapshot, p, direction))
        .map(|p| p.key.to_string())
        .collect()
}

/// Denied flows only: the policy would isolate `newly`, cutting everything else they do (the
/// drops are older than the policies).
fn would_isolate(newly: &[String], labels: &Labels, direction: Direction) -> (IssueKind, String) {
    let one = newly.len() == 1;
    (
        IssueKind::WouldIsolate,
        format!(
            "{} (selected by {}) {} not isolated for {direction} now, and the policy would \
             isolate {}; the drops are older than the policies",
            newly.join(", "),
            selector_text(labels),
            if one { "is" } else { "are" },
            if one { "it" } else { "them" },
        ),
    )
}

/// The group's rules: DNS, then pod peers, then addresses, each by port set. Pod peers that no
/// selector tells apart are left out and reported.
fn rules(
    workload: &Workload,
    group: &Group,
    chosen: &Chosen,
    snapshot: Option<&Snapshot>,
    report: &mut dyn FnMut(IssueKind, String),
) -> Rules {
    let mut out = Rules {
        rules: Vec::new(),
        flows: 0,
        drops: 0,
        external: Vec::new(),
        notes: Vec::new(),
    };
    if !chosen.weak.is_empty() {
        out.notes.push(weak_note("the policy's pods", &chosen.weak));
    }
    if !group.dns.ports.is_empty() {
        out.flows += group.dns.flows;
        out.drops = out.drops.saturating_add(group.dns.drops);
        out.rules.push(objects::dns_rule(&group.dns.ports));
        let other_protocol_added = group.dns.ports.iter().any(|(protocol, n)| {
            let other = match protocol {
                Protocol::Udp => Protocol::Tcp,
                _ => Protocol::Udp,
            };
            !group.dns.ports.contains(&(other, *n))
        });
        if other_protocol_added {
            out.notes.push(
                "the DNS rule allows both UDP and TCP on the denied port: resolvers switch to \
                 TCP for long answers"
                    .to_owned(),
            );
        }
    }
    let mut pod_rules: BTreeMap<&BTreeSet<(Protocol, u16)>, Vec<NetworkPolicyPeer>> =
        BTreeMap::new();
    for (peer_workload, peer) in &group.pod_peers {
        let seen: Vec<&Labels> = peer.labels.iter().collect();
        match labels::choose(peer_workload, &seen, snapshot) {
            Ok(chosen) => {
                if !chosen.weak.is_empty() {
                    out.notes
                        .push(weak_note(&format!("peer {peer_workload}"), &chosen.weak));
                }
                out.flows += peer.flows;
                out.drops = out.drops.saturating_add(peer.drops);
                let peers = pod_rules.entry(&peer.ports).or_default();
                let new =
                    objects::pod_peer(&workload.namespace, &peer_workload.namespace, chosen.labels);
                if !peers.contains(&new) {
                    peers.push(new);
                }
            }
            Err(problem) => report(
                IssueKind::NoPeerSelector,
                format!("peer {peer_workload} left out: {problem}"),
            ),
        }
    }
    let mut ip_rules: BTreeMap<&BTreeSet<(Protocol, u16)>, Vec<NetworkPolicyPeer>> =
        BTreeMap::new();
    for (ip, peer) in &group.ip_peers {
        out.flows += peer.flows;
        out.drops = out.drops.saturating_add(peer.drops);
        ip_rules
            .entry(&peer.ports)
            .or_default()
            .push(objects::ip_peer(*ip));
        out.external.push(*ip);
    }
    if !out.external.is_empty() {
        out.notes.push(format!(
            "allows {} outside the cluster by address (ipBlock): check {} before applying",
            plural(out.external.len(), "address", "addresses"),
            if out.external.len() == 1 {
                "it"
            } else {
                "them"
            }
        ));
    }
    for (ports, peers) in pod_rules.into_iter().chain(ip_rules) {
        out.rules.push(RuleParts {
            peers: Some(peers),
            ports: Some(ports.iter().map(|(p, n)| objects::port(*p, *n)).collect()),
        });
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn weak_note(what: &str, keys: &[String]) -> String {
    format!(
        "{what} are selected by {}, which change with releases or Job runs: the policy may stop \
         matching them",
        keys.join(", ")
    )
}

fn selects(labels: &Labels, pod: &Pod) -> bool {
    labels.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
}

/// Whether some policy isolates the pod for `direction` now.
fn isolated(snapshot: &Snapshot, pod: &Pod, direction: Direction) -> bool {
    snapshot
        .policies_in(&pod.key.namespace)
        .any(|p| p.rules(direction).is_some() && p.selects(pod))
}
