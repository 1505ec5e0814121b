//! `spear plugin shadow`: how the shadow strategy (`[scheduler] shadow`) compares with the active
//! one — agreement, invalid answers, failures, latency and the spread each gives.

use serde_json::Value;

use crate::Output;
use crate::client::Client;
use crate::error::Result;
use crate::output::{self, cell, time_of};

/// Nodes listed in the spread table at most (`--output json` has them all).
const NODES_SHOWN: usize = 50;

/// Run `spear plugin shadow`.
pub async fn run(client: &Client, out: Output) -> Result<i32> {
    let v = client.get("/api/v1/plugins/shadow", None).await?;
    match out {
        Output::Json => output::json(&v),
        Output::Text => output::out(&text(&v)),
    }
    Ok(0)
}

fn named(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        p => format!(
            "{} {} ({})",
            cell(&p["name"]),
            cell(&p["version"]),
            cell(&p["form"])
        ),
    }
}

fn text(v: &Value) -> String {
    if v["shadow"].is_null() {
        return format!(
            "no shadow strategy is selected (set `shadow = \"NAME\"` under [scheduler]); active: {}\n",
            named(&v["active"])
        );
    }
    let rate = v["agreement_rate"]
        .as_f64()
        .map_or("-".to_owned(), |r| format!("{:.1} %", r * 100.0));
    let failed: Vec<String> = v["failed_batches"]
        .as_object()
        .map(|m| m.iter().map(|(k, n)| format!("{k} {}", cell(n))).collect())
        .unwrap_or_default();
    let lat = &v["latency_us"];
    let spread = &v["spread"];
    let mut text = output::fields(&[
        ("shadow", named(&v["shadow"])),
        ("active", named(&v["active"])),
        ("since", time_of(&v["since_ms"])),
        (
            "evaluated",
            format!(
                "{} batches, {} requests ({} rounds skipped: it fell behind)",
                cell(&v["rounds"]),
                cell(&v["requests"]),
                cell(&v["skipped_rounds"])
            ),
        ),
        (
            "agreement",
            format!(
                "{rate} ({} of {} compared)",
                cell(&v["agreed"]),
                cell(&v["compared"])
            ),
        ),
        (
            "not decided",
            if failed.is_empty() {
                "none".into()
            } else {
                format!(
                    "{} requests; batches: {}",
                    cell(&v["failed_requests"]),
                    failed.join(", ")
                )
            },
        ),
        ("invalid decisions", cell(&v["invalid_decisions"])),
        ("last failure", cell(&v["last_failure"])),
        (
            "latency per batch",
            format!(
                "p50 {} µs, p99 {} µs, max {} µs ({} calls)",
                cell(&lat["p50"]),
                cell(&lat["p99"]),
                cell(&lat["max"]),
                cell(&lat["calls"])
            ),
        ),
        (
            "spread (CV)",
            format!(
                "active {:.3}, shadow {:.3} (0: perfectly even)",
                spread["active_cv"].as_f64().unwrap_or(0.0),
                spread["shadow_cv"].as_f64().unwrap_or(0.0)
            ),
        ),
    ]);
    let nodes = spread["nodes"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .take(NODES_SHOWN)
        .map(|n| {
            vec![
                cell(&n["node_uuid"]),
                cell(&n["active"]),
                cell(&n["shadow"]),
            ]
        })
        .collect();
    text.push('\n');
    text.push_str(&output::table(&["NODE", "ACTIVE", "SHADOW"], &rows));
    if nodes.len() > NODES_SHOWN {
        text.push_str(&format!(
            "… {} more nodes (--output json lists them all)\n",
            nodes.len() - NODES_SHOWN
        ));
    }
    text.push_str(
        "\nPromote it: set `strategy` to its name under [scheduler] (and drop `shadow`).\n",
    );
    text
}
