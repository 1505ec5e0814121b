//! Node identity from a client certificate (mTLS), as Kubernetes' node authorizer takes
//! `system:node:<name>`: with `[auth] node_certificates = true`, a client that sends no token but
//! presented, in its TLS handshake, a certificate chaining to `tls.client_ca_file` whose subject
//! common name is `spear-node:<uuid>` acts as the node `<uuid>`, exactly as a node token bound to
//! it would. The handshake has checked the chain and the validity period; a stream opened with
//! the certificate ends when it expires. A certificate cannot be revoked on its own: keep them
//! short-lived, or use node tokens (which can be).

use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Principal, Role};
use crate::error::SmsError;

/// The prefix of a node certificate's common name.
pub const NODE_CN_PREFIX: &str = "spear-node:";

/// The leaf certificate a client presented in its TLS handshake (DER), as the listeners hand
/// it to the request.
pub use spear_edge::tls::ClientCert;

/// The node principal the client certificate `der` names at `now_ms`; an error saying why when
/// it names none. The validity period is checked here too, on every request: a connection (or a
/// resumed TLS session) can outlive the handshake that checked it.
pub fn principal(der: &[u8], now_ms: i64) -> Result<Principal, SmsError> {
    let refused = |why: String| SmsError::Unauthenticated(format!("client certificate: {why}"));
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| refused(e.to_string()))?;
    let mut names = cert.subject().iter_common_name();
    let cn = names
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| refused("no common name".into()))?;
    if names.next().is_some() {
        return Err(refused(format!("`{cn}` is one of several common names")));
    }
    let Some(uuid) = cn.strip_prefix(NODE_CN_PREFIX) else {
        return Err(refused(format!(
            "`{cn}` names no node (a node certificate's common name is `{NODE_CN_PREFIX}<uuid>`); \
             send a token"
        )));
    };
    // One spelling only (lower case, hyphenated), so that a name checked by its issuer is the
    // node it names.
    let parsed = uuid::Uuid::parse_str(uuid)
        .map_err(|e| refused(format!("`{cn}`: `{uuid}` is not a UUID: {e}")))?;
    if parsed.hyphenated().to_string() != uuid {
        return Err(refused(format!(
            "`{cn}`: write the uuid as `{}`",
            parsed.hyphenated()
        )));
    }
    let validity = cert.validity();
    let (from, until) = (
        validity.not_before.timestamp().saturating_mul(1000),
        validity.not_after.timestamp().saturating_mul(1000),
    );
    if now_ms < from || now_ms > until {
        return Err(refused(format!(
            "`{cn}` is not valid now (expired or not yet valid)"
        )));
    }
    Ok(Principal::new(
        &format!("cert:{}", cert.raw_serial_as_string()),
        cn,
        Role::Node,
        Some(&parsed.to_string()),
        Some(until),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use spear_tests::certs::Ca;

    fn der(pem: &str) -> Vec<u8> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        pem.contents
    }

    #[test]
    fn a_node_certificate_names_its_node_and_others_name_none() {
        let ca = Ca::new("nodes");
        let uuid = "0a0a0a0a-0000-4000-8000-00000000000a";
        let now = crate::model::now_ms();
        let node = der(&ca.client(&format!("spear-node:{uuid}")).cert);
        let p = principal(&node, now).unwrap();
        assert_eq!(p.role, Role::Node);
        assert_eq!(p.node.as_deref(), Some(uuid));
        assert_eq!(*p.name, format!("spear-node:{uuid}"));
        assert!(p.id.starts_with("cert:"), "{}", p.id);
        assert!(
            p.expires_at_ms
                .is_some_and(|at| at > crate::model::now_ms())
        );
        for (cn, why) in [
            ("laptop", "names no node"),
            ("spear-node:nope", "is not a UUID"),
            (
                "spear-node:0A0A0A0A-0000-4000-8000-00000000000A",
                "write the uuid as `0a0a0a0a-0000-4000-8000-00000000000a`",
            ),
            (
                "spear-node:{0a0a0a0a-0000-4000-8000-00000000000a}",
                "write the uuid as",
            ),
        ] {
            let err = principal(&der(&ca.client(cn).cert), now)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{cn}: {err}");
        }
        assert!(principal(b"not a certificate", now).is_err());
        // Outside its validity period (rcgen's default: 1975 to 4096): refused at every request.
        for at in [0, 4_200_000_000_000_i64 * 30] {
            let err = principal(&node, at).unwrap_err().to_string();
            assert!(err.contains("not valid now"), "{err}");
        }
    }
}
