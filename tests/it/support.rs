//! Test support: the one place that starts servers, upstream doubles and external tools, and
//! holds the shared fixtures and clients. Topic test files import only from here.

pub(crate) mod app;
pub(crate) mod azurite;
pub(crate) mod certs;
pub(crate) mod client;
pub(crate) mod fixtures;
pub(crate) mod garage;
pub(crate) mod load;
pub(crate) mod publish;
pub(crate) mod server;
pub(crate) mod spawned;
pub(crate) mod upstream;

pub(crate) use app::TestApp;
pub(crate) use client::raw_request;
pub(crate) use fixtures::{copy_tree, example_registry, files_under, path_str, sha256_hex};
pub(crate) use garage::Garage;
pub(crate) use server::TestServer;
pub(crate) use spawned::{Spawned, Stderr};
pub(crate) use upstream::{Answer, Upstream};
