//! The SPEAR plugin runtime: loads, validates, selects, guards and hot-reloads plugins.
//!
//! A host (SMS, Spearlet, or `spear plugin sim`) creates one [`PluginHost`] from its config file.
//! The host then:
//!
//! 1. scans the plugin directory; each file's form is told by its content ([`detect`]): a WASM
//!    component (wasmtime), an Extism module, or a native library (abi_stable);
//! 2. loads and self-tests each file ([`plugin::load_file`]) and registers it by kind and name;
//! 3. activates the plugins the config selects in guarded slots ([`StrategySlot`],
//!    [`ReclaimerSlot`]) that validate every answer, contain every failure with a built-in fallback,
//!    and quarantine a plugin after repeated failures;
//! 4. keeps all of that in step with the directory and the config file ([`PluginHost::watch`],
//!    [`PluginHost::reload`]), reporting every reload ([`ReloadReport`]) and event ([`telemetry`]).
//!
//! See `docs/plugins.md` for the contract and the reload rules.
#![deny(missing_docs)]

mod budget;
pub mod check;
pub mod config;
pub mod detect;
pub mod engine;
pub mod error;
mod fallback;
pub mod grants;
pub mod group;
pub mod host;
pub mod instance;
pub mod limits;
pub mod load;
pub mod logging;
pub mod plugin;
pub mod registry;
mod sidecar;
pub mod signing;
pub mod slot;
pub mod telemetry;
pub mod watch;

pub use config::RuntimeConfig;
pub use detect::Form;
pub use error::{CallFailure, Error, Result};
pub use host::{
    HostChange, HostKeys, LiveKey, PluginHost, ReloadOutcome, ReloadReport, Trigger,
    config_diff_check,
};
pub use limits::{LimitValues, Limits};
pub use plugin::{LoadedPlugin, PluginRef, load_file};
pub use registry::{PluginRecord, PluginState};
pub use slot::{AutoscalerSlot, Decider, Handover, ReclaimerSlot, SlotStatus, StrategySlot};
pub use telemetry::{EventKind, PluginEvent, Telemetry};
