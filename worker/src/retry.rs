//! Retry bookkeeping: which delay tier a retry waits in, and the headers that carry a route's
//! attempt count across the round trip through a tier.

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::types::FieldTable;
use millrace_crds::worker_config::RetryConfig;

use crate::headers;

/// Picks the delay tier for a wanted delay: the longest tier not longer than `wanted_ms`, or
/// the shortest tier when every tier is longer. `None` when the flow has no tiers.
pub fn pick_tier(tiers_ms: &[u64], wanted_ms: u64) -> Option<usize> {
    if tiers_ms.is_empty() {
        return None;
    }
    let mut best: Option<(usize, u64)> = None;
    for (i, &t) in tiers_ms.iter().enumerate() {
        if t <= wanted_ms && best.is_none_or(|(_, b)| t > b) {
            best = Some((i, t));
        }
    }
    best.map(|(i, _)| i).or_else(|| {
        tiers_ms
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| **t)
            .map(|(i, _)| i)
    })
}

/// The retry state a message carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryState {
    /// The one route to attempt (a retry); `None` for a fresh message.
    pub route: Option<String>,
    /// Attempts already made on that route.
    pub attempts: u32,
    /// First failure, RFC 3339.
    pub first_failure: Option<String>,
}

impl RetryState {
    /// Reads the state from message headers.
    pub fn from_headers(table: Option<&FieldTable>) -> Self {
        Self {
            route: headers::get_str(table, headers::ROUTE).filter(|r| !r.is_empty()),
            attempts: headers::get_u32(table, headers::ATTEMPTS).unwrap_or(0),
            first_failure: headers::get_str(table, headers::FIRST_FAILURE),
        }
    }
}

/// Now, as written in [`headers::FIRST_FAILURE`].
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Headers of a message that goes back to a tier (`reason` absent) or to the DLQ.
#[allow(clippy::too_many_arguments)]
pub fn failure_headers(
    original: Option<&FieldTable>,
    flow: &str,
    route: Option<&str>,
    attempts: u32,
    first_failure: Option<&str>,
    error: &str,
    reason: Option<&str>,
) -> FieldTable {
    let mut table = original.cloned().unwrap_or_default();
    headers::set_str(&mut table, headers::FLOW, flow);
    match route {
        Some(r) => headers::set_str(&mut table, headers::ROUTE, r),
        None => headers::remove(&mut table, headers::ROUTE),
    }
    headers::set_int(&mut table, headers::ATTEMPTS, i64::from(attempts));
    let first = first_failure
        .map(str::to_string)
        .unwrap_or_else(now_rfc3339);
    headers::set_str(&mut table, headers::FIRST_FAILURE, &first);
    headers::set_error(&mut table, error);
    match reason {
        Some(r) => headers::set_str(&mut table, headers::REASON, r),
        None => headers::remove(&mut table, headers::REASON),
    }
    table
}

/// Wanted delay before attempt `next_attempt` of a route.
pub fn delay_before(retry: &RetryConfig, next_attempt: u32) -> u64 {
    retry.delay_ms(next_attempt)
}

/// Parses a first-failure header back (for the age of a dead-letter).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_chosen_by_wanted_delay() {
        let tiers = [1_000, 5_000, 30_000];
        assert_eq!(pick_tier(&tiers, 500), Some(0));
        assert_eq!(pick_tier(&tiers, 1_000), Some(0));
        assert_eq!(pick_tier(&tiers, 4_000), Some(0));
        assert_eq!(pick_tier(&tiers, 8_000), Some(1));
        assert_eq!(pick_tier(&tiers, 600_000), Some(2));
        assert_eq!(pick_tier(&[], 1), None);
    }

    #[test]
    fn retry_state_round_trips_through_headers() {
        let h = failure_headers(None, "ns/f", Some("erp"), 3, None, "boom", None);
        let s = RetryState::from_headers(Some(&h));
        assert_eq!(s.route.as_deref(), Some("erp"));
        assert_eq!(s.attempts, 3);
        assert!(parse_time(s.first_failure.as_deref().unwrap()).is_some());
        let h2 = failure_headers(Some(&h), "ns/f", None, 1, None, "bad", Some("invalid_json"));
        assert_eq!(RetryState::from_headers(Some(&h2)).route, None);
        assert_eq!(
            headers::get_str(Some(&h2), headers::REASON).as_deref(),
            Some("invalid_json")
        );
    }
}
