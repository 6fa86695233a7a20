//! The shape check: does the manifest fit the schema's structure at all?
//!
//! A server-side apply first converts the manifest into the schema's typed form, and refuses it
//! with nothing else said when that fails: a field the schema does not declare (`field not
//! declared in schema`, the strict check), a list where a string belongs, a string where a number
//! belongs, a keyed list whose items repeat a key or omit it. Only a manifest of the right shape
//! goes on to the OpenAPI value checks and the CEL rules. This runs over `status` too: the
//! apiserver drops `status` on create, but only after this conversion.
//!
//! At this stage integers and numbers are one kind, and `null` fits any field; the value checks
//! tell them apart.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::field_path;
use crate::metadata;
use crate::schema::{JsonType, ListType, SchemaNode};
use crate::violation::{Violation, ViolationKind};

/// Checks the shape of a whole manifest against its kind's root schema.
pub(crate) fn check_manifest(
    root: &SchemaNode,
    manifest: &Map<String, Value>,
    out: &mut Vec<Violation>,
) {
    for (name, value) in manifest {
        match name.as_str() {
            // Checked before the schema was chosen.
            "apiVersion" | "kind" => {}
            "metadata" => metadata::check_shape(value, out),
            _ => check_field(root, name, value, "", out),
        }
    }
}

fn check(node: &SchemaNode, value: &Value, path: &str, out: &mut Vec<Violation>) {
    if value.is_null() {
        return;
    }
    if node.int_or_string {
        if !(value.is_string() || value.is_number()) {
            out.push(wrong_type(path, value, node.type_name()));
        }
        return;
    }
    let Some(kind) = node.kind else {
        // An untyped node (preserve-unknown-fields) takes any value; declared fields still count.
        if let Value::Object(fields) = value {
            check_fields(node, fields, path, out);
        }
        return;
    };
    if !fits(kind, value) {
        out.push(wrong_type(path, value, kind.name()));
        return;
    }
    match value {
        Value::Object(fields) => check_fields(node, fields, path, out),
        Value::Array(items) => {
            if let ListType::Map(keys) = &node.list_type {
                check_keyed_items(node, keys, items, path, out);
                return;
            }
            if let Some(item_schema) = &node.items {
                for (position, item) in items.iter().enumerate() {
                    check(item_schema, item, &field_path::index(path, position), out);
                }
            }
            if node.list_type == ListType::Set {
                check_unique_items(items, path, out);
            }
        }
        _ => {}
    }
}

fn check_fields(
    node: &SchemaNode,
    fields: &Map<String, Value>,
    path: &str,
    out: &mut Vec<Violation>,
) {
    for (name, value) in fields {
        check_field(node, name, value, path, out);
    }
}

fn check_field(node: &SchemaNode, name: &str, value: &Value, path: &str, out: &mut Vec<Violation>) {
    let field = field_path::child(path, name);
    match node.field(name) {
        Some(schema) => check(schema, value, &field, out),
        None if node.preserve_unknown_fields => {}
        None => out.push(unknown_field(field)),
    }
}

/// Items of a `x-kubernetes-list-type: map` list: objects, each with its key, no key twice.
///
/// Like the apiserver, the first item that is not an object or has no key ends the check of the
/// list: the items after it are not looked at. Repeated keys are all reported.
fn check_keyed_items(
    node: &SchemaNode,
    keys: &[String],
    items: &[Value],
    path: &str,
    out: &mut Vec<Violation>,
) {
    let item_schema = node.items.as_deref();
    let key_default = |key: &String| {
        item_schema
            .and_then(|schema| schema.properties.get(key))
            .and_then(|property| property.default.as_ref())
    };
    let key_names = keys.join(", ");
    let mut seen = HashSet::new();
    for (position, item) in items.iter().enumerate() {
        let item_path = field_path::index(path, position);
        let fields = match item {
            Value::Object(fields) => fields,
            Value::Null => {
                out.push(Violation::new(
                    item_path,
                    ViolationKind::Invalid,
                    format!(
                        "Invalid value: null: items of {path} are keyed by {key_names} and cannot be null; remove the item"
                    ),
                ));
                return;
            }
            other => {
                out.push(wrong_type(&item_path, other, "object"));
                return;
            }
        };
        let key: Vec<(&String, Option<&Value>)> = keys
            .iter()
            .map(|key| (key, fields.get(key).or_else(|| key_default(key))))
            .collect();
        if key.iter().all(|(_, value)| value.is_none()) {
            out.push(Violation::new(
                item_path,
                ViolationKind::Required,
                format!("Required value: add {key_names}: items of {path} are keyed by it"),
            ));
            return;
        }
        if let Some(item_schema) = item_schema {
            check(item_schema, item, &item_path, out);
        }
        if !seen.insert(canonical(&key)) {
            out.push(Violation::new(
                item_path,
                ViolationKind::Duplicate,
                format!(
                    "Duplicate value: {}: another item of {path} has the same {key_names}; give each item its own",
                    go_map(&key)
                ),
            ));
        }
    }
}

/// Items of a `x-kubernetes-list-type: set` list: no value twice.
fn check_unique_items(items: &[Value], path: &str, out: &mut Vec<Violation>) {
    let mut seen = HashSet::new();
    for (position, item) in items.iter().enumerate() {
        if !seen.insert(item.to_string()) {
            out.push(Violation::new(
                field_path::index(path, position),
                ViolationKind::Duplicate,
                format!(
                    "Duplicate value: {item}: items of {path} must be unique; remove the repeat"
                ),
            ));
        }
    }
}

/// A key as text that is equal for equal keys: `2` and `2.0` are the same number.
fn canonical(key: &[(&String, Option<&Value>)]) -> String {
    let values: Vec<Value> = key
        .iter()
        .map(|(_, value)| match value {
            Some(Value::Number(number)) => number.as_f64().map_or(Value::Null, Value::from),
            Some(other) => (*other).clone(),
            None => Value::Null,
        })
        .collect();
    Value::from(values).to_string()
}

/// A list-map key written as Go prints a map, as the apiserver's messages show it: `map[name:erp]`.
fn go_map(key: &[(&String, Option<&Value>)]) -> String {
    let entries: Vec<String> = key
        .iter()
        .filter_map(|(name, value)| {
            value.map(|value| match value {
                Value::String(text) => format!("{name}:{text}"),
                other => format!("{name}:{other}"),
            })
        })
        .collect();
    format!("map[{}]", entries.join(" "))
}

fn fits(kind: JsonType, value: &Value) -> bool {
    matches!(
        (kind, value),
        (JsonType::Object, Value::Object(_))
            | (JsonType::Array, Value::Array(_))
            | (JsonType::String, Value::String(_))
            | (JsonType::Integer | JsonType::Number, Value::Number(_))
            | (JsonType::Boolean, Value::Bool(_))
    )
}

/// The JSON type of a value, as the apiserver names it in type errors.
pub(crate) fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(crate) fn wrong_type(path: &str, value: &Value, expected: &str) -> Violation {
    Violation::new(
        path,
        ViolationKind::Type,
        format!(
            "Invalid value: \"{}\": must be of type {expected}",
            type_of(value)
        ),
    )
}

pub(crate) fn unknown_field(path: String) -> Violation {
    let message = format!("unknown field \"{path}\": remove it or check its spelling");
    Violation::new(path, ViolationKind::Unknown, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(schema: Value, value: Value) -> Vec<Violation> {
        let node = SchemaNode::compile(&schema);
        let mut out = Vec::new();
        check(&node, &value, "spec", &mut out);
        out
    }

    #[test]
    fn shape_checks() {
        let routes = json!({
            "type": "object",
            "properties": {
                "routes": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}
                    }
                },
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "ports": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["port"],
                    "items": {"type": "object", "properties": {"port": {"type": "integer"}}}
                },
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "size": {"x-kubernetes-int-or-string": true}
            }
        });
        // (case, spec, expected violations as field and kind)
        type Case = (&'static str, Value, Vec<(&'static str, ViolationKind)>);
        let cases: Vec<Case> = vec![
            (
                "fits",
                json!({"routes": [{"name": "a"}, {"name": "b"}], "tags": ["x", "y"]}),
                vec![],
            ),
            (
                "null fits anything",
                json!({"routes": null, "tags": [null]}),
                vec![],
            ),
            (
                "unknown field",
                json!({"foo": 1}),
                vec![("spec.foo", ViolationKind::Unknown)],
            ),
            (
                "unknown field in an item",
                json!({"routes": [{"name": "a", "bar": 1}]}),
                vec![("spec.routes[0].bar", ViolationKind::Unknown)],
            ),
            (
                "anything under preserve",
                json!({"free": {"x": {"y": [1]}}}),
                vec![],
            ),
            (
                "list for a string",
                json!({"routes": "a"}),
                vec![("spec.routes", ViolationKind::Type)],
            ),
            (
                "string for an integer",
                json!({"routes": [{"name": "a", "port": "80"}]}),
                vec![("spec.routes[0].port", ViolationKind::Type)],
            ),
            (
                "a float is numeric here",
                json!({"routes": [{"name": "a", "port": 1.5}]}),
                vec![],
            ),
            ("int-or-string takes both", json!({"size": "1Gi"}), vec![]),
            ("int-or-string takes a number", json!({"size": 2}), vec![]),
            (
                "int-or-string refuses a boolean",
                json!({"size": true}),
                vec![("spec.size", ViolationKind::Type)],
            ),
            (
                "duplicate key",
                json!({"routes": [{"name": "a"}, {"name": "a"}]}),
                vec![("spec.routes[1]", ViolationKind::Duplicate)],
            ),
            (
                "missing key",
                json!({"routes": [{"port": 1}]}),
                vec![("spec.routes[0]", ViolationKind::Required)],
            ),
            (
                "null item in a keyed list",
                json!({"routes": [null]}),
                vec![("spec.routes[0]", ViolationKind::Invalid)],
            ),
            (
                "the first item without a key ends the keyed list",
                json!({"routes": [{"name": "a", "x": 1}, {"port": 1}, {"name": "b", "y": 1}]}),
                vec![
                    ("spec.routes[0].x", ViolationKind::Unknown),
                    ("spec.routes[1]", ViolationKind::Required),
                ],
            ),
            (
                "repeated keys are all reported",
                json!({"routes": [{"name": "a"}, {"name": "a"}, {"name": "a", "x": 1}]}),
                vec![
                    ("spec.routes[1]", ViolationKind::Duplicate),
                    ("spec.routes[2].x", ViolationKind::Unknown),
                    ("spec.routes[2]", ViolationKind::Duplicate),
                ],
            ),
            (
                "keys compare as numbers",
                json!({"ports": [{"port": 2}, {"port": 2.0}]}),
                vec![("spec.ports[1]", ViolationKind::Duplicate)],
            ),
            (
                "duplicate in a set",
                json!({"tags": ["x", "x"]}),
                vec![("spec.tags[1]", ViolationKind::Duplicate)],
            ),
        ];
        for (name, value, expected) in cases {
            let found = shape(routes.clone(), value);
            let found: Vec<(&str, ViolationKind)> =
                found.iter().map(|v| (v.field.as_str(), v.kind)).collect();
            assert_eq!(found, expected, "{name}");
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let found = shape(
            json!({"type": "object", "properties": {}}),
            json!({"foo": 1}),
        );
        assert_eq!(
            found[0].to_string(),
            "spec.foo: unknown field \"spec.foo\": remove it or check its spelling"
        );
        let found = shape(
            json!({
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}}}
            }),
            json!([{"name": "erp"}, {"name": "erp"}]),
        );
        assert!(
            found[0]
                .message
                .starts_with("Duplicate value: map[name:erp]"),
            "{}",
            found[0].message
        );
    }
}
