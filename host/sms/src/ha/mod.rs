//! High availability on etcd: several SMS processes share one state in an etcd cluster, and one
//! of them, elected with etcd's election API, leads. Only the leader loads the state, schedules
//! and writes; every write it makes is fenced (the transaction checks that its election key
//! still holds its campaign's value, which it does only while its lease lives), so a leader that
//! lost its lease — stopped, cut off — writes nothing, and exits once it notices. The others
//! stand by and redirect clients to the leader ([`follower`]).
//!
//! The election runs on a lease of `ha.lease_ttl_secs`, renewed every third of it. The leader
//! notices it lost the lease when a renewal says so, or when a whole TTL passed since the last
//! renewal it sent that was answered; it then stops (exit code 3) and its supervisor starts it
//! again as a candidate. A candidate's campaign waits until the leader's key is gone: within the
//! TTL of a leader's death, another SMS leads.

pub mod follower;
mod members;
pub mod reads;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use spear_config::Problems;
use spear_plugin_runtime::group::Fence;
use tokio::sync::watch;

use crate::config::SmsConfig;
use members::Members;

/// `[ha]`: how replicas elect their leader (with `database.db_type = "etcd"` only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HaConfig {
    /// Seconds the leader's lease lives without a renewal: how long a dead leader's cluster
    /// waits before another SMS leads (2 to 60).
    pub lease_ttl_secs: u64,
    /// `host:port` clients reach this SMS's REST API at, given to them in redirects when it
    /// leads (default: `http.addr` as bound).
    pub advertise_http: Option<String>,
    /// `host:port` clients reach this SMS's gRPC API at (default: `grpc.addr` as bound).
    pub advertise_grpc: Option<String>,
    /// `host:port` browsers reach this SMS's web admin at (default: `web_admin_addr` as bound).
    pub advertise_admin: Option<String>,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            lease_ttl_secs: 5,
            advertise_http: None,
            advertise_grpc: None,
            advertise_admin: None,
        }
    }
}

impl HaConfig {
    /// Check the values (the caller checks that the backend is etcd).
    pub fn validate(&self, problems: &mut Problems) {
        if !(2..=60).contains(&self.lease_ttl_secs) {
            problems.invalid("ha.lease_ttl_secs", "must be 2 to 60 (seconds)");
        }
        for (key, value) in [
            ("ha.advertise_http", &self.advertise_http),
            ("ha.advertise_grpc", &self.advertise_grpc),
            ("ha.advertise_admin", &self.advertise_admin),
        ] {
            if let Some(v) = value
                && !is_host_port(v)
            {
                problems.invalid(key, format!("`{v}` is not host:port"));
            }
        }
    }
}

/// Whether `s` is `host:port` (a name or an address, and a port).
fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok()
                && !s.contains(char::is_whitespace)
                && !s.contains('/')
        }
        None => false,
    }
}

/// Who leads: the election's value (addresses for redirects, and a campaign id that makes the
/// value, which the fence compares, this campaign's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// This campaign's id.
    pub id: String,
    /// Where the leader's REST API is (`host:port`).
    pub http: String,
    /// Where its gRPC API is (`host:port`).
    pub grpc: String,
    /// Where its web admin is (`host:port`), when it serves one.
    #[serde(default)]
    pub admin: Option<String>,
}

impl LeaderInfo {
    /// This SMS's value for a campaign: a fresh id, and the advertised addresses (`[ha]`), else
    /// the bound ones.
    pub fn of(config: &SmsConfig, listeners: &crate::server::Listeners) -> Self {
        let ha = config.ha.clone().unwrap_or_default();
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            http: ha
                .advertise_http
                .unwrap_or_else(|| bound(listeners.http_addr())),
            grpc: ha
                .advertise_grpc
                .unwrap_or_else(|| bound(listeners.grpc_addr())),
            admin: ha
                .advertise_admin
                .or_else(|| listeners.admin_addr().ok().flatten().map(|a| a.to_string())),
        }
    }
}

/// A bound address as text.
pub fn bound(addr: std::io::Result<std::net::SocketAddr>) -> String {
    addr.map_or_else(|e| format!("<{e}>"), |a| a.to_string())
}

/// Resolves, with why, once this SMS no longer leads: `candidate`'s lease is lost, or a write
/// found the fence gone (`fenced`). Never without an election (`None`: a lone SMS leads).
pub async fn deposed(candidate: Option<&Candidate>, mut fenced: watch::Receiver<bool>) -> String {
    let Some(candidate) = candidate else {
        return std::future::pending().await;
    };
    let mut lost = candidate.lost();
    tokio::select! {
        why = lost.wait_for(Option::is_some) => why
            .ok()
            .and_then(|w| w.clone())
            .unwrap_or_else(|| "the election ended".into()),
        _ = fenced.wait_for(|f| *f) => "a write found its election key gone".into(),
    }
}

/// An SMS that takes part in the election: its lease, kept alive from the start.
pub struct Candidate {
    members: Arc<Members>,
    lease: i64,
    ttl: Duration,
    /// The election's name: `<prefix>leader`.
    name: Vec<u8>,
    /// The storage namespace (`database.prefix`): the fence's key is the election key without it.
    prefix: Vec<u8>,
    lost: watch::Receiver<Option<String>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("lease", &self.lease)
            .finish()
    }
}

/// What winning the election gives: the fence for every write, and the term.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// Every write checks it.
    pub fence: Fence,
    /// The election key's revision: grows with each new leader.
    pub term: i64,
}

impl Candidate {
    /// Connect to the etcd cluster `config` names, take a lease and keep it alive.
    pub async fn join(config: &SmsConfig) -> anyhow::Result<Self> {
        let ha = config.ha.clone().unwrap_or_default();
        let d = &config.database;
        let endpoints = d.endpoints.as_ref().map(|e| e.list()).unwrap_or_default();
        let timeout = Duration::from_millis(d.timeout_ms.unwrap_or(5000));
        let members = Arc::new(Members::connect(&endpoints, timeout).await?);
        let ttl = Duration::from_secs(ha.lease_ttl_secs);
        let lease = members
            .call(|mut c| async move { c.lease_grant(ha.lease_ttl_secs as i64, None).await })
            .await
            .map_err(|e| anyhow::anyhow!("etcd: cannot take a lease: {e}"))?
            .id();
        let (lost_tx, lost) = watch::channel(None);
        let keeper = tokio::spawn(keep_alive(members.clone(), lease, ttl, lost_tx));
        let prefix = d
            .prefix
            .clone()
            .unwrap_or_else(|| "spear/".into())
            .into_bytes();
        let mut name = prefix.clone();
        name.extend_from_slice(b"leader");
        Ok(Self {
            members,
            lease,
            ttl,
            name,
            prefix,
            lost,
            tasks: vec![keeper],
        })
    }

    /// Set when the lease is lost (with why): a leader must stop writing at once.
    pub fn lost(&self) -> watch::Receiver<Option<String>> {
        self.lost.clone()
    }

    /// Wait until this SMS leads (campaigning as `me`); on a member's failure, go on with the
    /// next one.
    pub async fn campaign(&self, me: &LeaderInfo) -> anyhow::Result<Leadership> {
        let value = serde_json::to_vec(me)?;
        loop {
            let (name, value2, lease) = (self.name.clone(), value.clone(), self.lease);
            // A campaign waits as long as another SMS leads: no deadline of its own.
            let answer = self
                .members
                .call_unbounded(move |mut c| {
                    let (name, value) = (name.clone(), value2.clone());
                    async move { c.campaign(name, value, lease).await }
                })
                .await;
            match answer {
                Ok(mut won) => {
                    let key = won
                        .take_leader()
                        .ok_or_else(|| anyhow::anyhow!("etcd: a campaign won without a key"))?;
                    let fence_key = key
                        .key()
                        .strip_prefix(self.prefix.as_slice())
                        .ok_or_else(|| {
                            anyhow::anyhow!("etcd: the election key is outside the namespace")
                        })?
                        .to_vec();
                    return Ok(Leadership {
                        fence: Fence {
                            key: fence_key,
                            value,
                            why: "this SMS no longer leads (its election key is gone: its lease \
                                  expired, or the key was removed); it stops"
                                .into(),
                        },
                        term: key.rev(),
                    });
                }
                Err(e) => {
                    if let Some(why) = self.lost.borrow().clone() {
                        anyhow::bail!("lost the lease while campaigning: {why}");
                    }
                    tracing::warn!("etcd: campaign: {e}; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Give up: revoke the lease, which deletes this SMS's election key (another SMS leads at
    /// once rather than after the TTL). Best effort: the lease expires anyway.
    pub async fn resign(&self) {
        let lease = self.lease;
        if let Err(e) = self
            .members
            .call(move |mut c| async move { c.lease_revoke(lease).await })
            .await
        {
            tracing::warn!("etcd: could not revoke lease {lease:x}: {e}");
        }
    }

    /// The leader as the election says, polled every `ttl / 5`.
    pub fn observe(&mut self) -> watch::Receiver<Option<LeaderInfo>> {
        let (tx, rx) = watch::channel(None);
        let (members, name) = (self.members.clone(), self.name.clone());
        let every = (self.ttl / 5).max(Duration::from_millis(200));
        self.tasks.push(tokio::spawn(async move {
            loop {
                let name2 = name.clone();
                let leader = members
                    .call(move |mut c| {
                        let name = name2.clone();
                        async move { c.leader(name).await }
                    })
                    .await
                    .ok()
                    .and_then(|r| r.kv().map(|kv| kv.value().to_vec()))
                    .and_then(|v| serde_json::from_slice::<LeaderInfo>(&v).ok());
                tx.send_if_modified(|now| {
                    let changed = *now != leader;
                    *now = leader;
                    changed
                });
                tokio::time::sleep(every).await;
            }
        }));
        rx
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Renew `lease` every third of `ttl` until it is lost; then say why on `lost`. Lost: a renewal
/// answers that it expired, or no renewal sent in the last `ttl` was answered (this process may
/// have been stopped, or cut off: etcd has let it go by then).
async fn keep_alive(
    members: Arc<Members>,
    lease: i64,
    ttl: Duration,
    lost: watch::Sender<Option<String>>,
) {
    // The time the last answered renewal was sent: etcd's lease runs at least until then + ttl.
    let mut renewed = Instant::now();
    loop {
        // Not past the lease's end: each member may take its whole timeout to fail.
        let left = ttl.saturating_sub(renewed.elapsed());
        let opened = tokio::time::timeout(
            left,
            members.call(move |mut c| async move { c.lease_keep_alive(lease).await }),
        )
        .await;
        if let Ok(Ok((mut keeper, mut answers))) = opened {
            loop {
                let sent = Instant::now();
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(ttl / 3, answers.message()).await {
                    Ok(Ok(Some(answer))) if answer.ttl() > 0 => renewed = sent,
                    Ok(Ok(Some(_))) => {
                        let _ = lost.send(Some(format!("lease {lease:x} expired")));
                        return;
                    }
                    _ => break,
                }
                if renewed.elapsed() >= ttl {
                    break;
                }
                tokio::time::sleep(ttl / 3).await;
                if renewed.elapsed() >= ttl {
                    break;
                }
            }
        }
        if renewed.elapsed() >= ttl {
            let _ = lost.send(Some(format!(
                "no renewal of lease {lease:x} answered for {} s",
                ttl.as_secs()
            )));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
