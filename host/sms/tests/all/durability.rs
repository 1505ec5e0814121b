//! State survives `kill -9` (redb); nodes that stop heartbeating become unhealthy, then go;
//! SIGTERM stops SMS cleanly.

use crate::common;

use std::time::{Duration, Instant};

use common::Sandbox;
use serde_json::{Value, json};

#[tokio::test]
async fn every_acknowledged_node_task_file_and_event_survives_kill_9() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let mut uuids = Vec::new();
    for i in 0..20 {
        let r = c
            .post(sms.url("/api/v1/nodes"))
            .json(&json!({"ip_address": format!("10.9.0.{i}"), "port": 5000 + i}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        uuids.push(
            r.json::<Value>().await.unwrap()["uuid"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let task: Value = c
        .post(sms.url("/api/v1/tasks"))
        .json(&json!({"name": "keep-me", "executable": {"type": "wasm", "uri": format!("sms+file://{}", "ab".repeat(32))}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file: Value = c
        .post(sms.url("/api/v1/files?name=k.bin"))
        .body(vec![9u8; 4096])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events_before: Vec<String> = {
        let mut r = c
            .get(sms.url("/api/v1/events?after=0"))
            .send()
            .await
            .unwrap();
        let mut text = String::new();
        while text.matches("id: ").count() < 22 {
            text.push_str(&String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()));
        }
        text.lines()
            .filter(|l| l.starts_with("data: "))
            .map(str::to_owned)
            .collect()
    };
    sms.kill_9();

    let sms = sb.start(&[]);
    let nodes: Value = c
        .get(sms.url("/api/v1/nodes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut found: Vec<String> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["uuid"].as_str().unwrap().to_owned())
        .collect();
    found.sort();
    uuids.sort();
    assert_eq!(found, uuids);
    let got: Value = c
        .get(sms.url(&format!(
            "/api/v1/tasks/{}",
            task["task_id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["name"], "keep-me");
    let bytes = c
        .get(sms.url(&format!(
            "/api/v1/files/{}",
            file["file_id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.len(), 4096);
    let mut r = c
        .get(sms.url("/api/v1/events?after=0"))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while text.matches("id: ").count() < 22 {
        text.push_str(&String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()));
    }
    let events_after: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("data: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(events_after[..22], events_before[..22]);
    // The log continues after the last stored cursor.
    c.post(sms.url("/api/v1/nodes"))
        .json(&json!({"ip_address": "10.9.9.9", "port": 1}))
        .send()
        .await
        .unwrap();
    while text.matches("id: ").count() < 23 {
        text.push_str(&String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()));
    }
    assert!(text.contains("id: 23"), "{text}");
}

#[tokio::test]
async fn silent_nodes_turn_unhealthy_then_are_removed() {
    let sb = Sandbox::new("heartbeat_timeout = 1\ncleanup_interval = 1\n");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let node: Value = c
        .post(sms.url("/api/v1/nodes"))
        .json(&json!({"ip_address": "10.0.0.1", "port": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uuid = node["uuid"].as_str().unwrap().to_owned();
    let status = |c: reqwest::Client, url: String| async move {
        let r = c.get(url).send().await.unwrap();
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return "gone".to_owned();
        }
        r.json::<Value>().await.unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let url = sms.url(&format!("/api/v1/nodes/{uuid}"));
    let start = Instant::now();
    let mut seen = vec![status(c.clone(), url.clone()).await];
    while seen.last().unwrap() != "gone" {
        assert!(start.elapsed() < Duration::from_secs(15), "{seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = status(c.clone(), url.clone()).await;
        if s != *seen.last().unwrap() {
            seen.push(s);
        }
    }
    assert_eq!(seen, vec!["active", "unhealthy", "gone"]);
    let mut r = c
        .get(sms.url("/api/v1/events?after=0"))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while !text.contains("node.removed") {
        text.push_str(&String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()));
    }
    assert!(text.contains("event: node.unhealthy"));
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_cli_flags_win() {
    let sb = Sandbox::new("");
    let sms = sb.start(&["--heartbeat-timeout", "7", "--log-level", "warn"]);
    let status = sms.terminate();
    assert!(status.success(), "{status:?}");
    // A bad config is refused before anything starts, naming the key.
    sb.write_config("[log]\nlevel = \"info\"\nformat = \"xml\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sms"))
        .current_dir(sb.path())
        .arg("--config")
        .arg(sb.config())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("log.format"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node that kept running an execution through an SMS restart delivers its result to the new
/// SMS, as long as no other node has taken the execution since: the work is not done twice.
#[tokio::test]
async fn a_result_from_before_a_restart_is_taken_by_the_new_sms() {
    use spear_proto::v1;
    use tokio_stream::StreamExt;

    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let node: Value = c
        .post(sms.url("/api/v1/nodes"))
        .json(&json!({
            "ip_address": "127.0.0.1",
            "port": 1,
            "capacity": {"cpu_millis": 1000, "memory_mb": 1024},
            "executors": ["process"],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uuid = node["uuid"].as_str().unwrap().to_owned();
    let (_execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let exec: Value = c
        .post(sms.url("/api/v1/executions"))
        .json(&json!({"executable": {"type": "process", "uri": "file:///bin/true"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = exec["execution_id"].as_str().unwrap().to_owned();
    let got = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("never assigned")
        .unwrap()
        .unwrap();
    assert_eq!(got.execution.unwrap().execution_id, id);
    // The assignment is sent before its round is stored (placement is at-least-once); wait until
    // it is durable: the event log holds only stored events.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let history = c
            .get(sms.url("/api/v1/events?follow=false"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if history.contains("event: execution.assigned") {
            break;
        }
        assert!(Instant::now() < deadline, "{history}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sms.kill_9();

    let sms = sb.start(&[]);
    // Keep the new SMS from placing it again, so the only way to finish it is the old result.
    let r = c
        .put(sms.url(&format!("/api/v1/nodes/{uuid}")))
        .json(&json!({"status": "draining"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
    let e: Value = c
        .get(sms.url(&format!("/api/v1/executions/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e["state"], "ready", "{e}");
    assert_eq!(e["orphaned_on"], uuid.as_str(), "{e}");
    let mut execs = v1::execution_service_client::ExecutionServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let opened = execs
        .assignments(v1::AssignmentsRequest {
            node_uuid: uuid.clone(),
            after: 0,
        })
        .await
        .unwrap();
    let session = opened
        .metadata()
        .get("spear-session")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let report = |node: &str| v1::ReportResultRequest {
        session: session.clone(),
        node_uuid: node.into(),
        execution_id: id.clone(),
        success: true,
        result: Some(v1::ExecutionResult {
            stdout: b"done\n".to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Another node cannot claim it.
    let refused = execs
        .report_result(report("someone-else"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    execs.report_result(report(&uuid)).await.unwrap();
    let e: Value = c
        .get(sms.url(&format!("/api/v1/executions/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e["state"], "succeeded", "{e}");
    assert_eq!(e["attempt"], 1, "{e}");
    assert_eq!(e["result"]["stdout"], "done\n", "{e}");
    // A second copy of the same report (an acknowledgement lost on the way) changes nothing.
    let again = execs.report_result(report(&uuid)).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
}
