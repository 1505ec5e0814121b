//! [`Sms`]: the control plane's state and operations, shared by the REST and gRPC front ends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use spear_plugin_api::{PluginKind, StorageBackend};
use spear_plugin_runtime::PluginHost;
use tokio::sync::{Mutex, Notify, RwLock};

use crate::config::SmsConfig;
use crate::db::Db;
use crate::error::{Result, SmsError};
use crate::events::EventLog;
use crate::model::{ExecState, Execution, Node, Task, now_ms};

/// The control plane.
pub struct Sms {
    pub(crate) db: Db,
    /// Tokens and the checks in force.
    pub(crate) auth: crate::auth::Auth,
    pub(crate) events: EventLog,
    pub(crate) plugins: Arc<PluginHost>,
    pub(crate) nodes: RwLock<crate::table::NodeTable>,
    pub(crate) tasks: RwLock<BTreeMap<String, Task>>,
    /// Node uuid → the strategy's target id.
    pub(crate) target_ids: Mutex<BTreeMap<String, u64>>,
    pub(crate) next_target: AtomicU64,
    /// What the strategy has not heard yet (sent by the scheduler before each placement).
    pub(crate) feed: std::sync::Mutex<crate::feed::StrategyFeed>,
    /// The strategy's target id → node uuid.
    pub(crate) target_names: Mutex<BTreeMap<u64, String>>,
    /// Executions by id.
    pub(crate) executions: RwLock<crate::table::ExecTable>,
    /// Next strategy request id.
    pub(crate) next_seq: AtomicU64,
    /// Next assignment cursor (and stream generation).
    pub(crate) next_cursor: AtomicU64,
    /// Cancels owed to nodes ([`crate::cancels`]).
    pub(crate) cancels: std::sync::Mutex<crate::cancels::Cancels>,
    /// Open assignment streams by node.
    pub(crate) outboxes: Mutex<crate::outbox::Outboxes>,
    /// Nodes lost since the scheduler's last round, with why.
    pub(crate) lost_nodes: std::sync::Mutex<Vec<(String, &'static str)>>,
    /// When the scheduler last checked timeouts and dependencies (ms since the epoch).
    pub(crate) last_maintenance_ms: std::sync::atomic::AtomicI64,
    /// What the unschedulable reasons were last computed against ([`crate::fit`]).
    pub(crate) nodes_fingerprint: AtomicU64,
    /// Fit answers by execution shape, for the nodes as they are.
    pub(crate) fit_cache: std::sync::Mutex<crate::fit::FitCache>,
    /// Liveness of the background work.
    pub(crate) health: Arc<crate::health::Health>,
    /// What to do with an execution no registered node could hold.
    pub(crate) unschedulable: crate::fit::Unschedulable,
    /// A dispatch found a closed stream: prune streams in the next round.
    pub(crate) prune_soon: std::sync::atomic::AtomicBool,
    /// Wakes the scheduler.
    pub(crate) wake: Notify,
    /// Scheduling settings.
    pub(crate) sched: crate::sched::SchedSettings,
    /// How much work a node may hold.
    pub(crate) dispatch: crate::dispatch::DispatchConfig,
    /// How long finished executions and events are kept.
    pub(crate) retention: crate::retention::RetentionConfig,
    /// `[deadlines]`.
    pub(crate) deadlines: crate::deadlines::DeadlineConfig,
    /// `[preemption]`.
    pub(crate) preemption: crate::preempt::PreemptionConfig,
    /// The preemption pass's budget and the work it preempted for ([`crate::preempt`]).
    pub(crate) preempt_state: std::sync::Mutex<crate::preempt::State>,
    /// The shadow strategy's evaluation ([`crate::shadow`]).
    pub(crate) shadow: Arc<crate::shadow::Shadow>,
    /// The scheduling rounds kept to explain ([`crate::explain`]).
    pub(crate) explain: std::sync::Mutex<crate::explain::Recorder>,
    /// The autoscaler, with `[autoscaler]` ([`crate::autoscale`]).
    pub(crate) autoscale: Option<Arc<crate::autoscale::Autoscale>>,
    /// The histograms on `/metrics`.
    pub(crate) metrics: crate::metrics::SmsMetrics,
    /// Each node's fill as the scheduler last counted it ([`crate::dispatch`]).
    pub(crate) capacity: std::sync::Mutex<crate::dispatch::Capacity>,
    /// Held by retention from choosing stored records to delete until they are deleted, and by a
    /// submission that depends on a stored record from finding it until it waits on it.
    pub(crate) forgetting: Mutex<()>,
    /// Read-modify-writes of an execution hold its stripe ([`crate::table::KeyLocks`]).
    pub(crate) exec_locks: crate::table::KeyLocks,
    /// Read-modify-writes of a node's record hold its stripe.
    pub(crate) node_locks: crate::table::KeyLocks,
    /// Read-modify-writes of a task's record hold its stripe.
    pub(crate) task_locks: crate::table::KeyLocks,
    /// Submits against unregistrations ([`crate::table::TaskGates`]).
    pub(crate) task_gates: crate::table::TaskGates,
    /// Invocations waiting for their node's answer ([`crate::invocations`]).
    pub(crate) invocations: crate::invocations::Invocations,
    pub(crate) files_dir: PathBuf,
    /// Large execution payloads ([`crate::blobs`]), under `files_dir/blobs`.
    pub(crate) blobs: crate::blobs::Blobs,
    /// Uploads and deletes of the same content take the same lock.
    pub(crate) file_locks: crate::table::KeyLocks,
    pub(crate) max_upload_bytes: u64,
    /// Largest request body other than an upload (`[http] max_body_kb`).
    pub(crate) max_body_bytes: usize,
    pub(crate) heartbeat_timeout_ms: i64,
    pub(crate) cleanup_interval_ms: i64,
    /// This SMS incarnation: assignments carry it so Spearlets drop stale ones after a restart.
    pub session: String,
}

impl std::fmt::Debug for Sms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sms")
            .field("session", &self.session)
            .finish()
    }
}

impl Sms {
    /// Open the storage backend the config names (a plugin from the plugin directory) and load the
    /// stored state.
    pub async fn open(config: &SmsConfig, plugins: Arc<PluginHost>) -> Result<Arc<Self>> {
        let backend = open_backend(config, &plugins).await?;
        Self::with_backend(config, plugins, backend).await
    }

    /// Build on an already opened backend.
    pub async fn with_backend(
        config: &SmsConfig,
        plugins: Arc<PluginHost>,
        backend: Arc<dyn StorageBackend>,
    ) -> Result<Arc<Self>> {
        Self::leading(config, plugins, backend, None).await
    }

    /// Build on an already opened backend as the leader `leadership` makes this SMS (every
    /// write fenced by it), or as the only SMS (`None`).
    pub async fn leading(
        config: &SmsConfig,
        plugins: Arc<PluginHost>,
        backend: Arc<dyn StorageBackend>,
        leadership: Option<&crate::ha::Leadership>,
    ) -> Result<Arc<Self>> {
        let metrics = crate::metrics::SmsMetrics::default();
        metrics.register(plugins.telemetry().registry());
        let shadow = Arc::new(crate::shadow::Shadow::start(
            plugins.clone(),
            metrics.clone(),
        ));
        metrics.leader.set(1);
        metrics.leader_term.set(leadership.map_or(0, |l| l.term));
        let db = Db::with_metrics(backend, &metrics);
        db.set_fence(leadership.map(|l| l.fence.clone()));
        let events = EventLog::open(db.clone()).await?;
        let bootstrap = crate::auth::tokens::bootstrap(&config.auth, |k| std::env::var(k).ok())?;
        let auth = crate::auth::Auth {
            config: config.auth.clone(),
            tokens: crate::auth::Tokens::open(db.clone(), bootstrap).await?,
        };
        let now = now_ms();
        let nodes: crate::table::NodeTable = db
            .load_all::<Node>("node/")
            .await?
            .into_iter()
            // A restarted SMS gives every known node a fresh heartbeat window.
            .map(|mut n| {
                n.last_heartbeat_ms = now;
                (n.uuid.clone(), n)
            })
            .collect();
        let health = crate::health::Health::new(plugins.telemetry().registry());
        let tasks = db
            .load_all::<Task>("task/")
            .await?
            .into_iter()
            .map(|t| (t.task_id.clone(), t))
            .collect();
        // Only the unfinished executions are read ([`crate::history`]). Work that was on nodes
        // when SMS stopped goes back to the queue: the new session cannot take reports for the
        // old one's assignments (at-least-once execution). Finished ones found among them were
        // stored by a version that kept every execution there: they move to `done/`.
        let mut executions =
            crate::table::ExecTable::with_urgency_window(config.deadlines.urgency_window_ms);
        let mut requeue = Vec::new();
        // A page at a time: a store an older version wrote may hold millions of finished ones.
        let mut after = None;
        loop {
            let page: Vec<Execution> = db.scan(crate::history::LIVE, after.take(), 1024).await?;
            let full = page.len() == 1024;
            let mut moved = Vec::new();
            for mut e in page {
                after = Some(format!("{}{}", crate::history::LIVE, e.execution_id));
                if e.state.is_terminal() {
                    moved.push(crate::history::exec_ops(&e)?);
                    continue;
                }
                if e.state.is_placed() {
                    e.state = ExecState::Ready;
                    e.requeued += 1;
                    e.preempting_ms = 0;
                    e.preempt_grace_ms = 0;
                    e.error = Some("SMS restarted while it was placed".into());
                    e.orphaned_on = e.node_uuid.clone();
                    requeue.push(e.clone());
                }
                executions.insert(e.execution_id.clone(), e);
            }
            db.write_groups(moved).await?;
            if !full {
                break;
            }
        }
        let next_seq = crate::history::next_seq(&db, &executions).await?;
        let cancels = crate::cancels::Cancels::load(&db).await?;
        // Unlike any fingerprint the nodes have: the first refresh looks at every execution.
        let first_print = !nodes.fit_print();
        let sms = Arc::new(Self {
            db,
            events,
            auth,
            plugins,
            nodes: RwLock::new(nodes),
            tasks: RwLock::new(tasks),
            target_ids: Mutex::new(BTreeMap::new()),
            next_target: AtomicU64::new(1),
            target_names: Mutex::new(BTreeMap::new()),
            feed: std::sync::Mutex::new(Default::default()),
            executions: RwLock::new(executions),
            next_seq: AtomicU64::new(next_seq),
            next_cursor: AtomicU64::new(1),
            outboxes: Mutex::default(),
            cancels: std::sync::Mutex::new(cancels),
            lost_nodes: std::sync::Mutex::new(Vec::new()),
            last_maintenance_ms: std::sync::atomic::AtomicI64::new(0),
            nodes_fingerprint: AtomicU64::new(first_print),
            health,
            unschedulable: config.unschedulable,
            prune_soon: std::sync::atomic::AtomicBool::new(false),
            wake: Notify::new(),
            sched: crate::sched::SchedSettings::default(),
            dispatch: config.dispatch,
            retention: config.retention,
            deadlines: config.deadlines,
            preemption: config.preemption,
            preempt_state: Default::default(),
            autoscale: config
                .autoscaler
                .clone()
                .map(|c| Arc::new(crate::autoscale::Autoscale::new(c))),
            explain: std::sync::Mutex::new(crate::explain::Recorder::new(config.explain.rounds)),
            shadow,
            metrics,
            capacity: Default::default(),
            fit_cache: Default::default(),
            forgetting: Mutex::new(()),
            exec_locks: Default::default(),
            node_locks: Default::default(),
            task_locks: Default::default(),
            task_gates: Default::default(),
            invocations: Default::default(),
            files_dir: config.files.dir.clone(),
            // (A leader's term is an etcd revision, at least 1; 0 is a single SMS's.)
            blobs: crate::blobs::Blobs::for_term(
                config.files.dir.join("blobs"),
                leadership.map_or(0, |l| u64::try_from(l.term).unwrap_or(1).max(1)),
            ),
            file_locks: Default::default(),
            max_upload_bytes: config.max_upload_bytes(),
            max_body_bytes: config
                .http
                .max_body_bytes()
                .map_err(|e| SmsError::invalid("http.max_body_kb", e.to_string()))?,
            heartbeat_timeout_ms: (config.heartbeat_timeout as i64).saturating_mul(1000),
            cleanup_interval_ms: (config.cleanup_interval as i64).saturating_mul(1000),
            session: uuid::Uuid::new_v4().to_string(),
        });
        for e in &requeue {
            sms.db.batch(crate::history::exec_ops(e)?).await?;
        }
        let known: Vec<Node> = sms.nodes.read().await.values().cloned().collect();
        for node in &known {
            sms.sync_target(node).await;
        }
        Ok(sms)
    }

    /// The event log.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// Becomes `true` once a write failed on the leader's fence: this SMS no longer leads.
    pub fn fenced(&self) -> tokio::sync::watch::Receiver<bool> {
        self.db.fenced()
    }

    /// Becomes `true` once a write's outcome is unknown ([`Db::unsure`](crate::db::Db::unsure)).
    pub fn unsure(&self) -> tokio::sync::watch::Receiver<bool> {
        self.db.unsure()
    }

    /// The plugin host (strategies, storage backends).
    pub fn plugins(&self) -> &Arc<PluginHost> {
        &self.plugins
    }
}

/// Open the storage backend plugin `config` names (`[database]`).
pub async fn open_backend(
    config: &SmsConfig,
    plugins: &PluginHost,
) -> Result<Arc<dyn StorageBackend>> {
    let name = &config.database.db_type;
    let plugin = plugins
        .plugin(PluginKind::StorageBackend, name)
        .ok_or_else(|| {
            SmsError::invalid(
                "database.db_type",
                format!(
                    "no storage-backend plugin named `{name}` in {} (built-in: redb, memory, etcd)",
                    plugins.config().dir.display()
                ),
            )
        })?;
    tracing::info!(
        plugin = %plugin.info.name,
        version = %plugin.info.version,
        form = %plugin.id.form,
        file = %plugin.id.file.display(),
        "opening the storage backend"
    );
    let mut backend = plugin
        .storage()
        .map_err(|e| SmsError::Storage(e.to_string()))?;
    let open_config = if name == "redb" {
        let mut c = serde_json::json!({ "path": config.database.path });
        if let Some(mb) = config.database.cache_mb {
            c["cache_mb"] = mb.into();
        }
        c.to_string()
    } else if name == "etcd" {
        let d = &config.database;
        let mut c = serde_json::json!({
            "endpoints": d.endpoints.as_ref().map(|e| e.list()).unwrap_or_default(),
        });
        if let Some(prefix) = &d.prefix {
            c["prefix"] = prefix.as_str().into();
        }
        if let Some(ms) = d.timeout_ms {
            c["timeout_ms"] = ms.into();
        }
        if let Some(n) = d.max_txn_ops {
            c["max_txn_ops"] = n.into();
        }
        if let Some(n) = d.max_request_bytes {
            c["max_request_bytes"] = n.into();
        }
        c.to_string()
    } else {
        "{}".into()
    };
    let backend = tokio::task::spawn_blocking(move || backend.open(&open_config).map(|()| backend))
        .await
        .map_err(|e| SmsError::Storage(e.to_string()))?
        .map_err(|e| SmsError::Storage(e.to_string()))?;
    Ok(Arc::from(backend))
}
