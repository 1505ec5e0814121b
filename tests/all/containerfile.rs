//! The project's `Containerfile` (issue 12), built and run with the private Podman: its `prebuilt`
//! stage over a base image made here from this machine's own C libraries (no registry is reachable),
//! with the debug binaries this test run built. The image's SMS checks tokens (it listens on every
//! interface) and answers `/health`; `spearlet` and `spear` run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use spear_tests::podman::podman_command;

const BASE: &str = "localhost/spear-test-base:latest";
const IMAGE: &str = "localhost/spear-next:test";
const TOKEN: &str = "containerfile-test-admin-token-0123456789";

/// `target/debug`, beside this test binary (`target/debug/deps/all-…`).
fn debug_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shared libraries `bins` load (with the dynamic loader), as `ldd` resolves them here.
fn libraries(bins: &[PathBuf]) -> Vec<PathBuf> {
    let mut libs = std::collections::BTreeSet::new();
    for bin in bins {
        for line in run(Command::new("ldd").arg(bin)).lines() {
            let path = line
                .split("=>")
                .last()
                .and_then(|s| s.split_whitespace().next())
                .filter(|p| p.starts_with('/'));
            if let Some(p) = path {
                libs.insert(PathBuf::from(p));
            }
        }
    }
    libs.into_iter().collect()
}

/// A base image: this machine's libraries for `bins`, and busybox for the Containerfile's `RUN`.
fn make_base(dir: &Path, bins: &[PathBuf]) {
    let root = dir.join("rootfs");
    for lib in libraries(bins) {
        let to = root.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&lib, &to).unwrap();
    }
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "mkdir", "chown"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    run(podman_command().arg("import").arg(&tar).arg(BASE));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_containerfile_builds_an_image_whose_sms_answers_health_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("context");
    let bins_dir = ctx.join("target/debug");
    std::fs::create_dir_all(&bins_dir).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::copy(root.join("Containerfile"), ctx.join("Containerfile")).unwrap();
    // Stripped copies: the image needs no debug information.
    let mut bins = Vec::new();
    for name in ["sms", "spearlet", "spear"] {
        let to = bins_dir.join(name);
        run(Command::new("strip")
            .arg("-o")
            .arg(&to)
            .arg(debug_dir().join(name)));
        bins.push(to);
    }
    // The images go when the test ends, pass or fail (each run would leave hundreds of MB).
    let _images = Images;
    make_base(dir.path(), &bins);
    run(podman_command()
        .args([
            "build",
            "--layers=false",
            "--target",
            "prebuilt",
            "--build-arg",
        ])
        .arg(format!("BASE={BASE}"))
        .args(["--build-arg", "PROFILE=debug", "-t", IMAGE])
        .arg(&ctx));

    for bin in ["sms", "spearlet", "spear"] {
        let version = run(podman_command().args([
            "run",
            "--rm",
            "--network",
            "none",
            IMAGE,
            bin,
            "--version",
        ]));
        assert!(version.starts_with(bin), "{bin}: {version}");
    }

    // SMS as the image runs it (on every interface, tokens checked), on this machine's network.
    let (http, grpc) = (free_port(), free_port());
    let name = format!("spear-containerfile-{}", std::process::id());
    run(podman_command()
        .args(["run", "-d", "--rm", "--network", "host", "--name", &name])
        .arg("-e")
        .arg(format!("SMS_HTTP_ADDR=0.0.0.0:{http}"))
        .arg("-e")
        .arg(format!("SMS_GRPC_ADDR=0.0.0.0:{grpc}"))
        .arg("-e")
        .arg(format!("SMS_ADMIN_TOKEN={TOKEN}"))
        .arg(IMAGE));
    let stop = Stop(name.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        match get(http, "/health", Some(TOKEN)) {
            Ok(answer) => break answer,
            Err(e) => {
                let logs = podman_command().args(["logs", &name]).output().unwrap();
                assert!(
                    Instant::now() < deadline,
                    "no answer on port {http}: {e}\n{}",
                    String::from_utf8_lossy(&logs.stderr)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["service"], "sms", "{health}");
    // Without a token the image's SMS answers 401.
    assert_eq!(get(http, "/health", None).unwrap().0, 401);
    drop(stop);
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0): the status and the body.
fn get(port: u16, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// Removes the test's images when dropped (the build keeps no intermediate ones).
struct Images;

impl Drop for Images {
    fn drop(&mut self) {
        let _ = podman_command().args(["rmi", "-f", IMAGE, BASE]).output();
    }
}

/// Stops the named container when dropped.
struct Stop(String);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = podman_command().args(["rm", "-f", &self.0]).output();
    }
}
