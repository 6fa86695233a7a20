//! Retry bookkeeping: what becomes of a failed attempt (retry tier, in-place retry or
//! dead-letter), which delay tier a retry waits in, and the headers that carry a route's attempt
//! count across the round trip through a tier.
//!
//! Those headers are trusted only on a message that came back from this flow's own tiers
//! ([`RetryState::of_arrival`]). Any other message is a fresh event, whatever `x-millrace-*`
//! headers it carries: another flow's delivery, or a producer's forgery, never decides which of
//! this flow's routes run.

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::types::FieldTable;
use millrace_crds::worker_config::RetryConfig;
use millrace_topology::ROUTING_KEY_RETRY;

use crate::headers;
use crate::pipeline::DeadLetterReason;

/// How one delivery attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptFailure {
    /// Retrying cannot help; dead-letter with this reason.
    Permanent(DeadLetterReason),
    /// The destination may accept the event later; it may have said when (`Retry-After`).
    Transient {
        /// The destination's own wait, in ms.
        retry_after_ms: Option<u64>,
    },
}

/// Where a flow's transient failures wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryPlace<'a> {
    /// In the flow's delay tiers (their delays in ms), the message acknowledged meanwhile.
    Tiers(&'a [u64]),
    /// In the worker, holding the queue (ordered partitions).
    InPlace,
}

/// What becomes of a route after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Write the message to the dead-letter queue.
    DeadLetter {
        /// The reason class.
        reason: DeadLetterReason,
        /// The failure was transient, but the flow has no retry tier to wait in.
        no_tier: bool,
    },
    /// Park the message in the retry tier of this delay.
    Park {
        /// The tier's delay (ms).
        tier_ms: u64,
    },
    /// Wait this long, then attempt again in place.
    RetryInPlace {
        /// The wait (ms).
        delay_ms: u64,
    },
}

/// Decides what becomes of a route whose attempt number `attempt` (1-based) failed. Pure.
pub fn settle_failure(
    failure: AttemptFailure,
    attempt: u32,
    retry: &RetryConfig,
    place: RetryPlace<'_>,
) -> Settlement {
    let dead_letter = |reason, no_tier| Settlement::DeadLetter { reason, no_tier };
    if let AttemptFailure::Permanent(reason) = failure {
        return dead_letter(reason, false);
    }
    if attempt >= retry.max_attempts {
        return dead_letter(DeadLetterReason::RetriesExhausted, false);
    }
    // A destination that asks for a longer wait gets it; a shorter one does not shorten ours.
    let asked = match failure {
        AttemptFailure::Transient { retry_after_ms } => retry_after_ms.unwrap_or(0),
        AttemptFailure::Permanent(_) => 0,
    };
    let delay_ms = retry.delay_ms(attempt + 1).max(asked);
    match place {
        RetryPlace::InPlace => Settlement::RetryInPlace { delay_ms },
        RetryPlace::Tiers(tiers) => match pick_tier(tiers, delay_ms) {
            Some(i) => Settlement::Park { tier_ms: tiers[i] },
            None => dead_letter(DeadLetterReason::RetriesExhausted, true),
        },
    }
}

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

/// Where a message came from, as the broker stamped it on the delivery. A producer chooses
/// where it publishes, but cannot make a message arrive from an exchange it did not publish to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival<'a> {
    /// The exchange the message was published or dead-lettered to.
    pub exchange: &'a str,
    /// Its routing key there.
    pub routing_key: &'a str,
}

impl RetryState {
    /// The retry state of a message that arrived at flow `flow` (`<namespace>/<flow>`), whose
    /// own exchange is `flow_exchange`. The headers are honoured only when all of these hold:
    /// - the message came from `flow_exchange` with key `retry`, the key the flow's tiers
    ///   dead-letter expired messages with;
    /// - [`headers::FLOW`] names this flow;
    /// - it carries [`headers::RETRY_TIER`], which the worker sets only when it parks a retry.
    ///
    /// Any other message is fresh: every route its predicates select is attempted.
    pub fn of_arrival(
        table: Option<&FieldTable>,
        flow: &str,
        flow_exchange: &str,
        arrival: Arrival<'_>,
    ) -> Self {
        let returned_from_tier =
            arrival.exchange == flow_exchange && arrival.routing_key == ROUTING_KEY_RETRY;
        let parked_by_this_flow = headers::get_str(table, headers::FLOW).as_deref() == Some(flow)
            && headers::get_str(table, headers::RETRY_TIER).is_some();
        if returned_from_tier && parked_by_this_flow {
            Self::from_headers(table)
        } else {
            Self::default()
        }
    }

    /// Reads the state from message headers, trusting them.
    fn from_headers(table: Option<&FieldTable>) -> Self {
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

/// Where a failed message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parking<'a> {
    /// The flow's retry tier of this delay (ms).
    RetryTier(u64),
    /// The flow's dead-letter queue, with this reason class.
    DeadLetter(&'a str),
}

/// Headers of a message that goes back to a tier or to the DLQ: the original headers, with
/// every retry-state header of [`headers::RETRY_STATE`] written afresh by this flow (so none of
/// another flow's, or a producer's, survives).
pub fn failure_headers(
    original: Option<&FieldTable>,
    flow: &str,
    route: Option<&str>,
    attempts: u32,
    first_failure: Option<&str>,
    error: &str,
    parking: Parking<'_>,
) -> FieldTable {
    let mut table = original.cloned().unwrap_or_default();
    // The count belongs to the queue that delivered the message; where it goes next counts
    // afresh.
    headers::remove(&mut table, headers::DELIVERY_COUNT);
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
    match parking {
        Parking::RetryTier(delay_ms) => {
            headers::remove(&mut table, headers::REASON);
            headers::set_str(&mut table, headers::RETRY_TIER, &delay_ms.to_string());
        }
        Parking::DeadLetter(reason) => {
            headers::set_str(&mut table, headers::REASON, reason);
            headers::remove(&mut table, headers::RETRY_TIER);
        }
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

    const FLOW: &str = "ns/f";
    const EXCHANGE: &str = "millrace.ns.f";
    const FROM_TIER: Arrival<'static> = Arrival {
        exchange: EXCHANGE,
        routing_key: ROUTING_KEY_RETRY,
    };

    fn parked(flow: &str) -> FieldTable {
        failure_headers(
            None,
            flow,
            Some("erp"),
            3,
            None,
            "boom",
            Parking::RetryTier(1_000),
        )
    }

    #[test]
    fn retry_state_round_trips_through_a_tier() {
        let h = parked(FLOW);
        let s = RetryState::of_arrival(Some(&h), FLOW, EXCHANGE, FROM_TIER);
        assert_eq!(s.route.as_deref(), Some("erp"));
        assert_eq!(s.attempts, 3);
        assert!(parse_time(s.first_failure.as_deref().unwrap()).is_some());
        assert_eq!(
            headers::get_str(Some(&h), headers::RETRY_TIER).as_deref(),
            Some("1000")
        );
        let h2 = failure_headers(
            Some(&h),
            FLOW,
            None,
            1,
            None,
            "bad",
            Parking::DeadLetter("invalid_json"),
        );
        assert_eq!(headers::get_str(Some(&h2), headers::ROUTE), None);
        assert_eq!(headers::get_str(Some(&h2), headers::RETRY_TIER), None);
        assert_eq!(
            headers::get_str(Some(&h2), headers::REASON).as_deref(),
            Some("invalid_json")
        );
    }

    #[test]
    fn retry_headers_are_honoured_only_on_this_flows_own_retries() {
        let mut unmarked = parked(FLOW);
        headers::remove(&mut unmarked, headers::RETRY_TIER);
        let source = Arrival {
            exchange: "mes.events",
            routing_key: "production.completed",
        };
        let ingest = Arrival {
            exchange: EXCHANGE,
            routing_key: "ingest",
        };
        let cases: [(&str, FieldTable, Arrival<'_>, bool); 7] = [
            ("own retry, back from a tier", parked(FLOW), FROM_TIER, true),
            (
                "another flow's retry state",
                parked("ns/other"),
                FROM_TIER,
                false,
            ),
            ("no marker of a parked retry", unmarked, FROM_TIER, false),
            (
                "forged, from the source exchange",
                parked(FLOW),
                source,
                false,
            ),
            ("forged, through ingest", parked(FLOW), ingest, false),
            (
                "another flow's tier",
                parked(FLOW),
                Arrival {
                    exchange: "millrace.ns.other",
                    routing_key: ROUTING_KEY_RETRY,
                },
                false,
            ),
            ("no headers at all", FieldTable::default(), FROM_TIER, false),
        ];
        for (case, table, arrival, honoured) in cases {
            let s = RetryState::of_arrival(Some(&table), FLOW, EXCHANGE, arrival);
            assert_eq!(s != RetryState::default(), honoured, "{case}: {s:?}");
        }
        assert_eq!(
            RetryState::of_arrival(None, FLOW, EXCHANGE, FROM_TIER),
            RetryState::default()
        );
    }

    #[test]
    fn failures_are_settled_by_class_attempt_and_place() {
        let retry = RetryConfig {
            max_attempts: 4,
            backoff: millrace_crds::common::Backoff::Exponential,
            initial_delay_ms: 1_000,
            max_delay_ms: 8_000,
        };
        let tiers = [1_000, 4_000];
        let dead = |reason, no_tier| Settlement::DeadLetter { reason, no_tier };
        let http4xx = AttemptFailure::Permanent(DeadLetterReason::Http4xx);
        let transient = AttemptFailure::Transient {
            retry_after_ms: None,
        };
        let asked = |ms| AttemptFailure::Transient {
            retry_after_ms: Some(ms),
        };
        let cases = [
            (
                http4xx,
                1,
                RetryPlace::Tiers(&tiers),
                dead(DeadLetterReason::Http4xx, false),
            ),
            (
                http4xx,
                1,
                RetryPlace::InPlace,
                dead(DeadLetterReason::Http4xx, false),
            ),
            (
                transient,
                1,
                RetryPlace::Tiers(&tiers),
                Settlement::Park { tier_ms: 1_000 },
            ),
            (
                transient,
                3,
                RetryPlace::Tiers(&tiers),
                Settlement::Park { tier_ms: 4_000 },
            ),
            (
                transient,
                2,
                RetryPlace::InPlace,
                Settlement::RetryInPlace { delay_ms: 2_000 },
            ),
            (
                transient,
                4,
                RetryPlace::Tiers(&tiers),
                dead(DeadLetterReason::RetriesExhausted, false),
            ),
            (
                transient,
                9,
                RetryPlace::InPlace,
                dead(DeadLetterReason::RetriesExhausted, false),
            ),
            (
                transient,
                1,
                RetryPlace::Tiers(&[]),
                dead(DeadLetterReason::RetriesExhausted, true),
            ),
            // Retry-After: a longer wait picks a longer tier, a shorter one changes nothing.
            (
                asked(5_000),
                1,
                RetryPlace::Tiers(&tiers),
                Settlement::Park { tier_ms: 4_000 },
            ),
            (
                asked(10),
                2,
                RetryPlace::InPlace,
                Settlement::RetryInPlace { delay_ms: 2_000 },
            ),
            (
                asked(6_000),
                2,
                RetryPlace::InPlace,
                Settlement::RetryInPlace { delay_ms: 6_000 },
            ),
        ];
        for (failure, attempt, place, want) in cases {
            assert_eq!(
                settle_failure(failure, attempt, &retry, place),
                want,
                "{failure:?} on attempt {attempt} with {place:?}"
            );
        }
    }
}
