//! Monotonic totals from rule counters that come and go.
//!
//! The kernel's counters belong to rules, and rules do not live long: an incremental apply
//! flushes and refills the chains of the pods a change concerns, a full replace (first apply,
//! repair) re-creates every rule, and each new rule's counter starts at zero. Prometheus
//! counters must never go down. So each rule is followed by its identity (chain, comment,
//! handle: nftables never reuses a handle within a table's life) and only what it counted
//! since the last read is added:
//!
//! - a rule seen before adds its increase;
//! - a rule not seen before was added since the last read, with a counter that started at
//!   zero then: it adds its whole value (except in [`Accumulator::baseline`], the first read
//!   after the agent starts, which only notes what a previous agent's rules had counted);
//! - a counter lower than last time was reset (`nft reset counters`, or a handle numbered
//!   again in a table that was deleted and re-created): it adds its whole value;
//! - a rule that is gone is forgotten. What it counted between the last read and its removal
//!   is lost: reads come every few seconds, so the loss is bounded by that interval.
//!
//! Pure: no kernel, no metrics registry. [`stale`] decides which series go away.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What identifies one rule's counter across reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleId {
    /// The chain.
    pub chain: String,
    /// The rule's comment.
    pub comment: String,
    /// The rule's handle.
    pub handle: u64,
}

/// The last value read from every rule's counter.
#[derive(Debug, Default)]
pub struct Accumulator {
    last: HashMap<RuleId, u64>,
}

impl Accumulator {
    /// Notes the counters' current values without counting them: what the rules counted
    /// before this agent started is not its to report.
    pub fn baseline(&mut self, readings: impl IntoIterator<Item = (RuleId, u64)>) {
        self.last = readings.into_iter().collect();
    }

    /// Takes a new reading of every counted rule (each with the series it feeds) and returns,
    /// per series, the packets counted since the last reading. Every series of the reading is
    /// in the result, with 0 when nothing new was counted.
    pub fn update<K: Ord>(
        &mut self,
        readings: impl IntoIterator<Item = (RuleId, K, u64)>,
    ) -> BTreeMap<K, u64> {
        let mut totals = BTreeMap::new();
        let mut seen = HashMap::with_capacity(self.last.len());
        for (id, key, packets) in readings {
            let delta = match self.last.get(&id) {
                Some(&previous) if packets >= previous => packets - previous,
                // New since the last read, or reset: all of it is new.
                _ => packets,
            };
            let total: &mut u64 = totals.entry(key).or_default();
            *total = total.saturating_add(delta);
            seen.insert(id, packets);
        }
        self.last = seen;
        totals
    }

    /// Rules followed.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no rule is followed.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// The published series to remove: no rule counts for them any more and `exists` says their
/// policy or namespace is gone. A series whose rules are gone for another reason (the node has
/// no selected pod right now) stays, at its last value, until then.
pub fn stale<K: Ord + Clone>(
    published: &BTreeSet<K>,
    counted: &BTreeMap<K, u64>,
    exists: impl Fn(&K) -> bool,
) -> Vec<K> {
    published
        .iter()
        .filter(|key| !counted.contains_key(*key) && !exists(key))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(chain: &str, handle: u64) -> RuleId {
        RuleId {
            chain: chain.into(),
            comment: "x/p ingress[0]".into(),
            handle,
        }
    }

    fn totals(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn a_rule_adds_what_it_counted_since_the_last_read() {
        let mut acc = Accumulator::default();
        assert_eq!(acc.update([(id("in_x_a", 5), "p", 3)]), totals(&[("p", 3)]));
        assert_eq!(acc.update([(id("in_x_a", 5), "p", 7)]), totals(&[("p", 4)]));
        assert_eq!(acc.update([(id("in_x_a", 5), "p", 7)]), totals(&[("p", 0)]));
    }

    #[test]
    fn rules_of_one_series_are_summed() {
        let mut acc = Accumulator::default();
        let read = |a, b, c| {
            [
                (id("in_x_a", 1), "p", a),
                (id("in_x_b", 2), "p", b),
                (id("in_x_b", 3), "q", c),
            ]
        };
        assert_eq!(acc.update(read(1, 2, 3)), totals(&[("p", 3), ("q", 3)]));
        assert_eq!(acc.update(read(2, 4, 3)), totals(&[("p", 3), ("q", 0)]));
    }

    #[test]
    fn a_refilled_chain_continues_the_series_from_its_new_rules() {
        // The chain is flushed and refilled: handle 5 goes, handle 9 comes with a counter that
        // started at zero when it was added, after the last read.
        let mut acc = Accumulator::default();
        let mut total = 0;
        total += acc.update([(id("in_x_a", 5), "p", 10)])["p"];
        total += acc.update([(id("in_x_a", 9), "p", 2)])["p"];
        total += acc.update([(id("in_x_a", 9), "p", 6)])["p"];
        assert_eq!(total, 16);
        assert_eq!(acc.len(), 1, "the gone rule is forgotten");
    }

    #[test]
    fn a_counter_that_went_down_was_reset_and_adds_its_whole_value() {
        // `nft reset counters`, or the table deleted and re-created by a repair with handles
        // numbered from the start again.
        let mut acc = Accumulator::default();
        acc.update([(id("in_x_a", 5), "p", 100)]);
        assert_eq!(acc.update([(id("in_x_a", 5), "p", 4)]), totals(&[("p", 4)]));
        assert_eq!(acc.update([(id("in_x_a", 5), "p", 9)]), totals(&[("p", 5)]));
    }

    #[test]
    fn the_baseline_counts_nothing_of_a_previous_agents_rules() {
        let mut acc = Accumulator::default();
        acc.baseline([(id("in_x_a", 5), 1000), (id("in_x_b", 6), 50)]);
        // The previous agent's rule counts on until the first apply replaces it.
        assert_eq!(
            acc.update([(id("in_x_a", 5), "p", 1003), (id("in_x_a", 20), "p", 1)]),
            totals(&[("p", 4)])
        );
    }

    #[test]
    fn the_same_handle_in_another_chain_or_with_another_comment_is_another_rule() {
        let mut acc = Accumulator::default();
        acc.update([(id("in_x_a", 5), "p", 10)]);
        let other_comment = RuleId {
            comment: "x/q ingress[0]".into(),
            ..id("in_x_a", 5)
        };
        assert_eq!(acc.update([(other_comment, "q", 12)]), totals(&[("q", 12)]));
        assert_eq!(
            acc.update([(id("in_x_b", 5), "p", 11)]),
            totals(&[("p", 11)])
        );
    }

    #[test]
    fn totals_never_overflow() {
        let mut acc = Accumulator::default();
        let read = [
            (id("in_x_a", 1), "p", u64::MAX),
            (id("in_x_b", 2), "p", u64::MAX),
        ];
        assert_eq!(acc.update(read), totals(&[("p", u64::MAX)]));
    }

    #[test]
    fn a_series_goes_once_no_rule_counts_for_it_and_its_object_is_gone() {
        let published: BTreeSet<&str> = ["counted", "idle", "deleted"].into();
        let counted = totals(&[("counted", 0)]);
        let exists = |k: &&str| *k != "deleted";
        assert_eq!(stale(&published, &counted, exists), ["deleted"]);
        // A series still counted stays even when the snapshot no longer has its object (the
        // kernel is about to catch up).
        assert!(stale(&published, &totals(&[("deleted", 1)]), exists).is_empty());
    }
}
