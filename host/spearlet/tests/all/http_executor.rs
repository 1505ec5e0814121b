//! The `http` executor, a WASM component dropped into a Spearlet's plugin directory, end to end
//! from `spear run`: SMS takes the executable type the node registered (`http`), the Spearlet runs
//! the execution by POSTing it to a real HTTP server on 127.0.0.1 that its config granted the
//! plugin, and the answer is the result. A config reload swaps the executor live (a request
//! running meanwhile finishes on the old one), and one that takes the grant away makes the next
//! execution fail, naming the grant, with nothing sent.

use std::time::Duration;

use serde_json::{Value, json};
use spear_tests::guest;
use spear_tests::http_server::HttpServer;

use crate::common::{Cluster, Spearlet};

const LONG: Duration = Duration::from_secs(60);

/// The Spearlet's plugin sections: the http executor granted `granted` (none: no grant), its
/// endpoint `server/{entry}` in `format`.
fn sections(server: &HttpServer, granted: Option<&str>, format: &str) -> String {
    let grant = granted
        .map(|h| format!("[plugins.grants.http]\nhttp_hosts = [\"{h}\"]\nclock = true\n"))
        .unwrap_or_default();
    format!(
        "{grant}[executors]\nenabled = [\"process\", \"http\"]\n\
         [executors.config.http]\nendpoint = \"{}/{{entry}}\"\nformat = \"{format}\"\n",
        server.url()
    )
}

/// Rewrite the Spearlet's config and ask it to reload; the report of the reload that mentions
/// `what` (the file is watched: the reload may be the watcher's or this one).
async fn reconfigure(c: &Cluster, node: &Spearlet, config: &str, what: &str) -> Value {
    std::fs::write(c.path().join("web.toml"), config).unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/plugins/reload", node.http))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    node.reloaded(what).await
}

#[tokio::test(flavor = "multi_thread")]
async fn spear_run_runs_an_execution_through_the_http_component() {
    let server = HttpServer::start();
    let host = server.addr.to_string();
    let c = Cluster::new();
    std::fs::copy(
        guest("component", "http.wasm"),
        c.path().join("plugins/http.wasm"),
    )
    .unwrap();
    let sms = c.sms();
    let config = c.spearlet_config("web", &sections(&server, Some(&host), "raw"));
    let node = c.spearlet_from("web", &sms, &config);
    let registered = sms.node_status(&node.node, "active", LONG).await;
    assert!(
        registered["executors"]
            .as_array()
            .unwrap()
            .contains(&json!("http")),
        "the node registers the component's type: {registered}\n{}",
        node.log()
    );

    let (code, e) = sms
        .spear(&[
            "run",
            "--type",
            "http",
            "--name",
            "upper/resize",
            "--stdin",
            "hello",
        ])
        .await;
    assert_eq!(code, 0, "{e}\n{}", node.log());
    assert_eq!(e["state"], "succeeded", "{e}");
    assert_eq!(e["result"]["stdout"], "HELLO", "{e}");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/upper/resize");
    assert_eq!(
        seen[0].header("x-spear-execution-id"),
        e["execution_id"].as_str()
    );

    // A request that runs across a live swap to another configuration finishes on the old one.
    let (code, slow) = sms
        .spear(&["run", "--detach", "--type", "http", "--name", "slow/2500/x"])
        .await;
    assert_eq!(code, 0, "{slow}");
    let slow = slow["execution_id"].as_str().unwrap().to_owned();
    sms.running(&slow, LONG).await;
    let report = reconfigure(
        &c,
        &node,
        &c.spearlet_config("web", &sections(&server, Some(&host), "json")),
        "swapped live",
    )
    .await;
    assert_eq!(report["outcome"], "applied", "{report}");
    let done = sms.finished(&slow, LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["stdout"], "late", "{done}");
    // New work starts on the new executor: its requests carry the execution as JSON.
    let (code, e) = sms
        .spear(&["run", "--type", "http", "--name", "echo/x", "--stdin", "hi"])
        .await;
    assert_eq!(code, 0, "{e}");
    let body: Value = serde_json::from_str(e["result"]["stdout"].as_str().unwrap()).unwrap();
    assert_eq!(body["execution_id"], e["execution_id"], "{body}");
    assert_eq!(body["stdin"], "aGk=", "{body}");

    // Without the grant, the next execution fails naming it, and nothing reaches the server.
    let sent = server.connections();
    let report = reconfigure(
        &c,
        &node,
        &c.spearlet_config("web", &sections(&server, None, "json")),
        "plugins.grants: none",
    )
    .await;
    assert_eq!(report["outcome"], "applied", "{report}");
    let (code, e) = sms
        .spear(&[
            "run",
            "--type",
            "http",
            "--name",
            "echo/x",
            "--max-attempts",
            "1",
        ])
        .await;
    assert_ne!(code, 0, "{e}");
    assert_eq!(e["state"], "failed", "{e}");
    assert!(
        e.to_string().contains("not granted the endpoint's host"),
        "{e}"
    );
    assert_eq!(
        server.connections(),
        sent,
        "a refused request reached the server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_adds_the_http_executor_tells_sms_and_work_of_its_type_runs() {
    let server = HttpServer::start();
    let c = Cluster::new();
    std::fs::copy(
        guest("component", "http.wasm"),
        c.path().join("plugins/http.wasm"),
    )
    .unwrap();
    let sms = c.sms();
    let node = c.spearlet_from(
        "web",
        &sms,
        &c.spearlet_config("web", "[executors]\nenabled = [\"process\"]\n"),
    );
    let registered = sms.node_status(&node.node, "active", LONG).await;
    assert_eq!(registered["executors"], json!(["process"]), "{registered}");

    let host = server.addr.to_string();
    let report = reconfigure(
        &c,
        &node,
        &c.spearlet_config("web", &sections(&server, Some(&host), "raw")),
        "swapped live",
    )
    .await;
    assert_eq!(report["outcome"], "applied", "{report}");
    // SMS learns the new type from a registration again, without a restart.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = sms.get(&format!("/api/v1/nodes/{}", node.node)).await;
        let types = n["executors"].as_array().cloned().unwrap_or_default();
        if types.contains(&json!("http")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SMS never learned the http type: {n}\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, e) = sms
        .spear(&[
            "run", "--type", "http", "--name", "upper/x", "--stdin", "late",
        ])
        .await;
    assert_eq!(code, 0, "{e}\n{}", node.log());
    assert_eq!(e["result"]["stdout"], "LATE", "{e}");
}
