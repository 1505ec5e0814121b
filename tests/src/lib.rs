//! Helpers shared by the integration tests, the conformance suite and the benchmarks: where the
//! guest builds are, and small builders for targets, requests and host configs.

pub mod certs;
pub mod etcd;
pub mod extism_wat;
pub mod h2proxy;
pub mod http_server;
pub mod logs;
pub mod podman;
pub mod process;
pub mod storage_contract;
use std::path::{Path, PathBuf};

use spear_plugin_api::{
    InstanceState, InstanceStats, Label, NodePressure, Request, Resources, Target,
};

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Path of a built guest: `guest("component", "least-connections.wasm")`.
pub fn guest(form: &str, file: &str) -> PathBuf {
    Path::new(GUESTS).join(form).join(file)
}

/// A healthy target with `cpu` millicores and `mem` MiB, all available, labelled `zone=z{id % 3}`.
pub fn target(id: u64, cpu: u64, mem: u64) -> Target {
    let r = Resources {
        cpu_millis: cpu,
        memory_mb: mem,
        disk_mb: 10_000,
    };
    Target {
        id,
        name: format!("node-{id}"),
        labels: vec![Label::new("zone", format!("z{}", id % 3))],
        capacity: r,
        available: r,
        active: 0,
        weight: 1,
        healthy: true,
    }
}

/// `n` targets with ids `1..=n`, each 4 cores and 8 GiB.
pub fn targets(n: u64) -> Vec<Target> {
    (1..=n).map(|id| target(id, 4000, 8192)).collect()
}

/// A request for 100 millicores and 64 MiB with no affinity.
pub fn request(id: u64) -> Request {
    Request {
        id,
        task: format!("task-{}", id % 7),
        labels: vec![Label::new("app", format!("app-{}", id % 5))],
        needs: Resources {
            cpu_millis: 100,
            memory_mb: 64,
            disk_mb: 0,
        },
        required: vec![],
        preferred: vec![],
    }
}

/// Requests with ids `first..first + n`.
pub fn requests(first: u64, n: u64) -> Vec<Request> {
    (first..first + n).map(request).collect()
}

/// An instance for reclamation tests.
pub fn instance(
    id: u64,
    task: &str,
    state: InstanceState,
    idle_ms: u64,
    memory_mb: u64,
) -> InstanceStats {
    InstanceStats {
        id,
        task: task.into(),
        state,
        idle_ms,
        age_ms: idle_ms + 1000,
        memory_bytes: memory_mb * 1024 * 1024,
        invocations: 20,
        errors: 0,
        recent_errors: 0,
        recent_invocations: 20,
    }
}

/// Node figures for reclamation tests.
pub fn node(total_mb: u64, used_mb: u64) -> NodePressure {
    NodePressure {
        memory_total_bytes: total_mb * 1024 * 1024,
        memory_used_bytes: used_mb * 1024 * 1024,
        cpu_load_permille: 500,
        now_ms: 1_700_000_000_000,
    }
}

/// A plugin directory and config file in a temporary folder.
pub struct Sandbox {
    /// The temporary folder (removed on drop).
    pub root: tempfile::TempDir,
}

impl Sandbox {
    /// An empty sandbox with a `plugins/` directory.
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("plugins")).expect("plugins dir");
        Self { root }
    }

    /// The plugin directory.
    pub fn plugins(&self) -> PathBuf {
        self.root.path().join("plugins")
    }

    /// The config file path.
    pub fn config(&self) -> PathBuf {
        self.root.path().join("host.toml")
    }

    /// Copy a built guest into the plugin directory as `name`.
    pub fn install(&self, form: &str, file: &str, name: &str) -> PathBuf {
        let dest = self.plugins().join(name);
        // Write to a hidden name then rename, as a careful operator (or `install`) would.
        let tmp = self.plugins().join(format!(".{name}.tmp"));
        std::fs::copy(guest(form, file), &tmp).expect("copy guest");
        std::fs::rename(&tmp, &dest).expect("rename guest");
        dest
    }

    /// Write the config file (atomically, by rename).
    pub fn write_config(&self, text: &str) {
        let tmp = self.root.path().join(".host.toml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config()).expect("rename config");
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// A `[plugins]` section for a sandbox, with `extra` appended.
pub fn host_config(watch: bool, extra: &str) -> String {
    format!(
        "[plugins]\ndir = \"plugins\"\nwatch = {watch}\ncall_timeout_ms = 50\nsetup_timeout_ms = 5000\nmemory_limit_mb = 64\nquarantine_after = 3\n\n{extra}"
    )
}

/// The median and 99th percentile of `samples` (benches print these).
pub fn percentiles(
    mut samples: Vec<std::time::Duration>,
) -> (std::time::Duration, std::time::Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

/// Print `what` with its median and 99th percentile, aligned in `width` columns.
pub fn show_percentiles(
    what: &str,
    width: usize,
    (p50, p99): (std::time::Duration, std::time::Duration),
) {
    println!("{what:<width$} p50 {p50:>12.3?}  p99 {p99:>12.3?}");
}
