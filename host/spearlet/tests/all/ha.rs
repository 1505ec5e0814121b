//! A Spearlet given the addresses of three SMS replicas on etcd follows the leader: it
//! registers through a standby (which names the leader), runs work, and after the leader is
//! killed runs the next work for the replica that leads then.

use crate::common::{Cluster, Sms};

use std::time::{Duration, Instant};

use serde_json::json;
use spear_tests::etcd::EtcdCluster;

/// The index of the replica that says it leads, waiting up to 15 s.
async fn leader(replicas: &[Option<Sms>]) -> usize {
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for (i, r) in replicas.iter().enumerate() {
            let Some(sms) = r else { continue };
            let answer = c
                .get(sms.url("/healthz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if let Ok(a) = answer
                && a.json::<serde_json::Value>().await.unwrap_or_default()["role"] == "leader"
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no SMS leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spearlet_follows_the_leader_among_sms_replicas() {
    let etcd = EtcdCluster::start(3);
    let cluster = Cluster::new();
    let mut replicas: Vec<Option<Sms>> = (0..3)
        .map(|i| Some(cluster.sms_on_etcd(&format!("sms-{i}"), &etcd.endpoints())))
        .collect();
    let first = leader(&replicas).await;
    // The list starts with a standby: registration is redirected to the leader.
    let standby = (first + 1) % 3;
    let addrs: Vec<String> = (0..3)
        .map(|k| (standby + k) % 3)
        .map(|i| replicas[i].as_ref().unwrap().grpc.to_string())
        .collect();
    let config = cluster.write("node.toml", &cluster.spearlet_config("node", ""));
    let mut node = cluster.spearlet_with(
        "node",
        &config,
        &["--sms-addr", &addrs.join(","), "--auto-register"],
    );
    let leading = replicas[first].as_ref().unwrap();
    let id = leading.sh("echo before", json!({})).await;
    let e = leading.finished(&id, Duration::from_secs(20)).await;
    assert_eq!(e["state"], "succeeded", "{e}\n{}", node.log());
    assert_eq!(e["node_uuid"], node.node.as_str());

    replicas[first].take().unwrap().kill_9();
    let second = leader(&replicas).await;
    let leading = replicas[second].as_ref().unwrap();
    let id = leading.sh("echo after", json!({})).await;
    let e = leading.finished(&id, Duration::from_secs(30)).await;
    assert_eq!(e["state"], "succeeded", "{e}\n{}", node.log());
    assert_eq!(e["node_uuid"], node.node.as_str());
    node.terminate();
}
