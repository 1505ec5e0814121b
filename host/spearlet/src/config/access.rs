//! Who may reach whom: the token the Spearlet sends to SMS (`spearlet.sms_token`,
//! `SPEARLET_SMS_TOKEN`, or the content of `spearlet.sms_token_file`; never printed), and the
//! refusal of non-loopback listeners without `--insecure` (the Spearlet's own API checks no
//! token).

use serde::{Deserialize, Serialize};

use super::{ConfigError, SpearletConfig};

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
    pub fn sms_token(&self) -> Result<Option<String>, ConfigError> {
        let s = &self.spearlet;
        match (&s.sms_token.0, &s.sms_token_file) {
            (t, Some(_)) if !t.is_empty() => Err(ConfigError(
                "spearlet.sms_token and spearlet.sms_token_file: set one of them".into(),
            )),
            (t, None) if t.is_empty() => Ok(None),
            (t, None) => Ok(Some(t.clone())),
            (_, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!(
                        "spearlet.sms_token_file: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(ConfigError(format!(
                        "spearlet.sms_token_file: {} is empty",
                        path.display()
                    )));
                }
                Ok(Some(token.to_owned()))
            }
        }
    }

    /// One error per listener on a non-loopback address, unless `--insecure`.
    pub(super) fn open_listeners(&self) -> Vec<String> {
        let s = &self.spearlet;
        let mut errors = Vec::new();
        for (key, addr) in [
            ("spearlet.grpc.addr", s.grpc.addr),
            ("spearlet.http.server.addr", s.http.server.addr),
        ] {
            if !addr.ip().is_loopback() && !self.insecure {
                errors.push(format!(
                    "{key} {addr}: not a loopback address, and the Spearlet's own gRPC and HTTP \
                     (status, plugin reload) check no token; nothing needs them from elsewhere \
                     (the Spearlet dials SMS), so keep them on loopback, or start with --insecure"
                ));
            }
        }
        errors
    }
}
