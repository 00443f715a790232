//! Choosing the `matchLabels` that select a workload's pods in a suggested policy: the pod's
//! own selector and each pod peer's.
//!
//! The candidates are the labels every known pod of the workload carries, per-instance labels
//! left out ([`super::workload::PER_INSTANCE_LABELS`]). With a snapshot the choice is checked:
//! labels are taken in [`label_rank`] order, each only when it leaves out pods of other workloads
//! in the namespace, until none is left; when even all candidates select another workload's
//! pod, there is no selector and the caller reports it. Without a snapshot nothing can be
//! checked, so every candidate except release and per-run labels is used (the narrowest
//! selector that survives a rollout).

use std::fmt;

use super::workload::{Workload, common_labels, is_weak, label_rank, may_be_policed};
use crate::model::{Labels, ObjectKey, Pod, Snapshot};

/// The labels chosen for a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The `matchLabels`, never empty.
    pub labels: Labels,
    /// Keys among them that change with releases or Job runs (the selector may stop matching).
    pub weak: Vec<String>,
}

/// Why no selector selects exactly the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The workload's pods share no label (or carry none).
    NoLabels,
    /// The workload's common labels also select pods of other workloads.
    TooWide {
        /// The labels tried (all candidates).
        labels: Labels,
        /// Pods of other workloads they select, sorted.
        others: Vec<ObjectKey>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLabels => f.write_str("its pods have no label in common to select them by"),
            Self::TooWide { labels, others } => {
                const SHOWN: usize = 3;
                let others: Vec<String> = others.iter().map(ToString::to_string).collect();
                let more = others.len().saturating_sub(SHOWN);
                write!(
                    f,
                    "its labels {} also select {}{}, of other workloads (label its pods to tell \
                     them apart)",
                    selector_text(labels),
                    others[..others.len().min(SHOWN)].join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            }
        }
    }
}

/// `app=web,tier=api`.
pub fn selector_text(labels: &Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// Chooses the labels for `workload`, whose pods in the denied flows carried `seen`.
pub fn choose(
    workload: &Workload,
    seen: &[&Labels],
    snapshot: Option<&Snapshot>,
) -> Result<Chosen, Problem> {
    let Some(snapshot) = snapshot else {
        let common = common_labels(seen.iter().copied());
        let strong: Labels = common
            .iter()
            .filter(|(k, _)| !is_weak(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let labels = if strong.is_empty() { common } else { strong };
        return chosen(labels);
    };
    let (members, others): (Vec<&Pod>, Vec<&Pod>) = snapshot
        .pods_in(&workload.namespace)
        .filter(|p| may_be_policed(p))
        .partition(|p| Workload::of_pod(p) == *workload);
    let common = common_labels(
        seen.iter()
            .copied()
            .chain(members.iter().map(|p| &p.labels)),
    );
    let mut candidates: Vec<(&String, &String)> = common.iter().collect();
    candidates.sort_by(|a, b| (label_rank(a.0), a.0).cmp(&(label_rank(b.0), b.0)));
    let mut labels = Labels::new();
    let mut remaining = others;
    for (key, value) in candidates {
        if !labels.is_empty() && remaining.is_empty() {
            break;
        }
        let before = remaining.len();
        remaining.retain(|p| p.labels.get(key) == Some(value));
        if labels.is_empty() || remaining.len() < before {
            labels.insert(key.clone(), value.clone());
        }
    }
    if !remaining.is_empty() {
        let mut others: Vec<ObjectKey> = remaining.iter().map(|p| p.key.clone()).collect();
        others.sort();
        return Err(Problem::TooWide {
            labels: common,
            others,
        });
    }
    chosen(labels)
}

fn chosen(labels: Labels) -> Result<Chosen, Problem> {
    if labels.is_empty() {
        return Err(Problem::NoLabels);
    }
    let weak = labels.keys().filter(|k| is_weak(k)).cloned().collect();
    Ok(Chosen { labels, weak })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Owner;
    use kube_nftpol_test_support::cluster::labels;

    fn pod(name: &str, pairs: &[(&str, &str)], owner: &str) -> Pod {
        let mut pod = Pod::running(
            ObjectKey::new("ns", name),
            labels(pairs),
            "node-1",
            ["10.0.0.1".parse().unwrap()],
        );
        pod.owner = Some(Owner {
            kind: "StatefulSet".into(),
            name: owner.into(),
        });
        pod
    }

    fn workload(name: &str) -> Workload {
        Workload {
            namespace: "ns".into(),
            kind: "StatefulSet".into(),
            name: name.into(),
            labels: Labels::new(),
        }
    }

    fn snapshot(pods: Vec<Pod>) -> Snapshot {
        let mut snapshot = Snapshot::new();
        pods.into_iter().for_each(|p| snapshot.upsert_pod(p));
        snapshot
    }

    #[test]
    fn without_a_snapshot_every_stable_common_label_is_used() {
        let a = labels(&[("app", "db"), ("team", "x"), ("version", "1.2")]);
        let b = labels(&[("app", "db"), ("team", "x"), ("version", "1.3")]);
        let chosen = choose(&workload("db"), &[&a, &b], None).unwrap();
        assert_eq!(chosen.labels, labels(&[("app", "db"), ("team", "x")]));
        assert!(chosen.weak.is_empty());
        // Release labels only when there is nothing else, and then they are reported.
        let c = labels(&[("version", "1.2"), ("controller-revision-hash", "x")]);
        let chosen = choose(&workload("db"), &[&c], None).unwrap();
        assert_eq!(chosen.labels, labels(&[("version", "1.2")]));
        assert_eq!(chosen.weak, ["version"]);
    }

    #[test]
    fn pods_without_common_labels_have_no_selector() {
        let a = labels(&[("pod-template-hash", "abc")]);
        assert_eq!(choose(&workload("db"), &[&a], None), Err(Problem::NoLabels));
    }

    #[test]
    fn with_a_snapshot_one_identity_label_suffices_when_it_is_unique() {
        let snapshot = snapshot(vec![
            pod("db-0", &[("app", "db"), ("team", "x")], "db"),
            pod("db-1", &[("app", "db"), ("team", "x")], "db"),
            pod("web-0", &[("app", "web"), ("team", "x")], "web"),
        ]);
        let seen = snapshot
            .pod(&ObjectKey::new("ns", "db-0"))
            .unwrap()
            .labels
            .clone();
        let chosen = choose(&workload("db"), &[&seen], Some(&snapshot)).unwrap();
        assert_eq!(chosen.labels, labels(&[("app", "db")]));
    }

    #[test]
    fn with_a_snapshot_labels_are_added_until_other_workloads_are_left_out() {
        let snapshot = snapshot(vec![
            pod(
                "api-0",
                &[("app", "backend"), ("team", "x"), ("tier", "api")],
                "api",
            ),
            pod(
                "worker-0",
                &[("app", "backend"), ("team", "x"), ("tier", "worker")],
                "worker",
            ),
        ]);
        let seen = labels(&[("app", "backend"), ("team", "x"), ("tier", "api")]);
        let chosen = choose(&workload("api"), &[&seen], Some(&snapshot)).unwrap();
        // `team` narrows nothing, so it is left out.
        assert_eq!(
            chosen.labels,
            labels(&[("app", "backend"), ("tier", "api")])
        );
    }

    #[test]
    fn with_a_snapshot_a_release_label_is_used_only_when_needed_and_reported() {
        let snapshot = snapshot(vec![
            pod("a-0", &[("app", "x"), ("version", "1")], "a"),
            pod("b-0", &[("app", "x"), ("version", "2")], "b"),
        ]);
        let seen = labels(&[("app", "x"), ("version", "1")]);
        let chosen = choose(&workload("a"), &[&seen], Some(&snapshot)).unwrap();
        assert_eq!(chosen.labels, labels(&[("app", "x"), ("version", "1")]));
        assert_eq!(chosen.weak, ["version"]);
    }

    #[test]
    fn with_a_snapshot_identical_labels_of_two_workloads_are_a_problem() {
        let snapshot = snapshot(vec![
            pod("a-0", &[("app", "x")], "a"),
            pod("b-0", &[("app", "x")], "b"),
        ]);
        let seen = labels(&[("app", "x")]);
        let problem = choose(&workload("a"), &[&seen], Some(&snapshot)).unwrap_err();
        assert_eq!(
            problem,
            Problem::TooWide {
                labels: labels(&[("app", "x")]),
                others: vec![ObjectKey::new("ns", "b-0")],
            }
        );
        assert_eq!(
            problem.to_string(),
            "its labels app=x also select ns/b-0, of other workloads (label its pods to tell \
             them apart)"
        );
    }

    #[test]
    fn with_a_snapshot_every_member_of_the_workload_must_carry_the_labels() {
        // db-1 lacks `role`: the selector must not rely on it, or db-1 would stay denied.
        let snapshot = snapshot(vec![
            pod("db-0", &[("app", "db"), ("role", "primary")], "db"),
            pod("db-1", &[("app", "db")], "db"),
        ]);
        let seen = labels(&[("app", "db"), ("role", "primary")]);
        let chosen = choose(&workload("db"), &[&seen], Some(&snapshot)).unwrap();
        assert_eq!(chosen.labels, labels(&[("app", "db")]));
    }

    #[test]
    fn finished_and_host_network_pods_do_not_make_a_selector_too_wide() {
        let mut done = pod("old-0", &[("app", "db")], "old");
        done.phase = crate::model::PodPhase::Finished;
        let mut host = pod("host-0", &[("app", "db")], "host");
        host.host_network = true;
        let snapshot = snapshot(vec![pod("db-0", &[("app", "db")], "db"), done, host]);
        let seen = labels(&[("app", "db")]);
        assert!(choose(&workload("db"), &[&seen], Some(&snapshot)).is_ok());
    }
}
