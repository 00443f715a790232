//! Drop-log lines as flows for `kube-nftpol explain --drop-log`. The line is read as `suggest`
//! reads it ([`FlowLine::parse`]: kubectl prefixes skipped, unknown fields ignored); this
//! module only turns it into the flow to explain.
//!
//! A pod named in the line stands for itself when the cluster still has it; otherwise its
//! address from the line is used, so a line about a pod deleted since is explained for
//! whatever now owns that address (or for an address outside the cluster).

use std::net::IpAddr;

use crate::flow_line::{Action, FlowLine, Peer, PodInfo};
use crate::model::{Direction, ObjectKey, Snapshot};
use crate::policy::{Endpoint, Flow};

/// Why a line is not a flow to explain.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not a drop-log line, or a malformed one.
    #[error("not a drop-log line: {0}")]
    NotADropLine(String),
    /// A protocol that NetworkPolicy ports do not name (ICMP, ...).
    #[error("{0} has no ports; NetworkPolicy decides it by peers only and explain needs a port")]
    NoPort(String),
    /// A pod the cluster no longer has, on a line without its address.
    #[error("{0} is not in the cluster and the line has no address for it")]
    NoAddress(ObjectKey),
}

/// A line's flow, and what the agent did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFlow {
    /// The flow, endpoints resolved.
    pub flow: Flow,
    /// The line's action: a `revoke` line is an established connection the agent ended.
    pub action: Action,
    /// When (the line's `ts`).
    pub ts: String,
}

/// The flow a drop-log line describes, with endpoints resolved against `snapshot`.
pub fn flow(line: &str, snapshot: &Snapshot) -> Result<LineFlow, Error> {
    let record = FlowLine::parse(line)
        .map_err(|e| Error::NotADropLine(e.to_string()))?
        .ok_or_else(|| Error::NotADropLine("no \"action\" of deny or audit".into()))?;
    let protocol = record
        .protocol
        .policy_protocol()
        .ok_or_else(|| Error::NoPort(record.protocol.to_string()))?;
    let port = record
        .port
        .ok_or_else(|| Error::NoPort(record.protocol.to_string()))?;
    let endpoint = |pod: &PodInfo, address: Option<IpAddr>| {
        let key = ObjectKey::new(pod.namespace.as_str(), pod.name.as_str());
        if snapshot.pod(&key).is_some() {
            Ok(Endpoint::Pod(key))
        } else {
            address.map(Endpoint::Ip).ok_or(Error::NoAddress(key))
        }
    };
    // The pod's own address is the source on egress and the destination on ingress.
    let (pod_address, peer_address) = match record.direction {
        Direction::Egress => (record.source, record.destination),
        Direction::Ingress => (record.destination, record.source),
    };
    let pod = endpoint(&record.pod, pod_address)?;
    let peer = match &record.peer {
        Peer::Pod(peer) => endpoint(peer, peer_address)?,
        Peer::External { ip } => Endpoint::Ip(*ip),
    };
    let (source, destination) = match record.direction {
        Direction::Egress => (pod, peer),
        Direction::Ingress => (peer, pod),
    };
    Ok(LineFlow {
        flow: Flow {
            source,
            destination,
            protocol,
            port,
        },
        action: record.action,
        ts: record.ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Pod, Protocol};

    const EGRESS: &str = r#"{"ts":"2026-11-23T13:47:44.351Z","action":"deny","direction":"egress","pod":{"namespace":"payments","name":"api-0","labels":{"app":"api"}},"peer":{"namespace":"shop","name":"backend","labels":{"app":"backend"}},"protocol":"tcp","port":9090,"source_port":46356,"source":"10.244.1.20","destination":"10.244.1.11","policies":["payments/deny"],"count":3}"#;

    fn snapshot() -> Snapshot {
        let mut snapshot = Snapshot::new();
        snapshot.upsert_pod(Pod::running(
            ObjectKey::new("payments", "api-0"),
            Default::default(),
            "n1",
            ["10.244.1.20".parse().unwrap()],
        ));
        snapshot
    }

    #[test]
    fn an_egress_line_is_the_flow_from_the_pod_to_its_peer() {
        let flow = flow(EGRESS, &snapshot()).unwrap().flow;
        assert_eq!(
            flow.source,
            Endpoint::Pod(ObjectKey::new("payments", "api-0"))
        );
        // shop/backend is gone from the cluster: its address stands in.
        assert_eq!(
            flow.destination,
            Endpoint::Ip("10.244.1.11".parse().unwrap())
        );
        assert_eq!((flow.protocol, flow.port), (Protocol::Tcp, 9090));
    }

    #[test]
    fn a_revoke_line_is_its_connections_flow_and_says_when_it_was_ended() {
        let line = EGRESS.replace(r#""action":"deny""#, r#""action":"revoke""#);
        let read = flow(&line, &snapshot()).unwrap();
        assert_eq!(read.action, Action::Revoke);
        assert_eq!(read.ts, "2026-11-23T13:47:44.351Z");
        assert_eq!(read.flow, flow(EGRESS, &snapshot()).unwrap().flow);
        assert_eq!(flow(EGRESS, &snapshot()).unwrap().action, Action::Deny);
    }

    #[test]
    fn an_ingress_line_from_an_external_address_is_the_flow_into_the_pod() {
        let line = r#"{"action":"deny","direction":"ingress","pod":{"namespace":"payments","name":"api-0"},"peer":{"ip":"192.0.2.7"},"protocol":"udp","port":53,"source":"192.0.2.7","destination":"10.244.1.20"}"#;
        let flow = flow(line, &snapshot()).unwrap().flow;
        assert_eq!(flow.source, Endpoint::Ip("192.0.2.7".parse().unwrap()));
        assert_eq!(
            flow.destination,
            Endpoint::Pod(ObjectKey::new("payments", "api-0"))
        );
        assert_eq!(flow.protocol, Protocol::Udp);
    }

    #[test]
    fn lines_that_are_not_flows_with_ports_are_errors() {
        assert!(matches!(
            flow("2026-11-23 INFO agent started", &snapshot()),
            Err(Error::NotADropLine(_))
        ));
        let icmp = r#"{"action":"deny","direction":"egress","pod":{"namespace":"a","name":"b"},"peer":{"ip":"1.1.1.1"},"protocol":"icmp","source":"10.0.0.1","destination":"1.1.1.1"}"#;
        assert_eq!(flow(icmp, &snapshot()), Err(Error::NoPort("icmp".into())));
        // Lines that are JSON but not drops, or drops without their deny action.
        assert!(matches!(
            flow(r#"{"level":"info","msg":"x"}"#, &snapshot()),
            Err(Error::NotADropLine(_))
        ));
    }

    #[test]
    fn kubectl_prefixes_are_skipped_and_a_gone_pod_without_address_is_an_error() {
        let prefixed = format!("[pod/kube-nftpol-x2v/agent] {EGRESS}");
        assert_eq!(flow(&prefixed, &snapshot()), flow(EGRESS, &snapshot()));
        let without = EGRESS.replace(r#""destination":"10.244.1.11","#, "");
        assert_eq!(
            flow(&without, &snapshot()),
            Err(Error::NoAddress(ObjectKey::new("shop", "backend")))
        );
    }
}
