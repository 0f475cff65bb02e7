//! The HTTP side of `gf-registry publish`: the server URL, the request sent, and the report
//! of the answer.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::Value;
use url::Url;

use super::*;

/// Parses the server's base URL: `http` or `https`, no query or fragment.
pub(super) fn parse_server(raw: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw).map_err(|e| anyhow::anyhow!("--server `{raw}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        anyhow::bail!("--server `{raw}`: must be an http:// or https:// URL");
    }
    if url.query().is_some() || url.fragment().is_some() {
        anyhow::bail!("--server `{raw}`: must not have a query or fragment");
    }
    Ok(url)
}

/// The publish endpoint below `server` (which may have a path of its own).
pub(crate) fn publish_url(server: &Url, name: &str, version: &str, dry_run: bool) -> Url {
    let mut url = server.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .extend(["api", "v1", "modules", name, version]);
    }
    if dry_run {
        url.set_query(Some("dry_run=true"));
    }
    url
}

/// The URL without any password, for messages.
pub(super) fn shown(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    u.to_string()
}

/// An error with its causes, `a: b: c`.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

/// Sends `request` to `server` (token from [`find_token`]) and reports the answer: the server's
/// JSON on stdout and a summary on stderr. Exit 0 on 200/201, 1 on any other answer or when the
/// server cannot be reached.
pub(crate) fn send(server: &Url, request: &PublishRequest, dry_run: bool) -> ExitCode {
    let url = publish_url(server, &request.name, &request.version, dry_run);
    let token = find_token(server);
    if token.is_some() && url.scheme() == "http" && !is_loopback(&url) {
        eprintln!(
            "warning: sending the token to {} over plain http",
            url.host_str().unwrap_or_default()
        );
    }
    let body = match serde_json::to_vec(&request.body) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: encoding the request: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match crate::cli::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let answer = runtime.block_on(post(&url, body, token.as_deref()));
    let (status, text) = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: cannot reach {}: {e}", shown(&url));
            return ExitCode::FAILURE;
        }
    };
    report(&request.name, &request.version, status, &text)
}

pub(super) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

pub(super) async fn post(
    url: &Url,
    body: Vec<u8>,
    token: Option<&str>,
) -> Result<(reqwest::StatusCode, String), String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TOTAL_TIMEOUT)
        .user_agent(concat!("gf-registry/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| chain(&e))?;
    let mut req = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body);
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| format!("the token from {TOKEN_ENV} or .netrc is not a valid header"))?;
        value.set_sensitive(true);
        req = req.header(reqwest::header::AUTHORIZATION, value);
    }
    let resp = req.send().await.map_err(|e| chain(&e.without_url()))?;
    let status = resp.status();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut text = resp.text().await.map_err(|e| chain(&e.without_url()))?;
    if status.is_redirection()
        && let Some(l) = location
    {
        let _ = write!(text, " (redirected to {l}; give that as --server)");
    }
    Ok((status, text))
}

/// Prints the server's answer; the exit code.
pub(super) fn report(
    name: &str,
    version: &str,
    status: reqwest::StatusCode,
    text: &str,
) -> ExitCode {
    if status != reqwest::StatusCode::OK && status != reqwest::StatusCode::CREATED {
        eprintln!(
            "error: server answered {} {}: {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            text.trim()
        );
        return ExitCode::FAILURE;
    }
    let parsed = serde_json::from_str::<Value>(text).ok();
    match parsed
        .as_ref()
        .and_then(|v| serde_json::to_string_pretty(v).ok())
    {
        Some(pretty) => println!("{pretty}"),
        None => println!("{}", text.trim_end()),
    }
    let answered = parsed
        .as_ref()
        .and_then(|v| v.get("status"))
        .and_then(Value::as_str);
    match answered {
        Some("dry_run") => eprintln!("dry run: {name}@{version} passes, nothing written"),
        Some(s) => eprintln!("published {name}@{version} ({s})"),
        None if status == reqwest::StatusCode::CREATED => {
            eprintln!("published {name}@{version} (created)");
        }
        None => eprintln!("published {name}@{version}"),
    }
    ExitCode::SUCCESS
}
