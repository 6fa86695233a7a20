//! What jaq's operations mean, computed on serde_json values.
//!
//! Each function answers only where its answer is certainly jaq's (jaq-json 2.0: `Val`'s
//! arithmetic, ordering and equality, and the `tostring`, `length`, `split` and `join` of jaq's
//! standard library). `None` means "not certain": the caller declines and jaq runs, raising the
//! error if there is one.

use std::borrow::Cow;
use std::cmp::Ordering;

use jaq_core::ops::{Cmp, Math};
use serde_json::{Number, Value};

/// A number as jaq holds it after reading JSON: a machine integer or a float. jaq's big integers
/// (beyond `i64`) and decimal literals have no counterpart; values holding them are declined.
#[derive(Clone, Copy, Debug)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of(value: &Value) -> Option<Self> {
        let Value::Number(n) = value else {
            return None;
        };
        match n.as_i64() {
            Some(i) => Some(Num::Int(i)),
            None if n.is_f64() => n.as_f64().map(Num::Float),
            None => None,
        }
    }

    fn to_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// The JSON number; `None` for infinities and NaN, which jaq writes as `null`.
    fn into_value(self) -> Option<Value> {
        match self {
            Num::Int(i) => Some(Value::from(i)),
            Num::Float(f) => Number::from_f64(f).map(Value::Number),
        }
    }
}

/// Whether every number in `value` comes back unchanged from jaq (integers beyond `i64` do not).
pub fn numbers_are_exact(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_i64() || n.is_f64(),
        Value::Array(items) => items.iter().all(numbers_are_exact),
        Value::Object(map) => map.values().all(numbers_are_exact),
        _ => true,
    }
}

/// `l op r` for `+ - * / %`.
pub fn arith(op: Math, l: &Value, r: &Value) -> Option<Value> {
    match (op, l, r) {
        (_, Value::Number(_), Value::Number(_)) => num_arith(op, Num::of(l)?, Num::of(r)?),
        // `null` is neutral for `+` only.
        (Math::Add, Value::Null, x) | (Math::Add, x, Value::Null) => Some(x.clone()),
        (Math::Add, Value::String(a), Value::String(b)) => {
            let mut s = String::with_capacity(a.len() + b.len());
            s.push_str(a);
            s.push_str(b);
            Some(Value::String(s))
        }
        (Math::Add, Value::Array(a), Value::Array(b)) => {
            Some(Value::Array(a.iter().chain(b).cloned().collect()))
        }
        (Math::Add, Value::Object(a), Value::Object(b)) => {
            let mut merged = a.clone();
            merged.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
            Some(Value::Object(merged))
        }
        // Strings repeated, split or subtracted, arrays subtracted, objects merged deeply, and
        // type errors: left to jaq.
        _ => None,
    }
}

fn num_arith(op: Math, x: Num, y: Num) -> Option<Value> {
    use Num::{Float, Int};
    let n = match (op, x, y) {
        // Integer results stay integers unless they overflow, where jaq turns big.
        (Math::Add, Int(a), Int(b)) => Int(a.checked_add(b)?),
        (Math::Sub, Int(a), Int(b)) => Int(a.checked_sub(b)?),
        (Math::Mul, Int(a), Int(b)) => Int(a.checked_mul(b)?),
        (Math::Rem, Int(_), Int(0)) => return None,
        (Math::Rem, Int(a), Int(b)) => Int(a.checked_rem(b).unwrap_or(0)),
        (Math::Rem, ..) => return None,
        (Math::Add, a, b) => Float(a.to_f64() + b.to_f64()),
        (Math::Sub, a, b) => Float(a.to_f64() - b.to_f64()),
        (Math::Mul, a, b) => Float(a.to_f64() * b.to_f64()),
        (Math::Div, a, b) => Float(a.to_f64() / b.to_f64()),
    };
    n.into_value()
}

/// `-v`
pub fn negate(value: &Value) -> Option<Value> {
    match Num::of(value)? {
        Num::Int(i) => Num::Int(i.checked_neg()?),
        Num::Float(f) => Num::Float(-f),
    }
    .into_value()
}

/// `l op r` for `== != < <= > >=`.
pub fn compare(op: Cmp, l: &Value, r: &Value) -> Option<bool> {
    Some(match op {
        Cmp::Eq => equal(l, r)?,
        Cmp::Ne => !equal(l, r)?,
        Cmp::Lt => order(l, r)? == Ordering::Less,
        Cmp::Le => order(l, r)? != Ordering::Greater,
        Cmp::Gt => order(l, r)? == Ordering::Greater,
        Cmp::Ge => order(l, r)? != Ordering::Less,
    })
}

/// jaq's `==`: numbers by value (`1 == 1.0`), objects regardless of key order.
fn equal(l: &Value, r: &Value) -> Option<bool> {
    Some(match (l, r) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Number(_), Value::Number(_)) => num_order(Num::of(l)?, Num::of(r)?).is_eq(),
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return Some(false);
            }
            for (x, y) in a.iter().zip(b) {
                if !equal(x, y)? {
                    return Some(false);
                }
            }
            true
        }
        (Value::Object(a), Value::Object(b)) => {
            if a.len() != b.len() {
                return Some(false);
            }
            for (key, x) in a {
                match b.get(key) {
                    Some(y) if equal(x, y)? => {}
                    _ => return Some(false),
                }
            }
            true
        }
        _ => false,
    })
}

/// jq's order of types: null < booleans < numbers < strings < arrays < objects.
fn rank(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// jaq's ordering. Two non-empty objects (compared by sorted keys, then values) are left to jaq.
fn order(l: &Value, r: &Value) -> Option<Ordering> {
    Some(match (l, r) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::Number(_), Value::Number(_)) => num_order(Num::of(l)?, Num::of(r)?),
        // Byte order, as jaq compares strings.
        (Value::String(a), Value::String(b)) => a.as_bytes().cmp(b.as_bytes()),
        (Value::Array(a), Value::Array(b)) => {
            for (x, y) in a.iter().zip(b) {
                match order(x, y)? {
                    Ordering::Equal => {}
                    other => return Some(other),
                }
            }
            a.len().cmp(&b.len())
        }
        (Value::Object(a), Value::Object(b)) => match (a.is_empty(), b.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => return None,
        },
        _ => rank(l).cmp(&rank(r)),
    })
}

fn num_order(x: Num, y: Num) -> Ordering {
    match (x, y) {
        (Num::Int(a), Num::Int(b)) => a.cmp(&b),
        (a, b) => {
            let (a, b) = (a.to_f64(), b.to_f64());
            // As jaq: the two zeros are equal, NaN is below everything.
            if a == 0.0 && b == 0.0 {
                Ordering::Equal
            } else if a.is_nan() {
                Ordering::Less
            } else if b.is_nan() {
                Ordering::Greater
            } else {
                a.total_cmp(&b)
            }
        }
    }
}

/// `tostring` (and string interpolation): strings as they are, `null`, booleans and integers as
/// JSON text. Floats, arrays and objects are left to jaq, whose float and string formatting
/// this does not reproduce.
pub fn to_text(value: &Value) -> Option<Cow<'_, str>> {
    Some(match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed("null"),
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        Value::Number(n) => Cow::Owned(n.as_i64()?.to_string()),
        Value::Array(_) | Value::Object(_) => return None,
    })
}

/// `length`: of a string in characters, of a number its absolute value; booleans are an error.
pub fn length(value: &Value) -> Option<Value> {
    match value {
        Value::Null => Some(Value::from(0)),
        Value::Bool(_) => None,
        Value::Number(_) => match Num::of(value)? {
            Num::Int(i) => Num::Int(i.checked_abs()?),
            Num::Float(f) => Num::Float(f.abs()),
        }
        .into_value(),
        Value::String(s) => Some(Value::from(s.chars().count())),
        Value::Array(items) => Some(Value::from(items.len())),
        Value::Object(map) => Some(Value::from(map.len())),
    }
}

/// The name `type` gives.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `split($sep)` on a string, as jaq: an empty string splits into nothing, an empty separator
/// into characters.
pub fn split(s: &str, sep: &str) -> Value {
    let parts: Vec<Value> = if s.is_empty() {
        Vec::new()
    } else if sep.is_empty() {
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep).map(|p| Value::String(p.to_string())).collect()
    };
    Value::Array(parts)
}

/// `join($sep)` on an array, as jaq defines it: each item through `tostring` (so `null` becomes
/// `"null"`), then `$sep` between them; a `null` separator adds nothing.
pub fn join(items: &[Value], sep: &Value) -> Option<String> {
    let sep = match sep {
        Value::String(s) => s.as_str(),
        Value::Null => "",
        _ => return None,
    };
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&to_text(item)?);
    }
    Some(out)
}

/// `tonumber` of a string in strict JSON number syntax, and number literals in a program;
/// anything else is left to jaq.
///
/// jaq keeps a non-integer as its decimal text and reads it with Rust's float parser where it
/// computes, and with serde_json's where it writes JSON; both must agree, or jaq decides.
pub fn parse_number(s: &str) -> Option<Number> {
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
    let written: Number = serde_json::from_str(s).ok()?;
    (written.as_f64() == Some(f)).then_some(())?;
    Number::from_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tonumber_takes_only_strict_json_numbers() {
        let n = |s: &str| parse_number(s).map(|n| n.to_string());
        assert_eq!(n("12"), Some("12".into()));
        assert_eq!(n("-4"), Some("-4".into()));
        assert_eq!(n("12.5"), Some("12.5".into()));
        assert_eq!(n("1e3"), Some("1000.0".into()));
        for bad in [
            "", "-", "007", " 1", "1 ", "1.", ".5", "1e", "0x10", "-0", "-0.0", "NaN", "1e400",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn numbers_compare_by_value_and_types_in_jq_order() {
        let lt = |l: Value, r: Value| compare(Cmp::Lt, &l, &r);
        assert_eq!(compare(Cmp::Eq, &json!(1), &json!(1.0)), Some(true));
        assert_eq!(compare(Cmp::Eq, &json!(-0.0), &json!(0)), Some(true));
        assert_eq!(lt(json!(null), json!(false)), Some(true));
        assert_eq!(lt(json!(true), json!(-5)), Some(true));
        assert_eq!(lt(json!(99), json!("")), Some(true));
        assert_eq!(lt(json!("z"), json!([])), Some(true));
        assert_eq!(lt(json!([1, 2]), json!([1, 2, 0])), Some(true));
        assert_eq!(lt(json!({}), json!({"a": 1})), Some(true));
        assert_eq!(lt(json!({"a": 1}), json!({"b": 1})), None);
        assert_eq!(
            compare(Cmp::Eq, &json!(18446744073709551615_u64), &json!(1)),
            None
        );
    }

    #[test]
    fn arithmetic_declines_what_jaq_would_turn_big_or_reject() {
        let a = |op, l: Value, r: Value| arith(op, &l, &r);
        assert_eq!(a(Math::Add, json!(1), json!(2)), Some(json!(3)));
        assert_eq!(a(Math::Add, json!(1), json!(0.5)), Some(json!(1.5)));
        assert_eq!(a(Math::Div, json!(4), json!(2)), Some(json!(2.0)));
        assert_eq!(a(Math::Add, json!(null), json!("x")), Some(json!("x")));
        assert_eq!(a(Math::Add, json!("a"), json!("b")), Some(json!("ab")));
        assert_eq!(a(Math::Add, json!(i64::MAX), json!(1)), None);
        assert_eq!(a(Math::Add, json!("a"), json!(1)), None);
        assert_eq!(a(Math::Div, json!(1), json!(0)), None);
        assert_eq!(a(Math::Rem, json!(1), json!(0)), None);
        assert_eq!(a(Math::Mul, json!("ab"), json!(2)), None);
    }
}
