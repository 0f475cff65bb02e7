#![doc = include_str!("../README.md")]

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod mirror;
pub mod publish;
pub mod registry;
pub mod release;
pub mod server;
pub mod source;
pub mod storage;
pub mod tasks;
pub mod upstream;
