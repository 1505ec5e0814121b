//! Integration tests of `spearlet`: the real binaries on 127.0.0.1, one module per subject. One test
//! binary for the crate (each `tests/*.rs` would be its own 130 MB link of wasmtime and tonic).

mod artifacts;
mod auth;
mod autoscaler;
mod cert_identity;
mod cluster;
mod common;
mod container_functions;
mod dispatch;
mod end_to_end;
mod examples;
mod executor_swap;
mod executors;
mod function_limits;
mod function_streams;
mod functions;
mod ha;
mod http_executor;
mod invoke;
mod metrics;
mod object_artifacts;
mod old_sms;
mod pause_idle;
mod plugin_stall;
mod preemption;
mod reclaim_live;
mod spear_compat;
mod spear_objects;
mod tls;
mod warm_ahead;
mod web_admin;
