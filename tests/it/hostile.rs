//! The hostile corpus: every case of `tests/hostile/*.toml` is sent byte for byte to the real
//! server binary (`gf-registry serve`, `RUST_LOG=debug`), and each answer is checked against
//! the class of answer the corpus expects.
//!
//! Corpus format (see `tests/hostile/README.md`): `setup.toml` describes the environment
//! (tokens, mirror policy, the upstream double's redirects, the config file); every other
//! `*.toml` holds `[[case]]` entries (one request each) and `[[family]]` entries (positions ×
//! payloads, expanded here; the expectations stay in the corpus). A case names its `class`,
//! `method`, raw `target`, optional `headers`, a `body` or a `body_gen` generator with
//! `body_args`, and `expect` (`"400"`, `"4xx"`, `"404|405"`, `"closed"`), with optional
//! `expect_body_contains` and `expect_not_contains`. `known_bug` marks a case the server gets
//! wrong today: it is reported, not failed on (only for the checks in `known_bug_checks`).
//!
//! Besides its own expectation, every case must: answer within 10 s, leave every file of the
//! sandbox (registry, data, TMPDIR of the server) as it was, echo no token, and keep the server
//! process alive. After all cases `/healthz` and `/readyz` answer 200, the registry, `cas/`
//! and `records/` hold the same bytes as before (apart from writes of known-bug cases), and
//! the server's stderr holds no token and no panic.
//!
//! Run with `cargo test --test it hostile -- --nocapture` to see the table of counts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::spawned;
use crate::support::{Answer, Spawned, Stderr, Upstream, copy_tree, example_registry, sha256_hex};

/// Bound on one request, from connect to the end of the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the whole run.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
/// The issue asks for at least this many cases.
const MIN_CASES: usize = 200;
/// Placeholders the runner fills in (anything else between braces is literal text).
const VARS: [&str; 6] = [
    "upstream",
    "upstream_port",
    "server",
    "server_port",
    "sandbox",
    "internal_name",
];

// ---------------------------------------------------------------------------------------------
// The corpus files
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupFile {
    /// The config file, apart from the `[[auth.tokens]]` blocks.
    config: String,
    /// Names that may resolve to an internal address through the system resolver (the first
    /// that does becomes `{internal_name}`); the machine's host name is tried too.
    #[serde(default)]
    internal_name_candidates: Vec<String>,
    /// Strings that must never appear in an answer or in the server's log.
    #[serde(default)]
    secrets: Vec<String>,
    token: Vec<TokenSpec>,
    upstream: Vec<UpstreamSpec>,
    #[serde(default)]
    redirect: Vec<RedirectSpec>,
    #[serde(default)]
    serve: Vec<ServeSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSpec {
    name: String,
    secret: String,
    scopes: Vec<String>,
    #[serde(default)]
    expires: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamSpec {
    prefix: String,
    #[serde(default)]
    allow_private: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedirectSpec {
    path: String,
    location: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeSpec {
    path: String,
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorpusFile {
    #[serde(default)]
    case: Vec<CaseSpec>,
    #[serde(default)]
    family: Vec<FamilySpec>,
}

/// One string or a list of strings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
enum Strings {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Strings {
    fn list(&self) -> Vec<String> {
        match self {
            Self::None => Vec::new(),
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    class: String,
    name: String,
    #[serde(default)]
    method: Option<String>,
    target: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_gen: Option<String>,
    #[serde(default)]
    body_args: BTreeMap<String, String>,
    #[serde(default)]
    half_close: bool,
    expect: String,
    #[serde(default)]
    expect_body_contains: Strings,
    #[serde(default)]
    expect_not_contains: Strings,
    #[serde(default)]
    known_bug: Option<String>,
    #[serde(default)]
    known_bug_checks: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FamilySpec {
    class: String,
    /// A template with `{position}` and `{payload}`.
    name: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_gen: Option<String>,
    #[serde(default)]
    body_args: BTreeMap<String, String>,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    expect_body_contains: Strings,
    #[serde(default)]
    expect_not_contains: Strings,
    positions: Vec<PositionSpec>,
    payloads: Vec<PayloadSpec>,
    #[serde(default)]
    overrides: Vec<OverrideSpec>,
}

/// Where a payload goes: a target template with `{p}`, and what the request carries there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionSpec {
    name: String,
    target: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_gen: Option<String>,
    #[serde(default)]
    body_args: BTreeMap<String, String>,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    expect_body_contains: Strings,
}

/// What goes into the position: `value` replaces `{p}` everywhere; `headers` are added.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayloadSpec {
    name: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    expect_body_contains: Strings,
    #[serde(default)]
    expect_not_contains: Strings,
}

/// An exception for one position × payload pair (`*` matches every name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideSpec {
    position: String,
    payload: String,
    #[serde(default)]
    expect: Option<String>,
    /// Replaces the combined `expect_body_contains` when given.
    #[serde(default)]
    expect_body_contains: Option<Strings>,
    #[serde(default)]
    known_bug: Option<String>,
    #[serde(default)]
    known_bug_checks: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Resolved cases
// ---------------------------------------------------------------------------------------------

/// One alternative of an expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Status(u16),
    /// `4xx`: the hundreds digit.
    Class(u16),
    /// The server closes the connection without an answer.
    Closed,
}

#[derive(Debug, Clone)]
struct Expect {
    text: String,
    alternatives: Vec<Want>,
}

impl Expect {
    fn parse(text: &str) -> Result<Self, String> {
        let mut alternatives = Vec::new();
        for alt in text.split('|').map(str::trim) {
            let want = if alt == "closed" {
                Want::Closed
            } else if let Some(d) = alt.strip_suffix("xx") {
                Want::Class(d.parse().map_err(|_| format!("bad class `{alt}`"))?)
            } else {
                Want::Status(alt.parse().map_err(|_| format!("bad status `{alt}`"))?)
            };
            // The issue: no hostile request may get a 5xx (or a 2xx/3xx).
            match want {
                Want::Status(s) if !(400..500).contains(&s) => {
                    return Err(format!("`{alt}`: only 4xx answers may be expected"));
                }
                Want::Class(c) if c != 4 => {
                    return Err(format!("`{alt}`: only 4xx answers may be expected"));
                }
                _ => {}
            }
            alternatives.push(want);
        }
        Ok(Self {
            text: text.to_owned(),
            alternatives,
        })
    }

    fn allows(&self, status: Option<u16>) -> bool {
        self.alternatives.iter().any(|w| match (w, status) {
            (Want::Status(s), Some(got)) => *s == got,
            (Want::Class(c), Some(got)) => got / 100 == *c,
            (Want::Closed, None) => true,
            _ => false,
        })
    }
}

/// The checks a case goes through; `known_bug_checks` names those a known bug may fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    Status,
    Body,
    NotContains,
    Leak,
    Writes,
    Timeout,
    Alive,
}

impl Check {
    const ALL: [Self; 7] = [
        Self::Status,
        Self::Body,
        Self::NotContains,
        Self::Leak,
        Self::Writes,
        Self::Timeout,
        Self::Alive,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Body => "body",
            Self::NotContains => "not_contains",
            Self::Leak => "leak",
            Self::Writes => "writes",
            Self::Timeout => "timeout",
            Self::Alive => "alive",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown check `{s}`"))
    }
}

#[derive(Debug, Clone)]
enum BodySource {
    None,
    Text(String),
    Gen {
        generator: String,
        args: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone)]
struct Case {
    file: String,
    class: String,
    name: String,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: BodySource,
    half_close: bool,
    expect: Expect,
    contains: Vec<String>,
    not_contains: Vec<String>,
    known_bug: Option<String>,
    known_bug_checks: Vec<Check>,
}

fn body_source(
    body: Option<String>,
    generator: Option<String>,
    args: BTreeMap<String, String>,
) -> Result<BodySource, String> {
    match (body, generator) {
        (Some(_), Some(_)) => Err("both body and body_gen".to_owned()),
        (Some(t), None) => Ok(BodySource::Text(t)),
        (None, Some(g)) => {
            if !GENERATORS.contains(&g.as_str()) {
                return Err(format!("unknown body_gen `{g}` (known: {GENERATORS:?})"));
            }
            Ok(BodySource::Gen { generator: g, args })
        }
        (None, None) if !args.is_empty() => Err("body_args without body_gen".to_owned()),
        (None, None) => Ok(BodySource::None),
    }
}

fn known_checks(bug: Option<&String>, checks: &[String], what: &str) -> Result<Vec<Check>, String> {
    if bug.is_none() && !checks.is_empty() {
        return Err(format!("{what}: known_bug_checks without known_bug"));
    }
    if checks.is_empty() {
        return Ok(Check::ALL.to_vec());
    }
    checks.iter().map(|c| Check::parse(c)).collect()
}

fn case_from_spec(file: &str, c: CaseSpec) -> Result<Case, String> {
    let what = format!("{file}: case `{}`", c.name);
    let err = |e: String| format!("{what}: {e}");
    let known_bug_checks = known_checks(c.known_bug.as_ref(), &c.known_bug_checks, &what)?;
    Ok(Case {
        file: file.to_owned(),
        class: c.class,
        method: c.method.unwrap_or_else(|| "GET".to_owned()),
        target: c.target,
        headers: c.headers,
        body: body_source(c.body, c.body_gen, c.body_args).map_err(err)?,
        half_close: c.half_close,
        expect: Expect::parse(&c.expect).map_err(err)?,
        contains: c.expect_body_contains.list(),
        not_contains: c.expect_not_contains.list(),
        known_bug: c.known_bug,
        known_bug_checks,
        name: c.name,
    })
}

fn matches_name(pattern: &str, name: &str) -> bool {
    pattern == "*" || pattern == name
}

fn expand_family(file: &str, f: FamilySpec) -> Result<Vec<Case>, String> {
    let mut out = Vec::new();
    let mut used = vec![false; f.overrides.len()];
    for pos in &f.positions {
        for pay in &f.payloads {
            let name = f
                .name
                .replace("{position}", &pos.name)
                .replace("{payload}", &pay.name);
            let what = format!("{file}: family case `{name}`");
            let p = |s: &str| s.replace("{p}", &pay.value);
            let overrides: Vec<(usize, &OverrideSpec)> = f
                .overrides
                .iter()
                .enumerate()
                .filter(|(_, o)| {
                    matches_name(&o.position, &pos.name) && matches_name(&o.payload, &pay.name)
                })
                .collect();
            // Every matching override applies, in file order; a later one wins per field.
            let mut ov = OverrideSpec {
                position: String::new(),
                payload: String::new(),
                expect: None,
                expect_body_contains: None,
                known_bug: None,
                known_bug_checks: Vec::new(),
            };
            for (i, o) in overrides {
                used[i] = true;
                if o.expect.is_some() {
                    ov.expect.clone_from(&o.expect);
                }
                if o.expect_body_contains.is_some() {
                    ov.expect_body_contains.clone_from(&o.expect_body_contains);
                }
                if o.known_bug.is_some() {
                    ov.known_bug.clone_from(&o.known_bug);
                    ov.known_bug_checks.clone_from(&o.known_bug_checks);
                }
            }
            let expect = ov
                .expect
                .clone()
                .or_else(|| pay.expect.clone())
                .or_else(|| pos.expect.clone())
                .or_else(|| f.expect.clone())
                .ok_or_else(|| format!("{what}: no expect"))?;
            let mut contains = match &ov.expect_body_contains {
                Some(c) => c.list(),
                None => [
                    f.expect_body_contains.list(),
                    pos.expect_body_contains.list(),
                    pay.expect_body_contains.list(),
                ]
                .concat(),
            };
            let mut seen = BTreeSet::new();
            contains.retain(|c| seen.insert(c.clone()));
            let mut headers: Vec<(String, String)> = f
                .headers
                .iter()
                .chain(&pos.headers)
                .chain(&pay.headers)
                .map(|(k, v)| (k.clone(), p(v)))
                .collect();
            headers.dedup();
            let (body, generator, args) = if pos.body.is_some() || pos.body_gen.is_some() {
                (&pos.body, &pos.body_gen, &pos.body_args)
            } else {
                (&f.body, &f.body_gen, &f.body_args)
            };
            let known_bug = ov.known_bug.clone();
            let checks = ov.known_bug_checks.clone();
            out.push(Case {
                file: file.to_owned(),
                class: f.class.clone(),
                method: pos
                    .method
                    .clone()
                    .or_else(|| f.method.clone())
                    .unwrap_or_else(|| "GET".to_owned()),
                target: p(&pos.target),
                headers,
                body: body_source(
                    body.as_deref().map(p),
                    generator.clone(),
                    args.iter().map(|(k, v)| (k.clone(), p(v))).collect(),
                )
                .map_err(|e| format!("{what}: {e}"))?,
                half_close: false,
                expect: Expect::parse(&expect).map_err(|e| format!("{what}: {e}"))?,
                contains,
                not_contains: [f.expect_not_contains.list(), pay.expect_not_contains.list()]
                    .concat(),
                known_bug_checks: known_checks(known_bug.as_ref(), &checks, &what)?,
                known_bug,
                name,
            });
        }
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(format!(
            "{file}: family `{}`: override #{} matches no case",
            f.name,
            i + 1
        ));
    }
    Ok(out)
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

fn load_corpus() -> (SetupFile, Vec<Case>) {
    let dir = corpus_dir();
    let read =
        |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let setup: SetupFile = toml::from_str(&read(&dir.join("setup.toml")))
        .unwrap_or_else(|e| panic!("tests/hostile/setup.toml: {e}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/hostile")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && p.file_name().is_some_and(|n| n != "setup.toml")
        })
        .collect();
    files.sort();
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for path in &files {
        let file = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let parsed: CorpusFile = match toml::from_str(&read(path)) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{file}: {e}"));
                continue;
            }
        };
        for c in parsed.case {
            match case_from_spec(&file, c) {
                Ok(c) => cases.push(c),
                Err(e) => problems.push(e),
            }
        }
        for f in parsed.family {
            match expand_family(&file, f) {
                Ok(mut v) => cases.append(&mut v),
                Err(e) => problems.push(e),
            }
        }
    }
    let mut seen = BTreeSet::new();
    for c in &cases {
        if !seen.insert((c.class.clone(), c.name.clone())) {
            problems.push(format!(
                "{}: duplicate case `{}/{}`",
                c.file, c.class, c.name
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the corpus is malformed:\n  {}",
        problems.join("\n  ")
    );
    assert!(
        cases.len() >= MIN_CASES,
        "the corpus has {} cases; at least {MIN_CASES} are required",
        cases.len()
    );
    (setup, cases)
}

// ---------------------------------------------------------------------------------------------
// Placeholders
// ---------------------------------------------------------------------------------------------

/// Values of the placeholders; a missing optional one (`internal_name`) skips the case.
#[derive(Debug, Default)]
struct Vars(BTreeMap<&'static str, String>);

impl Vars {
    /// Expands `{var}`, `{n}`, `{b64:TEXT}` and `{repeat:COUNT:TEXT}`; other braces stay.
    /// `Err(var)` when a placeholder has no value here.
    fn expand(&self, s: &str, n: usize) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(j) = after.find('}')
                && let Some(value) = self.lookup(&after[..j], n)?
            {
                out.push_str(&value);
                rest = &after[j + 1..];
            } else {
                out.push('{');
                rest = after;
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, key: &str, n: usize) -> Result<Option<String>, String> {
        if key == "n" {
            return Ok(Some(n.to_string()));
        }
        if let Some(text) = key.strip_prefix("b64:") {
            return Ok(Some(b64(self.expand(text, n)?.as_bytes())));
        }
        if let Some(spec) = key.strip_prefix("repeat:")
            && let Some((count, text)) = spec.split_once(':')
            && let Ok(count) = count.parse::<usize>()
        {
            return Ok(Some(text.repeat(count)));
        }
        if VARS.contains(&key) {
            return match self.0.get(key) {
                Some(v) => Ok(Some(v.clone())),
                None => Err(key.to_owned()),
            };
        }
        Ok(None)
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// Body generators
// ---------------------------------------------------------------------------------------------

const GENERATORS: [&str; 3] = ["publish_upload", "publish_url", "repeat"];

/// What an archive generator needs.
struct ArchCtx<'a> {
    /// `{name}-{version}`: the archive's root folder.
    prefix: &'a str,
    module_bazel: &'a str,
    sandbox: &'a Path,
}

fn arg<'a>(args: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    args.get(key).map(String::as_str)
}

/// Name and version of `/api/v1/modules/{name}/{version}[...]`.
fn coordinates(target: &str) -> (String, String) {
    let path = target.split('?').next().unwrap_or_default();
    let mut parts = path
        .strip_prefix("/api/v1/modules/")
        .unwrap_or_default()
        .split('/');
    let name = parts.next().unwrap_or("hostile").to_owned();
    let version = parts.next().unwrap_or("1.0.0").to_owned();
    (name, version)
}

fn metadata_json() -> Value {
    json!({
        "homepage": "https://example.com/hostile",
        "maintainers": [{"name": "Hostile Corpus", "email": "hostile@example.com"}],
        "repository": ["github:example/hostile"],
    })
}

/// Merges `extra_json` (an object) into `body`.
fn merge_extra(body: &mut Value, args: &BTreeMap<String, String>) -> Result<(), String> {
    if let Some(extra) = arg(args, "extra_json") {
        let extra: Value =
            serde_json::from_str(extra).map_err(|e| format!("extra_json: {e}: {extra}"))?;
        let (Value::Object(b), Value::Object(e)) = (body, extra) else {
            return Err("extra_json must be an object".to_owned());
        };
        for (k, v) in e {
            b.insert(k, v);
        }
    }
    Ok(())
}

fn generate(
    generator: &str,
    args: &BTreeMap<String, String>,
    target: &str,
    sandbox: &Path,
    cache: &mut BTreeMap<(String, String, String), (Vec<u8>, &'static str)>,
) -> Result<Vec<u8>, String> {
    let (t_name, t_version) = coordinates(target);
    let name = arg(args, "name").map_or(t_name, str::to_owned);
    let version = arg(args, "version").map_or(t_version, str::to_owned);
    let prefix = format!("{name}-{version}");
    let module_bazel = arg(args, "module_bazel").map_or_else(
        || format!("module(\n    name = \"{name}\",\n    version = \"{version}\",\n)\n"),
        str::to_owned,
    );
    let strip_prefix = arg(args, "strip_prefix").map_or_else(|| prefix.clone(), str::to_owned);
    match generator {
        "publish_upload" => {
            let kind = arg(args, "archive").unwrap_or("good").to_owned();
            let key = (kind.clone(), prefix.clone(), module_bazel.clone());
            if !cache.contains_key(&key) {
                let built = archive(
                    &kind,
                    &ArchCtx {
                        prefix: &prefix,
                        module_bazel: &module_bazel,
                        sandbox,
                    },
                )?;
                cache.insert(key.clone(), built);
            }
            let (bytes, suffix) = &cache[&key];
            let file_name =
                arg(args, "file_name").map_or_else(|| format!("{prefix}{suffix}"), str::to_owned);
            let content = arg(args, "content_base64").map_or_else(|| b64(bytes), str::to_owned);
            let mut body = json!({
                "module_bazel": module_bazel,
                "source": {"type": "upload", "file_name": file_name, "content_base64": content},
                "strip_prefix": strip_prefix,
                "metadata": metadata_json(),
            });
            if let Some(t) = arg(args, "archive_type") {
                body["archive_type"] = json!(t);
            }
            merge_extra(&mut body, args)?;
            serde_json::to_vec(&body).map_err(|e| e.to_string())
        }
        "publish_url" => {
            let url = arg(args, "url").ok_or("publish_url needs body_args.url")?;
            let mut source = json!({"type": "archive", "url": url});
            if let Some(i) = arg(args, "integrity") {
                source["integrity"] = json!(i);
            }
            let mut body = json!({
                "module_bazel": module_bazel,
                "source": source,
                "strip_prefix": strip_prefix,
                "metadata": metadata_json(),
            });
            if let Some(t) = arg(args, "archive_type") {
                body["archive_type"] = json!(t);
            }
            merge_extra(&mut body, args)?;
            serde_json::to_vec(&body).map_err(|e| e.to_string())
        }
        "repeat" => {
            let unit = arg(args, "unit").ok_or("repeat needs body_args.unit")?;
            let count: usize = arg(args, "count")
                .ok_or("repeat needs body_args.count")?
                .parse()
                .map_err(|e| format!("count: {e}"))?;
            let mut out = arg(args, "prefix").unwrap_or_default().as_bytes().to_vec();
            out.reserve(unit.len() * count);
            for _ in 0..count {
                out.extend_from_slice(unit.as_bytes());
            }
            out.extend_from_slice(arg(args, "suffix").unwrap_or_default().as_bytes());
            Ok(out)
        }
        other => Err(format!("unknown generator `{other}`")),
    }
}

// ---------------------------------------------------------------------------------------------
// Archives, written byte for byte (the `tar` and `zip` writers refuse most of these)
// ---------------------------------------------------------------------------------------------

/// One raw tar entry.
#[derive(Debug, Clone, Default)]
struct Ent {
    name: Vec<u8>,
    /// The type flag (`b'0'` file, `b'5'` dir, `b'2'` symlink, `b'1'` hardlink, ...).
    kind: u8,
    link: Vec<u8>,
    data: Vec<u8>,
    /// Declared size, when it must differ from `data.len()`.
    size: Option<u64>,
    pax: Vec<(String, Vec<u8>)>,
    device: Option<(u32, u32)>,
    bad_checksum: bool,
}

fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Ent {
    Ent {
        name: name.as_ref().to_vec(),
        kind: b'0',
        data: data.as_ref().to_vec(),
        ..Ent::default()
    }
}

fn dir(name: impl AsRef<[u8]>) -> Ent {
    Ent {
        name: name.as_ref().to_vec(),
        kind: b'5',
        ..Ent::default()
    }
}

fn link(kind: u8, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Ent {
    Ent {
        name: name.as_ref().to_vec(),
        kind,
        link: target.as_ref().to_vec(),
        ..Ent::default()
    }
}

fn special(kind: u8, name: &str) -> Ent {
    Ent {
        name: name.as_bytes().to_vec(),
        kind,
        device: Some((1, 3)),
        ..Ent::default()
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "LEN key=value\n", LEN counting itself.
    let base = key.len() + value.len() + 3;
    let mut len = base + base.to_string().len();
    if len.to_string().len() > base.to_string().len() {
        len += 1;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn put_field(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn push_entry(out: &mut Vec<u8>, name: &[u8], kind: u8, link: &[u8], e: &Ent, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    put_field(&mut h.as_old_mut().name, name);
    put_field(&mut h.as_old_mut().linkname, link);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(if kind == b'5' { 0o755 } else { 0o644 });
    h.set_size(e.size.unwrap_or(data.len() as u64));
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    if let Some((major, minor)) = e.device {
        h.set_device_major(major).expect("device major");
        h.set_device_minor(minor).expect("device minor");
    }
    h.set_cksum();
    if e.bad_checksum {
        h.as_old_mut().cksum = *b"0000000\0";
    }
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn raw_tar(entries: &[Ent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if !e.pax.is_empty() {
            let records: Vec<u8> = e.pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            push_entry(
                &mut out,
                b"././@PaxHeader",
                b'x',
                b"",
                &Ent::default(),
                &records,
            );
        }
        if e.name.len() > 99 {
            let mut long = e.name.clone();
            long.push(0);
            push_entry(
                &mut out,
                b"././@LongLink",
                b'L',
                b"",
                &Ent::default(),
                &long,
            );
        }
        if e.link.len() > 99 {
            let mut long = e.link.clone();
            long.push(0);
            push_entry(
                &mut out,
                b"././@LongLink",
                b'K',
                b"",
                &Ent::default(),
                &long,
            );
        }
        push_entry(&mut out, &e.name, e.kind, &e.link, e, &e.data);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

fn xz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 0);
    enc.write_all(bytes).expect("xz");
    enc.finish().expect("xz")
}

fn zst(bytes: &[u8]) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
    enc.write_all(bytes).expect("zstd");
    enc.finish().expect("zstd")
}

fn bz2(bytes: &[u8]) -> Vec<u8> {
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    enc.write_all(bytes).expect("bzip2");
    enc.finish().expect("bzip2")
}

/// Bytes a bomb unpacks to: past the 10 MiB grace, far past 200 times its packed size.
const BOMB_BYTES: u64 = 12 * 1024 * 1024;

/// A tar of the module files and `BOMB_BYTES` of zeros, streamed into `w`.
fn zero_bomb<W: std::io::Write>(w: W, a: &ArchCtx<'_>) -> W {
    let mut b = tar::Builder::new(w);
    let mut h = tar::Header::new_gnu();
    h.set_size(a.module_bazel.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(
        &mut h,
        format!("{}/MODULE.bazel", a.prefix),
        a.module_bazel.as_bytes(),
    )
    .expect("append");
    let mut h = tar::Header::new_gnu();
    h.set_size(BOMB_BYTES);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(
        &mut h,
        format!("{}/zeros.bin", a.prefix),
        std::io::repeat(0).take(BOMB_BYTES),
    )
    .expect("append");
    b.into_inner().expect("tar")
}

fn zip_of(entries: &[(&str, &[u8])], symlinks: &[(&str, &str)], zeros: Option<&str>) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1));
    for (name, data) in entries {
        w.start_file(*name, options).expect("zip file");
        w.write_all(data).expect("zip write");
    }
    for (name, target) in symlinks {
        w.add_symlink(*name, *target, options).expect("zip symlink");
    }
    if let Some(name) = zeros {
        w.start_file(name, options).expect("zip file");
        std::io::copy(&mut std::io::repeat(0).take(BOMB_BYTES), &mut w).expect("zip zeros");
    }
    w.finish().expect("zip").into_inner()
}

/// Replaces every occurrence of `from` by `to` (same length), to forge names writers refuse.
fn forge(mut bytes: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "forge {from} -> {to}");
    let mut hits = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from.as_bytes() {
            bytes[i..i + from.len()].copy_from_slice(to.as_bytes());
            hits += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(hits > 0, "forge: `{from}` not found");
    bytes
}

/// Builds the archive `kind` (named in the corpus) and its file-name suffix. Every archive
/// holds a correct `MODULE.bazel` under `{prefix}/`, so only its hostile part can refuse it.
fn archive(kind: &str, a: &ArchCtx<'_>) -> Result<(Vec<u8>, &'static str), String> {
    let p = a.prefix;
    let mb = a.module_bazel.as_bytes();
    let base = || {
        vec![
            dir(format!("{p}/")),
            file(format!("{p}/MODULE.bazel"), mb),
            file(format!("{p}/BUILD.bazel"), "# hostile corpus\n"),
        ]
    };
    let with = |extra: Vec<Ent>| {
        let mut all = base();
        all.extend(extra);
        raw_tar(&all)
    };
    let tgz = |extra: Vec<Ent>| (gz(&with(extra)), ".tar.gz");
    let half = |bytes: Vec<u8>| bytes[..bytes.len() / 2].to_vec();
    let escaped = |tag: &str| format!("gf-hostile-escaped-{tag}.txt");
    let sandbox = a.sandbox.display().to_string();
    Ok(match kind {
        "good" => tgz(vec![]),
        "with_inner_symlink" => tgz(vec![
            dir(format!("{p}/sub/")),
            link(b'2', format!("{p}/link"), "sub"),
        ]),
        "tar_dotdot" => tgz(vec![file(format!("{p}/../../{}", escaped("dotdot")), "x")]),
        "tar_dotdot_leading" => tgz(vec![file(format!("../{}", escaped("leading")), "x")]),
        "tar_dotdot_deep" => tgz(vec![file(
            format!("{p}/a/b/{}{}", "../".repeat(12), escaped("deep")),
            "x",
        )]),
        "tar_dot_dotdot" => tgz(vec![file(format!("./{p}/./../{}", escaped("dot")), "x")]),
        "tar_absolute" => tgz(vec![file(
            format!("{sandbox}/{}", escaped("absolute")),
            "x",
        )]),
        "tar_absolute_tmp" => tgz(vec![file(format!("/tmp/{}", escaped("abs-tmp")), "x")]),
        "tar_windows_drive" => tgz(vec![file(format!("C:/{}", escaped("drive")), "x")]),
        "tar_pax_dotdot" => tgz(vec![Ent {
            pax: vec![(
                "path".to_owned(),
                format!("../{}", escaped("pax")).into_bytes(),
            )],
            ..file(format!("{p}/innocent.txt"), "x")
        }]),
        "tar_pax_nul" => tgz(vec![Ent {
            pax: vec![("path".to_owned(), format!("{p}/a\0b.txt").into_bytes())],
            ..file(format!("{p}/innocent.txt"), "x")
        }]),
        "tar_gnu_longname_dotdot" => tgz(vec![file(
            format!(
                "{p}/{}/{}{}",
                "a".repeat(120),
                "../".repeat(4),
                escaped("long")
            ),
            "x",
        )]),
        "tar_non_utf8_name" => {
            let mut name = format!("{p}/").into_bytes();
            name.extend_from_slice(b"\xff\xfe.txt");
            tgz(vec![file(name, "x")])
        }
        "tar_long_component" => tgz(vec![file(format!("{p}/{}", "c".repeat(300)), "x")]),
        "tar_long_path" => tgz(vec![file(
            format!("{p}/{}x.txt", format!("{}/", "d".repeat(100)).repeat(45)),
            "x",
        )]),
        "tar_symlink_escape" => tgz(vec![link(b'2', format!("{p}/up"), "../../../../..")]),
        "tar_symlink_absolute" => tgz(vec![link(b'2', format!("{p}/passwd"), "/etc/passwd")]),
        "tar_symlink_chain" => tgz(vec![
            link(b'2', format!("{p}/a"), "b"),
            link(b'2', format!("{p}/b"), "../../.."),
        ]),
        "tar_symlink_loop" => tgz(vec![
            link(b'2', format!("{p}/a"), "b"),
            link(b'2', format!("{p}/b"), "a"),
        ]),
        "tar_symlink_then_write" => tgz(vec![
            dir(format!("{p}/sub/")),
            link(b'2', format!("{p}/d"), "sub"),
            file(format!("{p}/d/{}", escaped("through")), "x"),
        ]),
        "tar_symlink_escape_then_write" => tgz(vec![
            link(b'2', format!("{p}/d"), "../../.."),
            file(format!("{p}/d/{}", escaped("through-out")), "x"),
        ]),
        "tar_hardlink_absolute" => tgz(vec![link(b'1', format!("{p}/h"), "/etc/passwd")]),
        "tar_hardlink_dotdot" => tgz(vec![link(
            b'1',
            format!("{p}/h"),
            format!("../../{}", escaped("hardlink")),
        )]),
        "tar_hardlink_to_dir" => tgz(vec![
            dir(format!("{p}/sub/")),
            link(b'1', format!("{p}/h"), format!("{p}/sub")),
        ]),
        "tar_hardlink_forward" => tgz(vec![
            link(b'1', format!("{p}/h"), format!("{p}/later.txt")),
            file(format!("{p}/later.txt"), "x"),
        ]),
        "tar_hardlink_to_symlink" => tgz(vec![
            link(b'2', format!("{p}/s"), "BUILD.bazel"),
            link(b'1', format!("{p}/h"), format!("{p}/s")),
        ]),
        "tar_chardev" => tgz(vec![special(b'3', &format!("{p}/null"))]),
        "tar_blockdev" => tgz(vec![special(b'4', &format!("{p}/sda"))]),
        "tar_fifo" => tgz(vec![special(b'6', &format!("{p}/fifo"))]),
        "tar_sparse" => tgz(vec![Ent {
            kind: b'S',
            ..file(format!("{p}/sparse.bin"), "")
        }]),
        "tar_unknown_type" => tgz(vec![Ent {
            kind: b'Z',
            ..file(format!("{p}/odd"), "x")
        }]),
        "tar_duplicate" => tgz(vec![file(format!("{p}/BUILD.bazel"), "# again\n")]),
        "tar_dir_then_file" => tgz(vec![dir(format!("{p}/x/")), file(format!("{p}/x"), "x")]),
        "tar_file_then_child" => tgz(vec![
            file(format!("{p}/x"), "x"),
            file(format!("{p}/x/y"), "y"),
        ]),
        "tar_pax_huge" => tgz(vec![Ent {
            pax: vec![("comment".to_owned(), vec![b'a'; 1 << 20])],
            ..file(format!("{p}/innocent.txt"), "x")
        }]),
        "tar_bad_checksum" => tgz(vec![Ent {
            bad_checksum: true,
            ..file(format!("{p}/bad.txt"), "x")
        }]),
        "tar_truncated_data" => {
            let mut t = with(vec![Ent {
                size: Some(4096),
                ..file(format!("{p}/short.txt"), [b'x'; 100])
            }]);
            // Cut the end-of-archive blocks and the padding: the entry's data ends early.
            t.truncate(t.len() - 1024 - 412);
            (t, ".tar")
        }
        "tar_huge_declared_size" => {
            let mut t = with(vec![Ent {
                size: Some(0o77_777_777_777),
                ..file(format!("{p}/huge.bin"), [b'x'; 512])
            }]);
            t.truncate(t.len() - 1024);
            (gz(&t), ".tar.gz")
        }
        "tar_truncated_header" => {
            let t = with(vec![file(format!("{p}/cut.txt"), "x")]);
            (t[..t.len() - 1024 - 512 - 300].to_vec(), ".tar")
        }
        "gz_truncated" => (half(gz(&with(vec![]))), ".tar.gz"),
        "gz_bad_crc" => {
            let mut g = gz(&with(vec![]));
            let n = g.len();
            g[n - 8] ^= 0xff;
            (g, ".tar.gz")
        }
        "gz_garbage" => (
            b"\x1f\x8b\x08\x00garbage, not a deflate stream at all".to_vec(),
            ".tar.gz",
        ),
        "not_an_archive" => (b"<html>this is not an archive</html>\n".to_vec(), ".tar.gz"),
        "gz_empty" => (gz(b""), ".tar.gz"),
        "xz_truncated" => (half(xz(&with(vec![]))), ".tar.xz"),
        "zst_truncated" => (half(zst(&with(vec![]))), ".tar.zst"),
        "bz2_truncated" => (half(bz2(&with(vec![]))), ".tar.bz2"),
        "bomb_gz" => {
            let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            (zero_bomb(enc, a).finish().expect("gzip"), ".tar.gz")
        }
        "bomb_xz" => {
            let enc = liblzma::write::XzEncoder::new(Vec::new(), 0);
            (zero_bomb(enc, a).finish().expect("xz"), ".tar.xz")
        }
        "bomb_zst" => {
            let enc = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
            (zero_bomb(enc, a).finish().expect("zstd"), ".tar.zst")
        }
        "bomb_bz2" => {
            let enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            (zero_bomb(enc, a).finish().expect("bzip2"), ".tar.bz2")
        }
        "bomb_zip" => (
            zip_of(
                &[(&format!("{p}/MODULE.bazel"), mb)],
                &[],
                Some(&format!("{p}/zeros.bin")),
            ),
            ".zip",
        ),
        "zip_dotdot" => {
            let z = zip_of(
                &[
                    (&format!("{p}/MODULE.bazel"), mb),
                    (&format!("{p}/XX/XX/{}", escaped("zip")), b"x"),
                ],
                &[],
                None,
            );
            (forge(z, "/XX/XX/", "/../../"), ".zip")
        }
        "zip_absolute" => {
            let z = zip_of(
                &[
                    (&format!("{p}/MODULE.bazel"), mb),
                    (&format!("Xtmp/{}", escaped("zip-abs")), b"x"),
                ],
                &[],
                None,
            );
            (forge(z, "Xtmp/", "/tmp/"), ".zip")
        }
        "zip_symlink_escape" => (
            zip_of(
                &[(&format!("{p}/MODULE.bazel"), mb)],
                &[(&format!("{p}/up"), "../../../../..")],
                None,
            ),
            ".zip",
        ),
        "zip_duplicate" => {
            let z = zip_of(
                &[
                    (&format!("{p}/MODULE.bazel"), mb),
                    (&format!("{p}/BUILD.bazel"), b"# one\n"),
                    (&format!("{p}/BUILD.bazeX"), b"# two\n"),
                ],
                &[],
                None,
            );
            (forge(z, "BUILD.bazeX", "BUILD.bazel"), ".zip")
        }
        "zip_truncated" => (
            half(zip_of(&[(&format!("{p}/MODULE.bazel"), mb)], &[], None)),
            ".zip",
        ),
        other => return Err(format!("unknown archive `{other}`")),
    })
}

// ---------------------------------------------------------------------------------------------
// The sandbox and the server process
// ---------------------------------------------------------------------------------------------

/// The server binary over the sandbox, with debug logs in `server-stderr.log`.
fn serve(sandbox: &Path) -> Spawned {
    let mut cmd = spawned::bin();
    cmd.arg("serve")
        .arg("--config")
        .arg(sandbox.join("config.toml"))
        .args(["--listen", "127.0.0.1:0", "--registry"])
        .arg(sandbox.join("registry"))
        .arg("--data")
        .arg(sandbox.join("data"))
        .arg("--mirror-policy")
        .arg(sandbox.join("policy"))
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .env("TMPDIR", sandbox.join("tmp"));
    Spawned::spawn(
        &mut cmd,
        Stderr::File(sandbox.join("server-stderr.log")),
        Duration::from_secs(60),
    )
}

/// Files and folders under `root` (symlinks not followed): path -> kind, size and mtime.
/// Cheap enough to take around every case.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(listing) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in listing.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            if rel.starts_with("server-stderr.log") {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap_or_default();
                out.insert(rel, format!("symlink -> {}", target.display()));
            } else if meta.is_dir() {
                out.insert(format!("{rel}/"), "dir".to_owned());
                walk(root, &path, out);
            } else {
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                out.insert(rel, format!("file {} bytes, mtime {mtime}", meta.len()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Every file under `root` with the sha256 of its bytes.
fn hashed(root: &Path) -> BTreeMap<String, String> {
    snapshot(root)
        .into_iter()
        .filter(|(_, kind)| kind.starts_with("file"))
        .map(|(rel, _)| {
            let bytes = std::fs::read(root.join(&rel)).unwrap_or_default();
            (rel, sha256_hex(&bytes))
        })
        .collect()
}

/// Paths added (`+`), removed (`-`) or changed (`~`).
fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in after {
        match before.get(k) {
            None => out.push(format!("+{k}")),
            Some(b) if b != v => out.push(format!("~{k}")),
            Some(_) => {}
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            out.push(format!("-{k}"));
        }
    }
    out
}

/// Scratch space the server cleans up by itself, shortly after an answer: the mirror's spool
/// files (`data/cas/tmp/`) and the publish work folders (the server's TMPDIR, `tmp/`).
fn is_scratch(rel: &str) -> bool {
    ["data/cas/tmp/", "tmp/"]
        .iter()
        .any(|d| rel.starts_with(d) && rel != *d)
}

/// A [`snapshot`] taken once the scratch space is empty again (at most 3 s later: a spool file
/// or work folder still there then is left behind, and shows up as a write). The scratch
/// folders themselves may appear.
async fn settled_snapshot(sandbox: &Path) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut snap = snapshot(sandbox);
        if !snap.keys().any(|k| is_scratch(k)) || Instant::now() >= deadline {
            snap.remove("data/cas/tmp/");
            return snap;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Files an escaping archive entry could have planted in the system temp folders.
fn escaped_files() -> Vec<String> {
    let mut out = Vec::new();
    for d in [std::env::temp_dir(), PathBuf::from("/tmp")] {
        if let Ok(listing) = std::fs::read_dir(&d) {
            for e in listing.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("gf-hostile-escaped") {
                    out.push(e.path().display().to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Picks `{internal_name}`: a name (not `localhost`) that the system resolver maps only to
/// internal addresses.
async fn internal_name(candidates: &[String]) -> Option<String> {
    let mut names: Vec<String> = candidates.to_vec();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(h.trim().to_owned());
    }
    for name in names {
        if name.is_empty() || name.contains("localhost") {
            continue;
        }
        let lookup = tokio::net::lookup_host((name.clone(), 80));
        let internal = match tokio::time::timeout(Duration::from_secs(2), lookup).await {
            Ok(Ok(addrs)) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                !addrs.is_empty()
                    && addrs
                        .iter()
                        .all(|a| gf_registry::upstream::is_internal(a.ip()))
            }
            _ => false,
        };
        if internal {
            return Some(name);
        }
    }
    None
}

fn config_text(setup: &SetupFile) -> String {
    let mut text = setup.config.clone();
    for t in &setup.token {
        let scopes: Vec<String> = t.scopes.iter().map(|s| format!("{s:?}")).collect();
        text.push_str(&format!(
            "\n[[auth.tokens]]\nname = {:?}\nsha256 = \"{}\"\nscopes = [{}]\n",
            t.name,
            sha256_hex(t.secret.as_bytes()),
            scopes.join(", ")
        ));
        if let Some(e) = &t.expires {
            text.push_str(&format!("expires = {e:?}\n"));
        }
    }
    text
}

// ---------------------------------------------------------------------------------------------
// One exchange on the wire
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Answered {
    /// `None`: the connection closed without a status line.
    status: Option<u16>,
    head: String,
    body: Vec<u8>,
    timed_out: bool,
    /// A read or write error seen on the way (informational).
    transport: Option<String>,
}

impl Answered {
    fn describe(&self) -> String {
        if self.timed_out {
            return "no complete answer within 10 s".to_owned();
        }
        match self.status {
            Some(s) => {
                let body = String::from_utf8_lossy(&self.body);
                let body = body.trim();
                let cut: String = body.chars().take(200).collect();
                format!("{s} {cut:?}")
            }
            None => format!(
                "connection closed without an answer ({})",
                self.transport.as_deref().unwrap_or("clean close")
            ),
        }
    }
}

/// Sends `head` then `body` (concurrently with reading the answer), and reads until the server
/// closes. With `half_close` the write side is shut after the body.
async fn exchange(addr: SocketAddr, head: Vec<u8>, body: Vec<u8>, half_close: bool) -> Answered {
    let mut answered = Answered::default();
    let started = Instant::now();
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            answered.transport = Some(format!("connect: {e}"));
            return answered;
        }
    };
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let r = async {
            wr.write_all(&head).await?;
            wr.write_all(&body).await?;
            wr.flush().await?;
            if half_close {
                wr.shutdown().await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        // The write half stays open (unless half-closed) until the reader is done.
        (r, wr)
    });
    let mut buf = Vec::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match read {
        Err(_) => answered.timed_out = true,
        Ok(Err(e)) => answered.transport = Some(format!("read: {e}")),
        Ok(Ok(())) => {}
    }
    let remaining = REQUEST_TIMEOUT.saturating_sub(started.elapsed());
    match tokio::time::timeout(remaining.max(Duration::from_millis(10)), writer).await {
        Ok(Ok((Err(e), _))) if answered.transport.is_none() => {
            answered.transport = Some(format!("write: {e}"));
        }
        Ok(_) => {}
        Err(_) => {}
    }
    // Skip interim 1xx answers (100 Continue).
    let mut rest: &[u8] = &buf;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let status = head
            .split("\r\n")
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse::<u16>().ok());
        if status.is_some_and(|s| (100..200).contains(&s)) {
            rest = &rest[end + 4..];
            continue;
        }
        answered.status = status;
        answered.head = head;
        answered.body = rest[end + 4..].to_vec();
        break;
    }
    answered
}

fn request_head(
    case: &Case,
    target: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    addr: SocketAddr,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut head = format!("{} {target} HTTP/1.1\r\n", case.method).into_bytes();
    if !has("host") {
        head.extend_from_slice(format!("Host: {addr}\r\n").as_bytes());
    }
    for (k, v) in headers {
        head.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !has("content-length") && !has("transfer-encoding") {
        match body {
            Some(b) => {
                head.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes())
            }
            None if case.method == "POST" => head.extend_from_slice(b"Content-Length: 0\r\n"),
            None => {}
        }
    }
    if !has("connection") {
        head.extend_from_slice(b"Connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Verdict {
    Passed,
    /// Failed only checks its `known_bug` covers.
    KnownBug(Vec<String>),
    /// Marked `known_bug` but passed every check: the mark can go.
    KnownBugFixed,
    Skipped(String),
    Failed(Vec<String>),
}

#[derive(Debug)]
struct Outcome {
    case: Case,
    request: String,
    answer: String,
    verdict: Verdict,
    writes: Vec<String>,
}

#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    passed: usize,
    known: usize,
    fixed: usize,
    skipped: usize,
    failed: usize,
}

/// A short printable form of a request (target cut, body summarized).
fn describe_request(
    case: &Case,
    target: &str,
    headers: &[(String, String)],
    body: usize,
) -> String {
    let mut t: String = target.chars().take(160).collect();
    if target.chars().count() > 160 {
        t.push_str(&format!("...({} bytes)", target.len()));
    }
    let hs: Vec<String> = headers
        .iter()
        .map(|(k, v)| {
            let v: String = v.chars().take(60).collect();
            format!("{k}: {v}")
        })
        .collect();
    format!(
        "{} {t:?} [{}] body {body} bytes",
        case.method,
        hs.join("; ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus() {
    tokio::time::timeout(RUN_TIMEOUT, run())
        .await
        .expect("the hostile corpus finishes within RUN_TIMEOUT");
}

#[allow(clippy::too_many_lines, reason = "one straight run, step by step")]
async fn run() {
    let started = Instant::now();
    let (setup, cases) = load_corpus();

    // The upstream double: redirects to internal addresses, and a few plain answers.
    let mut double = Upstream::start().await;
    let mut vars = Vars::default();
    vars.0.insert("upstream", double.host());
    vars.0.insert("upstream_port", double.port().to_string());
    if let Some(name) = internal_name(&setup.internal_name_candidates).await {
        vars.0.insert("internal_name", name);
    }

    // The sandbox: registry copy, data, policy, TMPDIR of the server, config.
    let sandbox_dir = tempfile::tempdir().expect("tempdir");
    let sandbox = sandbox_dir.path().to_path_buf();
    vars.0.insert("sandbox", sandbox.display().to_string());
    copy_tree(&example_registry(), &sandbox.join("registry"));
    for d in ["data", "policy", "tmp"] {
        std::fs::create_dir_all(sandbox.join(d)).expect("mkdir");
    }
    let mut policy = String::new();
    for u in &setup.upstream {
        // A prefix naming an unavailable placeholder is left out (its cases are skipped).
        if let Ok(prefix) = vars.expand(&u.prefix, 0) {
            policy.push_str(&format!(
                "[[upstream]]\nprefix = {prefix:?}\nallow_private = {}\n\n",
                u.allow_private
            ));
        }
    }
    std::fs::write(sandbox.join("policy/policy.toml"), policy).expect("policy.toml");
    std::fs::write(sandbox.join("config.toml"), config_text(&setup)).expect("config.toml");

    let mut server = serve(&sandbox);
    let addr = server.addr();
    vars.0.insert("server", addr.to_string());
    vars.0.insert("server_port", addr.port().to_string());
    for r in &setup.redirect {
        let location = vars.expand(&r.location, 0);
        if let Ok(location) = location {
            double.set(&r.path, Answer::Redirect(location));
        }
    }
    for s in &setup.serve {
        double.serve_bytes(&s.path, s.text.clone().into_bytes());
    }

    // Secrets: every configured token, and the bogus ones the corpus sends.
    let secrets: Vec<String> = setup
        .token
        .iter()
        .map(|t| t.secret.clone())
        .chain(setup.secrets.iter().cloned())
        .collect();

    let roots_before = (
        hashed(&sandbox.join("registry")),
        hashed(&sandbox.join("data/cas")),
        hashed(&sandbox.join("data/records")),
    );
    let escaped_before = escaped_files();
    let mut cache = BTreeMap::new();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut server_died = None;

    for (n, case) in cases.iter().enumerate() {
        let n = n + 1;
        let skip = |why: String| Outcome {
            case: case.clone(),
            request: format!("{} {}", case.method, case.target),
            answer: String::new(),
            verdict: Verdict::Skipped(why),
            writes: Vec::new(),
        };
        if let Some(why) = &server_died {
            outcomes.push(skip(format!("the server died earlier ({why})")));
            continue;
        }
        // Placeholders.
        let expanded = (|| {
            let target = vars.expand(&case.target, n)?;
            let headers = case
                .headers
                .iter()
                .map(|(k, v)| Ok((vars.expand(k, n)?, vars.expand(v, n)?)))
                .collect::<Result<Vec<_>, String>>()?;
            let body = match &case.body {
                BodySource::None => BodySource::None,
                BodySource::Text(t) => BodySource::Text(vars.expand(t, n)?),
                BodySource::Gen { generator, args } => BodySource::Gen {
                    generator: generator.clone(),
                    args: args
                        .iter()
                        .map(|(k, v)| Ok((k.clone(), vars.expand(v, n)?)))
                        .collect::<Result<_, String>>()?,
                },
            };
            Ok::<_, String>((target, headers, body))
        })();
        let (target, headers, body) = match expanded {
            Ok(x) => x,
            Err(var) => {
                outcomes.push(skip(format!("no value for {{{var}}} on this machine")));
                continue;
            }
        };
        let body: Option<Vec<u8>> = match &body {
            BodySource::None => None,
            BodySource::Text(t) => Some(t.clone().into_bytes()),
            BodySource::Gen { generator, args } => {
                match generate(generator, args, &target, &sandbox, &mut cache) {
                    Ok(b) => Some(b),
                    Err(e) => panic!("{}: case `{}`: body_gen: {e}", case.file, case.name),
                }
            }
        };
        let head = request_head(case, &target, &headers, body.as_deref(), addr);
        let request = describe_request(case, &target, &headers, body.as_ref().map_or(0, Vec::len));

        let before = settled_snapshot(&sandbox).await;
        let answered = exchange(addr, head, body.unwrap_or_default(), case.half_close).await;
        let after = settled_snapshot(&sandbox).await;
        let writes = diff(&before, &after);

        // Checks.
        let mut failed: Vec<(Check, String)> = Vec::new();
        if answered.timed_out {
            failed.push((Check::Timeout, "no complete answer within 10 s".to_owned()));
        }
        if !case.expect.allows(answered.status) {
            failed.push((
                Check::Status,
                format!("expected {}, got {}", case.expect.text, answered.describe()),
            ));
        }
        let text = String::from_utf8_lossy(&answered.body);
        for want in &case.contains {
            if !text.contains(want.as_str()) {
                failed.push((Check::Body, format!("the answer does not contain {want:?}")));
            }
        }
        let whole = format!("{}\r\n\r\n{text}", answered.head);
        for bad in &case.not_contains {
            if whole.contains(bad.as_str()) {
                failed.push((Check::NotContains, format!("the answer contains {bad:?}")));
            }
        }
        for s in &secrets {
            if whole.contains(s.as_str()) {
                failed.push((Check::Leak, format!("the answer contains the token {s:?}")));
            }
        }
        if !writes.is_empty() {
            failed.push((Check::Writes, format!("files written: {writes:?}")));
        }
        if !server.alive() {
            failed.push((Check::Alive, "the server process exited".to_owned()));
            server_died = Some(format!("after case `{}`", case.name));
        }

        let verdict = match (&case.known_bug, failed.is_empty()) {
            (None, true) => Verdict::Passed,
            (Some(_), true) => Verdict::KnownBugFixed,
            (None, false) => Verdict::Failed(failed.into_iter().map(|(_, m)| m).collect()),
            (Some(_), false) => {
                if failed
                    .iter()
                    .all(|(c, _)| case.known_bug_checks.contains(c))
                {
                    Verdict::KnownBug(failed.into_iter().map(|(_, m)| m).collect())
                } else {
                    Verdict::Failed(
                        failed
                            .into_iter()
                            .map(|(c, m)| {
                                if case.known_bug_checks.contains(&c) {
                                    format!("(known) {m}")
                                } else {
                                    m
                                }
                            })
                            .collect(),
                    )
                }
            }
        };
        outcomes.push(Outcome {
            case: case.clone(),
            request,
            answer: answered.describe(),
            verdict,
            writes,
        });
    }

    // After every case: health, readiness, unchanged stores, a clean log.
    let mut after_failures: Vec<String> = Vec::new();
    for path in ["/healthz", "/readyz"] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let a = exchange(addr, head.into_bytes(), Vec::new(), false).await;
        if a.status != Some(200) {
            after_failures.push(format!("GET {path} after the corpus: {}", a.describe()));
        }
    }
    if !server.alive() {
        after_failures.push("the server process is not running after the corpus".to_owned());
    }
    let known_writes: BTreeSet<String> = outcomes
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::KnownBug(_)))
        .flat_map(|o| o.writes.iter().map(|w| w[1..].to_owned()))
        .collect();
    let roots_after = (
        hashed(&sandbox.join("registry")),
        hashed(&sandbox.join("data/cas")),
        hashed(&sandbox.join("data/records")),
    );
    for (label, prefix, b, a) in [
        ("registry", "registry/", &roots_before.0, &roots_after.0),
        ("data/cas", "data/cas/", &roots_before.1, &roots_after.1),
        (
            "data/records",
            "data/records/",
            &roots_before.2,
            &roots_after.2,
        ),
    ] {
        let unexplained: Vec<String> = diff(b, a)
            .into_iter()
            .filter(|d| !known_writes.contains(&format!("{prefix}{}", &d[1..])))
            .collect();
        if !unexplained.is_empty() {
            after_failures.push(format!(
                "{label} changed, and no known-bug case explains it: {unexplained:?}"
            ));
        }
    }
    let escaped_after = escaped_files();
    if escaped_after != escaped_before {
        after_failures.push(format!(
            "archive entries escaped into the system temp folder: {escaped_after:?}"
        ));
    }
    let log = std::fs::read_to_string(sandbox.join("server-stderr.log")).unwrap_or_default();
    for s in &secrets {
        if log.contains(s.as_str()) {
            after_failures.push(format!("the server log contains the token {s:?}"));
        }
    }
    for marker in ["panicked at", "RUST_BACKTRACE"] {
        if let Some(line) = log.lines().find(|l| l.contains(marker)) {
            after_failures.push(format!("the server log shows a panic: {line}"));
        }
    }
    drop(server);
    double.stop().await;

    // Every answer, for review: HOSTILE_CORPUS_DUMP=FILE.
    if let Some(dump) = std::env::var_os("HOSTILE_CORPUS_DUMP") {
        let lines: Vec<String> = outcomes
            .iter()
            .map(|o| {
                format!(
                    "{} / {}\n  {}\n  expect {}: {}\n",
                    o.case.class, o.case.name, o.request, o.case.expect.text, o.answer
                )
            })
            .collect();
        std::fs::write(&dump, lines.concat()).expect("HOSTILE_CORPUS_DUMP");
    }

    // The report.
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    for o in &outcomes {
        let t = tally.entry(o.case.class.clone()).or_default();
        t.cases += 1;
        match o.verdict {
            Verdict::Passed => t.passed += 1,
            Verdict::KnownBug(_) => t.known += 1,
            Verdict::KnownBugFixed => t.fixed += 1,
            Verdict::Skipped(_) => t.skipped += 1,
            Verdict::Failed(_) => t.failed += 1,
        }
    }
    println!(
        "\nhostile corpus: {} cases from tests/hostile, server {addr}, {:.1} s",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    match vars.0.get("internal_name") {
        Some(name) => {
            println!("  {{internal_name}} = {name} (resolves only to internal addresses)")
        }
        None => println!("  no name resolves to an internal address here: its cases are skipped"),
    }
    println!(
        "  server log (RUST_LOG=debug): {} lines, searched for {} tokens and for panics",
        log.lines().count(),
        secrets.len()
    );
    println!(
        "  {:<10} {:>6} {:>7} {:>10} {:>11} {:>8} {:>7}",
        "class", "cases", "passed", "known bug", "bug fixed?", "skipped", "failed"
    );
    let mut total = Tally::default();
    for (class, t) in &tally {
        println!(
            "  {class:<10} {:>6} {:>7} {:>10} {:>11} {:>8} {:>7}",
            t.cases, t.passed, t.known, t.fixed, t.skipped, t.failed
        );
        total.cases += t.cases;
        total.passed += t.passed;
        total.known += t.known;
        total.fixed += t.fixed;
        total.skipped += t.skipped;
        total.failed += t.failed;
    }
    println!(
        "  {:<10} {:>6} {:>7} {:>10} {:>11} {:>8} {:>7}",
        "total", total.cases, total.passed, total.known, total.fixed, total.skipped, total.failed
    );

    let mut by_bug: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
    for o in &outcomes {
        if let (Verdict::KnownBug(_), Some(bug)) = (&o.verdict, &o.case.known_bug) {
            by_bug.entry(bug.as_str()).or_default().push(o);
        }
    }
    if !by_bug.is_empty() {
        println!("\nknown server bugs (reported, not failed on):");
        for (bug, hits) in &by_bug {
            println!("  - {bug} ({} cases), e.g.", hits.len());
            for o in hits.iter().take(2) {
                println!("      {} / {}: {}", o.case.class, o.case.name, o.request);
                println!("        answer: {}", o.answer);
                if let Verdict::KnownBug(why) = &o.verdict {
                    for w in why {
                        println!("        {w}");
                    }
                }
            }
        }
    }
    let fixed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::KnownBugFixed))
        .collect();
    if !fixed.is_empty() {
        println!("\nmarked known_bug but passing now (remove the mark):");
        for o in &fixed {
            println!("  - {} / {}", o.case.class, o.case.name);
        }
    }
    let skipped: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Skipped(_)))
        .collect();
    if !skipped.is_empty() {
        println!("\nskipped:");
        for o in &skipped {
            if let Verdict::Skipped(why) = &o.verdict {
                println!("  - {} / {}: {why}", o.case.class, o.case.name);
            }
        }
    }
    let mut failures: Vec<String> = Vec::new();
    for o in &outcomes {
        if let Verdict::Failed(why) = &o.verdict {
            failures.push(format!(
                "{} / {} ({}): {}\n      answer: {}\n      {}",
                o.case.class,
                o.case.name,
                o.case.file,
                o.request,
                o.answer,
                why.join("\n      ")
            ));
        }
    }
    failures.extend(after_failures);
    if !failures.is_empty() {
        println!("\nfailures:");
        for f in &failures {
            println!("  - {f}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} hostile case(s) or after-checks failed (see the report above)",
        failures.len()
    );
}
