//! `spear token create|list|revoke|whoami`: SMS's tokens (admin), and who yours says you are.

use serde_json::{Value, json};

use crate::Output;
use crate::client::{Client, Subject};
use crate::error::Result;
use crate::output::{self, cell, time_of};

/// `spear token …`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token; it is printed once (text: the token alone on standard output).
    Create {
        /// `reader`, `operator`, `admin` or `node`.
        #[arg(long, value_parser = ["reader", "operator", "admin", "node"])]
        role: String,
        /// A unique name (letters, digits, `-`, `_`, `.`).
        #[arg(long)]
        name: String,
        /// For a node token: the node uuid it may act as (else: its first registration's).
        #[arg(long)]
        node: Option<String>,
        /// Seconds until it stops working (default: never).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Every token: id, name, role, node, expiry (never the secrets).
    List,
    /// Revoke a token by id or name; it stops working at once, open streams included.
    Revoke {
        /// The token's id or name (see `spear token list`). (Not named `token`: that is the
        /// global `--token`'s id.)
        id: String,
    },
    /// Who SMS says the token you send is.
    Whoami,
}

/// Run a token command.
pub async fn run(cmd: TokenCommand, client: &Client, output: Output) -> Result<i32> {
    match cmd {
        TokenCommand::Create {
            role,
            name,
            node,
            ttl_secs,
        } => {
            let mut body = json!({ "name": name, "role": role });
            if let Some(n) = node {
                body["node"] = json!(n);
            }
            if let Some(t) = ttl_secs {
                body["ttl_secs"] = json!(t);
            }
            let v = client.post("/api/v1/tokens", &body, None).await?;
            match output {
                Output::Json => output::json(&v),
                Output::Text => {
                    output::err(&format!(
                        "token `{}` ({}, id {}); it is shown only now:\n",
                        cell(&v["name"]),
                        cell(&v["role"]),
                        cell(&v["id"])
                    ));
                    output::out(&format!("{}\n", cell(&v["token"])));
                }
            }
        }
        TokenCommand::List => {
            let v = client.get("/api/v1/tokens", None).await?;
            match output {
                Output::Json => output::json(&v),
                Output::Text => output::out(&list_text(&v["tokens"])),
            }
        }
        TokenCommand::Revoke { id } => {
            client
                .delete(&format!("/api/v1/tokens/{id}"), Some(Subject::token(&id)))
                .await?;
            match output {
                Output::Json => output::json(&json!({ "revoked": id })),
                Output::Text => output::out(&format!("revoked {id}\n")),
            }
        }
        TokenCommand::Whoami => {
            let v = client.get("/api/v1/whoami", None).await?;
            match output {
                Output::Json => output::json(&v),
                Output::Text => output::out(&output::fields(&[
                    ("name", cell(&v["name"])),
                    ("role", cell(&v["role"])),
                    ("node", cell(&v["node"])),
                    ("expires", time_of(&v["expires_at_ms"])),
                    ("auth enabled", cell(&v["auth_enabled"])),
                ])),
            }
        }
    }
    Ok(0)
}

fn list_text(tokens: &Value) -> String {
    let tokens = tokens.as_array().cloned().unwrap_or_default();
    if tokens.is_empty() {
        return "no tokens; make one with `spear token create --role … --name …`\n".into();
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                cell(&t["id"]),
                cell(&t["name"]),
                cell(&t["role"]),
                cell(&t["node"]),
                time_of(&t["expires_at_ms"]),
                cell(&t["created_by"]),
            ]
        })
        .collect();
    output::table(
        &["ID", "NAME", "ROLE", "NODE", "EXPIRES (UTC)", "CREATED BY"],
        &rows,
    )
}
