//! What candidate policies would change, flow by flow: [`Graph::preview`] evaluates every flow
//! of the graph on the cluster as it is and on the cluster with the candidates, with the
//! same [`evaluate`] the agent's ruleset agrees with. And [`cluster_of`]: the cluster the
//! lines themselves describe, for a preview without manifests.

use super::{Change, Graph, PodEnd, PreviewSummary};
use crate::flow_line::{FlowLine, Peer, PodInfo};
use crate::model::{Direction, IpProtocol, ObjectKey, Pod, Snapshot};
use crate::policy::{Endpoint, Flow, evaluate};

impl Graph {
    /// Marks every flow, and every edge with its greatest change, with what `candidate` (the
    /// cluster with the candidate policies added) changes against `today`. Replaces an earlier
    /// preview.
    pub fn preview(&mut self, today: &Snapshot, candidate: &Snapshot) {
        let mut summary = PreviewSummary::default();
        for edge in &mut self.edges {
            for pod in &mut edge.pods {
                let allowed = |snapshot: &Snapshot| {
                    allowed(
                        snapshot,
                        edge.protocol,
                        edge.port,
                        &pod.source,
                        &pod.destination,
                    )
                };
                pod.preview = Some(match (allowed(today), allowed(candidate)) {
                    (Some(true), Some(true)) => Change::Kept,
                    (Some(true), Some(false)) => Change::NewlyDenied,
                    (Some(false), Some(true)) => Change::NewlyAllowed,
                    (Some(false), Some(false)) => Change::StillDenied,
                    _ => Change::Unknown,
                });
            }
            let change = edge
                .pods
                .iter()
                .filter_map(|pod| pod.preview)
                .max()
                .unwrap_or(Change::Unknown);
            edge.preview = Some(change);
            let count = match change {
                Change::NewlyDenied => &mut summary.newly_denied,
                Change::NewlyAllowed => &mut summary.newly_allowed,
                Change::StillDenied => &mut summary.still_denied,
                Change::Kept => &mut summary.kept,
                Change::Unknown => &mut summary.unknown,
            };
            *count += 1;
        }
        self.preview = Some(summary);
    }
}

/// Whether `snapshot` allows the flow; `None` when it cannot tell (no port, an end without
/// a pod it knows or an address).
fn allowed(
    snapshot: &Snapshot,
    protocol: IpProtocol,
    port: Option<u16>,
    source: &PodEnd,
    destination: &PodEnd,
) -> Option<bool> {
    let flow = Flow {
        source: endpoint(snapshot, source)?,
        destination: endpoint(snapshot, destination)?,
        protocol: protocol.policy_protocol()?,
        port: port.filter(|port| *port != 0)?,
    };
    evaluate(snapshot, &flow)
        .ok()
        .map(|verdict| verdict.allowed)
}

/// An end as `evaluate` takes it: the address when the cluster says it is this pod's (ipBlocks
/// are then matched against the very address), the pod when the cluster has it, else the
/// address for whatever has it now.
fn endpoint(snapshot: &Snapshot, end: &PodEnd) -> Option<Endpoint> {
    if let (Some(key), Some(ip)) = (&end.pod, end.ip)
        && snapshot.pod_by_ip(ip).is_some_and(|pod| pod.key == *key)
    {
        return Some(Endpoint::Ip(ip));
    }
    match (&end.pod, end.ip) {
        (Some(key), _) if snapshot.pod(key).is_some() => Some(Endpoint::Pod(key.clone())),
        (_, ip) => ip.map(Endpoint::Ip),
    }
}

/// The cluster the lines describe, for a preview without manifests: every pod they name with
/// the labels and owner they logged and the addresses they show (a pod without an address is
/// left out: nothing can place it), in namespaces known by name only. It has no policies.
pub fn cluster_of<'l>(lines: impl IntoIterator<Item = &'l FlowLine>) -> Snapshot {
    let mut snapshot = Snapshot::new();
    for line in lines {
        let (pod_address, peer_address) = match line.direction {
            Direction::Egress => (line.source, line.destination),
            Direction::Ingress => (line.destination, line.source),
        };
        add(&mut snapshot, &line.pod, pod_address);
        if let Peer::Pod(peer) = &line.peer {
            add(&mut snapshot, peer, peer_address);
        }
    }
    snapshot
}

fn add(snapshot: &mut Snapshot, info: &PodInfo, ip: Option<std::net::IpAddr>) {
    let Some(ip) = ip else { return };
    if info.unknown {
        return;
    }
    let key = ObjectKey::new(info.namespace.as_str(), info.name.as_str());
    let mut pod = snapshot
        .pod(&key)
        .cloned()
        .unwrap_or_else(|| Pod::running(key, info.labels.clone(), "", []));
    pod.owner = pod.owner.or_else(|| info.owner.clone());
    if !pod.ips.contains(&ip) {
        pod.ips.push(ip);
    }
    snapshot.upsert_pod(pod);
}
