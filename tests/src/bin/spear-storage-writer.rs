//! Test helper: opens a storage plugin and writes `key-N` = `value-N` for N = 0, 1, 2, … forever,
//! printing `ack N` after each write returns. The durability test kills it with SIGKILL mid-stream.
//!
//! Usage: `spear-storage-writer PLUGIN.so CONFIG_JSON`

use std::io::Write;
use std::sync::Arc;

use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 3,
        "usage: spear-storage-writer PLUGIN.so CONFIG_JSON"
    );
    let engine = WasmEngine::new()?;
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(args[1].as_ref(), &engine, &limits)?;
    let mut store = plugin.storage()?;
    store.open(&args[2])?;
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        store.put(
            format!("key-{n:08}").as_bytes(),
            format!("value-{n}").as_bytes(),
        )?;
        writeln!(out, "ack {n}")?;
        out.flush()?;
    }
    Ok(())
}
