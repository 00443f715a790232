//! [`Aggregate`]: distinct denied flows with their drop counts, bounded.
//!
//! A flow is identified by direction, policed pod, peer (pod or address), protocol and port;
//! repeats (retransmissions, every connection attempt) add to its count and refresh its labels.
//! When the aggregate is full, the flow seen least recently makes room and is counted in
//! [`Aggregate::evicted`], so a flood of new flows (a port scan) costs a bounded amount of
//! memory and pushes out old flows rather than being ignored ([`Lru`]).

use std::net::IpAddr;

use super::{FlowPeer, FlowToAllow};
use crate::lru::Lru;
use crate::model::{Direction, IpProtocol, ObjectKey};

/// What makes two denied flows the same flow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FlowKey {
    pod: ObjectKey,
    direction: Direction,
    peer: PeerKey,
    protocol: IpProtocol,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PeerKey {
    Pod(ObjectKey),
    Ip(IpAddr),
}

impl FlowKey {
    fn of(flow: &FlowToAllow) -> Self {
        Self {
            pod: flow.pod.key.clone(),
            direction: flow.direction,
            peer: match &flow.peer {
                FlowPeer::Pod(pod) => PeerKey::Pod(pod.key.clone()),
                FlowPeer::External(ip) => PeerKey::Ip(*ip),
            },
            protocol: flow.protocol,
            port: flow.port,
        }
    }
}

/// Distinct denied flows, at most `capacity` of them, the least recently seen evicted first.
#[derive(Debug, Clone)]
pub struct Aggregate {
    flows: Lru<FlowKey, FlowToAllow>,
}

impl Aggregate {
    /// An aggregate that keeps at most `capacity` flows.
    pub fn new(capacity: usize) -> Self {
        Self {
            flows: Lru::new(capacity),
        }
    }

    /// An aggregate without a bound, for flows already in memory.
    pub fn unbounded() -> Self {
        Self::new(usize::MAX)
    }

    /// Adds a flow: a repeat adds its drops to the flow's and takes its labels; a new flow may
    /// evict the least recently seen one. Returns how many flows were evicted (0 or 1; a zero
    /// capacity keeps nothing and counts each flow as evicted).
    pub fn record(&mut self, flow: FlowToAllow) -> u64 {
        let key = FlowKey::of(&flow);
        let evicted = self.flows.record(key, flow, |old, mut new| {
            new.drops = old.drops.saturating_add(new.drops);
            new
        });
        u64::from(evicted.is_some())
    }

    /// The flows kept, in a fixed order (by pod, direction, peer, protocol, port).
    pub fn flows(&self) -> impl Iterator<Item = &FlowToAllow> {
        self.flows.values()
    }

    /// How many flows are kept.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is kept.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// How many flows were evicted (or refused at zero capacity) since the start.
    pub fn evicted(&self) -> u64 {
        self.flows.evicted()
    }

    /// The most flows kept.
    pub fn capacity(&self) -> usize {
        self.flows.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hints::FlowPod;

    fn flow(pod: &str, port: u16) -> FlowToAllow {
        FlowToAllow {
            direction: Direction::Egress,
            pod: FlowPod {
                key: ObjectKey::new("ns", pod),
                labels: [("app".to_owned(), pod.to_owned())].into(),
                owner: None,
                unknown: false,
            },
            peer: FlowPeer::External("203.0.113.1".parse().unwrap()),
            protocol: IpProtocol::Tcp,
            port: Some(port),
            drops: 1,
            tier: None,
            cluster_policy: None,
        }
    }

    fn ports(aggregate: &Aggregate) -> Vec<(String, u16)> {
        aggregate
            .flows()
            .map(|f| (f.pod.key.name.clone(), f.port.unwrap()))
            .collect()
    }

    #[test]
    fn repeats_are_counted_once_with_their_drops_and_latest_labels() {
        let mut aggregate = Aggregate::new(10);
        aggregate.record(flow("a", 80));
        let mut again = flow("a", 80);
        again.drops = 4;
        again.pod.labels.insert("new".into(), "label".into());
        aggregate.record(again);
        assert_eq!(aggregate.len(), 1);
        let kept = aggregate.flows().next().unwrap();
        assert_eq!(kept.drops, 5);
        assert_eq!(kept.pod.labels["new"], "label");
    }

    #[test]
    fn different_ports_peers_and_directions_are_different_flows() {
        let mut aggregate = Aggregate::new(10);
        aggregate.record(flow("a", 80));
        aggregate.record(flow("a", 81));
        let mut ingress = flow("a", 80);
        ingress.direction = Direction::Ingress;
        aggregate.record(ingress);
        let mut other_peer = flow("a", 80);
        other_peer.peer = FlowPeer::External("203.0.113.2".parse().unwrap());
        aggregate.record(other_peer);
        assert_eq!(aggregate.len(), 4);
    }

    #[test]
    fn when_full_the_least_recently_seen_flow_is_evicted_and_counted() {
        let mut aggregate = Aggregate::new(2);
        assert_eq!(aggregate.record(flow("a", 1)), 0);
        assert_eq!(aggregate.record(flow("b", 1)), 0);
        // `a` is seen again, so `b` is now the oldest.
        assert_eq!(aggregate.record(flow("a", 1)), 0);
        assert_eq!(aggregate.record(flow("c", 1)), 1);
        assert_eq!(ports(&aggregate), [("a".into(), 1), ("c".into(), 1)]);
        assert_eq!(aggregate.evicted(), 1);
        assert_eq!(aggregate.len(), aggregate.capacity());
    }

    #[test]
    fn a_flood_of_new_flows_stays_within_the_capacity() {
        let mut aggregate = Aggregate::new(100);
        for port in 1..=10_000 {
            aggregate.record(flow("scanner", port));
        }
        assert_eq!(aggregate.len(), 100);
        assert_eq!(aggregate.evicted(), 9_900);
        // The most recent ones are kept.
        assert!(aggregate.flows().all(|f| f.port.unwrap() > 9_900));
    }

    #[test]
    fn zero_capacity_keeps_nothing_and_counts_everything() {
        let mut aggregate = Aggregate::new(0);
        assert_eq!(aggregate.record(flow("a", 1)), 1);
        assert!(aggregate.is_empty());
        assert_eq!(aggregate.evicted(), 1);
    }
}
