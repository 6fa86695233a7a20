//! Schema defaults, filled in as the apiserver fills them before it validates.
//!
//! A missing field with a `default` gets it, and so does a field set to `null` that may not be
//! null; a nullable field keeps its `null`. Defaults reach into list items and map values, and
//! into defaults just filled in (a defaulted object gets its own fields' defaults too).

use serde_json::Value;

use crate::schema::SchemaNode;

/// Fills in every default of `node` within `value`.
pub(crate) fn apply(node: &SchemaNode, value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, property) in &node.properties {
                let Some(default) = &property.default else {
                    continue;
                };
                let absent = match fields.get(name) {
                    None => true,
                    Some(Value::Null) => !property.nullable,
                    Some(_) => false,
                };
                if absent {
                    fields.insert(name.clone(), default.clone());
                }
            }
            for (name, field) in fields.iter_mut() {
                if let Some(schema) = node.field(name) {
                    apply(schema, field);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &node.items {
                for item in items {
                    apply(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// Drops every field that `node` does not declare, as the apiserver prunes what it stores.
pub(crate) fn prune(node: &SchemaNode, value: &mut Value) {
    match value {
        Value::Object(fields) => {
            if !node.preserve_unknown_fields {
                fields.retain(|name, _| node.field(name).is_some());
            }
            for (name, field) in fields.iter_mut() {
                if let Some(schema) = node.field(name) {
                    prune(schema, field);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &node.items {
                for item in items {
                    prune(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> SchemaNode {
        SchemaNode::compile(&json!({
            "type": "object",
            "properties": {
                "policy": {"type": "string", "default": "Retain"},
                "note": {"type": "string", "nullable": true, "default": "none"},
                "auth": {
                    "type": "object",
                    "default": {},
                    "properties": {"type": {"type": "string", "default": "None"}}
                },
                "routes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"key": {"type": "string", "default": ""}}
                    }
                },
                "args": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"on": {"type": "boolean", "default": true}}
                    }
                },
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }
        }))
    }

    #[test]
    fn defaults_fill_what_the_apiserver_fills() {
        let cases = [
            (
                "missing fields",
                json!({"routes": [{}, {"key": "k"}], "args": {"a": {}}}),
                json!({
                    "policy": "Retain",
                    "note": "none",
                    "auth": {"type": "None"},
                    "routes": [{"key": ""}, {"key": "k"}],
                    "args": {"a": {"on": true}}
                }),
            ),
            (
                "null on a field that may not be null",
                json!({"policy": null, "note": null}),
                json!({"policy": "Retain", "note": null, "auth": {"type": "None"}}),
            ),
            (
                "set fields stay",
                json!({"policy": "Delete", "note": "n", "auth": {"type": "Bearer"}}),
                json!({"policy": "Delete", "note": "n", "auth": {"type": "Bearer"}}),
            ),
        ];
        let node = schema();
        for (name, mut value, expected) in cases {
            apply(&node, &mut value);
            assert_eq!(value, expected, "{name}");
        }
    }

    #[test]
    fn prune_drops_undeclared_fields() {
        let mut value = json!({
            "policy": "Retain",
            "foo": 1,
            "routes": [{"key": "k", "bar": 2}],
            "args": {"a": {"on": false, "baz": 3}},
            "free": {"anything": {"goes": true}}
        });
        prune(&schema(), &mut value);
        assert_eq!(
            value,
            json!({
                "policy": "Retain",
                "routes": [{"key": "k"}],
                "args": {"a": {"on": false}},
                "free": {"anything": {"goes": true}}
            })
        );
    }
}
