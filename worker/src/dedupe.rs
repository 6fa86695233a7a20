//! The in-process dedupe window of a route: keys delivered recently are not delivered again.
//!
//! It catches repeats inside one worker process (redeliveries after a channel loss, duplicate
//! publishes upstream). Across processes and restarts the `Idempotency-Key` and `message_id` let
//! the destination deduplicate.
//!
//! The window remembers a key's [`KeyHash`], never the key itself, so a key that is a whole JSON
//! value rendered as text costs what a short one costs. It is bounded twice: by time (a key is
//! forgotten `window` after its delivery) and by memory (a byte budget, [`DEFAULT_MAX_BYTES`]
//! unless [`DedupeWindow::new_with`] says otherwise); when the budget is full the oldest keys
//! are forgotten first.

use std::collections::{HashSet, VecDeque};
use std::mem::size_of;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};

/// The first 16 bytes of the SHA-256 of an idempotency key: what the window remembers.
///
/// Two different keys share a hash with probability 2^-128. Among `n` keys remembered at once
/// the chance that any two collide is at most n²/2^129: about 2^-95 for 2^17 keys, more than the
/// default budget holds. A collision would skip the second key's delivery as a repeat. Keys
/// come from upstream systems, so the hash must also resist chosen keys: finding a pair that
/// collides on SHA-256's first 128 bits takes about 2^64 hashes, and matching a given key 2^128.
pub type KeyHash = [u8; 16];

/// The [`KeyHash`] of `key`.
pub fn key_hash(key: &str) -> KeyHash {
    let digest = Sha256::digest(key.as_bytes());
    let mut hash = KeyHash::default();
    hash.copy_from_slice(&digest[..size_of::<KeyHash>()]);
    hash
}

/// Bytes one remembered key costs at most, whatever the key's length: its slot in the seen set
/// (the hash and the table's control byte, at the table's 7/8 load factor) and its slot in the
/// order queue (delivery time and hash). Both tables grow by doubling, so just after growing
/// they can be half empty: the cost counts each slot twice.
pub const ENTRY_BYTES: usize =
    2 * ((size_of::<KeyHash>() + 1) * 8 / 7 + 1 + size_of::<(Instant, KeyHash)>());

/// Default memory budget of one route's window: 8 MiB, about 80,000 keys.
pub const DEFAULT_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Keys delivered within the last `window`, within a memory budget.
pub struct DedupeWindow {
    window: Duration,
    max_entries: usize,
    evictions: Option<Counter>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Keys delivered within the window. The default (randomly seeded) hasher stays: keys are
    /// chosen upstream, and a fixed hasher would let them pile into one bucket.
    seen: HashSet<KeyHash>,
    /// The keys of `seen` with their delivery time, oldest first; each key appears once.
    order: VecDeque<(Instant, KeyHash)>,
    /// Keys whose delivery is under way. At most one per message in flight, so the flow's
    /// prefetch bounds it, not the budget.
    in_flight: HashSet<KeyHash>,
}

/// The answer of [`DedupeWindow::claim`].
pub enum Claim<'a> {
    /// The key was delivered within the window: skip it.
    Delivered,
    /// Another delivery of the key is under way: wait and ask again.
    Busy,
    /// This caller delivers the key; the guard releases the claim when dropped.
    Mine(ClaimGuard<'a>),
}

/// An in-flight claim on a key (see [`DedupeWindow::claim`]).
pub struct ClaimGuard<'a> {
    window: &'a DedupeWindow,
    key: KeyHash,
}

impl ClaimGuard<'_> {
    /// Records the delivery and releases the claim.
    pub fn delivered(self) {
        self.window.insert_hash(self.key, Instant::now());
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        self.window.lock().in_flight.remove(&self.key);
    }
}

impl DedupeWindow {
    /// A window of `window` with the default budget ([`DEFAULT_MAX_BYTES`]) and no eviction
    /// counter.
    pub fn new(window: Duration) -> Self {
        Self::new_with(window, DEFAULT_MAX_BYTES, None)
    }

    /// A window of `window` that remembers at most `max_bytes` worth of keys ([`ENTRY_BYTES`]
    /// each, and at least one key). `evictions`, when given, counts the keys forgotten because
    /// the budget was full before their time was up.
    pub fn new_with(window: Duration, max_bytes: usize, evictions: Option<Counter>) -> Self {
        Self {
            window,
            max_entries: (max_bytes / ENTRY_BYTES).max(1),
            evictions,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Claims `key` for one delivery, so that concurrent repeats of it wait for the outcome
    /// instead of being delivered twice.
    pub fn claim(&self, key: &str) -> Claim<'_> {
        let hash = key_hash(key);
        let mut inner = self.lock();
        self.expire(&mut inner, Instant::now());
        if inner.seen.contains(&hash) {
            return Claim::Delivered;
        }
        if !inner.in_flight.insert(hash) {
            return Claim::Busy;
        }
        Claim::Mine(ClaimGuard {
            window: self,
            key: hash,
        })
    }

    /// Whether `key` was delivered within the window.
    pub fn contains(&self, key: &str) -> bool {
        self.contains_at(key, Instant::now())
    }

    /// Records a delivery of `key`.
    pub fn insert(&self, key: &str) {
        self.insert_hash(key_hash(key), Instant::now());
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the remembered keys count against the budget ([`ENTRY_BYTES`] each).
    pub fn bytes(&self) -> usize {
        self.len() * ENTRY_BYTES
    }

    fn contains_at(&self, key: &str, now: Instant) -> bool {
        let hash = key_hash(key);
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        inner.seen.contains(&hash)
    }

    fn insert_hash(&self, hash: KeyHash, now: Instant) {
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        // A repeat keeps its first delivery time: the window runs from the first delivery.
        if inner.seen.insert(hash) {
            inner.order.push_back((now, hash));
        }
        let mut evicted = 0;
        while inner.seen.len() > self.max_entries {
            let Some((_, oldest)) = inner.order.pop_front() else {
                break;
            };
            inner.seen.remove(&oldest);
            evicted += 1;
        }
        if evicted > 0
            && let Some(counter) = &self.evictions
        {
            counter.inc_by(evicted);
        }
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((at, _)) = inner.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            if let Some((_, hash)) = inner.order.pop_front() {
                inner.seen.remove(&hash);
            }
        }
    }

    /// The sets hold plain hashes and no code panics while holding the lock, so a poisoned lock
    /// still guards consistent sets; refusing it would leave every claim `Busy` for good.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_a_key_once_its_time_is_up() {
        let w = DedupeWindow::new(Duration::from_secs(10));
        let start = Instant::now();
        w.insert_hash(key_hash("a"), start);
        w.insert_hash(key_hash("b"), start + Duration::from_secs(4));
        assert!(w.contains_at("a", start + Duration::from_secs(9)));
        assert!(!w.contains_at("c", start + Duration::from_secs(9)));
        // `a` was delivered 10 s ago, `b` 6 s ago.
        assert!(!w.contains_at("a", start + Duration::from_secs(10)));
        assert!(w.contains_at("b", start + Duration::from_secs(10)));
        assert!(!w.contains_at("b", start + Duration::from_secs(14)));
        assert!(w.is_empty());
    }

    #[test]
    fn a_repeat_does_not_extend_the_window() {
        let w = DedupeWindow::new(Duration::from_secs(10));
        let start = Instant::now();
        w.insert_hash(key_hash("a"), start);
        w.insert_hash(key_hash("a"), start + Duration::from_secs(5));
        assert_eq!(w.len(), 1);
        assert!(!w.contains_at("a", start + Duration::from_secs(10)));
    }

    #[test]
    fn long_keys_cost_what_short_ones_cost() {
        let short = DedupeWindow::new(Duration::from_secs(60));
        let long = DedupeWindow::new(Duration::from_secs(60));
        // Keys that differ only in their last character, after 64 KiB in common.
        let prefix = "x".repeat(64 * 1024);
        for i in 0..100 {
            short.insert(&format!("k{i}"));
            long.insert(&format!("{prefix}{i}"));
        }
        assert_eq!(short.len(), 100);
        assert_eq!(long.len(), 100);
        assert_eq!(long.bytes(), short.bytes());
        assert_eq!(long.bytes(), 100 * ENTRY_BYTES);
        assert!((0..100).all(|i| long.contains(&format!("{prefix}{i}"))));
        assert!(!long.contains(&format!("{prefix}100")));
        // What the window holds per key does not grow with the key.
        assert_eq!(size_of::<ClaimGuard<'_>>(), size_of::<usize>() + 16);
    }

    #[test]
    fn an_entry_costs_what_the_docs_say() {
        // docs/worker.md quotes the cost and the keys the default budget holds.
        assert_eq!(ENTRY_BYTES, 104);
        assert_eq!(DEFAULT_MAX_BYTES / ENTRY_BYTES, 80_659);
    }

    #[test]
    fn the_byte_budget_forgets_the_oldest_keys_first() {
        let evictions = Counter::default();
        let w = DedupeWindow::new_with(
            Duration::from_secs(3600),
            3 * ENTRY_BYTES + ENTRY_BYTES / 2,
            Some(evictions.clone()),
        );
        for key in ["a", "b", "c"] {
            w.insert(key);
        }
        assert_eq!(evictions.get(), 0);
        w.insert("d");
        assert!(!w.contains("a"), "the oldest key is forgotten");
        assert!(w.contains("b") && w.contains("c") && w.contains("d"));
        // A repeat of a remembered key takes no room.
        w.insert("b");
        assert!(w.contains("b") && w.contains("c") && w.contains("d"));
        w.insert("e");
        w.insert("f");
        assert!(!w.contains("b") && !w.contains("c"));
        assert!(w.contains("d") && w.contains("e") && w.contains("f"));
        assert_eq!(w.bytes(), 3 * ENTRY_BYTES);
        assert!(w.bytes() <= 3 * ENTRY_BYTES + ENTRY_BYTES / 2);
        assert_eq!(evictions.get(), 3);
    }

    #[test]
    fn time_expiry_is_not_an_eviction() {
        let evictions = Counter::default();
        let w = DedupeWindow::new_with(
            Duration::from_secs(1),
            2 * ENTRY_BYTES,
            Some(evictions.clone()),
        );
        let start = Instant::now();
        w.insert_hash(key_hash("a"), start);
        w.insert_hash(key_hash("b"), start);
        w.insert_hash(key_hash("c"), start + Duration::from_secs(2));
        assert_eq!(w.len(), 1);
        assert_eq!(evictions.get(), 0);
    }

    #[test]
    fn a_budget_below_one_entry_still_remembers_the_last_key() {
        let w = DedupeWindow::new_with(Duration::from_secs(60), 0, None);
        w.insert("a");
        assert!(w.contains("a"));
        w.insert("b");
        assert!(!w.contains("a") && w.contains("b"));
    }

    #[test]
    fn concurrent_claims_wait_for_the_first() {
        let w = DedupeWindow::new(Duration::from_secs(60));
        let Claim::Mine(first) = w.claim("k") else {
            panic!("first claim")
        };
        assert!(matches!(w.claim("k"), Claim::Busy));
        // Another key is not held up.
        assert!(matches!(w.claim("other"), Claim::Mine(_)));
        drop(first);
        // A failed attempt releases the key for the next one.
        let Claim::Mine(second) = w.claim("k") else {
            panic!("second claim")
        };
        second.delivered();
        assert!(matches!(w.claim("k"), Claim::Delivered));
    }

    #[test]
    fn one_claim_wins_across_threads() {
        let w = DedupeWindow::new(Duration::from_secs(60));
        let key = format!("{}-tail", "y".repeat(10_000));
        let Claim::Mine(held) = w.claim(&key) else {
            panic!("first claim")
        };
        std::thread::scope(|s| {
            let others: Vec<_> = (0..4)
                .map(|_| s.spawn(|| matches!(w.claim(&key), Claim::Busy)))
                .collect();
            for other in others {
                assert!(other.join().expect("claiming thread"), "a repeat waits");
            }
        });
        held.delivered();
        std::thread::scope(|s| {
            let others: Vec<_> = (0..4)
                .map(|_| s.spawn(|| matches!(w.claim(&key), Claim::Delivered)))
                .collect();
            for other in others {
                assert!(
                    other.join().expect("claiming thread"),
                    "a repeat is skipped"
                );
            }
        });
    }
}
