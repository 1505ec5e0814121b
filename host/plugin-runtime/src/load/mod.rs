//! Loaders: turn a validated plugin file into a factory of live instances.

pub mod component;
pub mod extism;
mod extism_output;
pub mod native;
pub mod scratch;
pub mod wasi;
