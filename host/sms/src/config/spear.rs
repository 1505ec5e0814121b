//! What SMS makes of SPEAR-Next's configs: keys of theirs read as ours or accepted without
//! effect ([`SPEAR_KEYS`], applied to the file by [`spear_config::Compat`]), and values of theirs
//! that mean something else here ([`SmsConfig::take_spear_values`]). Each is named in a warning at
//! start (docs/configuration.md, "SPEAR's SMS configs").

use spear_config::Compat;

use super::{Cli, SmsConfig};

/// Why SPEAR's misplaced top-level keys are read as top-level keys.
const AFTER_HTTP: &str = "TOML puts a key written after `[http]` in that table; SPEAR's configs \
                          write these there and mean the top-level key";

/// Keys of SPEAR-Next's SMS configs that are not ours (docs/spear-compat.md).
pub(super) const SPEAR_KEYS: &[Compat] = &[
    Compat::Moved {
        from: "http.enable_swagger",
        to: "enable_swagger",
        why: AFTER_HTTP,
    },
    Compat::Moved {
        from: "http.enable_web_admin",
        to: "enable_web_admin",
        why: AFTER_HTTP,
    },
    Compat::Moved {
        from: "http.heartbeat_timeout",
        to: "heartbeat_timeout",
        why: AFTER_HTTP,
    },
    Compat::Moved {
        from: "http.cleanup_interval",
        to: "cleanup_interval",
        why: AFTER_HTTP,
    },
    Compat::Moved {
        from: "http.max_upload_bytes",
        to: "max_upload_bytes",
        why: AFTER_HTTP,
    },
    Compat::Moved {
        from: "web_admin.addr",
        to: "web_admin_addr",
        why: "SPEAR's `[web_admin] addr`",
    },
    Compat::Ignored {
        key: "web_admin.enable_tls",
        why: "the web admin is served with TLS when http.enable_tls is on",
    },
    Compat::MovedIf {
        from: "grpc.cert_path",
        to: "tls.cert_file",
        when: "grpc.enable_tls",
        why: "SMS's listeners share one certificate, in [tls]",
    },
    Compat::MovedIf {
        from: "grpc.key_path",
        to: "tls.key_file",
        when: "grpc.enable_tls",
        why: "SMS's listeners share one certificate, in [tls]",
    },
    Compat::MovedIf {
        from: "http.cert_path",
        to: "tls.cert_file",
        when: "http.enable_tls",
        why: "SMS's listeners share one certificate, in [tls]",
    },
    Compat::MovedIf {
        from: "http.key_path",
        to: "tls.key_file",
        when: "http.enable_tls",
        why: "SMS's listeners share one certificate, in [tls]",
    },
    Compat::Ignored {
        key: "event_kv",
        why: "SMS keeps its event log in its own storage ([database], [retention])",
    },
];

/// SPEAR's embedded databases, stood in for by `redb` (SMS's durable backend).
const SPEAR_DB_TYPES: &[&str] = &["sled", "rocksdb"];

impl SmsConfig {
    /// SPEAR's values that mean something else here, each with a note: `sled` and `rocksdb`
    /// become `redb`; a connection pool size is not acted on.
    pub(super) fn take_spear_values(&mut self, cli: &Cli) {
        let d = &mut self.database;
        if SPEAR_DB_TYPES.contains(&d.db_type.as_str()) {
            self.notes.push(format!(
                "database.db_type: `{}` is SPEAR's; SMS stores its state in `redb` (durable, one \
                 file at database.path) instead",
                d.db_type
            ));
            d.db_type = "redb".into();
            // sled and RocksDB keep a directory there; redb's file goes inside it.
            if d.path.is_dir() {
                let file = d.path.join("sms.redb");
                self.notes.push(format!(
                    "database.path: {} is a directory (SPEAR's store); the redb file is {}",
                    d.path.display(),
                    file.display()
                ));
                d.path = file;
            }
        }
        if d.pool_size.is_some() || cli.db_pool_size.is_some() {
            self.notes.push(
                "database.pool_size: accepted and not acted on: no storage backend here pools \
                 connections"
                    .into(),
            );
        }
    }
}
