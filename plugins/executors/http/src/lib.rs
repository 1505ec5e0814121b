//! The built-in `http` executor, a WASM component: it runs an execution by POSTing it to a
//! configured endpoint (a function-as-a-service gateway, a webhook) through `wasi:http`, and maps
//! the answer to the execution's result. The host must grant it the endpoint's host
//! (`[plugins.grants.http] http_hosts`); any other host is refused by the host.
//!
//! Configuration (`[executors.config.http]`, JSON to `configure`):
//!
//! - `endpoint` (required): `http://` or `https://` URL; `{entry}` in its path stands for the
//!   execution's entry (`/function/{entry}` for an OpenFaaS-style gateway);
//! - `format`: `json` (default: `execution_id`, `task`, `entry`, `args`, `env`, `stdin` in
//!   base64) or `raw` (the stdin as the body, the id and task in `x-spear-execution-id` and
//!   `x-spear-task`);
//! - `headers`: extra request headers (an `Authorization`, say);
//! - `connect_timeout_ms`: 1 to 600,000 (default 10,000).
//!
//! A 2xx answer exits 0 with its body as stdout; any other exits 1 with `HTTP <status>: <body>`
//! as stderr; an `x-spear-exit-code` header sets the exit code. A request that cannot be made
//! (refused, unreachable, a host not granted) fails the execution naming why.

pub mod config;
#[cfg(all(target_family = "wasm", target_os = "wasi"))]
mod executor;
#[cfg(all(target_family = "wasm", target_os = "wasi"))]
mod work;
