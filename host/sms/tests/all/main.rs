//! Integration tests of `sms`: the real binaries on 127.0.0.1, one module per subject. One test
//! binary for the crate (each `tests/*.rs` would be its own 130 MB link of wasmtime and tonic).

mod admin_stream;
mod audit;
mod auth;
mod auth_admin;
mod auth_nodes;
mod common;
mod component_storage;
mod config_reload;
mod deadlines;
mod durability;
mod edge;
mod etcd;
mod explain;
mod full_disk;
mod grpc;
mod ha;
mod migrate;
mod paging;
mod plugin_stall;
mod preemption;
mod races;
mod reconnect;
mod report_batch;
mod rest;
mod retention;
mod scheduling;
mod shadow;
mod spear_compat;
mod spear_grpc;
mod strategies;
mod watch;
mod web_admin;
