//! `pack-rust-extism`: the example strategy of `examples/README.md` written straight against the
//! Extism ABI with `extism-pdk`, without `spear-pdk`. This is the shape any Extism language follows:
//! export `spear_info`, `spear_configure`, `spear_upsert`, `spear_remove`, `spear_place`,
//! `spear_observe`, `spear_save_state` and `spear_restore_state`; each reads its input (JSON, or
//! raw bytes for the state) and writes its output; an Extism error refuses (for `spear_configure`,
//! the configuration).
//!
//! Build: `cargo build --release --target wasm32-unknown-unknown -p pack-rust-extism`.

use std::cell::RefCell;
use std::collections::BTreeMap;

use extism_pdk::{FnResult, Json, WithReturnCode, plugin_fn};
use serde_json::Value;
use spear_plugin_api::{Decision, Outcome, PluginInfo, PluginKind, Request, Target};

/// What the module keeps between calls (an Extism plugin instance is single-threaded).
#[derive(Default)]
struct State {
    targets: BTreeMap<u64, Target>,
    max_active: Option<u32>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn refuse(message: impl Into<String>) -> WithReturnCode<extism_pdk::Error> {
    WithReturnCode::new(extism_pdk::Error::msg(message.into()), 1)
}

#[plugin_fn]
pub fn spear_info() -> FnResult<Json<PluginInfo>> {
    Ok(Json(PluginInfo {
        name: "pack-rust-extism".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        kind: PluginKind::SchedulingStrategy,
        description: "Packing: the busiest target that fits first, up to max_active".into(),
        config_schema: r#"{"type":"object","properties":{"max_active":{"type":"integer","minimum":1}},"additionalProperties":false}"#.into(),
    }))
}

#[plugin_fn]
pub fn spear_configure(config: String) -> FnResult<()> {
    let value: Value = match config.trim() {
        "" | "null" => Value::Object(Default::default()),
        text => {
            serde_json::from_str(text).map_err(|e| refuse(format!("config is not JSON: {e}")))?
        }
    };
    let Value::Object(map) = value else {
        return Err(refuse("config must be a JSON object"));
    };
    let mut max_active = None;
    for (key, value) in map {
        if key != "max_active" {
            return Err(refuse(format!("unknown key `{key}`")));
        }
        match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n > 0 => max_active = Some(n),
            _ => return Err(refuse("max_active: must be a positive integer")),
        }
    }
    // Only a valid configuration replaces the old one.
    STATE.with(|s| s.borrow_mut().max_active = max_active);
    Ok(())
}

#[plugin_fn]
pub fn spear_upsert(Json(targets): Json<Vec<Target>>) -> FnResult<()> {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        for t in targets {
            s.targets.insert(t.id, t);
        }
    });
    Ok(())
}

#[plugin_fn]
pub fn spear_remove(Json(ids): Json<Vec<u64>>) -> FnResult<()> {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        for id in ids {
            s.targets.remove(&id);
        }
    });
    Ok(())
}

#[plugin_fn]
pub fn spear_place(Json(requests): Json<Vec<Request>>) -> FnResult<Json<Vec<Decision>>> {
    let decisions = STATE.with(|s| {
        let mut s = s.borrow_mut();
        let max_active = s.max_active;
        requests
            .iter()
            .map(|r| {
                // The busiest eligible target; among equals the lowest id.
                let chosen = s
                    .targets
                    .values()
                    .filter(|t| r.fits(t) && max_active.is_none_or(|max| t.active < max))
                    .max_by_key(|t| (t.active, std::cmp::Reverse(t.id)))
                    .map(|t| t.id);
                match chosen.and_then(|id| s.targets.get_mut(&id)) {
                    Some(t) => {
                        t.claim(&r.needs);
                        Decision::Assign(t.id)
                    }
                    None => Decision::Reject("no target fits".into()),
                }
            })
            .collect()
    });
    Ok(Json(decisions))
}

#[plugin_fn]
pub fn spear_observe(Json(_outcomes): Json<Vec<Outcome>>) -> FnResult<()> {
    Ok(())
}

#[plugin_fn]
pub fn spear_save_state() -> FnResult<Vec<u8>> {
    Ok(Vec::new())
}

#[plugin_fn]
pub fn spear_restore_state(_state: Vec<u8>) -> FnResult<()> {
    Ok(())
}
