//! The dependency rules of DESIGN §3, checked on `Cargo.lock`: plugins → plugin-api ← host, and the
//! tree holds exactly one wasmtime. Since issue 12, `sms` and `spearlet` link the project's own
//! plugins as built-ins: only through the ABI (each crate's `native_module()`, named in the host's
//! `src/builtins.rs` and nowhere else); the plugin runtime and the CLI link none.

use std::collections::{BTreeMap, BTreeSet};

fn lock() -> BTreeMap<String, BTreeSet<String>> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
    let lock: toml::Table = toml::from_str(&text).unwrap();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for package in lock["package"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_owned();
        let deps = package
            .get("dependencies")
            .and_then(|d| d.as_array())
            .map(|d| {
                d.iter()
                    .map(|v| v.as_str().unwrap().split(' ').next().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        graph
            .entry(name)
            .or_default()
            .extend::<BTreeSet<String>>(deps);
    }
    graph
}

fn versions_of(name: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
    let lock: toml::Table = toml::from_str(&text).unwrap();
    lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str() == Some(name))
        .map(|p| p["version"].as_str().unwrap().to_owned())
        .collect()
}

fn is_plugin(name: &str) -> bool {
    name.starts_with("spear-strategy-")
        || name.starts_with("spear-reclaimer-")
        || name.starts_with("spear-executor-")
        || name.starts_with("spear-storage-")
}

#[test]
fn exactly_one_wasmtime_in_the_tree() {
    assert_eq!(
        versions_of("wasmtime").len(),
        1,
        "{:?}",
        versions_of("wasmtime")
    );
    assert_eq!(versions_of("wasmtime-wasi").len(), 1);
    assert!(
        versions_of("wasmtime")[0].starts_with("43."),
        "extism 1.30 needs wasmtime 43"
    );
}

#[test]
fn dependencies_point_from_plugins_and_hosts_to_the_contract() {
    let graph = lock();
    let spear: Vec<&String> = graph.keys().filter(|n| n.starts_with("spear-")).collect();
    assert!(spear.len() >= 10, "{spear:?}");
    for (name, deps) in &graph {
        if !name.starts_with("spear-") {
            continue;
        }
        let internal: BTreeSet<&str> = deps
            .iter()
            .filter(|d| d.starts_with("spear-"))
            .map(String::as_str)
            .collect();
        if name == "spear-plugin-api" {
            assert!(
                internal.is_empty(),
                "the contract depends on no spear crate: {internal:?}"
            );
        }
        if is_plugin(name) {
            let allowed: BTreeSet<&str> = ["spear-plugin-api", "spear-pdk"].into();
            assert!(
                internal.is_subset(&allowed),
                "{name} may depend only on the contract: {internal:?}"
            );
        }
        if ["spear-plugin-runtime", "spear-cli"].contains(&name.as_str()) {
            assert!(
                !internal.iter().any(|d| is_plugin(d)),
                "host crate {name} links a plugin: {internal:?}"
            );
        }
    }
    assert!(graph["spear-plugin-runtime"].contains("wasmtime"));
    assert!(graph["spear-plugin-runtime"].contains("extism"));
}

/// Every `.rs` file under `dir`.
fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn hosts_use_their_built_in_plugins_only_through_the_abi_in_builtins_rs() {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    for host in ["host/sms/src", "host/spearlet/src"] {
        let mut files = Vec::new();
        sources(&root.join(host), &mut files);
        let mut named = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (at, _) in text.match_indices("spear_") {
                let rest = &text[at..];
                let crate_name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !is_plugin(&crate_name.replace('_', "-")) {
                    continue;
                }
                named += 1;
                assert!(
                    file.ends_with("builtins.rs"),
                    "{} names the plugin crate {crate_name} (only builtins.rs may)",
                    file.display()
                );
                assert!(
                    rest[crate_name.len()..].starts_with("::native_module()"),
                    "{}: {crate_name} is used other than through native_module()",
                    file.display()
                );
            }
        }
        assert!(named >= 4, "{host}: no built-ins found ({named})");
    }
}
