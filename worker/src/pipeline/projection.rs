//! A native evaluator for the jq programs integration flows are made of: objects built from
//! fields, lookups (`$table[.key]`), defaults (`//`), string interpolation, conditionals,
//! comparisons and a few string builtins.
//!
//! Run by jaq, such a program spends nearly all its time converting the event into jaq's values
//! and allocating iterators; evaluated directly on the parsed JSON it costs a few map look-ups.
//! jaq stays the definition of what a program means: a [`Projection`] exists only for programs
//! inside the subset below, and it answers only where its answer is certainly jaq's. Anything
//! else (an error, a type jaq would reject, a number beyond 64 bits, a float to print) makes
//! [`Projection::eval`] return `None`, and the caller runs jaq, so errors and edge cases always
//! come from jaq. Tests compare both on many inputs.
//!
//! The subset, where `E`, `F` are in the subset and each gives exactly one output:
//! - `.`, `$var` (global or bound by `E as $x | F`), literals (strings, numbers, `null`,
//!   `true`, `false`);
//! - paths `E.name`, `E[N]` (negative too), `E[F]` (a string or integer key), without `?`;
//! - `E | F`, `E as $x | F`, `E // F`, `E and F`, `E or F`, `if E then F (elif ...) else G end`
//!   (with or without `else`);
//! - `E == F`, `!=`, `<`, `<=`, `>`, `>=`; `E + F`, `-`, `*`, `/`, `%` on numbers, `+` on
//!   strings, arrays, objects and `null`; `-E`;
//! - `"text \(E) text"` (strings, `null`, booleans and integers interpolated);
//! - `{key: E, "key": E, (E): F, "\(E)": F, key, $var}`;
//! - `[E, F, ...]`, `[E[]]`, `[E[] | F]`, `[E[].path]` and `map(F)`, over arrays;
//! - `tonumber`, `tostring`, `length`, `type`, `not`, `ascii_downcase`, `ascii_upcase`,
//!   `split(E)`, `join(E)`, `startswith(E)`, `endswith(E)`, `ltrimstr(E)`, `rtrimstr(E)`;
//! - `error` and `error(E)`, which always leave the event to jaq (so `$t[.k] // error("...")`
//!   is native where the lookup succeeds, and jaq raises the error where it does not).

mod values;

#[cfg(test)]
mod examples;

use std::borrow::Cow;

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Pattern, Term};
use jaq_core::ops::{Cmp, Math};
use jaq_core::path::{Opt, Part};
use serde_json::{Map, Value};

use super::transform::truthy;
use values::{numbers_are_exact, parse_number};

/// A program of the subset, compiled.
#[derive(Clone, Debug)]
pub struct Projection(Expr);

/// One expression of the subset; each gives one output or declines.
#[derive(Clone, Debug)]
enum Expr {
    /// `.`
    Input,
    /// A global variable (a lookup table or an arg), by position.
    Global(usize),
    /// A variable bound by `E as $x`, counted from the innermost binding.
    Local(usize),
    /// A constant.
    Literal(Value),
    /// `E[step]...`; the steps' own expressions see the same input as `E`.
    Path(Box<Expr>, Vec<Step>),
    /// `E | F`
    Pipe(Box<Expr>, Box<Expr>),
    /// `E as $x | F`
    Bind(Box<Expr>, Box<Expr>),
    /// `[...]`
    Array(Vec<Item>),
    /// `{key: E, ...}`, in order.
    Object(Vec<(Key, Expr)>),
    /// `"text \(E) text"`
    Interpolate(Vec<Piece>),
    /// `E // F`
    Alt(Box<Expr>, Box<Expr>),
    /// `E or F` (`or` true) and `E and F`.
    Logic {
        left: Box<Expr>,
        or: bool,
        right: Box<Expr>,
    },
    /// `if E then F else G end`
    If {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// `E + F`, ...
    Math(Box<Expr>, Math, Box<Expr>),
    /// `E == F`, ...
    Cmp(Box<Expr>, Cmp, Box<Expr>),
    /// `-E`
    Neg(Box<Expr>),
    /// A builtin applied to the input; its arguments are evaluated on the same input.
    Call(Builtin, Vec<Expr>),
    /// `error`, `error(E)`: always declines, so that jaq raises the error.
    Fail,
}

/// One step of a path.
#[derive(Clone, Debug)]
enum Step {
    /// `.name` or `["name"]`
    Field(String),
    /// `[N]`
    Index(i64),
    /// `[E]`, a string or an integer
    Key(Box<Expr>),
}

/// What goes into an array.
#[derive(Clone, Debug)]
enum Item {
    /// One value.
    One(Expr),
    /// `source[] after... | body`: every element of the array `source`.
    Each {
        source: Expr,
        after: Vec<Step>,
        body: Option<Expr>,
    },
}

/// An object key.
#[derive(Clone, Debug)]
enum Key {
    Static(String),
    /// Must give a string.
    Dynamic(Expr),
}

/// A part of an interpolated string.
#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    Value(Expr),
}

/// The builtins of the subset, with the meaning jaq's standard library gives them.
#[derive(Clone, Copy, Debug)]
enum Builtin {
    ToNumber,
    ToString,
    Length,
    Type,
    Not,
    AsciiDowncase,
    AsciiUpcase,
    Split,
    Join,
    StartsWith,
    EndsWith,
    LtrimStr,
    RtrimStr,
}

impl Builtin {
    fn named(name: &str, arity: usize) -> Option<Self> {
        Some(match (name, arity) {
            ("tonumber", 0) => Builtin::ToNumber,
            ("tostring", 0) => Builtin::ToString,
            ("length", 0) => Builtin::Length,
            ("type", 0) => Builtin::Type,
            ("not", 0) => Builtin::Not,
            ("ascii_downcase", 0) => Builtin::AsciiDowncase,
            ("ascii_upcase", 0) => Builtin::AsciiUpcase,
            ("split", 1) => Builtin::Split,
            ("join", 1) => Builtin::Join,
            ("startswith", 1) => Builtin::StartsWith,
            ("endswith", 1) => Builtin::EndsWith,
            ("ltrimstr", 1) => Builtin::LtrimStr,
            ("rtrimstr", 1) => Builtin::RtrimStr,
            _ => return None,
        })
    }
}

impl Projection {
    /// Compiles `code` when it is inside the subset; `vars` are the global variable names,
    /// with `$`.
    pub fn compile(code: &str, vars: &[String]) -> Option<Self> {
        let term = jaq_core::load::parse(code, |p| p.term())?;
        let mut scope = Scope {
            globals: vars,
            locals: Vec::new(),
        };
        scope.expr(&term).map(Projection)
    }

    /// Evaluates on `input` with the global variables' values; `None` means "ask jaq" (see
    /// the module docs).
    pub fn eval(&self, input: &Value, vars: &[Value]) -> Option<Value> {
        let env = Env {
            globals: vars,
            locals: None,
        };
        let out = self.0.eval(input, env)?.into_owned();
        // Numbers pass through untouched or are computed from exact ones; this catches the
        // ones jaq would have read as big integers.
        numbers_are_exact(&out).then_some(out)
    }
}

/// Compiles parsed terms, resolving variables.
struct Scope<'v, 's> {
    globals: &'v [String],
    /// Names bound by `as`, innermost last.
    locals: Vec<&'s str>,
}

impl<'s> Scope<'_, 's> {
    fn expr(&mut self, term: &Term<&'s str>) -> Option<Expr> {
        Some(match term {
            Term::Id => Expr::Input,
            Term::Var(name) => self.var(name)?,
            Term::Num(n) => Expr::Literal(number_literal(n)?),
            Term::Str(None, parts) => self.string(parts)?,
            Term::Neg(inner) => match self.expr(inner)? {
                Expr::Literal(v) => Expr::Literal(values::negate(&v)?),
                e => Expr::Neg(Box::new(e)),
            },
            Term::Path(base, path) => {
                let base = self.expr(base)?;
                let steps = self.steps(&path.0)?;
                if steps.is_empty() {
                    base
                } else {
                    Expr::Path(Box::new(base), steps)
                }
            }
            Term::BinOp(l, op, r) => self.binop(l, op, r)?,
            Term::IfThenElse(branches, otherwise) => {
                let mut out = match otherwise {
                    Some(e) => self.expr(e)?,
                    None => Expr::Input,
                };
                for (cond, then) in branches.iter().rev() {
                    out = Expr::If {
                        cond: Box::new(self.expr(cond)?),
                        then: Box::new(self.expr(then)?),
                        otherwise: Box::new(out),
                    };
                }
                out
            }
            Term::Arr(None) => Expr::Literal(Value::Array(Vec::new())),
            Term::Arr(Some(inner)) => {
                let mut items = Vec::new();
                self.items(inner, &mut items)?;
                constant_array(&items).unwrap_or(Expr::Array(items))
            }
            Term::Obj(entries) => self.object(entries)?,
            Term::Call(name, args) => self.call(name, args)?,
            _ => return None,
        })
    }

    fn var(&self, name: &str) -> Option<Expr> {
        if let Some(i) = self.locals.iter().rposition(|l| *l == name) {
            return Some(Expr::Local(self.locals.len() - 1 - i));
        }
        self.globals
            .iter()
            .position(|g| g == name)
            .map(Expr::Global)
    }

    fn binop(
        &mut self,
        l: &Term<&'s str>,
        op: &BinaryOp<&'s str>,
        r: &Term<&'s str>,
    ) -> Option<Expr> {
        let pair = |s: &mut Self| Some((Box::new(s.expr(l)?), Box::new(s.expr(r)?)));
        Some(match op {
            BinaryOp::Pipe(None) => {
                let (l, r) = pair(self)?;
                Expr::Pipe(l, r)
            }
            BinaryOp::Pipe(Some(Pattern::Var(name))) => {
                let value = self.expr(l)?;
                self.locals.push(*name);
                let body = self.expr(r);
                self.locals.pop();
                Expr::Bind(Box::new(value), Box::new(body?))
            }
            BinaryOp::Alt => {
                let (l, r) = pair(self)?;
                Expr::Alt(l, r)
            }
            BinaryOp::Or | BinaryOp::And => {
                let (left, right) = pair(self)?;
                let or = matches!(op, BinaryOp::Or);
                Expr::Logic { left, or, right }
            }
            BinaryOp::Math(op) => {
                let (l, r) = pair(self)?;
                Expr::Math(l, *op, r)
            }
            BinaryOp::Cmp(op) => {
                let (l, r) = pair(self)?;
                Expr::Cmp(l, *op, r)
            }
            _ => return None,
        })
    }

    fn steps(&mut self, parts: &[(Part<Term<&'s str>>, Opt)]) -> Option<Vec<Step>> {
        parts
            .iter()
            .map(|(part, opt)| match (part, opt) {
                (Part::Index(index), Opt::Essential) => self.step(index),
                _ => None,
            })
            .collect()
    }

    fn step(&mut self, index: &Term<&'s str>) -> Option<Step> {
        Some(match self.expr(index)? {
            Expr::Literal(Value::String(name)) => Step::Field(name),
            Expr::Literal(Value::Number(n)) if n.is_i64() => Step::Index(n.as_i64()?),
            key => Step::Key(Box::new(key)),
        })
    }

    /// The items of `[term]`, appended to `out`.
    fn items(&mut self, term: &Term<&'s str>, out: &mut Vec<Item>) -> Option<()> {
        match term {
            Term::BinOp(l, BinaryOp::Comma, r) => {
                self.items(l, out)?;
                self.items(r, out)?;
            }
            Term::BinOp(l, BinaryOp::Pipe(None), r) => match self.iteration(l) {
                Some((source, after)) => out.push(Item::Each {
                    source,
                    after,
                    body: Some(self.expr(r)?),
                }),
                None => out.push(Item::One(self.expr(term)?)),
            },
            other => out.push(match self.iteration(other) {
                Some((source, after)) => Item::Each {
                    source,
                    after,
                    body: None,
                },
                None => Item::One(self.expr(other)?),
            }),
        }
        Some(())
    }

    /// `E[] after...`, as its source `E` and the steps after `[]`.
    fn iteration(&mut self, term: &Term<&'s str>) -> Option<(Expr, Vec<Step>)> {
        let Term::Path(base, path) = term else {
            return None;
        };
        let at = path
            .0
            .iter()
            .position(|p| matches!(p, (Part::Range(None, None), Opt::Essential)))?;
        let base = self.expr(base)?;
        let before = self.steps(&path.0[..at])?;
        let after = self.steps(&path.0[at + 1..])?;
        let source = if before.is_empty() {
            base
        } else {
            Expr::Path(Box::new(base), before)
        };
        Some((source, after))
    }

    fn string(&mut self, parts: &[StrPart<&'s str, Term<&'s str>>]) -> Option<Expr> {
        let mut pieces: Vec<Piece> = Vec::with_capacity(parts.len());
        let mut text = String::new();
        for part in parts {
            match part {
                StrPart::Str(s) => text.push_str(s),
                StrPart::Char(c) => text.push(*c),
                StrPart::Term(t) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Value(self.expr(t)?));
                }
            }
        }
        if pieces.is_empty() {
            return Some(Expr::Literal(Value::String(text)));
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Some(Expr::Interpolate(pieces))
    }

    fn object(&mut self, entries: &[(Term<&'s str>, Option<Term<&'s str>>)]) -> Option<Expr> {
        let mut fields = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let field = match (key, value) {
                // `{$x}` is `{x: $x}`.
                (Term::Var(name), None) => (
                    Key::Static(name.strip_prefix('$')?.to_string()),
                    self.var(name)?,
                ),
                (key, value) => {
                    let key = match self.expr(key)? {
                        Expr::Literal(Value::String(s)) => Key::Static(s),
                        Expr::Literal(_) => return None,
                        other => Key::Dynamic(other),
                    };
                    let value = match (value, &key) {
                        (Some(v), _) => self.expr(v)?,
                        // `{key}` is `{key: .key}`.
                        (None, Key::Static(name)) => {
                            Expr::Path(Box::new(Expr::Input), vec![Step::Field(name.clone())])
                        }
                        (None, Key::Dynamic(_)) => return None,
                    };
                    (key, value)
                }
            };
            fields.push(field);
        }
        Some(constant_object(&fields).unwrap_or(Expr::Object(fields)))
    }

    fn call(&mut self, name: &str, args: &[Term<&'s str>]) -> Option<Expr> {
        Some(match (name, args) {
            ("null", []) => Expr::Literal(Value::Null),
            ("true", []) => Expr::Literal(Value::Bool(true)),
            ("false", []) => Expr::Literal(Value::Bool(false)),
            ("error", [] | [_]) => Expr::Fail,
            ("map", [f]) => Expr::Array(vec![Item::Each {
                source: Expr::Input,
                after: Vec::new(),
                body: Some(self.expr(f)?),
            }]),
            _ => {
                let builtin = Builtin::named(name, args.len())?;
                let args = args.iter().map(|a| self.expr(a)).collect::<Option<_>>()?;
                Expr::Call(builtin, args)
            }
        })
    }
}

/// A number literal as jaq reads it: an integer, or a decimal both float parsers agree on.
fn number_literal(n: &str) -> Option<Value> {
    parse_number(n).map(Value::Number)
}

/// `[...]` of constants, folded once.
fn constant_array(items: &[Item]) -> Option<Expr> {
    let values = items.iter().map(|item| match item {
        Item::One(Expr::Literal(v)) => Some(v.clone()),
        _ => None,
    });
    Some(Expr::Literal(Value::Array(values.collect::<Option<_>>()?)))
}

/// `{...}` of constants, folded once.
fn constant_object(fields: &[(Key, Expr)]) -> Option<Expr> {
    let mut map = Map::new();
    for field in fields {
        let (Key::Static(k), Expr::Literal(v)) = field else {
            return None;
        };
        map.insert(k.clone(), v.clone());
    }
    Some(Expr::Literal(Value::Object(map)))
}

/// Variables in scope while evaluating.
#[derive(Clone, Copy)]
struct Env<'a> {
    globals: &'a [Value],
    locals: Option<&'a Local<'a>>,
}

/// One `as` binding, linked to the bindings around it.
struct Local<'a> {
    value: &'a Value,
    outer: Option<&'a Local<'a>>,
}

impl<'a> Env<'a> {
    fn local(self, depth: usize) -> Option<&'a Value> {
        let mut at = self.locals?;
        for _ in 0..depth {
            at = at.outer?;
        }
        Some(at.value)
    }
}

const NULL: &Value = &Value::Null;

impl Expr {
    /// The single output on `input`, borrowed where it is a part of the input, a variable or
    /// the program; `None` declines.
    fn eval<'a>(&'a self, input: &'a Value, env: Env<'a>) -> Option<Cow<'a, Value>> {
        use Cow::{Borrowed, Owned};
        Some(match self {
            Expr::Input => Borrowed(input),
            Expr::Global(i) => Borrowed(env.globals.get(*i)?),
            Expr::Local(depth) => Borrowed(env.local(*depth)?),
            Expr::Literal(v) => Borrowed(v),
            Expr::Path(base, steps) => match base.eval(input, env)? {
                Borrowed(v) => Borrowed(walk(v, steps, input, env)?),
                Owned(v) => Owned(walk(&v, steps, input, env)?.clone()),
            },
            Expr::Pipe(l, r) => match l.eval(input, env)? {
                Borrowed(v) => r.eval(v, env)?,
                Owned(v) => Owned(r.eval(&v, env)?.into_owned()),
            },
            Expr::Bind(value, body) => {
                let value = value.eval(input, env)?;
                let local = Local {
                    value: &value,
                    outer: env.locals,
                };
                let env = Env {
                    globals: env.globals,
                    locals: Some(&local),
                };
                Owned(body.eval(input, env)?.into_owned())
            }
            Expr::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    item.eval_into(input, env, &mut out)?;
                }
                Owned(Value::Array(out))
            }
            Expr::Object(fields) => {
                let mut map = Map::new();
                for (key, value) in fields {
                    let key = match key {
                        Key::Static(k) => k.clone(),
                        Key::Dynamic(e) => match e.eval(input, env)?.into_owned() {
                            Value::String(s) => s,
                            _ => return None,
                        },
                    };
                    map.insert(key, value.eval(input, env)?.into_owned());
                }
                Owned(Value::Object(map))
            }
            Expr::Interpolate(pieces) => {
                let mut s = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(t) => s.push_str(t),
                        Piece::Value(e) => s.push_str(&values::to_text(&*e.eval(input, env)?)?),
                    }
                }
                Owned(Value::String(s))
            }
            Expr::Alt(l, r) => {
                let v = l.eval(input, env)?;
                if truthy(&v) { v } else { r.eval(input, env)? }
            }
            Expr::Logic { left, or, right } => {
                let l = truthy(&*left.eval(input, env)?);
                let out = if l == *or {
                    *or
                } else {
                    truthy(&*right.eval(input, env)?)
                };
                Owned(Value::Bool(out))
            }
            Expr::If {
                cond,
                then,
                otherwise,
            } => {
                if truthy(&*cond.eval(input, env)?) {
                    then.eval(input, env)?
                } else {
                    otherwise.eval(input, env)?
                }
            }
            Expr::Math(l, op, r) => {
                let (l, r) = (l.eval(input, env)?, r.eval(input, env)?);
                Owned(values::arith(*op, &l, &r)?)
            }
            Expr::Cmp(l, op, r) => {
                let (l, r) = (l.eval(input, env)?, r.eval(input, env)?);
                Owned(Value::Bool(values::compare(*op, &l, &r)?))
            }
            Expr::Neg(e) => Owned(values::negate(&*e.eval(input, env)?)?),
            Expr::Call(builtin, args) => builtin.eval(args, input, env)?,
            Expr::Fail => return None,
        })
    }
}

impl Item {
    fn eval_into<'a>(&'a self, input: &'a Value, env: Env<'a>, out: &mut Vec<Value>) -> Option<()> {
        match self {
            Item::One(e) => out.push(e.eval(input, env)?.into_owned()),
            Item::Each {
                source,
                after,
                body,
            } => {
                let source = source.eval(input, env)?;
                // jaq iterates objects too, in its own key order; those are left to it.
                let Value::Array(elements) = &*source else {
                    return None;
                };
                out.reserve(elements.len());
                for element in elements {
                    let at = walk(element, after, input, env)?;
                    out.push(match body {
                        Some(body) => body.eval(at, env)?.into_owned(),
                        None => at.clone(),
                    });
                }
            }
        }
        Some(())
    }
}

/// Follows `steps` from `at`; key expressions see `input`, the input of the whole path.
fn walk<'v>(mut at: &'v Value, steps: &[Step], input: &Value, env: Env<'_>) -> Option<&'v Value> {
    for step in steps {
        at = match step {
            Step::Field(name) => field(at, name)?,
            Step::Index(i) => index(at, *i)?,
            Step::Key(key) => match &*key.eval(input, env)? {
                Value::String(name) => field(at, name)?,
                Value::Number(n) if n.is_i64() => index(at, n.as_i64()?)?,
                _ => return None,
            },
        };
    }
    Some(at)
}

/// `.name`: objects and `null` only.
fn field<'v>(at: &'v Value, name: &str) -> Option<&'v Value> {
    match at {
        Value::Object(map) => Some(map.get(name).unwrap_or(NULL)),
        Value::Null => Some(NULL),
        _ => None,
    }
}

/// `.[i]`: arrays (negative indexes count from the end) and `null` only.
fn index(at: &Value, i: i64) -> Option<&Value> {
    match at {
        Value::Array(items) => {
            let position = if i >= 0 {
                usize::try_from(i).ok()
            } else {
                usize::try_from(i.unsigned_abs())
                    .ok()
                    .and_then(|back| items.len().checked_sub(back))
            };
            Some(position.and_then(|p| items.get(p)).unwrap_or(NULL))
        }
        Value::Null => Some(NULL),
        _ => None,
    }
}

impl Builtin {
    fn eval<'a>(self, args: &'a [Expr], input: &'a Value, env: Env<'a>) -> Option<Cow<'a, Value>> {
        use Cow::{Borrowed, Owned};
        let arg = || args.first()?.eval(input, env);
        Some(match self {
            Builtin::ToNumber => match input {
                Value::Number(_) => Borrowed(input),
                Value::String(s) => Owned(Value::Number(parse_number(s)?)),
                _ => return None,
            },
            Builtin::ToString => match input {
                Value::String(_) => Borrowed(input),
                other => Owned(Value::String(values::to_text(other)?.into_owned())),
            },
            Builtin::Length => Owned(values::length(input)?),
            Builtin::Type => Owned(Value::String(values::type_name(input).to_string())),
            Builtin::Not => Owned(Value::Bool(!truthy(input))),
            Builtin::AsciiDowncase => Owned(Value::String(input.as_str()?.to_ascii_lowercase())),
            Builtin::AsciiUpcase => Owned(Value::String(input.as_str()?.to_ascii_uppercase())),
            Builtin::Split => {
                let sep = arg()?;
                Owned(values::split(input.as_str()?, sep.as_str()?))
            }
            Builtin::Join => {
                let sep = arg()?;
                Owned(Value::String(values::join(input.as_array()?, &sep)?))
            }
            Builtin::StartsWith => {
                let prefix = arg()?;
                Owned(Value::Bool(input.as_str()?.starts_with(prefix.as_str()?)))
            }
            Builtin::EndsWith => {
                let suffix = arg()?;
                Owned(Value::Bool(input.as_str()?.ends_with(suffix.as_str()?)))
            }
            Builtin::LtrimStr | Builtin::RtrimStr => {
                let fix = arg()?;
                let (s, fix) = (input.as_str()?, fix.as_str()?);
                let trimmed = match self {
                    Builtin::LtrimStr => s.strip_prefix(fix),
                    _ => s.strip_suffix(fix),
                };
                match trimmed {
                    Some(rest) => Owned(Value::String(rest.to_string())),
                    None => Borrowed(input),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::transform::{JqProgram, JqVariables};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    fn vars() -> JqVariables {
        JqVariables::new([
            (
                "plants".to_string(),
                json!({"berlin": "1000", "lyon": "2000", "münchen": "3000"}),
            ),
            ("unit".to_string(), json!("PC")),
            ("n".to_string(), json!(3)),
        ])
    }

    /// Programs inside the subset, over the fields the generated inputs have.
    const INSIDE: &[&str] = &[
        // Paths, variables and literals.
        ".",
        ".a",
        ".a.b.c",
        ".items[0].qty",
        ".items[3]",
        ".items[-1]",
        ".items[.n]",
        r#".["odd key"]"#,
        ".[.s]",
        "$plants",
        "$unit",
        "$plants[.site]",
        "$plants[.a.site]",
        r#"{X3: "ARRIVED", AF: "DEPARTED", "A-B-C": "abc"}[.s]"#,
        "null",
        "[1, \"x\", null, true, -2, 2.5]",
        r#""tab\tand \u00e9""#,
        "-1",
        "1.5",
        "1e3",
        // Builtins.
        ".qty | tonumber",
        ".s | tonumber",
        "(.qty | tonumber) + 1",
        ".a | tostring",
        ".a | length",
        ".s | length",
        ".items | length",
        ".a | type",
        ".a | not",
        ".s | ascii_downcase",
        ".s | ascii_upcase",
        r#".s | split("-")"#,
        r#".s | split("")"#,
        r#".s | split("T") | .[0]"#,
        ".b as $sep | .a | split($sep)",
        r#".items | join(",")"#,
        ".b as $sep | .items | join($sep)",
        r#".s | startswith("FG-")"#,
        ".b as $prefix | .s | startswith($prefix)",
        r#".s | endswith("C")"#,
        r#".s | ltrimstr("A-")"#,
        ".b as $suffix | .s | rtrimstr($suffix)",
        "error",
        r#"error("no \(.a)")"#,
        // Alternatives, conditionals, logic.
        ".a // .b",
        r#".a // "x""#,
        ".a.b // 0",
        r#"$plants[.site] // error("no ERP plant for site \(.site)")"#,
        r#"(.storage // "0001")"#,
        r#"if .a then .b elif .c then "c" else null end"#,
        r#"if .n >= 0 then "701" else "702" end"#,
        "if .a == null then 1 end",
        "if .n < 0 then 0 - .n else .n end",
        ".a and .b",
        ".a or .b",
        "(.a | not) and (.b or .c)",
        // Comparisons and arithmetic.
        r#".plant == "1000""#,
        r#""1000" != .plant"#,
        ".flag == true",
        ".gone == null",
        ".a == .b",
        ".a != .b",
        ".a < .b",
        ".a <= .b",
        ".a > .b",
        ".a >= .b",
        ".n > 0",
        ".a == 1",
        ".a == 1.0",
        ".items == [1, 2]",
        ".a + .b",
        ".a - .b",
        ".a * .b",
        ".a / .b",
        ".a % .b",
        "-.n",
        ".n + 1.5",
        ".a + null",
        r#".s + ":" + .a"#,
        r#".a + "-" + (.n | tostring)"#,
        // Strings.
        r#""\(.a)-\(.b)""#,
        r#""\(.a):\(.s):\(.n) ✓""#,
        r#""\(.s)""#,
        // Bindings.
        ". as $x | $x.a",
        ".items[0] as $i | {q: $i.qty, a: .a}",
        ".a as $a | .b as $a | [$a, .c]",
        "$unit as $u | .s as $unit | [$u, $unit, $plants[.site]]",
        // Arrays and objects.
        "[.items[] | .qty]",
        "[.items[].qty]",
        "[.items[]]",
        "[.a, .b, \"x\"]",
        "[.items[] | {q: .qty, s: $plants[.site]}]",
        "[.items[][.s]]",
        "[.a[], .b]",
        ".items | map(tostring)",
        "{(.s): .a}",
        r#"{"\(.s)": 1, b}"#,
        "{$unit, a}",
        "{a: 1, b: .b, a: .a}",
        "{a: .a, b: .b} + {a: 3}",
        r#"{id: .id, plant: $plants[.site], qty: (.qty | tonumber), unit: $unit, site, n: 7, s: "x", z: null}"#,
        r#"{nested: {id: .id, first: .items[0]}}"#,
        "{}",
        "[]",
    ];

    const OUTSIDE: &[&str] = &[
        ".a?",
        ".[]",
        ".a, .b",
        ".a[1:]",
        r#"@base64 "\(.a)""#,
        "$missing",
        "$__loc__",
        ".a |= 1",
        ".a // empty",
        "try .a catch 0",
        "reduce .[] as $x (0; . + $x)",
        "def f: .a; f",
        ". as [$a] | $a",
        "{(1): 2}",
        "[.a[][]]",
        r#".s | split("a"; "g")"#,
        r#".s | test("a")"#,
        "[.[] as $x | $x]",
        "007",
        "1e400",
        "keys",
        "[.a[] | .b, .c]",
        ".. | .a",
    ];

    /// Scalars that stress the edges: exact and inexact numbers, numbers as strings, unicode.
    fn scalar(rng: &mut StdRng) -> Value {
        const SCALARS: &[&str] = &[
            "null",
            "true",
            "false",
            "0",
            "1",
            "-3",
            "7",
            "2",
            "9223372036854775807",
            "-9223372036854775808",
            "18446744073709551615",
            "0.5",
            "-0.0",
            "2.5",
            "1e300",
            "12.0",
            "0.1",
            r#""""#,
            r#""a""#,
            r#""12""#,
            r#""12.5""#,
            r#""-4""#,
            r#""1e3""#,
            r#""007""#,
            r#""-0""#,
            r#""abc""#,
            r#""2026-11-26T08:31:12+01:00""#,
            r#""A-B-C""#,
            r#""FG-4711""#,
            r#""ünïcødé ✓""#,
            r#""日本-語""#,
            r#""😀T😀""#,
            r#""berlin""#,
            r#""münchen""#,
            r#""T""#,
            r#"" 1""#,
            r#""null""#,
            r#""1000""#,
            r#""C""#,
            r#""-""#,
        ];
        serde_json::from_str(SCALARS[rng.random_range(0..SCALARS.len())]).expect("JSON")
    }

    const KEYS: &[&str] = &[
        "a", "b", "c", "s", "n", "site", "qty", "items", "id", "plant", "flag", "gone", "storage",
        "odd key", "1000", "ü",
    ];

    fn value(rng: &mut StdRng, depth: u32) -> Value {
        match rng.random_range(0..10) {
            0..=5 => scalar(rng),
            6 | 7 if depth > 0 => {
                let len = rng.random_range(0..4);
                Value::Array((0..len).map(|_| value(rng, depth - 1)).collect())
            }
            8 | 9 if depth > 0 => object(rng, depth - 1),
            _ => scalar(rng),
        }
    }

    fn object(rng: &mut StdRng, depth: u32) -> Value {
        let mut map = Map::new();
        for key in KEYS {
            if rng.random_bool(0.6) {
                map.insert(key.to_string(), value(rng, depth));
            }
        }
        Value::Object(map)
    }

    /// Mostly objects with the fields the programs read; sometimes anything at all.
    fn generated_inputs(count: usize) -> Vec<Value> {
        let mut rng = StdRng::seed_from_u64(17);
        let mut out = vec![
            json!({"id": "A1", "site": "berlin", "qty": "12.5", "plant": "1000", "flag": true,
                   "items": [{"qty": "3", "site": "lyon"}], "a": {"b": {"c": [1, 2]}},
                   "odd key": 1, "s": "A-B-C", "n": 1}),
            json!({"id": 7, "site": "paris", "qty": "12", "plant": 1000, "flag": "yes",
                   "items": [], "a": {"b": null}}),
            json!({"qty": 3.25, "site": null, "items": [1, 2], "a": [], "s": "2026-11-26T08:31:12Z"}),
            json!({"qty": "-0", "site": 3, "items": {"0": 1}, "a": "text"}),
            json!({"id": 18446744073709551615_u64, "qty": 1e300, "items": [{"qty": 0.1}]}),
            json!(null),
            json!([1, 2, 3]),
            json!("just a string"),
        ];
        while out.len() < count {
            out.push(if rng.random_bool(0.9) {
                object(&mut rng, 2)
            } else {
                value(&mut rng, 2)
            });
        }
        out
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

    /// Asserts that wherever the shortcut answers `code` on an input, jaq gives the same single
    /// output, serialized the same way; returns how many inputs were answered natively.
    pub(super) fn assert_agrees(code: &str, vars: &JqVariables, inputs: &[Value]) -> usize {
        let native = JqProgram::compile(code, vars).expect("compiles");
        let reference = JqProgram::compile_jaq_only(code, vars).expect("compiles");
        let mut answered = 0;
        for input in inputs {
            let Some(fast) = native.run_natively(input, vars) else {
                continue;
            };
            answered += 1;
            let slow = reference.run(input, vars);
            assert_eq!(
                slow,
                Ok(vec![fast.clone()]),
                "{code} on {input}: jaq and the shortcut differ"
            );
            // Key order and number formatting too.
            assert_eq!(
                serde_json::to_string(&slow.expect("checked")[0]).expect("serializes"),
                serde_json::to_string(&fast).expect("serializes"),
                "{code} on {input}"
            );
        }
        answered
    }

    /// Wherever the shortcut answers, jaq gives the same single output; and every program of
    /// the subset is answered on some inputs, so no comparison is vacuous.
    #[test]
    fn the_shortcut_agrees_with_jaq() {
        let vars = vars();
        let inputs = generated_inputs(400);
        let mut total = 0;
        for code in INSIDE {
            let answered = assert_agrees(code, &vars, &inputs);
            // `error` never answers: jaq raises it.
            if !code.starts_with("error") {
                assert!(answered > 0, "{code} was never answered natively");
            }
            total += answered;
        }
        assert!(total > 10_000, "only {total} cases answered natively");
    }

    /// The shortcut declines where jaq fails, so the error is jaq's.
    #[test]
    fn errors_are_left_to_jaq() {
        let vars = vars();
        for (code, input) in [
            (r#".s | split("-")"#, json!({"s": 12})),
            (".a + .b", json!({"a": "x", "b": 1})),
            (".a - .b", json!({"a": "x", "b": "y"})),
            (".a | length", json!({"a": true})),
            (".qty | tonumber", json!({"qty": "twelve"})),
            (".a[0]", json!({"a": "text"})),
            ("[.items[]]", json!({"items": null})),
            (".a.b", json!({"a": "text"})),
            (
                r#"$plants[.site] // error("no plant")"#,
                json!({"site": "paris"}),
            ),
            (r#".s | startswith("FG-")"#, json!({"s": null})),
            (".a | ascii_downcase", json!({"a": 1})),
            ("-.a", json!({"a": "x"})),
        ] {
            let program = JqProgram::compile(code, &vars).expect("compiles");
            assert!(program.is_native(), "{code}");
            assert_eq!(
                program.run_natively(&input, &vars),
                None,
                "{code} on {input}"
            );
            assert!(program.run(&input, &vars).is_err(), "{code} on {input}");
        }
    }
}
