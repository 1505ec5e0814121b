//! Container start latency through the `container` executor (loaded as a native plugin) against the
//! test Podman (`tests/podman/setup.sh`): start + wait + destroy of busybox `true`, beside an
//! in-run baseline of fork + exec + wait of `/bin/true`.
//!
//! Run: `cargo bench -p spear-tests --bench container_start` (`-- N` for N runs, default 20).

use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::executor::{ExecSpec, ExitStatus};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::guest;
use spear_tests::podman::{BUSYBOX, podman, remove_container};

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn report(what: &str, samples: &mut [Duration]) -> Duration {
    let p50 = percentile(samples, 0.5);
    println!(
        "{what:<44} n={:<3} p50 {:>9.2} ms  p90 {:>9.2} ms  max {:>9.2} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        percentile(samples, 0.9).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
    );
    p50
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let socket = &podman().socket;
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", "container.so"), &engine, &limits).unwrap();
    let mut x = plugin.executor().unwrap();
    x.configure(&format!(r#"{{"socket": "{socket}"}}"#))
        .unwrap();

    let mut baseline = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let status = std::process::Command::new("/bin/true").status().unwrap();
        assert!(status.success());
        baseline.push(t.elapsed());
    }

    let run = |i: usize| {
        remove_container(&format!("spear-bench-{}-{i}", std::process::id()));
        let spec = ExecSpec {
            execution_id: format!("bench-{}-{i}", std::process::id()),
            entry: BUSYBOX.into(),
            args: vec!["true".into()],
            ..ExecSpec::default()
        };
        let t = Instant::now();
        let h = x.start(&spec).unwrap();
        let r = x.wait(&h, 60_000).unwrap().expect("finished");
        let until_exit = t.elapsed();
        assert_eq!(r.status, ExitStatus::Exited(0));
        x.destroy(&h).unwrap();
        (until_exit, t.elapsed())
    };
    // Warm-up (the first container pays for image and runtime caches).
    run(usize::MAX);
    let mut to_exit = Vec::with_capacity(runs);
    let mut with_removal = Vec::with_capacity(runs);
    for i in 0..runs {
        let (a, b) = run(i);
        to_exit.push(a);
        with_removal.push(b);
    }
    println!("container start latency (Podman, vfs, runc; busybox `true`)");
    let base = report("baseline: fork+exec+wait /bin/true", &mut baseline);
    let start = report("container: create+attach+start+wait", &mut to_exit);
    report("container: … + destroy (remove)", &mut with_removal);
    println!(
        "ratio p50 container/baseline: {:.0}×",
        start.as_secs_f64() / base.as_secs_f64()
    );
}
