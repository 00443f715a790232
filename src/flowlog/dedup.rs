//! Deduplicating the drop log: one line per denied flow and window, with a count of repeats.
//!
//! Pure: the caller passes the time (a monotonic [`Instant`] for the windows, the wall clock
//! for the timestamps that get logged), so tests drive it with an injected clock. It owns the
//! table of recent flows and its bound; it does not enrich, render or write lines
//! ([`super::line`] renders them, the agent's drop log writes them).
//!
//! What a user watching `kubectl logs -f` sees, and why:
//!
//! - The first packet of a flow is logged at once ([`Seen::New`]): someone debugging a
//!   connection sees the drop within a second, with the source port of that packet.
//! - Further packets of the flow within the window ([`Seen::Repeat`]) are only counted. When
//!   the window closes, [`Dedup::expire`] returns one [`Summary`] for the flow with how many
//!   repeats there were and when the first and last of them arrived, logged as one line with
//!   `"count": N`. A flow that keeps going keeps its entry for another window, so it costs one
//!   line per window however many packets it sends; a flow with no repeats in its window is
//!   forgotten silently, and its next packet is logged at once again. Every packet is counted in
//!   exactly one line, so the counts of all lines add up to the records received.
//! - A flow is a [`FlowKey`]: the policed pod, the direction, the source and destination
//!   addresses, the protocol and the destination port. Not the source port: a client retrying
//!   from fresh ports (or a retransmitted SYN) is one flow to the person reading the log.
//! - The table holds at most `capacity` flows. When it is full, packets of flows it does not
//!   track are neither logged nor tracked ([`Seen::TableFull`]; the caller counts them), while
//!   tracked flows go on counting; room comes back as windows close. Evicting old flows instead
//!   would, under a flood of distinct flows (a port scan), log every record plus a summary for
//!   each evicted flow: exactly the volume deduplication is there to bound.
//! - A zero window turns deduplication off: every packet is [`Seen::New`] and nothing is kept.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use super::decode::LoggedPacket;
use crate::compile::LogKind;
use crate::model::{Direction, IpProtocol, ObjectKey};

/// What deduplication calls one flow: everything the log line says about a drop except the
/// source port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Ingress or egress.
    pub direction: Direction,
    /// The policed pod (from the log prefix).
    pub pod: ObjectKey,
    /// The packet's source address.
    pub source: IpAddr,
    /// The packet's destination address.
    pub destination: IpAddr,
    /// The transport protocol.
    pub protocol: IpProtocol,
    /// The destination port, when the protocol has one.
    pub destination_port: Option<u16>,
    /// What the rule logged: a namespace leaving audit mode, or a policy change that denies
    /// an allowed flow, starts a new flow.
    pub kind: LogKind,
}

impl FlowKey {
    /// The flow a denied packet belongs to.
    pub fn of(packet: &LoggedPacket) -> Self {
        Self {
            direction: packet.direction,
            pod: packet.pod.clone(),
            source: packet.source,
            destination: packet.destination,
            protocol: packet.protocol,
            destination_port: packet.destination_port,
            kind: packet.kind,
        }
    }

    /// A packet of this flow without a source port, to enrich a summary with.
    pub fn packet(&self) -> LoggedPacket {
        LoggedPacket {
            direction: self.direction,
            pod: self.pod.clone(),
            source: self.source,
            destination: self.destination,
            protocol: self.protocol,
            source_port: None,
            destination_port: self.destination_port,
            kind: self.kind,
        }
    }
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first packet of its flow in this window (or deduplication is off): log it now.
    New,
    /// Counted; it will be part of the flow's [`Summary`] when the window closes.
    Repeat,
    /// The table is full and does not track this flow: not logged. Count it.
    TableFull,
}

/// The repeats of one flow in one window, to log as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<K> {
    /// The flow.
    pub key: K,
    /// How many packets after the one already logged (at least 1).
    pub count: u64,
    /// Wall-clock time of the first of them.
    pub first: SystemTime,
    /// Wall-clock time of the last of them.
    pub last: SystemTime,
}

/// One tracked flow: its repeats in the current window, with the first and last arrival.
#[derive(Debug)]
struct Tracked {
    repeats: u64,
    first: SystemTime,
    last: SystemTime,
}

/// The table of recent flows, keyed by `K` ([`FlowKey`] in the agent).
#[derive(Debug)]
pub struct Dedup<K> {
    window: Duration,
    capacity: usize,
    flows: HashMap<K, Tracked>,
    /// When each tracked flow's window closes, in order (windows all have the same length, so
    /// pushing at the back keeps the order; [`Self::schedule`] makes sure of it).
    deadlines: VecDeque<(Instant, K)>,
}

impl<K: Clone + Eq + Hash> Dedup<K> {
    /// A table that folds repeats within `window` (zero: off) and tracks at most `capacity`
    /// flows.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity,
            flows: HashMap::new(),
            deadlines: VecDeque::new(),
        }
    }

    /// Looks at one packet of `key` seen at `now` (`wall` on the wall clock). Call
    /// [`Self::expire`] with the same `now` first, so windows that have closed are summarized
    /// before a packet could be counted in them.
    pub fn observe(&mut self, key: &K, now: Instant, wall: SystemTime) -> Seen {
        if self.window.is_zero() {
            return Seen::New;
        }
        if let Some(flow) = self.flows.get_mut(key) {
            if flow.repeats == 0 {
                flow.first = wall;
            }
            flow.repeats += 1;
            flow.last = wall;
            return Seen::Repeat;
        }
        if self.flows.len() >= self.capacity {
            return Seen::TableFull;
        }
        // A window too long for the clock to represent cannot close: log without tracking.
        let Some(deadline) = now.checked_add(self.window) else {
            return Seen::New;
        };
        self.flows.insert(
            key.clone(),
            Tracked {
                repeats: 0,
                first: wall,
                last: wall,
            },
        );
        self.schedule(deadline, key.clone());
        Seen::New
    }

    /// Closes every window that ended by `now`: a summary for each flow with repeats (its entry
    /// stays for another window), and flows without repeats are forgotten.
    pub fn expire(&mut self, now: Instant) -> Vec<Summary<K>> {
        let mut summaries = Vec::new();
        while let Some((deadline, _)) = self.deadlines.front() {
            if *deadline > now {
                break;
            }
            let Some((deadline, key)) = self.deadlines.pop_front() else {
                break;
            };
            let Entry::Occupied(mut entry) = self.flows.entry(key) else {
                continue;
            };
            let flow = entry.get_mut();
            if flow.repeats == 0 {
                entry.remove();
                continue;
            }
            let (count, first, last) = (flow.repeats, flow.first, flow.last);
            flow.repeats = 0;
            let key = entry.key().clone();
            summaries.push(Summary {
                key: key.clone(),
                count,
                first,
                last,
            });
            // Another window right after this one: a steady flow gets one line per window.
            // Should `now` be a window or more late, this loop forgets the flow further on.
            match deadline.checked_add(self.window) {
                Some(next) => self.schedule(next, key),
                None => drop(self.flows.remove(&key)),
            }
        }
        summaries
    }

    /// Queues a window's end, never before the last one queued, so the queue stays in order
    /// even if a caller's clock went backwards or it observed before expiring.
    fn schedule(&mut self, deadline: Instant, key: K) {
        let deadline = match self.deadlines.back() {
            Some((last, _)) => deadline.max(*last),
            None => deadline,
        };
        self.deadlines.push_back((deadline, key));
    }

    /// When the earliest window closes: the time to call [`Self::expire`] next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(deadline, _)| *deadline)
    }

    /// Flows tracked now (at most the capacity).
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests;
