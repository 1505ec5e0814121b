//! Keys a host knows from another program's configs (SPEAR's) and takes in a config file without
//! refusing them: each is read as the host's own key, or accepted and not acted on, and either way
//! named in a warning ([`Loaded::notes`](crate::Loaded::notes)), never silently.

/// What a host does with one key of another program's configs.
#[derive(Debug, Clone, Copy)]
pub enum Compat {
    /// Read the file's `from` as `to` (unless the file sets `to` itself), with a warning saying so.
    Moved {
        /// The key as the other program's configs write it (dotted).
        from: &'static str,
        /// The host's key.
        to: &'static str,
        /// Why (shown in the warning).
        why: &'static str,
    },
    /// Read the file's `from` as `to` when the file's `when` is `true` (say, a certificate path
    /// when that listener enables TLS); else accept it without effect. A warning says which.
    MovedIf {
        /// The key as the other program's configs write it (dotted).
        from: &'static str,
        /// The host's key.
        to: &'static str,
        /// The boolean key (dotted) that decides.
        when: &'static str,
        /// Why (shown in the warning).
        why: &'static str,
    },
    /// Accept `key` (a value, or a whole table) and act on nothing, with a warning saying why.
    Ignored {
        /// The key (dotted).
        key: &'static str,
        /// Why it is not acted on (shown in the warning).
        why: &'static str,
    },
}

/// Apply `rules` to a config file's `table`, returning a warning for each rule that applied.
pub(crate) fn apply(table: &mut toml::Table, rules: &[Compat]) -> Vec<String> {
    let mut notes = Vec::new();
    let mut taken = Vec::new();
    for rule in rules {
        match *rule {
            Compat::Moved { from, to, why } => {
                let Some(value) = take(table, from) else {
                    continue;
                };
                taken.push(from);
                if get(table, to).is_some() {
                    notes.push(format!(
                        "{from}: not read ({to} is set too, and wins); {why}"
                    ));
                } else {
                    notes.push(format!("{from}: read as {to}; {why}"));
                    put(table, to, value);
                }
            }
            Compat::MovedIf {
                from,
                to,
                when,
                why,
            } => {
                let Some(value) = take(table, from) else {
                    continue;
                };
                taken.push(from);
                if get(table, when).and_then(toml::Value::as_bool) != Some(true) {
                    notes.push(format!(
                        "{from}: accepted and not acted on: {when} is not true"
                    ));
                } else if get(table, to).is_some() {
                    notes.push(format!(
                        "{from}: not read ({to} is set too, and wins); {why}"
                    ));
                } else {
                    notes.push(format!("{from}: read as {to}; {why}"));
                    put(table, to, value);
                }
            }
            Compat::Ignored { key, why } => {
                if take(table, key).is_some() {
                    taken.push(key);
                    notes.push(format!("{key}: accepted and not acted on: {why}"));
                }
            }
        }
    }
    // A table left empty by what was taken (`[web_admin]` once its `addr` moved) goes too.
    for key in taken {
        let (parent, _) = split(key);
        for depth in (1..=parent.len()).rev() {
            let path = parent[..depth].join(".");
            if get(table, &path)
                .and_then(toml::Value::as_table)
                .is_some_and(toml::Table::is_empty)
            {
                take(table, &path);
            }
        }
    }
    notes
}

fn get<'t>(table: &'t toml::Table, key: &str) -> Option<&'t toml::Value> {
    let (parent, last) = split(key);
    let mut at = table;
    for part in parent {
        at = at.get(part)?.as_table()?;
    }
    at.get(last)
}

/// Remove the value at dotted `key`, if there is one.
fn take(table: &mut toml::Table, key: &str) -> Option<toml::Value> {
    let (parent, last) = split(key);
    let mut at = table;
    for part in parent {
        at = at.get_mut(part)?.as_table_mut()?;
    }
    at.remove(last)
}

/// Set dotted `key` to `value`, making the tables on the way (a non-table in the way is left as
/// it is: the load then reports the key as the type it is).
fn put(table: &mut toml::Table, key: &str, value: toml::Value) {
    let (parent, last) = split(key);
    let mut at = table;
    for part in parent {
        let next = at
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(t) = next.as_table_mut() else {
            return;
        };
        at = t;
    }
    at.insert(last.to_owned(), value);
}

fn split(key: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    (parts, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &[Compat] = &[
        Compat::Moved {
            from: "http.enable_swagger",
            to: "enable_swagger",
            why: "after [http]",
        },
        Compat::Moved {
            from: "web_admin.addr",
            to: "web.addr",
            why: "renamed",
        },
        Compat::Ignored {
            key: "event_kv",
            why: "SMS keeps its own event log",
        },
    ];

    #[test]
    fn moves_ignores_and_says_so() {
        let mut t: toml::Table = toml::from_str(
            "[http]\naddr = \"a\"\nenable_swagger = true\n[web_admin]\naddr = \"b\"\n\
             [event_kv]\nbackend = \"memory\"\n",
        )
        .unwrap();
        let notes = apply(&mut t, RULES);
        assert_eq!(t["enable_swagger"].as_bool(), Some(true));
        assert!(
            t["http"]
                .as_table()
                .unwrap()
                .get("enable_swagger")
                .is_none()
        );
        assert_eq!(t["web"]["addr"].as_str(), Some("b"));
        assert!(t.get("web_admin").is_none(), "the emptied table goes");
        assert!(t.get("event_kv").is_none());
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].starts_with("http.enable_swagger: read as enable_swagger"));
        assert!(notes[2].starts_with("event_kv: accepted and not acted on"));
    }

    #[test]
    fn a_conditional_move_applies_only_when_its_switch_is_on() {
        const TLS: &[Compat] = &[Compat::MovedIf {
            from: "http.cert_path",
            to: "tls.cert_file",
            when: "http.enable_tls",
            why: "one certificate",
        }];
        let mut off: toml::Table =
            toml::from_str("[http]\nenable_tls = false\ncert_path = \"c.pem\"\n").unwrap();
        let notes = apply(&mut off, TLS);
        assert!(off.get("tls").is_none(), "{off:?}");
        assert!(
            notes[0].contains("not acted on: http.enable_tls is not true"),
            "{notes:?}"
        );
        let mut on: toml::Table =
            toml::from_str("[http]\nenable_tls = true\ncert_path = \"c.pem\"\n").unwrap();
        apply(&mut on, TLS);
        assert_eq!(on["tls"]["cert_file"].as_str(), Some("c.pem"));
    }

    #[test]
    fn the_hosts_own_key_wins_and_absent_keys_say_nothing() {
        let mut t: toml::Table =
            toml::from_str("enable_swagger = false\n[http]\nenable_swagger = true\n").unwrap();
        let notes = apply(&mut t, RULES);
        assert_eq!(t["enable_swagger"].as_bool(), Some(false));
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("not read"), "{notes:?}");
        let mut empty = toml::Table::new();
        assert!(apply(&mut empty, RULES).is_empty());
    }
}
