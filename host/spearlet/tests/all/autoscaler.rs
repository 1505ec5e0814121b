//! The autoscaler through real processes: `sms` with the built-in `queue-depth` policy, and a
//! provider that starts and stops real Spearlets: the `exec` provider's command starts `spearlet`
//! processes; the `podman` provider starts Spearlet containers (from an image made here of this
//! build's `spearlet`) on the tests' Podman. The pool starts at `min`, grows to `max` under a
//! backlog, and shrinks back to `min` once idle, each node drained before it is stopped.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);

/// The provider's command: starts a Spearlet per UUID (its pid kept in `pid-<uuid>`), or stops
/// one with SIGTERM and waits for it to exit. Every run is logged to `actions.log`.
pub(crate) fn scale_script(spearlet: &str) -> String {
    format!(
        r#"echo "$SPEAR_SCALE_ACTION $SPEAR_DESIRED $SPEAR_NODE_UUIDS" >> actions.log
for u in $(echo "$SPEAR_NODE_UUIDS" | tr , ' '); do
  case "$SPEAR_SCALE_ACTION" in
  start)
    SPEARLET_NODE_UUID=$u SPEARLET_LOG=warn {spearlet} --config auto.toml \
      --sms-addr "$SPEAR_SMS_GRPC_ADDR" --auto-register --node-name "auto-$u" \
      --storage-path "data-$u" </dev/null >"out-$u" 2>"err-$u" &
    echo $! > "pid-$u" ;;
  stop)
    pid=$(cat "pid-$u") || exit 3
    kill -TERM "$pid"
    for i in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    exit 4 ;;
  esac
done
"#
    )
}

/// Kills whatever the provider started and the test did not see stopped.
pub(crate) struct Started(pub(crate) std::path::PathBuf);

impl Drop for Started {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("pid-")
                && let Ok(pid) = std::fs::read_to_string(entry.path())
            {
                let _ = std::process::Command::new("kill")
                    .args(["-9", pid.trim()])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

pub(crate) fn process_alive(dir: &std::path::Path, uuid: &str) -> bool {
    let pid = std::fs::read_to_string(dir.join(format!("pid-{uuid}"))).unwrap();
    std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Wait until the autoscaler's status satisfies `ok`; returns it.
pub(crate) async fn status_until(
    sms: &common::Sms,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let s = sms.get("/api/v1/autoscaler").await;
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never {what}: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn registered(s: &Value) -> usize {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["registered"] == true && n["draining_since_ms"].is_null())
        .count()
}

fn uuids(s: &Value) -> BTreeSet<String> {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["uuid"].as_str().unwrap().to_owned())
        .collect()
}

/// `[autoscaler]` for `provider` (its TOML lines): min 1, max 3, one place per new node, idle
/// 1.5 s before a drain.
fn autoscaler_section(provider: &str) -> String {
    format!(
        "[dispatch]\nprefetch = 0\n\
         [autoscaler]\npolicy = \"queue-depth\"\ninterval_ms = 200\nmin = 1\nmax = 3\n\
         scale_up_threshold = 1\nscale_down_delay_ms = 1500\ncooldown_ms = 500\n\
         [autoscaler.config]\ntasks_per_node = 1\n\
         [autoscaler.provider]\n{provider}"
    )
}

/// What the scenario saw: every node the pool had at its largest, and those it kept.
struct Scaled {
    full: BTreeSet<String>,
    kept: BTreeSet<String>,
    removed: Vec<String>,
}

/// The pool starts at one node, grows to three under six runs of 3 s (one place per node), runs
/// each once, and shrinks back to one, the two others drained, then stopped (`alive` says
/// whether a node's process or container still runs), then removed.
async fn grow_and_shrink(sms: &common::Sms, alive: impl Fn(&str) -> bool) -> Scaled {
    // At start the pool is brought to `min`.
    let first = status_until(sms, "one node serving", |s| registered(s) == 1).await;
    assert_eq!(first["policy"], "queue-depth", "{first}");
    let first = uuids(&first);

    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(sms.sh("sleep 3; echo done", json!({})).await);
    }
    let full = status_until(sms, "three nodes serving", |s| registered(s) == 3).await;
    assert_eq!(uuids(&full).len(), 3, "{full}");
    assert!(first.is_subset(&uuids(&full)));
    let full = uuids(&full);
    // Each node's last work ended at (ms since the epoch).
    let mut last_work: std::collections::BTreeMap<String, i64> = Default::default();
    for id in &runs {
        let done = sms.finished(id, LONG).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["attempt"], 1, "nothing was stopped under it: {done}");
        let ended = done["updated_at_ms"].as_i64().unwrap();
        let at = last_work
            .entry(done["node_uuid"].as_str().unwrap().to_owned())
            .or_default();
        *at = (*at).max(ended);
    }
    let used: BTreeSet<String> = last_work.keys().cloned().collect();
    assert_eq!(used, full, "the work spread over the three nodes");

    // Idle for `scale_down_delay_ms`: back to `min`, the others drained, then stopped.
    let last = status_until(sms, "back to one node", |s| {
        s["nodes"].as_array().unwrap().len() == 1
    })
    .await;
    let kept = uuids(&last);
    let removed: Vec<String> = full.difference(&kept).cloned().collect();
    assert_eq!(removed.len(), 2, "{last}");
    let events = sms.events().await;
    for uuid in &removed {
        assert!(!alive(uuid), "{uuid} was stopped");
        let at = |kind: &str, pick: &dyn Fn(&Value) -> bool| {
            events
                .iter()
                .position(|e| e["kind"] == kind && pick(e))
                .unwrap_or_else(|| panic!("no {kind} for {uuid}: {events:?}"))
        };
        let drained = at("node.updated", &|e| {
            e["subject"] == uuid.as_str() && e["data"]["status"] == "draining"
        });
        let gone = at("autoscaler.removed", &|e| e["subject"] == uuid.as_str());
        let node_removed = at("node.removed", &|e| e["subject"] == uuid.as_str());
        assert!(
            drained < node_removed && node_removed < gone,
            "drained, then stopped and removed"
        );
        let idle_for = events[drained]["at_ms"].as_i64().unwrap() - last_work[uuid];
        assert!(idle_for >= 1500, "{uuid} drained after {idle_for} ms idle");
        sms.node_status(uuid, "absent", LONG).await;
    }
    for uuid in &kept {
        assert!(alive(uuid), "{uuid} still serves");
    }
    let metrics = reqwest::get(sms.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        common::sample(&metrics, "sms_autoscaler_nodes{state=\"serving\"}"),
        1.0
    );
    assert_eq!(common::sample(&metrics, "sms_autoscaler_desired"), 1.0);
    assert_eq!(
        common::sample(
            &metrics,
            "sms_autoscaler_actions_total{action=\"stop\",result=\"ok\"}"
        ),
        2.0
    );
    Scaled {
        full,
        kept,
        removed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exec_provider_grows_the_pool_to_max_and_drains_it_back_to_min() {
    let cluster = Cluster::new();
    let dir = cluster.path().to_path_buf();
    let _started = Started(dir.clone());
    cluster.write("scale.sh", &scale_script(env!("CARGO_BIN_EXE_spearlet")));
    cluster.write(
        "auto.toml",
        &cluster
            .spearlet_config("auto", "")
            .replace("max_concurrent = 8", "max_concurrent = 1"),
    );
    let sms = cluster.sms_full(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[scheduler]\nstrategy = \"least-connections\"\n",
        &autoscaler_section("kind = \"exec\"\ncommand = [\"/bin/sh\", \"scale.sh\"]\n"),
        &[],
    );
    let scaled = grow_and_shrink(&sms, |uuid| process_alive(&dir, uuid)).await;
    let actions = std::fs::read_to_string(dir.join("actions.log")).unwrap();
    // `start DESIRED UUID,UUID…`: three nodes started in all, never past `max`.
    let started: BTreeSet<&str> = actions
        .lines()
        .filter_map(|l| l.strip_prefix("start "))
        .flat_map(|l| l.split(' ').nth(1).unwrap_or_default().split(','))
        .collect();
    let full: BTreeSet<&str> = scaled.full.iter().map(String::as_str).collect();
    assert_eq!(started, full, "{actions}");
    assert!(
        actions
            .lines()
            .filter_map(|l| l.strip_prefix("start "))
            .all(|l| l.split(' ').next().unwrap().parse::<u32>().unwrap() <= 3),
        "{actions}"
    );
    let stops: Vec<&str> = actions.lines().filter(|l| l.starts_with("stop ")).collect();
    assert_eq!(stops.len(), 2, "{actions}");
    for stop in stops {
        assert!(
            scaled.removed.iter().any(|u| stop.ends_with(u.as_str())),
            "{stop}"
        );
    }
    assert_eq!(scaled.kept.len(), 1);
}

/// An image `localhost/<name>:test` holding this build's `spearlet` (with the libraries it
/// loads and this machine's CA roots), busybox for its process executions, and
/// `/etc/spearlet.toml` (one place, the process executor only).
fn spearlet_image(name: &str) -> String {
    use spear_tests::podman::podman_command;
    let image = format!("localhost/{name}:test");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    let put = |from: &std::path::Path, to: &str| {
        let to = root.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    let spearlet = std::path::Path::new(env!("CARGO_BIN_EXE_spearlet"));
    let ldd = std::process::Command::new("ldd")
        .arg(spearlet)
        .output()
        .unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| {
            l.split("=>")
                .last()
                .and_then(|s| s.split_whitespace().next())
                .filter(|p| p.starts_with('/'))
        })
    {
        put(std::path::Path::new(lib), lib);
    }
    // Stripped: the image needs no debug information.
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(root.join("usr/local/bin/spearlet"))
        .arg(spearlet)
        .status()
        .unwrap();
    assert!(status.success(), "strip {}", spearlet.display());
    put(std::path::Path::new("/bin/busybox"), "/bin/busybox");
    // CA roots: the Spearlet's artifact client will not start without any.
    put(
        std::path::Path::new("/etc/ssl/certs/ca-certificates.crt"),
        "/etc/ssl/certs/ca-certificates.crt",
    );
    for applet in ["sh", "sleep", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    for d in ["tmp", "var/lib/spear"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/spearlet.toml"),
        "[spearlet]\nheartbeat_interval = 1\nsms_connect_retry_ms = 100\n\
         [spearlet.limits]\nmax_concurrent = 1\nstop_grace_ms = 500\ndrain_timeout_ms = 3000\n\
         [executors]\nenabled = [\"process\"]\n",
    )
    .unwrap();
    let tar = dir.path().join("rootfs.tar");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let out = podman_command()
        .arg("import")
        .arg(&tar)
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// Removes the test's containers (and those of earlier runs that were killed: any named
/// `spear-autoscale-test-…`) and its image when dropped, pass or fail.
struct Leftovers {
    prefix: String,
    image: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let (_, list) = spear_tests::podman::engine("GET", "/containers/json?all=true");
        for c in list.as_array().into_iter().flatten() {
            let named = c["Names"].as_array().into_iter().flatten().any(|n| {
                n.as_str().is_some_and(|n| {
                    let n = n.trim_start_matches('/');
                    n.starts_with(&self.prefix) || n.starts_with("spear-autoscale-test-")
                })
            });
            if named && let Some(id) = c["Id"].as_str() {
                spear_tests::podman::remove_container(id);
            }
        }
        spear_tests::podman::remove_image(&self.image);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_podman_provider_grows_spearlet_containers_to_max_and_drains_them_back_to_min() {
    use spear_tests::podman::{inspect_container, podman};
    let socket = podman().socket.clone();
    let image = spearlet_image("spear-autoscaled-spearlet");
    let prefix = format!("spear-autoscale-test-{}-", std::process::id());
    let _leftovers = Leftovers {
        prefix: prefix.clone(),
        image: image.clone(),
    };
    let cluster = Cluster::new();
    let provider = format!(
        "kind = \"podman\"\nsocket = \"{socket}\"\nimage = \"{image}\"\n\
         entrypoint = [\"/usr/local/bin/spearlet\", \"--config\", \"/etc/spearlet.toml\"]\n\
         args = [\"--grpc-addr\", \"127.0.0.1:0\", \"--http-addr\", \"127.0.0.1:0\", \
         \"--storage-path\", \"/var/lib/spear\"]\n\
         env = {{ SPEARLET_LOG = \"warn\" }}\n\
         network = \"host\"\nname_prefix = \"{prefix}\"\nstop_timeout_secs = 10\n"
    );
    let sms = cluster.sms_full(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[scheduler]\nstrategy = \"least-connections\"\n",
        &autoscaler_section(&provider),
        &[],
    );
    let running = |uuid: &str| {
        inspect_container(&format!("{prefix}{uuid}")).is_some_and(|c| c["State"]["Running"] == true)
    };
    let scaled = grow_and_shrink(&sms, running).await;
    for uuid in &scaled.removed {
        assert!(
            inspect_container(&format!("{prefix}{uuid}")).is_none(),
            "{uuid}'s container was removed"
        );
    }
    let kept = scaled.kept.iter().next().unwrap();
    let c = inspect_container(&format!("{prefix}{kept}")).unwrap();
    assert_eq!(
        c["Config"]["Labels"]["spear.autoscaler.node"],
        kept.as_str(),
        "{c}"
    );
    assert!(
        c["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str() == Some(&format!("SPEARLET_NODE_UUID={kept}"))),
        "{c}"
    );
}
