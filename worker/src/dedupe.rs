//! The in-process dedupe window of a route: keys delivered recently are not delivered again.
//!
//! It catches repeats inside one worker process (redeliveries after a channel loss, duplicate
//! publishes upstream). Across processes the `Idempotency-Key` and `message_id` let the
//! destination deduplicate.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys remembered per route; the oldest are forgotten first.
pub const MAX_KEYS: usize = 100_000;

/// Keys delivered within the last `window`.
pub struct DedupeWindow {
    window: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
    in_flight: HashSet<String>,
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
    key: String,
}

impl ClaimGuard<'_> {
    /// Records the delivery and releases the claim.
    pub fn delivered(self) {
        self.window.insert(&self.key);
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.window.inner.lock() {
            inner.in_flight.remove(&self.key);
        }
    }
}

impl DedupeWindow {
    /// A window of `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Claims `key` for one delivery, so that concurrent repeats of it wait for the outcome
    /// instead of being delivered twice.
    pub fn claim(&self, key: &str) -> Claim<'_> {
        let now = Instant::now();
        let Ok(mut inner) = self.inner.lock() else {
            return Claim::Busy;
        };
        self.expire(&mut inner, now);
        if inner.seen.contains_key(key) {
            return Claim::Delivered;
        }
        if !inner.in_flight.insert(key.to_string()) {
            return Claim::Busy;
        }
        Claim::Mine(ClaimGuard {
            window: self,
            key: key.to_string(),
        })
    }

    /// Whether `key` was delivered within the window.
    pub fn contains(&self, key: &str) -> bool {
        let now = Instant::now();
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        self.expire(&mut inner, now);
        inner.seen.contains_key(key)
    }

    /// Records a delivery of `key`.
    pub fn insert(&self, key: &str) {
        let now = Instant::now();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        self.expire(&mut inner, now);
        if inner.seen.insert(key.to_string(), now).is_none() {
            inner.order.push_back((now, key.to_string()));
        }
        while inner.seen.len() > MAX_KEYS {
            match inner.order.pop_front() {
                Some((_, k)) => {
                    inner.seen.remove(&k);
                }
                None => break,
            }
        }
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            if let Some((_, k)) = inner.order.pop_front() {
                inner.seen.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_only() {
        let w = DedupeWindow::new(Duration::from_millis(50));
        assert!(!w.contains("a"));
        w.insert("a");
        assert!(w.contains("a"));
        assert!(!w.contains("b"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!w.contains("a"));
    }

    #[test]
    fn concurrent_claims_wait_for_the_first() {
        let w = DedupeWindow::new(Duration::from_secs(60));
        let Claim::Mine(first) = w.claim("k") else {
            panic!("first claim")
        };
        assert!(matches!(w.claim("k"), Claim::Busy));
        drop(first);
        // A failed attempt releases the key for the next one.
        let Claim::Mine(second) = w.claim("k") else {
            panic!("second claim")
        };
        second.delivered();
        assert!(matches!(w.claim("k"), Claim::Delivered));
    }
}
