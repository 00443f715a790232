//! Enriching a denied packet with what the cluster snapshot knows: who the policed pod and the
//! other end are, and which policies isolate the pod in that direction.
//!
//! Pure: a [`DeniedPacket`] and a [`Snapshot`] in, the flow log's line out ([`FlowLine`],
//! standing for that one packet). The isolating policies are found the way the compiler chose them ([`crate::compile::compile`]),
//! so they name the policies whose chain dropped the packet, provided the snapshot is the one
//! the ruleset came from. It does not decode packets ([`super::decode`]) or write lines anywhere.

use std::net::IpAddr;
use std::time::SystemTime;

use super::decode::DeniedPacket;
use crate::compile::{AUDIT_LOG_PREFIX, LOG_PREFIX};
use crate::flow_line::{Action, FlowLine, Peer, PodInfo, rfc3339_millis};
use crate::model::{Direction, Enforcement, Labels, Pod, Snapshot};

/// nftables' limit on log prefixes: the compiler cuts longer ones, losing the end of the name.
const MAX_LOG_PREFIX: usize = 127;

/// Builds the record of one drop seen at `now` (the record's `received_at` is the natural
/// choice).
pub fn enrich(packet: &DeniedPacket, snapshot: &Snapshot, now: SystemTime) -> FlowLine {
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
    FlowLine {
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
        source: Some(packet.source),
        destination: Some(packet.destination),
        policies,
        count: 1,
        first_ts: None,
        last_ts: None,
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

#[cfg(test)]
mod tests;
