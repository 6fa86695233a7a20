//! Compile-time checks of a flow's jq programs, with the same variables the worker provides.
//!
//! Many flows share programs (a template stamps the same jq into every plant), so verdicts are
//! remembered per program and variable set, and the standard library is parsed once.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use jaq_core::load::parse::Def;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, data};
use jaq_json::Val;

/// Verdicts remembered at most; the memo starts over when it is full.
const MEMO_LIMIT: usize = 4096;

type Memo = Mutex<HashMap<(String, Vec<String>), Result<(), String>>>;

fn memo() -> &'static Memo {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    MEMO.get_or_init(Memo::default)
}

/// The definitions of jq's standard library, parsed once.
fn prelude() -> &'static [Def<&'static str>] {
    static DEFS: OnceLock<Vec<Def<&'static str>>> = OnceLock::new();
    DEFS.get_or_init(|| {
        jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs())
            .collect()
    })
}

/// Filters of jaq's standard library that flows do not get. `env` would hand every variable of
/// the worker's environment to a transform, the values of the Secrets its connections name
/// among them, and from there to any destination. A program that calls one does not compile
/// (`InvalidJq`), here as in the worker.
pub const WITHHELD: &[&str] = &["env"];

/// The native filters of jaq's standard library, without [`WITHHELD`]. The worker compiles
/// with exactly these.
pub fn std_funs<D: jaq_core::DataT>() -> impl Iterator<Item = jaq_core::native::Fun<D>>
where
    for<'a> D::V<'a>: jaq_std::ValT,
{
    jaq_std::funs().filter(|(name, ..)| !WITHHELD.contains(name))
}

/// Compiles `program` with `$name` for every name in `vars`; returns a readable error.
pub fn check(program: &str, vars: &[String]) -> Result<(), String> {
    let key = (program.to_string(), vars.to_vec());
    if let Some(found) = memo().lock().ok().and_then(|m| m.get(&key).cloned()) {
        return found;
    }
    let verdict = compile(program, vars);
    if let Ok(mut m) = memo().lock() {
        if m.len() >= MEMO_LIMIT {
            m.clear();
        }
        m.insert(key, verdict.clone());
    }
    verdict
}

fn compile(program: &str, vars: &[String]) -> Result<(), String> {
    let defs = prelude().iter().cloned();
    let funs = jaq_core::funs::<data::JustLut<Val>>()
        .chain(std_funs())
        .chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(
            &arena,
            File {
                code: program,
                path: (),
            },
        )
        .map_err(|errs| {
            let parts: Vec<String> = errs
                .into_iter()
                .map(|(_, e)| match e {
                    jaq_core::load::Error::Io(items) => items
                        .into_iter()
                        .map(|(_, m)| m)
                        .collect::<Vec<_>>()
                        .join("; "),
                    jaq_core::load::Error::Lex(items) => items
                        .into_iter()
                        .map(|(expected, at)| {
                            format!("expected {} near {:?}", expected.as_str(), snippet(at))
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    jaq_core::load::Error::Parse(items) => items
                        .into_iter()
                        .map(|(expected, at)| {
                            format!("expected {} near {:?}", expected.as_str(), snippet(at))
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                })
                .collect();
            format!("syntax error: {}", parts.join("; "))
        })?;
    let names: Vec<String> = vars.iter().map(|v| format!("${v}")).collect();
    Compiler::default()
        .with_funs(funs)
        .with_global_vars(names.iter().map(String::as_str))
        .compile(modules)
        .map(|_| ())
        .map_err(|errs| {
            let parts: Vec<String> = errs
                .into_iter()
                .flat_map(|(_, es)| {
                    es.into_iter()
                        .map(|(name, undefined)| format!("undefined {} {name}", undefined.as_str()))
                })
                .collect();
            parts.join("; ")
        })
}

fn snippet(at: &str) -> String {
    at.chars().take(20).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_programs_with_variables() {
        check(
            "{order: .id, plant: $plants[.site], p: $plant}",
            &["plants".into(), "plant".into()],
        )
        .unwrap();
        check(".qty > 0", &[]).unwrap();
    }

    #[test]
    fn names_syntax_errors_and_undefined_names() {
        let e = check("{order: .id", &[]).unwrap_err();
        assert!(e.starts_with("syntax error"), "{e}");
        let e = check("$nope", &[]).unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let e = check("frobnicate(.)", &[]).unwrap_err();
        assert!(e.contains("frobnicate"), "{e}");
    }

    #[test]
    fn the_environment_is_withheld_from_programs() {
        let e = check("{leak: env}", &[]).unwrap_err();
        assert!(e.contains("env"), "{e}");
        // The rest of the standard library stays.
        check("now | todate", &[]).unwrap();
        check(".a | ascii_downcase | test(\"x\")", &[]).unwrap();
    }
}
