//! Which jq programs finish in time bounded by the size of their input.
//!
//! A program is bounded when it is built only from constructs whose work is proportional to the
//! values they are given (paths, operators, object and array construction, conditionals, the
//! string, array and object builtins), so that a fixed program runs in time polynomial in the
//! event. Anything that loops or recurses by itself, or that this module does not know, counts
//! as possibly unbounded: the classification errs on the side of the time budget.

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Pattern, Term};
use jaq_core::ops::Math;
use jaq_core::path::Part;

/// Builtins (name, arity) whose work is bounded by their input and arguments. Left out on
/// purpose: `range`, `repeat`, `while`, `until`, `limit`, `recurse`, `walk`, `paths`,
/// `leaf_paths`, `combinations`, `input`, `inputs`, `env`, `halt`, `halt_error`, `debug`,
/// `stderr`, and every name not listed.
const BOUNDED_BUILTINS: &[(&str, usize)] = &[
    ("null", 0),
    ("true", 0),
    ("false", 0),
    ("not", 0),
    ("empty", 0),
    ("error", 0),
    ("error", 1),
    ("select", 1),
    ("map", 1),
    ("map_values", 1),
    ("length", 0),
    ("utf8bytelength", 0),
    ("type", 0),
    ("tostring", 0),
    ("tonumber", 0),
    ("toboolean", 0),
    ("tojson", 0),
    ("fromjson", 0),
    ("ascii_downcase", 0),
    ("ascii_upcase", 0),
    ("explode", 0),
    ("implode", 0),
    ("trim", 0),
    ("ltrim", 0),
    ("rtrim", 0),
    ("ltrimstr", 1),
    ("rtrimstr", 1),
    ("startswith", 1),
    ("endswith", 1),
    ("split", 1),
    ("split", 2),
    ("splits", 1),
    ("splits", 2),
    ("join", 1),
    ("test", 1),
    ("test", 2),
    ("match", 1),
    ("match", 2),
    ("capture", 1),
    ("capture", 2),
    ("scan", 1),
    ("scan", 2),
    ("sub", 2),
    ("sub", 3),
    ("gsub", 2),
    ("gsub", 3),
    ("keys", 0),
    ("keys_unsorted", 0),
    ("values", 0),
    ("has", 1),
    ("in", 1),
    ("contains", 1),
    ("inside", 1),
    ("indices", 1),
    ("index", 1),
    ("rindex", 1),
    ("to_entries", 0),
    ("from_entries", 0),
    ("with_entries", 1),
    ("add", 0),
    ("add", 1),
    ("any", 0),
    ("any", 1),
    ("any", 2),
    ("all", 0),
    ("all", 1),
    ("all", 2),
    ("flatten", 0),
    ("flatten", 1),
    ("first", 0),
    ("first", 1),
    ("last", 0),
    ("nth", 1),
    ("isempty", 1),
    ("reverse", 0),
    ("sort", 0),
    ("sort_by", 1),
    ("group_by", 1),
    ("unique", 0),
    ("unique_by", 1),
    ("min", 0),
    ("max", 0),
    ("min_by", 1),
    ("max_by", 1),
    ("transpose", 0),
    ("getpath", 1),
    ("path", 1),
    ("del", 1),
    ("abs", 0),
    ("floor", 0),
    ("ceil", 0),
    ("round", 0),
    ("sqrt", 0),
    ("pow", 2),
    ("log", 0),
    ("exp", 0),
    ("isnan", 0),
    ("isinfinite", 0),
    ("isnormal", 0),
    ("infinite", 0),
    ("nan", 0),
    ("arrays", 0),
    ("objects", 0),
    ("iterables", 0),
    ("booleans", 0),
    ("numbers", 0),
    ("strings", 0),
    ("nulls", 0),
    ("scalars", 0),
    ("now", 0),
    ("mktime", 0),
    ("gmtime", 0),
    ("localtime", 0),
    ("strftime", 1),
    ("strptime", 1),
    ("todate", 0),
    ("fromdate", 0),
    ("todateiso8601", 0),
    ("fromdateiso8601", 0),
    ("@text", 0),
    ("@json", 0),
    ("@html", 0),
    ("@uri", 0),
    ("@csv", 0),
    ("@tsv", 0),
    ("@sh", 0),
    ("@base64", 0),
    ("@base64d", 0),
    ("@base32", 0),
    ("@base32d", 0),
];

/// The largest literal a value is multiplied by and still counted as bounded: `"ab" * .n`
/// repeats a string `.n` times, a number in the event rather than its size.
const LARGEST_MULTIPLIER: f64 = 1_000_000.0;

/// Whether `code` may run for longer than its input's size bounds (see the module docs).
/// A program that does not parse as a term (a module with imports, say) counts as may-loop.
pub fn may_loop(code: &str) -> bool {
    match jaq_core::load::parse(code, |p| p.term()) {
        Some(term) => !bounded(&term),
        None => true,
    }
}

fn bounded(term: &Term<&str>) -> bool {
    match term {
        Term::Id | Term::Num(_) | Term::Var(_) | Term::Break(_) => true,
        // `..`, `reduce`, `foreach` and definitions (which may call themselves).
        Term::Recurse | Term::Fold(..) | Term::Def(..) => false,
        Term::Str(format, parts) => {
            format.is_none_or(|f| BOUNDED_BUILTINS.contains(&(f, 0)))
                && parts.iter().all(|part| match part {
                    StrPart::Term(t) => bounded(t),
                    StrPart::Str(_) | StrPart::Char(_) => true,
                })
        }
        Term::Arr(inner) => inner.as_deref().is_none_or(bounded),
        Term::Obj(entries) => entries
            .iter()
            .all(|(k, v)| bounded(k) && v.as_ref().is_none_or(bounded)),
        Term::Neg(t) | Term::Label(_, t) => bounded(t),
        Term::TryCatch(t, catch) => bounded(t) && catch.as_deref().is_none_or(bounded),
        Term::IfThenElse(branches, otherwise) => {
            branches.iter().all(|(c, t)| bounded(c) && bounded(t))
                && otherwise.as_deref().is_none_or(bounded)
        }
        Term::Call(name, args) => {
            BOUNDED_BUILTINS.contains(&(*name, args.len())) && args.iter().all(bounded)
        }
        Term::Path(base, path) => {
            bounded(base)
                && path.0.iter().all(|(part, _)| match part {
                    Part::Index(i) => bounded(i),
                    Part::Range(from, to) => {
                        from.as_ref().is_none_or(bounded) && to.as_ref().is_none_or(bounded)
                    }
                })
        }
        Term::BinOp(l, op, r) => {
            let op_bounded = match op {
                BinaryOp::Math(Math::Mul) | BinaryOp::UpdateMath(Math::Mul) => {
                    small_literal(l) || small_literal(r)
                }
                BinaryOp::Pipe(Some(pattern)) => pattern_bounded(pattern),
                _ => true,
            };
            op_bounded && bounded(l) && bounded(r)
        }
    }
}

/// A number literal no larger than [`LARGEST_MULTIPLIER`].
fn small_literal(term: &Term<&str>) -> bool {
    match term {
        Term::Num(n) => n
            .parse::<f64>()
            .is_ok_and(|f| f.abs() <= LARGEST_MULTIPLIER),
        Term::Neg(t) => small_literal(t),
        _ => false,
    }
}

fn pattern_bounded(pattern: &Pattern<&str>) -> bool {
    match pattern {
        Pattern::Var(_) => true,
        Pattern::Arr(items) => items.iter().all(pattern_bounded),
        Pattern::Obj(entries) => entries
            .iter()
            .all(|(key, p)| bounded(key) && pattern_bounded(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_recursion_and_unknown_names_may_loop() {
        for code in [
            "def f: f; f",
            "def inc: . + 1; .a | inc",
            "[range(.n)]",
            "[limit(3; repeat(1))]",
            "until(. > 100; . * 2)",
            "[while(. < 100; . + 1)]",
            "reduce .[] as $x (0; . + $x)",
            "foreach .[] as $x (0; . + $x)",
            "..",
            "[.. | numbers]",
            "[paths]",
            "walk(if type == \"string\" then ascii_downcase end)",
            "recurse(.children[])",
            "input",
            "[inputs]",
            "[path(..)]",
            ".s * .n",
            "\"ab\" * 100000000000",
            "combinations",
            "frobnicate",
            "{a: [range(3)]}",
            "\"\\([range(10)])\"",
            "import \"m\" as m; .",
        ] {
            assert!(may_loop(code), "{code} should count as may-loop");
        }
    }

    #[test]
    fn programs_of_fields_lookups_and_builtins_are_bounded() {
        for code in [
            ".",
            r#"{id: .id, plant: ($plants[.site] // error("no plant for \(.site)")), qty: (.qty | tonumber)}"#,
            r#".produced[0] as $out | {m: $out.materialId, d: (.at | split("T") | .[0])}"#,
            r#"[.lines[] | {n: .lineNumber, q: .qty.value}]"#,
            r#"if .q >= 0 then "701" elif .q == null then "x" else "702" end"#,
            ".materialId | startswith(\"FG-\")",
            ".a + \"-\" + (.b | tostring)",
            ".qty * 1000",
            "map(select(.ok)) | length",
            "try .a catch null",
            ". as [$a, {b: $c}] | $a + $c",
            "[.[] | ascii_downcase] | join(\",\") | @base64",
            "@csv \"\\(.a)\"",
            "label $out | .a | if . then ., break $out else . end",
            "to_entries | sort_by(.key) | from_entries",
            ".a[1:] | first",
        ] {
            assert!(!may_loop(code), "{code} should count as bounded");
        }
    }
}
