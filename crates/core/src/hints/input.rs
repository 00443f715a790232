//! Denied flows from the flow log: the parts of a [`FlowLine`] (read from `kubectl logs` by
//! [`parse_line`], or the agent's own, [`FlowToAllow::from_line`]) that a policy can name.
//! Reading the line itself is [`crate::flow_line`]'s.

use super::{FlowPeer, FlowPod, FlowToAllow};
use crate::flow_line::{self, FlowLine, LineError, PodInfo};
use crate::model::ObjectKey;

/// The denied flow on a log line; `Ok(None)` for lines that are not flow lines, or whose flow
/// was allowed.
pub fn parse_line(line: &str) -> Result<Option<FlowToAllow>, LineError> {
    Ok(FlowLine::parse(line)?
        .filter(|line| line.action.is_denied())
        .map(|line| FlowToAllow::from_line(&line)))
}

impl FlowToAllow {
    /// The denied flow of a line, standing for its `count` packets.
    pub fn from_line(record: &FlowLine) -> Self {
        Self {
            direction: record.direction,
            pod: pod(&record.pod),
            peer: match &record.peer {
                flow_line::Peer::Pod(peer) => FlowPeer::Pod(pod(peer)),
                flow_line::Peer::External { ip } => FlowPeer::External(*ip),
            },
            protocol: record.protocol,
            port: record.port,
            drops: record.count.max(1),
            tier: record.tier,
            cluster_policy: record.cluster_policy.clone(),
        }
    }
}

/// A pod as [`FlowToAllow`] carries it, from the line's form.
pub(super) fn pod(info: &PodInfo) -> FlowPod {
    FlowPod {
        key: ObjectKey::new(info.namespace.as_str(), info.name.as_str()),
        labels: info.labels.clone(),
        owner: info.owner.clone(),
        unknown: info.unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, IpProtocol};

    /// The drop log's example line (`docs/observability.md`).
    const LINE: &str = r#"{"ts":"2026-11-23T13:47:44.351Z","action":"deny","direction":"egress","pod":{"namespace":"payments","name":"payments-api-0","labels":{"app":"payments-api"}},"peer":{"namespace":"shop","name":"backend-5c8b6-qx2lp","labels":{"app":"backend"}},"protocol":"tcp","port":9090,"source_port":46356,"source":"10.244.1.20","destination":"10.244.1.11","policies":["payments/allow-dns","payments/default-deny-all"]}"#;

    fn flow(line: &str) -> FlowToAllow {
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
    fn a_summary_stands_for_its_count_of_drops() {
        let summary = LINE.replace(r#""ts":"#, r#""count":17,"ts":"#);
        assert_eq!(flow(&summary).drops, 17);
        // A count of 0 still stands for a drop.
        assert_eq!(
            flow(&LINE.replace(r#""ts":"#, r#""count":0,"ts":"#)).drops,
            1
        );
    }

    #[test]
    fn external_peers_are_addresses() {
        let line = r#"{"action":"deny","direction":"ingress","pod":{"namespace":"a","name":"p"},"peer":{"ip":"2001:db8::1"},"protocol":"icmpv6"}"#;
        assert_eq!(
            flow(line).peer,
            FlowPeer::External("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn lines_that_are_not_flow_lines_are_not_flows_and_malformed_ones_are_errors() {
        assert_eq!(parse_line("agent started"), Ok(None));
        let bad = LINE.replace(r#""direction":"egress""#, r#""direction":"sideways""#);
        assert!(matches!(parse_line(&bad), Err(LineError::Malformed(_))));
    }
}
