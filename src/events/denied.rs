//! `PolicyDenied` Events: which denied flows become an Event, and its note.
//!
//! Fed with each new denied flow of the drop log (its first packet; repeats are already folded
//! into summaries). Rate-limited per pod: at most one Event per pod every [`PER_POD_INTERVAL`];
//! flows denied in between are counted and named in the next Event's note. The pods
//! remembered are capped, so a flood of drops costs nothing but counted losses.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::limit_note;
use crate::flow_line::FlowLine;
use crate::model::Direction;

/// The Event reason.
pub const REASON: &str = "PolicyDenied";
/// Least time between two Events about one pod.
pub const PER_POD_INTERVAL: Duration = Duration::from_secs(60);
/// Pods whose last Event time is remembered; beyond that the oldest are forgotten.
const MAX_PODS: usize = 10_000;

/// Per-pod rate limiting: which flows become an Event now, and what was held back.
#[derive(Debug, Default)]
pub struct Limiter {
    pods: HashMap<(String, String), PodState>,
}

#[derive(Debug)]
struct PodState {
    last_event: Instant,
    held_back: u64,
}

impl Limiter {
    /// Whether a denied flow of `pod` seen at `now` gets an Event, and if so how many flows
    /// were held back since the pod's previous Event.
    pub fn admit(&mut self, pod: (String, String), now: Instant) -> Option<u64> {
        if let Some(state) = self.pods.get_mut(&pod) {
            if now.saturating_duration_since(state.last_event) < PER_POD_INTERVAL {
                state.held_back += 1;
                return None;
            }
            let held_back = state.held_back;
            *state = PodState {
                last_event: now,
                held_back: 0,
            };
            return Some(held_back);
        }
        if self.pods.len() >= MAX_PODS {
            self.pods
                .retain(|_, s| now.saturating_duration_since(s.last_event) < PER_POD_INTERVAL);
            if self.pods.len() >= MAX_PODS {
                return None;
            }
        }
        self.pods.insert(
            pod,
            PodState {
                last_event: now,
                held_back: 0,
            },
        );
        Some(0)
    }
}

/// The Event and the pod it is about, `uid` its uid: `kubectl describe pod` selects a pod's
/// Events by `involvedObject.uid`, and the recorder's series key must tell a pod from a later
/// one of the same name (whose Event would otherwise patch the first pod's, deleted with it).
pub(super) fn event(
    line: &FlowLine,
    held_back: u64,
    uid: Option<String>,
) -> (Event, ObjectReference) {
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(line.pod.namespace.clone()),
        name: Some(line.pod.name.clone()),
        uid,
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: REASON.into(),
        note: Some(note(line, held_back)),
        action: "Drop".into(),
        secondary: None,
    };
    (event, reference)
}

/// The Event's note: the flow, what denied it (the isolating policies, or the
/// ClusterNetworkPolicy rule), and what was held back.
pub fn note(record: &FlowLine, held_back: u64) -> String {
    let port = record.port.map(|p| format!("/{p}")).unwrap_or_default();
    let (word, arrow) = match record.direction {
        Direction::Ingress => ("ingress", "from"),
        Direction::Egress => ("egress", "to"),
    };
    let by = match (record.tier, &record.cluster_policy) {
        (Some(tier), Some(rule)) => format!(
            "the {tier} tier: ClusterNetworkPolicy {} {word}[{}] (priority {})",
            rule.name, rule.rule, rule.priority
        ),
        (Some(tier), None) => format!("the {tier} tier"),
        (None, _) => format!(
            "default deny (isolated by {})",
            if record.policies.is_empty() {
                "no policy in the agent's view".to_owned()
            } else {
                record.policies.join(", ")
            }
        ),
    };
    let mut note = format!(
        "{word} {arrow} {} {}{port} denied by {by}",
        record.peer, record.protocol
    );
    if held_back > 0 {
        note.push_str(&format!(
            "; {held_back} more denied flows since the last event"
        ));
    }
    note.push_str("; see the drop log, or kube-nftpol suggest for a policy that allows it");
    limit_note(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> (String, String) {
        ("x".to_owned(), name.to_owned())
    }

    #[test]
    fn one_event_per_pod_and_interval_naming_what_was_held_back() {
        let mut limiter = Limiter::default();
        let t0 = Instant::now();
        assert_eq!(limiter.admit(pod("a"), t0), Some(0));
        assert_eq!(limiter.admit(pod("a"), t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit(pod("a"), t0 + Duration::from_secs(2)), None);
        assert_eq!(
            limiter.admit(pod("b"), t0 + Duration::from_secs(2)),
            Some(0)
        );
        assert_eq!(limiter.admit(pod("a"), t0 + PER_POD_INTERVAL), Some(2));
        assert_eq!(
            limiter.admit(pod("a"), t0 + PER_POD_INTERVAL + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn the_pods_remembered_are_capped() {
        let mut limiter = Limiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_PODS {
            assert_eq!(limiter.admit(pod(&i.to_string()), t0), Some(0));
        }
        // Full, and every entry is recent: a new pod waits rather than growing the map.
        assert_eq!(limiter.admit(pod("new"), t0), None);
        assert_eq!(limiter.pods.len(), MAX_PODS);
        // Once the entries are old they make room.
        assert_eq!(limiter.admit(pod("new"), t0 + PER_POD_INTERVAL), Some(0));
        assert_eq!(limiter.pods.len(), 1);
    }
}
