//! Integration tests, one module per topic. Servers, the upstream double, the spawned binary,
//! Garage and the shared fixtures and clients all come from [`support`]: the app in process
//! (`TestApp`, router `oneshot`), the real server on `127.0.0.1:0` (`TestServer`) or the
//! binary as a child process (`Spawned`).

// The server starts threads only through `tasks` (clippy.toml); the tests drive clients, child
// processes and blocking tools from threads of their own.
#![allow(clippy::disallowed_methods)]

mod bazel_client;
mod bazel_remote;
mod check_bcr;
mod cli;
mod crash;
mod deploy;
mod faults;
mod fill_race;
mod garage;
mod git_registry;
mod hostile;
mod http_edges;
mod hung_backend;
mod limits;
mod mirror;
mod mirror_cli;
mod publish;
mod publish_bodies;
mod publish_cli;
mod publish_git;
mod registry_dir;
mod reliability;
mod remote_asset;
mod replicas;
mod soak;
mod storage_conformance;
mod storage_probe;
mod support;
mod tls;
mod upstream;
mod upstream_registry;
