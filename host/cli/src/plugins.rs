//! `spear plugin list|reload|history`: SMS's plugins through `/api/v1/plugins` (`check` and `sim`,
//! which need no server, live in `check.rs` and `sim.rs`).

use serde_json::Value;

use crate::Output;
use crate::client::Client;
use crate::error::Result;
use crate::output::{self, cell, time_of};

/// `spear plugin list`: every plugin file SMS knows, the scheduler slot and the limits.
pub async fn list(client: &Client, out: Output) -> Result<i32> {
    let v = client.get("/api/v1/plugins", None).await?;
    if out == Output::Json {
        output::json(&v);
        return Ok(0);
    }
    let plugins = v["plugins"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            vec![
                cell(&p["name"]),
                cell(&p["kind"]),
                cell(&p["form"]),
                cell(&p["version"]),
                cell(&p["state"]),
                p["sha256"].as_str().map_or("-".into(), short),
            ]
        })
        .collect();
    let mut text = output::table(
        &["NAME", "KIND", "FORM", "VERSION", "STATE", "SHA256"],
        &rows,
    );
    for p in &plugins {
        if let Some(err) = p["last_error"].as_str() {
            text.push_str(&format!("{}: last error: {err}\n", cell(&p["name"])));
        }
        if let Some(key) = p["signed_by"].as_str() {
            text.push_str(&format!("{}: signed by {key}\n", cell(&p["name"])));
        }
        if p["file_missing"] == true {
            text.push_str(&format!(
                "{}: its file is gone; it stays active until another is selected\n",
                cell(&p["name"])
            ));
        }
    }
    let s = &v["scheduler"];
    let plugin = match &s["plugin"] {
        Value::Null => "none (the fallback decides)".to_owned(),
        p => format!("{} {}", cell(&p["name"]), cell(&p["version"])),
    };
    text.push_str(&format!(
        "\nscheduler: {plugin}{}, {} consecutive failures\n",
        if s["quarantined"] == true {
            ", QUARANTINED"
        } else {
            ""
        },
        cell(&s["consecutive_failures"])
    ));
    if let Some(err) = s["last_error"].as_str() {
        text.push_str(&format!("scheduler last error: {err}\n"));
    }
    text.push_str(&format!("limits:    {}\n", cell(&v["limits"])));
    output::out(&text);
    Ok(0)
}

/// `spear plugin reload`: rescan the plugin directory and config; exit 1 when rejected.
pub async fn reload(client: &Client, out: Output) -> Result<i32> {
    let report = client
        .post("/api/v1/plugins/reload", &Value::Null, None)
        .await?;
    let rejected = report["outcome"] == "rejected";
    match out {
        Output::Json => output::json(&report),
        Output::Text => output::out(&report_text(&report)),
    }
    Ok(i32::from(rejected))
}

fn report_text(r: &Value) -> String {
    let mut text = format!("reload: {}\n", cell(&r["outcome"]));
    for change in r["changes"].as_array().into_iter().flatten() {
        text.push_str(&format!("  {}\n", cell(change)));
    }
    if let Some(err) = r["error"].as_str() {
        text.push_str(&format!("error: {err}\n"));
    }
    if let Some(keys) = r["restart_keys"].as_array().filter(|k| !k.is_empty()) {
        text.push_str(&format!(
            "needs a restart of SMS: {}\n",
            cell(&Value::Array(keys.clone()))
        ));
    }
    let active: Vec<String> = r["active"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{} = {} {}",
                cell(&a["role"]),
                cell(&a["name"]),
                cell(&a["version"])
            )
        })
        .collect();
    if !active.is_empty() {
        text.push_str(&format!("active: {}\n", active.join(", ")));
    }
    text
}

/// `spear plugin history`: reload reports and plugin events, oldest first.
pub async fn history(client: &Client, out: Output) -> Result<i32> {
    let v = client.get("/api/v1/plugins/history", None).await?;
    if out == Output::Json {
        output::json(&v);
        return Ok(0);
    }
    let reloads: Vec<Vec<String>> = v["reloads"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let what = match r["error"].as_str() {
                Some(err) => err.to_owned(),
                None => r["changes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(cell)
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            vec![
                time_of(&r["at_ms"]),
                cell(&r["trigger"]),
                cell(&r["outcome"]),
                if what.is_empty() { "-".into() } else { what },
            ]
        })
        .collect();
    let events: Vec<Vec<String>> = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                time_of(&e["at_ms"]),
                cell(&e["kind"]),
                cell(&e["plugin"]),
                cell(&e["message"]),
            ]
        })
        .collect();
    let mut text = String::from("reloads:\n");
    text.push_str(&output::table(
        &["TIME (UTC)", "TRIGGER", "OUTCOME", "CHANGES"],
        &reloads,
    ));
    text.push_str("\nevents:\n");
    text.push_str(&output::table(
        &["TIME (UTC)", "KIND", "PLUGIN", "MESSAGE"],
        &events,
    ));
    output::out(&text);
    Ok(0)
}

/// The first 12 hex digits of a sha256.
fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}
