//! `-- invoke` (issue 13): invocations of a wasm function through SMS, on the cluster of
//! [`super::cluster`] (release `sms` and two release `spearlet`s on loopback), the task the
//! function component of `tests/fixtures/function-counter` (`count`):
//!
//! - **one at a time**: `POST /api/v1/tasks/{id}/invoke`, answer, again; p50 / p99;
//! - **throughput**: `spear.v1.TaskService/Invoke` over gRPC, 64 in flight; invocations per second;
//! - **baseline, same run, same cluster**: one-at-a-time executions of `/bin/true`
//!   (`POST /api/v1/executions`, waited for on the event stream), what each call would cost
//!   without live instances.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use spear_proto::v1;
use spear_proto::v1::task_service_client::TaskServiceClient;
use spear_tests::guest;

use super::cluster::{Cluster, Sec, submit};
use super::{Ends, percentile};

const IN_FLIGHT: usize = 64;

pub fn run(runtime: &tokio::runtime::Runtime, quick: bool) {
    let (total, one_by_one) = if quick { (1000, 200) } else { (5000, 1000) };
    runtime.block_on(async move {
        let cluster = Cluster::start(Sec::Off, 2);
        let client = cluster.client();
        let http = cluster.http.clone();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let bytes = std::fs::read(guest("component", "function-counter.wasm")).unwrap();
        let meta: Value = client
            .post(format!("{http}/api/v1/files?name=counter.wasm"))
            .body(bytes)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let task: Value = client
            .post(format!("{http}/api/v1/tasks"))
            .json(&json!({"name": "counter", "executable": {"type": "wasm", "uri": meta["uri"]}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let task = task["task_id"].as_str().unwrap().to_owned();
        let url = format!("{http}/api/v1/tasks/{task}/invoke");
        let body = json!({"function": "count"});
        let rest = |client: reqwest::Client, url: String, body: Value| async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200, "{:?}", r.text().await);
        };
        // Warm: instances on both nodes.
        for _ in 0..200 {
            rest(client.clone(), url.clone(), body.clone()).await;
        }

        let mut lat = Vec::with_capacity(one_by_one);
        for _ in 0..one_by_one {
            let t = Instant::now();
            rest(client.clone(), url.clone(), body.clone()).await;
            lat.push(t.elapsed());
        }
        lat.sort_unstable();

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let grpc = TaskServiceClient::new(channel);
        let start = Instant::now();
        let done = futures::stream::iter(0..total)
            .map(|_| {
                let mut g = grpc.clone();
                let task = task.clone();
                async move {
                    g.invoke(v1::InvokeTaskRequest {
                        task_id: task,
                        function_name: "count".into(),
                        payload: Vec::new(),
                        timeout_ms: 0,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let elapsed = start.elapsed();
        assert_eq!(done.len(), total);
        let nodes: std::collections::BTreeSet<String> =
            done.iter().map(|a| a.node_uuid.clone()).collect();

        // Baseline: executions of /bin/true one at a time, on the same cluster.
        let mut ends = Ends::open(&client, &http).await;
        let runs = one_by_one.min(200);
        let mut exec = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let id = submit(&client, &http).await;
            loop {
                let (end, state) = ends.next().await;
                if end == id {
                    assert_eq!(state, "succeeded");
                    break;
                }
            }
            exec.push(t.elapsed());
        }
        exec.sort_unstable();

        let (p50, p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));
        let (e50, e99) = (percentile(&exec, 0.50), percentile(&exec, 0.99));
        println!(
            "wasm `count` through SMS, 2 Spearlets ({} used), SMS on redb, least-connections",
            nodes.len()
        );
        println!("| workload | figure |");
        println!("|---|---:|");
        println!("| invocation one at a time (REST), p50 / p99 ms | {p50:.3} / {p99:.3} |");
        println!(
            "| invocations/s over gRPC, {IN_FLIGHT} in flight ({total}) | {:.0} |",
            total as f64 / elapsed.as_secs_f64()
        );
        println!("| execution of /bin/true one at a time (same cluster), p50 / p99 ms | {e50:.3} / {e99:.3} |");
        println!(
            "an invocation's p50 is {:.3}x an execution's ({:.1}x faster)",
            p50 / e50,
            e50 / p50
        );
    });
}
