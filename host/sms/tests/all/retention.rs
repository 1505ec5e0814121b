//! Retention (`[retention]`): finished executions leave memory but stay found in storage until
//! their records expire; the event log is compacted. Through a real `sms` process.

use crate::common;
use crate::paging::{follow, submit};

use std::time::Duration;

use common::Sandbox;
use serde_json::{Value, json};
use spear_proto::v1;
use tokio_stream::StreamExt;

/// A node that reports every assignment it is sent a success at once, with `result`; given
/// `stdin`, it checks each assignment carries that whole input (a mismatch ends it: the test's
/// wait for the success then fails).
pub(crate) async fn succeeding_node(
    sms: &common::Sms,
    result: v1::ExecutionResult,
    stdin: Option<Vec<u8>>,
) -> tokio::task::JoinHandle<()> {
    let uuid = common::register_wasm_node(sms, 1000).await;
    let (execs, mut stream) = common::open_assignments(sms, &uuid).await;
    tokio::spawn(async move {
        while let Some(Ok(a)) = stream.next().await {
            if a.cancel {
                continue;
            }
            let e = a.execution.unwrap();
            if let Some(stdin) = &stdin {
                assert_eq!(&e.stdin, stdin, "the node gets the whole input");
            }
            execs
                .clone()
                .report_result(v1::ReportResultRequest {
                    session: a.session,
                    node_uuid: uuid.clone(),
                    execution_id: e.execution_id,
                    success: true,
                    result: Some(result.clone()),
                    error: String::new(),
                    attempt: 0,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    })
}

/// Poll `GET path` until `done` holds of its JSON (at most 20 s).
pub(crate) async fn wait_for(
    c: &reqwest::Client,
    sms: &common::Sms,
    path: &str,
    done: impl Fn(&Value) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = common::get_json(c, sms, path).await;
        if done(&v) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many executions in `state` SMS holds in memory, from `/metrics`.
async fn in_memory(c: &reqwest::Client, sms: &common::Sms, state: &str) -> u64 {
    let metrics = common::get_text(c, sms, "/metrics").await;
    let line = format!("sms_executions{{state=\"{state}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("{line} in:\n{metrics}"))
        .parse()
        .unwrap()
}

/// Submit `n` executions no node can run (they stay queued); their ids.
async fn unplaceable(c: &reqwest::Client, sms: &common::Sms, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let body = json!({"executable": {"type": "process", "uri": "file:///bin/true"}});
        ids.push(common::submit(c, sms, &body).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_executions_leave_memory_and_are_still_found_in_storage() {
    let sb = Sandbox::new("[retention]\nmemory_count = 3\n");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let node = succeeding_node(&sms, v1::ExecutionResult::default(), None).await;
    // One at a time: they finish in the order they were submitted.
    let mut done = Vec::new();
    for _ in 0..6 {
        let id = submit(&c, &sms, 1, "a").await.remove(0);
        let path = format!("/api/v1/executions/{id}");
        wait_for(&c, &sms, &path, |e| e["state"] == "succeeded").await;
        done.push(id);
    }
    let queued = unplaceable(&c, &sms, 3).await;
    let everything: Vec<String> = done.iter().chain(&queued).cloned().collect();
    // The histograms saw the commits, the rounds and the placements.
    let metrics = common::get_text(&c, &sms, "/metrics").await;
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
            .unwrap_or_else(|| panic!("{name} in:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(count("sms_placement_seconds"), 6);
    assert!((1..=6).contains(&count("sms_round_placements")));
    assert!(
        count("sms_storage_commit_seconds") >= 12,
        "submits and results, at least"
    );
    assert_eq!(
        count("sms_storage_commit_writes"),
        count("sms_storage_commit_seconds")
    );

    // The three that finished first leave memory (within a second or so)…
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_memory(&c, &sms, "succeeded").await > 3 {
        assert!(tokio::time::Instant::now() < deadline, "never left memory");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(in_memory(&c, &sms, "ready").await, 3);
    // …and are still found, one by one and in listings merged in submission order with those
    // in memory, whichever way and however paged.
    for id in &done {
        let e = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}")).await;
        assert_eq!(e["state"], "succeeded", "{e}");
    }
    for limit in [1, 2, 4, 500] {
        let (all, _) = follow(&c, &sms, &format!("limit={limit}")).await;
        assert_eq!(all, everything, "limit {limit}");
        let (all, _) = follow(&c, &sms, &format!("limit={limit}&order=desc")).await;
        let newest_first: Vec<String> = everything.iter().rev().cloned().collect();
        assert_eq!(all, newest_first, "limit {limit}, newest first");
    }
    let (all, _) = follow(&c, &sms, "limit=2&state=succeeded").await;
    assert_eq!(all, done);
    let (all, _) = follow(&c, &sms, "limit=2&state=ready").await;
    assert_eq!(all, queued);

    // An execution may depend on one that left memory: it is read from storage.
    let later = common::submit(
        &c,
        &sms,
        &json!({"executable": {"type": "wasm", "uri": "file:///a.wasm"}, "depends_on": [done[0]]}),
    )
    .await;
    let path = format!("/api/v1/executions/{later}");
    wait_for(&c, &sms, &path, |e| e["state"] == "succeeded").await;
    node.abort();

    // A restart reads only what is unfinished; the rest is found in storage as before.
    assert!(sms.terminate().success());
    let sms = sb.start(&[]);
    assert_eq!(in_memory(&c, &sms, "succeeded").await, 0);
    assert_eq!(in_memory(&c, &sms, "ready").await, 3);
    let (all, _) = follow(&c, &sms, "limit=3").await;
    let mut expected = everything.clone();
    expected.push(later.clone());
    assert_eq!(all, expected);
    let e = common::get_json(&c, &sms, &format!("/api/v1/executions/{}", done[0])).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    // Cancelling a finished one that is only stored is refused as before.
    let r = c
        .post(sms.url(&format!("/api/v1/executions/{}/cancel", done[1])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_events_past_their_retention_are_deleted() {
    let sb = Sandbox::new(
        "[retention]\nmemory_age_secs = 0\nrecords_age_secs = 1\nevents_count = 5\n\
         sweep_interval_secs = 1\n",
    );
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let ids = unplaceable(&c, &sms, 4).await;
    for id in &ids[..3] {
        common::cancel(&c, &sms, id).await;
    }
    // Gone from storage a second or two after they finished; the unfinished one stays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for id in &ids[..3] {
        loop {
            let r = c
                .get(sms.url(&format!("/api/v1/executions/{id}")))
                .send()
                .await
                .unwrap();
            if r.status() == 404 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} kept");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (all, _) = follow(&c, &sms, "limit=2").await;
    assert_eq!(all, ids[3..]);

    // 4 submitted + 3 cancelled events: the newest 5 are kept.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let events = common::events(&c, &sms).await;
        if events.len() <= 5 {
            break events;
        }
        assert!(tokio::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cursors: Vec<u64> = kept.iter().map(|e| e["cursor"].as_u64().unwrap()).collect();
    assert_eq!(cursors, [3, 4, 5, 6, 7], "from the oldest kept (after=0)");

    // Asking to resume before them: 410, naming where to resume.
    let r = c
        .get(sms.url("/api/v1/events?after=1&follow=false"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "compacted", "{body}");
    assert_eq!(body["error"]["resume_from"], 2, "{body}");
    let r = c
        .get(sms.url("/api/v1/events?after=2&follow=false"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // gRPC says the same.
    let mut events = v1::event_service_client::EventServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let status = events
        .subscribe(v1::SubscribeRequest { after: 1 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("resume from cursor 2"),
        "{status:?}"
    );
}

/// The files in the sandbox's blob store.
fn blob_files(sb: &Sandbox) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(sb.path().join("data/files/blobs"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_live_in_blobs_shared_by_content_until_no_record_names_them() {
    let sb = Sandbox::new(
        "[retention]\nmemory_age_secs = 0\nrecords_age_secs = 2\nsweep_interval_secs = 1\n",
    );
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    // A node that checks it is sent the whole input, and answers 3,000 bytes of output.
    let stdin = "i".repeat(5_000);
    let answer = v1::ExecutionResult {
        stdout: vec![b'o'; 3_000],
        stderr: b"short".to_vec(),
        ..Default::default()
    };
    let node = succeeding_node(&sms, answer, Some(stdin.clone().into_bytes())).await;
    let mut ran = Vec::new();
    for _ in 0..2 {
        let id = common::submit(
            &c,
            &sms,
            &json!({"executable": {"type": "wasm", "uri": "file:///a.wasm"}, "stdin": stdin}),
        )
        .await;
        let path = format!("/api/v1/executions/{id}");
        wait_for(&c, &sms, &path, |e| e["state"] == "succeeded").await;
        ran.push(id);
    }
    node.abort();
    // Read by id: whole. Listed: the references, not the bytes.
    let e = common::get_json(&c, &sms, &format!("/api/v1/executions/{}", ran[0])).await;
    assert_eq!(
        e["stdin"].as_array().unwrap().len(),
        5_000,
        "{}",
        e["stdin_blob"]
    );
    assert_eq!(e["result"]["stdout"], "o".repeat(3_000));
    assert_eq!(e["result"]["stderr"], "short");
    let page = common::get_json(&c, &sms, "/api/v1/executions").await;
    let listed = &page["executions"][0];
    assert_eq!(listed["stdin"], json!([]), "{listed}");
    assert_eq!(listed["stdin_blob"]["size"], 5_000, "{listed}");
    assert_eq!(listed["result"]["stdout"], "", "{listed}");
    assert_eq!(listed["result"]["stdout_blob"]["size"], 3_000, "{listed}");
    assert!(
        listed["result"].get("stderr_blob").is_none(),
        "short: inline"
    );
    // gRPC listings carry the references too.
    let mut grpc = v1::execution_service_client::ExecutionServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let listed_grpc = grpc
        .list_executions(v1::ListExecutionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = &listed_grpc.executions[0];
    assert!(first.stdin.is_empty());
    assert_eq!(first.stdin_blob.as_ref().map(|b| b.size), Some(5_000));
    let result = first.result.as_ref().unwrap();
    assert_eq!(result.stdout_blob.as_ref().map(|b| b.size), Some(3_000));
    // Two executions, the same input and output: two files.
    let stdin_sha = listed["stdin_blob"]["sha256"].as_str().unwrap().to_owned();
    let stdout_sha = listed["result"]["stdout_blob"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut both = vec![stdin_sha.clone(), stdout_sha];
    both.sort();
    assert_eq!(blob_files(&sb), both);

    // One more with that input, which no node runs: the input stays while it names it; the
    // output goes with the records of the two that ran.
    let body = json!({"executable": {"type": "process", "uri": "file:///bin/cat"}, "stdin": stdin});
    let queued = common::submit(&c, &sms, &body).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while blob_files(&sb) != [stdin_sha.clone()] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            blob_files(&sb)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ran {
        let r = c
            .get(sms.url(&format!("/api/v1/executions/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "its record went first");
    }
    // Cancelled, then past its retention: the input goes too.
    common::cancel(&c, &sms, &queued).await;
    while !blob_files(&sb).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            blob_files(&sb)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_whose_input_file_is_gone_fails_instead_of_running_on_nothing() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let id = common::submit(&c, &sms, &json!({"executable": {"type": "wasm", "uri": "file:///a.wasm"}, "stdin": "i".repeat(5_000)})).await;
    for name in blob_files(&sb) {
        std::fs::remove_file(sb.path().join("data/files/blobs").join(name)).unwrap();
    }
    // Read whole: the missing file is a storage failure, said plainly.
    let r = c
        .get(sms.url(&format!("/api/v1/executions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    // Placed on a node: never sent, failed.
    let uuid = common::register_wasm_node(&sms, 4).await;
    let (_execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let page = "/api/v1/executions?state=failed";
    wait_for(&c, &sms, page, |p| {
        p["executions"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    let listed = common::get_json(&c, &sms, page).await;
    let error = listed["executions"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.starts_with("its standard input could not be read"),
        "{error}"
    );
    let sent = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(sent.is_err(), "nothing was sent: {sent:?}");
}

/// The sandbox's redb store, opened through the plugin as SMS opens it (SMS must be stopped).
fn open_store(sb: &Sandbox) -> Box<dyn spear_plugin_api::StorageBackend> {
    use spear_plugin_runtime::engine::WasmEngine;
    use spear_plugin_runtime::{LimitValues, Limits, load_file};
    let engine = WasmEngine::new().unwrap();
    let limits = std::sync::Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&spear_tests::guest("native", "redb.so"), &engine, &limits).unwrap();
    let mut store = plugin.storage().unwrap();
    let path = sb.path().join("data/sms.redb");
    store
        .open(&format!(r#"{{"path": {:?}}}"#, path.display().to_string()))
        .unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_before_retention_is_moved_once_at_start() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let ids = unplaceable(&c, &sms, 3).await;
    common::cancel(&c, &sms, &ids[0]).await;
    assert!(sms.terminate().success());
    // As an older version kept it: the finished execution under exec/, like the others.
    {
        let store = open_store(&sb);
        let done = format!("done/{}", ids[0]);
        let record = store
            .get(done.as_bytes())
            .unwrap()
            .expect("stored as finished");
        store.delete(done.as_bytes()).unwrap();
        // …and without the newest-first index.
        let inverted: String = ids[0]
            .chars()
            .map(|c| match c.to_digit(16) {
                Some(d) => char::from_digit(15 - d, 16).unwrap(),
                None => c,
            })
            .collect();
        assert!(
            store
                .delete(format!("done-rev/{inverted}").as_bytes())
                .unwrap()
        );
        store
            .put(format!("exec/{}", ids[0]).as_bytes(), &record)
            .unwrap();
    }
    let sms = sb.start(&[]);
    assert_eq!(
        in_memory(&c, &sms, "cancelled").await,
        0,
        "not read into memory"
    );
    assert_eq!(in_memory(&c, &sms, "ready").await, 2);
    let e = common::get_json(&c, &sms, &format!("/api/v1/executions/{}", ids[0])).await;
    assert_eq!(e["state"], "cancelled", "{e}");
    let (all, _) = follow(&c, &sms, "limit=2&order=desc").await;
    assert_eq!(all, ids.iter().rev().cloned().collect::<Vec<_>>());
    assert!(sms.terminate().success());
    let store = open_store(&sb);
    assert!(
        store
            .get(format!("exec/{}", ids[0]).as_bytes())
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get(format!("done/{}", ids[0]).as_bytes())
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .get(format!("exec/{}", ids[1]).as_bytes())
            .unwrap()
            .is_some()
    );
}
