//! `container`: runs containers through the Docker Engine API (bollard), so Docker and Podman
//! (`podman system service`) both serve it.
//!
//! An [`ExecSpec`] becomes one container:
//! - `entry` is the image; when `artifact` is the path of an image tarball (docker-archive, as
//!   `docker save`/`podman save` write) it is loaded first (once per file version), and an empty
//!   `entry` runs the image the tarball names. Images are never pulled: a missing one is an error
//!   that says how to load it;
//! - `args` are the command (the image's default when empty), `env`, `working_dir`; `stdin` bytes
//!   are written to the container's standard input, which is then closed;
//! - `memory_limit_mb` → `HostConfig.Memory` (else `default_memory_mb`, 512 MiB), `cpu_millis` →
//!   `NanoCpus`, `network == false` → network mode `none`;
//! - every container drops all capabilities (`cap_add` gives some back), cannot gain privileges
//!   (`no_new_privileges`, default true), may have at most `pids_limit` processes (512), and with
//!   `read_only_rootfs` its root file system is read-only;
//! - at `timeout_ms` the container gets SIGTERM, then SIGKILL after `stop_grace_ms`, and the result
//!   says `TimedOut`. Note that a container's PID 1 ignores SIGTERM unless it handles it;
//! - standard output and error are read from the attach stream as they come, each kept up to
//!   `output_cap_bytes` (0 = 16 MiB), the rest dropped and flagged as truncated;
//! - exit codes 129–159 are reported as `Signaled(code − 128)`, an OOM kill the engine reports as
//!   `Failed("out of memory: …")` (Podman 4.3 on cgroup v1 does not report them: there an OOM kill
//!   is `Signaled(9)`), other codes as `Exited(code)`.
//!
//! The handle is the container's name, `spear-<execution id>` (see `label_prefix`), and every
//! container is labelled `spear.managed=true`, `spear.execution=<id>` (plus its deadline and
//! output cap), so that after an agent restart `recover(handle)` re-attaches to a container that
//! still runs (its output is then read from the engine's logs and its time limit still holds) or
//! collects the result of one that has ended; `destroy` removes the container (also one that was
//! never recovered, when it carries the managed label). Containers outlive the executor.
//!
//! Settings (`configure`, all optional): `{"socket": "unix:///run/spear-podman/podman.sock",
//! "stop_grace_ms": 2000, "label_prefix": "spear", "cap_add": [], "no_new_privileges": true,
//! "pids_limit": 512, "default_memory_mb": 512, "read_only_rootfs": false}`. Without `socket`: `DOCKER_HOST`, else the
//! first of `/run/spear-podman/podman.sock`, `/run/podman/podman.sock`, `/var/run/docker.sock`
//! that exists. Only unix sockets are supported.
//!
//! bollard is asynchronous: the executor keeps a small private Tokio runtime and blocks on it in
//! the trait's methods, which may be called from several threads at once. Podman's own container
//! states (`stopped`, `configured`, …), which its Docker-compatible API lets through, are mapped to
//! Docker's. `stats` is the engine's one-shot sample (memory usage, total CPU time).
//!
//! A Podman for the tests: `tests/podman/setup.sh` (private configuration and storage under
//! `/var/lib/spear-podman`, socket `/run/spear-podman/podman.sock`).

#![warn(missing_docs)]

mod engine;
mod image;
mod instances;
mod lifecycle;
mod spec;
mod supervise;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::StatsOptionsBuilder;
use futures_util::StreamExt;
use spear_plugin_api::executor::{
    Capabilities, ExecResult, ExecSpec, ExecState, ExecStats, InstanceSpec, InvokeFailure,
    PAUSE_SIGNAL, RESUME_SIGNAL,
};
use spear_plugin_api::{Executor, PluginError, PluginInfo, PluginKind, parse_config};

use crate::engine::Engine;
use crate::image::LoadedImages;
use crate::instances::Workers;
use crate::spec::{Hardening, Labels};
use crate::supervise::{Entry, Table, supervise};

/// Sockets tried, in order, when neither the settings nor `DOCKER_HOST` name one.
const KNOWN_SOCKETS: &[&str] = &[
    "/run/spear-podman/podman.sock",
    "/run/podman/podman.sock",
    "/var/run/docker.sock",
];

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    socket: Option<String>,
    stop_grace_ms: u64,
    label_prefix: String,
    cap_add: Vec<String>,
    no_new_privileges: bool,
    pids_limit: i64,
    default_memory_mb: u64,
    read_only_rootfs: bool,
}

impl Config {
    fn hardening(&self) -> Hardening {
        Hardening {
            cap_add: self.cap_add.clone(),
            no_new_privileges: self.no_new_privileges,
            pids_limit: self.pids_limit,
            default_memory_mb: self.default_memory_mb,
            read_only_rootfs: self.read_only_rootfs,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let h = Hardening::default();
        Self {
            socket: None,
            stop_grace_ms: 2_000,
            label_prefix: "spear".into(),
            cap_add: h.cap_add,
            no_new_privileges: h.no_new_privileges,
            pids_limit: h.pids_limit,
            default_memory_mb: h.default_memory_mb,
            read_only_rootfs: h.read_only_rootfs,
        }
    }
}

/// The socket used when the settings name none.
fn default_socket() -> String {
    if let Ok(host) = std::env::var("DOCKER_HOST")
        && !host.is_empty()
    {
        return host;
    }
    let found = KNOWN_SOCKETS.iter().find(|p| Path::new(p).exists());
    format!("unix://{}", found.unwrap_or(&KNOWN_SOCKETS[0]))
}

/// The container executor.
pub struct ContainerExecutor {
    rt: Option<tokio::runtime::Runtime>,
    engine: Engine,
    labels: Labels,
    grace: Duration,
    table: Arc<Table>,
    images: LoadedImages,
    hardening: Hardening,
    workers: Workers,
}

impl std::fmt::Debug for ContainerExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContainerExecutor({})", self.engine.socket)
    }
}

impl Default for ContainerExecutor {
    fn default() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("spear-container")
            .enable_all()
            .build()
            .expect("a Tokio runtime for the container executor");
        let config = Config::default();
        Self {
            rt: Some(rt),
            engine: Engine::new(&default_socket())
                .unwrap_or_else(|_| Engine::new(KNOWN_SOCKETS[0]).expect("a unix socket")),
            labels: Labels::new(&config.label_prefix),
            grace: Duration::from_millis(config.stop_grace_ms),
            table: Arc::default(),
            images: LoadedImages::default(),
            hardening: config.hardening(),
            workers: Workers::default(),
        }
    }
}

impl Drop for ContainerExecutor {
    fn drop(&mut self) {
        // Worker containers serve no one without this executor: removed (it waits for that).
        self.workers.stop_all();
        // Otherwise never block the dropping thread; containers go on running (see `recover`).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl ContainerExecutor {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the executor")
    }

    fn unknown(handle: &str) -> PluginError {
        PluginError::new(format!(
            "no execution {handle} here (after an agent restart, recover it first)"
        ))
    }
}

impl Executor for ContainerExecutor {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "container".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Executor,
            description: "Runs containers through the Docker Engine API (Docker or Podman), \
                          with limits, timeouts, capped logs and recovery after a restart"
                .into(),
            config_schema: r#"{"type":"object","additionalProperties":false,"properties":{"socket":{"type":"string"},"stop_grace_ms":{"type":"integer","minimum":0},"label_prefix":{"type":"string","minLength":1},"cap_add":{"type":"array","items":{"type":"string"}},"no_new_privileges":{"type":"boolean"},"pids_limit":{"type":"integer","minimum":0},"default_memory_mb":{"type":"integer","minimum":0},"read_only_rootfs":{"type":"boolean"}}}"#.into(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            executable_type: "container".into(),
            signals: true,
            recover: true,
            memory_limit: true,
            cpu_limit: true,
            network_isolation: true,
            instances: true,
            pause: true,
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let config = parse_config::<Config>(config)?;
        let prefix = &config.label_prefix;
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            return Err(PluginError::new(format!(
                "invalid configuration: label_prefix `{prefix}`: use letters, digits and dots"
            )));
        }
        let hardening = config.hardening();
        hardening
            .check()
            .map_err(|e| PluginError::new(format!("invalid configuration: {e}")))?;
        self.engine = Engine::new(&config.socket.unwrap_or_else(default_socket))?;
        self.hardening = hardening;
        self.labels = Labels::new(prefix);
        self.grace = Duration::from_millis(config.stop_grace_ms);
        Ok(())
    }

    fn start(&self, spec: &ExecSpec) -> Result<String, PluginError> {
        if spec.entry.is_empty() && spec.artifact.is_none() {
            return Err(PluginError::new(
                "invalid configuration: entry (the image) is empty and there is no image tarball",
            ));
        }
        let name = self.labels.container_name(&spec.execution_id);
        {
            let mut table = self.table.lock();
            if table.contains_key(&name) {
                return Err(PluginError::new(format!(
                    "execution {} is already running here",
                    spec.execution_id
                )));
            }
            table.insert(name.clone(), Entry::default());
        }
        let watch = match self.rt().block_on(self.launch(spec, &name)) {
            Ok(w) => w,
            Err(e) => {
                self.table.lock().remove(&name);
                return Err(e);
            }
        };
        let task = self.rt().spawn(supervise(watch, self.table.clone()));
        if let Some(entry) = self.table.lock().get_mut(&name)
            && entry.result.is_none()
        {
            entry.watcher = Some(task.abort_handle());
        }
        Ok(name)
    }

    fn wait(&self, handle: &str, timeout_ms: u64) -> Result<Option<ExecResult>, PluginError> {
        self.table
            .wait(handle, Duration::from_millis(timeout_ms))
            .map_err(|()| Self::unknown(handle))
    }

    fn signal(&self, handle: &str, signal: i32) -> Result<(), PluginError> {
        match self.table.lock().get(handle) {
            // A live instance is paused and resumed this way ([`Executor::pause_instance`]).
            None if signal == PAUSE_SIGNAL || signal == RESUME_SIGNAL => {
                return self.pause_worker(handle, signal == PAUSE_SIGNAL);
            }
            None => return Err(Self::unknown(handle)),
            Some(e) if e.result.is_some() => return Ok(()),
            Some(_) => {}
        }
        self.rt().block_on(async {
            let docker = self.engine.client()?;
            self.engine.kill(&docker, handle, signal).await
        })
    }

    fn stop(&self, handle: &str, grace_ms: u64) -> Result<(), PluginError> {
        self.signal(handle, 15)?;
        if self.wait(handle, grace_ms)?.is_none() {
            self.signal(handle, 9)?;
            self.wait(handle, 10_000)?;
        }
        Ok(())
    }

    fn inspect(&self, handle: &str) -> Result<ExecState, PluginError> {
        Ok(match self.table.lock().get(handle) {
            None => ExecState::Unknown,
            Some(Entry {
                result: Some(r), ..
            }) => ExecState::Finished(r.clone()),
            Some(_) => ExecState::Running,
        })
    }

    fn stats(&self, handle: &str) -> Result<ExecStats, PluginError> {
        match self.table.lock().get(handle) {
            None => return Err(Self::unknown(handle)),
            Some(e) if e.result.is_some() => return Ok(ExecStats::default()),
            Some(_) => {}
        }
        self.rt().block_on(async {
            let docker = self.engine.client()?;
            let options = StatsOptionsBuilder::new()
                .stream(false)
                .one_shot(true)
                .build();
            let stats = docker
                .stats(handle, Some(options))
                .next()
                .await
                .ok_or_else(|| PluginError::new(format!("the engine sent no stats for {handle}")))?
                .map_err(|e| self.engine.error("stats", e))?;
            Ok(ExecStats {
                memory_bytes: stats.memory_stats.and_then(|m| m.usage).unwrap_or(0),
                cpu_micros: stats
                    .cpu_stats
                    .and_then(|c| c.cpu_usage)
                    .and_then(|u| u.total_usage)
                    .unwrap_or(0)
                    / 1_000,
            })
        })
    }

    fn recover(&self, handle: &str) -> Result<bool, PluginError> {
        if self.table.lock().contains_key(handle) {
            return Ok(true);
        }
        let Some((is_running, watch)) = self.rt().block_on(self.rediscover(handle))? else {
            return Ok(false);
        };
        self.table
            .lock()
            .insert(handle.to_string(), Entry::default());
        if is_running {
            let task = self.rt().spawn(supervise(watch, self.table.clone()));
            if let Some(entry) = self.table.lock().get_mut(handle)
                && entry.result.is_none()
            {
                entry.watcher = Some(task.abort_handle());
            }
        } else {
            // It has ended: collect its result now, so that it is there when this returns.
            self.rt().block_on(supervise(watch, self.table.clone()));
        }
        Ok(true)
    }

    fn destroy(&self, handle: &str) -> Result<(), PluginError> {
        let entry = self.table.lock().remove(handle);
        match entry {
            Some(entry) => {
                if let Some(watcher) = entry.watcher {
                    watcher.abort();
                }
            }
            None => {
                // Not recovered: remove it only if it is one of ours (a leftover).
                let ours = self.rt().block_on(async {
                    let docker = self.engine.client()?;
                    self.managed(&docker, handle).await
                })?;
                if ours.is_none() {
                    return Ok(());
                }
            }
        }
        self.rt().block_on(self.remove(handle))
    }

    fn start_instance(&self, spec: &InstanceSpec) -> Result<String, PluginError> {
        self.start_worker(spec)
    }

    fn invoke(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        timeout_ms: u64,
    ) -> Result<Vec<u8>, InvokeFailure> {
        self.invoke_worker(handle, function, payload, timeout_ms, None)
    }

    fn invoke_stream(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        timeout_ms: u64,
        sink: spear_plugin_api::executor::Sink<'_>,
    ) -> Result<Vec<u8>, InvokeFailure> {
        self.invoke_worker(handle, function, payload, timeout_ms, Some(sink))
    }

    fn stop_instance(&self, handle: &str) -> Result<(), PluginError> {
        self.stop_worker(handle)
    }
}

#[cfg(feature = "native-plugin")]
spear_plugin_api::export_native_executor!(ContainerExecutor);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(executor, ContainerExecutor)
}
