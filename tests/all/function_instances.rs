//! Live function instances of the `wasm` executor (`spear_executor_wasm::functions`): a real Rust
//! function component (`tests/fixtures/function-counter`, world `spear:function/function`)
//! compiled once, instantiated, and invoked again and again with its state kept; traps, deadlines
//! and the memory limit break only the instance they happen in.

use std::time::{Duration, Instant};

use spear_executor_wasm::functions::{
    FunctionHost, FunctionLimits, InstanceState, InvokeError, SharedBinary,
};
use spear_tests::guest;

const DEADLINE: Duration = Duration::from_secs(5);

fn host(max_instances: u32, max_memory_mb: u64) -> (FunctionHost, SharedBinary) {
    let host = FunctionHost::new(FunctionLimits {
        max_instances,
        max_memory_mb,
    })
    .unwrap();
    let bytes = std::fs::read(guest("component", "function-counter.wasm")).unwrap();
    let binary = host.compile(&bytes).unwrap();
    (host, binary)
}

#[tokio::test]
async fn a_thousand_invocations_on_one_instance_keep_its_state() {
    let (host, binary) = host(4, 64);
    let mut instance = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    let mut last = Vec::new();
    for _ in 0..1000 {
        last = instance.invoke("count", b"", DEADLINE).await.unwrap();
    }
    assert_eq!(last, b"1000", "the guest's counter lives in the instance");
    assert_eq!(instance.invocations(), 1000);
    assert_eq!(
        instance.invoke("echo", b"hello", DEADLINE).await.unwrap(),
        b"hello"
    );
    // A second instance of the same binary has its own state.
    let mut other = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    assert_eq!(other.invoke("count", b"", DEADLINE).await.unwrap(), b"1");
}

#[tokio::test]
async fn a_function_error_is_answered_and_the_instance_stays_ready() {
    let (host, binary) = host(2, 64);
    let mut instance = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    assert_eq!(
        instance.invoke("fail", b"abc", DEADLINE).await,
        Err(InvokeError::Function("failed on 3 bytes".into()))
    );
    assert_eq!(
        instance.invoke("nope", b"", DEADLINE).await,
        Err(InvokeError::Function("no function `nope`".into()))
    );
    assert_eq!(*instance.state(), InstanceState::Ready);
    assert_eq!(instance.invoke("count", b"", DEADLINE).await.unwrap(), b"1");
}

#[tokio::test]
async fn a_trap_breaks_only_its_own_instance() {
    let (host, binary) = host(4, 64);
    let mut a = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    let mut b = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    a.invoke("count", b"", DEADLINE).await.unwrap();
    b.invoke("count", b"", DEADLINE).await.unwrap();
    let trapped = a.invoke("trap", b"", DEADLINE).await.unwrap_err();
    assert!(matches!(trapped, InvokeError::Trap(_)), "{trapped:?}");
    assert!(matches!(a.state(), InstanceState::Error(_)));
    assert!(matches!(
        a.invoke("count", b"", DEADLINE).await,
        Err(InvokeError::Broken(_))
    ));
    assert_eq!(
        b.invoke("count", b"", DEADLINE).await.unwrap(),
        b"2",
        "b untouched"
    );
    // The slot of the broken instance comes back when it is dropped.
    drop(a);
    let mut c = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    assert_eq!(c.invoke("count", b"", DEADLINE).await.unwrap(), b"1");
}

#[tokio::test]
async fn a_deadline_stops_a_spinning_invocation_and_breaks_that_instance() {
    let (host, binary) = host(2, 64);
    let mut spinning = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    let started = Instant::now();
    let err = spinning
        .invoke("spin", b"", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err, InvokeError::Deadline(Duration::from_millis(50)));
    // Stopped near its deadline, far from hanging (loose: CI shares two cores).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let mut fresh = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    assert_eq!(fresh.invoke("count", b"", DEADLINE).await.unwrap(), b"1");
}

#[tokio::test]
async fn an_instance_past_its_memory_limit_traps_and_says_so() {
    let (host, binary) = host(2, 32);
    let mut instance = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    assert_eq!(
        instance.invoke("grow", b"4", DEADLINE).await.unwrap(),
        b"grown"
    );
    assert!(instance.memory_bytes() >= 4 << 20);
    let err = instance.invoke("grow", b"64", DEADLINE).await.unwrap_err();
    match err {
        InvokeError::Trap(why) => assert!(why.contains("memory limit"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn init_refusals_full_pools_and_components_of_other_worlds_are_clear_errors() {
    let (host, binary) = host(1, 64);
    let refused = host
        .instantiate(&binary, r#"{"refuse": true}"#, DEADLINE)
        .await
        .unwrap_err();
    assert!(
        refused.contains("this configuration is refused"),
        "{refused}"
    );
    let _one = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    let full = host.instantiate(&binary, "{}", DEADLINE).await.unwrap_err();
    assert!(full.contains("cannot instantiate"), "{full}");
    let command = std::fs::read(guest("component", "wasi-echo.wasm")).unwrap();
    let other = host.compile(&command).unwrap_err();
    assert!(other.contains("not a function component"), "{other}");
}

#[test]
fn a_function_component_is_not_a_plugin() {
    use std::sync::Arc;

    use spear_plugin_runtime::engine::WasmEngine;
    use spear_plugin_runtime::{LimitValues, Limits, load_file};

    let engine = WasmEngine::new().unwrap();
    let limits = Arc::new(Limits::new(LimitValues::default()));
    let loaded = load_file(
        &guest("component", "function-counter.wasm"),
        &engine,
        &limits,
    );
    let Err(err) = loaded else {
        panic!("a function component loaded as a plugin");
    };
    let err = err.to_string();
    assert!(err.contains("spear:function/handler"), "{err}");
}

#[tokio::test]
async fn an_instance_that_outlives_its_host_keeps_its_deadlines_and_any_deadline_is_taken() {
    let (host, binary) = host(2, 64);
    let mut instance = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    drop(host);
    // The ticker lives as long as an instance does.
    let err = instance
        .invoke("spin", b"", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err, InvokeError::Deadline(Duration::from_millis(50)));
    let (host, binary) = self::host(2, 64);
    let mut instance = host
        .instantiate(&binary, "{}", Duration::MAX)
        .await
        .unwrap();
    assert_eq!(
        instance.invoke("count", b"", Duration::MAX).await.unwrap(),
        b"1"
    );
    for bad in [
        FunctionLimits {
            max_instances: 0,
            max_memory_mb: 64,
        },
        FunctionLimits {
            max_instances: 2,
            max_memory_mb: 1 << 40,
        },
    ] {
        assert!(FunctionHost::new(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn a_guest_waiting_in_a_wasi_sleep_is_stopped_at_its_deadline() {
    let (host, binary) = host(2, 64);
    let mut sleeper = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    let started = Instant::now();
    let err = sleeper
        .invoke("sleep", b"30", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err, InvokeError::Deadline(Duration::from_millis(100)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(sleeper.state(), InstanceState::Error(_)));
    // A short sleep within its deadline is answered.
    let mut ok = host.instantiate(&binary, "{}", DEADLINE).await.unwrap();
    assert_eq!(ok.invoke("sleep", b"0", DEADLINE).await.unwrap(), b"slept");
}
