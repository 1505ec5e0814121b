//! `spear plugin check FILE`: load, self-test and exercise a plugin exactly as a host would (the
//! runtime's own loader and [`spear_plugin_runtime::check::smoke_test`], one code path with the
//! hosts').

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use spear_plugin_runtime::check::smoke_test;
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};

use crate::Output;

/// Arguments of `spear plugin check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The plugin file (`.wasm` component or Extism module, or native `.so`).
    file: PathBuf,
    /// JSON configuration handed to the plugin's `configure`.
    #[arg(long, default_value = "{}")]
    config: String,
    /// CPU budget of a decision call in milliseconds, as `plugins.call_timeout_ms`.
    #[arg(long, default_value_t = LimitValues::default().call_timeout_ms)]
    call_timeout_ms: u64,
    /// Wall-clock ceiling of a call as a multiple of its CPU budget, as `plugins.wall_factor`.
    #[arg(long, default_value_t = LimitValues::default().wall_factor)]
    wall_factor: u32,
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
        wall_factor: args.wall_factor,
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
            match smoke_test(&plugin, &args.config, limits.clone()) {
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
