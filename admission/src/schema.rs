//! One CRD version's `openAPIV3Schema`, compiled once into the tree that every check walks.
//!
//! Compiling reads each keyword once: patterns become regexes, CEL rules become programs. Objects
//! are then checked without parsing anything again.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::pattern::Pattern;
use crate::rules::NodeRules;

/// A JSON type a schema node can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonType {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl JsonType {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "object" => Self::Object,
            "array" => Self::Array,
            "string" => Self::String,
            "integer" => Self::Integer,
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            _ => return None,
        })
    }

    /// The name the schema uses for this type.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Object => "object",
            Self::Array => "array",
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
        }
    }
}

/// A `format` with a meaning for admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Int32,
    Int64,
    DateTime,
}

/// How a list's items relate (`x-kubernetes-list-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListType {
    /// A plain list; duplicates are allowed.
    Atomic,
    /// Items are unique scalars.
    Set,
    /// Items are objects identified by these key fields.
    Map(Vec<String>),
}

/// One node of a compiled schema.
#[derive(Debug)]
pub(crate) struct SchemaNode {
    pub kind: Option<JsonType>,
    pub int_or_string: bool,
    pub preserve_unknown_fields: bool,
    pub nullable: bool,
    pub default: Option<Value>,
    pub properties: BTreeMap<String, SchemaNode>,
    pub required: Vec<String>,
    /// The schema of map values; `additionalProperties: true` compiles to an open node.
    pub additional_properties: Option<Box<SchemaNode>>,
    pub items: Option<Box<SchemaNode>>,
    pub enumeration: Option<Vec<Value>>,
    pub pattern: Option<Pattern>,
    pub format: Option<Format>,
    /// The `format` keyword as written, for messages.
    pub format_name: Option<String>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: bool,
    pub exclusive_maximum: bool,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub list_type: ListType,
    /// The CEL rules that run on create, if this node carries any.
    pub rules: Option<NodeRules>,
}

impl SchemaNode {
    /// A node that admits anything, for a CRD version without a schema.
    pub(crate) fn open() -> Self {
        Self::compile(&serde_json::json!({"x-kubernetes-preserve-unknown-fields": true}))
    }

    pub(crate) fn compile(schema: &Value) -> Self {
        let text = |name: &str| schema.get(name).and_then(Value::as_str);
        let flag = |name: &str| schema.get(name).and_then(Value::as_bool).unwrap_or(false);
        let count = |name: &str| schema.get(name).and_then(Value::as_u64);
        let bound = |name: &str| schema.get(name).and_then(Value::as_f64);

        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|properties| {
                properties
                    .iter()
                    .map(|(name, property)| (name.clone(), Self::compile(property)))
                    .collect()
            })
            .unwrap_or_default();
        let additional_properties = match schema.get("additionalProperties") {
            Some(Value::Bool(true)) => Some(Box::new(Self::open())),
            Some(additional @ Value::Object(_)) => Some(Box::new(Self::compile(additional))),
            _ => None,
        };
        let list_type = match text("x-kubernetes-list-type") {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => ListType::Atomic,
        };
        let format = match text("format") {
            Some("int32") => Some(Format::Int32),
            Some("int64") => Some(Format::Int64),
            Some("date-time") => Some(Format::DateTime),
            _ => None,
        };

        Self {
            kind: text("type").and_then(JsonType::parse),
            int_or_string: flag("x-kubernetes-int-or-string"),
            preserve_unknown_fields: flag("x-kubernetes-preserve-unknown-fields"),
            nullable: flag("nullable"),
            default: schema.get("default").cloned(),
            properties,
            required: schema
                .get("required")
                .and_then(Value::as_array)
                .map(|names| {
                    names
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            additional_properties,
            items: schema
                .get("items")
                .map(|items| Box::new(Self::compile(items))),
            enumeration: schema.get("enum").and_then(Value::as_array).cloned(),
            pattern: text("pattern").map(Pattern::compile),
            format,
            format_name: text("format").map(str::to_string),
            min_length: count("minLength"),
            max_length: count("maxLength"),
            minimum: bound("minimum"),
            maximum: bound("maximum"),
            exclusive_minimum: flag("exclusiveMinimum"),
            exclusive_maximum: flag("exclusiveMaximum"),
            min_items: count("minItems"),
            max_items: count("maxItems"),
            min_properties: count("minProperties"),
            max_properties: count("maxProperties"),
            list_type,
            rules: NodeRules::compile(schema),
        }
    }

    /// The declared property `name`, or the map-value schema for any other key.
    pub(crate) fn field(&self, name: &str) -> Option<&SchemaNode> {
        self.properties
            .get(name)
            .or(self.additional_properties.as_deref())
    }

    /// What the node accepts, for a type message: `integer,string` for int-or-string.
    pub(crate) fn type_name(&self) -> &'static str {
        if self.int_or_string {
            "integer,string"
        } else {
            self.kind.map_or("any", JsonType::name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keywords that change what the apiserver admits, all of which this crate checks.
    const CHECKED_KEYWORDS: &[&str] = &[
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "pattern",
        "format",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "default",
        "nullable",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-validations",
    ];

    /// Keywords that document a schema or steer server-side apply merges, and admit or refuse
    /// nothing.
    const INERT_KEYWORDS: &[&str] = &[
        "description",
        "title",
        "example",
        "externalDocs",
        "x-kubernetes-map-type",
    ];

    /// The `format`s this crate knows: `date-time` is checked on strings, `int32` and `int64` bound
    /// integers, and `float` and `double` accept any number, as in the apiserver.
    const KNOWN_FORMATS: &[&str] = &["int32", "int64", "float", "double", "date-time"];

    /// Every child schema of a raw schema node, with how it is reached, for walks over raw schemas.
    fn child_schemas(schema: &Value) -> Vec<(String, &Value)> {
        let mut children = Vec::new();
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            children.extend(
                properties
                    .iter()
                    .map(|(name, child)| (format!(".{name}"), child)),
            );
        }
        if let Some(items) = schema.get("items") {
            children.push(("[]".to_string(), items));
        }
        if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            children.push(("[*]".to_string(), additional));
        }
        children
    }

    /// Walks every schema node of every Millrace CRD and fails on a keyword, a `format` or a list
    /// type this crate does not know: a new keyword in the CRDs must come with its check here.
    #[test]
    fn the_crds_use_only_keywords_this_crate_checks() {
        fn walk(schema: &Value, path: &str, unknown: &mut Vec<String>) {
            let Some(node) = schema.as_object() else {
                unknown.push(format!("{path}: a schema node must be an object"));
                return;
            };
            for keyword in node.keys() {
                if !CHECKED_KEYWORDS.contains(&keyword.as_str())
                    && !INERT_KEYWORDS.contains(&keyword.as_str())
                {
                    unknown.push(format!("{path}: keyword {keyword}"));
                }
            }
            if let Some(format) = node.get("format").and_then(Value::as_str)
                && !KNOWN_FORMATS.contains(&format)
            {
                unknown.push(format!("{path}: format {format}"));
            }
            if let Some(list_type) = node.get("x-kubernetes-list-type").and_then(Value::as_str)
                && !["atomic", "set", "map"].contains(&list_type)
            {
                unknown.push(format!("{path}: x-kubernetes-list-type {list_type}"));
            }
            if let Some(kind) = node.get("type").and_then(Value::as_str)
                && JsonType::parse(kind).is_none()
            {
                unknown.push(format!("{path}: type {kind}"));
            }
            for rule in node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for field in rule.as_object().into_iter().flat_map(|r| r.keys()) {
                    if ![
                        "rule",
                        "message",
                        "messageExpression",
                        "reason",
                        "fieldPath",
                        "optionalOldSelf",
                    ]
                    .contains(&field.as_str())
                    {
                        unknown.push(format!("{path}: x-kubernetes-validations field {field}"));
                    }
                }
            }
            for (step, child) in child_schemas(schema) {
                walk(child, &format!("{path}{step}"), unknown);
            }
        }

        let mut unknown = Vec::new();
        let mut nodes = 0;
        for crd in millrace_crds::all_crds() {
            let crd = serde_json::to_value(&crd).expect("a CRD serializes");
            let name = crd["metadata"]["name"]
                .as_str()
                .unwrap_or("unnamed")
                .to_string();
            for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
                let schema = &version["schema"]["openAPIV3Schema"];
                assert!(schema.is_object(), "{name} has no schema");
                walk(schema, &name, &mut unknown);
                nodes += 1;
            }
        }
        assert!(
            nodes >= 3,
            "expected the three Millrace CRDs, walked {nodes} versions"
        );
        assert!(
            unknown.is_empty(),
            "the CRDs use schema features this crate does not check; teach it them:\n  {}",
            unknown.join("\n  ")
        );
    }

    /// `kube-cel` escapes property names for CEL differently from the apiserver (it turns a
    /// single `_` into `__`, which the apiserver leaves alone), so a rule reading such a field
    /// would fail here and pass there. No Millrace property needs escaping; keep it so.
    #[test]
    fn no_property_name_needs_cel_escaping() {
        fn walk(schema: &Value, path: &str, escaped: &mut Vec<String>) {
            for (name, _) in schema
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let reserved = [
                    "true",
                    "false",
                    "null",
                    "in",
                    "as",
                    "break",
                    "const",
                    "continue",
                    "else",
                    "for",
                    "function",
                    "if",
                    "import",
                    "let",
                    "loop",
                    "package",
                    "namespace",
                    "return",
                    "var",
                    "void",
                    "while",
                ];
                if name.contains(['_', '.', '-', '/']) || reserved.contains(&name.as_str()) {
                    escaped.push(format!("{path}.{name}"));
                }
            }
            for (step, child) in child_schemas(schema) {
                walk(child, &format!("{path}{step}"), escaped);
            }
        }
        let mut escaped = Vec::new();
        for crd in millrace_crds::all_crds() {
            let crd = serde_json::to_value(&crd).expect("a CRD serializes");
            for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
                walk(&version["schema"]["openAPIV3Schema"], "", &mut escaped);
            }
        }
        assert!(
            escaped.is_empty(),
            "property names that CEL escapes: {escaped:?}"
        );
    }

    #[test]
    fn compiles_each_keyword() {
        let node = SchemaNode::compile(&serde_json::json!({
            "type": "object",
            "required": ["name"],
            "maxProperties": 4,
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$", "minLength": 1, "maxLength": 8},
                "count": {"type": "integer", "format": "int32", "minimum": 1.0, "maximum": 9.0},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "args": {"type": "object", "additionalProperties": {"type": "string"}},
                "mode": {"type": "string", "enum": ["A", "B"], "default": "A", "nullable": true}
            }
        }));
        assert_eq!(node.kind, Some(JsonType::Object));
        assert_eq!(node.required, ["name"]);
        assert_eq!(node.max_properties, Some(4));
        assert_eq!(node.properties["name"].max_length, Some(8));
        assert!(node.properties["name"].pattern.is_some());
        assert_eq!(node.properties["count"].format, Some(Format::Int32));
        assert_eq!(node.properties["count"].maximum, Some(9.0));
        assert_eq!(node.properties["tags"].list_type, ListType::Set);
        assert!(node.properties["args"].additional_properties.is_some());
        assert!(node.properties["mode"].nullable);
        assert_eq!(
            node.properties["mode"].default,
            Some(serde_json::json!("A"))
        );
        assert_eq!(
            node.field("args").map(|n| n.kind),
            Some(Some(JsonType::Object))
        );
        assert!(node.field("other").is_none());
    }
}
