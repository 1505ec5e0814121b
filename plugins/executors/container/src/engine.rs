//! The connection to the container engine and the few Engine API calls the executor repeats:
//! errors that name what is wrong and the fix, signals, waiting for an exit, inspection.

use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use spear_plugin_api::PluginError;

/// Seconds an Engine API request may take until its response headers arrive (streams, such as
/// attach, wait and logs, then run for as long as they need).
const REQUEST_TIMEOUT_S: u64 = 120;

/// Where the engine listens and how to talk to it.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    /// The socket as configured (`unix:///…`), for messages.
    pub socket: String,
}

impl Engine {
    /// An engine at `socket` (`unix:///path` or `/path`). No connection is made yet.
    pub fn new(socket: &str) -> Result<Self, PluginError> {
        let socket = if socket.starts_with('/') {
            format!("unix://{socket}")
        } else {
            socket.to_string()
        };
        if !socket.starts_with("unix://") {
            return Err(PluginError::new(format!(
                "invalid configuration: socket `{socket}`: only unix sockets are supported \
                 (`unix:///run/…/podman.sock` or `unix:///var/run/docker.sock`)"
            )));
        }
        Ok(Self { socket })
    }

    /// A client for one or more requests. Made anew each time, so an engine that starts (or
    /// restarts) after the executor was configured is found.
    pub fn client(&self) -> Result<Docker, PluginError> {
        Docker::connect_with_unix(
            &self.socket,
            REQUEST_TIMEOUT_S,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| self.error("connect", e))
    }

    /// An error of the engine, described for operators: `what` is the operation that failed.
    pub fn error(&self, what: &str, e: EngineError) -> PluginError {
        let unreachable = |detail: String| {
            PluginError::new(format!(
                "cannot reach the container engine at {}: {detail}: is `podman system service` \
                 (or dockerd) running? (the tests start one with tests/podman/setup.sh; another \
                 socket is chosen with the `socket` setting or DOCKER_HOST)",
                self.socket
            ))
        };
        match e {
            EngineError::SocketNotFoundError(path) => {
                unreachable(format!("the socket {path} does not exist"))
            }
            EngineError::HyperLegacyError { err } => unreachable(source_chain(&err)),
            EngineError::IOError { err } => unreachable(err.to_string()),
            EngineError::RequestTimeoutError => PluginError::new(format!(
                "the container engine at {} did not answer `{what}` within {REQUEST_TIMEOUT_S} s",
                self.socket
            )),
            EngineError::DockerResponseServerError {
                status_code,
                message,
            } => PluginError::new(format!(
                "the container engine refused `{what}`: {} (HTTP {status_code})",
                message.trim()
            )),
            other => PluginError::new(format!("container engine, `{what}`: {other}")),
        }
    }

    /// Send `signal` (a number) to the container's main process. A container that is no
    /// longer running is not an error.
    pub async fn kill(&self, docker: &Docker, name: &str, signal: i32) -> Result<(), PluginError> {
        let options = KillContainerOptionsBuilder::new()
            .signal(&signal.to_string())
            .build();
        match docker.kill_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(EngineError::DockerResponseServerError {
                status_code: 404 | 409 | 500,
                ..
            }) if !self.is_running(docker, name).await => Ok(()),
            Err(e) => Err(self.error("kill", e)),
        }
    }

    /// Remove a container and its anonymous volumes, killing it first if need be. One that is
    /// already gone is not an error.
    pub async fn remove(&self, name: &str) -> Result<(), PluginError> {
        let docker = self.client()?;
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.error("remove container", e)),
        }
    }

    /// Whether the container exists and runs (false when it cannot be told).
    async fn is_running(&self, docker: &Docker, name: &str) -> bool {
        matches!(self.inspect(docker, name).await, Ok(Some(c)) if running(&c))
    }

    /// Inspect a container; `None` if the engine knows no such container.
    pub async fn inspect(
        &self,
        docker: &Docker,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, PluginError> {
        match docker.inspect_container(name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(EngineError::JsonDataError {
                contents, message, ..
            }) => repair_inspection(&contents).map(Some).ok_or_else(|| {
                PluginError::new(format!(
                    "container engine, `inspect`: cannot read its answer: {message}"
                ))
            }),
            Err(e) => Err(self.error("inspect", e)),
        }
    }

    /// Wait until the container has stopped and return its inspection. Survives a broken wait
    /// stream (the engine restarting, say) by looking at the container itself.
    pub async fn wait_exit(
        &self,
        docker: &Docker,
        name: &str,
    ) -> Result<ContainerInspectResponse, PluginError> {
        let mut failures = 0u32;
        loop {
            let options = WaitContainerOptionsBuilder::new()
                .condition("not-running")
                .build();
            // The answer (or a "wait error" carrying a non-zero code) means it stopped.
            let _ = docker.wait_container(name, Some(options)).next().await;
            match self.inspect(docker, name).await {
                Ok(Some(c)) if !running(&c) => return Ok(c),
                Ok(Some(_)) => failures = 0,
                Ok(None) => {
                    return Err(PluginError::new(format!(
                        "container {name} was removed behind the executor's back"
                    )));
                }
                Err(e) => {
                    failures += 1;
                    if failures > 60 {
                        return Err(e);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Parse an inspection that bollard refused because Podman reported one of its own container
/// states (`stopped`, `configured`, `initialized`, …) where the Docker API has a fixed set: map it
/// to the Docker state it corresponds to.
fn repair_inspection(contents: &str) -> Option<ContainerInspectResponse> {
    let mut v: serde_json::Value = serde_json::from_str(contents).ok()?;
    let status = v.pointer_mut("/State/Status")?;
    let docker = match status.as_str()? {
        "stopped" | "exited" => "exited",
        "configured" | "created" | "initialized" => "created",
        s @ ("running" | "paused" | "restarting" | "removing" | "dead" | "stopping") => s,
        _ => "",
    };
    *status = serde_json::Value::from(docker);
    serde_json::from_value(v).ok()
}

/// Whether an engine error is "no such container/image".
pub(crate) fn is_not_found(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Whether an inspected container is still running (or about to: created, paused, restarting
/// containers are not finished either).
pub(crate) fn running(c: &ContainerInspectResponse) -> bool {
    use bollard::models::ContainerStateStatusEnum as S;
    let Some(state) = &c.state else { return false };
    if state.running == Some(true) {
        return true;
    }
    matches!(
        state.status,
        Some(S::RUNNING | S::PAUSED | S::RESTARTING | S::STOPPING)
    )
}

/// The messages of an error and of its sources, joined.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Milliseconds since the Unix epoch of an RFC 3339 time as engines write them
/// (`2024-05-01T12:34:56.123456789Z`, `…+02:00`); `None` for the zero time or garbage.
pub(crate) fn rfc3339_ms(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if y <= 1 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let first3 = format!("{:0<3}", &frac[..digits.min(3)]);
        millis = first3.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest.as_bytes().first() {
        Some(b'Z' | b'z') | None => 0,
        Some(sign @ (b'+' | b'-')) => {
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let m = oh * 60 + om;
            if *sign == b'-' { -m } else { m }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + h) * 60 + mi - offset_min) * 60 + sec) * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2024-05-01T12:34:56.123456789Z"),
            Some(1_714_566_896_123)
        );
        assert_eq!(
            rfc3339_ms("2024-05-01T14:34:56.5+02:00"),
            Some(1_714_566_896_500)
        );
        assert_eq!(rfc3339_ms("0001-01-01T00:00:00Z"), None);
        assert_eq!(rfc3339_ms("garbage"), None);
    }

    #[test]
    fn podman_states_are_mapped_to_docker_ones() {
        let c = repair_inspection(r#"{"State":{"Status":"stopped","Running":false,"ExitCode":3}}"#)
            .unwrap();
        let state = c.state.unwrap();
        assert_eq!(
            state.status,
            Some(bollard::models::ContainerStateStatusEnum::EXITED)
        );
        assert_eq!(state.exit_code, Some(3));
    }

    #[test]
    fn only_unix_sockets() {
        assert_eq!(Engine::new("/a.sock").unwrap().socket, "unix:///a.sock");
        let e = Engine::new("tcp://h:2375").unwrap_err().to_string();
        assert!(e.contains("only unix sockets"), "{e}");
    }
}
