//! SMS, the SPEAR control plane.
//!
//! [`server::start`] brings up, from an [`SmsConfig`](config::SmsConfig): the plugin host (strategy
//! and storage plugins, hot-reloaded), the state on the selected storage backend ([`service::Sms`]),
//! the REST gateway ([`api::rest`]), the gRPC services ([`api::grpc`]) with health and reflection, the
//! web admin, and the node sweeper.
#![deny(missing_docs)]

pub mod api;
pub mod auth;
pub mod autoscale;
pub mod blobs;
pub mod builtins;
pub mod cancels;
pub mod checks;
pub mod config;
pub mod db;
pub mod deadlines;
pub mod dispatch;
pub mod due;
pub mod error;
pub mod events;
pub mod executions;
pub mod explain;
pub mod feed;
pub mod files;
pub mod fit;
pub mod fuzzing;
pub mod ha;
pub mod health;
pub mod history;
pub mod invocations;
pub mod listen;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod nodes;
pub mod outbox;
pub mod payloads;
pub mod preempt;
pub mod query;
pub mod recovery;
pub mod reload;
pub mod reports;
pub mod requeue;
pub mod resources;
pub mod results;
pub mod retention;
pub mod sched;
pub mod server;
pub mod service;
pub mod shadow;
pub mod state_metrics;
pub mod table;
pub mod task_updates;
pub mod tasks;
pub mod timers;
pub mod warms;
