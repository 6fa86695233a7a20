//! One schema document: its dialect, `$ref` resolution and keyword helpers.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::error::CompatError;

/// `true`: the schema that accepts everything, used where a keyword is absent.
pub(crate) static TRUE_SCHEMA: Value = Value::Bool(true);

/// Keywords that never change which instances are valid.
pub(crate) const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];

/// Keywords that identify or hold schemas but constrain nothing where they stand.
pub(crate) const STRUCTURAL: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$defs",
    "definitions",
    "$vocabulary",
];

/// Keywords the comparison reasons about.
pub(crate) const ASSERTIONS: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "maxLength",
    "minLength",
    "pattern",
    "format",
    "maximum",
    "minimum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "multipleOf",
    "required",
    "properties",
    "patternProperties",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "maxProperties",
    "minProperties",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "items",
    "prefixItems",
    "additionalItems",
    "unevaluatedItems",
    "maxItems",
    "minItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
];

/// Which JSON Schema dialect a document follows. Only `$ref` siblings differ in a way the
/// comparison cares about: draft-07 ignores them, 2020-12 applies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Draft07,
    Draft202012,
}

/// A schema inside its document: the value and its JSON pointer there.
#[derive(Clone, Debug)]
pub(crate) struct Node<'a> {
    pub value: &'a Value,
    pub loc: String,
}

impl<'a> Node<'a> {
    /// The `true` schema standing in for an absent keyword.
    pub fn absent() -> Node<'a> {
        Node {
            value: &TRUE_SCHEMA,
            loc: "<absent>".to_string(),
        }
    }

    /// The subschema at `value`, found under `segments` below this node.
    pub fn child(&self, value: &'a Value, segments: &[&str]) -> Node<'a> {
        let mut loc = self.loc.clone();
        for segment in segments {
            loc.push('/');
            loc.push_str(&escape(segment));
        }
        Node { value, loc }
    }
}

/// A parsed schema document.
pub(crate) struct Document<'a> {
    root: &'a Value,
    dialect: Dialect,
    base_id: Option<&'a str>,
    anchors: HashMap<String, String>,
}

impl<'a> Document<'a> {
    pub fn new(root: &'a Value) -> Result<Self, CompatError> {
        let object = match root {
            Value::Bool(_) => None,
            Value::Object(object) => Some(object),
            other => {
                return Err(CompatError::InvalidSchema {
                    path: "#".to_string(),
                    found: describe(other),
                });
            }
        };
        let dialect = match object
            .and_then(|o| o.get("$schema"))
            .and_then(Value::as_str)
        {
            Some(uri)
                if ["draft-04", "draft-06", "draft-07"]
                    .iter()
                    .any(|d| uri.contains(d)) =>
            {
                Dialect::Draft07
            }
            _ => Dialect::Draft202012,
        };
        let base_id = object
            .and_then(|o| o.get("$id"))
            .and_then(Value::as_str)
            .map(|id| id.trim_end_matches('#'));
        let mut anchors = HashMap::new();
        collect_anchors(root, "", &mut anchors);
        Ok(Document {
            root,
            dialect,
            base_id,
            anchors,
        })
    }

    pub fn root(&self) -> Node<'a> {
        Node {
            value: self.root,
            loc: String::new(),
        }
    }

    /// Follows `$ref`s that stand for their target: a `$ref` alone (or with annotations only),
    /// or any `$ref` in draft-07, where siblings of `$ref` are ignored.
    pub fn deref(&self, mut node: Node<'a>, path: &str) -> Result<Node<'a>, CompatError> {
        let mut hops = 0;
        while let Some(reference) = self.transparent_ref(node.value) {
            hops += 1;
            if hops > 64 {
                return Err(CompatError::RefLoop {
                    path: path.to_string(),
                    reference: reference.to_string(),
                });
            }
            node = self.resolve(reference, path)?;
        }
        Ok(node)
    }

    fn transparent_ref<'v>(&self, value: &'v Value) -> Option<&'v str> {
        let object = value.as_object()?;
        let reference = object.get("$ref")?.as_str()?;
        let alone = object.keys().all(|k| {
            k == "$ref" || ANNOTATIONS.contains(&k.as_str()) || STRUCTURAL.contains(&k.as_str())
        });
        (alone || self.dialect == Dialect::Draft07).then_some(reference)
    }

    /// The target of a local `$ref`.
    pub fn resolve(&self, reference: &str, path: &str) -> Result<Node<'a>, CompatError> {
        let unresolvable = || CompatError::UnresolvableRef {
            path: path.to_string(),
            reference: reference.to_string(),
        };
        let local = match self.base_id {
            Some(id) if !id.is_empty() && reference.starts_with(id) => &reference[id.len()..],
            _ => reference,
        };
        let fragment = local.strip_prefix('#').ok_or_else(unresolvable)?;
        let pointer = percent_encoding::percent_decode_str(fragment)
            .decode_utf8()
            .map_err(|_| unresolvable())?
            .into_owned();
        let pointer = if pointer.is_empty() || pointer.starts_with('/') {
            pointer
        } else {
            self.anchors
                .get(&pointer)
                .cloned()
                .ok_or_else(unresolvable)?
        };
        let value = self.root.pointer(&pointer).ok_or_else(unresolvable)?;
        Ok(Node {
            value,
            loc: pointer,
        })
    }
}

fn collect_anchors(value: &Value, loc: &str, anchors: &mut HashMap<String, String>) {
    match value {
        Value::Object(object) => {
            if let Some(anchor) = object.get("$anchor").and_then(Value::as_str) {
                anchors
                    .entry(anchor.to_string())
                    .or_insert_with(|| loc.to_string());
            }
            if let Some(anchor) = object
                .get("$id")
                .and_then(Value::as_str)
                .and_then(|id| id.strip_prefix('#'))
            {
                anchors
                    .entry(anchor.to_string())
                    .or_insert_with(|| loc.to_string());
            }
            for (key, child) in object {
                // Instance data, not schemas: an "$anchor" in an example is not an anchor.
                if matches!(key.as_str(), "enum" | "const" | "default" | "examples") {
                    continue;
                }
                collect_anchors(child, &format!("{loc}/{}", escape(key)), anchors);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                collect_anchors(child, &format!("{loc}/{index}"), anchors);
            }
        }
        _ => {}
    }
}

/// Escapes one JSON pointer segment.
pub(crate) fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// `path` extended by `segments`, each escaped.
pub(crate) fn join(path: &str, segments: &[&str]) -> String {
    let mut out = path.to_string();
    for segment in segments {
        out.push('/');
        out.push_str(&escape(segment));
    }
    out
}

pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The object form of a schema, or None for a boolean schema.
pub(crate) fn as_schema<'v>(
    value: &'v Value,
    path: &str,
) -> Result<Option<&'v Map<String, Value>>, CompatError> {
    match value {
        Value::Object(object) => Ok(Some(object)),
        Value::Bool(_) => Ok(None),
        other => Err(CompatError::InvalidSchema {
            path: path.to_string(),
            found: describe(other),
        }),
    }
}

/// A schema that accepts every instance: `true`, `{}` or annotations only.
pub(crate) fn accepts_everything(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Object(object) => object
            .keys()
            .all(|k| ANNOTATIONS.contains(&k.as_str()) || STRUCTURAL.contains(&k.as_str())),
        _ => false,
    }
}

/// A schema that rejects every instance.
pub(crate) fn rejects_everything(value: &Value) -> bool {
    matches!(value, Value::Bool(false))
        || value
            .as_object()
            .and_then(|o| o.get("not"))
            .is_some_and(accepts_everything)
}

/// A number-valued keyword.
pub(crate) fn number(
    object: &Map<String, Value>,
    keyword: &str,
    path: &str,
) -> Result<Option<f64>, CompatError> {
    match object.get(keyword) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .map(Some)
            .ok_or_else(|| CompatError::InvalidKeyword {
                path: path.to_string(),
                keyword: keyword.to_string(),
                expected: "a number",
            }),
    }
}

/// A string-valued keyword.
pub(crate) fn string<'v>(
    object: &'v Map<String, Value>,
    keyword: &str,
    path: &str,
) -> Result<Option<&'v str>, CompatError> {
    match object.get(keyword) {
        None => Ok(None),
        Some(value) => value
            .as_str()
            .map(Some)
            .ok_or_else(|| CompatError::InvalidKeyword {
                path: path.to_string(),
                keyword: keyword.to_string(),
                expected: "a string",
            }),
    }
}

/// An array-of-strings keyword (`required`, a `dependentRequired` entry).
pub(crate) fn string_list(
    value: Option<&Value>,
    keyword: &str,
    path: &str,
) -> Result<Vec<String>, CompatError> {
    let invalid = || CompatError::InvalidKeyword {
        path: path.to_string(),
        keyword: keyword.to_string(),
        expected: "an array of strings",
    };
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let items = value.as_array().ok_or_else(invalid)?;
    let mut names = items
        .iter()
        .map(|item| item.as_str().map(str::to_string).ok_or_else(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    names.dedup();
    Ok(names)
}

/// An object-of-schemas keyword (`properties`, `$defs`, ...).
pub(crate) fn schema_map<'v>(
    object: &'v Map<String, Value>,
    keyword: &str,
    path: &str,
) -> Result<Option<&'v Map<String, Value>>, CompatError> {
    match object.get(keyword) {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(CompatError::InvalidKeyword {
            path: path.to_string(),
            keyword: keyword.to_string(),
            expected: "an object whose values are schemas",
        }),
    }
}

/// An array-of-schemas keyword (`allOf`, `prefixItems`, ...).
pub(crate) fn schema_list<'v>(
    object: &'v Map<String, Value>,
    keyword: &str,
    path: &str,
) -> Result<Option<&'v Vec<Value>>, CompatError> {
    match object.get(keyword) {
        None => Ok(None),
        Some(Value::Array(list)) => Ok(Some(list)),
        Some(_) => Err(CompatError::InvalidKeyword {
            path: path.to_string(),
            keyword: keyword.to_string(),
            expected: "an array of schemas",
        }),
    }
}

/// JSON equality as JSON Schema sees it: 1 and 1.0 are the same number.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}
