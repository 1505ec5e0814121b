//! The host's own keys in the config file. The runtime knows only the plugin sections; at every
//! config reload it asks the host (SMS, Spearlet) to check the rest of the file, so that a typo in
//! a host key rejects the reload with the key named, a key the host can change while running is
//! applied, and any other changed key is reported as needing a restart — never "applied" when it
//! was not.

use std::path::Path;

/// What a host's check of its keys found.
pub struct HostChange {
    /// Keys the host applies now (`key: value`), shown in the reload report.
    pub applied: Vec<String>,
    /// Keys changed in the file that take effect only at a restart.
    pub restart: Vec<String>,
    /// Applies `applied`; called only when the whole reload is accepted.
    pub commit: Apply,
}

impl HostChange {
    /// Nothing changed.
    pub fn none() -> Self {
        Self {
            applied: Vec::new(),
            restart: Vec::new(),
            commit: Box::new(|| {}),
        }
    }
}

impl std::fmt::Debug for HostChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostChange")
            .field("applied", &self.applied)
            .field("restart", &self.restart)
            .finish()
    }
}

/// A host's check of its keys in the config file at the path given: every problem (naming its
/// key) or what would change.
pub type HostKeys = Box<dyn Fn(&Path) -> Result<HostChange, Vec<String>> + Send + Sync>;

/// Something to do when a reload is accepted.
pub type Apply = Box<dyn FnOnce() + Send>;

/// A key the host can change while running: given its new value, `Err(why)` refuses it (the
/// reload is rejected), `Ok(None)` says it cannot be applied now (reported as needing a restart),
/// `Ok(Some(apply))` applies it when the reload is accepted.
pub type LiveKey = Box<dyn Fn(&serde_json::Value) -> Result<Option<Apply>, String> + Send + Sync>;

/// A [`HostKeys`] check that compares, key by key, the configuration a host runs with (`running`)
/// and what `load` makes of the file now (with the same layering as at start). Top-level sections
/// in `skip` (the plugin sections) are left out. A changed key in `live` is applied through it;
/// any other changed key is reported as needing a restart; `load`'s errors reject the reload.
pub fn config_diff_check<C: serde::Serialize>(
    running: &C,
    skip: &'static [&'static str],
    load: impl Fn(&Path) -> Result<C, Vec<String>> + Send + Sync + 'static,
    live: std::collections::BTreeMap<&'static str, LiveKey>,
) -> HostKeys {
    use std::sync::{Arc, Mutex};
    let running = Arc::new(Mutex::new(flatten(running, skip)));
    Box::new(move |path: &Path| {
        let new = flatten(&load(path)?, skip);
        let old = running.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut keys: Vec<&String> = old
            .keys()
            .chain(new.keys())
            .filter(|k| old.get(*k) != new.get(*k))
            .collect();
        keys.sort();
        keys.dedup();
        let mut change = HostChange::none();
        let mut applies: Vec<(String, serde_json::Value, Apply)> = Vec::new();
        let mut errors = Vec::new();
        for key in keys {
            let value = new.get(key).cloned().unwrap_or(serde_json::Value::Null);
            match live.get(key.as_str()).map(|check| check(&value)) {
                Some(Err(why)) => errors.push(format!("{key}: {why}")),
                Some(Ok(Some(apply))) => {
                    let shown = match &value {
                        serde_json::Value::String(s) => s.clone(),
                        v => v.to_string(),
                    };
                    change.applied.push(format!("{key}: {shown}"));
                    applies.push((key.clone(), value, apply));
                }
                Some(Ok(None)) | None => change.restart.push(key.clone()),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let running = running.clone();
        change.commit = Box::new(move || {
            let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
            for (key, value, apply) in applies {
                apply();
                running.insert(key, value);
            }
        });
        Ok(change)
    })
}

/// `config` as dotted keys and leaf values, without the top-level sections in `skip`.
fn flatten<C: serde::Serialize>(
    config: &C,
    skip: &[&str],
) -> std::collections::BTreeMap<String, serde_json::Value> {
    fn walk(
        prefix: &str,
        value: serde_json::Value,
        skip: &[&str],
        out: &mut std::collections::BTreeMap<String, serde_json::Value>,
    ) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if prefix.is_empty() && skip.contains(&k.as_str()) {
                        continue;
                    }
                    let key = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, skip, out);
                }
            }
            leaf => {
                out.insert(prefix.to_owned(), leaf);
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(
        "",
        serde_json::to_value(config).unwrap_or_default(),
        skip,
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, Clone)]
    struct Conf {
        level: String,
        port: u16,
        nested: Nested,
        plugins: Option<u8>,
    }

    #[derive(serde::Serialize, Clone)]
    struct Nested {
        depth: u8,
    }

    #[test]
    fn changed_keys_are_applied_named_or_refused() {
        let running = Conf {
            level: "info".into(),
            port: 1,
            nested: Nested { depth: 1 },
            plugins: None,
        };
        let next = std::sync::Arc::new(std::sync::Mutex::new(running.clone()));
        let applied = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = applied.clone();
        let mut live: std::collections::BTreeMap<&'static str, LiveKey> = Default::default();
        live.insert(
            "level",
            Box::new(move |v| {
                let level = v.as_str().unwrap_or_default().to_owned();
                if level == "loud" {
                    return Err("not a level".into());
                }
                let seen = seen.clone();
                Ok(Some(Box::new(move || seen.lock().unwrap().push(level))))
            }),
        );
        let source = next.clone();
        let check = config_diff_check(
            &running,
            &["plugins"],
            move |_| Ok(source.lock().unwrap().clone()),
            live,
        );
        let path = Path::new("x.toml");
        assert!(check(path).unwrap().applied.is_empty());
        {
            let mut n = next.lock().unwrap();
            n.level = "debug".into();
            n.nested.depth = 2;
            n.plugins = Some(1);
        }
        let change = check(path).unwrap();
        assert_eq!(change.applied, ["level: debug"]);
        assert_eq!(change.restart, ["nested.depth"]);
        assert!(applied.lock().unwrap().is_empty(), "applied only at commit");
        (change.commit)();
        assert_eq!(*applied.lock().unwrap(), ["debug"]);
        // Applied keys are in force now; restart keys are still pending.
        let again = check(path).unwrap();
        assert!(again.applied.is_empty());
        assert_eq!(again.restart, ["nested.depth"]);
        next.lock().unwrap().level = "loud".into();
        assert_eq!(check(path).unwrap_err(), ["level: not a level"]);
    }
}
