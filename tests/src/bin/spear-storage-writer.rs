//! Test helper: opens a storage plugin and writes for N = 0, 1, 2, … forever, printing `ack N`
//! after each write returns. The durability tests kill it with SIGKILL mid-stream.
//!
//! - `puts` (the default): `key-N` = `value-N`, one put each;
//! - `batches`: one atomic batch each, of [`BATCH_KEYS`] puts `batch/N/J` = N (as text, padded to
//!   512 bytes) and a put of `batch-last` = N.
//!
//! Usage: `spear-storage-writer PLUGIN CONFIG_JSON [puts|batches]`

use std::io::Write;
use std::sync::Arc;

use spear_plugin_api::storage::BatchOp;
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};

/// Puts in one batch of the `batches` mode (with its `batch-last`, 33 operations: within etcd's
/// default 128 a transaction).
pub const BATCH_KEYS: usize = 32;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        (3..=4).contains(&args.len()),
        "usage: spear-storage-writer PLUGIN CONFIG_JSON [puts|batches]"
    );
    let batches = match args.get(3).map(String::as_str) {
        None | Some("puts") => false,
        Some("batches") => true,
        Some(other) => anyhow::bail!("unknown mode {other}: puts or batches"),
    };
    let engine = WasmEngine::new()?;
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(args[1].as_ref(), &engine, &limits)?;
    let mut store = plugin.storage()?;
    store.open(&args[2])?;
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        if batches {
            let value = format!("{n:<512}").into_bytes();
            let mut ops: Vec<BatchOp> = (0..BATCH_KEYS)
                .map(|j| BatchOp::Put {
                    key: format!("batch/{n:08}/{j:02}").into_bytes(),
                    value: value.clone(),
                })
                .collect();
            ops.push(BatchOp::Put {
                key: b"batch-last".to_vec(),
                value: n.to_string().into_bytes(),
            });
            anyhow::ensure!(store.batch(&ops)?, "batch {n} was refused");
        } else {
            store.put(
                format!("key-{n:08}").as_bytes(),
                format!("value-{n}").as_bytes(),
            )?;
        }
        writeln!(out, "ack {n}")?;
        out.flush()?;
    }
    Ok(())
}
