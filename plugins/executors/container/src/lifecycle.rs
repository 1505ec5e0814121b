//! The engine side of the life cycle: launching a container for a spec (image, create, attach,
//! start), finding one again after a restart, removing one.

use std::collections::HashMap;
use std::time::Instant;

use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, LogsOptionsBuilder,
};
use futures_util::StreamExt;
use spear_plugin_api::PluginError;
use spear_plugin_api::executor::ExecSpec;

use crate::ContainerExecutor;
use crate::engine::{is_not_found, running};
use crate::spec::{self, create_body, now_unix_ms, output_cap};
use crate::supervise::Watch;

impl ContainerExecutor {
    /// Create, attach to and start the container of `spec`; returns what to watch it with.
    pub(crate) async fn launch(&self, spec: &ExecSpec, name: &str) -> Result<Watch, PluginError> {
        let engine = &self.engine;
        let docker = engine.client()?;
        let mut image = spec.entry.clone();
        if let Some(tarball) = &spec.artifact {
            image = self
                .images
                .ensure(engine, &docker, tarball, &spec.entry, false)
                .await?;
        }
        let cap = output_cap(spec);
        let deadline = if spec.timeout_ms > 0 {
            now_unix_ms().saturating_add(spec.timeout_ms)
        } else {
            0
        };
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let body = |image: &str| {
            create_body(
                spec,
                image,
                self.labels.of(spec, deadline, cap),
                &self.hardening,
            )
        };
        let mut created = docker
            .create_container(Some(options.clone()), body(&image))
            .await;
        if let (Err(e), Some(tarball)) = (&created, &spec.artifact)
            && is_not_found(e)
        {
            // The image was removed since the tarball was loaded: load it again.
            image = self
                .images
                .ensure(engine, &docker, tarball, &spec.entry, true)
                .await?;
            created = docker.create_container(Some(options), body(&image)).await;
        }
        created.map_err(|e| match e {
            e if is_not_found(&e) => PluginError::new(format!(
                "image `{image}` is not in the container engine at {}: load it first \
                 (`podman load -i FILE` or `docker load -i FILE`) or give the image tarball as \
                 the execution's artifact; images are never pulled from a registry",
                engine.socket
            )),
            bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            } => PluginError::new(format!(
                "a container named {name} already exists (left over from an earlier run of \
                 execution {}?): recover or destroy it first",
                spec.execution_id
            )),
            e => engine.error("create container", e),
        })?;
        let started = async {
            let stdin = !spec.stdin.is_empty();
            let options = AttachContainerOptionsBuilder::new()
                .stream(true)
                .stdin(stdin)
                .stdout(true)
                .stderr(true)
                .build();
            let attached = docker
                .attach_container(name, Some(options))
                .await
                .map_err(|e| engine.error("attach", e))?;
            docker
                .start_container(name, None)
                .await
                .map_err(|e| engine.error("start container", e))?;
            Ok::<_, PluginError>(attached)
        }
        .await;
        let attached = match started {
            Ok(a) => a,
            Err(e) => {
                let _ = self.remove(name).await;
                return Err(e);
            }
        };
        Ok(Watch {
            engine: engine.clone(),
            name: name.to_string(),
            output: attached.output,
            stdin: (!spec.stdin.is_empty()).then(|| (attached.input, spec.stdin.clone())),
            deadline_unix_ms: deadline,
            grace: self.grace,
            cap,
            started: Instant::now(),
        })
    }

    /// Remove a container and its anonymous volumes, killing it first if need be.
    pub(crate) async fn remove(&self, name: &str) -> Result<(), PluginError> {
        self.engine.remove(name).await
    }

    /// The labels of a container this executor manages; `None` if the engine knows no such
    /// container, an error if it is not one of ours.
    pub(crate) async fn managed(
        &self,
        docker: &bollard::Docker,
        handle: &str,
    ) -> Result<Option<(bool, HashMap<String, String>)>, PluginError> {
        let Some(c) = self.engine.inspect(docker, handle).await? else {
            return Ok(None);
        };
        let labels = c
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        if labels.get(&self.labels.key("managed")).map(String::as_str) != Some("true") {
            return Err(PluginError::new(format!(
                "container {handle} is not managed by this executor (it has no label {}=true)",
                self.labels.key("managed")
            )));
        }
        Ok(Some((running(&c), labels)))
    }

    /// The watch of a container found in the engine after a restart; `None` if it is gone.
    pub(crate) async fn rediscover(
        &self,
        handle: &str,
    ) -> Result<Option<(bool, Watch)>, PluginError> {
        let docker = self.engine.client()?;
        let Some((is_running, labels)) = self.managed(&docker, handle).await? else {
            return Ok(None);
        };
        let number = |key: &str| {
            labels
                .get(&self.labels.key(key))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let options = LogsOptionsBuilder::new()
            .follow(is_running)
            .stdout(true)
            .stderr(true)
            .build();
        let watch = Watch {
            engine: self.engine.clone(),
            name: handle.to_string(),
            output: docker.logs(handle, Some(options)).boxed(),
            stdin: None,
            deadline_unix_ms: number("deadline_unix_ms").unwrap_or(0),
            grace: self.grace,
            cap: number("output_cap").unwrap_or(spec::DEFAULT_CAP),
            started: Instant::now(),
        };
        Ok(Some((is_running, watch)))
    }
}
