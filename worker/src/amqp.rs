//! The AMQP binding of a message: the pipeline's [`Message`] read from a delivery's body and
//! properties, and the CloudEvents envelope written onto deliveries as `ce-*` headers (the
//! CloudEvents AMQP binding, binary mode).

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::FieldTable;

use crate::headers::*;
use crate::pipeline::Message;
use crate::pipeline::envelope::Envelope;

/// Reads the envelope of an AMQP message. `id` stays empty when the message carries none;
/// call [`Envelope::derive_id`] once the idempotency key is known.
pub fn envelope_of(properties: &BasicProperties) -> Envelope {
    let h = properties.headers().as_ref();
    let get = |name: &str| get_str(h, name).filter(|s| !s.is_empty());
    let time = get(CE_TIME)
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            properties
                .timestamp()
                .and_then(|secs| i64::try_from(secs).ok())
                .and_then(|secs| DateTime::from_timestamp(secs, 0))
        });
    Envelope {
        id: get(CE_ID)
            .or_else(|| {
                properties
                    .message_id()
                    .as_ref()
                    .map(|m| m.as_str().to_string())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_default(),
        source: get(CE_SOURCE),
        event_type: get(CE_TYPE).or_else(|| {
            properties
                .kind()
                .as_ref()
                .map(|k| k.as_str().to_string())
                .filter(|s| !s.is_empty())
        }),
        time,
        subject: get(CE_SUBJECT),
        dataschema: get(CE_DATASCHEMA),
        traceparent: get(TRACEPARENT),
        tracestate: get(TRACESTATE),
    }
}

/// Writes `envelope` as `ce-*` and trace headers.
pub fn write_envelope(envelope: &Envelope, table: &mut FieldTable) {
    set_str(table, CE_SPECVERSION, "1.0");
    set_str(table, CE_ID, &envelope.id);
    let optional = [
        (CE_SOURCE, &envelope.source),
        (CE_TYPE, &envelope.event_type),
        (CE_SUBJECT, &envelope.subject),
        (CE_DATASCHEMA, &envelope.dataschema),
        (TRACEPARENT, &envelope.traceparent),
        (TRACESTATE, &envelope.tracestate),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            set_str(table, name, v);
        }
    }
    if let Some(t) = &envelope.time {
        set_str(
            table,
            CE_TIME,
            &t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
    }
}

/// The pipeline's view of an AMQP message: its body, content type and envelope.
pub fn message<'a>(body: &'a [u8], properties: &'a BasicProperties) -> Message<'a> {
    Message {
        body,
        content_type: properties.content_type().as_ref().map(|c| c.as_str()),
        envelope: envelope_of(properties),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::ShortString;

    #[test]
    fn reads_ce_headers_and_falls_back_to_properties() {
        let mut h = FieldTable::default();
        set_str(&mut h, CE_TYPE, "t.v1");
        set_str(&mut h, CE_TIME, "2026-01-02T03:04:05Z");
        set_str(&mut h, TRACEPARENT, "00-abc-def-01");
        let props = BasicProperties::default()
            .with_headers(h)
            .with_message_id(ShortString::from("m-1"));
        let e = envelope_of(&props);
        assert_eq!(e.id, "m-1");
        assert_eq!(e.event_type.as_deref(), Some("t.v1"));
        assert_eq!(e.time.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(e.traceparent.as_deref(), Some("00-abc-def-01"));
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
        write_envelope(&e, &mut h);
        let back = envelope_of(&BasicProperties::default().with_headers(h));
        assert_eq!(back, e);
    }
}
