//! Starting a Spearlet: the agent, its loops, its HTTP status API, and its gRPC health endpoint
//! and SPEAR's `spearlet.ObjectService` ([`crate::object_service`]).
//!
//! HTTP (`spearlet.http.server.addr`):
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | `ok` |
//! | `GET /api/v1/status` | node, SMS link, running executions, executors, pool counters |
//! | `GET /api/v1/instances` | every task instance with its state and figures |
//! | `GET /api/v1/plugins` | plugins known to this node (strategy, policy, executors, storage) |
//! | `POST /api/v1/plugins/reload` | rescan the plugin directory and re-read the config |
//! | `GET /api/v1/plugins/history` | reload reports |

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use spear_edge::tls::{ALPN_GRPC, ALPN_HTTP, ClientCerts, ServerTls};
use spear_plugin_runtime::Trigger;
use spear_proto::spearlet::object_service_server::ObjectServiceServer;

use crate::agent::Agent;
use crate::config::SpearletConfig;
use crate::error::{Error, Result};

/// A started Spearlet.
#[derive(Debug)]
pub struct Running {
    /// The agent.
    pub agent: Arc<Agent>,
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _watcher: Option<spear_plugin_runtime::watch::Watcher>,
}

/// Open the agent, bind the listeners, recover what a previous run left, connect to SMS (or fail,
/// with `--sms-addr`) and start every loop.
pub async fn start(mut config: SpearletConfig) -> Result<Running> {
    let http = bind(
        "spearlet.http.server.addr",
        config.spearlet.http.server.addr,
    )
    .await?;
    let grpc = bind("spearlet.grpc.addr", config.spearlet.grpc.addr).await?;
    let http_addr = http.local_addr().expect("bound");
    let grpc_addr = grpc.local_addr().expect("bound");
    // Advertise the port actually bound (a configured port 0 picks one).
    config.spearlet.grpc.addr = grpc_addr;
    let tls = config.spearlet.tls.listener();
    let load = |on: bool, alpn: &[&[u8]]| -> Result<Option<Arc<ServerTls>>> {
        let Some(files) = tls.files(ClientCerts::No).filter(|_| on) else {
            return Ok(None);
        };
        let t = ServerTls::load(files, alpn).map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Some(t))
    };
    let http_tls = load(config.spearlet.http.server.enable_tls, ALPN_HTTP)?;
    let grpc_tls = load(config.spearlet.grpc.enable_tls, ALPN_GRPC)?;
    let agent = Agent::open(config).await?;
    let watcher = agent.plugins.watch()?;
    crate::run::recover(&agent).await;
    agent.connect_at_start().await?;
    let mut tasks = agent.spawn_loops();
    for t in http_tls.iter().chain(grpc_tls.iter()) {
        tasks.push(t.watch(tls.reload_every()));
    }

    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/instances", get(instances))
        .route("/api/v1/functions", get(functions))
        .route("/api/v1/functions/{task_id}/warm", post(warm))
        .route("/api/v1/plugins", get(plugins))
        .route("/api/v1/plugins/reload", post(reload))
        .route("/api/v1/plugins/history", get(history))
        .with_state(agent.clone())
        .layer(axum::middleware::from_fn_with_state(
            http_addr.ip().is_loopback(),
            spear_edge::origin::layer,
        ));
    // The edge's default limits (connection cap, header, idle and body timeouts).
    let limits = spear_edge::HttpLimits::default();
    tasks.push(tokio::spawn(spear_edge::http::serve(
        http,
        app,
        limits,
        http_tls,
        std::future::pending(),
    )));
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let objects = object_service(&agent.config);
    let functions = crate::functions::service::server(agent.clone());
    tasks.push(tokio::spawn(async move {
        let incoming = spear_edge::grpc::incoming(grpc, limits, grpc_tls);
        if let Err(e) = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(limits.idle_timeout / 3))
            .add_service(health)
            .add_service(objects)
            .add_service(functions)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    }));
    Ok(Running {
        agent,
        http_addr,
        grpc_addr,
        tasks,
        _watcher: watcher,
    })
}

/// SPEAR's `spearlet.ObjectService`, bounded by `config`: a message may carry one object of
/// `spearlet.storage.max_object_size` (and its key and metadata); larger ones are refused by the
/// codec (`OUT_OF_RANGE`) before they are read whole.
fn object_service(config: &SpearletConfig) -> ObjectServiceServer<crate::object_service::Objects> {
    let s = &config.spearlet;
    let max_object_size = s.storage.max_object_size;
    let objects = crate::object_service::Objects::new(crate::object_service::Bounds {
        max_object_size,
        max_total_bytes: s.objects.max_total_mb.saturating_mul(1024 * 1024),
        max_count: s.objects.max_count,
    });
    let message = usize::try_from(max_object_size)
        .unwrap_or(usize::MAX)
        .saturating_add(256 * 1024);
    ObjectServiceServer::new(objects)
        .max_decoding_message_size(message)
        .max_encoding_message_size(message.max(crate::object_service::PAGE_BYTES as usize * 2))
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { what, addr, source })
}

impl Running {
    /// Drain (see [`Agent::drain`]) and stop every task.
    pub async fn shutdown(self) {
        self.agent.drain().await;
        for t in self.tasks {
            t.abort();
        }
    }

    /// Stop at once, as a crash would (tests): nothing is drained or deregistered.
    pub fn abort(self) {
        self.agent.draining.send_replace(true);
        for t in self.tasks {
            t.abort();
        }
    }
}

async fn status(State(agent): State<Arc<Agent>>) -> Json<Value> {
    let running: Vec<String> = agent.running().keys().cloned().collect();
    let backlog = agent.reporter.backlog().await.unwrap_or(0);
    Json(json!({
        "node_uuid": agent.node,
        "node_name": agent.config.node_name(),
        "sms": agent.sms.addr(),
        "connected": *agent.connected.borrow(),
        "draining": *agent.draining.borrow(),
        "session": agent.session.read().unwrap_or_else(|p| p.into_inner()).clone(),
        "running": running,
        "reports_pending": backlog,
        "stalls": agent.stall.stalls(),
        "executors": agent.executors.get().all().map(|l| json!({
            "name": l.name, "version": l.version, "sha256": l.sha256, "capabilities": l.capabilities,
        })).collect::<Vec<_>>(),
        "executor_problems": agent.executors.get().problems,
        "pools": agent.pools.counters(),
        "ahead": agent.functions.ahead.figures(),
        "strategy": agent.plugins.strategy().active(),
        "reclaimer": agent.plugins.reclaimer().active(),
    }))
}

async fn metrics(State(agent): State<Arc<Agent>>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(&agent).await,
    )
}

async fn instances(State(agent): State<Arc<Agent>>) -> Json<Value> {
    Json(json!({ "instances": agent.pools.instances() }))
}

async fn functions(State(agent): State<Arc<Agent>>) -> Json<Value> {
    let f = &agent.functions;
    let limits = &agent.config.spearlet.functions;
    Json(json!({
        "in_flight": limits.max_concurrent - f.in_flight.available_permits(),
        "max_concurrent": limits.max_concurrent,
        "results_kept": f.results.len(),
        "result_bytes": f.results.bytes(),
        "adaptive": f.limiters.adaptive(),
    }))
}

/// `POST /api/v1/functions/{task_id}/warm?instances=N`: start instances of a task ahead of its
/// invocations (N at most `spearlet.limits.max_instances_per_task`).
async fn warm(
    State(agent): State<Arc<Agent>>,
    axum::extract::Path(task_id): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> (axum::http::StatusCode, Json<Value>) {
    use axum::http::StatusCode;
    let max = agent.config.spearlet.limits.max_instances_per_task as usize;
    let want = match q.get("instances").map(|v| v.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if (1..=max).contains(&n) => n,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"error": format!("instances must be 1 to {max} (spearlet.limits.max_instances_per_task)")}),
                ),
            );
        }
    };
    if task_id.is_empty() || task_id.len() > 256 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "task_id must be 1 to 256 bytes"})),
        );
    }
    match crate::functions::warm(&agent, &task_id, want).await {
        Ok(ready) => (
            StatusCode::OK,
            Json(json!({"task_id": task_id, "instances": ready})),
        ),
        Err(e) => {
            let status = match e.code() {
                tonic::Code::NotFound => StatusCode::NOT_FOUND,
                tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::CONFLICT,
            };
            (status, Json(json!({"error": e.to_string()})))
        }
    }
}

async fn plugins(State(agent): State<Arc<Agent>>) -> Json<Value> {
    Json(json!({ "plugins": agent.plugins.plugins() }))
}

async fn reload(State(agent): State<Arc<Agent>>) -> Json<Value> {
    let host = agent.plugins.clone();
    let report = tokio::task::spawn_blocking(move || host.reload(Trigger::Api))
        .await
        .map(|r| json!(r))
        .unwrap_or_else(|e| json!({ "error": e.to_string() }));
    Json(report)
}

async fn history(State(agent): State<Arc<Agent>>) -> Json<Value> {
    Json(json!({ "reports": agent.plugins.history() }))
}
