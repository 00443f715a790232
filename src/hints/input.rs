//! Denied flows from the drop log: one JSON line as the agent prints it ([`parse_line`]; with
//! the packet's addresses, [`read_line`], which `explain --drop-log` uses too), or the agent's
//! own [`DropRecord`] ([`from_record`]).
//!
//! Lines come from `kubectl logs`, which may interleave other output and prefix lines (with
//! `--prefix` or `--timestamps`), so the JSON object is looked for from the first `{`; lines
//! that are not JSON objects, or JSON objects that are not drop records (no `action` of `deny`
//! or `audit`), are not flows and not errors. Unknown fields are ignored (later versions add
//! some, such as a `count` of merged drops, which is read when present).

use std::net::IpAddr;

use serde::Deserialize;

use super::{DeniedFlow, FlowPeer, FlowPod};
use crate::flowlog::decode::IpProtocol;
use crate::flowlog::enrich::{self, DropRecord};
use crate::model::{Labels, ObjectKey, Owner};
use crate::policy::Direction;

/// Drop-log actions that mean "this flow was denied" (audit: would have been denied).
const DENIED_ACTIONS: [&str; 2] = ["deny", "audit"];

/// A drop record line that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    /// The line is a drop record (it has a deny action) but a field is missing or malformed.
    #[error("malformed drop record: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct LineRecord {
    direction: String,
    pod: LinePod,
    peer: LinePeer,
    protocol: serde_json::Value,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    source: Option<IpAddr>,
    #[serde(default)]
    destination: Option<IpAddr>,
}

#[derive(Deserialize)]
struct LinePod {
    namespace: String,
    name: String,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    owner: Option<LineOwner>,
    #[serde(default)]
    unknown: bool,
}

#[derive(Deserialize)]
struct LineOwner {
    kind: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LinePeer {
    Pod(LinePod),
    External { ip: IpAddr },
}

/// A drop-log line read back: the denied flow and the packet's addresses, when the line has
/// them (the agent always writes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedDrop {
    /// The denied flow.
    pub flow: DeniedFlow,
    /// The packet's source address.
    pub source: Option<IpAddr>,
    /// The packet's destination address.
    pub destination: Option<IpAddr>,
}

/// The denied flow on a drop-log line; `Ok(None)` for lines that are not drop records.
pub fn parse_line(line: &str) -> Result<Option<DeniedFlow>, LineError> {
    Ok(read_line(line)?.map(|logged| logged.flow))
}

/// The denied flow on a drop-log line with the packet's addresses; `Ok(None)` for lines that
/// are not drop records.
pub fn read_line(line: &str) -> Result<Option<LoggedDrop>, LineError> {
    let Some(start) = line.find('{') else {
        return Ok(None);
    };
    let Ok(serde_json::Value::Object(object)) =
        serde_json::from_str::<serde_json::Value>(line[start..].trim_end())
    else {
        return Ok(None);
    };
    let is_drop = object
        .get("action")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|action| DENIED_ACTIONS.contains(&action));
    if !is_drop {
        return Ok(None);
    }
    let record: LineRecord = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|error| LineError::Malformed(error.to_string()))?;
    let direction = match record.direction.as_str() {
        "ingress" => Direction::Ingress,
        "egress" => Direction::Egress,
        other => {
            return Err(LineError::Malformed(format!(
                "direction {other:?} is neither ingress nor egress"
            )));
        }
    };
    let protocol = parse_protocol(&record.protocol).ok_or_else(|| {
        LineError::Malformed(format!("protocol {} is not known", record.protocol))
    })?;
    let flow = DeniedFlow {
        direction,
        pod: pod(record.pod),
        peer: match record.peer {
            LinePeer::Pod(peer) => FlowPeer::Pod(pod(peer)),
            LinePeer::External { ip } => FlowPeer::External(ip),
        },
        protocol,
        port: record.port,
        drops: record.count.unwrap_or(1).max(1),
    };
    Ok(Some(LoggedDrop {
        flow,
        source: record.source,
        destination: record.destination,
    }))
}

fn pod(line: LinePod) -> FlowPod {
    FlowPod {
        key: ObjectKey::new(line.namespace, line.name),
        labels: line.labels,
        owner: line.owner.map(|o| Owner {
            kind: o.kind,
            name: o.name,
        }),
        unknown: line.unknown,
    }
}

/// `tcp`, `udp`, `sctp`, `icmp`, `icmpv6` (as the drop log writes them, any case) or a protocol
/// number, as a string or a number.
fn parse_protocol(value: &serde_json::Value) -> Option<IpProtocol> {
    if let Some(number) = value.as_u64() {
        return u8::try_from(number).ok().map(IpProtocol::from_number);
    }
    let text = value.as_str()?;
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Some(IpProtocol::Tcp),
        "udp" => Some(IpProtocol::Udp),
        "sctp" => Some(IpProtocol::Sctp),
        "icmp" => Some(IpProtocol::Icmp),
        "icmpv6" => Some(IpProtocol::Icmpv6),
        other => other.parse::<u8>().ok().map(IpProtocol::from_number),
    }
}

/// The denied flow of a drop record.
pub fn from_record(record: &DropRecord) -> DeniedFlow {
    let pod = |info: &enrich::PodInfo| FlowPod {
        key: ObjectKey::new(info.namespace.as_str(), info.name.as_str()),
        labels: info.labels.clone(),
        owner: info.owner.clone(),
        unknown: info.unknown,
    };
    DeniedFlow {
        direction: record.direction,
        pod: pod(&record.pod),
        peer: match &record.peer {
            enrich::Peer::Pod(peer) => FlowPeer::Pod(pod(peer)),
            enrich::Peer::External { ip } => FlowPeer::External(*ip),
        },
        protocol: record.protocol,
        port: record.port,
        drops: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's example line.
    const LINE: &str = r#"{"ts":"2026-11-23T13:47:44.351Z","action":"deny","direction":"egress","pod":{"namespace":"payments","name":"payments-api-0","labels":{"app":"payments-api"}},"peer":{"namespace":"shop","name":"backend-5c8b6-qx2lp","labels":{"app":"backend"}},"protocol":"tcp","port":9090,"source_port":46356,"source":"10.244.1.20","destination":"10.244.1.11","policies":["payments/allow-dns","payments/default-deny-all"]}"#;

    fn flow(line: &str) -> DeniedFlow {
        parse_line(line).unwrap().unwrap()
    }

    #[test]
    fn the_agents_line_is_a_denied_flow() {
        let flow = flow(LINE);
        assert_eq!(flow.direction, Direction::Egress);
        assert_eq!(flow.pod.key, ObjectKey::new("payments", "payments-api-0"));
        assert_eq!(flow.pod.labels["app"], "payments-api");
        assert!(!flow.pod.unknown);
        let FlowPeer::Pod(peer) = &flow.peer else {
            panic!("not a pod peer")
        };
        assert_eq!(peer.key, ObjectKey::new("shop", "backend-5c8b6-qx2lp"));
        assert_eq!(flow.protocol, IpProtocol::Tcp);
        assert_eq!(flow.port, Some(9090));
        assert_eq!(flow.drops, 1);
    }

    #[test]
    fn kubectl_prefixes_and_timestamps_are_skipped() {
        for prefix in [
            "[pod/kube-nftpol-x2v/agent] ",
            "2026-11-23T13:47:44.351Z ",
            "  ",
        ] {
            assert_eq!(flow(&format!("{prefix}{LINE}\r")), flow(LINE), "{prefix:?}");
        }
    }

    #[test]
    fn lines_that_are_not_drop_records_are_not_flows() {
        for line in [
            "",
            "2026-11-23T13:47:44Z  INFO kube_nftpol::agent: agent started",
            "{not json",
            "[1, 2]",
            r#"{"level":"info","msg":"hello"}"#,
            r#"{"action":"allow","direction":"egress"}"#,
        ] {
            assert_eq!(parse_line(line), Ok(None), "{line:?}");
        }
    }

    #[test]
    fn unknown_fields_count_and_audit_are_tolerated() {
        let line = LINE
            .replace(r#""action":"deny""#, r#""action":"audit""#)
            .replace(
                r#""ts":"#,
                r#""count":17,"first_ts":"2026-11-23T13:40:00Z","extra":{"a":[1]},"ts":"#,
            );
        let flow = flow(&line);
        assert_eq!(flow.drops, 17);
        assert_eq!(flow.port, Some(9090));
        // A count of 0 still stands for a drop.
        assert_eq!(
            self::flow(&LINE.replace(r#""ts":"#, r#""count":0,"ts":"#)).drops,
            1
        );
    }

    #[test]
    fn external_peers_owners_and_unknown_pods_are_read() {
        let line = r#"{"action":"deny","direction":"ingress","pod":{"namespace":"a","name":"p","labels":{},"owner":{"kind":"StatefulSet","name":"db"},"unknown":true},"peer":{"ip":"2001:db8::1"},"protocol":"icmpv6"}"#;
        let flow = flow(line);
        assert_eq!(flow.direction, Direction::Ingress);
        assert!(flow.pod.unknown);
        assert_eq!(flow.pod.owner.unwrap().kind, "StatefulSet");
        assert_eq!(
            flow.peer,
            FlowPeer::External("2001:db8::1".parse().unwrap())
        );
        assert_eq!(flow.protocol, IpProtocol::Icmpv6);
        assert_eq!(flow.port, None);
    }

    #[test]
    fn a_bad_external_address_is_malformed() {
        let line = r#"{"action":"deny","direction":"egress","pod":{"namespace":"a","name":"p"},"peer":{"ip":"nope"},"protocol":"tcp","port":1}"#;
        assert!(matches!(parse_line(line), Err(LineError::Malformed(_))));
    }

    #[test]
    fn the_packets_addresses_are_read_when_present() {
        let logged = read_line(LINE).unwrap().unwrap();
        assert_eq!(logged.source, Some("10.244.1.20".parse().unwrap()));
        assert_eq!(logged.destination, Some("10.244.1.11".parse().unwrap()));
        assert_eq!(logged.flow, flow(LINE));
        let without = LINE.replace(r#""source":"10.244.1.20","#, "");
        assert_eq!(read_line(&without).unwrap().unwrap().source, None);
        let bad = LINE.replace(r#""source":"10.244.1.20""#, r#""source":"ten""#);
        assert!(matches!(read_line(&bad), Err(LineError::Malformed(_))));
    }

    #[test]
    fn protocols_by_name_or_number() {
        let with = |protocol: &str| flow(&LINE.replace(r#""tcp""#, protocol)).protocol;
        assert_eq!(with(r#""UDP""#), IpProtocol::Udp);
        assert_eq!(with(r#""sctp""#), IpProtocol::Sctp);
        assert_eq!(with(r#""icmp""#), IpProtocol::Icmp);
        assert_eq!(with(r#""47""#), IpProtocol::Other(47));
        assert_eq!(with("6"), IpProtocol::Tcp);
    }

    #[test]
    fn malformed_drop_records_are_errors() {
        for (from, to) in [
            (r#""direction":"egress""#, r#""direction":"sideways""#),
            (r#""protocol":"tcp""#, r#""protocol":"carrier-pigeon""#),
            (r#""port":9090"#, r#""port":70000"#),
            (r#""namespace":"payments","#, ""),
            (r#""direction":"egress","#, ""),
        ] {
            let line = LINE.replace(from, to);
            assert!(
                matches!(parse_line(&line), Err(LineError::Malformed(_))),
                "{to}: {:?}",
                parse_line(&line)
            );
        }
    }
}
