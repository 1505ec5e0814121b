//! The compiled-component cache: a restart or a re-install of a known file loads machine code from
//! `plugins.cache_dir` (default `.cache` in the plugin directory) instead of compiling again; an
//! unusable entry is recompiled and rewritten; an empty `cache_dir` turns the cache off.

use std::path::{Path, PathBuf};

use spear_plugin_runtime::PluginHost;
use spear_tests::{Sandbox, host_config};

fn cached(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "cwasm"));
    files.sort();
    files
}

fn names(host: &PluginHost) -> Vec<String> {
    host.plugins().into_iter().map(|r| r.name).collect()
}

#[test]
fn a_known_file_is_loaded_from_the_cache_and_a_bad_entry_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let keys = format!("cache_dir = {:?}\n", cache.path().display().to_string());
    let config = |sb: &Sandbox| {
        sb.write_config(&host_config(false, "").replace(
            "quarantine_after = 3\n",
            &format!("quarantine_after = 3\n{keys}"),
        ))
    };
    let rr = Sandbox::new();
    rr.install("component", "round-robin.wasm", "rr.wasm");
    config(&rr);
    drop(PluginHost::start(&rr.config()).unwrap());
    let [rr_entry] = cached(cache.path()).try_into().unwrap();

    let lc = Sandbox::new();
    lc.install("component", "least-connections.wasm", "lc.wasm");
    config(&lc);
    assert_eq!(
        names(&PluginHost::start(&lc.config()).unwrap()),
        ["least-connections"]
    );
    let entries = cached(cache.path());
    assert_eq!(entries.len(), 2, "one entry per file: {entries:?}");
    let lc_entry = entries.into_iter().find(|p| *p != rr_entry).unwrap();

    // The cache is what a restart loads: put round-robin's machine code under least-connections'
    // key and the host runs round-robin from lc.wasm (which is why the cache directory must be
    // as trusted as the plugin directory).
    std::fs::copy(&rr_entry, &lc_entry).unwrap();
    assert_eq!(
        names(&PluginHost::start(&lc.config()).unwrap()),
        ["round-robin"]
    );

    // An unusable entry is recompiled from the file and rewritten.
    std::fs::write(&lc_entry, b"not machine code").unwrap();
    assert_eq!(
        names(&PluginHost::start(&lc.config()).unwrap()),
        ["least-connections"]
    );
    assert!(std::fs::metadata(&lc_entry).unwrap().len() > 1000);
    assert_eq!(
        names(&PluginHost::start(&lc.config()).unwrap()),
        ["least-connections"]
    );
}

#[test]
fn the_cache_defaults_to_the_plugin_directory_and_can_be_turned_off() {
    let sb = Sandbox::new();
    sb.install("component", "round-robin.wasm", "rr.wasm");
    sb.write_config(&host_config(false, ""));
    drop(PluginHost::start(&sb.config()).unwrap());
    assert_eq!(cached(&sb.plugins().join(".cache")).len(), 1);

    let off = Sandbox::new();
    off.install("component", "round-robin.wasm", "rr.wasm");
    off.write_config(&host_config(false, "").replace(
        "quarantine_after = 3\n",
        "quarantine_after = 3\ncache_dir = \"\"\n",
    ));
    let host = PluginHost::start(&off.config()).unwrap();
    assert_eq!(names(&host), ["round-robin"]);
    assert!(!off.plugins().join(".cache").exists());
}
