//! A Spearlet against an SMS that answers differently from ours: one without `ReportBatch` (an
//! older release), and one with a smaller message limit. The SMS here is a small gRPC server of
//! the test's own (real sockets, the real `spearlet` binary), which records what it is told.

use crate::common;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use futures::Stream;
use spear_proto::v1;
use spear_proto::v1::execution_service_server::{ExecutionService, ExecutionServiceServer};
use spear_proto::v1::node_service_server::{NodeService, NodeServiceServer};
use tonic::{Request, Response, Status};

/// How the fake SMS answers reports.
#[derive(Clone, Copy)]
enum Mode {
    /// No `ReportBatch` at all (UNIMPLEMENTED): every start and result must come alone.
    NoBatch,
    /// Any call carrying more than `limit` bytes of output is over the message limit.
    Limit(usize),
}

struct Fake {
    mode: Mode,
    /// What to hand the node on its assignment stream.
    work: Vec<v1::Execution>,
    /// Results taken, by execution (every one it was told, in order).
    results: Mutex<BTreeMap<String, Vec<v1::ReportResultRequest>>>,
    /// Executions told to be running, alone or in batches.
    running: Mutex<Vec<String>>,
    /// Of those, the ones told in the same call as their result.
    running_with_result: Mutex<Vec<String>>,
    /// Calls of `ReportBatch`.
    batches: Mutex<usize>,
    /// While set, every report is answered UNAVAILABLE (SMS away).
    down: std::sync::atomic::AtomicBool,
    /// Once every execution's result is in, send the work again, same attempts (as a stream
    /// that read it before the answers would).
    resend: std::sync::atomic::AtomicBool,
    /// While set, a batch of starts only is answered (and its starts taken) 2 s late.
    slow_starts: std::sync::atomic::AtomicBool,
}

impl Fake {
    fn new(mode: Mode, work: Vec<v1::Execution>) -> Arc<Self> {
        Arc::new(Self {
            mode,
            work,
            results: Mutex::default(),
            running: Mutex::default(),
            running_with_result: Mutex::default(),
            batches: Mutex::default(),
            down: Default::default(),
            resend: Default::default(),
            slow_starts: Default::default(),
        })
    }

    fn away(&self) -> Result<(), Status> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Status::unavailable("SMS is away"));
        }
        Ok(())
    }
}

const SESSION: &str = "old-sms-session";

/// The fake as the gRPC services serve it.
#[derive(Clone)]
struct Served(Arc<Fake>);

impl std::ops::Deref for Served {
    type Target = Fake;

    fn deref(&self) -> &Fake {
        &self.0
    }
}

fn output_bytes(r: &v1::ExecutionResult) -> usize {
    r.stdout.len() + r.stderr.len()
}

#[tonic::async_trait]
impl NodeService for Served {
    async fn register_node(
        &self,
        req: Request<v1::RegisterNodeRequest>,
    ) -> Result<Response<v1::Node>, Status> {
        let r = req.into_inner();
        let uuid = if r.uuid.is_empty() {
            "node-old-sms".to_owned()
        } else {
            r.uuid
        };
        Ok(Response::new(v1::Node {
            uuid,
            status: "active".into(),
            ..Default::default()
        }))
    }

    async fn heartbeat(
        &self,
        _: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        Ok(Response::new(v1::HeartbeatResponse {
            server_time_ms: 0,
            status: "active".into(),
        }))
    }

    async fn update_node(
        &self,
        _: Request<v1::UpdateNodeRequest>,
    ) -> Result<Response<v1::Node>, Status> {
        Err(Status::unimplemented("not in this SMS"))
    }

    async fn delete_node(
        &self,
        _: Request<v1::NodeRef>,
    ) -> Result<Response<v1::DeleteNodeResponse>, Status> {
        Ok(Response::new(v1::DeleteNodeResponse {}))
    }

    async fn get_node(&self, _: Request<v1::NodeRef>) -> Result<Response<v1::Node>, Status> {
        Err(Status::unimplemented("not in this SMS"))
    }

    async fn list_nodes(
        &self,
        _: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        Err(Status::unimplemented("not in this SMS"))
    }
}

type Assignments = Pin<Box<dyn Stream<Item = Result<v1::Assignment, Status>> + Send>>;

#[tonic::async_trait]
impl ExecutionService for Served {
    type AssignmentsStream = Assignments;

    async fn submit(
        &self,
        _: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::Execution>, Status> {
        Err(Status::unimplemented("not in this SMS"))
    }

    async fn get_execution(
        &self,
        req: Request<v1::ExecutionRef>,
    ) -> Result<Response<v1::Execution>, Status> {
        let id = req.into_inner().execution_id;
        self.work
            .iter()
            .find(|e| e.execution_id == id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(id))
    }

    async fn list_executions(
        &self,
        _: Request<v1::ListExecutionsRequest>,
    ) -> Result<Response<v1::ListExecutionsResponse>, Status> {
        Err(Status::unimplemented("not in this SMS"))
    }

    async fn cancel(
        &self,
        _: Request<v1::ExecutionRef>,
    ) -> Result<Response<v1::Execution>, Status> {
        Err(Status::unimplemented("not in this SMS"))
    }

    async fn assignments(
        &self,
        req: Request<v1::AssignmentsRequest>,
    ) -> Result<Response<Assignments>, Status> {
        let after = req.into_inner().after;
        let sent: Vec<Result<v1::Assignment, Status>> = self
            .work
            .iter()
            .enumerate()
            .map(|(i, e)| v1::Assignment {
                session: SESSION.into(),
                cursor: i as u64 + 1,
                execution: Some(e.clone()),
                cancel: false,
                invocation: None,
                warm: None,
                ..Default::default()
            })
            .filter(|a| a.cursor > after)
            .map(Ok)
            .collect();
        let again = if self.resend.load(std::sync::atomic::Ordering::SeqCst) {
            let fake = self.0.clone();
            let n = sent.len() as u64;
            let more = sent.clone();
            futures::StreamExt::boxed(futures::StreamExt::flat_map(
                futures::stream::once(async move {
                    // Every result in, and answered a moment ago.
                    while fake.results.lock().unwrap().len() < fake.work.len() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    more.into_iter().map(move |a| {
                        a.map(|mut a| {
                            a.cursor += n;
                            a
                        })
                    })
                }),
                futures::stream::iter,
            ))
        } else {
            futures::StreamExt::boxed(futures::stream::empty())
        };
        // The stream stays open after the work, as SMS's does.
        let stream = futures::StreamExt::chain(
            futures::StreamExt::chain(futures::stream::iter(sent), again),
            futures::stream::pending(),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_result(
        &self,
        req: Request<v1::ReportResultRequest>,
    ) -> Result<Response<v1::Ack>, Status> {
        self.away()?;
        let r = req.into_inner();
        if let Mode::Limit(limit) = self.mode
            && r.result.as_ref().map_or(0, output_bytes) > limit
        {
            return Err(Status::resource_exhausted("message over the limit"));
        }
        self.results
            .lock()
            .unwrap()
            .entry(r.execution_id.clone())
            .or_default()
            .push(r);
        Ok(Response::new(v1::Ack {}))
    }

    async fn report_state(
        &self,
        req: Request<v1::ReportStateRequest>,
    ) -> Result<Response<v1::Ack>, Status> {
        self.running
            .lock()
            .unwrap()
            .push(req.into_inner().execution_id);
        Ok(Response::new(v1::Ack {}))
    }

    async fn report_invocation(
        &self,
        _: Request<v1::InvocationResult>,
    ) -> Result<Response<v1::Ack>, Status> {
        Err(Status::unimplemented("no invocations in this SMS"))
    }

    async fn report_batch(
        &self,
        req: Request<v1::ReportBatchRequest>,
    ) -> Result<Response<v1::ReportBatchResponse>, Status> {
        self.away()?;
        let limit = match self.mode {
            Mode::NoBatch => return Err(Status::unimplemented("no ReportBatch in this SMS")),
            Mode::Limit(limit) => limit,
        };
        let r = req.into_inner();
        if r.results.is_empty() && self.slow_starts.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let bytes: usize = r
            .results
            .iter()
            .filter_map(|x| x.result.as_ref())
            .map(output_bytes)
            .sum();
        if bytes > limit {
            return Err(Status::out_of_range("message over the limit"));
        }
        *self.batches.lock().unwrap() += 1;
        let ok = || v1::ReportOutcome {
            code: 0,
            message: String::new(),
        };
        self.running
            .lock()
            .unwrap()
            .extend(r.running.iter().cloned());
        self.running_with_result.lock().unwrap().extend(
            r.running
                .iter()
                .filter(|id| r.results.iter().any(|x| &x.execution_id == *id))
                .cloned(),
        );
        let mut results = self.results.lock().unwrap();
        for x in &r.results {
            results
                .entry(x.execution_id.clone())
                .or_default()
                .push(v1::ReportResultRequest {
                    session: r.session.clone(),
                    node_uuid: r.node_uuid.clone(),
                    execution_id: x.execution_id.clone(),
                    success: x.success,
                    result: x.result.clone(),
                    error: x.error.clone(),
                    attempt: x.attempt,
                    ..Default::default()
                });
        }
        Ok(Response::new(v1::ReportBatchResponse {
            running: r.running.iter().map(|_| ok()).collect(),
            results: r.results.iter().map(|_| ok()).collect(),
        }))
    }
}

fn shell(id: &str, script: &str) -> v1::Execution {
    v1::Execution {
        execution_id: id.into(),
        executable: Some(v1::Executable {
            r#type: "process".into(),
            name: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        }),
        state: "assigned".into(),
        attempt: 1,
        max_attempts: 1,
        timeout_ms: 30_000,
        ..Default::default()
    }
}

/// Serve `fake` on a port of 127.0.0.1 and start a Spearlet against it (outputs capped at 4 MiB),
/// holding starts `start_delay_ms` (`None`: the default).
async fn run_against(fake: Arc<Fake>, start_delay_ms: Option<u64>) -> (Cluster, common::Spearlet) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NodeServiceServer::new(Served(fake.clone())))
            .add_service(ExecutionServiceServer::new(Served(fake)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let cluster = Cluster::new();
    let config = cluster
        .spearlet_config("old", "")
        .replace("output_cap_mb = 1", "output_cap_mb = 4");
    let config = match start_delay_ms {
        Some(ms) => config.replace(
            "[spearlet]\n",
            &format!("[spearlet]\nstart_report_delay_ms = {ms}\n"),
        ),
        None => config,
    };
    let config = cluster.write("old.toml", &config);
    let node = cluster.spearlet_with(
        "old",
        &config,
        &["--sms-addr", &addr.to_string(), "--auto-register"],
    );
    (cluster, node)
}

/// Wait until `fake` holds a result for each of `ids`.
async fn results_for(fake: &Fake, ids: &[String], node: &common::Spearlet) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = {
            let results = fake.results.lock().unwrap();
            ids.iter().filter(|id| results.contains_key(*id)).count()
        };
        if have == ids.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{have} of {} results; the node logged:\n{}",
            ids.len(),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_without_report_batch_is_told_each_start_and_result_alone() {
    let ids: Vec<String> = (0..40).map(|i| format!("exec-{i}")).collect();
    let fake = Fake::new(
        Mode::NoBatch,
        ids.iter()
            .map(|id| shell(id, &format!("echo {id}")))
            .collect(),
    );
    // Held or not, every start is told: alone, or (taken back when its run ended) just before
    // its result.
    let (_cluster, node) = run_against(fake.clone(), None).await;
    results_for(&fake, &ids, &node).await;
    // Give a stray second report time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let results = fake.results.lock().unwrap();
    for id in &ids {
        let told = &results[id];
        assert_eq!(told.len(), 1, "{id} reported once: {told:?}");
        let r = &told[0];
        assert!(r.success, "{r:?}");
        assert_eq!(r.session, SESSION);
        let out = &r.result.as_ref().unwrap().stdout;
        assert_eq!(String::from_utf8_lossy(out), format!("{id}\n"));
    }
    let running = fake.running.lock().unwrap();
    for id in &ids {
        assert!(running.contains(id), "{id}'s start told alone");
    }
    assert_eq!(*fake.batches.lock().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_over_the_message_limit_go_alone_and_then_shrunk() {
    // SMS takes at most 1 MiB + 64 KiB of output a call: a batch carrying the 3 MiB result is
    // refused whole (its reports then go one at a time), the 3 MiB result alone too, and it is
    // sent again cut to 1 MiB a stream; the others go through whole.
    let small: Vec<String> = (0..6).map(|i| format!("small-{i}")).collect();
    let mut work: Vec<v1::Execution> = small
        .iter()
        .map(|id| shell(id, "head -c 40000 /dev/zero"))
        .collect();
    work.push(shell("huge", "head -c 3145728 /dev/zero"));
    let fake = Fake::new(Mode::Limit(1024 * 1024 + 64 * 1024), work);
    let (_cluster, node) = run_against(fake.clone(), None).await;
    let mut all = small.clone();
    all.push("huge".into());
    results_for(&fake, &all, &node).await;
    let results = fake.results.lock().unwrap();
    for id in &small {
        let told = &results[id];
        assert_eq!(told.len(), 1, "{id}: {told:?}");
        assert_eq!(told[0].result.as_ref().unwrap().stdout.len(), 40_000);
    }
    let huge = &results["huge"];
    assert_eq!(huge.len(), 1);
    let r = huge[0].result.as_ref().unwrap();
    assert_eq!(r.stdout.len(), 1024 * 1024, "cut to 1 MiB");
    assert!(r.stdout_truncated, "and flagged");
    assert!(
        node.log().contains("result too large for SMS"),
        "{}",
        node.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_a_page_is_delivered_once_each_when_sms_returns() {
    // More results than the reporter reads in one turn wait in the node's store while SMS is
    // away; when it is back, the sweep pages through them all.
    let ids: Vec<String> = (0..700).map(|i| format!("while-away-{i:04}")).collect();
    let fake = Fake::new(
        Mode::Limit(usize::MAX),
        ids.iter().map(|id| shell(id, "true")).collect(),
    );
    fake.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let (_cluster, node) = run_against(fake.clone(), None).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = node.get("/api/v1/status").await;
        let waiting = status["reports_pending"].as_u64().unwrap_or(0);
        if waiting == ids.len() as u64 && status["running"].as_array().is_some_and(|r| r.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} results waiting; {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(fake.results.lock().unwrap().is_empty());
    fake.down.store(false, std::sync::atomic::Ordering::SeqCst);
    results_for(&fake, &ids, &node).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let results = fake.results.lock().unwrap();
        for id in &ids {
            assert_eq!(results[id].len(), 1, "{id}: {:?}", results[id]);
            assert!(results[id][0].success);
        }
    }
    assert_eq!(node.get("/api/v1/status").await["reports_pending"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_is_held_and_goes_beside_the_result_of_an_execution_that_ends_meanwhile() {
    // Starts held 1.5 s: the quick executions end within it and their starts go in the same
    // call as their results; the slow ones' starts are told alone, while they still run.
    let quick: Vec<String> = (0..6).map(|i| format!("quick-{i}")).collect();
    let slow: Vec<String> = (0..2).map(|i| format!("slow-{i}")).collect();
    let mut work: Vec<v1::Execution> = quick.iter().map(|id| shell(id, "true")).collect();
    work.extend(slow.iter().map(|id| shell(id, "sleep 4")));
    // Under a queue deadline a start is not held: told alone, though the run ends within 1.5 s.
    work.push(v1::Execution {
        queue_timeout_ms: 60_000,
        ..shell("deadline", "sleep 1")
    });
    let fake = Fake::new(Mode::Limit(usize::MAX), work);
    let (_cluster, node) = run_against(fake.clone(), Some(1500)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let told = fake.running.lock().unwrap().clone();
        if slow.iter().all(|id| told.contains(id)) {
            break;
        }
        assert!(Instant::now() < deadline, "told: {told:?}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fake.results
            .lock()
            .unwrap()
            .keys()
            .all(|id| !slow.contains(id)),
        "the slow ones' starts were told while they ran"
    );
    let mut all = quick.clone();
    all.extend(slow.iter().cloned());
    all.push("deadline".into());
    results_for(&fake, &all, &node).await;
    let told = fake.running.lock().unwrap().clone();
    let beside = fake.running_with_result.lock().unwrap().clone();
    for id in &quick {
        assert!(
            beside.contains(id),
            "{id} ended within the hold: {beside:?}"
        );
    }
    for id in slow.iter().chain([&"deadline".to_owned()]) {
        assert!(!beside.contains(id), "{id} was told alone: {beside:?}");
    }
    assert_eq!(told.len(), all.len(), "each start once: {told:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_still_on_its_way_when_its_run_ends_goes_beside_the_result_too() {
    // Starts are not held, and SMS takes 2 s to answer a call of starts: each run has ended
    // (0.3 s) while its start is on its way. The result goes in another call and gets there
    // first, so it must carry the start: SMS would otherwise take a run that never started (no
    // start time, no running event), then refuse the late start.
    let ids: Vec<String> = (0..3).map(|i| format!("told-late-{i}")).collect();
    let fake = Fake::new(
        Mode::Limit(usize::MAX),
        ids.iter().map(|id| shell(id, "sleep 0.3")).collect(),
    );
    fake.slow_starts
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (_cluster, node) = run_against(fake.clone(), Some(0)).await;
    results_for(&fake, &ids, &node).await;
    let beside = fake.running_with_result.lock().unwrap().clone();
    for id in &ids {
        assert!(
            beside.contains(id),
            "{id}'s start went with its result: {beside:?}\n{}",
            node.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_sent_again_after_its_result_was_answered_is_not_run_twice() {
    let ids: Vec<String> = (0..5).map(|i| format!("again-{i}")).collect();
    let marks = tempfile::tempdir().unwrap();
    let fake = Fake::new(
        Mode::Limit(usize::MAX),
        ids.iter()
            .map(|id| {
                let mark = marks.path().join(id);
                shell(id, &format!("echo ran >> {}", mark.display()))
            })
            .collect(),
    );
    fake.resend.store(true, std::sync::atomic::Ordering::SeqCst);
    let (_cluster, node) = run_against(fake.clone(), None).await;
    results_for(&fake, &ids, &node).await;
    // The work comes again 300 ms after the last answer; give a second run time to show.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let results = fake.results.lock().unwrap();
    for id in &ids {
        let told = &results[id];
        assert_eq!(told.len(), 1, "{id} reported once: {told:?}");
        assert_eq!(told[0].attempt, 1, "{id}: the attempt goes with its result");
        let ran = std::fs::read_to_string(marks.path().join(id)).unwrap();
        assert_eq!(ran, "ran\n", "{id} ran once");
    }
}
