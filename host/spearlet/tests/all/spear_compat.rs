//! SPEAR-Next users' Spearlet config and flags (issue 12): the README's config runs as written
//! (loopback addresses aside) in a directory with no plugin directory, on the built-in plugins, and
//! names each key it does not act on.

use std::time::Duration;

use serde_json::json;

use crate::common::Cluster;

/// The README's Spearlet config, with loopback addresses (a Spearlet refuses to serve its
/// unauthenticated status API elsewhere without `--insecure`), the backend SPEAR's shipped config
/// allows besides `memory`, and heartbeats and retries quick for a test (the test's SMS takes a
/// node as lost after 2 s without one).
const README_CONFIG: &str = r#"[spearlet]
node_name = ""
sms_grpc_addr = "127.0.0.1:50051"
sms_http_addr = "127.0.0.1:8080"
auto_register = true
heartbeat_interval = 1
cleanup_interval = 300
# Reconnect behavior / 重连行为
sms_connect_timeout_ms = 15000
sms_connect_retry_ms = 100
reconnect_total_timeout_ms = 300000

[spearlet.grpc]
addr = "127.0.0.1:0"
enable_tls = false

[spearlet.http]
cors_enabled = true
swagger_enabled = true

[spearlet.http.server]
addr = "127.0.0.1:0"

[spearlet.storage]
backend = "sled"
data_dir = "./data/spearlet"
max_cache_size_mb = 512
compression_enabled = true
max_object_size = 67108864

[spearlet.logging]
level = "debug"
format = "pretty"
file = "./logs/spearlet.log"
"#;

#[tokio::test]
async fn the_readme_s_spearlet_runs_work_with_no_plugin_directory() {
    let cluster = Cluster::new();
    let sms = cluster.sms();
    // Its own directory, with no `plugins` in it (the cluster's is beside, not used).
    let home = cluster.path().join("bare");
    std::fs::create_dir(&home).unwrap();
    let config = home.join("spearlet.toml");
    std::fs::write(&config, README_CONFIG).unwrap();
    let spearlet = cluster.spearlet_with(
        "bare",
        &config,
        &[
            "--sms-grpc-addr",
            &sms.grpc.to_string(),
            "--sms-http-addr",
            &sms.http.to_string(),
            "--auto-register",
            "true",
        ],
    );
    sms.node_status(&spearlet.node, "active", Duration::from_secs(20))
        .await;

    // A process execution runs through the built-in `process` executor.
    let id = sms.sh("echo from-the-built-ins", json!({})).await;
    let done = sms.finished(&id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["node_uuid"], spearlet.node.as_str(), "{done}");
    assert_eq!(done["result"]["stdout"], "from-the-built-ins\n", "{done}");

    let plugins = spearlet.get("/api/v1/plugins").await;
    let process = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "process")
        .unwrap_or_else(|| panic!("no process executor in {plugins}"));
    assert_eq!(process["form"], "built-in", "{plugins}");

    // `sled` stands for redb, in the data directory (relative to the config file).
    assert!(home.join("data/spearlet/spearlet.redb").is_file());
    // The log went to logging.file (relative to the working directory) and names the keys.
    let log = std::fs::read_to_string(cluster.path().join("logs/spearlet.log")).unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    for key in [
        "spearlet.storage.backend: `sled` is SPEAR's",
        "spearlet.http.cors_enabled: accepted and not acted on",
        "spearlet.http.swagger_enabled: accepted and not acted on",
        "spearlet.storage.compression_enabled: accepted and not acted on",
        "spearlet.cleanup_interval: accepted and not acted on",
    ] {
        assert!(log.contains(key), "no {key:?} in the log:\n{log}");
    }
}

#[tokio::test]
async fn auto_register_false_connects_without_registering() {
    let cluster = Cluster::new();
    let sms = cluster.sms();
    let config = cluster.write("quiet.toml", &cluster.spearlet_config("quiet", ""));
    let spearlet = cluster.spearlet_with(
        "quiet",
        &config,
        &[
            "--sms-addr",
            &sms.grpc.to_string(),
            "--auto-register",
            "false",
        ],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let nodes = sms.get("/api/v1/nodes").await;
    assert!(
        !nodes.to_string().contains(&spearlet.node),
        "registered with --auto-register false: {nodes}"
    );
}
