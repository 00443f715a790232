//! Which workload a pod belongs to, and which of its labels name the workload rather than the
//! one pod (or the one rollout, or the one Job run).
//!
//! A workload is what a suggested policy is about: the pods of one controller (a Deployment
//! through its ReplicaSets, a StatefulSet, a DaemonSet, a CronJob through its Jobs), or, for
//! pods without a controller (manifests written by hand, operators that set no owner), the pods
//! of a namespace with the same stable labels. Pure, from labels and the owner reference the
//! drop log and the snapshot both carry.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Labels, ObjectKey, Owner, Pod, PodPhase};

/// Labels that differ between pods of one workload, or between its rollouts: never used in a
/// suggested selector (it would select one pod, or stop matching after the next rollout).
pub const PER_INSTANCE_LABELS: &[&str] = &[
    // Deployment -> ReplicaSet: changes with every rollout.
    "pod-template-hash",
    // StatefulSet and DaemonSet revisions.
    "controller-revision-hash",
    "pod-template-generation",
    // One pod of a StatefulSet or of an indexed Job.
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/job-completion-index",
    // One Job object (a new uid for every run of a CronJob).
    "batch.kubernetes.io/controller-uid",
    "controller-uid",
];

/// Labels that name one Job. Stable for the pods of one Job, but every run of a CronJob gets a
/// new name, so they are used only when nothing else tells the workload's pods apart.
pub const PER_RUN_LABELS: &[&str] = &["batch.kubernetes.io/job-name", "job-name"];

/// Identity labels, most telling first: a suggested selector starts with these.
const PREFERRED_LABELS: &[&str] = &[
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app",
    "k8s-app",
    "name",
    "component",
    "tier",
    "role",
];

/// Labels that change with releases: used last, only when they are needed to tell workloads
/// apart (a policy that selects `version=1.2` stops working on the next release).
const VOLATILE_LABELS: &[&str] = &[
    "app.kubernetes.io/version",
    "version",
    "helm.sh/chart",
    "chart",
];

/// How many digits a CronJob appends to its Jobs' names (the scheduled time in minutes).
const CRONJOB_SUFFIX_MIN_DIGITS: usize = 8;

/// The controller a pod belongs to (or its label group), in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Workload {
    /// The namespace.
    pub namespace: String,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `CronJob`, `Job`, `ReplicaSet`, another owner
    /// kind; `Pods` for pods without a controller grouped by their labels; `Pod` for a pod
    /// without a controller or labels.
    pub kind: String,
    /// The controller's name; for `Pods` the value of their first identity label (`app=web`:
    /// `web`); for `Pod` the pod's name.
    pub name: String,
    /// For `Pods`: the stable labels that define the group. Empty otherwise.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

impl Workload {
    /// The workload of a pod, from its owner reference and labels: a ReplicaSet named
    /// `<name>-<pod-template-hash>` is Deployment `<name>`; a Job named `<name>-<8+ digits>` is
    /// CronJob `<name>`; any other owner is itself; without an owner, the pods with the same
    /// stable labels are one workload (a pod without labels is one alone).
    pub fn of(key: &ObjectKey, labels: &Labels, owner: Option<&Owner>) -> Self {
        let (kind, name) = match owner {
            None => {
                let stable = common_labels(std::iter::once(labels));
                let mut keys: Vec<&String> = stable.keys().collect();
                keys.sort_by_key(|k| (label_rank(k), *k));
                let Some(first) = keys.first() else {
                    return Self {
                        namespace: key.namespace.clone(),
                        kind: "Pod".to_owned(),
                        name: key.name.clone(),
                        labels: Labels::new(),
                    };
                };
                return Self {
                    namespace: key.namespace.clone(),
                    kind: "Pods".to_owned(),
                    name: stable[*first].clone(),
                    labels: stable,
                };
            }
            Some(owner) => match owner.kind.as_str() {
                "ReplicaSet" => labels
                    .get("pod-template-hash")
                    .and_then(|hash| strip_suffix(&owner.name, hash))
                    .map_or_else(
                        || (owner.kind.clone(), owner.name.clone()),
                        |name| ("Deployment".to_owned(), name.to_owned()),
                    ),
                "Job" => cronjob_name(&owner.name).map_or_else(
                    || (owner.kind.clone(), owner.name.clone()),
                    |name| ("CronJob".to_owned(), name.to_owned()),
                ),
                _ => (owner.kind.clone(), owner.name.clone()),
            },
        };
        Self {
            namespace: key.namespace.clone(),
            kind,
            name,
            labels: Labels::new(),
        }
    }

    /// The workload of a snapshot pod.
    pub fn of_pod(pod: &Pod) -> Self {
        Self::of(&pod.key, &pod.labels, pod.owner.as_ref())
    }
}

impl fmt::Display for Workload {
    /// `Deployment shop/backend`; `pods shop/{app=web,tier=api}` for a label group.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.labels.is_empty() {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        } else {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, "pods {}/{{{}}}", self.namespace, labels.join(","))
        }
    }
}

/// `name` without `-<suffix>`, when it ends so and something is left.
fn strip_suffix<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    name.strip_suffix(suffix)?
        .strip_suffix('-')
        .filter(|rest| !rest.is_empty())
}

/// The CronJob a Job name comes from: `<name>-<scheduled minute>`.
fn cronjob_name(job: &str) -> Option<&str> {
    let (name, digits) = job.rsplit_once('-')?;
    (!name.is_empty()
        && digits.len() >= CRONJOB_SUFFIX_MIN_DIGITS
        && digits.bytes().all(|b| b.is_ascii_digit()))
    .then_some(name)
}

/// Whether a snapshot pod counts when checking what a selector selects: pods that are or will
/// be policy endpoints (finished pods are never policed again; hostNetwork pods never are).
pub fn may_be_policed(pod: &Pod) -> bool {
    pod.phase == PodPhase::Active && !pod.host_network
}

/// The order in which a selector takes labels: identity labels, then the others by key, then
/// release labels, then per-run labels. Lower is earlier.
pub fn label_rank(key: &str) -> (u8, usize) {
    if let Some(i) = PREFERRED_LABELS.iter().position(|k| *k == key) {
        (0, i)
    } else if let Some(i) = VOLATILE_LABELS.iter().position(|k| *k == key) {
        (2, i)
    } else if let Some(i) = PER_RUN_LABELS.iter().position(|k| *k == key) {
        (3, i)
    } else {
        (1, 0)
    }
}

/// Whether a label may only be used as a last resort (release or per-run labels).
pub fn is_weak(key: &str) -> bool {
    label_rank(key).0 >= 2
}

/// The labels that every one of `labels` carries with the same value, per-instance labels left
/// out. Empty when `labels` is.
pub fn common_labels<'a>(mut labels: impl Iterator<Item = &'a Labels>) -> Labels {
    let Some(first) = labels.next() else {
        return Labels::new();
    };
    let mut common: Labels = first
        .iter()
        .filter(|(k, _)| !PER_INSTANCE_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for other in labels {
        common.retain(|k, v| other.get(k) == Some(v));
    }
    common
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_nftpol_test_support::cluster::labels;

    fn owner(kind: &str, name: &str) -> Owner {
        Owner {
            kind: kind.into(),
            name: name.into(),
        }
    }

    fn workload(name: &str, pairs: &[(&str, &str)], owner: Option<Owner>) -> Workload {
        Workload::of(&ObjectKey::new("ns", name), &labels(pairs), owner.as_ref())
    }

    #[test]
    fn a_replicaset_with_the_template_hash_suffix_is_its_deployment() {
        let w = workload(
            "web-5c8b6-qx2lp",
            &[("app", "web"), ("pod-template-hash", "5c8b6")],
            Some(owner("ReplicaSet", "web-5c8b6")),
        );
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("Deployment", "web"));
        assert_eq!(w.to_string(), "Deployment ns/web");
    }

    #[test]
    fn a_replicaset_without_the_hash_label_stays_a_replicaset() {
        let w = workload("rs-abc", &[], Some(owner("ReplicaSet", "rs")));
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("ReplicaSet", "rs"));
        let w = workload(
            "x",
            &[("pod-template-hash", "zzz")],
            Some(owner("ReplicaSet", "web-5c8b6")),
        );
        assert_eq!(w.kind, "ReplicaSet");
        // A name that is only the hash leaves no Deployment name.
        let w = workload(
            "x",
            &[("pod-template-hash", "5c8b6")],
            Some(owner("ReplicaSet", "-5c8b6")),
        );
        assert_eq!(w.kind, "ReplicaSet");
    }

    #[test]
    fn a_job_named_after_a_schedule_is_its_cronjob() {
        let w = workload(
            "backup-29000000-x",
            &[],
            Some(owner("Job", "backup-29000000")),
        );
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("CronJob", "backup"));
        let w = workload("migrate-1-x", &[], Some(owner("Job", "migrate-1")));
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("Job", "migrate-1"));
    }

    #[test]
    fn other_owners_are_themselves() {
        let w = workload("db-0", &[], Some(owner("StatefulSet", "db")));
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("StatefulSet", "db"));
        assert!(w.labels.is_empty());
    }

    #[test]
    fn pods_without_a_controller_are_grouped_by_their_stable_labels() {
        let a = workload("web-1", &[("app", "web"), ("team", "x")], None);
        let b = workload(
            "web-2",
            &[("team", "x"), ("app", "web"), ("pod-template-hash", "1")],
            None,
        );
        assert_eq!(a, b);
        assert_eq!((a.kind.as_str(), a.name.as_str()), ("Pods", "web"));
        assert_eq!(a.to_string(), "pods ns/{app=web,team=x}");
        let other = workload("web-3", &[("app", "web")], None);
        assert_ne!(a, other);
        // Named after the first label when there is no identity label.
        assert_eq!(workload("x", &[("zone", "a")], None).name, "a");
    }

    #[test]
    fn a_pod_without_a_controller_or_labels_is_alone() {
        let w = workload("debug", &[("pod-template-hash", "1")], None);
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("Pod", "debug"));
        assert_eq!(w.to_string(), "Pod ns/debug");
    }

    #[test]
    fn common_labels_drop_per_instance_labels_and_differing_values() {
        let a = labels(&[
            ("app", "db"),
            ("statefulset.kubernetes.io/pod-name", "db-0"),
            ("controller-revision-hash", "db-7f"),
            ("zone", "a"),
        ]);
        let b = labels(&[
            ("app", "db"),
            ("statefulset.kubernetes.io/pod-name", "db-1"),
            ("zone", "b"),
        ]);
        assert_eq!(
            common_labels([&a, &b].into_iter()),
            labels(&[("app", "db")])
        );
        assert_eq!(
            common_labels([&a].into_iter()),
            labels(&[("app", "db"), ("zone", "a")])
        );
        assert!(common_labels(std::iter::empty()).is_empty());
    }

    #[test]
    fn identity_labels_rank_first_and_release_and_run_labels_last() {
        let mut keys = vec![
            "version",
            "team",
            "job-name",
            "app",
            "app.kubernetes.io/name",
        ];
        keys.sort_by_key(|k| (label_rank(k), *k));
        assert_eq!(
            keys,
            [
                "app.kubernetes.io/name",
                "app",
                "team",
                "version",
                "job-name"
            ]
        );
        assert!(is_weak("version") && is_weak("job-name") && !is_weak("team"));
    }
}
