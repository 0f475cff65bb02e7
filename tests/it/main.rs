//! Integration tests, one module per topic. Servers, the upstream double, the spawned binary,
//! Garage and the shared fixtures and clients all come from [`support`]: the app in process
//! (`TestApp`, router `oneshot`), the real server on `127.0.0.1:0` (`TestServer`) or the
//! binary as a child process (`Spawned`).

mod bazel_client;
mod cli;
mod crash;
mod deploy;
mod faults;
mod garage;
mod git_registry;
mod hostile;
mod http_edges;
mod limits;
mod mirror;
mod mirror_cli;
mod publish;
mod publish_cli;
mod publish_git;
mod registry_dir;
mod reliability;
mod replicas;
mod soak;
mod storage_conformance;
mod storage_probe;
mod support;
mod upstream;
