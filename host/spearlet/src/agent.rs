//! The agent: one node's life with SMS.
//!
//! Start: plugins, state store, executors; recover or clean up what a previous run left; connect
//! (and register). Then three loops run until the agent drains: heartbeats with real figures, the
//! assignment stream (persisting its cursor, reconnecting with backoff, giving up after
//! `reconnect_total_timeout_ms`), and the reclamation loop. Results go through the
//! [`Reporter`](crate::reports::Reporter).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use spear_plugin_api::{NodePressure, PluginKind, StorageBackend};
use spear_plugin_runtime::PluginHost;
use spear_proto::v1;
use tokio::sync::watch;

use crate::artifacts::Artifacts;
use crate::config::{ConfigError, SpearletConfig};
use crate::error::{Error, Result};
use crate::executors::{Executors, LiveExecutors, Loaded};
use crate::figures;
use crate::pool::Pools;
use crate::reports::Reporter;
use crate::sms::{SmsLink, backoff, register_request, transient};
use crate::store::{Cursor, Store};

mod drain;
mod heartbeats;
mod swaps;

/// An execution running here.
#[derive(Debug, Clone)]
pub struct Active {
    /// The executor it runs on (kept across a swap of executors), when one serves its type.
    pub executor: Option<Loaded>,
    /// The executor handle, once started.
    pub handle: Option<String>,
    /// Cancelled by SMS, or handed back at a drain: do not report.
    pub silenced: bool,
    /// SMS preempted it (or the node drains and it checkpoints): stopped with a grace,
    /// reported as preempted with its checkpoint.
    pub preempted: bool,
    /// It keeps a checkpoint directory ([`crate::checkpoint`]).
    pub checkpoint: bool,
    /// With `preempted`: the time it has after SIGTERM to save its state.
    pub grace_ms: u64,
    /// With `preempted`: it was still running when it was told to stop (so it is reported
    /// preempted however it ends).
    pub signalled: bool,
}

/// The node agent.
#[derive(Debug)]
pub struct Agent {
    /// Configuration in force.
    pub config: SpearletConfig,
    /// Plugins (local strategy, reclamation policy, executors, storage).
    pub plugins: Arc<PluginHost>,
    /// Durable state.
    pub store: Store,
    /// SMS.
    pub sms: SmsLink,
    /// This node's UUID.
    pub node: String,
    /// The SMS session last seen on the assignment stream.
    pub session: Arc<RwLock<String>>,
    /// Executors by type, swapped live ([`LiveExecutors`]).
    pub executors: LiveExecutors,
    /// Instance pools.
    pub pools: Pools,
    /// Artifact cache.
    pub artifacts: Arc<Artifacts>,
    /// Process executions' private working directories.
    pub workdirs: crate::workdir::WorkDirs,
    /// Results on their way to SMS.
    pub reporter: Arc<Reporter>,
    /// Starts on their way to SMS.
    pub starts: Arc<crate::starts::Starts>,
    /// Executions running here, by id.
    pub running: std::sync::Mutex<HashMap<String, Active>>,
    /// Notices when this process stood still (queued work may have moved meanwhile).
    pub stall: Arc<crate::stall::StallWatch>,
    /// Global concurrency limit.
    pub slots: Arc<crate::slots::Slots>,
    /// Whether the assignment stream is up.
    pub connected: watch::Sender<bool>,
    /// Set when draining: no new work is taken.
    pub draining: watch::Sender<bool>,
    /// Fatal condition that ends the process (SMS lost for too long).
    pub fatal: watch::Sender<Option<String>>,
    /// Executor failures by executor, for `/metrics`.
    pub executor_failures: crate::metrics::ExecutorFailures,
    /// Invocations on live instances: task definitions and asynchronous results.
    pub functions: crate::functions::Functions,
    last_cpu: std::sync::Mutex<figures::CpuTimes>,
    /// The executable types SMS last took in a registration of this node (`None`: not yet).
    registered_types: std::sync::Mutex<Option<Vec<String>>>,
}

impl Agent {
    /// Build the agent: plugins, state store, executors, node identity. Does not contact SMS.
    pub async fn open(config: SpearletConfig) -> Result<Arc<Self>> {
        let runtime = config.runtime_config()?;
        let source = config.source.clone();
        let plugins = tokio::task::spawn_blocking(move || {
            PluginHost::with_builtins(runtime, source, crate::builtins::modules())
        })
        .await
        .map_err(|e| Error::Execution(e.to_string()))??;
        let data_dir = config.spearlet.storage.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| Error::Storage(format!("cannot create {}: {e}", data_dir.display())))?;
        let store = open_store(&config, &plugins).await?;
        let node = match (
            &config.spearlet.node_uuid,
            store.get::<String>("node/uuid").await?,
        ) {
            (configured, _) if !configured.is_empty() => configured.clone(),
            (_, Some(kept)) => kept,
            _ => uuid::Uuid::new_v4().to_string(),
        };
        store.put("node/uuid", &node).await?;
        let token = config.sms_token().map_err(ConfigError::from)?;
        let sms = SmsLink::new(
            &config.sms_endpoints(),
            config.connect_timeout(),
            token,
            config.sms_tls().map_err(ConfigError::from)?,
        )?;
        let session = Arc::new(RwLock::new(String::new()));
        let reporter = Reporter::new(
            store.clone(),
            sms.clone(),
            node.clone(),
            session.clone(),
            Duration::from_millis(config.spearlet.sms_connect_retry_ms),
        );
        let starts = crate::starts::Starts::new(
            sms.clone(),
            node.clone(),
            session.clone(),
            Duration::from_millis(config.spearlet.start_report_delay_ms),
        );
        let (cfg, host) = (config.clone(), plugins.clone());
        let executors = tokio::task::spawn_blocking(move || Executors::load(&cfg, &host))
            .await
            .map_err(|e| Error::Execution(e.to_string()))?;
        let workdirs = crate::workdir::WorkDirs::new(&data_dir).map_err(|e| {
            Error::Execution(format!(
                "cannot prepare the working directories in {}: {e}",
                data_dir.join("work").display()
            ))
        })?;
        // Validated with the config; read again here (the secret files may have changed).
        let (s3, minio) = config
            .spearlet
            .artifacts
            .object_stores(|k| std::env::var(k).ok())
            .map_err(|(key, reason)| Error::Artifact { uri: key, reason })?;
        let artifacts = Artifacts::new(
            &data_dir,
            store.clone(),
            config.spearlet.storage.max_cache_size_mb,
            config.spearlet.storage.max_object_size,
            sms.clone(),
            crate::artifacts::Rules {
                file_prefixes: config.spearlet.artifacts.file_prefixes.clone(),
                sms_http_addr: config.spearlet.sms_http_addr.clone(),
                fetch_timeout: Duration::from_millis(config.spearlet.artifacts.fetch_timeout_ms),
                objects: crate::artifacts::ObjectStores::new(s3, minio),
            },
        )?;
        let limits = &config.spearlet.limits;
        let stall = crate::stall::StallWatch::new(Duration::from_secs(
            config.spearlet.heartbeat_interval.max(1),
        ));
        let pools = Pools::new(
            plugins.clone(),
            limits.max_instances_per_task,
            limits.max_instances,
        );
        artifacts.protect(pools.artifacts_in_use());
        let functions = crate::functions::Functions::new(
            sms.clone(),
            &config.spearlet.functions,
            limits.max_instances_per_task,
        );
        Ok(Arc::new(Self {
            functions,
            pools,
            slots: crate::slots::Slots::new(limits.max_concurrent as usize),
            config,
            plugins,
            store,
            sms,
            node,
            session,
            executors: LiveExecutors::new(executors),
            artifacts,
            workdirs,
            reporter,
            starts,
            running: std::sync::Mutex::new(HashMap::new()),
            stall,
            connected: watch::channel(false).0,
            draining: watch::channel(false).0,
            fatal: watch::channel(None).0,
            executor_failures: crate::metrics::ExecutorFailures::default(),
            last_cpu: std::sync::Mutex::new(figures::cpu_times()),
            registered_types: std::sync::Mutex::new(None),
        }))
    }

    /// The running-executions table.
    pub fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address SMS should reach this node at.
    fn advertised(&self) -> (String, u16) {
        let grpc = self.config.spearlet.grpc.addr;
        let ip = if !self.config.spearlet.advertise_ip.is_empty() {
            self.config.spearlet.advertise_ip.clone()
        } else if grpc.ip().is_unspecified() {
            "127.0.0.1".into()
        } else {
            grpc.ip().to_string()
        };
        (ip, grpc.port())
    }

    /// Register this node with SMS.
    pub async fn register(&self) -> Result<()> {
        let (ip, port) = self.advertised();
        let types = self.executors.get().types();
        let mut req = register_request(
            &self.node,
            &ip,
            port,
            &self.config.node_name(),
            &self.config.spearlet.labels,
            figures::capacity(&self.config.spearlet.storage.data_dir),
            types.clone(),
        );
        // SMS places no more than this (plus its prefetch) here at once.
        req.slots = self.config.spearlet.limits.max_concurrent;
        // A standby SMS names its leader: registration goes there (at most once per address).
        let mut tries = 0;
        loop {
            match self.sms.nodes().register_node(req.clone()).await {
                Ok(_) => break,
                Err(s) if tries < self.sms.len() && self.sms.follow(&s) => tries += 1,
                Err(s) => {
                    let hint = crate::sms::token_hint(&s);
                    return Err(self
                        .sms
                        .error(format!("registration refused: {}{hint}", s.message())));
                }
            }
        }
        tracing::info!(node = %self.node, sms = %self.sms.addr(), "registered");
        *self
            .registered_types
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(types);
        Ok(())
    }

    /// Register again when the executable types in force differ from those SMS last took (an
    /// executor swap added or removed one), so that SMS places work of a new type here.
    pub(crate) async fn register_new_types(&self) {
        if !self.config.spearlet.auto_register {
            return;
        }
        let now = self.executors.get().types();
        let stale = self
            .registered_types
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|registered| *registered != now);
        if stale {
            match self.register().await {
                Ok(()) => {
                    tracing::info!(executors = %now.join(","), "registered again: its executable types changed")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registering the new executable types failed; retried at the next heartbeat")
                }
            }
        }
    }

    /// Start-up against SMS: with `--sms-addr`, connect (and register) now or fail; otherwise the
    /// loops connect in the background.
    pub async fn connect_at_start(&self) -> Result<()> {
        if !self.config.sms_required {
            return Ok(());
        }
        let s = &self.config.spearlet;
        self.sms
            .wait_connected(
                Duration::from_millis(s.sms_connect_retry_ms),
                Duration::from_millis(s.sms_connect_timeout_ms),
            )
            .await?;
        if s.auto_register {
            self.register().await?;
        }
        Ok(())
    }

    /// Start the background loops: reports, heartbeats, assignments, reclamation, the stall
    /// watch. Each is guarded: a panic in one is fatal ([`crate::guard`]).
    pub fn spawn_loops(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let fatal = || {
            let me = self.clone();
            move |why: String| {
                me.fatal.send_replace(Some(why));
            }
        };
        use crate::guard::guarded;
        vec![
            guarded("reporter", self.reporter.clone().run(), fatal()),
            guarded("starts", self.starts.clone().run(), fatal()),
            guarded("heartbeats", self.clone().heartbeats(), fatal()),
            guarded("assignments", self.clone().assignments(), fatal()),
            guarded("reclamation", self.clone().reclamation(), fatal()),
            guarded("executor swaps", self.clone().executor_swaps(), fatal()),
            guarded(
                "warm-ups",
                crate::functions::ahead::run(self.clone()),
                fatal(),
            ),
            guarded("stall watch", self.stall.clone().run(), fatal()),
        ]
    }

    /// Follow the assignment stream, reconnecting with backoff.
    async fn assignments(self: Arc<Self>) {
        let s = &self.config.spearlet;
        let retry = Duration::from_millis(s.sms_connect_retry_ms);
        let give_up = (s.reconnect_total_timeout_ms > 0)
            .then(|| Duration::from_millis(s.reconnect_total_timeout_ms));
        let mut draining = self.draining.subscribe();
        let mut lost_since: Option<Instant> = None;
        let mut attempt = 0u32;
        // Moves to another SMS address since the last backoff.
        let mut hops = 0;
        loop {
            if *draining.borrow() {
                return;
            }
            let after = self
                .store
                .get::<Cursor>("cursor")
                .await
                .ok()
                .flatten()
                .unwrap_or_default()
                .cursor;
            // Assignments of this stream are trusted until the next stall; the stream is reopened
            // after one (see `stall`).
            let epoch = self.stall.epoch();
            let mut stalls = self.stall.subscribe();
            let opened = self
                .sms
                .executions()
                .assignments(v1::AssignmentsRequest {
                    node_uuid: self.node.clone(),
                    after,
                })
                .await;
            match opened {
                Ok(stream) => {
                    if let Some(session) = stream
                        .metadata()
                        .get("spear-session")
                        .and_then(|v| v.to_str().ok())
                    {
                        self.set_session(session);
                    }
                    attempt = 0;
                    lost_since = None;
                    self.connected.send_replace(true);
                    tracing::info!(sms = %self.sms.addr(), "assignment stream open");
                    let mut stream = stream.into_inner();
                    loop {
                        tokio::select! {
                            msg = stream.message() => match msg {
                                Ok(Some(a)) => self.clone().take(a, epoch).await,
                                Ok(None) => break,
                                Err(e) => {
                                    tracing::warn!(error = %e.message(), "assignment stream broken");
                                    self.sms.follow(&e);
                                    break;
                                }
                            },
                            _ = stalls.changed() => {
                                tracing::info!("reopening the assignment stream after a stall");
                                // A cancel sent while this node stood still may be lost with the
                                // old stream: ask SMS about what runs here.
                                tokio::spawn(self.clone().reconcile_running());
                                break;
                            }
                            _ = until(&mut draining) => {
                                self.connected.send_replace(false);
                                return;
                            }
                        }
                    }
                    self.connected.send_replace(false);
                }
                Err(status) if status.code() == tonic::Code::NotFound => {
                    tracing::warn!(node = %self.node, "SMS does not know this node");
                    if self.config.spearlet.auto_register
                        && let Err(e) = self.register().await
                    {
                        tracing::warn!(error = %e, "registration failed");
                    }
                }
                Err(status) if !transient(&status) => {
                    tracing::error!(error = %status.message(), "SMS refused the assignment stream");
                }
                Err(status) => {
                    tracing::debug!(error = %status.message(), "SMS unreachable");
                    // Another replica may lead (a standby names it): go there at once, once
                    // per address before the backoff.
                    if hops < self.sms.len() && self.sms.follow(&status) {
                        hops += 1;
                        continue;
                    }
                }
            }
            let since = *lost_since.get_or_insert_with(Instant::now);
            // Never while work runs here: its result would wait for a restart to be sent.
            if let Some(limit) = give_up
                && since.elapsed() >= limit
                && self.running().is_empty()
            {
                let why = format!(
                    "SMS at {} unreachable for {} ms (spearlet.reconnect_total_timeout_ms); giving up",
                    self.sms.addr(),
                    limit.as_millis()
                );
                tracing::error!("{why}");
                self.fatal.send_replace(Some(why));
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff(retry, attempt)) => {}
                _ = until(&mut draining) => return,
            }
            attempt += 1;
            hops = 0;
        }
    }

    /// Take one assignment off the stream.
    async fn take(self: Arc<Self>, a: v1::Assignment, stream_epoch: u64) {
        self.set_session(&a.session);
        // An invocation is not part of the assignment sequence: no cursor, nothing persisted.
        if let Some(invocation) = a.invocation {
            if *self.draining.borrow() {
                crate::functions::remote::refuse(
                    self,
                    invocation,
                    "the node is draining: it takes no new invocations",
                );
                return;
            }
            crate::functions::remote::run(self, invocation);
            return;
        }
        // Nor is a warm-up: queued for the worker that starts instances ahead.
        if let Some(warm) = a.warm {
            if !*self.draining.borrow() {
                self.functions.ahead.ask(warm.task_id);
            }
            return;
        }
        let Some(exec) = a.execution else { return };
        let cursor = Cursor {
            session: a.session.clone(),
            cursor: a.cursor,
        };
        // Not waited for: SMS sends every execution still placed here again on each reconnect,
        // and those already running or reported here are skipped, so a lost cursor costs nothing
        // but a resend (a failing store is logged by its writer).
        if let Err(e) = self.store.put_unawaited("cursor", &cursor) {
            tracing::error!(error = %e, "cannot persist the assignment cursor");
        }
        if a.cancel && a.preempt {
            self.preempt(&exec, a.grace_ms).await;
            return;
        }
        if a.cancel {
            self.cancel(&exec.execution_id).await;
            return;
        }
        if *self.draining.borrow() {
            return;
        }
        crate::run::accept(self, exec, stream_epoch).await;
    }

    /// After a stall: stop every running execution SMS no longer places on this node (cancelled,
    /// or moved while this node stood still).
    async fn reconcile_running(self: Arc<Self>) {
        let started: Vec<String> = self
            .running()
            .iter()
            .filter(|(_, a)| a.handle.is_some() && !a.silenced)
            .map(|(id, _)| id.clone())
            .collect();
        for id in started {
            if !crate::stall::placed_here(&self, &id).await {
                tracing::info!(execution = %id, "stopped: SMS no longer places it here");
                self.cancel(&id).await;
            }
        }
    }

    /// Note the SMS session (told by the stream's metadata and every assignment), and wake the
    /// reporter when it changes: reports carry it.
    fn set_session(&self, new: &str) {
        let mut session = self.session.write().unwrap_or_else(|p| p.into_inner());
        if *session != new {
            if !session.is_empty() {
                tracing::info!(old = %session, new = %new, "SMS session changed");
            }
            *session = new.to_owned();
            drop(session);
            self.reporter.wake();
        }
    }

    /// Stop an execution SMS cancelled; its result is not reported.
    pub async fn cancel(&self, id: &str) {
        let found = {
            let mut running = self.running();
            running.get_mut(id).map(|a| {
                a.silenced = true;
                (a.executor.clone(), a.handle.clone())
            })
        };
        let Some((Some(loaded), Some(handle))) = found else {
            return;
        };
        let grace = self.config.spearlet.limits.stop_grace_ms;
        let _ = tokio::task::spawn_blocking(move || loaded.executor.stop(&handle, grace)).await;
        tracing::info!(execution = %id, "cancelled");
    }

    async fn reclamation(self: Arc<Self>) {
        let mut draining = self.draining.subscribe();
        let mut cpu = figures::cpu_times();
        loop {
            let every = Duration::from_millis(self.plugins.config().reclaim_interval_ms.max(10));
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = until(&mut draining) => return,
            }
            let (total, avail) = figures::memory();
            // The node's CPU load since the last round (all cores).
            let now = figures::cpu_times();
            let load = figures::load_permille(cpu, now);
            cpu = now;
            let pressure = NodePressure {
                memory_total_bytes: total,
                memory_used_bytes: total.saturating_sub(avail),
                cpu_load_permille: load,
                now_ms: crate::now_ms(),
            };
            let me = self.clone();
            let pause_after = self.config.spearlet.functions.pause_idle_ms;
            let _ = tokio::task::spawn_blocking(move || {
                me.pools.reclaim(&pressure);
                if pause_after > 0 {
                    me.pools.pause_idle(Duration::from_millis(pause_after));
                }
            })
            .await;
        }
    }
}

/// Wait until a flag is set.
async fn until(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

async fn open_store(config: &SpearletConfig, plugins: &PluginHost) -> Result<Store> {
    let s = &config.spearlet.storage;
    let plugin = plugins
        .plugin(PluginKind::StorageBackend, &s.backend)
        .ok_or_else(|| {
            Error::Storage(format!(
                "spearlet.storage.backend: no storage-backend plugin named `{}` in {} (built-in: redb, memory)",
                s.backend,
                plugins.config().dir.display()
            ))
        })?;
    let mut backend = plugin
        .storage()
        .map_err(|e| Error::Storage(e.to_string()))?;
    let open = if s.backend == "redb" {
        serde_json::json!({ "path": s.data_dir.join("spearlet.redb") }).to_string()
    } else {
        "{}".into()
    };
    let backend = tokio::task::spawn_blocking(move || backend.open(&open).map(|()| backend))
        .await
        .map_err(|e| Error::Storage(e.to_string()))?
        .map_err(|e| Error::Storage(e.to_string()))?;
    let backend: Arc<dyn StorageBackend> = Arc::from(backend);
    Store::new(backend)
}
