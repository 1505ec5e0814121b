//! The plugin sections of a host's TOML config: `[plugins]`, `[scheduler]`, `[reclaimer]`,
//! `[autoscaler]` (its `policy` and `config`; the section's other keys are the host's).
//!
//! Raw serde structs (unknown keys refused) are compiled by [`RuntimeConfig::compile`] into a
//! validated config, reporting every problem at once. Other top-level tables belong to the host and
//! are left to it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::grants::{Grant, GrantTable, HttpHost, MAX_HTTP_HOSTS, MAX_SCRATCH_MB};
use crate::limits::LimitValues;

#[derive(Debug, Default, Deserialize)]
struct RawFile {
    #[serde(default)]
    plugins: Option<RawPlugins>,
    #[serde(default)]
    scheduler: Option<RawScheduler>,
    #[serde(default)]
    reclaimer: Option<RawReclaimer>,
    #[serde(default)]
    autoscaler: Option<RawAutoscaler>,
    #[serde(flatten)]
    _host: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugins {
    #[serde(default = "default_dir")]
    dir: PathBuf,
    #[serde(default = "default_watch")]
    watch: bool,
    #[serde(default = "default_call_timeout_ms")]
    call_timeout_ms: u64,
    #[serde(default = "default_setup_timeout_ms")]
    setup_timeout_ms: u64,
    #[serde(default = "default_memory_limit_mb")]
    memory_limit_mb: u64,
    #[serde(default = "default_quarantine_after")]
    quarantine_after: u32,
    #[serde(default = "default_wall_factor")]
    wall_factor: u32,
    #[serde(default)]
    cache_dir: Option<PathBuf>,
    #[serde(default)]
    scratch_dir: Option<PathBuf>,
    #[serde(default)]
    require_signed: bool,
    #[serde(default)]
    trusted_keys: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    grants: std::collections::BTreeMap<String, RawGrant>,
}

/// `[plugins.grants.<name>]` ([`crate::grants`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    #[serde(default)]
    http_hosts: Vec<String>,
    #[serde(default)]
    clock: Option<bool>,
    #[serde(default)]
    log: Option<bool>,
    #[serde(default)]
    scratch_mb: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScheduler {
    strategy: String,
    #[serde(default)]
    config: Option<toml::Table>,
    #[serde(default)]
    shadow: Option<String>,
    #[serde(default)]
    shadow_config: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReclaimer {
    policy: String,
    #[serde(default)]
    config: Option<toml::Table>,
    #[serde(default = "default_interval_ms")]
    interval_ms: u64,
}

/// `[autoscaler]`: the runtime's two keys; the host (SMS) owns and checks the others (its
/// provider, limits, interval), so they are left to it here.
#[derive(Debug, Deserialize)]
struct RawAutoscaler {
    policy: String,
    #[serde(default)]
    config: Option<toml::Table>,
    #[serde(flatten)]
    _host: toml::Table,
}

fn default_dir() -> PathBuf {
    PathBuf::from("./plugins")
}
fn default_watch() -> bool {
    true
}
fn default_call_timeout_ms() -> u64 {
    LimitValues::default().call_timeout_ms
}
fn default_setup_timeout_ms() -> u64 {
    LimitValues::default().setup_timeout_ms
}
fn default_memory_limit_mb() -> u64 {
    LimitValues::default().memory_limit_mb
}
fn default_quarantine_after() -> u32 {
    LimitValues::default().quarantine_after
}
fn default_wall_factor() -> u32 {
    LimitValues::default().wall_factor
}
fn default_interval_ms() -> u64 {
    10_000
}

/// A plugin selected for a role, with its JSON configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// The plugin name.
    pub name: String,
    /// Its configuration as a JSON object (`{}` when none).
    pub config_json: String,
}

/// The validated plugin configuration of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeConfig {
    /// The plugin directory (relative paths are relative to the config file). Restart to change.
    pub dir: PathBuf,
    /// Whether the directory and the config file are watched. Restart to change.
    pub watch: bool,
    /// Where compiled components are cached (`None`: no cache). Restart to change.
    pub cache_dir: Option<PathBuf>,
    /// Where granted scratch directories are made (`<plugins.dir>/.scratch` unless set).
    /// Restart to change.
    pub scratch_dir: PathBuf,
    /// Call limits (hot-reloadable).
    pub limits: LimitValues,
    /// The scheduling strategy (hot-reloadable).
    pub scheduler: Option<Selection>,
    /// A candidate strategy run beside it on the same requests, its decisions recorded and never
    /// applied (`scheduler.shadow`, `[scheduler.shadow_config]`; hot-reloadable).
    pub shadow: Option<Selection>,
    /// The reclamation policy (hot-reloadable).
    pub reclaimer: Option<Selection>,
    /// How often a Spearlet asks its reclamation policy (hot-reloadable).
    pub reclaim_interval_ms: u64,
    /// The autoscaling policy (hot-reloadable; SMS's other `[autoscaler]` keys are its own).
    pub autoscaler: Option<Selection>,
    /// Signatures required and keys trusted ([`crate::signing`]). Restart to change.
    pub signing: crate::signing::SigningPolicy,
    /// What each plugin may reach beyond its contract (`[plugins.grants.<name>]`;
    /// hot-reloadable).
    pub grants: GrantTable,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            dir: default_dir(),
            watch: default_watch(),
            cache_dir: Some(default_dir().join(".cache")),
            scratch_dir: default_dir().join(".scratch"),
            limits: LimitValues::default(),
            scheduler: None,
            shadow: None,
            reclaimer: None,
            reclaim_interval_ms: default_interval_ms(),
            autoscaler: None,
            signing: Default::default(),
            grants: GrantTable::new(),
        }
    }
}

/// Keys whose change needs a restart.
pub const RESTART_KEYS: &[&str] = &[
    "plugins.dir",
    "plugins.watch",
    "plugins.cache_dir",
    "plugins.require_signed / plugins.trusted_keys",
    "plugins.scratch_dir",
];

fn compile_grants(
    raw: std::collections::BTreeMap<String, RawGrant>,
    errors: &mut Vec<String>,
) -> GrantTable {
    let mut grants = GrantTable::new();
    for (name, g) in raw {
        let key = format!("plugins.grants.{name}");
        if name.trim().is_empty() {
            errors.push(format!("{key}: must name a plugin"));
        }
        if g.http_hosts.len() > MAX_HTTP_HOSTS {
            errors.push(format!(
                "{key}.http_hosts: at most {MAX_HTTP_HOSTS} hosts, not {}",
                g.http_hosts.len()
            ));
        }
        let mut http_hosts = Vec::new();
        for h in g.http_hosts.iter().take(MAX_HTTP_HOSTS) {
            match HttpHost::parse(h) {
                Ok(h) => http_hosts.push(h),
                Err(e) => errors.push(format!("{key}.http_hosts: {e}")),
            }
        }
        if let Some(mb) = g.scratch_mb
            && !(1..=MAX_SCRATCH_MB).contains(&mb)
        {
            errors.push(format!(
                "{key}.scratch_mb: must be between 1 and {MAX_SCRATCH_MB}, not {mb}"
            ));
        }
        grants.insert(
            name,
            Grant {
                http_hosts,
                clock: g.clock,
                log: g.log,
                scratch_mb: g.scratch_mb,
            },
        );
    }
    grants
}

fn table_to_json(table: Option<toml::Table>, key: &str, errors: &mut Vec<String>) -> String {
    let table = table.unwrap_or_default();
    match serde_json::to_string(&table) {
        Ok(json) => json,
        Err(e) => {
            errors.push(format!("{key}: cannot be expressed as JSON: {e}"));
            "{}".into()
        }
    }
}

impl RuntimeConfig {
    /// Parse and validate TOML text. `base` resolves a relative `plugins.dir`.
    pub fn compile(text: &str, base: Option<&Path>) -> Result<Self> {
        let raw: RawFile = toml::from_str(text).map_err(|e| Error::Config {
            errors: vec![e.to_string().trim().replace('\n', " ")],
        })?;
        let mut errors = Vec::new();
        let mut config = RuntimeConfig::default();
        // `None`: the default, `.cache` in the plugin directory; an empty path turns the cache off.
        let mut cache_dir: Option<PathBuf> = None;
        let mut scratch_dir: Option<PathBuf> = None;
        if let Some(p) = raw.plugins {
            cache_dir = p.cache_dir.clone();
            scratch_dir = p.scratch_dir.clone();
            if scratch_dir
                .as_ref()
                .is_some_and(|d| d.as_os_str().is_empty())
            {
                errors.push("plugins.scratch_dir: must name a directory".into());
            }
            if p.call_timeout_ms == 0 {
                errors.push("plugins.call_timeout_ms: must be at least 1".into());
            }
            if p.setup_timeout_ms < p.call_timeout_ms {
                errors.push(
                    "plugins.setup_timeout_ms: must be at least plugins.call_timeout_ms".into(),
                );
            }
            if p.memory_limit_mb == 0 || p.memory_limit_mb > 4096 {
                errors.push("plugins.memory_limit_mb: must be between 1 and 4096".into());
            }
            if p.quarantine_after == 0 {
                errors.push("plugins.quarantine_after: must be at least 1".into());
            }
            if !(2..=100).contains(&p.wall_factor) {
                errors.push("plugins.wall_factor: must be between 2 and 100".into());
            }
            if p.call_timeout_ms > 60_000 || p.setup_timeout_ms > 600_000 {
                errors.push(
                    "plugins.call_timeout_ms / setup_timeout_ms: at most 60000 / 600000".into(),
                );
            }
            for (name, key) in &p.trusted_keys {
                if let Err(e) = crate::signing::decode_key(key) {
                    errors.push(format!("plugins.trusted_keys.{name}: {e}"));
                }
            }
            if p.require_signed && p.trusted_keys.is_empty() {
                errors.push(
                    "plugins.require_signed: no key is trusted; add one under [plugins.trusted_keys] (`spear plugin keygen` makes one)".into(),
                );
            }
            config.grants = compile_grants(p.grants, &mut errors);
            config.signing = crate::signing::SigningPolicy {
                require: p.require_signed,
                keys: p.trusted_keys,
            };
            config.dir = p.dir;
            config.watch = p.watch;
            config.limits = LimitValues {
                call_timeout_ms: p.call_timeout_ms,
                setup_timeout_ms: p.setup_timeout_ms,
                memory_limit_mb: p.memory_limit_mb,
                quarantine_after: p.quarantine_after,
                wall_factor: p.wall_factor,
            };
        }
        if let Some(base) = base
            && config.dir.is_relative()
        {
            config.dir = base.join(&config.dir);
        }
        config.scratch_dir = match scratch_dir {
            None => config.dir.join(".scratch"),
            Some(d) => match base {
                Some(base) if d.is_relative() => base.join(d),
                _ => d,
            },
        };
        config.cache_dir = match cache_dir {
            None => Some(config.dir.join(".cache")),
            Some(d) if d.as_os_str().is_empty() => None,
            Some(d) => Some(match base {
                Some(base) if d.is_relative() => base.join(d),
                _ => d,
            }),
        };
        if let Some(s) = raw.scheduler {
            if s.strategy.trim().is_empty() {
                errors.push("scheduler.strategy: must name a plugin".into());
            }
            config.scheduler = Some(Selection {
                name: s.strategy,
                config_json: table_to_json(s.config, "scheduler.config", &mut errors),
            });
            match s.shadow {
                Some(name) if name.trim().is_empty() => {
                    errors.push("scheduler.shadow: must name a plugin (or be left out)".into());
                }
                Some(name) => {
                    config.shadow = Some(Selection {
                        name,
                        config_json: table_to_json(
                            s.shadow_config,
                            "scheduler.shadow_config",
                            &mut errors,
                        ),
                    });
                }
                None if s.shadow_config.is_some() => {
                    errors.push("scheduler.shadow_config: given without scheduler.shadow".into())
                }
                None => {}
            }
        }
        if let Some(r) = raw.reclaimer {
            if r.policy.trim().is_empty() {
                errors.push("reclaimer.policy: must name a plugin".into());
            }
            if r.interval_ms == 0 {
                errors.push("reclaimer.interval_ms: must be at least 1".into());
            }
            config.reclaim_interval_ms = r.interval_ms;
            config.reclaimer = Some(Selection {
                name: r.policy,
                config_json: table_to_json(r.config, "reclaimer.config", &mut errors),
            });
        }
        if let Some(a) = raw.autoscaler {
            if a.policy.trim().is_empty() {
                errors.push("autoscaler.policy: must name a plugin".into());
            }
            config.autoscaler = Some(Selection {
                name: a.policy,
                config_json: table_to_json(a.config, "autoscaler.config", &mut errors),
            });
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(Error::Config { errors })
        }
    }

    /// Read and compile a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            file: path.into(),
            source: e,
        })?;
        Self::compile(&text, path.parent())
    }

    /// Keys that differ from `other` and need a restart.
    pub fn restart_keys_changed(&self, other: &RuntimeConfig) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.dir != other.dir {
            keys.push(RESTART_KEYS[0]);
        }
        if self.watch != other.watch {
            keys.push(RESTART_KEYS[1]);
        }
        if self.cache_dir != other.cache_dir {
            keys.push(RESTART_KEYS[2]);
        }
        if self.signing != other.signing {
            keys.push(RESTART_KEYS[3]);
        }
        if self.scratch_dir != other.scratch_dir {
            keys.push(RESTART_KEYS[4]);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_compiled_and_bad_ones_name_their_key() {
        let c = RuntimeConfig::compile(
            "[plugins.grants.http]\nhttp_hosts = [\"127.0.0.1:8099\", \"FaaS.example.com\"]\n\
             clock = true\n[plugins.grants.audit]\nlog = false\n",
            None,
        )
        .unwrap();
        let http = &c.grants["http"];
        let hosts: Vec<String> = http.http_hosts.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["127.0.0.1:8099", "faas.example.com"]);
        assert_eq!((http.clock, http.log), (Some(true), None));
        assert_eq!(c.grants["audit"].log, Some(false));
        assert_eq!(
            crate::grants::describe(&c.grants),
            "audit: no log; http: http 127.0.0.1:8099 faas.example.com, clock"
        );
        let err = RuntimeConfig::compile(
            "[plugins.grants.http]\nhttp_hosts = [\"http://x/\"]\n[plugins.grants.b]\nfiles = true\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("files"), "{err}");
        let err = RuntimeConfig::compile(
            "[plugins.grants.http]\nhttp_hosts = [\"http://x/\", \"h:0\"]\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("plugins.grants.http.http_hosts: `http://x/`")
                && err.contains("plugins.grants.http.http_hosts: `h:0`"),
            "{err}"
        );
        let many: Vec<String> = (0..65).map(|i| format!("\"h{i}\"")).collect();
        let err = RuntimeConfig::compile(
            &format!("[plugins.grants.x]\nhttp_hosts = [{}]\n", many.join(",")),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("at most 64 hosts"), "{err}");
    }

    #[test]
    fn a_scratch_grant_and_its_directory_are_compiled_and_checked() {
        let c = RuntimeConfig::compile(
            "[plugins]\ndir = \"p\"\n[plugins.grants.kv]\nscratch_mb = 64\n",
            Some(Path::new("/etc/spear")),
        )
        .unwrap();
        assert_eq!(c.grants["kv"].scratch_mb, Some(64));
        assert_eq!(crate::grants::describe(&c.grants), "kv: scratch 64 MiB");
        assert_eq!(c.scratch_dir, PathBuf::from("/etc/spear/p/.scratch"));
        let set = RuntimeConfig::compile(
            "[plugins]\nscratch_dir = \"/var/lib/spear/scratch\"\n",
            Some(Path::new("/etc/spear")),
        )
        .unwrap();
        assert_eq!(set.scratch_dir, PathBuf::from("/var/lib/spear/scratch"));
        assert_eq!(
            c.restart_keys_changed(&set),
            ["plugins.dir", "plugins.cache_dir", "plugins.scratch_dir"]
        );
        for (text, key) in [
            (
                "[plugins.grants.kv]\nscratch_mb = 0\n",
                "plugins.grants.kv.scratch_mb",
            ),
            (
                "[plugins.grants.kv]\nscratch_mb = 1048577\n",
                "plugins.grants.kv.scratch_mb",
            ),
            ("[plugins]\nscratch_dir = \"\"\n", "plugins.scratch_dir"),
        ] {
            let err = RuntimeConfig::compile(text, None).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let err = RuntimeConfig::compile(
            "[plugins]\ncall_timeout_ms = 0\nmemory_limit_mb = 0\n[scheduler]\nstrategy = \"\"\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("plugins.call_timeout_ms: must be at least 1"),
            "{err}"
        );
        assert!(err.contains("plugins.memory_limit_mb"), "{err}");
        assert!(
            err.contains("scheduler.strategy: must name a plugin"),
            "{err}"
        );
    }

    #[test]
    fn the_autoscaler_section_gives_the_runtime_its_policy_and_leaves_the_rest_to_the_host() {
        // The whole file, as a reload reads it: SMS's keys beside the runtime's two.
        let c = RuntimeConfig::compile(
            "[autoscaler]\npolicy = \"queue-depth\"\nmax = 3\ncooldown_ms = 5\n\
             [autoscaler.config]\ntasks_per_node = 2\n\
             [autoscaler.provider]\nkind = \"exec\"\ncommand = [\"x\"]\n",
            None,
        )
        .unwrap();
        assert_eq!(
            c.autoscaler,
            Some(Selection {
                name: "queue-depth".into(),
                config_json: "{\"tasks_per_node\":2}".into()
            })
        );
        let err = RuntimeConfig::compile("[autoscaler]\npolicy = \"\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("autoscaler.policy: must name a plugin"),
            "{err}"
        );
    }

    #[test]
    fn a_shadow_is_read_with_its_config_and_checked() {
        let c = RuntimeConfig::compile(
            "[scheduler]\nstrategy = \"round-robin\"\nshadow = \"random\"\n[scheduler.shadow_config]\nseed = 4\n",
            None,
        )
        .unwrap();
        assert_eq!(
            c.shadow,
            Some(Selection {
                name: "random".into(),
                config_json: "{\"seed\":4}".into()
            })
        );
        for (text, want) in [
            (
                "[scheduler]\nstrategy = \"a\"\nshadow = \" \"\n",
                "scheduler.shadow: must name a plugin",
            ),
            (
                "[scheduler]\nstrategy = \"a\"\n[scheduler.shadow_config]\nseed = 1\n",
                "scheduler.shadow_config: given without scheduler.shadow",
            ),
        ] {
            let err = RuntimeConfig::compile(text, None).unwrap_err().to_string();
            assert!(err.contains(want), "{want} in {err}");
        }
    }

    #[test]
    fn unknown_keys_in_plugin_sections_are_refused_and_host_sections_left_alone() {
        let err = RuntimeConfig::compile("[plugins]\ncall_timeout = 5\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `call_timeout`"), "{err}");
        let ok = RuntimeConfig::compile(
            "[grpc]\naddr = \"x\"\n[scheduler]\nstrategy = \"adaptive\"\n[scheduler.config]\nseed = 7\n",
            Some(Path::new("/etc/spear")),
        )
        .unwrap();
        assert_eq!(ok.dir, PathBuf::from("/etc/spear/./plugins"));
        let s = ok.scheduler.unwrap();
        assert_eq!(
            (s.name.as_str(), s.config_json.as_str()),
            ("adaptive", "{\"seed\":7}")
        );
    }

    #[test]
    fn wall_factor_is_checked_and_cache_dir_resolved() {
        let err = RuntimeConfig::compile("[plugins]\nwall_factor = 1\n", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plugins.wall_factor: must be between 2 and 100"),
            "{err}"
        );
        let base = Some(Path::new("/etc/spear"));
        let default = RuntimeConfig::compile("[plugins]\nwall_factor = 10\n", base).unwrap();
        assert_eq!(default.limits.wall_factor, 10);
        assert_eq!(
            default.cache_dir,
            Some(PathBuf::from("/etc/spear/./plugins/.cache"))
        );
        let off = RuntimeConfig::compile("[plugins]\ncache_dir = \"\"\n", base).unwrap();
        assert_eq!(off.cache_dir, None);
        let own = RuntimeConfig::compile("[plugins]\ncache_dir = \"c\"\n", base).unwrap();
        assert_eq!(own.cache_dir, Some(PathBuf::from("/etc/spear/c")));
        assert_eq!(
            own.restart_keys_changed(&default),
            vec!["plugins.cache_dir"]
        );
    }
}
