//! How long a failing object waits before its next reconcile: exponential per object, from
//! 5 s up to 5 min, with jitter so that objects failing together do not retry together, and
//! back to the start once a pass succeeds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The first delay after a failure.
pub const INITIAL: Duration = Duration::from_secs(5);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(300);
/// Jitter: the delay is spread over ±this fraction.
pub const JITTER: f64 = 0.2;

/// The delay after the `failures`-th consecutive failure (1-based), with `spread` in [-1, 1]
/// choosing where in the jitter band it falls.
pub fn delay(failures: u32, spread: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let base = (INITIAL.as_secs_f64() * 2f64.powi(exponent as i32)).min(MAX.as_secs_f64());
    let jittered = base * (1.0 + JITTER * spread.clamp(-1.0, 1.0));
    Duration::from_secs_f64(jittered.min(MAX.as_secs_f64()))
}

/// Consecutive failures per object (`Kind/namespace/name`).
#[derive(Debug, Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// Records a failure of `key` and returns how long to wait.
    pub fn failed(&self, key: &str) -> Duration {
        let n = match self.failures.lock() {
            Ok(mut f) => {
                let n = f.entry(key.to_string()).or_default();
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        delay(n, rand::random_range(-1.0..=1.0))
    }

    /// Forgets the failures of `key` after a pass that succeeded.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }

    /// Consecutive failures of `key` so far.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .ok()
            .and_then(|f| f.get(key).copied())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_five_seconds_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| delay(n, 0.0).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay(u32::MAX, 0.0), MAX);
    }

    #[test]
    fn jitter_spreads_within_the_band_and_never_past_the_cap() {
        assert_eq!(delay(1, -1.0), Duration::from_secs(4));
        assert_eq!(delay(1, 1.0), Duration::from_secs(6));
        assert_eq!(delay(20, 1.0), MAX);
        assert_eq!(delay(20, -1.0), Duration::from_secs(240));
    }

    #[test]
    fn success_resets_the_count() {
        let b = ErrorBackoff::default();
        let first = b.failed("IntegrationFlow/ns/a");
        let second = b.failed("IntegrationFlow/ns/a");
        assert!(first <= Duration::from_secs(6) && second >= Duration::from_secs(8));
        assert_eq!(b.failures("IntegrationFlow/ns/a"), 2);
        assert_eq!(b.failures("IntegrationFlow/ns/b"), 0);
        b.succeeded("IntegrationFlow/ns/a");
        assert_eq!(b.failures("IntegrationFlow/ns/a"), 0);
        assert!(b.failed("IntegrationFlow/ns/a") <= Duration::from_secs(6));
    }
}
