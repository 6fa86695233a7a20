//! The CloudEvents envelope of a message. The AMQP binding (reading it from headers and
//! properties, writing it onto deliveries) lives in [`crate::headers`]; the HTTP binding is
//! [`Envelope::http_headers`].

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::headers;

/// CloudEvents attributes and trace context of one event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Envelope {
    /// `id`: from `ce-id`, else the AMQP `message_id`, else derived (see [`Envelope::derive_id`]).
    pub id: String,
    /// `source`.
    pub source: Option<String>,
    /// `type`: from `ce-type`, else the AMQP `type` property.
    pub event_type: Option<String>,
    /// `time`: from `ce-time`, else the AMQP `timestamp`.
    pub time: Option<DateTime<Utc>>,
    /// `subject`.
    pub subject: Option<String>,
    /// `dataschema`.
    pub dataschema: Option<String>,
    /// W3C `traceparent`.
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    pub tracestate: Option<String>,
}

impl Envelope {
    /// Fills a missing id: the idempotency key when the flow has one, else a hash of the body,
    /// so a redelivered or re-sent event keeps its id.
    pub fn derive_id(&mut self, idempotency_key: Option<&str>, body: &[u8]) {
        if !self.id.is_empty() {
            return;
        }
        self.id = match idempotency_key {
            Some(key) => key.to_string(),
            None => content_id(body),
        };
    }

    /// The envelope as HTTP headers (the CloudEvents HTTP binding, binary mode).
    pub fn http_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (headers::CE_SPECVERSION, "1.0".to_string()),
            (headers::CE_ID, self.id.clone()),
        ];
        let optional = [
            (headers::CE_SOURCE, &self.source),
            (headers::CE_TYPE, &self.event_type),
            (headers::CE_SUBJECT, &self.subject),
            (headers::CE_DATASCHEMA, &self.dataschema),
            (headers::TRACEPARENT, &self.traceparent),
            (headers::TRACESTATE, &self.tracestate),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                out.push((name, v.clone()));
            }
        }
        if let Some(t) = &self.time {
            out.push((
                headers::CE_TIME,
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ));
        }
        out
    }
}

/// A stable id from the body bytes: `sha256:` and the first 32 hex digits of its SHA-256.
pub fn content_id(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("sha256:{}", &hex::encode(digest)[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable() {
        let mut a = Envelope::default();
        a.derive_id(None, b"{}");
        let mut b = Envelope::default();
        b.derive_id(None, b"{}");
        assert_eq!(a.id, b.id);
        assert!(a.id.starts_with("sha256:"));
        let mut c = Envelope::default();
        c.derive_id(Some("order-1"), b"{}");
        assert_eq!(c.id, "order-1");
    }
}
