//! A config reload checks SMS's own keys too: a typo is rejected with the key named (and nothing
//! of the edit applied), `log.level` applies at once, any other changed key is reported as needing
//! a restart — never "applied".

use crate::common;

use common::Sandbox;
use serde_json::Value;

async fn reload(c: &reqwest::Client, sms: &common::Sms) -> Value {
    c.post(sms.url("/api/v1/plugins/reload"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn host_keys_are_checked_applied_or_named_at_a_reload() {
    let strategy = "[scheduler]\nstrategy = \"round-robin\"\n";
    // No watcher: each edit is applied by the reload this test asks for.
    let sb = Sandbox::with_plugins(
        &format!("{strategy}[log]\nlevel = \"warn\"\n"),
        "watch = false\n",
        &[],
    );
    let sms = sb.start_logging(&[]);
    let c = reqwest::Client::new();

    // log.level applies at once: info lines (the reload's own) appear after it, none before.
    let stderr = || std::fs::read_to_string(sb.path().join("stderr.log")).unwrap();
    c.get(sms.url("/healthz")).send().await.unwrap();
    assert!(!stderr().contains("INFO"), "{}", stderr());
    sb.write_config(&format!("{strategy}[log]\nlevel = \"info\"\n"));
    let report = reload(&c, &sms).await;
    assert_eq!(report["outcome"], "applied", "{report}");
    assert!(
        report["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "log.level: info"),
        "{report}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        stderr().contains("INFO") && stderr().contains("plugin reload"),
        "no info line after the reload: {}",
        stderr()
    );

    // Another host key: reported as needing a restart, by name.
    sb.write_config(&format!(
        "heartbeat_timeout = 7\n{strategy}[log]\nlevel = \"info\"\n"
    ));
    let report = reload(&c, &sms).await;
    assert_eq!(report["outcome"], "restart-required", "{report}");
    assert_eq!(
        report["restart_keys"],
        serde_json::json!(["heartbeat_timeout"])
    );

    // A typo: rejected with the key named, and the plugin part of the same edit not applied.
    sb.write_config(
        "heartbeat_timout = 7\n[scheduler]\nstrategy = \"least-connections\"\n[log]\nlevel = \"info\"\n",
    );
    let report = reload(&c, &sms).await;
    assert_eq!(report["outcome"], "rejected", "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("heartbeat_timout"), "{error}");
    let plugins = common::get_json(&c, &sms, "/api/v1/plugins").await;
    assert_eq!(plugins["scheduler"]["plugin"]["name"], "round-robin");

    // A bad value of a live key: rejected too.
    sb.write_config(&format!("{strategy}[log]\nlevel = \"loud=!!\"\n"));
    let report = reload(&c, &sms).await;
    assert_eq!(report["outcome"], "rejected", "{report}");
    assert!(
        report["error"].as_str().unwrap().contains("log.level"),
        "{report}"
    );
}
