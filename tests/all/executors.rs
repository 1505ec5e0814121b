//! The `process` executor, loaded as the Spearlet will load it (a native plugin through the
//! runtime), against real processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::Executor;
use spear_plugin_api::executor::{ExecSpec, ExecState, ExitStatus};
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::guest;

fn executor() -> Box<dyn Executor> {
    executor_with("{}").unwrap()
}

/// The executor configured with `config` (`[executors.config.process]` as JSON).
fn executor_with(config: &str) -> Result<Box<dyn Executor>, String> {
    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let plugin = load_file(&guest("native", "process.so"), &engine, &limits).unwrap();
    assert_eq!(plugin.info.kind, spear_plugin_api::PluginKind::Executor);
    let mut e = plugin.executor().unwrap();
    e.configure(config).map_err(|e| e.to_string())?;
    assert_eq!(e.capabilities().executable_type, "process");
    Ok(e)
}

/// Run `program args` to its end on `x`; its standard output.
fn output(x: &dyn Executor, s: &ExecSpec) -> String {
    let h = x.start(s).unwrap();
    let r = x.wait(&h, 20_000).unwrap().expect("finished");
    x.destroy(&h).unwrap();
    assert_eq!(r.status, ExitStatus::Exited(0), "{r:?}");
    String::from_utf8(r.stdout).unwrap()
}

fn spec(id: &str, program: &str, args: &[&str]) -> ExecSpec {
    ExecSpec {
        execution_id: id.into(),
        entry: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..ExecSpec::default()
    }
}

#[test]
fn runs_a_program_with_args_env_stdin_and_working_dir() {
    let x = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        "e1",
        "/bin/sh",
        &[
            "-c",
            "read line; echo \"$GREETING $1 $line\"; pwd; echo oops >&2; exit 3",
            "sh",
            "world",
        ],
    );
    s.env = vec![("GREETING".into(), "hello".into())];
    s.stdin = b"from stdin\n".to_vec();
    s.working_dir = Some(dir.path().display().to_string());
    let h = x.start(&s).unwrap();
    let r = x.wait(&h, 10_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::Exited(3));
    let out = String::from_utf8(r.stdout).unwrap();
    assert!(out.starts_with("hello world from stdin\n"), "{out}");
    assert!(out.contains(&dir.path().display().to_string()), "{out}");
    assert_eq!(r.stderr, b"oops\n");
    assert!(matches!(x.inspect(&h).unwrap(), ExecState::Finished(_)));
    x.destroy(&h).unwrap();
    assert!(matches!(x.inspect(&h).unwrap(), ExecState::Unknown));
}

#[test]
fn a_program_that_loops_is_killed_with_its_whole_process_group_at_the_timeout() {
    let x = executor();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let mut s = spec(
        "loop",
        "/bin/sh",
        &[
            "-c",
            &format!(
                "sleep 60 & echo $! > {}; while :; do :; done",
                pidfile.display()
            ),
        ],
    );
    s.timeout_ms = 300;
    let start = Instant::now();
    let h = x.start(&s).unwrap();
    let r = x.wait(&h, 20_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::TimedOut);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // The background grandchild died with the group.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(
            Instant::now() < deadline,
            "grandchild {pid} survived the timeout"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn output_past_the_cap_is_dropped_and_flagged_and_the_agent_is_unaffected() {
    let x = executor();
    let mut s = spec(
        "flood",
        "/bin/sh",
        &["-c", "head -c 100000000 /dev/zero; echo done >&2"],
    );
    s.output_cap_bytes = 1024 * 1024;
    let h = x.start(&s).unwrap();
    let r = x.wait(&h, 60_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::Exited(0));
    assert_eq!(r.stdout.len(), 1024 * 1024);
    assert!(r.stdout_truncated);
    assert!(!r.stderr_truncated);
    assert_eq!(r.stderr, b"done\n");
}

#[test]
fn signals_stop_stats_and_refusals() {
    let x = executor();
    let h = x.start(&spec("sleeper", "/bin/sleep", &["30"])).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(matches!(x.inspect(&h).unwrap(), ExecState::Running));
    let stats = x.stats(&h).unwrap();
    assert!(stats.memory_bytes > 0, "{stats:?}");
    x.stop(&h, 2_000).unwrap();
    let r = x.wait(&h, 5_000).unwrap().expect("stopped");
    assert_eq!(r.status, ExitStatus::Signaled(libc_sigterm()));

    let err = x
        .start(&spec("bad", "/definitely/not/a/program", &[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot start `/definitely/not/a/program`"),
        "{err}"
    );
    let err = x.start(&spec("empty", "", &[])).unwrap_err().to_string();
    assert!(err.contains("entry"), "{err}");
    assert!(
        x.wait("nope", 10)
            .unwrap_err()
            .to_string()
            .contains("no execution nope")
    );
    assert!(!x.recover("sleeper").unwrap());
}

fn libc_sigterm() -> i32 {
    15
}

#[test]
fn a_memory_limit_stops_a_program_that_allocates_past_it() {
    let x = executor();
    // Python is on every machine of this project; allocate 512 MiB under a 64 MiB limit.
    let mut s = spec(
        "hog",
        "python3",
        &["-c", "b = bytearray(512 * 1024 * 1024); print('allocated')"],
    );
    s.memory_limit_mb = 64;
    let h = x.start(&s).unwrap();
    let r = x.wait(&h, 30_000).unwrap().expect("finished");
    assert_ne!(r.status, ExitStatus::Exited(0), "{r:?}");
    assert!(!String::from_utf8_lossy(&r.stdout).contains("allocated"));
}

#[test]
fn recover_after_an_agent_restart_kills_what_the_old_agent_left() {
    let old = executor();
    let h = old
        .start(&spec("orphan", "/bin/sh", &["-c", "sleep 60 & sleep 60"]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pid: i32 = h
        .split_once('@')
        .unwrap()
        .1
        .split_once(':')
        .unwrap()
        .0
        .parse()
        .unwrap();
    assert!(old.recover(&h).unwrap(), "its own agent still holds it");
    // A new agent (a fresh executor) cannot re-attach, and cleans up instead.
    let new = executor();
    assert!(!new.recover(&h).unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z") {
            break;
        }
        assert!(Instant::now() < deadline, "process {pid} survived recover");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = old.wait(&h, 5_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::Signaled(9));
}

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn many_programs_at_once_share_one_watcher_thread_and_each_gets_its_own_output() {
    let x = executor();
    // The watcher starts with the first program.
    let h = x.start(&spec("first", "/bin/true", &[])).unwrap();
    x.wait(&h, 10_000).unwrap().expect("finished");
    let before = threads();
    let n = 64;
    let handles: Vec<String> = (0..n)
        .map(|i| {
            let mut s = spec(&format!("cat{i}"), "/bin/sh", &["-c", "sleep 0.3; cat"]);
            s.stdin = format!("input {i}\n").repeat(1000).into_bytes();
            x.start(&s).unwrap()
        })
        .collect();
    // All 64 are running (each sleeps first): no thread was started for any of them. (Other
    // tests run beside this one in this process, so allow for a few of theirs.)
    let during = threads();
    assert!(
        during < before + 8,
        "{n} programs added {} threads",
        during - before
    );
    for (i, h) in handles.iter().enumerate() {
        let r = x.wait(h, 30_000).unwrap().expect("finished");
        assert_eq!(r.status, ExitStatus::Exited(0), "{i}");
        assert_eq!(
            r.stdout,
            format!("input {i}\n").repeat(1000).into_bytes(),
            "{i}"
        );
        x.destroy(h).unwrap();
    }
}

#[test]
fn input_a_program_never_reads_does_not_hold_up_its_end() {
    let x = executor();
    let mut s = spec("deaf", "/bin/true", &[]);
    // Far more than a pipe holds: the rest is dropped when the program exits unread.
    s.stdin = vec![b'x'; 8 * 1024 * 1024];
    let h = x.start(&s).unwrap();
    let r = x.wait(&h, 10_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::Exited(0));
    // A grandchild that keeps the output open keeps the execution running until it ends.
    let h = x
        .start(&spec(
            "heir",
            "/bin/sh",
            &["-c", "(sleep 0.5; echo late) & echo early"],
        ))
        .unwrap();
    let r = x.wait(&h, 10_000).unwrap().expect("finished");
    assert_eq!(r.stdout, b"early\nlate\n");
}

/// CPU clock ticks (1/100 s) the process watchers of this process have used, all together.
fn watcher_ticks() -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        // The kernel keeps 15 bytes of a thread's name.
        if comm.trim() != "spear-process-i" {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        ticks += f.get(11).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    }
    ticks
}

#[test]
fn an_ended_program_whose_output_a_descendant_holds_is_watched_without_spinning() {
    let x = executor();
    // The shell ends at once; its background child keeps stdout open for 2 s, well past the
    // 200 ms timeout (which then has nothing left to stop: the program itself has ended).
    let mut s = spec(
        "holder",
        "/bin/sh",
        &["-c", "(sleep 2; echo late) & echo early"],
    );
    s.timeout_ms = 200;
    let h = x.start(&s).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let before = watcher_ticks();
    std::thread::sleep(Duration::from_millis(1000));
    let used = watcher_ticks() - before;
    // A watcher polling with a zero wait burns about 100 ticks a second; other tests' watchers
    // in this process read far less than that.
    assert!(used < 30, "the watchers used {used} ticks in a second");
    let r = x.wait(&h, 10_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::Exited(0));
    assert_eq!(r.stdout, b"early\nlate\n");
}

#[test]
fn a_program_sees_only_the_allowed_variables_of_the_agent_and_its_own() {
    let defaults = ["PATH", "LANG", "LC_ALL", "TZ"];
    // A variable of this process (the agent here) outside the default allowlist.
    let (other, value) = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .find(|(k, v)| !defaults.contains(&k.as_str()) && !v.contains('\n'))
        .expect("the test runs with some one-line variable besides PATH");
    let keys = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
            .collect()
    };
    let mut s = spec("env-1", "/usr/bin/env", &[]);
    s.env = vec![("GREETING".into(), "hello".into())];
    let out = output(executor().as_ref(), &s);
    assert!(out.contains("GREETING=hello\n"), "{out}");
    assert!(!keys(&out).contains(&other), "{other} leaked: {out}");
    for k in keys(&out) {
        assert!(
            k == "GREETING" || defaults.contains(&k.as_str()),
            "{k}: {out}"
        );
    }
    if let Ok(path) = std::env::var("PATH") {
        assert!(out.contains(&format!("PATH={path}\n")), "{out}");
    }

    // An allowlist of its own: that variable passes, PATH does not.
    let x = executor_with(&format!(r#"{{"env_allow": ["{other}"]}}"#)).unwrap();
    let s = spec("env-2", "/usr/bin/env", &[]);
    let out = output(x.as_ref(), &s);
    assert_eq!(keys(&out), vec![other.clone()], "{out}");
    assert!(out.contains(&format!("{other}={value}")), "{out}");
}

#[test]
fn run_as_switches_user_and_drops_supplementary_groups() {
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    let configured = executor_with(r#"{"run_as": "nobody"}"#);
    if !root {
        let e = configured.err().expect("refused without root");
        assert!(e.contains("run_as") && e.contains("root"), "{e}");
        return;
    }
    let x = configured.unwrap();
    let id = |flag: &str| {
        let out = std::process::Command::new("id")
            .args([flag, "nobody"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    // Its working directory, private to the agent (root, 0700), becomes the user's.
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        "as-nobody",
        "/bin/sh",
        &["-c", "id -u; id -g; id -G; stat -c %u .; touch mine"],
    );
    s.working_dir = Some(dir.path().display().to_string());
    let out = output(x.as_ref(), &s);
    let (uid, gid) = (id("-u"), id("-g"));
    assert_eq!(
        out,
        format!("{uid}\n{gid}\n{gid}\n{uid}\n"),
        "only its primary group; the directory its own"
    );
    assert!(dir.path().join("mine").is_file());
}

#[test]
fn executions_naming_no_limits_get_the_configured_defaults() {
    let x = executor_with(r#"{"default_memory_mb": 64, "default_timeout_ms": 300}"#).unwrap();
    let s = spec("mem-default", "/bin/sh", &["-c", "ulimit -v"]);
    assert_eq!(output(x.as_ref(), &s), "65536\n", "64 MiB in KiB");
    let mut s = spec("mem-own", "/bin/sh", &["-c", "ulimit -v"]);
    s.memory_limit_mb = 128;
    assert_eq!(output(x.as_ref(), &s), "131072\n", "its own limit wins");

    let start = Instant::now();
    let h = x
        .start(&spec("time-default", "/bin/sleep", &["30"]))
        .unwrap();
    let r = x.wait(&h, 20_000).unwrap().expect("finished");
    assert_eq!(r.status, ExitStatus::TimedOut);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Without defaults, nothing is limited.
    let s = spec("mem-none", "/bin/sh", &["-c", "ulimit -v"]);
    assert_eq!(output(executor().as_ref(), &s), "unlimited\n");
}

#[test]
fn a_bad_isolation_setting_is_refused_naming_its_key() {
    for (config, key) in [
        (r#"{"run_as": "no-such-user-here"}"#, "run_as"),
        (r#"{"run_as": "root:no-such-group-here"}"#, "run_as"),
        (r#"{"env_allow": ["A=B"]}"#, "env_allow"),
        (r#"{"default_memory_mb": -1}"#, "default_memory_mb"),
        (r#"{"bogus": 1}"#, "bogus"),
    ] {
        let e = executor_with(config).err().expect(config);
        assert!(e.contains(key), "{config}: {e}");
    }
}
