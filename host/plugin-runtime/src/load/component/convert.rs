//! Conversions between the plain plugin types and the WIT types the component bindings use.

use spear_plugin_api as api;

use super::wit;

pub(super) fn labels_to_wit(labels: &[api::Label]) -> Vec<wit::Label> {
    labels
        .iter()
        .map(|l| wit::Label {
            key: l.key.clone(),
            value: l.value.clone(),
        })
        .collect()
}

pub(super) fn resources_to_wit(r: &api::Resources) -> wit::Resources {
    wit::Resources {
        cpu_millis: r.cpu_millis,
        memory_mb: r.memory_mb,
        disk_mb: r.disk_mb,
    }
}

pub(super) fn target_to_wit(t: &api::Target) -> wit::Target {
    wit::Target {
        id: t.id,
        name: t.name.clone(),
        labels: labels_to_wit(&t.labels),
        capacity: resources_to_wit(&t.capacity),
        available: resources_to_wit(&t.available),
        active: t.active,
        weight: t.weight,
        healthy: t.healthy,
    }
}

pub(super) fn request_to_wit(r: &api::Request) -> wit::Request {
    wit::Request {
        id: r.id,
        task: r.task.clone(),
        labels: labels_to_wit(&r.labels),
        needs: resources_to_wit(&r.needs),
        required: labels_to_wit(&r.required),
        preferred: labels_to_wit(&r.preferred),
    }
}

pub(super) fn instance_to_wit(s: &api::InstanceStats) -> wit::InstanceStats {
    wit::InstanceStats {
        id: s.id,
        task: s.task.clone(),
        state: match s.state {
            api::InstanceState::Initializing => wit::InstanceState::Initializing,
            api::InstanceState::Ready => wit::InstanceState::Ready,
            api::InstanceState::Executing => wit::InstanceState::Executing,
            api::InstanceState::Error => wit::InstanceState::Error,
            api::InstanceState::Terminating => wit::InstanceState::Terminating,
            api::InstanceState::Terminated => wit::InstanceState::Terminated,
        },
        idle_ms: s.idle_ms,
        age_ms: s.age_ms,
        memory_bytes: s.memory_bytes,
        invocations: s.invocations,
        errors: s.errors,
        recent_errors: s.recent_errors,
        recent_invocations: s.recent_invocations,
    }
}

pub(super) fn info_from_wit(i: wit::PluginInfo) -> api::PluginInfo {
    api::PluginInfo {
        name: i.name,
        version: i.version,
        kind: match i.kind {
            wit::PluginKind::SchedulingStrategy => api::PluginKind::SchedulingStrategy,
            wit::PluginKind::ReclamationPolicy => api::PluginKind::ReclamationPolicy,
        },
        description: i.description,
        config_schema: i.config_schema,
    }
}
