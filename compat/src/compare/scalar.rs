//! `type`, string and number keywords, `enum` and `const`.

use serde_json::{Map, Value};

use super::{Changes, Outcome};
use crate::change::{Change, ChangeKind};
use crate::error::CompatError;
use crate::schema::{json_eq, number, string};

pub(crate) const NULL: u8 = 1;
pub(crate) const BOOLEAN: u8 = 2;
pub(crate) const OBJECT: u8 = 4;
pub(crate) const ARRAY: u8 = 8;
pub(crate) const NUMBER: u8 = 16;
pub(crate) const INTEGER: u8 = 32;
pub(crate) const STRING: u8 = 64;
pub(crate) const ANY_TYPE: u8 = 127;

/// The instance types a schema's `type` allows, as a bit set; every type when absent.
/// `number` includes `integer`.
pub(crate) fn type_set(o: &Map<String, Value>, path: &str) -> Outcome<u8> {
    let invalid = || CompatError::InvalidKeyword {
        path: path.to_string(),
        keyword: "type".to_string(),
        expected: "one of null, boolean, object, array, number, integer, string, or an array of them",
    };
    let one = |name: &str| -> Outcome<u8> {
        Ok(match name {
            "null" => NULL,
            "boolean" => BOOLEAN,
            "object" => OBJECT,
            "array" => ARRAY,
            "number" => NUMBER | INTEGER,
            "integer" => INTEGER,
            "string" => STRING,
            _ => return Err(invalid()),
        })
    };
    match o.get("type") {
        None => Ok(ANY_TYPE),
        Some(Value::String(name)) => one(name),
        Some(Value::Array(names)) => names.iter().try_fold(0, |set, name| {
            let name = name.as_str().ok_or_else(invalid)?;
            Ok(set | one(name)?)
        }),
        Some(_) => Err(invalid()),
    }
}

pub(crate) fn compare_type(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    path: &str,
    out: &mut Changes,
) -> Outcome<()> {
    let old = type_set(o, path)?;
    let new = type_set(n, path)?;
    if old == new {
        return Ok(());
    }
    let change = if old & !new == 0 {
        Change::new(ChangeKind::TypeExtended, path, false, true)
    } else if new & !old == 0 {
        Change::new(ChangeKind::TypeNarrowed, path, true, false)
    } else {
        Change::new(ChangeKind::TypeChanged, path, true, true)
    };
    out.push(change);
    Ok(())
}

/// Which families of type-specific keywords can matter: a `maxLength` change means nothing
/// when neither schema allows strings.
pub(crate) struct Relevance {
    pub string: bool,
    pub number: bool,
    pub object: bool,
    pub array: bool,
}

impl Relevance {
    pub fn of(o: &Map<String, Value>, n: &Map<String, Value>, path: &str) -> Outcome<Self> {
        let union = type_set(o, path)? | type_set(n, path)?;
        Ok(Relevance {
            string: union & STRING != 0,
            number: union & (NUMBER | INTEGER) != 0,
            object: union & OBJECT != 0,
            array: union & ARRAY != 0,
        })
    }
}

/// The four kinds reported for one bound keyword.
pub(crate) struct BoundKinds {
    pub added: ChangeKind,
    pub removed: ChangeKind,
    pub increased: ChangeKind,
    pub decreased: ChangeKind,
}

/// Compares a numeric bound. An upper bound (`maximum`, `maxLength`, ...) rejects more as it
/// decreases; a lower bound (`minimum`, `minLength`, ...) rejects more as it increases.
pub(crate) fn compare_bound(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    keyword: &str,
    upper: bool,
    kinds: BoundKinds,
    path: &str,
    out: &mut Changes,
) -> Outcome<()> {
    let change = match (number(o, keyword, path)?, number(n, keyword, path)?) {
        (None, None) => return Ok(()),
        (None, Some(_)) => Change::new(kinds.added, path, true, false),
        (Some(_), None) => Change::new(kinds.removed, path, false, true),
        (Some(a), Some(b)) if a == b => return Ok(()),
        (Some(a), Some(b)) if a < b => Change::new(kinds.increased, path, !upper, upper),
        (Some(_), Some(_)) => Change::new(kinds.decreased, path, upper, !upper),
    };
    out.push(change);
    Ok(())
}

macro_rules! bound_kinds {
    ($added:ident, $removed:ident, $increased:ident, $decreased:ident) => {
        $crate::compare::scalar::BoundKinds {
            added: $crate::change::ChangeKind::$added,
            removed: $crate::change::ChangeKind::$removed,
            increased: $crate::change::ChangeKind::$increased,
            decreased: $crate::change::ChangeKind::$decreased,
        }
    };
}
pub(crate) use bound_kinds;

pub(crate) fn compare_string_keywords(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    path: &str,
    out: &mut Changes,
) -> Outcome<()> {
    compare_bound(
        o,
        n,
        "maxLength",
        true,
        bound_kinds!(
            MaxLengthAdded,
            MaxLengthRemoved,
            MaxLengthIncreased,
            MaxLengthDecreased
        ),
        path,
        out,
    )?;
    compare_bound(
        o,
        n,
        "minLength",
        false,
        bound_kinds!(
            MinLengthAdded,
            MinLengthRemoved,
            MinLengthIncreased,
            MinLengthDecreased
        ),
        path,
        out,
    )?;
    compare_text(
        string(o, "pattern", path)?,
        string(n, "pattern", path)?,
        [
            ChangeKind::PatternAdded,
            ChangeKind::PatternRemoved,
            ChangeKind::PatternChanged,
        ],
        path,
        out,
    );
    // `format` is an annotation by default in 2020-12 but an assertion in draft-07 and in
    // validators that enable it; fail closed and treat it as an assertion.
    compare_text(
        string(o, "format", path)?,
        string(n, "format", path)?,
        [
            ChangeKind::FormatAdded,
            ChangeKind::FormatRemoved,
            ChangeKind::FormatChanged,
        ],
        path,
        out,
    );
    Ok(())
}

/// Compares a constraint whose values cannot be ordered: adding it narrows, removing it
/// widens, and replacing it does both.
fn compare_text(
    old: Option<&str>,
    new: Option<&str>,
    kinds: [ChangeKind; 3],
    path: &str,
    out: &mut Changes,
) {
    let [added, removed, changed] = kinds;
    match (old, new) {
        (None, Some(_)) => out.push(Change::new(added, path, true, false)),
        (Some(_), None) => out.push(Change::new(removed, path, false, true)),
        (Some(a), Some(b)) if a != b => out.push(Change::new(changed, path, true, true)),
        _ => {}
    }
}

pub(crate) fn compare_number_keywords(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    path: &str,
    out: &mut Changes,
) -> Outcome<()> {
    compare_bound(
        o,
        n,
        "maximum",
        true,
        bound_kinds!(
            MaximumAdded,
            MaximumRemoved,
            MaximumIncreased,
            MaximumDecreased
        ),
        path,
        out,
    )?;
    compare_bound(
        o,
        n,
        "exclusiveMaximum",
        true,
        bound_kinds!(
            ExclusiveMaximumAdded,
            ExclusiveMaximumRemoved,
            ExclusiveMaximumIncreased,
            ExclusiveMaximumDecreased
        ),
        path,
        out,
    )?;
    compare_bound(
        o,
        n,
        "minimum",
        false,
        bound_kinds!(
            MinimumAdded,
            MinimumRemoved,
            MinimumIncreased,
            MinimumDecreased
        ),
        path,
        out,
    )?;
    compare_bound(
        o,
        n,
        "exclusiveMinimum",
        false,
        bound_kinds!(
            ExclusiveMinimumAdded,
            ExclusiveMinimumRemoved,
            ExclusiveMinimumIncreased,
            ExclusiveMinimumDecreased
        ),
        path,
        out,
    )?;
    let change = match (
        number(o, "multipleOf", path)?,
        number(n, "multipleOf", path)?,
    ) {
        (None, None) => return Ok(()),
        (None, Some(_)) => Change::new(ChangeKind::MultipleOfAdded, path, true, false),
        (Some(_), None) => Change::new(ChangeKind::MultipleOfRemoved, path, false, true),
        (Some(a), Some(b)) if a == b => return Ok(()),
        // Multiples of 4 are all multiples of 2: going from 2 to 4 lets fewer values through.
        (Some(a), Some(b)) if divides(a, b) => {
            Change::new(ChangeKind::MultipleOfExpanded, path, true, false)
        }
        (Some(a), Some(b)) if divides(b, a) => {
            Change::new(ChangeKind::MultipleOfReduced, path, false, true)
        }
        (Some(_), Some(_)) => Change::new(ChangeKind::MultipleOfChanged, path, true, true),
    };
    out.push(change);
    Ok(())
}

/// Whether `multiple` is an integer multiple of `divisor`, allowing for decimal fractions
/// such as 0.01 that binary floating point cannot hold exactly.
fn divides(divisor: f64, multiple: f64) -> bool {
    if divisor <= 0.0 {
        return false;
    }
    let ratio = multiple / divisor;
    (ratio - ratio.round()).abs() <= 1e-9 * ratio.abs().max(1.0)
}

/// The values `enum` and `const` together allow, and whether only `const` is written.
fn allowed_values<'v>(
    o: &'v Map<String, Value>,
    path: &str,
) -> Outcome<Option<(Vec<&'v Value>, bool)>> {
    let enumerated = match o.get("enum") {
        None => None,
        Some(Value::Array(values)) => Some(values),
        Some(_) => {
            return Err(CompatError::InvalidKeyword {
                path: path.to_string(),
                keyword: "enum".to_string(),
                expected: "an array of values",
            });
        }
    };
    Ok(match (enumerated, o.get("const")) {
        (None, None) => None,
        (Some(values), None) => Some((values.iter().collect(), false)),
        (None, Some(value)) => Some((vec![value], true)),
        (Some(values), Some(value)) => Some((
            values
                .iter()
                .filter(|v| json_eq(v, value))
                .take(1)
                .collect(),
            false,
        )),
    })
}

pub(crate) fn enum_values(o: &Map<String, Value>) -> Option<Vec<&Value>> {
    allowed_values(o, "")
        .ok()
        .flatten()
        .map(|(values, _)| values)
}

fn subset(a: &[&Value], b: &[&Value]) -> bool {
    a.iter().all(|x| b.iter().any(|y| json_eq(x, y)))
}

pub(crate) fn compare_enum_const(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    path: &str,
    out: &mut Changes,
) -> Outcome<()> {
    let change = match (allowed_values(o, path)?, allowed_values(n, path)?) {
        (None, None) => return Ok(()),
        (None, Some((_, const_only))) => {
            let kind = if const_only {
                ChangeKind::ConstAdded
            } else {
                ChangeKind::EnumAdded
            };
            Change::new(kind, path, true, false)
        }
        (Some((_, const_only)), None) => {
            let kind = if const_only {
                ChangeKind::ConstRemoved
            } else {
                ChangeKind::EnumRemoved
            };
            Change::new(kind, path, false, true)
        }
        (Some((a, a_const)), Some((b, b_const))) => match (subset(&a, &b), subset(&b, &a)) {
            (true, true) => return Ok(()),
            _ if a_const && b_const => Change::new(ChangeKind::ConstChanged, path, true, true),
            (true, false) => Change::new(ChangeKind::EnumExtended, path, false, true),
            (false, true) => Change::new(ChangeKind::EnumNarrowed, path, true, false),
            (false, false) => Change::new(ChangeKind::EnumChanged, path, true, true),
        },
    };
    out.push(change);
    Ok(())
}
