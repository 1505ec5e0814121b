//! From an [`ExecSpec`] to a container: its name (the handle), its labels and its configuration.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::models::{ContainerCreateBody, HostConfig};
use spear_plugin_api::executor::ExecSpec;

/// Output kept per stream when the spec sets no cap.
pub(crate) const DEFAULT_CAP: u64 = 16 * 1024 * 1024;

/// Label keys under a prefix (`spear` by default).
#[derive(Debug, Clone)]
pub(crate) struct Labels {
    prefix: String,
}

impl Labels {
    /// Labels under `prefix` (`spear` → `spear.execution`, `spear.managed`, …).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// The key `prefix.name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// The container name (and so the handle) of an execution: `prefix-id`, with characters the
    /// engine refuses replaced and, when anything was replaced, a hash of the id appended so that
    /// two ids never share a name.
    pub fn container_name(&self, execution_id: &str) -> String {
        let raw = format!("{}-{execution_id}", self.prefix);
        let clean: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if clean == raw && clean.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            clean
        } else {
            format!("x{clean}-{:016x}", fnv1a(execution_id.as_bytes()))
        }
    }

    /// The labels of a new container. `deadline_ms` is the wall-clock end of its time limit (0 =
    /// none) and `cap` the output kept per stream: both let a recovering agent carry on.
    pub fn of(&self, spec: &ExecSpec, deadline_ms: u64, cap: u64) -> HashMap<String, String> {
        HashMap::from([
            (self.key("managed"), "true".to_string()),
            (self.key("execution"), spec.execution_id.clone()),
            (self.key("task"), spec.task.clone()),
            (self.key("deadline_unix_ms"), deadline_ms.to_string()),
            (self.key("output_cap"), cap.to_string()),
            (
                self.key("memory_limit_mb"),
                spec.memory_limit_mb.to_string(),
            ),
        ])
    }
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Milliseconds since the Unix epoch now.
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The output cap of a spec (0 = the 16 MiB default).
pub(crate) fn output_cap(spec: &ExecSpec) -> u64 {
    if spec.output_cap_bytes == 0 {
        DEFAULT_CAP
    } else {
        spec.output_cap_bytes
    }
}

/// What every container gets whatever its spec says: no capabilities but `cap_add`, no new
/// privileges, a pids limit, a memory limit when the spec names none, optionally a read-only root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hardening {
    /// Capabilities given back after dropping them all (`NET_BIND_SERVICE`, `CAP_CHOWN`, …).
    pub cap_add: Vec<String>,
    /// Processes cannot gain privileges (setuid binaries, file capabilities).
    pub no_new_privileges: bool,
    /// Processes a container may have at once (0: the engine's default, often none).
    pub pids_limit: i64,
    /// Memory limit of a container whose spec names none, MiB (0: none).
    pub default_memory_mb: u64,
    /// Mount the image's root file system read-only.
    pub read_only_rootfs: bool,
}

impl Default for Hardening {
    fn default() -> Self {
        Self {
            cap_add: Vec::new(),
            no_new_privileges: true,
            pids_limit: 512,
            default_memory_mb: 512,
            read_only_rootfs: false,
        }
    }
}

impl Hardening {
    /// Refuse values the engine would misread, naming the key.
    pub fn check(&self) -> Result<(), String> {
        if self.pids_limit < 0 {
            return Err(format!(
                "pids_limit {}: give 0 (the engine's default) or a positive number",
                self.pids_limit
            ));
        }
        for cap in &self.cap_add {
            let name = cap.strip_prefix("CAP_").unwrap_or(cap);
            if name.is_empty()
                || name == "ALL"
                || !name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            {
                return Err(format!(
                    "cap_add `{cap}`: one capability's name such as NET_BIND_SERVICE (not ALL)"
                ));
            }
        }
        Ok(())
    }
}

/// The container configuration of a spec, running `image`.
pub(crate) fn create_body(
    spec: &ExecSpec,
    image: &str,
    labels: HashMap<String, String>,
    hardening: &Hardening,
) -> ContainerCreateBody {
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let memory_mb = if spec.memory_limit_mb > 0 {
        spec.memory_limit_mb
    } else {
        hardening.default_memory_mb
    };
    let host_config = HostConfig {
        memory: (memory_mb > 0).then(|| to_i64(memory_mb.saturating_mul(1024 * 1024))),
        nano_cpus: (spec.cpu_millis > 0).then(|| to_i64(spec.cpu_millis.saturating_mul(1_000_000))),
        network_mode: (!spec.network).then(|| "none".to_string()),
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add: (!hardening.cap_add.is_empty()).then(|| hardening.cap_add.clone()),
        security_opt: hardening
            .no_new_privileges
            .then(|| vec!["no-new-privileges".to_string()]),
        pids_limit: (hardening.pids_limit > 0).then_some(hardening.pids_limit),
        readonly_rootfs: hardening.read_only_rootfs.then_some(true),
        ..HostConfig::default()
    };
    let stdin = !spec.stdin.is_empty();
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: (!spec.env.is_empty())
            .then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: spec.working_dir.clone(),
        labels: Some(labels),
        tty: Some(false),
        attach_stdin: Some(stdin),
        open_stdin: Some(stdin),
        stdin_once: Some(stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        let l = Labels::new("spear");
        assert_eq!(l.container_name("e-1.a_b"), "spear-e-1.a_b");
        let a = l.container_name("a/b");
        let b = l.container_name("a_b");
        assert_ne!(a, b);
        assert!(a.starts_with("xspear-a_b-"), "{a}");
        assert_eq!(l.key("managed"), "spear.managed");
    }

    #[test]
    fn limits_and_network_map_to_the_host_config() {
        let spec = ExecSpec {
            memory_limit_mb: 32,
            cpu_millis: 500,
            stdin: b"x".to_vec(),
            ..ExecSpec::default()
        };
        let body = create_body(&spec, "img", HashMap::new(), &Hardening::default());
        let hc = body.host_config.unwrap();
        assert_eq!(hc.memory, Some(32 * 1024 * 1024));
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.cmd, None);
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_string()]));
        assert_eq!(hc.pids_limit, Some(512));
    }

    #[test]
    fn hardening_defaults_fill_in_and_can_be_loosened() {
        let spec = ExecSpec::default();
        let hc = create_body(&spec, "img", HashMap::new(), &Hardening::default())
            .host_config
            .unwrap();
        assert_eq!(
            hc.memory,
            Some(512 * 1024 * 1024),
            "the default memory limit"
        );
        assert_eq!(hc.readonly_rootfs, None);
        let loose = Hardening {
            cap_add: vec!["NET_BIND_SERVICE".into()],
            no_new_privileges: false,
            pids_limit: 0,
            default_memory_mb: 0,
            read_only_rootfs: true,
        };
        loose.check().unwrap();
        let hc = create_body(&spec, "img", HashMap::new(), &loose)
            .host_config
            .unwrap();
        assert_eq!(hc.memory, None);
        assert_eq!(hc.cap_add, Some(vec!["NET_BIND_SERVICE".to_string()]));
        assert_eq!((hc.security_opt, hc.pids_limit), (None, None));
        assert_eq!(hc.readonly_rootfs, Some(true));
        for bad in [
            Hardening {
                pids_limit: -1,
                ..Hardening::default()
            },
            Hardening {
                cap_add: vec!["net admin".into()],
                ..Hardening::default()
            },
            Hardening {
                cap_add: vec!["ALL".into()],
                ..Hardening::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
