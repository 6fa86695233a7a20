//! The benchmark's business event: a 1 KiB "production completed" event from a MES, its contract,
//! the jq transform into an ERP production confirmation, and that confirmation's contract.

use std::collections::BTreeMap;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};

/// CloudEvents `type` of the input events.
pub const EVENT_TYPE: &str = "com.acme.mfg.production.completed.v1";

/// Routing key the events are published with.
pub const ROUTING_KEY: &str = "production.completed.berlin";

/// Size of every input event body, in bytes.
pub const EVENT_BYTES: usize = 1024;

/// Builds the body of event `seq`, padded to exactly [`EVENT_BYTES`]. `sent_us` is the publish time in
/// microseconds since the bench started; it travels through the transform so that latency can be
/// measured at the destination.
pub fn body(seq: u64, sent_us: u64) -> Vec<u8> {
    let mut event = json!({
        "id": format!("evt-{seq:010}"),
        "prodOrderId": format!("PO-4711-{:06}", seq % 1_000_000),
        "site": "berlin",
        "segment": seq % 8,
        "seq": seq,
        "sentUs": sent_us,
        "material": "MAT-100234",
        "workCenter": "WC-ASSEMBLY-03",
        "produced": [
            {"batch": format!("B-{:08}", seq % 100_000_000), "qty": {"value": "12.5", "unit": "PC"}},
            {"batch": format!("S-{:08}", seq % 100_000_000), "qty": {"value": "0.5", "unit": "KG"}}
        ],
        "operator": "shift-b",
        "note": ""
    });
    let unpadded = serde_json::to_vec(&event).expect("a JSON value always serializes");
    let pad = EVENT_BYTES.saturating_sub(unpadded.len());
    event["note"] = Value::String("x".repeat(pad));
    let out = serde_json::to_vec(&event).expect("a JSON value always serializes");
    debug_assert_eq!(out.len(), EVENT_BYTES.max(unpadded.len()));
    out
}

/// AMQP properties of event `seq`: persistent, JSON, with the CloudEvents headers.
pub fn properties(seq: u64) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "ce-id".into(),
        AMQPValue::LongString(format!("evt-{seq:010}").into()),
    );
    headers.insert(
        "ce-source".into(),
        AMQPValue::LongString("mes/berlin".into()),
    );
    headers.insert("ce-type".into(), AMQPValue::LongString(EVENT_TYPE.into()));
    headers.insert(
        "ce-time".into(),
        AMQPValue::LongString("2026-11-26T08:00:00Z".into()),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_headers(headers)
}

/// Reads the publish time back from an event or a transformed confirmation.
pub fn sent_us(body: &[u8]) -> Option<u64> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("sentUs")?.as_u64()
}

/// JSON Schema of the input contract.
pub fn input_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["id", "prodOrderId", "site", "seq", "sentUs", "material", "produced"],
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "prodOrderId": {"type": "string", "pattern": "^PO-[0-9]+-[0-9]+$"},
            "site": {"type": "string", "enum": ["berlin", "lyon", "brno"]},
            "segment": {"type": "integer", "minimum": 0},
            "seq": {"type": "integer", "minimum": 0},
            "sentUs": {"type": "integer", "minimum": 0},
            "material": {"type": "string"},
            "workCenter": {"type": "string"},
            "produced": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["batch", "qty"],
                    "properties": {
                        "batch": {"type": "string"},
                        "qty": {
                            "type": "object",
                            "required": ["value", "unit"],
                            "properties": {
                                "value": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
                                "unit": {"type": "string", "enum": ["PC", "KG", "M"]}
                            }
                        }
                    }
                }
            },
            "operator": {"type": "string"},
            "note": {"type": "string"}
        }
    })
}

/// The jq transform: a production confirmation for the ERP. It keeps `sentUs` (for latency) and the
/// note (so that the output stays about 1 KiB, like the input).
pub const TRANSFORM: &str = r#"{
  id: .id,
  order: .prodOrderId,
  plant: $plants[.site],
  segment: .segment,
  seq: .seq,
  sentUs: .sentUs,
  material: .material,
  qty: (.produced[0].qty.value | tonumber),
  unit: .produced[0].qty.unit,
  batch: .produced[0].batch,
  note: .note
}"#;

/// The lookup table the transform reads as `$plants`.
pub fn plant_codes() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("berlin".to_string(), "1000".to_string()),
        ("lyon".to_string(), "2000".to_string()),
        ("brno".to_string(), "3000".to_string()),
    ])
}

/// JSON Schema of the output contract (the ERP production confirmation).
pub fn output_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["id", "order", "plant", "qty", "unit", "sentUs"],
        "properties": {
            "id": {"type": "string"},
            "order": {"type": "string"},
            "plant": {"type": "string", "pattern": "^[0-9]{4}$"},
            "qty": {"type": "number", "minimum": 0},
            "unit": {"type": "string"},
            "sentUs": {"type": "integer"}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_one_kib_and_carry_their_send_time() {
        for seq in [0, 7, 123_456_789] {
            let b = body(seq, 42_000);
            assert_eq!(b.len(), EVENT_BYTES);
            assert_eq!(sent_us(&b), Some(42_000));
        }
    }
}
