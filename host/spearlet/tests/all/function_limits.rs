//! The limits of function invocations on a real node: each `[spearlet.functions]` key, the
//! node-wide limit and the result budget, and concurrency control (token buckets, per-function
//! places, the adaptive limit).

use std::time::Duration;

use serde_json::json;
use spear_proto::spearlet as pb;
use spear_tests::guest;
use tonic::Code;

use crate::common::{Cluster, counter_task, register};
use crate::functions::{call, client, python_worker};

/// Each `[spearlet.functions]` key acts: the default deadline, the start timeout, the results
/// kept and their time to live, and the time a task's definition is used (0: SMS is asked on
/// every invocation, so an unregistered task is refused at once).
#[tokio::test]
async fn the_functions_limits_act() {
    let c = Cluster::new();
    let sms = c.sms();
    let node = c.spearlet(
        "fn",
        &sms,
        "[spearlet.functions]\ndefault_timeout_ms = 300\nstart_timeout_ms = 300\n\
         max_results = 1\nresult_ttl_secs = 1\ntask_ttl_ms = 0\n",
    );
    let task = counter_task(&sms).await;
    let mut f = client(&node).await;

    // No deadline given: the default's 300 ms stop a sleep of a second.
    let err = f.invoke(call(&task, "sleep", b"1")).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");

    // One result kept at a time, for a second.
    let mut first = call(&task, "echo", b"one");
    first.request_id = "one".into();
    f.invoke_async(first).await.unwrap();
    let mut second = call(&task, "echo", b"two");
    second.request_id = "two".into();
    let full = f.invoke_async(second.clone()).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    assert!(full.message().contains("max_results"), "{full:?}");
    let got = f
        .get_result(pb::GetResultRequest {
            request_id: "one".into(),
            wait_ms: 5_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state(), pb::InvocationState::Succeeded, "{got:?}");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let expired = f
        .get_result(pb::GetResultRequest {
            request_id: "one".into(),
            wait_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::NotFound, "{expired:?}");
    f.invoke_async(second).await.unwrap();

    // A worker that never says hello is given up after the start timeout.
    let mute = register(
        &sms,
        json!({"name": "mute", "executable": {"type": "process", "name": "/bin/sleep", "args": ["30"]}}),
    )
    .await;
    let mut patient = call(&mute, "count", b"");
    patient.timeout_ms = 10_000;
    let started = std::time::Instant::now();
    let err = f.invoke(patient).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("did not start"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Unregistered at SMS: refused at once (the definition is not kept).
    let r = sms
        .request(reqwest::Method::DELETE, &format!("/api/v1/tasks/{task}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let err = f.invoke(call(&task, "count", b"")).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::FailedPrecondition | Code::NotFound),
        "{err:?}"
    );
}

/// `max_concurrent` bounds the invocations in flight on the node (one waits for a place until
/// its deadline); `max_result_mb` bounds the outputs kept for `GetResult`.
#[tokio::test]
async fn the_node_wide_limit_and_the_result_budget_act() {
    let c = Cluster::new();
    let sms = c.sms();
    let node = c.spearlet(
        "fn",
        &sms,
        "[spearlet.functions]\nmax_concurrent = 1\nmax_result_mb = 1\n",
    );
    let task = counter_task(&sms).await;
    let mut f = client(&node).await;

    let mut slow = call(&task, "sleep", b"1");
    slow.request_id = "slow".into();
    f.invoke_async(slow).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut hurried = call(&task, "count", b"");
    hurried.timeout_ms = 300;
    let err = f.invoke(hurried).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_concurrent"), "{err:?}");
    // A patient one gets the place once the sleeper is done.
    let ok = f
        .invoke(call(&task, "count", b""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&ok.output[..], b"1");

    // An output of 2 MiB is answered to a sync caller but not kept for an async one.
    let big = vec![7u8; 2 << 20];
    let sync = f
        .invoke(call(&task, "echo", &big))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sync.output.len(), big.len());
    let mut kept = call(&task, "echo", &big);
    kept.request_id = "big".into();
    f.invoke_async(kept).await.unwrap();
    let end = f
        .get_result(pb::GetResultRequest {
            request_id: "big".into(),
            wait_ms: 10_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(end.state(), pb::InvocationState::Failed, "{end:?}");
    assert_eq!(end.code, Code::ResourceExhausted as i32);
    assert!(end.error.contains("max_result_mb"), "{}", end.error);
}

/// Concurrency control on a real node: a token bucket of 10 a second lets 10 through and
/// refuses the rest ("rate limited"); a task's metadata sets its own rate; one function at a time
/// (`max_per_function`); and the adaptive limit, driven down by a slow worker, shows on
/// `GET /api/v1/functions`.
#[tokio::test]
async fn rates_per_function_places_and_the_adaptive_limit_act() {
    let c = Cluster::new();
    let sms = c.sms();
    let node = c.spearlet(
        "fn",
        &sms,
        "[spearlet.functions]\nrate_per_sec = 10.0\nmax_per_function = 1\nadaptive_target_ms = 20\n",
    );
    let task = counter_task(&sms).await;
    let mut f = client(&node).await;
    // A first call starts the instance (not within 20 ms), then the bucket fills again.
    f.invoke(call(&task, "count", b"")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (mut ok, mut late, mut limited) = (0, 0, 0);
    let started = std::time::Instant::now();
    for _ in 0..25 {
        let mut quick = call(&task, "count", b"");
        quick.timeout_ms = 20;
        match f.invoke(quick).await {
            Ok(_) => ok += 1,
            // Let through by the limiter (it took a token), then past its 20 ms on a machine
            // busy with other tests: the limiter's count is what this checks.
            Err(e) if e.code() == Code::DeadlineExceeded => {
                assert!(e.message().contains("deadline"), "{e:?}");
                late += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().starts_with("rate limited"), "{e:?}");
                limited += 1;
            }
        }
    }
    // The bucket's ten, and the tokens it gained while the loop ran (one a tenth of a second;
    // one more for the part of a tenth it had when the loop began).
    let gained = (started.elapsed().as_secs_f64() * 10.0).floor() as usize + 1;
    assert!(
        (10..=10 + gained).contains(&(ok + late)),
        "{ok} through, {late} through but late, {limited} limited, in {:?}",
        started.elapsed()
    );
    assert!(ok >= 5, "{ok} through in time, {late} late");
    assert_eq!(ok + late + limited, 25);

    // A task whose metadata asks 1 a second; one function of it at a time.
    let bytes = std::fs::read(guest("component", "function-counter.wasm")).unwrap();
    let meta = sms.upload("function-counter.wasm", bytes).await;
    let slow_task = register(
        &sms,
        json!({"name": "slow", "metadata": {"spear.rate_per_sec": "1"},
               "executable": {"type": "wasm", "uri": meta["uri"]}}),
    )
    .await;
    let mut first = call(&slow_task, "sleep", b"1");
    first.request_id = "first".into();
    first.timeout_ms = 5_000;
    f.invoke_async(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = call(&slow_task, "count", b"");
    second.timeout_ms = 200;
    let err = f.invoke(second).await.unwrap_err();
    assert!(
        err.message().starts_with("rate limited"),
        "its own rate: {err:?}"
    );

    // The Python worker sleeping 100 ms a call, against a target of 20 ms: the limit falls.
    let py = register(
        &sms,
        json!({"name": "py", "executable": {"type": "process", "name": "/usr/bin/python3",
               "args": ["-u", python_worker()]}}),
    )
    .await;
    for _ in 0..6 {
        let mut nap = call(&py, "sleep", b"100");
        nap.timeout_ms = 10_000;
        // Spaced past the node's rate of 10 a second.
        tokio::time::sleep(Duration::from_millis(110)).await;
        f.invoke(nap).await.unwrap();
    }
    let status = node.get("/api/v1/functions").await;
    let py_limit = status["adaptive"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["task"] == py.as_str())
        .unwrap_or_else(|| panic!("{status}"))["limit"]
        .as_f64()
        .unwrap();
    assert!(
        py_limit < 3.0,
        "six slow calls cut the limit of 4 to {py_limit}: {status}"
    );

    // One `sleep` of the counter at a time: a second waits, then is refused.
    let mut held = call(&task, "sleep", b"1");
    held.request_id = "held".into();
    held.timeout_ms = 5_000;
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.invoke_async(held).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut another = call(&task, "sleep", b"1");
    another.timeout_ms = 300;
    let err = f.invoke(another).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_per_function"), "{err:?}");
}
