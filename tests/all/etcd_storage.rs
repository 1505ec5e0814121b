//! The `etcd` storage backend against real etcd clusters (started by the tests on 127.0.0.1): the
//! storage contract, etcd's transaction limits, a member lost under load, and batches whole across
//! a writer killed with SIGKILL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::StorageBackend;
use spear_plugin_api::storage::{BatchLimits, BatchOp};
use spear_plugin_runtime::group::GroupWriter;
use spear_tests::etcd::EtcdCluster;

use crate::storage::{batches_are_whole_across_kill_9, open};
use spear_tests::storage_contract::keeps_the_contract;

fn etcd(cluster: &EtcdCluster, prefix: &str) -> Box<dyn StorageBackend> {
    open(
        "etcd",
        &format!(
            r#"{{"endpoints": {}, "prefix": "{prefix}", "timeout_ms": 3000}}"#,
            cluster.endpoints_json()
        ),
    )
}

fn put(k: &str, v: &str) -> BatchOp {
    BatchOp::Put {
        key: k.into(),
        value: v.into(),
    }
}

#[test]
fn etcd_keeps_the_storage_contract_in_its_namespace() {
    let cluster = EtcdCluster::start(1);
    let store = etcd(&cluster, "one/");
    keeps_the_contract("etcd", store.as_ref());
    assert_eq!(
        store.limits(),
        BatchLimits {
            max_ops: 127,
            // Less the writer key's compare, put and read (its name: the namespace, `\0writer/`
            // and a 63-byte token; two tokens).
            max_bytes: 1536 * 1024
                - 128 * (32 + "one/".len() as u64)
                - 4096
                - (3 * ("one/".len() as u64 + 8 + 63) + 2 * 63 + 64)
        },
        "etcd's default transaction limits, less the backend's own key"
    );
    // Another namespace on the same cluster sees none of it, and its keys come back without it.
    let other = etcd(&cluster, "two/");
    assert!(other.scan(b"", None, 100).unwrap().is_empty());
    other.put(b"k", b"v").unwrap();
    assert_eq!(
        other.scan(b"", None, 100).unwrap(),
        [(b"k".to_vec(), b"v".to_vec())]
    );
    assert_eq!(store.get(b"k").unwrap(), None);
}

#[test]
fn etcd_refuses_an_unreachable_cluster_and_bad_configuration_by_name() {
    let nobody = format!("http://{}", spear_tests::process::free_addr());
    let engine = spear_plugin_runtime::engine::WasmEngine::new().unwrap();
    let limits = Arc::new(spear_plugin_runtime::Limits::new(
        spear_plugin_runtime::LimitValues::default(),
    ));
    let plugin =
        spear_plugin_runtime::load_file(&spear_tests::guest("native", "etcd.so"), &engine, &limits)
            .unwrap();
    let mut store = plugin.storage().unwrap();
    let started = Instant::now();
    let error = store
        .open(&format!(
            r#"{{"endpoints": ["{nobody}"], "timeout_ms": 500}}"#
        ))
        .unwrap_err()
        .to_string();
    assert!(error.contains(&nobody), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let error = store
        .open(r#"{"endpoints": ["http://x"], "tls": true}"#)
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field `tls`"), "{error}");
}

#[test]
fn etcd_batches_stay_within_its_transaction_limits() {
    let cluster = EtcdCluster::start(1);
    let store: Arc<dyn StorageBackend> = Arc::from(etcd(&cluster, "limits/"));
    let over: Vec<BatchOp> = (0..200).map(|i| put(&format!("k{i}"), "v")).collect();
    let error = store.batch(&over).unwrap_err().to_string();
    assert!(
        error.contains("200 operations") && error.contains("max_txn_ops"),
        "{error}"
    );
    assert!(
        store.scan(b"", None, 10).unwrap().is_empty(),
        "nothing applied"
    );

    // 300 writes queued at once, each also writing the same key: grouped into commits etcd
    // takes (128 operations at most, a key written once per transaction), in queue order.
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = sizes.clone();
    let writer = GroupWriter::start("etcd-writer", store.clone(), move |result, commit| {
        assert_eq!(result, &Ok(()));
        seen.lock().unwrap().push(commit.ops);
    })
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let pending: Vec<_> = (0..300)
        .map(|i| {
            writer.write_soon(vec![
                put(&format!("k{i:03}"), "v"),
                put("last", &i.to_string()),
            ])
        })
        .collect();
    for p in pending {
        assert_eq!(runtime.block_on(p), Ok(()));
    }
    let sizes = sizes.lock().unwrap().clone();
    assert!(sizes.iter().all(|&n| n <= 128), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 600, "{sizes:?}");
    assert_eq!(store.get(b"last").unwrap().as_deref(), Some(&b"299"[..]));
    assert_eq!(store.scan(b"k", None, 1000).unwrap().len(), 300);
}

#[test]
fn losing_one_of_three_etcd_members_changes_nothing_for_the_store() {
    for victim in ["the etcd leader", "the member the client talks to"] {
        lose_one_member(victim);
    }
}

fn lose_one_member(victim: &str) {
    let mut cluster = EtcdCluster::start(3);
    let store = etcd(&cluster, "ha/");
    for i in 0..50 {
        store.put(format!("k{i:02}").as_bytes(), b"before").unwrap();
    }
    // The client talks to the first endpoint while it answers.
    let lost = if victim == "the etcd leader" {
        cluster.leader()
    } else {
        0
    };
    cluster.kill(lost);
    for i in 50..100 {
        store
            .put(format!("k{i:02}").as_bytes(), b"after")
            .unwrap_or_else(|e| panic!("write {i} with {victim} ({lost}) down: {e}"));
    }
    assert!(store.batch(&[put("batch", "1")]).unwrap());
    let all = store.scan(b"k", None, 1000).unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(store.get(b"k07").unwrap().as_deref(), Some(&b"before"[..]));
    // The member comes back and catches up; nothing was lost.
    cluster.restart(0);
    let only_first = open(
        "etcd",
        &format!(
            r#"{{"endpoints": ["{}"], "prefix": "ha/"}}"#,
            cluster.endpoints()[0]
        ),
    );
    assert_eq!(only_first.scan(b"k", None, 1000).unwrap().len(), 100);
}

#[test]
fn a_scan_page_larger_than_a_grpc_answer_is_fetched_in_pieces() {
    let cluster = EtcdCluster::start(1);
    let store = etcd(&cluster, "big/");
    // 50 values of 1.4 MiB (etcd takes 1.5 MiB a request): 70 MiB, over the 64 MiB the client
    // decodes in one answer.
    let value = vec![7u8; 1400 * 1024];
    for i in 0..50 {
        store.put(format!("k{i:02}").as_bytes(), &value).unwrap();
    }
    let page = store.scan(b"k", None, 1000).unwrap();
    assert_eq!(page.len(), 50, "every record, in one page as asked");
    assert!(page.iter().all(|(_, v)| v.len() == value.len()));
    let keys: Vec<_> = page.iter().map(|(k, _)| k.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "in key order, nothing twice");
    // And after a key, as paging does.
    let rest = store.scan(b"k", Some(b"k09"), 1000).unwrap();
    assert_eq!(rest.len(), 40);
    assert_eq!(rest[0].0, b"k10");
}

#[test]
fn etcd_keeps_every_batch_whole_across_a_writer_killed_with_sigkill() {
    let cluster = EtcdCluster::start(1);
    let config = format!(
        r#"{{"endpoints": {}, "prefix": "crash/", "timeout_ms": 3000}}"#,
        cluster.endpoints_json()
    );
    batches_are_whole_across_kill_9(
        "etcd",
        &spear_tests::guest("native", "etcd.so"),
        &config,
        || etcd(&cluster, "crash/"),
    );
}
