//! Integration tests: the real server on `127.0.0.1:0`, talked to over HTTP.

mod cli;
mod git_registry;
mod http_edges;
mod registry_dir;
mod util;
