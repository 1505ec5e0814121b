//! Start SMS: plugins, state, the REST, gRPC and admin listeners, the node sweeper; stop cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use spear_edge::tls::{ALPN_GRPC, ALPN_HTTP, ClientCerts, ServerTls};
use spear_plugin_api::StorageBackend;
use spear_plugin_runtime::PluginHost;
use spear_plugin_runtime::watch::Watcher;
use spear_proto::v1;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{grpc::Grpc, rest};
use crate::config::SmsConfig;
use crate::service::Sms;

/// A running SMS.
pub struct Running {
    /// The control plane.
    pub sms: Arc<Sms>,
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Where REST listens.
    pub http_addr: SocketAddr,
    /// Where the web admin listens, when enabled.
    pub admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The TLS file watchers, stopped at shutdown.
    watchers: Vec<JoinHandle<()>>,
    _watcher: Option<Watcher>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Largest result report accepted (a Spearlet keeps up to 16 MiB of stdout and of stderr by
/// default; it truncates further before sending).
const REPORT_LIMIT: usize = 64 * 1024 * 1024;

/// What SMS loads before it may lead: the plugins (watched for changes) and the opened storage
/// backend. A standby SMS has them ready, so that taking over costs only loading the state.
pub struct Prepared {
    plugins: Arc<PluginHost>,
    watcher: Option<Watcher>,
    backend: Arc<dyn StorageBackend>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepared")
    }
}

/// Load the plugins and open the storage backend `config` names.
pub async fn prepare(config: &SmsConfig) -> anyhow::Result<Prepared> {
    let runtime = config.runtime_config()?;
    let source = config.source.clone();
    let plugins: Arc<PluginHost> = tokio::task::spawn_blocking(move || {
        PluginHost::with_builtins(runtime, source, crate::builtins::modules())
    })
    .await?
    .context("plugins")?;
    let watcher = plugins.watch().context("watching plugins")?;
    let backend = crate::service::open_backend(config, &plugins)
        .await
        .context("state")?;
    Ok(Prepared {
        plugins,
        watcher,
        backend,
    })
}

/// SMS's listeners, bound first: a standby SMS answers on them ([`standby`]) until it leads, and
/// serves on them once it does.
#[derive(Debug)]
pub struct Listeners {
    http: std::net::TcpListener,
    grpc: std::net::TcpListener,
    admin: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Bind `http.addr`, `grpc.addr` and, with the web admin, `web_admin_addr`.
    pub fn bind(config: &SmsConfig) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr, key: &str| -> anyhow::Result<std::net::TcpListener> {
            let l = std::net::TcpListener::bind(addr).with_context(|| format!("{key} {addr}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        Ok(Self {
            http: bind(config.http.addr, "http.addr")?,
            grpc: bind(config.grpc.addr, "grpc.addr")?,
            admin: config
                .enable_web_admin
                .then(|| bind(config.web_admin_addr, "web_admin_addr"))
                .transpose()?,
        })
    }

    /// Where REST listens.
    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }

    /// Where gRPC listens.
    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    /// Where the web admin listens, when it is served.
    pub fn admin_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.admin.as_ref().map(|a| a.local_addr()).transpose()
    }
}

/// A server's own handle on a listener (the same socket: a standby's server and then the
/// leader's accept from it in turn).
fn tokio_listener(l: &std::net::TcpListener) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(l.try_clone()?)
}

/// The TLS of a listener, when `on` (with its file watcher pushed to `watchers`).
fn listener_tls(
    config: &SmsConfig,
    on: bool,
    client_certs: ClientCerts,
    alpn: &[&[u8]],
    watchers: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Option<Arc<ServerTls>>> {
    let Some(files) = config.tls.files(client_certs).filter(|_| on) else {
        return Ok(None);
    };
    let tls = ServerTls::load(files, alpn).context("tls")?;
    watchers.push(tls.watch(config.tls.reload_every()));
    Ok(Some(tls))
}

/// REST asks for a client certificate only when one can name a node (a node's artifact
/// fetches); it lets clients without one in (tokens decide for them).
fn rest_certs(config: &SmsConfig) -> ClientCerts {
    if config.auth.node_certificates {
        ClientCerts::Optional
    } else {
        ClientCerts::No
    }
}

/// A standby SMS's servers: they redirect to the leader ([`crate::ha::follower`]).
pub struct Standby {
    stop: watch::Sender<bool>,
    watchers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Standby {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Standby")
    }
}

impl Prepared {
    /// The reads a standby answers from this storage ([`crate::ha::reads`]).
    pub fn reads(&self, config: &SmsConfig) -> anyhow::Result<Arc<crate::ha::reads::Reads>> {
        let bootstrap = crate::auth::tokens::bootstrap(&config.auth, |k| std::env::var(k).ok())?;
        Ok(Arc::new(crate::ha::reads::Reads::new(
            crate::db::Db::new(self.backend.clone()),
            &config.files.dir,
            config.auth.clone(),
            bootstrap,
        )))
    }
}

/// Answer on `listeners` as a follower: the reads `reads` serves from storage, and redirects to
/// the leader `leader` names for the rest.
pub fn standby(
    config: &SmsConfig,
    listeners: &Listeners,
    leader: crate::ha::follower::Leader,
    reads: Arc<crate::ha::reads::Reads>,
) -> anyhow::Result<Standby> {
    let (stop, stop_rx) = watch::channel(false);
    let mut watchers = Vec::new();
    let http_tls = listener_tls(
        config,
        config.http.enable_tls,
        rest_certs(config),
        ALPN_HTTP,
        &mut watchers,
    )?;
    let grpc_tls = listener_tls(
        config,
        config.grpc.enable_tls,
        ClientCerts::Required,
        ALPN_GRPC,
        &mut watchers,
    )?;
    let limits = config.http.limits()?;
    let scheme = if config.http.enable_tls {
        "https"
    } else {
        "http"
    };
    let rest = crate::ha::follower::rest_router(leader.clone(), scheme, false, Some(reads));
    let admin_pages = crate::ha::follower::rest_router(leader.clone(), scheme, true, None);
    let serve = |l: &std::net::TcpListener, app, tls| -> anyhow::Result<()> {
        tokio::spawn(spear_edge::http::serve(
            tokio_listener(l)?,
            app,
            limits,
            tls,
            stopped(stop_rx.clone()),
        ));
        Ok(())
    };
    serve(&listeners.http, rest, http_tls.clone())?;
    if let Some(admin) = &listeners.admin {
        serve(admin, admin_pages, http_tls)?;
    }
    serve(
        &listeners.grpc,
        crate::ha::follower::grpc_router(leader),
        grpc_tls,
    )?;
    Ok(Standby { stop, watchers })
}

impl Standby {
    /// Stop accepting (the connections open go on until they close or drain).
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for w in &self.watchers {
            w.abort();
        }
    }
}

/// Start every part of SMS described by `config`, as the only SMS.
pub async fn start(config: SmsConfig) -> anyhow::Result<Running> {
    let prepared = prepare(&config).await?;
    let listeners = Listeners::bind(&config)?;
    start_on(config, prepared, &listeners, None).await
}

/// Start every part of SMS on `prepared` plugins and backend and bound `listeners`: as the leader
/// `leadership` makes it (its writes fenced), or as the only SMS.
pub async fn start_on(
    config: SmsConfig,
    prepared: Prepared,
    listeners: &Listeners,
    leadership: Option<&crate::ha::Leadership>,
) -> anyhow::Result<Running> {
    let Prepared {
        plugins,
        watcher,
        backend,
    } = prepared;
    let sms = Sms::leading(&config, plugins, backend, leadership)
        .await
        .context("state")?;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let open = config.open_listeners();
    if !open.is_empty() {
        // Only with --insecure (the config refuses it otherwise): say so until it is fixed.
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every.tick() => tracing::warn!(
                        listeners = %open.join(", "),
                        "--insecure: auth is off on non-loopback listeners; anyone who reaches them can run programs on every node"
                    ),
                    _ = stopped(rx.clone()) => return,
                }
            }
        }));
    }

    let mut watchers = Vec::new();
    let http_tls = listener_tls(
        &config,
        config.http.enable_tls,
        rest_certs(&config),
        ALPN_HTTP,
        &mut watchers,
    )?;
    let grpc_tls = listener_tls(
        &config,
        config.grpc.enable_tls,
        ClientCerts::Required,
        ALPN_GRPC,
        &mut watchers,
    )?;

    let http = tokio_listener(&listeners.http)?;
    let http_addr = http.local_addr()?;
    let app = rest::router(sms.clone(), config.enable_swagger).layer(
        axum::middleware::from_fn_with_state(
            http_addr.ip().is_loopback(),
            spear_edge::origin::layer,
        ),
    );
    let limits = config.http.limits()?;
    tasks.push(tokio::spawn(spear_edge::http::serve(
        http,
        app,
        limits,
        http_tls.clone(),
        stopped(stop_rx.clone()),
    )));

    let admin_addr = if let Some(admin) = &listeners.admin {
        let admin = tokio_listener(admin)?;
        let addr = admin.local_addr()?;
        let app = rest::admin_router(sms.clone()).layer(axum::middleware::from_fn_with_state(
            addr.ip().is_loopback(),
            spear_edge::origin::layer,
        ));
        tasks.push(tokio::spawn(spear_edge::http::serve(
            admin,
            app,
            limits,
            http_tls,
            stopped(stop_rx.clone()),
        )));
        Some(addr)
    } else {
        None
    };

    let grpc = tokio_listener(&listeners.grpc)?;
    let grpc_addr = grpc.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let service = Grpc(sms.clone());
    health
        .set_serving::<v1::node_service_server::NodeServiceServer<Grpc>>()
        .await;
    health
        .set_serving::<v1::task_service_server::TaskServiceServer<Grpc>>()
        .await;
    health
        .set_serving::<v1::file_service_server::FileServiceServer<Grpc>>()
        .await;
    health
        .set_serving::<v1::execution_service_server::ExecutionServiceServer<Grpc>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(spear_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let max =
        usize::try_from(config.max_upload_bytes().saturating_add(64 * 1024)).unwrap_or(usize::MAX);
    let grpc_limits = config.grpc.limits()?;
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(grpc_limits.idle_timeout / 3))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(config.grpc.max_concurrent_streams))
        .concurrency_limit_per_connection(config.grpc.max_concurrent_streams as usize)
        .layer(crate::auth::grpc::AuthLayer(sms.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(v1::node_service_server::NodeServiceServer::new(
            service.clone(),
        ))
        .add_service(
            // An invocation carries up to `invocations::MAX_PAYLOAD` bytes, each way.
            v1::task_service_server::TaskServiceServer::new(service.clone())
                .max_decoding_message_size(crate::invocations::MAX_PAYLOAD + 64 * 1024)
                .max_encoding_message_size(crate::invocations::MAX_PAYLOAD + 64 * 1024),
        )
        .add_service(
            v1::file_service_server::FileServiceServer::new(service.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(v1::plugin_service_server::PluginServiceServer::new(
            service.clone(),
        ))
        .add_service(
            // Result reports carry a node's captured output (up to its cap per stream).
            v1::execution_service_server::ExecutionServiceServer::new(service.clone())
                .max_decoding_message_size(REPORT_LIMIT),
        )
        .add_service(v1::event_service_server::EventServiceServer::new(
            service.clone(),
        ))
        // SPEAR-Next's services, for its clients (api/grpc_sms.rs).
        .add_service(spear_proto::sms::node_service_server::NodeServiceServer::new(service.clone()))
        .add_service(spear_proto::sms::task_service_server::TaskServiceServer::new(service));
    let rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        let incoming = spear_edge::grpc::incoming(grpc, grpc_limits, grpc_tls);
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, stopped(rx))
            .await
        {
            tracing::error!("grpc server: {e}");
        }
    }));

    let (s, rx) = (sms.clone(), stop_rx.clone());
    tasks.push(crate::health::supervise(
        "scheduler",
        sms.health.clone(),
        move || crate::sched::run(s.clone(), rx.clone()),
    ));

    if let Some(a) = &sms.autoscale {
        let advertised = config.ha.as_ref().and_then(|h| h.advertise_grpc.clone());
        a.set_grpc_addr(advertised.unwrap_or_else(|| grpc_addr.to_string()));
        let (s, rx) = (sms.clone(), stop_rx.clone());
        tasks.push(crate::health::supervise(
            "autoscaler",
            sms.health.clone(),
            move || crate::autoscale::run(s.clone(), rx.clone()),
        ));
    }

    let (s, rx) = (sms.clone(), stop_rx.clone());
    tasks.push(crate::health::supervise(
        "retention",
        sms.health.clone(),
        move || crate::retention::run(s.clone(), rx.clone()),
    ));

    // The sweeper: unhealthy after the heartbeat timeout, removed after the cleanup interval.
    let period = Duration::from_millis((config.heartbeat_timeout * 1000 / 4).clamp(100, 5000));
    let (s, rx) = (sms.clone(), stop_rx.clone());
    tasks.push(crate::health::supervise(
        "node-sweeper",
        sms.health.clone(),
        move || sweep(s.clone(), rx.clone(), period),
    ));

    Ok(Running {
        sms,
        grpc_addr,
        http_addr,
        admin_addr,
        stop,
        tasks,
        watchers,
        _watcher: watcher,
    })
}

/// Mark nodes unhealthy after the heartbeat timeout and remove them after the cleanup interval;
/// while storage writes fail, probe them with a write each period.
async fn sweep(sms: Arc<Sms>, stop: watch::Receiver<bool>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = sms.sweep_nodes().await {
                    tracing::warn!("node sweep: {e}");
                }
                // While writes fail, probe: a quiet SMS would otherwise stay unhealthy after
                // its storage recovered (no write would tell).
                if sms.db.write_health().failing().is_some() {
                    let _ = sms.db.put("health/probe".into(), &crate::model::now_ms()).await;
                }
            }
            _ = stopped(stop.clone()) => return,
        }
    }
}

impl Running {
    /// Stop accepting work, let in-flight requests finish, and wait for every part to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for w in &self.watchers {
            w.abort();
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}
