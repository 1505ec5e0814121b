//! The Spearlet's `/metrics`: what it ran, by tier, its executor failures, its link to SMS.

use crate::common::{Cluster, sample};

use std::time::Duration;

use serde_json::json;

/// The value of the sample `name` (with its labels) in `text`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spearlet_serves_metrics_of_its_work_and_its_failures() {
    let cluster = Cluster::new();
    let sms = cluster.sms();
    let node = cluster.spearlet("metered", &sms, "");
    let ok = sms.sh("echo hi", json!({})).await;
    let e = sms.finished(&ok, Duration::from_secs(20)).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    // A program that does not exist: the executor cannot start it (its own failure).
    let bad = sms
        .submit(json!({
            "executable": {"type": "process", "name": "/nonexistent/program"},
            "max_attempts": 1,
        }))
        .await;
    let e = sms.finished(&bad, Duration::from_secs(20)).await;
    assert_eq!(e["state"], "failed", "{e}");
    let text = node.text("/metrics").await;
    assert_eq!(sample(&text, "spearlet_running_executions"), 0.0);
    assert_eq!(sample(&text, "spearlet_sms_connected"), 1.0);
    assert_eq!(sample(&text, "spearlet_reports_pending"), 0.0);
    let served: f64 = ["hot", "warm", "cold"]
        .iter()
        .map(|t| {
            sample(
                &text,
                &format!("spearlet_invocations_total{{tier=\"{t}\"}}"),
            )
        })
        .sum();
    assert_eq!(served, 2.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "spearlet_executor_failures_total{executor=\"process\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "spearlet_executor_failures_total{executor=\"wasm\"}"),
        0.0
    );
    assert!(
        text.contains("spearlet_instances{state=\"ready\"}"),
        "{text}"
    );
}
