//! Who may reach whom: the token the Spearlet sends to SMS (`spearlet.sms_token`,
//! `SPEARLET_SMS_TOKEN`, or the content of `spearlet.sms_token_file`; never printed), and the
//! refusal of non-loopback listeners without `--insecure` (the Spearlet's own API checks no
//! token).

use serde::{Deserialize, Serialize};

use spear_config::{Invalid, Problems};

use super::SpearletConfig;

/// A secret string (a token): read like any other key, never printed by `Debug`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<secret>"
        })
    }
}

impl SpearletConfig {
    /// The token to send to SMS: `spearlet.sms_token`, else the content of
    /// `spearlet.sms_token_file` (trimmed); None when neither is set.
    pub fn sms_token(&self) -> Result<Option<String>, Invalid> {
        let s = &self.spearlet;
        match (&s.sms_token.0, &s.sms_token_file) {
            (t, Some(_)) if !t.is_empty() => Err(Invalid::new(
                "spearlet.sms_token_file",
                "set, and so is spearlet.sms_token: set one of them",
            )),
            (t, None) if t.is_empty() => Ok(None),
            (t, None) => Ok(Some(t.clone())),
            (_, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Invalid::new(
                        "spearlet.sms_token_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(Invalid::new(
                        "spearlet.sms_token_file",
                        format!("{} is empty", path.display()),
                    ));
                }
                Ok(Some(token.to_owned()))
            }
        }
    }

    /// One problem per listener on a non-loopback address, unless `--insecure`.
    pub(super) fn check_listeners(&self, problems: &mut Problems) {
        let s = &self.spearlet;
        for (key, addr) in [
            ("spearlet.grpc.addr", s.grpc.addr),
            ("spearlet.http.server.addr", s.http.server.addr),
        ] {
            if !addr.ip().is_loopback() && !self.insecure {
                problems.invalid(
                    key,
                    format!(
                        "{addr} is not a loopback address, and the Spearlet's own gRPC and HTTP \
                         (status, plugin reload) check no token; nothing needs them from \
                         elsewhere (the Spearlet dials SMS), so keep them on loopback, or start \
                         with --insecure"
                    ),
                );
            }
        }
    }
}
