//! `MODULE.bazel` parsing for the server: [`bzlmod::module_file`] on a thread of its own.
//!
//! The pure crate starts no threads; this wrapper gives its parser the stack it needs, so a
//! hostile `MODULE.bazel` in a request or a registry tree never overflows a worker's stack.

pub use bzlmod::module_file::{
    BazelDep, MAX_BYTES, MAX_NESTING, ModuleFile, ModuleFileError, PARSE_STACK, ParseFn,
    check_limits,
};

/// Parses `MODULE.bazel` source.
///
/// # Errors
/// [`ModuleFileError`] for syntax errors and non-literal arguments the registry needs.
pub fn parse(source: &str) -> Result<ModuleFile, ModuleFileError> {
    check_limits(source)?;
    // On a thread with a large stack (reserved, touched only as deep as the parse goes): the
    // parser's recursion is bounded by the checks above, not by the caller's stack.
    let owned = source.to_owned();
    match crate::tasks::run_with_stack("module-file-parse", PARSE_STACK, move || {
        bzlmod::module_file::parse(&owned)
    }) {
        Ok(parsed) => parsed,
        Err(crate::tasks::ThreadError::Start(e)) => Err(ModuleFileError::TooComplex(format!(
            "cannot start the parser: {e}"
        ))),
        Err(crate::tasks::ThreadError::Panicked) => Err(ModuleFileError::Syntax(
            "the parser failed on this input".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression for the stack overflow `fuzz/` found: deep nesting is refused, never a crash.
    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        for src in [
            format!("x = {}", "(".repeat(6000)),
            format!("x = {}1", "-".repeat(7000)),
            format!("x = {}1", "not ".repeat(7000)),
            format!("x = {}", "[".repeat(1500)),
            include_str!("../../fuzz/regressions/module_file-deep-nesting").to_owned(),
        ] {
            assert!(
                matches!(parse(&src), Err(ModuleFileError::TooComplex(_))),
                "{}",
                &src[..20]
            );
        }
        // Long flat chains stay within the parser thread's stack.
        let chain = format!("x = {}1\nmodule(name = \"a\")\n", "1+".repeat(200_000));
        assert!(parse(&chain).is_ok());
        // Brackets in strings and comments do not count.
        let quoted = format!(
            "# {}\nmodule(name = \"{}\")\n",
            "(".repeat(500),
            "[".repeat(500)
        );
        assert_eq!(
            parse(&quoted).unwrap().name.as_deref(),
            Some(&*"[".repeat(500))
        );
        assert!(parse(&"x".repeat(MAX_BYTES + 1)).is_err());
    }
}
