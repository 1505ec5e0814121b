//! Integration tests of the plugin runtime through real files, real loaders and real guests.
//!
//! One binary (wasmtime's layout): each module is a group of tests; helpers live in `spear_tests`.

mod architecture;
mod autoscaler_conformance;
mod builtins;
mod compile_cache;
mod component_executor;
mod conformance;
mod container_executor;
mod container_workers;
mod containerfile;
mod containment;
mod etcd_resends;
mod etcd_storage;
mod executor_instances;
mod executors;
mod function_instances;
mod hostile_guests;
mod hostile_storage;
mod hostile_workloads;
mod http_executor;
mod loading;
mod process_workers;
mod reload;
mod scratch;
mod signing;
mod storage;
mod wasm_executor;
