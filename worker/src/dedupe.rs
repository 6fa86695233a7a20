//! The in-process dedupe window of a route: keys delivered recently are not delivered again.
//!
//! It catches repeats inside one worker process (redeliveries after a channel loss, duplicate
//! publishes upstream). Across processes the `Idempotency-Key` and `message_id` let the
//! destination deduplicate.

use std::collections::{HashMap, VecDeque};
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
}

impl DedupeWindow {
    /// A window of `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            inner: Mutex::new(Inner::default()),
        }
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
}
