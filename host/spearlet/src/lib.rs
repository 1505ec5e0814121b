//! Spearlet, the SPEAR node agent.
//!
//! A Spearlet registers with SMS and heartbeats real figures ([`figures`]), follows its assignment
//! stream ([`agent`]), runs each execution through an executor plugin ([`executors`]) on an
//! instance chosen by the local strategy plugin from the task's pool ([`pool`]), reclaims idle
//! instances through the reclamation-policy plugin, and reports results until SMS acknowledges
//! them ([`reports`]). Artifacts are fetched once and cached by content hash ([`artifacts`]);
//! durable state lives on a storage-backend plugin ([`store`]).
//!
//! See `docs/spearlet.md` for the operator's view.
#![deny(missing_docs)]

pub mod agent;
pub mod answered;
pub mod artifacts;
pub mod builtins;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod executors;
pub mod figures;
pub mod functions;
pub mod guard;
pub mod metrics;
pub mod object_service;
pub mod pool;
pub mod preempt;
pub mod reload;
pub mod reports;
pub mod run;
pub mod server;
pub mod slots;
pub mod sms;
pub mod stall;
pub mod starts;
pub mod store;
pub mod workdir;

pub use config::{Cli, SpearletConfig};
pub use error::{Error, Result};
pub use server::{Running, start};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
