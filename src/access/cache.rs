//! [`Cache`]: review results kept for a while, so a reader (or a scraper polling `/flows`) costs
//! the API server one TokenReview and one SubjectAccessReview per few minutes, not one per
//! request; as the kubelet's webhook authenticator and authorizer cache theirs.
//!
//! Bounded: when full, expired entries go first, then the one closest to expiring, so a flood
//! of distinct tokens costs a fixed amount of memory. Pure: the caller passes the time.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Values by key, each until its own expiry, at most `capacity` of them.
#[derive(Debug)]
pub struct Cache<K, V> {
    capacity: usize,
    entries: HashMap<K, (V, Instant)>,
}

impl<K: Eq + Hash + Clone, V> Cache<K, V> {
    /// An empty cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
        }
    }

    /// The value of `key`, unless it expired by `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<&V> {
        self.entries
            .get(key)
            .filter(|(_, expires)| now < *expires)
            .map(|(value, _)| value)
    }

    /// Keeps `value` for `key` from `now` for `ttl`, replacing what `key` had.
    pub fn insert(&mut self, key: K, value: V, now: Instant, ttl: Duration) {
        if self.capacity == 0 {
            return;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, (_, expires)| now < *expires);
            if self.entries.len() >= self.capacity
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(key, _)| key.clone())
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(key, (value, now + ttl));
    }

    /// How many entries are kept, expired ones included until they make room.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_value_is_served_until_it_expires() {
        let start = Instant::now();
        let mut cache = Cache::new(10);
        cache.insert("token", true, start, MINUTE);
        assert_eq!(cache.get(&"token", start + MINUTE / 2), Some(&true));
        assert_eq!(cache.get(&"token", start + MINUTE), None);
        assert_eq!(cache.get(&"other", start), None);
    }

    #[test]
    fn when_full_expired_entries_go_first_then_the_one_closest_to_expiring() {
        let start = Instant::now();
        let mut cache = Cache::new(2);
        cache.insert("short", 1, start, MINUTE);
        cache.insert("long", 2, start, 5 * MINUTE);
        cache.insert("new", 3, start, 2 * MINUTE);
        assert_eq!(cache.get(&"short", start), None, "closest to expiring");
        assert_eq!(cache.get(&"long", start), Some(&2));
        assert_eq!(cache.get(&"new", start), Some(&3));
        let later = start + 3 * MINUTE;
        cache.insert("newer", 4, later, MINUTE);
        assert_eq!(cache.len(), 2, "the expired entry made room");
        assert_eq!(cache.get(&"long", later), Some(&2));
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_capacity() {
        let start = Instant::now();
        let mut cache = Cache::new(100);
        for n in 0..10_000 {
            cache.insert(n, (), start, MINUTE);
        }
        assert_eq!(cache.len(), 100);
    }

    #[test]
    fn replacing_a_key_when_full_evicts_nothing() {
        let start = Instant::now();
        let mut cache = Cache::new(2);
        cache.insert("a", 1, start, MINUTE);
        cache.insert("b", 2, start, MINUTE);
        cache.insert("a", 3, start, MINUTE);
        assert_eq!(cache.get(&"a", start), Some(&3));
        assert_eq!(cache.get(&"b", start), Some(&2));
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut cache = Cache::new(0);
        cache.insert("a", 1, Instant::now(), MINUTE);
        assert!(cache.is_empty());
    }
}
