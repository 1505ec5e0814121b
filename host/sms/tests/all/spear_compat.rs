//! SPEAR-Next users' configs and habits (issue 12): SPEAR's shipped SMS config loads as written in
//! a directory with no plugins, its keys either act or are named in a warning, and `/health`
//! answers in SPEAR's shape.

use crate::common::{self, Sandbox};

/// SPEAR-Next's `config/sms/example-config.toml`, as shipped but for the addresses (any free
/// port) and the log file (so the test can read it): every key after `[http]` is in `[http]`.
const SPEAR_EXAMPLE: &str = r#"[grpc]
addr = "127.0.0.1:0"
enable_tls = false

[http]
addr = "127.0.0.1:0"
enable_tls = false

enable_swagger = true
enable_web_admin = false
heartbeat_timeout = 180
cleanup_interval = 600
max_upload_bytes = 1024

[web_admin]
addr = "127.0.0.1:0"
enable_tls = false

[database]
db_type = "sled"
path = "./data/sms"
pool_size = 10

[event_kv]
backend = "memory"
params = {}

[log]
level = "debug"
format = "json"
file = "./logs/sms.log"
"#;

#[tokio::test]
async fn spear_s_shipped_config_runs_in_an_empty_directory_and_names_what_it_does_not_act_on() {
    let sb = Sandbox::empty();
    sb.write_text(SPEAR_EXAMPLE);
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();

    // SPEAR's health answer.
    let r = c.get(sms.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let health: serde_json::Value = r.json().await.unwrap();
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["service"], "sms", "{health}");
    let at = health["timestamp"].as_str().unwrap();
    assert!(
        at.len() >= 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{at}"
    );

    // Swagger UI is on (SPEAR's default, and the file says so).
    let r = c.get(sms.url("/swagger-ui/")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // `max_upload_bytes` (written after [http]) acts: 1 KiB is the limit.
    let r = c
        .post(sms.url("/api/v1/files"))
        .body(vec![7u8; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "{:?}", r.text().await);
    let r = c
        .post(sms.url("/api/v1/files"))
        .body(vec![7u8; 512])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);

    // `sled` stands for redb: the state is a redb file at database.path.
    assert!(sb.path().join("data/sms").is_file());

    // The plugins are the built-ins: no plugin directory exists.
    assert!(!sb.path().join("plugins").exists());
    let plugins = common::get_json(&c, &sms, "/api/v1/plugins").await;
    let list = plugins["plugins"].as_array().unwrap();
    let builtin = |name: &str| {
        list.iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {plugins}"))
    };
    for name in ["round-robin", "least-connections", "redb", "memory", "etcd"] {
        assert_eq!(builtin(name)["form"], "built-in", "{plugins}");
        assert_eq!(builtin(name)["file"], format!("built-in:{name}"));
    }

    // The log went to log.file, and names each key taken from SPEAR's config.
    drop(sms);
    let log = std::fs::read_to_string(sb.path().join("logs/sms.log")).unwrap();
    for key in [
        "http.enable_swagger: read as enable_swagger",
        "http.heartbeat_timeout: read as heartbeat_timeout",
        "http.max_upload_bytes: read as max_upload_bytes",
        "web_admin.addr: read as web_admin_addr",
        "web_admin.enable_tls: accepted and not acted on",
        "event_kv: accepted and not acted on",
        "database.db_type: `sled` is SPEAR's",
        "database.pool_size: accepted and not acted on",
    ] {
        assert!(log.contains(key), "no {key:?} in the log:\n{log}");
    }
}

#[tokio::test]
async fn a_key_neither_ours_nor_spear_s_is_still_refused_by_name() {
    let sb = Sandbox::empty();
    sb.write_text(&SPEAR_EXAMPLE.replace("enable_swagger = true", "enable_swager = true"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sms"))
        .current_dir(sb.path())
        .args(["--config", sb.config().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.enable_swager: unknown key"), "{err}");
}

#[tokio::test]
async fn a_plugin_file_overrides_the_built_in_of_its_name() {
    // The sandbox's plugin directory holds round-robin.wasm, which the config selects.
    let sb = Sandbox::new("[scheduler]\nstrategy = \"round-robin\"\n");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let plugins = common::get_json(&c, &sms, "/api/v1/plugins").await;
    assert_eq!(
        plugins["scheduler"]["plugin"]["form"], "component",
        "{plugins}"
    );
    let list = plugins["plugins"].as_array().unwrap();
    let of = |form: &str| {
        list.iter()
            .find(|p| p["name"] == "round-robin" && p["form"] == form)
            .unwrap_or_else(|| panic!("no {form} round-robin in {plugins}"))
    };
    assert_eq!(of("component")["state"], "active", "{plugins}");
    assert_eq!(of("built-in")["state"], "overridden", "{plugins}");
    let history = common::get_json(&c, &sms, "/api/v1/plugins/history").await;
    assert!(
        history
            .to_string()
            .contains("overrides the built-in of that name"),
        "{history}"
    );
}

/// POST a task; the status and the answer.
async fn register(
    c: &reqwest::Client,
    sms: &common::Sms,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = c
        .post(sms.url("/api/v1/tasks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn spear_s_task_fields_are_kept_or_acted_on() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();

    // No executable, metadata and config: kept; nothing can run it, and a submit says why.
    let (status, bare) = register(
        &c,
        &sms,
        serde_json::json!({"name": "catalogue-entry", "metadata": {"team": "vision"}, "config": {"model": "v2"}}),
    )
    .await;
    assert_eq!(status, 200, "{bare}");
    assert_eq!(bare["metadata"]["team"], "vision");
    assert_eq!(bare["config"]["model"], "v2");
    assert!(bare["executable"].is_null(), "{bare}");
    let r = c
        .post(sms.url("/api/v1/executions"))
        .json(&serde_json::json!({"task_id": bare["task_id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let refused: serde_json::Value = r.json().await.unwrap();
    assert_eq!(refused["error"]["field"], "task_id", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("without an executable"),
        "{refused}"
    );

    // `binary` and `script` run on the process executor; `checksum_sha256` pins an http(s)
    // artifact, and must be a file's own id for sms+file.
    let sum = "ab".repeat(32);
    let (status, binary) = register(
        &c,
        &sms,
        serde_json::json!({"name": "b", "executable": {"type": "binary", "uri": "https://example.com/tool", "name": "tool", "checksum_sha256": sum}}),
    )
    .await;
    assert_eq!(status, 200, "{binary}");
    assert_eq!(binary["executable"]["type"], "process");
    // SPEAR's `name` is the fetched file's name: the file runs, not a program called `tool`.
    assert_eq!(binary["executable"]["name"], "", "{binary}");
    assert_eq!(
        binary["executable"]["uri"],
        format!("https://example.com/tool#sha256={sum}")
    );
    let (status, script) = register(
        &c,
        &sms,
        serde_json::json!({"name": "s", "executable": {"type": "script", "uri": format!("sms+file://{sum}"), "checksum_sha256": sum}}),
    )
    .await;
    assert_eq!(
        (status, &script["executable"]["type"]),
        (200, &serde_json::json!("process")),
        "{script}"
    );
    for (checksum, uri) in [
        ("abc", "https://example.com/t"),
        (sum.as_str(), "sms+file://other"),
    ] {
        let (status, refused) = register(
            &c,
            &sms,
            serde_json::json!({"name": "x", "executable": {"type": "binary", "uri": uri, "checksum_sha256": checksum}}),
        )
        .await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(
            refused["error"]["field"], "executable.checksum_sha256",
            "{refused}"
        );
        assert_eq!(refused["success"], false);
    }
}

#[tokio::test]
async fn task_lists_page_and_filter_as_spear_s_and_a_second_delete_removes() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let node = "93f9a7ca-e033-4bb7-8b5a-c0899f9a52b8";
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = serde_json::json!({"name": format!("t{i}"), "executable": {"type": "process", "name": "/bin/true"}});
        if i % 2 == 0 {
            body["node_uuid"] = node.into();
        }
        let (status, t) = register(&c, &sms, body).await;
        assert_eq!(status, 200, "{t}");
        ids.push(t["task_id"].as_str().unwrap().to_owned());
    }
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let page = common::get_json(&c, &sms, "/api/v1/tasks?limit=2&offset=1").await;
    assert_eq!(names(&page), ["t1", "t2"], "{page}");
    assert_eq!(page["total_count"], 5);
    let pinned = common::get_json(
        &c,
        &sms,
        &format!("/api/v1/tasks?node_uuid={node}&offset=1"),
    )
    .await;
    assert_eq!(names(&pinned), ["t2", "t4"], "{pinned}");
    assert_eq!(pinned["total_count"], 3);
    let r = c
        .get(sms.url("/api/v1/tasks?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A delete without a body unregisters; the unregistered are listed by that status; a
    // second delete removes.
    let url = sms.url(&format!("/api/v1/tasks/{}", ids[0]));
    let first: serde_json::Value = c.delete(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(first["message"], "Task unregistered successfully");
    let gone = common::get_json(&c, &sms, "/api/v1/tasks?status=unregistered").await;
    assert_eq!(names(&gone), ["t0"], "{gone}");
    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let second: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        second,
        serde_json::json!({"success": true, "message": "Task removed"})
    );
    assert_eq!(c.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(c.delete(&url).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn files_answer_with_spear_s_fields() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();

    // SPEAR names an upload with the x-file-name header.
    let r = c
        .post(sms.url("/api/v1/files"))
        .header("x-file-name", "hello.wasm")
        .body(b"\0asm-bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
    let up: serde_json::Value = r.json().await.unwrap();
    let id = up["id"].as_str().unwrap().to_owned();
    assert_eq!(up["success"], true, "{up}");
    assert_eq!(up["name"], "hello.wasm", "{up}");
    assert_eq!(up["uri"], format!("sms+file://{id}"), "{up}");
    assert_eq!(up["file_id"], id.as_str(), "SMS's own field");

    let list = common::get_json(&c, &sms, "/api/v1/files").await;
    let f = &list["files"][0];
    assert_eq!(
        (f["id"].as_str(), f["len"].as_u64()),
        (Some(id.as_str()), Some(10)),
        "{list}"
    );
    assert!(f["modified_at"].as_i64().unwrap() > 1_700_000_000, "{list}");

    let meta = common::get_json(&c, &sms, &format!("/api/v1/files/{id}/meta")).await;
    assert_eq!(
        (&meta["found"], &meta["len"]),
        (&serde_json::json!(true), &serde_json::json!(10)),
        "{meta}"
    );
    assert_eq!(meta["name"], "hello.wasm");

    let presign: serde_json::Value = c
        .post(sms.url("/api/v1/files/presign-upload"))
        .json(&serde_json::json!({"key": "k", "max_size_bytes": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&presign["upload_url"], &presign["method"]),
        (
            &serde_json::json!("/api/v1/files"),
            &serde_json::json!("POST")
        ),
        "{presign}"
    );
    let r = c
        .post(sms.url("/api/v1/files/presign-upload"))
        .json(&serde_json::json!({"max_size_bytes": 1u64 << 40}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    let r = c
        .delete(sms.url(&format!("/api/v1/files/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deleted: serde_json::Value = r.json().await.unwrap();
    assert_eq!(deleted["success"], true, "{deleted}");
    let r = c
        .get(sms.url(&format!("/api/v1/files/{id}/meta")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let gone: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&gone["found"], &gone["success"]),
        (&serde_json::json!(false), &serde_json::json!(false)),
        "{gone}"
    );
}

#[tokio::test]
async fn a_sled_directory_at_the_database_path_gets_the_redb_file_inside_it() {
    let sb = Sandbox::empty();
    sb.write_text(SPEAR_EXAMPLE);
    // What SPEAR's sled left at database.path: a directory.
    std::fs::create_dir_all(sb.path().join("data/sms")).unwrap();
    let sms = sb.start(&[]);
    let r = reqwest::get(sms.url("/health")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(sb.path().join("data/sms/sms.redb").is_file());
    drop(sms);
    let log = std::fs::read_to_string(sb.path().join("logs/sms.log")).unwrap();
    assert!(
        log.contains("is a directory (SPEAR's store); the redb file is"),
        "{log}"
    );
}

#[tokio::test]
async fn optional_bodies_are_objects_or_nothing() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let (_, task) = register(
        &c,
        &sms,
        serde_json::json!({"name": "t", "executable": {"type": "process", "name": "/bin/true"}}),
    )
    .await;
    let url = sms.url(&format!(
        "/api/v1/tasks/{}",
        task["task_id"].as_str().unwrap()
    ));
    for body in ["[]", "\"why\"", "{\"reasons\": 1}"] {
        let r = c
            .delete(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    let presign = sms.url("/api/v1/files/presign-upload");
    // Whitespace alone is not JSON (schemathesis sent a tab).
    for body in [
        "[null]",
        "{\"max_size_bytes\": 9223372036854775808}",
        "\t",
        " \n",
    ] {
        let r = c
            .post(&presign)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    // null and nothing are no body.
    for body in ["null", ""] {
        let r = c.post(&presign).body(body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{body:?}");
    }
    let r = c.delete(&url).body("null").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_executable_with_a_field_it_does_not_have_is_refused_naming_it() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let executable = serde_json::json!({"type": "process", "name": "/bin/true", "entrypoint": "x"});
    let (status, task) = register(
        &c,
        &sms,
        serde_json::json!({"name": "t", "executable": executable}),
    )
    .await;
    assert_eq!(status, 400, "{task}");
    assert_eq!(task["error"]["field"], "executable.entrypoint", "{task}");
    let r = c
        .post(sms.url("/api/v1/executions"))
        .json(&serde_json::json!({ "executable": executable }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "executable.entrypoint", "{body}");
}

#[tokio::test]
async fn spear_s_node_resources_are_kept_and_shown() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let node = common::post_json(
        &c,
        &sms,
        "/api/v1/nodes",
        &serde_json::json!({"ip_address": "10.0.0.9", "port": 8081}),
    )
    .await
    .1["node_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = sms.url(&format!("/api/v1/nodes/{node}/resource"));
    // No figures yet.
    assert_eq!(c.get(&url).send().await.unwrap().status(), 404);
    let r = c
        .put(&url)
        .json(&serde_json::json!({
            "cpu_usage_percent": 45.5, "memory_usage_percent": 60.0,
            "total_memory_bytes": 17179869184u64, "load_average_1m": 1.25,
            "resource_metadata": {"gpu": "none"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let done: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        done,
        serde_json::json!({"success": true, "message": "Resource updated successfully"})
    );
    let res = common::get_json(&c, &sms, &format!("/api/v1/nodes/{node}/resource")).await;
    assert_eq!(res["node_uuid"], node.as_str());
    assert_eq!(res["cpu_usage_percent"], 45.5);
    assert_eq!(res["total_memory_bytes"], 17179869184u64);
    assert_eq!(res["disk_usage_percent"], 0.0, "absent figures are 0");
    assert_eq!(res["resource_metadata"]["gpu"], "none");
    assert!(res["updated_at"].as_i64().unwrap() > 1_700_000_000);

    let list = common::get_json(
        &c,
        &sms,
        &format!("/api/v1/resources?node_uuids={node},9a0c7d55-8a1c-4f9e-a2b1-000000000002"),
    )
    .await;
    assert_eq!(list["resources"].as_array().unwrap().len(), 1, "{list}");
    let with = common::get_json(&c, &sms, &format!("/api/v1/nodes/{node}/with-resource")).await;
    assert_eq!(with["ip_address"], "10.0.0.9");
    assert_eq!(with["resource"]["cpu_usage_percent"], 45.5, "{with}");

    // Out of range, refused naming the field; an unknown node is 404.
    let r = c
        .put(&url)
        .json(&serde_json::json!({"cpu_usage_percent": 150.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["field"], "cpu_usage_percent", "{e}");
    let r = c
        .put(sms.url("/api/v1/nodes/9a0c7d55-8a1c-4f9e-a2b1-000000000002/resource"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_certificate_path_on_a_listener_without_tls_is_accepted_and_named() {
    let sb = Sandbox::empty();
    sb.write_text(&SPEAR_EXAMPLE.replace(
        "[http]\naddr = \"127.0.0.1:0\"\n",
        "[http]\naddr = \"127.0.0.1:0\"\ncert_path = \"/etc/spear/http.pem\"\n",
    ));
    let sms = sb.start(&[]);
    let r = reqwest::get(sms.url("/health")).await.unwrap();
    assert_eq!(r.status(), 200);
    drop(sms);
    let log = std::fs::read_to_string(sb.path().join("logs/sms.log")).unwrap();
    assert!(
        log.contains("http.cert_path: accepted and not acted on: http.enable_tls is not true"),
        "{log}"
    );
}
