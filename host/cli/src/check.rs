//! `spear plugin check FILE`: load, self-test and exercise a plugin exactly as a host would.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use spear_plugin_api::{
    Decision, InstanceState, InstanceStats, Label, NodePressure, PluginKind, Request, Resources,
    Target,
};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, LoadedPlugin, load_file};

use crate::Output;

/// Arguments of `spear plugin check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The plugin file (`.wasm` component or Extism module, or native `.so`).
    file: PathBuf,
    /// JSON configuration handed to the plugin's `configure`.
    #[arg(long, default_value = "{}")]
    config: String,
    /// Per-call deadline in milliseconds, as `plugins.call_timeout_ms`.
    #[arg(long, default_value_t = LimitValues::default().call_timeout_ms)]
    call_timeout_ms: u64,
    /// Memory limit in MiB, as `plugins.memory_limit_mb`.
    #[arg(long, default_value_t = LimitValues::default().memory_limit_mb)]
    memory_limit_mb: u64,
}

#[derive(Serialize)]
struct Report {
    file: PathBuf,
    ok: bool,
    name: Option<String>,
    kind: Option<String>,
    form: Option<String>,
    version: Option<String>,
    description: Option<String>,
    sha256: Option<String>,
    config_schema: Option<String>,
    smoke_test: Option<String>,
    error: Option<String>,
}

/// Run the check; exit code 0 when the plugin would be accepted, 1 when refused.
pub fn run(args: Args, output: Output) -> anyhow::Result<i32> {
    let engine = WasmEngine::new()?;
    let limits = Arc::new(Limits::new(LimitValues {
        call_timeout_ms: args.call_timeout_ms,
        memory_limit_mb: args.memory_limit_mb,
        ..LimitValues::default()
    }));
    let mut report = Report {
        file: args.file.clone(),
        ok: false,
        name: None,
        kind: None,
        form: None,
        version: None,
        description: None,
        sha256: None,
        config_schema: None,
        smoke_test: None,
        error: None,
    };
    match load_file(&args.file, &engine, &limits) {
        Ok(plugin) => {
            report.name = Some(plugin.info.name.clone());
            report.kind = Some(plugin.info.kind.to_string());
            report.form = Some(plugin.id.form.to_string());
            report.version = Some(plugin.info.version.clone());
            report.description = Some(plugin.info.description.clone());
            report.sha256 = Some(plugin.id.sha256.clone());
            report.config_schema = Some(plugin.info.config_schema.clone());
            match smoke_test(&plugin, &args.config) {
                Ok(summary) => {
                    report.ok = true;
                    report.smoke_test = Some(summary);
                }
                Err(e) => {
                    report.error =
                        Some(format!("{}: refused: smoke test: {e}", args.file.display()))
                }
            }
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    print(&report, output);
    Ok(if report.ok { 0 } else { 1 })
}

fn print(r: &Report, output: Output) {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
        return;
    }
    if let Some(e) = &r.error {
        println!("{e}");
        return;
    }
    let field = |v: &Option<String>| v.clone().unwrap_or_default();
    println!("ok: {} would be accepted", r.file.display());
    println!("  name:        {}", field(&r.name));
    println!("  kind:        {}", field(&r.kind));
    println!("  form:        {}", field(&r.form));
    println!("  version:     {}", field(&r.version));
    println!("  description: {}", field(&r.description));
    println!("  sha256:      {}", field(&r.sha256));
    println!("  config:      {}", field(&r.config_schema));
    println!("  smoke test:  {}", field(&r.smoke_test));
}

/// Configure the plugin and make a few decisions over a synthetic view, checking them by the
/// host's rules.
fn smoke_test(plugin: &LoadedPlugin, config: &str) -> Result<String, String> {
    match plugin.info.kind {
        PluginKind::SchedulingStrategy => {
            let mut s = plugin.new_strategy().map_err(|e| e.to_string())?;
            s.configure(config)
                .map_err(|e| format!("configure refused: {e}"))?;
            let targets: Vec<Target> = (1..=3).map(synthetic_target).collect();
            s.upsert(&targets).map_err(|e| format!("upsert: {e}"))?;
            let requests: Vec<Request> = (1..=6).map(synthetic_request).collect();
            let decisions = s.place(&requests).map_err(|e| format!("place: {e}"))?;
            if decisions.len() != requests.len() {
                return Err(format!(
                    "place returned {} decisions for {} requests",
                    decisions.len(),
                    requests.len()
                ));
            }
            let mut assigned = Vec::new();
            for (r, d) in requests.iter().zip(&decisions) {
                if let Decision::Assign(id) = d {
                    let t = targets
                        .iter()
                        .find(|t| t.id == *id)
                        .ok_or(format!("request {}: unknown target {id}", r.id))?;
                    if !r.fits(t) {
                        return Err(format!(
                            "request {}: target {id} breaks the host's rules",
                            r.id
                        ));
                    }
                    assigned.push(id.to_string());
                } else {
                    assigned.push("-".into());
                }
            }
            let state = s.save_state().map_err(|e| format!("save-state: {e}"))?;
            Ok(format!(
                "placed 6 requests on 3 targets → [{}]; state {} bytes",
                assigned.join(", "),
                state.len()
            ))
        }
        PluginKind::ReclamationPolicy => {
            let mut r = plugin.new_reclaimer().map_err(|e| e.to_string())?;
            r.configure(config)
                .map_err(|e| format!("configure refused: {e}"))?;
            let instances: Vec<InstanceStats> = (1..=4).map(synthetic_instance).collect();
            let node = NodePressure {
                memory_total_bytes: 1 << 30,
                memory_used_bytes: 1 << 29,
                cpu_load_permille: 300,
                now_ms: 0,
            };
            let chosen = r
                .select(&instances, &node)
                .map_err(|e| format!("select: {e}"))?;
            if let Some(bad) = chosen
                .iter()
                .find(|id| !instances.iter().any(|i| i.id == **id))
            {
                return Err(format!("select named unknown instance {bad}"));
            }
            Ok(format!("selected {:?} of 4 instances", chosen))
        }
        kind => Ok(format!("{kind} plugins are exercised by their host")),
    }
}

fn synthetic_target(id: u64) -> Target {
    let r = Resources {
        cpu_millis: 2000,
        memory_mb: 2048,
        disk_mb: 10_000,
    };
    Target {
        id,
        name: format!("node-{id}"),
        labels: vec![Label::new("zone", format!("z{id}"))],
        capacity: r,
        available: r,
        active: 0,
        weight: 1,
        healthy: true,
    }
}

fn synthetic_request(id: u64) -> Request {
    Request {
        id,
        task: "check".into(),
        labels: vec![Label::new("app", "check")],
        needs: Resources {
            cpu_millis: 100,
            memory_mb: 64,
            disk_mb: 0,
        },
        required: vec![],
        preferred: vec![],
    }
}

fn synthetic_instance(id: u64) -> InstanceStats {
    InstanceStats {
        id,
        task: "check".into(),
        state: InstanceState::Ready,
        idle_ms: id * 200_000,
        age_ms: id * 300_000,
        memory_bytes: id << 26,
        invocations: 10,
        errors: 0,
        recent_errors: 0,
        recent_invocations: 10,
    }
}
