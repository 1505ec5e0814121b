//! Who may do what: bearer tokens with a role, checked on every REST route and gRPC method.
//!
//! A request carries `Authorization: Bearer <token>` (gRPC: the `authorization` metadata). The
//! token names a principal with one [`Role`]; each route and method has one [`Need`] in
//! [`rules`]; a request without a valid token is answered 401 (gRPC `UNAUTHENTICATED`), one whose
//! role does not meet the need 403 (`PERMISSION_DENIED`), both in SMS's one error shape.
//!
//! Tokens are made by [`tokens::Tokens`] (stored only as a hash); a bootstrap admin token can come
//! from `SMS_ADMIN_TOKEN`, `SMS_WEB_ADMIN_TOKEN` (SPEAR's name) or `[auth] admin_token_file`.
//! With `[auth] enabled = false` (the default) nothing is checked, and SMS refuses to listen on a
//! non-loopback address unless started with `--insecure` ([`crate::config`]).

pub mod audit;
pub mod cert;
pub mod grpc;
pub mod http;
pub mod offline;
pub mod rules;
pub mod stream;
pub mod tokens;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::SmsError;
pub use rules::Need;
pub use tokens::{Principal, Tokens};

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read anything (GET only).
    Reader,
    /// Read, and submit, cancel, register tasks and files.
    Operator,
    /// Everything: plugins, tokens, nodes included.
    Admin,
    /// One Spearlet: register, heartbeat, take its work and report it, fetch files.
    Node,
}

impl Role {
    /// The role's name as it is written in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Node => "node",
        }
    }

    /// Parse `reader`, `operator`, `admin` or `node`.
    pub fn parse(s: &str) -> Result<Self, SmsError> {
        match s {
            "reader" => Ok(Role::Reader),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            "node" => Ok(Role::Node),
            other => Err(SmsError::invalid(
                "role",
                format!("`{other}` is not reader, operator, admin or node"),
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[auth]`: whether requests must carry a token, and what stays open without one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthConfig {
    /// Check a bearer token on every request (`SMS_AUTH_ENABLED`).
    #[serde(default)]
    pub enabled: bool,
    /// A file whose content (trimmed) is a bootstrap admin token, for automation.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Serve `/healthz` without a token.
    #[serde(default)]
    pub open_healthz: bool,
    /// Serve `/metrics` without a token.
    #[serde(default)]
    pub open_metrics: bool,
    /// A client certificate whose common name is `spear-node:<uuid>` (chaining to
    /// `tls.client_ca_file`) acts as that node when the request carries no token ([`cert`]).
    #[serde(default)]
    pub node_certificates: bool,
}

/// The environment variables whose value is a bootstrap admin token.
pub const ADMIN_TOKEN_VARS: [&str; 2] = ["SMS_ADMIN_TOKEN", "SMS_WEB_ADMIN_TOKEN"];

/// Shortest bootstrap token accepted: a guessable one would be a way in.
pub const MIN_BOOTSTRAP_LEN: usize = 24;

/// The checks in force: the config and the token registry.
#[derive(Debug)]
pub struct Auth {
    /// `[auth]`.
    pub config: AuthConfig,
    /// Issued tokens and the bootstrap ones.
    pub tokens: Tokens,
}

impl Auth {
    /// Whether `principal` (None: no token) may do what `need` asks; the error says what is
    /// missing. With auth off everything is allowed.
    pub fn check(&self, need: Need, principal: Option<&Principal>) -> Result<(), SmsError> {
        check(&self.config, need, principal)
    }
}

/// Whether `principal` (None: no token) may do what `need` asks under `config`; the error says
/// what is missing. With auth off everything is allowed.
pub fn check(
    config: &AuthConfig,
    need: Need,
    principal: Option<&Principal>,
) -> Result<(), SmsError> {
    if !config.enabled || need.is_open(config) {
        return Ok(());
    }
    let Some(p) = principal else {
        return Err(SmsError::Unauthenticated(
            "this request needs a token: send `Authorization: Bearer <token>` (`spear --token`, \
                 SPEAR_TOKEN)"
                .into(),
        ));
    };
    if need.allows(p.role) {
        Ok(())
    } else {
        Err(SmsError::Forbidden(format!(
            "token `{}` ({}) may not do this: it needs {}",
            p.name,
            p.role,
            need.describe()
        )))
    }
}

/// A change of node status by `principal`: a node token may drain itself or go inactive, never
/// make itself active again (after an operator drained it, say).
pub fn node_may_set(principal: Option<&Principal>, status: Option<&str>) -> Result<(), SmsError> {
    match (principal, status) {
        (Some(p), Some(s)) if p.role == Role::Node && !matches!(s, "draining" | "inactive") => {
            Err(SmsError::Forbidden(format!(
                "a node token may set its node draining or inactive, not `{s}` (an operator may)"
            )))
        }
        _ => Ok(()),
    }
}

/// The name of `principal` when it acts as an operator (any role but node).
pub fn operator(principal: Option<&Principal>) -> Option<&str> {
    principal.filter(|p| p.role != Role::Node).map(|p| &*p.name)
}

impl crate::service::Sms {
    /// A node token may not remove its node while an operator holds it drained or inactive
    /// (a re-registration would clear the hold).
    pub async fn node_may_delete(
        &self,
        principal: Option<&Principal>,
        uuid: &str,
    ) -> Result<(), SmsError> {
        if principal.is_some_and(|p| p.role == Role::Node)
            && let Some(by) = self
                .nodes
                .read()
                .await
                .get(uuid)
                .and_then(|n| n.held_by.clone())
        {
            return Err(SmsError::Forbidden(format!(
                "node `{uuid}` is held by `{by}`; an operator sets it active or removes it"
            )));
        }
        Ok(())
    }
}

/// A node principal may act only as its own node; every other role passes (its route's need was
/// checked already). `uuid` is the node the request acts as.
pub fn as_node(principal: Option<&Principal>, uuid: &str) -> Result<(), SmsError> {
    match principal {
        Some(p) if p.role == Role::Node => match &p.node {
            Some(own) if **own == *uuid => Ok(()),
            Some(own) => {
                tracing::warn!(token = %p.name, own = %own, claimed = %uuid, "a node token acted as another node");
                Err(SmsError::Forbidden(format!(
                    "token `{}` belongs to node `{own}`, not `{uuid}`",
                    p.name
                )))
            }
            None => Err(SmsError::Forbidden(format!(
                "node token `{}` is bound to no node",
                p.name
            ))),
        },
        _ => Ok(()),
    }
}

impl crate::service::Sms {
    /// A registration by `principal`: a node token registers as its own node (its bound uuid when
    /// the request names none), and an unbound one is bound to the uuid it registers first, if
    /// no node of that uuid is registered already (an existing node's token is made with
    /// `--node UUID`: a new token cannot take over a node).
    pub async fn node_registers(
        &self,
        principal: Option<&Principal>,
        uuid: &mut Option<String>,
    ) -> Result<(), SmsError> {
        let Some(p) = principal.filter(|p| p.role == Role::Node) else {
            return Ok(());
        };
        let claimed = uuid
            .get_or_insert_with(|| {
                p.node
                    .as_deref()
                    .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
            })
            .clone();
        uuid::Uuid::parse_str(&claimed)
            .map_err(|e| SmsError::invalid("uuid", format!("`{claimed}` is not a UUID: {e}")))?;
        // Registered, or named by executions (a removed node's requeued work stays its orphan).
        let existing = self.nodes.read().await.contains_key(&claimed)
            || self.executions.read().await.values().any(|e| {
                e.node_uuid.as_deref() == Some(claimed.as_str())
                    || e.orphaned_on.as_deref() == Some(claimed.as_str())
            });
        self.auth.tokens.bind_node(p, &claimed, existing).await
    }
}
