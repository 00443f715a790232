//! [`Lru`]: a bounded map of entries by key, the least recently recorded evicted first and
//! counted. What the windows of recent flows share: the agent's window behind `/flows`
//! ([`crate::flows::Window`]) and the denied flows `suggest` reads ([`crate::hints::Aggregate`]).
//! A repeat of a key is merged into its entry (the caller says how) and makes it the most
//! recent; so a flood of new keys costs a bounded amount of memory and pushes out old entries
//! rather than being ignored.

use std::collections::BTreeMap;

/// At most `capacity` entries by key, the least recently recorded evicted first.
#[derive(Debug, Clone)]
pub struct Lru<K, V> {
    capacity: usize,
    /// Each entry with when it was last recorded, in `clock` ticks.
    entries: BTreeMap<K, (V, u64)>,
    /// Keys by when they were last recorded, oldest first.
    by_age: BTreeMap<u64, K>,
    clock: u64,
    evicted: u64,
}

impl<K: Ord + Clone, V> Lru<K, V> {
    /// A map that keeps at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: BTreeMap::new(),
            by_age: BTreeMap::new(),
            clock: 0,
            evicted: 0,
        }
    }

    /// Records `value` under `key`: merged into the entry the key has (`merge(old, new)`), or
    /// a new entry, which may evict the least recently recorded one. Returns the entry evicted
    /// (at zero capacity, the one refused: nothing is kept and each new key counts as
    /// evicted).
    pub fn record(&mut self, key: K, value: V, merge: impl FnOnce(V, V) -> V) -> Option<(K, V)> {
        self.clock += 1;
        if let Some((old, seen)) = self.entries.remove(&key) {
            self.by_age.remove(&seen);
            self.by_age.insert(self.clock, key.clone());
            self.entries.insert(key, (merge(old, value), self.clock));
            return None;
        }
        if self.capacity == 0 {
            self.evicted += 1;
            return Some((key, value));
        }
        let mut evicted = None;
        if self.entries.len() >= self.capacity
            && let Some((_, oldest)) = self.by_age.pop_first()
            && let Some((value, _)) = self.entries.remove(&oldest)
        {
            self.evicted += 1;
            evicted = Some((oldest, value));
        }
        self.by_age.insert(self.clock, key.clone());
        self.entries.insert(key, (value, self.clock));
        evicted
    }

    /// Whether `key` has an entry.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// The entries' values, in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.values().map(|(value, _)| value)
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many entries were evicted (or refused at zero capacity) since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The most entries kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many keys the age index holds; always [`Lru::len`] (for the tests that check
    /// memory stays bounded).
    pub fn indexed(&self) -> usize {
        self.by_age.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(
        lru: &mut Lru<&'static str, u32>,
        key: &'static str,
        value: u32,
    ) -> Option<&'static str> {
        lru.record(key, value, |old, new| old + new)
            .map(|(key, _)| key)
    }

    #[test]
    fn a_repeated_key_is_merged_and_becomes_the_most_recent() {
        let mut lru = Lru::new(2);
        assert_eq!(add(&mut lru, "a", 1), None);
        assert_eq!(add(&mut lru, "b", 1), None);
        assert_eq!(add(&mut lru, "a", 2), None);
        assert_eq!(add(&mut lru, "c", 1), Some("b"), "b was the least recent");
        assert_eq!(lru.values().copied().collect::<Vec<_>>(), [3, 1]);
        assert_eq!((lru.len(), lru.evicted(), lru.indexed()), (2, 1, 2));
        assert!(lru.contains(&"a") && !lru.contains(&"b"));
    }

    #[test]
    fn zero_capacity_refuses_every_new_key() {
        let mut lru = Lru::new(0);
        assert_eq!(lru.record("a", 1, |_, new| new), Some(("a", 1)));
        assert!(lru.is_empty());
        assert_eq!(lru.evicted(), 1);
    }
}
