//! Preemption on a real `sms` with fake Spearlets that keep to their slots: which run is
//! preempted, for what, within the gap and the budget; the victim requeued without spending an
//! attempt, with its checkpoint sent to its next node; `node` mode; a stop no one asked for.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Sandbox, Sms};
use serde_json::json;
use spear_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// What a [`SlotNode`] saw: starts (with the checkpoint each came with) and stops.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Start {
        id: String,
        attempt: u32,
        checkpoint: Vec<u8>,
    },
    Preempt {
        id: String,
        grace_ms: u64,
    },
    Cancel(String),
}

/// A fake Spearlet with `slots` slots: it starts what it is sent while a slot is free (reporting
/// it running), keeps the rest waiting by priority, and never ends a run by itself. A preempted
/// run stops at once and is reported preempted with the checkpoint `ckpt:<id>`.
struct SlotNode {
    uuid: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    finish: mpsc::UnboundedSender<String>,
    _task: tokio::task::JoinHandle<()>,
}

fn rank(p: &str) -> u8 {
    match p {
        "low" => 0,
        "high" => 2,
        "urgent" => 3,
        _ => 1,
    }
}

/// Heartbeats of node `uuid`, every 200 ms until aborted.
async fn heartbeats(sms: &Sms, uuid: &str) -> tokio::task::JoinHandle<()> {
    let mut nodes = v1::node_service_client::NodeServiceClient::connect(sms.grpc_url())
        .await
        .unwrap();
    let uuid = uuid.to_owned();
    tokio::spawn(async move {
        loop {
            let _ = nodes
                .heartbeat(v1::HeartbeatRequest {
                    uuid: uuid.clone(),
                    ..Default::default()
                })
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

impl SlotNode {
    /// `answers`: it stops a preempted run and reports it (else it hears the stop and does
    /// nothing, as a node that does not know preemption).
    async fn start(sms: &Sms, slots: u32, answers: bool) -> Self {
        let uuid = common::register_wasm_node(sms, slots).await;
        let (mut execs, mut stream) = common::open_assignments(sms, &uuid).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (finish, mut finishing) = mpsc::unbounded_channel::<String>();
        let (log, id) = (seen.clone(), uuid.clone());
        let beat = heartbeats(sms, &uuid).await;
        let task = tokio::spawn(async move {
            let mut session = String::new();
            // Running: id → attempt. Waiting: (higher priority first, arrival) → execution.
            let mut running: BTreeMap<String, u32> = BTreeMap::new();
            let mut waiting: BTreeMap<(std::cmp::Reverse<u8>, u64), v1::Execution> =
                BTreeMap::new();
            let mut arrivals = 0u64;
            loop {
                tokio::select! {
                    a = stream.next() => {
                        let Some(Ok(a)) = a else { break };
                        session = a.session.clone();
                        let e = a.execution.unwrap();
                        if a.cancel && a.preempt {
                            log.lock().unwrap().push(Seen::Preempt {
                                id: e.execution_id.clone(),
                                grace_ms: a.grace_ms,
                            });
                            let stop = if answers { running.remove(&e.execution_id) } else { None };
                            if let Some(attempt) = stop {
                                execs.report_result(v1::ReportResultRequest {
                                    session: session.clone(),
                                    node_uuid: id.clone(),
                                    execution_id: e.execution_id.clone(),
                                    error: "killed by signal 15".into(),
                                    attempt,
                                    preempted: true,
                                    checkpoint: format!("ckpt:{}", e.execution_id).into_bytes(),
                                    ..Default::default()
                                }).await.unwrap();
                            }
                        } else if a.cancel {
                            log.lock().unwrap().push(Seen::Cancel(e.execution_id.clone()));
                            running.remove(&e.execution_id);
                        } else {
                            arrivals += 1;
                            waiting.insert((std::cmp::Reverse(rank(&e.priority)), arrivals), e);
                        }
                    }
                    Some(done) = finishing.recv() => {
                        if let Some(attempt) = running.remove(&done) {
                            execs.report_result(v1::ReportResultRequest {
                                session: session.clone(),
                                node_uuid: id.clone(),
                                execution_id: done,
                                success: true,
                                attempt,
                                ..Default::default()
                            }).await.unwrap();
                        }
                    }
                }
                // Start what waits while a slot is free, the highest priority first.
                while running.len() < slots as usize {
                    let Some((_, e)) = waiting.pop_first() else {
                        break;
                    };
                    log.lock().unwrap().push(Seen::Start {
                        id: e.execution_id.clone(),
                        attempt: e.attempt,
                        checkpoint: e.checkpoint_data.clone(),
                    });
                    execs
                        .report_state(v1::ReportStateRequest {
                            session: session.clone(),
                            node_uuid: id.clone(),
                            execution_id: e.execution_id.clone(),
                            state: "running".into(),
                            attempt: e.attempt,
                        })
                        .await
                        .unwrap();
                    running.insert(e.execution_id, e.attempt);
                }
            }
            beat.abort();
        });
        SlotNode {
            uuid,
            seen,
            finish,
            _task: task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn preempted(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Preempt { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    fn finish(&self, id: &str) {
        self.finish.send(id.to_owned()).unwrap();
    }
}

fn sandbox(preemption: &str, prefetch: u32) -> Sandbox {
    Sandbox::new(&format!(
        "[scheduler]\nstrategy = \"least-connections\"\n\
         [dispatch]\nprefetch = {prefetch}\n[preemption]\n{preemption}\n"
    ))
}

async fn submit(
    c: &reqwest::Client,
    sms: &Sms,
    priority: &str,
    extra: serde_json::Value,
) -> String {
    let mut body = json!({"executable": {"type": "wasm", "uri": "file:///tmp/x.wasm", "name": "w"},
        "priority": priority, "max_attempts": 1});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    common::submit(c, sms, &body).await
}

async fn running(c: &reqwest::Client, sms: &Sms, id: &str) {
    common::wait_state(c, sms, id, "running").await;
}

/// Wait until `what` holds, or fail after 10 s saying `why`.
async fn until(why: &str, mut what: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !what() {
        assert!(Instant::now() < end, "{why}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(c: &reqwest::Client, sms: &Sms, name: &str) -> f64 {
    let text = common::get_text(c, sms, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn cluster_mode_preempts_the_lowest_latest_run_and_requeues_it_with_its_checkpoint() {
    let sb = sandbox("mode = \"cluster\"\ngrace_ms = 1234", 0);
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let a = SlotNode::start(&sms, 3, true).await;
    let low_old = submit(&c, &sms, "low", json!({"checkpoint": true})).await;
    running(&c, &sms, &low_old).await;
    let normal = submit(&c, &sms, "normal", json!({})).await;
    running(&c, &sms, &normal).await;
    let low_new = submit(&c, &sms, "low", json!({"checkpoint": true})).await;
    running(&c, &sms, &low_new).await;

    // The node is full: urgent work takes the place of the low run that started last.
    let urgent = submit(&c, &sms, "urgent", json!({})).await;
    running(&c, &sms, &urgent).await;
    assert_eq!(a.preempted(), [low_new.as_str()], "{:?}", a.seen());
    assert!(a.seen().contains(&Seen::Preempt {
        id: low_new.clone(),
        grace_ms: 1234
    }));
    let back = common::state_of(&c, &sms, &low_new).await;
    assert_eq!(back["state"], "ready", "{back}");
    assert_eq!(
        (&back["attempt"], &back["requeued"], &back["preemptions"]),
        (&json!(1), &json!(1), &json!(1)),
        "requeued, its attempt not spent: {back}"
    );
    assert!(
        back["checkpoint_blob"]["size"].as_u64().unwrap() > 0,
        "{back}"
    );
    assert_eq!(
        metric(&c, &sms, "sms_preemptions_total{result=\"preempted\"}").await,
        1.0
    );

    // Another node: the preempted run goes there with its checkpoint, and ends well on its one
    // attempt.
    let b = SlotNode::start(&sms, 1, true).await;
    running(&c, &sms, &low_new).await;
    let start = b
        .seen()
        .into_iter()
        .find(|s| matches!(s, Seen::Start { id, .. } if *id == low_new))
        .unwrap();
    assert_eq!(
        start,
        Seen::Start {
            id: low_new.clone(),
            attempt: 2,
            checkpoint: format!("ckpt:{low_new}").into_bytes()
        }
    );
    b.finish(&low_new);
    let done = common::wait_state(&c, &sms, &low_new, "succeeded").await;
    assert_eq!(done["max_attempts"], 1);
    let events = common::events(&c, &sms).await;
    let of = |kind: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind && e["subject"] == low_new.as_str())
            .unwrap_or_else(|| panic!("no {kind}: {events:?}"))
            .clone()
    };
    let preempted = of("execution.preempted");
    assert_eq!(preempted["data"]["for"], urgent.as_str());
    assert_eq!(preempted["data"]["for_priority"], "urgent");
    assert_eq!(preempted["data"]["node_uuid"], a.uuid.as_str());
    assert_eq!(of("execution.requeued")["data"]["reason"], "preempted");
    assert_eq!(a.preempted().len(), 1, "one preemption: {:?}", a.seen());
}

#[tokio::test]
async fn the_gap_decides_what_may_be_preempted() {
    let sb = sandbox("mode = \"cluster\"\nmin_priority_gap = 2", 0);
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let a = SlotNode::start(&sms, 1, true).await;
    let normal = submit(&c, &sms, "normal", json!({})).await;
    running(&c, &sms, &normal).await;
    // High is one level above: it waits.
    let high = submit(&c, &sms, "high", json!({})).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(a.preempted().is_empty(), "{:?}", a.seen());
    assert_eq!(common::state_of(&c, &sms, &high).await["state"], "ready");
    // Urgent is two above.
    let urgent = submit(&c, &sms, "urgent", json!({})).await;
    running(&c, &sms, &urgent).await;
    assert_eq!(a.preempted(), [normal.as_str()]);
    // The normal run goes back ahead of nothing: high and normal wait for the place.
    assert_eq!(common::state_of(&c, &sms, &normal).await["state"], "ready");
}

#[tokio::test]
async fn the_budget_caps_preemptions_in_a_minute() {
    let sb = sandbox("mode = \"cluster\"\nbudget_per_minute = 1", 0);
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let a = SlotNode::start(&sms, 2, true).await;
    for _ in 0..2 {
        let low = submit(&c, &sms, "low", json!({})).await;
        running(&c, &sms, &low).await;
    }
    let first = submit(&c, &sms, "urgent", json!({})).await;
    let second = submit(&c, &sms, "urgent", json!({})).await;
    until("the first preemption", || a.preempted().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        a.preempted().len(),
        1,
        "the budget allows one: {:?}",
        a.seen()
    );
    let states = [
        common::state_of(&c, &sms, &first).await["state"].clone(),
        common::state_of(&c, &sms, &second).await["state"].clone(),
    ];
    assert!(
        states.contains(&json!("running")) && states.contains(&json!("ready")),
        "{states:?}"
    );
    assert!(metric(&c, &sms, "sms_preemptions_total{result=\"over_budget\"}").await >= 1.0);
}

#[tokio::test]
async fn node_mode_preempts_only_for_work_waiting_on_the_node() {
    // One slot and one place ahead: the urgent run is sent to the node and waits there.
    let sb = sandbox("mode = \"node\"", 1);
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let a = SlotNode::start(&sms, 1, true).await;
    let low = submit(&c, &sms, "low", json!({})).await;
    running(&c, &sms, &low).await;
    let urgent = submit(&c, &sms, "urgent", json!({})).await;
    running(&c, &sms, &urgent).await;
    assert_eq!(a.preempted(), [low.as_str()]);

    // A gap of 2: low runs, normal waits on the node (not far enough above it), and urgent waits
    // in SMS's queue (the node's place ahead is taken). Cluster mode would preempt the low run
    // for the urgent one; node mode does not, for work that is not on the node.
    let sb = sandbox("mode = \"node\"\nmin_priority_gap = 2", 1);
    let sms = sb.start(&[]);
    let b = SlotNode::start(&sms, 1, true).await;
    let low = submit(&c, &sms, "low", json!({})).await;
    running(&c, &sms, &low).await;
    let normal = submit(&c, &sms, "normal", json!({})).await;
    common::wait_state(&c, &sms, &normal, "assigned").await;
    let queued = submit(&c, &sms, "urgent", json!({})).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(b.preempted().is_empty(), "{:?}", b.seen());
    assert_eq!(common::state_of(&c, &sms, &queued).await["state"], "ready");
    assert_eq!(common::state_of(&c, &sms, &low).await["state"], "running");
}

#[tokio::test]
async fn a_victim_not_reported_stopped_is_taken_back_after_its_grace() {
    // The node hears the stop and never answers it.
    let sb = sandbox("mode = \"cluster\"\ngrace_ms = 0", 0);
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let a = SlotNode::start(&sms, 1, false).await;
    let low = submit(&c, &sms, "low", json!({})).await;
    running(&c, &sms, &low).await;
    let urgent = submit(&c, &sms, "urgent", json!({})).await;
    until("the preemption", || a.preempted().len() == 1).await;
    // Held while the node may still be stopping it; then (30 s past its grace) taken back, and
    // the node told to cancel it.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(common::state_of(&c, &sms, &low).await["state"], "running");
    let back = common::wait_state(&c, &sms, &low, "ready").await;
    assert_eq!(back["requeued"], 1, "{back}");
    assert!(back.get("preempting_ms").is_none(), "{back}");
    until("the cancel", || {
        a.seen().contains(&Seen::Cancel(low.clone()))
    })
    .await;
    running(&c, &sms, &urgent).await;
    let events = common::events(&c, &sms).await;
    assert!(
        events.iter().any(|e| e["kind"] == "execution.rescheduled"
            && e["subject"] == low.as_str()
            && e["data"]["reason"]
                .as_str()
                .unwrap()
                .contains("not reported stopped")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_stop_reported_as_preempted_that_sms_did_not_ask_for_spends_the_attempt() {
    let sb = sandbox("mode = \"off\"", 0);
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let uuid = common::register_wasm_node(&sms, 1).await;
    let (mut execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let id = submit(&c, &sms, "low", json!({})).await;
    let a = stream.next().await.unwrap().unwrap();
    let e = a.execution.unwrap();
    assert_eq!(e.execution_id, id);
    execs
        .report_result(v1::ReportResultRequest {
            session: a.session,
            node_uuid: uuid,
            execution_id: id.clone(),
            error: "killed by signal 15".into(),
            attempt: e.attempt,
            preempted: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let done = common::wait_state(&c, &sms, &id, "failed").await;
    assert!(done.get("preemptions").is_none(), "{done}");
}

#[tokio::test]
async fn a_stop_reported_after_its_node_was_lost_hands_in_its_checkpoint() {
    let sb = Sandbox::new(
        "heartbeat_timeout = 1\ncleanup_interval = 1\n\
         [scheduler]\nstrategy = \"least-connections\"\n[dispatch]\nprefetch = 0\n\
         [preemption]\nmode = \"cluster\"\ngrace_ms = 60000\n",
    );
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let uuid = common::register_wasm_node(&sms, 1).await;
    let beats = heartbeats(&sms, &uuid).await;
    let (mut execs, mut stream) = common::open_assignments(&sms, &uuid).await;
    let low = submit(&c, &sms, "low", json!({"checkpoint": true})).await;
    let a = stream.next().await.unwrap().unwrap();
    let (session, e) = (a.session.clone(), a.execution.unwrap());
    assert_eq!(e.execution_id, low);
    execs
        .report_state(v1::ReportStateRequest {
            session: session.clone(),
            node_uuid: uuid.clone(),
            execution_id: low.clone(),
            state: "running".into(),
            attempt: e.attempt,
        })
        .await
        .unwrap();
    running(&c, &sms, &low).await;
    submit(&c, &sms, "urgent", json!({})).await;
    loop {
        let a = stream.next().await.unwrap().unwrap();
        let e = a.execution.unwrap();
        if a.cancel && a.preempt && e.execution_id == low {
            assert_eq!(a.grace_ms, 60_000);
            break;
        }
    }
    // The node goes silent in its grace: lost, its run goes back to the queue without a
    // checkpoint.
    beats.abort();
    let back = common::wait_state(&c, &sms, &low, "ready").await;
    assert!(back.get("checkpoint_blob").is_none(), "{back}");
    assert_eq!(back["requeued"], 1, "{back}");
    // Then its stop arrives after all, with the state it saved: taken, the execution still
    // queued, its attempt still not spent.
    execs
        .report_result(v1::ReportResultRequest {
            session,
            node_uuid: uuid,
            execution_id: low.clone(),
            error: "killed by signal 15".into(),
            attempt: e.attempt,
            preempted: true,
            checkpoint: b"late-ckpt".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let now = common::state_of(&c, &sms, &low).await;
    assert_eq!(now["state"], "ready", "{now}");
    assert_eq!(now["checkpoint_blob"]["size"], 9, "{now}");
    assert_eq!(
        (&now["attempt"], &now["requeued"]),
        (&json!(1), &json!(1)),
        "{now}"
    );
    let events = common::events(&c, &sms).await;
    assert!(
        events.iter().any(|e| e["kind"] == "execution.requeued"
            && e["subject"] == low.as_str()
            && e["data"]["late"] == true
            && e["data"]["checkpoint_bytes"] == 9),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_task_s_metadata_chooses_checkpoints_and_recovery_and_bad_values_are_refused() {
    let sb = sandbox("mode = \"off\"", 0);
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let task = |metadata: serde_json::Value| {
        json!({"name": "t", "metadata": metadata,
               "executable": {"type": "wasm", "uri": "file:///tmp/x.wasm", "name": "w"}})
    };
    for (key, bad) in [("spear.checkpoint", "yes"), ("spear.recovery", "teleport")] {
        let (status, body) =
            common::post_json(&c, &sms, "/api/v1/tasks", &task(json!({key: bad}))).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body.to_string().contains(&format!("metadata.{key}")),
            "{body}"
        );
    }
    let (status, body) = common::post_json(
        &c,
        &sms,
        "/api/v1/tasks",
        &task(json!({"spear.checkpoint": "true"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let task_id = body["task_id"].as_str().unwrap();
    let by_task = common::submit(&c, &sms, &json!({"task_id": task_id})).await;
    let e = common::state_of(&c, &sms, &by_task).await;
    assert_eq!(
        (&e["checkpoint"], &e["recovery"]),
        (&json!(true), &json!("checkpoint")),
        "{e}"
    );
    // The submission overrides the task.
    let own = json!({"task_id": task_id, "recovery": "restart"});
    let e = common::state_of(&c, &sms, &common::submit(&c, &sms, &own).await).await;
    assert_eq!(
        (&e["checkpoint"], &e["recovery"]),
        (&json!(true), &json!("restart")),
        "{e}"
    );
    let (status, body) = common::post_json(
        &c,
        &sms,
        "/api/v1/executions",
        &json!({"task_id": task_id, "recovery": "teleport"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("recovery"), "{body}");
}
