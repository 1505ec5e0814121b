//! What a program started by the `process` executor may see of the agent, from the executor's
//! configuration (`[executors.config.process]`): the agent's environment is cleared but for an
//! allowlist, programs may run as another user, and executions that name no memory or time limit
//! get the configured defaults.

use std::ffi::{CString, OsString};

use spear_plugin_api::PluginError;

/// The agent's variables a program sees when the configuration names none.
pub const DEFAULT_ENV_ALLOW: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ"];

/// `[executors.config.process]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Variables of the agent's environment passed on (the rest are cleared); an execution's own
    /// `env` comes on top.
    pub env_allow: Vec<String>,
    /// Run programs as this user: `name` or `uid`, optionally `:group` (`name` or `gid`; else the
    /// user's primary group). Supplementary groups are dropped. Needs an agent running as root.
    pub run_as: Option<String>,
    /// Address-space limit (MiB) of a program whose execution names none (0: none).
    pub default_memory_mb: u64,
    /// Time limit (ms) of an execution that names none (0: none).
    pub default_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            env_allow: DEFAULT_ENV_ALLOW.iter().map(|s| s.to_string()).collect(),
            run_as: None,
            default_memory_mb: 0,
            default_timeout_ms: 0,
        }
    }
}

/// The configuration resolved: the variables' values, the user's ids.
#[derive(Debug, Clone)]
pub struct Isolation {
    /// The allowed variables the agent has, with their values (read once, at configuration).
    pub env: Vec<(String, OsString)>,
    /// `(uid, gid)` to run as.
    pub run_as: Option<(u32, u32)>,
    pub default_memory_mb: u64,
    pub default_timeout_ms: u64,
}

impl Default for Isolation {
    fn default() -> Self {
        Self::resolve(Config::default()).unwrap_or(Self {
            env: Vec::new(),
            run_as: None,
            default_memory_mb: 0,
            default_timeout_ms: 0,
        })
    }
}

impl Isolation {
    /// Resolve `config`; an error names the key at fault.
    pub fn resolve(config: Config) -> Result<Self, PluginError> {
        for name in &config.env_allow {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(PluginError::new(format!(
                    "invalid configuration: env_allow: `{name}` is not a variable name"
                )));
            }
        }
        let env = config
            .env_allow
            .iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (k.clone(), v)))
            .collect();
        let run_as = match &config.run_as {
            None => None,
            Some(spec) => {
                let ids = user_and_group(spec).map_err(|why| {
                    PluginError::new(format!("invalid configuration: run_as: {why}"))
                })?;
                // SAFETY: getuid and getegid have no preconditions.
                let (me, my_group) = unsafe { (libc::getuid(), libc::getegid()) };
                if me != 0 && (ids.0 != me || ids.1 != my_group) {
                    return Err(PluginError::new(format!(
                        "invalid configuration: run_as: `{spec}` needs the agent to run as root (it runs as uid {me})"
                    )));
                }
                Some(ids)
            }
        };
        Ok(Self {
            env,
            run_as,
            default_memory_mb: config.default_memory_mb,
            default_timeout_ms: config.default_timeout_ms,
        })
    }
}

/// `user[:group]` as ids.
fn user_and_group(spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(format!("`{spec}` is not `user` or `user:group`"));
    }
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, passwd_by_uid(uid).map(|(_, gid)| gid)),
        Err(_) => {
            let (uid, gid) = passwd_by_name(user).ok_or(format!("no user `{user}`"))?;
            (uid, Some(gid))
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_by_name(g).ok_or(format!("no group `{g}`"))?,
        },
        None => primary.ok_or(format!(
            "uid {uid} has no entry in the user database: name its group (`{uid}:<group>`)"
        ))?,
    };
    Ok((uid, gid))
}

/// Size of the buffer the `get*_r` calls fill (grown while they say it is too small).
const START_BUFFER: usize = 1024;
const MAX_BUFFER: usize = 1 << 20;

fn passwd_by_name(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    passwd(|pwd, buf, len, out| {
        // SAFETY: every pointer is valid for the call; `buf` has `len` bytes.
        unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf, len, out) }
    })
}

fn passwd_by_uid(uid: u32) -> Option<(u32, u32)> {
    passwd(|pwd, buf, len, out| {
        // SAFETY: as in `passwd_by_name`.
        unsafe { libc::getpwuid_r(uid, pwd, buf, len, out) }
    })
}

/// Call `getpw*_r` through `call` (its arguments: the record, the buffer, its length and the
/// result pointer) with a buffer grown until it fits; the uid and primary gid found.
fn passwd(
    call: impl Fn(*mut libc::passwd, *mut libc::c_char, usize, *mut *mut libc::passwd) -> i32,
) -> Option<(u32, u32)> {
    let mut len = START_BUFFER;
    while len <= MAX_BUFFER {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: an all-zero passwd is a valid value to be overwritten.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out = std::ptr::null_mut();
        match call(&mut pwd, buf.as_mut_ptr(), len, &mut out) {
            0 if out.is_null() => return None,
            0 => return Some((pwd.pw_uid, pwd.pw_gid)),
            libc::ERANGE => len *= 2,
            _ => return None,
        }
    }
    None
}

fn group_by_name(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    let mut len = START_BUFFER;
    while len <= MAX_BUFFER {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: an all-zero group is a valid value to be overwritten.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut out = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buf` has `len` bytes.
        let rc =
            unsafe { libc::getgrnam_r(name.as_ptr(), &mut grp, buf.as_mut_ptr(), len, &mut out) };
        match rc {
            0 if out.is_null() => return None,
            0 => return Some(grp.gr_gid),
            libc::ERANGE => len *= 2,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_resolve_by_name_or_id() {
        assert_eq!(user_and_group("root").unwrap(), (0, 0));
        assert_eq!(user_and_group("0:0").unwrap(), (0, 0));
        assert_eq!(user_and_group("root:0").unwrap(), (0, 0));
        assert!(
            user_and_group("no-such-user-here")
                .unwrap_err()
                .contains("no user")
        );
        assert!(
            user_and_group("root:no-such-group")
                .unwrap_err()
                .contains("no group")
        );
        assert!(user_and_group(":x").is_err());
        assert!(user_and_group("root:").is_err());
    }

    #[test]
    fn bad_variable_names_are_refused_naming_the_key() {
        let c = Config {
            env_allow: vec!["A=B".into()],
            ..Config::default()
        };
        let e = Isolation::resolve(c).unwrap_err().to_string();
        assert!(e.contains("env_allow"), "{e}");
    }
}
