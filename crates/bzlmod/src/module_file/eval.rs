//! The part of Starlark that `MODULE.bazel` arguments are evaluated with: strings, integers,
//! booleans and lists; variables; `+`; `"...".format(...)`. Anything else is [`Val::Unknown`].

use std::collections::HashMap;

use starlark_syntax::lexer::TokenInt;
use starlark_syntax::syntax::ast::{ArgumentP, AstArgument, AstExpr, AstLiteral, BinOp, ExprP};

use super::ModuleFileError;

/// A value as far as this parser evaluates Starlark.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    Str(String),
    Int(i64),
    Bool(bool),
    None,
    List(Vec<Val>),
    /// Computed otherwise (a call, an operator not modelled): Bazel may well accept it.
    Unknown,
}

pub(super) fn eval(expr: &AstExpr, env: &HashMap<String, Val>) -> Val {
    match &expr.node {
        ExprP::Literal(AstLiteral::String(s)) => Val::Str(s.node.clone()),
        ExprP::Literal(AstLiteral::Int(i)) => match &i.node {
            TokenInt::I32(n) => Val::Int(i64::from(*n)),
            // Beyond 64 bits: a definite integer, out of range for every argument Bazel takes.
            TokenInt::BigInt(_) => Val::Int(i64::MAX),
        },
        ExprP::Minus(e) => match eval(e, env) {
            Val::Int(n) => n.checked_neg().map_or(Val::Unknown, Val::Int),
            _ => Val::Unknown,
        },
        ExprP::Identifier(id) => match (env.get(&id.node.ident), id.node.ident.as_str()) {
            (Some(v), _) => v.clone(),
            (None, "True") => Val::Bool(true),
            (None, "False") => Val::Bool(false),
            (None, "None") => Val::None,
            _ => Val::Unknown,
        },
        ExprP::Op(a, BinOp::Add, b) => add(eval(a, env), eval(b, env)),
        ExprP::List(items) => Val::List(items.iter().map(|i| eval(i, env)).collect()),
        ExprP::Call(callee, args) => match &callee.node {
            ExprP::Dot(obj, method) if method.node == "format" => match eval(obj, env) {
                Val::Str(template) => format(&template, &args.args, env),
                _ => Val::Unknown,
            },
            _ => Val::Unknown,
        },
        _ => Val::Unknown,
    }
}

pub(super) fn add(a: Val, b: Val) -> Val {
    match (a, b) {
        (Val::Str(a), Val::Str(b)) => Val::Str(a + &b),
        (Val::Int(a), Val::Int(b)) => a.checked_add(b).map_or(Val::Unknown, Val::Int),
        (Val::List(mut a), Val::List(b)) => {
            a.extend(b);
            Val::List(a)
        }
        _ => Val::Unknown,
    }
}

/// `"...".format(...)` with `{}`, `{0}` and `{name}` fields of strings and integers.
fn format(template: &str, args: &[AstArgument], env: &HashMap<String, Val>) -> Val {
    let text = |v: Val| match v {
        Val::Str(s) => Some(s),
        Val::Int(n) => Some(n.to_string()),
        _ => None,
    };
    let (mut positional, mut named) = (Vec::new(), HashMap::new());
    for arg in args {
        match &arg.node {
            ArgumentP::Positional(e) => positional.push(eval(e, env)),
            ArgumentP::Named(k, e) => {
                named.insert(k.node.clone(), eval(e, env));
            }
            _ => return Val::Unknown,
        }
    }
    let (mut out, mut rest, mut next) = (String::new(), template, 0usize);
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        let Some(end) = tail.find('}').filter(|_| tail.starts_with('{')) else {
            return Val::Unknown;
        };
        let field = &tail[1..end];
        let v = if field.is_empty() {
            next += 1;
            positional.get(next - 1)
        } else if let Ok(n) = field.parse::<usize>() {
            positional.get(n)
        } else {
            named.get(field)
        };
        match v.cloned().and_then(text) {
            Some(s) => out.push_str(&s),
            None => return Val::Unknown,
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Val::Str(out)
}

/// One keyword argument of `module()` / `bazel_dep()`, evaluated.
pub(super) struct Arg<'a> {
    pub(super) call: &'static str,
    pub(super) key: &'a str,
    pub(super) val: Val,
    /// A bare name with no assignment before it: Bazel fails ("name is not defined").
    pub(super) undefined: bool,
}

impl Arg<'_> {
    pub(super) fn unknown(&self) -> bool {
        !self.undefined
            && match &self.val {
                Val::List(items) => items.contains(&Val::Unknown),
                v => *v == Val::Unknown,
            }
    }

    fn wrong(&self, want: &'static str) -> ModuleFileError {
        let want = if self.undefined {
            "string or a variable assigned before it"
        } else {
            want
        };
        ModuleFileError::NotLiteral {
            call: self.call,
            arg: self.key.to_owned(),
            want,
        }
    }

    pub(super) fn string(&self) -> Result<Option<String>, ModuleFileError> {
        match &self.val {
            Val::Str(s) => Ok(Some(s.clone())),
            Val::Unknown if !self.undefined => Ok(None),
            _ => Err(self.wrong("string")),
        }
    }

    pub(super) fn int(&self) -> Result<Option<i64>, ModuleFileError> {
        match &self.val {
            // Bazel reads an `int` argument as a 32-bit value and fails beyond it.
            Val::Int(n) if i32::try_from(*n).is_ok() => Ok(Some(*n)),
            Val::Unknown if !self.undefined => Ok(None),
            _ => Err(self.wrong("32-bit integer")),
        }
    }

    pub(super) fn strings(&self) -> Result<Option<Vec<String>>, ModuleFileError> {
        match &self.val {
            Val::List(items) => items
                .iter()
                .map(|i| match i {
                    Val::Str(s) => Ok(Some(s.clone())),
                    Val::Unknown => Ok(None),
                    _ => Err(self.wrong("list of strings")),
                })
                .collect::<Result<Option<Vec<_>>, _>>(),
            Val::Unknown if !self.undefined => Ok(None),
            _ => Err(self.wrong("list of strings")),
        }
    }
}
