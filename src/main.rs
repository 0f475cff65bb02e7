//! The `gf-registry` binary: parse the command line and run it.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    gf_registry::cli::Cli::parse().run()
}
