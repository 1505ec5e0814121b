//! The agent's background loops are guarded: a loop that panics leaves the agent without it
//! (no heartbeats, or no assignments), so the panic is fatal. It is logged, the agent's `fatal`
//! reason is set, and `spearlet` exits with status 3, so that its service manager restarts it; the
//! restarted agent recovers its work from the state store. Never alive and idle.

use std::future::Future;

use tokio::task::JoinHandle;

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run the loop `name`; if it panics, call `fatal` with the reason. Aborting the returned handle
/// aborts the loop.
pub fn guarded<F>(
    name: &'static str,
    work: F,
    fatal: impl FnOnce(String) + Send + 'static,
) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let inner = tokio::spawn(work);
        // Aborting the guard (a test's simulated crash) aborts the loop too.
        let _abort = AbortOnDrop(inner.abort_handle());
        let Err(e) = inner.await else {
            return;
        };
        if !e.is_panic() {
            return;
        }
        let payload = e.into_panic();
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        let why = format!("the {name} loop panicked: {text}");
        tracing::error!("{why}");
        fatal(why);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn a_panicking_loop_is_fatal_and_named_and_a_returning_one_is_not() {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        guarded("heartbeats", async { panic!("boom") }, move |why| {
            *s.lock().unwrap() = Some(why);
        })
        .await
        .unwrap();
        assert_eq!(
            seen.lock().unwrap().as_deref(),
            Some("the heartbeats loop panicked: boom")
        );
        let quiet = Arc::new(Mutex::new(None::<String>));
        let q = quiet.clone();
        guarded("reporter", async {}, move |why| {
            *q.lock().unwrap() = Some(why);
        })
        .await
        .unwrap();
        assert!(quiet.lock().unwrap().is_none());
        // Aborting the guard stops the loop.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let guard = guarded(
            "forever",
            async move {
                let _tx = tx;
                std::future::pending::<()>().await;
            },
            |_| {},
        );
        guard.abort();
        assert!(rx.recv().await.is_none(), "the loop was dropped");
    }
}
