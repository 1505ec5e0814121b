//! `etcd`: state on an etcd cluster (the v3 API), so that several SMS replicas share one state
//! and losing a machine loses nothing acknowledged.
//!
//! Every key is stored under a namespace `prefix` (default `spear/`), so that several clusters
//! may share one etcd. A batch is one etcd transaction: its [`BatchOp::Check`]s are the
//! transaction's comparisons (a value compared, or an absent key's version compared with 0), its
//! writes the operations applied when they all hold. etcd refuses a transaction of more than
//! `--max-txn-ops` operations (128 by default) or `--max-request-bytes` (1.5 MiB): the backend
//! reports those as its [`BatchLimits`] (set `max_txn_ops` and `max_request_bytes` to what the
//! cluster runs with) and refuses a larger batch itself, naming the setting.
//!
//! The plugin runs its own small tokio runtime: the storage contract is blocking, and a native
//! library does not share the host's runtime. Every request has a deadline (`timeout_ms`) and
//! requires the member it reaches to have a leader, so that a member cut off from its cluster
//! fails the request rather than answering from a stale copy.
//!
//! The plugin keeps a connection to each endpoint and sends to one member at a time. A request
//! that fails (the member is down, has no leader, or does not answer within `timeout_ms`) goes to
//! the next member, in turn, for up to twice `timeout_ms`; an error etcd would give on any member
//! (a request too large, say) is not sent again. Every write applies exactly once, however often
//! it is sent, and never after a later write: see [`sequence`]. A write that no member answered
//! may have applied; its error begins with
//! [`OUTCOME_UNKNOWN`](spear_plugin_api::storage::OUTCOME_UNKNOWN) (it is settled before the next
//! write). Keys that begin with a NUL byte are the backend's own.
//!
//! Configuration:
//! `{"endpoints": ["http://127.0.0.1:2379"], "prefix": "spear/", "timeout_ms": 5000,
//!   "max_txn_ops": 128, "max_request_bytes": 1572864, "user": "…", "password": "…"}`.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, ConnectOptions, GetOptions, TxnOp, TxnOpResponse};
use serde::Deserialize;
use spear_plugin_api::storage::{BatchLimits, BatchOp, KeyValue};
use spear_plugin_api::{PluginError, PluginInfo, PluginKind, StorageBackend, parse_config};

mod requests;
pub mod sequence;
mod writes;

use writes::Outcome;

use requests::{last_writes, not_taken, permanent, prefix_end, too_large};
use sequence::{State, holds};

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: u32 = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1536 * 1024;
/// The largest answer decoded (tonic's default is 4 MiB; a scan page may be larger, and is
/// fetched in smaller pieces when it is over this).
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// The deadline of a request when the configuration does not say.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
/// The namespace when the configuration does not say.
pub const DEFAULT_PREFIX: &str = "spear/";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    timeout_ms: Option<u64>,
    max_txn_ops: Option<u32>,
    max_request_bytes: Option<u64>,
    user: Option<String>,
    password: Option<String>,
}

/// The etcd backend.
#[derive(Default)]
pub struct Etcd {
    inner: Option<Inner>,
}

struct Inner {
    runtime: Option<tokio::runtime::Runtime>,
    /// One client per endpoint, in the configuration's order.
    clients: Vec<(String, Client)>,
    /// The member requests go to first (the last one that answered).
    current: AtomicUsize,
    prefix: Vec<u8>,
    timeout: Duration,
    max_txn_ops: u32,
    max_request_bytes: u64,
    /// This writer's key ([`sequence`]), with the namespace.
    writer_key: Vec<u8>,
    /// What it holds; held while a write is under way (writes go one at a time).
    writer: Mutex<State>,
}

/// A request that got no answer.
struct Failure {
    error: PluginError,
    /// Whether a member may have taken it (it got no answer, or an error that does not say it
    /// was refused): a write may then have applied.
    maybe_taken: bool,
}

impl From<Failure> for PluginError {
    fn from(f: Failure) -> Self {
        f.error
    }
}

/// Refuse a key of the backend's own.
fn ours(key: &[u8]) -> Result<(), PluginError> {
    if key.first() == Some(&0) {
        return Err(PluginError::new(
            "etcd: keys that begin with a NUL byte are the backend's own",
        ));
    }
    Ok(())
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Etcd")
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Without waiting for its tasks: a drop may happen on any thread, async ones included.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A KV client on `c` that decodes answers up to [`MAX_ANSWER`].
fn kv(c: &Client) -> etcd_client::KvClient {
    c.kv_client().max_decoding_message_size(MAX_ANSWER)
}

impl Inner {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    /// Run one request, built by `request` for a member's client, to its answer: on the member
    /// that answered last, then on the next ones in turn, until `2 × timeout` has passed.
    fn call<T, F, R>(&self, what: &str, request: F) -> Result<T, Failure>
    where
        F: Fn(Client) -> R,
        R: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_taken(what, request).map(|(v, _)| v)
    }

    /// [`call`](Self::call), also saying whether a try before the one answered may have been
    /// taken (it got no answer, or an error that does not say it was refused): a copy of a
    /// write may then still be on its way.
    fn call_taken<T, F, R>(&self, what: &str, request: F) -> Result<(T, bool), Failure>
    where
        F: Fn(Client) -> R,
        R: Future<Output = Result<T, etcd_client::Error>>,
    {
        let runtime = self.runtime.as_ref().expect("set until dropped");
        let n = self.clients.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let deadline = Instant::now() + self.timeout * 2;
        let mut maybe_taken = false;
        let mut failures: Vec<String> = Vec::new();
        for k in 0.. {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if k > 0 && k % n == 0 {
                // Every member refused: wait a little for an election to end.
                std::thread::sleep(Duration::from_millis(50).min(left));
            }
            let at = (first + k) % n;
            let (endpoint, client) = &self.clients[at];
            let answer = runtime.block_on(async {
                tokio::time::timeout(self.timeout.min(left), request(client.clone())).await
            });
            let failure = match answer {
                Ok(Ok(v)) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok((v, maybe_taken));
                }
                Ok(Err(e)) if permanent(&e) => {
                    return Err(Failure {
                        error: PluginError(format!("etcd {what} at {endpoint}: {e}")),
                        maybe_taken,
                    });
                }
                Ok(Err(e)) => {
                    maybe_taken |= !not_taken(&e);
                    format!("{endpoint}: {e}")
                }
                Err(_) => {
                    maybe_taken = true;
                    format!(
                        "{endpoint}: no answer within {} ms",
                        self.timeout.min(left).as_millis()
                    )
                }
            };
            // The next request starts at the next member, unless another caller moved on already.
            let _ = self.current.compare_exchange(
                at,
                (at + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if failures.len() == n {
                failures.remove(0);
            }
            failures.push(failure);
        }
        Err(Failure {
            error: PluginError(format!(
                "etcd {what}: no member answered within {} ms: {}",
                (self.timeout * 2).as_millis(),
                failures.join("; ")
            )),
            maybe_taken,
        })
    }

    /// The namespace's key for `key`, whether it holds `value` (`None`: absent).
    fn compare(&self, key: &[u8], value: Option<&[u8]>) -> Compare {
        holds(&self.key(key), value)
    }
}

impl Etcd {
    fn inner(&self) -> Result<&Inner, PluginError> {
        self.inner
            .as_ref()
            .ok_or_else(|| PluginError::new("storage not opened: call open first"))
    }
}

impl StorageBackend for Etcd {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "etcd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::StorageBackend,
            description: "State on an etcd cluster (v3 API): batches are transactions, for \
                          replicated hosts"
                .into(),
            config_schema: r#"{"type":"object","required":["endpoints"],"properties":{"endpoints":{"type":"array","items":{"type":"string"},"minItems":1},"prefix":{"type":"string"},"timeout_ms":{"type":"integer","minimum":1},"max_txn_ops":{"type":"integer","minimum":2},"max_request_bytes":{"type":"integer","minimum":65536},"user":{"type":"string"},"password":{"type":"string"}},"additionalProperties":false}"#.into(),
        }
    }

    fn open(&mut self, config: &str) -> Result<(), PluginError> {
        let config: Config = parse_config(config)?;
        let endpoints = config
            .endpoints
            .filter(|e| !e.is_empty())
            .ok_or_else(|| PluginError::new("`endpoints` is required: etcd's client URLs"))?;
        let timeout_ms = config.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 {
            return Err(PluginError::new("`timeout_ms` must be at least 1"));
        }
        let max_txn_ops = config.max_txn_ops.unwrap_or(DEFAULT_MAX_TXN_OPS);
        if max_txn_ops < 2 {
            return Err(PluginError::new("`max_txn_ops` must be at least 2"));
        }
        let max_request_bytes = config
            .max_request_bytes
            .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if max_request_bytes < 65536 {
            return Err(PluginError::new(
                "`max_request_bytes` must be at least 65536",
            ));
        }
        if config.prefix.as_deref() == Some("") {
            return Err(PluginError::new(
                "`prefix` must not be empty (etcd takes no empty key); end it with `/`",
            ));
        }
        let timeout = Duration::from_millis(timeout_ms);
        // No request timeout of the channel's: `call` keeps the deadline (a channel's timeout
        // reads like a connection's, and a write past its deadline must not be sent again).
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(10), timeout)
            .with_require_leader(true);
        match (config.user, config.password) {
            (Some(user), Some(password)) => options = options.with_user(user, password),
            (None, None) => {}
            _ => {
                return Err(PluginError::new(
                    "`user` and `password` go together: give both or neither",
                ));
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-storage")
            .enable_all()
            .build()
            .map_err(|e| PluginError(format!("etcd: cannot start its runtime: {e}")))?;
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints.iter() {
            let client = runtime
                .block_on(async {
                    tokio::time::timeout(
                        timeout,
                        Client::connect([endpoint], Some(options.clone())),
                    )
                    .await
                })
                .map_err(|_| {
                    PluginError(format!(
                        "etcd at {endpoint}: no answer within {timeout_ms} ms"
                    ))
                })?
                .map_err(|e| PluginError(format!("etcd at {endpoint}: {e}")))?;
            clients.push((endpoint.clone(), client));
        }
        let prefix = config
            .prefix
            .unwrap_or_else(|| DEFAULT_PREFIX.into())
            .into_bytes();
        let writer_key = [prefix.as_slice(), sequence::WRITERS, &sequence::token()].concat();
        let inner = Inner {
            runtime: Some(runtime),
            clients,
            current: AtomicUsize::new(0),
            prefix,
            timeout,
            max_txn_ops,
            max_request_bytes,
            writer_key,
            writer: Mutex::new(State::Known(None)),
        };
        // Connections are made lazily: one read proves the cluster answers and has a leader.
        let probe = inner.key(b"");
        inner
            .call("probe", |c| {
                let probe = probe.clone();
                async move {
                    kv(&c)
                        .get(probe, Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .map_err(|f| PluginError(format!("{} (is the cluster up, with a leader?)", f.error)))?;
        inner.sweep_writers()?;
        inner.create_writer_key()?;
        self.inner = Some(inner);
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
        let inner = self.inner()?;
        ours(key)?;
        let key = inner.key(key);
        let answer = inner.call("get", |c| {
            let key = key.clone();
            async move { kv(&c).get(key, None).await }
        })?;
        Ok(answer.kvs().first().map(|kv| kv.value().to_vec()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), PluginError> {
        self.batch(&[BatchOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }])
        .map(drop)
    }

    /// `true` also when an earlier copy of the delete applied (the key may then have been absent).
    fn delete(&self, key: &[u8]) -> Result<bool, PluginError> {
        let inner = self.inner()?;
        ours(key)?;
        let op = TxnOp::delete(inner.key(key), None);
        Ok(
            match inner.txn("delete", Vec::new(), vec![op], key.len() as u64)? {
                Outcome::Applied(Some(answer)) => answer
                    .op_responses()
                    .into_iter()
                    .any(|r| matches!(r, TxnOpResponse::Delete(d) if d.deleted() > 0)),
                Outcome::Applied(None) => true,
                Outcome::NotApplied => false,
            },
        )
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<KeyValue>, PluginError> {
        let inner = self.inner()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let full = inner.key(prefix);
        let start = match start_after {
            Some(after) if after >= prefix => {
                let mut k = inner.key(after);
                k.push(0);
                k
            }
            _ => full.clone(),
        };
        // Past the backend's own keys (they begin with a NUL byte).
        let start = start.max(inner.key(&[1]));
        let end = prefix_end(&full);
        let mut start = start;
        let mut out = Vec::new();
        // Pages are asked for by count; a page over MAX_ANSWER is asked for again in quarters.
        let mut chunk = limit;
        while (out.len() as u32) < limit {
            let want = chunk.min(limit - out.len() as u32);
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(i64::from(want));
            let answer = inner.call("scan", |c| {
                let (start, options) = (start.clone(), options.clone());
                async move {
                    match kv(&c).get(start, Some(options)).await {
                        Err(e) if too_large(&e) => Ok(None),
                        other => other.map(Some),
                    }
                }
            })?;
            let Some(answer) = answer else {
                if want == 1 {
                    return Err(PluginError(format!(
                        "etcd scan: one value is over {} MiB",
                        MAX_ANSWER >> 20
                    )));
                }
                chunk = (want / 4).max(1);
                continue;
            };
            let kvs = answer.kvs();
            out.extend(
                kvs.iter()
                    .map(|kv| (kv.key()[inner.prefix.len()..].to_vec(), kv.value().to_vec())),
            );
            match kvs.last() {
                Some(last) if kvs.len() as u32 == want && answer.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    fn batch(&self, ops: &[BatchOp]) -> Result<bool, PluginError> {
        let inner = self.inner()?;
        for op in ops {
            ours(match op {
                BatchOp::Put { key, .. } | BatchOp::Delete { key } | BatchOp::Check { key, .. } => {
                    key
                }
            })?;
        }
        let compares = ops
            .iter()
            .filter_map(|op| match op {
                BatchOp::Check { key, value } => Some(inner.compare(key, value.as_deref())),
                _ => None,
            })
            .collect();
        let writes = last_writes(ops);
        let bytes = ops
            .iter()
            .filter(|op| matches!(op, BatchOp::Check { .. }))
            .chain(writes.iter().copied())
            .map(BatchOp::size)
            .sum();
        let txn_ops = writes
            .iter()
            .filter_map(|op| match op {
                BatchOp::Put { key, value } => {
                    Some(TxnOp::put(inner.key(key), value.as_slice(), None))
                }
                BatchOp::Delete { key } => Some(TxnOp::delete(inner.key(key), None)),
                BatchOp::Check { .. } => None,
            })
            .collect();
        Ok(matches!(
            inner.txn("batch", compares, txn_ops, bytes)?,
            Outcome::Applied(_)
        ))
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, PluginError> {
        let check = BatchOp::Check {
            key: key.to_vec(),
            value: expected.map(<[u8]>::to_vec),
        };
        let write = match new {
            Some(v) => BatchOp::Put {
                key: key.to_vec(),
                value: v.to_vec(),
            },
            None => BatchOp::Delete { key: key.to_vec() },
        };
        self.batch(&[check, write])
    }

    fn limits(&self) -> BatchLimits {
        let Ok(inner) = self.inner() else {
            return BatchLimits::UNLIMITED;
        };
        // A transaction's encoding adds a few bytes to each key and value, and the namespace to
        // each key; leave room for them, and for the writer's key (one compare, one write).
        let per_op = 32 + inner.prefix.len() as u64;
        let overhead = u64::from(inner.max_txn_ops) * per_op + 4096 + inner.own_bytes();
        BatchLimits {
            max_ops: inner.max_txn_ops - 1,
            max_bytes: inner.max_request_bytes.saturating_sub(overhead),
        }
    }
}

#[cfg(feature = "native-plugin")]
spear_plugin_api::export_native_storage!(Etcd);

/// This plugin as a built-in of a host that links this crate (no library file; see
/// `spear_plugin_api::native_module!`).
#[cfg(not(target_family = "wasm"))]
pub fn native_module() -> spear_plugin_api::native::SpearPluginModuleRef {
    spear_plugin_api::native_module!(storage, Etcd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configuration_is_refused_naming_the_key() {
        let refused = |json: &str| Etcd::default().open(json).unwrap_err().to_string();
        assert!(refused("{}").contains("`endpoints` is required"));
        assert!(refused(r#"{"endpoints": []}"#).contains("`endpoints` is required"));
        assert!(
            refused(r#"{"endpoints": ["http://x"], "max_txn_ops": 1}"#).contains("max_txn_ops")
        );
        assert!(refused(r#"{"endpoints": ["http://x"], "user": "u"}"#).contains("`password`"));
        assert!(refused(r#"{"endpoints": ["http://x"], "prefix": ""}"#).contains("`prefix`"));
        assert!(
            refused(r#"{"endpoints": ["http://x"], "tls": true}"#).contains("unknown field `tls`")
        );
        let before = Etcd::default().get(b"k").unwrap_err().to_string();
        assert!(before.contains("storage not opened"), "{before}");
    }
}
