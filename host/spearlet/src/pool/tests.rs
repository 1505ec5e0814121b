//! The pool's bookkeeping.

use super::*;
use spear_plugin_api::NodePressure;

fn pools(max_instances: u32) -> (Pools, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[plugins]\ndir = {:?}\n", dir.path().display().to_string());
    let config = spear_plugin_runtime::RuntimeConfig::compile(&text, None).unwrap();
    let host = PluginHost::with_config(config, None).unwrap();
    (Pools::new(host, 4, max_instances), dir)
}

async fn run_once(p: &Pools, task: &str) -> u64 {
    let lease = p
        .acquire(task, "process", Serving::default(), |_| async {
            Ok(Made::default())
        })
        .await
        .unwrap();
    let id = lease.id;
    p.release(lease, true, None, 0);
    id
}

#[tokio::test]
async fn the_table_is_bounded_by_evicting_the_longest_idle() {
    let (p, _dir) = pools(3);
    let first = run_once(&p, "a").await;
    for task in ["b", "c", "d", "e"] {
        run_once(&p, task).await;
    }
    let left: Vec<String> = p.instances().into_iter().map(|i| i.task).collect();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(
        !left.contains(&"a".to_owned()),
        "the oldest went first: {left:?}"
    );
    assert!(p.instances().iter().all(|i| i.id != first));
    assert_eq!(p.counters().evicted, 2);
}

#[tokio::test]
async fn without_a_reclaimer_section_idle_time_runs_with_its_defaults() {
    let (p, _dir) = pools(100);
    run_once(&p, "stale").await;
    run_once(&p, "fresh").await;
    // "stale" was last used 301 s ago: past idle-time's default of 300 s.
    {
        let mut s = p.lock();
        let stale = s
            .instances
            .values_mut()
            .find(|i| i.task == "stale")
            .unwrap();
        stale.last_used = Instant::now()
            .checked_sub(Duration::from_secs(301))
            .expect("the machine has been up for 301 s");
    }
    let pressure = NodePressure {
        memory_total_bytes: 1,
        memory_used_bytes: 0,
        cpu_load_permille: 0,
        now_ms: 0,
    };
    let stopped = tokio::task::spawn_blocking({
        let p = std::sync::Arc::new(p);
        move || (p.reclaim(&pressure), p)
    })
    .await
    .unwrap();
    let (stopped, p) = stopped;
    assert_eq!(stopped.len(), 1);
    let left: Vec<String> = p.instances().into_iter().map(|i| i.task).collect();
    assert_eq!(left, ["fresh"]);
}
