//! `metadata`: the apiserver checks it with the same rules for every kind, not with the CRD's
//! schema.
//!
//! Checked: the field names and types of `ObjectMeta`; `name` (or `generateName`) as a DNS-1123
//! subdomain; `namespace` as a DNS-1123 label; label keys and values; annotation keys and their
//! total size; finalizer names. Not checked: `ownerReferences` and `managedFields` beyond being
//! lists, which a manifest rarely carries and the apiserver checks against live objects.
//!
//! Messages are the apiserver's own, which already say what is allowed.

use regex::Regex;
use serde_json::{Map, Value};

use crate::field_path;
use crate::structure::{unknown_field, wrong_type};
use crate::violation::{Violation, ViolationKind};

const DNS_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const NAME_PART_MESSAGE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_KEY_MESSAGE: &str = "a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// The apiserver's limit on all annotations of an object together, keys and values.
const ANNOTATIONS_TOTAL_BYTES: usize = 256 * 1024;

/// What kind of value an `ObjectMeta` field holds.
enum MetaField {
    Text,
    Integer,
    StringMap,
    StringList,
    List,
}

fn meta_field(name: &str) -> Option<MetaField> {
    Some(match name {
        "name" | "generateName" | "namespace" | "selfLink" | "uid" | "resourceVersion"
        | "creationTimestamp" | "deletionTimestamp" => MetaField::Text,
        "generation" | "deletionGracePeriodSeconds" => MetaField::Integer,
        "labels" | "annotations" => MetaField::StringMap,
        "finalizers" => MetaField::StringList,
        "ownerReferences" | "managedFields" => MetaField::List,
        _ => return None,
    })
}

/// Checks that `metadata` has `ObjectMeta`'s fields and types, like the schema shape check.
pub(crate) fn check_shape(metadata: &Value, out: &mut Vec<Violation>) {
    let fields = match metadata {
        Value::Object(fields) => fields,
        Value::Null => return,
        other => {
            out.push(wrong_type("metadata", other, "object"));
            return;
        }
    };
    for (name, value) in fields {
        let path = field_path::child("metadata", name);
        let Some(kind) = meta_field(name) else {
            out.push(unknown_field(path));
            continue;
        };
        if value.is_null() {
            continue;
        }
        match kind {
            MetaField::Text if !value.is_string() => out.push(wrong_type(&path, value, "string")),
            MetaField::Integer if !value.is_i64() => out.push(wrong_type(&path, value, "integer")),
            MetaField::StringMap => match value {
                Value::Object(entries) => {
                    for (key, entry) in entries {
                        // A null entry is dropped, not refused.
                        if !(entry.is_string() || entry.is_null()) {
                            out.push(wrong_type(&field_path::child(&path, key), entry, "string"));
                        }
                    }
                }
                other => out.push(wrong_type(&path, other, "object")),
            },
            MetaField::StringList => match value {
                Value::Array(items) => {
                    for (position, item) in items.iter().enumerate() {
                        if !item.is_string() {
                            out.push(wrong_type(
                                &field_path::index(&path, position),
                                item,
                                "string",
                            ));
                        }
                    }
                }
                other => out.push(wrong_type(&path, other, "array")),
            },
            MetaField::List if !value.is_array() => out.push(wrong_type(&path, value, "array")),
            _ => {}
        }
    }
}

/// Drops what `ObjectMeta` does not declare, as decoding it does.
pub(crate) fn prune(metadata: &mut Value) {
    if let Value::Object(fields) = metadata {
        fields.retain(|name, _| meta_field(name).is_some());
    }
}

/// The syntax rules of object names, labels and annotations, compiled once.
#[derive(Debug)]
pub(crate) struct MetadataRules {
    dns_subdomain: Regex,
    dns_label: Regex,
    name_part: Regex,
    label_value: Regex,
}

impl MetadataRules {
    pub(crate) fn new() -> Self {
        // Constants of this file, compiled by every test that builds the rules.
        let compile = |pattern: &str| Regex::new(pattern).expect("metadata patterns compile");
        Self {
            dns_subdomain: compile(
                r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
            ),
            dns_label: compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
            name_part: compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"),
            label_value: compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"),
        }
    }

    /// Checks `metadata` of a manifest whose shape already fits `ObjectMeta`.
    pub(crate) fn validate(&self, metadata: Option<&Value>, out: &mut Vec<Violation>) {
        let empty = Map::new();
        let fields = metadata.and_then(Value::as_object).unwrap_or(&empty);
        let text = |name: &str| fields.get(name).and_then(Value::as_str).unwrap_or("");

        let name = text("name");
        let generate_name = text("generateName");
        if !generate_name.is_empty() {
            // The generated name is the prefix plus random characters, so a trailing dash is fine.
            let prefix = generate_name.strip_suffix('-').unwrap_or(generate_name);
            for problem in self.dns_subdomain_problems(prefix, "characters") {
                out.push(invalid("metadata.generateName", generate_name, &problem));
            }
        }
        if name.is_empty() {
            if generate_name.is_empty() {
                out.push(Violation::new(
                    "metadata.name",
                    ViolationKind::Required,
                    "Required value: name or generateName is required",
                ));
            }
        } else {
            for problem in self.dns_subdomain_problems(name, "characters") {
                out.push(invalid("metadata.name", name, &problem));
            }
        }

        let namespace = text("namespace");
        if !namespace.is_empty() {
            let mut problems = Vec::new();
            if namespace.len() > 63 {
                problems.push("must be no more than 63 characters".to_string());
            }
            if !self.dns_label.is_match(namespace) {
                problems.push(DNS_LABEL_MESSAGE.to_string());
            }
            for problem in problems {
                out.push(invalid("metadata.namespace", namespace, &problem));
            }
        }

        for (key, value) in string_map(fields.get("labels")) {
            for problem in self.qualified_name_problems(key, LABEL_KEY_MESSAGE) {
                out.push(invalid("metadata.labels", key, &problem));
            }
            if value.len() > 63 {
                out.push(invalid(
                    "metadata.labels",
                    value,
                    "must be no more than 63 bytes",
                ));
            }
            if !self.label_value.is_match(value) {
                out.push(invalid("metadata.labels", value, LABEL_VALUE_MESSAGE));
            }
        }

        let annotations = string_map(fields.get("annotations"));
        let mut total = 0;
        for (key, value) in &annotations {
            total += key.len() + value.len();
            // Annotation keys are checked in lower case: their case does not matter.
            let lower = key.to_lowercase();
            for problem in self.qualified_name_problems(&lower, LABEL_KEY_MESSAGE) {
                out.push(invalid("metadata.annotations", &lower, &problem));
            }
        }
        if total > ANNOTATIONS_TOTAL_BYTES {
            out.push(Violation::new(
                "metadata.annotations",
                ViolationKind::TooLong,
                format!(
                    "Too long: may not be more than {ANNOTATIONS_TOTAL_BYTES} bytes; keep large data out of annotations"
                ),
            ));
        }

        let finalizers = fields.get("finalizers").and_then(Value::as_array);
        for finalizer in finalizers.into_iter().flatten().filter_map(Value::as_str) {
            for problem in self.qualified_name_problems(finalizer, LABEL_KEY_MESSAGE) {
                out.push(invalid("metadata.finalizers", finalizer, &problem));
            }
        }
    }

    fn dns_subdomain_problems(&self, value: &str, unit: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if value.len() > 253 {
            problems.push(format!("must be no more than 253 {unit}"));
        }
        if !self.dns_subdomain.is_match(value) {
            problems.push(DNS_SUBDOMAIN_MESSAGE.to_string());
        }
        problems
    }

    /// The problems of a qualified name: an optional DNS-subdomain prefix and `/`, then a name
    /// part of at most 63 characters.
    fn qualified_name_problems(&self, value: &str, shape_message: &str) -> Vec<String> {
        let (prefix, name) = match value.split('/').collect::<Vec<_>>()[..] {
            [name] => (None, name),
            [prefix, name] => (Some(prefix), name),
            _ => return vec![shape_message.to_string()],
        };
        let mut problems = Vec::new();
        if let Some(prefix) = prefix {
            if prefix.is_empty() {
                problems.push("prefix part must be non-empty".to_string());
            } else {
                problems.extend(
                    self.dns_subdomain_problems(prefix, "bytes")
                        .into_iter()
                        .map(|problem| format!("prefix part {problem}")),
                );
            }
        }
        if name.is_empty() {
            problems.push("name part must be non-empty".to_string());
        } else if name.len() > 63 {
            problems.push("name part must be no more than 63 bytes".to_string());
        }
        if !self.name_part.is_match(name) {
            problems.push(NAME_PART_MESSAGE.to_string());
        }
        problems
    }
}

fn string_map(value: Option<&Value>) -> Vec<(&String, &str)> {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| value.as_str().map(|value| (key, value)))
        .collect()
}

fn invalid(field: &str, value: &str, problem: &str) -> Violation {
    Violation::new(
        field,
        ViolationKind::Invalid,
        format!("Invalid value: {}: {problem}", Value::from(value)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structure::type_of;
    use serde_json::json;

    fn violations(metadata: Value) -> Vec<(String, ViolationKind, String)> {
        let mut out = Vec::new();
        check_shape(&metadata, &mut out);
        if out.is_empty() {
            MetadataRules::new().validate(Some(&metadata), &mut out);
        }
        out.into_iter()
            .map(|v| (v.field, v.kind, v.message))
            .collect()
    }

    #[test]
    fn metadata_rules() {
        // (case, metadata, expected violations as field, kind and message text)
        type Case = (
            &'static str,
            Value,
            Vec<(&'static str, ViolationKind, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            ("a plain name", json!({"name": "production-to-erp"}), vec![]),
            ("a dotted name", json!({"name": "a.b"}), vec![]),
            (
                "no name",
                json!({"labels": {}}),
                vec![(
                    "metadata.name",
                    ViolationKind::Required,
                    "name or generateName",
                )],
            ),
            (
                "generateName instead",
                json!({"generateName": "flow-"}),
                vec![],
            ),
            (
                "upper case name",
                json!({"name": "Bad_Name"}),
                vec![(
                    "metadata.name",
                    ViolationKind::Invalid,
                    "Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain",
                )],
            ),
            (
                "long name",
                json!({"name": "a".repeat(254)}),
                vec![(
                    "metadata.name",
                    ViolationKind::Invalid,
                    "must be no more than 253 characters",
                )],
            ),
            (
                "bad namespace",
                json!({"name": "a", "namespace": "a.b"}),
                vec![(
                    "metadata.namespace",
                    ViolationKind::Invalid,
                    "RFC 1123 label",
                )],
            ),
            (
                "good labels",
                json!({"name": "a", "labels": {"app.kubernetes.io/name": "millrace", "empty": ""}}),
                vec![],
            ),
            (
                "bad label value",
                json!({"name": "a", "labels": {"app": "bad value!"}}),
                vec![(
                    "metadata.labels",
                    ViolationKind::Invalid,
                    "Invalid value: \"bad value!\": a valid label must be",
                )],
            ),
            (
                "long label value",
                json!({"name": "a", "labels": {"app": "x".repeat(64)}}),
                vec![(
                    "metadata.labels",
                    ViolationKind::Invalid,
                    "must be no more than 63 bytes",
                )],
            ),
            (
                "bad label key",
                json!({"name": "a", "labels": {"Bad Key": "x"}}),
                vec![(
                    "metadata.labels",
                    ViolationKind::Invalid,
                    "Invalid value: \"Bad Key\": name part must consist",
                )],
            ),
            (
                "label key with two slashes",
                json!({"name": "a", "labels": {"a/b/c": "x"}}),
                vec![(
                    "metadata.labels",
                    ViolationKind::Invalid,
                    "a valid label key must consist",
                )],
            ),
            (
                "label key with a bad prefix",
                json!({"name": "a", "labels": {"Bad_Prefix/n": "x"}}),
                vec![(
                    "metadata.labels",
                    ViolationKind::Invalid,
                    "prefix part a lowercase RFC 1123 subdomain",
                )],
            ),
            (
                "upper-case annotation keys are fine",
                json!({"name": "a", "annotations": {"Example.com/Note": "x"}}),
                vec![],
            ),
            (
                "huge annotations",
                json!({"name": "a", "annotations": {"a": "x".repeat(262_145)}}),
                vec![("metadata.annotations", ViolationKind::TooLong, "Too long")],
            ),
            (
                "bad finalizer",
                json!({"name": "a", "finalizers": ["Bad Finalizer"]}),
                vec![(
                    "metadata.finalizers",
                    ViolationKind::Invalid,
                    "name part must consist",
                )],
            ),
            (
                "unknown metadata field",
                json!({"name": "a", "foo": 1}),
                vec![(
                    "metadata.foo",
                    ViolationKind::Unknown,
                    "unknown field \"metadata.foo\"",
                )],
            ),
            (
                "null label value",
                json!({"name": "a", "labels": {"a": null}}),
                vec![],
            ),
            (
                "label value not a string",
                json!({"name": "a", "labels": {"a": 5}}),
                vec![(
                    "metadata.labels.a",
                    ViolationKind::Type,
                    "must be of type string",
                )],
            ),
        ];
        for (name, metadata, expected) in cases {
            let found = violations(metadata);
            assert_eq!(found.len(), expected.len(), "{name}: {found:#?}");
            for ((field, kind, message), (want_field, want_kind, want_text)) in
                found.iter().zip(&expected)
            {
                assert_eq!((field.as_str(), *kind), (*want_field, *want_kind), "{name}");
                assert!(message.contains(want_text), "{name}: {message}");
            }
        }
    }

    #[test]
    fn type_names_are_the_apiservers() {
        assert_eq!(type_of(&json!(1)), "integer");
        assert_eq!(type_of(&json!(1.5)), "number");
        assert_eq!(type_of(&json!(null)), "null");
    }
}
