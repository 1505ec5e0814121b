//! Workload traces for `spear sim`: the format, `spear trace export` (a recorded workload, from
//! SMS) and `spear trace generate` (a synthetic one, from documented knobs).
//!
//! A trace is JSON Lines. The first line describes the cluster:
//! `{"trace": "spear/v1", "nodes": [{"name", "cpu_millis", "memory_mb", "slots", "labels", "executors"}]}`;
//! each other line is one execution, in submission order:
//! `{"id", "submit_ms", "duration_ms", "priority", "kind", "needs": {"cpu_millis", "memory_mb", "disk_mb"}, "deadline_ms"?, "required_labels"?, "checkpoint"?}`,
//! times in milliseconds from the trace's start.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Output;
use crate::client::Client;
use crate::error::{CliError, Result};

/// The format's tag, on the first line.
pub const FORMAT: &str = "spear/v1";
/// Longest execution line read (a trace is outside data).
const MAX_LINE: usize = 1 << 20;
/// Longest first line (every node): 2 KiB per node at most.
const MAX_HEADER: usize = MAX_NODES * 2048;
/// Most slots a node may have (SMS's limit).
const MAX_SLOTS: u32 = 65_536;
/// Most executions a trace may hold.
pub const MAX_EXECUTIONS: usize = 10_000_000;
/// Most nodes a trace may describe.
pub const MAX_NODES: usize = 100_000;

/// Resources, as SMS counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Needs {
    /// Thousandths of a core.
    pub cpu_millis: u64,
    /// MiB.
    pub memory_mb: u64,
    /// MiB.
    pub disk_mb: u64,
}

/// A node of the simulated cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceNode {
    /// Its name (a node uuid when exported).
    pub name: String,
    /// CPU, thousandths of a core.
    pub cpu_millis: u64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Executions it runs at once.
    pub slots: u32,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Executable types it runs.
    #[serde(default)]
    pub executors: Vec<String>,
}

/// The first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    trace: String,
    nodes: Vec<TraceNode>,
}

/// One execution of the workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceExecution {
    /// Its id.
    pub id: String,
    /// Submitted this long after the trace's start.
    pub submit_ms: u64,
    /// How long it ran.
    pub duration_ms: u64,
    /// `low`, `normal`, `high` or `urgent`.
    #[serde(default = "normal")]
    pub priority: String,
    /// Executable type.
    #[serde(default = "wasm")]
    pub kind: String,
    /// Resources it needs.
    #[serde(default)]
    pub needs: Needs,
    /// Its deadline, from the trace's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Node labels it requires.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub required_labels: BTreeMap<String, String>,
    /// Whether a preempted run of it starts again from where it stopped (it checkpoints and
    /// recovers from its checkpoint) rather than from the beginning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checkpoint: bool,
}

fn normal() -> String {
    "normal".into()
}

fn wasm() -> String {
    "wasm".into()
}

/// A whole trace.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The cluster.
    pub nodes: Vec<TraceNode>,
    /// The workload, in submission order.
    pub executions: Vec<TraceExecution>,
}

fn bad(path: &Path, line: usize, why: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("{}:{line}: {why}", path.display()))
}

impl Trace {
    /// Read a trace file, checking it line by line (the error names the line).
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        let mut lines = std::io::BufReader::new(file);
        let mut line = String::new();
        let mut n = 0;
        let mut next = |line: &mut String| -> Result<bool> {
            line.clear();
            n += 1;
            let max = if n == 1 { MAX_HEADER } else { MAX_LINE };
            let read = std::io::Read::take(&mut lines, max as u64 + 1)
                .read_line(line)
                .map_err(|e| bad(path, n, e))?;
            if line.len() > max {
                return Err(bad(path, n, format!("longer than {max} bytes")));
            }
            Ok(read > 0)
        };
        if !next(&mut line)? {
            return Err(bad(path, 1, "empty: a trace starts with its nodes"));
        }
        let header: Header = serde_json::from_str(&line).map_err(|e| bad(path, 1, e))?;
        if header.trace != FORMAT {
            return Err(bad(path, 1, format!("not a `{FORMAT}` trace")));
        }
        if header.nodes.is_empty() || header.nodes.len() > MAX_NODES {
            return Err(bad(path, 1, format!("1 to {MAX_NODES} nodes")));
        }
        if let Some(n) = header
            .nodes
            .iter()
            .find(|n| !(1..=MAX_SLOTS).contains(&n.slots))
        {
            return Err(bad(
                path,
                1,
                format!("node `{}`: slots must be 1 to {MAX_SLOTS}", n.name),
            ));
        }
        let mut executions = Vec::new();
        let mut last = 0;
        let mut at = 1;
        while next(&mut line)? {
            at += 1;
            if line.trim().is_empty() {
                continue;
            }
            let e: TraceExecution = serde_json::from_str(&line).map_err(|e| bad(path, at, e))?;
            if e.submit_ms < last {
                return Err(bad(path, at, "executions must be in submission order"));
            }
            if !matches!(e.priority.as_str(), "low" | "normal" | "high" | "urgent") {
                return Err(bad(path, at, format!("priority `{}`", e.priority)));
            }
            last = e.submit_ms;
            executions.push(e);
            if executions.len() > MAX_EXECUTIONS {
                return Err(bad(
                    path,
                    at,
                    format!("more than {MAX_EXECUTIONS} executions"),
                ));
            }
        }
        Ok(Self {
            nodes: header.nodes,
            executions,
        })
    }

    /// Write it as JSON Lines.
    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let header = Header {
            trace: FORMAT.into(),
            nodes: self.nodes.clone(),
        };
        writeln!(out, "{}", serde_json::to_string(&header)?)?;
        for e in &self.executions {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        }
        out.flush()
    }
}

fn write_to(trace: &Trace, out: Option<&PathBuf>) -> Result<()> {
    let io = |e: std::io::Error| CliError::Usage(format!("cannot write the trace: {e}"));
    match out {
        Some(path) => {
            let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
            trace.write(&mut f).map_err(io)
        }
        None => trace.write(&mut std::io::stdout().lock()).map_err(io),
    }
}

/// `spear trace export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Executions submitted at or after this time: ms since the Unix epoch.
    #[arg(long)]
    since: i64,
    /// …and before this one (default: now).
    #[arg(long)]
    until: Option<i64>,
    /// Write here (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `spear trace export`: SMS's nodes and its finished executions submitted in the window (those
/// that ran: their start, and their run's duration from their result), as a trace.
pub async fn export(args: ExportArgs, client: &Client, out: Output) -> Result<i32> {
    let nodes = client.get("/api/v1/nodes", None).await?;
    let nodes: Vec<TraceNode> = nodes["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|n| TraceNode {
            name: n["uuid"].as_str().unwrap_or_default().to_owned(),
            cpu_millis: n["capacity"]["cpu_millis"].as_u64().unwrap_or(0),
            memory_mb: n["capacity"]["memory_mb"].as_u64().unwrap_or(0),
            slots: n["slots"].as_u64().unwrap_or(1).clamp(1, 65_536) as u32,
            labels: serde_json::from_value(n["labels"].clone()).unwrap_or_default(),
            executors: serde_json::from_value(n["executors"].clone()).unwrap_or_default(),
        })
        .collect();
    let mut all: Vec<Value> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/executions?since={}&limit=1000", args.since);
        if let Some(t) = &token {
            path.push_str(&format!("&page_token={t}"));
        }
        let page = client.get(&path, None).await?;
        all.extend(page["executions"].as_array().cloned().unwrap_or_default());
        match page["next_page_token"].as_str() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
        if all.len() > MAX_EXECUTIONS {
            return Err(CliError::Usage(format!(
                "more than {MAX_EXECUTIONS} executions since {}: narrow the window",
                args.since
            )));
        }
    }
    let until = args.until.unwrap_or(i64::MAX);
    let ran: Vec<&Value> = all
        .iter()
        .filter(|e| {
            let at = e["submitted_at_ms"].as_i64().unwrap_or(0);
            at >= args.since && at < until && e["started_at_ms"].as_i64().unwrap_or(0) > 0
        })
        .filter(|e| e["result"]["duration_ms"].is_u64())
        .collect();
    let start = ran
        .iter()
        .filter_map(|e| e["submitted_at_ms"].as_i64())
        .min()
        .unwrap_or(args.since);
    let rel = |ms: i64| u64::try_from(ms.saturating_sub(start)).unwrap_or(0);
    let mut executions: Vec<TraceExecution> = ran
        .iter()
        .map(|e| TraceExecution {
            id: e["execution_id"].as_str().unwrap_or_default().to_owned(),
            submit_ms: rel(e["submitted_at_ms"].as_i64().unwrap_or(start)),
            duration_ms: e["result"]["duration_ms"].as_u64().unwrap_or(0),
            priority: e["priority"].as_str().unwrap_or("normal").to_owned(),
            kind: e["executable"]["type"]
                .as_str()
                .unwrap_or("wasm")
                .to_owned(),
            needs: serde_json::from_value(e["needs"].clone()).unwrap_or_default(),
            deadline_ms: e["deadline_ms"].as_i64().filter(|d| *d > 0).map(rel),
            required_labels: serde_json::from_value(e["required_labels"].clone())
                .unwrap_or_default(),
            // It checkpoints and a next attempt restores the checkpoint.
            checkpoint: e["checkpoint"] == true && e["recovery"] != "restart",
        })
        .collect();
    executions.sort_by_key(|e| e.submit_ms);
    if nodes.is_empty() {
        return Err(CliError::Usage(
            "SMS knows no node to describe the cluster".into(),
        ));
    }
    let n = executions.len();
    write_to(&Trace { nodes, executions }, args.out.as_ref())?;
    if out == Output::Text && args.out.is_some() {
        eprintln!("{n} executions exported");
    }
    Ok(0)
}

/// `spear trace generate`: a synthetic workload (the knobs are documented in docs/cli.md).
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Executions.
    #[arg(long, default_value_t = 10_000)]
    pub executions: u64,
    /// Nodes.
    #[arg(long, default_value_t = 20)]
    pub nodes: u64,
    /// Slots per node.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Node sizes vary: one in three has twice the CPU and slots, one in three four times.
    #[arg(long)]
    pub heterogeneous: bool,
    /// Arrivals per second (Poisson).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Mean run time in ms (log-normal, sigma 1).
    #[arg(long, default_value_t = 1_000)]
    pub duration_ms: u64,
    /// Share of executions with a deadline (0 to 1); its slack is 2 to 10 times its run time.
    #[arg(long, default_value_t = 0.2)]
    pub deadline_fraction: f64,
    /// Zones the nodes are labelled with (`zone=z0…`).
    #[arg(long, default_value_t = 3)]
    pub zones: u64,
    /// Share of executions that require a zone (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    pub pinned_fraction: f64,
    /// Share of executions that checkpoint (0 to 1): a preempted run of one starts again from
    /// where it stopped.
    #[arg(long, default_value_t = 0.0)]
    pub checkpoint_fraction: f64,
    /// Seed: the same knobs and seed give the same trace.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write here (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A small deterministic generator (xorshift64*), the same everywhere.
pub struct Rng(u64);

impl Rng {
    /// Seeded (0 is taken as 1).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

/// Build the synthetic trace `args` describes.
pub fn generate(args: &GenerateArgs) -> Result<Trace> {
    let share = |v: f64, name: &str| -> Result<f64> {
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(CliError::Usage(format!(
                "--{name}: must be between 0 and 1"
            )))
        }
    };
    let deadline_fraction = share(args.deadline_fraction, "deadline-fraction")?;
    let pinned_fraction = share(args.pinned_fraction, "pinned-fraction")?;
    let checkpoint_fraction = share(args.checkpoint_fraction, "checkpoint-fraction")?;
    if args.nodes == 0 || args.nodes as usize > MAX_NODES {
        return Err(CliError::Usage(format!("--nodes: 1 to {MAX_NODES}")));
    }
    if args.executions as usize > MAX_EXECUTIONS {
        return Err(CliError::Usage(format!(
            "--executions: at most {MAX_EXECUTIONS}"
        )));
    }
    let rate_ok = args.rate > 0.0 && args.rate.is_finite();
    if !rate_ok || !(1..=MAX_SLOTS).contains(&args.slots) || args.zones == 0 {
        return Err(CliError::Usage(format!(
            "--rate must be above 0, --slots 1 to {MAX_SLOTS}, --zones at least 1"
        )));
    }
    let mut rng = Rng::new(args.seed);
    let nodes = (0..args.nodes)
        .map(|i| {
            let size: u64 = if args.heterogeneous {
                [1, 2, 4][(i % 3) as usize]
            } else {
                1
            };
            TraceNode {
                name: format!("node-{i}"),
                cpu_millis: 4_000 * size,
                memory_mb: 8_192 * size,
                slots: args.slots.saturating_mul(size as u32).min(MAX_SLOTS),
                labels: BTreeMap::from([("zone".to_owned(), format!("z{}", i % args.zones))]),
                executors: vec!["wasm".into(), "process".into()],
            }
        })
        .collect();
    let mut t = 0.0f64;
    let priorities = [
        "low", "normal", "normal", "normal", "normal", "normal", "normal", "high", "high", "urgent",
    ];
    let executions = (0..args.executions)
        .map(|i| {
            t += -rng.unit().ln() / args.rate * 1000.0;
            // Log-normal with sigma 1 and the given mean: mu = ln(mean) - 1/2.
            let z = (-2.0 * rng.unit().ln()).sqrt() * (std::f64::consts::TAU * rng.unit()).cos();
            let mean = args.duration_ms.max(1) as f64;
            let duration = ((mean.ln() - 0.5 + z).exp()).clamp(1.0, 3_600_000.0) as u64;
            let submit_ms = t as u64;
            let deadline_ms = (rng.unit() < deadline_fraction)
                .then(|| submit_ms.saturating_add(duration.saturating_mul(2 + rng.next() % 9)));
            let required_labels = if rng.unit() < pinned_fraction {
                BTreeMap::from([("zone".to_owned(), format!("z{}", rng.next() % args.zones))])
            } else {
                BTreeMap::new()
            };
            TraceExecution {
                id: format!("e{i}"),
                submit_ms,
                duration_ms: duration,
                priority: priorities[(rng.next() % priorities.len() as u64) as usize].into(),
                kind: "wasm".into(),
                needs: Needs {
                    cpu_millis: [250, 500, 1_000, 2_000][(rng.next() % 4) as usize],
                    memory_mb: [128, 256, 512][(rng.next() % 3) as usize],
                    disk_mb: 0,
                },
                deadline_ms,
                required_labels,
                // Drawn last, and only when asked: traces without it keep their bytes.
                checkpoint: checkpoint_fraction > 0.0 && rng.unit() < checkpoint_fraction,
            }
        })
        .collect();
    Ok(Trace { nodes, executions })
}

/// Run `spear trace generate`.
pub fn run_generate(args: GenerateArgs) -> Result<i32> {
    let trace = generate(&args)?;
    write_to(&trace, args.out.as_ref())?;
    Ok(0)
}
