//! `spear trace generate|export` and `spear sim`: traces from knobs or from SMS, replayed through
//! strategy plugins in virtual time, deterministically.

use serde_json::Value;
use spear_tests::guest;

use crate::common::{Cluster, finish, spear};
use crate::sh_args;

fn local(args: &[&str]) -> crate::common::Run {
    finish(spear().args(args))
}

fn component(name: &str) -> String {
    guest("component", &format!("{name}.wasm"))
        .display()
        .to_string()
}

/// The results without the replay's wall time (the one figure that is not virtual).
fn results(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--output", "json", "sim"];
    all.extend_from_slice(args);
    let mut v = local(&all).ok().json();
    for r in v.as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("replay_ms");
    }
    v.as_array().unwrap().clone()
}

#[test]
fn a_seed_gives_one_trace_and_one_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let generate = |seed: &str, out: &str| {
        local(&[
            "trace",
            "generate",
            "--executions",
            "600",
            "--nodes",
            "6",
            "--heterogeneous",
            "--rate",
            "40",
            "--seed",
            seed,
            "--out",
            out,
        ])
        .ok();
        std::fs::read(out).unwrap()
    };
    let a = generate("5", &path("a.jsonl"));
    assert_eq!(a, generate("5", &path("b.jsonl")), "one seed, one trace");
    assert_ne!(
        a,
        generate("6", &path("c.jsonl")),
        "another seed, another trace"
    );
    assert_eq!(
        String::from_utf8(a).unwrap().lines().count(),
        601,
        "header + 600"
    );

    let (rr, random) = (component("round-robin"), component("random"));
    let args = [
        "--trace",
        &path("a.jsonl"),
        "--strategy",
        &rr,
        "--strategy",
        &random,
    ];
    let first = results(&args);
    assert_eq!(first, results(&args), "the replay is deterministic");
    assert_eq!(first.len(), 2);
    for r in &first {
        assert_eq!(r["completed"], 600, "{r}");
        assert_eq!(r["invalid_decisions"], 0, "{r}");
        assert!(r["makespan_ms"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["utilisation"].as_object().unwrap().len(), 6, "{r}");
        assert!(r["wait_p99_ms"].as_u64().unwrap() >= r["wait_p50_ms"].as_u64().unwrap());
    }
    assert_eq!(first[0]["plugin"], "round-robin 0.1.0");
    assert_ne!(
        first[0]["utilisation"], first[1]["utilisation"],
        "two strategies, two spreads"
    );

    let text = local(&["sim", "--trace", &path("a.jsonl"), "--strategy", &rr]).ok();
    for want in [
        "600 executions on 6 nodes",
        "wait p99 ms",
        "balance (CV of busy time)",
        "deadline misses",
    ] {
        assert!(text.stdout.contains(want), "{want} in {text:?}");
    }
}

#[test]
fn a_bad_trace_is_refused_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    std::fs::write(
        &file,
        "{\"trace\":\"spear/v1\",\"nodes\":[{\"name\":\"n\",\"cpu_millis\":1000,\"memory_mb\":1024,\"slots\":1}]}\n\
         {\"id\":\"a\",\"submit_ms\":5,\"duration_ms\":1}\n\
         {\"id\":\"b\",\"submit_ms\":1,\"duration_ms\":1}\n",
    )
    .unwrap();
    let rr = component("round-robin");
    let r = local(&[
        "sim",
        "--trace",
        &file.display().to_string(),
        "--strategy",
        &rr,
    ]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr
            .contains("bad.jsonl:3: executions must be in submission order"),
        "{r:?}"
    );
    std::fs::write(
        &file,
        "{\"trace\":\"spear/v1\",\"nodes\":[{\"name\":\"n\",\"cpu_millis\":1,\"memory_mb\":1,\"slots\":0}]}\n",
    )
    .unwrap();
    let r = local(&[
        "sim",
        "--trace",
        &file.display().to_string(),
        "--strategy",
        &rr,
    ]);
    assert!(
        r.stderr
            .contains("bad.jsonl:1: node `n`: slots must be 1 to 65536"),
        "{r:?}"
    );
    let r = local(&["trace", "generate", "--pinned-fraction", "2"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("--pinned-fraction"), "{r:?}");
}

#[test]
fn a_trace_exported_from_sms_replays() {
    let c = Cluster::start();
    for i in 0..3 {
        c.spear(&sh_args(&[], &format!("sleep 0.{i}"))).ok();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.jsonl").display().to_string();
    c.spear(&["trace", "export", "--since", "0", "--out", &out])
        .ok();
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "header + 3 executions: {text}");
    assert_eq!(lines[0]["trace"], "spear/v1");
    assert_eq!(lines[0]["nodes"].as_array().unwrap().len(), 1, "{text}");
    assert_eq!(lines[1]["submit_ms"], 0, "relative to the first: {text}");
    for e in &lines[1..] {
        assert_eq!(e["kind"], "process", "{e}");
        assert!(e["duration_ms"].is_u64(), "{e}");
    }
    let r = results(&[
        "--trace",
        &out,
        "--strategy",
        &component("least-connections"),
    ]);
    assert_eq!(r[0]["completed"], 3, "{r:?}");
}

/// A trace of one node and the given executions: (id, submit, duration, priority, checkpoint).
fn crafted(dir: &std::path::Path, slots: u32, runs: &[(&str, u64, u64, &str, bool)]) -> String {
    let mut text = format!(
        "{{\"trace\":\"spear/v1\",\"nodes\":[{{\"name\":\"n\",\"cpu_millis\":4000,\"memory_mb\":4096,\
         \"slots\":{slots},\"executors\":[\"wasm\"]}}]}}\n"
    );
    for (id, submit, duration, priority, checkpoint) in runs {
        text.push_str(&format!(
            "{{\"id\":\"{id}\",\"submit_ms\":{submit},\"duration_ms\":{duration},\
             \"priority\":\"{priority}\",\"checkpoint\":{checkpoint}}}\n"
        ));
    }
    let file = dir.join(format!("crafted-{}.jsonl", runs.len()));
    std::fs::write(&file, text).unwrap();
    file.display().to_string()
}

#[test]
fn preemption_replays_as_sms_preempts_with_grace_budget_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let rr = component("round-robin");
    // One slot: a low run of 100 s, then an urgent one of 1 s that arrives after 1 s.
    let sim = |checkpoint: bool, extra: &[&str]| {
        let trace = crafted(
            dir.path(),
            1,
            &[
                ("low", 0, 100_000, "low", checkpoint),
                ("urgent", 1_000, 1_000, "urgent", false),
            ],
        );
        let mut args = vec!["--trace", &trace, "--strategy", &rr];
        args.extend_from_slice(extra);
        results(&args).remove(0)
    };
    let off = sim(false, &[]);
    assert_eq!(off["preemptions"], 0, "{off}");
    assert_eq!(
        off["wait_p99_ms"], 99_000,
        "the urgent run waits for the slot: {off}"
    );
    assert_eq!(off["makespan_ms"], 101_000, "{off}");
    let cluster = ["--preemption", "cluster", "--grace-ms", "500"];
    // It waits 250 ms to settle, the low run gets 500 ms of grace: the urgent one starts at
    // 1,750 ms; the low one starts again when it ends (2,750 ms), from the beginning.
    let restart = sim(false, &cluster);
    assert_eq!(restart["preemptions"], 1, "{restart}");
    assert_eq!(restart["wait_p99_ms"], 750, "{restart}");
    assert_eq!(restart["preempted_work_lost_ms"], 1_750, "{restart}");
    assert_eq!(restart["makespan_ms"], 102_750, "{restart}");
    assert_eq!(restart["completed"], 2, "{restart}");
    // From its checkpoint: the 1,750 ms it ran are kept.
    let kept = sim(true, &cluster);
    assert_eq!(kept["preemptions"], 1, "{kept}");
    assert_eq!(kept["preempted_work_lost_ms"], 0, "{kept}");
    assert_eq!(kept["makespan_ms"], 101_000, "{kept}");
    // A gap of 3 lets only urgent take low: a high run takes nothing.
    let high = crafted(
        dir.path(),
        1,
        &[
            ("low", 0, 100_000, "low", false),
            ("high", 1_000, 1_000, "high", false),
        ],
    );
    let r = results(&[
        "--trace",
        &high,
        "--strategy",
        &rr,
        "--preemption",
        "cluster",
        "--min-priority-gap",
        "3",
    ]);
    assert_eq!(r[0]["preemptions"], 0, "{r:?}");

    // Four slots of low work, four urgent runs: the budget caps the preemptions in a minute.
    let mut runs: Vec<(String, u64, u64, &str)> = (0..4)
        .map(|i| (format!("low{i}"), 0, 100_000, "low"))
        .collect();
    runs.extend((0..4).map(|i| (format!("urgent{i}"), 1_000, 1_000, "urgent")));
    let runs: Vec<(&str, u64, u64, &str, bool)> = runs
        .iter()
        .map(|(id, s, d, p)| (id.as_str(), *s, *d, *p, false))
        .collect();
    let four = crafted(dir.path(), 4, &runs);
    let budget = |n: &str| {
        results(&[
            "--trace",
            &four,
            "--strategy",
            &rr,
            "--preemption",
            "cluster",
            "--grace-ms",
            "500",
            "--budget-per-minute",
            n,
        ])
        .remove(0)
    };
    let two = budget("2");
    assert_eq!(two["preemptions"], 2, "{two}");
    assert_eq!(two["completed"], 8, "{two}");
    assert_eq!(budget("10")["preemptions"], 4);

    let text = local(&[
        "sim",
        "--trace",
        &four,
        "--strategy",
        &rr,
        "--preemption",
        "cluster",
    ])
    .ok();
    for want in [
        "preemption cluster (gap 1, grace 10000 ms, 10 per minute)",
        "preemptions",
        "preempted work lost ms",
    ] {
        assert!(text.stdout.contains(want), "{want} in {text:?}");
    }
    // A busy generated trace, half of it checkpointing: preemption replays deterministically.
    let busy = dir.path().join("busy.jsonl").display().to_string();
    local(&[
        "trace",
        "generate",
        "--executions",
        "600",
        "--nodes",
        "3",
        "--rate",
        "100",
        "--checkpoint-fraction",
        "0.5",
        "--seed",
        "5",
        "--out",
        &busy,
    ])
    .ok();
    let args = [
        "--trace",
        &busy,
        "--strategy",
        &rr,
        "--preemption",
        "cluster",
        "--grace-ms",
        "1000",
        "--budget-per-minute",
        "100",
    ];
    let first = results(&args);
    assert_eq!(first, results(&args), "the replay is deterministic");
    assert_eq!(first[0]["completed"], 600, "{first:?}");
    assert!(first[0]["preemptions"].as_u64().unwrap() > 0, "{first:?}");
    assert!(
        std::fs::read_to_string(&busy)
            .unwrap()
            .contains("\"checkpoint\":true"),
        "--checkpoint-fraction marks executions"
    );
    // Values SMS refuses are refused, naming the flag; a mode the simulator lacks too.
    let r = local(&[
        "sim",
        "--trace",
        &four,
        "--strategy",
        &rr,
        "--grace-ms",
        "700000",
    ]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("--grace-ms: must be at most 600000"),
        "{r:?}"
    );
    let r = local(&[
        "sim",
        "--trace",
        &four,
        "--strategy",
        &rr,
        "--budget-per-minute",
        "0",
    ]);
    assert!(r.stderr.contains("--budget-per-minute"), "{r:?}");
    let r = local(&[
        "sim",
        "--trace",
        &four,
        "--strategy",
        &rr,
        "--preemption",
        "node",
    ]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("node"), "{r:?}");
}
