//! What a WASM component may reach beyond its contract, granted per plugin by the host config
//! (`[plugins.grants.<name>]`), each part off unless granted:
//!
//! - `http_hosts`: outgoing HTTP (`wasi:http/outgoing-handler`) to these hosts only, each
//!   `host` (its scheme's default port: 80 for http, 443 for https) or `host:port`. A request to
//!   any other host is refused before anything is sent, with `HTTP-request-denied`.
//! - `clock`: the wall and monotonic clocks (WASI's and the `host` interface's). Not granted, they
//!   read zero: the Unix epoch, and a monotonic clock that never moves.
//! - `log`: the plugin's `host.log` and its stdout/stderr reach the host's log. Not granted, they
//!   are dropped (the end of stderr still explains a trap).
//! - `scratch_mb`: a private directory, `/scratch`, empty when an instance starts and removed
//!   when it ends, holding at most this many MiB ([`crate::load::scratch`]). Not granted, the
//!   instance has no directory at all.
//!
//! The decision worlds (strategies, reclamation and autoscaling policies) have had the clock and
//! the log since `spear:plugin@0.1.0`, so for them `clock` and `log` default to granted (`false`
//! takes them away); for executors and storage backends everything defaults to off. Grants are
//! read at every call, so a config reload applies from each instance's next call (a request
//! already sent goes on). A scratch directory is made with its instance: `scratch_mb` granted by
//! a reload reaches the instances made after it; changed, it is each instance's quota from its
//! next call; taken away, every filesystem call of the instances that have one is refused.

use std::collections::BTreeMap;

use serde::Serialize;

/// Most hosts one plugin may be granted.
pub const MAX_HTTP_HOSTS: usize = 64;
/// The largest scratch directory one instance may be granted, in MiB (1 TiB).
pub const MAX_SCRATCH_MB: u64 = 1024 * 1024;

/// A host a plugin may send HTTP requests to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpHost {
    /// Lower-case host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// The port; `None`: the scheme's default port.
    pub port: Option<u16>,
}

impl HttpHost {
    /// Parse `host` or `host:port` (`[v6]:port` for IPv6).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{}`: {why}", text.escape_debug());
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (v6, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing `]`"))?;
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address"))?;
            match after {
                "" => (v6.to_owned(), None),
                p => (
                    v6.to_owned(),
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after `]`"))?),
                ),
            }
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (text.to_owned(), None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port must be 1 to 65535"))?,
            ),
        };
        let host = if text.starts_with('[') {
            // Checked above: an IPv6 address, kept in its canonical spelling.
            canonical(&host)
        } else {
            let name_ok = !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !name_ok {
                return Err(bad(
                    "give a host name or IP address, optionally with :port (an IPv6 address in \
                     brackets; no scheme, path or wildcard)",
                ));
            }
            canonical(&host)
        };
        Ok(Self { host, port })
    }

    /// Whether a request to `host`:`port` (the port given, or `None` for the scheme's
    /// default), with `https` or not, is to this host.
    fn matches(&self, host: &str, port: Option<u16>, https: bool) -> bool {
        let default = if https { 443 } else { 80 };
        let host = canonical(host.trim_start_matches('[').trim_end_matches(']'));
        self.host == host && self.port.unwrap_or(default) == port.unwrap_or(default)
    }
}

/// A host as compared: an IP address in its canonical spelling, a name in lower case.
fn canonical(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

impl std::fmt::Display for HttpHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => write!(f, "{host}:{p}"),
            None => f.write_str(&host),
        }
    }
}

/// What one plugin is granted (`[plugins.grants.<name>]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// Hosts it may send HTTP requests to.
    pub http_hosts: Vec<HttpHost>,
    /// The clocks; `None`: its world's default.
    pub clock: Option<bool>,
    /// The host's log; `None`: its world's default.
    pub log: Option<bool>,
    /// A scratch directory of this many MiB per instance.
    pub scratch_mb: Option<u64>,
}

/// Grants by plugin name.
pub type GrantTable = BTreeMap<String, Grant>;

/// The grants in a line, for reload reports: `name: http 127.0.0.1:8099, clock; …`.
pub fn describe(grants: &GrantTable) -> String {
    if grants.is_empty() {
        return "none".into();
    }
    let one = |g: &Grant| {
        let mut parts: Vec<String> = Vec::new();
        if !g.http_hosts.is_empty() {
            let hosts: Vec<String> = g.http_hosts.iter().map(ToString::to_string).collect();
            parts.push(format!("http {}", hosts.join(" ")));
        }
        if let Some(mb) = g.scratch_mb {
            parts.push(format!("scratch {mb} MiB"));
        }
        for (what, on) in [("clock", g.clock), ("log", g.log)] {
            match on {
                Some(true) => parts.push(what.into()),
                Some(false) => parts.push(format!("no {what}")),
                None => {}
            }
        }
        if parts.is_empty() {
            "defaults".into()
        } else {
            parts.join(", ")
        }
    };
    grants
        .iter()
        .map(|(name, g)| format!("{name}: {}", one(g)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a world grants when the config says nothing: the decision worlds have had the clock and
/// the log since 0.1.0; executors and storage backends start with nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorldDefaults {
    /// The clocks.
    pub clock: bool,
    /// The host's log.
    pub log: bool,
}

/// What one instance may reach during one call: its grant resolved against its world's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InForce {
    /// Hosts it may send HTTP requests to.
    pub http_hosts: Vec<HttpHost>,
    /// The clocks.
    pub clock: bool,
    /// The host's log.
    pub log: bool,
    /// Bytes of scratch directory per instance; 0: none.
    pub scratch_bytes: u64,
}

impl InForce {
    /// `grant` (or none) over `defaults`.
    pub fn resolve(grant: Option<&Grant>, defaults: WorldDefaults) -> Self {
        match grant {
            None => Self {
                http_hosts: Vec::new(),
                clock: defaults.clock,
                log: defaults.log,
                scratch_bytes: 0,
            },
            Some(g) => Self {
                http_hosts: g.http_hosts.clone(),
                clock: g.clock.unwrap_or(defaults.clock),
                log: g.log.unwrap_or(defaults.log),
                scratch_bytes: g.scratch_mb.unwrap_or(0).saturating_mul(1024 * 1024),
            },
        }
    }

    /// Whether an HTTP request to `host`:`port` is granted.
    pub fn allows_http(&self, host: &str, port: Option<u16>, https: bool) -> bool {
        self.http_hosts.iter().any(|h| h.matches(host, port, https))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_and_match_by_scheme_default_port() {
        let h = HttpHost::parse("FaaS.example.com").unwrap();
        assert_eq!(h.to_string(), "faas.example.com");
        assert!(h.matches("faas.example.com", None, true));
        assert!(h.matches("faas.example.com", Some(443), true));
        assert!(h.matches("faas.example.com", Some(80), false));
        assert!(!h.matches("faas.example.com", Some(8080), false));
        assert!(!h.matches("evil.example.com", None, true));
        let p = HttpHost::parse("127.0.0.1:8099").unwrap();
        assert!(p.matches("127.0.0.1", Some(8099), false));
        assert!(!p.matches("127.0.0.1", Some(8098), false));
        assert!(!p.matches("127.0.0.1", None, false));
        let v6 = HttpHost::parse("[0:0::1]:9000").unwrap();
        assert_eq!(v6.to_string(), "[::1]:9000");
        assert!(v6.matches("[::1]", Some(9000), false));
        assert!(v6.matches("[0::0:1]", Some(9000), false));
        assert!(!v6.matches("[::2]", Some(9000), false));
        for bad in [
            "",
            "http://x",
            "x/y",
            "*.example.com",
            "x:0",
            "x:65536",
            "[::1",
            "[zz]:1",
            "a b",
            "::1",
            "fe80::1",
            "h:1:2",
        ] {
            assert!(HttpHost::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_grant_resolves_over_its_worlds_defaults() {
        let decision = WorldDefaults {
            clock: true,
            log: true,
        };
        let nothing = WorldDefaults {
            clock: false,
            log: false,
        };
        assert_eq!(
            InForce::resolve(None, decision),
            InForce {
                http_hosts: vec![],
                clock: true,
                log: true,
                scratch_bytes: 0,
            }
        );
        assert!(!InForce::resolve(None, nothing).clock);
        let g = Grant {
            http_hosts: vec![HttpHost::parse("h:1").unwrap()],
            clock: Some(false),
            log: None,
            scratch_mb: Some(2),
        };
        let f = InForce::resolve(Some(&g), decision);
        assert!(!f.clock && f.log && f.allows_http("h", Some(1), false));
        assert_eq!(f.scratch_bytes, 2 * 1024 * 1024);
        assert!(!InForce::resolve(Some(&g), nothing).log);
    }
}
