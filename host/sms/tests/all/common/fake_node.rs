//! A fake Spearlet speaking SMS's gRPC API: registers, follows its assignment stream, and runs
//! what it gets as told ([`Behaviour`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use spear_proto::v1;
use tokio_stream::StreamExt;

/// How a fake Spearlet treats assignments.
#[derive(Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// Report running, hold for `hold`, report success, heartbeat its full capacity back.
    Run { hold: Duration },
    /// Report running, then never finish (a hung workload on a live node).
    Hang,
    /// Accept and never answer.
    Silent,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct FakeNode {
    /// The node's uuid.
    pub uuid: String,
    /// Execution ids received, in order (cancels prefixed with `cancel:`).
    pub received: Arc<Mutex<Vec<String>>>,
    /// Its stream reader.
    pub task: tokio::task::JoinHandle<()>,
}

impl FakeNode {
    /// Register a node with `cpu` millicores running `executors`, and follow its assignments.
    pub async fn start(grpc: &str, executors: &[&str], cpu: u64, behaviour: Behaviour) -> Self {
        Self::start_labelled(grpc, executors, cpu, &[], behaviour).await
    }

    /// As [`start`](Self::start), the node carrying `labels`.
    pub async fn start_labelled(
        grpc: &str,
        executors: &[&str],
        cpu: u64,
        labels: &[(&str, &str)],
        behaviour: Behaviour,
    ) -> Self {
        let mut nodes = v1::node_service_client::NodeServiceClient::connect(grpc.to_owned())
            .await
            .unwrap();
        let capacity = v1::Resources {
            cpu_millis: cpu,
            memory_mb: 4096,
            disk_mb: 0,
        };
        let node = nodes
            .register_node(v1::RegisterNodeRequest {
                ip_address: "127.0.0.1".into(),
                port: 9000,
                capacity: Some(capacity),
                executors: executors.iter().map(|e| e.to_string()).collect(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let uuid = node.uuid.clone();
        let mut execs =
            v1::execution_service_client::ExecutionServiceClient::connect(grpc.to_owned())
                .await
                .unwrap();
        let mut stream = execs
            .assignments(v1::AssignmentsRequest {
                node_uuid: uuid.clone(),
                after: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (seen, id) = (received.clone(), uuid.clone());
        // A live node heartbeats; a silent one (a dead machine) does not.
        let heartbeats = (behaviour != Behaviour::Silent).then(|| {
            let (mut nodes, id) = (nodes.clone(), uuid.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let _ = nodes
                        .heartbeat(v1::HeartbeatRequest {
                            uuid: id.clone(),
                            ..Default::default()
                        })
                        .await;
                }
            })
        });
        let task = tokio::spawn(async move {
            let _heartbeats = heartbeats.map(AbortOnDrop);
            while let Some(Ok(a)) = stream.next().await {
                let e = a.execution.unwrap();
                if a.cancel {
                    seen.lock()
                        .unwrap()
                        .push(format!("cancel:{}", e.execution_id));
                    continue;
                }
                seen.lock().unwrap().push(e.execution_id.clone());
                if behaviour == Behaviour::Silent {
                    continue;
                }
                execs
                    .report_state(v1::ReportStateRequest {
                        session: a.session.clone(),
                        node_uuid: id.clone(),
                        execution_id: e.execution_id.clone(),
                        state: "running".into(),
                        attempt: e.attempt,
                    })
                    .await
                    .unwrap();
                let Behaviour::Run { hold } = behaviour else {
                    continue;
                };
                tokio::time::sleep(hold).await;
                execs
                    .report_result(v1::ReportResultRequest {
                        session: a.session,
                        node_uuid: id.clone(),
                        execution_id: e.execution_id,
                        success: true,
                        result: Some(v1::ExecutionResult {
                            stdout: b"done\n".to_vec(),
                            ..Default::default()
                        }),
                        error: String::new(),
                        attempt: 0,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                nodes
                    .heartbeat(v1::HeartbeatRequest {
                        uuid: id.clone(),
                        available: Some(capacity),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        });
        FakeNode {
            uuid,
            received,
            task,
        }
    }

    /// Execution ids received so far.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}
