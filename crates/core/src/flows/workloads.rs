//! Flows merged by workload: the flows of many agents (each a pod's flow, [`FlowKey`]) become
//! one [`WorkloadFlow`] per workload, direction, peer workload or address, protocol, port,
//! action and allowing rule, with the packets, pods and times of the flows it stands for. What
//! `kube-nftpol flows` shows; a workload is [`Workload::of`] its pods' owner and labels, as the
//! hints name them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{first_seen, last_seen};
use crate::flow_line::{Action, AllowedBy, ClusterPolicyRule, FlowLine, Peer, PodInfo};
use crate::hints::{self, FlowEnd, Workload};
use crate::model::{Direction, IpProtocol, ObjectKey, Tier};

/// The other end of a workload's flow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadPeer {
    /// The workload of a pod peer: `{"workload": {...}}`.
    Workload(Workload),
    /// Anything that is no pod (outside the cluster, a node, a hostNetwork pod): `{"ip": ...}`.
    Ip(IpAddr),
}

/// The flows of one workload to or from one peer, on one protocol and port, with one verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadFlow {
    /// The flow's id, the same for the rows of both its ends and whatever the verdict
    /// ([`hints::WorkloadFlow::id`]): what `kube-nftpol suggest --exclude flow=ID` takes.
    #[serde(default)]
    pub id: String,
    /// The workload of the policed pods.
    pub workload: Workload,
    /// Ingress (the pods were receiving) or egress (they were sending).
    pub direction: Direction,
    /// The other end.
    pub peer: WorkloadPeer,
    /// The transport protocol.
    pub protocol: IpProtocol,
    /// The destination port, when the protocol has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Allowed, denied, or audited (would be denied).
    pub action: Action,
    /// For allowed flows, the rule that allowed them; none when no policy isolates the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_by: Option<AllowedBy>,
    /// The ClusterNetworkPolicy tier that decided them, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Its rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_policy: Option<ClusterPolicyRule>,
    /// The policies that isolate the pods in this direction, of every flow merged, sorted.
    #[serde(default)]
    pub policies: Vec<String>,
    /// The names of the workload's pods these flows were seen on, sorted.
    pub pods: Vec<String>,
    /// The packets the flows' lines stand for.
    pub count: u64,
    /// When the first of the flows was first seen.
    pub first_ts: String,
    /// When the last of the flows was last seen.
    pub last_ts: String,
}

type Key = (
    Workload,
    Direction,
    WorkloadPeer,
    IpProtocol,
    Option<u16>,
    Action,
    Option<AllowedBy>,
    Option<Tier>,
    Option<ClusterPolicyRule>,
);

fn workload(pod: &PodInfo) -> Workload {
    let key = ObjectKey::new(pod.namespace.as_str(), pod.name.as_str());
    Workload::of(&key, &pod.labels, pod.owner.as_ref())
}

/// The flows merged by workload, in order of workload, direction, peer, protocol, port, action
/// and rule.
pub fn by_workload<'a>(flows: impl IntoIterator<Item = &'a FlowLine>) -> Vec<WorkloadFlow> {
    let mut merged: BTreeMap<Key, (WorkloadFlow, BTreeSet<String>, BTreeSet<String>)> =
        BTreeMap::new();
    for line in flows {
        let peer = match &line.peer {
            Peer::Pod(pod) => WorkloadPeer::Workload(workload(pod)),
            Peer::External { ip } => WorkloadPeer::Ip(*ip),
        };
        let key = (
            workload(&line.pod),
            line.direction,
            peer,
            line.protocol,
            line.port,
            line.action,
            line.allowed_by.clone(),
            line.tier,
            line.cluster_policy.clone(),
        );
        let (flow, pods, policies) = merged.entry(key).or_insert_with_key(|key| {
            let flow = WorkloadFlow {
                id: flow_id(&key.0, key.1, &key.2, key.3, key.4),
                workload: key.0.clone(),
                direction: key.1,
                peer: key.2.clone(),
                protocol: key.3,
                port: key.4,
                action: key.5,
                allowed_by: key.6.clone(),
                tier: key.7,
                cluster_policy: key.8.clone(),
                policies: Vec::new(),
                pods: Vec::new(),
                count: 0,
                first_ts: first_seen(line).to_owned(),
                last_ts: last_seen(line).to_owned(),
            };
            (flow, BTreeSet::new(), BTreeSet::new())
        });
        flow.count = flow.count.saturating_add(line.count.max(1));
        if first_seen(line) < flow.first_ts.as_str() {
            first_seen(line).clone_into(&mut flow.first_ts);
        }
        if last_seen(line) > flow.last_ts.as_str() {
            last_seen(line).clone_into(&mut flow.last_ts);
        }
        pods.insert(line.pod.name.clone());
        policies.extend(line.policies.iter().cloned());
    }
    merged
        .into_values()
        .map(|(mut flow, pods, policies)| {
            flow.pods = pods.into_iter().collect();
            flow.policies = policies.into_iter().collect();
            flow
        })
        .collect()
}

/// The id of the flow between `workload` and `peer` ([`hints::WorkloadFlow::id`]), from the
/// side of `workload` in `direction`: both ends' rows of one flow get the same id.
fn flow_id(
    workload: &Workload,
    direction: Direction,
    peer: &WorkloadPeer,
    protocol: IpProtocol,
    port: Option<u16>,
) -> String {
    let own = FlowEnd::Workload(workload.clone());
    let peer = match peer {
        WorkloadPeer::Workload(peer) => FlowEnd::Workload(peer.clone()),
        WorkloadPeer::Ip(ip) => FlowEnd::Address(*ip),
    };
    let (source, destination) = match direction {
        Direction::Egress => (own, peer),
        Direction::Ingress => (peer, own),
    };
    hints::WorkloadFlow {
        source,
        destination,
        protocol,
        port,
    }
    .id()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Owner;

    /// Pod `name` of Deployment `deployment` (through ReplicaSet `<deployment>-5c8b6`) in `shop`.
    fn replica(deployment: &str, name: &str) -> PodInfo {
        PodInfo {
            namespace: "shop".to_owned(),
            name: name.to_owned(),
            labels: [
                ("app".to_owned(), deployment.to_owned()),
                ("pod-template-hash".to_owned(), "5c8b6".to_owned()),
            ]
            .into(),
            owner: Some(Owner {
                kind: "ReplicaSet".to_owned(),
                name: format!("{deployment}-5c8b6"),
            }),
            unknown: false,
        }
    }

    fn line(pod: PodInfo, peer: Peer, port: u16, count: u64, first: &str, last: &str) -> FlowLine {
        FlowLine {
            ts: last.to_owned(),
            action: Action::Allow,
            direction: Direction::Egress,
            pod,
            peer,
            protocol: IpProtocol::Tcp,
            port: Some(port),
            source_port: None,
            source: None,
            destination: None,
            policies: vec!["shop/web-egress".to_owned()],
            allowed_by: Some(AllowedBy {
                policy: "shop/web-egress".to_owned(),
                rule: 0,
            }),
            tier: None,
            cluster_policy: None,
            count,
            first_ts: Some(first.to_owned()),
            last_ts: Some(last.to_owned()),
        }
    }

    #[test]
    fn the_flows_of_a_deployments_pods_to_another_deployment_are_one_row() {
        let api_a = Peer::Pod(replica("api", "api-5c8b6-aaaaa"));
        let api_b = Peer::Pod(replica("api", "api-5c8b6-bbbbb"));
        let flows = [
            // Seen on two nodes: each agent reports its own pod's flows.
            line(
                replica("web", "web-5c8b6-xxxxx"),
                api_a,
                8080,
                3,
                "2026-01-01T00:00:05.000Z",
                "2026-01-01T00:00:09.000Z",
            ),
            line(
                replica("web", "web-5c8b6-yyyyy"),
                api_b,
                8080,
                2,
                "2026-01-01T00:00:01.000Z",
                "2026-01-01T00:00:07.000Z",
            ),
            line(
                replica("web", "web-5c8b6-yyyyy"),
                Peer::External {
                    ip: "203.0.113.9".parse().unwrap(),
                },
                443,
                1,
                "2026-01-01T00:00:02.000Z",
                "2026-01-01T00:00:02.000Z",
            ),
        ];
        let merged = by_workload(&flows);
        assert_eq!(merged.len(), 2);
        let to_api = &merged[0];
        assert_eq!(to_api.workload.kind, "Deployment");
        assert_eq!(to_api.workload.name, "web");
        let WorkloadPeer::Workload(peer) = &to_api.peer else {
            panic!("not a workload peer: {:?}", to_api.peer)
        };
        assert_eq!(
            (peer.kind.as_str(), peer.name.as_str()),
            ("Deployment", "api")
        );
        assert_eq!(to_api.count, 5);
        assert_eq!(to_api.pods, ["web-5c8b6-xxxxx", "web-5c8b6-yyyyy"]);
        assert_eq!(to_api.first_ts, "2026-01-01T00:00:01.000Z");
        assert_eq!(to_api.last_ts, "2026-01-01T00:00:09.000Z");
        assert_eq!(
            merged[1].peer,
            WorkloadPeer::Ip("203.0.113.9".parse().unwrap())
        );
        assert_eq!(merged[1].pods, ["web-5c8b6-yyyyy"]);
    }

    #[test]
    fn different_verdicts_and_ports_stay_apart() {
        let peer = || Peer::External {
            ip: "203.0.113.9".parse().unwrap(),
        };
        let t = "2026-01-01T00:00:01.000Z";
        let mut denied = line(replica("web", "w1"), peer(), 443, 1, t, t);
        denied.action = Action::Deny;
        denied.allowed_by = None;
        let flows = [
            line(replica("web", "w1"), peer(), 443, 1, t, t),
            line(replica("web", "w1"), peer(), 444, 1, t, t),
            denied,
        ];
        assert_eq!(by_workload(&flows).len(), 3);
    }

    /// The id `kube-nftpol flows` shows is the flow id `suggest --exclude flow=ID` takes: the
    /// same for the sender's and the receiver's rows of one flow, allowed or denied, and for a
    /// flow to an address.
    #[test]
    fn both_ends_rows_carry_the_flow_id_that_exclude_takes() {
        let t = "2026-01-01T00:00:01.000Z";
        let egress = line(
            replica("web", "w1"),
            Peer::Pod(replica("api", "a1")),
            8080,
            1,
            t,
            t,
        );
        let mut ingress = line(
            replica("api", "a1"),
            Peer::Pod(replica("web", "w1")),
            8080,
            1,
            t,
            t,
        );
        ingress.direction = Direction::Ingress;
        ingress.action = Action::Deny;
        ingress.allowed_by = None;
        let external = line(
            replica("web", "w1"),
            Peer::External {
                ip: "203.0.113.9".parse().unwrap(),
            },
            443,
            1,
            t,
            t,
        );
        let merged = by_workload([&egress, &ingress, &external]);
        assert_eq!(merged.len(), 3);
        for (row, line) in merged.iter().zip([&ingress, &egress, &external]) {
            let flow = hints::WorkloadFlow::of(line);
            assert_eq!(row.id, flow.id(), "{flow}");
            let exclude: hints::Exclude = format!("flow={}", row.id).parse().unwrap();
            assert!(exclude.matches(&flow), "{flow}");
        }
        assert_eq!(merged[0].id, merged[1].id);
        assert_ne!(merged[0].id, merged[2].id);
        assert_eq!(merged[0].id.len(), 12);
    }

    #[test]
    fn rows_read_back_from_their_json() {
        let t = "2026-01-01T00:00:01.000Z";
        let flows = [line(
            replica("web", "w1"),
            Peer::Pod(replica("api", "a1")),
            8080,
            1,
            t,
            t,
        )];
        let merged = by_workload(&flows);
        let json = serde_json::to_string(&merged).unwrap();
        assert!(
            json.contains(
                r#""peer":{"workload":{"namespace":"shop","kind":"Deployment","name":"api"}}"#
            ),
            "{json}"
        );
        let back: Vec<WorkloadFlow> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, merged);
    }
}
