//! A fake node that follows the SMS leader among replicas' gRPC addresses: it takes assignments
//! from whichever SMS serves its stream (a standby refuses it), reports each a success, and
//! tells `seen` of each (from which address). Shared by the HA tests and the failover bench.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use spear_proto::v1;
use tokio_stream::StreamExt;

/// Follow the leader among `addrs` (shared: a replica started again has new ports) as node
/// `uuid`, registered already.
pub fn follow_leader(
    uuid: String,
    addrs: Arc<Mutex<Vec<String>>>,
    mut seen: impl FnMut(&str, &v1::Execution) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    use v1::execution_service_client::ExecutionServiceClient;
    tokio::spawn(async move {
        loop {
            let list = addrs.lock().unwrap().clone();
            for addr in list {
                let Ok(mut execs) = ExecutionServiceClient::connect(format!("http://{addr}")).await
                else {
                    continue;
                };
                let request = v1::AssignmentsRequest {
                    node_uuid: uuid.clone(),
                    after: 0,
                };
                let Ok(stream) = execs.assignments(request).await else {
                    continue;
                };
                let mut stream = stream.into_inner();
                while let Some(Ok(a)) = stream.next().await {
                    let Some(e) = a.execution.filter(|_| !a.cancel) else {
                        continue;
                    };
                    seen(&addr, &e);
                    let _ = execs
                        .report_result(v1::ReportResultRequest {
                            session: a.session,
                            node_uuid: uuid.clone(),
                            execution_id: e.execution_id,
                            success: true,
                            result: Some(v1::ExecutionResult::default()),
                            error: String::new(),
                            attempt: 0,
                            ..Default::default()
                        })
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}
