//! The executor: executions by handle (their id), each a [`Work`].

use std::collections::HashMap;
use std::sync::Mutex;

use spear_plugin_api::executor::{Capabilities, ExecResult, ExecSpec, ExecState, ExecStats};
use spear_plugin_api::{Executor, PluginError, PluginInfo, PluginKind};

use crate::config::{self, Config};
use crate::work::{Held, Work};

/// Executions started and not destroyed, at most.
const MAX_WORK: usize = 4096;

/// The `http` executor.
#[derive(Default)]
pub struct HttpExecutor {
    config: Option<Config>,
    work: Mutex<HashMap<String, Work>>,
    /// Answer bytes held by all executions.
    held: Held,
}

impl HttpExecutor {
    fn work(&self) -> std::sync::MutexGuard<'_, HashMap<String, Work>> {
        self.work.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Executor for HttpExecutor {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "http".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::Executor,
            description: "runs an execution by POSTing it to a configured HTTP endpoint".into(),
            config_schema: r#"{"type":"object","required":["endpoint"],"properties":{"endpoint":{"type":"string"},"format":{"enum":["json","raw"]},"headers":{"type":"object"},"connect_timeout_ms":{"type":"integer"}}}"#.into(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            executable_type: "http".into(),
            network_isolation: false,
            ..Capabilities::default()
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.config = Some(Config::parse(config)?);
        Ok(())
    }

    fn start(&self, spec: &ExecSpec) -> Result<String, PluginError> {
        let config = self.config.as_ref().ok_or_else(|| {
            PluginError("not configured: give [executors.config.http] endpoint".into())
        })?;
        if self.work().len() >= MAX_WORK {
            return Err(PluginError(format!(
                "{MAX_WORK} executions not yet destroyed"
            )));
        }
        let request = config.request(spec)?;
        let work = Work::send(config, request, config::output_cap(spec))?;
        self.work().insert(spec.execution_id.clone(), work);
        Ok(spec.execution_id.clone())
    }

    fn wait(&self, handle: &str, _timeout_ms: u64) -> Result<Option<ExecResult>, PluginError> {
        match self.inspect(handle)? {
            ExecState::Finished(r) => Ok(Some(r)),
            _ => Ok(None),
        }
    }

    fn signal(&self, _handle: &str, _signal: i32) -> Result<(), PluginError> {
        Err(PluginError("an HTTP request takes no signals".into()))
    }

    fn stop(&self, handle: &str, _grace_ms: u64) -> Result<(), PluginError> {
        if let Some(w) = self.work().get_mut(handle) {
            w.stop();
        }
        Ok(())
    }

    fn inspect(&self, handle: &str) -> Result<ExecState, PluginError> {
        let mut work = self.work();
        let Some(w) = work.get_mut(handle) else {
            return Ok(ExecState::Unknown);
        };
        Ok(match w.advance(&self.held) {
            Some(result) => ExecState::Finished(result),
            None => ExecState::Running,
        })
    }

    fn stats(&self, _handle: &str) -> Result<ExecStats, PluginError> {
        Ok(ExecStats::default())
    }

    fn recover(&self, _handle: &str) -> Result<bool, PluginError> {
        // A request does not outlive the instance that made it.
        Ok(false)
    }

    fn destroy(&self, handle: &str) -> Result<(), PluginError> {
        if let Some(mut w) = self.work().remove(handle) {
            w.release(&self.held);
        }
        Ok(())
    }
}

spear_pdk::export_executor!(HttpExecutor);
