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
