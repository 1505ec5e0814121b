//! Loaders: turn a validated plugin file into a factory of live instances.

pub mod component;
pub mod extism;
pub mod native;
