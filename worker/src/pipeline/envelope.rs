//! The CloudEvents envelope of a message: read from AMQP headers and properties, written onto
//! deliveries.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::FieldTable;
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
    /// Reads the envelope of an AMQP message. `id` stays empty when the message carries none;
    /// call [`Envelope::derive_id`] once the idempotency key is known.
    pub fn from_amqp(properties: &BasicProperties) -> Self {
        let h = properties.headers().as_ref();
        let get = |name: &str| headers::get_str(h, name).filter(|s| !s.is_empty());
        let time = get(headers::CE_TIME)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
            .or_else(|| {
                properties
                    .timestamp()
                    .and_then(|secs| i64::try_from(secs).ok())
                    .and_then(|secs| DateTime::from_timestamp(secs, 0))
            });
        Self {
            id: get(headers::CE_ID)
                .or_else(|| {
                    properties
                        .message_id()
                        .as_ref()
                        .map(|m| m.as_str().to_string())
                        .filter(|s| !s.is_empty())
                })
                .unwrap_or_default(),
            source: get(headers::CE_SOURCE),
            event_type: get(headers::CE_TYPE).or_else(|| {
                properties
                    .kind()
                    .as_ref()
                    .map(|k| k.as_str().to_string())
                    .filter(|s| !s.is_empty())
            }),
            time,
            subject: get(headers::CE_SUBJECT),
            dataschema: get(headers::CE_DATASCHEMA),
            traceparent: get(headers::TRACEPARENT),
            tracestate: get(headers::TRACESTATE),
        }
    }

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

    /// Writes the envelope as `ce-*` and trace headers.
    pub fn write_headers(&self, table: &mut FieldTable) {
        headers::set_str(table, headers::CE_SPECVERSION, "1.0");
        headers::set_str(table, headers::CE_ID, &self.id);
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
                headers::set_str(table, name, v);
            }
        }
        if let Some(t) = &self.time {
            headers::set_str(
                table,
                headers::CE_TIME,
                &t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
        }
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
    use lapin::types::ShortString;

    #[test]
    fn reads_ce_headers_and_falls_back_to_properties() {
        let mut h = FieldTable::default();
        headers::set_str(&mut h, headers::CE_TYPE, "t.v1");
        headers::set_str(&mut h, headers::CE_TIME, "2026-01-02T03:04:05Z");
        headers::set_str(&mut h, headers::TRACEPARENT, "00-abc-def-01");
        let props = BasicProperties::default()
            .with_headers(h)
            .with_message_id(ShortString::from("m-1"));
        let e = Envelope::from_amqp(&props);
        assert_eq!(e.id, "m-1");
        assert_eq!(e.event_type.as_deref(), Some("t.v1"));
        assert_eq!(e.time.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(e.traceparent.as_deref(), Some("00-abc-def-01"));
    }

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

    #[test]
    fn writes_what_it_reads() {
        let e = Envelope {
            id: "x".into(),
            source: Some("/mes".into()),
            event_type: Some("t".into()),
            time: DateTime::from_timestamp(1_700_000_000, 0),
            ..Default::default()
        };
        let mut h = FieldTable::default();
        e.write_headers(&mut h);
        let back = Envelope::from_amqp(&BasicProperties::default().with_headers(h));
        assert_eq!(back, e);
    }
}
