//! Enriching a denied packet with what the cluster snapshot knows: who the policed pod and the
//! other end are, and which policies isolate the pod in that direction.
//!
//! Pure: a [`DeniedPacket`] and a [`Snapshot`] in, a [`DropRecord`] out, rendered as one JSON
//! line ([`DropRecord::to_json_line`]) or one line of text ([`DropRecord::to_text`]). The
//! isolating policies are found the way the compiler chose them ([`crate::compile::compile`]),
//! so they name the policies whose chain dropped the packet, provided the snapshot is the one
//! the ruleset came from. It does not decode packets ([`super::decode`]) or write lines anywhere.

use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::decode::{DeniedPacket, IpProtocol};
use crate::compile::{AUDIT_LOG_PREFIX, LOG_PREFIX};
use crate::model::{Enforcement, Labels, Owner, Pod, Snapshot};
use crate::policy::Direction;

/// nftables' limit on log prefixes: the compiler cuts longer ones, losing the end of the name.
const MAX_LOG_PREFIX: usize = 127;

/// One default-deny drop, ready to log. Field order is the JSON key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropRecord {
    /// When the drop was seen, RFC 3339 in UTC with milliseconds.
    pub ts: String,
    /// [`Action::Deny`], or [`Action::Audit`] when the pod's namespace is audited (the packet
    /// went through).
    pub action: Action,
    /// Ingress (the policed pod was receiving) or egress (it was sending).
    pub direction: Direction,
    /// The pod whose policies dropped the packet.
    pub pod: PodInfo,
    /// The other end: the source for ingress, the destination for egress.
    pub peer: Peer,
    /// The transport protocol.
    pub protocol: IpProtocol,
    /// The destination port (the one NetworkPolicy `ports` match), when the protocol has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The source port, when the protocol has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    /// The packet's source address.
    pub source: IpAddr,
    /// The packet's destination address.
    pub destination: IpAddr,
    /// The policies that isolate the pod in this direction (`namespace/name`), sorted. None of
    /// their rules allowed the packet. Empty when the pod is not in the snapshot.
    pub policies: Vec<String>,
}

/// What happened to the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Dropped by a default deny.
    Deny,
    /// Would have been dropped by a default deny; the pod is audited, so it went through.
    Audit,
}

/// A pod as flow logs describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodInfo {
    /// The namespace.
    pub namespace: String,
    /// The pod name.
    pub name: String,
    /// The pod's labels (empty when the pod is not in the snapshot).
    pub labels: Labels,
    /// The controller that owns the pod, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Set (and serialized) only when the snapshot does not have the pod: it was deleted since
    /// the ruleset was built, or the snapshot is behind.
    #[serde(skip_serializing_if = "is_false")]
    pub unknown: bool,
}

/// The other end of a dropped packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// Builds the record of one drop seen at `now` (the record's `received_at` is the natural
/// choice).
pub fn enrich(packet: &DeniedPacket, snapshot: &Snapshot, now: SystemTime) -> DropRecord {
    let (policed_ip, peer_ip) = match packet.direction {
        Direction::Ingress => (packet.destination, packet.source),
        Direction::Egress => (packet.source, packet.destination),
    };
    let pod = policed_pod(packet, snapshot, policed_ip);
    let policies = pod
        .map(|pod| {
            snapshot
                .policies_in(&pod.key.namespace)
                .filter(|p| p.rules(packet.direction).is_some() && p.selects(pod))
                .map(|p| p.key.to_string())
                .collect()
        })
        .unwrap_or_default();
    let pod = match pod {
        Some(pod) => pod_info(pod),
        None => PodInfo {
            namespace: packet.pod.namespace.clone(),
            name: packet.pod.name.clone(),
            labels: Labels::new(),
            owner: None,
            unknown: true,
        },
    };
    let peer = match snapshot.pod_by_ip(peer_ip) {
        Some(peer) => Peer::Pod(pod_info(peer)),
        None => Peer::External { ip: peer_ip },
    };
    DropRecord {
        ts: rfc3339_millis(now),
        action: match packet.enforcement {
            Enforcement::Enforce => Action::Deny,
            Enforcement::Audit => Action::Audit,
        },
        direction: packet.direction,
        pod,
        peer,
        protocol: packet.protocol,
        port: packet.destination_port,
        source_port: packet.source_port,
        source: packet.source,
        destination: packet.destination,
        policies,
    }
}

/// The pod named by the prefix; when the prefix was cut at nftables' limit, the pod at the
/// packet's policed-side address whose name starts with what is left.
fn policed_pod<'a>(
    packet: &DeniedPacket,
    snapshot: &'a Snapshot,
    policed_ip: IpAddr,
) -> Option<&'a Pod> {
    if let Some(pod) = snapshot.pod(&packet.pod) {
        return Some(pod);
    }
    let log_prefix = match packet.enforcement {
        Enforcement::Enforce => LOG_PREFIX,
        Enforcement::Audit => AUDIT_LOG_PREFIX,
    };
    let prefix_len = log_prefix.len()
        + packet.direction.as_str().len()
        + 1
        + packet.pod.namespace.len()
        + 1
        + packet.pod.name.len();
    // The cut falls on a char boundary, so up to 3 bytes short of the limit.
    if prefix_len + 3 < MAX_LOG_PREFIX {
        return None;
    }
    snapshot.pod_by_ip(policed_ip).filter(|pod| {
        pod.key.namespace == packet.pod.namespace && pod.key.name.starts_with(&packet.pod.name)
    })
}

fn pod_info(pod: &Pod) -> PodInfo {
    PodInfo {
        namespace: pod.key.namespace.clone(),
        name: pod.key.name.clone(),
        labels: pod.labels.clone(),
        owner: pod.owner.clone(),
        unknown: false,
    }
}

/// `2025-01-02T03:04:05.678Z`. Times before 1970 (a broken clock) print as the epoch.
pub(crate) fn rfc3339_millis(time: SystemTime) -> String {
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

impl DropRecord {
    /// The record as one line of JSON (no trailing newline).
    pub fn to_json_line(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Pod(pod) => write!(f, "{}/{}", pod.namespace, pod.name),
            Peer::External { ip } => write!(f, "external {ip}"),
        }
    }
}

#[cfg(test)]
mod tests;
