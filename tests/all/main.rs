//! Integration tests of the plugin runtime through real files, real loaders and real guests.
//!
//! One binary (wasmtime's layout): each module is a group of tests; helpers live in `spear_tests`.

mod architecture;
mod compile_cache;
mod conformance;
mod container_executor;
mod containment;
mod etcd_resends;
mod etcd_storage;
mod executors;
mod hostile_guests;
mod hostile_workloads;
mod loading;
mod reload;
mod signing;
mod storage;
mod wasm_executor;
