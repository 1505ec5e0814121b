//! The checks of a loaded Spearlet configuration that types alone do not make: ranges, paths,
//! addresses, the TLS and object-store sections.

use spear_config::Problems;

use super::SpearletConfig;

impl SpearletConfig {
    /// Check the values that types alone do not, adding each problem to `problems`.
    pub(super) fn validate(&self, problems: &mut Problems) {
        let s = &self.spearlet;
        self.check_tls(problems);
        for key in ["shadow", "shadow_config"] {
            if self.scheduler.as_ref().is_some_and(|t| t.contains_key(key)) {
                problems.invalid(
                    &format!("scheduler.{key}"),
                    "only SMS evaluates a shadow strategy; remove it from the Spearlet's config",
                );
            }
        }
        if s.heartbeat_interval == 0 {
            problems.invalid("spearlet.heartbeat_interval", "must be at least 1 second");
        }
        problems.check(self.sms_token());
        self.check_listeners(problems);
        for (key, v) in [
            ("spearlet.sms_connect_timeout_ms", s.sms_connect_timeout_ms),
            ("spearlet.sms_connect_retry_ms", s.sms_connect_retry_ms),
        ] {
            if v == 0 {
                problems.invalid(key, "must be at least 1");
            }
        }
        if s.start_report_delay_ms > 60_000 {
            problems.invalid(
                "spearlet.start_report_delay_ms",
                format!("{} is over 60000", s.start_report_delay_ms),
            );
        }
        if !(1..=3_600_000).contains(&s.artifacts.fetch_timeout_ms) {
            problems.invalid(
                "spearlet.artifacts.fetch_timeout_ms",
                format!(
                    "{} is not between 1 and 3600000",
                    s.artifacts.fetch_timeout_ms
                ),
            );
        }
        s.objects.validate(problems);
        s.functions.validate(problems);
        for (key, store) in [
            ("spearlet.artifacts.s3", &s.artifacts.s3),
            ("spearlet.artifacts.minio", &s.artifacts.minio),
        ] {
            if let Some(store) = store {
                store.validate(key, problems);
            }
        }
        if let Some(m) = &s.artifacts.minio
            && m.endpoint.is_none()
        {
            problems.invalid(
                "spearlet.artifacts.minio.endpoint",
                "MinIO has no default endpoint: give its http(s):// URL",
            );
        }
        if let Err((key, message)) = s.artifacts.object_stores(|k| std::env::var(k).ok()) {
            problems.invalid(&key, message);
        }
        for p in &s.artifacts.file_prefixes {
            if !p.is_absolute() {
                problems.invalid(
                    "spearlet.artifacts.file_prefixes",
                    format!("`{}` is not an absolute path", p.display()),
                );
            }
        }
        if !["pretty", "json"].contains(&s.logging.format.as_str()) {
            problems.invalid(
                "spearlet.logging.format",
                format!("`{}` is not `pretty` or `json`", s.logging.format),
            );
        }
        for (key, v) in [
            ("spearlet.limits.max_concurrent", s.limits.max_concurrent),
            (
                "spearlet.limits.max_instances_per_task",
                s.limits.max_instances_per_task,
            ),
            ("spearlet.limits.max_instances", s.limits.max_instances),
        ] {
            if v == 0 {
                problems.invalid(key, "must be at least 1");
            }
        }
        if !s.node_uuid.is_empty() && uuid::Uuid::parse_str(&s.node_uuid).is_err() {
            problems.invalid(
                "spearlet.node_uuid",
                format!("`{}` is not a UUID", s.node_uuid),
            );
        }
        if !s.advertise_ip.is_empty() && s.advertise_ip.parse::<std::net::IpAddr>().is_err() {
            problems.invalid(
                "spearlet.advertise_ip",
                format!("`{}` is not an IP address", s.advertise_ip),
            );
        }
        if self.executors.enabled.is_empty() {
            problems.invalid("executors.enabled", "name at least one executor plugin");
        }
        for name in self.executors.config.keys() {
            if !self.executors.enabled.contains(name) {
                problems.invalid(
                    &format!("executors.config.{name}"),
                    format!("`{name}` is not in executors.enabled"),
                );
            }
        }
    }
}
