//! What one component instance may reach, from its grant ([`crate::grants`]): the HTTP hosts
//! its `wasi:http` requests may go to, and whether its clocks run and its log is kept. Refreshed
//! from the config at every call.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi_http::p2::bindings::http::outgoing_handler;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::{HyperIncomingBody, HyperOutgoingBody};
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, HostOutgoingRequest, HostRequestOptions, OutgoingRequestConfig,
};
use wasmtime_wasi_http::p2::{
    HttpResult, WasiHttpHooks, WasiHttpView, default_send_request_handler,
};

use crate::grants::{InForce, WorldDefaults};
use crate::limits::Limits;
use crate::load::scratch::Quota;

/// Distinct denied hosts named at warn level per instance; later denials are logged at debug.
const DENIALS_WARNED: usize = 16;
/// The most one write to an outgoing HTTP body may carry (`check-write` grants no more); a body
/// stream buffers two such writes.
pub(crate) const BODY_WRITE: usize = 64 * 1024;
/// The most one set of HTTP header fields may hold, in bytes of its in-memory form.
pub(crate) const FIELDS_LIMIT: usize = 16 * 1024;
/// HTTP requests one instance may have open at once: sent and not answered, or answered and
/// their body not yet dropped. Each holds a connection and its buffers in the host, outside the
/// guest's memory limit; past this, a request is refused.
pub(crate) const MAX_OPEN_REQUESTS: usize = 128;

/// The grant of one instance, as in force for its current call.
pub(crate) struct Access {
    plugin: Arc<str>,
    defaults: WorldDefaults,
    in_force: InForce,
    /// Whether the clocks run, shared with the instance's WASI clocks.
    clock: Arc<AtomicBool>,
    /// Hosts a request was refused for, already logged at warn.
    warned: BTreeSet<String>,
    /// Told when an answer to one of its requests comes.
    activity: Arc<Activity>,
    /// Its requests open now.
    open: Arc<AtomicUsize>,
    /// Its scratch directory, if it was granted one when it was made.
    scratch: Option<Arc<Quota>>,
}

/// One open request, counted in its instance's `open` until dropped (with the request's task
/// before the answer, with the answer's body after).
struct OpenRequest(Arc<AtomicUsize>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's body that keeps its request counted as open until it is dropped.
struct Counted {
    inner: HyperIncomingBody,
    _open: OpenRequest,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A count of the answers that came to an instance's requests, to wait on: a host that asks a
/// guest where its work is can sleep until something may have changed instead of polling blind.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Activity {
    /// The count now.
    pub(crate) fn seen(&self) -> u64 {
        *self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    /// Wait until the count passes `seen`, or `timeout`.
    pub(crate) fn wait_past(&self, seen: u64, timeout: Duration) {
        let count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .changed
            .wait_timeout_while(count, timeout, |c| *c <= seen);
    }
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
            activity: Arc::default(),
            open: Arc::default(),
            scratch: None,
        };
        access.refresh(limits);
        access
    }

    /// Take the grant in force now.
    pub(crate) fn refresh(&mut self, limits: &Limits) {
        self.in_force = InForce::resolve(limits.grant(&self.plugin).as_ref(), self.defaults);
        self.clock.store(self.in_force.clock, Ordering::Relaxed);
        if let Some(quota) = &self.scratch {
            quota.set_limit(self.in_force.scratch_bytes);
        }
    }

    /// Bytes of scratch directory granted now (0: none).
    pub(crate) fn scratch_bytes(&self) -> u64 {
        self.in_force.scratch_bytes
    }

    /// Give the instance its scratch directory.
    pub(crate) fn set_scratch(&mut self, quota: Arc<Quota>) {
        self.scratch = Some(quota);
    }

    /// Its scratch directory, if it has one.
    pub(crate) fn scratch(&self) -> Option<Arc<Quota>> {
        self.scratch.clone()
    }

    /// The count of answers to this instance's requests.
    pub(crate) fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// Whether the host's log is granted.
    pub(crate) fn log(&self) -> bool {
        self.in_force.log
    }

    /// Whether the clocks are granted.
    pub(crate) fn clock(&self) -> bool {
        self.in_force.clock
    }

    /// The WASI wall and monotonic clocks of this instance: real while the clock is granted;
    /// otherwise the wall clock reads zero and the monotonic one stands still.
    pub(crate) fn clocks(&self) -> (GrantedWallClock, GrantedMonotonicClock) {
        (
            GrantedWallClock(self.clock.clone()),
            GrantedMonotonicClock {
                on: self.clock.clone(),
                started: Instant::now(),
                last: AtomicU64::new(0),
            },
        )
    }
}

impl WasiHttpHooks for Access {
    fn outgoing_body_chunk_size(&mut self) -> usize {
        BODY_WRITE
    }

    fn outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn send_request(
        &mut self,
        request: http::Request<HyperOutgoingBody>,
        config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16();
        // The connection goes to the authority as written: one with user info is refused, so
        // that what is checked is what is dialled.
        let plain = uri.authority().is_some_and(|a| !a.as_str().contains('@'));
        if plain && self.in_force.allows_http(host, port, config.use_tls) {
            if self.open.fetch_add(1, Ordering::Relaxed) >= MAX_OPEN_REQUESTS {
                self.open.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(
                    plugin = &*self.plugin,
                    "HTTP request refused: too many open"
                );
                return Err(ErrorCode::InternalError(Some(format!(
                    "{MAX_OPEN_REQUESTS} HTTP requests of this plugin instance are open (sent, or \
                     answered with a body not yet dropped); finish one first"
                )))
                .into());
            }
            let open = OpenRequest(self.open.clone());
            let activity = self.activity.clone();
            let handle = wasmtime_wasi::runtime::spawn(async move {
                let answer = default_send_request_handler(request, config)
                    .await
                    .map(|mut a| {
                        a.resp = a
                            .resp
                            .map(|inner| BodyExt::boxed_unsync(Counted { inner, _open: open }));
                        a
                    });
                activity.bump();
                Ok(answer)
            });
            return Ok(HostFutureIncomingResponse::pending(handle));
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

/// The monotonic clock a grant allows: nanoseconds since the instance started; without the
/// grant it stands still where it last was (zero if it never ran), so it never goes back.
pub(crate) struct GrantedMonotonicClock {
    on: Arc<AtomicBool>,
    started: Instant,
    last: AtomicU64,
}

impl HostMonotonicClock for GrantedMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        if !self.on.load(Ordering::Relaxed) {
            return self.last.load(Ordering::Relaxed);
        }
        let now = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(now, Ordering::Relaxed).max(now)
    }
}

/// Link `wasi:http/outgoing-handler.handle` as wasmtime-wasi-http implements it, except that the
/// request options the guest hands over are deleted from the instance's table after the call (the
/// implementation only reads them, so each request with options would hold a table slot for good
/// and an instance would run out of resources after about a thousand).
pub(crate) fn link_handle_freeing_options<T: WasiHttpView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = linker.instance(OUTGOING_HANDLER).and_then(|mut i| {
        i.func_wrap(
            "handle",
            |mut store: StoreContextMut<'_, T>,
             (request, options): (
                Resource<HostOutgoingRequest>,
                Option<Resource<HostRequestOptions>>,
            )| {
                let owned = options
                    .as_ref()
                    .map(|o| Resource::<HostRequestOptions>::new_own(o.rep()));
                let mut view = store.data_mut().http();
                let answer = outgoing_handler::Host::handle(&mut view, request, options);
                if let Some(o) = owned {
                    let _ = view.table.delete(o);
                }
                let answer = match answer {
                    Ok(future) => Ok(future),
                    Err(e) => Err(e.downcast()?),
                };
                Ok((answer,))
            },
        )
    });
    linker.allow_shadowing(false);
    linked
}

/// The interface [`link_handle_freeing_options`] replaces, at the version wasmtime-wasi-http
/// links (guests importing another 0.2 version are matched to it).
const OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler@0.2.6";
