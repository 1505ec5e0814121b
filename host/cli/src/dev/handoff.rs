//! How `spear dev` hands its admin token to the CLI: `~/.spear/dev-token.json`
//! (`{"sms": "http://127.0.0.1:8080", "token": "spear.…"}`, mode 0600), written when `spear dev`
//! has started and removed when it stops. The CLI uses it only when no `--token` / `SPEAR_TOKEN`
//! is given and only towards that SMS (the same base URL), so the token never goes elsewhere.

use std::path::PathBuf;

use serde_json::{Value, json};

/// Where the hand-off file is (`$HOME/.spear/dev-token.json`).
pub fn path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".spear").join("dev-token.json"))
}

/// Record `token` for the SMS at `sms` (a base URL).
pub fn save(sms: &str, token: &str) -> anyhow::Result<()> {
    let path = path().ok_or_else(|| anyhow::anyhow!("HOME is not set"))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    super::tokens::write_secret(&path, &json!({"sms": sms, "token": token}).to_string())
}

/// Remove the hand-off file if it still names the SMS at `sms`.
pub fn remove(sms: &str) {
    if let Some(path) = path()
        && recorded(&path).is_some_and(|(s, _)| s == sms)
    {
        let _ = std::fs::remove_file(path);
    }
}

fn recorded(path: &std::path::Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    Some((
        v["sms"].as_str()?.to_owned(),
        v["token"].as_str()?.to_owned(),
    ))
}

/// The token `spear dev` left for the SMS at `sms` (a base URL), if any.
pub fn token_for(sms: &str) -> Option<String> {
    let (recorded_sms, token) = recorded(&path()?)?;
    (recorded_sms == sms).then_some(token)
}
