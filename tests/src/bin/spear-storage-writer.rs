//! Test helper: opens a storage plugin and writes for N = 0, 1, 2, … forever, printing `ack N`
//! after each write returns. The durability tests kill it with SIGKILL mid-stream.
//!
//! - `puts` (the default): `key-N` = `value-N`, one put each;
//! - `batches K`: one atomic batch each, of K puts `batch/N/J` = N (as text, padded to 512 bytes)
//!   and a put of `batch-last` = N.
//!
//! Usage: `spear-storage-writer PLUGIN CONFIG_JSON [puts | batches K]`

use std::io::Write;
use std::sync::Arc;

use spear_plugin_api::storage::BatchOp;
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: spear-storage-writer PLUGIN CONFIG_JSON [puts | batches K]";
    anyhow::ensure!((3..=5).contains(&args.len()), usage);
    // Puts in one batch (0: the `puts` mode).
    let batch_keys: usize = match (args.get(3).map(String::as_str), args.get(4)) {
        (None | Some("puts"), None) => 0,
        (Some("batches"), Some(k)) => k.parse()?,
        _ => anyhow::bail!(usage),
    };
    let batches = batch_keys > 0;
    let engine = WasmEngine::new()?;
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(args[1].as_ref(), &engine, &limits)?;
    let mut store = plugin.storage()?;
    store.open(&args[2])?;
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        if batches {
            let value = format!("{n:<512}").into_bytes();
            let mut ops: Vec<BatchOp> = (0..batch_keys)
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
