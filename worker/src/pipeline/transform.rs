//! jq programs (jaq), compiled once per config and run per message.
//!
//! Lookups and args are exposed as global `$variables`, so values never get spliced into the
//! program text. Programs of the common "build an object from fields" shape also get a native
//! [`Projection`], which answers first; jaq runs whenever it declines.

mod bounded;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde::Deserialize;
use serde_json::Value;

use super::projection::Projection;

/// A compiled jq program with its global variable names.
pub struct JqProgram {
    filter: jaq_core::Filter<data::JustLut<Val>>,
    var_count: usize,
    projection: Option<Projection>,
    may_loop: bool,
}

impl std::fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JqProgram")
            .field("vars", &self.var_count)
            .field("native", &self.projection.is_some())
            .field("may_loop", &self.may_loop)
            .finish_non_exhaustive()
    }
}

/// Values of a program's global variables, converted once per config.
#[derive(Clone, Default)]
pub struct JqVariables {
    names: Vec<String>,
    values: Vec<Val>,
    json: Vec<Value>,
}

impl JqVariables {
    /// Variables from `(name, value)` pairs; names are given without `$`.
    pub fn new(pairs: impl IntoIterator<Item = (String, Value)>) -> Self {
        let mut out = Self::default();
        for (name, value) in pairs {
            out.names.push(format!("${name}"));
            out.values.push(to_val(&value));
            out.json.push(value);
        }
        out
    }

    /// The variable names, with `$`, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The values as JSON, in the order of [`JqVariables::names`].
    pub fn json_values(&self) -> &[Value] {
        &self.json
    }

    /// No variables.
    pub fn none() -> Self {
        Self::default()
    }
}

impl JqProgram {
    /// Parses and compiles `code` against `vars`. The error text says where the program is wrong.
    pub fn compile(code: &str, vars: &JqVariables) -> Result<Self, String> {
        let mut program = Self::compile_jaq_only(code, vars)?;
        program.projection = Projection::compile(code, &vars.names);
        Ok(program)
    }

    /// Whether the program runs natively when its input has the expected shape.
    pub fn is_native(&self) -> bool {
        self.projection.is_some()
    }

    /// The native answer for `input`, when the native path gives one (`None` when the program
    /// is not native, or when this input is left to jaq). For tests and benches; [`Self::run`]
    /// is what the pipeline calls.
    pub fn run_natively(&self, input: &Value, vars: &JqVariables) -> Option<Value> {
        self.projection.as_ref()?.eval(input, &vars.json)
    }

    /// Whether the program's running time may be unbounded by the size of its input: it
    /// defines functions (which may recurse), recurses (`..`, `recurse`, `walk`, `paths`), loops
    /// (`range`, `repeat`, `while`, `until`, `limit`, `reduce`, `foreach`), reads further inputs,
    /// repeats a string a computed number of times, or calls anything not known to be bounded.
    /// Such programs need a time budget; the others finish in time proportional to the event.
    pub fn may_loop(&self) -> bool {
        self.may_loop
    }

    /// Compiles for jaq alone, without the native shortcut (the reference in tests and benches).
    pub fn compile_jaq_only(code: &str, vars: &JqVariables) -> Result<Self, String> {
        let program = File { code, path: () };
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(millrace_render::jq::std_funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, program)
            .map_err(|errs| format!("does not parse: {errs:?}"))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .with_global_vars(vars.names.iter().map(String::as_str))
            .compile(modules)
            .map_err(|errs| {
                let names: Vec<String> = errs
                    .into_iter()
                    .flat_map(|(_, e)| {
                        e.into_iter()
                            .map(|(name, undef)| format!("{name} ({undef:?})"))
                    })
                    .collect();
                format!("does not compile: undefined {}", names.join(", "))
            })?;
        Ok(Self {
            filter,
            var_count: vars.values.len(),
            projection: None,
            may_loop: bounded::may_loop(code),
        })
    }

    /// Runs the program on `input`, returning every output (errors stop the run).
    pub fn run(&self, input: &Value, vars: &JqVariables) -> Result<Vec<Value>, String> {
        debug_assert_eq!(self.var_count, vars.values.len());
        if let Some(out) = self
            .projection
            .as_ref()
            .and_then(|p| p.eval(input, &vars.json))
        {
            return Ok(vec![out]);
        }
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new(vars.values.clone()));
        let mut out = Vec::new();
        for item in self.filter.id.run((ctx, to_val(input))).map(unwrap_valr) {
            match item {
                Ok(v) => out.push(from_val(&v)),
                Err(e) => return Err(crate::headers::truncate(&e.to_string(), 512).to_string()),
            }
            if out.len() > 1024 {
                return Err("produced more than 1024 outputs".into());
            }
        }
        Ok(out)
    }

    /// Runs the program and returns its single output.
    pub fn run_one(&self, input: &Value, vars: &JqVariables) -> Result<Option<Value>, String> {
        let mut out = self.run(input, vars)?;
        match out.len() {
            0 => Ok(None),
            1 => Ok(out.pop()),
            n => Err(format!("produced {n} outputs where one is expected")),
        }
    }
}

/// JSON to a jq value.
pub fn to_val(value: &Value) -> Val {
    // Deserializing from an in-memory JSON value cannot fail: every JSON value is a jq value.
    Val::deserialize(value).unwrap_or_default()
}

/// A jq value to JSON. Non-string object keys are written as their JSON text; non-finite
/// numbers become null, as in jq.
pub fn from_val(value: &Val) -> Value {
    use jaq_json::Num;
    match value {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => match n {
            Num::Int(i) => Value::from(*i as i64),
            Num::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            other => {
                let text = other.to_string();
                serde_json::from_str::<Value>(&text)
                    .ok()
                    .or_else(|| {
                        text.parse::<f64>()
                            .ok()
                            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                    })
                    .unwrap_or(Value::Null)
            }
        },
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(items) => Value::Array(items.iter().map(from_val).collect()),
        Val::Obj(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => other.to_string(),
                    };
                    (key, from_val(v))
                })
                .collect(),
        ),
    }
}

/// jq truthiness: everything but `false` and `null`.
pub fn truthy(value: &Value) -> bool {
    !matches!(value, Value::Null | Value::Bool(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn transforms_with_lookups_and_args() {
        let vars = JqVariables::new([
            ("plants".to_string(), json!({"berlin": "1000"})),
            ("unit".to_string(), json!("PC")),
        ]);
        let p = JqProgram::compile(
            r#"{order: .id, plant: $plants[.site], qty: (.qty | tonumber), unit: $unit}"#,
            &vars,
        )
        .unwrap();
        let out = p
            .run_one(&json!({"id": "A1", "site": "berlin", "qty": "3"}), &vars)
            .unwrap();
        assert_eq!(
            out,
            Some(json!({"order": "A1", "plant": "1000", "qty": 3, "unit": "PC"}))
        );
    }

    #[test]
    fn runtime_errors_and_compile_errors_are_reported() {
        let vars = JqVariables::none();
        let p = JqProgram::compile(".a | tonumber", &vars).unwrap();
        assert!(p.run_one(&json!({"a": "x"}), &vars).is_err());
        assert!(JqProgram::compile(".a |", &vars).is_err());
        assert!(
            JqProgram::compile("$missing", &vars)
                .unwrap_err()
                .contains("missing")
        );
        // The worker's environment holds Secrets: no program reads it.
        assert!(JqProgram::compile("{leak: env}", &vars).is_err());
    }

    #[test]
    fn native_programs_leave_errors_to_jaq() {
        let vars = JqVariables::new([("plants".to_string(), json!({"berlin": "1000"}))]);
        let p = JqProgram::compile(r#"{plant: $plants[.site], qty: (.qty | tonumber)}"#, &vars)
            .unwrap();
        assert!(p.is_native());
        assert_eq!(
            p.run_one(&json!({"site": "berlin", "qty": "2"}), &vars),
            Ok(Some(json!({"plant": "1000", "qty": 2})))
        );
        let reference = JqProgram::compile_jaq_only(
            r#"{plant: $plants[.site], qty: (.qty | tonumber)}"#,
            &vars,
        )
        .unwrap();
        // Where the shortcut declines (a null key, a word for a number), jaq answers.
        for input in [json!({"qty": "2"}), json!({"site": "berlin", "qty": "two"})] {
            assert_eq!(
                p.run_one(&input, &vars),
                reference.run_one(&input, &vars),
                "{input}"
            );
        }
        assert!(
            p.run_one(&json!({"site": "berlin", "qty": "two"}), &vars)
                .is_err()
        );
        assert!(!JqProgram::compile(".[] | .a", &vars).unwrap().is_native());
    }

    #[test]
    fn programs_that_may_loop_are_told_apart() {
        let vars = JqVariables::new([("plants".to_string(), json!({"berlin": "1000"}))]);
        let may_loop = |code: &str| JqProgram::compile(code, &vars).unwrap().may_loop();
        for code in [
            "[range(.n)]",
            "def f: f; f",
            "[.. | numbers]",
            "[limit(2; repeat(.))]",
        ] {
            assert!(may_loop(code), "{code}");
        }
        for code in [
            r#"{plant: ($plants[.site] // error("no plant")), day: (.at | split("T") | .[0])}"#,
            "[.lines[] | {n: .lineNumber}] | length",
        ] {
            assert!(!may_loop(code), "{code}");
        }
    }

    #[test]
    fn multiple_outputs_and_none_are_told_apart() {
        let vars = JqVariables::none();
        let p = JqProgram::compile(".[]", &vars).unwrap();
        assert!(p.run_one(&json!([1, 2]), &vars).is_err());
        assert_eq!(p.run_one(&json!([]), &vars).unwrap(), None);
        assert!(truthy(&json!(0)));
        assert!(!truthy(&json!(null)));
    }

    #[test]
    fn numbers_round_trip() {
        let v = json!({"i": 12, "f": 1.5, "big": 12345678901234_i64, "neg": -3});
        assert_eq!(from_val(&to_val(&v)), v);
    }
}
