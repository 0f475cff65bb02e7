//! Reading the facts a registry needs out of a `MODULE.bazel`, with a real Starlark parser.
//!
//! Bazel executes `MODULE.bazel` as Starlark (no `def`, `if` or `for`, but top-level variables):
//! arguments are evaluated here as far as constant strings, numbers and lists go (literals,
//! variables assigned earlier, `+`, `"...".format(...)`); what is computed otherwise is listed in
//! [`ModuleFile::unresolved`] rather than refused, since Bazel accepts it.

use std::borrow::Cow;
use std::collections::HashMap;

use starlark_syntax::syntax::ast::{ArgumentP, AssignOp, AssignTargetP, ExprP, StmtP};
use starlark_syntax::syntax::top_level_stmts::top_level_stmts;
use starlark_syntax::syntax::{AstModule, Dialect};

use eval::{Arg, Val, add, eval};

mod eval;

/// The declarations of a `MODULE.bazel` that a registry checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleFile {
    /// `module(name = ...)`.
    pub name: Option<String>,
    /// `module(version = ...)`.
    pub version: Option<String>,
    /// `module(compatibility_level = ...)`.
    pub compatibility_level: Option<i64>,
    /// `module(bazel_compatibility = [...])`.
    pub bazel_compatibility: Vec<String>,
    /// Every top-level `bazel_dep(name = ..., version = ...)`.
    pub deps: Vec<BazelDep>,
    /// Whether a `module()` call was present.
    pub has_module_call: bool,
    /// Arguments computed in a way this parser does not evaluate, as `call(arg)`
    /// (`module(version)`, `bazel_dep(version)`): their fields above are left unset or empty.
    pub unresolved: Vec<String>,
}

/// One `bazel_dep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BazelDep {
    /// The dependency's module name.
    pub name: String,
    /// The requested version (empty when not given).
    pub version: String,
    /// `dev_dependency = True`.
    pub dev_dependency: bool,
}

/// Largest `MODULE.bazel` parsed (real ones are a few kilobytes).
pub const MAX_BYTES: usize = 1024 * 1024;

/// Deepest bracket nesting, and longest run of unary operators, accepted. The parser
/// (`starlark_syntax`) recurses once per level: 6,000 nested `(` overflow a 2 MiB thread stack
/// and abort the process (found by `fuzz/`, target `module_file`).
pub const MAX_NESTING: usize = 200;

/// Stack of the thread a parse runs on: long flat operator chains (`1+1+...`, one level per
/// operator, about 100 bytes each) within [`MAX_BYTES`] fit in it.
pub const PARSE_STACK: usize = 256 * 1024 * 1024;

/// Why a `MODULE.bazel` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleFileError {
    /// Too large or too deeply nested to parse safely.
    #[error("MODULE.bazel is refused: {0}")]
    TooComplex(String),
    /// Not valid Starlark.
    #[error("MODULE.bazel is not valid Starlark: {0}")]
    Syntax(String),
    /// More than one `module()` call.
    #[error("MODULE.bazel calls module() more than once")]
    DuplicateModuleCall,
    /// An argument of a type Bazel refuses, or a name that is not defined (Bazel fails).
    #[error("MODULE.bazel: `{call}({arg} = ...)` must be a {want}")]
    NotLiteral {
        /// The call.
        call: &'static str,
        /// The keyword.
        arg: String,
        /// The expected literal kind.
        want: &'static str,
    },
}

/// How a caller has `MODULE.bazel` parsed: [`parse`], on a thread with [`PARSE_STACK`] of
/// stack. This crate starts no threads; the server passes its own big-stack wrapper.
pub type ParseFn = fn(&str) -> Result<ModuleFile, ModuleFileError>;

/// Refuses sources too large or too deeply nested to parse safely ([`MAX_BYTES`],
/// [`MAX_NESTING`]). [`parse`] checks this itself; callers that start a thread for the parse
/// check it first, so a refused source never costs one.
///
/// # Errors
/// [`ModuleFileError::TooComplex`].
pub fn check_limits(source: &str) -> Result<(), ModuleFileError> {
    if source.len() > MAX_BYTES {
        return Err(ModuleFileError::TooComplex(format!(
            "{} bytes, over the {MAX_BYTES}-byte limit",
            source.len()
        )));
    }
    check_nesting(source)
}

/// Parses `MODULE.bazel` source, on the current thread.
///
/// The parser's recursion is bounded by [`check_limits`], not by the caller's stack: a long
/// flat operator chain within [`MAX_BYTES`] needs up to [`PARSE_STACK`]. Run it on a thread
/// with that much stack (reserved, touched only as deep as the parse goes) unless the input is
/// known to be small.
///
/// # Errors
/// [`ModuleFileError`] for what Bazel refuses too: syntax errors (tabs in the indentation of a
/// statement included), a second `module()`, arguments of the wrong type or undefined names.
pub fn parse(source: &str) -> Result<ModuleFile, ModuleFileError> {
    check_limits(source)?;
    parse_here(&accept_tabs(source)?)
}

/// Bazel's lexer (`Lexer.java`) takes a tab as a blank anywhere but in the indentation of a
/// statement, where it is an error; this parser refuses tabs everywhere. Tabs Bazel accepts
/// become spaces (offsets unchanged); those in string literals stay.
fn accept_tabs(source: &str) -> Result<Cow<'_, str>, ModuleFileError> {
    if !source.contains('\t') {
        return Ok(Cow::Borrowed(source));
    }
    let b = source.as_bytes();
    let mut out = b.to_vec();
    let (mut i, mut depth, mut line_start) = (0usize, 0usize, true);
    while i < b.len() {
        match b[i] {
            b'\t' if line_start && depth == 0 => {
                let line = b[..i].iter().filter(|&&c| c == b'\n').count() + 1;
                return Err(ModuleFileError::Syntax(format!(
                    "line {line}: tab characters are not allowed for indentation (Bazel refuses them too)"
                )));
            }
            b'\t' => out[i] = b' ',
            b' ' | b'\r' => {}
            b'\n' => line_start = depth == 0,
            b'#' => {
                while i + 1 < b.len() && b[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'\\' if b.get(i + 1) == Some(&b'\n') => i += 1,
            q @ (b'"' | b'\'') => {
                line_start = false;
                let triple = b.get(i..i + 3) == Some(&[q, q, q][..]);
                i += if triple { 3 } else { 1 };
                while i < b.len() {
                    if b[i] == b'\\' {
                        i += 2;
                    } else if triple && b.get(i..i + 3) == Some(&[q, q, q][..]) {
                        i += 2;
                        break;
                    } else if !triple && (b[i] == q || b[i] == b'\n') {
                        break;
                    } else {
                        i += 1;
                    }
                }
            }
            c => {
                line_start = false;
                match c {
                    b'(' | b'[' | b'{' => depth += 1,
                    b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
        i += 1;
    }
    // Only ASCII tabs were replaced, so the bytes are still UTF-8.
    Ok(Cow::Owned(String::from_utf8(out).unwrap_or_default()))
}

/// Refuses bracket nesting or unary-operator runs deeper than [`MAX_NESTING`], outside
/// strings and comments.
fn check_nesting(source: &str) -> Result<(), ModuleFileError> {
    let bytes = source.as_bytes();
    let (mut depth, mut unary, mut i) = (0usize, 0usize, 0usize);
    let too_deep = |what: &str| {
        Err(ModuleFileError::TooComplex(format!(
            "{what} nested deeper than {MAX_NESTING} levels"
        )))
    };
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                let triple = bytes.get(i..i + 3) == Some(&[b, b, b][..]);
                i += if triple { 3 } else { 1 };
                while i < bytes.len() {
                    if bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if triple {
                        if bytes.get(i..i + 3) == Some(&[b, b, b][..]) {
                            i += 3;
                            break;
                        }
                    } else if bytes[i] == b || bytes[i] == b'\n' {
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                unary = 0;
                continue;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return too_deep("brackets");
                }
                unary = 0;
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                unary = 0;
            }
            b'-' | b'+' | b'~' => {
                unary += 1;
                if unary > MAX_NESTING {
                    return too_deep("unary operators");
                }
            }
            b if b.is_ascii_whitespace() => {}
            b'n' if bytes.get(i..i + 4) == Some(b"not ") => {
                unary += 1;
                if unary > MAX_NESTING {
                    return too_deep("`not` operators");
                }
                i += 3;
            }
            _ => unary = 0,
        }
        i += 1;
    }
    Ok(())
}

fn parse_here(source: &str) -> Result<ModuleFile, ModuleFileError> {
    let ast =
        AstModule::parse("MODULE.bazel", source.to_owned(), &Dialect::Standard).map_err(|e| {
            ModuleFileError::Syntax(e.to_string().lines().next().unwrap_or_default().to_owned())
        })?;
    let mut out = ModuleFile::default();
    let mut env: HashMap<String, Val> = HashMap::new();
    for stmt in top_level_stmts(ast.statement()) {
        let expr = match &stmt.node {
            StmtP::Expression(expr) => expr,
            StmtP::Assign(a) => {
                if let AssignTargetP::Identifier(id) = &a.lhs.node {
                    let v = eval(&a.rhs, &env);
                    env.insert(id.node.ident.clone(), v);
                }
                continue;
            }
            StmtP::AssignModify(lhs, AssignOp::Add, rhs) => {
                if let AssignTargetP::Identifier(id) = &lhs.node {
                    let old = env.get(&id.node.ident).cloned().unwrap_or(Val::Unknown);
                    env.insert(id.node.ident.clone(), add(old, eval(rhs, &env)));
                }
                continue;
            }
            _ => continue,
        };
        let ExprP::Call(callee, args) = &expr.node else {
            continue;
        };
        let ExprP::Identifier(ident) = &callee.node else {
            continue;
        };
        let call: &'static str = match ident.node.ident.as_str() {
            "module" if out.has_module_call => return Err(ModuleFileError::DuplicateModuleCall),
            "module" => "module",
            "bazel_dep" => "bazel_dep",
            _ => continue,
        };
        let mut dep = BazelDep {
            name: String::new(),
            version: String::new(),
            dev_dependency: false,
        };
        for arg in &args.args {
            let ArgumentP::Named(key, value) = &arg.node else {
                continue;
            };
            let key = key.node.as_str();
            let v = Arg {
                call,
                key,
                val: eval(value, &env),
                undefined: matches!(&value.node, ExprP::Identifier(i) if !env.contains_key(&i.node.ident)),
            };
            if v.unknown() {
                out.unresolved.push(format!("{call}({key})"));
            }
            match (call, key) {
                ("module", "name") => out.name = v.string()?,
                ("module", "version") => out.version = v.string()?,
                ("module", "compatibility_level") => out.compatibility_level = v.int()?,
                ("module", "bazel_compatibility") => {
                    out.bazel_compatibility = v.strings()?.unwrap_or_default();
                }
                ("bazel_dep", "name") => dep.name = v.string()?.unwrap_or_default(),
                ("bazel_dep", "version") => dep.version = v.string()?.unwrap_or_default(),
                ("bazel_dep", "dev_dependency") => {
                    dep.dev_dependency = matches!(v.val, Val::Bool(true))
                }
                _ => {}
            }
        }
        if call == "module" {
            out.has_module_call = true;
        } else {
            out.deps.push(dep);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_module_and_deps() {
        let src = r#"
# A comment with module(name = "fake")
module(
    name = "app_toolkit",
    version = "1.0.0",
    compatibility_level = 1,
    bazel_compatibility = [">=7.2.1"],
)

bazel_dep(name = "hello_lib", version = "1.1.0.bcr.1")
bazel_dep(name = "rules_testing", version = "0.6.0", dev_dependency = True)
"#;
        let m = parse(src).unwrap();
        assert_eq!(m.name.as_deref(), Some("app_toolkit"));
        assert_eq!(m.version.as_deref(), Some("1.0.0"));
        assert_eq!(m.compatibility_level, Some(1));
        assert_eq!(m.bazel_compatibility, [">=7.2.1"]);
        assert_eq!(m.deps.len(), 2);
        assert_eq!(m.deps[0].name, "hello_lib");
        assert!(m.deps[1].dev_dependency);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            parse("module(name = \"x\""),
            Err(ModuleFileError::Syntax(_))
        ));
        assert!(matches!(
            parse("module(name = NAME)"),
            Err(ModuleFileError::NotLiteral { .. })
        ));
        assert_eq!(
            parse("module()\nmodule()"),
            Err(ModuleFileError::DuplicateModuleCall)
        );
        let empty = parse("").unwrap();
        assert!(!empty.has_module_call);
    }

    /// What Bazel accepts and the BCR has: variables, `.format`, `+=`, tabs inside brackets.
    #[test]
    fn evaluates_what_bazel_evaluates() {
        let src = "V = \"1.0\"\nDEPS = [\"a\"]\nDEPS += [\"b\"]\n\
                   module(\n\tname = \"m\",\n\tversion = V,\n\tbazel_compatibility = [\">=\" + \"7.2.1\"],\n)\n\
                   bazel_dep(name = \"p\", version = \"{v}.{0}\".format(3, v = V), dev_dependency = True)\n\
                   bazel_dep(name = \"q\", version = \"x\t\ty\")\n\
                   bazel_dep(name = \"r\", version = \"1.0\" if True else \"2.0\")\n";
        let m = parse(src).unwrap();
        assert_eq!(
            (m.name.as_deref(), m.version.as_deref()),
            (Some("m"), Some("1.0"))
        );
        assert_eq!(m.bazel_compatibility, [">=7.2.1"]);
        assert_eq!(m.deps[0].version, "1.0.3");
        assert!(m.deps[0].dev_dependency);
        // A tab inside a string literal is the string's own.
        assert_eq!(m.deps[1].version, "x\t\ty");
        // Not evaluated here: listed, not refused.
        assert_eq!(m.deps[2].version, "");
        assert_eq!(m.unresolved, ["bazel_dep(version)"]);
        // What Bazel refuses: a tab indenting a statement, an undefined name, a wrong type.
        assert!(matches!(
            parse("module(name = \"m\")\n\tx = 1\n"),
            Err(ModuleFileError::Syntax(e)) if e.contains("line 2: tab")
        ));
        assert!(matches!(
            parse("module(name = \"m\", version = UNDEFINED)"),
            Err(ModuleFileError::NotLiteral { .. })
        ));
        assert!(matches!(
            parse("bazel_dep(name = \"p\", version = 1)"),
            Err(ModuleFileError::NotLiteral { .. })
        ));
        assert_eq!(
            parse("module(compatibility_level = -1)")
                .unwrap()
                .compatibility_level,
            Some(-1)
        );
        for big in ["1 << 40", "3000000000", "99999999999999999999999"] {
            let src = format!("module(compatibility_level = {big})");
            let r = parse(&src);
            // `<<` is not evaluated here (unresolved); the literals are out of range.
            assert!(big.contains("<<") || r.is_err(), "{src}: {r:?}");
        }
    }
}
