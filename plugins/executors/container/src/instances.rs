//! The executor's long-lived instances: containers that run a worker (docs/workers.md) and serve
//! invocations over their attached standard input and output, so that a hot invocation costs a
//! message through the engine, not a container start.
//!
//! `start_instance` creates the container (the image of `entry`, or of the `artifact` tarball,
//! loaded once), attaches to its standard input and output (standard error is not attached and
//! not logged: the container's log driver is `none`), starts it and waits for the worker's hello.
//! The container gets what an execution's container gets (no capabilities, no new privileges,
//! the pids limit, the memory limit of the spec or `default_memory_mb`), no network, and is
//! removed when it stops (`AutoRemove`). Its standard input is closed when the attach connection
//! closes (`StdinOnce`), so a worker that exits at the end of its input (as the protocol's
//! examples do) goes with a Spearlet that dies.
//!
//! A worker that dies, breaks the protocol or misses a deadline is lost: its container is
//! removed and the host starts another. Containers of a host process that is gone (a crashed
//! Spearlet whose workers ignored the end of their input) are removed at the executor's first
//! start: each worker container is labelled with its host (`<prefix>.worker_of =
//! hostname:pid`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::HostConfigLogConfig;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
};
use futures_util::{Stream, StreamExt};
use spear_plugin_api::PluginError;
use spear_plugin_api::executor::{ExecSpec, InstanceSpec, InvokeFailure};
use spear_plugin_api::slots::Slots;
use spear_plugin_api::worker::{Frames, Reply, Sink, WorkerError, hello, reply, request};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::ContainerExecutor;
use crate::engine::Engine;
use crate::spec::create_body;

/// Time allowed for a worker's hello when the spec gives none (a container start included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest payload, each way, when the spec gives none.
const DEFAULT_MAX_PAYLOAD: u64 = 16 << 20;
/// Largest payload a spec may ask for.
const MAX_PAYLOAD: u64 = 256 << 20;
/// A deadline far enough to mean "none".
const NO_DEADLINE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Time the sweep of orphaned workers may take (it is tried again at the next start if not done).
const SWEEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Time a lost or stopped worker's container removal may take.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

type Output =
    std::pin::Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
type Input = std::pin::Pin<Box<dyn AsyncWrite + Send>>;

/// The executor's worker containers.
pub(crate) struct Workers {
    slots: Slots<Worker>,
    next: AtomicU64,
    swept: AtomicBool,
    /// Random, per executor: in its containers' names, so that an executor loaded anew (a live
    /// swap, in the same process) never makes the name of one of its predecessor's workers.
    run: u64,
}

impl Default for Workers {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        Self {
            slots: Slots::default(),
            next: AtomicU64::new(0),
            swept: AtomicBool::new(false),
            run: h.finish(),
        }
    }
}

impl Workers {
    /// Remove every worker container now (the executor is going away).
    pub(crate) fn stop_all(&self) {
        drop(self.slots.take_all());
    }
}

/// One worker container; its drop removes the container.
struct Worker {
    conn: Conn,
    name: String,
    engine: Engine,
    rt: tokio::runtime::Handle,
    /// Frozen by the engine (`pause`) until resumed.
    paused: bool,
}

impl Worker {
    /// Freeze the container (`pause`: it keeps its memory and uses no CPU) or thaw it. Pausing
    /// a paused worker, or resuming a running one, does nothing. A worker that cannot be thawed
    /// is lost.
    async fn pause(&mut self, pause: bool) -> Result<(), PluginError> {
        if let Some(why) = &self.conn.error {
            return Err(PluginError::new(
                WorkerError::Broken(why.clone()).to_string(),
            ));
        }
        if self.paused == pause {
            return Ok(());
        }
        let docker = self.engine.client()?;
        let done = if pause {
            docker.pause_container(&self.name).await
        } else {
            docker.unpause_container(&self.name).await
        };
        match done {
            Ok(()) => {
                self.paused = pause;
                Ok(())
            }
            Err(e) => {
                let e = self.engine.error(
                    if pause {
                        "pause container"
                    } else {
                        "unpause container"
                    },
                    e,
                );
                if pause {
                    // The engine may have frozen it all the same (a reply lost, a timeout):
                    // thawed, so that it never stays frozen unknown to the executor.
                    let _ = docker.unpause_container(&self.name).await;
                } else {
                    self.conn.error = Some(format!("it could not be resumed: {e}"));
                }
                Err(e)
            }
        }
    }
}

/// The attach streams of a worker container, and where the protocol is on them.
struct Conn {
    output: Output,
    input: Input,
    frames: Frames,
    next_id: u64,
    max_payload: usize,
    error: Option<String>,
}

impl Conn {
    /// Run `function` on `payload`; with a `sink`, the request asks for pieces of output, each
    /// handed to `sink` as it comes (until it answers `false`), and the answer is the rest.
    async fn call(
        &mut self,
        function: &str,
        payload: &[u8],
        deadline: Duration,
        mut sink: Option<Sink<'_>>,
    ) -> Result<Vec<u8>, WorkerError> {
        if let Some(why) = &self.error {
            return Err(WorkerError::Broken(why.clone()));
        }
        let id = self.next_id;
        let stream = sink.is_some();
        let message = request(id, function, payload, self.max_payload, stream)?;
        self.next_id += 1;
        let exchange = async {
            self.input
                .write_all(&message)
                .await
                .map_err(|e| WorkerError::Died(format!("writing its input: {e}")))?;
            self.input
                .flush()
                .await
                .map_err(|e| WorkerError::Died(format!("writing its input: {e}")))?;
            loop {
                let (header, body) = self.read_message().await?;
                match reply(id, &header, body, stream)? {
                    Reply::Piece(piece) => {
                        if let Some(s) = sink.as_mut()
                            && !s(&piece)
                        {
                            sink = None;
                        }
                    }
                    Reply::Done(body) => return Ok(body),
                }
            }
        };
        let result = match tokio::time::timeout(deadline, exchange).await {
            Err(_) => Err(WorkerError::Deadline(deadline)),
            Ok(m) => m,
        };
        match result {
            Err(e) if !matches!(e, WorkerError::Function(_)) => {
                self.error = Some(e.to_string());
                Err(e)
            }
            other => other,
        }
    }

    async fn read_message(&mut self) -> Result<(Vec<u8>, Vec<u8>), WorkerError> {
        loop {
            if let Some(message) = self.frames.next_message()? {
                return Ok(message);
            }
            match self.output.next().await {
                None => return Err(WorkerError::Died("it closed its output".into())),
                Some(Err(e)) => {
                    return Err(WorkerError::Died(format!("its attach stream failed: {e}")));
                }
                Some(Ok(LogOutput::StdOut { message })) => self.frames.push(&message),
                // Standard error is not attached; anything else carries no frames.
                Some(Ok(_)) => {}
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Waits (without entering the runtime, so any thread may drop a worker) until the
        // container is gone, and with it its memory.
        let (engine, name, paused) = (self.engine.clone(), self.name.clone(), self.paused);
        let (done, gone) = std::sync::mpsc::channel();
        self.rt.spawn(async move {
            if paused {
                // Thawed first: an engine may refuse to kill a frozen container.
                if let Ok(docker) = engine.client() {
                    let _ = docker.unpause_container(&name).await;
                }
            }
            let _ = tokio::time::timeout(REMOVE_TIMEOUT, engine.remove(&name)).await;
            let _ = done.send(());
        });
        let _ = gone.recv_timeout(REMOVE_TIMEOUT + Duration::from_secs(1));
    }
}

impl ContainerExecutor {
    /// Start a worker container for `spec` and wait for its hello; its handle (the container's
    /// name).
    pub(crate) fn start_worker(&self, spec: &InstanceSpec) -> Result<String, PluginError> {
        if spec.entry.is_empty() && spec.artifact.is_none() {
            return Err(PluginError::new(
                "invalid configuration: entry (the image) is empty and there is no image tarball",
            ));
        }
        if spec.max_payload_bytes > MAX_PAYLOAD {
            return Err(PluginError::new(format!(
                "invalid configuration: max_payload_bytes {} is over {MAX_PAYLOAD}",
                spec.max_payload_bytes
            )));
        }
        let max_payload = usize::try_from(match spec.max_payload_bytes {
            0 => DEFAULT_MAX_PAYLOAD,
            n => n,
        })
        .unwrap_or(usize::MAX);
        let deadline = match spec.start_timeout_ms {
            0 => START_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let n = self.workers.next.fetch_add(1, Ordering::Relaxed);
        let name = self.labels.container_name(&format!(
            "worker-{}-{:016x}-{n}",
            spec.instance_id, self.workers.run
        ));
        if !self.workers.swept.load(Ordering::Acquire) {
            let swept = self.rt().block_on(async {
                tokio::time::timeout(SWEEP_TIMEOUT, self.sweep_orphans()).await
            });
            if matches!(swept, Ok(true)) {
                self.workers.swept.store(true, Ordering::Release);
            }
        }
        // Image and creation first, without the hello's deadline (a large tarball takes its
        // time; a create cut short could leave a container behind); then attach, start and
        // hello within it. A container this call did not create is never removed here.
        self.rt().block_on(self.create_worker(spec, &name))?;
        let rt = self.rt().handle().clone();
        let launched = self.rt().block_on(async {
            tokio::time::timeout(deadline, self.connect_worker(&name, max_payload))
                .await
                .unwrap_or_else(|_| {
                    Err(PluginError::new(format!(
                        "the worker did not start: no hello within {deadline:?}"
                    )))
                })
        });
        match launched {
            Ok(conn) => {
                let worker = Worker {
                    conn,
                    name: name.clone(),
                    engine: self.engine.clone(),
                    rt,
                    paused: false,
                };
                self.workers.slots.insert(name.clone(), worker);
                Ok(name)
            }
            Err(e) => {
                let _ = self.rt().block_on(async {
                    tokio::time::timeout(REMOVE_TIMEOUT, self.engine.remove(&name)).await
                });
                Err(e)
            }
        }
    }

    /// Run `function` on `payload` in worker `handle`; with a `sink`, pieces of output go to it
    /// as they come.
    pub(crate) fn invoke_worker(
        &self,
        handle: &str,
        function: &str,
        payload: &[u8],
        timeout_ms: u64,
        sink: Option<Sink<'_>>,
    ) -> Result<Vec<u8>, InvokeFailure> {
        let deadline = match timeout_ms {
            0 => NO_DEADLINE,
            ms => Duration::from_millis(ms),
        };
        let rt = self.rt();
        // A worker lost is removed when dropped, outside the table's lock.
        self.workers
            .slots
            .invoke(
                handle,
                |w| {
                    rt.block_on(async {
                        // A paused worker would never answer: it is resumed first.
                        if w.paused {
                            w.pause(false)
                                .await
                                .map_err(|e| WorkerError::Broken(e.to_string()))?;
                        }
                        w.conn.call(function, payload, deadline, sink).await
                    })
                },
                |w| w.conn.error.is_some(),
            )?
            .map_err(InvokeFailure::from)
    }

    /// Pause worker `handle`'s container (or resume it): refused while it serves an invocation.
    pub(crate) fn pause_worker(&self, handle: &str, pause: bool) -> Result<(), PluginError> {
        let rt = self.rt();
        self.workers
            .slots
            .invoke(
                handle,
                |w| rt.block_on(w.pause(pause)),
                |w| w.conn.error.is_some(),
            )
            .map_err(|f| PluginError::new(f.to_string()))?
    }

    /// Remove worker `handle`'s container (at once when idle, after its invocation when busy).
    pub(crate) fn stop_worker(&self, handle: &str) -> Result<(), PluginError> {
        self.workers.slots.stop(handle)
    }

    /// Create a worker container (its image loaded first when it comes as a tarball).
    async fn create_worker(&self, spec: &InstanceSpec, name: &str) -> Result<(), PluginError> {
        let engine = &self.engine;
        let docker = engine.client()?;
        let image = match &spec.artifact {
            Some(tarball) => {
                self.images
                    .ensure(engine, &docker, tarball, &spec.entry, false)
                    .await?
            }
            None => spec.entry.clone(),
        };
        let exec = ExecSpec {
            execution_id: spec.instance_id.clone(),
            task: spec.task.clone(),
            entry: image.clone(),
            args: spec.args.clone(),
            env: spec.env.clone(),
            memory_limit_mb: spec.memory_limit_mb,
            ..ExecSpec::default()
        };
        let mut labels = self.labels.of(&exec, 0, 0);
        // Not an execution: nothing recovers a worker.
        labels.remove(&self.labels.key("execution"));
        labels.insert(self.labels.key("instance"), spec.instance_id.clone());
        labels.insert(self.labels.key("worker_of"), owner());
        let mut body = create_body(&exec, &image, labels, &self.hardening);
        body.attach_stdin = Some(true);
        body.open_stdin = Some(true);
        body.stdin_once = Some(true);
        body.attach_stderr = Some(false);
        if let Some(host) = body.host_config.as_mut() {
            host.auto_remove = Some(true);
            host.log_config = Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            });
        }
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| match e {
                e if crate::engine::is_not_found(&e) => PluginError::new(format!(
                    "image `{image}` is not in the container engine at {}: load it first \
                     (`podman load -i FILE`) or give the image tarball as the task's artifact; \
                     images are never pulled from a registry",
                    engine.socket
                )),
                e => engine.error("create container", e),
            })?;
        Ok(())
    }

    /// Attach to and start a created worker container, and read its hello.
    async fn connect_worker(&self, name: &str, max_payload: usize) -> Result<Conn, PluginError> {
        let engine = &self.engine;
        let docker = engine.client()?;
        let options = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdin(true)
            .stdout(true)
            .stderr(false)
            .build();
        let attached = docker
            .attach_container(name, Some(options))
            .await
            .map_err(|e| engine.error("attach", e))?;
        docker
            .start_container(name, None)
            .await
            .map_err(|e| engine.error("start container", e))?;
        let mut conn = Conn {
            output: attached.output,
            input: attached.input,
            frames: Frames::new(max_payload),
            next_id: 1,
            max_payload,
            error: None,
        };
        match conn.read_message().await.and_then(|(h, p)| hello(&h, &p)) {
            Ok(()) => Ok(conn),
            // The caller removes the container.
            Err(e) => Err(PluginError::new(
                WorkerError::Start(e.to_string()).to_string(),
            )),
        }
    }

    /// Remove the worker containers of host processes on this machine that are gone; whether
    /// the engine could be asked.
    async fn sweep_orphans(&self) -> bool {
        let Ok(docker) = self.engine.client() else {
            return false;
        };
        let key = self.labels.key("worker_of");
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&std::collections::HashMap::from([(
                "label".to_string(),
                vec![key.clone()],
            )]))
            .build();
        let Ok(containers) = docker.list_containers(Some(options)).await else {
            return false;
        };
        let host = hostname();
        for c in containers {
            let of = c.labels.as_ref().and_then(|l| l.get(&key)).cloned();
            let Some((h, pid)) = of.as_deref().and_then(|o| o.rsplit_once(':')) else {
                continue;
            };
            let gone = h == host && !std::path::Path::new(&format!("/proc/{pid}")).exists();
            if let (true, Some(id)) = (gone, c.id.as_deref()) {
                let _ = self.engine.remove(id).await;
            }
        }
        true
    }
}

/// `hostname:pid` of this process, the label of the worker containers it starts.
fn owner() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
