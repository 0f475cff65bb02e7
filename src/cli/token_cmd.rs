//! `gf-registry token ...`: create API tokens and hash existing ones.
//!
//! Nothing here needs the configuration: `create` prints a new token once and the
//! `[[auth.tokens]]` block (holding only its hash) to append to the configuration file.

use std::io::{BufRead as _, IsTerminal as _, Read as _};
use std::process::ExitCode;

use chrono::{DateTime, Utc};

use crate::auth::{self, Scope};

/// `token` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token. Prints the token on the first line (shown once, never stored), then a
    /// `[[auth.tokens]]` block that, appended to the configuration file, grants it its scopes.
    Create(CreateArgs),
    /// Read a token from stdin and print its sha256, the `sha256` value of a `[[auth.tokens]]`
    /// entry (to configure a token that exists already).
    Hash,
}

/// Arguments of `token create`.
#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// What the token may do: `publish:<glob>` or `yank:<glob>` over module names (`*` and `?`
    /// wildcards), or `admin`. Repeat the flag or list several after it. Any token may read.
    #[arg(
        long = "scope",
        value_name = "SCOPE",
        required = true,
        num_args = 1..,
        value_parser = parse_scope,
    )]
    scopes: Vec<Scope>,
    /// Name of the token in audit logs and answers [default: token-<first 8 hex digits of its
    /// sha256>].
    #[arg(long, value_parser = parse_name)]
    name: Option<String>,
    /// Instant from which the token is refused, RFC 3339 (e.g. 2027-01-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_expires, group = "expiry")]
    expires: Option<DateTime<Utc>>,
    /// Refuse the token this many days from now.
    #[arg(
        long,
        value_name = "DAYS",
        value_parser = clap::value_parser!(u32).range(1..=36_500),
        group = "expiry"
    )]
    expires_in_days: Option<u32>,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse()
}

fn parse_name(s: &str) -> Result<String, String> {
    auth::validate_token_name(s).map(|()| s.to_owned())
}

fn parse_expires(s: &str) -> Result<DateTime<Utc>, String> {
    let at = auth::parse_expiry(s)?;
    if at <= Utc::now() {
        return Err(format!("{s} is in the past"));
    }
    Ok(at)
}

impl TokenCommand {
    pub(crate) fn run(self) -> ExitCode {
        match self {
            Self::Create(args) => args.run(),
            Self::Hash => hash(),
        }
    }
}

impl CreateArgs {
    fn run(self) -> ExitCode {
        let expires = match (self.expires, self.expires_in_days) {
            (Some(at), _) => Some(at),
            (None, Some(days)) => {
                // Whole seconds, so the configured instant reads cleanly.
                let at = Utc::now().timestamp() + i64::from(days) * 86_400;
                match DateTime::from_timestamp(at, 0) {
                    Some(at) => Some(at),
                    None => {
                        eprintln!("error: --expires-in-days {days}: out of range");
                        return ExitCode::from(2);
                    }
                }
            }
            (None, None) => None,
        };
        let token = match auth::generate_token() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let name = self
            .name
            .unwrap_or_else(|| format!("token-{}", &auth::token_sha256(&token)[..8]));
        println!("{token}");
        println!();
        println!(
            "# Append to the configuration file to grant the token above its scopes (the token is not stored anywhere)."
        );
        print!(
            "{}",
            auth::toml_snippet(&name, &token, &self.scopes, expires)
        );
        ExitCode::SUCCESS
    }
}

fn hash() -> ExitCode {
    let stdin = std::io::stdin();
    let mut text = String::new();
    let read = if stdin.is_terminal() {
        eprintln!("token (then Enter):");
        stdin.lock().read_line(&mut text)
    } else {
        stdin.lock().read_to_string(&mut text)
    };
    if let Err(e) = read {
        eprintln!("error: reading stdin: {e}");
        return ExitCode::FAILURE;
    }
    let token = text.trim();
    if token.is_empty() {
        eprintln!("error: no token on stdin");
        return ExitCode::from(2);
    }
    if token.contains(char::is_whitespace) {
        eprintln!("error: stdin holds more than one word; give one token");
        return ExitCode::from(2);
    }
    println!("{}", auth::token_sha256(token));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::Cli;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("gf-registry").chain(args.iter().copied()))
    }

    #[test]
    fn scopes_are_validated_by_the_parser() {
        assert!(parse(&["token", "create", "--scope", "publish:rules_*"]).is_ok());
        assert!(
            parse(&[
                "token",
                "create",
                "--scope",
                "publish:a",
                "yank:b",
                "--scope",
                "admin"
            ])
            .is_ok()
        );
        let e = parse(&["token", "create", "--scope", "pubish:x"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(msg.contains("--scope"), "{msg}");
        assert!(msg.contains("pubish:x"), "{msg}");
        assert!(msg.contains("unknown scope"), "{msg}");
        let e = parse(&["token", "create"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn expiry_flags() {
        assert!(
            parse(&[
                "token",
                "create",
                "--scope",
                "admin",
                "--expires",
                "2999-01-01T00:00:00Z"
            ])
            .is_ok()
        );
        assert!(
            parse(&[
                "token",
                "create",
                "--scope",
                "admin",
                "--expires-in-days",
                "30"
            ])
            .is_ok()
        );
        for bad in [
            &["--expires", "2000-01-01T00:00:00Z"][..],
            &["--expires", "tomorrow"],
            &["--expires-in-days", "0"],
            &[
                "--expires",
                "2999-01-01T00:00:00Z",
                "--expires-in-days",
                "3",
            ],
        ] {
            let mut args = vec!["token", "create", "--scope", "admin"];
            args.extend_from_slice(bad);
            let e = parse(&args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(parse(&["token", "create", "--scope", "admin", "--name", "ci-1"]).is_ok());
        for bad in ["a b", "anonymous", "a\"b", ""] {
            assert!(
                parse(&["token", "create", "--scope", "admin", "--name", bad]).is_err(),
                "{bad:?}"
            );
        }
    }
}
