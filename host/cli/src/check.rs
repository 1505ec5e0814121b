//! `spear plugin check FILE`: load, self-test and exercise a plugin exactly as a host would (the
//! runtime's own loader and [`spear_plugin_runtime::check::smoke_test`], one code path with the
//! hosts').

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use spear_plugin_runtime::check::smoke_test;
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::signing::{self, Signature, SigningPolicy};
use spear_plugin_runtime::{LimitValues, Limits, load_file};

use crate::Output;

/// Arguments of `spear plugin check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The plugin file (`.wasm` component or Extism module, or native `.so`).
    file: PathBuf,
    /// JSON configuration handed to the plugin's `configure` (a storage backend's `open`).
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
    /// A trusted signing key, `NAME=PUBLIC_KEY`, as in `[plugins.trusted_keys]` (repeatable).
    #[arg(long = "trusted-key", value_name = "NAME=KEY")]
    trusted_keys: Vec<String>,
    /// Refuse the file unless `FILE.sig` is a valid signature by a trusted key, as
    /// `plugins.require_signed`.
    #[arg(long)]
    require_signed: bool,
}

/// What the file's signature (`FILE.sig`) says.
#[derive(Serialize)]
struct SignatureReport {
    /// The signer's public key.
    key: Option<String>,
    /// The name of that key among the trusted ones, when it is one.
    trusted_as: Option<String>,
    /// Whether it is a valid signature of the file by that key.
    valid: bool,
    /// Why not.
    error: Option<String>,
}

/// The signature beside `file`, if there is one, checked against `policy`'s keys.
fn signature(file: &std::path::Path, policy: &SigningPolicy) -> Option<SignatureReport> {
    let text = signing::sig_text(file);
    if text.is_empty() {
        return None;
    }
    let verdict = Signature::parse(&text).and_then(|sig| {
        let bytes = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
        let valid = sig.verify(&bytes);
        Ok((sig.key, valid))
    });
    Some(match verdict {
        Ok((key, valid)) => SignatureReport {
            key: Some(signing::encode_key(&key)),
            trusted_as: policy.trusted(&key).map(str::to_owned),
            valid: valid.is_ok(),
            error: valid.err(),
        },
        Err(e) => SignatureReport {
            key: None,
            trusted_as: None,
            valid: false,
            error: Some(e),
        },
    })
}

/// The signing policy the flags describe.
fn policy(args: &Args) -> anyhow::Result<SigningPolicy> {
    let mut keys = std::collections::BTreeMap::new();
    for k in &args.trusted_keys {
        let (name, key) = k
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--trusted-key {k}: write NAME=PUBLIC_KEY"))?;
        signing::decode_key(key).map_err(|e| anyhow::anyhow!("--trusted-key {name}: {e}"))?;
        keys.insert(name.to_owned(), key.to_owned());
    }
    if args.require_signed && keys.is_empty() {
        anyhow::bail!("--require-signed: give the keys to trust with --trusted-key NAME=KEY");
    }
    Ok(SigningPolicy {
        require: args.require_signed,
        keys,
    })
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
    signature: Option<SignatureReport>,
    error: Option<String>,
}

/// Run the check; exit code 0 when the plugin would be accepted, 1 when refused.
pub fn run(args: Args, output: Output) -> anyhow::Result<i32> {
    let policy = policy(&args)?;
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
        signature: signature(&args.file, &policy),
        error: None,
    };
    // As a host does: the signature before any of the file's code is compiled or run.
    if args.require_signed {
        let checked = std::fs::read(&args.file)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|bytes| policy.check(&signing::sig_text(&args.file), &bytes));
        if let Err(e) = checked {
            report.error = Some(format!("{}: refused: {e}", args.file.display()));
            print(&report, output);
            return Ok(1);
        }
    }
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
    let signed = match &r.signature {
        None => "none (no FILE.sig)".to_owned(),
        Some(s) => {
            let key = s.key.clone().unwrap_or_else(|| "?".into());
            let by = match &s.trusted_as {
                Some(name) => format!("key {name} ({key})"),
                None => format!("key {key}, not among --trusted-key"),
            };
            match &s.error {
                None => format!("valid, by {by}"),
                Some(e) => format!("INVALID ({e}), by {by}"),
            }
        }
    };
    println!("  signature:   {signed}");
}
