use super::*;

fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn layers_defaults_env_file_flags_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sms.toml");
    std::fs::write(
        &file,
        "heartbeat_timeout = 30\n[http]\naddr = \"127.0.0.1:9000\"\n",
    )
    .unwrap();
    let cli = Cli {
        config: Some(file),
        grpc_addr: Some("127.0.0.1:7000".parse().unwrap()),
        ..Cli::default()
    };
    let c = SmsConfig::load_with(
        &cli,
        env(&[
            ("SMS_HTTP_ADDR", "127.0.0.1:1111"),
            ("SMS_CLEANUP_INTERVAL", "42"),
            ("SMS_GRPC_ADDR", "127.0.0.1:2222"),
        ]),
        None,
    )
    .unwrap();
    assert_eq!(
        c.http.addr.to_string(),
        "127.0.0.1:9000",
        "file beats environment"
    );
    assert_eq!(c.cleanup_interval, 42, "environment beats defaults");
    assert_eq!(
        c.grpc.addr.to_string(),
        "127.0.0.1:7000",
        "flags beat everything"
    );
    assert_eq!(c.heartbeat_timeout, 30);
    assert_eq!(c.database.db_type, "redb");
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sms.toml");
    std::fs::write(&file, "[log]\nformat = \"xml\"\nlevel = \"info\"\n").unwrap();
    let cli = Cli {
        config: Some(file.clone()),
        ..Cli::default()
    };
    let err = SmsConfig::load_with(&cli, |_| None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("log.format: `xml`"), "{err}");
    std::fs::write(&file, "[grpc]\naddr = \"nowhere\"\n").unwrap();
    let err = SmsConfig::load_with(&cli, |_| None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sms.toml"), "{err}");
    std::fs::write(&file, "bogus = 1\n").unwrap();
    let err = SmsConfig::load_with(&cli, |_| None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn tls_keys_act_or_are_refused_naming_the_key() {
    for (text, key) in [
        (
            "[grpc]\naddr = \"127.0.0.1:1\"\nenable_tls = true\n",
            "grpc.enable_tls",
        ),
        (
            "[http]\naddr = \"127.0.0.1:1\"\nenable_tls = true\n",
            "http.enable_tls",
        ),
        (
            "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
            "tls.cert_file: set, but no listener",
        ),
        (
            "[tls]\ncert_file = \"c.pem\"\n",
            "tls.cert_file: set without tls.key_file",
        ),
        (
            "[http]\naddr = \"127.0.0.1:1\"\nenable_tls = true\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\n",
            "tls.client_ca_file",
        ),
        (
            "[grpc]\naddr = \"127.0.0.1:1\"\nenable_tls = true\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nreload_secs = 0\n",
            "tls.reload_secs",
        ),
        ("[tls]\ncert = \"c\"\n", "cert"),
        (
            "[tls]\nreload_secs = 5\n",
            "tls.reload_secs: there is no tls.cert_file",
        ),
    ] {
        let err = SmsConfig::parse(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
    let c = SmsConfig::parse(
        "[grpc]\naddr = \"127.0.0.1:1\"\nenable_tls = true\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\n",
    )
    .unwrap();
    assert!(c.grpc.enable_tls && !c.http.enable_tls);
    let c = SmsConfig::load_with(
        &Cli::default(),
        env(&[
            ("SMS_HTTP_ENABLE_TLS", "true"),
            ("SMS_TLS_CERT_FILE", "/etc/spear/sms.pem"),
            ("SMS_TLS_KEY_FILE", "/etc/spear/sms-key.pem"),
        ]),
        None,
    )
    .unwrap();
    assert!(c.http.enable_tls);
    assert_eq!(
        c.tls
            .files(spear_edge::tls::ClientCerts::Required)
            .unwrap()
            .cert,
        PathBuf::from("/etc/spear/sms.pem")
    );
}

#[test]
fn dispatch_keys_layer_and_are_checked() {
    let c = SmsConfig::parse("").unwrap();
    assert_eq!(c.dispatch, crate::dispatch::DispatchConfig::default());
    let c = SmsConfig::parse("[dispatch]\nprefetch = 0\n").unwrap();
    assert_eq!((c.dispatch.prefetch, c.dispatch.default_slots), (0, 64));
    let c = SmsConfig::load_with(
        &Cli::default(),
        env(&[("SMS_DISPATCH_DEFAULT_SLOTS", "8")]),
        None,
    )
    .unwrap();
    assert_eq!(c.dispatch.default_slots, 8);
    for (text, key) in [
        ("[dispatch]\nprefetch = 2000\n", "dispatch.prefetch"),
        ("[dispatch]\ndefault_slots = 0\n", "dispatch.default_slots"),
        ("[dispatch]\nslots = 3\n", "slots"),
    ] {
        let err = SmsConfig::parse(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn the_redb_cache_is_set_for_redb_only() {
    let c = SmsConfig::parse("[database]\ncache_mb = 8\n").unwrap();
    assert_eq!(c.database.cache_mb, Some(8));
    for (text, why) in [
        ("[database]\ncache_mb = 0\n", "must be 1 to 65536"),
        (
            "[database]\ndb_type = \"memory\"\ncache_mb = 8\n",
            "only the redb backend has a page cache",
        ),
    ] {
        let err = SmsConfig::parse(text).unwrap_err().to_string();
        assert!(
            err.contains("database.cache_mb") && err.contains(why),
            "{text}: {err}"
        );
    }
}

#[test]
fn the_etcd_keys_are_read_for_etcd_and_refused_with_another_backend() {
    let c = SmsConfig::parse(
        "[database]\ndb_type = \"etcd\"\nendpoints = [\"http://a:2379\", \"http://b:2379\"]\n\
         prefix = \"prod/\"\nmax_txn_ops = 1024\n",
    )
    .unwrap();
    assert_eq!(
        c.database.endpoints.unwrap().list(),
        ["http://a:2379", "http://b:2379"]
    );
    assert_eq!(c.database.prefix.as_deref(), Some("prod/"));
    assert_eq!(c.database.max_txn_ops, Some(1024));
    // From the environment (and a flag), one comma-separated string.
    let c = SmsConfig::load_with(
        &Cli::default(),
        env(&[
            ("SMS_DB_TYPE", "etcd"),
            ("SMS_DB_ENDPOINTS", "http://a:2379, http://b:2379,"),
        ]),
        None,
    )
    .unwrap();
    assert_eq!(
        c.database.endpoints.unwrap().list(),
        ["http://a:2379", "http://b:2379"]
    );
    for (text, key, why) in [
        (
            "[database]\ndb_type = \"etcd\"\n",
            "database.endpoints",
            "needs its cluster's client URLs",
        ),
        (
            "[database]\ndb_type = \"etcd\"\nendpoints = \" , \"\n",
            "database.endpoints",
            "needs its cluster's client URLs",
        ),
        (
            "[database]\ndb_type = \"etcd\"\nendpoints = \"http://a:2379\"\nprefix = \"\"\n",
            "database.prefix",
            "must not be empty",
        ),
        (
            "[database]\nprefix = \"x/\"\n",
            "database.prefix",
            "only the etcd backend takes it (db_type is `redb`)",
        ),
        (
            "[database]\ndb_type = \"memory\"\nendpoints = [\"http://a:2379\"]\n",
            "database.endpoints",
            "only the etcd backend takes it",
        ),
    ] {
        let err = SmsConfig::parse(text).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(why), "{text}: {err}");
    }
}

#[test]
fn retention_keys_are_read_and_checked() {
    let c = SmsConfig::parse("").unwrap();
    assert_eq!(c.retention, crate::retention::RetentionConfig::default());
    let c = SmsConfig::parse(
        "[retention]
memory_count = 5
records_age_secs = 0
",
    )
    .unwrap();
    assert_eq!(
        (c.retention.memory_count, c.retention.records_age_secs),
        (5, 0)
    );
    assert_eq!(
        c.retention.memory_age_secs, 3_600,
        "the others keep their defaults"
    );
    for (text, key) in [
        (
            "[retention]
records_age_secs = 10
",
            "retention.records_age_secs",
        ),
        (
            "[retention]
sweep_interval_secs = 0
",
            "retention.sweep_interval_secs",
        ),
        (
            "[retention]
memory_age_secs = -1
",
            "memory_age_secs",
        ),
        (
            "[retention]
keep_forever = true
",
            "keep_forever",
        ),
    ] {
        let err = SmsConfig::parse(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn every_problem_is_reported_at_once_naming_where_it_was_set() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sms.toml");
    std::fs::write(
        &file,
        "heartbeat_timout = 30\n[log]\nformat = \"xml\"\n[http]\nmax_body = 1\nmax_body_kb = 0\n[files]\nmax_upload_mb = 0\n",
    )
    .unwrap();
    let cli = Cli {
        config: Some(file.clone()),
        heartbeat_timeout: Some(0),
        ..Cli::default()
    };
    let err =
        SmsConfig::load_with(&cli, env(&[("SMS_DISPATCH_PREFETCH", "5000")]), None).unwrap_err();
    let f = file.display();
    let want = [
        format!("{f}: heartbeat_timout: unknown key"),
        format!("{f}: http.max_body: unknown key"),
        format!("{f}: http.max_body_kb: must be 1 to 1048576"),
        "SMS_DISPATCH_PREFETCH: dispatch.prefetch: must be 0 to 1024, not 5000".to_owned(),
        "--heartbeat-timeout: heartbeat_timeout: must be at least 1 second".to_owned(),
        format!("{f}: log.format: `xml` is not `pretty` or `json`"),
        format!("{f}: files.max_upload_mb: must be at least 1"),
    ];
    let got = err.messages();
    assert_eq!(got.len(), want.len(), "{err}");
    for w in &want {
        assert!(
            got.iter().any(|g| g.starts_with(w.as_str())),
            "{w} not in {got:#?}"
        );
    }
    // The problems are typed: each names its key.
    let keys: Vec<_> = err.problems.iter().filter_map(|p| p.key()).collect();
    assert!(
        keys.contains(&"log.format") && keys.contains(&"heartbeat_timout"),
        "{keys:?}"
    );
}

#[test]
fn an_unknown_key_is_refused_in_every_section() {
    for section in [
        "",
        "[grpc]\n",
        "[http]\n",
        "[database]\n",
        "[log]\n",
        "[files]\n",
        "[auth]\n",
        "[tls]\n",
        "[dispatch]\n",
    ] {
        let err = SmsConfig::parse(&format!("{section}bogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus: unknown key"), "{section}: {err}");
    }
}

#[test]
fn the_plugin_sections_and_bootstrap_tokens_are_checked_in_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sms.toml");
    let short = dir.path().join("admin.token");
    std::fs::write(&short, "short\n").unwrap();
    std::fs::write(
        &file,
        format!(
            "heartbeat_timeout = 0\n[auth]\nadmin_token_file = {:?}\n[plugins]\ncall_timeout = 5\n",
            short.display().to_string()
        ),
    )
    .unwrap();
    let cli = Cli {
        config: Some(file.clone()),
        ..Cli::default()
    };
    let err = SmsConfig::load_with(&cli, |_| None, None).unwrap_err();
    let got = err.messages();
    let f = file.display();
    assert_eq!(got.len(), 3, "{err}");
    assert!(
        got.contains(&format!(
            "{f}: heartbeat_timeout: must be at least 1 second"
        )),
        "{got:?}"
    );
    assert!(
        got.iter().any(|m| m.starts_with(&format!(
            "{f}: auth.admin_token_file: a bootstrap admin token must be at least"
        ))),
        "{got:?}"
    );
    assert!(
        got.iter().any(|m| m.starts_with(&format!("{f}: ")) && m.contains("unknown field `call_timeout`")),
        "{got:?}"
    );
}

#[test]
fn node_certificates_act_or_are_refused_naming_the_key() {
    for (text, why) in [
        (
            "[auth]\nnode_certificates = true\n",
            "auth.enabled is false",
        ),
        (
            "[auth]\nenabled = true\nnode_certificates = true\n",
            "set grpc.enable_tls, http.enable_tls and tls.client_ca_file",
        ),
        (
            "[grpc]\naddr = \"127.0.0.1:1\"\nenable_tls = true\n[auth]\nenabled = true\nnode_certificates = true\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\n",
            "set grpc.enable_tls, http.enable_tls and tls.client_ca_file",
        ),
    ] {
        let err = SmsConfig::parse(text).unwrap_err().to_string();
        assert!(
            err.contains("auth.node_certificates: ") && err.contains(why),
            "{text}: {err}"
        );
    }
    let c = SmsConfig::parse(
        "[http]\naddr = \"127.0.0.1:2\"\nenable_tls = true\n[grpc]\naddr = \"127.0.0.1:1\"\nenable_tls = true\n[auth]\nenabled = true\nnode_certificates = true\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\n",
    )
    .unwrap();
    assert!(c.auth.node_certificates);
}

#[test]
fn autoscaler_keys_are_checked_and_split_with_the_plugin_runtime() {
    let base = "[autoscaler]\npolicy = \"queue-depth\"\nmax = 3\n\
                [autoscaler.config]\ntasks_per_node = 2\n\
                [autoscaler.provider]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\n";
    let c = SmsConfig::parse(base).unwrap();
    let a = c.autoscaler.as_ref().unwrap();
    assert_eq!(
        (a.min, a.max, a.interval_ms, a.cooldown_ms),
        (0, 3, 5000, 60_000)
    );
    // The runtime gets the policy and its config; the diff of SMS's own keys does not see them.
    let rc = c.runtime_config().unwrap();
    let sel = rc.autoscaler.unwrap();
    assert_eq!(sel.name, "queue-depth");
    assert_eq!(sel.config_json, r#"{"tasks_per_node":2}"#);
    let shown = serde_json::to_value(a).unwrap();
    assert!(
        shown.get("policy").is_none() && shown.get("config").is_none(),
        "{shown}"
    );
    let exec = "kind = \"exec\"\ncommand = [\"/bin/true\"]\n";
    for (from, to, key) in [
        ("max = 3\n", "max = 0\n", "autoscaler.max"),
        ("max = 3\n", "max = 3\nmin = 5\n", "autoscaler.min"),
        (
            "max = 3\n",
            "max = 3\ninterval_ms = 10\n",
            "autoscaler.interval_ms",
        ),
        (
            "max = 3\n",
            "max = 3\nstart_timeout_ms = 5\n",
            "autoscaler.start_timeout_ms",
        ),
        ("max = 3\n", "max = 3\nmaxx = 3\n", "maxx"),
        (
            "max = 3\n",
            "max = 3\nstart_timeout_ms = 30000\n",
            "autoscaler.start_timeout_ms",
        ),
        (
            "max = 3\n",
            "max = 3\ncooldown_ms = 100000000\n",
            "autoscaler.cooldown_ms",
        ),
        (exec, "kind = \"k8s\"\n", "autoscaler.provider.kind"),
        (
            exec,
            "kind = \"podman\"\nimage = \"i\"\nname_prefix = \"-x\"\n",
            "autoscaler.provider.name_prefix",
        ),
        (
            exec,
            "kind = \"podman\"\nimage = \"i\"\nenv = { SPEARLET_NODE_UUID = \"u\" }\n",
            "autoscaler.provider.env",
        ),
        (
            exec,
            "kind = \"podman\"\nimage = \"i\"\nstop_timeout_secs = 60\ntimeout_ms = 30000\n",
            "autoscaler.provider.stop_timeout_secs",
        ),
        (exec, "kind = \"podman\"\n", "autoscaler.provider.image"),
        (
            exec,
            "kind = \"podman\"\nimage = \"i\"\ncommand = [\"x\"]\n",
            "autoscaler.provider.command",
        ),
        (
            exec,
            "kind = \"docker\"\nimage = \"i\"\nsocket = \"tcp://h:2375\"\n",
            "autoscaler.provider.socket",
        ),
        (
            exec,
            "kind = \"exec\"\ncommand = [\"x\"]\nimage = \"i\"\n",
            "autoscaler.provider.image",
        ),
        (exec, "kind = \"exec\"\n", "autoscaler.provider.command"),
        (
            exec,
            "kind = \"exec\"\ncommand = [\"x\"]\ntimeout_ms = 1\n",
            "autoscaler.provider.timeout_ms",
        ),
    ] {
        let text = base.replace(from, to);
        let err = SmsConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}
