//! Drop-log lines as flows for `kube-nftpol explain --drop-log`: the JSON lines the agent
//! writes (see [`crate::flowlog::enrich::DropRecord`]), read back.
//!
//! Only the fields that identify the flow are read (`direction`, `pod`, `peer`, `source`,
//! `destination`, `protocol`, `port`); others, including ones added later, are ignored. A pod
//! named in the line stands for itself when the cluster still has it; otherwise its address
//! from the line is used, so a line about a pod deleted since is explained for whatever now
//! owns that address (or for an address outside the cluster).

use std::net::IpAddr;

use serde::Deserialize;

use crate::model::{ObjectKey, Protocol, Snapshot};
use crate::policy::{Endpoint, Flow};

/// Why a line is not a flow to explain.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not a drop-log JSON object.
    #[error("not a drop-log line: {0}")]
    NotADropLine(String),
    /// A protocol that NetworkPolicy ports do not name (ICMP, ...).
    #[error("{0} has no ports; NetworkPolicy decides it by peers only and explain needs a port")]
    NoPort(String),
}

#[derive(Debug, Deserialize)]
struct Line {
    direction: String,
    pod: Named,
    peer: serde_json::Value,
    source: IpAddr,
    destination: IpAddr,
    protocol: String,
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
struct Named {
    namespace: String,
    name: String,
}

/// The flow a drop-log line describes, with endpoints resolved against `snapshot`.
pub fn flow(line: &str, snapshot: &Snapshot) -> Result<Flow, Error> {
    let parsed: Line =
        serde_json::from_str(line.trim()).map_err(|e| Error::NotADropLine(e.to_string()))?;
    let protocol = Protocol::parse_any_case(&parsed.protocol);
    let (Some(protocol), Some(port)) = (protocol, parsed.port) else {
        return Err(Error::NoPort(parsed.protocol));
    };
    let endpoint = |named: Option<ObjectKey>, address: IpAddr| match named {
        Some(key) if snapshot.pod(&key).is_some() => Endpoint::Pod(key),
        _ => Endpoint::Ip(address),
    };
    let pod = Some(ObjectKey::new(parsed.pod.namespace, parsed.pod.name));
    let peer = match (
        parsed.peer["namespace"].as_str(),
        parsed.peer["name"].as_str(),
    ) {
        (Some(namespace), Some(name)) => Some(ObjectKey::new(namespace, name)),
        _ => None,
    };
    let (source, destination) = match parsed.direction.as_str() {
        "egress" => (
            endpoint(pod, parsed.source),
            endpoint(peer, parsed.destination),
        ),
        "ingress" => (
            endpoint(peer, parsed.source),
            endpoint(pod, parsed.destination),
        ),
        other => {
            return Err(Error::NotADropLine(format!("unknown direction {other:?}")));
        }
    };
    Ok(Flow {
        source,
        destination,
        protocol,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Pod;

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
        let flow = flow(EGRESS, &snapshot()).unwrap();
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
    fn an_ingress_line_from_an_external_address_is_the_flow_into_the_pod() {
        let line = r#"{"direction":"ingress","pod":{"namespace":"payments","name":"api-0"},"peer":{"ip":"192.0.2.7"},"protocol":"udp","port":53,"source":"192.0.2.7","destination":"10.244.1.20"}"#;
        let flow = flow(line, &snapshot()).unwrap();
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
        let icmp = r#"{"direction":"egress","pod":{"namespace":"a","name":"b"},"peer":{"ip":"1.1.1.1"},"protocol":"icmp","source":"10.0.0.1","destination":"1.1.1.1"}"#;
        assert_eq!(flow(icmp, &snapshot()), Err(Error::NoPort("icmp".into())));
    }
}
