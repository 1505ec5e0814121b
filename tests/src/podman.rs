//! The private Podman the `container` executor's tests run against: set up once per test process
//! by `tests/podman/setup.sh` (installs Podman if needed, starts `podman system service`, builds the
//! busybox images), and a tiny Engine API client for looking at containers from the outside.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// What the setup script made.
#[derive(Debug, Clone)]
pub struct Podman {
    /// The API socket, `unix:///run/spear-podman/podman.sock`.
    pub socket: String,
    /// A docker-archive tarball of the image `spear-busybox-tar:latest`.
    pub tarball: PathBuf,
}

/// The busybox image the setup imports.
pub const BUSYBOX: &str = "spear-busybox:latest";

/// Run the setup script (once per process) and say where the engine is. Panics with the script's
/// output when the setup fails: the tests never skip silently.
pub fn podman() -> &'static Podman {
    static SETUP: OnceLock<Result<Podman, String>> = OnceLock::new();
    match SETUP.get_or_init(|| {
        let p = setup()?;
        remove_leftovers(&p.socket);
        Ok(p)
    }) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn setup() -> Result<Podman, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("podman/setup.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "the Podman setup ({}) failed with {}:\n{stdout}\n{stderr}",
            script.display(),
            out.status
        ));
    }
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
            .ok_or_else(|| format!("the Podman setup printed no `{key}`:\n{stdout}\n{stderr}"))
    };
    Ok(Podman {
        socket: value("socket=")?,
        tarball: PathBuf::from(value("tarball=")?),
    })
}

/// A request to the engine's API (HTTP/1.0 over its unix socket): the status code and the body
/// parsed as JSON (`Null` when it is empty or not JSON).
pub fn engine(method: &str, path: &str) -> (u16, serde_json::Value) {
    engine_at(&podman().socket, method, path, "")
}

/// [`engine`] with a JSON request body.
pub fn engine_json(method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    engine_at(&podman().socket, method, path, body)
}

fn engine_at(socket: &str, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let socket = socket.trim_start_matches("unix://");
    let mut s = UnixStream::connect(socket).expect("connect to the engine");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: d\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// The engine's inspection of a container, `None` if it has no such container.
pub fn inspect_container(name: &str) -> Option<serde_json::Value> {
    match engine("GET", &format!("/containers/{name}/json")) {
        (200, v) => Some(v),
        (404, _) => None,
        (status, v) => panic!("inspecting {name}: HTTP {status}: {v}"),
    }
}

/// The task name the tests give their executions (a label of their containers).
pub const TEST_TASK: &str = "container-tests";

/// Remove the stopped containers earlier, failed runs of the tests left behind.
fn remove_leftovers(socket: &str) {
    // filters={"label":["spear.task=container-tests"],"status":["exited","created"]}
    let filters = format!(
        "%7B%22label%22%3A%5B%22spear.task%3D{TEST_TASK}%22%5D%2C%22status%22%3A%5B%22exited%22%2C%22created%22%5D%7D"
    );
    let path = format!("/containers/json?all=true&filters={filters}");
    let (_, list) = engine_at(socket, "GET", &path, "");
    for c in list.as_array().into_iter().flatten() {
        if let Some(id) = c["Id"].as_str() {
            engine_at(
                socket,
                "DELETE",
                &format!("/containers/{id}?force=true&v=true"),
                "",
            );
        }
    }
}

/// Remove a container (forced) if it exists.
pub fn remove_container(name: &str) {
    engine("DELETE", &format!("/containers/{name}?force=true&v=true"));
}

/// Remove an image (forced) if it exists.
pub fn remove_image(name: &str) {
    engine("DELETE", &format!("/images/{name}?force=true"));
}

/// The `podman` command on the private Podman's configuration and storage (the setup's
/// `CONTAINERS_CONF` and `CONTAINERS_STORAGE_CONF`), after the setup has run.
pub fn podman_command() -> Command {
    podman();
    let state =
        std::env::var("SPEAR_PODMAN_STATE").unwrap_or_else(|_| "/var/lib/spear-podman".into());
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", format!("{state}/containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", format!("{state}/storage.conf"));
    cmd
}

/// An image `localhost/<name>:test` holding `program` (a binary of this machine) as `/worker`,
/// with the shared libraries it loads (as `ldd` resolves them here): a worker the container
/// executor can run with no registry. Imported anew by each test process (the binary may have
/// been rebuilt); concurrent callers in one process share one import.
pub fn program_image(program: &Path, name: &str) -> String {
    static IMPORTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let image = format!("localhost/{name}:test");
    let mut imported = IMPORTED.lock().unwrap_or_else(|p| p.into_inner());
    if imported.contains(&image) {
        return image;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path().join("rootfs");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    let ldd = Command::new("ldd").arg(program).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(lib) = lib {
            copy(Path::new(lib), &root.join(lib.trim_start_matches('/')));
        }
    }
    copy(program, &root.join("worker"));
    let tar = dir.path().join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success(), "tar of {}", root.display());
    let out = podman_command()
        .arg("import")
        .arg(&tar)
        .arg(&image)
        .output()
        .expect("podman import");
    assert!(
        out.status.success(),
        "podman import {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    imported.push(image.clone());
    image
}
