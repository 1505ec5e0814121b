//! Issued tokens: `spear.<id>.<secret>`, 64 random bits of id and 256 of secret. Only the
//! secret's sha256 is stored (`token/<id>`); the token itself is shown once, when it is made.
//! Revoking one ends it at once, streams opened with it included ([`Principal::revoked`]).
//!
//! Changes (create, revoke, binding a node token to its node) are serialized by one lock and
//! written before they take effect, so a token works only once it is durable and stops working
//! before its revocation is acknowledged.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spear_plugin_api::storage::BatchOp;

use crate::events::EventLog;
use tokio::sync::watch;

use super::{ADMIN_TOKEN_VARS, AuthConfig, MIN_BOOTSTRAP_LEN, Role};
use crate::db::Db;
use crate::error::{Result, SmsError};
use crate::model::now_ms;

/// Most tokens SMS keeps (revoke unused ones to make room).
pub const MAX_TOKENS: usize = 10_000;
/// Longest token name.
pub const MAX_NAME: usize = 64;
/// Longest lifetime a token may be given: ten years, in seconds.
pub const MAX_TTL_SECS: u64 = 10 * 365 * 86_400;

/// A stored token: everything but the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TokenInfo {
    /// The public part of the token (`spear.<id>.…`), its key.
    pub id: String,
    /// A unique name for people (`ci-deployer`, `node-7`).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// For a node token: the node uuid it acts as (bound at its first registration when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it was made (ms since the epoch).
    pub created_at_ms: i64,
    /// When it stops working (ms since the epoch); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    /// Who made it (a token name, or `sms token` for the offline command).
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    info: TokenInfo,
    /// Hex sha256 of the secret.
    sha256: String,
}

/// Who sent a request. Cheap to clone (its strings are shared): every request carries one.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's id (`bootstrap` for a bootstrap token).
    pub id: Arc<str>,
    /// The token's name.
    pub name: Arc<str>,
    /// Its role.
    pub role: Role,
    /// The node a node token acts as.
    pub node: Option<Arc<str>>,
    /// When the token stops working (ms since the epoch).
    pub expires_at_ms: Option<i64>,
    /// Turns true when the token is revoked (None: it cannot be, a bootstrap token).
    pub revoked: Option<watch::Receiver<bool>>,
    /// How it is named in events: `deployer (operator)` ([`super::audit`]).
    pub label: Arc<str>,
}

impl Principal {
    /// A principal that cannot be revoked (set [`Principal::revoked`] for one that can).
    pub fn new(
        id: &str,
        name: &str,
        role: Role,
        node: Option<&str>,
        expires_at_ms: Option<i64>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            role,
            node: node.map(Into::into),
            expires_at_ms,
            revoked: None,
            label: format!("{name} ({})", role.as_str()).into(),
        }
    }
}

/// An issued token as the check needs it: the stored record, the secret's hash decoded (None:
/// the stored one is damaged, and no secret matches), the principal it makes, and the flag that
/// ends its streams.
struct Issued {
    stored: Stored,
    hash: Option<[u8; 32]>,
    who: Principal,
    revoked: Arc<watch::Sender<bool>>,
}

impl Issued {
    fn new(stored: Stored, revoked: Arc<watch::Sender<bool>>) -> Self {
        let mut hash = [0u8; 32];
        let hash = hex::decode_to_slice(&stored.sha256, &mut hash)
            .ok()
            .map(|()| hash);
        let info = &stored.info;
        let who = Principal::new(
            &info.id,
            &info.name,
            info.role,
            info.node.as_deref(),
            info.expires_at_ms,
        );
        Self {
            stored,
            hash,
            who,
            revoked,
        }
    }
}

/// The tokens SMS accepts.
pub struct Tokens {
    db: Db,
    issued: RwLock<HashMap<String, Issued>>,
    /// (the principal, named after where it came from; sha256 of the token).
    bootstrap: Vec<(Principal, [u8; 32])>,
    changes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("bootstrap", &self.bootstrap.len())
            .finish_non_exhaustive()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equal in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex<const N: usize>() -> Result<String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| SmsError::Storage(format!("no randomness for a token: {e}")))?;
    Ok(hex::encode(bytes))
}

fn invalid() -> SmsError {
    SmsError::Unauthenticated("invalid token (unknown, revoked or mistyped)".into())
}

/// The bootstrap admin tokens of `config` and the environment `env`, each with where it came
/// from; a short one is refused naming its source.
pub fn bootstrap(
    config: &AuthConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for var in ADMIN_TOKEN_VARS {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            out.push((var.to_owned(), v));
        }
    }
    if let Some(path) = &config.admin_token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SmsError::invalid(
                "auth.admin_token_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        out.push(("auth.admin_token_file".to_owned(), text.trim().to_owned()));
    }
    for (source, token) in &out {
        if token.len() < MIN_BOOTSTRAP_LEN {
            return Err(SmsError::invalid(
                source.clone(),
                format!("a bootstrap admin token must be at least {MIN_BOOTSTRAP_LEN} characters"),
            ));
        }
    }
    Ok(out)
}

impl Tokens {
    /// Load the issued tokens from `db`; `bootstrap` are (source, token) pairs also accepted as
    /// admin.
    pub async fn open(db: Db, bootstrap: Vec<(String, String)>) -> Result<Self> {
        let mut issued = HashMap::new();
        for stored in db.load_all::<Stored>("token/").await? {
            let (revoked, _) = watch::channel(false);
            issued.insert(
                stored.info.id.clone(),
                Issued::new(stored, Arc::new(revoked)),
            );
        }
        Ok(Self {
            db,
            issued: RwLock::new(issued),
            bootstrap: bootstrap
                .into_iter()
                .map(|(source, token)| {
                    let who = Principal::new("bootstrap", &source, Role::Admin, None, None);
                    (who, sha256(token.as_bytes()))
                })
                .collect(),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// A registry that loads nothing: [`verify_stored`](Self::verify_stored) reads each token's
    /// record when it is shown (for a standby, whose registry would go stale as the leader issues
    /// and revokes tokens).
    pub fn unloaded(db: Db, bootstrap: Vec<(String, String)>) -> Self {
        Self {
            db,
            issued: RwLock::new(HashMap::new()),
            bootstrap: bootstrap
                .into_iter()
                .map(|(source, token)| {
                    let who = Principal::new("bootstrap", &source, Role::Admin, None, None);
                    (who, sha256(token.as_bytes()))
                })
                .collect(),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// Who `token` is at `now`, by its record in storage as it is now (a revoked token's record
    /// is gone), or a bootstrap token.
    pub async fn verify_stored(&self, token: &str, now: i64) -> Result<Principal> {
        if let Some((id, secret)) = token
            .strip_prefix("spear.")
            .and_then(|rest| rest.split_once('.'))
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric())
            && let Some(stored) = self.db.get::<Stored>(format!("token/{id}")).await?
        {
            let (revoked, _) = watch::channel(false);
            let issued = Issued::new(stored, Arc::new(revoked));
            let Some(want) = &issued.hash else {
                return Err(invalid());
            };
            if !same(&sha256(secret.as_bytes()), want) {
                return Err(invalid());
            }
            if issued.who.expires_at_ms.is_some_and(|at| at <= now) {
                return Err(SmsError::Unauthenticated(format!(
                    "token `{}` has expired",
                    issued.who.name
                )));
            }
            return Ok(issued.who);
        }
        self.verify_bootstrap(token)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Issued>> {
        self.issued.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Issued>> {
        self.issued.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Who `token` is, at `now` (ms since the epoch).
    pub fn verify(&self, token: &str, now: i64) -> Result<Principal> {
        if let Some((id, secret)) = token
            .strip_prefix("spear.")
            .and_then(|rest| rest.split_once('.'))
            && let Some(principal) = self.verify_issued(id, secret, now)?
        {
            return Ok(principal);
        }
        self.verify_bootstrap(token)
    }

    /// An issued token by id and secret; None when no token has that id.
    fn verify_issued(&self, id: &str, secret: &str, now: i64) -> Result<Option<Principal>> {
        let issued = self.read();
        let Some(entry) = issued.get(id) else {
            return Ok(None);
        };
        let Some(want) = &entry.hash else {
            return Err(invalid());
        };
        if !same(&sha256(secret.as_bytes()), want) {
            return Err(invalid());
        }
        let who = &entry.who;
        if who.expires_at_ms.is_some_and(|at| at <= now) {
            return Err(SmsError::Unauthenticated(format!(
                "token `{}` has expired",
                who.name
            )));
        }
        Ok(Some(Principal {
            revoked: Some(entry.revoked.subscribe()),
            ..who.clone()
        }))
    }

    /// Whether a bootstrap token came from `source` (`SMS_WEB_ADMIN_TOKEN`, …).
    pub fn has_bootstrap(&self, source: &str) -> bool {
        self.bootstrap.iter().any(|(who, _)| &*who.name == source)
    }

    /// A bootstrap token.
    fn verify_bootstrap(&self, token: &str) -> Result<Principal> {
        let hash = sha256(token.as_bytes());
        match self.bootstrap.iter().find(|(_, h)| same(h, &hash)) {
            Some((who, _)) => Ok(who.clone()),
            None => Err(invalid()),
        }
    }

    /// Make a token; returns it whole (the only time it is seen) with its record.
    pub async fn create(
        &self,
        name: &str,
        role: Role,
        node: Option<String>,
        ttl_secs: Option<u64>,
        by: &str,
        log: Option<&EventLog>,
    ) -> Result<(TokenInfo, String)> {
        check_name(name)?;
        if node.is_some() && role != Role::Node {
            return Err(SmsError::invalid(
                "node",
                "only a node token is bound to a node",
            ));
        }
        if let Some(n) = &node {
            uuid::Uuid::parse_str(n)
                .map_err(|e| SmsError::invalid("node", format!("`{n}` is not a node uuid: {e}")))?;
        }
        let now = now_ms();
        let expires_at_ms = match ttl_secs {
            None => None,
            Some(0) => return Err(SmsError::invalid("ttl_secs", "must be at least 1")),
            Some(t) if t > MAX_TTL_SECS => {
                return Err(SmsError::invalid(
                    "ttl_secs",
                    format!("at most {MAX_TTL_SECS} (ten years)"),
                ));
            }
            Some(t) => Some(now + (t as i64) * 1000),
        };
        let _change = self.changes.lock().await;
        // Expired tokens make no room and hold no names.
        self.sweep_expired(now).await?;
        {
            let issued = self.read();
            if issued.len() >= MAX_TOKENS {
                return Err(SmsError::Conflict(format!(
                    "{MAX_TOKENS} tokens exist; revoke unused ones first"
                )));
            }
            if issued.values().any(|i| i.stored.info.name == name) {
                return Err(SmsError::Conflict(format!("a token named `{name}` exists")));
            }
        }
        let (id, secret) = (random_hex::<8>()?, random_hex::<32>()?);
        let stored = Stored {
            info: TokenInfo {
                id: id.clone(),
                name: name.to_owned(),
                role,
                node,
                created_at_ms: now,
                expires_at_ms,
                created_by: by.to_owned(),
            },
            sha256: hex::encode(sha256(secret.as_bytes())),
        };
        let put = crate::db::put_op(format!("token/{id}"), &stored)?;
        self.commit(vec![put], log, "token.created", &id, role)
            .await?;
        let info = stored.info.clone();
        let (revoked, _) = watch::channel(false);
        self.write()
            .insert(id.clone(), Issued::new(stored, Arc::new(revoked)));
        Ok((info, format!("spear.{id}.{secret}")))
    }

    /// Revoke the token with this id or name; it stops working at once, open streams included.
    /// With `log`, the `token.revoked` event is stored in the same batch.
    pub async fn revoke(&self, id_or_name: &str, log: Option<&EventLog>) -> Result<TokenInfo> {
        let _change = self.changes.lock().await;
        let id = self
            .find(id_or_name)
            .ok_or_else(|| SmsError::not_found("token", id_or_name))?;
        let role = self
            .read()
            .get(&id)
            .map(|i| i.stored.info.role)
            .ok_or_else(|| SmsError::not_found("token", id_or_name))?;
        let delete = BatchOp::Delete {
            key: format!("token/{id}").into_bytes(),
        };
        self.commit(vec![delete], log, "token.revoked", &id, role)
            .await?;
        let gone = self.write().remove(&id);
        let gone = gone.ok_or_else(|| SmsError::not_found("token", id_or_name))?;
        gone.revoked.send_replace(true);
        Ok(gone.stored.info)
    }

    /// Store `ops` with, when `log` is given, their `kind` event (subject the token's id; data its
    /// role only, as readers see the log), in one batch.
    async fn commit(
        &self,
        ops: Vec<BatchOp>,
        log: Option<&EventLog>,
        kind: &str,
        id: &str,
        role: Role,
    ) -> Result<()> {
        match log {
            Some(log) => log
                .append_with(
                    ops,
                    vec![(kind, id.to_owned(), serde_json::json!({ "role": role }))],
                )
                .await
                .map(|_| ()),
            None => self.db.batch(ops).await,
        }
    }

    /// Remove the tokens expired at `now` (the caller holds `changes`).
    async fn sweep_expired(&self, now: i64) -> Result<()> {
        let expired: Vec<String> = self
            .read()
            .values()
            .filter(|i| i.stored.info.expires_at_ms.is_some_and(|at| at <= now))
            .map(|i| i.stored.info.id.clone())
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        let ops = expired
            .iter()
            .map(|id| BatchOp::Delete {
                key: format!("token/{id}").into_bytes(),
            })
            .collect();
        self.db.write_each(ops).await?;
        let mut issued = self.write();
        for id in &expired {
            if let Some(gone) = issued.remove(id) {
                gone.revoked.send_replace(true);
            }
        }
        Ok(())
    }

    fn find(&self, id_or_name: &str) -> Option<String> {
        let issued = self.read();
        if issued.contains_key(id_or_name) {
            return Some(id_or_name.to_owned());
        }
        issued
            .values()
            .find(|i| i.stored.info.name == id_or_name)
            .map(|i| i.stored.info.id.clone())
    }

    /// Every issued token, by name.
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut all: Vec<TokenInfo> = self
            .read()
            .values()
            .map(|i| i.stored.info.clone())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// A node token bound to no node yet is bound to `uuid` (its first registration) unless a
    /// node of that uuid is registered already (`existing`) or another token holds it; one bound
    /// to another node is refused. Other principals pass.
    pub async fn bind_node(&self, principal: &Principal, uuid: &str, existing: bool) -> Result<()> {
        if principal.role != Role::Node || principal.node.is_some() {
            return super::as_node(Some(principal), uuid);
        }
        let _change = self.changes.lock().await;
        // Read again under the lock: a concurrent registration may have bound it meanwhile.
        let current = self.read().get(&*principal.id).map(|i| i.stored.clone());
        let Some(mut stored) = current else {
            return Err(invalid());
        };
        let taken = self
            .read()
            .values()
            .find(|i| {
                *i.stored.info.id != *principal.id && i.stored.info.node.as_deref() == Some(uuid)
            })
            .map(|i| i.stored.info.name.clone());
        if let Some(other) = taken {
            return Err(SmsError::Forbidden(format!(
                "node `{uuid}` belongs to token `{other}`"
            )));
        }
        match &stored.info.node {
            Some(own) if own == uuid => return Ok(()),
            Some(own) => {
                return Err(SmsError::Forbidden(format!(
                    "token `{}` belongs to node `{own}`, not `{uuid}`",
                    principal.name
                )));
            }
            None if existing => {
                return Err(SmsError::Forbidden(format!(
                    "node `{uuid}` is registered already: a token for it is made with \
                     `--node {uuid}`, not bound by a registration"
                )));
            }
            None => {}
        }
        stored.info.node = Some(uuid.to_owned());
        self.db
            .put(format!("token/{}", stored.info.id), &stored)
            .await?;
        let mut issued = self.write();
        if let Some(entry) = issued.get_mut(&*principal.id) {
            *entry = Issued::new(stored, entry.revoked.clone());
        }
        drop(issued);
        tracing::info!(token = %principal.name, node = %uuid, "node token bound to its node");
        Ok(())
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(SmsError::invalid(
            "name",
            format!("1 to {MAX_NAME} characters"),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || name.starts_with('.')
    {
        return Err(SmsError::invalid(
            "name",
            "letters, digits, `-`, `_` and `.` only, not first",
        ));
    }
    Ok(())
}
