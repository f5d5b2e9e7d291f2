//! A bounded map whose entries expire, with the clock passed in so tests are deterministic.
//!
//! Upstream uses `go-cache` (unbounded, a janitor goroutine). Here expired entries are dropped
//! lazily, and when the map is full the entry closest to expiry goes first, so a flood of new
//! keys (say, flow UUIDs) can't exhaust memory.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Default bound for the caches of the secadvisor transform and the logstatus mangler.
pub const DEFAULT_CAPACITY: usize = 100_000;

#[derive(Debug, Clone)]
struct Entry<V> {
    value: V,
    expires_ms: i64,
    seq: u64,
}

/// A map from `K` to `V` where each entry lives until its own deadline (ms since the epoch).
#[derive(Debug, Clone)]
pub struct TtlCache<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// (deadline, insertion number) → key: the eviction order.
    by_deadline: BTreeMap<(i64, u64), K>,
    capacity: usize,
    next_seq: u64,
}

impl<K: Eq + Hash + Clone, V> TtlCache<K, V> {
    /// An empty cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            entries: HashMap::new(),
            by_deadline: BTreeMap::new(),
            capacity: capacity.max(1),
            next_seq: 0,
        }
    }

    /// The live value for `key` at `now_ms`; an expired entry is removed and gives `None`.
    pub fn get<Q>(&mut self, key: &Q, now_ms: i64) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let expired = self.entries.get(key)?.expires_ms < now_ms;
        if expired {
            self.remove(key);
            return None;
        }
        self.entries.get(key).map(|e| &e.value)
    }

    /// Stores `value` for `ttl_ms` from `now_ms`, replacing any previous entry.
    pub fn insert(&mut self, key: K, value: V, ttl_ms: i64, now_ms: i64) {
        self.remove(&key);
        self.purge_expired(now_ms);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_deadline.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let expires_ms = now_ms.saturating_add(ttl_ms);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_deadline.insert((expires_ms, seq), key.clone());
        self.entries.insert(
            key,
            Entry {
                value,
                expires_ms,
                seq,
            },
        );
    }

    /// Removes `key`, returning its value (expired or not).
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.entries.remove(key)?;
        self.by_deadline.remove(&(entry.expires_ms, entry.seq));
        Some(entry.value)
    }

    /// Entries held, including expired ones not yet dropped.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every entry whose deadline is before `now_ms`.
    pub fn purge_expired(&mut self, now_ms: i64) {
        while let Some(entry) = self.by_deadline.first_entry() {
            if entry.key().0 >= now_ms {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_their_own_ttl() {
        let mut c = TtlCache::new(10);
        c.insert("a".to_string(), 1, 100, 0);
        c.insert("b".to_string(), 2, 10, 0);
        assert_eq!(c.get("a", 100), Some(&1));
        assert_eq!(c.get("b", 10), Some(&2));
        assert_eq!(c.get("b", 11), None);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get("a", 101), None);
        assert!(c.is_empty());
    }

    #[test]
    fn replacing_resets_the_deadline() {
        let mut c = TtlCache::new(10);
        c.insert("a".to_string(), 1, 10, 0);
        c.insert("a".to_string(), 2, 10, 5);
        assert_eq!(c.get("a", 15), Some(&2));
        assert_eq!(c.remove("a"), Some(2));
        assert!(c.is_empty());
    }

    #[test]
    fn a_full_cache_evicts_expired_then_soonest_to_expire() {
        let mut c = TtlCache::new(3);
        c.insert(1, (), 50, 0);
        c.insert(2, (), 10, 0);
        c.insert(3, (), 100, 0);
        c.insert(4, (), 100, 0); // full: 2 (soonest deadline) goes
        assert_eq!(c.len(), 3);
        assert!(c.get(&2, 1).is_none());
        assert!(c.get(&1, 1).is_some());
        c.insert(5, (), 100, 60); // 1 expired at 50: purged, nothing live evicted
        assert_eq!(c.len(), 3);
        assert!(c.get(&3, 60).is_some() && c.get(&4, 60).is_some());
        for k in 10..10_000 {
            c.insert(k, (), 1000, 60);
        }
        assert_eq!(c.len(), 3);
    }
}
