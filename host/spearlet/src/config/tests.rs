//! Configuration layering and validation.

use super::*;

#[test]
fn layers_defaults_env_file_flags_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spearlet.toml");
    std::fs::write(
        &file,
        "[spearlet]\nheartbeat_interval = 9\nnode_name = \"from-file\"\n[spearlet.storage]\ndata_dir = \"state\"\n",
    )
    .unwrap();
    let cli = Cli {
        config: Some(file),
        sms_addr: Some("127.0.0.1:7000".into()),
        ..Cli::default()
    };
    let env = |k: &str| match k {
        "SPEARLET_NODE_NAME" => Some("from-env".to_owned()),
        "SPEARLET_SMS_CONNECT_RETRY_MS" => Some("42".to_owned()),
        "SPEARLET_SMS_GRPC_ADDR" => Some("127.0.0.1:2222".to_owned()),
        _ => None,
    };
    let c = SpearletConfig::load_with(&cli, env, None).unwrap();
    assert_eq!(c.spearlet.node_name, "from-file", "file beats environment");
    assert_eq!(
        c.spearlet.sms_connect_retry_ms, 42,
        "environment beats defaults"
    );
    assert_eq!(c.sms_endpoints(), ["http://127.0.0.1:7000"], "flags win");
    assert!(c.sms_required);
    assert_eq!(c.spearlet.heartbeat_interval, 9);
    assert_eq!(c.spearlet.storage.data_dir, dir.path().join("state"));
    assert_eq!(c.executors.enabled, ["wasm", "process", "container"]);
    assert_eq!(
        c.spearlet.reconnect_total_timeout_ms, 0,
        "retries forever by default"
    );
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spearlet.toml");
    let cli = Cli {
        config: Some(file.clone()),
        ..Cli::default()
    };
    let load = |text: &str| {
        std::fs::write(&file, text).unwrap();
        SpearletConfig::load_with(&cli, |_| None, None)
            .unwrap_err()
            .to_string()
    };
    let err = load("[spearlet.logging]\nformat = \"xml\"\nlevel = \"info\"\n");
    assert!(err.contains("spearlet.logging.format: `xml`"), "{err}");
    let err = load("[scheduler]\nstrategy = \"random\"\nshadow = \"adaptive\"\n");
    assert!(
        err.contains("scheduler.shadow") && err.contains("only SMS"),
        "{err}"
    );
    let err = load("[spearlet]\nnode_uuid = \"nope\"\n");
    assert!(err.contains("spearlet.node_uuid"), "{err}");
    let err = load("[spearlet]\nstart_report_delay_ms = 60001\n");
    assert!(
        err.contains("spearlet.start_report_delay_ms: 60001"),
        "{err}"
    );
    let err = load("[spearlet.artifacts]\nfile_prefixes = [\"relative\"]\nfetch_timeout_ms = 0\n");
    assert!(
        err.contains("spearlet.artifacts.file_prefixes: `relative`")
            && err.contains("spearlet.artifacts.fetch_timeout_ms: 0"),
        "every error at once: {err}"
    );
    let err = load("[spearlet]\nbogus = 1\n");
    assert!(err.contains("bogus"), "{err}");
    let err = load("[executors]\nenabled = [\"process\"]\n[executors.config.wasm]\nx = 1\n");
    assert!(err.contains("executors.config.wasm"), "{err}");
    let err = load(
        "[spearlet.functions]\nmax_timeout_ms = 0\ndefault_timeout_ms = 0\nmax_payload_bytes = 0\n\
         start_timeout_ms = 0\nmax_results = 0\nresult_ttl_secs = 0\ntask_ttl_ms = 600001\n\
         max_concurrent = 0\nmax_result_mb = 0\nrate_per_sec = -1.0\nburst = nan\n\
         max_per_function = 100001\nmax_per_binary = 100001\nadaptive_target_ms = 3600001\n\
         pause_idle_ms = 86400001\n",
    );
    for key in [
        "max_timeout_ms",
        "default_timeout_ms",
        "max_payload_bytes",
        "start_timeout_ms",
        "max_results",
        "result_ttl_secs",
        "task_ttl_ms",
        "max_concurrent",
        "max_result_mb",
        "rate_per_sec",
        "burst",
        "max_per_function",
        "max_per_binary",
        "adaptive_target_ms",
        "pause_idle_ms",
    ] {
        assert!(
            err.contains(&format!("spearlet.functions.{key}")),
            "{key}: {err}"
        );
    }
    let err = load("[spearlet.functions]\nmax_timeout_ms = 1000\ndefault_timeout_ms = 2000\n");
    assert!(
        err.contains("spearlet.functions.default_timeout_ms"),
        "{err}"
    );
    let err = load("[spearlet.functions]\nmax_result = 3\n");
    assert!(err.contains("max_result"), "{err}");
}

#[test]
fn open_listeners_need_insecure_and_tokens_come_from_one_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spearlet.toml");
    let mut cli = Cli {
        config: Some(file.clone()),
        ..Cli::default()
    };
    std::fs::write(&file, "[spearlet.http.server]\naddr = \"0.0.0.0:0\"\n").unwrap();
    let err = SpearletConfig::load_with(&cli, |_| None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spearlet.http.server.addr: 0.0.0.0:0") && err.contains("--insecure"),
        "{err}"
    );
    cli.insecure = true;
    SpearletConfig::load_with(&cli, |_| None, None).unwrap();

    let token = dir.path().join("node.token");
    std::fs::write(&token, "spear.abc.def\n").unwrap();
    std::fs::write(
        &file,
        format!(
            "[spearlet]\nsms_token_file = {:?}\n",
            token.display().to_string()
        ),
    )
    .unwrap();
    let c = SpearletConfig::load_with(&cli, |_| None, None).unwrap();
    assert_eq!(c.sms_token().unwrap().as_deref(), Some("spear.abc.def"));
    assert!(
        !format!("{c:?}").contains("spear.abc.def"),
        "the file's path is printed, never a token"
    );
    let env = |k: &str| (k == "SPEARLET_SMS_TOKEN").then(|| "spear.x.y".to_owned());
    let err = SpearletConfig::load_with(&cli, env, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("set one of them"), "{err}");
    std::fs::write(&file, "").unwrap();
    let c = SpearletConfig::load_with(&cli, env, None).unwrap();
    assert_eq!(c.sms_token().unwrap().as_deref(), Some("spear.x.y"));
    assert!(!format!("{c:?}").contains("spear.x.y"), "Debug hides it");
}

#[test]
fn every_problem_is_reported_at_once_naming_where_it_was_set() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spearlet.toml");
    std::fs::write(
        &file,
        "[spearlet]\nheartbeat_intervall = 3\nnode_uuid = \"nope\"\n[spearlet.limits]\nmax_instances = 0\n",
    )
    .unwrap();
    let cli = Cli {
        config: Some(file.clone()),
        heartbeat_interval: Some(0),
        ..Cli::default()
    };
    let env = |k: &str| (k == "SPEARLET_ADVERTISE_IP").then(|| "here".to_owned());
    let err = SpearletConfig::load_with(&cli, env, None).unwrap_err();
    let f = file.display();
    let want = [
        format!("{f}: spearlet.heartbeat_intervall: unknown key"),
        "--heartbeat-interval: spearlet.heartbeat_interval: must be at least 1 second".to_owned(),
        format!("{f}: spearlet.limits.max_instances: must be at least 1"),
        format!("{f}: spearlet.node_uuid: `nope` is not a UUID"),
        "SPEARLET_ADVERTISE_IP: spearlet.advertise_ip: `here` is not an IP address".to_owned(),
    ];
    let got = err.messages();
    assert_eq!(got.len(), want.len(), "{err}");
    for w in &want {
        assert!(got.contains(w), "{w} not in {got:#?}");
    }
}

#[test]
fn an_unknown_key_is_refused_in_every_section() {
    for section in [
        "[spearlet]\n",
        "[spearlet.grpc]\n",
        "[spearlet.http]\n",
        "[spearlet.http.server]\n",
        "[spearlet.storage]\n",
        "[spearlet.logging]\n",
        "[spearlet.limits]\n",
        "[spearlet.artifacts]\n",
        "[spearlet.tls]\n",
        "[executors]\n",
        "",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spearlet.toml");
        std::fs::write(&file, format!("{section}bogus = 1\n")).unwrap();
        let cli = Cli {
            config: Some(file),
            ..Cli::default()
        };
        let err = SpearletConfig::load_with(&cli, |_| None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus: unknown key"), "{section}: {err}");
    }
}
