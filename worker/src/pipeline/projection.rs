//! A native shortcut for the most common jq programs: building an object out of fields of the
//! event, lookups (`$table[.key]`), `tonumber` and literals, and comparing a field with a literal.
//!
//! Most transforms and route predicates in integration flows have exactly this shape. Run by jaq,
//! such a program spends nearly all its time converting values and allocating iterators; evaluated
//! directly on the parsed JSON it costs a few map look-ups. jaq stays the definition of what a
//! program means: a [`Projection`] exists only for programs inside the subset below, and it answers
//! only on the plain path (every field has the expected type). Anything else (an error, a number
//! where a string was expected, an unusual literal) returns `None`, and the caller runs jaq, so
//! errors and edge cases always come from jaq. Tests compare both on the same inputs.
//!
//! The subset, where `P` is a path of `.name` and `[N]` steps (no `?`):
//! - `.`, `.P`, `$var`, `$var.P`, `$var[E]` and `E.P` where `E` is in the subset;
//! - string literals without escapes, non-negative integer literals, `null`, `true`, `false`;
//! - `E | tonumber`;
//! - `E == L` and `E != L` where `L` is a string, `null` or boolean literal;
//! - `{key: E, ...}` with literal keys, and the shorthand `{key}`.

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::ops::Cmp;
use jaq_core::path::{Opt, Part};
use serde_json::{Map, Number, Value};

/// A program of the subset, compiled.
#[derive(Clone, Debug, PartialEq)]
pub enum Projection {
    /// `.`
    Input,
    /// A global variable, by position.
    Var(usize),
    /// A constant.
    Literal(Value),
    /// `E[step]...`
    Path(Box<Projection>, Vec<Step>),
    /// `E | tonumber`
    ToNumber(Box<Projection>),
    /// `E == L` (`equal`) or `E != L`.
    Compare {
        /// The evaluated side.
        value: Box<Projection>,
        /// The literal (never a number).
        literal: Value,
        /// `==` when true, `!=` when false.
        equal: bool,
    },
    /// `{key: E, ...}`, in order.
    Object(Vec<(String, Projection)>),
}

/// One step of a path.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// `.name` or `["name"]`
    Field(String),
    /// `[N]`, N ≥ 0
    Index(usize),
    /// `[E]` where `E` must give a string
    Key(Box<Projection>),
}

impl Projection {
    /// Compiles `code` when it is inside the subset; `vars` are the global variable names,
    /// with `$`.
    pub fn compile(code: &str, vars: &[String]) -> Option<Self> {
        let term = jaq_core::load::parse(code, |p| p.term())?;
        Self::from_term(&term, vars)
    }

    fn from_term(term: &Term<&str>, vars: &[String]) -> Option<Self> {
        Some(match term {
            Term::Id => Projection::Input,
            Term::Var(name) => Projection::Var(vars.iter().position(|v| v == name)?),
            Term::Path(base, path) => {
                let base = Self::from_term(base, vars)?;
                let mut steps = Vec::with_capacity(path.0.len());
                for (part, opt) in &path.0 {
                    let (Part::Index(index), Opt::Essential) = (part, opt) else {
                        return None;
                    };
                    steps.push(match index {
                        Term::Num(n) => Step::Index(n.parse().ok()?),
                        other => match literal_str(other) {
                            Some(s) => Step::Field(s.to_string()),
                            None => Step::Key(Box::new(Self::from_term(other, vars)?)),
                        },
                    });
                }
                Projection::Path(Box::new(base), steps)
            }
            Term::BinOp(left, BinaryOp::Pipe(None), right) => match &**right {
                Term::Call(name, args) if *name == "tonumber" && args.is_empty() => {
                    Projection::ToNumber(Box::new(Self::from_term(left, vars)?))
                }
                _ => return None,
            },
            Term::BinOp(left, BinaryOp::Cmp(cmp @ (Cmp::Eq | Cmp::Ne)), right) => {
                let equal = matches!(cmp, Cmp::Eq);
                let (value, literal) = match (comparable_literal(left), comparable_literal(right)) {
                    (None, Some(literal)) => (left, literal),
                    (Some(literal), None) => (right, literal),
                    _ => return None,
                };
                Projection::Compare {
                    value: Box::new(Self::from_term(value, vars)?),
                    literal,
                    equal,
                }
            }
            Term::Obj(entries) => {
                let mut fields = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    let key = literal_str(key)?;
                    let value = match value {
                        Some(v) => Self::from_term(v, vars)?,
                        None => Projection::Path(
                            Box::new(Projection::Input),
                            vec![Step::Field(key.to_string())],
                        ),
                    };
                    fields.push((key.to_string(), value));
                }
                Projection::Object(fields)
            }
            Term::Num(n) => {
                // Only plain integers: jq and JSON agree on them exactly.
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Projection::Literal(Value::from(n.parse::<i64>().ok()?))
            }
            other => Projection::Literal(comparable_literal(other)?),
        })
    }

    /// Evaluates on `input`; `None` means "ask jaq" (see the module docs).
    pub fn eval(&self, input: &Value, vars: &[Value]) -> Option<Value> {
        match self {
            Projection::Input => numbers_are_exact(input).then(|| input.clone()),
            Projection::Var(i) => vars.get(*i).filter(|v| numbers_are_exact(v)).cloned(),
            Projection::Literal(v) => Some(v.clone()),
            Projection::Path(base, steps) => {
                // Walk by reference from the input or a variable; evaluate other bases first.
                let owned;
                let start = match &**base {
                    Projection::Input => input,
                    Projection::Var(i) => vars.get(*i)?,
                    other => {
                        owned = other.eval(input, vars)?;
                        &owned
                    }
                };
                let mut at = start;
                for step in steps {
                    at = match (step, at) {
                        (Step::Key(key), at) => {
                            let Value::String(name) = key.eval(input, vars)? else {
                                return None;
                            };
                            match at {
                                Value::Object(map) => map.get(&name).unwrap_or(&Value::Null),
                                Value::Null => &Value::Null,
                                _ => return None,
                            }
                        }
                        (_, Value::Null) => &Value::Null,
                        (Step::Field(name), Value::Object(map)) => {
                            map.get(name).unwrap_or(&Value::Null)
                        }
                        (Step::Index(i), Value::Array(items)) => {
                            items.get(*i).unwrap_or(&Value::Null)
                        }
                        _ => return None,
                    };
                }
                numbers_are_exact(at).then(|| at.clone())
            }
            Projection::ToNumber(value) => match value.eval(input, vars)? {
                Value::Number(n) => Some(Value::Number(n)),
                Value::String(s) => parse_number(&s).map(Value::Number),
                _ => None,
            },
            Projection::Compare {
                value,
                literal,
                equal,
            } => {
                let v = value.eval(input, vars)?;
                Some(Value::Bool((&v == literal) == *equal))
            }
            Projection::Object(fields) => {
                let mut map = Map::new();
                for (key, value) in fields {
                    map.insert(key.clone(), value.eval(input, vars)?);
                }
                Some(Value::Object(map))
            }
        }
    }
}

/// Whether every number in `value` comes back unchanged from jaq (integers beyond `i64` do not).
fn numbers_are_exact(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_i64() || n.is_f64(),
        Value::Array(items) => items.iter().all(numbers_are_exact),
        Value::Object(map) => map.values().all(numbers_are_exact),
        _ => true,
    }
}

/// The text of a string literal without escapes or interpolation.
fn literal_str<'a>(term: &Term<&'a str>) -> Option<&'a str> {
    match term {
        Term::Str(None, parts) => match parts.as_slice() {
            [StrPart::Str(s)] => Some(s),
            [] => Some(""),
            _ => None,
        },
        _ => None,
    }
}

/// A literal whose JSON equality is exactly jq's: strings, `null` and booleans (numbers are left
/// to jaq, where `1 == 1.0`).
fn comparable_literal(term: &Term<&str>) -> Option<Value> {
    if let Some(s) = literal_str(term) {
        return Some(Value::String(s.to_string()));
    }
    match term {
        Term::Call(name, args) if args.is_empty() => match *name {
            "null" => Some(Value::Null),
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    }
}

/// `tonumber` of a string in strict JSON number syntax; anything else is left to jaq.
fn parse_number(s: &str) -> Option<Number> {
    let b = s.as_bytes();
    // Index after the run of ASCII digits starting at `from`.
    let digits = |from: usize| from + b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let int_start = usize::from(b.first() == Some(&b'-'));
    let mut i = digits(int_start);
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
        return None;
    }
    if i == b.len() {
        // An integer: exact when it fits, otherwise jaq decides.
        if s == "-0" {
            return None;
        }
        return s.parse::<i64>().ok().map(Number::from);
    }
    if b[i] == b'.' {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    if i != b.len() {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    if f == 0.0 && f.is_sign_negative() {
        return None;
    }
    Number::from_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::transform::{JqProgram, JqVariables};
    use serde_json::json;

    fn vars() -> JqVariables {
        JqVariables::new([
            (
                "plants".to_string(),
                json!({"berlin": "1000", "lyon": "2000"}),
            ),
            ("unit".to_string(), json!("PC")),
        ])
    }

    const INSIDE: &[&str] = &[
        ".",
        ".id",
        ".a.b.c",
        ".items[0].qty",
        ".items[3]",
        r#".["odd key"]"#,
        "$plants",
        "$unit",
        "$plants[.site]",
        "$plants[.where.site]",
        ".qty | tonumber",
        ".items[0].qty.value | tonumber",
        r#".plant == "1000""#,
        r#""1000" != .plant"#,
        ".flag == true",
        ".gone == null",
        r#"{id: .id, plant: $plants[.site], qty: (.qty | tonumber), unit: $unit, site, n: 7, s: "x", z: null}"#,
        r#"{nested: {id: .id, first: .items[0]}}"#,
        "{}",
    ];

    const OUTSIDE: &[&str] = &[
        ".a?",
        ".[]",
        ".a + 1",
        r#".qty == 1"#,
        r#""a\nb""#,
        "1.5",
        "-1",
        "$missing",
        "{(.k): 1}",
        "{$unit}",
        ".a | length",
        "if .a then 1 else 2 end",
        ".a[1:]",
        r#""\(.a)""#,
    ];

    fn inputs() -> Vec<Value> {
        vec![
            json!({"id": "A1", "site": "berlin", "qty": "12.5", "unit": "PC", "plant": "1000",
                   "flag": true, "items": [{"qty": {"value": "3"}}], "a": {"b": {"c": [1, 2]}},
                   "odd key": 1, "where": {"site": "lyon"}}),
            json!({"id": 7, "site": "paris", "qty": "12", "plant": 1000, "flag": "yes",
                   "items": [], "a": {"b": null}}),
            json!({"qty": 3.25, "site": null, "items": [{"qty": {"value": "1e3"}}], "a": []}),
            json!({"qty": "-0", "site": 3, "items": {"0": 1}, "a": "text"}),
            json!({"qty": "007", "items": [{"qty": {"value": " 12"}}], "plant": "1000 "}),
            json!({"qty": "-12.50", "items": [{"qty": {"value": "9223372036854775808"}}]}),
            json!({"id": 18446744073709551615_u64, "qty": 1e300, "items": [{"qty": {"value": 0.1}}]}),
            json!({"qty": "1E-2", "items": [{"qty": {"value": "-4"}}]}),
            json!({"qty": "abc", "items": [{"qty": {"value": "0.0"}}]}),
            json!(null),
            json!([1, 2, 3]),
            json!("just a string"),
        ]
    }

    #[test]
    fn the_subset_is_recognised_and_nothing_else() {
        let names = vars().names().to_vec();
        for code in INSIDE {
            assert!(
                Projection::compile(code, &names).is_some(),
                "{code} should be inside the subset"
            );
        }
        for code in OUTSIDE {
            assert!(
                Projection::compile(code, &names).is_none(),
                "{code} should be left to jaq"
            );
        }
    }

    /// Wherever the shortcut answers, jaq gives the same single output.
    #[test]
    fn the_shortcut_agrees_with_jaq() {
        let vars = vars();
        let json_vars = vars.json_values().to_vec();
        let mut answered = 0;
        for code in INSIDE {
            let projection = Projection::compile(code, vars.names()).expect("inside");
            let program = JqProgram::compile_jaq_only(code, &vars).expect("compiles");
            for input in inputs() {
                let Some(fast) = projection.eval(&input, &json_vars) else {
                    continue;
                };
                answered += 1;
                let slow = program.run(&input, &vars);
                assert_eq!(
                    slow,
                    Ok(vec![fast.clone()]),
                    "{code} on {input}: jaq and the shortcut differ"
                );
                // Serialized the same way, too (key order, number formatting).
                assert_eq!(
                    serde_json::to_string(&slow.unwrap()[0]).unwrap(),
                    serde_json::to_string(&fast).unwrap(),
                    "{code} on {input}"
                );
            }
        }
        assert!(answered > 100, "only {answered} cases answered natively");
    }

    #[test]
    fn tonumber_takes_only_strict_json_numbers() {
        let n = |s: &str| parse_number(s).map(|n| n.to_string());
        assert_eq!(n("12"), Some("12".into()));
        assert_eq!(n("-4"), Some("-4".into()));
        assert_eq!(n("12.5"), Some("12.5".into()));
        assert_eq!(n("1e3"), Some("1000.0".into()));
        for bad in [
            "", "-", "007", " 1", "1 ", "1.", ".5", "1e", "0x10", "-0", "-0.0", "NaN",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
    }
}
