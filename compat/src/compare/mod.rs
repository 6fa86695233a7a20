//! The comparison walk: two schemas side by side, keyword by keyword.
//!
//! Every `compare(old, new)` answers two questions at once, recorded on each change: does the
//! new schema reject something the old one accepted (breaks backward), and does the old schema
//! reject something the new one accepts (breaks forward)?

mod array;
mod combinators;
mod object;
mod scalar;

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::change::{Change, ChangeKind};
use crate::error::CompatError;
use crate::schema::{
    ANNOTATIONS, ASSERTIONS, Document, Node, STRUCTURAL, as_schema, join, json_eq,
    rejects_everything,
};

pub(crate) type Changes = Vec<Change>;
type Outcome<T> = Result<T, CompatError>;

static EMPTY_SCHEMA: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

/// Whether any of `changes` breaks backward, and whether any breaks forward.
pub(crate) fn flags(changes: &[Change]) -> (bool, bool) {
    changes.iter().fold((false, false), |(b, f), change| {
        (b || change.breaks_backward, f || change.breaks_forward)
    })
}

/// Walks an old and a new schema document together.
pub(crate) struct Comparator<'a> {
    old: &'a Document<'a>,
    new: &'a Document<'a>,
    /// True while comparing inside a `not`, where old and new trade places.
    swapped: bool,
    /// Pairs of locations being compared right now. Meeting one again means a recursive
    /// schema came back to where it started: that pair adds no change of its own.
    active: HashSet<(bool, String, String)>,
    patterns: HashMap<String, Regex>,
}

impl<'a> Comparator<'a> {
    pub fn new(old: &'a Document<'a>, new: &'a Document<'a>) -> Self {
        Comparator {
            old,
            new,
            swapped: false,
            active: HashSet::new(),
            patterns: HashMap::new(),
        }
    }

    /// Compares two schemas; `path` is where they sit, for the changes found.
    pub fn compare(&mut self, old: Node<'a>, new: Node<'a>, path: &str) -> Outcome<Changes> {
        let old = self.old.deref(old, path)?;
        let new = self.new.deref(new, path)?;
        let key = (self.swapped, old.loc.clone(), new.loc.clone());
        if !self.active.insert(key.clone()) {
            return Ok(Vec::new());
        }
        let result = self.compare_resolved(&old, &new, path);
        self.active.remove(&key);
        result
    }

    /// Compares with old and new trading places: `old` comes from the new document and `new`
    /// from the old one. Used for `not`, which turns inclusion around.
    fn compare_swapped(&mut self, old: Node<'a>, new: Node<'a>, path: &str) -> Outcome<Changes> {
        std::mem::swap(&mut self.old, &mut self.new);
        self.swapped = !self.swapped;
        let result = self.compare(old, new, path);
        std::mem::swap(&mut self.old, &mut self.new);
        self.swapped = !self.swapped;
        result
    }

    fn compare_resolved(&mut self, old: &Node<'a>, new: &Node<'a>, path: &str) -> Outcome<Changes> {
        let old_object = as_schema(old.value, path)?;
        let new_object = as_schema(new.value, path)?;
        let old_rejects_all = rejects_everything(old.value);
        let new_rejects_all = rejects_everything(new.value);
        match (old_rejects_all, new_rejects_all) {
            (true, true) => return Ok(Vec::new()),
            (true, false) => {
                return Ok(vec![Change::new(
                    ChangeKind::FalseSchemaRemoved,
                    path,
                    false,
                    true,
                )]);
            }
            (false, true) => {
                return Ok(vec![Change::new(
                    ChangeKind::FalseSchemaAdded,
                    path,
                    true,
                    false,
                )]);
            }
            (false, false) => {}
        }
        let o = old_object.unwrap_or(&EMPTY_SCHEMA);
        let n = new_object.unwrap_or(&EMPTY_SCHEMA);
        self.compare_objects(o, n, old, new, path)
    }

    fn compare_objects(
        &mut self,
        o: &'a Map<String, Value>,
        n: &'a Map<String, Value>,
        old: &Node<'a>,
        new: &Node<'a>,
        path: &str,
    ) -> Outcome<Changes> {
        if let Some(changes) = self.compare_lifted_sum(o, n, old, new, path)? {
            return Ok(changes);
        }
        let mut out = Vec::new();
        scalar::compare_type(o, n, path, &mut out)?;
        let relevant = scalar::Relevance::of(o, n, path)?;
        if relevant.string {
            scalar::compare_string_keywords(o, n, path, &mut out)?;
        }
        if relevant.number {
            scalar::compare_number_keywords(o, n, path, &mut out)?;
        }
        scalar::compare_enum_const(o, n, path, &mut out)?;
        if relevant.object {
            self.compare_object_keywords(o, n, old, new, path, &mut out)?;
        }
        if relevant.array {
            self.compare_array_keywords(o, n, old, new, path, &mut out)?;
        }
        self.compare_combinators(o, n, old, new, path, &mut out)?;
        self.compare_references(o, n, path, &mut out)?;
        compare_annotations(o, n, path, &mut out);
        compare_unknown_keywords(o, n, path, &mut out);
        Ok(out)
    }

    /// Compares an optional subschema keyword, absent meaning `true`.
    fn compare_optional(
        &mut self,
        old: Option<Node<'a>>,
        new: Option<Node<'a>>,
        path: &str,
    ) -> Outcome<Changes> {
        if old.is_none() && new.is_none() {
            return Ok(Vec::new());
        }
        self.compare(
            old.unwrap_or_else(Node::absent),
            new.unwrap_or_else(Node::absent),
            path,
        )
    }

    fn regex(&mut self, pattern: &str, path: &str) -> Outcome<&Regex> {
        if !self.patterns.contains_key(pattern) {
            let compiled = Regex::new(pattern).map_err(|e| CompatError::UnsupportedPattern {
                path: path.to_string(),
                pattern: pattern.to_string(),
                reason: e.to_string(),
            })?;
            self.patterns.insert(pattern.to_string(), compiled);
        }
        self.patterns
            .get(pattern)
            .ok_or_else(|| CompatError::UnsupportedPattern {
                path: path.to_string(),
                pattern: pattern.to_string(),
                reason: "not cached".to_string(),
            })
    }
}

fn compare_annotations(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    path: &str,
    out: &mut Changes,
) {
    let changed = ANNOTATIONS
        .iter()
        .any(|keyword| match (o.get(*keyword), n.get(*keyword)) {
            (None, None) => false,
            (Some(a), Some(b)) => !json_eq(a, b),
            _ => true,
        });
    if changed {
        out.push(Change::new(
            ChangeKind::AnnotationChanged,
            path,
            false,
            false,
        ));
    }
}

/// Keywords the checker does not know fail closed: any change to them breaks both ways.
fn compare_unknown_keywords(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    path: &str,
    out: &mut Changes,
) {
    let known =
        |k: &str| ANNOTATIONS.contains(&k) || STRUCTURAL.contains(&k) || ASSERTIONS.contains(&k);
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).filter(|k| !known(k)).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let kind = match (o.get(key), n.get(key)) {
            (Some(_), None) => ChangeKind::UnknownKeywordRemoved,
            (None, Some(_)) => ChangeKind::UnknownKeywordAdded,
            (Some(a), Some(b)) if !json_eq(a, b) => ChangeKind::UnknownKeywordChanged,
            _ => continue,
        };
        out.push(Change::new(kind, &join(path, &[key]), true, true));
    }
}
