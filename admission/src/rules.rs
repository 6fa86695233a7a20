//! CEL rules (`x-kubernetes-validations`), evaluated with `kube-cel` as the apiserver evaluates
//! them on create.
//!
//! Each schema node that carries rules gets its own `kube-cel` program tree, compiled from that
//! node with the rules of its descendants removed. The walk here then evaluates every node at the
//! path the apiserver names (`spec.routes[1].destination`, `spec.transform.args[key]`), instead
//! of translating `kube-cel`'s own paths after the fact.
//!
//! That tree keeps only the descendants that change how a value becomes CEL (maps, whose keys
//! stay as written; `date-time`, `duration` and `byte` strings): `kube-cel` converts the value
//! again at every schema node it walks, so a spec-level rule would otherwise convert the spec
//! once per nested field. The rest converts the same without its schema.
//!
//! Transition rules (those reading `oldSelf`) only run on update, and are skipped; so does
//! `kube-cel` when no old object is given.

use kube_cel::{CompiledSchema, ErrorKind, ValidationError};
use serde_json::Value;

use crate::field_path;
use crate::schema::SchemaNode;
use crate::violation::{Violation, ViolationKind};

/// The create-time rules of one schema node.
#[derive(Debug)]
pub(crate) struct NodeRules {
    /// The node, with the rules of its descendants removed, compiled by `kube-cel`.
    compiled: CompiledSchema,
    /// Each rule's text and message, to word an evaluation error as the apiserver does.
    messages: Vec<(String, Option<String>)>,
}

impl NodeRules {
    /// The rules of `schema` that run on create, or `None` when it has none.
    pub(crate) fn compile(schema: &Value) -> Option<Self> {
        let rules = schema.get("x-kubernetes-validations")?.as_array()?;
        if rules.is_empty() {
            return None;
        }
        let mut own = schema.clone();
        keep_what_conversion_needs(&mut own);
        let compiled = kube_cel::compile_schema(&own);
        let runs_on_create = compiled.validations.iter().any(|compiled| match compiled {
            Ok(rule) => !rule.is_transition_rule || rule.rule.optional_old_self == Some(true),
            // A rule that does not compile is reported, never skipped.
            Err(_) => true,
        });
        if !runs_on_create {
            return None;
        }
        let messages = rules
            .iter()
            .filter_map(|rule| {
                let text = rule.get("rule")?.as_str()?.to_string();
                let message = rule
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                Some((text, message))
            })
            .collect();
        Some(Self { compiled, messages })
    }

    fn evaluate(&self, value: &Value, path: &str, out: &mut Vec<Violation>) {
        let Err(errors) = kube_cel::validate_compiled(&self.compiled, value, None) else {
            return;
        };
        out.extend(errors.into_iter().map(|error| self.violation(error, path)));
    }

    fn violation(&self, error: ValidationError, path: &str) -> Violation {
        let field = field_path::relative(path, &error.field_path);
        let message = match error.kind {
            ErrorKind::ValidationFailure => error.message,
            ErrorKind::EvaluationError
            | ErrorKind::UnsupportedReference
            | ErrorKind::InvalidResult => {
                let cause = error
                    .message
                    .strip_prefix("rule evaluation error: ")
                    .unwrap_or(&error.message);
                let named = self
                    .messages
                    .iter()
                    .find(|(rule, _)| *rule == error.rule)
                    .and_then(|(_, message)| message.as_deref())
                    .unwrap_or(&error.rule);
                format!("{cause} evaluating rule: {named}")
            }
            _ => error.message,
        };
        Violation::new(field, ViolationKind::Rule, message)
    }
}

/// Evaluates every create-time rule in `value`, a defaulted object without unknown fields.
pub(crate) fn check(node: &SchemaNode, value: &Value, path: &str, out: &mut Vec<Violation>) {
    if value.is_null() {
        return;
    }
    if let Some(rules) = &node.rules {
        rules.evaluate(value, path, out);
    }
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                if let Some(property) = node.properties.get(name) {
                    check(property, field, &field_path::child(path, name), out);
                } else if let Some(values) = &node.additional_properties {
                    check(values, field, &field_path::key(path, name), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &node.items {
                for (position, item) in items.iter().enumerate() {
                    check(item_schema, item, &field_path::index(path, position), out);
                }
            }
        }
        _ => {}
    }
}

/// Makes `value` what the apiserver's CEL sees: a field set to `null` is absent, so `has()` is
/// false for it. (`kube-cel` would count it as present.)
pub(crate) fn remove_null_fields(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            fields.retain(|_, field| !field.is_null());
            fields.values_mut().for_each(remove_null_fields);
        }
        Value::Array(items) => items.iter_mut().for_each(remove_null_fields),
        _ => {}
    }
}

/// Removes the descendants of a rule node that `kube-cel` converts the same without a schema,
/// and the rules and defaults of those it keeps (defaults are applied before the rules run).
fn keep_what_conversion_needs(schema: &mut Value) {
    let Some(node) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(properties)) = node.get_mut("properties") {
        properties.retain(|_, property| shapes_conversion(property));
        properties.values_mut().for_each(keep_descendant);
    }
    match node.get("items") {
        Some(items) if shapes_conversion(items) => {
            node.get_mut("items").into_iter().for_each(keep_descendant)
        }
        Some(_) => {
            node.remove("items");
        }
        None => {}
    }
    if let Some(values) = node
        .get_mut("additionalProperties")
        .filter(|a| a.is_object())
    {
        if shapes_conversion(values) {
            keep_descendant(values);
        } else {
            // Still a map, whose keys stay unescaped, but its values need no schema.
            *values = Value::Bool(true);
        }
    }
}

fn keep_descendant(schema: &mut Value) {
    if let Some(node) = schema.as_object_mut() {
        node.remove("x-kubernetes-validations");
        node.remove("default");
    }
    keep_what_conversion_needs(schema);
}

/// Whether `kube-cel` converts a value of this schema differently than a value without one.
fn shapes_conversion(schema: &Value) -> bool {
    let flag = |name: &str| schema.get(name).and_then(Value::as_bool) == Some(true);
    let is_map = !matches!(
        schema.get("additionalProperties"),
        None | Some(Value::Bool(false))
    );
    let typed_string = matches!(
        schema.get("format").and_then(Value::as_str),
        Some("date-time" | "duration" | "byte")
    );
    let children = schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|properties| properties.values())
        .chain(schema.get("items"))
        .chain(schema.get("additionalProperties").filter(|a| a.is_object()));
    is_map
        || typed_string
        || flag("x-kubernetes-int-or-string")
        || flag("x-kubernetes-embedded-resource")
        || children.into_iter().any(shapes_conversion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn descendants_rules_are_left_to_their_own_nodes() {
        let schema = json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "has(self.a)", "message": "a is required"}],
            "properties": {
                "a": {
                    "type": "string",
                    "x-kubernetes-validations": [{"rule": "self != 'x'", "message": "a is x"}]
                }
            }
        });
        let rules = NodeRules::compile(&schema).expect("the node has rules");
        let mut out = Vec::new();
        rules.evaluate(&json!({"a": "x"}), "spec", &mut out);
        assert!(
            out.is_empty(),
            "the child's rule ran on the parent: {out:?}"
        );
        rules.evaluate(&json!({}), "spec", &mut out);
        assert_eq!(
            out,
            [Violation::new("spec", ViolationKind::Rule, "a is required")]
        );
    }

    #[test]
    fn a_rule_sees_map_keys_and_timestamps_of_its_descendants_as_written() {
        let schema = json!({
            "type": "object",
            "properties": {
                "transform": {
                    "type": "object",
                    "properties": {
                        "args": {"type": "object", "additionalProperties": {"type": "string"}},
                        "jq": {"type": "string"}
                    }
                },
                "since": {"type": "string", "format": "date-time"},
                "plain": {"type": "object", "properties": {"field": {"type": "string"}}}
            },
            "x-kubernetes-validations": [
                {"rule": "self.transform.args.exists(k, k == 'my_var')", "message": "no my_var"},
                {"rule": "self.since < timestamp('2030-01-01T00:00:00Z')", "message": "too late"},
                {"rule": "self.plain.field == 'x'", "message": "not x"}
            ]
        });
        let mut kept = schema.clone();
        keep_what_conversion_needs(&mut kept);
        assert!(
            kept["properties"]["transform"]["properties"]
                .get("jq")
                .is_none()
        );
        assert!(kept["properties"].get("plain").is_none());
        let rules = NodeRules::compile(&schema).expect("the node has rules");
        let mut out = Vec::new();
        let value = json!({
            "transform": {"args": {"my_var": "1"}, "jq": "."},
            "since": "2026-01-01T00:00:00Z",
            "plain": {"field": "x"}
        });
        rules.evaluate(&value, "spec", &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn transition_rules_do_not_run_on_create() {
        let schema = json!({
            "type": "string",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}]
        });
        assert!(NodeRules::compile(&schema).is_none());
    }

    #[test]
    fn an_evaluation_error_refuses_and_names_the_rule() {
        let schema = json!({
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "x-kubernetes-validations": [{"rule": "self.a == 'x'", "message": "a must be x"}]
        });
        let rules = NodeRules::compile(&schema).expect("the node has rules");
        let mut out = Vec::new();
        rules.evaluate(&json!({}), "spec.thing", &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].field, "spec.thing");
        assert_eq!(out[0].kind, ViolationKind::Rule);
        assert!(
            out[0].message.ends_with("evaluating rule: a must be x"),
            "{}",
            out[0].message
        );
    }

    #[test]
    fn map_values_are_named_in_brackets() {
        let node = SchemaNode::compile(&json!({
            "type": "object",
            "additionalProperties": {
                "type": "string",
                "x-kubernetes-validations": [{"rule": "self.size() < 3", "message": "too long"}]
            }
        }));
        let mut out = Vec::new();
        check(
            &node,
            &json!({"ok": "ab", "bad": "abcd"}),
            "spec.args",
            &mut out,
        );
        assert_eq!(
            out,
            [Violation::new(
                "spec.args[bad]",
                ViolationKind::Rule,
                "too long"
            )]
        );
    }
}
