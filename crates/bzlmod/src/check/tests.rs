//! Rules on BCR-shaped trees: what Bazel accepts is at most a warning, what breaks it an error.

use std::collections::BTreeMap;
use std::convert::Infallible;

use super::{Entry, EntryKind, Files, Report, Severity, check_registry, rules};
use crate::integrity::Integrity;
use crate::module_file::parse;

/// An in-memory tree: file paths to bytes; folders are implied.
#[derive(Default)]
struct Mem(BTreeMap<String, Vec<u8>>);

impl Files for Mem {
    type Error = Infallible;

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.0.get(path).cloned())
    }

    fn list(&self, path: &str) -> Result<Option<Vec<Entry>>, Infallible> {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut out: BTreeMap<String, EntryKind> = BTreeMap::new();
        for key in self.0.keys() {
            if let Some(rest) = key.strip_prefix(&prefix) {
                match rest.split_once('/') {
                    Some((dir, _)) => out.insert(dir.to_owned(), EntryKind::Dir),
                    None => out.insert(rest.to_owned(), EntryKind::File),
                };
            }
        }
        Ok((!out.is_empty()).then(|| {
            out.into_iter()
                .map(|(name, kind)| Entry { name, kind })
                .collect()
        }))
    }
}

const PATCH: &[u8] = b"--- a/x\n+++ b/x\n";

fn sri(bytes: &[u8]) -> String {
    Integrity::of(crate::integrity::Algorithm::Sha256, bytes).to_string()
}

impl Mem {
    fn put(&mut self, path: &str, bytes: impl AsRef<[u8]>) -> &mut Self {
        self.0.insert(path.to_owned(), bytes.as_ref().to_vec());
        self
    }

    /// A well-formed module `m` with the given versions, each an archive with one patch.
    fn module(&mut self, m: &str, versions: &[&str]) -> &mut Self {
        let list: Vec<String> = versions.iter().map(|v| format!("\"{v}\"")).collect();
        self.put(
            &format!("modules/{m}/metadata.json"),
            format!(
                "{{\"versions\": [{}], \"yanked_versions\": {{}}}}",
                list.join(", ")
            ),
        );
        for v in versions {
            let dir = format!("modules/{m}/{v}");
            self.put(
                &format!("{dir}/MODULE.bazel"),
                format!("module(name = \"{m}\", version = \"{v}\")\n"),
            );
            self.put(&format!("{dir}/patches/fix.patch"), PATCH);
            self.put(
                &format!("{dir}/source.json"),
                source_json(&format!("\"fix.patch\": \"{}\"", sri(PATCH)), "1"),
            );
        }
        self
    }

    fn check(&self) -> Report {
        check_registry(self, parse).unwrap_or_else(|e| match e {})
    }
}

fn source_json(patches: &str, strip: &str) -> String {
    format!(
        "{{\"url\": \"https://example.com/a.tar.gz\", \"integrity\": \"{}\", \"patches\": {{{patches}}}, \"patch_strip\": {strip}}}",
        sri(b"archive")
    )
}

/// `(severity, rule id, path)` of every finding.
fn findings(r: &Report) -> Vec<(Severity, &'static str, String)> {
    r.problems
        .iter()
        .map(|p| (p.severity(), p.rule.id, p.path.clone()))
        .collect()
}

fn errors(r: &Report) -> Vec<String> {
    r.problems
        .iter()
        .filter(|p| p.severity() == Severity::Error)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_clean_tree_has_no_findings() {
    let r = Mem::default().module("zlib", &["1.3", "1.3.1"]).check();
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    assert_eq!((r.modules, r.versions), (1, 2));
}

#[test]
fn variables_as_versions_are_accepted() {
    let mut t = Mem::default();
    t.module("app", &["1.0"]).put(
        "modules/app/1.0/MODULE.bazel",
        "PROTOBUF_VERSION = \"21.7\"\nJAVA = \"3.{}\".format(PROTOBUF_VERSION)\nV = \"1\" + \".0\"\n\
         module(name = \"app\", version = V)\n\
         bazel_dep(name = \"protobuf\", version = PROTOBUF_VERSION)\n\
         bazel_dep(name = \"protobuf_java\", version = JAVA)\n\
         bazel_dep(name = \"x\", version = use_version())\n",
    );
    let r = t.check();
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    let m = parse(std::str::from_utf8(&t.0["modules/app/1.0/MODULE.bazel"]).unwrap()).unwrap();
    assert_eq!(m.deps[0].version, "21.7");
    assert_eq!(m.deps[1].version, "3.21.7");
    assert_eq!(m.unresolved, ["bazel_dep(version)"]);
}

#[test]
fn tabs_bazel_accepts_are_accepted_and_indentation_tabs_are_errors() {
    let mut t = Mem::default();
    t.module("bazelpods", &["1.11.9"]).put(
        "modules/bazelpods/1.11.9/MODULE.bazel",
        "module(\n\tname = \"bazelpods\", \n\tversion = \"1.11.9\",\n)\nx = [\n\t\"a\\tb\",\t# c\t\n]\n",
    );
    assert!(t.check().problems.is_empty(), "{:#?}", t.check().problems);
    t.put(
        "modules/bazelpods/1.11.9/MODULE.bazel",
        "module(name = \"bazelpods\", version = \"1.11.9\")\n\tbazel_dep(name = \"a\", version = \"1\")\n",
    );
    let r = t.check();
    assert_eq!(
        findings(&r),
        [(
            Severity::Error,
            rules::MODULE_INVALID.id,
            "modules/bazelpods/1.11.9/MODULE.bazel".to_owned()
        )]
    );
    assert!(
        r.problems[0].message.contains("line 2: tab"),
        "{}",
        r.problems[0]
    );
}

#[test]
fn patch_strip_as_a_string_is_a_warning() {
    let mut t = Mem::default();
    let patches = format!("\"fix.patch\": \"{}\"", sri(PATCH));
    t.module("cairo", &["1.18.4"]).put(
        "modules/cairo/1.18.4/source.json",
        source_json(&patches, "\"1\""),
    );
    let r = t.check();
    assert_eq!(
        findings(&r),
        [(
            Severity::Warning,
            "patch-strip-string",
            "modules/cairo/1.18.4/source.json".to_owned()
        )]
    );
    t.put(
        "modules/cairo/1.18.4/source.json",
        source_json(&patches, "\"one\""),
    );
    assert_eq!(findings(&t.check())[0].0, Severity::Error);
    t.put(
        "modules/cairo/1.18.4/source.json",
        source_json(&patches, "-1"),
    );
    assert_eq!(findings(&t.check())[0].0, Severity::Error);
}

#[test]
fn patches_of_another_version_are_a_warning_when_they_exist_and_match() {
    let mut t = Mem::default();
    let reuse = format!("\"../../1.62.1/patches/fix.patch\": \"{}\"", sri(PATCH));
    t.module("grpc", &["1.62.1", "1.62.1.bcr.1"]).put(
        "modules/grpc/1.62.1.bcr.1/source.json",
        source_json(&reuse, "1"),
    );
    t.0.remove("modules/grpc/1.62.1.bcr.1/patches/fix.patch");
    let r = t.check();
    assert_eq!(
        findings(&r),
        [(
            Severity::Warning,
            "patch-path-irregular",
            "modules/grpc/1.62.1.bcr.1/source.json".to_owned()
        )]
    );
    // Missing there, or another hash: Bazel fails.
    let wrong = format!("\"../../1.62.1/patches/fix.patch\": \"{}\"", sri(b"other"));
    t.put(
        "modules/grpc/1.62.1.bcr.1/source.json",
        source_json(&wrong, "1"),
    );
    assert_eq!(errors(&t.check()).len(), 1, "{:#?}", t.check().problems);
    let gone = format!("\"../../1.0/patches/fix.patch\": \"{}\"", sri(PATCH));
    t.put(
        "modules/grpc/1.62.1.bcr.1/source.json",
        source_json(&gone, "1"),
    );
    assert!(errors(&t.check())[0].contains("modules/grpc/1.0/patches/fix.patch: error: listed"));
    // Above the registry root: an error.
    let out = format!("\"../../../../../../x.patch\": \"{}\"", sri(PATCH));
    t.put(
        "modules/grpc/1.62.1.bcr.1/source.json",
        source_json(&out, "1"),
    );
    assert!(
        errors(&t.check())[0].contains("leaves the registry"),
        "{:#?}",
        t.check().problems
    );
}

#[test]
fn stray_files_are_warnings() {
    let mut t = Mem::default();
    t.module("boost", &["1.83.0"])
        .put("modules/.keep", "")
        .put("modules/boost/README.md", "# boost")
        .put("modules/boost/scripts/repin.py", "")
        .put("modules/boost/1.83.0/MODULE.bazel.orig", "")
        .put("modules/boost/1.83.0/patches/unused.patch", "");
    let r = t.check();
    assert!(errors(&r).is_empty(), "{:#?}", r.problems);
    let rules: Vec<&str> = r.problems.iter().map(|p| p.rule.id).collect();
    assert_eq!(
        rules,
        [
            "stray-file",
            "stray-file",
            "stray-file",
            "stray-file",
            "unlisted-file"
        ],
        "{:#?}",
        r.problems
    );
}

#[test]
fn metadata_irregularities_bazel_ignores_are_warnings() {
    let mut t = Mem::default();
    t.module("rules_squashfs", &["1.0.0", "1.1.0"]).put(
        "modules/rules_squashfs/metadata.json",
        r#"{"versions": ["1.1.0", "1.1.0"], "yanked_versions": {"0.1.0": "old", "1.0.0+b1": 3}, "homepage": 1}"#,
    );
    let r = t.check();
    assert!(errors(&r).is_empty(), "{:#?}", r.problems);
    assert!(r.problems.len() >= 5, "{:#?}", r.problems);
    // Bazel does parse the yanked keys, and fails on one that is not a version.
    t.put(
        "modules/rules_squashfs/metadata.json",
        r#"{"versions": ["1.0.0", "1.1.0"], "yanked_versions": {"1..0": "x"}}"#,
    );
    let r = t.check();
    assert_eq!(errors(&r).len(), 1, "{:#?}", r.problems);
    assert_eq!(r.problems[0].rule, rules::YANKED_KEY);
}

#[test]
fn real_errors_stay_errors() {
    let base = || {
        let mut t = Mem::default();
        t.module("zlib", &["1.3"]);
        t
    };
    let sj = "modules/zlib/1.3/source.json";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            sj,
            r#"{"integrity": "sha256-AAAA"}"#.to_owned(),
            "`url` is missing",
        ),
        (
            sj,
            r#"{"url": "https://e.com/a.tgz", "integrity": "sha256-AAAA"}"#.to_owned(),
            "3-byte digest",
        ),
        (
            sj,
            r#"{"url": "https://e.com/a.tgz"}"#.to_owned(),
            "`integrity` is missing",
        ),
        (sj, r#"{"type": "svn"}"#.to_owned(), "unknown `type`"),
        (
            "modules/zlib/1.3/MODULE.bazel",
            "module(name = \"zlib2\", version = \"1.3\")".to_owned(),
            "does not match the folder name \"zlib\"",
        ),
        (
            "modules/zlib/1.3/MODULE.bazel",
            "module(name = \"zlib\", version = \"1.3.0\")".to_owned(),
            "does not match the folder name \"1.3\"",
        ),
        (
            "modules/zlib/1.3/MODULE.bazel",
            "bazel_dep(name = \"a\", version = \"1\")".to_owned(),
            "no module() call",
        ),
        (
            "modules/zlib/1.3/MODULE.bazel",
            "module(name = \"zlib\", version = VERSION)".to_owned(),
            "assigned before it",
        ),
        (
            "modules/zlib/1.3/MODULE.bazel",
            "module(name = \"zlib\", version = 13)".to_owned(),
            "must be a string",
        ),
        (
            "modules/zlib/1.3/MODULE.bazel",
            "module(name = \"zlib\"".to_owned(),
            "not valid Starlark",
        ),
        (
            "modules/zlib/1.3/patches/fix.patch",
            "tampered".to_owned(),
            "integrity mismatch",
        ),
        (
            "modules/zlib/metadata.json",
            "[]".to_owned(),
            "not a JSON object",
        ),
        (
            "bazel_registry.json",
            r#"{"mirrors": ["not a url"]}"#.to_owned(),
            "Malformed mirror URL",
        ),
    ];
    for (file, text, what) in cases {
        let mut t = base();
        t.put(file, text);
        let errs = errors(&t.check());
        assert!(
            errs.iter()
                .any(|e| e.contains(": error: ") && e.contains(what)),
            "{file} ({what}): {errs:#?}"
        );
    }
    let mut t = base();
    t.0.remove("modules/zlib/1.3/source.json");
    assert!(errors(&t.check())[0].contains("source.json: error: missing"));
    let mut t = base();
    t.0.remove("modules/zlib/1.3/MODULE.bazel");
    assert!(errors(&t.check())[0].contains("MODULE.bazel: error: missing"));
    assert!(errors(&Mem::default().check())[0].starts_with("modules: error: missing"));
}
