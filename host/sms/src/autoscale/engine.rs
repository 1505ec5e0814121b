//! The `podman` and `docker` providers: Spearlet containers from an image, through the engine's
//! Docker-compatible API on a unix socket. Each node is a container named `<name_prefix><uuid>`,
//! labelled `spear.autoscaler.node=<uuid>`, running `entrypoint` with `--sms-addr`,
//! `--auto-register` and `args`, and `SPEARLET_NODE_UUID` in its environment. Stopping one is
//! the engine's stop (SIGTERM, `stop_timeout_secs`, then SIGKILL: the Spearlet, already drained,
//! exits on SIGTERM), then its removal.

use std::collections::HashMap;

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};

use super::ProviderConfig;

/// The label every container the provider starts carries (its value: the node UUID).
pub const NODE_LABEL: &str = "spear.autoscaler.node";

/// Seconds an Engine API request may take.
const REQUEST_TIMEOUT_S: u64 = 120;

/// The socket of `kind` when none is configured.
pub fn default_socket(kind: &str) -> &'static str {
    match kind {
        "docker" => "unix:///var/run/docker.sock",
        _ => "unix:///run/podman/podman.sock",
    }
}

fn client(p: &ProviderConfig) -> Result<(Docker, String), String> {
    let socket = p
        .socket
        .clone()
        .unwrap_or_else(|| default_socket(&p.kind).to_owned());
    let socket = match socket.strip_prefix('/') {
        Some(_) => format!("unix://{socket}"),
        None => socket,
    };
    let docker =
        Docker::connect_with_unix(&socket, REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
            .map_err(|e| format!("cannot reach the container engine at {socket}: {e}"))?;
    Ok((docker, socket))
}

fn name(p: &ProviderConfig, uuid: &str) -> String {
    format!(
        "{}{uuid}",
        p.name_prefix.as_deref().unwrap_or("spear-node-")
    )
}

fn not_found(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn refused(socket: &str, what: &str, e: EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } => format!(
            "the container engine at {socket} refused `{what}`: {} (HTTP {status_code})",
            message.trim()
        ),
        other => format!("the container engine at {socket}, `{what}`: {other}"),
    }
}

/// Create and start a Spearlet container for each of `uuids`, which dial `sms_addr`.
pub async fn start(p: &ProviderConfig, uuids: &[String], sms_addr: &str) -> Result<(), String> {
    let (docker, socket) = client(p)?;
    let image = p.image.clone().unwrap_or_default();
    let addr = p.sms_addr.clone().unwrap_or_else(|| sms_addr.to_owned());
    let mut failures = Vec::new();
    for uuid in uuids {
        let container = name(p, uuid);
        let entrypoint = p
            .entrypoint
            .clone()
            .unwrap_or_else(|| vec!["spearlet".into()]);
        let mut cmd: Vec<String> =
            vec!["--sms-addr".into(), addr.clone(), "--auto-register".into()];
        cmd.extend(p.args.iter().flatten().cloned());
        let mut env: Vec<String> = vec![format!("SPEARLET_NODE_UUID={uuid}")];
        env.extend(p.env.iter().flatten().map(|(k, v)| format!("{k}={v}")));
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            // The image's own ENTRYPOINT is replaced, so the Spearlet runs whatever the image.
            entrypoint: Some(entrypoint),
            cmd: Some(cmd),
            env: Some(env),
            labels: Some(HashMap::from([(NODE_LABEL.to_owned(), uuid.clone())])),
            host_config: Some(HostConfig {
                network_mode: Some(p.network.clone().unwrap_or_else(|| "host".into())),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let options = CreateContainerOptionsBuilder::new()
            .name(&container)
            .build();
        let started = match docker.create_container(Some(options), body).await {
            Ok(_) => docker
                .start_container(&container, None)
                .await
                .map_err(|e| refused(&socket, "start", e)),
            Err(e) if not_found(&e) => Err(format!(
                "image `{image}` is not in the container engine at {socket} \
                 (autoscaler.provider.image): load or pull it first"
            )),
            Err(e) => Err(refused(&socket, "create", e)),
        };
        if let Err(e) = started {
            failures.push(format!("{container}: {e}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Stop and remove the containers of `uuids` (one already gone is not an error).
pub async fn stop(p: &ProviderConfig, uuids: &[String]) -> Result<(), String> {
    let (docker, socket) = client(p)?;
    let mut failures = Vec::new();
    for uuid in uuids {
        let container = name(p, uuid);
        let grace = i32::try_from(p.stop_timeout_secs.unwrap_or(30)).unwrap_or(i32::MAX);
        let stopped = match docker
            .stop_container(
                &container,
                Some(StopContainerOptionsBuilder::new().t(grace).build()),
            )
            .await
        {
            Ok(()) => Ok(()),
            // 304: not running.
            Err(EngineError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(refused(&socket, "stop", e)),
        };
        let removed = match docker
            .remove_container(
                &container,
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(refused(&socket, "remove", e)),
        };
        if let Err(e) = stopped.and(removed) {
            failures.push(format!("{container}: {e}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
