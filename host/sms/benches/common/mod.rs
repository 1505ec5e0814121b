//! What the SMS benches share: a sandbox with the plugins, and the process's resident memory.

use spear_sms::config::{Cli, SmsConfig};
use spear_sms::model::Resources;
use spear_sms::nodes::RegisterNode;
use spear_tests::guest;

/// This process's resident memory, in bytes.
#[allow(dead_code)]
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A temporary directory with the storage plugins and the least-connections strategy, and an SMS
/// config on `db` (`redb` or `memory`) with the defaults for the rest (retention included).
#[allow(dead_code)]
pub fn sandbox(db: &str) -> (tempfile::TempDir, SmsConfig) {
    sandbox_with(db, None)
}

/// [`sandbox`] with `extra` appended to the config (whole tables: `[explain]\nrounds = 0\n`),
/// and the `more` plugin files (`(form, file)`) in its plugin directory.
#[allow(dead_code)]
pub fn sandbox_extra(
    db: &str,
    extra: &str,
    more: &[(&str, &str)],
) -> (tempfile::TempDir, SmsConfig) {
    let (dir, _) = sandbox_with(db, None);
    for (form, file) in more {
        std::fs::copy(guest(form, file), dir.path().join("plugins").join(file)).unwrap();
    }
    let path = dir.path().join("sms.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
    let cli = Cli {
        config: Some(path),
        ..Cli::default()
    };
    let config = SmsConfig::load_with(&cli, |_| None, None).unwrap();
    (dir, config)
}

/// [`sandbox`] on the etcd cluster at `endpoints`, under the namespace `prefix`, with more
/// `[database]` lines `database` (`max_txn_ops = 1024`, say).
#[allow(dead_code)]
pub fn sandbox_on_etcd_with(
    endpoints: &[String],
    prefix: &str,
    database: &str,
) -> (tempfile::TempDir, SmsConfig) {
    sandbox_with("etcd", Some((endpoints, prefix, database)))
}

fn sandbox_with(db: &str, etcd: Option<(&[String], &str, &str)>) -> (tempfile::TempDir, SmsConfig) {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for (form, file) in [
        ("native", "redb.so"),
        ("native", "memory.so"),
        ("native", "etcd.so"),
        ("component", "least-connections.wasm"),
    ] {
        std::fs::copy(guest(form, file), plugins.join(file)).unwrap();
    }
    let database = match etcd {
        Some((endpoints, prefix, more)) => format!(
            "db_type = \"etcd\"\nendpoints = {endpoints:?}\nprefix = \"{prefix}\"\n{more}\n"
        ),
        None => format!(
            "db_type = \"{db}\"\npath = \"{}\"\n",
            dir.path().join("sms.redb").display()
        ),
    };
    let config = dir.path().join("sms.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\naddr = \"127.0.0.1:0\"\n[grpc]\naddr = \"127.0.0.1:0\"\n[database]\n{database}\
             [files]\ndir = \"{}\"\nmax_upload_mb = 1\n[plugins]\ndir = \"plugins\"\nwatch = false\ncall_timeout_ms = 100\n\
             [scheduler]\nstrategy = \"least-connections\"\n",
            dir.path().join("files").display()
        ),
    )
    .unwrap();
    let cli = Cli {
        config: Some(config),
        ..Cli::default()
    };
    let config = SmsConfig::load_with(&cli, |_| None, None).unwrap();
    (dir, config)
}

/// Fake node `i`: runs `wasm`, room for anything, `slots` slots (none: SMS's default).
pub fn wasm_node(i: usize, slots: Option<u32>) -> RegisterNode {
    RegisterNode {
        ip_address: format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
        port: 9000,
        capacity: Resources {
            cpu_millis: 1_000_000,
            memory_mb: 1 << 20,
            disk_mb: 0,
        },
        executors: vec!["wasm".into()],
        slots,
        ..RegisterNode::default()
    }
}
