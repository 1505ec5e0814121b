//! SPEAR-Next's gRPC services, `sms.NodeService` and `sms.TaskService` (its package, method names
//! and field numbers), served beside `spear.v1` on the same listener so that SPEAR's clients work
//! unchanged. Each call is a thin mapping onto the same [`Sms`](crate::service::Sms) operations as `spear.v1`; what differs
//! from SPEAR is listed in docs/spear-compat.md.

mod nodes;
mod tasks;

/// Seconds since the Unix epoch of `ms` milliseconds.
fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}
