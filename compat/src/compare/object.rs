//! Object keywords: required, properties in open, closed and partially open content models,
//! patternProperties, additionalProperties, property counts, names and dependencies.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::scalar::{bound_kinds, compare_bound};
use super::{Changes, Comparator, Outcome, flags};
use crate::change::{Change, ChangeKind};
use crate::error::CompatError;
use crate::schema::{
    Document, Node, accepts_everything, join, rejects_everything, schema_map, string_list,
};

/// What a schema says about a property name (or tuple position) it does not declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContentModel {
    /// Anything is allowed there.
    Open,
    /// Nothing is allowed there.
    Closed,
    /// A schema governs it: a matching `patternProperties` entry, or a non-trivial
    /// `additionalProperties` / `items` schema.
    PartiallyOpen,
}

/// Sorted union of two optional maps' keys.
pub(crate) fn key_union<'v>(
    a: Option<&'v Map<String, Value>>,
    b: Option<&'v Map<String, Value>>,
) -> Vec<&'v String> {
    let mut keys: Vec<&String> = a.into_iter().chain(b).flat_map(|m| m.keys()).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The schema for undeclared members: `additionalProperties`, or `unevaluatedProperties`
/// when that is what closes the object.
fn rest_of<'a>(o: &'a Map<String, Value>, node: &Node<'a>) -> Option<Node<'a>> {
    ["additionalProperties", "unevaluatedProperties"]
        .iter()
        .find_map(|keyword| o.get(*keyword).map(|value| node.child(value, &[keyword])))
}

impl<'a> Comparator<'a> {
    /// Classifies the schema for members beyond the declared ones.
    pub(crate) fn classify_rest(
        doc: &Document<'a>,
        rest: Option<&Node<'a>>,
        path: &str,
    ) -> Outcome<(ContentModel, Node<'a>)> {
        let Some(rest) = rest else {
            return Ok((ContentModel::Open, Node::absent()));
        };
        let resolved = doc.deref(rest.clone(), path)?;
        let model = if rejects_everything(resolved.value) {
            ContentModel::Closed
        } else if accepts_everything(resolved.value) {
            ContentModel::Open
        } else {
            ContentModel::PartiallyOpen
        };
        Ok((model, rest.clone()))
    }

    /// The schema that applies to an undeclared property `name`, and the content model it
    /// comes from.
    fn member_schema(
        &mut self,
        old_side: bool,
        o: &'a Map<String, Value>,
        node: &Node<'a>,
        name: &str,
        path: &str,
    ) -> Outcome<(ContentModel, Node<'a>)> {
        if let Some(patterns) = schema_map(o, "patternProperties", path)? {
            let mut sorted: Vec<(&String, &Value)> = patterns.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            for (pattern, schema) in sorted {
                if self.regex(pattern, path)?.is_match(name) {
                    return Ok((
                        ContentModel::PartiallyOpen,
                        node.child(schema, &["patternProperties", pattern]),
                    ));
                }
            }
        }
        let doc = if old_side { self.old } else { self.new };
        Self::classify_rest(doc, rest_of(o, node).as_ref(), path)
    }

    /// Compares what two schemas allow beyond their declared members (additionalProperties,
    /// or the items past a tuple's positions).
    pub(crate) fn compare_rest(
        &mut self,
        old: Option<Node<'a>>,
        new: Option<Node<'a>>,
        path: &str,
    ) -> Outcome<Changes> {
        if old.is_none() && new.is_none() {
            return Ok(Vec::new());
        }
        let (old_model, old_node) = Self::classify_rest(self.old, old.as_ref(), path)?;
        let (new_model, new_node) = Self::classify_rest(self.new, new.as_ref(), path)?;
        Ok(
            match (
                old_model == ContentModel::Closed,
                new_model == ContentModel::Closed,
            ) {
                (true, true) => Vec::new(),
                (false, true) => vec![Change::new(
                    ChangeKind::ContentModelClosed,
                    path,
                    true,
                    false,
                )],
                (true, false) => vec![Change::new(
                    ChangeKind::ContentModelOpened,
                    path,
                    false,
                    true,
                )],
                (false, false) => self.compare(old_node, new_node, path)?,
            },
        )
    }

    pub(crate) fn compare_object_keywords(
        &mut self,
        o: &'a Map<String, Value>,
        n: &'a Map<String, Value>,
        old: &Node<'a>,
        new: &Node<'a>,
        path: &str,
        out: &mut Changes,
    ) -> Outcome<()> {
        let old_required = string_list(o.get("required"), "required", path)?;
        let new_required = string_list(n.get("required"), "required", path)?;
        for name in new_required
            .iter()
            .filter(|name| !old_required.contains(name))
        {
            out.push(Change::new(
                ChangeKind::RequiredAttributeAdded,
                &join(path, &["properties", name]),
                true,
                false,
            ));
        }
        for name in old_required
            .iter()
            .filter(|name| !new_required.contains(name))
        {
            out.push(Change::new(
                ChangeKind::RequiredAttributeRemoved,
                &join(path, &["properties", name]),
                false,
                true,
            ));
        }

        let old_properties = schema_map(o, "properties", path)?;
        let new_properties = schema_map(n, "properties", path)?;
        for name in key_union(old_properties, new_properties) {
            let child_path = join(path, &["properties", name]);
            let old_schema = old_properties.and_then(|m| m.get(name));
            let new_schema = new_properties.and_then(|m| m.get(name));
            match (old_schema, new_schema) {
                (Some(a), Some(b)) => {
                    let changes = self.compare(
                        old.child(a, &["properties", name]),
                        new.child(b, &["properties", name]),
                        &child_path,
                    )?;
                    out.extend(changes);
                }
                (None, Some(b)) => {
                    let (model, before) = self.member_schema(true, o, old, name, path)?;
                    let nested =
                        self.compare(before, new.child(b, &["properties", name]), &child_path)?;
                    let kind = match model {
                        ContentModel::Open => ChangeKind::PropertyAddedToOpenContentModel,
                        ContentModel::Closed => ChangeKind::PropertyAddedToClosedContentModel,
                        ContentModel::PartiallyOpen => {
                            ChangeKind::PropertyAddedToPartiallyOpenContentModel
                        }
                    };
                    push_member_change(kind, model, &child_path, nested, out);
                }
                (Some(a), None) => {
                    let (model, after) = self.member_schema(false, n, new, name, path)?;
                    let nested =
                        self.compare(old.child(a, &["properties", name]), after, &child_path)?;
                    let kind = match model {
                        ContentModel::Open => ChangeKind::PropertyRemovedFromOpenContentModel,
                        ContentModel::Closed => ChangeKind::PropertyRemovedFromClosedContentModel,
                        ContentModel::PartiallyOpen => {
                            ChangeKind::PropertyRemovedFromPartiallyOpenContentModel
                        }
                    };
                    push_member_change(kind, model, &child_path, nested, out);
                }
                (None, None) => {}
            }
        }

        let old_patterns = schema_map(o, "patternProperties", path)?;
        let new_patterns = schema_map(n, "patternProperties", path)?;
        for pattern in key_union(old_patterns, new_patterns) {
            let child_path = join(path, &["patternProperties", pattern]);
            let at = ["patternProperties", pattern.as_str()];
            match (
                old_patterns.and_then(|m| m.get(pattern)),
                new_patterns.and_then(|m| m.get(pattern)),
            ) {
                (Some(a), Some(b)) => {
                    let changes =
                        self.compare(old.child(a, &at), new.child(b, &at), &child_path)?;
                    out.extend(changes);
                }
                (None, Some(b)) => {
                    let before = rest_of(o, old).unwrap_or_else(Node::absent);
                    let (breaks_backward, breaks_forward) =
                        flags(&self.compare(before, new.child(b, &at), &child_path)?);
                    out.push(Change::new(
                        ChangeKind::PatternPropertyAdded,
                        &child_path,
                        breaks_backward,
                        breaks_forward,
                    ));
                }
                (Some(a), None) => {
                    let after = rest_of(n, new).unwrap_or_else(Node::absent);
                    let (breaks_backward, breaks_forward) =
                        flags(&self.compare(old.child(a, &at), after, &child_path)?);
                    out.push(Change::new(
                        ChangeKind::PatternPropertyRemoved,
                        &child_path,
                        breaks_backward,
                        breaks_forward,
                    ));
                }
                (None, None) => {}
            }
        }

        let changes = self.compare_rest(
            rest_of(o, old),
            rest_of(n, new),
            &join(path, &["additionalProperties"]),
        )?;
        out.extend(changes);

        compare_bound(
            o,
            n,
            "maxProperties",
            true,
            bound_kinds!(
                MaxPropertiesAdded,
                MaxPropertiesRemoved,
                MaxPropertiesIncreased,
                MaxPropertiesDecreased
            ),
            path,
            out,
        )?;
        compare_bound(
            o,
            n,
            "minProperties",
            false,
            bound_kinds!(
                MinPropertiesAdded,
                MinPropertiesRemoved,
                MinPropertiesIncreased,
                MinPropertiesDecreased
            ),
            path,
            out,
        )?;

        let changes = self.compare_optional(
            o.get("propertyNames")
                .map(|v| old.child(v, &["propertyNames"])),
            n.get("propertyNames")
                .map(|v| new.child(v, &["propertyNames"])),
            &join(path, &["propertyNames"]),
        )?;
        out.extend(changes);

        self.compare_dependencies(o, n, old, new, path, out)
    }

    fn compare_dependencies(
        &mut self,
        o: &'a Map<String, Value>,
        n: &'a Map<String, Value>,
        old: &Node<'a>,
        new: &Node<'a>,
        path: &str,
        out: &mut Changes,
    ) -> Outcome<()> {
        let old_deps = Dependencies::of(o, old, path)?;
        let new_deps = Dependencies::of(n, new, path)?;

        let mut names: Vec<&String> = old_deps
            .required
            .keys()
            .chain(new_deps.required.keys())
            .copied()
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let child_path = join(path, &["dependentRequired", name]);
            let change = match (old_deps.required.get(name), new_deps.required.get(name)) {
                (None, Some(_)) => {
                    Change::new(ChangeKind::DependentRequiredAdded, &child_path, true, false)
                }
                (Some(_), None) => Change::new(
                    ChangeKind::DependentRequiredRemoved,
                    &child_path,
                    false,
                    true,
                ),
                (Some(a), Some(b)) => {
                    let a_in_b = a.iter().all(|x| b.contains(x));
                    let b_in_a = b.iter().all(|x| a.contains(x));
                    match (a_in_b, b_in_a) {
                        (true, true) => continue,
                        (true, false) => Change::new(
                            ChangeKind::DependentRequiredExtended,
                            &child_path,
                            true,
                            false,
                        ),
                        (false, true) => Change::new(
                            ChangeKind::DependentRequiredNarrowed,
                            &child_path,
                            false,
                            true,
                        ),
                        (false, false) => Change::new(
                            ChangeKind::DependentRequiredChanged,
                            &child_path,
                            true,
                            true,
                        ),
                    }
                }
                (None, None) => continue,
            };
            out.push(change);
        }

        let mut names: Vec<&String> = old_deps
            .schemas
            .keys()
            .chain(new_deps.schemas.keys())
            .copied()
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let child_path = join(path, &["dependentSchemas", name]);
            match (old_deps.schemas.get(name), new_deps.schemas.get(name)) {
                (Some(a), Some(b)) => {
                    let changes = self.compare(a.clone(), b.clone(), &child_path)?;
                    out.extend(changes);
                }
                (None, Some(b)) => {
                    let (bb, bf) = flags(&self.compare(Node::absent(), b.clone(), &child_path)?);
                    out.push(Change::new(
                        ChangeKind::DependentSchemaAdded,
                        &child_path,
                        bb,
                        bf,
                    ));
                }
                (Some(a), None) => {
                    let (bb, bf) = flags(&self.compare(a.clone(), Node::absent(), &child_path)?);
                    out.push(Change::new(
                        ChangeKind::DependentSchemaRemoved,
                        &child_path,
                        bb,
                        bf,
                    ));
                }
                (None, None) => {}
            }
        }
        Ok(())
    }
}

/// A property added or removed: its own change, carrying whether the move breaks anything.
/// Under a partially open model the nested differences explain why, so they are kept.
fn push_member_change(
    kind: ChangeKind,
    model: ContentModel,
    path: &str,
    nested: Changes,
    out: &mut Changes,
) {
    let (breaks_backward, breaks_forward) = flags(&nested);
    out.push(Change::new(kind, path, breaks_backward, breaks_forward));
    if model == ContentModel::PartiallyOpen {
        out.extend(nested);
    }
}

/// `dependentRequired` and `dependentSchemas`, with draft-07 `dependencies` folded in.
struct Dependencies<'a> {
    required: BTreeMap<&'a String, Vec<String>>,
    schemas: BTreeMap<&'a String, Node<'a>>,
}

impl<'a> Dependencies<'a> {
    fn of(o: &'a Map<String, Value>, node: &Node<'a>, path: &str) -> Outcome<Self> {
        let mut deps = Dependencies {
            required: BTreeMap::new(),
            schemas: BTreeMap::new(),
        };
        if let Some(map) = schema_map(o, "dependentRequired", path)? {
            for (name, value) in map {
                deps.required
                    .insert(name, string_list(Some(value), "dependentRequired", path)?);
            }
        }
        if let Some(map) = schema_map(o, "dependentSchemas", path)? {
            for (name, value) in map {
                deps.schemas
                    .insert(name, node.child(value, &["dependentSchemas", name]));
            }
        }
        if let Some(map) = schema_map(o, "dependencies", path)? {
            for (name, value) in map {
                match value {
                    Value::Array(_) => {
                        deps.required
                            .insert(name, string_list(Some(value), "dependencies", path)?);
                    }
                    Value::Object(_) | Value::Bool(_) => {
                        deps.schemas
                            .insert(name, node.child(value, &["dependencies", name]));
                    }
                    _ => {
                        return Err(CompatError::InvalidKeyword {
                            path: path.to_string(),
                            keyword: "dependencies".to_string(),
                            expected: "an object whose values are arrays of property names or schemas",
                        });
                    }
                }
            }
        }
        Ok(deps)
    }
}
