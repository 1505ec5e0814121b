//! The autoscaler: every `interval_ms` SMS shows its autoscaling policy (a plugin, `policy` in
//! `[autoscaler]`) the queue, the nodes and the operator's limits, and acts on the answer through
//! its provider.
//!
//! - **Managed nodes.** Only nodes the provider started are counted, added or removed; SMS gives
//!   each a node UUID before it starts (the Spearlet registers with it) and keeps the list in its
//!   storage (`autoscale/node/<uuid>`), so a restarted SMS (or a new leader) knows them.
//! - **Growing.** SMS makes up the new nodes' UUIDs, records them, and asks the provider to start
//!   them. One that has not registered within `start_timeout_ms` is stopped and forgotten (event
//!   `autoscaler.start_failed`).
//! - **Shrinking, drain first.** The nodes to remove (the policy's choice, then the longest idle)
//!   are set `draining`: they take no new work and finish what they run. Only once SMS has nothing
//!   placed on one and its heartbeat shows nothing running does SMS ask the provider to stop it,
//!   and remove the node. A node is never stopped with work on it.
//! - **Limits.** The answer must be within `min..=max` (else it counts as the policy's failure and
//!   nothing changes); two actions are at least `cooldown_ms` apart. A policy that fails, or none,
//!   leaves the pool as it is (the slot's fallback), while drains already started complete.
//!
//! Events: `autoscaler.scaled` (`from`, `to`, `started` or `draining`), `autoscaler.removed`,
//! `autoscaler.start_failed`, `autoscaler.provider_failed`. Metrics: `sms_autoscaler_nodes{state}`,
//! `sms_autoscaler_desired`, `sms_autoscaler_actions_total{action,result}`.

mod act;
mod engine;
mod exec;
mod run;

pub use run::{Autoscale, Managed, Status, run};

use serde::{Deserialize, Serialize};
use spear_config::Problems;

pub use engine::NODE_LABEL;

/// `[autoscaler.provider]`: how SMS starts and stops nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `exec` (run `command` for each action), `podman` or `docker` (Spearlet containers
    /// through the engine's API).
    pub kind: String,
    /// `exec`: the program and its arguments. It is run with `SPEAR_SCALE_ACTION` (`start` or
    /// `stop`), `SPEAR_NODE_UUIDS` (comma-separated), `SPEAR_DESIRED` (the pool's size after the
    /// action) and `SPEAR_SMS_GRPC_ADDR`; exit status 0 means done.
    #[serde(default)]
    pub command: Vec<String>,
    /// How long one action may take (a command run; the engine calls of one action) before it
    /// is given up and counted as failed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// `podman`/`docker`: the engine's API socket (default `unix:///run/podman/podman.sock` or
    /// `unix:///var/run/docker.sock`).
    #[serde(default)]
    pub socket: Option<String>,
    /// `podman`/`docker`: the image holding `spearlet` (the project's `Containerfile` makes one).
    #[serde(default)]
    pub image: Option<String>,
    /// `podman`/`docker`: the command that starts the Spearlet in the image (default
    /// `["spearlet"]`); `--sms-addr ADDR --auto-register` and `args` follow it.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `podman`/`docker`: more arguments of the Spearlet.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// `podman`/`docker`: more environment of the Spearlet (say, `SPEARLET_SMS_TOKEN`).
    #[serde(default)]
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// `podman`/`docker`: the containers' network mode (default `host`).
    #[serde(default)]
    pub network: Option<String>,
    /// `podman`/`docker`: containers are named this followed by the node UUID (default
    /// `spear-node-`).
    #[serde(default)]
    pub name_prefix: Option<String>,
    /// `podman`/`docker`: the SMS address the Spearlets dial (default SMS's gRPC address as
    /// bound).
    #[serde(default)]
    pub sms_addr: Option<String>,
    /// `podman`/`docker`: seconds a container has to exit after SIGTERM before it is killed
    /// (default 30).
    #[serde(default)]
    pub stop_timeout_secs: Option<u64>,
}

impl ProviderConfig {
    /// The container-engine keys that are set (refused with `exec`).
    fn engine_keys(&self) -> Vec<&'static str> {
        [
            ("socket", self.socket.is_some()),
            ("image", self.image.is_some()),
            ("entrypoint", self.entrypoint.is_some()),
            ("args", self.args.is_some()),
            ("env", self.env.is_some()),
            ("network", self.network.is_some()),
            ("name_prefix", self.name_prefix.is_some()),
            ("sms_addr", self.sms_addr.is_some()),
            ("stop_timeout_secs", self.stop_timeout_secs.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }
}

fn default_timeout_ms() -> u64 {
    60_000
}

/// `[autoscaler]`. `policy` and `[autoscaler.config]` are the plugin runtime's (hot-reloaded
/// with the other plugin selections), the rest SMS's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalerConfig {
    /// The autoscaling policy plugin (`queue-depth` is built in).
    #[serde(skip_serializing)]
    pub policy: String,
    /// The policy's own settings, handed to its `configure`.
    #[serde(default, skip_serializing)]
    pub config: Option<toml::Table>,
    /// Milliseconds between two looks (100 to 3,600,000).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Fewest managed nodes.
    #[serde(default)]
    pub min: u32,
    /// Most managed nodes (1 to 1,000).
    pub max: u32,
    /// Waiting executions per node above which the pool grows (the policy's to use; 0 turns
    /// that rule of `queue-depth` off).
    #[serde(default = "default_threshold")]
    pub scale_up_threshold: u32,
    /// Milliseconds a node is idle before it may be drained (the policy's to use).
    #[serde(default = "default_scale_down_delay_ms")]
    pub scale_down_delay_ms: u64,
    /// Milliseconds between two scaling actions, enforced by SMS.
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
    /// Milliseconds a started node has to register before it is stopped and forgotten.
    #[serde(default = "default_start_timeout_ms")]
    pub start_timeout_ms: u64,
    /// The provider.
    pub provider: ProviderConfig,
}

fn default_interval_ms() -> u64 {
    5_000
}
fn default_threshold() -> u32 {
    4
}
fn default_scale_down_delay_ms() -> u64 {
    300_000
}
fn default_cooldown_ms() -> u64 {
    60_000
}
fn default_start_timeout_ms() -> u64 {
    120_000
}

/// The most managed nodes `max` may allow.
pub const MAX_NODES: u32 = 1_000;
/// A day in milliseconds: the longest cooldown and start timeout.
const DAY_MS: u64 = 86_400_000;

impl AutoscalerConfig {
    /// Add a problem for each key out of range.
    pub fn validate(&self, problems: &mut Problems) {
        if !(100..=3_600_000).contains(&self.interval_ms) {
            problems.invalid(
                "autoscaler.interval_ms",
                format!("must be 100 to 3600000, not {}", self.interval_ms),
            );
        }
        if !(1..=MAX_NODES).contains(&self.max) {
            problems.invalid(
                "autoscaler.max",
                format!("must be 1 to {MAX_NODES}, not {}", self.max),
            );
        }
        if self.min > self.max {
            problems.invalid(
                "autoscaler.min",
                format!("{} is above autoscaler.max ({})", self.min, self.max),
            );
        }
        if !(1_000..=DAY_MS).contains(&self.start_timeout_ms)
            || self.start_timeout_ms <= self.provider.timeout_ms
        {
            problems.invalid(
                "autoscaler.start_timeout_ms",
                format!(
                    "must be 1000 to {DAY_MS}, and above autoscaler.provider.timeout_ms ({}), \
                     not {}",
                    self.provider.timeout_ms, self.start_timeout_ms
                ),
            );
        }
        if self.cooldown_ms > DAY_MS {
            problems.invalid(
                "autoscaler.cooldown_ms",
                format!("must be at most {DAY_MS}, not {}", self.cooldown_ms),
            );
        }
        if self.scale_down_delay_ms > 30 * DAY_MS {
            problems.invalid(
                "autoscaler.scale_down_delay_ms",
                format!(
                    "must be at most {}, not {}",
                    30 * DAY_MS,
                    self.scale_down_delay_ms
                ),
            );
        }
        let p = &self.provider;
        match p.kind.as_str() {
            "exec" => {
                if p.command.first().is_none_or(|c| c.trim().is_empty()) {
                    problems.invalid(
                        "autoscaler.provider.command",
                        "must name the program to run (kind = \"exec\")",
                    );
                }
                for key in p.engine_keys() {
                    problems.invalid(
                        &format!("autoscaler.provider.{key}"),
                        "is a podman/docker key; kind = \"exec\" runs `command`",
                    );
                }
            }
            "podman" | "docker" => {
                if !p.command.is_empty() {
                    problems.invalid(
                        "autoscaler.provider.command",
                        format!(
                            "is the exec provider's; kind = \"{}\" starts `image` (entrypoint, \
                             args)",
                            p.kind
                        ),
                    );
                }
                if p.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
                    problems.invalid(
                        "autoscaler.provider.image",
                        format!("must name the Spearlet image (kind = \"{}\")", p.kind),
                    );
                }
                if let Some(s) = &p.socket
                    && !(s.starts_with("unix://") || s.starts_with('/'))
                {
                    problems.invalid(
                        "autoscaler.provider.socket",
                        format!("`{s}`: only unix sockets (unix:///path or /path)"),
                    );
                }
                if p.entrypoint.as_ref().is_some_and(|e| e.is_empty()) {
                    problems.invalid("autoscaler.provider.entrypoint", "must not be empty");
                }
                if p.name_prefix.as_ref().is_some_and(|n| {
                    !n.starts_with(|c: char| c.is_ascii_alphanumeric())
                        || !n
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                }) {
                    problems.invalid(
                        "autoscaler.provider.name_prefix",
                        "must start with a letter or digit, then letters, digits, '-', '_' or '.'",
                    );
                }
                if p.stop_timeout_secs
                    .is_some_and(|t| t.saturating_mul(1000) >= p.timeout_ms.min(120_000))
                {
                    problems.invalid(
                        "autoscaler.provider.stop_timeout_secs",
                        "must be shorter than autoscaler.provider.timeout_ms (and 120 s, the \
                         engine's request limit)",
                    );
                }
                if p.env
                    .as_ref()
                    .is_some_and(|e| e.contains_key("SPEARLET_NODE_UUID"))
                {
                    problems.invalid(
                        "autoscaler.provider.env",
                        "SPEARLET_NODE_UUID is set by SMS (each node's own)",
                    );
                }
            }
            other => problems.invalid(
                "autoscaler.provider.kind",
                format!("`{other}` is not a provider SMS has (exec, podman, docker)"),
            ),
        }
        if !(1_000..=3_600_000).contains(&p.timeout_ms) {
            problems.invalid(
                "autoscaler.provider.timeout_ms",
                format!("must be 1000 to 3600000, not {}", p.timeout_ms),
            );
        }
    }

    /// The limits a policy is shown.
    pub fn limits(&self) -> spear_plugin_api::ScaleLimits {
        spear_plugin_api::ScaleLimits {
            min: self.min,
            max: self.max,
            scale_up_threshold: self.scale_up_threshold,
            scale_down_delay_ms: self.scale_down_delay_ms,
            cooldown_ms: self.cooldown_ms,
        }
    }
}
