//! A bounded map whose entries expire, with the clock passed in so tests are deterministic.
//!
//! Upstream uses `go-cache` (unbounded, a janitor goroutine). Here expired entries are dropped
//! lazily, and when the map is full the entry closest to expiry goes first, so a flood of new
//! keys (say, flow UUIDs) can't exhaust memory.
//!
//! These caches sit on the per-flow path (several lookups and one refresh per flow), so:
//! - a refresh of a key already held allocates nothing and moves no key: the expiry order is a
//!   min-heap of `(deadline, seq, hash)` in which refreshed or removed entries leave stale items
//!   behind, recognised by their `seq` and skipped when they surface;
//! - keys hash with foldhash (randomly seeded, several times faster than SipHash on short
//!   strings), once per operation;
//! - short keys (flow UUIDs, addresses) live in the slot itself, so comparing a key costs no
//!   second cache miss: with tens of thousands of flows, that miss was most of a lookup.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

/// Default bound for the caches of the secadvisor transform and the logstatus mangler.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Longest key kept inline (a 36-character UUID with room to spare).
const INLINE_KEY: usize = 46;

/// A key, inline when short.
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(key: &str) -> Self {
        let src = key.as_bytes();
        if src.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..src.len()].copy_from_slice(src);
            Key::Inline {
                len: src.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(src.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

struct Slot<V> {
    key: Key,
    value: V,
    expires_ms: i64,
    /// Insertion number, unique: tells the live heap item of this slot from stale ones.
    seq: u64,
}

/// `(deadline, seq, hash)` per insert or refresh, soonest first.
type Deadlines = BinaryHeap<Reverse<(i64, u64, u64)>>;

/// A map from string keys to `V` where each entry lives until its own deadline (ms since the
/// epoch).
pub struct TtlCache<V> {
    slots: HashTable<Slot<V>>,
    hasher: RandomState,
    /// The eviction order.
    deadlines: Deadlines,
    capacity: usize,
    next_seq: u64,
}

impl<V> fmt::Debug for TtlCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtlCache")
            .field("len", &self.slots.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<V> TtlCache<V> {
    /// An empty cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            slots: HashTable::new(),
            hasher: RandomState::default(),
            deadlines: BinaryHeap::new(),
            capacity: capacity.max(1),
            next_seq: 0,
        }
    }

    /// The live value for `key` at `now_ms`; an expired entry is removed and gives `None`.
    pub fn get(&mut self, key: &str, now_ms: i64) -> Option<&V> {
        let key = key.as_bytes();
        let hash = self.hasher.hash_one(key);
        let Ok(entry) = self.slots.find_entry(hash, |s| s.key.as_bytes() == key) else {
            return None;
        };
        if entry.get().expires_ms < now_ms {
            entry.remove();
            return None;
        }
        Some(&entry.into_mut().value)
    }

    /// Reads the entries of `keys` without using them, so that the lookups which follow find
    /// them in the CPU cache. A batch's keys looked up in one tight loop have their memory
    /// fetched in parallel; looked up one per record, between other work, each waits alone.
    pub fn prefetch<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        for key in keys {
            let key = key.as_bytes();
            let found = self
                .slots
                .find(self.hasher.hash_one(key), |s| s.key.as_bytes() == key);
            std::hint::black_box(found.map(|s| s.expires_ms));
        }
    }

    /// Stores `value` for `ttl_ms` from `now_ms`, replacing any previous entry. The key is
    /// copied only when it is new.
    pub fn insert(&mut self, key: &str, value: V, ttl_ms: i64, now_ms: i64) {
        self.update(key, ttl_ms, now_ms, |_| value);
    }

    /// Stores `f(live value or None)` for `ttl_ms` from `now_ms` and returns it: a read and a
    /// write for one lookup, where [`get`](Self::get) then [`insert`](Self::insert) take two.
    pub fn update(
        &mut self,
        key: &str,
        ttl_ms: i64,
        now_ms: i64,
        f: impl FnOnce(Option<&V>) -> V,
    ) -> &V {
        // Expired entries go first, so whatever `f` is shown is live.
        self.purge_expired(now_ms);
        self.compact();
        let hash = self.hasher.hash_one(key.as_bytes());
        let expires_ms = now_ms.saturating_add(ttl_ms);
        let seq = self.next_seq;
        self.next_seq += 1;
        let found = self
            .slots
            .find_entry(hash, |s| s.key.as_bytes() == key.as_bytes());
        let slot = match found {
            Ok(entry) => {
                let slot = entry.into_mut();
                slot.value = f(Some(&slot.value));
                slot.expires_ms = expires_ms;
                slot.seq = seq;
                slot
            }
            Err(absent) => {
                let slots = absent.into_table();
                while slots.len() >= self.capacity && evict_soonest(slots, &mut self.deadlines) {}
                let slot = Slot {
                    key: Key::new(key),
                    value: f(None),
                    expires_ms,
                    seq,
                };
                let hasher = &self.hasher;
                slots
                    .insert_unique(hash, slot, |s| hasher.hash_one(s.key.as_bytes()))
                    .into_mut()
            }
        };
        // Pushed last: an eviction above must not pop this entry's own item.
        self.deadlines.push(Reverse((expires_ms, seq, hash)));
        &slot.value
    }

    /// Removes `key`, returning its value (expired or not).
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let key = key.as_bytes();
        let hash = self.hasher.hash_one(key);
        let entry = self
            .slots
            .find_entry(hash, |s| s.key.as_bytes() == key)
            .ok()?;
        Some(entry.remove().0.value)
    }

    /// Entries held, including expired ones not yet dropped.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Drops every entry whose deadline is before `now_ms`.
    pub fn purge_expired(&mut self, now_ms: i64) {
        while let Some(&Reverse((deadline, _, _))) = self.deadlines.peek() {
            if deadline >= now_ms {
                break;
            }
            evict_soonest(&mut self.slots, &mut self.deadlines);
        }
    }

    /// Rebuilds the heap from the live entries once stale items outnumber them, so refreshes
    /// can't grow it without bound.
    fn compact(&mut self) {
        if self.deadlines.len() <= 2 * self.slots.len() + 1024 {
            return;
        }
        let hasher = &self.hasher;
        self.deadlines = self
            .slots
            .iter()
            .map(|s| Reverse((s.expires_ms, s.seq, hasher.hash_one(s.key.as_bytes()))))
            .collect();
    }
}

/// Pops the soonest heap item and removes its entry if the item is that entry's live one;
/// false when the heap is empty.
fn evict_soonest<V>(slots: &mut HashTable<Slot<V>>, deadlines: &mut Deadlines) -> bool {
    let Some(Reverse((_, seq, hash))) = deadlines.pop() else {
        return false;
    };
    if let Ok(entry) = slots.find_entry(hash, |s| s.seq == seq) {
        entry.remove();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_their_own_ttl() {
        let mut c = TtlCache::new(10);
        c.insert("a", 1, 100, 0);
        c.insert("b", 2, 10, 0);
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
        c.insert("a", 1, 10, 0);
        c.insert("a", 2, 10, 5);
        assert_eq!(c.get("a", 15), Some(&2));
        assert_eq!(c.remove("a"), Some(2));
        assert!(c.is_empty());
    }

    #[test]
    fn a_refreshed_entry_outlives_its_first_deadline_and_the_heap_stays_bounded() {
        let mut c = TtlCache::new(10);
        c.insert("a", 1, 10, 0);
        for now in 1..100_000 {
            c.insert("a", now, 10, now);
        }
        // The first deadline (10) and every later one but the last have passed.
        assert_eq!(c.get("a", 100_005), Some(&99_999));
        assert!(c.deadlines.len() <= 2 * c.len() + 1024 + 1);
        c.purge_expired(100_009);
        assert_eq!(c.len(), 1, "due after 100_009, not before");
        c.purge_expired(100_010);
        assert!(c.is_empty());
    }

    #[test]
    fn update_sees_only_live_values() {
        let mut c = TtlCache::new(10);
        assert_eq!(*c.update("a", 10, 0, |old| old.map_or(1, |n| n + 1)), 1);
        assert_eq!(*c.update("a", 10, 5, |old| old.map_or(1, |n| n + 1)), 2);
        // Refreshed at 5: live until 15, gone after.
        assert_eq!(*c.update("a", 10, 15, |old| old.map_or(1, |n| n + 1)), 3);
        assert_eq!(*c.update("a", 10, 26, |old| old.map_or(1, |n| n + 1)), 1);
    }

    #[test]
    fn a_new_entry_in_a_full_cache_keeps_its_own_deadline() {
        let mut c = TtlCache::new(1);
        c.insert("old", (), 100, 0);
        // Its deadline (1) is sooner than the one it evicts (100).
        c.insert("new", (), 1, 0);
        assert!(c.get("old", 0).is_none());
        c.purge_expired(2);
        assert!(c.is_empty(), "the new entry expired on time");
    }

    #[test]
    fn prefetch_changes_nothing() {
        let mut c = TtlCache::new(10);
        c.insert("live", 1, 100, 0);
        c.insert("expired", 2, 10, 0);
        c.prefetch(["live", "expired", "absent", &"z".repeat(100)]);
        assert_eq!(c.len(), 2, "nothing added, nothing purged");
        assert_eq!(c.get("live", 50), Some(&1));
        assert_eq!(c.get("expired", 50), None);
        assert_eq!(c.get("absent", 50), None);
    }

    #[test]
    fn short_and_long_keys_are_told_apart() {
        let mut c = TtlCache::new(10);
        let keys = ["", "a", &"x".repeat(46), &"x".repeat(47), &"y".repeat(300)];
        for (i, k) in keys.iter().enumerate() {
            c.insert(k, i, 10, 0);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(c.get(k, 0), Some(&i), "{k}");
        }
        assert_eq!(c.get(&"x".repeat(45), 0), None);
        assert_eq!(c.remove(&"y".repeat(300)), Some(4));
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn a_full_cache_evicts_expired_then_soonest_to_expire() {
        let mut c = TtlCache::new(3);
        c.insert("1", (), 50, 0);
        c.insert("2", (), 10, 0);
        c.insert("3", (), 100, 0);
        c.insert("4", (), 100, 0); // full: 2 (soonest deadline) goes
        assert_eq!(c.len(), 3);
        assert!(c.get("2", 1).is_none());
        assert!(c.get("1", 1).is_some());
        c.insert("5", (), 100, 60); // 1 expired at 50: purged, nothing live evicted
        assert_eq!(c.len(), 3);
        assert!(c.get("3", 60).is_some() && c.get("4", 60).is_some());
        for k in 10..10_000 {
            c.insert(&k.to_string(), (), 1000, 60);
        }
        assert_eq!(c.len(), 3);
    }
}
