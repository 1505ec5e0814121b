//! Deadlines on a real `sms` with fake Spearlets: refused or flagged when they cannot be met,
//! ordering the queue by urgency, and misses recorded.

use crate::common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Sandbox;
use common::fake_node::{Behaviour, FakeNode};
use serde_json::{Value, json};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn wasm(name: &str) -> Value {
    json!({"type": "wasm", "uri": "file:///tmp/x.wasm", "name": name})
}

#[tokio::test]
async fn a_deadline_that_cannot_be_met_is_refused_or_flagged() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let refused = |body: Value| {
        let (c, sms) = (c.clone(), &sms);
        async move {
            let (status, answer) = common::post_json(&c, sms, "/api/v1/executions", &body).await;
            assert_eq!(status, 400, "{body}: {answer}");
            assert_eq!(answer["error"]["field"], "deadline", "{answer}");
            answer["error"]["message"].as_str().unwrap().to_owned()
        }
    };
    let past = refused(json!({"executable": wasm("a"), "deadline": now_ms() - 1_000})).await;
    assert!(past.contains("past"), "{past}");
    let short = refused(json!({
        "executable": wasm("a"), "deadline": now_ms() + 5_000, "estimate_ms": 60_000
    }))
    .await;
    assert!(short.contains("estimate_ms"), "{short}");
    let text = refused(json!({"executable": wasm("a"), "deadline": "next tuesday"})).await;
    assert!(text.contains("RFC 3339"), "{text}");
    refused(json!({"executable": wasm("a"), "deadline": now_ms() + 400 * 86_400_000})).await;

    // RFC 3339 with an offset is read; the record shows it in ms.
    let at = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let text = at
        .to_offset(time::UtcOffset::from_hms(5, 30, 0).unwrap())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let id = common::submit(
        &c,
        &sms,
        &json!({"executable": wasm("b"), "deadline": text}),
    )
    .await;
    let e = common::state_of(&c, &sms, &id).await;
    let want = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    assert!(
        (e["deadline_ms"].as_i64().unwrap() - want).abs() < 1_000,
        "{e}"
    );
    assert!(e.get("deadline_infeasible").is_none(), "{e}");

    // Flagged instead under `infeasible = "flag"`.
    drop(sms);
    let sb = Sandbox::new("[deadlines]\ninfeasible = \"flag\"\n");
    let sms = sb.start(&[]);
    let id = common::submit(
        &c,
        &sms,
        &json!({"executable": wasm("c"), "deadline": now_ms() + 1_000, "estimate_ms": 5_000}),
    )
    .await;
    let e = common::state_of(&c, &sms, &id).await;
    assert_eq!(e["deadline_infeasible"], true, "{e}");
    let submitted = common::events(&c, &sms)
        .await
        .into_iter()
        .find(|ev| ev["kind"] == "execution.submitted" && ev["subject"] == id.as_str())
        .expect("the submission is logged");
    assert_eq!(
        submitted["data"]["deadline_infeasible"], true,
        "{submitted}"
    );
}

#[tokio::test]
async fn the_queue_puts_the_most_urgent_deadline_first() {
    let sb = Sandbox::new("[deadlines]\nurgency_window_ms = 30000\n");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    // One execution fits the node at a time; all are queued before it comes.
    let needs = json!({"cpu_millis": 1000, "memory_mb": 1, "disk_mb": 0});
    let now = now_ms();
    let mut ids = Vec::new();
    for (name, extra) in [
        ("plain", json!({})),
        ("far", json!({"deadline": now + 3_600_000})),
        ("near", json!({"deadline": now + 25_000})),
        (
            "nearer",
            json!({"deadline": now + 25_000, "estimate_ms": 10_000}),
        ),
        ("high", json!({"priority": "high"})),
    ] {
        let mut body = json!({"executable": wasm(name), "needs": needs});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        ids.push(common::submit(&c, &sms, &body).await);
    }
    let node = FakeNode::start(
        &sms.grpc_url(),
        &["wasm"],
        1000,
        Behaviour::Run {
            hold: Duration::from_millis(20),
        },
    )
    .await;
    for id in &ids {
        common::wait_state(&c, &sms, id, "succeeded").await;
    }
    // As if waiting since (latest start less the 30 s window): nearer −15 s, near −5 s; high is
    // one level (10 s) ahead of plain, as if waiting since −10 s; far has an hour of slack.
    let order = [3, 4, 2, 0, 1].map(|i| ids[i].clone()).to_vec();
    assert_eq!(node.received(), order);
}

#[tokio::test]
async fn a_missed_deadline_is_recorded_once_and_the_work_still_runs() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let late = common::submit(
        &c,
        &sms,
        &json!({"executable": wasm("late"), "deadline": now_ms() + 300}),
    )
    .await;
    let in_time = common::submit(
        &c,
        &sms,
        &json!({"executable": wasm("in-time"), "deadline": now_ms() + 60_000}),
    )
    .await;
    // No node yet: the first deadline passes in the queue.
    let start = Instant::now();
    loop {
        let e = common::state_of(&c, &sms, &late).await;
        if e["deadline_missed"] == true {
            assert_eq!(e["state"], "ready", "{e}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _node = FakeNode::start(
        &sms.grpc_url(),
        &["wasm"],
        4000,
        Behaviour::Run {
            hold: Duration::ZERO,
        },
    )
    .await;
    let done = common::wait_state(&c, &sms, &late, "succeeded").await;
    assert_eq!(done["deadline_missed"], true, "{done}");
    let fine = common::wait_state(&c, &sms, &in_time, "succeeded").await;
    assert!(fine.get("deadline_missed").is_none(), "{fine}");
    let misses: Vec<Value> = common::events(&c, &sms)
        .await
        .into_iter()
        .filter(|ev| ev["kind"] == "execution.deadline_missed")
        .collect();
    assert_eq!(misses.len(), 1, "{misses:?}");
    assert_eq!(misses[0]["subject"], late.as_str());
    assert_eq!(misses[0]["data"]["state"], "ready");
    let metrics = common::get_text(&c, &sms, "/metrics").await;
    assert!(metrics.contains("sms_deadline_misses_total 1"), "{metrics}");
}
