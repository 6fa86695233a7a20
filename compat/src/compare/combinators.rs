//! allOf (product types), anyOf/oneOf (sum types), not, if/then/else, and `$ref`s that sit
//! next to other constraints.

use serde_json::{Map, Value};

use super::scalar::{enum_values, type_set};
use super::{Changes, Comparator, Outcome, flags};
use crate::change::{Change, ChangeKind};
use crate::schema::{
    ANNOTATIONS, Document, Node, STRUCTURAL, accepts_everything, join, json_eq, schema_list,
    string_list,
};

const SUM_KEYWORDS: [&str; 2] = ["anyOf", "oneOf"];
const COMPOSITION: [&str; 7] = [
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "if",
    "$ref",
    "$dynamicRef",
];

/// The sum keyword of a schema made of nothing but `anyOf` or `oneOf` (plus annotations).
fn pure_sum(o: &Map<String, Value>) -> Option<&'static str> {
    let mut assertions = o
        .keys()
        .filter(|k| !ANNOTATIONS.contains(&k.as_str()) && !STRUCTURAL.contains(&k.as_str()));
    let only = assertions.next()?;
    if assertions.next().is_some() {
        return None;
    }
    SUM_KEYWORDS.into_iter().find(|k| k == only)
}

/// A schema with constraints of its own and no composition keywords.
fn plain(o: &Map<String, Value>) -> bool {
    !COMPOSITION.iter().any(|k| o.contains_key(*k))
        && !accepts_everything(&Value::Object(o.clone()))
}

struct Matching {
    pairs: Vec<(usize, usize, Changes)>,
    old_only: Vec<usize>,
    new_only: Vec<usize>,
}

impl<'a> Comparator<'a> {
    /// `{"type": "string"}` becoming `{"oneOf": [{"type": "string"}, {"type": "null"}]}` is a
    /// sum type extended, not a pile of removed keywords: a plain schema facing a pure sum is
    /// compared as a sum of one alternative.
    pub(crate) fn compare_lifted_sum(
        &mut self,
        o: &'a Map<String, Value>,
        n: &'a Map<String, Value>,
        old: &Node<'a>,
        new: &Node<'a>,
        path: &str,
    ) -> Outcome<Option<Changes>> {
        if let (true, Some(keyword)) = (plain(o), pure_sum(n)) {
            let branches = self.branches(n, new, keyword, path)?;
            return self
                .compare_sums(keyword, vec![old.clone()], keyword, branches, path)
                .map(Some);
        }
        if let (Some(keyword), true) = (pure_sum(o), plain(n)) {
            let branches = self.branches(o, old, keyword, path)?;
            return self
                .compare_sums(keyword, branches, keyword, vec![new.clone()], path)
                .map(Some);
        }
        Ok(None)
    }

    fn branches(
        &self,
        o: &'a Map<String, Value>,
        node: &Node<'a>,
        keyword: &str,
        path: &str,
    ) -> Outcome<Vec<Node<'a>>> {
        Ok(schema_list(o, keyword, path)?
            .map(|list| {
                list.iter()
                    .enumerate()
                    .map(|(i, v)| node.child(v, &[keyword, &i.to_string()]))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub(crate) fn compare_combinators(
        &mut self,
        o: &'a Map<String, Value>,
        n: &'a Map<String, Value>,
        old: &Node<'a>,
        new: &Node<'a>,
        path: &str,
        out: &mut Changes,
    ) -> Outcome<()> {
        self.compare_all_of(o, n, old, new, path, out)?;

        let old_sums: Vec<&str> = SUM_KEYWORDS
            .into_iter()
            .filter(|k| o.contains_key(*k))
            .collect();
        let new_sums: Vec<&str> = SUM_KEYWORDS
            .into_iter()
            .filter(|k| n.contains_key(*k))
            .collect();
        if old_sums.len() <= 1 && new_sums.len() <= 1 {
            self.compare_sum_keywords(
                old_sums.first().copied(),
                new_sums.first().copied(),
                o,
                n,
                old,
                new,
                path,
                out,
            )?;
        } else {
            for keyword in SUM_KEYWORDS {
                let a = o.contains_key(keyword).then_some(keyword);
                let b = n.contains_key(keyword).then_some(keyword);
                self.compare_sum_keywords(a, b, o, n, old, new, path, out)?;
            }
        }

        self.compare_not(o, n, old, new, path, out)?;
        self.compare_conditional(o, n, old, new, path, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn compare_sum_keywords(
        &mut self,
        old_keyword: Option<&'static str>,
        new_keyword: Option<&'static str>,
        o: &'a Map<String, Value>,
        n: &'a Map<String, Value>,
        old: &Node<'a>,
        new: &Node<'a>,
        path: &str,
        out: &mut Changes,
    ) -> Outcome<()> {
        match (old_keyword, new_keyword) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                let old_branches = self.branches(o, old, a, path)?;
                let new_branches = self.branches(n, new, b, path)?;
                let changes = self.compare_sums(a, old_branches, b, new_branches, path)?;
                out.extend(changes);
            }
            (None, Some(b)) => {
                let any_open =
                    schema_list(n, b, path)?.is_some_and(|l| l.iter().any(accepts_everything));
                out.push(Change::new(
                    ChangeKind::CombinedTypeAdded,
                    &join(path, &[b]),
                    !any_open,
                    false,
                ));
            }
            (Some(a), None) => {
                let any_open =
                    schema_list(o, a, path)?.is_some_and(|l| l.iter().any(accepts_everything));
                out.push(Change::new(
                    ChangeKind::CombinedTypeRemoved,
                    &join(path, &[a]),
                    false,
                    !any_open,
                ));
            }
        }
        Ok(())
    }

    /// Compares two lists of alternatives.
    fn compare_sums(
        &mut self,
        old_keyword: &str,
        old_branches: Vec<Node<'a>>,
        new_keyword: &str,
        new_branches: Vec<Node<'a>>,
        path: &str,
    ) -> Outcome<Changes> {
        let mut out = Vec::new();
        if old_keyword != new_keyword {
            // oneOf accepts a subset of what anyOf accepts over the same alternatives.
            let to_one_of = new_keyword == "oneOf";
            out.push(Change::new(
                ChangeKind::CombinedTypeChanged,
                path,
                to_one_of,
                !to_one_of,
            ));
        }
        let matching = self.match_branches(&old_branches, &new_branches, path, new_keyword)?;
        for (_, _, changes) in matching.pairs {
            out.extend(changes);
        }
        for j in matching.new_only {
            // A new oneOf alternative that overlaps another makes instances matching both invalid.
            let overlaps = new_keyword == "oneOf"
                && new_branches.iter().enumerate().any(|(k, other)| {
                    k != j && !provably_disjoint(self.new, &new_branches[j], other, 0)
                });
            out.push(Change::new(
                ChangeKind::SumTypeExtended,
                &join(path, &[new_keyword, &j.to_string()]),
                overlaps,
                true,
            ));
        }
        for i in matching.old_only {
            let overlapped = old_keyword == "oneOf"
                && old_branches.iter().enumerate().any(|(k, other)| {
                    k != i && !provably_disjoint(self.old, &old_branches[i], other, 0)
                });
            out.push(Change::new(
                ChangeKind::SumTypeNarrowed,
                &join(path, &[old_keyword, &i.to_string()]),
                true,
                overlapped,
            ));
        }
        Ok(out)
    }

    /// Pairs old alternatives with new ones: identical ones first, then the closest pairs
    /// whose types overlap. The rest were added or removed.
    fn match_branches(
        &mut self,
        old_branches: &[Node<'a>],
        new_branches: &[Node<'a>],
        path: &str,
        keyword: &str,
    ) -> Outcome<Matching> {
        let mut candidates = Vec::new();
        for (i, a) in old_branches.iter().enumerate() {
            let a_types = node_types(self.old, a);
            for (j, b) in new_branches.iter().enumerate() {
                if a_types & node_types(self.new, b) == 0 {
                    continue;
                }
                let changes = self.compare(
                    a.clone(),
                    b.clone(),
                    &join(path, &[keyword, &j.to_string()]),
                )?;
                let breaking = changes
                    .iter()
                    .filter(|c| c.breaks_backward || c.breaks_forward)
                    .count();
                candidates.push(((breaking, changes.len(), i, j), changes));
            }
        }
        candidates.sort_by_key(|candidate| candidate.0);
        let mut old_taken = vec![false; old_branches.len()];
        let mut new_taken = vec![false; new_branches.len()];
        let mut pairs = Vec::new();
        for ((_, _, i, j), changes) in candidates {
            if old_taken[i] || new_taken[j] {
                continue;
            }
            old_taken[i] = true;
            new_taken[j] = true;
            pairs.push((i, j, changes));
        }
        pairs.sort_by_key(|(_, j, _)| *j);
        Ok(Matching {
            pairs,
            old_only: (0..old_branches.len()).filter(|i| !old_taken[*i]).collect(),
            new_only: (0..new_branches.len()).filter(|j| !new_taken[*j]).collect(),
        })
    }

    fn compare_all_of(
        &mut self,
        o: &'a Map<String, Value>,
        n: &'a Map<String, Value>,
        old: &Node<'a>,
        new: &Node<'a>,
        path: &str,
        out: &mut Changes,
    ) -> Outcome<()> {
        let old_branches = self.branches(o, old, "allOf", path)?;
        let new_branches = self.branches(n, new, "allOf", path)?;
        if old_branches.is_empty() && new_branches.is_empty() {
            return Ok(());
        }
        let matching = self.match_branches(&old_branches, &new_branches, path, "allOf")?;
        for (_, _, changes) in matching.pairs {
            out.extend(changes);
        }
        for j in matching.new_only {
            let branch_path = join(path, &["allOf", &j.to_string()]);
            let (b, f) =
                flags(&self.compare(Node::absent(), new_branches[j].clone(), &branch_path)?);
            out.push(Change::new(
                ChangeKind::ProductTypeExtended,
                &branch_path,
                b,
                f,
            ));
        }
        for i in matching.old_only {
            let branch_path = join(path, &["allOf", &i.to_string()]);
            let (b, f) =
                flags(&self.compare(old_branches[i].clone(), Node::absent(), &branch_path)?);
            out.push(Change::new(
                ChangeKind::ProductTypeNarrowed,
                &branch_path,
                b,
                f,
            ));
        }
        Ok(())
    }

    fn compare_not(
        &mut self,
        o: &'a Map<String, Value>,
        n: &'a Map<String, Value>,
        old: &Node<'a>,
        new: &Node<'a>,
        path: &str,
        out: &mut Changes,
    ) -> Outcome<()> {
        let not_path = join(path, &["not"]);
        match (o.get("not"), n.get("not")) {
            (None, None) => {}
            (None, Some(b)) => {
                let rejects_nothing = matches!(b, Value::Bool(false));
                out.push(Change::new(
                    ChangeKind::NotTypeAdded,
                    &not_path,
                    !rejects_nothing,
                    false,
                ));
            }
            (Some(a), None) => {
                let rejected_nothing = matches!(a, Value::Bool(false));
                out.push(Change::new(
                    ChangeKind::NotTypeRemoved,
                    &not_path,
                    false,
                    !rejected_nothing,
                ));
            }
            (Some(a), Some(b)) => {
                // not(A) contains not(B) exactly when B contains A: compare with the sides swapped.
                let inner = self.compare_swapped(
                    new.child(b, &["not"]),
                    old.child(a, &["not"]),
                    &not_path,
                )?;
                let kind = match flags(&inner) {
                    (true, true) => ChangeKind::NotTypeChanged,
                    (true, false) => ChangeKind::NotTypeExtended,
                    (false, true) => ChangeKind::NotTypeNarrowed,
                    (false, false) => return Ok(()),
                };
                let (b, f) = flags(&inner);
                out.push(Change::new(kind, &not_path, b, f));
            }
        }
        Ok(())
    }

    fn compare_conditional(
        &mut self,
        o: &'a Map<String, Value>,
        n: &'a Map<String, Value>,
        old: &Node<'a>,
        new: &Node<'a>,
        path: &str,
        out: &mut Changes,
    ) -> Outcome<()> {
        let if_path = join(path, &["if"]);
        match (o.get("if"), n.get("if")) {
            (None, None) => {}
            (None, Some(_)) => out.push(Change::new(
                ChangeKind::ConditionalAdded,
                &if_path,
                true,
                false,
            )),
            (Some(_), None) => out.push(Change::new(
                ChangeKind::ConditionalRemoved,
                &if_path,
                false,
                true,
            )),
            (Some(a), Some(b)) => {
                let condition =
                    self.compare(old.child(a, &["if"]), new.child(b, &["if"]), &if_path)?;
                if condition
                    .iter()
                    .any(|c| c.breaks_backward || c.breaks_forward)
                {
                    out.push(Change::new(
                        ChangeKind::ConditionalChanged,
                        &if_path,
                        true,
                        true,
                    ));
                    return Ok(());
                }
                for branch in ["then", "else"] {
                    let changes = self.compare_optional(
                        o.get(branch).map(|v| old.child(v, &[branch])),
                        n.get(branch).map(|v| new.child(v, &[branch])),
                        &join(path, &[branch]),
                    )?;
                    out.extend(changes);
                }
            }
        }
        Ok(())
    }

    /// A `$ref` still present here sits next to other constraints (2020-12 applies both).
    pub(crate) fn compare_references(
        &mut self,
        o: &'a Map<String, Value>,
        n: &'a Map<String, Value>,
        path: &str,
        out: &mut Changes,
    ) -> Outcome<()> {
        let reference = |m: &'a Map<String, Value>| m.get("$ref").and_then(Value::as_str);
        match (reference(o), reference(n)) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                let old_target = self.old.resolve(a, path)?;
                let new_target = self.new.resolve(b, path)?;
                let changes = self.compare(old_target, new_target, path)?;
                out.extend(changes);
            }
            (None, Some(b)) => {
                let target = self.new.resolve(b, path)?;
                let (bb, bf) = flags(&self.compare(Node::absent(), target, path)?);
                out.push(Change::new(ChangeKind::ReferenceAdded, path, bb, bf));
            }
            (Some(a), None) => {
                let target = self.old.resolve(a, path)?;
                let (bb, bf) = flags(&self.compare(target, Node::absent(), path)?);
                out.push(Change::new(ChangeKind::ReferenceRemoved, path, bb, bf));
            }
        }
        Ok(())
    }
}

fn node_types(doc: &Document<'_>, node: &Node<'_>) -> u8 {
    match doc.deref(node.clone(), "").map(|n| n.value) {
        Ok(Value::Object(o)) => type_set(o, "").unwrap_or(super::scalar::ANY_TYPE),
        Ok(Value::Bool(true)) => super::scalar::ANY_TYPE,
        _ => 0,
    }
}

/// Whether no instance can match both schemas: their types differ, their `const`/`enum`
/// values differ, or a property both require is provably disjoint (a discriminator).
fn provably_disjoint(doc: &Document<'_>, a: &Node<'_>, b: &Node<'_>, depth: usize) -> bool {
    if node_types(doc, a) & node_types(doc, b) == 0 {
        return true;
    }
    let (Ok(Value::Object(x)), Ok(Value::Object(y))) = (
        doc.deref(a.clone(), "").map(|n| n.value),
        doc.deref(b.clone(), "").map(|n| n.value),
    ) else {
        return false;
    };
    if let (Some(xs), Some(ys)) = (enum_values(x), enum_values(y))
        && !xs.iter().any(|v| ys.iter().any(|w| json_eq(v, w)))
    {
        return true;
    }
    if depth > 0 {
        return false;
    }
    let (Ok(x_required), Ok(y_required)) = (
        string_list(x.get("required"), "required", ""),
        string_list(y.get("required"), "required", ""),
    ) else {
        return false;
    };
    let property =
        |m: &Map<String, Value>, name: &str| m.get("properties").and_then(|p| p.get(name)).cloned();
    x_required
        .iter()
        .filter(|name| y_required.contains(name))
        .any(|name| match (property(x, name), property(y, name)) {
            (Some(p), Some(q)) => {
                let p_node = Node {
                    value: &p,
                    loc: String::new(),
                };
                let q_node = Node {
                    value: &q,
                    loc: String::new(),
                };
                provably_disjoint(doc, &p_node, &q_node, depth + 1)
            }
            _ => false,
        })
}
