//! etcd clients, one per member of the cluster: a request goes to the member that answered last,
//! and on a failure to the next one (etcd-client's own balancing keeps sending to a member that
//! died until its connection times out).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

/// One client per member.
pub(super) struct Members {
    clients: Vec<(String, Client)>,
    current: AtomicUsize,
    timeout: Duration,
}

impl Members {
    /// Clients for `endpoints` (connected lazily), each request bounded by `timeout`.
    pub(super) async fn connect(endpoints: &[String], timeout: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(!endpoints.is_empty(), "etcd: no endpoints");
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(10), timeout)
            .with_require_leader(true);
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let client =
                tokio::time::timeout(timeout, Client::connect([endpoint], Some(options.clone())))
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!("etcd at {endpoint}: no answer within {timeout:?}")
                    })?
                    .map_err(|e| anyhow::anyhow!("etcd at {endpoint}: {e}"))?;
            clients.push((endpoint.clone(), client));
        }
        Ok(Self {
            clients,
            current: AtomicUsize::new(0),
            timeout,
        })
    }

    /// `request` on each member in turn until one answers, each within the timeout; the last
    /// error when none does.
    pub(super) async fn call<T, F, R>(&self, request: F) -> Result<T, String>
    where
        F: Fn(Client) -> R,
        R: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.each(Some(self.timeout), request).await
    }

    /// Like [`call`](Self::call), with no deadline on a member's answer (a campaign waits as
    /// long as another leads).
    pub(super) async fn call_unbounded<T, F, R>(&self, request: F) -> Result<T, String>
    where
        F: Fn(Client) -> R,
        R: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.each(None, request).await
    }

    async fn each<T, F, R>(&self, timeout: Option<Duration>, request: F) -> Result<T, String>
    where
        F: Fn(Client) -> R,
        R: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for k in 0..n {
            let at = (first + k) % n;
            let (endpoint, client) = &self.clients[at];
            let answer = match timeout {
                Some(t) => tokio::time::timeout(t, request(client.clone()))
                    .await
                    .unwrap_or_else(|_| {
                        Err(etcd_client::Error::InvalidArgs(format!(
                            "no answer within {t:?}"
                        )))
                    }),
                None => request(client.clone()).await,
            };
            match answer {
                Ok(v) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    last = format!("{endpoint}: {e}");
                    let _ = self.current.compare_exchange(
                        at,
                        (at + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }
        }
        Err(last)
    }
}
