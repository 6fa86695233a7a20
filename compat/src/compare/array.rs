//! Array keywords: tuple positions (prefixItems, or draft-07 array `items`), the items past
//! them, counts, uniqueness and `contains`.

use serde_json::{Map, Value};

use super::object::ContentModel;
use super::scalar::{bound_kinds, compare_bound};
use super::{Changes, Comparator, Outcome};
use crate::change::{Change, ChangeKind};
use crate::schema::{Node, join, schema_list};

/// An array schema in one shape for both dialects.
struct ArrayShape<'a> {
    /// Schemas for the leading positions.
    prefix: Vec<Node<'a>>,
    /// The keyword holding them (`prefixItems`, or `items` in draft-07 tuple form).
    prefix_keyword: &'static str,
    /// The schema for items past the prefix, if any.
    rest: Option<Node<'a>>,
    /// The keyword holding it (`items`, or `additionalItems` in draft-07 tuple form).
    rest_keyword: &'static str,
}

impl<'a> ArrayShape<'a> {
    fn of(o: &'a Map<String, Value>, node: &Node<'a>, path: &str) -> Outcome<Self> {
        let fallback = |keyword: &'static str| {
            o.get(keyword)
                .map(|v| node.child(v, &[keyword]))
                .or_else(|| {
                    o.get("unevaluatedItems")
                        .map(|v| node.child(v, &["unevaluatedItems"]))
                })
        };
        let positions = |list: &'a Vec<Value>, keyword: &'static str| {
            list.iter()
                .enumerate()
                .map(|(i, v)| node.child(v, &[keyword, &i.to_string()]))
                .collect::<Vec<_>>()
        };
        if let Some(list) = schema_list(o, "prefixItems", path)? {
            return Ok(ArrayShape {
                prefix: positions(list, "prefixItems"),
                prefix_keyword: "prefixItems",
                rest: fallback("items"),
                rest_keyword: "items",
            });
        }
        if let Some(Value::Array(list)) = o.get("items") {
            return Ok(ArrayShape {
                prefix: positions(list, "items"),
                prefix_keyword: "items",
                rest: fallback("additionalItems"),
                rest_keyword: "additionalItems",
            });
        }
        Ok(ArrayShape {
            prefix: Vec::new(),
            prefix_keyword: "prefixItems",
            rest: fallback("items"),
            rest_keyword: "items",
        })
    }
}

impl<'a> Comparator<'a> {
    pub(crate) fn compare_array_keywords(
        &mut self,
        o: &'a Map<String, Value>,
        n: &'a Map<String, Value>,
        old: &Node<'a>,
        new: &Node<'a>,
        path: &str,
        out: &mut Changes,
    ) -> Outcome<()> {
        let old_shape = ArrayShape::of(o, old, path)?;
        let new_shape = ArrayShape::of(n, new, path)?;
        let positions = old_shape.prefix.len().max(new_shape.prefix.len());
        for index in 0..positions {
            let keyword = if index < new_shape.prefix.len() {
                new_shape.prefix_keyword
            } else {
                old_shape.prefix_keyword
            };
            let child_path = join(path, &[keyword, &index.to_string()]);
            match (old_shape.prefix.get(index), new_shape.prefix.get(index)) {
                (Some(a), Some(b)) => {
                    let changes = self.compare(a.clone(), b.clone(), &child_path)?;
                    out.extend(changes);
                }
                (None, Some(b)) => {
                    let (model, before) =
                        Self::classify_rest(self.old, old_shape.rest.as_ref(), path)?;
                    let nested = self.compare(before, b.clone(), &child_path)?;
                    let kind = match model {
                        ContentModel::Open => ChangeKind::ItemAddedToOpenContentModel,
                        ContentModel::Closed => ChangeKind::ItemAddedToClosedContentModel,
                        ContentModel::PartiallyOpen => {
                            ChangeKind::ItemAddedToPartiallyOpenContentModel
                        }
                    };
                    push_position_change(kind, model, &child_path, nested, out);
                }
                (Some(a), None) => {
                    let (model, after) =
                        Self::classify_rest(self.new, new_shape.rest.as_ref(), path)?;
                    let nested = self.compare(a.clone(), after, &child_path)?;
                    let kind = match model {
                        ContentModel::Open => ChangeKind::ItemRemovedFromOpenContentModel,
                        ContentModel::Closed => ChangeKind::ItemRemovedFromClosedContentModel,
                        ContentModel::PartiallyOpen => {
                            ChangeKind::ItemRemovedFromPartiallyOpenContentModel
                        }
                    };
                    push_position_change(kind, model, &child_path, nested, out);
                }
                (None, None) => {}
            }
        }
        let rest_keyword = if new_shape.rest.is_some() {
            new_shape.rest_keyword
        } else {
            old_shape.rest_keyword
        };
        let changes =
            self.compare_rest(old_shape.rest, new_shape.rest, &join(path, &[rest_keyword]))?;
        out.extend(changes);

        compare_bound(
            o,
            n,
            "maxItems",
            true,
            bound_kinds!(
                MaxItemsAdded,
                MaxItemsRemoved,
                MaxItemsIncreased,
                MaxItemsDecreased
            ),
            path,
            out,
        )?;
        compare_bound(
            o,
            n,
            "minItems",
            false,
            bound_kinds!(
                MinItemsAdded,
                MinItemsRemoved,
                MinItemsIncreased,
                MinItemsDecreased
            ),
            path,
            out,
        )?;

        let unique = |m: &Map<String, Value>| {
            m.get("uniqueItems")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        match (unique(o), unique(n)) {
            (false, true) => out.push(Change::new(ChangeKind::UniqueItemsAdded, path, true, false)),
            (true, false) => out.push(Change::new(
                ChangeKind::UniqueItemsRemoved,
                path,
                false,
                true,
            )),
            _ => {}
        }

        let contains_path = join(path, &["contains"]);
        match (o.get("contains"), n.get("contains")) {
            (None, Some(_)) => out.push(Change::new(
                ChangeKind::ContainsAdded,
                &contains_path,
                true,
                false,
            )),
            (Some(_), None) => out.push(Change::new(
                ChangeKind::ContainsRemoved,
                &contains_path,
                false,
                true,
            )),
            (Some(a), Some(b)) => {
                // An array that had an item matching the old `contains` has one matching a
                // wider `contains` too: inclusion runs the same way as for the schemas.
                let changes = self.compare(
                    old.child(a, &["contains"]),
                    new.child(b, &["contains"]),
                    &contains_path,
                )?;
                out.extend(changes);
                let count = |m: &Map<String, Value>, k: &str, default: f64| {
                    m.get(k).and_then(Value::as_f64).unwrap_or(default)
                };
                if count(o, "minContains", 1.0) != count(n, "minContains", 1.0)
                    || count(o, "maxContains", f64::INFINITY)
                        != count(n, "maxContains", f64::INFINITY)
                {
                    out.push(Change::new(
                        ChangeKind::ContainsChanged,
                        &contains_path,
                        true,
                        true,
                    ));
                }
            }
            (None, None) => {}
        }
        Ok(())
    }
}

fn push_position_change(
    kind: ChangeKind,
    model: ContentModel,
    path: &str,
    nested: Changes,
    out: &mut Changes,
) {
    let (breaks_backward, breaks_forward) = super::flags(&nested);
    out.push(Change::new(kind, path, breaks_backward, breaks_forward));
    if model == ContentModel::PartiallyOpen {
        out.extend(nested);
    }
}
