//! The worker protocol (docs/workers.md) with a real worker process
//! (`tests/src/bin/spear-worker-fixture.rs`): many invocations on one process keep its state; a
//! worker that exits mid-invocation, writes garbage, answers the wrong request or hangs past
//! the deadline is killed and put in error, and the invocation gets a clear error.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use spear_executor_process::worker::{Worker, WorkerError, WorkerSpec, WorkerState};

const DEADLINE: Duration = Duration::from_secs(10);

fn spec() -> WorkerSpec {
    WorkerSpec {
        program: PathBuf::from(env!("CARGO_BIN_EXE_spear-worker-fixture")),
        max_payload: 1 << 20,
        ..WorkerSpec::default()
    }
}

fn alive(pid: u32) -> bool {
    // A process that is there and not a zombie (whoever reaps an orphan may be slow to).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

#[test]
fn one_worker_serves_a_thousand_invocations_with_its_state() {
    let mut w = Worker::spawn(&spec(), DEADLINE).unwrap();
    let pid = w.pid();
    let mut last = Vec::new();
    for _ in 0..1000 {
        last = w.invoke("count", b"", DEADLINE).unwrap();
    }
    assert_eq!(last, b"1000");
    assert_eq!(w.pid(), pid, "the same process throughout");
    let big = vec![7u8; 300_000];
    assert_eq!(w.invoke("echo", &big, DEADLINE).unwrap(), big);
    assert_eq!(
        w.invoke("fail", b"abc", DEADLINE),
        Err(WorkerError::Function("failed on 3 bytes".into()))
    );
    assert_eq!(
        *w.state(),
        WorkerState::Ready,
        "a function error keeps it ready"
    );
    assert_eq!(w.invoke("count", b"", DEADLINE).unwrap(), b"1001");
    assert_eq!(
        w.invoke("echo", &vec![0u8; (1 << 20) + 1], DEADLINE),
        Err(WorkerError::TooLarge((1 << 20) + 1))
    );
}

#[test]
fn a_worker_that_dies_or_breaks_the_protocol_is_killed_and_in_error() {
    for (function, want) in [
        ("exit", "died"),
        ("garbage", "broke the protocol"),
        ("wrong-id", "broke the protocol"),
    ] {
        let mut w = Worker::spawn(&spec(), DEADLINE).unwrap();
        let pid = w.pid();
        let err = w.invoke(function, b"", DEADLINE).unwrap_err();
        assert!(err.to_string().contains(want), "{function}: {err}");
        assert!(matches!(w.state(), WorkerState::Error(_)), "{function}");
        assert!(matches!(
            w.invoke("count", b"", DEADLINE),
            Err(WorkerError::Broken(_))
        ));
        drop(w);
        assert!(!alive(pid), "{function}: the process is gone");
    }
}

#[test]
fn a_hanging_worker_is_killed_at_the_deadline() {
    let mut w = Worker::spawn(&spec(), DEADLINE).unwrap();
    let started = Instant::now();
    let err = w
        .invoke("hang", b"", Duration::from_millis(200))
        .unwrap_err();
    assert_eq!(err, WorkerError::Deadline(Duration::from_millis(200)));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(5), "not a hang");
    assert!(matches!(w.state(), WorkerState::Error(_)));
}

#[test]
fn a_program_that_is_no_worker_is_refused_at_start() {
    // Exits at once without a hello.
    let not = WorkerSpec {
        program: PathBuf::from("/bin/true"),
        max_payload: 1024,
        ..WorkerSpec::default()
    };
    let err = Worker::spawn(&not, DEADLINE).unwrap_err();
    assert!(err.to_string().contains("did not start"), "{err}");
    assert!(
        err.to_string().contains("exit status: 0"),
        "with its status: {err}"
    );
    // Says hello in another protocol.
    let old = WorkerSpec {
        env: vec![("SPEAR_WORKER_HELLO".into(), "old".into())],
        ..spec()
    };
    let err = Worker::spawn(&old, DEADLINE).unwrap_err();
    assert!(err.to_string().contains("protocol 0"), "{err}");
    // Says nothing at all within the deadline.
    let silent = WorkerSpec {
        program: PathBuf::from("/bin/sleep"),
        args: vec!["30".into()],
        max_payload: 1024,
        ..WorkerSpec::default()
    };
    let started = Instant::now();
    let err = Worker::spawn(&silent, Duration::from_millis(300)).unwrap_err();
    assert!(err.to_string().contains("no hello within 300ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_kill_reaches_what_the_worker_started_and_bad_names_are_refused() {
    // A worker that starts a helper of its own, then speaks the protocol.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("helper.pid");
    let wrapped = WorkerSpec {
        program: PathBuf::from("/bin/sh"),
        args: vec![
            "-c".into(),
            format!(
                "/bin/sleep 300 & echo $! > {0}; exec {1}",
                pid_file.display(),
                env!("CARGO_BIN_EXE_spear-worker-fixture")
            ),
        ],
        max_payload: 1024,
        ..WorkerSpec::default()
    };
    let mut w = Worker::spawn(&wrapped, DEADLINE).unwrap();
    let helper: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(helper));
    assert_eq!(w.invoke("", b"", DEADLINE), Err(WorkerError::BadName));
    assert_eq!(
        w.invoke(&"f".repeat(257), b"", DEADLINE),
        Err(WorkerError::BadName)
    );
    assert_eq!(*w.state(), WorkerState::Ready);
    let err = w
        .invoke("hang", b"", Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(err, WorkerError::Deadline(Duration::from_millis(100)));
    // Killed with its group, and reaped: no helper, no zombie.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(helper) {
        assert!(Instant::now() < deadline, "the helper outlived its worker");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A huge deadline means none.
    let mut w = Worker::spawn(&spec(), Duration::MAX).unwrap();
    assert_eq!(w.invoke("count", b"", Duration::MAX).unwrap(), b"1");
}
