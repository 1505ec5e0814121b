//! The `etcd` backend's writes apply exactly once, in order, however the network treats them: a
//! proxy on 127.0.0.1 holds a write back until its client has given up and sent it again
//! elsewhere, then delivers it late, whole (its stream reset dropped), to the same real etcd.

use std::time::{Duration, Instant};

use spear_plugin_api::StorageBackend;
use spear_plugin_api::storage::{BatchOp, OUTCOME_UNKNOWN};
use spear_tests::etcd::EtcdCluster;
use spear_tests::h2proxy::H2Proxy;

use crate::storage::open;

fn etcd_at(endpoints: &[String], prefix: &str) -> Box<dyn StorageBackend> {
    open(
        "etcd",
        &format!(
            r#"{{"endpoints": {}, "prefix": "{prefix}", "timeout_ms": 2000}}"#,
            serde_json::to_string(endpoints).unwrap()
        ),
    )
}

fn value(store: &dyn StorageBackend, key: &str) -> Option<String> {
    store
        .get(key.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// Deliver what `proxy` held, and wait until etcd (one member) has taken it: its applied raft
/// index moves past where it was (a transaction with writes is proposed even when its checks
/// fail).
fn deliver_late(proxy: &H2Proxy, cluster: &EtcdCluster) {
    assert!(proxy.held() > 0, "the proxy held the write back");
    let before = cluster.applied_index();
    proxy.release();
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.applied_index() <= before {
        assert!(Instant::now() < deadline, "etcd never took the held write");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A second held copy, if any, right behind it.
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_late_copy_of_a_write_applies_once_and_never_over_a_later_write() {
    let cluster = EtcdCluster::start(1);
    let direct = cluster.endpoints()[0].clone();
    let proxy = H2Proxy::start(&direct);
    let store = etcd_at(&[proxy.url(), direct.clone()], "late/");
    store.put(b"k", b"a").unwrap();

    // Held back on the proxy: the client gives up on it and sends it again to the next
    // endpoint, where it applies.
    proxy.hold();
    assert!(
        store
            .batch(&[BatchOp::Put {
                key: b"k".to_vec(),
                value: b"b".to_vec(),
            }])
            .unwrap(),
        "the write applied once, and says so"
    );
    assert_eq!(value(store.as_ref(), "k").as_deref(), Some("b"));
    // A later write; then the first copy arrives. It must not put `b` back.
    store.put(b"k", b"c").unwrap();
    deliver_late(&proxy, &cluster);
    assert!(proxy.resets_dropped() > 0, "the client had given up on it");
    assert_eq!(
        value(store.as_ref(), "k").as_deref(),
        Some("c"),
        "the late copy did not apply over the later write"
    );
    // And the store goes on.
    store.put(b"k", b"d").unwrap();
    assert_eq!(value(store.as_ref(), "k").as_deref(), Some("d"));
}

#[test]
fn a_write_no_member_answered_is_unknown_until_settled_either_way() {
    let cluster = EtcdCluster::start(1);
    let direct = cluster.endpoints()[0].clone();

    // It applied late: the next write finds that out and goes on after it.
    let proxy = H2Proxy::start(&direct);
    let store = etcd_at(&[proxy.url()], "applied/");
    store.put(b"k", b"a").unwrap();
    proxy.hold();
    let started = Instant::now();
    let error = store.put(b"k", b"b").unwrap_err().to_string();
    assert!(error.starts_with(OUTCOME_UNKNOWN), "{error}");
    assert!(started.elapsed() < Duration::from_secs(8), "{error}");
    deliver_late(&proxy, &cluster);
    // Wait for it to land (a loaded machine may take a while): the next write must find it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while value(store.as_ref(), "k").as_deref() != Some("b") {
        assert!(Instant::now() < deadline, "the held write never landed");
        std::thread::sleep(Duration::from_millis(50));
    }
    store.put(b"other", b"x").unwrap();
    assert_eq!(value(store.as_ref(), "k").as_deref(), Some("b"));
    assert_eq!(value(store.as_ref(), "other").as_deref(), Some("x"));

    // It had not applied when the next write came: settled so that it never will.
    let held = H2Proxy::start(&direct);
    let other = H2Proxy::start(&direct);
    let store = etcd_at(&[held.url(), other.url()], "settled/");
    store.put(b"k", b"a").unwrap();
    held.hold();
    other.set_down(true);
    let error = store.put(b"k", b"b").unwrap_err().to_string();
    assert!(error.starts_with(OUTCOME_UNKNOWN), "{error}");
    other.set_down(false);
    store.put(b"other", b"x").unwrap();
    deliver_late(&held, &cluster);
    assert_eq!(
        value(store.as_ref(), "k").as_deref(),
        Some("a"),
        "the settled write never applied"
    );
    store.put(b"k", b"c").unwrap();
    assert_eq!(value(store.as_ref(), "k").as_deref(), Some("c"));
}

#[test]
fn the_backends_own_keys_are_out_of_sight_and_out_of_reach() {
    let cluster = EtcdCluster::start(1);
    let store = etcd_at(&cluster.endpoints(), "own/");
    store.put(b"k", b"v").unwrap();
    // The writer's key exists in etcd, under the namespace, but no scan shows it.
    let raw = cluster.etcdctl(&["get", "--prefix", "--keys-only", "own/"]);
    assert!(raw.contains("writer/"), "{raw}");
    assert_eq!(
        store.scan(b"", None, 100).unwrap(),
        [(b"k".to_vec(), b"v".to_vec())]
    );
    let error = store.put(b"\0writer/x", b"v").unwrap_err().to_string();
    assert!(error.contains("NUL byte"), "{error}");
    assert!(store.get(b"\0writer/x").is_err());
}

#[test]
fn a_write_refused_while_a_copy_of_it_is_held_stays_refused() {
    let cluster = EtcdCluster::start(1);
    let direct = cluster.endpoints()[0].clone();
    let proxy = H2Proxy::start(&direct);
    let store = etcd_at(&[proxy.url(), direct.clone()], "refused/");
    // Another writer of the same namespace (another process).
    let other = etcd_at(std::slice::from_ref(&direct), "refused/");
    store.put(b"k", b"a").unwrap();
    proxy.hold();
    // Held on the proxy, sent again to the member, refused there (k is not x): a copy is still
    // on its way, which would apply once k is x.
    let write = [
        BatchOp::Check {
            key: b"k".to_vec(),
            value: Some(b"x".to_vec()),
        },
        BatchOp::Put {
            key: b"k".to_vec(),
            value: b"b".to_vec(),
        },
    ];
    assert!(!store.batch(&write).unwrap(), "refused: its check fails");
    other.put(b"k", b"x").unwrap();
    deliver_late(&proxy, &cluster);
    assert_eq!(
        value(store.as_ref(), "k").as_deref(),
        Some("x"),
        "a write answered as refused never applies later"
    );
}

#[test]
fn opening_removes_the_keys_of_writers_idle_for_a_week_and_keeps_the_rest() {
    let cluster = EtcdCluster::start(1);
    // One writer's key last moved in 2001, another's a moment ago (written as the backend would).
    let old = format!("0978307200000-{}-{}", "0".repeat(32), "0".repeat(16));
    let recent = {
        let store = etcd_at(&cluster.endpoints(), "sweep/");
        store.put(b"k", b"v").unwrap();
        cluster.etcdctl(&["get", "--prefix", "--keys-only", "sweep/"])
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let old_key = format!("sweep/\0writer/{old}");
    rt.block_on(async {
        let mut c = etcd_client::Client::connect(cluster.endpoints(), None)
            .await
            .unwrap();
        c.put(old_key.as_bytes(), old.as_bytes(), None)
            .await
            .unwrap();
    });
    let writers = || {
        cluster
            .etcdctl(&["get", "--prefix", "--keys-only", "sweep/"])
            .lines()
            .filter(|l| l.contains("writer/"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(writers().len(), 2, "{recent}");
    // A backend opening sweeps the old key, keeps the recent one, and adds its own.
    let _store = etcd_at(&cluster.endpoints(), "sweep/");
    let left = writers();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.iter().any(|k| k.contains(&old)), "{left:?}");
}
