//! [`Window`]: an agent's recent distinct flows, bounded, the least recently seen evicted
//! first.
//!
//! Every line the flow log writes goes in: a flow's first packet, then its summaries. Lines of
//! one flow ([`FlowKey`]) become one entry: the latest line, with the packets of all of them and
//! the first and last time the flow was seen. When the window is full, the flow seen least
//! recently makes room and is counted, so a flood of new flows (a port scan, a connection
//! storm in observe mode) costs a bounded amount of memory and pushes out old flows rather
//! than being ignored ([`Lru`]).

use super::{FlowKey, combine, normalize};
use crate::flow_line::{Action, FlowLine};
use crate::lru::Lru;

/// Distinct flows, at most `capacity` of them, the least recently seen evicted first.
#[derive(Debug, Clone)]
pub struct Window {
    flows: Lru<FlowKey, FlowLine>,
    /// Flows kept, by action: `[allow, deny, audit, revoke]`.
    kept: [usize; 4],
}

fn slot(action: Action) -> usize {
    match action {
        Action::Allow => 0,
        Action::Deny => 1,
        Action::Audit => 2,
        Action::Revoke => 3,
    }
}

impl Window {
    /// A window that keeps at most `capacity` flows.
    pub fn new(capacity: usize) -> Self {
        Self {
            flows: Lru::new(capacity),
            kept: [0; 4],
        }
    }

    /// A window without a bound, to merge flows already in memory (the windows of many
    /// agents).
    pub fn unbounded() -> Self {
        Self::new(usize::MAX)
    }

    /// Adds a line: a line of a flow kept already is combined with it (the later line's
    /// fields, the packets of both, the first and last time seen); a new flow may evict the
    /// least recently seen one. Returns the action of the flow evicted (a zero capacity keeps
    /// nothing and counts each new flow as evicted).
    pub fn record(&mut self, line: FlowLine) -> Option<Action> {
        let key = FlowKey::of(&line);
        let action = line.action;
        let new = !self.flows.contains(&key);
        let evicted = self
            .flows
            .record(key, normalize(line), combine)
            .map(|(_, line)| line.action);
        if new && self.flows.capacity() > 0 {
            self.kept[slot(action)] += 1;
        }
        if let Some(evicted) = evicted.filter(|_| self.flows.capacity() > 0) {
            self.kept[slot(evicted)] -= 1;
        }
        evicted
    }

    /// The flows kept, in [`FlowKey`] order (by pod, direction, peer, protocol, port, action,
    /// rule).
    pub fn flows(&self) -> impl Iterator<Item = &FlowLine> {
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

    /// How many flows of `action` are kept.
    pub fn kept(&self, action: Action) -> usize {
        self.kept[slot(action)]
    }

    /// How many flows were evicted (or refused at zero capacity) since the start.
    pub fn evicted(&self) -> u64 {
        self.flows.evicted()
    }

    /// The most flows kept.
    pub fn capacity(&self) -> usize {
        self.flows.capacity()
    }

    /// How many keys the window's age index holds; always [`Window::len`] (for the tests that
    /// check memory stays bounded).
    pub fn indexed(&self) -> usize {
        self.flows.indexed()
    }
}

#[cfg(test)]
mod tests;
