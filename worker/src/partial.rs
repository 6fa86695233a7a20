//! The routes a requeued message has already been delivered to.
//!
//! A message is requeued only when one of its routes could not be settled (its retry park or
//! dead-letter could not be written, even after [`crate::process`] waited and tried again). Its
//! other routes may have been delivered already; when the broker brings the message back, only
//! the routes not yet delivered run, so a destination never gets an event twice because a
//! neighbouring route failed. The memory is per process and bounded: a redelivery to another
//! replica, or after a restart, delivers every route again (at least once).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::dedupe::{KeyHash, key_hash};

/// Most messages remembered; the oldest are forgotten first.
pub const MAX_ENTRIES: usize = 10_000;

/// How long a requeued message's delivered routes are remembered.
pub const TTL: Duration = Duration::from_secs(600);

/// Delivered routes (by index) of requeued messages, by idempotency key.
#[derive(Default)]
pub struct PartialDeliveries {
    inner: Mutex<HashMap<KeyHash, (Instant, Vec<usize>)>>,
}

impl PartialDeliveries {
    /// Remembers that the message of `key` was delivered to `routes` before it was requeued.
    pub fn remember(&self, key: &str, routes: Vec<usize>) {
        if routes.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.retain(|_, (at, _)| now.duration_since(*at) < TTL);
        if inner.len() >= MAX_ENTRIES
            && let Some(oldest) = inner.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| *k)
        {
            inner.remove(&oldest);
        }
        let entry = inner.entry(key_hash(key)).or_insert((now, Vec::new()));
        entry.0 = now;
        for r in routes {
            if !entry.1.contains(&r) {
                entry.1.push(r);
            }
        }
    }

    /// The routes the message of `key` was already delivered to, forgotten as they are read.
    pub fn take(&self, key: &str) -> Vec<usize> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.remove(&key_hash(key)) {
            Some((at, routes)) if at.elapsed() < TTL => routes,
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_routes_once_and_forgets_them_when_read() {
        let p = PartialDeliveries::default();
        assert!(p.take("k").is_empty());
        p.remember("k", vec![0, 2]);
        p.remember("k", vec![2]);
        assert_eq!(p.take("k"), vec![0, 2]);
        assert!(p.take("k").is_empty());
    }

    #[test]
    fn is_bounded() {
        let p = PartialDeliveries::default();
        for i in 0..MAX_ENTRIES + 10 {
            p.remember(&format!("k{i}"), vec![0]);
        }
        assert!(p.inner.lock().unwrap().len() <= MAX_ENTRIES);
        assert_eq!(p.take(&format!("k{}", MAX_ENTRIES + 9)), vec![0]);
    }
}
