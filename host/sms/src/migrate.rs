//! `sms storage migrate`: copy SMS's whole state from one storage backend to another (redb to
//! etcd when a single SMS becomes replicas, and back), record by record, in batches within the
//! target's limits.
//!
//! SMS must be stopped on both: redb's file lock refuses a running SMS's file, and an etcd source
//! with an election key under its namespace (a replica running) is refused. The target must be
//! empty. Payloads over 1 KiB and uploaded files stay in `files.dir`, which the migration does
//! not touch: the SMS started on the target must have the same `files.dir`.

use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use spear_plugin_api::storage::BatchOp;
use spear_plugin_api::{PluginKind, StorageBackend};
use spear_plugin_runtime::PluginHost;

use crate::config::SmsConfig;

/// `sms storage …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum StorageCommand {
    /// Copy every record from one backend to another (SMS stopped on both; the target empty).
    Migrate {
        /// The source: `redb:PATH` or `etcd:URL[,URL…]`.
        #[arg(long)]
        from: String,
        /// The target: `redb:PATH` or `etcd:URL[,URL…]`.
        #[arg(long)]
        to: String,
        /// The source's etcd namespace (`database.prefix`).
        #[arg(long, default_value = "spear/")]
        from_prefix: String,
        /// The target's etcd namespace.
        #[arg(long, default_value = "spear/")]
        to_prefix: String,
    },
}

/// Records read from the source at a time.
const PAGE: u32 = 1000;

/// A store named on the command line: its plugin and that plugin's open configuration.
#[derive(Debug, PartialEq)]
struct Spec {
    plugin: &'static str,
    open: String,
}

fn spec(text: &str, prefix: &str, flag: &str) -> anyhow::Result<Spec> {
    match text.split_once(':') {
        Some(("redb", path)) if !path.is_empty() => Ok(Spec {
            plugin: "redb",
            open: json!({ "path": path }).to_string(),
        }),
        Some(("etcd", urls)) => {
            let endpoints: Vec<&str> = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect();
            anyhow::ensure!(
                !endpoints.is_empty(),
                "--{flag} {text}: etcd needs its client URLs (etcd:http://host:2379,…)"
            );
            anyhow::ensure!(!prefix.is_empty(), "--{flag}-prefix must not be empty");
            Ok(Spec {
                plugin: "etcd",
                open: json!({ "endpoints": endpoints, "prefix": prefix }).to_string(),
            })
        }
        _ => anyhow::bail!("--{flag} {text}: write redb:PATH or etcd:URL[,URL…]"),
    }
}

/// Open the store `spec` names with the plugins of `plugins`.
async fn open(
    plugins: &PluginHost,
    spec: &Spec,
    text: &str,
) -> anyhow::Result<Arc<dyn StorageBackend>> {
    let plugin = plugins
        .plugin(PluginKind::StorageBackend, spec.plugin)
        .with_context(|| {
            format!(
                "no `{}` storage plugin in {}",
                spec.plugin,
                plugins.config().dir.display()
            )
        })?;
    let mut backend = plugin.storage().map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = spec.open.clone();
    let backend = tokio::task::spawn_blocking(move || backend.open(&config).map(|()| backend))
        .await?
        .map_err(|e| {
            anyhow::anyhow!("opening {text}: {e} (is SMS running on it? stop it first)")
        })?;
    Ok(Arc::from(backend))
}

/// Run `command` with the plugins `config` names.
pub async fn run(config: SmsConfig, command: StorageCommand) -> anyhow::Result<()> {
    let StorageCommand::Migrate {
        from,
        to,
        from_prefix,
        to_prefix,
    } = command;
    let (source_spec, target_spec) = (
        spec(&from, &from_prefix, "from")?,
        spec(&to, &to_prefix, "to")?,
    );
    anyhow::ensure!(
        source_spec != target_spec,
        "--from and --to name the same store"
    );
    let runtime = config.runtime_config()?;
    let source = config.source.clone();
    let plugins: Arc<PluginHost> = tokio::task::spawn_blocking(move || {
        PluginHost::with_builtins(runtime, source, crate::builtins::modules())
    })
    .await?
    .context("plugins")?;
    let source = open(&plugins, &source_spec, &from).await?;
    let target = open(&plugins, &target_spec, &to).await?;
    let (from2, to2) = (from.clone(), to.clone());
    let (records, bytes) =
        tokio::task::spawn_blocking(move || copy(&*source, &*target, &from2, &to2)).await??;
    eprintln!("sms: copied {records} records ({bytes} bytes) from {from} to {to}");
    Ok(())
}

/// Copy every record of `source` to the empty `target`; how many and their bytes.
fn copy(
    source: &dyn StorageBackend,
    target: &dyn StorageBackend,
    from: &str,
    to: &str,
) -> anyhow::Result<(u64, u64)> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |x: spear_plugin_api::PluginError| anyhow::anyhow!("{what}: {x}")
    };
    if !source
        .scan(b"leader/", None, 1)
        .map_err(e(from))?
        .is_empty()
    {
        anyhow::bail!(
            "{from}: an SMS replica leads on it (its election key is there): stop every replica first"
        );
    }
    if !target.scan(b"", None, 1).map_err(e(to))?.is_empty() {
        anyhow::bail!("{to}: not empty; migrate into an empty store");
    }
    let limits = target.limits();
    // Within the target's limits, and no more than a page at a time (redb takes any batch).
    let max_ops = u64::from(limits.max_ops).min(u64::from(PAGE));
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut after: Option<Vec<u8>> = None;
    let mut batch: Vec<BatchOp> = Vec::new();
    let mut batch_bytes = 0u64;
    loop {
        let page = source.scan(b"", after.as_deref(), PAGE).map_err(e(from))?;
        let done = (page.len() as u32) < PAGE;
        after = page.last().map(|(k, _)| k.clone());
        for (key, value) in page {
            // Election keys live and die with their replica's lease: never copied.
            if key.starts_with(b"leader/") {
                continue;
            }
            let op = BatchOp::Put { key, value };
            let size = op.size();
            if !batch.is_empty()
                && (batch.len() as u64 + 1 > max_ops || batch_bytes + size > limits.max_bytes)
            {
                write(target, &mut batch, to)?;
                batch_bytes = 0;
            }
            batch_bytes += size;
            records += 1;
            bytes += size;
            batch.push(op);
        }
        if done {
            break;
        }
    }
    write(target, &mut batch, to)?;
    // Read back: every record is there.
    let mut found = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = target.scan(b"", after.as_deref(), PAGE).map_err(e(to))?;
        found += page.len() as u64;
        if (page.len() as u32) < PAGE {
            break;
        }
        after = page.last().map(|(k, _)| k.clone());
    }
    anyhow::ensure!(
        found == records,
        "{to}: {found} records after the copy, {records} copied (did something else write to it?)"
    );
    Ok((records, bytes))
}

fn write(target: &dyn StorageBackend, batch: &mut Vec<BatchOp>, to: &str) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let applied = target
        .batch(batch)
        .map_err(|x| anyhow::anyhow!("{to}: {x}"))?;
    anyhow::ensure!(applied, "{to}: a batch did not apply");
    batch.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_named_redb_path_or_etcd_urls() {
        assert_eq!(spec("redb:/x/s.redb", "p/", "from").unwrap().plugin, "redb");
        let etcd = spec("etcd:http://a:2379, http://b:2379", "p/", "to").unwrap();
        assert_eq!(etcd.plugin, "etcd");
        assert!(etcd.open.contains("http://b:2379") && etcd.open.contains("\"p/\""));
        for (bad, why) in [
            ("redb:", "write redb:PATH"),
            ("sled:/x", "write redb:PATH"),
            ("etcd:", "needs its client URLs"),
            ("/x/s.redb", "write redb:PATH"),
        ] {
            let e = spec(bad, "p/", "from").unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = spec("etcd:http://a:2379", "", "to")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--to-prefix"), "{e}");
    }
}
