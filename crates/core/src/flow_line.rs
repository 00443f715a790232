//! The drop log's line: one type, written by the agent and read back by `suggest`,
//! `explain --drop-log` and the hints, with serde in both directions. A new field is one change
//! here.
//!
//! A [`FlowLine`] is one flow as the kernel logged it, with Kubernetes context, and how many
//! packets the line stands for: either a flow's first packet (`count` 1, logged at once) or the
//! summary of its repeats in one window: `count` repeats, `first_ts` and `last_ts` the first
//! and last of them, and `ts` the last. In JSON, field order is key order:
//!
//! ```text
//! {"ts":"...","action":"deny",...,"policies":[...],"count":1}
//! {"ts":"T2","action":"deny",...,"policies":[...],"count":3,"first_ts":"T1","last_ts":"T2"}
//! {"ts":"...","action":"deny",...,"policies":[],"tier":"Admin","cluster_policy":{"name":"no-imds","priority":5,"rule":1,"rule_name":"imds"},"count":1}
//! ```
//!
//! A ClusterNetworkPolicy's Deny rule (or, in observe mode, its Accept) names its tier and the
//! rule; lines decided by NetworkPolicies have neither field, as before.
//!
//! Text, for people reading `kubectl logs`, has the arrow in the packet's direction (source ->
//! destination) and leaves out labels, owners, addresses of pods and the source port:
//!
//! ```text
//! 2026-11-23T13:47:44.351Z DENY egress payments/payments-api-0 -> shop/backend-5c8b6-qx2lp tcp/9090 (policies: payments/allow-dns, payments/default-deny-all)
//! 2026-11-23T13:47:53.120Z DENY egress payments/payments-api-0 -> shop/backend-5c8b6-qx2lp tcp/9090 (policies: payments/allow-dns, payments/default-deny-all) x3 since 2026-11-23T13:47:45.351Z
//! ```
//!
//! Reading ([`FlowLine::parse`]) is lenient where logs are messy and strict where a line claims
//! to be ours: lines come from `kubectl logs`, which may interleave other output and prefix
//! lines (`--prefix`, `--timestamps`), so the JSON object is looked for from the first `{`;
//! lines that are not JSON objects, or objects without an `action` of ours, are not flow lines
//! and not errors; unknown fields are ignored; fields older lines lack (`ts`, `source`,
//! `destination`, `policies`, `count`) have defaults. A line with our `action` and a missing or
//! malformed field is an error.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::SystemTime;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::{Direction, IpProtocol, Labels, Owner, Tier};

#[cfg(test)]
mod tests;

/// What happened to the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Dropped by a default deny.
    Deny,
    /// Would have been dropped by a default deny; the pod is audited, so it went through.
    Audit,
    /// Let through (observe mode): a policy rule allowed it ([`FlowLine::allowed_by`]), or no
    /// policy isolates the pod in this direction (no [`FlowLine::policies`]).
    Allow,
    /// An established connection a policy change denied, ended by the agent (its conntrack
    /// entry deleted; its next packets answered with a reset or an ICMP error).
    Revoke,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 4] = [Action::Allow, Action::Deny, Action::Audit, Action::Revoke];

    /// `deny`, `audit` or `allow`, as the JSON line writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Audit => "audit",
            Self::Allow => "allow",
            Self::Revoke => "revoke",
        }
    }

    /// Whether the pod's policies denied the flow (dropped, or would have, when audited). A
    /// revoked connection is not: it was allowed, and a change took it away on purpose, so
    /// the hints do not suggest allowing it again (its next attempts are denials).
    pub fn is_denied(self) -> bool {
        matches!(self, Self::Deny | Self::Audit)
    }
}

/// The policy rule that allowed a flow: `policy` `namespace/name`, and the rule's index in its
/// `ingress` or `egress` list (the line's direction).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AllowedBy {
    /// The policy, `namespace/name`.
    pub policy: String,
    /// The rule's position in the policy's list for the line's direction.
    pub rule: usize,
}

/// The ClusterNetworkPolicy rule that decided a flow (its line also has the `tier`): the
/// policy, its priority, and the rule's index in its `ingress` or `egress` list (the line's
/// direction) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterPolicyRule {
    /// The ClusterNetworkPolicy's name.
    pub name: String,
    /// Its priority within its tier.
    pub priority: u16,
    /// The rule's position in the policy's list for the line's direction.
    pub rule: usize,
    /// The rule's name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
}

/// A pod as flow lines describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    /// The namespace.
    pub namespace: String,
    /// The pod name.
    pub name: String,
    /// The pod's labels (empty when the pod is not in the snapshot).
    #[serde(default)]
    pub labels: Labels,
    /// The controller that owns the pod, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Set (and serialized) only when the snapshot does not have the pod: it was deleted since
    /// the ruleset was built, or the snapshot is behind.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unknown: bool,
}

/// The other end of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Peer {
    /// A pod that policy governs (active, not hostNetwork).
    Pod(PodInfo),
    /// Anything else: outside the cluster, a node, a hostNetwork pod, an unknown pod.
    External {
        /// The address.
        ip: IpAddr,
    },
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn one() -> u64 {
    1
}

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One JSON object per line (see the module docs).
    #[default]
    Json,
    /// One line of text per flow, for people.
    Text,
}

/// One line of the log: one flow as the kernel logged it, with Kubernetes context, and the
/// packets it stands for. Field order is the JSON key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowLine {
    /// When the packet was seen, RFC 3339 in UTC with milliseconds.
    #[serde(default)]
    pub ts: String,
    /// [`Action::Deny`], or [`Action::Audit`] when the pod's namespace is audited (the packet
    /// went through); the deny of a NetworkPolicy default deny, or of a ClusterNetworkPolicy
    /// Deny rule ([`FlowLine::tier`]).
    pub action: Action,
    /// Ingress (the policed pod was receiving) or egress (it was sending).
    pub direction: Direction,
    /// The pod whose policies decided the packet.
    pub pod: PodInfo,
    /// The other end: the source for ingress, the destination for egress.
    pub peer: Peer,
    /// The transport protocol.
    pub protocol: IpProtocol,
    /// The destination port (the one NetworkPolicy `ports` match, after Service DNAT), when
    /// the protocol has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The source port, when the protocol has one (first lines only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    /// The packet's source address (the agent always writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// The packet's destination address (the agent always writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<IpAddr>,
    /// The policies that isolate the pod in this direction (`namespace/name`), sorted. For a
    /// denied flow none of their rules allowed the packet; empty when the pod is not in the
    /// snapshot, or, for an allowed flow, when no policy isolates the pod.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Allowed flows: the first rule that allowed it (policies by name, rules in order), as
    /// `evaluate` finds it on the agent's snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_by: Option<AllowedBy>,
    /// The ClusterNetworkPolicy tier (`Admin`, `Baseline`) whose rule denied the flow (or, in
    /// observe mode, accepted it); absent when NetworkPolicies or no policy decided. Lines
    /// without it read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// The ClusterNetworkPolicy rule of that tier, as `evaluate` finds it on the agent's
    /// snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_policy: Option<ClusterPolicyRule>,
    /// How many packets this line stands for (read as at least 1).
    #[serde(default = "one")]
    pub count: u64,
    /// Summaries only: when the first packet they count arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_ts: Option<String>,
    /// Summaries only: when the last packet they count arrived (the same as `ts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ts: Option<String>,
}

/// A line that claims to be a flow line (it has an `action` of ours) but does not read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// A field is missing or malformed: the field's path, and what is wrong.
    #[error("malformed drop record: {0}")]
    Malformed(String),
}

impl FlowLine {
    /// This line (a flow's first packet) turned into the summary of `count` repeats of the
    /// flow between `first` and `last`: `ts` becomes `last`, and the source port goes (repeats
    /// may come from many).
    pub fn summary(mut self, count: u64, first: SystemTime, last: SystemTime) -> Self {
        let last = rfc3339_millis(last);
        self.ts = last.clone();
        self.source_port = None;
        self.count = count;
        self.first_ts = Some(rfc3339_millis(first));
        self.last_ts = Some(last);
        self
    }

    /// Reads one log line; `Ok(None)` for lines that are not flow lines (see the module docs).
    pub fn parse(line: &str) -> Result<Option<Self>, LineError> {
        let Some(start) = line.find('{') else {
            return Ok(None);
        };
        let Ok(serde_json::Value::Object(object)) =
            serde_json::from_str::<serde_json::Value>(line[start..].trim_end())
        else {
            return Ok(None);
        };
        let ours = object
            .get("action")
            .and_then(|action| Action::deserialize(action).ok())
            .is_some();
        if !ours {
            return Ok(None);
        }
        let mut line: Self = serde_path_to_error::deserialize(serde_json::Value::Object(object))
            .map_err(|error| {
                LineError::Malformed(format!("{}: {}", error.path(), error.inner()))
            })?;
        line.count = line.count.max(1);
        Ok(Some(line))
    }

    /// The line in `format`, without a trailing newline.
    pub fn render(&self, format: Format) -> serde_json::Result<String> {
        match format {
            Format::Json => serde_json::to_string(self),
            Format::Text => Ok(self.to_text()),
        }
    }

    /// `TS DENY|AUDIT|ALLOW DIRECTION SOURCE -> DESTINATION PROTO/PORT (policies: ...)` (for
    /// allowed flows `(allowed by NS/POLICY DIRECTION[RULE])` or `(not isolated)`; for a
    /// ClusterNetworkPolicy's decision `(denied by Admin ClusterNetworkPolicy NAME
    /// DIRECTION[RULE] "RULE-NAME", priority P)`), then for summaries `xCOUNT since FIRST_TS`.
    /// Pods are `namespace/name`, anything else its address.
    pub fn to_text(&self) -> String {
        let r = self;
        let pod = pod_text(&r.pod);
        let peer = match &r.peer {
            Peer::Pod(peer) => pod_text(peer),
            Peer::External { ip } => ip.to_string(),
        };
        let (source, destination) = match r.direction {
            Direction::Egress => (pod, peer),
            Direction::Ingress => (peer, pod),
        };
        let action = r.action.as_str().to_ascii_uppercase();
        let mut line = format!(
            "{} {action} {} {source} -> {destination} {}",
            r.ts, r.direction, r.protocol
        );
        // Writing to a String cannot fail.
        if let Some(port) = r.port {
            let _ = write!(line, "/{port}");
        }
        match (&r.allowed_by, r.policies.is_empty(), r.action) {
            _ if r.tier.is_some() => {
                let tier = r.tier.map(Tier::as_str).unwrap_or_default();
                let verb = if r.action == Action::Allow {
                    "accepted"
                } else {
                    "denied"
                };
                match &r.cluster_policy {
                    Some(rule) => {
                        let _ = write!(
                            line,
                            " ({verb} by {tier} ClusterNetworkPolicy {} {}[{}]",
                            rule.name, r.direction, rule.rule
                        );
                        if let Some(name) = &rule.rule_name {
                            let _ = write!(line, " {name:?}");
                        }
                        let _ = write!(line, ", priority {})", rule.priority);
                    }
                    None => {
                        let _ = write!(line, " ({verb} by the {tier} tier)");
                    }
                }
            }
            (Some(rule), _, _) => {
                let _ = write!(
                    line,
                    " (allowed by {} {}[{}])",
                    rule.policy, r.direction, rule.rule
                );
            }
            (None, true, Action::Allow) => line.push_str(" (not isolated)"),
            (None, true, _) => line.push_str(" (no isolating policy in the snapshot)"),
            (None, false, _) => {
                let _ = write!(line, " (policies: {})", r.policies.join(", "));
            }
        }
        if let Some(first) = &self.first_ts {
            let _ = write!(line, " x{} since {first}", self.count);
        }
        line
    }
}

fn pod_text(pod: &PodInfo) -> String {
    let unknown = if pod.unknown { " (unknown)" } else { "" };
    format!("{}/{}{unknown}", pod.namespace, pod.name)
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Pod(pod) => write!(f, "{}/{}", pod.namespace, pod.name),
            Peer::External { ip } => write!(f, "external {ip}"),
        }
    }
}

/// `2025-01-02T03:04:05.678Z`. Times before 1970 (a broken clock) print as the epoch.
pub fn rfc3339_millis(time: SystemTime) -> String {
    // k8s-openapi's jiff (already built for Kubernetes timestamps) without its `std` feature:
    // convert through the duration since the epoch.
    let timestamp = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| {
            let seconds = i64::try_from(d.as_secs()).ok()?;
            let nanos = i32::try_from(d.subsec_nanos()).ok()?;
            Timestamp::new(seconds, nanos).ok()
        })
        .unwrap_or(Timestamp::UNIX_EPOCH);
    format!("{timestamp:.3}")
}
