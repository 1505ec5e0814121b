//! The audit trail: who caused each event. The auth layers run every authenticated request's
//! handler inside [`scope`], and the event log stamps each event it queues there with
//! [`actor`] (`Event.by`): `<token name> (<role>)`. Events SMS causes itself (the scheduler's
//! assignments, timeouts, the node sweeper) and events while auth is off carry none.

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static ACTOR: Arc<str>;
}

/// Run `fut` on behalf of the principal `label` names ([`super::Principal::label`]): the events
/// it queues name it.
pub async fn scope<F: Future>(label: Arc<str>, fut: F) -> F::Output {
    ACTOR.scope(label, fut).await
}

/// Who the running request acts for, if an authenticated request is running.
pub fn actor() -> Option<String> {
    ACTOR.try_with(|a| a.to_string()).ok()
}
