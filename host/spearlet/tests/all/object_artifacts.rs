//! `s3://` and `minio://` artifacts through the S3 API, against a real S3-compatible server:
//! moto's (`tests/s3/setup.sh` installs it; run-tests.sh calls that), started here with
//! signature checks on (every request after the three that make its IAM user must be signed
//! with that user's key). Programs are put there through the S3 API (`tests/s3/seed.py`), then
//! run by a Spearlet from each scheme; a wrong secret, a wrong pin, a missing object and an object
//! over the size limit each fail with a reason that names the URI and never the secret.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Cluster, Sms};

/// A moto server on a free port; killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/example-tools/moto-venv/bin")
}

fn moto() -> Moto {
    assert!(
        venv().join("moto_server").is_file(),
        "moto is missing: run tests/s3/setup.sh (run-tests.sh does)"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(venv().join("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

/// Put `objects` (key, content) into `bucket` through the S3 API; the access key made for it.
fn seed(moto: &Moto, dir: &Path, bucket: &str, objects: &[(&str, Vec<u8>)]) -> (String, String) {
    let mut args = vec![
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/s3/seed.py")
            .display()
            .to_string(),
        moto.endpoint.clone(),
        bucket.to_owned(),
    ];
    for (i, (key, content)) in objects.iter().enumerate() {
        let file = dir.join(format!("object-{i}"));
        std::fs::write(&file, content).unwrap();
        args.push(format!("{key}={}", file.display()));
    }
    let out = Command::new(venv().join("python"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seed.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        keys["key_id"].as_str().unwrap().to_owned(),
        keys["secret"].as_str().unwrap().to_owned(),
    )
}

/// A Spearlet config with both stores at `endpoint`, signing as `key_id` with the secret in
/// `secret_file`, and artifacts up to 1 MiB.
fn config(
    cluster: &Cluster,
    name: &str,
    endpoint: &str,
    key_id: &str,
    secret_file: &str,
) -> String {
    let stores = format!(
        "[spearlet.artifacts.s3]\nendpoint = \"{endpoint}\"\npath_style = true\n\
         access_key_id = \"{key_id}\"\nsecret_access_key_file = \"{secret_file}\"\n\
         [spearlet.artifacts.minio]\nendpoint = \"{endpoint}\"\n\
         access_key_id = \"{key_id}\"\nsecret_access_key_file = \"{secret_file}\"\n"
    );
    cluster.spearlet_config(name, &stores).replace(
        "[spearlet.storage]\n",
        "[spearlet.storage]\nmax_object_size = 1048576\n",
    )
}

async fn run(sms: &Sms, uri: &str) -> Value {
    let id = sms
        .submit(json!({"executable": {"type": "process", "uri": uri, "args": ["from"]}, "max_attempts": 1}))
        .await;
    sms.finished(&id, Duration::from_secs(60)).await
}

#[tokio::test]
async fn s3_and_minio_artifacts_run_and_each_refusal_says_why() {
    let moto = moto();
    let cluster = Cluster::new();
    let script = b"#!/bin/sh\necho \"hello $1 object storage\"\n".to_vec();
    let sha = hex(&script);
    let (key_id, secret) = seed(
        &moto,
        cluster.path(),
        "art",
        &[
            ("tools/hello.sh", script),
            ("tools/big.bin", vec![7u8; 2 * 1024 * 1024]),
        ],
    );
    cluster.write("s3-secret", &format!("{secret}\n"));
    cluster.write("wrong-secret", "not-the-secret\n");
    let sms = cluster.sms();
    let mut node = cluster.spearlet_from(
        "s3-node",
        &sms,
        &config(&cluster, "s3-node", &moto.endpoint, &key_id, "s3-secret"),
    );

    for uri in [
        "s3://art/tools/hello.sh".to_owned(),
        "minio://art/tools/hello.sh".to_owned(),
        format!("s3://art/tools/hello.sh#sha256={sha}"),
    ] {
        let done = run(&sms, &uri).await;
        assert_eq!(done["state"], "succeeded", "{uri}: {done}");
        assert_eq!(
            done["result"]["stdout"], "hello from object storage\n",
            "{uri}: {done}"
        );
    }
    // A task pinned by SPEAR's checksum_sha256.
    let (status, task) = sms
        .post(
            "/api/v1/tasks",
            json!({"name": "from-s3", "executable": {"type": "binary", "uri": "minio://art/tools/hello.sh", "checksum_sha256": sha, "args": ["pinned"]}}),
        )
        .await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(
        task["executable"]["uri"],
        format!("minio://art/tools/hello.sh#sha256={sha}")
    );
    let id = sms.submit(json!({"task_id": task["task_id"]})).await;
    let done = sms.finished(&id, Duration::from_secs(60)).await;
    assert_eq!(
        done["result"]["stdout"], "hello pinned object storage\n",
        "{done}"
    );

    let refusals = [
        (
            format!("s3://art/tools/hello.sh#sha256={}", "0".repeat(64)),
            "sha256",
        ),
        ("s3://art/tools/missing.sh".to_owned(), "no such object"),
        (
            "s3://art/tools/big.bin".to_owned(),
            "over spearlet.storage.max_object_size",
        ),
    ];
    for (uri, why) in &refusals {
        let done = run(&sms, uri).await;
        let error = done["error"].as_str().unwrap_or_default();
        assert_eq!(done["state"], "failed", "{uri}: {done}");
        assert!(error.contains(why), "{uri}: {error}");
        assert!(
            error.contains(uri.split('#').next().unwrap()),
            "{uri}: {error}"
        );
    }

    // The wrong secret: the server refuses the signature, and the error shows no secret.
    node.terminate();
    let mut wrong = cluster.spearlet_from(
        "wrong-node",
        &sms,
        &config(
            &cluster,
            "wrong-node",
            &moto.endpoint,
            &key_id,
            "wrong-secret",
        ),
    );
    let done = run(&sms, "s3://art/tools/hello.sh").await;
    let error = done["error"].as_str().unwrap_or_default();
    assert_eq!(done["state"], "failed", "{done}");
    assert!(error.contains("SignatureDoesNotMatch"), "{error}");
    assert!(
        !error.contains("not-the-secret") && !error.contains(&secret),
        "{error}"
    );

    // `anonymous = true` sends unsigned requests: this server, which wants them signed, says so.
    wrong.terminate();
    let anonymous = cluster.spearlet_config(
        "anon-node",
        &format!(
            "[spearlet.artifacts.s3]\nendpoint = \"{}\"\npath_style = true\nanonymous = true\n",
            moto.endpoint
        ),
    );
    let _anon = cluster.spearlet_from("anon-node", &sms, &anonymous);
    let done = run(&sms, "s3://art/tools/hello.sh").await;
    let error = done["error"].as_str().unwrap_or_default();
    assert_eq!(done["state"], "failed", "{done}");
    assert!(error.contains("403"), "{error}");
    assert!(
        !error.contains("SignatureDoesNotMatch"),
        "unsigned: {error}"
    );
}

#[test]
fn a_store_section_without_its_secret_or_endpoint_is_refused_by_key() {
    let cluster = Cluster::new();
    for (extra, key) in [
        (
            "[spearlet.artifacts.s3]\naccess_key_id = \"AKID\"\nsecret_access_key_file = \"nope\"\n",
            "spearlet.artifacts.s3.secret_access_key_file",
        ),
        (
            "[spearlet.artifacts.s3]\naccess_key_id = \"AKID\"\n",
            "spearlet.artifacts.s3.access_key_id",
        ),
        (
            "[spearlet.artifacts.minio]\nanonymous = true\n",
            "spearlet.artifacts.minio.endpoint",
        ),
        (
            "[spearlet.artifacts.s3]\nendpoint = \"ftp://x\"\n",
            "spearlet.artifacts.s3.endpoint",
        ),
        (
            "[spearlet.artifacts.s3]\nendpoint = \"https://user:pass@s3.example\"\n",
            "spearlet.artifacts.s3.endpoint",
        ),
    ] {
        let path = cluster.write("bad.toml", &cluster.spearlet_config("bad", extra));
        let out = Command::new(env!("CARGO_BIN_EXE_spearlet"))
            .current_dir(cluster.path())
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}: started");
        assert!(stderr.contains(key), "{extra}: {stderr}");
    }
}

fn hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
