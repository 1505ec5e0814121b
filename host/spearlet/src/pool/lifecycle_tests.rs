//! The instance states beyond Ready and Executing, each race between a state set by one thread
//! and another thread's change driven in a set order: WarmingUp, Pausing and Paused,
//! CoolingDown, Terminating.

use std::sync::mpsc::{Receiver, Sender, channel};

use spear_plugin_api::executor::{Capabilities, ExecResult, ExecSpec, ExecState, ExecStats};
use spear_plugin_api::{Executor, NodePressure, PluginError, PluginInfo, PluginKind};

use super::*;

/// An executor that records the instance calls made to it; a pause or a stop may be held until
/// the test lets it go.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
    hold_pause: Mutex<Option<Receiver<()>>>,
    hold_stop: Mutex<Option<Receiver<()>>>,
    refuse_pause: bool,
}

impl Fake {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn hold(slot: &Mutex<Option<Receiver<()>>>) -> Sender<()> {
        let (tx, rx) = channel();
        *slot.lock().unwrap() = Some(rx);
        tx
    }
}

fn nope() -> PluginError {
    PluginError::new("not in this test")
}

impl Executor for Fake {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "fake".into(),
            version: "0.0.0".into(),
            kind: PluginKind::Executor,
            description: String::new(),
            config_schema: "{}".into(),
        }
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            instances: true,
            pause: true,
            ..Capabilities::default()
        }
    }
    fn configure(&mut self, _: &str) -> Result<(), PluginError> {
        Ok(())
    }
    fn start(&self, _: &ExecSpec) -> Result<String, PluginError> {
        Err(nope())
    }
    fn wait(&self, _: &str, _: u64) -> Result<Option<ExecResult>, PluginError> {
        Err(nope())
    }
    fn signal(&self, _: &str, _: i32) -> Result<(), PluginError> {
        Err(nope())
    }
    fn stop(&self, _: &str, _: u64) -> Result<(), PluginError> {
        Err(nope())
    }
    fn inspect(&self, _: &str) -> Result<ExecState, PluginError> {
        Err(nope())
    }
    fn stats(&self, _: &str) -> Result<ExecStats, PluginError> {
        Err(nope())
    }
    fn recover(&self, _: &str) -> Result<bool, PluginError> {
        Err(nope())
    }
    fn destroy(&self, _: &str) -> Result<(), PluginError> {
        Err(nope())
    }
    fn stop_instance(&self, handle: &str) -> Result<(), PluginError> {
        let held = self.hold_stop.lock().unwrap().take();
        if let Some(rx) = held {
            let _ = rx.recv();
        }
        self.calls.lock().unwrap().push(format!("stop {handle}"));
        Ok(())
    }
    fn pause_instance(&self, handle: &str, pause: bool) -> Result<(), PluginError> {
        let held = self.hold_pause.lock().unwrap().take();
        if let Some(rx) = held {
            let _ = rx.recv();
        }
        let what = if pause { "pause" } else { "resume" };
        self.calls.lock().unwrap().push(format!("{what} {handle}"));
        if self.refuse_pause {
            return Err(PluginError::new("the engine cannot freeze containers here"));
        }
        Ok(())
    }
}

fn pools() -> (Arc<Pools>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[plugins]\ndir = {:?}\n", dir.path().display().to_string());
    let config = spear_plugin_runtime::RuntimeConfig::compile(&text, None).unwrap();
    let host = PluginHost::with_config(config, None).unwrap();
    (Arc::new(Pools::new(host, 4, 16)), dir)
}

fn serving(request: &str) -> Serving {
    Serving {
        request_id: request.into(),
        function: "add".into(),
    }
}

/// Take an instance of `task`, starting one with a live runtime `handle` in `fake` if needed.
async fn take(p: &Pools, fake: &Arc<Fake>, task: &str, handle: &str, request: &str) -> Lease {
    let fake = fake.clone();
    let handle = handle.to_owned();
    p.acquire(task, "fake", serving(request), move |_| {
        let runtime = Runtime {
            executor: fake.clone(),
            handle: handle.clone(),
            workdir: None,
            pausable: true,
        };
        async move {
            Ok(Made {
                artifact: None,
                runtime: Some(runtime),
            })
        }
    })
    .await
    .unwrap()
}

fn state_of(p: &Pools, id: u64) -> Option<Phase> {
    p.instances()
        .into_iter()
        .find(|i| i.id == id)
        .map(|i| i.state)
}

/// Make instance `id` look unused for `secs` seconds.
fn age(p: &Pools, id: u64, secs: u64) {
    let mut s = p.lock();
    let i = s.instances.get_mut(&id).unwrap();
    i.last_used = Instant::now()
        .checked_sub(Duration::from_secs(secs))
        .expect("the machine has been up that long");
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test]
async fn an_instance_is_initializing_then_warming_up_then_serves_its_request() {
    let (p, _dir) = pools();
    let (fetched_tx, fetched_rx) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let gates = Mutex::new(Some((fetched_rx, started_rx)));
    let taking = {
        let p = p.clone();
        tokio::spawn(async move {
            p.acquire("t", "fake", serving("r-1"), move |starting: Starting| {
                let (fetched, started) = gates.lock().unwrap().take().unwrap();
                async move {
                    fetched.await.unwrap();
                    starting.warming_up();
                    started.await.unwrap();
                    Ok(Made::default())
                }
            })
            .await
        })
    };
    let seen = |want: Phase| {
        let p = p.clone();
        async move {
            for _ in 0..200 {
                if p.instances().first().map(|i| &i.state) == Some(&want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("never {want:?}: {:?}", p.instances());
        }
    };
    seen(Phase::Initializing).await;
    fetched_tx.send(()).unwrap();
    seen(Phase::WarmingUp).await;
    started_tx.send(()).unwrap();
    let lease = taking.await.unwrap().unwrap();
    assert_eq!(lease.tier, Tier::Cold);
    let shown = serde_json::to_value(&p.instances()[0]).unwrap();
    assert_eq!(shown["state"], "executing");
    assert_eq!(shown["request_id"], "r-1");
    assert_eq!(shown["function"], "add");
    p.release(lease, false, Some("it trapped".into()), 0);
    let shown = serde_json::to_value(&p.instances()[0]).unwrap();
    assert_eq!(shown["state"], "error");
    assert_eq!(shown["error"], "it trapped");
}

#[tokio::test]
async fn idle_instances_pause_and_a_paused_one_serves_only_when_none_is_ready() {
    let (p, _dir) = pools();
    let fake = Arc::new(Fake::default());
    let a = take(&p, &fake, "t", "h-a", "r-1").await;
    let b = take(&p, &fake, "t", "h-b", "r-2").await;
    let (a_id, b_id) = (a.id, b.id);
    p.release(a, true, None, 0);
    p.release(b, true, None, 0);
    age(&p, a_id, 120);
    let paused = blocking({
        let p = p.clone();
        move || p.pause_idle(Duration::from_secs(60))
    })
    .await;
    assert_eq!(paused, 1, "only the instance idle past the time");
    assert_eq!(fake.calls(), ["pause h-a"]);
    assert_eq!(state_of(&p, a_id), Some(Phase::Paused));
    assert_eq!(state_of(&p, b_id), Some(Phase::Ready));
    // The Ready one first, not resumed.
    let first = take(&p, &fake, "t", "h-new", "r-3").await;
    assert_eq!((first.id, first.resume), (b_id, false));
    // Then the Paused one, to be resumed (a warm invocation).
    let second = take(&p, &fake, "t", "h-new", "r-4").await;
    assert_eq!(
        (second.id, second.resume, second.tier),
        (a_id, true, Tier::Warm)
    );
    assert_eq!(p.counters().resumed, 1);
    // Not used after all (its resume never began): Paused again, and not counted.
    p.unused(second);
    assert_eq!(state_of(&p, a_id), Some(Phase::Paused));
    assert_eq!(p.counters().resumed, 0);
    p.release(first, true, None, 0);
    // The reclamation policy sees a Paused instance as ready, and may stop it.
    let pressure = NodePressure::default();
    age(&p, a_id, 400);
    let stopped = blocking({
        let p = p.clone();
        move || p.reclaim(&pressure)
    })
    .await;
    assert_eq!(stopped, [a_id]);
    assert_eq!(fake.calls(), ["pause h-a", "stop h-a"]);
}

#[tokio::test]
async fn an_instance_that_cannot_be_paused_stays_ready_and_is_not_tried_again() {
    let (p, _dir) = pools();
    let fake = Arc::new(Fake {
        refuse_pause: true,
        ..Fake::default()
    });
    let a = take(&p, &fake, "t", "h-a", "r-1").await;
    let id = a.id;
    p.release(a, true, None, 0);
    for _ in 0..2 {
        let p = p.clone();
        assert_eq!(blocking(move || p.pause_idle(Duration::ZERO)).await, 0);
    }
    assert_eq!(fake.calls(), ["pause h-a"], "tried once");
    assert_eq!(state_of(&p, id), Some(Phase::Ready));
}

#[tokio::test]
async fn an_instance_being_paused_is_not_taken_and_a_stop_meanwhile_wins() {
    let (p, _dir) = pools();
    let fake = Arc::new(Fake::default());
    let a = take(&p, &fake, "t", "h-a", "r-1").await;
    let id = a.id;
    p.release(a, true, None, 0);
    let go = Fake::hold(&fake.hold_pause);
    let pausing = tokio::task::spawn_blocking({
        let p = p.clone();
        move || p.pause_idle(Duration::ZERO)
    });
    while state_of(&p, id) != Some(Phase::Pausing) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Not taken while Pausing: a new instance is started instead.
    let other = take(&p, &fake, "t", "h-b", "r-2").await;
    assert_ne!(other.id, id);
    // A drain stops every instance, the one being paused included.
    let stopped = blocking({
        let p = p.clone();
        move || p.stop_all()
    })
    .await;
    assert_eq!(stopped, 2);
    go.send(()).unwrap();
    assert_eq!(
        pausing.await.unwrap(),
        0,
        "the pause round lost its instance"
    );
    assert!(p.instances().is_empty(), "{:?}", p.instances());
    // The invocation stopped under it gives back nothing that comes to life again.
    p.release(other, true, None, 0);
    assert!(p.instances().is_empty(), "{:?}", p.instances());
}

#[tokio::test]
async fn a_busy_instance_of_a_retired_executor_cools_down_and_stops_when_given_back() {
    let (p, _dir) = pools();
    let fake = Arc::new(Fake::default());
    let idle = take(&p, &fake, "t", "h-idle", "r-1").await;
    let busy = take(&p, &fake, "t", "h-busy", "r-2").await;
    let (idle_id, busy_id) = (idle.id, busy.id);
    p.release(idle, true, None, 0);
    let stopped = blocking({
        let p = p.clone();
        move || p.stop_where(|_| true, false)
    })
    .await;
    assert_eq!(stopped, 1, "the idle one at once");
    assert_eq!(state_of(&p, idle_id), None);
    assert_eq!(
        state_of(&p, busy_id),
        Some(Phase::CoolingDown(serving("r-2")))
    );
    assert_eq!(p.count("t"), 0, "a cooling instance does not stay");
    p.release(busy, true, None, 0);
    while state_of(&p, busy_id).is_some() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(fake.calls(), ["stop h-idle", "stop h-busy"]);
}

#[tokio::test]
async fn an_instance_is_terminating_until_its_runtime_has_stopped() {
    let (p, _dir) = pools();
    let fake = Arc::new(Fake::default());
    let a = take(&p, &fake, "t", "h-a", "r-1").await;
    let id = a.id;
    p.release(a, true, None, 0);
    let go = Fake::hold(&fake.hold_stop);
    let stopping = tokio::task::spawn_blocking({
        let p = p.clone();
        move || p.stop_where(|_| true, false)
    });
    while state_of(&p, id) != Some(Phase::Terminating) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Not taken, and not holding its task's place: a new one starts.
    let other = take(&p, &fake, "t", "h-b", "r-2").await;
    assert_ne!(other.id, id);
    go.send(()).unwrap();
    assert_eq!(stopping.await.unwrap(), 1);
    assert_eq!(state_of(&p, id), None);
    p.release(other, true, None, 0);
}

#[tokio::test]
async fn a_pause_round_takes_one_instance_at_a_time_and_a_swap_meanwhile_retires_it() {
    let (p, _dir) = pools();
    let fake = Arc::new(Fake::default());
    let a = take(&p, &fake, "t", "h-a", "r-1").await;
    let b = take(&p, &fake, "t", "h-b", "r-2").await;
    let (a_id, b_id) = (a.id, b.id);
    p.release(a, true, None, 0);
    p.release(b, true, None, 0);
    let go = Fake::hold(&fake.hold_pause);
    let pausing = tokio::task::spawn_blocking({
        let p = p.clone();
        move || p.pause_idle(Duration::ZERO)
    });
    while state_of(&p, a_id) != Some(Phase::Pausing) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The other waits its turn Ready, and an invocation takes it meanwhile.
    assert_eq!(state_of(&p, b_id), Some(Phase::Ready));
    let busy = take(&p, &fake, "t", "h-new", "r-3").await;
    assert_eq!(busy.id, b_id);
    // The executor is swapped out: the busy one cools down; the one being paused is left to
    // its pause round, which stops it.
    let stopped = blocking({
        let p = p.clone();
        move || p.stop_where(|_| true, false)
    })
    .await;
    assert_eq!(stopped, 0);
    assert_eq!(state_of(&p, a_id), Some(Phase::Pausing));
    go.send(()).unwrap();
    assert_eq!(pausing.await.unwrap(), 0);
    assert_eq!(state_of(&p, a_id), None, "stopped by the pause round");
    assert_eq!(fake.calls(), ["pause h-a", "stop h-a"]);
    assert_eq!(state_of(&p, b_id), Some(Phase::CoolingDown(serving("r-3"))));
    p.release(busy, true, None, 0);
    while state_of(&p, b_id).is_some() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
