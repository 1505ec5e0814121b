//! A component instance a host keeps and shares between threads: a storage backend's (its store
//! lives in the guest) or an executor's (its running work does). Calls take turns on the instance,
//! each holding its lock for one guest call within the set-up budget (`plugins.setup_timeout_ms`
//! of CPU and its wall-clock ceiling), and an answer that comes back late is taken: what it
//! reports has happened. An instance lost to an earlier failure is not entered again.

use std::sync::{Mutex, OnceLock};

use spear_plugin_api as api;

use super::{Guest, GuestState, info_from_wit, wit};
use crate::error::CallFailure;
use crate::instance::CallResult;
use crate::limits::Budget;

/// One instance and its bindings, behind a lock.
pub(super) struct Held<B> {
    /// The plugin's name, for messages.
    pub(super) plugin: String,
    /// What the plugin is, for messages (`storage`, `executor`).
    what: &'static str,
    inner: Mutex<(Guest, B)>,
    /// `info`, asked once.
    info: OnceLock<api::PluginInfo>,
}

impl<B> Held<B> {
    pub(super) fn new(plugin: &str, what: &'static str, mut guest: Guest, bindings: B) -> Self {
        guest.accept_late = true;
        Self {
            plugin: plugin.to_owned(),
            what,
            inner: Mutex::new((guest, bindings)),
            info: OnceLock::new(),
        }
    }

    /// One guest call. An instance lost to an earlier failure is not entered: the call fails at
    /// once, having done nothing (so a write's failure is not of unknown outcome).
    pub(super) fn call<R>(
        &self,
        f: impl FnOnce(&B, &mut wasmtime::Store<GuestState>) -> wasmtime::Result<R>,
    ) -> CallResult<R> {
        // A panic while the lock was held happened in the host's own conversion code, before or
        // after the guest call; the instance stays as consistent as the guest left it.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (guest, bindings) = &mut *inner;
        if guest.poisoned {
            return Err(CallFailure::Plugin(format!(
                "{} plugin `{}`: the instance is unusable after an earlier failure, and what it \
                 held is lost; restart the host",
                self.what, self.plugin
            )));
        }
        guest.call(Budget::Setup, |s| f(bindings, s))
    }

    /// The plugin's `info` (asked once), as `kind`.
    pub(super) fn describe(
        &self,
        kind: api::PluginKind,
        ask: impl FnOnce(&B, &mut wasmtime::Store<GuestState>) -> wasmtime::Result<wit::PluginInfo>,
    ) -> CallResult<api::PluginInfo> {
        if let Some(info) = self.info.get() {
            return Ok(info.clone());
        }
        let info = self.call(ask).map(|info| api::PluginInfo {
            kind,
            ..info_from_wit(info)
        })?;
        Ok(self.info.get_or_init(|| info).clone())
    }

    /// `describe`, or a stand-in naming why it failed (for the traits' infallible `info`).
    pub(super) fn info_or_why(
        &self,
        described: CallResult<api::PluginInfo>,
        kind: api::PluginKind,
    ) -> api::PluginInfo {
        described.unwrap_or_else(|e| api::PluginInfo {
            name: self.plugin.clone(),
            version: "0.0.0".into(),
            kind,
            description: e.to_string(),
            config_schema: "{}".into(),
        })
    }

    /// An answer that broke the contract, as the plugin's error.
    pub(super) fn invalid(&self, what: &str, why: impl std::fmt::Display) -> api::PluginError {
        api::PluginError(format!(
            "{} plugin `{}` answered {what} wrongly: {why}",
            self.what, self.plugin
        ))
    }
}
