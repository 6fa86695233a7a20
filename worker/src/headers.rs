//! AMQP header names the worker reads and writes, and helpers to read and write them safely.
//!
//! CloudEvents attributes travel as `ce-*` headers (the CloudEvents AMQP binding, binary mode)
//! and W3C trace context as `traceparent`/`tracestate`. Millrace's own bookkeeping uses the
//! `x-millrace-` prefix.
//!
//! The retry-state headers ([`RETRY_STATE`]) are internal to one flow: they travel on messages
//! the flow parks in its own retry tiers and dead-letter queue, and the worker honours them only
//! on a message that came back from one of its tiers (see `retry::RetryState::of_arrival`).
//! Deliveries to destinations never carry them; they name their origin with [`FROM_FLOW`] and
//! [`FROM_ROUTE`] instead, so a flow that consumes another flow's deliveries starts afresh.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// CloudEvents `id`.
pub const CE_ID: &str = "ce-id";
/// CloudEvents `source`.
pub const CE_SOURCE: &str = "ce-source";
/// CloudEvents `type`.
pub const CE_TYPE: &str = "ce-type";
/// CloudEvents `time` (RFC 3339).
pub const CE_TIME: &str = "ce-time";
/// CloudEvents `subject`.
pub const CE_SUBJECT: &str = "ce-subject";
/// CloudEvents `dataschema`.
pub const CE_DATASCHEMA: &str = "ce-dataschema";
/// CloudEvents `specversion`.
pub const CE_SPECVERSION: &str = "ce-specversion";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state.
pub const TRACESTATE: &str = "tracestate";

/// Flow that parked the message in a retry tier or dead-lettered it.
pub const FLOW: &str = "x-millrace-flow";
/// Route a retry or dead-letter belongs to. On a retry, only this route is attempted.
pub const ROUTE: &str = "x-millrace-route";
/// Delay (ms) of the retry tier the worker parked the message in. Set only when the worker
/// parks a retry; a message without it is never taken for a retry.
pub const RETRY_TIER: &str = "x-millrace-retry-tier";
/// Attempts already made on [`ROUTE`] (on retries and dead-letters).
pub const ATTEMPTS: &str = "x-millrace-attempts";
/// Time of the first failure (RFC 3339), kept across retries.
pub const FIRST_FAILURE: &str = "x-millrace-first-failure";
/// The last error, truncated.
pub const LAST_ERROR: &str = "x-millrace-last-error";
/// Dead-letter reason class (see `DeadLetterReason`).
pub const REASON: &str = "x-millrace-reason";
/// The deterministic delivery key (also the AMQP `message_id` of deliveries).
pub const IDEMPOTENCY_KEY: &str = "x-millrace-idempotency-key";
/// On a delivery to a destination: the flow that delivered it (`<namespace>/<flow>`).
pub const FROM_FLOW: &str = "x-millrace-from-flow";
/// On a delivery to a destination: the route that delivered it.
pub const FROM_ROUTE: &str = "x-millrace-from-route";

/// Set by quorum queues on a redelivered message: how many times it was given back before.
pub const DELIVERY_COUNT: &str = "x-delivery-count";

/// A flow's internal retry state. Written on retries and dead-letters; never on deliveries.
pub const RETRY_STATE: [&str; 7] = [
    FLOW,
    ROUTE,
    ATTEMPTS,
    FIRST_FAILURE,
    LAST_ERROR,
    REASON,
    RETRY_TIER,
];

/// Longest error text carried in [`LAST_ERROR`].
const MAX_ERROR_BYTES: usize = 1024;

/// Reads header `name` as text: strings (lossy UTF-8), integers and booleans.
pub fn get_str(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    let value = headers?.inner().get(name)?;
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice()).into_owned()),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        other => get_int_value(other).map(|i| i.to_string()),
    }
}

/// Reads header `name` as an integer (numbers, or text holding a number).
pub fn get_u32(headers: Option<&FieldTable>, name: &str) -> Option<u32> {
    let value = headers?.inner().get(name)?;
    get_int_value(value)
        .and_then(|i| u32::try_from(i).ok())
        .or_else(|| get_str(headers, name).and_then(|s| s.trim().parse().ok()))
}

fn get_int_value(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortShortUInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortUInt(i) => Some(i64::from(*i)),
        AMQPValue::LongInt(i) => Some(i64::from(*i)),
        AMQPValue::LongUInt(i) => Some(i64::from(*i)),
        AMQPValue::LongLongInt(i) => Some(*i),
        AMQPValue::Timestamp(t) => i64::try_from(*t).ok(),
        _ => None,
    }
}

/// Sets a text header.
pub fn set_str(headers: &mut FieldTable, name: &str, value: &str) {
    headers.insert(
        ShortString::from(name),
        AMQPValue::LongString(LongString::from(value)),
    );
}

/// Sets an integer header.
pub fn set_int(headers: &mut FieldTable, name: &str, value: i64) {
    headers.insert(ShortString::from(name), AMQPValue::LongLongInt(value));
}

/// Sets [`LAST_ERROR`], truncated to a bounded size on a character boundary.
pub fn set_error(headers: &mut FieldTable, error: &str) {
    set_str(headers, LAST_ERROR, truncate(error, MAX_ERROR_BYTES));
}

/// Removes a header.
pub fn remove(headers: &mut FieldTable, name: &str) {
    let mut map = headers.inner().clone();
    map.remove(name);
    *headers = FieldTable::from(map);
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A short string (AMQP properties such as `message_id` hold at most 255 bytes), cut to fit.
pub fn short_string(s: &str) -> ShortString {
    ShortString::from(truncate(s, 255))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_strings_and_numbers_of_any_width() {
        let mut h = FieldTable::default();
        set_str(&mut h, CE_ID, "abc");
        h.insert("n".into(), AMQPValue::ShortUInt(7));
        h.insert("s".into(), AMQPValue::LongString("12".into()));
        assert_eq!(get_str(Some(&h), CE_ID).as_deref(), Some("abc"));
        assert_eq!(get_u32(Some(&h), "n"), Some(7));
        assert_eq!(get_u32(Some(&h), "s"), Some(12));
        assert_eq!(get_str(None, CE_ID), None);
        remove(&mut h, CE_ID);
        assert_eq!(get_str(Some(&h), CE_ID), None);
    }

    #[test]
    fn truncates_on_char_boundaries() {
        let s = "é".repeat(200);
        let t = short_string(&s);
        assert!(t.as_str().len() <= 255);
        assert_eq!(truncate("abc", 10), "abc");
    }
}
