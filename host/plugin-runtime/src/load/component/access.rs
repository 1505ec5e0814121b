//! What one component instance may reach, from its grant ([`crate::grants`]): the HTTP hosts
//! its `wasi:http` requests may go to, and whether its clocks run and its log is kept. Refreshed
//! from the config at every call.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime_wasi::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, OutgoingRequestConfig};
use wasmtime_wasi_http::p2::{HttpResult, WasiHttpHooks, default_send_request};

use crate::grants::{InForce, WorldDefaults};
use crate::limits::Limits;

/// Denied hosts named at warn level per instance; later denials are logged at debug.
const DENIALS_WARNED: usize = 16;

/// The grant of one instance, as in force for its current call.
pub(crate) struct Access {
    plugin: Arc<str>,
    defaults: WorldDefaults,
    in_force: InForce,
    /// Whether the clocks run, shared with the instance's WASI clocks.
    clock: Arc<AtomicBool>,
    /// Hosts a request was refused for, already logged at warn.
    warned: BTreeSet<String>,
}

impl Access {
    /// The access of a new instance of `plugin`, whose world has `defaults`.
    pub(crate) fn new(plugin: Arc<str>, defaults: WorldDefaults, limits: &Limits) -> Self {
        let mut access = Self {
            plugin,
            defaults,
            in_force: InForce::default(),
            clock: Arc::new(AtomicBool::new(false)),
            warned: BTreeSet::new(),
        };
        access.refresh(limits);
        access
    }

    /// Take the grant in force now.
    pub(crate) fn refresh(&mut self, limits: &Limits) {
        self.in_force = InForce::resolve(limits.grant(&self.plugin).as_ref(), self.defaults);
        self.clock.store(self.in_force.clock, Ordering::Relaxed);
    }

    /// Whether the host's log is granted.
    pub(crate) fn log(&self) -> bool {
        self.in_force.log
    }

    /// Whether the clocks are granted.
    pub(crate) fn clock(&self) -> bool {
        self.in_force.clock
    }

    /// The WASI wall and monotonic clocks of this instance: real while the clock is granted,
    /// zero otherwise.
    pub(crate) fn clocks(&self) -> (GrantedWallClock, GrantedMonotonicClock) {
        (
            GrantedWallClock(self.clock.clone()),
            GrantedMonotonicClock {
                on: self.clock.clone(),
                started: Instant::now(),
            },
        )
    }
}

impl WasiHttpHooks for Access {
    fn send_request(
        &mut self,
        request: http::Request<HyperOutgoingBody>,
        config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16();
        if self.in_force.allows_http(host, port, config.use_tls) {
            return Ok(default_send_request(request, config));
        }
        let target = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let why = if self.in_force.http_hosts.is_empty() {
            "no HTTP host is granted to it".to_owned()
        } else {
            let hosts: Vec<String> = self
                .in_force
                .http_hosts
                .iter()
                .map(ToString::to_string)
                .collect();
            format!("it is granted only {}", hosts.join(", "))
        };
        if self.warned.len() < DENIALS_WARNED && self.warned.insert(target.to_owned()) {
            tracing::warn!(
                plugin = &*self.plugin,
                host = target,
                "plugin's HTTP request refused: {why} ([plugins.grants.{}] http_hosts)",
                self.plugin
            );
        } else {
            tracing::debug!(
                plugin = &*self.plugin,
                host = target,
                "HTTP request refused"
            );
        }
        Err(ErrorCode::HttpRequestDenied.into())
    }
}

/// The wall clock a grant allows: the system's, or the Unix epoch.
pub(crate) struct GrantedWallClock(Arc<AtomicBool>);

impl HostWallClock for GrantedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        if !self.0.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// The monotonic clock a grant allows: nanoseconds since the instance started, or zero.
pub(crate) struct GrantedMonotonicClock {
    on: Arc<AtomicBool>,
    started: Instant,
}

impl HostMonotonicClock for GrantedMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        if !self.on.load(Ordering::Relaxed) {
            return 0;
        }
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
