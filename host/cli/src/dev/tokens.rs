//! The tokens of `spear dev`: SMS runs with auth on (loopback or not, nothing runs without a
//! token), and `spear dev` makes what it needs itself, with SMS's offline `sms token create`
//! before SMS starts:
//! - an admin token for the person at the keyboard, kept in `data/dev-admin.token` and handed to
//!   the CLI through `~/.spear/dev-token.json` ([`handoff`](super::handoff));
//! - a node token for its Spearlet, bound to the node uuid `spear dev` gives it
//!   (`data/dev-node.uuid`), kept in `data/dev-node.token`.
//!
//! The files live in `data/` beside SMS's database: wiping `data/` forgets both together. Each is
//! written with mode 0600.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// The tokens and the node uuid `spear dev` runs with.
#[derive(Debug, Clone)]
pub struct DevTokens {
    /// The admin token (shown to the user, handed to the CLI).
    pub admin: String,
    /// The Spearlet's node token.
    pub node: String,
    /// The node uuid the node token is bound to.
    pub node_uuid: String,
}

/// Read the tokens of a previous run, or make them (SMS must not be running: the offline command
/// opens its database).
pub fn prepare(dir: &Path, sms: &Path) -> anyhow::Result<DevTokens> {
    let data = dir.join("data");
    let node_uuid = match read(&data.join("dev-node.uuid"))? {
        Some(u) => u,
        None => {
            let u = uuid::Uuid::new_v4().to_string();
            write_secret(&data.join("dev-node.uuid"), &u)?;
            u
        }
    };
    let admin = match read(&data.join("dev-admin.token"))? {
        Some(t) => t,
        None => {
            let t = create(dir, sms, &["--role", "admin", "--name", "dev-admin"])?;
            write_secret(&data.join("dev-admin.token"), &t)?;
            t
        }
    };
    let node = match read(&data.join("dev-node.token"))? {
        Some(t) => t,
        None => {
            let t = create(
                dir,
                sms,
                &["--role", "node", "--name", "dev-node", "--node", &node_uuid],
            )?;
            write_secret(&data.join("dev-node.token"), &t)?;
            t
        }
    };
    Ok(DevTokens {
        admin,
        node,
        node_uuid,
    })
}

/// A file's trimmed content, or None when it does not exist.
fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Write `text` to `path`, readable by its owner only.
pub(super) fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(format!("{text}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `sms --config sms.toml token create ARGS` in `dir`: the token it prints. A token of that
/// name left by an earlier run whose file is gone is revoked first (names are unique).
fn create(dir: &Path, sms: &Path, args: &[&str]) -> anyhow::Result<String> {
    let name = args
        .iter()
        .skip_while(|a| **a != "--name")
        .nth(1)
        .copied()
        .unwrap_or_default();
    let offline = |extra: &[&str]| {
        Command::new(sms)
            .current_dir(dir)
            .args(["--config", "sms.toml", "token"])
            .args(extra)
            .env("SMS_LOG", "error")
            .output()
            .with_context(|| format!("running {} token", sms.display()))
    };
    let _ = offline(&["revoke", name])?;
    let mut full = vec!["create"];
    full.extend_from_slice(args);
    let out = offline(&full)?;
    if !out.status.success() {
        bail!(
            "sms token create {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !token.starts_with("spear.") {
        bail!("sms token create printed no token: {token:?}");
    }
    Ok(token)
}
