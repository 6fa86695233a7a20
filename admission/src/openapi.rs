//! The OpenAPI value checks, run on the defaulted manifest as the apiserver runs them.
//!
//! Every node reports its own problems and the walk goes on, so one refusal lists them all. The
//! checks follow the apiserver's OpenAPI validator: `null` only where `nullable`; integers whole
//! and within their `format`; `enum`; `pattern`, `format: date-time` and length bounds on strings;
//! numeric bounds; item counts; property counts (which, when broken, stop the checks inside that
//! object, as in the apiserver); `required`. Field paths are the validator's: list items in
//! brackets, map values after a dot.
//!
//! Unknown fields and wrong shapes are not reported here: the shape check refuses them first.

use serde_json::{Map, Number, Value};

use crate::field_path;
use crate::schema::{Format, JsonType, SchemaNode};
use crate::structure::wrong_type;
use crate::violation::{Violation, ViolationKind};

/// Checks `value` against `node` and everything below it.
pub(crate) fn validate(node: &SchemaNode, value: &Value, path: &str, out: &mut Vec<Violation>) {
    if value.is_null() {
        let typed = node.kind.is_some() || node.int_or_string;
        if typed && !node.nullable {
            out.push(wrong_type(path, value, node.type_name()));
        }
        // `enum` applies to `null` too: a nullable enum field must list null to take it.
        if let Some(allowed) = &node.enumeration
            && !allowed.contains(value)
        {
            out.push(not_supported(path, value, allowed));
        }
        return;
    }
    if let Value::Number(number) = value
        && !number_fits(node, number, path, out)
    {
        return;
    }
    if let Some(allowed) = &node.enumeration
        && !allowed.iter().any(|candidate| same_value(candidate, value))
    {
        out.push(not_supported(path, value, allowed));
    }
    match value {
        Value::String(text) => validate_string(node, text, path, out),
        Value::Number(number) => validate_number(node, number, path, out),
        Value::Array(items) => validate_array(node, items, path, out),
        Value::Object(fields) => validate_object(node, fields, path, out),
        _ => {}
    }
}

/// Whether a number is of the node's numeric type; reports it when not.
fn number_fits(node: &SchemaNode, number: &Number, path: &str, out: &mut Vec<Violation>) -> bool {
    let whole = is_whole(number);
    if node.int_or_string && !whole {
        out.push(wrong_type(
            path,
            &Value::Number(number.clone()),
            node.type_name(),
        ));
        return false;
    }
    if node.kind != Some(JsonType::Integer) {
        return true;
    }
    let fits = whole
        && match node.format {
            Some(Format::Int32) => number
                .as_f64()
                .is_some_and(|f| (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&f)),
            Some(Format::Int64) => {
                number.is_i64() || number.as_f64().is_some_and(|f| f.abs() < 9.2e18)
            }
            _ => true,
        };
    if !fits {
        let expected = node.format_name.as_deref().unwrap_or("integer");
        out.push(Violation::new(
            path,
            ViolationKind::Type,
            format!(
                "Invalid value: {number}: must be of type {expected}; write a whole number in range"
            ),
        ));
    }
    // The apiserver still checks the bounds of a number of the wrong integer type.
    true
}

fn validate_string(node: &SchemaNode, text: &str, path: &str, out: &mut Vec<Violation>) {
    let length = text.chars().count() as u64;
    if let Some(max) = node.max_length
        && length > max
    {
        out.push(Violation::new(
            path,
            ViolationKind::TooLong,
            format!("Too long: may not be more than {max} characters (has {length})"),
        ));
    }
    if let Some(min) = node.min_length
        && length < min
    {
        out.push(Violation::new(
            path,
            ViolationKind::TooShort,
            format!(
                "Invalid value: {}: must be at least {min} characters long",
                quoted(text)
            ),
        ));
    }
    if let Some(pattern) = &node.pattern {
        match &pattern.regex {
            Ok(regex) if regex.is_match(text) => {}
            Ok(_) => out.push(Violation::new(
                path,
                ViolationKind::Invalid,
                format!(
                    "Invalid value: {}: must match '{}'",
                    quoted(text),
                    pattern.source
                ),
            )),
            Err(e) => out.push(Violation::new(
                path,
                ViolationKind::Invalid,
                format!(
                    "Invalid value: {}: the schema's pattern '{}' cannot be checked here: {e}",
                    quoted(text),
                    pattern.source
                ),
            )),
        }
    }
    if node.format == Some(Format::DateTime) && !is_date_time(text) {
        out.push(Violation::new(
            path,
            ViolationKind::Invalid,
            format!(
                "Invalid value: {}: must be a date-time, for example 2006-01-02T15:04:05Z",
                quoted(text)
            ),
        ));
    }
}

fn validate_number(node: &SchemaNode, number: &Number, path: &str, out: &mut Vec<Violation>) {
    let Some(value) = number.as_f64() else {
        return;
    };
    if let Some(min) = node.minimum {
        let (fails, relation) = if node.exclusive_minimum {
            (value <= min, "greater than")
        } else {
            (value < min, "greater than or equal to")
        };
        if fails {
            out.push(out_of_bounds(path, number, relation, min));
        }
    }
    if let Some(max) = node.maximum {
        let (fails, relation) = if node.exclusive_maximum {
            (value >= max, "less than")
        } else {
            (value > max, "less than or equal to")
        };
        if fails {
            out.push(out_of_bounds(path, number, relation, max));
        }
    }
}

fn validate_array(node: &SchemaNode, items: &[Value], path: &str, out: &mut Vec<Violation>) {
    let count = items.len() as u64;
    if let Some(min) = node.min_items
        && count < min
    {
        out.push(Violation::new(
            path,
            ViolationKind::TooFew,
            format!("Invalid value: {count}: must have at least {min} items"),
        ));
    }
    if let Some(max) = node.max_items
        && count > max
    {
        out.push(Violation::new(
            path,
            ViolationKind::TooMany,
            format!("Too many: {count}: must have at most {max} items"),
        ));
    }
    if let Some(item_schema) = &node.items {
        for (position, item) in items.iter().enumerate() {
            validate(item_schema, item, &field_path::index(path, position), out);
        }
    }
}

fn validate_object(
    node: &SchemaNode,
    fields: &Map<String, Value>,
    path: &str,
    out: &mut Vec<Violation>,
) {
    let count = fields.len() as u64;
    if let Some(min) = node.min_properties
        && count < min
    {
        out.push(Violation::new(
            path,
            ViolationKind::TooFew,
            format!("Invalid value: {count}: must have at least {min} entries"),
        ));
        return;
    }
    if let Some(max) = node.max_properties
        && count > max
    {
        out.push(Violation::new(
            path,
            ViolationKind::TooMany,
            format!("Too many: {count}: must have at most {max} items"),
        ));
        return;
    }
    for (name, field) in fields {
        if let Some(property) = node.properties.get(name) {
            validate(property, field, &field_path::child(path, name), out);
        } else if let Some(values) = &node.additional_properties {
            validate(values, field, &field_path::child(path, name), out);
        }
    }
    for name in &node.required {
        if !fields.contains_key(name) {
            let field = field_path::child(path, name);
            let message = format!("Required value: add {field}");
            out.push(Violation::new(field, ViolationKind::Required, message));
        }
    }
}

fn not_supported(path: &str, value: &Value, allowed: &[Value]) -> Violation {
    let supported: Vec<String> = allowed.iter().map(Value::to_string).collect();
    Violation::new(
        path,
        ViolationKind::NotSupported,
        format!(
            "Unsupported value: {value}: supported values: {}",
            supported.join(", ")
        ),
    )
}

fn out_of_bounds(path: &str, number: &Number, relation: &str, bound: f64) -> Violation {
    Violation::new(
        path,
        ViolationKind::Invalid,
        format!(
            "Invalid value: {number}: must be {relation} {}",
            shown_bound(bound)
        ),
    )
}

/// A bound as the CRD author meant it: `1` for `1.0`.
fn shown_bound(bound: f64) -> String {
    if bound.fract() == 0.0 && bound.abs() < 1e15 {
        format!("{}", bound as i64)
    } else {
        bound.to_string()
    }
}

/// A number is whole when it has no fractional part: `1.0` counts as the integer 1, as in the
/// apiserver.
fn is_whole(number: &Number) -> bool {
    number.is_i64()
        || number.is_u64()
        || number
            .as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

/// Equality as JSON means it: `1` and `1.0` are the same number.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn quoted(text: &str) -> String {
    Value::from(text).to_string()
}

/// RFC 3339 date-time, the form `format: date-time` takes: `2006-01-02T15:04:05Z`, with optional
/// fractional seconds and a `Z` or `±hh:mm` offset.
fn is_date_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let at = |position: usize, expected: &[u8]| {
        bytes.get(position).is_some_and(|b| expected.contains(b))
    };
    let date = digits(0..4) && at(4, b"-") && digits(5..7) && at(7, b"-") && digits(8..10);
    let time = at(10, b"Tt ")
        && digits(11..13)
        && at(13, b":")
        && digits(14..16)
        && at(16, b":")
        && digits(17..19);
    if !(date && time) {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return false;
        }
        rest = &fraction[end..];
    }
    let offset = rest.as_bytes();
    let two_digits = |range: std::ops::Range<usize>| {
        offset
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    matches!(rest, "Z" | "z")
        || (offset.len() == 6
            && matches!(offset[0], b'+' | b'-')
            && two_digits(1..3)
            && offset[3] == b':'
            && two_digits(4..6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn date_times() {
        let cases = [
            ("2026-11-26T10:00:00Z", true),
            ("2026-11-26T10:00:00.123456Z", true),
            ("2026-11-26T10:00:00+01:00", true),
            ("2026-11-26 10:00:00Z", true),
            ("2026-11-26", false),
            ("2026-11-26T10:00:00", false),
            ("2026-11-26T10:00:00.Z", false),
            ("yesterday", false),
        ];
        for (text, valid) in cases {
            assert_eq!(is_date_time(text), valid, "{text}");
        }
    }

    #[test]
    fn whole_numbers() {
        assert!(is_whole(&Number::from(3)));
        assert!(is_whole(&Number::from_f64(1.0).expect("finite")));
        assert!(!is_whole(&Number::from_f64(1.5).expect("finite")));
        assert!(same_value(&json!(1), &json!(1.0)));
    }

    #[test]
    fn bounds_read_as_written() {
        assert_eq!(shown_bound(1.0), "1");
        assert_eq!(shown_bound(0.5), "0.5");
    }
}
