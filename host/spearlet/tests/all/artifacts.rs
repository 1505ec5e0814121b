//! What a process execution gets on its node: its artifact (fetched once, by the node's rules
//! on where from and how long, kept while in use) and a working directory of its own. SMS and a
//! Spearlet as processes on loopback, driven through SMS's REST API.

use crate::common;

use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_come_from_sms_once_and_instances_are_reused_hot() {
    let c = Cluster::new();
    let sms = c.sms();
    let allowed = c.path().join("programs");
    std::fs::create_dir(&allowed).unwrap();
    let s = c.spearlet(
        "alpha",
        &sms,
        &format!(
            "[spearlet.artifacts]\nfile_prefixes = [\"/no/such\", {:?}]\nfetch_timeout_ms = 60000\n",
            allowed.display().to_string()
        ),
    );
    let script = b"#!/bin/sh\necho from-artifact \"$@\"\n".to_vec();
    let meta = sms.upload("hello.sh", script).await;
    let uri = meta["uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("sms+file://"), "{meta}");
    let body =
        json!({"executable": {"type": "process", "uri": uri, "args": ["one"]}, "max_attempts": 1});
    for _ in 0..2 {
        let id = sms.submit(body.clone()).await;
        let e = sms.finished(&id, LONG).await;
        assert_eq!(e["state"], "succeeded", "{e}");
        assert_eq!(e["result"]["stdout"], "from-artifact one\n");
    }
    let pools = &s.get("/api/v1/status").await["pools"];
    assert_eq!(pools["cold"], 1, "{pools}");
    assert_eq!(pools["hot"], 1, "{pools}");
    let cached = c
        .path()
        .join("alpha-data/artifacts")
        .join(meta["file_id"].as_str().unwrap());
    assert!(cached.is_file(), "{}", cached.display());

    // The same bytes over plain HTTP, pinned by their sha256: a wrong pin is refused, and so is
    // no pin at all. From the file system, only under an allowed prefix, by the real path (SMS
    // refuses `..`; a link out of the prefix is refused); through another SMS's gateway, not at
    // all.
    let sha = meta["file_id"].as_str().unwrap();
    let web = sms.url(&format!("/api/v1/files/{sha}"));
    std::fs::write(
        allowed.join("hello.sh"),
        b"#!/bin/sh\necho from-artifact \"$@\"\n",
    )
    .unwrap();
    let local = format!("file://{}", allowed.join("hello.sh").display());
    // A link inside the prefix that leads out of it: the real path is what counts.
    std::os::unix::fs::symlink("/etc", allowed.join("out")).unwrap();
    let linked_out = format!("file://{}", allowed.join("out/passwd").display());
    let cases = [
        (format!("{web}#sha256={sha}"), ""),
        (format!("{web}#sha256={}", "0".repeat(64)), "expected"),
        (web.clone(), "need a #sha256="),
        (local, ""),
        (
            "file:///etc/passwd".into(),
            "spearlet.artifacts.file_prefixes",
        ),
        (linked_out, "spearlet.artifacts.file_prefixes"),
        (
            format!("sms+file://10.255.255.1:9/{sha}"),
            "spearlet.sms_http_addr",
        ),
    ];
    for (uri, refusal) in cases {
        let body = json!({"executable": {"type": "process", "uri": uri, "args": ["web"]}, "max_attempts": 1});
        let id = sms.submit(body).await;
        let e = sms.finished(&id, LONG).await;
        if refusal.is_empty() {
            assert_eq!(e["state"], "succeeded", "{uri}: {e}");
            assert_eq!(e["result"]["stdout"], "from-artifact web\n");
        } else {
            assert_eq!(e["state"], "failed", "{uri}: {e}");
            assert!(e["error"].as_str().unwrap().contains(refusal), "{uri}: {e}");
            assert_eq!(e["started_at_ms"], 0, "it never started: {e}");
        }
    }

    // A URI the node cannot fetch fails that execution clearly; the node goes on.
    let id = sms
        .submit(json!({"executable": {"type": "process", "uri": "file:///no/such/program"}, "max_attempts": 1}))
        .await;
    let e = sms.finished(&id, LONG).await;
    assert_eq!(e["state"], "failed");
    assert!(
        e["error"].as_str().unwrap().contains("/no/such/program"),
        "{e}"
    );
    let ok = sms.sh("echo ok", json!({})).await;
    assert_eq!(sms.finished(&ok, LONG).await["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_that_hangs_ends_at_its_deadline_and_holds_up_no_other() {
    let c = Cluster::new();
    let sms = c.sms();
    // A server that takes connections and never answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hole.local_addr().unwrap();
    let s = c.spearlet(
        "alpha",
        &sms,
        "[spearlet.artifacts]\nfetch_timeout_ms = 10000\n",
    );
    let stuck_uri = format!("http://{addr}/never#sha256={}", "1".repeat(64));
    let stuck = sms
        .submit(json!({"executable": {"type": "process", "uri": stuck_uri}, "max_attempts": 1}))
        .await;
    // Meanwhile another artifact is fetched (from SMS) and runs.
    let meta = sms
        .upload("quick.sh", b"#!/bin/sh\necho quick\n".to_vec())
        .await;
    let quick = sms
        .submit(json!({"executable": {"type": "process", "uri": meta["uri"]}, "max_attempts": 1}))
        .await;
    let e = sms.finished(&quick, LONG).await;
    assert_eq!(e["state"], "succeeded", "{e}\n{}", s.log());
    let waiting = sms.execution(&stuck).await;
    assert!(
        ["assigned", "running"].contains(&waiting["state"].as_str().unwrap()),
        "the hanging fetch is still under way: {waiting}"
    );
    // The hanging one ends at its deadline, saying so.
    let e = sms.finished(&stuck, LONG).await;
    assert_eq!(e["state"], "failed", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("spearlet.artifacts.fetch_timeout_ms"),
        "{e}"
    );
    drop(hole);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_artifact_a_pooled_instance_uses_is_not_evicted() {
    let c = Cluster::new();
    let sms = c.sms();
    // A 1 MiB cache, and two programs of 600 KiB each: keeping the second must evict the first,
    // but the first's instance is still in the pool.
    let config = c.spearlet_config("alpha", "").replace(
        "[spearlet.storage]\n",
        "[spearlet.storage]\nmax_cache_size_mb = 1\n",
    );
    let s = c.spearlet_from("alpha", &sms, &config);
    let mut shas = Vec::new();
    for name in ["first", "second"] {
        let mut script = format!("#!/bin/sh\necho {name}\nexit 0\n").into_bytes();
        script.extend(std::iter::repeat_n(b'#', 600 * 1024));
        let meta = sms.upload(&format!("{name}.sh"), script).await;
        let id = sms
            .submit(
                json!({"executable": {"type": "process", "uri": meta["uri"]}, "max_attempts": 1}),
            )
            .await;
        let e = sms.finished(&id, LONG).await;
        assert_eq!(e["state"], "succeeded", "{e}\n{}", s.log());
        assert_eq!(e["result"]["stdout"], format!("{name}\n"));
        shas.push(meta["file_id"].as_str().unwrap().to_owned());
    }
    let cached = |sha: &str| c.path().join("alpha-data/artifacts").join(sha).is_file();
    assert!(cached(&shas[0]), "in use by a pooled instance, kept");
    assert!(cached(&shas[1]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_execution_runs_in_a_private_directory_removed_at_its_end() {
    let c = Cluster::new();
    let sms = c.sms();
    let s = c.spearlet("alpha", &sms, "");
    let work = c.path().join("alpha-data/work");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let id = sms
            .sh("pwd; stat -c %a .; echo data > left-behind; ls", json!({}))
            .await;
        let e = sms.finished(&id, LONG).await;
        assert_eq!(e["state"], "succeeded", "{e}\n{}", s.log());
        let out = e["result"]["stdout"].as_str().unwrap().to_owned();
        let mut lines = out.lines();
        let dir = std::path::PathBuf::from(lines.next().unwrap());
        assert!(dir.starts_with(&work), "{out}");
        assert_eq!(lines.next(), Some("700"), "{out}");
        assert_eq!(lines.next(), Some("left-behind"), "{out}");
        seen.push(dir);
    }
    assert_ne!(seen[0], seen[1], "one directory each");
    // Removed once each ended (off the async threads: allow it a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.iter().any(|d| d.exists()) {
        assert!(Instant::now() < deadline, "{seen:?} still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Turned off, a program runs where the Spearlet does.
    let c = Cluster::new();
    let sms = c.sms();
    let config = c.spearlet_config("beta", "").replace(
        "[spearlet.limits]\n",
        "[spearlet.limits]\nprivate_workdir = false\n",
    );
    let _s = c.spearlet_from("beta", &sms, &config);
    let id = sms.sh("pwd", json!({})).await;
    let e = sms.finished(&id, LONG).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    let pwd = std::path::PathBuf::from(e["result"]["stdout"].as_str().unwrap().trim());
    assert_eq!(
        pwd.canonicalize().unwrap(),
        c.path().canonicalize().unwrap()
    );
}
